//! Canary waves: when many members of a group fail for one rule at once (a bad deploy, a
//! poisoned config), the fix is itself suspect. salve acts on a canary share of them first,
//! widens in waves as each wave's fixes are verified, and halts the rollout, handing it to a
//! human, as soon as a canary's incident escalates.
//!
//! A rollout's progress lives in its partition, beside the storms, and is written to the
//! changelog under `#rollout/<rule>/<group id>`, so that a restart or a partition move resumes
//! it at the wave it had reached, halted if it was halted.

use super::Judge;
use crate::entity::EntityState;
use crate::group::group_id;
use crate::wire::{Escalation, EscalationCause, IncidentState, Output, WIRE_VERSION};
use hashbrown::HashMap;

/// What a partition knows about the groups rules protect.
#[derive(Debug, Default)]
pub(crate) struct GroupSafety {
    /// Groups in a storm, as `<rule>/<group id>`: escalated once, frozen until it subsides
    /// or an operator resolves it.
    pub(crate) storms: super::storm::Storms,
    /// Canary rollouts in progress, by `<rule>/<group id>`.
    pub(crate) rollouts: HashMap<String, Rollout>,
    /// Attempts a storm holds back, by the storm's `<rule>/<group id>`.
    pub(crate) held: HashMap<String, super::storm::Held>,
}

impl GroupSafety {
    /// Forgets the storms and rollouts of rules that are gone; returns the changelog keys of
    /// the rollouts forgotten, for their tombstones.
    pub(crate) fn retire(&mut self, gone: &impl Fn(&str) -> bool) -> Vec<String> {
        let of_gone_rule = |key: &String| key.split('/').next().is_some_and(gone);
        self.storms.retire(gone);
        self.held.retain(|key, _| !of_gone_rule(key));
        let forgotten: Vec<String> = self
            .rollouts
            .keys()
            .filter(|key| of_gone_rule(key))
            .map(|key| format!("{ROLLOUT_PREFIX}{key}"))
            .collect();
        self.rollouts.retain(|key, _| !of_gone_rule(key));
        forgotten
    }

    /// Remembers the attempts a lifecycle call held for a storm, to let them go when it
    /// subsides.
    pub(crate) fn note_held(&mut self, held: Vec<(super::storm::Freeze, Box<str>, String)>) {
        for (freeze, subject, command_id) in held {
            super::storm::hold(&mut self.held, &freeze, &subject, &command_id);
        }
    }
}

/// The changelog key prefix of a rollout's record.
pub(crate) const ROLLOUT_PREFIX: &str = "#rollout/";

/// One group's rollout of one rule's action.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rollout {
    /// The current wave, an index into the rule's `canary.waves`.
    wave: usize,
    /// Members acted on since the rollout started.
    admitted: u32,
    /// The most members seen failing at once: the base the wave shares apply to.
    base: u32,
    /// A canary escalated: nothing more is admitted until the group recovers.
    halted: bool,
}

/// How a rule's failures stand in one group.
struct GroupCount {
    /// Members failing for the rule: an open incident or a pending condition, this one
    /// included.
    failing: u32,
    /// Other members with an incident in automation's hands.
    in_progress: u32,
    /// Members whose incident of the rule was escalated.
    escalated: u32,
}

impl Judge<'_> {
    /// Why the rule's canary rollout holds this failure back, if it does. A rollout that
    /// changed is noted for the changelog.
    pub(super) fn canary(
        &mut self,
        entity_key: &str,
        entity: &EntityState,
        rollouts: &mut HashMap<String, Rollout>,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        let rule = self.rule;
        let canary = rule.decl.canary.as_ref()?;
        let value = entity.label(&canary.group)?;
        let group = group_id(&canary.group, value);
        let key = format!("{}/{group}", self.rule_name);
        let count = self.count_group(entity_key, &canary.group, value)?;
        let before = rollouts.get(&key).cloned();
        let held = self.admit(canary, &group, &key, count, rollouts, out);
        if rollouts.get(&key) != before.as_ref() {
            self.rollout_changed = Some(format!("{ROLLOUT_PREFIX}{key}"));
        }
        held
    }

    /// Whether the rollout `key` of `group` admits one more failing member, given how the
    /// group stands: `None` admits it, a reason holds it back.
    fn admit(
        &mut self,
        canary: &salve_rules::Canary,
        group: &str,
        key: &str,
        count: GroupCount,
        rollouts: &mut HashMap<String, Rollout>,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        if !rollouts.contains_key(key) {
            if count.failing < canary.min_failing {
                return None;
            }
            rollouts.insert(key.to_owned(), Rollout::default());
        }
        let rollout = rollouts.get_mut(key)?;
        if count.failing < canary.min_failing && count.in_progress == 0 && count.escalated == 0 {
            // The group has recovered: whatever still fails acts on its own again.
            rollouts.remove(key);
            return None;
        }
        if count.escalated > 0 && !rollout.halted {
            rollout.halted = true;
            self.stats.escalations += 1;
            let reason = format!(
                "canary failed: a member of {group} that {} acted on in wave {} of {} escalated; the rollout halts and a human decides",
                self.rule_name,
                rollout.wave + 1,
                canary.waves.len()
            );
            out.push(Output::Escalation(Escalation {
                v: WIRE_VERSION,
                incident: format!("canary/{key}"),
                entity: group.to_owned(),
                rule: self.rule_name.to_string(),
                reason,
                cause: EscalationCause::CanaryFailed,
                attempts: 0,
                ts: self.now_ms,
            }));
        }
        if rollout.halted {
            return Some(format!(
                "canary failed: the rollout of {} on {group} is halted until a human resolves the canary",
                self.rule_name
            ));
        }
        rollout.base = rollout.base.max(count.failing);
        let allowed = |wave: usize| {
            let share = canary.waves.get(wave).copied().unwrap_or(1.0);
            ((share * f64::from(rollout.base)).ceil() as u32).max(1)
        };
        // A wave is done when everything it admitted has been verified and closed.
        if count.in_progress == 0
            && rollout.admitted >= allowed(rollout.wave)
            && rollout.wave + 1 < canary.waves.len()
        {
            rollout.wave += 1;
        }
        if rollout.admitted < allowed(rollout.wave) {
            rollout.admitted += 1;
            return None;
        }
        Some(format!(
            "canary: wave {} of {} on {group} acts on {} of {} failing members; the rest wait until those are verified",
            rollout.wave + 1,
            canary.waves.len(),
            allowed(rollout.wave),
            rollout.base
        ))
    }

    /// Counts the group's members by how they stand with this rule; `None` when the rule
    /// cannot see the partition's other entities.
    fn count_group(&self, entity_key: &str, label: &str, value: &str) -> Option<GroupCount> {
        let (others, groups) = self.calls.group.as_ref()?;
        let rule = &*self.rule_name;
        let mut count = GroupCount {
            failing: 0,
            in_progress: 0,
            escalated: 0,
        };
        for member in groups.members(label, value) {
            if member == entity_key {
                count.failing += 1;
                continue;
            }
            let Some(state) = others.get(member) else {
                continue;
            };
            let open = state.subject.incidents.iter().find(|i| &*i.rule == rule);
            if open.is_some() || state.subject.pending.iter().any(|p| &*p.rule == rule) {
                count.failing += 1;
            }
            match open.map(|i| i.state) {
                Some(IncidentState::Escalated) => count.escalated += 1,
                Some(_) => count.in_progress += 1,
                None => {}
            }
        }
        Some(count)
    }
}
