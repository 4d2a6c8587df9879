//! Synthetic rule packs: salve's shipped rules plus generated ones, to measure how the cost of
//! an event grows with rules that do not match it.

use salve_engine::{Engine, EngineConfig};
use salve_rules::{LoadErrors, RuleSet, SHIPPED_RULES};

/// The metrics the generated workload emits, which matching filler rules select.
const EMITTED: [&str; 4] = ["latency_ms", "cpu_pct", "mem_rss_mb", "http_5xx"];

/// How a generated rule relates to the workload's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filler {
    /// Selects a series name that the workload never emits: the router never offers it.
    Unmatched,
    /// Selects an emitted metric, but only with a label value no event carries: the router
    /// offers it for that metric, and its selector refuses it.
    LabelMismatch,
    /// Selects an emitted metric: its condition runs (a windowed `mean`) and never holds.
    Matching,
}

/// How many filler rules of each kind to add to the shipped ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pack {
    /// Rules on series the workload does not emit.
    pub unmatched: usize,
    /// Rules on emitted metrics whose label selectors never match.
    pub label_mismatch: usize,
    /// Rules on emitted metrics that run and never fire.
    pub matching: usize,
}

impl Pack {
    /// A pack of `total` rules: the shipped ones, `matching` rules that match, and as many
    /// unmatched ones as it takes.
    pub fn with_total(total: usize, matching: usize) -> Self {
        Self {
            unmatched: total.saturating_sub(SHIPPED_RULES.len() + matching),
            label_mismatch: 0,
            matching,
        }
    }

    /// Rules in the pack, the shipped ones included.
    pub fn total(&self) -> usize {
        SHIPPED_RULES.len() + self.unmatched + self.label_mismatch + self.matching
    }

    /// `(file name, source)` of every rule: the shipped ones first.
    pub fn sources(&self) -> Vec<(String, String)> {
        let mut sources: Vec<(String, String)> = SHIPPED_RULES
            .iter()
            .map(|(file, source)| (format!("<shipped>/{file}"), (*source).to_owned()))
            .collect();
        let kinds = [
            (Filler::Unmatched, self.unmatched),
            (Filler::LabelMismatch, self.label_mismatch),
            (Filler::Matching, self.matching),
        ];
        let mut n = 0;
        for (kind, count) in kinds {
            for _ in 0..count {
                sources.push((format!("<generated>/filler_{n:03}.rhai"), filler(kind, n)));
                n += 1;
            }
        }
        sources
    }

    /// Loads the pack into `runtime`'s sandbox.
    pub fn load(&self, runtime: &salve_rules::Runtime) -> Result<RuleSet, LoadErrors> {
        RuleSet::load_sources(runtime, self.sources())
    }

    /// An engine that takes events from any time (as [`crate::shipped_engine`]) with this pack.
    pub fn engine(&self) -> Result<Engine, LoadErrors> {
        let config = EngineConfig {
            max_future_ms: i64::MAX,
            ..EngineConfig::default()
        };
        Engine::new(config, |runtime| self.load(runtime))
    }
}

/// The source of generated rule number `n`.
pub fn filler(kind: Filler, n: usize) -> String {
    let metric = EMITTED[n % EMITTED.len()];
    let (series, labels) = match kind {
        Filler::Unmatched => (format!("unused_series_{n:03}"), String::new()),
        Filler::LabelMismatch => (
            metric.to_owned(),
            format!(r#", labels: #{{ service: "absent-{n:03}" }}"#),
        ),
        Filler::Matching => (metric.to_owned(), String::new()),
    };
    format!(
        r#"// Generated for the benchmarks: {kind:?}.
fn condition(p) {{
    mean("{series}", p.window) > p.limit
}}

#{{
    name: "filler_{n:03}",
    description: "A generated rule that never fires.",
    select: [#{{ kind: "metric", name: "{series}"{labels} }}],
    params: #{{ window: "60s", limit: 1.0e12 }},
    action: "notify",
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_filler_loads_beside_the_shipped_rules() {
        let pack = Pack {
            unmatched: 3,
            label_mismatch: 2,
            matching: 2,
        };
        let engine = pack.engine().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(engine.rules().rules().len(), pack.total());
        assert_eq!(pack.total(), SHIPPED_RULES.len() + 7);
    }

    #[test]
    fn with_total_counts_the_shipped_rules() {
        let pack = Pack::with_total(100, 5);
        assert_eq!(pack.total(), 100.max(SHIPPED_RULES.len() + 5));
        assert_eq!(pack.matching, 5);
    }
}
