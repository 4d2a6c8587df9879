//! Everything salve keeps about one entity: its labels, its series and its open incidents.

use crate::incident::Incident;
use crate::memo::Memos;
use crate::telemetry::Labels;
use crate::window::SeriesWindow;
use std::sync::Arc;
use thin_vec::ThinVec;

/// A rule whose condition started holding for this entity at `since_ms` (entity event time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The rule.
    pub rule: Arc<str>,
    /// When the condition started holding.
    pub since_ms: i64,
    /// When the condition was last seen holding.
    pub last_held_ms: i64,
    /// Whether an upstream incident inhibits the action (recorded once, when it started).
    pub inhibited: bool,
}

impl Pending {
    /// A condition that started holding at `since_ms`.
    pub fn new(rule: Arc<str>, since_ms: i64) -> Self {
        Self {
            rule,
            since_ms,
            last_held_ms: since_ms,
            inhibited: false,
        }
    }
}

/// What rules have found about something they judge: an entity, or a group of entities.
///
/// Every entity holds one, and most never have anything in it: each list is a `ThinVec`, one
/// word while empty, so an idle entity pays 32 bytes here instead of 80 (its hash table slot
/// pays them again at every free slot).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    /// Open incidents, at most one per rule.
    pub incidents: ThinVec<Incident>,
    /// Rules whose condition holds but not yet for their `hold_for`. Not persisted: a
    /// pending state starts over after a restart.
    #[serde(skip)]
    pub pending: ThinVec<Pending>,
    /// Rules whose last incident here closed while their condition still held: they open no
    /// new incident until the condition has cleared once, so a fix that did not take is not
    /// repeated every event.
    #[serde(default, with = "empty_as_null")]
    latched: ThinVec<Arc<str>>,
    /// Recent commands, as (action, processing time), for flap protection.
    #[serde(default, with = "empty_as_null")]
    recent: ThinVec<Issued>,
}

impl Subject {
    /// The index of the open incident whose current attempt is `command_id`.
    pub fn incident_by_command(&self, command_id: &str) -> Option<usize> {
        self.incidents
            .iter()
            .position(|i| i.command_id == command_id)
    }

    /// Holds `rule` back until its condition clears.
    pub fn latch(&mut self, rule: Arc<str>) {
        if !self.is_latched(&rule) {
            self.latched.push(rule);
        }
    }

    /// Whether `rule` is held back.
    pub fn is_latched(&self, rule: &str) -> bool {
        self.latched.iter().any(|r| &**r == rule)
    }

    /// Re-arms `rule`, once its condition cleared.
    pub fn unlatch(&mut self, rule: &str) {
        self.latched.retain(|r| &**r != rule);
        if self.latched.is_empty() {
            // Give the allocation back: a re-armed rule is the common end of an incident.
            self.latched = ThinVec::new();
        }
    }

    /// Notes a command of `action` at `now_ms`, unless more than `max` were issued within
    /// `within_ms` before it; then returns how many were.
    pub fn admit(
        &mut self,
        action: &str,
        now_ms: i64,
        max: u32,
        within_ms: i64,
    ) -> Result<(), usize> {
        self.recent.retain(|(_, at)| *at > now_ms - within_ms);
        let same = self.recent.iter().filter(|(a, _)| &**a == action).count();
        if same >= max as usize {
            if self.recent.is_empty() {
                self.recent = ThinVec::new();
            }
            return Err(same);
        }
        self.recent.push((Arc::from(action), now_ms));
        Ok(())
    }

    /// Forgets the recent commands, so the flap limit counts afresh: after a human has
    /// looked at the subject.
    pub fn forget_recent(&mut self) {
        self.recent = ThinVec::new();
    }

    /// Whether there is nothing here worth keeping across a restart.
    pub fn is_durable_empty(&self) -> bool {
        self.incidents.is_empty() && self.latched.is_empty() && self.recent.is_empty()
    }

    /// Whether rule `rule` has an open incident here.
    pub fn has_incident_of(&self, rule: &str) -> bool {
        self.incidents.iter().any(|i| &*i.rule == rule)
    }

    /// Whether an incident here holds an escalation not yet known delivered.
    pub fn has_unconfirmed_escalation(&self) -> bool {
        self.incidents
            .iter()
            .any(|i| i.unconfirmed_escalation.is_some())
    }
}

/// A command issued on a subject: its action, and when (processing time).
type Issued = (Arc<str>, i64);

/// An empty list is written as `null` and `null` is read as an empty list: the changelog's
/// form from before these lists were `ThinVec`s, when an empty one was `None`.
mod empty_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use thin_vec::ThinVec;

    pub fn serialize<T: Serialize, S: Serializer>(
        list: &ThinVec<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        (!list.is_empty()).then_some(list).serialize(serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ThinVec<T>, D::Error> {
        Ok(Option::<ThinVec<T>>::deserialize(deserializer)?.unwrap_or_default())
    }
}

/// A group that group rules judge, e.g. `service=checkout`.
#[derive(Debug, Default)]
pub struct GroupSubject {
    /// What the rules found.
    pub subject: Subject,
    /// The partition's event time when a rule last judged the group.
    pub last_heard_ms: i64,
}

/// Labels as an entity holds them: interned, since most values are shared by many entities.
pub type InternedLabels = Box<[(Arc<str>, Arc<str>)]>;

/// One entity's state. It lives in its partition's map and moves with the partition.
#[derive(Debug, Default)]
pub struct EntityState {
    labels: InternedLabels,
    series: Vec<SeriesWindow>,
    /// What entity rules found about this entity.
    pub subject: Subject,
    /// Event time of the latest event.
    pub last_seen_ms: i64,
    /// The partition's event time when this entity was last heard from. Expiry measures
    /// idleness with it, so an entity whose own clock runs behind is not taken for idle.
    pub last_heard_ms: i64,
    /// The last answers of pure rule functions here, with the values they read.
    pub(crate) memos: Memos,
}

impl EntityState {
    /// The series called `name`, if the entity has reported it.
    pub fn series(&self, name: &str) -> Option<&SeriesWindow> {
        self.series.iter().find(|s| s.name() == name)
    }

    /// The series called `name`, created on first sight with an interned name.
    pub fn series_mut(
        &mut self,
        name: &str,
        intern: impl FnOnce(&str) -> Arc<str>,
    ) -> &mut SeriesWindow {
        let index = match self.series.iter().position(|s| s.name() == name) {
            Some(index) => index,
            None => {
                // Series are added rarely and entities are many: grow exactly, not doubling.
                self.series.reserve_exact(1);
                self.series.push(SeriesWindow::new(intern(name)));
                self.series.len() - 1
            }
        };
        &mut self.series[index]
    }

    /// The names of the series it reports.
    pub fn series_names(&self) -> impl Iterator<Item = &str> {
        self.series.iter().map(|s| s.name())
    }

    /// All series.
    pub fn all_series_mut(&mut self) -> impl Iterator<Item = &mut SeriesWindow> {
        self.series.iter_mut()
    }

    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// Replaces the labels when the event carries different ones; most events repeat them.
    /// `intern` returns the shared copy of a string. Returns the labels replaced, if any.
    pub fn update_labels(
        &mut self,
        labels: &Labels<'_>,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Option<InternedLabels> {
        if labels.is_empty() {
            return None;
        }
        let same = labels.len() == self.labels.len()
            && labels
                .iter()
                .zip(self.labels.iter())
                .all(|((k, v), (k2, v2))| k == &**k2 && v == &**v2);
        if same {
            return None;
        }
        let fresh = labels.iter().map(|(k, v)| (intern(k), intern(v))).collect();
        Some(std::mem::replace(&mut self.labels, fresh))
    }

    /// The entity's labels, as held.
    pub fn interned_labels(&self) -> &InternedLabels {
        &self.labels
    }

    /// The entity's labels.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter().map(|(k, v)| (&**k, &**v))
    }
}
