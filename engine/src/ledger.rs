//! The ledger: what the engine's outputs say about how well remediation works.
//!
//! It reads the outputs each call produces (commands, transitions, acks, escalations) rather
//! than hooking every place that makes them, so it cannot disagree with the decision log. It
//! keeps, per rule and action, attempts, verified successes, failures and escalations, and the
//! time from first failing to resolved (MTTR); and for each open or recently closed incident,
//! its history, for operators who ask over gRPC.
//!
//! Counters are this process's since it started, like any Prometheus counter: a partition that
//! moves away takes its incidents, not its past counts.

use crate::wire::{DecisionKind, EscalationCause, IncidentState, Output};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Upper bounds, in seconds, of the time-to-resolve histogram's buckets.
pub const RESOLVE_BUCKETS_S: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
];

/// Closed incidents whose history stays queryable.
const CLOSED_KEPT: usize = 1024;
/// Transitions kept per incident: the first few and the latest.
const HISTORY_KEPT: usize = 64;

/// One transition in an incident's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Processing time of the transition.
    pub ts: i64,
    /// The state it left; none when the incident opened.
    pub from: Option<IncidentState>,
    /// The state it entered.
    pub to: IncidentState,
    /// The attempt it concerns.
    pub attempt: Option<u32>,
    /// The command of that attempt.
    pub command_id: Option<String>,
    /// Why, as the decision log says.
    pub reason: String,
}

/// What the ledger knows of one incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRecord {
    /// The incident id.
    pub id: String,
    /// The rule that opened it.
    pub rule: String,
    /// The entity, or group id, it is about.
    pub subject: String,
    /// Where it stands now.
    pub state: IncidentState,
    /// When it opened (processing time), if the ledger saw it open.
    pub opened_at_ms: Option<i64>,
    /// When it closed.
    pub closed_at_ms: Option<i64>,
    /// The actions commanded, in order.
    pub actions: Vec<String>,
    /// Its transitions, oldest first; long histories keep their first and latest entries.
    pub history: Vec<HistoryEntry>,
    /// Decided on in a dry run or by a shadow rule: nothing was sent.
    pub dry: bool,
}

/// Outcomes of one action of one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    /// Commands issued.
    pub attempts: u64,
    /// Attempts that did what they should, and were verified where the rule verifies.
    pub succeeded: u64,
    /// Attempts that failed: a failed or rejected ack, a timeout, or a fix that did not hold.
    pub failed: u64,
    /// Incidents escalated while this was their latest action.
    pub escalated: u64,
    /// MTTR of the incidents this action resolved: those whose attempt of it succeeded and
    /// closed them (for a paired action, its revert's attempt); an operator's resolution of
    /// an escalated incident counts for its rule only.
    pub resolve_times: ResolveTimes,
}

impl ActionRecord {
    /// Successes over finished attempts; `None` before any finished.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.succeeded + self.failed;
        (finished > 0).then(|| self.succeeded as f64 / finished as f64)
    }
}

/// Time from an incident's first failing to its resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResolveTimes {
    /// Incidents resolved, in [`RESOLVE_BUCKETS_S`] order, not cumulative; the last counts
    /// those above the largest bound.
    pub buckets: [u64; RESOLVE_BUCKETS_S.len() + 1],
    /// Their total, in milliseconds.
    pub sum_ms: u64,
    /// How many.
    pub count: u64,
}

impl ResolveTimes {
    fn record(&mut self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        let seconds = ms as f64 / 1000.0;
        let bucket = RESOLVE_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(RESOLVE_BUCKETS_S.len());
        self.buckets[bucket] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    /// The mean time to resolve, in milliseconds.
    pub fn mean_ms(&self) -> Option<u64> {
        self.sum_ms.checked_div(self.count)
    }
}

/// Effectiveness of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleRecord {
    /// Incidents opened.
    pub opened: u64,
    /// Incidents resolved after a real remediation (dry runs and shadow rules excluded).
    pub resolved: u64,
    /// Incidents closed unresolved.
    pub failed: u64,
    /// Incidents handed to a human.
    pub escalated: u64,
    /// Per action.
    pub actions: BTreeMap<String, ActionRecord>,
    /// MTTR.
    pub resolve_times: ResolveTimes,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Ledger {
    rules: BTreeMap<String, RuleRecord>,
    commands_by_action: BTreeMap<String, u64>,
    acks_by_status: BTreeMap<&'static str, u64>,
    escalations_by_cause: BTreeMap<&'static str, u64>,
    incidents: HashMap<String, IncidentRecord>,
    closed: VecDeque<String>,
}

impl Ledger {
    /// Reads the outputs of one engine call.
    pub fn observe(&mut self, outputs: &[Output]) {
        for output in outputs {
            match output {
                Output::Command(command) => {
                    *self
                        .commands_by_action
                        .entry(command.action.clone())
                        .or_default() += 1;
                    self.action_mut(&command.rule, &command.action).attempts += 1;
                    if let Some(record) = self.incidents.get_mut(&command.incident) {
                        record.actions.push(command.action.clone());
                    }
                }
                Output::Escalation(escalation) => {
                    *self
                        .escalations_by_cause
                        .entry(escalation.cause.as_str())
                        .or_default() += 1;
                }
                Output::Decision(decision) => match decision.kind {
                    DecisionKind::Ack => {
                        if let Some(status) = decision.ack_status {
                            *self.acks_by_status.entry(status.as_str()).or_default() += 1;
                        }
                    }
                    DecisionKind::WouldCommand => {
                        if let Some(record) = decision
                            .incident
                            .as_ref()
                            .and_then(|id| self.incidents.get_mut(id))
                        {
                            record.dry = true;
                        }
                    }
                    DecisionKind::Transition => self.transition(decision),
                    DecisionKind::Verdict => {}
                },
                Output::Changelog(_) => {}
            }
        }
    }

    fn transition(&mut self, decision: &crate::wire::Decision) {
        let (Some(id), Some(to)) = (decision.incident.as_ref(), decision.to) else {
            return;
        };
        // A storm is the group's, no incident of its rule: its resolution by an operator is in
        // the decision log, as its escalation is, and counts for no rule.
        if id.starts_with(crate::pipeline::storm::STORM_PREFIX) {
            return;
        }
        let entry = HistoryEntry {
            ts: decision.ts,
            from: decision.from,
            to,
            attempt: decision.attempt,
            command_id: decision.command_id.clone(),
            reason: decision.reason.clone(),
        };
        let record = self
            .incidents
            .entry(id.clone())
            .or_insert_with(|| IncidentRecord {
                id: id.clone(),
                rule: decision.rule.clone(),
                subject: decision.entity.clone(),
                state: to,
                opened_at_ms: None,
                closed_at_ms: None,
                actions: Vec::new(),
                history: Vec::new(),
                dry: false,
            });
        if decision.from.is_none() && to == IncidentState::Failing {
            record.opened_at_ms.get_or_insert(decision.ts);
        }
        record.state = to;
        if record.history.len() >= HISTORY_KEPT {
            // Keep how it started and how it is going; drop from the middle.
            record.history.remove(HISTORY_KEPT / 4);
        }
        record.history.push(entry);
        let dry = record.dry;
        let opened_at = record.opened_at_ms;
        let action = record.actions.last().cloned();
        let closes = matches!(to, IncidentState::Resolved | IncidentState::Failed);
        if closes {
            record.closed_at_ms = Some(decision.ts);
        }

        let rule = self.rules.entry(decision.rule.clone()).or_default();
        let attempt_was_out = matches!(
            decision.from,
            Some(IncidentState::Remediating | IncidentState::Reverting | IncidentState::Verifying)
        );
        match to {
            IncidentState::Failing if decision.from.is_none() => rule.opened += 1,
            IncidentState::Resolved if !dry => {
                rule.resolved += 1;
                if let Some(opened) = opened_at {
                    rule.resolve_times.record(decision.ts - opened);
                }
            }
            IncidentState::Failed => rule.failed += 1,
            IncidentState::Escalated => rule.escalated += 1,
            _ => {}
        }
        if let Some(action) = action.filter(|_| !dry) {
            let record = rule.actions.entry(action).or_default();
            // Resolved by its attempt, not by an operator after an escalation.
            let by_attempt = to == IncidentState::Resolved && attempt_was_out;
            if let Some(opened) = opened_at.filter(|_| by_attempt) {
                record.resolve_times.record(decision.ts - opened);
            }
            match to {
                IncidentState::Resolved | IncidentState::Mitigated if attempt_was_out => {
                    record.succeeded += 1;
                }
                IncidentState::BackingOff
                | IncidentState::Failing
                | IncidentState::Escalated
                | IncidentState::Failed
                    if attempt_was_out =>
                {
                    record.failed += 1;
                }
                _ => {}
            }
            if to == IncidentState::Escalated {
                record.escalated += 1;
            }
        }
        if closes {
            self.closed.push_back(id.clone());
            while self.closed.len() > CLOSED_KEPT {
                if let Some(old) = self.closed.pop_front() {
                    self.incidents.remove(&old);
                }
            }
        }
    }

    fn action_mut(&mut self, rule: &str, action: &str) -> &mut ActionRecord {
        self.rules
            .entry(rule.to_owned())
            .or_default()
            .actions
            .entry(action.to_owned())
            .or_default()
    }

    /// Notes an incident read back from the changelog, whose history this process never saw.
    /// `opened_at_ms` is when it opened (processing time), if the record says: its time to
    /// resolve counts from there, across the restart. `action` is its latest action, if it
    /// commanded one: the outcome of the attempt under way is that action's.
    pub fn restored(
        &mut self,
        id: &str,
        rule: &str,
        subject: &str,
        state: IncidentState,
        opened_at_ms: Option<i64>,
        action: Option<&str>,
    ) {
        self.incidents
            .entry(id.to_owned())
            .or_insert_with(|| IncidentRecord {
                id: id.to_owned(),
                rule: rule.to_owned(),
                subject: subject.to_owned(),
                state,
                opened_at_ms,
                closed_at_ms: None,
                actions: action.map(str::to_owned).into_iter().collect(),
                history: Vec::new(),
                dry: false,
            });
    }

    /// Forgets open incidents that moved to another process with their partition.
    pub fn forget(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            if self
                .incidents
                .get(&id)
                .is_some_and(|r| r.closed_at_ms.is_none())
            {
                self.incidents.remove(&id);
            }
        }
    }

    /// Open incidents, by state. The ledger sees every transition, so it knows each open
    /// incident's state without a pass over every entity.
    pub fn open_by_state(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for record in self.incidents.values().filter(|r| r.closed_at_ms.is_none()) {
            *counts.entry(record.state.as_str().to_owned()).or_default() += 1;
        }
        counts
    }

    /// An incident's record, open or recently closed.
    pub fn incident(&self, id: &str) -> Option<&IncidentRecord> {
        self.incidents.get(id)
    }

    /// Recently closed incidents, newest first.
    pub fn closed(&self) -> impl Iterator<Item = &IncidentRecord> {
        self.closed
            .iter()
            .rev()
            .filter_map(|id| self.incidents.get(id))
    }

    /// Effectiveness by rule.
    pub fn rules(&self) -> &BTreeMap<String, RuleRecord> {
        &self.rules
    }

    /// Commands issued, by action.
    pub fn commands_by_action(&self) -> &BTreeMap<String, u64> {
        &self.commands_by_action
    }

    /// Acks applied to an attempt, by status.
    pub fn acks_by_status(&self) -> &BTreeMap<&'static str, u64> {
        &self.acks_by_status
    }

    /// Escalations, by cause.
    pub fn escalations_by_cause(&self) -> &BTreeMap<&'static str, u64> {
        &self.escalations_by_cause
    }
}

/// Every escalation cause, for metrics that list each one even at zero.
pub const ESCALATION_CAUSES: [EscalationCause; 9] = [
    EscalationCause::Exhausted,
    EscalationCause::Flapping,
    EscalationCause::Storm,
    EscalationCause::RevertFailed,
    EscalationCause::Unactionable,
    EscalationCause::RuleRemoved,
    EscalationCause::ApprovalTimeout,
    EscalationCause::CanaryFailed,
    EscalationCause::RuleDisabled,
];
