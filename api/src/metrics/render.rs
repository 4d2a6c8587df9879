//! From a scrape's snapshot to the exposition text, through `prometheus-client`.
//!
//! A fresh [`Registry`] is built for every scrape rather than keeping live metric objects: the
//! numbers already live in the engine and the runner as running totals, so mirroring them into
//! a second set of counters would only add a way for the two to disagree, and label sets that
//! went away (a rule removed by a reload, a partition revoked) would linger as stale series.
//! Built from the snapshot, a scrape shows exactly what the engine holds. A scrape every few
//! seconds makes the allocation irrelevant. `prometheus-client` still does the encoding, so
//! HELP and TYPE lines, label escaping and histogram buckets are what its maintainers made
//! them.
//!
//! `prometheus-client` writes OpenMetrics. The Prometheus text format 0.0.4, which every
//! scraper reads, differs from it, for the metrics here, only in three ways; [`to_prometheus`]
//! makes them.

use super::snapshot::{EngineSnapshot, RunnerSnapshot};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use salve_connectors::control::{LatencyHistogram, LATENCY_BUCKETS_S};
use salve_engine::ledger::{ResolveTimes, ESCALATION_CAUSES, RESOLVE_BUCKETS_S};
use salve_engine::{AckStatus, IncidentState, Mode};
use std::collections::{BTreeMap, HashSet};

/// The exposition format of a scrape's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Chooses from the `Accept` header values: OpenMetrics when it is acceptable and
    /// preferred at least as much as plain text, the Prometheus text format otherwise (no
    /// header, `*/*`, `text/plain`, or anything unknown).
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Self {
        let mut openmetrics: f32 = 0.0;
        let mut text: f32 = 0.0;
        for range in accept.into_iter().flat_map(|value| value.split(',')) {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(0.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                "text/plain" | "text/*" | "*/*" => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// A metric family built from values already counted: one row per label set.
///
/// `prometheus-client`'s `Family` creates its members on first use and keeps them; here the
/// rows are known up front, and a family with none is left out of the page, as the Go client
/// does.
#[derive(Debug)]
struct Rows<M> {
    rows: Vec<(Labels, M)>,
}

impl<M> Rows<M> {
    fn new() -> Self {
        Self { rows: Vec::new() }
    }

    fn add(&mut self, labels: Labels, metric: M) {
        self.rows.push((labels, metric));
    }
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for Rows<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.rows {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A histogram whose buckets were counted elsewhere (the runner's latency, the ledger's time
/// to resolve), so `prometheus-client`'s `Histogram`, which counts observations itself, does
/// not fit.
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    /// Upper bound and count, not cumulative (the encoder accumulates); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl CountedHistogram {
    /// `counts` has one entry per bound and a last one for the rest.
    fn new(bounds: &[f64], counts: &[u64], sum: f64, count: u64) -> Self {
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        Self {
            sum,
            count,
            buckets,
        }
    }

    fn latency(latency: &LatencyHistogram) -> Self {
        Self::new(
            &LATENCY_BUCKETS_S,
            &latency.buckets,
            latency.sum_s,
            latency.count,
        )
    }

    fn resolve(times: &ResolveTimes) -> Self {
        Self::new(
            &RESOLVE_BUCKETS_S,
            &times.buckets,
            times.sum_ms as f64 / 1000.0,
            times.count,
        )
    }
}

impl TypedMetric for CountedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

fn gauge_usize(value: usize) -> ConstGauge<i64> {
    gauge(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Counters keyed by one label, each key in `known` present even at zero, so a rate over a
/// status or cause that has not happened yet is 0 rather than missing.
fn by_label<K: AsRef<str> + Ord>(
    label: &'static str,
    counts: &BTreeMap<K, u64>,
    known: &[&str],
) -> Rows<ConstCounter<u64>> {
    let mut merged: BTreeMap<&str, u64> = known.iter().map(|k| (*k, 0)).collect();
    for (key, count) in counts {
        *merged.entry(key.as_ref()).or_default() += count;
    }
    let mut rows = Rows::new();
    for (key, count) in merged {
        rows.add(vec![(label, key.to_owned())], counter(count));
    }
    rows
}

const MODES: [Mode; 3] = [Mode::Active, Mode::DryRun, Mode::Paused];
const ACK_STATUSES: [AckStatus; 4] = [
    AckStatus::Received,
    AckStatus::Succeeded,
    AckStatus::Failed,
    AckStatus::Rejected,
];
/// The states of an open incident; resolved and failed incidents are closed, not held.
const OPEN_STATES: [IncidentState; 8] = [
    IncidentState::Failing,
    IncidentState::Remediating,
    IncidentState::Mitigated,
    IncidentState::Reverting,
    IncidentState::Verifying,
    IncidentState::BackingOff,
    IncidentState::AwaitingApproval,
    IncidentState::Escalated,
];

/// The page for one scrape.
pub(crate) fn render(
    engine: &EngineSnapshot,
    runner: &RunnerSnapshot,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let registry = registry(engine, runner);
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(match format {
        Format::OpenMetrics => text,
        Format::Prometheus => to_prometheus(&text),
    })
}

/// Every metric, registered under its full name. Counters are registered without `_total`,
/// which the encoder appends; the README's "Metrics" section lists them all.
fn registry(engine: &EngineSnapshot, runner: &RunnerSnapshot) -> Registry {
    let mut r = Registry::default();
    let stats = &engine.stats;

    // Traffic.
    let mut events_in = Rows::new();
    for (topic, count) in &runner.events_in {
        events_in.add(vec![("topic", topic.clone())], counter(*count));
    }
    r.register(
        "salve_events_in",
        "Telemetry messages read, by topic",
        events_in,
    );
    let mut out = Rows::new();
    for (topic, count) in &runner.published {
        out.add(vec![("topic", topic.clone())], counter(*count));
    }
    r.register(
        "salve_messages_out",
        "Messages produced, by topic: commands, actuator topics, decisions, escalations, changelog, dead letters",
        out,
    );
    r.register(
        "salve_engine_events",
        "Telemetry messages handed to the engine, valid or not",
        counter(stats.events_in),
    );
    r.register(
        "salve_decode_errors",
        "Telemetry messages that could not be decoded",
        counter(stats.decode_errors),
    );
    r.register(
        "salve_late_events",
        "Events older than engine.allowed_lateness behind their entity, refused",
        counter(stats.late_events),
    );
    r.register(
        "salve_future_events",
        "Events too far ahead of the processing clock, refused",
        counter(stats.future_events),
    );
    let mut dead = Rows::new();
    for (reason, count) in [
        ("decode_error", stats.decode_errors),
        ("late", stats.late_events),
        ("future", stats.future_events),
        ("invalid_ack", stats.ack_decode_errors),
    ] {
        dead.add(vec![("reason", reason.to_owned())], counter(count));
    }
    r.register(
        "salve_dead_lettered",
        "Messages sent to the dead-letter topic, by reason",
        dead,
    );
    let mut lag = Rows::new();
    for ((topic, partition), messages) in &runner.lag {
        lag.add(
            vec![
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ],
            gauge(*messages),
        );
    }
    r.register(
        "salve_consumer_lag_messages",
        "Messages behind the end of each telemetry partition, as librdkafka last reported",
        lag,
    );
    let mut assigned: BTreeMap<&str, usize> = BTreeMap::new();
    for (topic, _) in &runner.assigned {
        *assigned.entry(topic).or_default() += 1;
    }
    let mut partitions = Rows::new();
    for (topic, count) in assigned {
        partitions.add(vec![("topic", topic.to_owned())], gauge_usize(count));
    }
    r.register(
        "salve_partitions_assigned",
        "Telemetry partitions assigned to this process, by topic",
        partitions,
    );
    r.register_with_unit(
        "salve_event_to_command_latency",
        "From an event's record timestamp to its command being handed to the producer",
        Unit::Seconds,
        CountedHistogram::latency(&runner.latency),
    );

    // Rules.
    let mut evaluations = Rows::new();
    let mut errors = Rows::new();
    let mut budget_stops = Rows::new();
    for rule in &stats.rules {
        let labels = || vec![("rule", rule.name.clone())];
        evaluations.add(labels(), counter(rule.evaluations));
        errors.add(labels(), counter(rule.errors));
        budget_stops.add(labels(), counter(rule.budget_stops));
    }
    r.register(
        "salve_rule_evaluations",
        "Rule calls, by rule in force",
        evaluations,
    );
    r.register(
        "salve_rule_errors",
        "Rule calls that raised an error, by rule in force",
        errors,
    );
    r.register(
        "salve_rule_budget_stops",
        "Rule calls stopped by the operation budget, by rule in force",
        budget_stops,
    );
    r.register(
        "salve_rule_calls_native",
        "Rule calls evaluated natively, without Rhai (compiled conditions)",
        counter(stats.rule_calls_native),
    );
    r.register(
        "salve_rule_memo_hits",
        "Rule calls answered from memory: their host reads came out as in the entity's previous call",
        counter(stats.rule_memo_hits),
    );
    let mut verdicts = Rows::new();
    for (verdict, count) in [
        ("failure", stats.verdicts_failure),
        ("pending", stats.verdicts_pending),
        ("transient", stats.verdicts_transient),
        ("latched", stats.verdicts_latched),
        ("inhibited", stats.verdicts_inhibited),
    ] {
        verdicts.add(vec![("verdict", verdict.to_owned())], counter(count));
    }
    r.register("salve_verdicts", "Rule verdicts, by kind", verdicts);
    r.register(
        "salve_rules_version",
        "The rule-set version: 1 at start-up, bumped by every reload that succeeds",
        gauge(i64::try_from(engine.rules_version).unwrap_or(i64::MAX)),
    );
    r.register(
        "salve_rules_loaded",
        "Rules in force",
        gauge_usize(engine.rule_modes.len()),
    );
    // No reload yet: the start-up load succeeded, or the engine would not be running.
    let reload_ok = engine
        .last_reload
        .as_ref()
        .is_none_or(|last| last.succeeded);
    r.register(
        "salve_rules_last_reload_success",
        "1 if the latest rule reload went in (or none was tried since start), 0 if it was rejected and the previous rule set still runs",
        gauge(i64::from(reload_ok)),
    );
    if let Some(last) = &engine.last_reload {
        r.register(
            "salve_rules_last_reload_errors",
            "Problems found by the latest rule reload",
            gauge_usize(last.errors),
        );
        r.register_with_unit(
            "salve_rules_last_reload_timestamp",
            "When the latest rule reload was tried, in seconds since the epoch",
            Unit::Seconds,
            ConstGauge::new(last.at_ms as f64 / 1000.0),
        );
    }
    let mut global = Rows::new();
    for mode in MODES {
        global.add(
            vec![("mode", mode.as_str().to_owned())],
            gauge(i64::from(engine.global_mode == mode)),
        );
    }
    r.register(
        "salve_mode",
        "The global mode: 1 for the one in force, 0 for the others",
        global,
    );
    let mut modes = Rows::new();
    for (rule, current) in &engine.rule_modes {
        for mode in MODES {
            modes.add(
                vec![("rule", rule.clone()), ("mode", mode.as_str().to_owned())],
                gauge(i64::from(*current == mode)),
            );
        }
    }
    r.register(
        "salve_rule_mode",
        "The mode each rule in force runs in (global and own combined): 1 for the one in force, 0 for the others",
        modes,
    );

    // Incidents and remediation.
    let mut incidents = Rows::new();
    let mut by_state: BTreeMap<&str, u64> = OPEN_STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for (state, count) in &engine.incidents_by_state {
        *by_state.entry(state).or_default() += count;
    }
    for (state, count) in by_state {
        incidents.add(
            vec![("state", state.to_owned())],
            gauge(i64::try_from(count).unwrap_or(i64::MAX)),
        );
    }
    r.register("salve_incidents", "Open incidents, by state", incidents);
    r.register(
        "salve_commands",
        "Commands issued, by action",
        by_label("action", &engine.commands_by_action, &[]),
    );
    r.register(
        "salve_would_commands",
        "Commands decided on and not sent: dry-run mode or shadow rules",
        counter(stats.would_commands),
    );
    let statuses: Vec<&str> = ACK_STATUSES.iter().map(|s| s.as_str()).collect();
    r.register(
        "salve_acks",
        "Actuator acks applied to an attempt, by status",
        by_label("status", &engine.acks_by_status, &statuses),
    );
    r.register(
        "salve_acks_unmatched",
        "Acks that matched no open attempt here: unknown, late, or another process's",
        counter(stats.acks_unmatched),
    );
    r.register(
        "salve_acks_replayed",
        "Unmatched acks applied later, when a restore brought in the incident that waited for them",
        counter(stats.acks_replayed),
    );
    r.register(
        "salve_ack_decode_errors",
        "Acks that could not be decoded",
        counter(stats.ack_decode_errors),
    );
    let causes: Vec<&str> = ESCALATION_CAUSES.iter().map(|c| c.as_str()).collect();
    r.register(
        "salve_escalations",
        "Incidents handed to a human, by cause",
        by_label("cause", &engine.escalations_by_cause, &causes),
    );
    r.register(
        "salve_retries",
        "Attempts scheduled again after a backoff",
        counter(stats.retries),
    );
    r.register(
        "salve_attempts_timed_out",
        "Attempts that got no final ack before their deadline",
        counter(stats.attempts_timed_out),
    );
    r.register(
        "salve_verifications_failed",
        "Attempts whose fix did not hold while verifying",
        counter(stats.verifications_failed),
    );
    r.register(
        "salve_incidents_restored",
        "Open incidents read back from the changelog",
        counter(stats.incidents_restored),
    );

    // Effectiveness, per rule and action.
    let mut opened = Rows::new();
    let mut resolved = Rows::new();
    let mut failed = Rows::new();
    let mut escalated = Rows::new();
    let mut attempts = Rows::new();
    let mut succeeded = Rows::new();
    let mut action_failed = Rows::new();
    let mut action_escalated = Rows::new();
    let mut resolve_times = Rows::new();
    let mut action_resolve_times = Rows::new();
    for (rule, record) in &engine.effectiveness {
        let labels = || vec![("rule", rule.clone())];
        opened.add(labels(), counter(record.opened));
        resolved.add(labels(), counter(record.resolved));
        failed.add(labels(), counter(record.failed));
        escalated.add(labels(), counter(record.escalated));
        resolve_times.add(labels(), CountedHistogram::resolve(&record.resolve_times));
        for (action, outcome) in &record.actions {
            let labels = || vec![("rule", rule.clone()), ("action", action.clone())];
            attempts.add(labels(), counter(outcome.attempts));
            succeeded.add(labels(), counter(outcome.succeeded));
            action_failed.add(labels(), counter(outcome.failed));
            action_escalated.add(labels(), counter(outcome.escalated));
            action_resolve_times.add(labels(), CountedHistogram::resolve(&outcome.resolve_times));
        }
    }
    r.register(
        "salve_rule_incidents_opened",
        "Incidents opened, by rule",
        opened,
    );
    r.register(
        "salve_rule_incidents_resolved",
        "Incidents resolved after a real remediation (not dry runs or shadow rules), by rule",
        resolved,
    );
    r.register(
        "salve_rule_incidents_failed",
        "Incidents closed unresolved, by rule",
        failed,
    );
    r.register(
        "salve_rule_incidents_escalated",
        "Incidents handed to a human, by rule",
        escalated,
    );
    r.register(
        "salve_rule_action_attempts",
        "Commands issued, by rule and action",
        attempts,
    );
    r.register(
        "salve_rule_action_succeeded",
        "Attempts that did what they should (and were verified where the rule verifies), by rule and action",
        succeeded,
    );
    r.register(
        "salve_rule_action_failed",
        "Attempts that failed: a failed or rejected ack, a timeout, or a fix that did not hold; by rule and action",
        action_failed,
    );
    r.register(
        "salve_rule_action_escalated",
        "Incidents escalated while this was their latest action, by rule and action",
        action_escalated,
    );
    r.register_with_unit(
        "salve_rule_time_to_resolve",
        "From an incident's first failing to its resolution, by rule",
        Unit::Seconds,
        resolve_times,
    );
    r.register_with_unit(
        "salve_rule_action_time_to_resolve",
        "From an incident's first failing to its resolution, by rule and the action that resolved it (its latest)",
        Unit::Seconds,
        action_resolve_times,
    );

    // State held.
    r.register(
        "salve_entities",
        "Entities held",
        gauge_usize(engine.entities),
    );
    r.register(
        "salve_entities_expired",
        "Entities forgotten after engine.entity_ttl without events",
        counter(stats.entities_expired),
    );
    r
}

/// OpenMetrics text to the Prometheus text format 0.0.4. For what [`registry`] registers, they
/// differ in three ways: a counter's HELP and TYPE lines name its samples (`x_total`, where
/// OpenMetrics names the family `x`), and there are no `# UNIT` lines and no `# EOF`. Samples
/// and their label escaping are the same in both.
fn to_prometheus(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?.split_once(' ')?)));
        match descriptor {
            Some((tag, (name, rest))) if counters.contains(name) => {
                text.push_str(tag);
                text.push_str(name);
                text.push_str("_total ");
                text.push_str(rest);
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;
