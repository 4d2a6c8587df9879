//! What a scrape copies out of the engine and the runner.
//!
//! Only owned copies of counters: the engine thread spends a few microseconds per rule here,
//! and nothing borrowed outlives the job.

use salve_connectors::control::{LatencyHistogram, RunnerShared};
use salve_engine::ledger::RuleRecord;
use salve_engine::{Engine, Mode, Stats};
use std::collections::BTreeMap;

/// The engine's side of a scrape.
#[derive(Debug, Clone)]
pub(crate) struct EngineSnapshot {
    /// Running totals, with the per-rule call counters of the rules in force.
    pub stats: Stats,
    /// Commands issued, by action.
    pub commands_by_action: BTreeMap<String, u64>,
    /// Acks applied to an attempt, by status.
    pub acks_by_status: BTreeMap<&'static str, u64>,
    /// Escalations, by cause.
    pub escalations_by_cause: BTreeMap<&'static str, u64>,
    /// Effectiveness per rule, including rules since removed: their past counts stay.
    pub effectiveness: BTreeMap<String, RuleRecord>,
    /// Open incidents, by state.
    pub incidents_by_state: BTreeMap<String, u64>,
    /// The rule-set version.
    pub rules_version: u64,
    /// The global mode.
    pub global_mode: Mode,
    /// Rules in force, each with the mode it runs in.
    pub rule_modes: Vec<(String, Mode)>,
    /// How the latest reload went, if there was one.
    pub last_reload: Option<ReloadSummary>,
    /// Entities held.
    pub entities: usize,
}

/// The part of a [`salve_engine::ReloadOutcome`] a metric can carry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReloadSummary {
    /// When (the engine's processing clock, milliseconds since the epoch).
    pub at_ms: i64,
    /// Whether the new rule set went in.
    pub succeeded: bool,
    /// How many problems it had.
    pub errors: usize,
}

impl EngineSnapshot {
    /// Runs on the engine's thread.
    pub fn take(engine: &mut Engine) -> Self {
        let ledger = engine.ledger();
        let modes = engine.modes();
        Self {
            stats: engine.stats().clone(),
            commands_by_action: ledger.commands_by_action().clone(),
            acks_by_status: ledger.acks_by_status().clone(),
            escalations_by_cause: ledger.escalations_by_cause().clone(),
            effectiveness: ledger.rules().clone(),
            incidents_by_state: engine.incidents_by_state(),
            rules_version: engine.rules_version(),
            global_mode: modes.global,
            rule_modes: engine
                .rules()
                .rules()
                .iter()
                .map(|rule| (rule.decl.name.clone(), modes.for_rule(&rule.decl.name)))
                .collect(),
            last_reload: engine.last_reload().map(|outcome| ReloadSummary {
                at_ms: outcome.at_ms,
                succeeded: outcome.succeeded(),
                errors: outcome.errors.len(),
            }),
            entities: engine.entity_count(),
        }
    }
}

/// The runner's side of a scrape: what only it knows (topics, partitions, latency).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunnerSnapshot {
    /// Telemetry messages read, by topic.
    pub events_in: BTreeMap<String, u64>,
    /// Messages produced, by topic.
    pub published: BTreeMap<String, u64>,
    /// Consumer lag, by (topic, partition).
    pub lag: BTreeMap<(String, i32), i64>,
    /// Partitions assigned.
    pub assigned: Vec<(String, i32)>,
    /// Event-to-command latency.
    pub latency: LatencyHistogram,
}

impl RunnerSnapshot {
    /// Reads the runner's shared counters; any thread.
    pub fn take(shared: &RunnerShared) -> Self {
        Self {
            events_in: shared.events_in(),
            published: shared.published(),
            lag: shared.consumer_lag(),
            assigned: shared.assigned(),
            latency: shared.latency(),
        }
    }
}
