//! `salve run` killed with SIGKILL, as a crash or an OOM kill would, while an incident is
//! verifying and another is escalated; then started again on the same broker.
//!
//! The broker is librdkafka's mock cluster in this test process (salve runs as a separate
//! process and reaches it over TCP), or the one in `SALVE_TEST_BROKERS`.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use salve_connectors::{EmbeddedBroker, TopicsConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;
use support::KilledOnDrop;

const PATIENCE: Duration = Duration::from_secs(90);

struct Broker {
    bootstrap: String,
    topics: TopicsConfig,
    _embedded: Option<EmbeddedBroker>,
}

fn broker() -> Broker {
    let prefix = format!("kill-{}", std::process::id());
    let topics = TopicsConfig {
        partitions: 2,
        ..TopicsConfig::with_prefix(&prefix)
    };
    match std::env::var("SALVE_TEST_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    {
        Some(bootstrap) => {
            salve_connectors::topics::ensure_topics(&bootstrap, &Default::default(), &topics)
                .expect("topics");
            Broker {
                bootstrap,
                topics,
                _embedded: None,
            }
        }
        None => {
            let embedded = EmbeddedBroker::start(&topics).expect("mock cluster");
            Broker {
                bootstrap: embedded.bootstrap_servers(),
                topics,
                _embedded: Some(embedded),
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Starts `salve run` and waits for its banner. A failing test does not leave it running.
fn start_salve(config: &std::path::Path) -> KilledOnDrop {
    let mut child = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("salve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.trim_start().starts_with("bootstrap") => break,
            Some(_) => {}
            None => panic!("salve exited before its banner: {:?}", child.wait()),
        }
    }
    // Keep reading, so that salve never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    KilledOnDrop(child)
}

fn produce(producer: &BaseProducer, topic: &str, key: &str, payload: &str) {
    producer
        .send(BaseRecord::to(topic).key(key).payload(payload))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn exit(entity: &str, ts: i64) -> String {
    format!(r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit"}}"#)
}

/// Reads all of `topic` until `done` holds of its JSON records.
fn read_until(
    bootstrap: &str,
    topic: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kill-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&list).expect("assign");
    let start = Instant::now();
    let mut records = Vec::new();
    // Once `done` holds, read on a little: a duplicate would come right after.
    let mut done_at: Option<Instant> = None;
    while done_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1)) {
        if done_at.is_none() && done(&records) {
            done_at = Some(Instant::now());
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{topic}: gave up waiting; read {records:#?}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(Ok(value)) = message
                .payload()
                .map(serde_json::from_slice::<serde_json::Value>)
            {
                records.push(value);
            }
        }
    }
    records
}

fn transition_to<'a>(
    records: &'a [serde_json::Value],
    entity: &str,
    to: &str,
) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|d| d["kind"] == "transition" && d["entity"] == entity && d["to"] == to)
        .collect()
}

#[test]
fn a_killed_salve_resumes_its_incidents_from_the_changelog_and_repeats_nothing() {
    let broker = broker();
    let rules = tempfile::tempdir().expect("tempdir");
    // Verification long enough to kill salve in the middle of it; no retries, so a failed
    // restart escalates at once.
    let source = salve_rules::SHIPPED_RULES
        .iter()
        .find(|(file, _)| file.starts_with("crash_loop"))
        .map(|(_, s)| {
            s.replace("verify_for: \"1m\"", "verify_for: \"20s\"")
                .replace("attempts: 3,", "attempts: 1,")
        })
        .expect("crash_loop ships");
    std::fs::write(rules.path().join("crash_loop.rhai"), source).expect("write");
    let t = &broker.topics;
    let config = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "kill-{pid}"
commit_interval = "100ms"
[kafka.consumer]
"session.timeout.ms" = "6000"
[topics]
telemetry = ["{telemetry}"]
commands = "{commands}"
acks = "{acks}"
decisions = "{decisions}"
escalations = "{escalations}"
changelog = "{changelog}"
dead_letter = "{dead_letter}"
create = false
[rules]
dir = "{rules}"
[api]
listen = ""
[metrics]
listen = ""
"#,
        bootstrap = broker.bootstrap,
        pid = std::process::id(),
        telemetry = t.telemetry[0],
        commands = t.commands,
        acks = t.acks,
        decisions = t.decisions,
        escalations = t.escalations,
        changelog = t.changelog,
        dead_letter = t.dead_letter,
        rules = rules.path().display(),
    );
    let config_path = rules.path().join("salve.toml");
    std::fs::write(&config_path, config).expect("write");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("producer");

    let mut salve = start_salve(&config_path);
    let now = now_ms();
    for (i, entity) in ["verifying/pod", "escalated/pod"].iter().enumerate() {
        for k in 0..3 {
            produce(
                &producer,
                &t.telemetry[0],
                entity,
                &exit(entity, now + i as i64 + k * 100),
            );
        }
    }
    let commands = read_until(&broker.bootstrap, &t.commands, |r| r.len() >= 2);
    for command in &commands {
        let status = if command["entity"] == "verifying/pod" {
            "succeeded"
        } else {
            "failed"
        };
        let ack = serde_json::json!({"command_id": command["id"], "status": status, "actuator": "kill-test"});
        let key = command["entity"].as_str().expect("entity");
        produce(&producer, &t.acks, key, &ack.to_string());
    }
    read_until(&broker.bootstrap, &t.decisions, |r| {
        !transition_to(r, "verifying/pod", "verifying").is_empty()
            && !transition_to(r, "escalated/pod", "escalated").is_empty()
    });

    // SIGKILL: no flush, no commit, no goodbye.
    salve.0.kill().expect("kill");
    salve.0.wait().expect("reaped");
    let mut salve = start_salve(&config_path);

    // The verification goes on where it was and ends; nothing is sent again.
    let decisions = read_until(&broker.bootstrap, &t.decisions, |r| {
        !transition_to(r, "verifying/pod", "resolved").is_empty()
    });
    assert_eq!(
        transition_to(&decisions, "verifying/pod", "resolved").len(),
        1
    );
    // The escalated incident survived: more exits join it, and open nothing new.
    for k in 0..3 {
        produce(
            &producer,
            &t.telemetry[0],
            "escalated/pod",
            &exit("escalated/pod", now_ms() + k),
        );
    }
    // A marker entity after them: once its command is out, the exits before it were seen.
    for k in 0..3 {
        produce(
            &producer,
            &t.telemetry[0],
            "marker/pod",
            &exit("marker/pod", now_ms() + k),
        );
    }
    let commands = read_until(&broker.bootstrap, &t.commands, |r| {
        r.iter().any(|c| c["entity"] == "marker/pod")
    });
    salve.0.kill().expect("kill");
    let _ = salve.0.wait();

    let mut ids: Vec<&str> = commands.iter().filter_map(|c| c["id"].as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no command id twice: {commands:#?}");
    assert_eq!(
        commands
            .iter()
            .filter(|c| c["entity"] == "escalated/pod")
            .count(),
        1,
        "the escalated incident held its rule back after the restart"
    );
    // None lost. One not yet known delivered when salve died is published again by the next
    // start, the same record: consumers dedup by `incident`.
    let escalations = read_until(&broker.bootstrap, &t.escalations, |r| !r.is_empty());
    assert!(
        escalations.iter().all(|e| *e == escalations[0]),
        "one escalation, maybe repeated: {escalations:#?}"
    );
    assert_eq!(escalations[0]["entity"], "escalated/pod");
}
