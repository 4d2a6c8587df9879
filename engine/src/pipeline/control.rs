//! What operators change while the engine runs: the mode, globally or per rule; escalated
//! incidents and quarantines; and the rule set itself, reloaded through the same checks as at
//! start-up.
//!
//! Every change here produces the same outputs as the engine's own transitions (decisions,
//! changelog records), so the decision log and the changelog tell the whole story whoever
//! acted.

use super::storm::STORM_PREFIX;
use super::{close_attempt, close_orphan, hand_over, transition, Engine, PartitionState};
use crate::config::Mode;
use crate::entity::Subject;
use crate::wire::{EscalationCause, IncidentState, Output};
use salve_rules::{LoadErrors, RuleSet, Runtime};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The global mode and the per-rule overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modes {
    /// For every rule.
    pub global: Mode,
    /// Per rule, by name. Kept across reloads; a rule that comes back gets its mode back.
    pub rules: BTreeMap<String, Mode>,
}

impl Modes {
    pub(crate) fn new(global: Mode) -> Self {
        Self {
            global,
            rules: BTreeMap::new(),
        }
    }

    /// The mode a rule runs in: the more cautious of the global mode and its own.
    pub fn for_rule(&self, rule: &str) -> Mode {
        self.rules
            .get(rule)
            .map_or(self.global, |&own| own.max(self.global))
    }
}

/// Where an open incident is: its partition, its subject's key, its index among the
/// subject's incidents, and its state.
pub(crate) struct Found {
    pub(crate) partition: super::PartitionId,
    pub(crate) key: String,
    pub(crate) index: usize,
    pub(crate) state: IncidentState,
}

/// How the latest reload went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadOutcome {
    /// When (processing time).
    pub at_ms: i64,
    /// The rule-set version in force afterwards: unchanged when the reload failed.
    pub version: u64,
    /// What triggered it: `file`, `signal`, `api`.
    pub trigger: String,
    /// Every problem found, as `file:line:column: message`; empty when it succeeded.
    pub errors: Vec<String>,
    /// Rules that came in.
    pub added: Vec<String>,
    /// Rules that went, whose open incidents were closed or escalated.
    pub removed: Vec<String>,
    /// Rules still there, perhaps changed.
    pub kept: Vec<String>,
}

impl ReloadOutcome {
    /// Whether the new rule set is in force.
    pub fn succeeded(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Why an operator's request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No such incident, entity, rule or quarantine here.
    #[error("{0}")]
    NotFound(String),
    /// It exists, but the request does not apply to it as it stands.
    #[error("{0}")]
    FailedPrecondition(String),
}

impl Engine {
    /// The modes in force.
    pub fn modes(&self) -> &Modes {
        &self.modes
    }

    /// Sets the mode of every rule, or of one rule by name. A rule's own mode can only make
    /// it more cautious than the global mode; `None` for a rule drops its override.
    pub fn set_mode(&mut self, rule: Option<&str>, mode: Option<Mode>) -> Result<(), ControlError> {
        match (rule, mode) {
            (None, Some(mode)) => self.modes.global = mode,
            (None, None) => {
                return Err(ControlError::FailedPrecondition(
                    "the global mode cannot be unset; give active, dry_run or paused".into(),
                ))
            }
            (Some(rule), mode) => {
                // A rule that is not loaded may still get a mode: it holds when it comes back.
                match mode {
                    Some(mode) => self.modes.rules.insert(rule.to_owned(), mode),
                    None => self.modes.rules.remove(rule),
                };
            }
        }
        self.refresh_modes();
        tracing::info!(rule = rule.unwrap_or("*"), mode = ?mode, "mode set");
        Ok(())
    }

    /// The rule-set version: 1 at start-up, bumped by every reload that succeeds.
    pub fn rules_version(&self) -> u64 {
        self.rules_version
    }

    /// How the latest reload went, if there was one.
    pub fn last_reload(&self) -> Option<&ReloadOutcome> {
        self.last_reload.as_ref()
    }

    /// Replaces the rule set, taking the same path as start-up: `load` builds the new set in
    /// the engine's sandbox, the same window checks and probe calls run, and only a set that
    /// passes them all is swapped in. On any error the old set keeps running, untouched.
    ///
    /// Entity state and open incidents are kept. Incidents of rules that are gone close with
    /// a reason, except those whose action is still in force (a mitigated incident waiting
    /// for its revert): those go to a human, since nothing will revert them now.
    pub fn reload(
        &mut self,
        trigger: &str,
        load: impl FnOnce(&Runtime) -> Result<RuleSet, LoadErrors>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> &ReloadOutcome {
        let checked = load(&self.runtime).and_then(|rules| {
            super::check_windows(&rules, &self.config)?;
            rules.probe(&self.runtime)?;
            Ok(rules)
        });
        self.frame.borrow_mut().noted.clear();
        let outcome = match checked {
            Err(errors) => {
                tracing::error!(
                    trigger,
                    "rule reload rejected; the previous rules keep running:\n{errors}"
                );
                ReloadOutcome {
                    at_ms: now_ms,
                    version: self.rules_version,
                    trigger: trigger.to_owned(),
                    errors: errors.0.iter().map(ToString::to_string).collect(),
                    added: Vec::new(),
                    removed: Vec::new(),
                    kept: Vec::new(),
                }
            }
            Ok(rules) => {
                let old: Vec<String> = self.rule_names.iter().map(|n| n.to_string()).collect();
                let new: Vec<String> = rules.rules().iter().map(|r| r.decl.name.clone()).collect();
                let removed: Vec<String> =
                    old.iter().filter(|n| !new.contains(n)).cloned().collect();
                let added: Vec<String> = new.iter().filter(|n| !old.contains(n)).cloned().collect();
                let kept: Vec<String> = new.iter().filter(|n| old.contains(n)).cloned().collect();
                self.install(rules);
                let start = out.len();
                self.retire(&removed, now_ms, out);
                self.ledger.observe(&out[start..]);
                tracing::info!(
                    trigger,
                    version = self.rules_version,
                    ?added,
                    ?removed,
                    "rules reloaded"
                );
                ReloadOutcome {
                    at_ms: now_ms,
                    version: self.rules_version,
                    trigger: trigger.to_owned(),
                    errors: Vec::new(),
                    added,
                    removed,
                    kept,
                }
            }
        };
        self.last_reload.insert(outcome)
    }

    /// Ends what removed rules left behind: their incidents, pending conditions and latches.
    fn retire(&mut self, removed: &[String], now_ms: i64, out: &mut Vec<Output>) {
        if removed.is_empty() {
            return;
        }
        let gone = |rule: &str| removed.iter().any(|r| r == rule);
        for (&partition, state) in self.partitions.iter_mut() {
            let PartitionState {
                entities,
                group_subjects,
                commands,
                safety,
                ..
            } = state;
            let forgotten = safety.retire(&gone);
            self.dirty
                .extend(forgotten.into_iter().map(|key| (partition, key)));
            let subjects = entities
                .iter_mut()
                .map(|(key, e)| (&**key, &mut e.subject))
                .chain(
                    group_subjects
                        .iter_mut()
                        .map(|(key, g)| (&**key, &mut g.subject)),
                );
            for (key, subject) in subjects {
                subject.pending.retain(|p| !gone(&p.rule));
                for rule in removed {
                    if subject.is_latched(rule) {
                        subject.unlatch(rule);
                        self.dirty.push((partition, key.to_string()));
                    }
                }
                let before = out.len();
                while let Some(index) = subject
                    .incidents
                    .iter()
                    .position(|i| gone(&i.rule) && i.state != IncidentState::Escalated)
                {
                    let incident = &mut subject.incidents[index];
                    if incident.state == IncidentState::Mitigated {
                        let reason = format!(
                            "rule {} was removed while its action was in force; nothing will revert it now",
                            incident.rule
                        );
                        let cause = EscalationCause::RuleRemoved;
                        hand_over(key, incident, reason, cause, now_ms, out);
                        self.stats.escalations += 1;
                        continue;
                    }
                    let reason = format!("rule {} was removed by a reload", incident.rule);
                    close_orphan(key, subject, index, reason, commands, now_ms, out);
                }
                if out.len() > before {
                    self.dirty.push((partition, key.to_string()));
                }
            }
        }
        self.emit_changelog(out);
    }

    /// An operator resolves an escalated incident: it closes as resolved, its flap history is
    /// cleared, and its rule waits for the condition to clear before it may fire again, as
    /// after any fix. A storm's id (`storm/<rule>/<group id>`) resolves the storm: see
    /// [`Engine::resolve_storm`].
    pub fn resolve_incident(
        &mut self,
        id: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ControlError> {
        if let Some(key) = id.strip_prefix(STORM_PREFIX) {
            return self.resolve_storm(key, note, now_ms, out);
        }
        let Found {
            partition,
            key,
            index,
            state,
        } = self.find_incident(id)?;
        if state != IncidentState::Escalated {
            return Err(ControlError::FailedPrecondition(format!(
                "incident {id} is {}; only an escalated incident is resolved by hand, the others are still in automation's hands (pause the rule to stop it)",
                state.as_str()
            )));
        }
        let start = out.len();
        let subject = self.subject_mut(partition, &key)?;
        let incident = subject.incidents.remove(index);
        subject.forget_recent();
        subject.latch(Arc::clone(&incident.rule));
        out.push(Output::Decision(close_attempt(
            incident,
            &key,
            now_ms,
            IncidentState::Resolved,
            operator_reason("resolved by an operator", note),
        )));
        self.operated(partition, key, start, out);
        Ok(())
    }

    /// An operator resolves the storm `key` (`<rule>/<group id>`): the rule's automation acts
    /// in the group again, the attempts the storm held are let go at once, and no new
    /// escalation follows until the failing share falls back and a new storm starts.
    fn resolve_storm(
        &mut self,
        key: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ControlError> {
        let mut raging: Vec<super::PartitionId> = Vec::new();
        for (partition, state) in self.partitions.iter_mut() {
            if state.safety.storms.escalated.remove(key) {
                state.safety.storms.lifted.insert(key.to_owned());
                raging.push(*partition);
            }
        }
        let Some((rule, group)) = key.split_once('/').filter(|_| !raging.is_empty()) else {
            return Err(ControlError::NotFound(format!(
                "no storm {STORM_PREFIX}{key} on the partitions this process owns: it subsided, was resolved, or is another's"
            )));
        };
        out.push(Output::Decision(transition(
            now_ms,
            rule,
            group,
            &format!("{STORM_PREFIX}{key}"),
            Some(IncidentState::Escalated),
            IncidentState::Resolved,
            operator_reason(
                "storm resolved by an operator: automation acts in the group again until its failing share falls back",
                note,
            ),
        )));
        for partition in raging {
            self.thaw(partition, now_ms);
        }
        Ok(())
    }

    /// An operator lifts the quarantine that the flap limit, or any escalation, put on `rule`
    /// for `subject`: the escalated incident closes, the flap history is cleared, and the rule
    /// may act at once if its condition still holds.
    pub fn lift_quarantine(
        &mut self,
        subject_key: &str,
        rule: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<String, ControlError> {
        let partition = self
            .partitions
            .iter()
            .find(|(_, s)| {
                s.entities.contains_key(subject_key) || s.group_subjects.contains_key(subject_key)
            })
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no entity or group {subject_key} on the partitions this process owns"
                ))
            })?;
        let start = out.len();
        let subject = self.subject_mut(partition, subject_key)?;
        let index = subject
            .incidents
            .iter()
            .position(|i| &*i.rule == rule && i.state == IncidentState::Escalated)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "{subject_key} is not quarantined for rule {rule}: it has no escalated incident of that rule"
                ))
            })?;
        let incident = subject.incidents.remove(index);
        let id = incident.id.clone();
        subject.forget_recent();
        subject.unlatch(rule);
        out.push(Output::Decision(close_attempt(
            incident,
            subject_key,
            now_ms,
            IncidentState::Failed,
            operator_reason(
                "quarantine lifted by an operator; automation may act again",
                note,
            ),
        )));
        self.operated(partition, subject_key.to_owned(), start, out);
        Ok(id)
    }

    /// An operator approves the action an incident waits on: it is sent at once, and the
    /// retries of the same ladder step need no new approval.
    pub fn approve_incident(
        &mut self,
        id: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ControlError> {
        let (partition, key, index) = self.awaiting(id)?;
        let start = out.len();
        let Self {
            partitions,
            rules,
            config,
            modes,
            stats,
            ledger,
            ..
        } = self;
        let Some(state) = partitions.get_mut(&partition) else {
            return Err(ControlError::NotFound(format!("{key} is gone")));
        };
        // An approved action is still a command: not into a storm.
        let command_id = state
            .entities
            .get(key.as_str())
            .and_then(|e| e.subject.incidents.get(index))
            .map(|i| i.command_id.clone())
            .unwrap_or_default();
        let frozen = state.freeze(rules, &key, &command_id, stats, now_ms, out);
        let Some(subject) =
            super::subject_mut(&mut state.entities, &mut state.group_subjects, &key)
        else {
            return Err(ControlError::NotFound(format!("{key} is gone")));
        };
        let incident = &mut subject.incidents[index];
        incident.approved_step = Some(incident.step);
        let mut lifecycle = super::Lifecycle {
            rules,
            config,
            modes,
            ledger,
            stats,
            now_ms,
            frozen,
            held: Vec::new(),
        };
        let reason = operator_reason("approved by an operator", note);
        lifecycle.next_attempt(&key, subject, index, Some(reason), &mut state.commands, out);
        state.safety.note_held(lifecycle.held);
        self.operated(partition, key, start, out);
        Ok(())
    }

    /// An operator denies the action an incident waits on: the incident closes unresolved,
    /// and its rule waits for the condition to clear before it may ask again.
    pub fn deny_incident(
        &mut self,
        id: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ControlError> {
        let (partition, key, index) = self.awaiting(id)?;
        let start = out.len();
        let subject = self.subject_mut(partition, &key)?;
        let incident = subject.incidents.remove(index);
        subject.latch(Arc::clone(&incident.rule));
        let command = incident.command_id.clone();
        out.push(Output::Decision(close_attempt(
            incident,
            &key,
            now_ms,
            IncidentState::Failed,
            operator_reason("denied by an operator", note),
        )));
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.commands.subjects.remove(&command);
        }
        self.operated(partition, key, start, out);
        Ok(())
    }

    /// After an operator changed `key`'s incidents: its changelog record, and the ledger's
    /// reading of what the change produced from `out[start..]`.
    fn operated(
        &mut self,
        partition: super::PartitionId,
        key: String,
        start: usize,
        out: &mut Vec<Output>,
    ) {
        self.dirty.push((partition, key));
        self.emit_changelog(out);
        self.ledger.observe(&out[start..]);
    }

    /// An incident that waits for approval.
    fn awaiting(&self, id: &str) -> Result<(super::PartitionId, String, usize), ControlError> {
        let found = self.find_incident(id)?;
        if found.state != IncidentState::AwaitingApproval {
            return Err(ControlError::FailedPrecondition(format!(
                "incident {id} is {}, not awaiting approval",
                found.state.as_str()
            )));
        }
        Ok((found.partition, found.key, found.index))
    }

    /// Where an open incident is, and its state.
    pub(crate) fn find_incident(&self, id: &str) -> Result<Found, ControlError> {
        // Ids read `<rule>/<subject>@<position>`: the subject names where to look.
        let key = id
            .split_once('/')
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .map(|(key, _)| key)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "{id:?} is not an incident id (<rule>/<entity>@<topic>:<partition>:<offset>)"
                ))
            })?;
        for (partition, state) in &self.partitions {
            let found = state
                .subject(key)
                .and_then(|(s, _)| s.incidents.iter().enumerate().find(|(_, i)| i.id == id));
            if let Some((index, incident)) = found {
                return Ok(Found {
                    partition: *partition,
                    key: key.to_owned(),
                    index,
                    state: incident.state,
                });
            }
        }
        let closed = self
            .ledger
            .incident(id)
            .and_then(|r| r.closed_at_ms)
            .is_some();
        Err(if closed {
            ControlError::FailedPrecondition(format!("incident {id} is already closed"))
        } else {
            ControlError::NotFound(format!(
                "no open incident {id} on the partitions this process owns"
            ))
        })
    }

    fn subject_mut(
        &mut self,
        partition: super::PartitionId,
        key: &str,
    ) -> Result<&mut Subject, ControlError> {
        self.partitions
            .get_mut(&partition)
            .and_then(|s| super::subject_mut(&mut s.entities, &mut s.group_subjects, key))
            .ok_or_else(|| ControlError::NotFound(format!("{key} is gone")))
    }
}

fn operator_reason(what: &str, note: &str) -> String {
    if note.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {note}")
    }
}

#[cfg(test)]
mod tests;
