//! Reads what salve decided, from its topics, as any consumer of the decision log would: the
//! decisions, the commands and the escalations. The scenarios are judged on these records.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use salve_connectors::TopicsConfig;
use salve_engine::wire::{Command, Decision, DecisionKind, Escalation, IncidentState, Verdict};
use std::time::{Duration, Instant};

/// The observer's consumer could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("reading salve's topics: {0}")]
pub struct ObserverError(#[from] KafkaError);

/// One record read from salve's topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// From the decision log.
    Decision(Decision),
    /// From the commands topic.
    Command(Command),
    /// From the escalations topic.
    Escalation(Escalation),
}

/// Everything read so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The decision log, per partition in order.
    pub decisions: Vec<Decision>,
    /// The commands salve issued.
    pub commands: Vec<Command>,
    /// The incidents handed to a human.
    pub escalations: Vec<Escalation>,
}

impl Observed {
    /// Adds `record`.
    pub fn push(&mut self, record: Record) {
        match record {
            Record::Decision(decision) => self.decisions.push(decision),
            Record::Command(command) => self.commands.push(command),
            Record::Escalation(escalation) => self.escalations.push(escalation),
        }
    }

    /// The states `rule`'s incidents on `entity` entered, in order.
    pub fn states(&self, rule: &str, entity: &str) -> Vec<IncidentState> {
        self.decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Transition && d.rule == rule && d.entity == entity)
            .filter_map(|d| d.to)
            .collect()
    }

    /// The verdicts `rule` recorded on `entity`, in order.
    pub fn verdicts(&self, rule: &str, entity: &str) -> Vec<&Decision> {
        self.decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Verdict && d.rule == rule && d.entity == entity)
            .collect()
    }

    /// Whether `rule` recorded `verdict` on `entity`.
    pub fn has_verdict(&self, rule: &str, entity: &str, verdict: Verdict) -> bool {
        self.verdicts(rule, entity)
            .iter()
            .any(|d| d.verdict == Some(verdict))
    }

    /// The commands `rule` sent to `entity`, in order.
    pub fn commands_to(&self, rule: &str, entity: &str) -> Vec<&Command> {
        self.commands
            .iter()
            .filter(|c| c.rule == rule && c.entity == entity)
            .collect()
    }

    /// The escalations of `rule` on `entity`.
    pub fn escalations_of(&self, rule: &str, entity: &str) -> Vec<&Escalation> {
        self.escalations
            .iter()
            .filter(|e| e.rule == rule && e.entity == entity)
            .collect()
    }

    /// `rule`'s incident on `entity` as a trail of states, with the action of each command:
    /// `remediating (restart) → verifying → resolved`.
    pub fn trail(&self, rule: &str, entity: &str) -> String {
        let mut steps: Vec<String> = Vec::new();
        for decision in &self.decisions {
            if decision.kind != DecisionKind::Transition
                || decision.rule != rule
                || decision.entity != entity
            {
                continue;
            }
            let Some(to) = decision.to else { continue };
            let mut step = state_name(to).to_owned();
            if matches!(to, IncidentState::Remediating | IncidentState::Reverting) {
                let action = decision
                    .command_id
                    .as_deref()
                    .and_then(|id| self.commands.iter().find(|c| c.id == id))
                    .map(|c| c.action.as_str());
                if let Some(action) = action {
                    step = format!("{step} ({action})");
                }
            }
            steps.push(step);
        }
        if steps.is_empty() {
            "no incident".to_owned()
        } else {
            steps.join(" → ")
        }
    }
}

/// The name of a state as the decision log writes it.
pub fn state_name(state: IncidentState) -> &'static str {
    state.as_str()
}

/// The name of a verdict as the decision log writes it.
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Failure => "failure",
        Verdict::Pending => "pending",
        Verdict::Transient => "transient",
        Verdict::Inhibited => "inhibited",
    }
}

/// A consumer of every partition of salve's decisions, commands and escalations topics, from
/// the beginning, outside any group.
pub struct Observer {
    consumer: BaseConsumer,
    topics: TopicsConfig,
}

impl Observer {
    /// Assigns every partition of the three topics.
    pub fn new(
        bootstrap: &str,
        group_id: &str,
        topics: &TopicsConfig,
    ) -> Result<Self, ObserverError> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // librdkafka needs a group id even to assign(); this reader never joins or commits.
            .set("group.id", format!("{group_id}.demo-observer"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        let mut list = TopicPartitionList::new();
        for topic in [&topics.decisions, &topics.commands, &topics.escalations] {
            for partition in 0..topics.partitions {
                list.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&list)?;
        Ok(Self {
            consumer,
            topics: topics.clone(),
        })
    }

    /// The records that arrive within `wait`, at most `max` of them.
    pub fn poll(&self, wait: Duration, max: usize) -> Vec<Record> {
        let deadline = Instant::now() + wait;
        let mut records = Vec::new();
        while records.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(result) = self.consumer.poll(left) else {
                break;
            };
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!("demo observer: {error}");
                    continue;
                }
            };
            let payload = message.payload().unwrap_or_default();
            let topic = message.topic();
            let record = if topic == self.topics.decisions {
                serde_json::from_slice(payload).map(Record::Decision)
            } else if topic == self.topics.commands {
                serde_json::from_slice(payload).map(Record::Command)
            } else {
                serde_json::from_slice(payload).map(Record::Escalation)
            };
            match record {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!("demo observer: unreadable record on {topic}: {error}")
                }
            }
        }
        records
    }
}

/// Whether the consumer group `group_id` has committed an offset on every partition of
/// `topic`: salve has joined its group and is consuming telemetry.
pub fn group_is_consuming(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> Result<bool, ObserverError> {
    // A consumer that never subscribes only reads the group's committed offsets; it does not
    // join the group or move its partitions.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(5))?;
    Ok(committed
        .elements()
        .iter()
        .all(|e| matches!(e.offset(), Offset::Offset(o) if o > 0)))
}
