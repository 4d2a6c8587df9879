//! An incident: one rule failing on one entity, and the remediation attempts it leads to.

use crate::pipeline::RecordPosition;
use crate::wire::{Escalation, IncidentState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An open incident. Closed incidents live on only in the decision log. Open ones are also
/// written to the changelog topic, so that they survive a restart or a move to another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Deterministic id, see [`incident_id`].
    pub id: String,
    /// The rule that opened it.
    pub rule: Arc<str>,
    /// Event time at which the rule first failed.
    pub opened_at_ms: i64,
    /// Processing time at which the incident opened (its `failing` transition): the start of
    /// its time to resolve, kept so that an incident that spans a restart still counts.
    /// `None` when restored from a record written before it was kept.
    #[serde(default)]
    pub failing_at_ms: Option<i64>,
    /// Where it stands.
    pub state: IncidentState,
    /// The current attempt, from 1, counted over every action of the incident.
    pub attempt: u32,
    /// The rung of the ladder: 0 for the rule's `action`, then its `ladder` steps.
    pub step: usize,
    /// Attempts of the current step's action.
    pub step_attempts: u32,
    /// The current attempt's command id.
    pub command_id: String,
    /// When the current attempt's command was issued.
    pub issued_at_ms: i64,
    /// When the current attempt times out without an ack.
    pub ack_deadline_ms: i64,
    /// The entity the incident's commands act on.
    pub target: String,
    /// The action's params, which its revert repeats.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// While verifying: from when (processing time) a condition that holds fails the attempt.
    pub verify_from_ms: i64,
    /// While verifying: when the verification succeeds.
    #[serde(default)]
    pub verify_until_ms: i64,
    /// While backing off: when the next attempt is due.
    #[serde(default)]
    pub retry_at_ms: i64,
    /// While awaiting approval: when it escalates for want of an answer.
    #[serde(default)]
    pub approval_until_ms: i64,
    /// The ladder step an operator approved; its retries need no new approval.
    #[serde(default)]
    pub approved_step: Option<usize>,
    /// While escalated, with `engine.quarantine_expiry` set: when the quarantine lifts.
    #[serde(default)]
    pub quarantine_until_ms: i64,
    /// While mitigated: since when (entity event time) the clear condition has held.
    pub clear_since_ms: Option<i64>,
    /// While mitigated: when the clear condition was last seen holding.
    pub clear_last_ms: i64,
    /// While escalated: the escalation record as published, until the driver has confirmed
    /// its delivery ([`crate::Engine::confirm_delivered`]). A process that restores the
    /// incident with it still here publishes it again, the same, so that an escalation is
    /// never lost between its changelog record's delivery and its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed_escalation: Option<Escalation>,
}

/// The incident id: the rule, the entity, and the position of the record that made the rule
/// fail (`topic index:partition:offset`).
///
/// No two records share a position, so no two incidents share an id; and a record delivered
/// again after a restart keeps its position, so the incident it opens, and its commands, keep
/// their ids: actuators can dedup on them.
pub fn incident_id(rule: &str, entity: &str, position: RecordPosition) -> String {
    format!(
        "{rule}/{entity}@{}:{}:{}",
        position.partition.topic, position.partition.partition, position.offset
    )
}

/// The command id of an attempt: the incident id and the attempt number.
pub fn command_id(incident: &str, attempt: u32) -> String {
    format!("{incident}#{attempt}")
}
