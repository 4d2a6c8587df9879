//! Picks the rules whose selectors match an event, so that rules that do not care about an
//! event cost it one hash lookup at most.

use crate::telemetry::{Kind, TelemetryEvent};
use hashbrown::HashMap;
use salve_rules::{RuleSet, Selector};

/// An index from series name to the rules that select it.
#[derive(Debug, Default)]
pub struct Router {
    /// hashbrown's default hasher (foldhash), not std's SipHash: every event looks its name
    /// up here, and SipHash, here and in the interner, was 2.3% of the runner's samples. Only
    /// rule files insert keys, so event names cannot flood it.
    by_name: HashMap<String, Vec<(usize, Selector)>>,
    any_name: Vec<(usize, Selector)>,
}

impl Router {
    /// Indexes a rule set's selectors.
    pub fn new(rules: &RuleSet) -> Self {
        let mut router = Router::default();
        for (index, rule) in rules.rules().iter().enumerate() {
            for selector in &rule.decl.select {
                match &selector.name {
                    Some(name) => router
                        .by_name
                        .entry(name.clone())
                        .or_default()
                        .push((index, selector.clone())),
                    None => router.any_name.push((index, selector.clone())),
                }
            }
        }
        router
    }

    /// The indices of the rules that match `event`, each once, in rule order.
    pub fn matching(&self, event: &TelemetryEvent<'_>, into: &mut Vec<usize>) {
        into.clear();
        let named = self.by_name.get(event.name.as_ref()).map(Vec::as_slice);
        for (index, selector) in named.unwrap_or_default().iter().chain(&self.any_name) {
            if selects(selector, event.kind, event) && !into.contains(index) {
                into.push(*index);
            }
        }
        into.sort_unstable();
    }
}

fn selects(selector: &Selector, kind: Kind, event: &TelemetryEvent<'_>) -> bool {
    selector.kind.as_deref().is_none_or(|k| k == kind.as_str())
        && selector
            .labels
            .iter()
            .all(|(key, value)| event.labels.get(key) == Some(value.as_str()))
}
