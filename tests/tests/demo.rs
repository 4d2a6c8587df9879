//! `salve demo` as integration tests: each scenario of the demo is a test, asserted on the
//! decisions, commands and escalations that salve published on the demo's embedded broker (the
//! librdkafka mock cluster), not on the demo's own verdict alone.
//!
//! The full demo runs once, about a minute (its crash loop is verified for a minute of wall
//! time), and the scenario tests share that run: the first test to get there starts it, and
//! the others wait for it.

use salve::demo::scenarios::{ScenarioKind, STORM_SHARE};
use salve::demo::{demo_engine_config, run_demo, DemoOptions, DemoReport, ScenarioOutcome};
use salve_connectors::Shutdown;
use salve_engine::wire::{AckStatus, Command, DecisionKind, IncidentState, Verdict};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The full demo's report and its live view, or why it could not run.
fn full_demo() -> &'static Result<(DemoReport, String), String> {
    static RUN: OnceLock<Result<(DemoReport, String), String>> = OnceLock::new();
    RUN.get_or_init(|| {
        let mut view = Vec::new();
        let report = run_demo(&DemoOptions::default(), &Shutdown::default(), &mut view)
            .map_err(|e| e.to_string())?;
        Ok((report, String::from_utf8_lossy(&view).into_owned()))
    })
}

/// The report, and the outcome of `kind` in it; panics with the live view if `kind` did not
/// reach its expected outcome.
fn scenario(kind: ScenarioKind) -> (&'static DemoReport, &'static ScenarioOutcome) {
    let (report, view) = match full_demo() {
        Ok((report, view)) => (report, view),
        Err(error) => panic!("the demo did not run: {error}"),
    };
    let outcome = report
        .outcome(kind)
        .unwrap_or_else(|| panic!("{kind} did not run:\n{view}"));
    assert!(
        outcome.passed,
        "{kind}: expected {}, observed {}\n{view}",
        outcome.expected, outcome.observed
    );
    (report, outcome)
}

/// The states `rule`'s incidents on `entity` entered, in order.
fn states(report: &DemoReport, rule: &str, entity: &str) -> Vec<IncidentState> {
    report.observed.states(rule, entity)
}

/// The actions of the commands `rule` sent to `entity`, in order.
fn actions(report: &DemoReport, rule: &str, entity: &str) -> Vec<String> {
    commands(report, rule, entity)
        .iter()
        .map(|c| c.action.clone())
        .collect()
}

fn commands<'a>(report: &'a DemoReport, rule: &str, entity: &str) -> Vec<&'a Command> {
    report.observed.commands_to(rule, entity)
}

/// Whether the demo actuator acked `command` succeeded.
fn acked_succeeded(report: &DemoReport, command: &Command) -> bool {
    report.observed.decisions.iter().any(|d| {
        d.kind == DecisionKind::Ack
            && d.command_id.as_deref() == Some(command.id.as_str())
            && d.ack_status == Some(AckStatus::Succeeded)
            && d.actuator.as_deref() == Some("demo")
    })
}

/// Whether `expected` appears in `states`, in that order.
fn in_order(states: &[IncidentState], expected: &[IncidentState]) -> bool {
    let mut rest = states.iter();
    expected.iter().all(|want| rest.any(|state| state == want))
}

#[test]
fn a_crash_loop_is_restarted_verified_and_resolved() {
    let (report, outcome) = scenario(ScenarioKind::CrashLoop);
    let pod = outcome.subject.as_str();
    let restarts = commands(report, "crash_loop", pod);
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0].action, "restart");
    assert!(acked_succeeded(report, restarts[0]));
    let states = states(report, "crash_loop", pod);
    assert!(
        in_order(
            &states,
            &[
                IncidentState::Remediating,
                IncidentState::Verifying,
                IncidentState::Resolved
            ]
        ),
        "{states:?}"
    );
    assert!(report.observed.escalations_of("crash_loop", pod).is_empty());
}

#[test]
fn a_latency_spike_is_ridden_out_as_a_transient() {
    let (report, outcome) = scenario(ScenarioKind::LatencySpike);
    let pod = outcome.subject.as_str();
    let verdicts: Vec<Verdict> = report
        .observed
        .verdicts("latency_breaker", pod)
        .iter()
        .filter_map(|d| d.verdict)
        .collect();
    assert_eq!(verdicts, [Verdict::Pending, Verdict::Transient]);
    assert!(
        report.observed.commands.iter().all(|c| c.entity != pod),
        "no command goes to {pod}"
    );
}

#[test]
fn a_sustained_latency_rise_is_rerouted_then_restored() {
    let (report, outcome) = scenario(ScenarioKind::LatencyRise);
    let pod = outcome.subject.as_str();
    assert_eq!(
        actions(report, "latency_breaker", pod),
        ["reroute", "restore_route"]
    );
    for command in commands(report, "latency_breaker", pod) {
        assert!(acked_succeeded(report, command), "{command:?}");
    }
    let states = states(report, "latency_breaker", pod);
    assert!(
        in_order(
            &states,
            &[
                IncidentState::Remediating,
                IncidentState::Mitigated,
                IncidentState::Reverting,
                IncidentState::Resolved
            ]
        ),
        "{states:?}"
    );
}

#[test]
fn a_failed_primary_is_replaced_by_promoting_the_most_current_replica() {
    let (report, outcome) = scenario(ScenarioKind::PrimaryFailure);
    let primary = outcome.subject.as_str();
    let target = outcome
        .target
        .as_deref()
        .expect("the failover names its replica");
    let promotions: Vec<&Command> = report
        .observed
        .commands
        .iter()
        .filter(|c| c.action == "promote")
        .collect();
    assert_eq!(promotions.len(), 1, "{promotions:?}");
    let promote = promotions[0];
    assert_eq!(promote.entity, target);
    assert_eq!(promote.rule, "primary_failover");
    assert_eq!(promote.params["old_primary"], primary);
    assert!(acked_succeeded(report, promote));
    assert_eq!(
        states(report, "primary_failover", primary).last(),
        Some(&IncidentState::Resolved)
    );
}

#[test]
fn a_checksum_mismatch_is_resynced_and_stays_fixed() {
    let (report, outcome) = scenario(ScenarioKind::ChecksumMismatch);
    let node = outcome.subject.as_str();
    // The resync only: no new mismatch climbed to the ladder's restore.
    assert_eq!(actions(report, "integrity", node), ["resync"]);
    let resync = commands(report, "integrity", node)[0];
    assert!(acked_succeeded(report, resync));
    // integrity verifies for 10 minutes: the demo ends while it does, with no new mismatch.
    assert_eq!(
        states(report, "integrity", node).last(),
        Some(&IncidentState::Verifying)
    );
    assert!(report.observed.escalations_of("integrity", node).is_empty());
}

#[test]
fn a_flapping_pod_is_handed_to_a_human_by_the_flap_limit() {
    let (report, outcome) = scenario(ScenarioKind::Flapping);
    let pod = outcome.subject.as_str();
    let limit = demo_engine_config().flap_max_attempts as usize;
    assert_eq!(
        actions(report, "crash_loop", pod),
        vec!["restart"; limit],
        "as many restarts as the flap limit allows"
    );
    let escalations = report.observed.escalations_of("crash_loop", pod);
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert!(
        escalations[0].reason.starts_with("flapping"),
        "{}",
        escalations[0].reason
    );
    assert_eq!(
        states(report, "crash_loop", pod).last(),
        Some(&IncidentState::Escalated)
    );
}

#[test]
fn a_storm_freezes_automation_for_the_service() {
    let (report, outcome) = scenario(ScenarioKind::Storm);
    let group = outcome.subject.as_str();
    let service = group.strip_prefix("service=").expect("a service group");
    let in_service = |entity: &str| entity.starts_with(&format!("{service}/"));
    let storm = format!("storm/crash_loop/{group}");
    let storms: Vec<_> = report
        .observed
        .escalations
        .iter()
        .filter(|e| e.incident == storm)
        .collect();
    assert_eq!(storms.len(), 1, "one escalation for the storm: {storms:?}");
    let restarted: BTreeSet<&str> = report
        .observed
        .commands
        .iter()
        .filter(|c| c.action == "restart" && in_service(&c.entity))
        .map(|c| c.entity.as_str())
        .collect();
    let held: BTreeSet<&str> = report
        .observed
        .decisions
        .iter()
        .filter(|d| {
            d.verdict == Some(Verdict::Inhibited)
                && d.reason.starts_with("storm")
                && in_service(&d.entity)
        })
        .map(|d| d.entity.as_str())
        .collect();
    let pods = salve::demo::fleet::PODS_PER_SERVICE as f64;
    let most = (STORM_SHARE * pods).floor() as usize;
    assert!(
        !restarted.is_empty() && restarted.len() <= most,
        "at most {most} pods restarted before the storm froze the rest: {restarted:?}"
    );
    assert!(!held.is_empty(), "crash-looping pods held back");
    assert!(
        restarted.is_disjoint(&held),
        "{restarted:?} and {held:?} overlap"
    );
}

#[test]
fn the_demo_ends_with_a_summary_of_every_scenario_without_colours() {
    let Ok((report, view)) = full_demo() else {
        panic!("the demo did not run: {:?}", full_demo().as_ref().err());
    };
    assert!(report.passed(), "{view}");
    assert!(!report.interrupted);
    assert_eq!(report.outcomes.len(), ScenarioKind::ALL.len());
    assert!(!view.contains('\x1b'), "no colours when asked for none");
    for kind in ScenarioKind::ALL {
        assert!(
            view.lines()
                .any(|line| line.starts_with(kind.name()) && line.trim_end().ends_with("pass")),
            "a summary row for {kind}:\n{view}"
        );
    }
    assert!(view.contains("7 of 7 scenarios as expected"), "{view}");
}

#[test]
fn a_single_scenario_runs_alone() {
    let options = DemoOptions {
        scenarios: vec![ScenarioKind::LatencySpike],
        speed: 4.0,
        ..DemoOptions::default()
    };
    let mut view = Vec::new();
    let report = run_demo(&options, &Shutdown::default(), &mut view).expect("the demo runs");
    let view = String::from_utf8_lossy(&view);
    assert!(report.passed(), "{view}");
    let kinds: Vec<ScenarioKind> = report.outcomes.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [ScenarioKind::LatencySpike]);
    assert!(
        report.observed.commands.is_empty(),
        "a healthy fleet and a transient: nothing to do"
    );
}

#[test]
fn a_scenario_that_does_not_reach_its_outcome_in_time_fails_the_demo() {
    // A sustained rise needs 30 s of event time before salve acts: far more than 1 s.
    let options = DemoOptions {
        scenarios: vec![ScenarioKind::LatencyRise],
        patience: std::time::Duration::from_secs(1),
        ..DemoOptions::default()
    };
    let mut view = Vec::new();
    let report = run_demo(&options, &Shutdown::default(), &mut view).expect("the demo runs");
    let view = String::from_utf8_lossy(&view);
    assert!(!report.passed(), "{view}");
    let outcome = report.outcome(ScenarioKind::LatencyRise).expect("it ran");
    assert!(!outcome.passed);
    assert!(
        outcome.observed.starts_with("not reached within 1 s"),
        "{}",
        outcome.observed
    );
    assert!(view.contains("0 of 1 scenarios as expected"), "{view}");
}
