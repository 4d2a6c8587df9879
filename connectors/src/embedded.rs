//! The embedded broker: librdkafka's mock cluster, in-process, on a loopback port.
//!
//! It speaks the Kafka protocol over TCP, so any client (kcat, python) can use it. It keeps
//! only about 5 MiB per partition, a limit fixed in librdkafka: it is for trying salve out and
//! for tests. Production runs against a Kafka cluster.

use crate::config::{KafkaConfig, TopicsConfig};
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
    /// Consumer settings for the embedded broker, where it differs from a Kafka cluster. Its
    /// coordinator delays a group's first assignment by the session timeout less a second, and
    /// one process owns it, so members come and go only on restarts: a short session rejoins
    /// in seconds. It holds an empty fetch for the whole of `fetch.wait.max.ms`, even when
    /// data arrives meanwhile, where a Kafka broker answers as soon as there is data.
    pub const CONSUMER_SETTINGS: [(&'static str, &'static str); 2] =
        [("session.timeout.ms", "6000"), ("fetch.wait.max.ms", "5")];

    /// Adds [`Self::CONSUMER_SETTINGS`] to `kafka.consumer` where the user did not set them.
    pub fn tune(kafka: &mut KafkaConfig) {
        for (key, value) in Self::CONSUMER_SETTINGS {
            kafka
                .consumer
                .entry(key.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_for_the_embedded_broker_keeps_what_the_user_set() {
        let mut kafka = KafkaConfig::default();
        kafka
            .consumer
            .insert("fetch.wait.max.ms".into(), "50".into());
        EmbeddedBroker::tune(&mut kafka);
        assert_eq!(kafka.consumer["fetch.wait.max.ms"], "50");
        assert_eq!(kafka.consumer["session.timeout.ms"], "6000");
    }
}
