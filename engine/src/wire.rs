//! What salve writes and reads besides telemetry: commands, acks and the decision log.
//! `docs/wire-format.md` documents each; every record carries a version field `v`.

use serde::{Deserialize, Serialize};

/// The version of the command, ack and decision formats this build writes.
pub const WIRE_VERSION: u32 = 1;

/// A remediation request, published on an actuator topic, keyed by entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Format version.
    pub v: u32,
    /// Idempotency key: the same for the same incident and attempt, across restarts.
    pub id: String,
    /// The incident this attempt belongs to.
    pub incident: String,
    /// The entity to act on.
    pub entity: String,
    /// What to do, e.g. `restart`.
    pub action: String,
    /// Action parameters from the rule.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The rule that asked for it.
    pub rule: String,
    /// Why, for humans.
    pub reason: String,
    /// 1 for the first attempt of an incident.
    pub attempt: u32,
    /// When salve issued it, ms since the epoch.
    pub issued_at: i64,
    /// After this, an actuator must not act on it, ms since the epoch.
    pub expires_at: i64,
}

/// An actuator's report on a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// The actuator has the command; the outcome follows.
    Received,
    /// The action completed.
    Succeeded,
    /// The action ran and failed.
    Failed,
    /// The actuator refused it (expired, unknown action, ...).
    Rejected,
}

impl AckStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Received => "received",
            AckStatus::Succeeded => "succeeded",
            AckStatus::Failed => "failed",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// An acknowledgement, on the acks topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Format version; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// The command's `id`.
    pub command_id: String,
    /// The outcome.
    pub status: AckStatus,
    /// Free text, e.g. the action's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the actuator sent it, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Which actuator sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator: Option<String>,
}

/// Why an ack could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ack: {0}")]
pub struct AckDecodeError(pub String);

impl Ack {
    /// Decodes an ack message.
    pub fn decode(bytes: &[u8]) -> Result<Self, AckDecodeError> {
        let ack: Ack = serde_json::from_slice(bytes).map_err(|e| AckDecodeError(e.to_string()))?;
        if ack.v.is_some_and(|v| v != WIRE_VERSION) {
            return Err(AckDecodeError(format!(
                "field `v`: version {:?} is not supported; this build reads version {WIRE_VERSION}",
                ack.v
            )));
        }
        if ack.command_id.is_empty() {
            return Err(AckDecodeError(
                "field `command_id` must not be empty".into(),
            ));
        }
        Ok(ack)
    }
}

/// The states an incident moves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// The rule's condition holds; no action yet.
    Failing,
    /// A command is out; salve waits for the actuator's ack.
    Remediating,
    /// A paired action succeeded (e.g. `reroute`); its revert waits for the rule's clear
    /// condition to hold for `clear_for`.
    Mitigated,
    /// The revert command (e.g. `restore_route`) is out; salve waits for its ack.
    Reverting,
    /// The actuator reported success; the condition must stay away for the rule's
    /// `verify_for` before the incident is resolved.
    Verifying,
    /// An attempt failed; the next waits out its backoff.
    BackingOff,
    /// The rule's `approval` covers the next action: it waits for an operator to approve
    /// or deny it, and escalates if nobody answers in time.
    AwaitingApproval,
    /// Automation gave up (attempts, ladder or flap limit exhausted) and handed the incident
    /// to a human. It stays open, and holds its rule back on its subject, until resolved.
    Escalated,
    /// The actuator reported success (of the revert, for a paired action).
    Resolved,
    /// The attempt failed: a failed or rejected ack, or none before the deadline.
    Failed,
}

impl IncidentState {
    /// The wire name, as the decision log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Failing => "failing",
            IncidentState::Remediating => "remediating",
            IncidentState::Mitigated => "mitigated",
            IncidentState::Reverting => "reverting",
            IncidentState::Verifying => "verifying",
            IncidentState::BackingOff => "backing_off",
            IncidentState::AwaitingApproval => "awaiting_approval",
            IncidentState::Escalated => "escalated",
            IncidentState::Resolved => "resolved",
            IncidentState::Failed => "failed",
        }
    }

    /// Whether the attempt waits for the actuator's final ack: only then can an ack move it.
    pub fn awaits_ack(self) -> bool {
        matches!(self, IncidentState::Remediating | IncidentState::Reverting)
    }
}

/// A rule's judgement of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The condition holds (for its `hold_for`, if it has one): act.
    Failure,
    /// The condition started holding; it becomes a failure if it still holds after the rule's
    /// `hold_for`.
    Pending,
    /// The condition cleared before its `hold_for` ran out: recorded, not acted on.
    Transient,
    /// The condition holds, but an open incident upstream (a rule's `inhibited_by`) holds the
    /// action back.
    Inhibited,
}

/// What kind of decision-log record this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A rule judged an entity.
    Verdict,
    /// An incident changed state.
    Transition,
    /// An actuator acknowledged a command.
    Ack,
    /// A command that dry-run mode, or a shadow rule, decided on and did not send.
    WouldCommand,
}

/// One window value a decision rested on, e.g. `count("process_exit", 60s) = 3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The host function, e.g. `count`.
    #[serde(rename = "fn")]
    pub function: String,
    /// The series it read.
    pub series: String,
    /// The window, when the function takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
    /// What it returned; `null` when there was no data.
    pub value: Option<f64>,
}

/// A record in the decision log: a verdict, an incident transition, or an ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Format version.
    pub v: u32,
    /// When salve decided, ms since the epoch.
    pub ts: i64,
    /// What kind of record.
    pub kind: DecisionKind,
    /// The rule.
    pub rule: String,
    /// The entity.
    pub entity: String,
    /// The incident, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// For verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// For transitions: the state left (absent when the incident opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IncidentState>,
    /// For transitions: the state entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<IncidentState>,
    /// The attempt concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The command concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// For acks: what the actuator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_status: Option<AckStatus>,
    /// For acks: which actuator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator: Option<String>,
    /// Why, for humans.
    pub reason: String,
    /// The window values behind a verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

impl Decision {
    /// A record with the common fields set and the rest empty.
    pub fn new(kind: DecisionKind, ts: i64, rule: &str, entity: &str, reason: String) -> Self {
        Self {
            v: WIRE_VERSION,
            ts,
            kind,
            rule: rule.to_owned(),
            entity: entity.to_owned(),
            incident: None,
            verdict: None,
            from: None,
            to: None,
            attempt: None,
            command_id: None,
            ack_status: None,
            actuator: None,
            reason,
            evidence: Vec::new(),
        }
    }
}

/// A hand-over to a human: published on the escalations topic, keyed by entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Format version.
    pub v: u32,
    /// The incident handed over.
    pub incident: String,
    /// The entity or group it is about.
    pub entity: String,
    /// The rule that opened it.
    pub rule: String,
    /// Why automation stopped.
    pub reason: String,
    /// Why automation stopped, as a code to route and count by.
    pub cause: EscalationCause,
    /// Commands issued for the incident before it was escalated.
    pub attempts: u32,
    /// When.
    pub ts: i64,
}

/// Why an incident was handed to a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationCause {
    /// Every retry and ladder step failed.
    Exhausted,
    /// The flap limit: too many commands of one action on one subject within the window.
    Flapping,
    /// Too much of a group failing at once: automation froze for the group.
    Storm,
    /// A paired action's revert failed, leaving the subject mitigated.
    RevertFailed,
    /// The incident could not be acted on (no target, no action params).
    Unactionable,
    /// The rule was removed by a reload while its action was in force.
    RuleRemoved,
    /// Nobody approved or denied an action that needed approval in time.
    ApprovalTimeout,
    /// A canary of a rollout across a group escalated: the rollout halted.
    CanaryFailed,
    /// The rule's fixes fail too often (`disable_below`): it escalates instead of acting.
    RuleDisabled,
}

impl EscalationCause {
    /// The wire name, also the `cause` label of the escalations metric.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationCause::Exhausted => "exhausted",
            EscalationCause::Flapping => "flapping",
            EscalationCause::Storm => "storm",
            EscalationCause::RevertFailed => "revert_failed",
            EscalationCause::Unactionable => "unactionable",
            EscalationCause::RuleRemoved => "rule_removed",
            EscalationCause::ApprovalTimeout => "approval_timeout",
            EscalationCause::CanaryFailed => "canary_failed",
            EscalationCause::RuleDisabled => "rule_disabled",
        }
    }
}

/// A subject's durable state (open incidents, latches, recent commands), for the changelog
/// topic. Written whenever an incident of the subject changes; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangelogRecord {
    /// The source partition whose state this is: the record goes to the changelog partition
    /// of the same number, so that it moves with the source partition.
    #[serde(skip)]
    pub partition: crate::PartitionId,
    /// The entity, or the group id.
    pub subject: String,
    /// The serialized state, see [`crate::Engine::restore`]; `None` when nothing is left.
    pub value: Option<String>,
}

impl ChangelogRecord {
    /// The Kafka key: the source partition and the subject, so that topics sharing a
    /// partition number do not share keys.
    pub fn key(&self) -> String {
        format!(
            "{}:{}|{}",
            self.partition.topic, self.partition.partition, self.subject
        )
    }
}

/// What the engine asks its driver to publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// To the actuator topic for `command.action`, keyed by entity.
    Command(Command),
    /// To the decisions topic, keyed by entity.
    Decision(Decision),
    /// To the escalations topic, keyed by entity.
    Escalation(Escalation),
    /// To the changelog topic's partition of the same number as the source partition.
    Changelog(ChangelogRecord),
}

impl Output {
    /// The Kafka key: the entity.
    pub fn key(&self) -> &str {
        match self {
            Output::Command(c) => &c.entity,
            Output::Decision(d) => &d.entity,
            Output::Escalation(e) => &e.entity,
            Output::Changelog(c) => &c.subject,
        }
    }
}
