use crate::config::{Config, ConfigError, LogFormat};
use std::io::Write;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

/// The error that loading `toml` as the config file gives.
fn refusal(toml: &str) -> String {
    let f = file(toml);
    Config::load(Some(f.path()), env(&[]))
        .expect_err(toml)
        .to_string()
}

#[test]
fn no_file_and_no_env_gives_the_documented_defaults() {
    let config = Config::load(None, env(&[])).expect("defaults");
    assert_eq!(config, Config::default());
    assert!(
        config.kafka.brokers.is_empty(),
        "no brokers means the embedded broker"
    );
    assert_eq!(config.topics.telemetry, vec!["salve.telemetry"]);
    assert_eq!(config.engine.ack_timeout_ms, 30_000);
}

#[test]
fn a_file_sets_keys_and_durations() {
    let f = file("[kafka]\nbrokers = \"k1:9092\"\ncommit_interval = \"250ms\"\n[engine]\nmax_window = \"5m\"\n[topics.actuators]\nrestart = \"salve.commands.restart\"\n[log]\nformat = \"json\"\n");
    let config = Config::load(Some(f.path()), env(&[])).expect("valid");
    assert_eq!(config.kafka.brokers, "k1:9092");
    assert_eq!(config.kafka.commit_interval_ms, 250);
    assert_eq!(config.engine.max_window_ms, 300_000);
    assert_eq!(
        config.topics.for_action("restart"),
        "salve.commands.restart"
    );
    assert_eq!(config.topics.for_action("replace"), "salve.commands");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let f = file("[engine]\nack_timeuot = \"5s\"\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("unknown key")
        .to_string();
    assert!(error.contains("ack_timeuot"), "{error}");
    assert!(error.contains("line 2"), "{error}");
    let f = file("[kafak]\nbrokers = \"x\"\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("unknown table")
        .to_string();
    assert!(error.contains("kafak"), "{error}");
}

#[test]
fn a_bad_value_names_the_key_and_what_was_expected() {
    let f = file("[engine]\nresolution = \"often\"\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("bad duration")
        .to_string();
    assert!(
        error.contains("resolution") && error.contains("invalid duration"),
        "{error}"
    );
    let f = file("[topics]\npartitions = 0\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("bad count")
        .to_string();
    assert!(error.contains("topics.partitions: at least 1"), "{error}");
}

#[test]
fn environment_overrides_win_over_the_file() {
    let f = file("[kafka]\nbrokers = \"from-file:9092\"\n");
    let config = Config::load(
        Some(f.path()),
        env(&[
            ("SALVE_KAFKA__BROKERS", "from-env:9092"),
            ("SALVE_ENGINE__MAX_EVENT_BYTES", "2048"),
            ("SALVE_TOPICS__TELEMETRY", "[\"a\", \"b\"]"),
            ("SALVE_KAFKA__CONSUMER__SESSION.TIMEOUT.MS", "6000"),
            ("SALVE_TEST_BROKERS", "not configuration"),
            ("HOME", "/root"),
        ]),
    )
    .expect("valid");
    assert_eq!(config.kafka.brokers, "from-env:9092");
    assert_eq!(config.engine.max_event_bytes, 2048);
    assert_eq!(config.topics.telemetry, vec!["a", "b"]);
    assert_eq!(
        config
            .kafka
            .consumer
            .get("session.timeout.ms")
            .map(String::as_str),
        Some("6000")
    );
}

#[test]
fn an_unknown_environment_override_is_named() {
    let error = Config::load(None, env(&[("SALVE_ENGINE__RESOLUTOIN", "1s")]))
        .expect_err("unknown")
        .to_string();
    assert!(
        error.contains("resolutoin") && error.contains("SALVE_ENGINE__RESOLUTOIN"),
        "{error}"
    );
    assert!(matches!(
        Config::load(None, env(&[("SALVE___X", "1")])),
        Err(ConfigError::BadVariable { .. })
    ));
    let error = Config::load(None, env(&[("SALVE_KAFKA_BROKERS", "k:9092")]))
        .expect_err("single underscore")
        .to_string();
    assert!(
        error.contains("SALVE_KAFKA_BROKERS") && error.contains("SALVE_KAFKA__BROKERS"),
        "{error}"
    );
}

#[test]
fn durations_take_integer_seconds_too() {
    let f = file("[engine]\nack_timeout = 10\n");
    let config = Config::load(Some(f.path()), env(&[])).expect("valid");
    assert_eq!(config.engine.ack_timeout_ms, 10_000);
}

#[test]
fn settings_that_would_break_delivery_guarantees_are_refused() {
    let f = file("[kafka.consumer]\n\"enable.auto.commit\" = true\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("reserved")
        .to_string();
    assert!(
        error.contains("kafka.consumer") && error.contains("enable.auto.commit"),
        "{error}"
    );
    let f = file("[topics]\ntelemetry = [\"salve.deadletter\"]\n");
    let error = Config::load(Some(f.path()), env(&[]))
        .expect_err("loop")
        .to_string();
    assert!(error.contains("topics.telemetry"), "{error}");
}

#[test]
fn librdkafka_properties_are_checked_at_load_with_their_table_named() {
    let cases = [
        (
            "[kafka.record_producer]\n\"linger.mss\" = 5\n",
            "kafka.record_producer",
            "linger.mss",
        ),
        (
            "[kafka.producer]\n\"linger.ms\" = \"soon\"\n",
            "kafka.producer",
            "linger.ms",
        ),
        (
            "[kafka.consumer]\n\"fetch.wait.max.ms\" = -4\n",
            "kafka.consumer",
            "fetch.wait.max.ms",
        ),
        (
            "[kafka.producer]\n\"transactional.id\" = \"t\"\n",
            "kafka.producer",
            "transactional.id",
        ),
        (
            "[kafka.record_producer]\n\"bootstrap.servers\" = \"k:9092\"\n",
            "kafka.record_producer",
            "bootstrap.servers",
        ),
    ];
    for (toml, table, property) in cases {
        let error = refusal(toml);
        assert!(
            error.contains(table) && error.contains(property),
            "{toml}: {error}"
        );
    }
    // Another name of a reserved property is refused as the property is.
    for (toml, property) in [
        (
            "[kafka.producer]\n\"metadata.broker.list\" = \"k:9092\"\n",
            "metadata.broker.list",
        ),
        (
            "[kafka.consumer]\n\"auto.commit.enable\" = true\n",
            "auto.commit.enable",
        ),
    ] {
        let error = refusal(toml);
        assert!(
            error.contains(property) && error.contains("under any of their names"),
            "{error}"
        );
    }
    // One property under both its names would leave librdkafka to pick one.
    let error = refusal("[kafka.producer]\n\"linger.ms\" = 5\n\"queue.buffering.max.ms\" = 0\n");
    assert!(error.contains("two names of one property"), "{error}");
    // A secret's value is not repeated in the error.
    let error = refusal("[kafka.producer]\n\"sasl.password\" = \"hunter2\"\n\"ssl.key.password\" = \"hunter2\"\n\"linger.ms\" = \"x\"\n");
    assert!(!error.contains("hunter2"), "{error}");
    let f = file("[kafka.record_producer]\n\"linger.ms\" = 5\n[kafka.producer]\n\"compression.type\" = \"lz4\"\n");
    let config = Config::load(Some(f.path()), env(&[])).expect("valid properties");
    assert_eq!(
        config
            .kafka
            .record_producer
            .get("linger.ms")
            .map(String::as_str),
        Some("5")
    );
}

/// TLS settings load in a build with TLS, and are refused with the feature to build with
/// otherwise.
#[test]
fn tls_settings_need_the_tls_feature() {
    let f = file("[kafka.consumer]\n\"security.protocol\" = \"ssl\"\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n[kafka.producer]\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"salve\"\n\"sasl.password\" = \"hunter2\"\n");
    let loaded = Config::load(Some(f.path()), env(&[]));
    if cfg!(feature = "tls") {
        let config = loaded.expect("TLS settings load with the tls feature");
        assert_eq!(
            config
                .kafka
                .consumer
                .get("security.protocol")
                .map(String::as_str),
            Some("ssl")
        );
    } else {
        let error = loaded.expect_err("refused").to_string();
        assert!(
            error.contains("kafka.consumer") && error.contains("cargo feature `tls`"),
            "{error}"
        );
        // librdkafka itself accepts this one alone, and fails only when the client starts.
        let error = refusal("[kafka.producer]\n\"security.protocol\" = \"SASL_SSL\"\n");
        assert!(
            error.contains("SASL_SSL") && error.contains("cargo feature `tls`"),
            "{error}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let error = Config::load(
        Some(std::path::Path::new("/nonexistent/salve.toml")),
        env(&[]),
    )
    .expect_err("missing")
    .to_string();
    assert!(error.contains("/nonexistent/salve.toml"), "{error}");
}

#[test]
fn the_example_config_in_deploy_is_valid_and_states_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/salve.toml");
    let config = Config::load(Some(&path), env(&[])).expect("deploy/salve.toml loads");
    assert_eq!(
        config,
        Config::default(),
        "deploy/salve.toml must show the defaults"
    );
}

#[test]
fn rule_parameters_from_the_config_replace_the_rule_s_defaults() {
    use salve_rules::Limits;
    let f = file("[rules.params.crash_loop]\nexits = 5\nwindow = \"2m\"\n");
    let config = Config::load(Some(f.path()), env(&[])).expect("valid");
    let runtime = salve_rules::Runtime::new(Limits::default(), |engine| {
        engine.register_fn("count", |_: &str, _: &str| 0_i64);
        engine.register_fn("consecutive_fails", |_: &str| 0_i64);
        engine.register_fn("failing_for", |_: &str| 0.0_f64);
    });
    let rules = crate::load_rules_with(&runtime, None, &config.rules.params).expect("loads");
    assert_eq!(
        rules.rules()[0].params_json(),
        &serde_json::json!({ "exits": 5, "window": "2m" })
    );
    let typo = file("[rules.params.crash_loop]\nexit = 5\n");
    let config = Config::load(Some(typo.path()), env(&[])).expect("valid toml");
    let err = crate::load_rules_with(&runtime, None, &config.rules.params).expect_err("refused");
    assert!(
        err.to_string()
            .contains("rules.params.crash_loop.exit: `crash_loop` has no parameter `exit`"),
        "{err}"
    );
}

#[test]
fn a_replayed_line_over_the_limit_is_counted_as_the_engine_counts_a_message() {
    use crate::replay::{replay, Actuator, ReplayLine, SimulatedOutcome};
    use salve_connectors::file_source::LineReader;
    use salve_engine::wire::AckStatus;
    let config = salve_engine::EngineConfig {
        max_event_bytes: 100,
        ..salve_engine::EngineConfig::default()
    };
    let mut engine =
        salve_engine::Engine::new(config, |rt| crate::load_rules(rt, None)).expect("rules");
    let long = format!("{{\"entity\":\"{}\"}}\n", "x".repeat(5_000));
    let input =
        format!("{long}{{\"entity\":\"a\",\"kind\":\"metric\",\"name\":\"cpu\",\"value\":1}}\n");
    let actuator = Actuator {
        default: SimulatedOutcome::Ack(AckStatus::Succeeded),
        by_action: std::collections::BTreeMap::new(),
        delay_ms: 1_000,
        operator: Vec::new(),
    };
    let mut dead_letters = Vec::new();
    replay(
        &mut engine,
        &mut LineReader::new(input.as_bytes(), 100),
        actuator,
        &mut |line| {
            if let ReplayLine::DeadLetter { reason, .. } = line {
                dead_letters.push(reason);
            }
        },
    )
    .expect("replays");
    assert_eq!(dead_letters.len(), 1, "{dead_letters:?}");
    assert!(dead_letters[0].contains("5013 bytes"), "{dead_letters:?}");
    assert_eq!(engine.stats().events_in, 2);
    assert_eq!(engine.stats().decode_errors, 1);
}
