//! The record of finished commands, by command `id`, kept in a compacted topic.
//!
//! Each finished command gets one message, keyed by its `id`, holding the final ack that was
//! sent and the command's `expires_at`. Compaction keeps the last message per `id`, so the
//! topic stays about as large as the number of commands still worth remembering. On start, and
//! again whenever the group gives this instance partitions, the runner reads the topic to its
//! end, so a command that another instance (or this one before a crash) finished is answered
//! with the ack it got, not acted on again. A command is refused anyway once it has expired, so
//! records are forgotten `dedup_retention` after `expires_at`, and a tombstone then lets
//! compaction drop them from the topic.

use super::done::{DoneRecord, DoneSet};
use crate::config::{client_config, KafkaConfig};
use crate::topics::{self, TopicError};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use salve_engine::wire::Ack;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long restoring the record may take before the runner gives up.
const RESTORE_PATIENCE: Duration = Duration::from_secs(30);

/// The dedup record could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// The broker could not be reached.
    #[error("dedup topic {topic}: {source}")]
    Client {
        /// The dedup topic.
        topic: String,
        /// What the client said.
        source: KafkaError,
    },
    /// The broker refused to create the topic.
    #[error("cannot create dedup topic {topic}: {code}")]
    Refused {
        /// The dedup topic.
        topic: String,
        /// What the broker said.
        code: RDKafkaErrorCode,
    },
    /// The topic is missing, or reading it to its end took too long.
    #[error("dedup topic {topic}: {reason}")]
    Unavailable {
        /// The dedup topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// Finished commands by `id`, restored from and followed on the dedup topic.
pub(crate) struct DedupLog {
    topic: String,
    follower: BaseConsumer,
    done: DoneSet,
}

impl DedupLog {
    /// Opens the follower on every partition of `topic` from the beginning. Call
    /// [`Self::catch_up`] before relying on it.
    pub(crate) fn open(
        bootstrap: &str,
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        retention_ms: i64,
    ) -> Result<Self, DedupError> {
        let client_error = |source| DedupError::Client {
            topic: topic.to_owned(),
            source,
        };
        let mut config = client_config(bootstrap, &[], &kafka.consumer);
        // librdkafka needs a group id even to assign(); this follower never joins or commits.
        config
            .set("group.id", format!("{group_id}.dedup-follower"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let follower: BaseConsumer = config.create().map_err(client_error)?;
        let partitions = partitions_of(&follower, topic)?;
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(client_error)?;
        }
        follower.assign(&list).map_err(client_error)?;
        Ok(Self {
            topic: topic.to_owned(),
            follower,
            done: DoneSet::new(retention_ms),
        })
    }

    /// Reads the topic up to its current end, so that every record written before this call,
    /// by any instance, is known. `now` decides which restored records are already stale.
    pub(crate) fn catch_up(&mut self, now: i64) -> Result<(), DedupError> {
        let client_error = |source| DedupError::Client {
            topic: self.topic.clone(),
            source,
        };
        let assignment = self.follower.assignment().map_err(client_error)?;
        let mut ends: HashMap<i32, i64> = HashMap::new();
        for element in assignment.elements() {
            let (low, high) = self
                .follower
                .fetch_watermarks(&self.topic, element.partition(), Duration::from_secs(10))
                .map_err(|source| DedupError::Client {
                    topic: self.topic.clone(),
                    source,
                })?;
            if high > low {
                ends.insert(element.partition(), high);
            }
        }
        let deadline = Instant::now() + RESTORE_PATIENCE;
        while !ends.is_empty() {
            if Instant::now() >= deadline {
                return Err(DedupError::Unavailable {
                    topic: self.topic.clone(),
                    reason: format!(
                        "could not read to the end of partitions {:?} within {RESTORE_PATIENCE:?}",
                        ends.keys().collect::<Vec<_>>()
                    ),
                });
            }
            if let Some((partition, offset)) = self.poll_one(Duration::from_millis(100), now) {
                if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
                    ends.remove(&partition);
                }
            }
            // Compaction can leave gaps, so the position, not the last offset read, says
            // whether a partition is read to its end.
            if let Ok(positions) = self.follower.position() {
                for element in positions.elements() {
                    if let Offset::Offset(position) = element.offset() {
                        if ends
                            .get(&element.partition())
                            .is_some_and(|end| position >= *end)
                        {
                            ends.remove(&element.partition());
                        }
                    }
                }
            }
        }
        // Tansu 0.6 reports a partition's high watermark as its last batch's base offset + 1,
        // so the rest of that batch lies past the end read above, though it is fetched already:
        // take in what is queued without waiting. A command whose record sat there would
        // otherwise be acted on again if it came before `follow` reached that record.
        while Instant::now() < deadline && self.poll_one(Duration::ZERO, now).is_some() {}
        Ok(())
    }

    /// Takes in what other instances wrote since the last call, without waiting.
    pub(crate) fn follow(&mut self, now: i64) {
        for _ in 0..100 {
            if self.poll_one(Duration::ZERO, now).is_none() {
                break;
            }
        }
    }

    /// Reads one message; returns its partition and offset.
    fn poll_one(&mut self, timeout: Duration, now: i64) -> Option<(i32, i64)> {
        let message = match self.follower.poll(timeout)? {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!("dedup follower: {error}");
                return None;
            }
        };
        let position = (message.partition(), message.offset());
        let id = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned());
        // A tombstone has no payload; a record is small, so copying it frees the follower.
        let payload = message.payload().map(<[u8]>::to_vec);
        drop(message);
        match (id, payload) {
            (Some(id), None) => self.done.apply(id, None, now),
            (Some(id), Some(payload)) => match serde_json::from_slice::<DoneRecord>(&payload) {
                Ok(record) => self.done.apply(id, Some(record), now),
                Err(error) => tracing::warn!(
                    "dedup topic {}: skipping an unreadable record at {}:{}: {error}",
                    self.topic,
                    position.0,
                    position.1
                ),
            },
            (None, _) => {}
        }
        Some(position)
    }

    /// The final ack sent for command `id`, if it finished.
    pub(crate) fn lookup(&self, id: &str) -> Option<&Ack> {
        self.done.lookup(id)
    }

    /// Records that command `id` finished.
    pub(crate) fn remember(&mut self, id: String, record: DoneRecord) {
        self.done.remember(id, record);
    }

    /// Forgets the records whose retention ran out by `now`; returns their ids, for tombstones.
    pub(crate) fn expire(&mut self, now: i64) -> Vec<String> {
        self.done.expire(now)
    }

    /// How many finished commands are remembered.
    pub(crate) fn len(&self) -> usize {
        self.done.len()
    }
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, DedupError> {
    // A topic created a moment ago may take a moment to show in metadata.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|source| DedupError::Client {
                topic: topic.to_owned(),
                source,
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !partitions.is_empty() {
            return Ok(partitions);
        }
        if Instant::now() >= deadline {
            return Err(DedupError::Unavailable {
                topic: topic.to_owned(),
                reason: "the topic does not exist or has no partitions".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates the dedup topic, compacted, unless it exists.
pub(crate) fn ensure_dedup_topic(
    bootstrap: &str,
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), DedupError> {
    let client_error = |source| DedupError::Client {
        topic: topic.to_owned(),
        source,
    };
    // Look first: a topic made by its operator is left as it is.
    let probe: BaseConsumer = client_config(bootstrap, &[], &kafka.consumer)
        .set("group.id", "salve.dedup-topic-probe")
        .create()
        .map_err(client_error)?;
    let metadata = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(client_error)?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    // The embedded broker never answers CreateTopics: give up on it sooner.
    let options = topics::options().request_timeout(Some(Duration::from_secs(5)));
    match topics::create(bootstrap, &kafka.consumer, &[new_topic], &options) {
        Ok(()) => Ok(()),
        Err(TopicError::Client(KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))) => {
            create_by_metadata_request(bootstrap, kafka, topic)
        }
        Err(TopicError::Client(error)) => Err(client_error(error)),
        Err(TopicError::Refused { topic, code }) => Err(DedupError::Refused { topic, code }),
    }
}

/// The embedded broker (librdkafka's mock cluster) does not answer CreateTopics; it creates a
/// topic when a producer asks for its metadata. Only tried when CreateTopics went unanswered:
/// on a real cluster that would make a topic that is not compacted.
fn create_by_metadata_request(
    bootstrap: &str,
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<(), DedupError> {
    let client_error = |source| DedupError::Client {
        topic: topic.to_owned(),
        source,
    };
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = client_config(bootstrap, &[], &kafka.producer)
        .create()
        .map_err(client_error)?;
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(client_error)?;
    let created = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if !created {
        return Err(DedupError::Unavailable {
            topic: topic.to_owned(),
            reason: "the broker neither answered CreateTopics nor created the topic on request; create it (compacted) by hand".into(),
        });
    }
    tracing::warn!(
        "the broker did not answer CreateTopics; {topic} was created by a metadata request, so it may not be compacted"
    );
    Ok(())
}
