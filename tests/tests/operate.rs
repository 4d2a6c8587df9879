//! The operator surface against a real runner on the broker: what only the runner knows
//! (partitions owned, consumer lag, messages out per topic, the event-to-command latency)
//! shows in `salve ctl status` and on `/metrics`, and `salve ctl watch` prints the decisions
//! the runner publishes as they come.

mod support;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use salve::ctl::{CtlArgs, CtlCommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{eventually, load_event, RunningSalve, TestBroker, PATIENCE};

const TOKEN: &str = "operate-test-token";

/// Acts on every entity whose `load` passes 50. Its ack timeout is long, so no retry adds
/// outputs while the test counts them.
const HOT: &str = r#"
fn condition(p) { last("load") > 50.0 }
#{ name: "hot", select: [#{ name: "load" }], action: "cool", ack_timeout: "1h" }
"#;

/// salve on `broker` with the rule above, and the API and the metrics endpoint on free ports.
/// The consumer lag comes from librdkafka's statistics, which the runner turns on by itself.
fn start(broker: &TestBroker) -> (RunningSalve, tempfile::TempDir) {
    let rules = tempfile::tempdir().expect("tempdir");
    std::fs::write(rules.path().join("hot.rhai"), HOT).expect("write");
    let mut config = broker.config();
    config.rules.dir = Some(rules.path().to_owned());
    config.api.listen = "127.0.0.1:0".into();
    config.api.token = TOKEN.into();
    config.metrics.listen = "127.0.0.1:0".into();
    (RunningSalve::start_operated(config), rules)
}

/// Sends `payload` to `partition` of the telemetry topic and waits for the broker to take it.
fn send(broker: &TestBroker, producer: &BaseProducer, partition: i32, payload: &str) {
    producer
        .send(
            BaseRecord::<str, str>::to(&broker.topics.telemetry[0])
                .partition(partition)
                .payload(payload),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn ctl_args(addr: &str, json: bool, command: CtlCommand) -> CtlArgs {
    CtlArgs {
        addr: addr.to_owned(),
        token: Some(TOKEN.to_owned()),
        json,
        ca: None,
        cert: None,
        key: None,
        command,
    }
}

/// `salve ctl --json status`, parsed.
fn ctl_status(salve: &RunningSalve) -> Value {
    let args = ctl_args(&salve.api_addr(), true, CtlCommand::Status);
    let mut out = Vec::new();
    salve
        .operated()
        .runtime
        .block_on(salve::ctl::run(&args, &mut out))
        .expect("salve ctl status");
    serde_json::from_slice(&out).expect("JSON")
}

/// A protobuf JSON integer: a number, or a string for 64-bit ones.
fn int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The samples of `/metrics` as `name{labels}` -> value, labels in the order printed.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn status_and_metrics_report_partitions_lag_messages_out_and_latency_from_the_runner() {
    let broker = TestBroker::new("figures");
    let (salve, _rules) = start(&broker);
    let telemetry = broker.topics.telemetry[0].clone();
    let producer = broker.producer();
    const ENTITIES: u64 = 20;
    for n in 0..ENTITIES {
        send(
            &broker,
            &producer,
            (n % 2) as i32,
            &load_event(&format!("pod-{n}")),
        );
    }
    // One message no one can read: dead-lettered.
    send(&broker, &producer, 0, "{not json");
    salve.wait_for("a command per entity", |engine| {
        engine.stats().commands >= ENTITIES
    });

    // Every partition of the telemetry topic is owned, and caught up: lag known, and 0 once
    // the runner has committed everything it read.
    let status = eventually("every partition owned and caught up", || {
        let status = ctl_status(&salve);
        let assigned = status["assigned"].as_array().cloned().unwrap_or_default();
        let caught_up = assigned.len() == 2 && assigned.iter().all(|a| int(&a["lag"]) == Some(0));
        if caught_up && int(&status["consumerLag"]).unwrap_or(0) == 0 {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    });
    let owned: Vec<(&str, i64)> = status["assigned"]
        .as_array()
        .expect("assigned")
        .iter()
        .map(|a| {
            (
                a["topic"].as_str().unwrap_or_default(),
                int(&a["partition"]).unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(owned, [(telemetry.as_str(), 0), (telemetry.as_str(), 1)]);

    // Messages out, per topic, as the runner counted them: what is on the topics. The runner
    // hands its count of messages in over every 250 ms.
    let status = eventually("every message counted", || {
        let status = ctl_status(&salve);
        let commands = int(&status["published"][&broker.topics.commands]);
        let events_in = int(&status["eventsIn"][&telemetry]);
        if commands == Some(ENTITIES as i64) && events_in == Some(ENTITIES as i64 + 1) {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    });
    let published = |topic: &str| {
        int(&status["published"][topic]).unwrap_or_else(|| panic!("{topic} in {status}"))
    };
    let decisions = published(&broker.topics.decisions);
    broker.read_until(&broker.topics.decisions, |r| r.len() as i64 >= decisions);
    // Read on past the count for a moment, so that a runner counting fewer than it published
    // fails too.
    let on_topic = broker.read_for(&broker.topics.decisions, Duration::from_secs(2), |r| {
        r.len() as i64 > decisions
    });
    assert_eq!(on_topic.len() as i64, decisions, "{status}");
    assert!(
        decisions >= 2 * ENTITIES as i64,
        "a verdict and a transition each: {status}"
    );
    assert_eq!(published(&broker.topics.dead_letter), 1, "{status}");
    let changelog = published(&broker.topics.changelog);
    assert!(
        changelog >= ENTITIES as i64,
        "an incident per entity: {status}"
    );

    // The same figures on /metrics, with the latency of each command from its event.
    let page = support::scrape(salve.metrics_addr());
    let metrics = samples(&page);
    let value = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} not in:\n{page}"))
    };
    for partition in [0, 1] {
        assert_eq!(
            value(&format!(
                "salve_consumer_lag_messages{{topic=\"{telemetry}\",partition=\"{partition}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(
        value(&format!(
            "salve_partitions_assigned{{topic=\"{telemetry}\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "salve_messages_out_total{{topic=\"{}\"}}",
            broker.topics.commands
        )),
        ENTITIES as f64
    );
    assert_eq!(
        value(&format!(
            "salve_messages_out_total{{topic=\"{}\"}}",
            broker.topics.decisions
        )),
        decisions as f64
    );
    assert_eq!(
        value("salve_event_to_command_latency_seconds_count"),
        ENTITIES as f64,
        "one observation per command"
    );
    salve.stop();
}

/// A writer a task fills while the test reads it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn ctl_watch_prints_the_decisions_the_runner_publishes_as_a_table_and_as_json() {
    let broker = TestBroker::new("watch");
    let (salve, _rules) = start(&broker);
    let addr = salve.api_addr();
    let runtime = &salve.operated().runtime;
    let watch = |json: bool| {
        let args = ctl_args(
            &addr,
            json,
            CtlCommand::Watch {
                rule: Some("hot".into()),
                entity: None,
                kinds: vec!["transition".into()],
            },
        );
        let printed = Shared::default();
        let mut out = printed.clone();
        let task = runtime.spawn(async move { salve::ctl::run(&args, &mut out).await });
        (printed, task)
    };
    let (table, table_task) = watch(false);
    let (json, json_task) = watch(true);

    // A watcher sees what is published after its stream opened; until both print, keep
    // sending entities that fail.
    let producer = broker.producer();
    let mut n = 0;
    let start = Instant::now();
    while !(table.text().contains("failing -> remediating")
        && json.text().contains("INCIDENT_STATE_REMEDIATING"))
    {
        assert!(
            start.elapsed() < PATIENCE,
            "table:\n{}\njson:\n{}",
            table.text(),
            json.text()
        );
        send(&broker, &producer, 0, &load_event(&format!("pod-{n}")));
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    table_task.abort();
    json_task.abort();

    let table = table.text();
    let line = table
        .lines()
        .find(|l| l.contains("failing -> remediating"))
        .expect("a line");
    for part in ["transition", "hot", "pod-"] {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
    assert!(
        !table.lines().any(|l| l.contains("verdict")),
        "only transitions, as asked: {table}"
    );
    let decisions: Vec<Value> = json
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let remediating = decisions
        .iter()
        .map(|d| &d["decision"])
        .find(|d| d["to"] == "INCIDENT_STATE_REMEDIATING")
        .expect("a transition to remediating");
    assert_eq!(remediating["rule"], "hot");
    assert_eq!(remediating["from"], "INCIDENT_STATE_FAILING");
    assert_eq!(remediating["kind"], "DECISION_KIND_TRANSITION");
    assert!(
        remediating["incident"]
            .as_str()
            .is_some_and(|id| id.starts_with("hot/pod-")),
        "{remediating}"
    );
    salve.stop();
}
