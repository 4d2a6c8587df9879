//! Where an actuator reads and writes, and how much it takes on at once.

use crate::config::{InvalidConfig, TopicsConfig};

/// An actuator runner's settings. [`ActuatorSettings::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActuatorSettings {
    /// The actuator's name: the `actuator` field of its acks, and part of the default group
    /// and dedup topic names. Instances that share a name share the work and the dedup record.
    pub name: String,
    /// The command topics to consume: `topics.commands`, or the `topics.actuators.<action>`
    /// topics of the actions this actuator carries out.
    pub command_topics: Vec<String>,
    /// Where acks go: salve's `topics.acks`.
    pub acks_topic: String,
    /// The compacted topic that records finished commands by `id`, so that a command delivered
    /// again, even after a restart, is answered without acting twice.
    pub dedup_topic: String,
    /// The consumer group for the command topics.
    pub group_id: String,
    /// How many commands may run at once.
    pub max_in_flight: usize,
    /// How many commands may wait, read but not started, before the runner stops reading.
    pub max_waiting: usize,
    /// How often offsets are committed, after the acks before them are delivered.
    pub commit_interval_ms: u64,
    /// How long a graceful stop waits for running commands. Past it, the runner gives up on
    /// them: acks them `failed`, records them as finished, commits and returns.
    pub stop_patience_ms: u64,
    /// How long a finished command's record is kept after its `expires_at`. Past its expiry a
    /// command is refused anyway, so this only decides whether a late duplicate gets the
    /// original ack or a `rejected` one.
    pub dedup_retention_ms: i64,
    /// Create the dedup topic (compacted) when it is missing.
    pub create_dedup_topic: bool,
    /// Partitions of a created dedup topic.
    pub dedup_partitions: i32,
    /// Replication factor of a created dedup topic.
    pub dedup_replication: i32,
}

impl ActuatorSettings {
    /// Defaults for an actuator called `name` that consumes `command_topics`, with salve's
    /// `topics` for the acks topic and created-topic sizes.
    pub fn new(name: &str, topics: &TopicsConfig, command_topics: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            command_topics,
            acks_topic: topics.acks.clone(),
            dedup_topic: format!("salve.actuator.{name}.done"),
            group_id: format!("salve.actuator.{name}"),
            max_in_flight: 4,
            max_waiting: 1_000,
            commit_interval_ms: 1_000,
            stop_patience_ms: 30_000,
            dedup_retention_ms: 3_600_000,
            create_dedup_topic: topics.create,
            dedup_partitions: topics.partitions,
            dedup_replication: topics.replication,
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.name.is_empty() {
            return Err(InvalidConfig {
                key: "actuator name",
                expected: "a non-empty name".into(),
            });
        }
        if self.command_topics.is_empty() || self.command_topics.iter().any(String::is_empty) {
            return Err(InvalidConfig {
                key: "actuator command topics",
                expected: "at least one topic, none empty".into(),
            });
        }
        let outputs = [&self.acks_topic, &self.dedup_topic];
        if outputs.iter().any(|t| self.command_topics.contains(t)) {
            return Err(InvalidConfig {
                key: "actuator command topics",
                expected:
                    "topics other than the acks and dedup topics: it would read its own output"
                        .into(),
            });
        }
        if self.max_in_flight == 0 {
            return Err(InvalidConfig {
                key: "max_in_flight",
                expected: "at least 1".into(),
            });
        }
        if self.max_waiting == 0 {
            return Err(InvalidConfig {
                key: "max_waiting",
                expected: "at least 1".into(),
            });
        }
        if self.commit_interval_ms == 0 {
            return Err(InvalidConfig {
                key: "commit_interval",
                expected: "a positive duration".into(),
            });
        }
        if self.dedup_retention_ms < 0 {
            return Err(InvalidConfig {
                key: "dedup_retention",
                expected: "zero or more".into(),
            });
        }
        Ok(())
    }
}
