//! Actuators through a real broker: the SDK runner and `salve actuate exec` close the loop
//! with salve; a command delivered again after an actuator restart is not run twice; an
//! expired or unreadable command is rejected; a failing or panicking handler is acked failed;
//! concurrency is bounded; a graceful stop finishes what runs, or gives up on it in time.

mod support;

use salve::actuate::map::ActionMap;
use salve::actuate::{run_exec, ActuatorOptions};
use salve_connectors::actuator::{
    run_actuator, Actuator, ActuatorReport, ActuatorSettings, ActuatorStats, Command,
    CommandContext, Outcome,
};
use salve_connectors::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{exit_event, matching, now_ms, Record, RunningSalve, TestBroker, PATIENCE};

/// An SDK actuator that records every command it is handed, and holds each one until the
/// test lets it finish (unless built `open`).
struct Recorder {
    gate: tokio::sync::Semaphore,
    running: AtomicUsize,
    most_running: AtomicUsize,
    handled: Mutex<Vec<Command>>,
}

impl Recorder {
    fn open() -> Arc<Self> {
        Self::with_permits(tokio::sync::Semaphore::MAX_PERMITS)
    }

    fn gated() -> Arc<Self> {
        Self::with_permits(0)
    }

    fn with_permits(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            gate: tokio::sync::Semaphore::new(permits),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            handled: Mutex::new(Vec::new()),
        })
    }

    /// Lets `count` held commands finish.
    fn release(&self, count: usize) {
        self.gate.add_permits(count);
    }

    fn handled_ids(&self) -> Vec<String> {
        self.handled
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }
}

impl Actuator for Recorder {
    async fn handle(&self, command: &Command, _context: &CommandContext) -> Outcome {
        let now_running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now_running, Ordering::SeqCst);
        self.handled.lock().expect("lock").push(command.clone());
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        Outcome::Succeeded(format!("restarted {}", command.entity))
    }
}

/// An SDK actuator whose outcome the entity chooses: `fails` fails, `panics` panics, `hangs`
/// never returns, anything else succeeds.
struct Scripted;

impl Actuator for Scripted {
    async fn handle(&self, command: &Command, _context: &CommandContext) -> Outcome {
        match command.entity.as_str() {
            "fails" => Outcome::Failed("disk full".into()),
            "panics" => panic!("the handler broke"),
            "hangs" => std::future::pending().await,
            entity => Outcome::Succeeded(format!("restarted {entity}")),
        }
    }
}

/// An actuator running on a thread of the test process.
struct RunningActuator {
    shutdown: Arc<Shutdown>,
    stats: Arc<ActuatorStats>,
    handle: Option<JoinHandle<Result<ActuatorReport, String>>>,
}

impl RunningActuator {
    fn spawn(
        run: impl FnOnce(
                &Shutdown,
                Arc<ActuatorStats>,
                Box<dyn FnOnce() + Send>,
            ) -> Result<ActuatorReport, String>
            + Send
            + 'static,
    ) -> Self {
        let shutdown = Arc::new(Shutdown::default());
        let stats = Arc::new(ActuatorStats::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (worker_shutdown, worker_stats) = (Arc::clone(&shutdown), Arc::clone(&stats));
        let handle = std::thread::spawn(move || {
            run(
                &worker_shutdown,
                worker_stats,
                Box::new(move || {
                    let _ = ready_tx.send(());
                }),
            )
        });
        if ready_rx.recv_timeout(PATIENCE).is_err() {
            panic!("the actuator did not become ready: {:?}", handle.join());
        }
        Self {
            shutdown,
            stats,
            handle: Some(handle),
        }
    }

    /// An SDK actuator with `settings`.
    fn sdk<A: Actuator>(broker: &TestBroker, actuator: Arc<A>, settings: ActuatorSettings) -> Self {
        let bootstrap = broker.bootstrap.clone();
        let kafka = broker.config().kafka;
        Self::spawn(move |shutdown, stats, ready| {
            run_actuator(
                actuator, &bootstrap, &kafka, &settings, shutdown, stats, ready,
            )
            .map_err(|e| e.to_string())
        })
    }

    /// `salve actuate exec` called `name`, with `config` and the map in `map_toml`.
    fn exec(config: salve::Config, name: &str, map_toml: &str) -> Self {
        let map = ActionMap::parse(map_toml).expect("map parses");
        let options = ActuatorOptions {
            name: name.to_owned(),
            max_in_flight: 2,
        };
        Self::spawn(move |shutdown, stats, ready| {
            run_exec(&config, map, &options, shutdown, stats, |_| ready())
                .map_err(|e| e.to_string())
        })
    }

    /// Waits until `condition` holds on the live counters.
    fn wait_for(&self, what: &str, condition: impl Fn(&ActuatorStats) -> bool) {
        let start = Instant::now();
        while !condition(&self.stats) {
            assert!(
                start.elapsed() < PATIENCE,
                "waited in vain for {what}: {:?}",
                self.stats.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> ActuatorReport {
        self.shutdown.graceful();
        self.join()
    }

    /// Stop as a crash would: nothing more is committed.
    fn kill(mut self) -> ActuatorReport {
        self.shutdown.abort();
        self.join()
    }

    fn join(&mut self) -> ActuatorReport {
        let handle = self.handle.take().expect("running");
        let start = Instant::now();
        while !handle.is_finished() {
            assert!(start.elapsed() < PATIENCE, "the actuator did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        handle
            .join()
            .expect("actuator thread")
            .expect("actuator ran without error")
    }
}

impl Drop for RunningActuator {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.shutdown.abort();
            let _ = handle.join();
        }
    }
}

/// Settings for an SDK actuator on this test's topics, with a dedup topic of its own.
fn settings(broker: &TestBroker, name: &str) -> ActuatorSettings {
    let mut settings =
        ActuatorSettings::new(name, &broker.topics, vec![broker.topics.commands.clone()]);
    settings.dedup_topic = format!("{}.{name}.done", broker.group);
    settings.group_id = format!("{}.{name}", broker.group);
    settings.commit_interval_ms = 200;
    match broker.embedded() {
        // The mock cluster makes topics directly; on a real broker the runner creates it.
        Some(embedded) => {
            embedded
                .create_topic(&settings.dedup_topic, 2)
                .expect("dedup topic");
            settings.create_dedup_topic = false;
        }
        None => settings.create_dedup_topic = true,
    }
    settings
}

fn command_json(id: &str, entity: &str, expires_at: i64) -> String {
    serde_json::json!({
        "v": 1, "id": id, "incident": id.split('#').next().unwrap_or(id), "entity": entity,
        "action": "restart", "params": {}, "rule": "crash_loop", "reason": "test",
        "attempt": 1, "issued_at": now_ms(), "expires_at": expires_at,
    })
    .to_string()
}

fn produce_command(broker: &TestBroker, id: &str, entity: &str, expires_at: i64) {
    broker.produce(
        &broker.topics.commands,
        Some(entity),
        command_json(id, entity, expires_at).as_bytes(),
    );
}

fn produce_exits(broker: &TestBroker, entity: &str) {
    let t = now_ms();
    for i in 0..3 {
        broker.produce(
            &broker.topics.telemetry[0],
            Some(entity),
            exit_event(entity, t + i * 1_000).as_bytes(),
        );
    }
}

fn acks_for(records: &[Record], id: &str, status: &str) -> Vec<serde_json::Value> {
    matching(records, |v| v["command_id"] == id && v["status"] == status)
}

/// The statuses acked for `id`, in the order they were published: an entity's acks share a
/// key, hence a partition, and are read in offset order.
fn statuses(records: &[Record], id: &str) -> Vec<String> {
    matching(records, |v| v["command_id"] == id)
        .iter()
        .map(|v| v["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn detail(records: &[Record], id: &str, status: &str) -> String {
    acks_for(records, id, status)
        .first()
        .and_then(|ack| ack["detail"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Waits for salve's decision log to take the actuator's success for an incident of `entity`
/// (the shipped crash_loop then verifies the fix for a minute); returns the command id.
fn wait_for_resolution(broker: &TestBroker, entity: &str) -> String {
    let resolved = |v: &serde_json::Value| v["entity"] == entity && v["to"] == "verifying";
    let decisions = broker.read_until(&broker.topics.decisions, |r| {
        !matching(r, resolved).is_empty()
    });
    let resolved = matching(&decisions, resolved);
    assert_eq!(resolved.len(), 1, "{decisions:?}");
    resolved[0]["command_id"]
        .as_str()
        .expect("command id")
        .to_owned()
}

#[test]
fn an_sdk_actuator_closes_the_loop_with_salve() {
    let broker = TestBroker::new("sdk-loop");
    let salve = RunningSalve::start(broker.config());
    let recorder = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings(&broker, "sdk"));
    produce_exits(&broker, "checkout/pod-1");

    let id = wait_for_resolution(&broker, "checkout/pod-1");
    assert_eq!(recorder.handled_ids(), vec![id.clone()]);
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, &id, "succeeded").is_empty()
    });
    let received = acks_for(&acks, &id, "received");
    let succeeded = acks_for(&acks, &id, "succeeded");
    assert_eq!(received.len(), 1, "{acks:?}");
    assert_eq!(succeeded.len(), 1, "{acks:?}");
    assert_eq!(succeeded[0]["actuator"], "sdk");
    assert_eq!(succeeded[0]["detail"], "restarted checkout/pod-1");
    let report = actuator.stop();
    assert_eq!((report.started, report.succeeded), (1, 1));
    assert_eq!(salve.stop().engine.attempts_succeeded, 1);
}

/// The exec actuator closes the loop, then is killed before it commits: the command comes
/// again, from Kafka and from salve, and the program does not run again.
#[test]
fn the_exec_actuator_closes_the_loop_and_does_not_run_a_command_twice_after_a_restart() {
    let broker = TestBroker::new("exec-loop");
    let salve = RunningSalve::start(broker.config());
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let map = format!(
        r#"[actions]
restart = ["sh", "-c", "echo \"$1\" >> \"$2\"; printf 'restarted %s' \"$1\"", "sh", "{{entity}}", "{runs}"]"#,
        runs = runs.display()
    );
    // The name is the test's own, so is its dedup topic, salve.actuator.<name>.done.
    let name = broker.group.clone();
    let dedup_topic = format!("salve.actuator.{name}.done");
    let mut config = broker.config();
    // Only a graceful stop commits; the crash below commits nothing.
    config.kafka.commit_interval_ms = 3_600_000;
    match broker.embedded() {
        Some(embedded) => embedded.create_topic(&dedup_topic, 2).expect("dedup topic"),
        // The actuator creates it, compacted.
        None => config.topics.create = true,
    }
    let start = || RunningActuator::exec(config.clone(), &name, &map);
    let actuator = start();
    produce_exits(&broker, "checkout/pod-7");
    let id = wait_for_resolution(&broker, "checkout/pod-7");
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, &id, "succeeded").is_empty()
    });
    let succeeded = acks_for(&acks, &id, "succeeded");
    assert_eq!(succeeded[0]["detail"], "restarted checkout/pod-7");
    assert_eq!(succeeded[0]["actuator"], name.as_str());
    let ran = std::fs::read_to_string(&runs).expect("the program ran");
    assert_eq!(ran, "checkout/pod-7\n");
    // The dedup record is on the broker before the crash.
    broker.read_until(&dedup_topic, |r| {
        r.iter().any(|r| r.key.as_deref() == Some(id.as_str()))
    });
    let crashed = actuator.kill();
    assert!(crashed.aborted);
    assert_eq!(crashed.commits, 0, "a crash commits nothing");

    // A new process: the uncommitted command is delivered again, and salve sends it again.
    let actuator = start();
    let commands = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    broker.produce(
        &broker.topics.commands,
        Some("checkout/pod-7"),
        &commands[0].payload,
    );
    actuator.wait_for("both deliveries answered", |s| {
        s.duplicates.load(Ordering::SeqCst) >= 2
    });
    let report = actuator.stop();
    assert_eq!(report.started, 0, "nothing ran again: {report:?}");
    let ran = std::fs::read_to_string(&runs).expect("runs");
    assert_eq!(ran, "checkout/pod-7\n", "the program ran once");
    let acks = broker.read_until(&broker.topics.acks, |r| {
        acks_for(r, &id, "succeeded").len() >= 3
    });
    let succeeded = acks_for(&acks, &id, "succeeded");
    assert_eq!(succeeded.len(), 3, "each delivery is answered: {acks:?}");
    assert!(
        succeeded.iter().all(|a| a == &succeeded[0]),
        "with the ack sent the first time"
    );
    assert_eq!(acks_for(&acks, &id, "received").len(), 1);
    assert_eq!(salve.stop().engine.attempts_succeeded, 1);
}

/// Another instance of an SDK actuator, started after the first stopped, answers a command the
/// first finished from the dedup topic.
#[test]
fn the_dedup_record_survives_a_restart_of_an_sdk_actuator() {
    let broker = TestBroker::new("sdk-dedup");
    let settings = settings(&broker, "sdk");
    let first = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&first), settings.clone());
    let expires = now_ms() + 600_000;
    produce_command(&broker, "r/e@0:0:1#1", "e", expires);
    actuator.wait_for("the command to finish", |s| {
        s.succeeded.load(Ordering::SeqCst) == 1
    });
    let report = actuator.stop();
    assert_eq!(report.succeeded, 1);
    assert!(report.commits >= 1);

    let second = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&second), settings);
    produce_command(&broker, "r/e@0:0:1#1", "e", expires);
    produce_command(&broker, "r/e@0:0:1#2", "e", expires);
    actuator.wait_for("both commands", |s| {
        s.duplicates.load(Ordering::SeqCst) + s.succeeded.load(Ordering::SeqCst) == 2
    });
    let report = actuator.stop();
    assert_eq!(report.consumed, 2, "the first delivery was committed");
    assert_eq!(report.duplicates, 1);
    assert_eq!(
        second.handled_ids(),
        vec!["r/e@0:0:1#2".to_owned()],
        "only the new attempt ran"
    );
}

/// Finished commands written to the dedup topic in one batch are all known when an actuator
/// starts. Tansu 0.6 reports a partition's high watermark as its last batch's base offset + 1;
/// a restore that stopped there knew one record per partition, and would have run the others
/// again had their commands come before the follower read the rest of the batch.
#[test]
fn every_record_of_a_dedup_batch_is_restored_at_start() {
    let broker = TestBroker::new("sdk-dedup-batch");
    let settings = settings(&broker, "sdk");
    // A first run makes the dedup topic where it is the runner's to make.
    let report = RunningActuator::sdk(&broker, Recorder::open(), settings.clone()).stop();
    assert_eq!(report.restored, 0);

    let expires = now_ms() + 600_000;
    let ids: Vec<String> = (0..40).map(|i| format!("r/e-{i}@0:0:1#1")).collect();
    // One batch per partition.
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("linger.ms", "1000")
        .create()
        .expect("producer");
    let records: Vec<String> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "v": 1, "expires_at": expires,
                "ack": {"command_id": id, "status": "succeeded", "detail": "restarted e"},
            })
            .to_string()
        })
        .collect();
    for (id, record) in ids.iter().zip(&records) {
        let message = rdkafka::producer::BaseRecord::to(&settings.dedup_topic)
            .key(id.as_str())
            .payload(record.as_str());
        producer.send(message).map_err(|(e, _)| e).expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");

    let recorder = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings);
    assert_eq!(
        actuator.stats.restored.load(Ordering::SeqCst),
        ids.len() as u64,
        "every finished command is known before any command is read"
    );
    let last = ids.last().expect("ids");
    produce_command(&broker, last, "e", expires);
    actuator.wait_for("the command to be answered", |s| {
        s.duplicates.load(Ordering::SeqCst) == 1
    });
    let report = actuator.stop();
    assert_eq!(report.started, 0, "nothing ran again: {report:?}");
    assert!(recorder.handled_ids().is_empty());
}

#[test]
fn an_expired_command_is_rejected_and_not_run() {
    let broker = TestBroker::new("expired");
    let recorder = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings(&broker, "sdk"));
    produce_command(&broker, "old#1", "e", now_ms() - 1_000);
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, "old#1", "rejected").is_empty()
    });
    let rejected = acks_for(&acks, "old#1", "rejected");
    assert_eq!(rejected.len(), 1, "{acks:?}");
    assert!(
        rejected[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("expired"),
        "{rejected:?}"
    );
    assert!(acks_for(&acks, "old#1", "received").is_empty());
    let report = actuator.stop();
    assert_eq!(report.expired, 1);
    assert!(recorder.handled_ids().is_empty(), "not run");
}

#[test]
fn no_more_than_max_in_flight_commands_run_at_once() {
    let broker = TestBroker::new("bound");
    let recorder = Recorder::gated();
    let mut settings = settings(&broker, "sdk");
    settings.max_in_flight = 2;
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings);
    let expires = now_ms() + 600_000;
    for i in 0..6 {
        produce_command(&broker, &format!("c{i}#1"), &format!("pod-{i}"), expires);
    }
    // Every command is in the runner's hands, and two of them are held in the handler.
    actuator.wait_for("all six read, two in the handler", |s| {
        s.consumed.load(Ordering::SeqCst) == 6
            && s.in_flight.load(Ordering::SeqCst) == 2
            && recorder.running.load(Ordering::SeqCst) == 2
    });
    assert_eq!(actuator.stats.waiting.load(Ordering::SeqCst), 4);
    assert_eq!(recorder.handled_ids().len(), 2, "four wait their turn");
    recorder.release(6);
    actuator.wait_for("all six done", |s| s.succeeded.load(Ordering::SeqCst) == 6);
    assert_eq!(recorder.most_running.load(Ordering::SeqCst), 2);
    actuator.stop();
}

#[test]
fn commands_for_one_entity_run_one_at_a_time_in_order() {
    let broker = TestBroker::new("order");
    let recorder = Recorder::gated();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings(&broker, "sdk"));
    let expires = now_ms() + 600_000;
    let ids: Vec<String> = (1..=3).map(|i| format!("r/e@0:0:{i}#1")).collect();
    for id in &ids {
        produce_command(&broker, id, "db/primary-0", expires);
    }
    for done in 0..3 {
        // The gauge and the handler catch up with `started` a moment later: wait for all three.
        // A second command of the entity would break the third (see `most_running` below).
        actuator.wait_for("the next command to start, alone", |s| {
            s.started.load(Ordering::SeqCst) == done + 1
                && s.in_flight.load(Ordering::SeqCst) == 1
                && recorder.running.load(Ordering::SeqCst) == 1
        });
        recorder.release(1);
    }
    actuator.wait_for("all done", |s| s.succeeded.load(Ordering::SeqCst) == 3);
    assert_eq!(recorder.handled_ids(), ids);
    assert_eq!(recorder.most_running.load(Ordering::SeqCst), 1);
    actuator.stop();
}

/// A graceful stop takes nothing new, lets running commands finish and acks them, and commits:
/// the next instance gets only the commands that never started.
#[test]
fn a_graceful_stop_finishes_running_commands_and_commits() {
    let broker = TestBroker::new("graceful");
    let recorder = Recorder::gated();
    let mut settings = settings(&broker, "sdk");
    settings.max_in_flight = 2;
    // Only the stop commits.
    settings.commit_interval_ms = 3_600_000;
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings.clone());
    let expires = now_ms() + 600_000;
    for i in 0..4 {
        produce_command(&broker, &format!("g{i}#1"), &format!("pod-{i}"), expires);
    }
    actuator.wait_for("two running, two waiting", |s| {
        s.in_flight.load(Ordering::SeqCst) == 2 && s.waiting.load(Ordering::SeqCst) == 2
    });
    actuator.shutdown.graceful();
    recorder.release(2);
    let report = actuator.join_stopping();
    assert_eq!((report.started, report.succeeded), (2, 2), "{report:?}");
    assert!(report.commits >= 1);
    let finished = recorder.handled_ids();
    let acks = broker.read_until(&broker.topics.acks, |r| {
        finished
            .iter()
            .all(|id| !acks_for(r, id, "succeeded").is_empty())
    });
    for id in &finished {
        assert_eq!(acks_for(&acks, id, "succeeded").len(), 1, "{id}: {acks:?}");
    }

    let next = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&next), settings);
    actuator.wait_for("the two that never started", |s| {
        s.succeeded.load(Ordering::SeqCst) == 2
    });
    let report = actuator.stop();
    assert_eq!(report.consumed, 2, "finished commands were committed");
    let mut all: Vec<String> = finished.into_iter().chain(next.handled_ids()).collect();
    all.sort();
    assert_eq!(all, vec!["g0#1", "g1#1", "g2#1", "g3#1"]);
}

/// A handler's failure and a handler's panic are each acked `failed`, with the detail, after
/// `received`; the runner carries on.
#[test]
fn failed_and_panicking_handlers_are_acked_failed_after_received() {
    let broker = TestBroker::new("sdk-failures");
    let actuator = RunningActuator::sdk(&broker, Arc::new(Scripted), settings(&broker, "sdk"));
    let expires = now_ms() + 600_000;
    produce_command(&broker, "f#1", "fails", expires);
    produce_command(&broker, "p#1", "panics", expires);
    produce_command(&broker, "s#1", "works", expires);
    let acks = broker.read_until(&broker.topics.acks, |r| {
        ["f#1", "p#1", "s#1"]
            .iter()
            .all(|id| statuses(r, id).len() >= 2)
    });
    assert_eq!(statuses(&acks, "f#1"), ["received", "failed"]);
    assert_eq!(detail(&acks, "f#1", "failed"), "disk full");
    assert_eq!(statuses(&acks, "p#1"), ["received", "failed"]);
    let panicked = detail(&acks, "p#1", "failed");
    assert!(panicked.contains("panicked"), "{panicked}");
    assert_eq!(statuses(&acks, "s#1"), ["received", "succeeded"]);
    let report = actuator.stop();
    assert_eq!((report.failed, report.succeeded), (2, 1), "{report:?}");
}

/// A command that cannot be read but has an id is acked `rejected`, saying why, and not run;
/// a message with no id is skipped; the commands after them run.
#[test]
fn an_unreadable_command_is_rejected_and_the_runner_carries_on() {
    let broker = TestBroker::new("sdk-unreadable");
    let recorder = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&recorder), settings(&broker, "sdk"));
    let commands = &broker.topics.commands;
    let missing =
        serde_json::json!({"v": 1, "id": "missing#1", "entity": "e", "action": "restart"});
    broker.produce(commands, Some("e"), missing.to_string().as_bytes());
    let mut future =
        serde_json::from_str::<serde_json::Value>(&command_json("v2#1", "e", now_ms() + 600_000))
            .expect("command");
    future["v"] = 2.into();
    broker.produce(commands, Some("e"), future.to_string().as_bytes());
    broker.produce(commands, Some("e"), b"not json");
    produce_command(&broker, "good#1", "e", now_ms() + 600_000);
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, "good#1", "succeeded").is_empty()
    });
    assert_eq!(statuses(&acks, "missing#1"), ["rejected"]);
    let why = detail(&acks, "missing#1", "rejected");
    assert!(why.starts_with("invalid command:"), "{why}");
    assert_eq!(statuses(&acks, "v2#1"), ["rejected"]);
    let why = detail(&acks, "v2#1", "rejected");
    assert!(why.contains("version 2"), "{why}");
    assert_eq!(statuses(&acks, "good#1"), ["received", "succeeded"]);
    let report = actuator.stop();
    assert_eq!(report.invalid, 3, "{report:?}");
    assert_eq!(recorder.handled_ids(), vec!["good#1".to_owned()]);
}

/// A graceful stop waits `stop_patience_ms` for a handler, then acks its command `failed`,
/// records it as finished and commits: the next instance answers a redelivery with that ack
/// and does not run it.
#[test]
fn a_graceful_stop_gives_up_on_a_handler_that_never_returns() {
    let broker = TestBroker::new("stop-patience");
    let mut settings = settings(&broker, "sdk");
    settings.stop_patience_ms = 300;
    // Only the stop commits.
    settings.commit_interval_ms = 3_600_000;
    let actuator = RunningActuator::sdk(&broker, Arc::new(Scripted), settings.clone());
    let expires = now_ms() + 600_000;
    produce_command(&broker, "h#1", "hangs", expires);
    actuator.wait_for("the handler to start", |s| {
        s.in_flight.load(Ordering::SeqCst) == 1
    });
    let report = actuator.stop();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(report.commits >= 1, "{report:?}");
    let acks = broker.read_until(&broker.topics.acks, |r| statuses(r, "h#1").len() >= 2);
    assert_eq!(statuses(&acks, "h#1"), ["received", "failed"]);
    let why = detail(&acks, "h#1", "failed");
    assert!(why.starts_with("abandoned:"), "{why}");

    let next = Recorder::open();
    let actuator = RunningActuator::sdk(&broker, Arc::clone(&next), settings);
    produce_command(&broker, "h#1", "hangs", expires);
    actuator.wait_for("the redelivery answered", |s| {
        s.duplicates.load(Ordering::SeqCst) == 1
    });
    let report = actuator.stop();
    assert_eq!(report.consumed, 1, "the abandoned command was committed");
    assert!(next.handled_ids().is_empty(), "and is not run again");
    let acks = broker.read_until(&broker.topics.acks, |r| statuses(r, "h#1").len() >= 3);
    assert_eq!(statuses(&acks, "h#1"), ["received", "failed", "failed"]);
}

impl RunningActuator {
    /// Waits for a run already asked to stop.
    fn join_stopping(mut self) -> ActuatorReport {
        self.join()
    }
}

/// True when python3-kafka can be imported; otherwise skips, unless SALVE_REQUIRE_INTEROP is
/// set (scripts/test.sh sets it after installing python3-kafka).
fn python_kafka_available() -> bool {
    let available = support::python_kafka_importable();
    if !available {
        assert!(
            std::env::var_os("SALVE_REQUIRE_INTEROP").is_none(),
            "SALVE_REQUIRE_INTEROP is set but python3-kafka is missing"
        );
        eprintln!("skipping: python3-kafka is not installed; scripts/test.sh installs it");
    }
    available
}

/// connectors/examples/python_actuator.py, running as a child process.
struct PythonActuator {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl PythonActuator {
    fn start(broker: &TestBroker, name: &str, dedup_topic: &str) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../connectors/examples/python_actuator.py");
        let mut child = std::process::Command::new(support::python())
            .arg(script)
            .arg(&broker.bootstrap)
            .args(["--commands", &broker.topics.commands])
            .args(["--acks", &broker.topics.acks])
            .args(["--name", name])
            .args(["--dedup-topic", dedup_topic])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python starts");
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stderr_sink = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            eprint!("{text}");
            *stderr_sink.lock().expect("lock") = text;
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let actuator = Self {
            child,
            lines,
            stderr: stderr_text,
        };
        if let Err(error) = actuator.wait_for_line(|line| line.starts_with("ready")) {
            panic!("{error}");
        }
        actuator
    }

    /// Waits for a line of output that satisfies `pred`; returns the lines read until then,
    /// or, if the process ended first, what it printed on stderr.
    fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = PATIENCE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The stderr reader may still be collecting.
                    std::thread::sleep(Duration::from_millis(200));
                    let stderr = self.stderr.lock().expect("lock").clone();
                    return Err(format!(
                        "the python actuator stopped; it printed {seen:?} and on stderr:\n{stderr}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the python actuator did not print the line; it printed {seen:?}")
                }
            }
        }
    }

    /// Stops the process; returns every line it printed that was not read yet.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader ends at end of file, which closes the channel.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for PythonActuator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name and dedup topic of a Python actuator on `broker`, the topic made where salve's
/// embedded broker needs it made.
fn python_identity(broker: &TestBroker) -> (String, String) {
    let name = format!("py-{}", broker.group);
    let dedup_topic = format!("salve.actuator.{name}.done");
    if let Some(embedded) = broker.embedded() {
        embedded.create_topic(&dedup_topic, 1).expect("dedup topic");
    }
    (name, dedup_topic)
}

/// What `actuator` printed up to its first `acting:` line; `None`, for the test to skip, on a
/// broker where kafka-python cannot join a consumer group: kafka-python 2.0.2 gets error -1
/// for its JoinGroup from Tansu 0.6. Every other broker runs the tests to the end.
fn first_action(actuator: &PythonActuator, broker: &TestBroker) -> Option<Vec<String>> {
    match actuator.wait_for_line(|line| line.starts_with("acting: ")) {
        Ok(printed) => Some(printed),
        Err(error) if broker.is_external() && error.contains("UnknownError") => {
            eprintln!("skipping on this broker: kafka-python's JoinGroup is refused: {error}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// The Python example rejects a command that lacks a field, and acts on the next one, instead
/// of stopping on it (again on every restart).
#[test]
fn the_python_example_rejects_a_malformed_command_and_carries_on() {
    if !python_kafka_available() {
        return;
    }
    let broker = TestBroker::new("python-malformed");
    let (name, dedup_topic) = python_identity(&broker);
    let actuator = PythonActuator::start(&broker, &name, &dedup_topic);
    let mut malformed: serde_json::Value =
        serde_json::from_str(&command_json("bad#1", "e", 0)).expect("command");
    malformed
        .as_object_mut()
        .expect("object")
        .remove("expires_at");
    broker.produce(
        &broker.topics.commands,
        Some("e"),
        malformed.to_string().as_bytes(),
    );
    produce_command(&broker, "good#1", "e", now_ms() + 600_000);
    if first_action(&actuator, &broker).is_none() {
        return;
    }
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, "good#1", "succeeded").is_empty()
    });
    assert_eq!(statuses(&acks, "bad#1"), ["rejected"]);
    let why = detail(&acks, "bad#1", "rejected");
    assert!(why.contains("expires_at"), "{why}");
    assert_eq!(statuses(&acks, "good#1"), ["received", "succeeded"]);
}

/// The Python example closes the loop with salve, and after a crash it answers the command,
/// sent again, from its dedup topic without acting again.
#[test]
fn the_python_example_closes_the_loop_and_dedups_after_a_restart() {
    if !python_kafka_available() {
        return;
    }
    let broker = TestBroker::new("python");
    let salve = RunningSalve::start(broker.config());
    let (name, dedup_topic) = python_identity(&broker);
    let actuator = PythonActuator::start(&broker, &name, &dedup_topic);
    produce_exits(&broker, "checkout/pod-9");
    let Some(printed) = first_action(&actuator, &broker) else {
        return;
    };
    let id = wait_for_resolution(&broker, "checkout/pod-9");
    assert_eq!(
        printed.last(),
        Some(&format!("acting: restart checkout/pod-9 ({id})"))
    );
    let acks = broker.read_until(&broker.topics.acks, |r| {
        !acks_for(r, &id, "succeeded").is_empty()
    });
    assert_eq!(acks_for(&acks, &id, "received").len(), 1, "{acks:?}");
    assert_eq!(
        acks_for(&acks, &id, "succeeded")[0]["detail"],
        "restarted checkout/pod-9"
    );
    broker.read_until(&dedup_topic, |r| {
        r.iter().any(|r| r.key.as_deref() == Some(id.as_str()))
    });
    drop(actuator);

    let actuator = PythonActuator::start(&broker, &name, &dedup_topic);
    let commands = broker.read_until(&broker.topics.commands, |r| !r.is_empty());
    broker.produce(
        &broker.topics.commands,
        Some("checkout/pod-9"),
        &commands[0].payload,
    );
    broker.read_until(&broker.topics.acks, |r| {
        acks_for(r, &id, "succeeded").len() >= 2
    });
    let printed = actuator.kill();
    assert!(
        !printed.iter().any(|line| line.starts_with("acting:")),
        "the restarted actuator did not act again: {printed:?}"
    );
    assert_eq!(salve.stop().engine.attempts_succeeded, 1);
}
