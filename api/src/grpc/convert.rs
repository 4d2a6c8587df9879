//! From the engine's views to `salve.v1` messages, and from requests to the engine's filters.
//!
//! Enum values that a client sends are checked here: an unknown number is INVALID_ARGUMENT,
//! never silently "any".

use crate::proto;
use salve_connectors::control::RunnerShared;
use salve_engine::ledger::{ActionRecord, HistoryEntry, RuleRecord};
use salve_engine::wire::{DecisionKind, Evidence, Verdict};
use salve_engine::{
    AckStatus, Decision, EngineStatus, EntityView, Health, IncidentState, IncidentView, Mode,
    PartitionId, ReloadOutcome, RuleView, SeriesView,
};
use std::collections::HashMap;
use tonic::Status;

pub(crate) fn mode(mode: Mode) -> i32 {
    match mode {
        Mode::Active => proto::Mode::Active,
        Mode::DryRun => proto::Mode::DryRun,
        Mode::Paused => proto::Mode::Paused,
    }
    .into()
}

/// `None` for MODE_UNSPECIFIED.
pub(crate) fn mode_from(value: i32) -> Result<Option<Mode>, Status> {
    match proto::Mode::try_from(value) {
        Ok(proto::Mode::Unspecified) => Ok(None),
        Ok(proto::Mode::Active) => Ok(Some(Mode::Active)),
        Ok(proto::Mode::DryRun) => Ok(Some(Mode::DryRun)),
        Ok(proto::Mode::Paused) => Ok(Some(Mode::Paused)),
        Err(_) => Err(Status::invalid_argument(format!("unknown mode {value}"))),
    }
}

fn health(health: Health) -> i32 {
    match health {
        Health::Healthy => proto::Health::Healthy,
        Health::Pending => proto::Health::Pending,
        Health::Failing => proto::Health::Failing,
    }
    .into()
}

/// `None` for any health.
pub(crate) fn health_from(value: i32) -> Result<Option<Health>, Status> {
    match proto::Health::try_from(value) {
        Ok(proto::Health::Unspecified) => Ok(None),
        Ok(proto::Health::Healthy) => Ok(Some(Health::Healthy)),
        Ok(proto::Health::Pending) => Ok(Some(Health::Pending)),
        Ok(proto::Health::Failing) => Ok(Some(Health::Failing)),
        Err(_) => Err(Status::invalid_argument(format!("unknown health {value}"))),
    }
}

pub(crate) fn state(state: IncidentState) -> i32 {
    use proto::IncidentState as P;
    match state {
        IncidentState::Failing => P::Failing,
        IncidentState::Remediating => P::Remediating,
        IncidentState::Mitigated => P::Mitigated,
        IncidentState::Reverting => P::Reverting,
        IncidentState::Verifying => P::Verifying,
        IncidentState::BackingOff => P::BackingOff,
        IncidentState::Escalated => P::Escalated,
        IncidentState::Resolved => P::Resolved,
        IncidentState::Failed => P::Failed,
        IncidentState::AwaitingApproval => P::AwaitingApproval,
    }
    .into()
}

fn optional_state(value: Option<IncidentState>) -> i32 {
    value.map_or(proto::IncidentState::Unspecified.into(), state)
}

pub(crate) fn state_from(value: i32) -> Result<IncidentState, Status> {
    use proto::IncidentState as P;
    match P::try_from(value) {
        Ok(P::Failing) => Ok(IncidentState::Failing),
        Ok(P::Remediating) => Ok(IncidentState::Remediating),
        Ok(P::Mitigated) => Ok(IncidentState::Mitigated),
        Ok(P::Reverting) => Ok(IncidentState::Reverting),
        Ok(P::Verifying) => Ok(IncidentState::Verifying),
        Ok(P::BackingOff) => Ok(IncidentState::BackingOff),
        Ok(P::Escalated) => Ok(IncidentState::Escalated),
        Ok(P::Resolved) => Ok(IncidentState::Resolved),
        Ok(P::Failed) => Ok(IncidentState::Failed),
        Ok(P::AwaitingApproval) => Ok(IncidentState::AwaitingApproval),
        Ok(P::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "unknown incident state {value}"
        ))),
    }
}

pub(crate) fn kind(kind: DecisionKind) -> proto::DecisionKind {
    match kind {
        DecisionKind::Verdict => proto::DecisionKind::Verdict,
        DecisionKind::Transition => proto::DecisionKind::Transition,
        DecisionKind::Ack => proto::DecisionKind::Ack,
        DecisionKind::WouldCommand => proto::DecisionKind::WouldCommand,
    }
}

pub(crate) fn kind_from(value: i32) -> Result<proto::DecisionKind, Status> {
    match proto::DecisionKind::try_from(value) {
        Ok(proto::DecisionKind::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "unknown decision kind {value}"
        ))),
        Ok(kind) => Ok(kind),
    }
}

fn verdict(verdict: Option<Verdict>) -> i32 {
    match verdict {
        None => proto::Verdict::Unspecified,
        Some(Verdict::Failure) => proto::Verdict::Failure,
        Some(Verdict::Pending) => proto::Verdict::Pending,
        Some(Verdict::Transient) => proto::Verdict::Transient,
        Some(Verdict::Inhibited) => proto::Verdict::Inhibited,
    }
    .into()
}

fn ack_status(status: Option<AckStatus>) -> i32 {
    match status {
        None => proto::AckStatus::Unspecified,
        Some(AckStatus::Received) => proto::AckStatus::Received,
        Some(AckStatus::Succeeded) => proto::AckStatus::Succeeded,
        Some(AckStatus::Failed) => proto::AckStatus::Failed,
        Some(AckStatus::Rejected) => proto::AckStatus::Rejected,
    }
    .into()
}

fn modes(modes: &std::collections::BTreeMap<String, Mode>) -> HashMap<String, i32> {
    modes
        .iter()
        .map(|(rule, m)| (rule.clone(), mode(*m)))
        .collect()
}

fn state_partition(partition: PartitionId) -> proto::StatePartition {
    proto::StatePartition {
        topic_index: u32::from(partition.topic),
        partition: partition.partition,
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) fn status(engine: EngineStatus, runner: &RunnerShared) -> proto::EngineStatus {
    let lag = runner.consumer_lag();
    let assigned = runner
        .assigned()
        .into_iter()
        .map(|(topic, partition)| proto::AssignedPartition {
            lag: lag.get(&(topic.clone(), partition)).copied(),
            topic,
            partition,
        })
        .collect();
    proto::EngineStatus {
        global_mode: mode(engine.modes.global),
        rule_modes: modes(&engine.modes.rules),
        assigned,
        state_partitions: engine.partitions.into_iter().map(state_partition).collect(),
        entities: count(engine.entities),
        open_incidents: engine.incidents.into_iter().collect(),
        rules_version: engine.rules_version,
        rules_loaded: count(engine.rules),
        last_reload: engine.last_reload.map(reload),
        events_in: runner.events_in().into_iter().collect(),
        published: runner.published().into_iter().collect(),
        consumer_lag: lag.values().map(|l| (*l).max(0)).sum(),
    }
}

pub(crate) fn reload(outcome: ReloadOutcome) -> proto::ReloadOutcome {
    proto::ReloadOutcome {
        at_ms: outcome.at_ms,
        version: outcome.version,
        succeeded: outcome.succeeded(),
        trigger: outcome.trigger,
        errors: outcome.errors,
        added: outcome.added,
        removed: outcome.removed,
        kept: outcome.kept,
    }
}

pub(crate) fn entity(view: EntityView) -> proto::Entity {
    proto::Entity {
        id: view.id,
        partition: Some(state_partition(view.partition)),
        labels: view.labels.into_iter().collect(),
        series: view.series,
        last_seen_ms: view.last_seen_ms,
        health: health(view.health),
        pending_rules: view.pending,
        incidents: view.incidents.into_iter().map(incident).collect(),
    }
}

pub(crate) fn series(view: SeriesView) -> proto::SeriesWindow {
    proto::SeriesWindow {
        entity: view.entity,
        series: view.series,
        window_ms: view.window_ms,
        count: view.count,
        sum: view.sum,
        mean: view.mean,
        min: view.min,
        max: view.max,
        rate_per_s: view.rate_per_s,
        last_ts_ms: view.last.map(|(ts, _)| ts),
        last_value: view.last.map(|(_, value)| value),
        percentiles: view.percentiles.into_iter().collect(),
        consecutive_fails: view.consecutive_fails,
        consecutive_passes: view.consecutive_passes,
    }
}

pub(crate) fn incident(view: IncidentView) -> proto::Incident {
    proto::Incident {
        id: view.id,
        rule: view.rule,
        subject: view.subject,
        group: view.group,
        state: state(view.state),
        open: view.open,
        attempt: view.attempt,
        action: view.action.unwrap_or_default(),
        command_id: view.command_id,
        target: view.target,
        opened_at_ms: view.opened_at_ms,
        closed_at_ms: view.closed_at_ms,
        history: view.history.into_iter().map(history).collect(),
    }
}

fn history(entry: HistoryEntry) -> proto::HistoryEntry {
    proto::HistoryEntry {
        ts_ms: entry.ts,
        from: optional_state(entry.from),
        to: state(entry.to),
        attempt: entry.attempt,
        command_id: entry.command_id.unwrap_or_default(),
        reason: entry.reason,
    }
}

pub(crate) fn rule(view: RuleView) -> proto::Rule {
    proto::Rule {
        name: view.name,
        file: view.file,
        description: view.description,
        action: view.action,
        mode: mode(view.mode),
        own_mode: view.own_mode.map_or(proto::Mode::Unspecified.into(), mode),
        shadow: view.shadow,
        evaluations: view.counters.evaluations,
        errors: view.counters.errors,
        budget_stops: view.counters.budget_stops,
        effectiveness: Some(effectiveness(view.effectiveness)),
    }
}

fn effectiveness(record: RuleRecord) -> proto::Effectiveness {
    proto::Effectiveness {
        opened: record.opened,
        resolved: record.resolved,
        failed: record.failed,
        escalated: record.escalated,
        mttr_mean_ms: record.resolve_times.mean_ms(),
        mttr_count: record.resolve_times.count,
        actions: record
            .actions
            .into_iter()
            .map(|(action, outcomes)| (action, action_outcomes(&outcomes)))
            .collect(),
    }
}

fn action_outcomes(record: &ActionRecord) -> proto::ActionOutcomes {
    proto::ActionOutcomes {
        attempts: record.attempts,
        succeeded: record.succeeded,
        failed: record.failed,
        escalated: record.escalated,
        success_rate: record.success_rate(),
        mttr_mean_ms: record.resolve_times.mean_ms(),
        mttr_count: record.resolve_times.count,
    }
}

pub(crate) fn decision(decision: &Decision) -> proto::Decision {
    proto::Decision {
        ts_ms: decision.ts,
        kind: kind(decision.kind).into(),
        rule: decision.rule.clone(),
        entity: decision.entity.clone(),
        incident: decision.incident.clone().unwrap_or_default(),
        verdict: verdict(decision.verdict),
        from: optional_state(decision.from),
        to: optional_state(decision.to),
        attempt: decision.attempt,
        command_id: decision.command_id.clone().unwrap_or_default(),
        ack_status: ack_status(decision.ack_status),
        actuator: decision.actuator.clone().unwrap_or_default(),
        reason: decision.reason.clone(),
        evidence: decision.evidence.iter().map(evidence).collect(),
    }
}

fn evidence(evidence: &Evidence) -> proto::Evidence {
    proto::Evidence {
        function: evidence.function.clone(),
        series: evidence.series.clone(),
        window_ms: evidence.window_ms,
        value: evidence.value,
    }
}
