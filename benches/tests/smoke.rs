//! The benchmark binaries still run: tiny sizes, a few seconds, no figures checked.
#![forbid(unsafe_code)]

use std::process::Command;

fn run(exe: &str, args: &[&str]) -> String {
    let output = Command::new(exe).args(args).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{exe} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn throughput_runs_every_phase_on_a_small_topic() {
    let out = run(
        env!("CARGO_BIN_EXE_throughput"),
        &["--events", "2000", "--entities", "200", "--timeout", "60"],
    );
    for phase in [
        "(a) bare",
        "(b) salve runner",
        "(c) salve engine",
        "(d) BaseConsumer",
        "(e) salve replay",
    ] {
        assert!(out.contains(phase), "{phase} missing from:\n{out}");
    }
    assert!(out.contains("(b)/(a) = "), "{out}");
}

#[test]
fn memory_runs_both_scenarios() {
    let out = run(
        env!("CARGO_BIN_EXE_memory"),
        &["--idle", "1000", "--active", "100:60"],
    );
    assert!(out.contains("idle:1000"), "{out}");
    assert!(out.contains("active:100:60"), "{out}");
}

#[test]
fn latency_measures_salve_and_the_python_detector() {
    // The python detector needs Debian's python3-kafka (scripts/install-test-deps.sh).
    let out = run(
        env!("CARGO_BIN_EXE_latency"),
        &[
            "--detector",
            "salve,salve-defaults,python",
            "--backlog",
            "2000",
            "--entities",
            "200",
            "--rate",
            "2000",
            "--seconds",
            "2",
            "--warmup-seconds",
            "0",
            "--bursts-per-second",
            "5",
            "--timeout",
            "60",
        ],
    );
    assert_latency_lines(&out, &["salve", "salve-defaults", "python"]);
    assert!(out.contains("max throughput"), "{out}");
}

/// Asserts that the latency benchmark printed a line of figures for each of `detectors`.
fn assert_latency_lines(out: &str, detectors: &[&str]) {
    for detector in detectors {
        let prefix = format!("{detector} ");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(" ms")),
            "no latency line for {detector:?} in:\n{out}"
        );
    }
}

/// Runs `exe` with `args` on the broker in `SALVE_TEST_BROKERS` (Tansu, in scripts/test.sh's
/// second pass), checks that it says so, and returns its output. `None` on the mock-only
/// pass, where there is nothing to run against.
fn run_on_external_broker(exe: &str, args: &[&str]) -> Option<String> {
    let brokers = std::env::var("SALVE_TEST_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())?;
    let out = run(exe, &[&["--brokers", brokers.as_str()], args].concat());
    assert!(
        out.contains(&format!("broker: external at {brokers}")),
        "{out}"
    );
    Some(out)
}

#[test]
fn throughput_runs_against_an_external_broker() {
    let Some(out) = run_on_external_broker(
        env!("CARGO_BIN_EXE_throughput"),
        &[
            "--phases",
            "abd",
            "--events",
            "2000",
            "--entities",
            "200",
            "--timeout",
            "60",
        ],
    ) else {
        return;
    };
    for phase in ["(a) bare", "(b) salve runner", "(d) BaseConsumer"] {
        assert!(out.contains(phase), "{phase} missing from:\n{out}");
    }
}

#[test]
fn latency_runs_against_an_external_broker() {
    let Some(out) = run_on_external_broker(
        env!("CARGO_BIN_EXE_latency"),
        &[
            "--detector",
            "relay,salve",
            "--backlog",
            "500",
            "--entities",
            "50",
            "--rate",
            "500",
            "--seconds",
            "2",
            "--warmup-seconds",
            "0",
            "--bursts-per-second",
            "5",
            "--timeout",
            "60",
        ],
    ) else {
        return;
    };
    assert_latency_lines(&out, &["relay", "salve"]);
}

#[test]
fn scaling_runs_entity_and_rule_scenarios() {
    let out = run(
        env!("CARGO_BIN_EXE_scaling"),
        &[
            "--entities",
            "1000",
            "--rules",
            "10:1:2",
            "--rules-entities",
            "500",
            "--events",
            "20000",
        ],
    );
    assert!(out.contains("entities:1000"), "{out}");
    assert!(out.contains("rules:10:1:2"), "{out}");
}
