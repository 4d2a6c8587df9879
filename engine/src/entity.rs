//! Everything salve keeps about one entity: its labels, its series and its open incidents.

use crate::incident::Incident;
use crate::telemetry::Labels;
use crate::window::SeriesWindow;
use std::sync::Arc;

/// A rule whose condition started holding for this entity at `since_ms` (entity event time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The rule.
    pub rule: Arc<str>,
    /// When the condition started holding.
    pub since_ms: i64,
    /// When the condition was last seen holding.
    pub last_held_ms: i64,
}

/// One entity's state. It lives in its partition's map and moves with the partition.
#[derive(Debug, Default)]
pub struct EntityState {
    /// Interned: most label values are shared by many entities.
    labels: Box<[(Arc<str>, Arc<str>)]>,
    series: Vec<SeriesWindow>,
    /// Open incidents, at most one per rule.
    pub incidents: Vec<Incident>,
    /// Rules whose condition holds but not yet for their `hold_for`.
    pub pending: Vec<Pending>,
    /// Event time of the latest event.
    pub last_seen_ms: i64,
    /// The partition's event time when this entity was last heard from. Expiry measures
    /// idleness with it, so an entity whose own clock runs behind is not taken for idle.
    pub last_heard_ms: i64,
}

impl EntityState {
    /// The index of the open incident whose current attempt is `command_id`.
    pub fn incident_by_command(&self, command_id: &str) -> Option<usize> {
        self.incidents
            .iter()
            .position(|i| i.command_id == command_id)
    }

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
    /// `intern` returns the shared copy of a string.
    pub fn update_labels(&mut self, labels: &Labels<'_>, mut intern: impl FnMut(&str) -> Arc<str>) {
        if labels.0.is_empty() {
            return;
        }
        let same = labels.0.len() == self.labels.len()
            && labels
                .0
                .iter()
                .zip(self.labels.iter())
                .all(|((k, v), (k2, v2))| k.as_ref() == &**k2 && v.as_ref() == &**v2);
        if !same {
            self.labels = labels
                .0
                .iter()
                .map(|(k, v)| (intern(k), intern(v)))
                .collect();
        }
    }

    /// The entity's labels.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter().map(|(k, v)| (&**k, &**v))
    }
}
