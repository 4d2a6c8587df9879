//! Groups of entities by label, for the rules that judge a service or a cluster as a whole.
//!
//! A partition indexes its entities by the labels that rules group by, and only by those. A
//! group rule sees the members that share its partition: producers that key a group's events
//! by the group label (see `engine.partition_by`) put the whole group there.

use crate::entity::InternedLabels;
use hashbrown::HashMap;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The members of each group of one label, by the label's value. A set, ordered so that
/// rules see members in a stable order, and so that leaving a group of 100,000 members (a
/// label every entity shares) costs a logarithm, not a scan.
/// Members are held by the key of the partition's entity map, shared, not copied.
type Groups = HashMap<Arc<str>, BTreeSet<Arc<str>>>;

/// Members by label value, for each label that rules group by.
#[derive(Debug, Default)]
pub struct GroupIndex {
    by_label: Vec<(Arc<str>, Groups)>,
}

impl GroupIndex {
    /// An empty index of `labels`.
    pub fn new(labels: impl IntoIterator<Item = Arc<str>>) -> Self {
        Self {
            by_label: labels.into_iter().map(|l| (l, HashMap::new())).collect(),
        }
    }

    /// True when no rule groups by any label: the index then costs nothing.
    pub fn is_empty(&self) -> bool {
        self.by_label.is_empty()
    }

    /// Moves `entity` from the groups of its `old` labels to those of its `new` ones.
    pub fn relabel(&mut self, entity: &Arc<str>, old: &InternedLabels, new: &InternedLabels) {
        for (label, groups) in &mut self.by_label {
            let value_in = |labels: &InternedLabels| {
                labels
                    .iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| Arc::clone(v))
            };
            let (before, after) = (value_in(old), value_in(new));
            if before == after {
                continue;
            }
            if let Some(before) = before {
                if let Some(members) = groups.get_mut(&before) {
                    members.remove(&**entity);
                    if members.is_empty() {
                        groups.remove(&before);
                    }
                }
            }
            if let Some(after) = after {
                groups.entry(after).or_default().insert(Arc::clone(entity));
            }
        }
    }

    /// The members of the group whose `label` is `value`, in id order.
    pub fn members(&self, label: &str, value: &str) -> impl Iterator<Item = &str> {
        self.by_label
            .iter()
            .find(|(l, _)| &**l == label)
            .and_then(|(_, groups)| groups.get(value))
            .into_iter()
            .flatten()
            .map(|member| &**member)
    }

    /// Whether entities are indexed by `label`.
    pub fn indexes(&self, label: &str) -> bool {
        self.by_label.iter().any(|(l, _)| &**l == label)
    }
}

/// The id of the group whose `label` is `value`, as incidents and commands name it.
pub fn group_id(label: &str, value: &str) -> String {
    format!("{label}={value}")
}
