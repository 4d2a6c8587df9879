use crate::telemetry::{decode, DecodeError, Kind};
use crate::window::SeriesWindow;
use crate::wire::{AckStatus, DecisionKind, IncidentState, Output};
use crate::{Ack, Engine, EngineConfig, RecordPosition};
use salve_rules::{RuleSet, SHIPPED_RULES};
use std::borrow::Cow;

const MB: usize = 1024 * 1024;

#[test]
fn decodes_a_full_event_borrowing_its_strings() {
    let bytes = br#"{"v":1,"entity":"checkout/pod-1","ts":1700000000000,"kind":"metric","name":"latency_ms","value":12.5,"labels":{"service":"checkout","zone":"a"},"attrs":{"x":[1,2]}}"#;
    let event = decode(bytes, Some(b"checkout/pod-1"), MB).expect("valid");
    assert!(matches!(event.entity, Cow::Borrowed("checkout/pod-1")));
    assert_eq!(event.ts_ms, Some(1_700_000_000_000));
    assert_eq!(event.kind, Kind::Metric);
    assert_eq!(event.value, Some(12.5));
    assert_eq!(event.labels.get("service"), Some("checkout"));
    assert!(event.labels.is_borrowed());
    let within = bytes.as_ptr_range();
    assert!(event
        .labels
        .iter()
        .all(|(k, v)| within.contains(&k.as_ptr()) && within.contains(&v.as_ptr())));
    assert_eq!(event.attrs.map(|a| a.get()), Some(r#"{"x":[1,2]}"#));
}

#[test]
fn labels_with_escapes_are_unescaped_and_keep_their_order() {
    let bytes = br#"{"entity":"a","kind":"event","name":"x","labels":{"z":"1","q\"uote":"tab\tbed","a":"\u00e9"}}"#;
    let event = decode(bytes, None, MB).expect("valid");
    assert!(!event.labels.is_borrowed());
    let labels: Vec<_> = event.labels.iter().collect();
    assert_eq!(
        labels,
        [("z", "1"), ("q\"uote", "tab\tbed"), ("a", "\u{e9}")]
    );
    assert_eq!(event.labels.get("q\"uote"), Some("tab\tbed"));
    assert_eq!(event.labels.len(), 3);
}

#[test]
fn decodes_rfc3339_and_health() {
    let bytes = br#"{"entity":"db-1","ts":"2023-11-14T22:13:20.250Z","kind":"health","name":"liveness","status":"fail"}"#;
    let event = decode(bytes, None, MB).expect("valid");
    assert_eq!(event.ts_ms, Some(1_700_000_000_250));
    assert_eq!(event.value, Some(0.0));
}

#[test]
fn rejects_bad_input_with_a_reason_that_names_the_problem() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"\x00\xff garbage", "not_json", "not a JSON object"),
        (br#"{"entity":"a","kind":"ev"#, "not_json", "EOF"),
        (br#"[1,2]"#, "not_json", "expected an object"),
        (
            br#"{"kind":"event","name":"x"}"#,
            "missing_field",
            "`entity`",
        ),
        (br#"{"entity":"a","name":"x"}"#, "missing_field", "`kind`"),
        (
            br#"{"entity":"a","kind":"metric","name":"x"}"#,
            "missing_field",
            "`value`",
        ),
        (
            br#"{"entity":"a","kind":"health","name":"x"}"#,
            "missing_field",
            "`status`",
        ),
        (
            br#"{"entity":7,"kind":"event","name":"x"}"#,
            "invalid_field",
            "`entity`: expected a string, got a number",
        ),
        (
            br#"{"entity":"a","kind":"metric","name":"x","value":"12"}"#,
            "invalid_field",
            "`value`",
        ),
        (
            br#"{"entity":"a","kind":"sometimes","name":"x"}"#,
            "invalid_field",
            "`kind`",
        ),
        (
            br#"{"entity":"a","kind":"event","name":"x","labels":{"k":1}}"#,
            "invalid_field",
            "`labels`",
        ),
        (
            br#"{"entity":"a","kind":"event","name":"x","ts":"yesterday"}"#,
            "invalid_field",
            "`ts`",
        ),
        (
            br#"{"v":2,"entity":"a","kind":"event","name":"x"}"#,
            "invalid_field",
            "version 2",
        ),
        (
            br#"{"entity":"","kind":"event","name":"x"}"#,
            "invalid_field",
            "`entity`",
        ),
    ];
    for (bytes, code, needle) in cases {
        let error = decode(bytes, None, MB).expect_err("invalid");
        assert_eq!(error.code(), *code, "{error}");
        assert!(
            error.to_string().contains(needle),
            "{error} should mention {needle}"
        );
    }
}

#[test]
fn rejects_oversized_messages_before_parsing() {
    let big = vec![b' '; 2048];
    let error = decode(&big, None, 1024).expect_err("too large");
    assert_eq!(
        error,
        DecodeError::TooLarge {
            size: 2048,
            limit: 1024
        }
    );
}

#[test]
fn rejects_a_key_that_names_another_entity() {
    let bytes = br#"{"entity":"a","kind":"event","name":"x"}"#;
    let error = decode(bytes, Some(b"b"), MB).expect_err("mismatch");
    assert_eq!(error.code(), "key_mismatch");
}

#[test]
fn decoding_never_panics_on_arbitrary_bytes() {
    // A cheap, deterministic stand-in for the fuzz target: mutate a valid event byte by byte.
    let base = br#"{"entity":"a/b","ts":"2023-11-14T22:13:20Z","kind":"metric","name":"x","value":1.5,"labels":{"k":"v"}}"#;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20_000 {
        let mut bytes = base.to_vec();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] = (seed >> 32) as u8;
        }
        let cut = (seed >> 40) as usize % (bytes.len() + 1);
        let _ = decode(&bytes[..cut], None, MB);
        let _ = decode(&bytes, None, MB);
    }
}

#[test]
fn windows_cover_the_half_open_interval_ending_now() {
    let mut w = SeriesWindow::new("x".into());
    for ts in [0, 30_000, 60_000] {
        w.record(ts, 1.0, 1_000);
    }
    assert_eq!(
        w.aggregate(60_000, 60_000).count,
        2,
        "the sample at now-W is outside"
    );
    assert_eq!(
        w.aggregate(59_999, 60_000).count,
        2,
        "the sample after now is outside"
    );
    assert_eq!(w.aggregate(60_000, 60_001).count, 3);
}

#[test]
fn windows_aggregate_out_of_order_samples_like_sorted_ones() {
    let samples = [
        (5_000, 3.0),
        (1_000, 1.0),
        (3_000, 7.0),
        (1_500, 2.0),
        (9_000, 4.0),
    ];
    let mut shuffled = SeriesWindow::new("x".into());
    for (ts, v) in samples {
        shuffled.record(ts, v, 1_000);
    }
    let mut sorted_samples = samples;
    sorted_samples.sort_by_key(|(ts, _)| *ts);
    let mut sorted = SeriesWindow::new("x".into());
    for (ts, v) in sorted_samples {
        sorted.record(ts, v, 1_000);
    }
    for window in [1_000, 4_000, 10_000] {
        assert_eq!(
            shuffled.aggregate(9_000, window),
            sorted.aggregate(9_000, window)
        );
    }
    let all = sorted.aggregate(9_000, 10_000);
    assert_eq!((all.count, all.sum, all.min, all.max), (5, 17.0, 1.0, 7.0));
    assert_eq!(shuffled.last(), Some((9_000, 4.0)));
}

#[test]
fn windows_expire_old_buckets() {
    let mut w = SeriesWindow::new("x".into());
    w.record(0, 1.0, 1_000);
    w.record(100_000, 1.0, 1_000);
    w.expire(100_000, 60_000);
    assert_eq!(w.aggregate(100_000, 1_000_000).count, 1);
}

/// An engine with the shipped rules and `extra`. It accepts events from any time, because these
/// tests feed event time with a processing clock of 0; the future check has its own test.
pub(crate) fn engine_with(extra: &[(&str, &str)]) -> Engine {
    engine_accepting_any_time(extra)
}

pub(crate) fn exit(entity: &str, ts: i64) -> String {
    format!(r#"{{"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit"}}"#)
}

pub(crate) fn at(offset: i64) -> RecordPosition {
    RecordPosition {
        offset,
        ..RecordPosition::default()
    }
}

pub(crate) fn feed(engine: &mut Engine, events: &[String]) -> Vec<Output> {
    feed_from(engine, 0, events)
}

/// Feeds `events` as if they sat at consecutive offsets from `first`.
pub(crate) fn feed_from(engine: &mut Engine, first: i64, events: &[String]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        engine
            .on_message(
                at(first + i as i64),
                None,
                event.as_bytes(),
                None,
                0,
                &mut out,
            )
            .expect("valid");
    }
    out
}

pub(crate) fn commands(out: &[Output]) -> Vec<&crate::Command> {
    out.iter()
        .filter_map(|o| match o {
            Output::Command(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn three_exits_within_a_minute_issue_one_restart_with_evidence() {
    let mut engine = engine_with(&[]);
    let out = feed(
        &mut engine,
        &[
            exit("checkout/pod-1", 1_000),
            exit("checkout/pod-1", 20_000),
            exit("checkout/pod-1", 40_000),
            exit("checkout/pod-1", 45_000),
        ],
    );
    let cmds = commands(&out);
    assert_eq!(cmds.len(), 1, "the 4th exit joins the open incident");
    let cmd = cmds[0];
    assert_eq!(cmd.action, "restart");
    assert_eq!(cmd.entity, "checkout/pod-1");
    assert_eq!(
        cmd.id, "crash_loop/checkout/pod-1@0:0:2#1",
        "the third record opened it"
    );
    assert_eq!(cmd.expires_at - cmd.issued_at, 30_000);
    assert!(
        cmd.reason.contains("count(process_exit, 60s) = 3"),
        "{}",
        cmd.reason
    );
    let verdict = out.iter().find_map(|o| match o {
        Output::Decision(d) if d.kind == DecisionKind::Verdict => Some(d),
        _ => None,
    });
    let verdict = verdict.expect("a verdict");
    assert_eq!(verdict.evidence[0].value, Some(3.0));
}

#[test]
fn exits_spread_over_more_than_a_minute_issue_nothing() {
    let mut engine = engine_with(&[]);
    let out = feed(
        &mut engine,
        &[
            exit("a", 0),
            exit("a", 30_000),
            exit("a", 60_000),
            exit("b", 60_000),
        ],
    );
    assert!(commands(&out).is_empty());
    assert_eq!(engine.stats().rule_evaluations, 4);
}

#[test]
fn redelivered_records_give_the_same_command_id_whatever_the_clock() {
    let events = [exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)];
    let first = commands(&feed_from(&mut engine_with(&[]), 500, &events))[0]
        .id
        .clone();
    // Another process, later, with another entity's newer event before these on the partition.
    let mut engine = engine_with(&[]);
    let mut out = Vec::new();
    engine
        .on_message(
            at(10),
            None,
            exit("b", 90_000).as_bytes(),
            None,
            777_777,
            &mut out,
        )
        .expect("valid");
    let second = feed_from(&mut engine, 500, &events);
    let second = commands(&second);
    assert_eq!(second.len(), 1);
    assert_eq!(first, second[0].id);
}

#[test]
fn a_new_incident_never_reuses_an_old_command_id() {
    // Resolved at once, then failing again with no newer event time: the ids must differ,
    // or an actuator that dedups by id would skip the second restart.
    let mut engine = engine_with(&[]);
    let out = feed(
        &mut engine,
        &[exit("z", 3_000), exit("z", 3_000), exit("z", 3_000)],
    );
    let first = commands(&out)[0].id.clone();
    let mut acked = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Succeeded), 0, &mut acked);
    engine.tick(60_000, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Resolved));
    let later: Vec<String> = [70_000, 71_000, 72_000]
        .iter()
        .map(|&ts| exit("z", ts))
        .collect();
    let again = feed_from(&mut engine, 3, &later);
    let second = commands(&again)[0].id.clone();
    assert_ne!(first, second);
}

#[test]
fn rules_cannot_keep_state_in_their_params() {
    let counter = "fn condition(p) { p.n += 1; p.n >= 2 } #{ name: \"counter\", select: [#{ name: \"tick\" }], params: #{ n: 0 }, action: \"a\" }";
    let mut engine = engine_with(&[("counter.rhai", counter)]);
    let tick = |e: &str| format!(r#"{{"entity":"{e}","ts":1,"kind":"event","name":"tick"}}"#);
    let out = feed(&mut engine, &[tick("a"), tick("b"), tick("c")]);
    assert!(
        commands(&out).is_empty(),
        "each call sees the declared params"
    );
    assert_eq!(engine.stats().rule_evaluations, 3);
}

#[test]
fn a_window_shorter_than_the_resolution_is_an_error() {
    // Written out, it is refused at load (see a_window_longer_than_max_window...); computed,
    // the call itself refuses it.
    let short = "fn condition(p) { count(\"tick\", half_a_second()) > 0 } fn half_a_second() { \"500ms\" } #{ name: \"short\", select: [#{ name: \"tick\" }], action: \"a\" }";
    let literal = short.replacen("half_a_second()", "\"500ms\"", 1);
    let sources = vec![("short.rhai".to_owned(), literal)];
    let err = Engine::new(EngineConfig::default(), |rt| {
        RuleSet::load_sources(rt, sources)
    })
    .expect_err("refused at load");
    assert!(
        err.0[0].message.contains("shorter than engine.resolution"),
        "{err}"
    );
    let mut engine = engine_with(&[("short.rhai", short)]);
    feed(
        &mut engine,
        &[r#"{"entity":"a","ts":1,"kind":"event","name":"tick"}"#.to_owned()],
    );
    assert_eq!(engine.stats().rule_errors, 1);
}

#[test]
fn timestamps_in_micro_or_nanoseconds_are_rejected() {
    for ts in ["1795514420500000", "1795514420500000000", "-5"] {
        let bytes = format!(r#"{{"entity":"a","ts":{ts},"kind":"event","name":"x"}}"#);
        let error = decode(bytes.as_bytes(), None, MB).expect_err("implausible ts");
        assert!(error.to_string().contains("`ts`"), "{error}");
    }
}

pub(crate) fn ack(command_id: &str, status: AckStatus) -> Ack {
    Ack {
        v: None,
        command_id: command_id.into(),
        status,
        detail: Some("done".into()),
        ts: None,
        actuator: Some("test".into()),
    }
}

pub(crate) fn last_transition(out: &[Output]) -> Option<IncidentState> {
    out.iter().rev().find_map(|o| match o {
        Output::Decision(d) if d.kind == DecisionKind::Transition => d.to,
        _ => None,
    })
}

#[test]
fn acks_resolve_or_fail_the_attempt() {
    // crash_loop verifies a success, and retries a failure after a backoff.
    for (status, expected) in [
        (AckStatus::Succeeded, IncidentState::Verifying),
        (AckStatus::Failed, IncidentState::BackingOff),
        (AckStatus::Rejected, IncidentState::BackingOff),
    ] {
        let mut engine = engine_with(&[]);
        let out = feed(
            &mut engine,
            &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
        );
        let id = commands(&out)[0].id.clone();
        let mut out = Vec::new();
        engine.on_ack(&ack(&id, AckStatus::Received), 5, &mut out);
        assert_eq!(last_transition(&out), None, "received changes no state");
        engine.on_ack(&ack(&id, status), 10, &mut out);
        assert_eq!(last_transition(&out), Some(expected));
        engine.on_ack(&ack(&id, status), 11, &mut out);
        assert_eq!(
            engine.stats().acks_unmatched,
            1,
            "a second final ack matches nothing"
        );
        engine.tick(1_000_000, &mut out);
        assert_eq!(
            engine.stats().attempts_timed_out,
            0,
            "a closed attempt cannot time out"
        );
    }
}

#[test]
fn no_ack_before_the_deadline_fails_the_attempt_which_is_retried_then_escalated() {
    let mut engine = engine_with(&[]);
    let mut out = Vec::new();
    for ts in [1_000, 2_000, 3_000] {
        engine
            .on_message(at(ts), None, exit("a", ts).as_bytes(), None, 100, &mut out)
            .expect("valid");
    }
    assert_eq!(engine.next_deadline(), Some(30_100));
    let mut out = Vec::new();
    engine.tick(30_099, &mut out);
    assert!(out.is_empty());
    engine.tick(30_100, &mut out);
    assert_eq!(last_transition(&out), Some(IncidentState::BackingOff));
    assert_eq!(engine.stats().attempts_timed_out, 1);
    // crash_loop tries 3 times, 10 s then 20 s apart (plus up to 10% jitter), 30 s each.
    let mut now = 30_100;
    while let Some(at) = engine.next_deadline() {
        now = at;
        engine.tick(now, &mut out);
    }
    assert!(now < 30_100 + 11_000 + 30_000 + 22_000 + 30_000 + 1);
    let sent: Vec<u32> = commands(&out).iter().map(|c| c.attempt).collect();
    assert_eq!(sent, [2, 3], "two retries");
    assert_eq!(last_transition(&out), Some(IncidentState::Escalated));
    let escalations: Vec<&crate::wire::Escalation> = out
        .iter()
        .filter_map(|o| match o {
            Output::Escalation(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].attempts, 3);
    // The escalated incident stays open: more exits join it, and nothing is sent.
    let still = feed_from(&mut engine, 3, &[exit("a", 4_000)]);
    assert!(commands(&still).is_empty());
}

const TRUSTING: &str = r#"
fn condition(p) { count("tick", "10s") >= 2 }
#{ name: "trusting", select: [#{ name: "tick" }], action: "kick" }
"#;

fn tick_of(entity: &str, ts: i64) -> String {
    format!(r#"{{"entity":"{entity}","ts":{ts},"kind":"event","name":"tick"}}"#)
}

#[test]
fn after_an_unverified_success_a_rule_re_arms_only_once_its_condition_clears() {
    let mut engine = engine_with(&[("trusting.rhai", TRUSTING)]);
    let out = feed(&mut engine, &[tick_of("a", 0), tick_of("a", 1_000)]);
    let first = commands(&out)[0].id.clone();
    let mut acked = Vec::new();
    engine.on_ack(&ack(&first, AckStatus::Succeeded), 0, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Resolved));
    let still = feed_from(&mut engine, 2, &[tick_of("a", 2_000), tick_of("a", 3_000)]);
    assert!(
        commands(&still).is_empty(),
        "the condition never cleared: no second incident on every further event"
    );
    assert_eq!(engine.stats().verdicts_latched, 2);
    // Once the ticks age out of the window the rule re-arms, and acts on a new burst.
    let later = [tick_of("a", 20_000), tick_of("a", 21_000)];
    let again = feed_from(&mut engine, 4, &later);
    assert_eq!(
        commands(&again).len(),
        1,
        "re-armed after the condition cleared"
    );
}

#[test]
fn a_runaway_rule_is_stopped_and_the_others_still_act() {
    let spin = "fn condition(p) { loop {} } #{ name: \"spin\", select: [#{ kind: \"event\" }], action: \"none\" }";
    let mut engine = engine_with(&[("spin.rhai", spin)]);
    let out = feed(
        &mut engine,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    assert_eq!(commands(&out).len(), 1);
    assert_eq!(engine.stats().rule_budget_stops, 3);
}

#[test]
fn selectors_keep_rules_away_from_events_they_do_not_name() {
    let mut engine = engine_with(&[]);
    let other = r#"{"entity":"a","kind":"metric","name":"cpu","value":0.5}"#.to_owned();
    feed(&mut engine, &[other.clone(), other]);
    assert_eq!(engine.stats().rule_evaluations, 0);
}

#[test]
fn label_selectors_must_match() {
    let only_primary = "fn condition(p) { true } #{ name: \"p\", select: [#{ name: \"liveness\", labels: #{ role: \"primary\" } }], action: \"promote\" }";
    let mut engine = engine_with(&[("p.rhai", only_primary)]);
    let replica = r#"{"entity":"db-2","kind":"health","name":"liveness","status":"fail","labels":{"role":"replica"}}"#;
    let primary = r#"{"entity":"db-1","kind":"health","name":"liveness","status":"fail","labels":{"role":"primary"}}"#;
    let out = feed(&mut engine, &[replica.to_owned(), primary.to_owned()]);
    let cmds = commands(&out);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].entity, "db-1");
}

#[test]
fn max_future_may_not_exceed_the_allowed_lateness() {
    let config = EngineConfig {
        max_future_ms: 120_000,
        ..EngineConfig::default()
    };
    let error = config.validate().expect_err("refused").to_string();
    assert!(error.contains("engine.max_future"), "{error}");
}

#[test]
fn zero_limits_are_refused_because_rhai_reads_zero_as_unlimited() {
    let mut config = EngineConfig::default();
    config.limits.max_operations = 0;
    let error = config.validate().expect_err("zero").to_string();
    assert!(error.contains("engine.limits.max_operations"), "{error}");
}

#[test]
fn ack_details_keep_their_case() {
    let mut engine = engine_with(&[]);
    let out = feed(
        &mut engine,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    let id = commands(&out)[0].id.clone();
    let mut out = Vec::new();
    engine.on_ack(
        &Ack {
            detail: Some("Pod DELETED".into()),
            ..ack(&id, AckStatus::Failed)
        },
        1,
        &mut out,
    );
    let reasons: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Decision(d) => Some(d.reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("Pod DELETED")),
        "{reasons:?}"
    );
}

#[test]
fn engine_config_names_the_bad_key() {
    let error = toml_like_config("resolution = \"soon\"");
    assert!(error.contains("invalid duration"), "{error}");
    let error = toml_like_config("resolutoin = \"1s\"");
    assert!(error.contains("resolutoin"), "{error}");
}

fn toml_like_config(text: &str) -> String {
    // serde_json stands in for TOML here: the keys and checks are the same.
    let (key, value) = text.split_once(" = ").expect("key = value");
    let json = format!("{{\"{key}\": {value}}}");
    serde_json::from_str::<EngineConfig>(&json)
        .expect_err("invalid")
        .to_string()
}

#[test]
fn idle_entities_are_forgotten_after_the_ttl_unless_an_incident_is_open() {
    let mut engine = engine_with(&[]);
    let tick = |e: &str, ts: i64| {
        format!(r#"{{"entity":"{e}","ts":{ts},"kind":"metric","name":"cpu","value":0.5}}"#)
    };
    // "crashing" has an open incident; "idle" just stops reporting; "busy" keeps reporting.
    let mut events = vec![
        exit("crashing", 0),
        exit("crashing", 1),
        exit("crashing", 2),
        tick("idle", 0),
    ];
    for minute in 0..=70 {
        events.push(tick("busy", minute * 60_000));
    }
    feed(&mut engine, &events);
    assert_eq!(
        engine.stats().entities_expired,
        1,
        "only the idle entity went"
    );
    assert_eq!(engine.entity_count(), 2);
}

const SLOW: &str = "fn condition(p) { max(\"response_ms\", \"10s\") > 250.0 } #{ name: \"slow\", select: [#{ name: \"response_ms\" }], action: \"reroute\", hold_for: \"30s\" }";

fn latency(ts: i64, value: f64) -> String {
    format!(
        r#"{{"entity":"api-1","ts":{ts},"kind":"metric","name":"response_ms","value":{value}}}"#
    )
}

fn verdicts(out: &[Output]) -> Vec<crate::wire::Verdict> {
    out.iter()
        .filter_map(|o| match o {
            Output::Decision(d) if d.kind == DecisionKind::Verdict => d.verdict,
            _ => None,
        })
        .collect()
}

#[test]
fn a_condition_must_hold_for_its_hold_for_before_salve_acts() {
    use crate::wire::Verdict;
    let mut engine = engine_with(&[("slow.rhai", SLOW)]);
    let early = feed(
        &mut engine,
        &[
            latency(0, 300.0),
            latency(10_000, 300.0),
            latency(29_999, 300.0),
        ],
    );
    assert_eq!(
        verdicts(&early),
        [Verdict::Pending],
        "one pending verdict, then silence"
    );
    assert!(commands(&early).is_empty());
    let due = feed_from(&mut engine, 3, &[latency(30_000, 300.0)]);
    assert_eq!(verdicts(&due), [Verdict::Failure]);
    assert_eq!(commands(&due)[0].action, "reroute");
    assert_eq!(engine.stats().verdicts_pending, 1);
}

#[test]
fn a_condition_that_clears_within_its_hold_for_is_a_transient() {
    use crate::wire::Verdict;
    let mut engine = engine_with(&[("slow.rhai", SLOW)]);
    let out = feed(
        &mut engine,
        &[
            latency(0, 300.0),
            latency(5_000, 400.0),
            latency(20_000, 100.0),
            latency(40_000, 300.0),
        ],
    );
    assert_eq!(
        verdicts(&out),
        [Verdict::Pending, Verdict::Transient, Verdict::Pending]
    );
    assert!(commands(&out).is_empty(), "a transient is never acted on");
    assert_eq!(engine.stats().verdicts_transient, 1);
    // The second spike is timed from its own start, not the first one's.
    let later = feed_from(&mut engine, 4, &[latency(69_999, 300.0)]);
    assert!(commands(&later).is_empty());
    let due = feed_from(&mut engine, 5, &[latency(70_000, 300.0)]);
    assert_eq!(commands(&due).len(), 1);
}

#[test]
fn host_functions_win_over_rhai_builtins_of_the_same_name_for_every_window_spelling() {
    // Rhai has a string min/max(a, b): with a catch-all window parameter it would be chosen,
    // and `min("response_ms", "10s")` would be a string that compares false with any number.
    for window in ["\"10s\"", "10", "10.0"] {
        let rule = format!(
            "fn condition(p) {{ min(\"response_ms\", {window}) > 200.0 && max(\"response_ms\", {window}) < 400.0 }} #{{ name: \"band\", select: [#{{ name: \"response_ms\" }}], action: \"a\" }}"
        );
        let mut engine = engine_with(&[("band.rhai", rule.as_str())]);
        let out = feed(&mut engine, &[latency(0, 300.0)]);
        assert_eq!(commands(&out).len(), 1, "window {window}");
    }
}

#[test]
fn events_later_than_the_allowed_lateness_are_refused_and_counted() {
    let mut engine = engine_with(&[]);
    feed(&mut engine, &[exit("a", 100_000), exit("a", 150_000)]);
    let mut out = Vec::new();
    // 60 s behind the newest is allowed; 60.001 s is not.
    engine
        .on_message(at(2), None, exit("a", 90_000).as_bytes(), None, 0, &mut out)
        .expect("within lateness");
    let late = engine.on_message(at(3), None, exit("a", 89_999).as_bytes(), None, 0, &mut out);
    match late {
        Err(rejection) => {
            assert_eq!(rejection.code(), "late");
            assert!(
                rejection.to_string().contains("60001 ms behind"),
                "{rejection}"
            );
        }
        Ok(()) => panic!("a late event was taken"),
    }
    assert_eq!(engine.stats().late_events, 1);
    // Lateness is per entity: another entity's newer events do not make this one late.
    engine
        .on_message(at(4), None, exit("b", 1_000).as_bytes(), None, 0, &mut out)
        .expect("b has its own time");
}

#[test]
fn events_too_far_in_the_future_are_refused_and_counted() {
    let mut engine = engine_configured(EngineConfig::default(), &[]);
    let mut out = Vec::new();
    let now = 1_000_000;
    engine
        .on_message(
            at(0),
            None,
            exit("a", now + 60_000).as_bytes(),
            None,
            now,
            &mut out,
        )
        .expect("1 min ahead is allowed");
    let ahead = engine.on_message(
        at(1),
        None,
        exit("a", now + 60_001).as_bytes(),
        None,
        now,
        &mut out,
    );
    assert_eq!(ahead.map_err(|r| r.code()), Err("future"));
    assert_eq!(engine.stats().future_events, 1);
}

#[test]
fn out_of_order_events_within_the_lateness_give_the_same_verdicts_as_sorted() {
    let sorted = [
        exit("a", 1_000),
        exit("a", 2_000),
        exit("a", 3_000),
        exit("b", 4_000),
        exit("b", 5_000),
        exit("b", 6_000),
    ];
    let shuffled = [
        exit("a", 3_000),
        exit("b", 6_000),
        exit("a", 1_000),
        exit("b", 4_000),
        exit("a", 2_000),
        exit("b", 5_000),
    ];
    let summary = |out: &[Output]| {
        let mut v: Vec<(String, String)> = commands(out)
            .iter()
            .map(|c| (c.entity.clone(), c.action.clone()))
            .collect();
        v.sort();
        v
    };
    let a = feed(&mut engine_with(&[]), &sorted);
    let b = feed(&mut engine_with(&[]), &shuffled);
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(summary(&a).len(), 2);
}

#[test]
fn a_rule_that_calls_an_unknown_function_or_reads_a_missing_param_is_refused_at_load() {
    for (source, needle) in [
        (
            "fn condition(p) {\n    cuont(\"process_exit\", 60) >= 3\n}\n#{ name: \"typo\", select: [#{ name: \"x\" }], action: \"a\" }",
            "Function not found: cuont",
        ),
        (
            "fn condition(p) {\n    count(\"process_exit\", 60) >= p.exit\n}\n#{ name: \"typo\", select: [#{ name: \"x\" }], params: #{ exits: 3 }, action: \"a\" }",
            "Property not found: exit",
        ),
    ] {
        let sources = vec![("typo.rhai".to_owned(), source.to_owned())];
        let errors = Engine::new(EngineConfig::default(), |rt| RuleSet::load_sources(rt, sources))
            .expect_err("refused");
        let first = &errors.0[0];
        assert_eq!((first.file.as_str(), first.line), ("typo.rhai", 2), "{first}");
        assert!(first.column > 0 && first.message.contains(needle), "{first}");
    }
}

#[test]
fn a_rule_that_fails_only_on_some_data_still_loads() {
    // Budget stops and data-dependent errors are the runtime's business, not the loader's.
    let spin = "fn condition(p) { loop {} } #{ name: \"spin\", select: [#{ name: \"x\" }], action: \"a\" }";
    let short = "fn condition(p) { count(\"x\", p.window) > 0 } #{ name: \"short\", select: [#{ name: \"x\" }], params: #{ window: \"10s\" }, action: \"a\" }";
    let sources = vec![
        ("spin.rhai".to_owned(), spin.to_owned()),
        ("short.rhai".to_owned(), short.to_owned()),
    ];
    assert!(
        Engine::new(EngineConfig::default(), |rt| RuleSet::load_sources(
            rt, sources
        ))
        .is_ok()
    );
}

pub(crate) fn engine_accepting_any_time(extra: &[(&str, &str)]) -> Engine {
    let config = EngineConfig {
        max_future_ms: i64::MAX,
        ..EngineConfig::default()
    };
    engine_configured(config, extra)
}

/// An engine with `config`, the shipped rules and `extra`.
pub(crate) fn engine_configured(config: EngineConfig, extra: &[(&str, &str)]) -> Engine {
    let sources: Vec<(String, String)> = SHIPPED_RULES
        .iter()
        .chain(extra)
        .map(|(f, s)| ((*f).to_owned(), (*s).to_owned()))
        .collect();
    Engine::new(config, |rt| RuleSet::load_sources(rt, sources)).expect("rules load")
}

#[test]
fn an_entity_whose_clock_runs_behind_is_not_taken_for_idle() {
    let mut engine = engine_accepting_any_time(&[]);
    let tick = |e: &str, ts: i64| {
        format!(r#"{{"entity":"{e}","ts":{ts},"kind":"metric","name":"cpu","value":0.5}}"#)
    };
    // "slow" stamps its events two hours behind "fast", on the same partition.
    let out = feed(
        &mut engine,
        &[
            tick("fast", 7_200_000),
            exit("slow", 1_000),
            exit("slow", 2_000),
            tick("fast", 7_560_000),
            exit("slow", 3_000),
        ],
    );
    assert_eq!(engine.stats().entities_expired, 0);
    assert_eq!(
        commands(&out).len(),
        1,
        "slow kept its windows and its crash loop was seen"
    );
}

#[test]
fn a_pending_condition_that_went_stale_restarts_instead_of_firing() {
    use crate::wire::Verdict;
    let mut engine = engine_accepting_any_time(&[("slow.rhai", SLOW)]);
    // Holding at 100 s, then ten minutes of silence, then holding again.
    let out = feed(
        &mut engine,
        &[latency(100_000, 300.0), latency(700_000, 300.0)],
    );
    assert_eq!(verdicts(&out), [Verdict::Pending, Verdict::Pending]);
    assert!(
        commands(&out).is_empty(),
        "a stale pending state does not fire at once"
    );
}

#[test]
fn a_method_on_a_missing_label_is_the_data_s_business_not_a_load_error() {
    let zone = "fn condition(p) { label(\"zone\").starts_with(\"eu\") && count(\"x\", 60) > 0 } #{ name: \"zone\", select: [#{ name: \"x\" }], action: \"a\" }";
    let sources = vec![("zone.rhai".to_owned(), zone.to_owned())];
    assert!(
        Engine::new(EngineConfig::default(), |rt| RuleSet::load_sources(
            rt, sources
        ))
        .is_ok()
    );
}

#[test]
fn a_late_health_check_cannot_start_or_end_a_run_of_fails() {
    let mut w = SeriesWindow::new("liveness".into());
    w.record_health(true, 0);
    w.record_health(true, 100_000);
    w.record_health(false, 50_000);
    assert_eq!((w.consecutive_fails(), w.failing_for_ms(100_000)), (0, 0));
    w.record_health(false, 110_000);
    w.record_health(true, 105_000);
    assert_eq!(w.consecutive_fails(), 1, "a late pass does not end the run");
}

const P99: &str = r#"
fn condition(p) { p99("response_ms", "10s") > p.threshold_ms }
#{ name: "p99_slow", select: [#{ name: "response_ms" }], params: #{ threshold_ms: 250.0 }, action: "reroute" }
"#;

#[test]
fn a_percentile_rule_acts_on_the_window_s_tail_not_on_one_sample() {
    let mut engine = engine_with(&[("p99.rhai", P99)]);
    // 99 fast samples and one slow one in 10 s: the p99 interpolates to 203.98, below 250.
    let mut events: Vec<String> = (0..99).map(|i| latency(i * 100, 10.0)).collect();
    events.push(latency(9_900, 20_000.0));
    let quiet = feed(&mut engine, &events);
    assert!(
        commands(&quiet).is_empty(),
        "one outlier in a hundred is not a p99 breach"
    );
    // Two more slow samples move the tail above the threshold.
    let out = feed_from(
        &mut engine,
        100,
        &[latency(9_950, 20_000.0), latency(9_990, 20_000.0)],
    );
    let command = commands(&out)[0];
    assert_eq!(command.action, "reroute");
    assert!(
        command.reason.starts_with("p99(response_ms, 10s) = "),
        "{}",
        command.reason
    );
}

#[test]
fn a_percentile_of_a_series_the_rules_never_name_is_an_error_not_a_guess() {
    // Through a function pointer the call escapes the source scan, so no samples are kept.
    let sneaky = r#"
fn condition(p) { Fn("p99").call("response_ms", "10s") > 1.0 }
#{ name: "sneaky", select: [#{ name: "response_ms" }], action: "reroute" }
"#;
    let mut engine = engine_with(&[("sneaky.rhai", sneaky)]);
    let out = feed(&mut engine, &[latency(0, 500.0)]);
    assert!(commands(&out).is_empty());
    assert_eq!(engine.stats().rule_errors, 1);
}

#[test]
fn series_keep_history_only_as_far_back_as_the_rules_look() {
    use crate::retention::{RetentionPlan, SeriesRetention};
    use std::sync::Arc;
    let rt = salve_rules::Runtime::new(salve_rules::Limits::default(), |_| {});
    let rules = RuleSet::load_sources(
        &rt,
        SHIPPED_RULES
            .iter()
            .chain(&[("p99.rhai", P99), ("slow.rhai", SLOW)])
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
    .expect("loads");
    let plan = RetentionPlan::new(&rules, 900_000, |n: &str| Arc::from(n));
    let of = |name: &str| plan.for_series(&Arc::from(name));
    assert_eq!(
        of("process_exit"),
        SeriesRetention {
            buckets_ms: 60_000,
            samples_ms: None
        }
    );
    assert_eq!(
        of("response_ms"),
        SeriesRetention {
            buckets_ms: 10_000,
            samples_ms: Some(10_000)
        }
    );
    assert_eq!(
        of("liveness"),
        SeriesRetention::default(),
        "read without a window"
    );
    assert_eq!(
        of("mem_rss_mb"),
        SeriesRetention::default(),
        "read by no rule"
    );
    // A window the source does not spell out could be any: the longest is kept.
    let computed = r#"
fn condition(p) { count(series_name(), "2m") > 0 }
fn series_name() { "x" }
#{ name: "computed", select: [#{ name: "x" }], action: "restart" }
"#;
    let rules =
        RuleSet::load_sources(&rt, [("c.rhai".to_owned(), computed.to_owned())]).expect("loads");
    let plan = RetentionPlan::new(&rules, 900_000, |n: &str| Arc::from(n));
    assert_eq!(plan.for_series(&Arc::from("anything")).buckets_ms, 120_000);
}

#[test]
fn a_window_longer_than_max_window_is_refused_at_load_with_its_line() {
    let long = "fn condition(p) {\n  count(\"process_exit\", \"1h\") > 3\n}\n#{ name: \"long\", select: [#{ name: \"process_exit\" }], action: \"restart\" }";
    let sources = vec![("long.rhai".to_owned(), long.to_owned())];
    let err = Engine::new(EngineConfig::default(), |rt| {
        RuleSet::load_sources(rt, sources)
    })
    .expect_err("refused");
    assert_eq!(err.0[0].line, 2, "{err}");
    assert!(
        err.0[0].message.contains("exceeds engine.max_window"),
        "{err}"
    );
}

#[test]
fn with_partition_by_a_message_is_keyed_by_its_group_label() {
    use crate::decode_partitioned;
    let by = vec!["cluster".to_owned(), "service".to_owned()];
    let replica = br#"{"entity":"db/replica-1","kind":"metric","name":"replication_lag_s","value":1,"labels":{"role":"replica","cluster":"orders"}}"#;
    assert!(decode_partitioned(replica, Some(b"orders"), MB, &by).is_ok());
    let err = decode_partitioned(replica, Some(b"db/replica-1"), MB, &by).expect_err("refused");
    assert_eq!(err.code(), "key_mismatch");
    assert!(
        err.to_string().contains("the label cluster \"orders\""),
        "{err}"
    );
    // An event with none of the labels is keyed by its entity, as without partition_by.
    let lone = br#"{"entity":"batch-7","kind":"event","name":"process_exit"}"#;
    assert!(decode_partitioned(lone, Some(b"batch-7"), MB, &by).is_ok());
}

const CRASHING_SERVICE: &str = r#"
fn condition(p) { failing("service", "crash_loop") >= p.at_least && members("service").len() == p.pods }
#{ name: "crashing_service", select: [#{ name: "process_exit" }], group_by: "service",
   params: #{ at_least: 2, pods: 3 }, action: "page" }
"#;

fn pod_event(pod: &str, name: &str, ts: i64) -> String {
    format!(
        r#"{{"entity":"checkout/{pod}","ts":{ts},"kind":"event","name":"{name}","labels":{{"service":"checkout"}}}}"#
    )
}

#[test]
fn a_group_rule_sees_its_members_and_their_incidents_and_acts_once_for_the_group() {
    let mut engine = engine_with(&[("crashing.rhai", CRASHING_SERVICE)]);
    let mut events = vec![pod_event("pod-3", "hello", 0)];
    for pod in ["pod-1", "pod-2"] {
        events.extend((1..=3).map(|i| pod_event(pod, "process_exit", i * 1_000)));
    }
    let out = feed(&mut engine, &events);
    let sent: Vec<(&str, &str)> = commands(&out)
        .iter()
        .map(|c| (c.entity.as_str(), c.action.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("checkout/pod-1", "restart"),
            ("checkout/pod-2", "restart"),
            ("service=checkout", "page")
        ]
    );
    let page = commands(&out)[2];
    assert_eq!(page.params["service"], "checkout");
    assert!(page
        .incident
        .starts_with("crashing_service/service=checkout@"));
    // The group incident is open: a third crash-looping pod joins it, no second page.
    let more: Vec<String> = (4..=6)
        .map(|i| pod_event("pod-3", "process_exit", i * 1_000))
        .collect();
    let out = feed_from(&mut engine, events.len() as i64, &more);
    assert_eq!(commands(&out).len(), 1, "only pod-3's restart");
}

#[test]
fn the_group_index_shares_the_entity_maps_key_instead_of_copying_it() {
    let mut engine = engine_with(&[("crashing.rhai", CRASHING_SERVICE)]);
    let events: Vec<String> = (1..=3)
        .map(|i| pod_event("pod-1", "process_exit", i * 1_000))
        .collect();
    // The group rule ran on each exit, taking the entity out of the map and putting it back.
    assert!(!commands(&feed(&mut engine, &events)).is_empty());
    assert_eq!(
        engine.entity_key_holders("checkout/pod-1"),
        Some(2),
        "the map and the `service` index hold one shared id"
    );
    // An entity without the label is in no group: the map alone holds its id.
    feed_from(&mut engine, 3, &[exit("batch-7", 4_000)]);
    assert_eq!(engine.entity_key_holders("batch-7"), Some(1));
}

#[test]
fn an_entity_stays_small_while_it_has_nothing_open() {
    // Memory per idle entity is a target (<= 1 KiB at 1M entities), and the entity map pays
    // each byte of an entry about twice at that size: a new field belongs in a box or a
    // ThinVec unless every entity needs it (benches/src/bin/memory.rs measures the result).
    assert!(
        std::mem::size_of::<crate::entity::EntityState>() <= 104,
        "EntityState grew to {} bytes",
        std::mem::size_of::<crate::entity::EntityState>()
    );
    assert!(std::mem::size_of::<crate::entity::Subject>() <= 32);
}

#[test]
fn expired_entities_leave_their_groups() {
    let config = EngineConfig {
        max_future_ms: i64::MAX,
        entity_ttl_ms: 20 * 60_000,
        ..EngineConfig::default()
    };
    let two = r#"
fn condition(p) { members("service").len() == 2 }
#{ name: "two_pods", select: [#{ name: "tick" }], group_by: "service", action: "note" }
"#;
    let mut engine = engine_configured(config, &[("two.rhai", two)]);
    let out = feed(
        &mut engine,
        &[
            pod_event("pod-1", "hello", 0),
            pod_event("pod-2", "hello", 0),
            pod_event("pod-3", "tick", 0),
        ],
    );
    assert!(commands(&out).is_empty(), "three members");
    // pod-1 and pod-2 fall silent for longer than the TTL; pod-3 and pod-4 keep talking.
    let mut later = Vec::new();
    for minute in 1..=25 {
        later.push(pod_event("pod-3", "hello", minute * 60_000));
        later.push(pod_event("pod-4", "hello", minute * 60_000));
    }
    later.push(pod_event("pod-3", "tick", 26 * 60_000));
    let out = feed_from(&mut engine, 3, &later);
    assert_eq!(
        commands(&out).len(),
        1,
        "pod-1 and pod-2 expired: the group has pod-3 and pod-4 only"
    );
    assert_eq!(engine.stats().entities_expired, 2);
}

const VERIFIED_BY_LOAD: &str = r#"
fn condition(p) { consecutive_fails("liveness") >= 2 }
fn verify(p) { consecutive_passes("liveness") >= 1 && last("load") < 0.9 }
#{ name: "verified_by_load", select: [#{ name: "liveness" }, #{ name: "load" }],
   action: "reboot", verify_for: "30s", settle: "5s" }
"#;

fn health_of(entity: &str, ts: i64, status: &str) -> String {
    format!(
        r#"{{"entity":"{entity}","ts":{ts},"kind":"health","name":"liveness","status":"{status}"}}"#
    )
}

fn load_of(entity: &str, ts: i64, value: f64) -> String {
    format!(r#"{{"entity":"{entity}","ts":{ts},"kind":"metric","name":"load","value":{value}}}"#)
}

#[test]
fn a_verify_function_decides_whether_the_fix_held_after_the_settle_time() {
    // "vm-1" is not "node/...", but node_unhealthy selects liveness too; it acts on its own.
    let mut engine = engine_with(&[("verify.rhai", VERIFIED_BY_LOAD)]);
    let mut out = Vec::new();
    for (i, event) in [
        health_of("vm-1", 0, "fail"),
        health_of("vm-1", 1_000, "fail"),
    ]
    .iter()
    .enumerate()
    {
        engine
            .on_message(at(i as i64), None, event.as_bytes(), None, 1_000, &mut out)
            .expect("valid");
    }
    let reboot = commands(&out)
        .into_iter()
        .find(|c| c.action == "reboot")
        .expect("a reboot")
        .id
        .clone();
    let mut acked = Vec::new();
    engine.on_ack(&ack(&reboot, AckStatus::Succeeded), 2_000, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Verifying));
    let mut feed_at = |offset: i64, event: String, now: i64| {
        let mut out = Vec::new();
        engine
            .on_message(at(offset), None, event.as_bytes(), None, now, &mut out)
            .expect("valid");
        out
    };
    // Within the settle time a bad reading is expected, and forgiven.
    let early = feed_at(2, load_of("vm-1", 3_000, 0.95), 3_000);
    assert!(last_transition(&early).is_none(), "{early:?}");
    // After it, liveness passes, so the condition no longer holds; but the load is still too
    // high, and verify says the fix did not hold.
    let late = feed_at(3, health_of("vm-1", 8_000, "pass"), 8_000);
    assert_eq!(last_transition(&late), Some(IncidentState::Escalated));
    assert_eq!(engine.stats().verifications_failed, 1);
}

#[test]
fn dry_run_decides_and_logs_but_publishes_no_command_and_escalates_nothing() {
    let config = EngineConfig {
        mode: crate::Mode::DryRun,
        max_future_ms: i64::MAX,
        ..EngineConfig::default()
    };
    let mut engine = engine_configured(config, &[]);
    let mut out = feed(
        &mut engine,
        &[
            exit("a", 1_000),
            exit("a", 2_000),
            exit("a", 3_000),
            exit("a", 4_000),
        ],
    );
    engine.tick(10_000_000, &mut out);
    assert!(commands(&out).is_empty(), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Escalation(_))));
    let would: Vec<&crate::Decision> = out
        .iter()
        .filter_map(|o| match o {
            Output::Decision(d) if d.kind == DecisionKind::WouldCommand => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(would.len(), 1, "one incident, not one per exit");
    assert!(
        would[0]
            .reason
            .starts_with("dry run: would send restart to a"),
        "{}",
        would[0].reason
    );
    assert_eq!(last_transition(&out), Some(IncidentState::Resolved));
    assert_eq!(engine.stats().would_commands, 1);
    assert_eq!(engine.stats().commands, 0);
}

fn changelog(out: &[Output]) -> Vec<&crate::wire::ChangelogRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Changelog(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// An ack that comes while the partition moves reaches the new owner before the restore does:
/// it is kept, and applied once the incident is restored, instead of the attempt timing out.
#[test]
fn an_ack_that_comes_before_its_incident_is_restored_is_applied_after() {
    let (id, records) = incident_in_changelog();
    let value = records[0].value.clone().expect("an open incident");

    let mut second = engine_with(&[]);
    let mut acked = Vec::new();
    second.on_ack(&ack(&id, AckStatus::Received), 4_000, &mut acked);
    second.on_ack(&ack(&id, AckStatus::Succeeded), 4_500, &mut acked);
    second.on_ack(
        &ack("other/b@0:0:1#1", AckStatus::Succeeded),
        4_600,
        &mut acked,
    );
    assert_eq!(second.stats().acks_unmatched, 3, "nothing is here yet");
    second
        .restore(records[0].partition, "a", value.as_bytes())
        .expect("restores");
    second.tick(5_000, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Verifying));
    assert_eq!(second.stats().acks_replayed, 2, "received, then succeeded");
    assert_eq!(second.stats().attempts_succeeded, 1);
    second.tick(29_999, &mut acked);
    assert_eq!(
        second.stats().attempts_timed_out,
        0,
        "the ack deadline is gone"
    );
    let mut again = Vec::new();
    second.tick(30_000, &mut again);
    assert_eq!(
        second.stats().acks_replayed,
        2,
        "each kept ack is applied once"
    );
}

/// A kept ack is applied only to an attempt that waits for it: one whose attempt the old owner
/// had closed stays kept, and is not counted as replayed.
#[test]
fn a_kept_ack_of_a_closed_attempt_is_not_replayed() {
    let mut first = engine_with(&[]);
    let events: Vec<_> = ["a", "b"]
        .iter()
        .flat_map(|e| [exit(e, 1_000), exit(e, 2_000), exit(e, 3_000)])
        .collect();
    let out = feed(&mut first, &events);
    let ids: Vec<String> = commands(&out).iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    let mut acked = Vec::new();
    first.on_ack(&ack(&ids[0], AckStatus::Succeeded), 4_000, &mut acked);
    let latest = |key: &str| {
        changelog(&out)
            .into_iter()
            .chain(changelog(&acked))
            .rfind(|c| c.key().ends_with(&format!("|{key}")))
            .cloned()
            .expect("a record")
    };
    let (a, b) = (latest("a"), latest("b"));

    let mut second = engine_with(&[]);
    let mut out = Vec::new();
    second.on_ack(&ack(&ids[0], AckStatus::Succeeded), 4_500, &mut out);
    for (key, record) in [("a", &a), ("b", &b)] {
        let value = record.value.clone().expect("open");
        second
            .restore(record.partition, key, value.as_bytes())
            .expect("restores");
    }
    second.tick(5_000, &mut out);
    assert_eq!(second.stats().acks_replayed, 0, "a was verifying already");
    assert_eq!(second.stats().attempts_succeeded, 0);
}

/// crash_loop's incident on `a`, opened in an engine of its own: its command's id, and the
/// changelog records that came out.
fn incident_in_changelog() -> (String, Vec<crate::wire::ChangelogRecord>) {
    let mut first = engine_with(&[]);
    let out = feed(
        &mut first,
        &[exit("a", 1_000), exit("a", 2_000), exit("a", 3_000)],
    );
    let id = commands(&out)[0].id.clone();
    (id, changelog(&out).into_iter().cloned().collect())
}

#[test]
fn open_incidents_go_to_the_changelog_and_come_back_with_their_deadlines() {
    let (id, records) = incident_in_changelog();
    assert_eq!(records.len(), 1, "one subject changed");
    assert_eq!(records[0].key(), "0:0|a");
    let value = records[0].value.clone().expect("an open incident");

    // Another process is assigned the partition: it restores, and the ack finds the incident.
    let mut second = engine_with(&[]);
    second
        .restore(records[0].partition, "a", value.as_bytes())
        .expect("restores");
    assert_eq!(second.stats().incidents_restored, 1);
    assert_eq!(
        second.next_deadline(),
        Some(30_000),
        "the ack deadline came back too"
    );
    let mut acked = Vec::new();
    second.on_ack(&ack(&id, AckStatus::Succeeded), 5_000, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Verifying));
    // The verification, and a record with nothing open; the flap history stays, since a
    // restart must not forget how often the entity was just restarted.
    second.tick(65_000, &mut acked);
    assert_eq!(last_transition(&acked), Some(IncidentState::Resolved));
    let last = changelog(&acked)
        .last()
        .and_then(|c| c.value.clone())
        .expect("a record");
    let last: serde_json::Value = serde_json::from_str(&last).expect("JSON");
    assert_eq!(last["subject"]["incidents"], serde_json::json!([]));
    assert_eq!(last["subject"]["recent"][0][0], "restart");
    assert!(second
        .restore(records[0].partition, "a", b"{not json")
        .is_err());
}

#[test]
fn an_idle_partition_does_not_stall_time_and_its_idle_entities_expire() {
    let config = EngineConfig {
        max_future_ms: i64::MAX,
        entity_ttl_ms: 20 * 60_000,
        ..EngineConfig::default()
    };
    let mut engine = engine_configured(config, &[]);
    let mut out = Vec::new();
    // One event at 10:00, processed at 10:00; then the partition falls silent.
    let ten = 36_000_000;
    engine
        .on_message(
            at(0),
            None,
            exit("quiet", ten).as_bytes(),
            None,
            ten,
            &mut out,
        )
        .expect("valid");
    assert_eq!(engine.entity_count(), 1);
    engine.tick(ten + 30_000, &mut out);
    assert_eq!(engine.stats().idle_advances, 0, "not idle yet");
    engine.tick(ten + 30 * 60_000, &mut out);
    assert_eq!(engine.stats().idle_advances, 1);
    assert_eq!(
        engine.entity_count(),
        0,
        "its event time moved on without events, and the entity expired"
    );
}

#[test]
fn a_restored_latch_survives_the_first_events_and_its_release_is_written_back() {
    let mut first = engine_with(&[("trusting.rhai", TRUSTING)]);
    let out = feed(&mut first, &[tick_of("a", 0), tick_of("a", 1_000)]);
    let id = commands(&out)[0].id.clone();
    let mut acked = Vec::new();
    first.on_ack(&ack(&id, AckStatus::Succeeded), 2_000, &mut acked);
    let record = changelog(&acked)
        .last()
        .and_then(|c| c.value.clone())
        .expect("latched");
    assert!(record.contains("\"latched\":[\"trusting\"]"), "{record}");

    // A new owner restores it, then sees the partition's first events, the condition still
    // holding: the latch holds the rule back, though a sweep runs on that first event.
    let mut second = engine_with(&[("trusting.rhai", TRUSTING)]);
    let partition = changelog(&acked)[0].partition;
    second
        .restore(partition, "a", record.as_bytes())
        .expect("restores");
    let t = 36_000_000;
    let out = feed_from(
        &mut second,
        10,
        &[tick_of("b", t), tick_of("a", t), tick_of("a", t + 1_000)],
    );
    assert!(
        !commands(&out).iter().any(|c| c.entity == "a"),
        "the restored latch held: {out:?}"
    );
    assert!(second.stats().verdicts_latched >= 1);
    // The condition clears: the rule re-arms, and the changelog hears of it.
    let out = feed_from(&mut second, 13, &[tick_of("a", t + 30_000)]);
    let written = changelog(&out);
    assert_eq!(written.len(), 1, "{out:?}");
    assert!(
        written[0]
            .value
            .as_deref()
            .is_some_and(|v| v.contains("\"latched\":null")),
        "{written:?}"
    );
}

#[test]
fn a_forgotten_subject_leaves_a_tombstone_on_the_changelog() {
    let config = EngineConfig {
        max_future_ms: i64::MAX,
        entity_ttl_ms: 20 * 60_000,
        ..EngineConfig::default()
    };
    let mut engine = engine_configured(config, &[("trusting.rhai", TRUSTING)]);
    let out = feed(&mut engine, &[tick_of("a", 0), tick_of("a", 1_000)]);
    let id = commands(&out)[0].id.clone();
    let mut acked = Vec::new();
    engine.on_ack(&ack(&id, AckStatus::Succeeded), 2_000, &mut acked);
    // "a" falls silent; "b" keeps the partition's time moving past the TTL.
    let later: Vec<String> = (1..=25).map(|m| tick_of("b", m * 60_000)).collect();
    let out = feed_from(&mut engine, 2, &later);
    let tombstones: Vec<_> = changelog(&out)
        .into_iter()
        .filter(|c| c.subject == "a" && c.value.is_none())
        .collect();
    assert_eq!(tombstones.len(), 1, "{out:?}");
}

#[test]
fn a_restored_incident_whose_rule_is_gone_closes_instead_of_waiting_forever() {
    // An incident backing off, written by a pack that had a rule this one lacks.
    let record = r#"{"v":1,"group":false,"subject":{"incidents":[{"id":"retired/a@0:0:1","rule":"retired","opened_at_ms":0,"state":"backing_off","attempt":1,"step":0,"step_attempts":1,"command_id":"retired/a@0:0:1#1","issued_at_ms":0,"ack_deadline_ms":30000,"target":"a","params":{},"verify_from_ms":0,"verify_until_ms":0,"retry_at_ms":5000,"clear_since_ms":null,"clear_last_ms":0}],"latched":null,"recent":null}}"#;
    let mut engine = engine_with(&[]);
    engine
        .restore(crate::PartitionId::default(), "a", record.as_bytes())
        .expect("restores");
    assert_eq!(engine.next_deadline(), Some(5_000));
    let mut out = Vec::new();
    engine.tick(5_000, &mut out);
    assert_eq!(last_transition(&out), Some(IncidentState::Failed));
    assert!(commands(&out).is_empty(), "no rule, no command");
    assert_eq!(engine.next_deadline(), None, "nothing left waiting");
    let tombstone = changelog(&out).last().map(|c| c.value.is_none());
    assert_eq!(tombstone, Some(true), "{out:?}");
}

/// A mixed stream over the shipped rules' series: latency that rises and falls, liveness
/// that fails in runs, crash loops, deploys followed by errors, busy services, checksum
/// mismatches; acked or not, from a seeded generator.
fn mixed_stream(seed: u64, events: usize) -> Vec<(i64, String, Option<AckStatus>)> {
    let mut state = seed;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let mut stream = Vec::with_capacity(events);
    for i in 0..events {
        let ts = 1_700_000_000_000 + i as i64 * 150;
        let pod = next(12);
        let service = ["checkout", "payments", "search"][(pod % 3) as usize];
        let role = if pod == 0 { "primary" } else { "replica" };
        let labels =
            format!(r#""labels":{{"service":"{service}","cluster":"c1","role":"{role}"}}"#);
        let entity = format!("{service}/pod-{pod}");
        // Each pod drifts in and out of trouble over a few minutes of event time.
        let troubled = (i as u64 / 400 + pod) % 5 == 0;
        let body = match next(9) {
            0 | 1 => {
                let value = if troubled {
                    300 + next(200)
                } else {
                    20 + next(60)
                };
                format!(r#""kind":"metric","name":"latency_ms","value":{value}"#)
            }
            2 | 3 => {
                let status = if troubled && next(4) != 0 {
                    "fail"
                } else {
                    "pass"
                };
                format!(r#""kind":"health","name":"liveness","status":"{status}""#)
            }
            4 => {
                let value = if troubled { 95 } else { 40 + next(40) };
                format!(r#""kind":"metric","name":"cpu_util","value":0.{value}"#)
            }
            5 if troubled => r#""kind":"event","name":"process_exit""#.to_owned(),
            5 => r#""kind":"metric","name":"replication_lag_s","value":1.5"#.to_owned(),
            6 => {
                let value = if troubled { 12 } else { next(3) };
                format!(r#""kind":"metric","name":"error_rate","value":0.0{value}"#)
            }
            7 if next(20) == 0 => r#""kind":"event","name":"deploy""#.to_owned(),
            7 if troubled && next(10) == 0 => {
                r#""kind":"event","name":"checksum_mismatch""#.to_owned()
            }
            _ => format!(
                r#""kind":"metric","name":"queue_depth","value":{}"#,
                next(100)
            ),
        };
        let ack = match next(4) {
            0 => None,
            1 => Some(AckStatus::Failed),
            _ => Some(AckStatus::Succeeded),
        };
        stream.push((
            ts,
            format!(r#"{{"entity":"{entity}","ts":{ts},{body},{labels}}}"#),
            ack,
        ));
    }
    stream
}

/// Runs `stream` through an engine, acking each command as the stream says, and returns
/// every output.
fn run_stream(
    memoize: bool,
    native: bool,
    extra: &[(&str, &str)],
    stream: &[(i64, String, Option<AckStatus>)],
) -> (Vec<Output>, Engine) {
    let config = EngineConfig {
        max_future_ms: i64::MAX,
        ..EngineConfig::default()
    };
    let mut engine = engine_configured(config, extra);
    engine.memoize = memoize;
    engine.native = native;
    let mut out = Vec::new();
    for (i, (ts, event, ack)) in stream.iter().enumerate() {
        let start = out.len();
        engine
            .on_message(at(i as i64), None, event.as_bytes(), None, *ts, &mut out)
            .expect("valid");
        engine.tick(*ts, &mut out);
        let issued: Vec<String> = commands(&out[start..])
            .iter()
            .map(|c| c.id.clone())
            .collect();
        for id in issued {
            if let Some(status) = ack {
                let ack = Ack {
                    v: Some(1),
                    command_id: id,
                    status: *status,
                    detail: None,
                    ts: Some(*ts),
                    actuator: None,
                };
                engine.on_ack(&ack, *ts, &mut out);
            }
        }
    }
    (out, engine)
}

/// The shipped rules' latency and liveness conditions written as Rhai alone can run them
/// (with a `let`), so that they are answered from memory rather than compiled.
const UNCOMPILED: [(&str, &str); 2] = [
    (
        "slow_p99.rhai",
        r#"fn condition(p) { let limit = p.threshold_ms; p99("latency_ms", p.window) > limit }
#{ name: "slow_p99", select: [#{ kind: "metric", name: "latency_ms" }],
   params: #{ threshold_ms: 250.0, window: "10s" }, hold_for: "5s", action: "reroute_slow",
   ack_timeout: "30s", verify_for: "10s" }"#,
    ),
    (
        "dead_liveness.rhai",
        r#"fn condition(p) { let fails = consecutive_fails("liveness"); fails >= 3 || failing_for("liveness") >= 30.0 }
#{ name: "dead_liveness", select: [#{ kind: "health", name: "liveness" }],
   action: "replace_dead", ack_timeout: "1m", verify_for: "30s" }"#,
    ),
];

#[test]
fn compiled_rules_give_the_same_outputs_as_rhai() {
    for seed in [4, 5] {
        let stream = mixed_stream(seed, 6_000);
        let (compiled, native_engine) = run_stream(false, true, &[], &stream);
        let (evaluated, rhai_engine) = run_stream(false, false, &[], &stream);
        let stats = native_engine.stats();
        assert_eq!(rhai_engine.stats().rule_calls_native, 0);
        assert!(
            stats.rule_calls_native * 10 > stats.rule_evaluations * 9,
            "nearly every call of the shipped rules is native: {} of {}",
            stats.rule_calls_native,
            stats.rule_evaluations
        );
        assert!(commands(&evaluated).len() >= 5);
        assert_eq!(compiled.len(), evaluated.len(), "seed {seed}");
        for (a, b) in compiled.iter().zip(&evaluated) {
            assert_eq!(a, b, "seed {seed}");
        }
    }
}

#[test]
fn answering_rule_calls_from_memory_changes_no_output() {
    for seed in [1, 2, 3] {
        let stream = mixed_stream(seed, 6_000);
        let (remembered, memo_engine) = run_stream(true, false, &UNCOMPILED, &stream);
        let (evaluated, plain_engine) = run_stream(false, false, &UNCOMPILED, &stream);
        let stats = memo_engine.stats();
        assert_eq!(plain_engine.stats().rule_memo_hits, 0);
        assert!(
            stats.rule_memo_hits * 4 > stats.rule_evaluations,
            "many calls are answered from memory: {} of {}",
            stats.rule_memo_hits,
            stats.rule_evaluations
        );
        assert_eq!(
            stats.rule_evaluations,
            plain_engine.stats().rule_evaluations
        );
        assert!(
            commands(&evaluated).len() >= 5,
            "the stream exercises the lifecycle: {} commands",
            commands(&evaluated).len()
        );
        assert_eq!(remembered.len(), evaluated.len(), "seed {seed}");
        for (a, b) in remembered.iter().zip(&evaluated) {
            assert_eq!(a, b, "seed {seed}");
        }
    }
}
