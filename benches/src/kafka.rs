//! Kafka pieces the benchmark binaries share: producing a prepared topic, watching the
//! commands topic, and salve's runner on a thread of its own.

use crate::{current_tid, Message};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use salve_connectors::{EmbeddedBroker, KafkaConfig, RunReport, Shutdown, TopicsConfig};
use salve_engine::Engine;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The error type of the benchmark binaries.
pub type Failure = Box<dyn Error + Send + Sync>;

/// A burst of three `process_exit` events of the entity `bench/{kind}-{partition:03}`, which
/// `crash_loop` turns into a command: it marks the start or the end of a partition's backlog.
pub fn sentinel(kind: &str, partition: i32, index: i64, ts_ms: i64) -> Message {
    let entity = format!("bench/{kind}-{partition:03}");
    let payload = format!(
        r#"{{"v":1,"entity":"{entity}","ts":{},"kind":"event","name":"process_exit","labels":{{"service":"bench"}}}}"#,
        ts_ms + index
    );
    Message {
        key: entity,
        payload: payload.into_bytes(),
        partition,
    }
}

/// Produces every message to `topic`, each to its own partition, as fast as the broker takes
/// them, and waits until all are delivered.
///
/// A partition's messages are sent together, in their order, so that they are stored in full
/// batches (up to `batch.size`). The mock cluster answers a fetch with one stored batch per
/// partition, so with messages sent in generation order, spread over hundreds of partitions,
/// the batches held a few dozen messages, as many as came in one linger, and how fast a
/// consumer could read the topic depended on how fast it had been written: the bare consumer
/// read one run's topic at 0.7M events/s and the next one's at 1.4M. A Kafka broker returns up
/// to `max.partition.fetch.bytes` per partition, whatever the batches.
pub fn produce_all(bootstrap: &str, topic: &str, messages: &[Message]) -> Result<(), Failure> {
    let producer: BaseProducer<Undelivered> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Undelivered::default())?;
    let mut by_partition: Vec<&Message> = messages.iter().collect();
    by_partition.sort_by_key(|message| message.partition);
    for message in by_partition {
        let record = BaseRecord::<str, [u8]>::to(topic)
            .key(&message.key)
            .payload(&message.payload)
            .partition(message.partition);
        send_waiting(&producer, record)?;
    }
    producer.flush(Duration::from_secs(300))?;
    let context = producer.context();
    match context.count.load(Ordering::SeqCst) {
        0 => Ok(()),
        failed => Err(format!(
            "{failed} of {} messages were not delivered to {topic}, the first: {}",
            messages.len(),
            context
                .first
                .lock()
                .map(|first| first.clone().unwrap_or_default())
                .unwrap_or_default()
        )
        .into()),
    }
}

/// Counts the messages that the broker did not take, and keeps the first error.
#[derive(Default)]
struct Undelivered {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Undelivered {}

impl ProducerContext for Undelivered {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.count.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Sends `record`, waiting for room in the producer's queue rather than dropping it.
pub fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, str, [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A consumer assigned every partition of `topic` from its current end, so it sees only what
/// is produced from now on. `fetch.wait.max.ms` is 1: the mock cluster holds an empty fetch
/// response for the whole wait, even when data arrives meanwhile.
pub fn tail_consumer(bootstrap: &str, group: &str, topic: &str) -> Result<BaseConsumer, Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) =
            consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        list.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
    }
    if list.count() == 0 {
        return Err(format!("topic {topic} has no partitions").into());
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// salve's runner (`salve_connectors::run`) on a thread of its own.
pub struct RunningSalve {
    shutdown: Arc<Shutdown>,
    handle: JoinHandle<Result<RunReport, String>>,
    /// The runner thread's kernel id, for its CPU time.
    pub tid: Option<u32>,
}

impl RunningSalve {
    /// Starts the runner with an engine that `engine` builds on the runner's thread (an
    /// `Engine` is not `Send`), and waits until its clients are up.
    pub fn start(
        bootstrap: &str,
        topics: &TopicsConfig,
        kafka: KafkaConfig,
        engine: impl FnOnce() -> Engine + Send + 'static,
    ) -> Result<Self, Failure> {
        let shutdown = Arc::new(Shutdown::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = {
            let shutdown = Arc::clone(&shutdown);
            let bootstrap = bootstrap.to_owned();
            let topics = topics.clone();
            std::thread::Builder::new()
                .name("salve-runner".into())
                .spawn(move || -> Result<RunReport, String> {
                    let mut engine = engine();
                    salve_connectors::run(
                        &mut engine,
                        &bootstrap,
                        &kafka,
                        &topics,
                        &shutdown,
                        || {
                            let _ = ready_tx.send(current_tid());
                        },
                    )
                    .map_err(|e| e.to_string())
                })?
        };
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(tid) => Ok(Self {
                shutdown,
                handle,
                tid,
            }),
            Err(_) => {
                shutdown.graceful();
                let outcome = handle.join();
                Err(format!("the runner did not start: {outcome:?}").into())
            }
        }
    }

    /// Stops the runner gracefully (flush, commit) and returns its report.
    pub fn stop(self) -> Result<RunReport, Failure> {
        self.shutdown.graceful();
        let report = self
            .handle
            .join()
            .map_err(|_| "the runner thread panicked")?
            .map_err(|e| format!("the runner failed: {e}"))?;
        Ok(report)
    }
}

/// The runner's Kafka settings as `salve run` sets them, tuned for the embedded broker only
/// when `embedded`, in group `group`, plus `consumer` and `producer` properties on top.
pub fn runner_kafka_config<'a>(
    group: &str,
    embedded: bool,
    consumer: impl IntoIterator<Item = (&'a str, &'a str)>,
    producer: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> KafkaConfig {
    let mut kafka = KafkaConfig {
        group_id: group.to_owned(),
        ..KafkaConfig::default()
    };
    if embedded {
        EmbeddedBroker::tune(&mut kafka);
    }
    for (key, value) in consumer {
        kafka.consumer.insert(key.into(), value.into());
    }
    for (key, value) in producer {
        kafka.producer.insert(key.into(), value.into());
    }
    kafka
}

/// The broker a benchmark runs against: the embedded mock cluster in this process, or an
/// external Kafka-protocol broker (a Kafka cluster, Tansu) that outlives the run.
pub enum BenchBroker {
    /// librdkafka's mock cluster, started by the benchmark.
    Embedded(EmbeddedBroker),
    /// A broker at `bootstrap`, a `host:port` list. Its topics and groups stay after the run,
    /// so this run's names start with `prefix`, `bench-<wall ms>.`: an earlier run's data
    /// cannot be read as this one's.
    External {
        /// Where clients bootstrap from.
        bootstrap: String,
        /// The start of this run's topic and group names.
        prefix: String,
    },
}

impl BenchBroker {
    /// Starts the embedded broker, or names this run on `external`, and creates salve's
    /// service topics ([`BenchBroker::service_topics`]) there.
    pub fn start(external: Option<&str>) -> Result<Self, Failure> {
        let broker = match external {
            None => {
                let topics = Self::topics_named("");
                Self::Embedded(EmbeddedBroker::start(&topics)?)
            }
            Some(bootstrap) => Self::External {
                bootstrap: bootstrap.to_owned(),
                prefix: format!("bench-{}.", crate::wall_ms()),
            },
        };
        if let Self::External { bootstrap, .. } = &broker {
            salve_connectors::topics::ensure_topics(
                bootstrap,
                &Default::default(),
                &broker.service_topics(),
            )?;
        }
        Ok(broker)
    }

    /// The start of this run's topic and group names: empty on the embedded broker, which
    /// starts empty.
    pub fn prefix(&self) -> &str {
        match self {
            Self::Embedded(_) => "",
            Self::External { prefix, .. } => prefix,
        }
    }

    /// salve's own topics (commands, acks, decisions...) for this run, and no telemetry.
    pub fn service_topics(&self) -> TopicsConfig {
        Self::topics_named(self.prefix())
    }

    fn topics_named(prefix: &str) -> TopicsConfig {
        let named = if prefix.is_empty() {
            TopicsConfig::default()
        } else {
            TopicsConfig::with_prefix(prefix.trim_end_matches('.'))
        };
        TopicsConfig {
            telemetry: Vec::new(),
            ..named
        }
    }

    /// The `host:port` list that clients bootstrap from.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Embedded(broker) => broker.bootstrap_servers(),
            Self::External { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// True for the mock cluster, whose quirks some settings work around.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Embedded(_))
    }

    /// What the run is on, for its first lines of output.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(broker) => format!(
                "embedded (librdkafka's mock cluster) at {}",
                broker.bootstrap_servers()
            ),
            Self::External { bootstrap, prefix } => {
                format!("external at {bootstrap}, topics and groups {prefix}*")
            }
        }
    }

    /// Creates `topic` with `partitions` (replication 1 on an external broker).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), Failure> {
        match self {
            Self::Embedded(broker) => Ok(broker.create_topic(topic, partitions)?),
            Self::External { bootstrap, .. } => Ok(salve_connectors::topics::ensure_topic(
                bootstrap,
                &Default::default(),
                topic,
                partitions,
                1,
            )?),
        }
    }
}
