//! Independent clients drive the loop: kcat produces telemetry and reads the command back;
//! python3-kafka sends the ack and reads the outcome from the decision log. This is the
//! README's walk-through, run against the mock cluster or `SALVE_TEST_BROKERS`.
//!
//! Both clients are Debian packages (`kcat`, `python3-kafka`) that `scripts/test.sh` installs
//! and then sets `SALVE_REQUIRE_INTEROP=1`. Without that variable a missing client skips the
//! test with a message, so `cargo test` still works on a machine without them.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{exit_event, now_ms, RunningSalve, TestBroker};

fn available() -> bool {
    let kcat = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let kafka_python = support::python_kafka_importable();
    if kcat && kafka_python {
        return true;
    }
    assert!(
        std::env::var_os("SALVE_REQUIRE_INTEROP").is_none(),
        "SALVE_REQUIRE_INTEROP is set but kcat ({kcat}) or python3-kafka ({kafka_python}) is missing"
    );
    eprintln!("skipping: kcat ({kcat}) or python3-kafka ({kafka_python}) is not installed; scripts/test.sh installs both");
    false
}

/// Runs `command` to completion or kills it after `limit`; returns its stdout.
fn run_with_limit(
    mut command: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> (bool, String, String) {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("client starts");
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default()).expect("stdin");
    }
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const PYTHON_ACK_AND_WATCH: &str = r#"
import json, sys
from kafka import KafkaConsumer, KafkaProducer
bootstrap, acks, decisions, command_id = sys.argv[1:5]
producer = KafkaProducer(bootstrap_servers=bootstrap)
ack = {"command_id": command_id, "status": "succeeded", "detail": "restarted by python", "actuator": "interop"}
producer.send(acks, key=b"checkout/pod-1", value=json.dumps(ack).encode())
producer.flush()
consumer = KafkaConsumer(decisions, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None, consumer_timeout_ms=45000)
for message in consumer:
    decision = json.loads(message.value)
    if decision.get("command_id") == command_id and decision.get("to") == "verifying":
        print(json.dumps(decision))
        sys.exit(0)
sys.exit("no verifying transition for " + command_id)
"#;

#[test]
fn kcat_and_python_drive_the_whole_loop() {
    if !available() {
        return;
    }
    let broker = TestBroker::new("interop");
    let salve = RunningSalve::start(broker.config());
    let t = now_ms();
    let input: String = (0..3)
        .map(|i| {
            format!(
                "checkout/pod-1|{}\n",
                exit_event("checkout/pod-1", t + i * 1_000)
            )
        })
        .collect();
    let mut produce = Command::new("kcat");
    produce.args([
        "-P",
        "-b",
        &broker.bootstrap,
        "-t",
        &broker.topics.telemetry[0],
        "-K",
        "|",
    ]);
    let (ok, _, stderr) = run_with_limit(produce, Some(input.as_bytes()), Duration::from_secs(30));
    assert!(ok, "kcat produce failed: {stderr}");

    let mut consume = Command::new("kcat");
    consume.args([
        "-C",
        "-b",
        &broker.bootstrap,
        "-t",
        &broker.topics.commands,
        "-o",
        "beginning",
        "-c",
        "1",
        "-q",
        "-f",
        "%k\t%s\n",
    ]);
    let (ok, stdout, stderr) = run_with_limit(consume, None, Duration::from_secs(60));
    assert!(ok, "kcat consume failed: {stderr}");
    let (key, payload) = stdout.trim_end().split_once('\t').expect("key\\tpayload");
    assert_eq!(key, "checkout/pod-1");
    let command: serde_json::Value = serde_json::from_str(payload).expect("command JSON");
    assert_eq!(command["action"], "restart");
    let command_id = command["id"].as_str().expect("id");

    let mut ack = Command::new(support::python());
    ack.args([
        "-c",
        PYTHON_ACK_AND_WATCH,
        &broker.bootstrap,
        &broker.topics.acks,
        &broker.topics.decisions,
        command_id,
    ]);
    let (ok, stdout, stderr) = run_with_limit(ack, None, Duration::from_secs(90));
    assert!(ok, "python3-kafka could not ack and watch: {stderr}");
    // The ack moves the incident on to verification (crash_loop's verify_for).
    let resolved: serde_json::Value = serde_json::from_str(stdout.trim()).expect("decision JSON");
    assert_eq!(resolved["from"], "remediating");
    assert_eq!(
        resolved["actuator"],
        serde_json::Value::Null,
        "transitions carry no actuator; the ack record does"
    );
    let report = salve.stop();
    assert_eq!(report.engine.attempts_succeeded, 1);
}
