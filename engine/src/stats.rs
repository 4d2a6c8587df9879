//! Counters the engine keeps about its own work. Drivers print them; metrics export them.

use serde::Serialize;

/// Running totals since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Telemetry messages seen, valid or not.
    pub events_in: u64,
    /// Messages that failed to decode (and were dead-lettered by the driver).
    pub decode_errors: u64,
    /// Events older than `engine.allowed_lateness` behind their entity (dead-lettered).
    pub late_events: u64,
    /// Events too far ahead of the processing clock (dead-lettered).
    pub future_events: u64,
    /// Rule calls.
    pub rule_evaluations: u64,
    /// Rule calls answered from memory, without running the script: every host read came
    /// out as in the entity's previous call. Counted among the evaluations too.
    pub rule_memo_hits: u64,
    /// Rule calls evaluated natively, without Rhai: the function is one expression of the
    /// kind salve compiles. Counted among the evaluations too.
    pub rule_calls_native: u64,
    /// Rule calls that raised an error.
    pub rule_errors: u64,
    /// Rule calls stopped by the operation budget.
    pub rule_budget_stops: u64,
    /// Failure verdicts.
    pub verdicts_failure: u64,
    /// Conditions that started holding, for rules with a `hold_for`.
    pub verdicts_pending: u64,
    /// Conditions that cleared within their `hold_for`.
    pub verdicts_transient: u64,
    /// Evaluations that found the condition still holding after an incident closed, and so
    /// opened nothing until it clears.
    pub verdicts_latched: u64,
    /// Failures held back by an open incident upstream.
    pub verdicts_inhibited: u64,
    /// Attempts whose fix did not hold while verifying.
    pub verifications_failed: u64,
    /// Incidents resolved after verification.
    pub verified: u64,
    /// Attempts scheduled again after a backoff.
    pub retries: u64,
    /// Commands decided on and not sent: dry-run mode, or shadow rules.
    pub would_commands: u64,
    /// Times an idle partition's event time was moved on by the processing clock.
    pub idle_advances: u64,
    /// Open incidents read back from the changelog.
    pub incidents_restored: u64,
    /// Incidents handed to a human.
    pub escalations: u64,
    /// Of which, because of the flap limit.
    pub flap_stops: u64,
    /// Of which, storms: too much of a group failing at once.
    pub storms: u64,
    /// Commands issued.
    pub commands: u64,
    /// Acks matched to an open attempt.
    pub acks: u64,
    /// Acks that matched no open attempt here (unknown, late, or another process's).
    pub acks_unmatched: u64,
    /// Of those, acks applied later, when a restore brought in the incident that waited for
    /// them (they came while its partition was moving).
    pub acks_replayed: u64,
    /// Acks that could not be decoded.
    pub ack_decode_errors: u64,
    /// Attempts whose actuator reported success.
    pub attempts_succeeded: u64,
    /// Attempts that failed: failed or rejected ack.
    pub attempts_failed: u64,
    /// Attempts that got no final ack before the deadline.
    pub attempts_timed_out: u64,
    /// Entities forgotten after `engine.entity_ttl` without events.
    pub entities_expired: u64,
    /// Per rule, in the order of the rule set in force.
    pub rules: Vec<RuleCounters>,
}

impl Stats {
    /// The counters of the rule called `name`, if it is loaded.
    pub fn rule(&self, name: &str) -> Option<&RuleCounters> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// What one rule's calls did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounters {
    /// The rule.
    pub name: String,
    /// Its calls.
    pub evaluations: u64,
    /// Calls that raised an error.
    pub errors: u64,
    /// Calls stopped by the operation budget.
    pub budget_stops: u64,
}
