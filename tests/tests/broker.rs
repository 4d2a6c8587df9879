//! The closed loop through a real broker over TCP: telemetry in, a command out, an ack in, the
//! outcome in the decision log; redelivery after a crash; dead letters; a runaway rule.

mod support;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use salve_connectors::dead_letter::headers;
use std::time::Duration;
use support::{eventually, exit_event, matching, now_ms, RunningSalve, TestBroker};

/// Produces `count` exits of `entity`, `step_ms` apart from `t`, keyed by the entity.
fn produce_exits(broker: &TestBroker, entity: &str, t: i64, count: i64, step_ms: i64) {
    for i in 0..count {
        broker.produce(
            &broker.topics.telemetry[0],
            Some(entity),
            exit_event(entity, t + i * step_ms).as_bytes(),
        );
    }
}

fn commands_for(records: &[support::Record], entity: &str) -> Vec<serde_json::Value> {
    matching(records, |v| {
        v["entity"] == entity && v["action"] == "restart"
    })
}

/// A rules directory with the shipped crash_loop, its `from` text replaced by `to`.
fn crash_loop_with(from: &str, to: &str) -> tempfile::TempDir {
    let rules = tempfile::tempdir().expect("tempdir");
    let source = salve_rules::SHIPPED_RULES[0].1.replace(from, to);
    assert!(source.contains(to), "crash_loop no longer has {from}");
    std::fs::write(rules.path().join("crash_loop.rhai"), source).expect("write");
    rules
}

#[test]
fn three_exits_yield_one_restart_and_an_ack_resolves_the_incident() {
    let broker = TestBroker::new("loop");
    // The shipped rule verifies a restart for a minute; two seconds keep the test short.
    let rules = crash_loop_with("verify_for: \"1m\"", "verify_for: \"2s\"");
    let mut config = broker.config();
    config.rules.dir = Some(rules.path().to_owned());
    let salve = RunningSalve::start(config);
    let t = now_ms();
    produce_exits(&broker, "checkout/pod-1", t, 3, 1_000);
    let records = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    let commands = commands_for(&records, "checkout/pod-1");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let command = &commands[0];
    assert_eq!(command["v"], 1);
    assert_eq!(command["rule"], "crash_loop");
    assert_eq!(records[0].key.as_deref(), Some("checkout/pod-1"));
    let id = command["id"].as_str().expect("id").to_owned();

    let ack = serde_json::json!({"command_id": id, "status": "succeeded", "detail": "pod deleted", "actuator": "test"});
    broker.produce(
        &broker.topics.acks,
        Some("checkout/pod-1"),
        ack.to_string().as_bytes(),
    );
    let decisions = broker.read_until(&broker.topics.decisions, |r| {
        !matching(r, |v| v["to"] == "resolved").is_empty()
    });
    let resolved = matching(&decisions, |v| v["to"] == "resolved");
    assert_eq!(resolved.len(), 1, "{decisions:?}");
    assert_eq!(resolved[0]["command_id"], id.as_str());
    assert_eq!(resolved[0]["from"], "verifying", "{decisions:?}");
    assert!(!matching(&decisions, |v| v["kind"] == "verdict"
        && v["evidence"][0]["value"] == 3.0)
    .is_empty());

    // Nothing more follows: still exactly one command once everything has settled.
    let report = salve.stop();
    assert_eq!(report.engine.commands, 1);
    let records = broker.read_for(&broker.topics.commands, Duration::from_secs(2), |_| false);
    assert_eq!(commands_for(&records, "checkout/pod-1").len(), 1);
}

#[test]
fn a_restart_before_the_commit_restores_the_incident_from_the_changelog_and_sends_nothing_twice() {
    let broker = TestBroker::new("redeliver");
    let mut config = broker.config();
    // Never commit on the interval: only the graceful stop at the end commits.
    config.kafka.commit_interval_ms = 3_600_000;
    let salve = RunningSalve::start(config.clone());
    let t = now_ms();
    produce_exits(&broker, "checkout/pod-1", t, 3, 1_000);
    let records = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    let id = commands_for(&records, "checkout/pod-1")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The incident's state is on the changelog before the crash.
    broker.read_until(&broker.topics.changelog, |r| !r.is_empty());
    let crashed = salve.kill();
    assert_eq!(crashed.commits, 0, "a crash commits nothing");
    assert!(crashed.aborted, "and says it was aborted");

    let salve = RunningSalve::start(config.clone());
    // The incident comes back from the changelog, still waiting for its ack: the ack of the
    // command sent before the crash moves it on. (Until the partition is assigned again, the
    // ack matches nothing here, so it is sent until it does.)
    let ack = serde_json::json!({"command_id": id, "status": "succeeded"}).to_string();
    let mut verifying = Vec::new();
    for _ in 0..15 {
        broker.produce(&broker.topics.acks, Some("checkout/pod-1"), ack.as_bytes());
        let decisions = broker.read_for(&broker.topics.decisions, Duration::from_secs(2), |r| {
            !matching(r, |v| v["to"] == "verifying").is_empty()
        });
        verifying = matching(&decisions, |v| v["to"] == "verifying");
        if !verifying.is_empty() {
            break;
        }
    }
    assert_eq!(verifying.len(), 1, "the restored incident took its ack");
    assert_eq!(verifying[0]["command_id"], id.as_str());
    // The events are delivered again, and join the restored incident: no command twice.
    let records = broker.read_for(&broker.topics.commands, Duration::from_secs(2), |_| false);
    let commands = commands_for(&records, "checkout/pod-1");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let report = salve.stop();
    assert_eq!(
        report.engine.events_in, 3,
        "the events were delivered again"
    );
    assert!(report.engine.incidents_restored >= 1, "{:?}", report.engine);
    assert_eq!(report.engine.commands, 0);
    assert!(report.commits >= 1, "a graceful stop commits");

    // After the commit, a third run has nothing left to redo.
    let salve = RunningSalve::start(config);
    let records = broker.read_for(&broker.topics.commands, Duration::from_secs(3), |_| false);
    let report = salve.stop();
    assert_eq!(
        report.engine.events_in, 0,
        "committed events are not delivered again"
    );
    assert_eq!(commands_for(&records, "checkout/pod-1").len(), 1);
}

#[test]
fn a_changelog_batch_of_many_records_is_restored_in_full() {
    let broker = TestBroker::new("batch-restore");
    let mut config = broker.config();
    config.kafka.commit_interval_ms = 3_600_000;
    // Every changelog record of the first run in one batch per partition. Tansu 0.6 reports a
    // partition's high watermark as its last batch's base offset + 1, so a restore that read
    // only up to the watermark kept the first record of that batch and lost the rest. The mock
    // cluster reports it right: this test guards the restore on Tansu (scripts/test.sh).
    config
        .kafka
        .record_producer
        .insert("linger.ms".into(), "1000".into());
    let salve = RunningSalve::start(config.clone());
    let entities: Vec<String> = (0..6).map(|i| format!("checkout/pod-{i}")).collect();
    let t = now_ms();
    let producer = broker.producer();
    for i in 0..3 {
        for entity in &entities {
            let payload = exit_event(entity, t + i * 1_000);
            let record = rdkafka::producer::BaseRecord::to(&broker.topics.telemetry[0])
                .key(entity.as_str())
                .payload(payload.as_bytes());
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
    // Every incident's record in the changelog before the crash.
    let recorded = |records: &[support::Record]| {
        entities.iter().all(|entity| {
            records.iter().any(|r| {
                r.key
                    .as_deref()
                    .is_some_and(|k| k.ends_with(&format!("|{entity}")))
            })
        })
    };
    let changelog = broker.read_until(&broker.topics.changelog, recorded);
    assert!(recorded(&changelog), "{changelog:?}");
    salve.kill();

    let salve = RunningSalve::start_operated(config);
    let events = 3 * entities.len() as u64;
    salve.wait_for("the events to be delivered again", move |engine| {
        engine.stats().events_in >= events
    });
    let report = salve.stop();
    assert_eq!(
        report.engine.incidents_restored,
        entities.len() as u64,
        "every open incident comes back: {:?}",
        report.engine
    );
    assert_eq!(report.engine.commands, 0, "none is sent twice");
}

/// Two members share the partitions. The one whose incident waits for an ack stops, and the
/// ack comes while the partition moves to the other, before that one has restored the
/// incident: the other's follower read it all the same, and applies it once the incident is
/// restored, so the attempt succeeds instead of timing out and restarting the pod again.
#[test]
fn an_ack_that_comes_while_its_partition_moves_is_applied_by_the_new_owner() {
    let broker = TestBroker::new("ack-move");
    let mut config = broker.config();
    config.api.listen = "127.0.0.1:0".into();
    config.metrics.listen = "127.0.0.1:0".into();
    let members = [
        RunningSalve::start_operated(config.clone()),
        RunningSalve::start_operated(config),
    ];
    let entity = "checkout/pod-1";
    produce_exits(&broker, entity, now_ms(), 3, 1_000);
    let commands = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    let command: serde_json::Value =
        serde_json::from_slice(&commands[0].payload).expect("a command");
    let id = command["id"].as_str().expect("an id").to_owned();
    let issued_by = |member: &RunningSalve| member.ask(|engine, _| engine.stats().commands) > 0;
    let [a, b] = members;
    let (owner, other) = if issued_by(&a) { (a, b) } else { (b, a) };
    let handed_over = owner.stop();
    assert_eq!(handed_over.engine.commands, 1);

    let ack = serde_json::json!({
        "v": 1, "command_id": id, "status": "succeeded", "detail": "restarted", "actuator": "test",
    });
    broker.produce(
        &broker.topics.acks,
        Some(entity),
        ack.to_string().as_bytes(),
    );
    other.wait_for("the moved incident to take its ack", |engine| {
        engine.stats().attempts_succeeded == 1
    });
    let report = other.stop();
    assert_eq!(report.engine.incidents_restored, 1, "{:?}", report.engine);
    assert_eq!(report.engine.attempts_timed_out, 0);
    assert_eq!(report.engine.commands, 0, "the pod is not restarted again");
}

#[test]
fn bad_input_goes_to_the_dead_letter_topic_and_salve_keeps_running() {
    let broker = TestBroker::new("dlq");
    let salve = RunningSalve::start(broker.config());
    let telemetry = &broker.topics.telemetry[0];
    // 10 MB where the broker can hold it. librdkafka's mock cluster keeps only ~5 MiB per
    // partition (hard-coded) and evicts the whole partition past that, so there the message is
    // 4 MiB: still four times salve's default limit of 1 MiB.
    let huge_size = if broker.is_external() {
        10 * 1024 * 1024
    } else {
        4 * 1024 * 1024
    };
    let huge = {
        let mut big =
            br#"{"entity":"checkout/pod-1","kind":"event","name":"process_exit","attrs":""#
                .to_vec();
        big.resize(huge_size, b'x');
        big.extend_from_slice(b"\"}");
        big
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"\x00\x9f\x92\x96 garbage \xff".to_vec()),
        (
            "not_json",
            br#"{"entity":"checkout/pod-1","kind":"ev"#.to_vec(),
        ),
        ("too_large", huge),
        (
            "missing_field",
            br#"{"kind":"event","name":"process_exit"}"#.to_vec(),
        ),
    ];
    for (_, payload) in &bad {
        broker.produce(telemetry, None, payload);
    }
    let t = now_ms();
    for i in 0..3 {
        broker.produce(
            telemetry,
            Some("checkout/pod-2"),
            exit_event("checkout/pod-2", t + i).as_bytes(),
        );
    }
    let commands = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    assert_eq!(
        commands_for(&commands, "checkout/pod-2").len(),
        1,
        "salve kept running after bad input"
    );

    let dead = broker.read_until(&broker.topics.dead_letter, |r| r.len() >= bad.len());
    assert_eq!(
        dead.len(),
        bad.len(),
        "every bad message is dead-lettered once"
    );
    let mut codes: Vec<&str> = dead
        .iter()
        .map(|r| r.header(headers::CODE).expect("code header"))
        .collect();
    let mut expected: Vec<&str> = bad.iter().map(|(code, _)| *code).collect();
    codes.sort_unstable();
    expected.sort_unstable();
    assert_eq!(codes, expected);
    for record in &dead {
        assert!(!record
            .header(headers::REASON)
            .unwrap_or_default()
            .is_empty());
        assert_eq!(record.header(headers::TOPIC), Some(telemetry.as_str()));
        assert!(record.header(headers::OFFSET).is_some());
        let original = bad
            .iter()
            .find(|(code, _)| Some(*code) == record.header(headers::CODE))
            .map(|(_, p)| p);
        match record.header(headers::ORIGINAL_SIZE) {
            // The oversized message keeps its head, and says how large it was.
            Some(size) => {
                assert_eq!(size, (huge_size + 2).to_string());
                assert_eq!(record.payload.len(), broker.topics.dead_letter_max_bytes);
            }
            None => {
                assert!(
                    bad.iter().any(|(_, p)| *p == record.payload),
                    "original bytes kept: {original:?}"
                );
            }
        }
    }
    let report = salve.stop();
    assert_eq!(report.dead_lettered, 4);
    assert_eq!(report.engine.decode_errors, 4);
}

#[test]
fn a_rule_stuck_in_a_loop_is_stopped_and_the_other_rules_still_act() {
    let broker = TestBroker::new("budget");
    let rules = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        rules.path().join("crash_loop.rhai"),
        salve_rules::SHIPPED_RULES[0].1,
    )
    .expect("write");
    std::fs::write(
        rules.path().join("spin.rhai"),
        "fn condition(p) { loop { } }\n#{ name: \"spin\", select: [#{ kind: \"event\" }], action: \"none\" }\n",
    )
    .expect("write");
    let mut config = broker.config();
    config.rules.dir = Some(rules.path().to_owned());
    let salve = RunningSalve::start(config);
    let t = now_ms();
    produce_exits(&broker, "checkout/pod-3", t, 3, 1);
    let records = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    assert_eq!(commands_for(&records, "checkout/pod-3").len(), 1);
    let report = salve.stop();
    assert_eq!(
        report.engine.rule_budget_stops, 3,
        "spin was stopped on each of the 3 events"
    );
}

#[test]
fn a_missing_ack_fails_the_attempt_and_a_bad_ack_is_dead_lettered() {
    let broker = TestBroker::new("timeout");
    let rules = crash_loop_with("ack_timeout: \"30s\"", "ack_timeout: \"1s\"");
    let mut config = broker.config();
    config.rules.dir = Some(rules.path().to_owned());
    let salve = RunningSalve::start(config);
    broker.produce(&broker.topics.acks, None, b"{\"status\":\"succeeded\"}");
    let t = now_ms();
    produce_exits(&broker, "checkout/pod-4", t, 3, 1);
    // The attempt fails; crash_loop tries again after a backoff.
    let decisions = broker.read_until(&broker.topics.decisions, |r| {
        !matching(r, |v| v["to"] == "backing_off").is_empty()
    });
    let failed = matching(&decisions, |v| v["to"] == "backing_off");
    assert_eq!(failed.len(), 1, "{decisions:?}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no final ack"),
        "{failed:?}"
    );
    let dead = broker.read_until(&broker.topics.dead_letter, |r| !r.is_empty());
    assert_eq!(dead[0].header(headers::CODE), Some("invalid_ack"));
    let report = salve.stop();
    assert_eq!(report.engine.attempts_timed_out, 1);
}

/// Dead letters, decisions and changelog records are batched, here for 2 s, far longer than
/// this test's commit interval: the offset of an event must still not be committed before its
/// dead letter is on the broker, or a crash in between would lose the bad input.
#[test]
fn an_offset_is_committed_only_once_what_its_event_caused_is_delivered() {
    let broker = TestBroker::new("records-first");
    let mut config = broker.config();
    config.kafka.commit_interval_ms = 5;
    config
        .kafka
        .record_producer
        .insert("linger.ms".into(), "2000".into());
    let salve = RunningSalve::start(config);
    broker.produce(&broker.topics.telemetry[0], Some("bad/one"), b"not json");

    // Watch the group's committed offsets, and at the first one look at once whether the
    // dead letter is there: a commit that ran ahead of the record shows as a committed offset
    // while the dead-letter topic is still empty.
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &broker.group)
        .create()
        .expect("watcher");
    let telemetry = &broker.topics.telemetry[0];
    let partitions = watcher
        .fetch_metadata(Some(telemetry), Duration::from_secs(10))
        .expect("metadata")
        .topics()[0]
        .partitions()
        .len() as i32;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(telemetry, partition);
    }
    let dead_letter_partitions = watcher
        .fetch_metadata(Some(&broker.topics.dead_letter), Duration::from_secs(10))
        .expect("metadata")
        .topics()[0]
        .partitions()
        .len() as i32;
    let delivered_dead_letters = || -> Result<i64, String> {
        let mut delivered = 0;
        for p in 0..dead_letter_partitions {
            let (_, high) = watcher
                .fetch_watermarks(&broker.topics.dead_letter, p, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            delivered += high;
        }
        Ok(delivered)
    };
    let committed = eventually("the bad event's offset to be committed", || {
        let offsets = watcher
            .committed_offsets(list.clone(), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let committed = offsets
            .elements()
            .iter()
            .filter(|e| matches!(e.offset(), Offset::Offset(o) if o > 0))
            .count();
        if committed == 0 {
            return Err("nothing committed yet".into());
        }
        delivered_dead_letters()
    });
    assert_eq!(
        committed, 1,
        "the offset was committed before its dead letter was delivered"
    );
    assert_eq!(salve.stop().dead_lettered, 1);
}

#[test]
fn when_outputs_cannot_be_delivered_salve_stops_without_committing() {
    let broker = TestBroker::new("undeliverable");
    let Some(embedded) = broker.embedded() else {
        eprintln!("fault injection needs the mock cluster; this test checks nothing on an external broker");
        return;
    };
    let t = now_ms();
    produce_exits(&broker, "checkout/pod-5", t, 3, 1);
    // Every produce request fails for a while: the command and its decisions are not delivered.
    embedded.fail_next_produce_requests(1_000);
    let error = RunningSalve::start(broker.config()).wait_for_failure();
    assert!(
        error.contains("could not be delivered") && error.contains("not committed"),
        "{error}"
    );

    // Nothing was committed, so a healthy restart processes the same events again.
    embedded.clear_produce_faults();
    let salve = RunningSalve::start(broker.config());
    let records = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    assert_eq!(commands_for(&records, "checkout/pod-5").len(), 1);
    let report = salve.stop();
    assert_eq!(report.engine.events_in, 3, "all three events came back");
}

#[test]
fn a_second_member_joining_keeps_both_alive_and_the_kept_partitions_state() {
    let broker = TestBroker::new("rebalance");
    let config = broker.config();
    let first = RunningSalve::start(config.clone());
    let t = now_ms();
    // Entities on both partitions, so that one partition can move to the newcomer and the
    // other can stay with the first member.
    let entities: Vec<String> = (0..8).map(|i| format!("checkout/pod-r{i}")).collect();
    for entity in &entities {
        for i in 0..2 {
            broker.produce(
                &broker.topics.telemetry[0],
                Some(entity),
                exit_event(entity, t + i).as_bytes(),
            );
        }
    }
    let second = RunningSalve::start(config);
    std::thread::sleep(Duration::from_secs(8));
    for entity in &entities {
        broker.produce(
            &broker.topics.telemetry[0],
            Some(entity),
            exit_event(entity, t + 2).as_bytes(),
        );
    }
    let records = broker.read_for(&broker.topics.commands, Duration::from_secs(10), |r| {
        r.len() >= entities.len()
    });
    let restarted = entities
        .iter()
        .filter(|e| !commands_for(&records, e).is_empty())
        .count();
    // Cooperative rebalancing leaves the partitions that stay with the first member, and
    // their windows, alone: their entities reach three exits and are restarted. (An eager
    // rebalance revoked everything and dropped all windows: no restarts at all.) A partition
    // that moves arrives without its windows until state is kept in a changelog topic, so
    // not every entity is expected here.
    assert!(
        restarted > 0,
        "no entity restarted: every partition lost its state"
    );
    // Both members stop cleanly (a failed commit during the rebalance used to kill one), and
    // between them they consumed every event.
    let a = first.stop();
    let b = second.stop();
    assert!(a.engine.events_in + b.engine.events_in >= 24, "{a:?} {b:?}");
}

#[test]
fn a_changelog_with_fewer_partitions_than_the_telemetry_is_refused_at_start() {
    let broker = TestBroker::new("small-changelog");
    let Some(embedded) = broker.embedded() else {
        eprintln!("creating a topic with another partition count needs the mock cluster; this test checks nothing on an external broker");
        return;
    };
    let mut config = broker.config();
    config.topics.changelog = format!("{}.small", broker.topics.changelog);
    embedded
        .create_topic(&config.topics.changelog, 1)
        .expect("topic");
    let shutdown = salve_connectors::Shutdown::default();
    let error = salve::run::run(&config, &shutdown, None, |_| {})
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("topics.changelog") && error.contains("1 partition(s)"),
        "{error}"
    );
}
