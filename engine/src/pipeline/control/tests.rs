use crate::config::Mode;
use crate::tests::{ack, commands, engine_with, exit, feed_from, last_transition};
use crate::wire::{AckStatus, DecisionKind, EscalationCause, IncidentState, Output};
use crate::{ControlError, Engine, IncidentFilter};
use salve_rules::{RuleSet, SHIPPED_RULES};

/// crash_loop's incident on `entity`, escalated after three attempts that got no ack.
fn escalated(engine: &mut Engine, entity: &str) -> (String, Vec<Output>) {
    let mut out = feed_from(
        engine,
        0,
        &[
            exit(entity, 1_000),
            exit(entity, 2_000),
            exit(entity, 3_000),
        ],
    );
    let id = commands(&out)[0].incident.clone();
    while last_transition(&out) != Some(IncidentState::Escalated) {
        let at = engine.next_deadline().expect("a deadline until escalated");
        engine.tick(at, &mut out);
    }
    (id, out)
}

fn transitions_of(out: &[Output], id: &str) -> Vec<(Option<IncidentState>, IncidentState)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Decision(d)
                if d.kind == DecisionKind::Transition && d.incident.as_deref() == Some(id) =>
            {
                d.to.map(|to| (d.from, to))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_operator_resolves_an_escalated_incident_and_the_rule_waits_for_its_condition_to_clear() {
    let mut engine = engine_with(&[]);
    let (id, _) = escalated(&mut engine, "a");
    let mut out = Vec::new();
    engine
        .resolve_incident(&id, "replaced the disk", 200_000, &mut out)
        .expect("resolvable");
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Escalated), IncidentState::Resolved)]
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Decision(d) if d.reason.contains("replaced the disk"))));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Changelog(c) if c.subject == "a")),
        "the change is persisted"
    );
    assert!(engine.incidents(&IncidentFilter::default()).is_empty());
    // The exits still in the window do not fire it again at once: the fix is the human's.
    let more = feed_from(&mut engine, 10, &[exit("a", 4_000)]);
    assert!(commands(&more).is_empty());
    assert_eq!(
        engine.resolve_incident(&id, "", 200_001, &mut Vec::new()),
        Err(ControlError::FailedPrecondition(format!(
            "incident {id} is already closed"
        )))
    );
    assert!(matches!(
        engine.resolve_incident("crash_loop/nobody@0:0:1", "", 0, &mut Vec::new()),
        Err(ControlError::NotFound(_))
    ));
}

#[test]
fn only_an_escalated_incident_is_resolved_by_hand() {
    let mut engine = engine_with(&[]);
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    let id = commands(&out)[0].incident.clone();
    let refused = engine.resolve_incident(&id, "", 10, &mut Vec::new());
    assert!(
        matches!(&refused, Err(ControlError::FailedPrecondition(m)) if m.contains("remediating")),
        "{refused:?}"
    );
}

#[test]
fn lifting_a_quarantine_lets_automation_act_again_at_once() {
    let mut engine = engine_with(&[]);
    let (id, out) = escalated(&mut engine, "a");
    let escalation = out.iter().find_map(|o| match o {
        Output::Escalation(e) => Some(e),
        _ => None,
    });
    assert_eq!(
        escalation.map(|e| e.cause),
        Some(EscalationCause::Exhausted)
    );
    assert!(matches!(
        engine.lift_quarantine("a", "node_unhealthy", "", 0, &mut Vec::new()),
        Err(ControlError::NotFound(_))
    ));
    let mut out = Vec::new();
    let lifted = engine
        .lift_quarantine("a", "crash_loop", "on call says go", 200_000, &mut out)
        .expect("quarantined");
    assert_eq!(lifted, id);
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Escalated), IncidentState::Failed)]
    );
    // The crash loop goes on, and a new incident acts on it.
    let again = feed_from(
        &mut engine,
        10,
        &[exit("a", 4_000), exit("a", 5_000), exit("a", 6_000)],
    );
    assert_eq!(commands(&again).len(), 1);
    assert_ne!(commands(&again)[0].incident, id);
}

#[test]
fn a_paused_rule_is_not_evaluated_and_its_due_attempts_wait_until_it_resumes() {
    let mut engine = engine_with(&[]);
    engine
        .set_mode(Some("crash_loop"), Some(Mode::Paused))
        .expect("settable");
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    assert!(out.is_empty(), "no verdict, no command: {out:?}");
    assert_eq!(
        engine.stats().rule("crash_loop").map(|r| r.evaluations),
        Some(0)
    );
    engine.set_mode(Some("crash_loop"), None).expect("settable");
    let out = feed_from(&mut engine, 3, &[exit("a", 4_000)]);
    assert_eq!(commands(&out).len(), 1, "windows filled while paused");
    let first = commands(&out)[0].id.clone();

    // Paused again while the attempt fails: its retry waits.
    engine.set_mode(None, Some(Mode::Paused)).expect("settable");
    let mut out = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Failed), 5_000, &mut out);
    for now in [20_000, 60_000, 120_000] {
        engine.tick(now, &mut out);
    }
    assert!(commands(&out).is_empty(), "nothing sent while paused");
    assert_eq!(last_transition(&out), Some(IncidentState::BackingOff));
    engine.set_mode(None, Some(Mode::Active)).expect("settable");
    engine.tick(121_000, &mut out);
    let sent = commands(&out);
    assert_eq!(sent.len(), 1, "the retry goes out once resumed");
    assert_eq!(sent[0].attempt, 2);
}

#[test]
fn a_rule_mode_only_adds_caution_to_the_global_mode() {
    let mut engine = engine_with(&[]);
    engine.set_mode(None, Some(Mode::DryRun)).expect("settable");
    engine
        .set_mode(Some("crash_loop"), Some(Mode::Active))
        .expect("settable");
    assert_eq!(engine.modes().for_rule("crash_loop"), Mode::DryRun);
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    assert!(commands(&out).is_empty());
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Decision(d) if d.kind == DecisionKind::WouldCommand)));
    assert!(engine.set_mode(None, None).is_err());
}

fn shipped_plus(extra: &[(&str, &str)], without: &str) -> Vec<(String, String)> {
    SHIPPED_RULES
        .iter()
        .chain(extra)
        .filter(|(file, _)| !file.starts_with(without) || without.is_empty())
        .map(|(f, s)| ((*f).to_owned(), (*s).to_owned()))
        .collect()
}

const KICK: &str = r#"
fn condition(p) { count("tick", "10s") >= 2 }
#{ name: "kick", select: [#{ name: "tick" }], action: "kick" }
"#;

#[test]
fn a_reload_swaps_the_rules_and_keeps_the_windows() {
    let mut engine = engine_with(&[]);
    assert_eq!(engine.rules_version(), 1);
    let out = feed_from(&mut engine, 0, &[exit("a", 1_000), exit("a", 2_000)]);
    assert!(commands(&out).is_empty());
    let sources = shipped_plus(&[("kick.rhai", KICK)], "");
    let mut out = Vec::new();
    let outcome = engine
        .reload("api", |rt| RuleSet::load_sources(rt, sources), 5, &mut out)
        .clone();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.added, ["kick"]);
    assert_eq!(engine.rules_version(), 2);
    // The two exits from before the reload still count.
    let out = feed_from(&mut engine, 2, &[exit("a", 3_000)]);
    assert_eq!(commands(&out).len(), 1);
    assert!(engine.rule_views().iter().any(|r| r.name == "kick"));
}

#[test]
fn a_broken_reload_names_file_and_line_and_the_old_rules_keep_running() {
    let mut engine = engine_with(&[]);
    let broken = "fn condition(p) { count(\"tick\", \"10s\") >= }\n#{ name: \"kick\", select: [], action: \"kick\" }";
    let sources = shipped_plus(&[("kick.rhai", broken)], "");
    let mut out = Vec::new();
    let outcome = engine
        .reload("file", |rt| RuleSet::load_sources(rt, sources), 5, &mut out)
        .clone();
    assert!(!outcome.succeeded());
    assert!(
        outcome.errors.iter().any(|e| e.starts_with("kick.rhai:1:")),
        "{:?}",
        outcome.errors
    );
    assert_eq!(outcome.version, 1);
    assert_eq!(engine.rules_version(), 1);
    assert_eq!(
        engine.last_reload().map(|r| r.trigger.as_str()),
        Some("file")
    );
    assert!(out.is_empty());
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    assert_eq!(commands(&out).len(), 1, "crash_loop still acts");
}

#[test]
fn a_removed_rule_opens_nothing_new_and_its_open_incidents_close_with_a_reason() {
    let mut engine = engine_with(&[]);
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    let id = commands(&out)[0].incident.clone();
    let sources = shipped_plus(&[], "crash_loop");
    let mut out = Vec::new();
    let outcome = engine
        .reload(
            "signal",
            |rt| RuleSet::load_sources(rt, sources),
            50,
            &mut out,
        )
        .clone();
    assert_eq!(outcome.removed, ["crash_loop"]);
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Remediating), IncidentState::Failed)]
    );
    let reason = out.iter().find_map(|o| match o {
        Output::Decision(d) if d.incident.as_deref() == Some(id.as_str()) => Some(&d.reason),
        _ => None,
    });
    assert_eq!(
        reason.map(String::as_str),
        Some("rule crash_loop was removed by a reload")
    );
    let persisted = out.iter().find_map(|o| match o {
        Output::Changelog(c) if c.subject == "a" => Some(c.value.clone().unwrap_or_default()),
        _ => None,
    });
    assert!(
        persisted.is_some_and(|value| !value.contains(&id)),
        "the changelog drops the incident"
    );
    let later = feed_from(
        &mut engine,
        3,
        &[exit("b", 4_000), exit("b", 5_000), exit("b", 6_000)],
    );
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn an_open_incident_of_a_rule_that_survives_a_reload_goes_on_to_resolve() {
    let mut engine = engine_with(&[]);
    let out = crash_loop_on(&mut engine, "a", 0);
    let sent = commands(&out);
    assert_eq!(sent.len(), 1);
    let (command, id) = (sent[0].id.clone(), sent[0].incident.clone());

    // crash_loop is edited while its restart is out, waiting for its ack.
    let edited = SHIPPED_RULES
        .iter()
        .find(|(file, _)| file.starts_with("crash_loop"))
        .map(|(_, source)| source.replace("verify_for: \"1m\"", "verify_for: \"2m\""))
        .expect("crash_loop ships");
    let mut sources = shipped_plus(&[], "crash_loop");
    sources.push(("crash_loop.rhai".to_owned(), edited));
    let mut out = Vec::new();
    let outcome = engine
        .reload(
            "file",
            |rt| RuleSet::load_sources(rt, sources),
            10,
            &mut out,
        )
        .clone();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert!(outcome.kept.iter().any(|r| r == "crash_loop"));
    assert!(transitions_of(&out, &id).is_empty(), "{out:?}");
    let open = engine.incidents(&IncidentFilter::default());
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, id);
    assert_eq!(open[0].state, IncidentState::Remediating);

    // The ack of the command sent before the swap lands on the same incident.
    let mut out = Vec::new();
    engine.on_ack(&ack(&command, AckStatus::Succeeded), 20, &mut out);
    while last_transition(&out) != Some(IncidentState::Resolved) {
        let at = engine.next_deadline().expect("verification is due");
        engine.tick(at, &mut out);
    }
    assert_eq!(
        transitions_of(&out, &id),
        [
            (Some(IncidentState::Remediating), IncidentState::Verifying),
            (Some(IncidentState::Verifying), IncidentState::Resolved)
        ]
    );
    assert!(commands(&out).is_empty(), "no second restart: {out:?}");
    assert!(engine.incidents(&IncidentFilter::default()).is_empty());
}

#[test]
fn a_removed_rule_whose_action_is_in_force_hands_its_incident_to_a_human() {
    let paired = r#"
fn condition(p) { last("load") > 50.0 }
fn clear(p) { last("load") <= 50.0 }
#{ name: "shed", select: [#{ name: "load" }], action: "shed", revert: "unshed", clear_for: "60s" }
"#;
    let mut engine = engine_with(&[("shed.rhai", paired)]);
    let load = r#"{"entity":"a","ts":1000,"kind":"metric","name":"load","value":99}"#;
    let out = feed_from(&mut engine, 0, &[load.to_owned()]);
    let sent = commands(&out);
    assert_eq!(sent.len(), 1);
    let (command, id) = (sent[0].id.clone(), sent[0].incident.clone());
    let mut out = Vec::new();
    engine.on_ack(&ack(&command, AckStatus::Succeeded), 10, &mut out);
    assert_eq!(last_transition(&out), Some(IncidentState::Mitigated));

    let sources = shipped_plus(&[], "");
    let mut out = Vec::new();
    let outcome = engine
        .reload("api", |rt| RuleSet::load_sources(rt, sources), 20, &mut out)
        .clone();
    assert_eq!(outcome.removed, ["shed"]);
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Mitigated), IncidentState::Escalated)]
    );
    let escalation = out.iter().find_map(|o| match o {
        Output::Escalation(e) => Some(e),
        _ => None,
    });
    let escalation = escalation.expect("handed to a human");
    assert_eq!(escalation.cause, EscalationCause::RuleRemoved);
    assert_eq!(escalation.incident, id);
    assert_eq!(
        escalation.reason,
        "rule shed was removed while its action was in force; nothing will revert it now"
    );
    assert_eq!(engine.stats().escalations, 1);
    // It stays open, escalated, for the human to resolve.
    let open = engine.incidents(&IncidentFilter::default());
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, IncidentState::Escalated);
    let mut out = Vec::new();
    engine
        .resolve_incident(&id, "restored the route by hand", 30, &mut out)
        .expect("an escalated incident is resolved by hand");
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Escalated), IncidentState::Resolved)]
    );
}

#[test]
fn the_ledger_counts_attempts_outcomes_and_time_to_resolve() {
    let mut engine = engine_with(&[]);
    let out = feed_from(
        &mut engine,
        0,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    let first = commands(&out)[0].id.clone();
    let id = commands(&out)[0].incident.clone();
    let mut out = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Failed), 1_000, &mut out);
    while commands(&out).is_empty() {
        let at = engine.next_deadline().expect("a retry is due");
        engine.tick(at, &mut out);
    }
    let second = commands(&out)[0].id.clone();
    let at = engine.next_deadline().unwrap_or(0);
    engine.on_ack(&ack(&second, AckStatus::Succeeded), at - 1, &mut out);
    let mut verified_at = 0;
    while last_transition(&out) != Some(IncidentState::Resolved) {
        verified_at = engine.next_deadline().expect("verification");
        engine.tick(verified_at, &mut out);
    }

    let record = &engine.ledger().rules()["crash_loop"];
    let restart = &record.actions["restart"];
    assert_eq!(
        (restart.attempts, restart.failed, restart.succeeded),
        (2, 1, 1)
    );
    assert_eq!(restart.success_rate(), Some(0.5));
    assert_eq!((record.opened, record.resolved), (1, 1));
    assert_eq!(record.resolve_times.count, 1);
    // Opened at processing time 0 (the test's clock), resolved at verified_at.
    assert_eq!(
        record.resolve_times.mean_ms(),
        u64::try_from(verified_at).ok()
    );
    // The restart resolved it, so its time to resolve is the restart's too.
    assert_eq!(restart.resolve_times, record.resolve_times);
    assert_eq!(engine.ledger().commands_by_action()["restart"], 2);
    assert_eq!(engine.ledger().acks_by_status()["failed"], 1);
    let closed = engine.incident(&id).expect("recently closed");
    assert!(!closed.open);
    let states: Vec<IncidentState> = closed.history.iter().map(|h| h.to).collect();
    assert_eq!(
        states,
        [
            IncidentState::Failing,
            IncidentState::Remediating,
            IncidentState::BackingOff,
            IncidentState::Remediating,
            IncidentState::Verifying,
            IncidentState::Resolved
        ]
    );
}

/// The shipped rules, with `extra` declaration keys for crash_loop (after its `verify_for`).
fn engine_with_crash_loop(extra: &str) -> Engine {
    let source = SHIPPED_RULES
        .iter()
        .find(|(file, _)| file.starts_with("crash_loop"))
        .map(|(_, source)| source.replace("verify_for: \"1m\",", extra))
        .expect("crash_loop ships");
    assert!(
        source.contains(extra),
        "crash_loop no longer has its verify_for"
    );
    let mut sources = shipped_plus(&[], "crash_loop");
    sources.push(("crash_loop.rhai".to_owned(), source));
    Engine::new(
        crate::EngineConfig {
            max_future_ms: i64::MAX,
            ..crate::EngineConfig::default()
        },
        |rt| RuleSet::load_sources(rt, sources),
    )
    .expect("rules load")
}

/// The shipped rules, with crash_loop's restart waiting for approval.
fn engine_with_approval() -> Engine {
    engine_with_crash_loop("verify_for: \"1m\", approval: #{ timeout: \"10m\" },")
}

fn crash_loop_on(engine: &mut Engine, entity: &str, first: i64) -> Vec<Output> {
    feed_from(
        engine,
        first,
        &[
            exit(entity, 1_000),
            exit(entity, 2_000),
            exit(entity, 3_000),
        ],
    )
}

fn incident_of(out: &[Output]) -> String {
    out.iter()
        .find_map(|o| match o {
            Output::Decision(d) if d.kind == DecisionKind::Transition => d.incident.clone(),
            _ => None,
        })
        .expect("an incident opened")
}

#[test]
fn an_action_that_needs_approval_waits_for_it_and_its_retries_do_not_ask_again() {
    let mut engine = engine_with_approval();
    let out = crash_loop_on(&mut engine, "a", 0);
    assert!(commands(&out).is_empty(), "nothing is sent before approval");
    let id = incident_of(&out);
    assert_eq!(
        transitions_of(&out, &id),
        [
            (None, IncidentState::Failing),
            (
                Some(IncidentState::Failing),
                IncidentState::AwaitingApproval
            )
        ]
    );
    assert!(matches!(
        engine.resolve_incident(&id, "", 10, &mut Vec::new()),
        Err(ControlError::FailedPrecondition(_))
    ));
    let mut out = Vec::new();
    engine
        .approve_incident(&id, "go", 100, &mut out)
        .expect("awaiting");
    let sent = commands(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attempt, 1);
    assert_eq!(sent[0].id, format!("{id}#1"));
    assert_eq!(
        transitions_of(&out, &id),
        [(
            Some(IncidentState::AwaitingApproval),
            IncidentState::Remediating
        )]
    );
    // The restart fails; its retry goes out without asking again.
    let first = sent[0].id.clone();
    let mut out = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Failed), 200, &mut out);
    while commands(&out).is_empty() {
        let at = engine.next_deadline().expect("a retry");
        engine.tick(at, &mut out);
    }
    assert_eq!(commands(&out)[0].attempt, 2);
    assert!(engine
        .approve_incident(&id, "", 0, &mut Vec::new())
        .is_err());
}

#[test]
fn a_denied_action_closes_the_incident_and_the_rule_waits_for_its_condition_to_clear() {
    let mut engine = engine_with_approval();
    let out = crash_loop_on(&mut engine, "a", 0);
    let id = incident_of(&out);
    let mut out = Vec::new();
    engine
        .deny_incident(&id, "maintenance window", 100, &mut out)
        .expect("awaiting");
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::AwaitingApproval), IncidentState::Failed)]
    );
    assert!(engine.incidents(&IncidentFilter::default()).is_empty());
    let more = feed_from(&mut engine, 10, &[exit("a", 4_000)]);
    assert!(more.is_empty(), "{more:?}");
}

#[test]
fn an_approval_nobody_gives_escalates_at_its_timeout() {
    let mut engine = engine_with_approval();
    let out = crash_loop_on(&mut engine, "a", 0);
    let id = incident_of(&out);
    let mut out = Vec::new();
    engine.tick(10 * 60 * 1_000 - 1, &mut out);
    assert!(out.is_empty());
    engine.tick(10 * 60 * 1_000, &mut out);
    assert_eq!(
        transitions_of(&out, &id),
        [(
            Some(IncidentState::AwaitingApproval),
            IncidentState::Escalated
        )]
    );
    let escalation = out.iter().find_map(|o| match o {
        Output::Escalation(e) => Some(e),
        _ => None,
    });
    assert_eq!(
        escalation.map(|e| e.cause),
        Some(EscalationCause::ApprovalTimeout)
    );
    assert!(commands(&out).is_empty());
}

#[test]
fn a_quarantine_expires_when_configured_and_automation_acts_again() {
    let mut engine = crate::tests::engine_configured(
        crate::EngineConfig {
            max_future_ms: i64::MAX,
            quarantine_expiry_ms: 600_000,
            ..crate::EngineConfig::default()
        },
        &[],
    );
    let (id, out) = escalated(&mut engine, "a");
    let escalated_at = out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Escalation(e) => Some(e.ts),
            _ => None,
        })
        .expect("escalated");
    let mut out = Vec::new();
    engine.tick(escalated_at + 599_999, &mut out);
    assert!(transitions_of(&out, &id).is_empty(), "still quarantined");
    engine.tick(escalated_at + 600_000, &mut out);
    assert_eq!(
        transitions_of(&out, &id),
        [(Some(IncidentState::Escalated), IncidentState::Failed)]
    );
    let again = feed_from(
        &mut engine,
        10,
        &[exit("a", 4_000), exit("a", 5_000), exit("a", 6_000)],
    );
    assert_eq!(commands(&again).len(), 1, "automation acts again");
}

#[test]
fn a_rule_whose_fixes_keep_failing_disables_itself_and_escalates_instead() {
    let rule = r#"
fn condition(p) { last("load") > 50.0 }
#{ name: "shed", select: [#{ name: "load" }], action: "shed",
   disable_below: #{ success_rate: 0.5, min_attempts: 2 } }
"#;
    let mut engine = engine_with(&[("shed.rhai", rule)]);
    let load = |entity: &str| {
        format!(r#"{{"entity":"{entity}","ts":1000,"kind":"metric","name":"load","value":99}}"#)
    };
    for (offset, entity) in ["a", "b"].iter().enumerate() {
        let out = feed_from(&mut engine, offset as i64, &[load(entity)]);
        let sent = commands(&out);
        assert_eq!(sent.len(), 1, "{entity} is acted on");
        let mut out = Vec::new();
        engine.on_ack(&ack(&sent[0].id, AckStatus::Failed), 10, &mut out);
    }
    let out = feed_from(&mut engine, 2, &[load("c")]);
    assert!(
        commands(&out).is_empty(),
        "two failures of two: no more acting"
    );
    let escalation = out.iter().find_map(|o| match o {
        Output::Escalation(e) => Some(e),
        _ => None,
    });
    let escalation = escalation.expect("escalated instead");
    assert_eq!(escalation.cause, EscalationCause::RuleDisabled);
    assert!(
        escalation.reason.contains("0 of its last 2"),
        "{}",
        escalation.reason
    );
}

/// crash_loop with canary waves over `service`, as the golden canary cases run it.
fn engine_with_canary() -> Engine {
    engine_with_crash_loop(
        "verify_for: \"5s\", hold_for: \"2s\", canary: #{ group: \"service\", waves: [0.25, 1.0], min_failing: 3 },",
    )
}

fn pod_exit(pod: u32, ts: i64) -> String {
    format!(
        r#"{{"entity":"pod-{pod}","ts":{ts},"kind":"event","name":"process_exit","labels":{{"service":"checkout"}}}}"#
    )
}

#[test]
fn a_canary_rollout_resumes_from_the_changelog_at_the_wave_it_reached() {
    let mut before = engine_with_canary();
    let events: Vec<String> = [1_000, 2_000, 3_000, 4_500, 6_000]
        .iter()
        .flat_map(|&ts| (1..=4).map(move |pod| pod_exit(pod, ts)))
        .collect();
    let out = feed_from(&mut before, 0, &events);
    assert_eq!(commands(&out).len(), 1, "one canary acted on");
    let records: Vec<(String, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Changelog(c) => c.value.clone().map(|v| (c.subject.clone(), v)),
            _ => None,
        })
        .collect();
    assert!(records
        .iter()
        .any(|(subject, _)| subject == "#rollout/crash_loop/service=checkout"));

    // A new owner restores the partition, then the held members fail again.
    let mut after = engine_with_canary();
    for (subject, value) in &records {
        after
            .restore(crate::PartitionId::default(), subject, value.as_bytes())
            .expect("restores");
    }
    let again: Vec<String> = [20_000, 21_000, 22_500, 23_500, 25_000]
        .iter()
        .flat_map(|&ts| (2..=4).map(move |pod| pod_exit(pod, ts)))
        .collect();
    let out = feed_from(&mut after, 100, &again);
    assert!(
        commands(&out).is_empty(),
        "the canary is still out: the wave stays closed: {:?}",
        commands(&out)
    );
}

/// Open incidents by state, counted the long way: from the incidents themselves.
fn counted(engine: &Engine) -> std::collections::BTreeMap<String, u64> {
    let filter = IncidentFilter {
        limit: usize::MAX,
        ..IncidentFilter::default()
    };
    let mut counts = std::collections::BTreeMap::new();
    for incident in engine.incidents(&filter) {
        *counts
            .entry(incident.state.as_str().to_owned())
            .or_default() += 1;
    }
    counts
}

#[test]
fn incidents_by_state_follow_every_kind_of_change() {
    let mut engine = engine_with_approval();
    let mut changelog = Vec::new();
    let open = |engine: &mut Engine, entity: &str, first: i64, changelog: &mut Vec<Output>| {
        let out = crash_loop_on(engine, entity, first);
        let id = incident_of(&out);
        changelog.extend(out);
        id
    };
    open(&mut engine, "waits", 0, &mut changelog);
    let approved = open(&mut engine, "approved", 10, &mut changelog);
    engine
        .approve_incident(&approved, "", 100, &mut changelog)
        .expect("awaiting");
    let denied = open(&mut engine, "denied", 20, &mut changelog);
    engine
        .deny_incident(&denied, "", 100, &mut changelog)
        .expect("awaiting");
    let before = engine.incidents_by_state();
    assert_eq!(before, counted(&engine));
    assert_eq!(before["awaiting_approval"], 1);
    assert_eq!(before["remediating"], 1);

    // Restored into another engine from the changelog records, in order.
    let mut restored = engine_with_approval();
    for output in &changelog {
        if let Output::Changelog(c) = output {
            if let Some(value) = &c.value {
                restored
                    .restore(crate::PartitionId::default(), &c.subject, value.as_bytes())
                    .expect("restores");
            }
        }
    }
    assert_eq!(restored.incidents_by_state(), before);
    assert_eq!(restored.incidents_by_state(), counted(&restored));

    // The rule is reloaded away: its incidents close.
    let sources = shipped_plus(&[], "crash_loop");
    restored.reload(
        "api",
        |rt| RuleSet::load_sources(rt, sources),
        200,
        &mut Vec::new(),
    );
    assert!(restored.incidents_by_state().is_empty());
    assert_eq!(restored.incidents_by_state(), counted(&restored));

    // A partition revoked takes its incidents with it.
    engine.revoke(crate::PartitionId::default());
    assert!(engine.incidents_by_state().is_empty());
}

#[test]
fn an_incident_restored_from_the_changelog_counts_its_time_to_resolve_from_when_it_opened() {
    const OPENED_AT: i64 = 5_000;
    let mut before = engine_with(&[]);
    let mut out = Vec::new();
    for (offset, ts) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        before
            .on_message(
                crate::tests::at(offset as i64),
                None,
                exit("a", ts).as_bytes(),
                None,
                OPENED_AT,
                &mut out,
            )
            .expect("valid");
    }
    let command = commands(&out)[0].id.clone();
    // The process dies mid-remediation; another restores the partition from the changelog.
    let mut after = engine_with(&[]);
    for output in &out {
        if let Output::Changelog(record) = output {
            if let Some(value) = &record.value {
                after
                    .restore(
                        crate::PartitionId::default(),
                        &record.subject,
                        value.as_bytes(),
                    )
                    .expect("restores");
            }
        }
    }
    let mut out = Vec::new();
    after.on_ack(&ack(&command, AckStatus::Succeeded), 20_000, &mut out);
    let mut resolved_at = 0;
    while last_transition(&out) != Some(IncidentState::Resolved) {
        resolved_at = after.next_deadline().expect("verification");
        after.tick(resolved_at, &mut out);
    }
    let record = &after.ledger().rules()["crash_loop"];
    assert_eq!(
        record.resolve_times.count, 1,
        "the restart does not lose it"
    );
    assert_eq!(
        record.resolve_times.mean_ms(),
        u64::try_from(resolved_at - OPENED_AT).ok()
    );
    assert_eq!(
        record.actions["restart"].resolve_times.count, 1,
        "the action that resolved it counts it too"
    );
}

const STORMY: &str = r#"
fn condition(p) { count("crash", "60s") >= 3 }
#{ name: "stormy", select: [#{ kind: "event", name: "crash" }], action: "restart",
   retry: #{ attempts: 3, backoff: "10s", jitter: 0.0 },
   blast_radius: #{ group: "service", storm_share: 0.5 } }
"#;

fn crash(entity: &str, ts: i64) -> String {
    format!(
        r#"{{"entity":"{entity}","ts":{ts},"kind":"event","name":"crash","labels":{{"service":"checkout"}}}}"#
    )
}

#[test]
fn an_operator_resolves_a_storm_and_the_retries_it_held_are_sent() {
    let mut engine = engine_with(&[("stormy.rhai", STORMY)]);
    // pod-1 fails alone and is restarted; the restart fails.
    let out = feed_from(
        &mut engine,
        0,
        &[
            crash("pod-3", 500),
            crash("pod-1", 1_000),
            crash("pod-1", 2_000),
            crash("pod-1", 3_000),
        ],
    );
    let first = commands(&out)[0].id.clone();
    let mut out = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Failed), 5_000, &mut out);
    // pod-2 fails too: 2 of 3 is a storm, and pod-1's retry, due at 15 s, is held.
    out.extend(feed_from(
        &mut engine,
        4,
        &[
            crash("pod-2", 6_000),
            crash("pod-2", 7_000),
            crash("pod-2", 8_000),
        ],
    ));
    engine.tick(15_000, &mut out);
    engine.tick(20_000, &mut out);
    assert!(commands(&out).is_empty(), "{out:?}");
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Decision(d) if d.to == Some(IncidentState::BackingOff) && d.reason.starts_with("storm")
    )));

    let mut out = Vec::new();
    engine
        .resolve_incident(
            "storm/stormy/service=checkout",
            "the database is back",
            20_000,
            &mut out,
        )
        .expect("a storm to resolve");
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Decision(d) if d.incident.as_deref() == Some("storm/stormy/service=checkout")
            && d.to == Some(IncidentState::Resolved)
            && d.reason.contains("the database is back")
    )));
    let due = engine.next_deadline().expect("the held retry is due");
    engine.tick(due, &mut out);
    let sent = commands(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!((sent[0].entity.as_str(), sent[0].attempt), ("pod-1", 2));
    assert!(
        engine.ledger().rules()["stormy"].resolved == 0,
        "a storm is no incident of its rule"
    );

    let again = engine
        .resolve_incident("storm/stormy/service=checkout", "", 21_000, &mut out)
        .expect_err("already resolved");
    assert!(matches!(again, ControlError::NotFound(_)), "{again}");
}

fn escalations(out: &[Output]) -> Vec<crate::wire::Escalation> {
    out.iter()
        .filter_map(|o| match o {
            Output::Escalation(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// `subject`'s latest changelog record in `out`.
fn latest_record(out: &[Output], subject: &str) -> String {
    out.iter()
        .rev()
        .find_map(|o| match o {
            Output::Changelog(c) if c.subject == subject => c.value.clone(),
            _ => None,
        })
        .expect("a changelog record")
}

fn restored_from(record: &str, subject: &str) -> Engine {
    let mut engine = engine_with(&[]);
    engine
        .restore(crate::PartitionId::default(), subject, record.as_bytes())
        .expect("restores");
    engine
}

#[test]
fn an_escalation_not_known_delivered_is_published_again_by_whoever_restores_it() {
    let mut engine = engine_with(&[]);
    let (_, out) = escalated(&mut engine, "a");
    let published = escalations(&out);
    assert_eq!(published.len(), 1);

    // The process died after the incident's changelog record was delivered; its escalation
    // may not have been. The next owner publishes it again, the same, once.
    let mut next = restored_from(&latest_record(&out, "a"), "a");
    let mut again = Vec::new();
    next.tick(500_000, &mut again);
    assert_eq!(escalations(&again), published);
    next.tick(500_001, &mut again);
    assert_eq!(escalations(&again).len(), 1, "once");
    assert_eq!(
        next.ledger().escalations_by_cause().get("exhausted"),
        None,
        "counted where it was made"
    );

    // Once the driver confirms delivery, the changelog says so, and nobody publishes it again.
    let mut confirmed = Vec::new();
    engine.confirm_delivered(&mut confirmed);
    let record = latest_record(&confirmed, "a");
    let mut later = restored_from(&record, "a");
    let mut nothing = Vec::new();
    later.tick(500_000, &mut nothing);
    assert!(escalations(&nothing).is_empty(), "{nothing:?}");
    assert_eq!(
        later.incidents_by_state().get("escalated"),
        Some(&1),
        "still escalated"
    );
}
