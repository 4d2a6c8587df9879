//! Storms: when more than a rule's `blast_radius.storm_share` of a group fails at once, a
//! shared cause (a dependency down, a bad deploy) is likelier than many broken members, and
//! acting on each member would only add restarts to the outage. Automation of the rule then
//! freezes for the whole group: no new incident acts, and no incident already open sends its
//! retry or its next ladder step, until the failing share falls back.
//!
//! A storm is decided afresh from the group's members whenever it matters (a failure judged,
//! a command about to be sent), never from a remembered flag alone: a remembered storm could
//! outlive its cause and freeze a group for good. What the partition remembers is which
//! storms were escalated, so that each escalates once, which an operator resolved, so that
//! automation acts through them, and which incidents wait on one, so that they are let go
//! when it subsides or is resolved.

use crate::entity::EntityState;
use crate::group::{group_id, GroupIndex};
use crate::stats::Stats;
use crate::wire::{Escalation, EscalationCause, IncidentState, Output, WIRE_VERSION};
use hashbrown::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

/// The prefix of a storm's escalation incident, `storm/<rule>/<group id>`.
pub(crate) const STORM_PREFIX: &str = "storm/";

/// The storms a partition knows of, by `<rule>/<group id>`.
#[derive(Debug, Default)]
pub(crate) struct Storms {
    /// Escalated, and not yet seen to subside.
    pub(crate) escalated: HashSet<String>,
    /// Resolved by an operator: automation acts in the group although it is still a storm,
    /// until the failing share falls back; the next storm freezes it again.
    pub(crate) lifted: HashSet<String>,
}

impl Storms {
    /// Forgets a storm that subsided.
    fn subsided(&mut self, key: &str) {
        self.escalated.remove(key);
        self.lifted.remove(key);
    }

    /// Forgets the storms of the rules `gone` says are gone.
    pub(crate) fn retire(&mut self, gone: &impl Fn(&str) -> bool) {
        let kept = |key: &String| !key.split('/').next().is_some_and(gone);
        self.escalated.retain(kept);
        self.lifted.retain(kept);
    }
}

/// How one group stands with one rule.
pub(super) struct Standing {
    /// Members of the group in the partition.
    pub(super) members: u32,
    /// Members failing for the rule: an open incident or a pending condition.
    pub(super) failing: u32,
    /// Other members with an attempt under way: remediating, verifying or backing off.
    pub(super) in_flight: u32,
}

/// Counts the members of the group `label=value` by how they stand with `rule`. `subject`
/// is the member at hand, if any, failing whether or not `others` holds it (a judged entity
/// is lent out of the map).
pub(super) fn standing(
    rule: &str,
    (label, value): (&str, &str),
    subject: Option<&str>,
    others: &HashMap<Arc<str>, EntityState>,
    groups: &GroupIndex,
) -> Standing {
    let mut standing = Standing {
        members: 0,
        failing: 0,
        in_flight: 0,
    };
    for member in groups.members(label, value) {
        standing.members += 1;
        if Some(member) == subject {
            standing.failing += 1;
            continue;
        }
        let Some(state) = others.get(member) else {
            continue;
        };
        let open = state.subject.incidents.iter().find(|i| &*i.rule == rule);
        if open.is_some() || state.subject.pending.iter().any(|p| &*p.rule == rule) {
            standing.failing += 1;
        }
        if open.is_some_and(|i| {
            matches!(
                i.state,
                IncidentState::Remediating | IncidentState::Verifying | IncidentState::BackingOff
            )
        }) {
            standing.in_flight += 1;
        }
    }
    standing
}

/// Whether `standing` is a storm under `radius`.
fn is_storm(radius: &salve_rules::BlastRadius, standing: &Standing) -> bool {
    standing.members >= 2
        && f64::from(standing.failing) > radius.storm_share * f64::from(standing.members)
}

/// A group frozen by a storm, as the incident held by it needs to know.
#[derive(Debug, Clone)]
pub(super) struct Freeze {
    /// `<rule>/<group id>`: the storm's key, and its escalation's incident after `storm/`.
    pub(super) key: String,
    /// Why, for the decision log.
    pub(super) reason: String,
    rule: Arc<str>,
    label: String,
    value: String,
}

/// The storm `rule` is in on the group of `subject`, if it is: escalated the first time it
/// is seen, and forgotten (so that the next one escalates again) once it subsides. `None`
/// too when the rule has no blast radius, the subject is in no group of it, or an operator
/// resolved the storm.
#[allow(clippy::too_many_arguments)]
pub(super) fn storm(
    rule: &salve_rules::Rule,
    rule_name: &Arc<str>,
    subject: (&str, &EntityState),
    others: &HashMap<Arc<str>, EntityState>,
    groups: &GroupIndex,
    storms: &mut Storms,
    stats: &mut Stats,
    now_ms: i64,
    out: &mut Vec<Output>,
) -> (Option<Freeze>, Option<Standing>) {
    let Some(radius) = rule.decl.blast_radius.as_ref() else {
        return (None, None);
    };
    let (subject_key, entity) = subject;
    let Some(value) = entity.label(&radius.group) else {
        return (None, None);
    };
    let group = group_id(&radius.group, value);
    let standing = standing(
        rule_name,
        (&radius.group, value),
        Some(subject_key),
        others,
        groups,
    );
    let key = format!("{rule_name}/{group}");
    if !is_storm(radius, &standing) {
        storms.subsided(&key);
        return (None, Some(standing));
    }
    if storms.lifted.contains(&key) {
        return (None, Some(standing));
    }
    let reason = format!(
        "storm: {} of {} members of {group} failing, more than {}%: automation is frozen for the group",
        standing.failing,
        standing.members,
        radius.storm_share * 100.0
    );
    if storms.escalated.insert(key.clone()) {
        stats.escalations += 1;
        stats.storms += 1;
        out.push(Output::Escalation(Escalation {
            v: WIRE_VERSION,
            incident: format!("{STORM_PREFIX}{key}"),
            entity: group,
            rule: rule_name.to_string(),
            reason: reason.clone(),
            cause: EscalationCause::Storm,
            attempts: 0,
            ts: now_ms,
        }));
    }
    let freeze = Freeze {
        key,
        reason,
        rule: Arc::clone(rule_name),
        label: radius.group.clone(),
        value: value.to_owned(),
    };
    (Some(freeze), Some(standing))
}

/// The incidents a storm holds back: their next command waits until it subsides.
#[derive(Debug)]
pub(crate) struct Held {
    rule: Arc<str>,
    label: String,
    value: String,
    /// (subject, command id of the held attempt).
    incidents: Vec<(Box<str>, String)>,
}

/// Notes that `freeze` held the attempt `command_id` of `subject`.
pub(super) fn hold(
    held: &mut HashMap<String, Held>,
    freeze: &Freeze,
    subject: &str,
    command_id: &str,
) {
    let entry = held.entry(freeze.key.clone()).or_insert_with(|| Held {
        rule: Arc::clone(&freeze.rule),
        label: freeze.label.clone(),
        value: freeze.value.clone(),
        incidents: Vec::new(),
    });
    if !entry.incidents.iter().any(|(_, c)| c == command_id) {
        entry
            .incidents
            .push((Box::from(subject), command_id.to_owned()));
    }
}

/// The held attempts whose storm has subsided or was resolved by an operator (or whose rule
/// lost its blast radius), taken out of `held`; the storms that subsided are forgotten.
pub(super) fn thawed(
    rules: &salve_rules::RuleSet,
    held: &mut HashMap<String, Held>,
    storms: &mut Storms,
    entities: &HashMap<Arc<str>, EntityState>,
    groups: &GroupIndex,
) -> Vec<(Box<str>, String)> {
    let mut released = Vec::new();
    held.retain(|key, held| {
        let radius = rules
            .rule(&held.rule)
            .and_then(|r| r.decl.blast_radius.as_ref());
        let raging = radius.is_some_and(|radius| {
            // No member is at hand: each counts by its own incidents and pending states.
            let standing = standing(
                &held.rule,
                (&held.label, &held.value),
                None,
                entities,
                groups,
            );
            is_storm(radius, &standing)
        });
        if !raging {
            storms.subsided(key);
        }
        let frozen = raging && !storms.lifted.contains(key);
        if !frozen {
            released.append(&mut held.incidents);
        }
        frozen
    });
    released
}
