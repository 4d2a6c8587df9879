//! Reading a partition's state back from the changelog topic, when the partition is assigned.
//!
//! The engine writes each subject's open incidents to the changelog partition numbered like
//! the source partition, keyed `<topic index>:<partition>|<subject>`, compacted. The new owner
//! of a source partition reads that changelog partition to its end before it processes a
//! single event of the partition, as Kafka Streams restores a state store.

use crate::config::{client_config, KafkaConfig, TopicsConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use salve_engine::{Engine, PartitionId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Why the changelog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    /// The client failed.
    #[error("reading the changelog topic {topic}: {source}")]
    Kafka {
        /// The changelog topic.
        topic: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// The changelog has fewer partitions than a telemetry topic: the state of the
    /// partitions beyond its count would have nowhere to go.
    #[error("topics.changelog: {changelog} has {changelog_partitions} partition(s), but the telemetry topic {telemetry} has {telemetry_partitions}; the changelog needs at least as many partitions as each telemetry topic (its partition N holds the state of partition N)")]
    TooFewPartitions {
        /// The changelog topic.
        changelog: String,
        /// Its partitions.
        changelog_partitions: usize,
        /// The telemetry topic with more.
        telemetry: String,
        /// Its partitions.
        telemetry_partitions: usize,
    },
    /// The end of a partition was not reached in time.
    #[error("reading the changelog topic {topic} partition {partition}: no end after {waited:?}")]
    Timeout {
        /// The changelog topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// How long it waited.
        waited: Duration,
    },
}

/// Checks, before anything is consumed, that the changelog has a partition for every
/// telemetry partition. A topic missing from the metadata is left to the consumer to report.
pub fn check_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &TopicsConfig,
) -> Result<(), ChangelogError> {
    let count = |topic: &str| -> Result<Option<usize>, ChangelogError> {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| ChangelogError::Kafka {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0))
    };
    let Some(changelog_partitions) = count(&topics.changelog)? else {
        return Ok(());
    };
    for telemetry in &topics.telemetry {
        if let Some(telemetry_partitions) = count(telemetry)? {
            if telemetry_partitions > changelog_partitions {
                return Err(ChangelogError::TooFewPartitions {
                    changelog: topics.changelog.clone(),
                    changelog_partitions,
                    telemetry: telemetry.clone(),
                    telemetry_partitions,
                });
            }
        }
    }
    Ok(())
}

/// Restores the state of `assigned` partitions into `engine`, reading each changelog
/// partition to its current end. A record that cannot be read is logged and skipped: one
/// bad record must not keep a partition's other incidents from coming back.
pub fn restore(
    engine: &mut Engine,
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    assigned: &[PartitionId],
) -> Result<(), ChangelogError> {
    let topic = topics.changelog.as_str();
    let kafka_error = |source| ChangelogError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let mut config = client_config(
        bootstrap,
        &[("enable.auto.commit", "false".into())],
        &kafka.consumer,
    );
    // assign() needs a group id; this reader never joins the group, nor commits.
    config.set("group.id", format!("{}.changelog-reader", kafka.group_id));
    // An end-of-partition event, if `[kafka.consumer]` asked for them, would read as an error.
    config.set("enable.partition.eof", "false");
    let reader: BaseConsumer = config.create().map_err(kafka_error)?;
    let mut partitions: Vec<i32> = assigned.iter().map(|p| p.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let started = Instant::now();
    let mut restored = 0;
    for partition in partitions {
        let (low, high) = reader
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(kafka_error)?;
        if high <= low {
            continue;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(kafka_error)?;
        reader.assign(&list).map_err(kafka_error)?;
        // The latest value per key wins, as compaction would keep it.
        let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next = low;
        while next < high {
            if Instant::now() > deadline {
                return Err(ChangelogError::Timeout {
                    topic: topic.to_owned(),
                    partition,
                    waited: Duration::from_secs(30),
                });
            }
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    keep_latest(&mut latest, &message);
                }
                Some(Err(error)) => return Err(kafka_error(error)),
                None => {}
            }
        }
        // Tansu 0.6 reports a partition's high watermark as its last batch's base offset + 1,
        // so the rest of that batch is past the watermark, though already fetched: take what
        // is queued without waiting. On a Kafka broker this takes only records written since
        // the watermark was read (a changelog partition serves that partition of every
        // telemetry topic, which other members may own): newer values, as a later read would.
        while Instant::now() <= deadline {
            let Some(polled) = reader.poll(Duration::ZERO) else {
                break;
            };
            keep_latest(&mut latest, &polled.map_err(kafka_error)?);
        }
        for (key, value) in latest {
            let Some(value) = value else { continue };
            let Some((owner, subject)) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.split_once('|'))
            else {
                tracing::warn!("changelog record with a key salve did not write; skipped");
                continue;
            };
            let Some(source) = assigned
                .iter()
                .find(|p| format!("{}:{}", p.topic, p.partition) == owner)
            else {
                continue;
            };
            match engine.restore(*source, subject, &value) {
                Ok(()) => restored += 1,
                Err(error) => tracing::warn!("{error}; skipped"),
            }
        }
    }
    if restored > 0 {
        tracing::info!(
            subjects = restored,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "restored open incidents from the changelog"
        );
    }
    Ok(())
}

/// Notes a changelog record: the latest value per key wins, as compaction would keep it.
fn keep_latest(latest: &mut HashMap<Vec<u8>, Option<Vec<u8>>>, message: &BorrowedMessage<'_>) {
    if let Some(key) = message.key() {
        latest.insert(key.to_vec(), message.payload().map(<[u8]>::to_vec));
    }
}
