//! How much history each series keeps, derived from the windows the rules ask for.
//!
//! A series that rules read over at most 60 s needs 60 s of buckets, not `max_window`'s
//! 15 minutes; one that no rule reads over a window needs none (its last value is still kept);
//! and only the series that some rule asks a percentile of keep samples. The plan is rebuilt
//! whenever a rule set is installed, and each series adapts on its next event.

use hashbrown::HashMap;
use salve_rules::{RuleSet, PERCENTILE_FUNCTIONS};
use std::sync::Arc;

/// What one series keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeriesRetention {
    /// How far back window buckets are kept; 0 keeps none.
    pub buckets_ms: i64,
    /// How far back percentile samples are kept; `None` keeps none.
    pub samples_ms: Option<i64>,
}

/// The retention of every series the rules name, and of all others.
#[derive(Debug, Default)]
pub struct RetentionPlan {
    /// By series name: one hash probe per event, however many series the rules name.
    named: HashMap<Arc<str>, SeriesRetention>,
    others: SeriesRetention,
}

impl RetentionPlan {
    /// Reads the rules' windowed calls. A window the source does not spell out counts as
    /// `max_window_ms`, and a call on a series it does not spell out extends every series.
    pub fn new(
        rules: &RuleSet,
        max_window_ms: i64,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Self {
        let mut plan = RetentionPlan::default();
        for rule in rules.rules() {
            for usage in rule.window_uses() {
                let window = usage.window_ms.unwrap_or(max_window_ms).min(max_window_ms);
                let percentile = PERCENTILE_FUNCTIONS.contains(&usage.function);
                let retention = match &usage.series {
                    None => &mut plan.others,
                    Some(name) => {
                        let key = match plan.named.get_key_value(name.as_str()) {
                            Some((key, _)) => Arc::clone(key),
                            None => intern(name),
                        };
                        plan.named.entry(key).or_default()
                    }
                };
                if percentile {
                    retention.samples_ms = Some(retention.samples_ms.unwrap_or(0).max(window));
                } else {
                    retention.buckets_ms = retention.buckets_ms.max(window);
                }
            }
        }
        // A call on an unknown series may read any series: every series keeps that much too.
        let floor = plan.others.buckets_ms;
        for retention in plan.named.values_mut() {
            retention.buckets_ms = retention.buckets_ms.max(floor);
        }
        plan
    }

    /// What the series `name` keeps.
    pub fn for_series(&self, name: &Arc<str>) -> SeriesRetention {
        self.named.get(&**name).copied().unwrap_or(self.others)
    }
}
