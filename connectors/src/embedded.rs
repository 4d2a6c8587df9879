//! The embedded broker: librdkafka's mock cluster, in-process, on a loopback port.
//!
//! It speaks the Kafka protocol over TCP, so any client (kcat, python) can use it. It keeps
//! only about 5 MiB per partition, a limit fixed in librdkafka: it is for trying salve out and
//! for tests. Production runs against a Kafka cluster.

use crate::config::TopicsConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running mock cluster. It stops when dropped, and must stay on the thread that made it.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

/// The embedded broker could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the embedded broker: {0}")]
pub struct EmbeddedError(#[from] rdkafka::error::KafkaError);

impl EmbeddedBroker {
    /// Starts a one-broker cluster and creates the configured topics.
    pub fn start(topics: &TopicsConfig) -> Result<Self, EmbeddedError> {
        let cluster = MockCluster::new(1)?;
        for topic in topics.all() {
            cluster.create_topic(topic, topics.partitions, 1)?;
        }
        Ok(Self { cluster })
    }

    /// Creates another topic, e.g. for a test.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), EmbeddedError> {
        Ok(self.cluster.create_topic(topic, partitions, 1)?)
    }

    /// Fault injection for tests: the next `count` produce requests, from any client, fail with
    /// a permanent error (topic authorization failed), so their messages are not delivered.
    pub fn fail_next_produce_requests(&self, count: usize) {
        let errors = vec![
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
            count
        ];
        self.cluster
            .request_errors(rdkafka::types::RDKafkaApiKey::Produce, &errors);
    }

    /// Ends [`Self::fail_next_produce_requests`]: produce requests succeed again.
    pub fn clear_produce_faults(&self) {
        self.cluster
            .clear_request_errors(rdkafka::types::RDKafkaApiKey::Produce);
    }

    /// The `host:port` list that clients bootstrap from.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap_servers())
            .finish()
    }
}
