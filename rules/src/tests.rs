use super::*;
use crate::{ParamOverrides, Retry};

fn runtime() -> Runtime {
    Runtime::new(Limits::default(), |engine| {
        engine.register_fn("count", |_series: &str, _window: rhai::Dynamic| 3_i64);
    })
}

fn load(source: &str) -> Result<RuleSet, LoadErrors> {
    RuleSet::load_sources(&runtime(), [("test.rhai".to_owned(), source.to_owned())])
}

const VALID: &str = r#"
fn condition(p) { count("process_exit", p.window) >= p.exits }
#{ name: "r", select: [#{ kind: "event", name: "process_exit" }], params: #{ exits: 3, window: 60 }, action: "restart" }
"#;

#[test]
fn shipped_rules_load_and_declare_what_they_say() {
    let rt = runtime();
    let set = RuleSet::load_sources(
        &rt,
        SHIPPED_RULES
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
    .expect("shipped rules load");
    let crash = &set.rules()[0];
    assert_eq!(crash.decl.name, "crash_loop");
    assert_eq!(crash.decl.action, "restart");
    assert_eq!(crash.decl.ack_timeout_ms, Some(30_000));
    assert_eq!(crash.decl.select[0].name.as_deref(), Some("process_exit"));
    assert!(set.condition(&rt, 0).expect("evaluates"));
}

#[test]
fn a_valid_rule_evaluates_with_its_params() {
    let rt = runtime();
    let set = RuleSet::load_sources(&rt, [("a.rhai".to_owned(), VALID.to_owned())]).expect("loads");
    assert!(set.condition(&rt, 0).expect("evaluates"));
    let strict = VALID.replace("exits: 3", "exits: 4");
    let set = RuleSet::load_sources(&rt, [("a.rhai".to_owned(), strict)]).expect("loads");
    assert!(!set.condition(&rt, 0).expect("evaluates"));
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = load("fn condition(p) {\n  count(\"x\", 60) >= \n}\n#{}").expect_err("rejected");
    let first = &err.0[0];
    assert_eq!(first.file, "test.rhai");
    assert_eq!(first.line, 3, "{first}");
    assert!(first.column > 0, "{first}");
    assert!(err.to_string().starts_with("test.rhai:3:"), "{err}");
}

#[test]
fn an_unknown_declaration_key_points_at_its_line() {
    let source = VALID.replace("action: \"restart\"", "\n  acton: \"restart\"");
    let err = load(&source).expect_err("rejected");
    assert!(err.0[0].message.contains("unknown key `acton`"), "{err}");
    assert_eq!(err.0[0].line, 4, "{err}");
}

#[test]
fn a_rule_without_condition_is_rejected() {
    let err =
        load("#{ name: \"r\", select: [#{ name: \"x\" }], action: \"a\" }").expect_err("rejected");
    assert!(err.0[0].message.contains("fn condition"), "{err}");
}

#[test]
fn missing_required_keys_are_named() {
    for (key, source) in [
        (
            "name",
            "fn condition(p) { true } #{ select: [#{ name: \"x\" }], action: \"a\" }",
        ),
        (
            "select",
            "fn condition(p) { true } #{ name: \"r\", action: \"a\" }",
        ),
        (
            "action",
            "fn condition(p) { true } #{ name: \"r\", select: [#{ name: \"x\" }] }",
        ),
    ] {
        let err = load(source).expect_err("rejected");
        assert!(
            err.0[0].message.contains(&format!("`{key}`")),
            "{key}: {err}"
        );
    }
}

#[test]
fn duplicate_rule_names_are_rejected() {
    let err = RuleSet::load_sources(
        &runtime(),
        [
            ("a.rhai".to_owned(), VALID.to_owned()),
            ("b.rhai".to_owned(), VALID.to_owned()),
        ],
    )
    .expect_err("rejected");
    assert_eq!(err.0[0].file, "b.rhai");
    assert!(err.0[0].message.contains("already used by a.rhai"), "{err}");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_budget() {
    let rt = runtime();
    let source = "fn condition(p) { loop { } } #{ name: \"spin\", select: [#{ name: \"x\" }], action: \"a\" }";
    let set =
        RuleSet::load_sources(&rt, [("spin.rhai".to_owned(), source.to_owned())]).expect("loads");
    let err = set.condition(&rt, 0).expect_err("stopped");
    assert!(matches!(err, EvalError::BudgetExceeded { .. }), "{err}");
}

#[test]
fn an_infinite_loop_in_the_declaration_is_a_load_error() {
    let err = load("fn condition(p) { true } loop {} #{}").expect_err("rejected");
    assert!(err.0[0].message.contains("Too many operations"), "{err}");
}

#[test]
fn the_sandbox_has_no_eval_and_no_import() {
    for source in [
        "fn condition(p) { eval(\"true\") } #{ name: \"r\", select: [#{ name: \"x\" }], action: \"a\" }",
        "import \"os\" as os; fn condition(p) { true } #{ name: \"r\", select: [#{ name: \"x\" }], action: \"a\" }",
    ] {
        assert!(load(source).is_err(), "{source}");
    }
}

#[test]
fn oversized_strings_are_stopped() {
    let rt = runtime();
    let source = "fn condition(p) { let s = \"x\"; loop { s += s; } } #{ name: \"big\", select: [#{ name: \"x\" }], action: \"a\" }";
    let set =
        RuleSet::load_sources(&rt, [("big.rhai".to_owned(), source.to_owned())]).expect("loads");
    let err = set.condition(&rt, 0).expect_err("stopped");
    assert!(err.to_string().contains("big.rhai"), "{err}");
}

#[test]
fn a_runtime_error_names_the_rule_file_and_line() {
    let rt = runtime();
    let source = "fn condition(p) {\n  p.missing > 1\n}\n#{ name: \"r\", select: [#{ name: \"x\" }], action: \"a\" }";
    let set =
        RuleSet::load_sources(&rt, [("r.rhai".to_owned(), source.to_owned())]).expect("loads");
    match set.condition(&rt, 0).expect_err("fails") {
        EvalError::Script { file, line, .. } => {
            assert_eq!(file, "r.rhai");
            assert_eq!(line, 2);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_non_bool_condition_is_an_error() {
    let rt = runtime();
    let source =
        "fn condition(p) { 1 } #{ name: \"r\", select: [#{ name: \"x\" }], action: \"a\" }";
    let set =
        RuleSet::load_sources(&rt, [("r.rhai".to_owned(), source.to_owned())]).expect("loads");
    assert!(matches!(
        set.condition(&rt, 0),
        Err(EvalError::NotABool { .. })
    ));
}

#[test]
fn durations_read_seconds_and_units() {
    assert_eq!(parse_duration_ms("60s"), Ok(60_000));
    assert_eq!(parse_duration_ms("500ms"), Ok(500));
    assert_eq!(parse_duration_ms("2m"), Ok(120_000));
    assert!(parse_duration_ms("soon").is_err());
    assert_eq!(duration_ms(&rhai::Dynamic::from(60_i64)), Ok(60_000));
    assert!(duration_ms(&rhai::Dynamic::from(-1_i64)).is_err());
}

fn overrides(rule: &str, json: serde_json::Value) -> ParamOverrides {
    let mut map = ParamOverrides::new();
    if let serde_json::Value::Object(values) = json {
        map.insert(rule.to_owned(), values);
    }
    map
}

fn load_with(source: &str, overrides: &ParamOverrides) -> Result<RuleSet, LoadErrors> {
    RuleSet::load_sources_with(
        &runtime(),
        [("test.rhai".to_owned(), source.to_owned())],
        overrides,
    )
}

#[test]
fn configured_params_replace_the_defaults() {
    let rt = runtime();
    let set = RuleSet::load_sources_with(
        &rt,
        [("a.rhai".to_owned(), VALID.to_owned())],
        &overrides("r", serde_json::json!({ "exits": 4, "window": 120 })),
    )
    .expect("loads");
    // The stub count() says 3: with the threshold raised to 4 the rule no longer holds.
    assert!(!set.condition(&rt, 0).expect("evaluates"));
    assert_eq!(
        set.rules()[0].params_json(),
        &serde_json::json!({ "exits": 4, "window": 120 })
    );
}

#[test]
fn a_configured_param_of_the_wrong_type_is_refused_naming_the_key() {
    let err = load_with(
        VALID,
        &overrides("r", serde_json::json!({ "exits": "many" })),
    )
    .expect_err("refused");
    let message = &err.0[0].message;
    assert!(
        message.contains("rules.params.r.exits: expected an integer like the default 3"),
        "{message}"
    );
    let duration = VALID.replace("window: 60", "window: \"60s\"");
    let err = load_with(
        &duration,
        &overrides("r", serde_json::json!({ "window": "soon" })),
    )
    .expect_err("refused");
    assert!(err.0[0].message.contains("a duration"), "{err}");
}

#[test]
fn configured_params_of_unknown_rules_or_parameters_are_refused() {
    let err =
        load_with(VALID, &overrides("r", serde_json::json!({ "exitz": 4 }))).expect_err("refused");
    assert!(
        err.0[0].message.contains("`r` has no parameter `exitz`"),
        "{err}"
    );
    let err = load_with(
        VALID,
        &overrides("crashloop", serde_json::json!({ "exits": 4 })),
    )
    .expect_err("refused");
    assert!(err.0[0].message.contains("no rule has that name"), "{err}");
}

#[test]
fn windows_and_percentile_series_are_read_from_the_source() {
    let source = r#"
fn condition(p) { p99("latency_ms", p.window) > p.limit && count("process_exit", 60) > 0 }
#{ name: "r", select: [#{ name: "latency_ms" }], params: #{ limit: 250.0, window: "10s" }, action: "reroute" }
"#;
    let set = load_with(
        source,
        &overrides("r", serde_json::json!({ "window": "20s" })),
    )
    .expect("loads");
    let uses: Vec<_> = set.rules()[0]
        .window_uses()
        .iter()
        .map(|u| (u.function, u.series.as_deref(), u.window_ms))
        .collect();
    assert_eq!(
        uses,
        [
            ("p99", Some("latency_ms"), Some(20_000)),
            ("count", Some("process_exit"), Some(60_000))
        ]
    );
    let computed = source.replace("p99(\"latency_ms\"", "p99(\"latency\" + \"_ms\"");
    let err = load_with(&computed, &ParamOverrides::new()).expect_err("refused");
    assert_eq!(err.0[0].line, 2, "{err}");
}

#[test]
fn a_revert_must_differ_from_the_action_and_clear_for_needs_a_revert() {
    let same = VALID.replace(
        "action: \"restart\"",
        "action: \"restart\", revert: \"restart\"",
    );
    let err = load(&same).expect_err("refused");
    assert!(
        err.0[0].message.contains("cannot be `restart` too"),
        "{err}"
    );
    let orphan = VALID.replace(
        "action: \"restart\"",
        "action: \"restart\", clear_for: \"1m\"",
    );
    let err = load(&orphan).expect_err("refused");
    assert!(err.0[0].message.contains("this rule has none"), "{err}");
    let paired = VALID.replace(
        "action: \"restart\"",
        "action: \"reroute\", revert: \"restore_route\", clear_for: \"1m\"",
    );
    let set = load(&paired).expect("loads");
    assert_eq!(set.rules()[0].decl.revert.as_deref(), Some("restore_route"));
    assert_eq!(set.rules()[0].decl.clear_for_ms, 60_000);
    assert!(!set.rules()[0].has_clear());
}

#[test]
fn a_clear_function_is_probed_like_the_condition() {
    let source = VALID.replace(
        "fn condition(p)",
        "fn clear(p) { count(\"process_exit\", p.windw) == 0 }\nfn condition(p)",
    );
    let rt = runtime();
    let set = load(&source).expect("compiles");
    assert!(set.rules()[0].has_clear());
    let err = set
        .probe(&rt)
        .expect_err("the typo is found before any event");
    assert!(err.0[0].message.contains("windw"), "{err}");
}

#[test]
fn inhibitors_name_loaded_rules_and_index_the_upstream_label() {
    let inhibited = VALID.replace(
        "action: \"restart\"",
        "action: \"restart\", inhibited_by: [#{ rule: \"db_down\", label: \"database\", upstream_label: \"cluster\" }]",
    );
    let err = load(&inhibited).expect_err("db_down is not loaded");
    assert!(
        err.0[0].message.contains("`db_down`, which is not loaded"),
        "{err}"
    );
    let upstream = "fn condition(p) { true } #{ name: \"db_down\", select: [#{ name: \"liveness\" }], action: \"promote\" }";
    let set = RuleSet::load_sources(
        &runtime(),
        [
            ("a.rhai".to_owned(), inhibited),
            ("b.rhai".to_owned(), upstream.to_owned()),
        ],
    )
    .expect("loads");
    let rule = &set.rules()[0];
    assert_eq!(rule.decl.inhibited_by[0].upstream_label, "cluster");
    assert_eq!(rule.group_labels(), ["cluster"]);
    let bad = VALID.replace(
        "action: \"restart\"",
        "action: \"restart\", inhibited_by: [#{ rule: \"db_down\", lable: \"x\" }]",
    );
    assert!(load(&bad).expect_err("refused").0[0]
        .message
        .contains("inhibited_by"));
}

#[test]
fn lifecycle_keys_are_read_and_their_mistakes_named() {
    let full = VALID.replace(
        "action: \"restart\"",
        "action: \"resync\", verify_for: \"10m\", settle: \"1m\", retry: #{ attempts: 2, backoff: \"5s\", factor: 3.0, max_backoff: \"1m\", jitter: 0.0 }, ladder: [#{ action: \"restore\", ack_timeout: \"2h\" }], flap: #{ max_attempts: 5, within: \"10m\" }",
    );
    let set = load(&full).expect("loads");
    let decl = &set.rules()[0].decl;
    assert_eq!((decl.verify_for_ms, decl.settle_ms), (600_000, 60_000));
    assert_eq!(
        decl.retry,
        Retry {
            attempts: 2,
            backoff_ms: 5_000,
            factor: 3.0,
            max_backoff_ms: 60_000,
            jitter: 0.0
        }
    );
    assert_eq!(decl.ladder[0].action, "restore");
    assert_eq!(decl.ladder[0].ack_timeout_ms, Some(7_200_000));
    assert_eq!(decl.flap.map(|f| f.max_attempts), Some(5));
    for (bad, says) in [
        (
            "retry: #{ attempts: 0 }",
            "`retry.attempts` must be a positive integer",
        ),
        ("retry: #{ tries: 2 }", "unknown key `tries` in `retry`"),
        (
            "retry: #{ jitter: 2.0 }",
            "`retry.jitter` must be at most 1",
        ),
        ("ladder: [\"restore\"]", "`ladder` must be an array"),
        ("flap: #{ max_attempts: 3 }", "`flap` needs both keys"),
        ("settle: \"1m\"", "this rule has no `verify_for`"),
        (
            "verify_for: \"1m\", settle: \"1m\"",
            "`settle` must be shorter",
        ),
    ] {
        let source = VALID.replace(
            "action: \"restart\"",
            &format!("action: \"restart\", {bad}"),
        );
        let err = load(&source).expect_err(bad);
        assert!(err.0[0].message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn target_and_action_params_are_probed_like_the_condition() {
    for (function, typo) in [
        ("fn target(p) { p.replcia }", "replcia"),
        ("fn action_params(p) { #{ delta: p.delat } }", "delat"),
    ] {
        let source = VALID.replace("fn condition(p)", &format!("{function}\nfn condition(p)"));
        let rt = runtime();
        let set = load(&source).expect("compiles");
        let err = set
            .probe(&rt)
            .expect_err("the typo is found before any event");
        assert!(err.0[0].message.contains(typo), "{err}");
    }
}

#[test]
fn a_blast_radius_names_its_group_and_a_share_of_at_most_one() {
    let with = |radius: &str| {
        VALID.replace(
            "action: \"restart\"",
            &format!("action: \"restart\", blast_radius: {radius}"),
        )
    };
    let set = load(&with("#{ group: \"service\", max_in_flight: 2 }")).expect("loads");
    let radius = set.rules()[0].decl.blast_radius.clone().expect("set");
    assert_eq!(
        (
            radius.group.as_str(),
            radius.max_in_flight,
            radius.storm_share
        ),
        ("service", Some(2), 0.5)
    );
    assert_eq!(set.rules()[0].group_labels(), ["service"]);
    for (bad, says) in [
        (
            "#{ max_in_flight: 2 }",
            "`blast_radius.group` must name a label",
        ),
        ("#{ group: \"service\", storm_share: 1.5 }", "at most 1"),
        (
            "#{ group: \"service\", max_in_flight: 0 }",
            "positive integer",
        ),
        (
            "#{ group: \"service\", max_in_flight_share: 0.0 }",
            "`blast_radius.max_in_flight_share` must be a share in (0, 1]",
        ),
        (
            "#{ group: \"service\", max_in_flight_share: 1.5 }",
            "`blast_radius.max_in_flight_share` must be a share in (0, 1]",
        ),
        (
            "#{ group: \"service\", max_in_flight_share: \"10%\" }",
            "`blast_radius.max_in_flight_share` must be a number",
        ),
    ] {
        let err = load(&with(bad)).expect_err(bad);
        assert!(err.0[0].message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_blast_radius_share_limits_in_flight_members_the_stricter_way_and_to_at_least_one() {
    let radius = |decl: &str| {
        let rule = VALID.replace(
            "action: \"restart\"",
            &format!("action: \"restart\", blast_radius: {decl}"),
        );
        load(&rule).expect("loads").rules()[0]
            .decl
            .blast_radius
            .clone()
            .expect("set")
    };
    let share = radius("#{ group: \"service\", max_in_flight_share: 0.1 }");
    assert_eq!(share.max_in_flight_share, Some(0.1));
    // 10 % of 4 rounds down to none, and a group must still be able to heal.
    assert_eq!(share.in_flight_limit(4), Some(1));
    assert_eq!(share.in_flight_limit(40), Some(4));
    assert_eq!(share.in_flight_limit(45), Some(4));
    let both = radius("#{ group: \"service\", max_in_flight: 3, max_in_flight_share: 0.5 }");
    assert_eq!(both.in_flight_limit(4), Some(2), "the share is stricter");
    assert_eq!(both.in_flight_limit(100), Some(3), "the count is stricter");
    let neither = radius("#{ group: \"service\" }");
    assert_eq!(neither.in_flight_limit(100), None);
}

#[test]
fn a_paired_action_takes_no_verification_or_ladder_and_a_flap_window_must_be_positive() {
    for (bad, says) in [
        (
            "action: \"reroute\", revert: \"restore_route\", verify_for: \"1m\"",
            "takes no `verify_for` or `ladder`",
        ),
        (
            "action: \"reroute\", revert: \"restore_route\", ladder: [#{ action: \"page\" }]",
            "takes no `verify_for` or `ladder`",
        ),
        (
            "action: \"restart\", flap: #{ max_attempts: 3, within: 0 }",
            "`flap.within` must be longer than zero",
        ),
    ] {
        let source = VALID.replace("action: \"restart\"", bad);
        let err = load(&source).expect_err(bad);
        assert!(err.0[0].message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn canary_waves_increase_to_one_and_name_their_group() {
    let with = |canary: &str| {
        VALID.replace(
            "action: \"restart\"",
            &format!("action: \"restart\", canary: {canary}"),
        )
    };
    let set = load(&with("#{ group: \"service\" }")).expect("loads");
    let canary = set.rules()[0].decl.canary.clone().expect("set");
    assert_eq!(canary.waves, [0.1, 0.5, 1.0]);
    assert_eq!(canary.min_failing, 3);
    assert_eq!(set.rules()[0].group_labels(), ["service"]);
    for (bad, says) in [
        ("#{ waves: [1.0] }", "`canary.group` must name a label"),
        (
            "#{ group: \"service\", waves: [0.5, 0.2, 1.0] }",
            "increasing shares",
        ),
        (
            "#{ group: \"service\", waves: [0.1, 0.5] }",
            "ending with 1.0",
        ),
        ("#{ group: \"service\", waves: \"all\" }", "array of shares"),
        (
            "#{ group: \"service\", min_failing: 0 }",
            "positive integer",
        ),
    ] {
        let err = load(&with(bad)).expect_err(bad);
        assert!(err.0[0].message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn approval_covers_the_actions_it_names_or_all() {
    let with = |approval: &str| {
        VALID.replace(
            "action: \"restart\"",
            &format!("action: \"restart\", approval: {approval}"),
        )
    };
    let set = load(&with("#{}")).expect("loads");
    let approval = set.rules()[0].decl.approval.clone().expect("set");
    assert!(approval.covers("restart") && approval.covers("anything"));
    assert_eq!(approval.timeout_ms, 3_600_000);
    let set = load(&with("#{ actions: [\"restore\"], timeout: \"5m\" }")).expect("loads");
    let approval = set.rules()[0].decl.approval.clone().expect("set");
    assert!(approval.covers("restore") && !approval.covers("restart"));
    assert_eq!(approval.timeout_ms, 300_000);
    for (bad, says) in [
        ("#{ actions: [] }", "non-empty array"),
        ("#{ timeout: 0 }", "longer than zero"),
        ("#{ who: \"sre\" }", "who"),
    ] {
        let err = load(&with(bad)).expect_err(bad);
        assert!(err.0[0].message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_rule_that_reads_the_clock_or_prints_is_not_pure() {
    let shipped = RuleSet::load_sources(
        &runtime(),
        SHIPPED_RULES
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
    .expect("shipped rules load");
    assert!(
        shipped.rules().iter().all(|r| r.is_pure()),
        "the shipped pack is pure"
    );
    for (body, pure) in [
        ("count(\"x\", 60) > 0", true),
        // A name inside a comment is not a call.
        ("count(\"x\", 60) > 0 // timestamp\n", true),
        ("timestamp().elapsed > 1.0", false),
        ("{ print(\"checking\"); true }", false),
        ("{ debug(p); true }", false),
        ("Fn(\"timestamp\").call().elapsed > 1.0", false),
    ] {
        let source = format!(
            "fn condition(p) {{ {body} }} #{{ name: \"r\", select: [#{{ name: \"x\" }}], action: \"a\" }}"
        );
        let rules = load(&source).expect("loads");
        assert_eq!(rules.rules()[0].is_pure(), pure, "{body}");
    }
}
