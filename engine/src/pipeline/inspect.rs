//! Read-only views of the engine's state, for operators: entities, their windows, incidents
//! with their histories, rules with their effectiveness, and the engine's status.
//!
//! Views are owned copies, so a driver can answer a query from the engine's thread and hand
//! the answer to another. They cover the partitions this process owns, as Kafka Streams'
//! interactive queries do: in a group of processes, ask each, or the one that owns the key.

use super::{step_action, Engine, PartitionId};
use crate::config::Mode;
use crate::entity::{EntityState, Subject};
use crate::incident::Incident;
use crate::ledger::{HistoryEntry, IncidentRecord, RuleRecord};
use crate::stats::RuleCounters;
use crate::wire::IncidentState;
use serde::Serialize;
use std::collections::BTreeMap;

/// An entity's health, as the rules last judged it. Entities are filtered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No rule's condition holds.
    Healthy,
    /// A rule's condition holds, not yet for its `hold_for`, or is held back.
    Pending,
    /// An incident is open.
    Failing,
}

impl std::str::FromStr for Health {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "healthy" => Ok(Health::Healthy),
            "pending" => Ok(Health::Pending),
            "failing" => Ok(Health::Failing),
            other => Err(format!(
                "unknown verdict {other:?}; expected healthy, pending or failing"
            )),
        }
    }
}

/// Which entities to list.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    /// Labels the entity must carry with these values, like a Kubernetes label selector.
    pub labels: Vec<(String, String)>,
    /// Only entities judged so.
    pub health: Option<Health>,
    /// Entity ids sort; list those after this one (the previous page's `next`).
    pub after: Option<String>,
    /// At most this many; 0 means 100.
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// How many matched in all.
    pub total: usize,
    /// Pass as `after` for the next page; none on the last.
    pub next: Option<String>,
}

/// An entity as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityView {
    /// Its id.
    pub id: String,
    /// The partition that holds it.
    pub partition: PartitionId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The series it reports.
    pub series: Vec<String>,
    /// Event time of its latest event.
    pub last_seen_ms: i64,
    /// How the rules judge it.
    pub health: Health,
    /// Rules whose condition holds, not yet acted on.
    pub pending: Vec<String>,
    /// Its open incidents.
    pub incidents: Vec<IncidentView>,
}

/// A series' window, as the rules see it now.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    /// The entity.
    pub entity: String,
    /// The series.
    pub series: String,
    /// The window the aggregates cover, ending at the entity's latest event.
    pub window_ms: i64,
    /// Samples in the window.
    pub count: u64,
    /// Their sum, mean, least and greatest; none without samples.
    pub sum: Option<f64>,
    /// See `sum`.
    pub mean: Option<f64>,
    /// See `sum`.
    pub min: Option<f64>,
    /// See `sum`.
    pub max: Option<f64>,
    /// Samples per second over the window.
    pub rate_per_s: f64,
    /// The latest value and its event time.
    pub last: Option<(i64, f64)>,
    /// p50, p90, p99 where the series keeps samples for a rule's percentile.
    pub percentiles: BTreeMap<String, f64>,
    /// For health series: checks failed and passed in a row.
    pub consecutive_fails: u32,
    /// See `consecutive_fails`.
    pub consecutive_passes: u32,
}

/// An incident as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Its id.
    pub id: String,
    /// Its rule.
    pub rule: String,
    /// The entity, or group id, it is about.
    pub subject: String,
    /// Whether the subject is a group.
    pub group: bool,
    /// Where it stands.
    pub state: IncidentState,
    /// Open, or closed and still remembered.
    pub open: bool,
    /// The current attempt, counted over every action.
    pub attempt: u32,
    /// The action of the current step, if the rule is still loaded.
    pub action: Option<String>,
    /// The current attempt's command.
    pub command_id: String,
    /// Where its commands go.
    pub target: String,
    /// Event time of the first failure.
    pub opened_at_ms: Option<i64>,
    /// When it closed (processing time).
    pub closed_at_ms: Option<i64>,
    /// Its transitions, oldest first, as this process saw them (a restored incident's start
    /// is in the decision log).
    pub history: Vec<HistoryEntry>,
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only this rule's.
    pub rule: Option<String>,
    /// Only this entity's or group's.
    pub subject: Option<String>,
    /// Only in these states; empty for any.
    pub states: Vec<IncidentState>,
    /// Also the recently closed ones.
    pub include_closed: bool,
    /// At most this many; 0 means 100.
    pub limit: usize,
}

/// A rule as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// What it is for.
    pub description: String,
    /// Its first action.
    pub action: String,
    /// The mode it runs in, global and its own combined.
    pub mode: Mode,
    /// Its own mode, if set.
    pub own_mode: Option<Mode>,
    /// Whether it is a shadow rule.
    pub shadow: bool,
    /// Its calls.
    pub counters: RuleCounters,
    /// Its remediation record.
    pub effectiveness: RuleRecord,
}

/// The engine as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// The global mode and the per-rule ones.
    pub modes: super::control::Modes,
    /// Partitions this process holds state for.
    pub partitions: Vec<PartitionId>,
    /// Entities held.
    pub entities: usize,
    /// Open incidents, by state.
    pub incidents: BTreeMap<String, u64>,
    /// The rule-set version.
    pub rules_version: u64,
    /// Rules loaded.
    pub rules: usize,
    /// How the latest reload went.
    pub last_reload: Option<super::control::ReloadOutcome>,
}

const DEFAULT_LIMIT: usize = 100;

impl Engine {
    /// Entities matching `filter`, a page at a time in id order.
    pub fn entities(&self, filter: &EntityFilter) -> Page<EntityView> {
        let mut matched: Vec<(&str, PartitionId, &EntityState)> = self
            .partitions
            .iter()
            .flat_map(|(p, s)| s.entities.iter().map(move |(k, e)| (&**k, *p, e)))
            .filter(|(_, _, e)| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| e.label(k) == Some(v.as_str()))
            })
            .filter(|(_, _, e)| filter.health.is_none_or(|h| health(&e.subject) == h))
            .collect();
        matched.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let total = matched.len();
        let after = filter.after.as_deref();
        let limit = if filter.limit == 0 {
            DEFAULT_LIMIT
        } else {
            filter.limit
        };
        let start = after.map_or(0, |after| matched.partition_point(|(k, _, _)| *k <= after));
        let page: Vec<EntityView> = matched[start..]
            .iter()
            .take(limit)
            .map(|(key, partition, entity)| self.entity_view(key, *partition, entity))
            .collect();
        let next = (start + page.len() < total)
            .then(|| page.last().map(|e| e.id.clone()))
            .flatten();
        Page {
            items: page,
            total,
            next,
        }
    }

    /// One entity, if a partition of this process holds it.
    pub fn entity(&self, id: &str) -> Option<EntityView> {
        self.partitions.iter().find_map(|(p, s)| {
            s.entities
                .get(id)
                .map(|entity| self.entity_view(id, *p, entity))
        })
    }

    fn entity_view(&self, id: &str, partition: PartitionId, entity: &EntityState) -> EntityView {
        EntityView {
            id: id.to_owned(),
            partition,
            labels: entity
                .labels()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            series: entity.series_names().map(str::to_owned).collect(),
            last_seen_ms: entity.last_seen_ms,
            health: health(&entity.subject),
            pending: entity
                .subject
                .pending
                .iter()
                .map(|p| p.rule.to_string())
                .collect(),
            incidents: entity
                .subject
                .incidents
                .iter()
                .map(|i| self.incident_view(i, id, false))
                .collect(),
        }
    }

    /// A series' window of an entity, over `window_ms` (0: the engine's longest window)
    /// ending at the entity's latest event.
    pub fn series(&self, entity_id: &str, series: &str, window_ms: i64) -> Option<SeriesView> {
        let entity = self
            .partitions
            .values()
            .find_map(|s| s.entities.get(entity_id))?;
        let window = entity.series(series)?;
        let window_ms = if window_ms <= 0 {
            self.config.max_window_ms
        } else {
            window_ms.min(self.config.max_window_ms)
        };
        let now = entity.last_seen_ms;
        let aggregate = window.aggregate(now, window_ms);
        let some = |v: f64| (aggregate.count > 0).then_some(v);
        let mut scratch = Vec::new();
        let percentiles = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
            .into_iter()
            .filter_map(|(name, q)| {
                window
                    .quantile(now, window_ms, q, &mut scratch)
                    .filter(|v| v.is_finite())
                    .map(|v| (name.to_owned(), v))
            })
            .collect();
        Some(SeriesView {
            entity: entity_id.to_owned(),
            series: series.to_owned(),
            window_ms,
            count: aggregate.count,
            sum: some(aggregate.sum),
            mean: some(aggregate.mean()),
            min: some(aggregate.min),
            max: some(aggregate.max),
            rate_per_s: aggregate.count as f64 * 1000.0 / window_ms as f64,
            last: window.last(),
            percentiles,
            consecutive_fails: window.consecutive_fails(),
            consecutive_passes: window.consecutive_passes(),
        })
    }

    /// Open incidents matching `filter`, then recently closed ones if asked, newest first.
    pub fn incidents(&self, filter: &IncidentFilter) -> Vec<IncidentView> {
        let limit = if filter.limit == 0 {
            DEFAULT_LIMIT
        } else {
            filter.limit
        };
        let wanted = |rule: &str, subject: &str, state: IncidentState| {
            filter.rule.as_deref().is_none_or(|r| r == rule)
                && filter.subject.as_deref().is_none_or(|s| s == subject)
                && (filter.states.is_empty() || filter.states.contains(&state))
        };
        let mut open: Vec<IncidentView> = Vec::new();
        for state in self.partitions.values() {
            let subjects = state
                .entities
                .iter()
                .map(|(k, e)| (&**k, &e.subject, false))
                .chain(
                    state
                        .group_subjects
                        .iter()
                        .map(|(k, g)| (&**k, &g.subject, true)),
                );
            for (key, subject, group) in subjects {
                for incident in &subject.incidents {
                    if wanted(&incident.rule, key, incident.state) {
                        open.push(self.incident_view(incident, key, group));
                    }
                }
            }
        }
        open.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then(a.id.cmp(&b.id)));
        open.truncate(limit);
        if filter.include_closed {
            let room = limit.saturating_sub(open.len());
            let closed = self
                .ledger
                .closed()
                .filter(|r| wanted(&r.rule, &r.subject, r.state))
                .take(room)
                .map(closed_view);
            open.extend(closed);
        }
        open
    }

    /// One incident, open or recently closed.
    pub fn incident(&self, id: &str) -> Option<IncidentView> {
        if let Ok(super::control::Found {
            partition,
            key,
            index,
            ..
        }) = self.find_incident(id)
        {
            let state = self.partitions.get(&partition)?;
            let (subject, group) = state.subject(&key)?;
            return Some(self.incident_view(subject.incidents.get(index)?, &key, group));
        }
        self.ledger
            .incident(id)
            .filter(|r| r.closed_at_ms.is_some())
            .map(closed_view)
    }

    fn incident_view(&self, incident: &Incident, subject: &str, group: bool) -> IncidentView {
        let record = self.ledger.incident(&incident.id);
        let action = self
            .rules
            .rule(&incident.rule)
            .map(|r| step_action(r, incident.step).to_owned());
        IncidentView {
            id: incident.id.clone(),
            rule: incident.rule.to_string(),
            subject: subject.to_owned(),
            group,
            state: incident.state,
            open: true,
            attempt: incident.attempt,
            action,
            command_id: incident.command_id.clone(),
            target: incident.target.clone(),
            opened_at_ms: Some(incident.opened_at_ms),
            closed_at_ms: None,
            history: record.map(|r| r.history.clone()).unwrap_or_default(),
        }
    }

    /// The rules in force, with their calls and their remediation record.
    pub fn rule_views(&self) -> Vec<RuleView> {
        let records = self.ledger.rules();
        self.rules
            .rules()
            .iter()
            .enumerate()
            .map(|(index, rule)| RuleView {
                name: rule.decl.name.clone(),
                file: rule.file.clone(),
                description: rule.decl.description.clone(),
                action: rule.decl.action.clone(),
                mode: self.modes.for_rule(&rule.decl.name),
                own_mode: self.modes.rules.get(&rule.decl.name).copied(),
                shadow: rule.decl.shadow,
                counters: self.stats.rules.get(index).cloned().unwrap_or_default(),
                effectiveness: records.get(&rule.decl.name).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Open incidents by state, as the ledger tracks them: a metrics scrape or a status call
    /// costs no pass over the entities on the engine's thread.
    pub fn incidents_by_state(&self) -> BTreeMap<String, u64> {
        self.ledger.open_by_state()
    }

    /// The engine as a whole.
    pub fn status(&self) -> EngineStatus {
        let mut partitions: Vec<PartitionId> = self.partitions.keys().copied().collect();
        partitions.sort_unstable();
        EngineStatus {
            modes: self.modes.clone(),
            partitions,
            entities: self.entity_count(),
            incidents: self.incidents_by_state(),
            rules_version: self.rules_version,
            rules: self.rules.rules().len(),
            last_reload: self.last_reload.clone(),
        }
    }
}

/// A closed incident, as the ledger remembers it.
fn closed_view(record: &IncidentRecord) -> IncidentView {
    IncidentView {
        id: record.id.clone(),
        rule: record.rule.clone(),
        subject: record.subject.clone(),
        group: false,
        state: record.state,
        open: false,
        attempt: record
            .history
            .iter()
            .filter_map(|h| h.attempt)
            .max()
            .unwrap_or(0),
        action: record.actions.last().cloned(),
        command_id: record
            .history
            .iter()
            .rev()
            .find_map(|h| h.command_id.clone())
            .unwrap_or_default(),
        target: String::new(),
        opened_at_ms: record.opened_at_ms,
        closed_at_ms: record.closed_at_ms,
        history: record.history.clone(),
    }
}

fn health(subject: &Subject) -> Health {
    if !subject.incidents.is_empty() {
        Health::Failing
    } else if !subject.pending.is_empty() {
        Health::Pending
    } else {
        Health::Healthy
    }
}
