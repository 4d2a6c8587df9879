//! The `salve` binary as a user runs it.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::KilledOnDrop;

fn salve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_salve"))
}

/// `process_exit` events of entity `a` at `timestamps`, as JSON lines.
fn exits_of_a(timestamps: &[i64]) -> String {
    timestamps
        .iter()
        .map(|ts| {
            format!(
                "{{\"entity\":\"a\",\"ts\":{ts},\"kind\":\"event\",\"name\":\"process_exit\"}}\n"
            )
        })
        .collect()
}

/// A temporary rules directory holding `crash_loop.rhai` with `source`.
fn rules_dir(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("crash_loop.rhai"), source).expect("write");
    dir
}

#[test]
fn run_starts_an_embedded_broker_acts_and_stops_cleanly_on_sigterm() {
    // Killed if an assertion fails first, so that no salve and its broker outlive the test.
    let mut salve_run = KilledOnDrop(
        salve()
            .arg("run")
            .env("SALVE_KAFKA__COMMIT_INTERVAL", "100ms")
            // Free ports: tests run side by side.
            .env("SALVE_API__LISTEN", "127.0.0.1:0")
            .env("SALVE_METRICS__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("salve starts"),
    );
    let child = &mut salve_run.0;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let bootstrap = loop {
        let line = lines.next().expect("banner line").expect("utf-8");
        banner.push(line.clone());
        if let Some(address) = line.trim().strip_prefix("bootstrap") {
            break address.trim().to_owned();
        }
    };
    for line in lines.by_ref().take(7) {
        banner.push(line.expect("utf-8"));
    }
    let banner = banner.join("\n");
    for needle in [
        "embedded broker",
        "salve.telemetry",
        "salve.commands",
        "salve.acks",
        "salve.decisions",
        "salve.deadletter",
        "crash_loop",
    ] {
        assert!(banner.contains(needle), "banner lacks {needle}:\n{banner}");
    }

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for i in 0..3 {
        let event = format!(
            r#"{{"entity":"web/pod-7","ts":{},"kind":"event","name":"process_exit"}}"#,
            now + i
        );
        producer
            .send(
                BaseRecord::to("salve.telemetry")
                    .key("web/pod-7")
                    .payload(&event),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        // librdkafka needs a group id to assign(); this reader never joins or commits.
        .set("group.id", "cli-test")
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in 0..4 {
        partitions
            .add_partition_offset("salve.commands", partition, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let start = Instant::now();
    let mut command = None;
    while command.is_none() && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            command = message
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned());
        }
    }
    let command = command.expect("a command arrives");
    assert!(
        command.contains("\"action\":\"restart\"") && command.contains("web/pod-7"),
        "{command}"
    );

    // The embedded broker goes away with salve; close our clients while it is still there.
    drop(consumer);
    drop(producer);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("salve exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(
        stderr.contains("salve stopped") && stderr.contains("commands=1"),
        "{stderr}"
    );
}

#[test]
fn run_rejects_an_unknown_config_key_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("salve.toml");
    std::fs::write(&path, "[kafka]\nbrokres = \"localhost:9092\"\n").expect("write");
    let output = salve()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("brokres") && stderr.contains("salve.toml"),
        "{stderr}"
    );
}

#[test]
fn check_reports_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("good.rhai"),
        salve_rules::SHIPPED_RULES[0].1,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("let.rhai"),
        "fn condition(p) { let n = count(\"x\", 60); n > 2 }\n#{ name: \"with_let\", select: [#{ name: \"x\" }], action: \"a\" }\n",
    )
    .expect("write");
    let output = salve().arg("check").arg(dir.path()).output().expect("runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Each rule says how its verdict functions run.
    assert!(
        stdout.contains("crash_loop  (condition: native)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("with_let  (condition: rhai, memoized)"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("broken.rhai"),
        "fn condition(p) {\n    count(\"x\", 60) >=\n}\n#{}\n",
    )
    .expect("write");
    let output = salve().arg("check").arg(dir.path()).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.rhai:3:"), "{stderr}");
}

#[test]
fn replay_prints_typed_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let lines = exits_of_a(&[1_000, 2_000, 3_000]);
    // The unreadable line stamped 9 s does not move the clock: both dead letters come before
    // the ack due at 5 s.
    let bad = "{\"entity\":\"a\",\"ts\":9000,\"kind\":\"bogus\"}\n";
    std::fs::write(&events, lines + bad + "oops\n").expect("write");
    let replay = [
        "replay",
        "--ack-map",
        r#"{"restart":"succeeded"}"#,
        "--ack-delay",
        "2s",
    ];
    let output = salve().args(replay).arg(&events).output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let types: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["type"]
                .as_str()
                .expect("type")
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "decision",
            "decision",
            "command",
            "decision",
            "dead_letter",
            "dead_letter",
            "ack",
            "decision",
            // remediating -> verifying, then verifying -> resolved once verify_for has passed
            "decision",
            "decision"
        ]
    );

    // `-` reads the same events from standard input, to the same lines.
    let mut piped = salve()
        .args(replay)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    {
        use std::io::Write as _;
        let mut stdin = piped.stdin.take().expect("stdin");
        stdin
            .write_all(&std::fs::read(&events).expect("read back"))
            .expect("pipe");
    }
    let from_stdin = piped.wait_with_output().expect("exits");
    assert!(from_stdin.status.success());
    assert_eq!(
        String::from_utf8_lossy(&from_stdin.stdout),
        String::from_utf8_lossy(&output.stdout)
    );

    let output = salve()
        .args(["replay", "--ack", "sometimes"])
        .arg(&events)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sometimes"));
}

#[test]
fn replay_refuses_a_line_over_the_limit_by_its_whole_size_and_an_unreadable_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("salve.toml");
    std::fs::write(&config, "[engine]\nmax_event_bytes = 100\n").expect("write");
    let events = dir.path().join("events.jsonl");
    let long = format!("{{\"entity\":\"{}\"}}\n", "x".repeat(5_000));
    std::fs::write(&events, format!("{long}{}", exits_of_a(&[1_000]))).expect("write");
    let output = salve()
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&events)
        .output()
        .expect("runs");
    assert!(output.status.success());
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("JSON");
    assert_eq!(first["type"], "dead_letter");
    assert_eq!(first["code"], "too_large");
    assert_eq!(first["line"], 1);
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("5013 bytes")),
        "{first}"
    );

    // A directory opens, and fails on its first read.
    let output = salve()
        .arg("replay")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn test_passes_on_the_shipped_rule_pack() {
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/pack");
    let output = salve().arg("test").arg(&pack).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(
        !stdout.starts_with("0 passed"),
        "the pack has cases: {stdout}"
    );
}

#[test]
fn test_fails_with_a_diff_when_a_rule_no_longer_does_what_its_case_expects() {
    let stricter = salve_rules::SHIPPED_RULES[0]
        .1
        .replace("exits: 3", "exits: 4");
    let dir = rules_dir(&stricter);
    let case = dir.path().join("tests/three_exits");
    std::fs::create_dir_all(&case).expect("mkdir");
    let events = exits_of_a(&[0, 1_000, 2_000]);
    std::fs::write(case.join("events.jsonl"), events).expect("write");
    // What the shipped rule does: three exits restart. The stricter copy no longer does.
    let expected = "{\"type\":\"command\",\"v\":1,\"id\":\"crash_loop/a@0:0:3#1\",\"incident\":\"crash_loop/a@0:0:3\",\"entity\":\"a\",\"action\":\"restart\",\"params\":{},\"rule\":\"crash_loop\",\"reason\":\"count(process_exit, 60s) = 3\",\"attempt\":1,\"issued_at\":2000,\"expires_at\":32000}\n";
    std::fs::write(case.join("expected.jsonl"), expected).expect("write");
    let output = salve().arg("test").arg(dir.path()).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL three_exits"), "{stdout}");
    assert!(
        stdout.contains("- {\"type\":\"command\""),
        "the missing command is shown: {stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");

    let output = salve()
        .args(["test", "--update"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(output.status.success());
    let output = salve().arg("test").arg(dir.path()).output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn test_refuses_to_pass_with_nothing_tested() {
    let dir = rules_dir(salve_rules::SHIPPED_RULES[0].1);
    let output = salve().arg("test").arg(dir.path()).output().expect("runs");
    assert_eq!(output.status.code(), Some(2), "no cases at all");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no test cases"));

    // A case whose events are all refused is not a silent pass, and a case directory
    // without events.jsonl is reported.
    let case = dir.path().join("tests/typo");
    std::fs::create_dir_all(&case).expect("mkdir");
    std::fs::write(
        case.join("events.jsonl"),
        "{\"entity\":\"a\",\"kind\":\"evnt\",\"name\":\"process_exit\"}\n",
    )
    .expect("write");
    std::fs::write(case.join("expected.jsonl"), "\n").expect("write");
    std::fs::create_dir_all(dir.path().join("tests/misnamed")).expect("mkdir");
    std::fs::write(dir.path().join("tests/misnamed/event.jsonl"), "{}\n").expect("write");
    let output = salve().arg("test").arg(dir.path()).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL typo") && stdout.contains("+ {\"type\":\"dead_letter\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL misnamed") && stdout.contains("no events.jsonl"),
        "{stdout}"
    );
}

#[test]
fn test_compares_json_values_not_spacing() {
    let dir = rules_dir(salve_rules::SHIPPED_RULES[0].1);
    let case = dir.path().join("tests/three");
    std::fs::create_dir_all(&case).expect("mkdir");
    let events = exits_of_a(&[0, 1_000, 2_000]);
    std::fs::write(case.join("events.jsonl"), events).expect("write");
    let output = salve()
        .args(["test", "--update"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(output.status.success());
    // Re-space every expected line: the same JSON values still match.
    let expected = std::fs::read_to_string(case.join("expected.jsonl")).expect("read");
    let respaced: String = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).expect("json");
            format!(
                "{}\n",
                serde_json::to_string_pretty(&value)
                    .expect("json")
                    .replace('\n', " ")
            )
        })
        .collect();
    std::fs::write(case.join("expected.jsonl"), respaced).expect("write");
    let output = salve().arg("test").arg(dir.path()).output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn check_warns_about_a_series_that_no_rule_selects_and_no_one_documents() {
    let dir = rules_dir(
        "fn condition(p) {\n  count(\"proces_exit\", \"60s\") >= 3\n}\n#{ name: \"typo\", select: [#{ name: \"process_exit\" }], action: \"restart\" }\n",
    );
    let output = salve().arg("check").arg(dir.path()).output().expect("runs");
    assert!(output.status.success(), "a warning is not an error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("crash_loop.rhai:2: typo reads the series `proces_exit`"),
        "{stderr}"
    );
    let clean = rules_dir(salve_rules::SHIPPED_RULES[0].1);
    let output = salve()
        .arg("check")
        .arg(clean.path())
        .output()
        .expect("runs");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("warning"));
}

#[test]
fn actuate_exec_refuses_a_bad_map_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("actions.toml");
    std::fs::write(
        &map,
        "[actions]\nrestart = [\"systemctl\", \"restart\", \"{labels.service}\"]\n",
    )
    .expect("write");
    let output = salve()
        .args(["actuate", "exec", "--map"])
        .arg(&map)
        .env("SALVE_KAFKA__BROKERS", "127.0.0.1:9")
        .output()
        .expect("salve runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("actions.toml"), "{stderr}");
    assert!(stderr.contains("`actions.restart`"), "{stderr}");
    assert!(stderr.contains("{labels.service}"), "{stderr}");
}

#[test]
fn demo_refuses_an_unknown_scenario_and_a_speed_out_of_range() {
    let unknown = salve()
        .args(["demo", "--scenario", "meteor"])
        .output()
        .expect("salve runs");
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("crash-loop, latency-spike"), "{stderr}");
    let too_fast = salve()
        .args(["demo", "--speed", "10"])
        .output()
        .expect("salve runs");
    assert_eq!(too_fast.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&too_fast.stderr);
    assert!(stderr.contains("--speed must be from 1 to 4"), "{stderr}");
}

#[test]
fn demo_runs_one_scenario_prints_its_summary_without_colours_and_exits_0() {
    let output = salve()
        .args(["demo", "--scenario", "latency-spike", "--speed", "4"])
        .stdin(Stdio::null())
        .output()
        .expect("salve runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains('\x1b'), "no colours on a pipe:\n{stdout}");
    assert!(stdout.contains("verdict transient"), "{stdout}");
    assert!(stdout.contains("1 of 1 scenarios as expected"), "{stdout}");
}

#[test]
fn a_rejected_reload_is_logged_with_file_and_line_as_json_lines_when_configured() {
    let crash_loop = salve_rules::SHIPPED_RULES
        .iter()
        .find(|(file, _)| *file == "crash_loop.rhai")
        .map(|(_, source)| *source)
        .expect("crash_loop ships");
    let rules = rules_dir(crash_loop);
    let file = rules.path().join("crash_loop.rhai");
    let mut salve_run = KilledOnDrop(
        salve()
            .arg("run")
            .env("SALVE_LOG__FORMAT", "json")
            .env("SALVE_RULES__DIR", rules.path())
            .env("SALVE_RULES__RELOAD_DEBOUNCE", "50ms")
            .env("SALVE_API__LISTEN", "127.0.0.1:0")
            .env("SALVE_METRICS__LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("salve starts"),
    );
    let child = &mut salve_run.0;
    let mut banner = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert!(
        banner.any(|line| line.is_ok_and(|l| l.trim().starts_with("bootstrap"))),
        "salve printed its banner"
    );
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });

    // Written until the watcher sees it: the first write may come before the watch is set.
    let broken = "fn condition(p) { count(\"process_exit\", \"60s\") >= }\n";
    let start = Instant::now();
    let mut read = Vec::new();
    let rejected = 'found: loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no rejected reload logged:\n{}",
            read.join("\n")
        );
        std::fs::write(&file, broken).expect("write");
        while let Ok(line) = logged.recv_timeout(Duration::from_secs(1)) {
            let entry: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"));
            read.push(line);
            let message = entry["fields"]["message"].as_str().unwrap_or_default();
            if message.contains("rule reload rejected") {
                break 'found entry;
            }
        }
    };
    assert_eq!(rejected["level"], "ERROR", "{rejected}");
    assert_eq!(rejected["fields"]["trigger"], "file", "{rejected}");
    let message = rejected["fields"]["message"].as_str().unwrap_or_default();
    // The file's path, :line:column: then what is wrong.
    let at = format!("{}:1:", file.display());
    let problem = message
        .lines()
        .find_map(|l| l.trim().strip_prefix(at.as_str()))
        .unwrap_or_else(|| panic!("no {at} in {message:?}"));
    let (column, what) = problem.split_once(": ").expect("column: message");
    assert!(column.parse::<u32>().is_ok(), "{message:?}");
    assert!(!what.trim().is_empty(), "{message:?}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(child.wait().expect("salve exits").success());
}
