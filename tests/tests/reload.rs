//! Hot reload while events flow through the broker: an edited rule takes effect, a broken
//! edit is rejected while the previous version keeps acting, and no event is lost or
//! processed twice across the swaps.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{hot_rule as rule, RunningSalve, TestBroker};

#[test]
fn an_edited_rule_takes_effect_a_broken_edit_is_rejected_and_no_event_is_lost() {
    let broker = TestBroker::new("reload");
    let (rules, mut config) = broker.hot_rules();
    let file = &rules.file;
    config.rules.reload_debounce_ms = 100;
    // The metrics endpoint tells the same story from outside; the API is tested elsewhere.
    config.metrics.listen = "127.0.0.1:0".into();
    let salve = RunningSalve::start_operated(config);

    // Events flow for the whole test: each a new entity, so each makes one command.
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let stop = Arc::clone(&stop);
        let produced = Arc::clone(&produced);
        let bootstrap = broker.bootstrap.clone();
        let topic = broker.topics.telemetry[0].clone();
        std::thread::spawn(move || {
            use rdkafka::producer::{BaseRecord, Producer};
            let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "0")
                .create()
                .expect("producer");
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let entity = format!("pod-{n}");
                let event = support::load_event(&entity);
                producer
                    .send(BaseRecord::to(&topic).key(&entity).payload(&event))
                    .map_err(|(e, _)| e)
                    .expect("send");
                producer.poll(Duration::ZERO);
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
            produced.store(n, Ordering::SeqCst);
        })
    };

    salve.wait_for("v1 commands", |engine| engine.stats().commands >= 20);
    std::fs::write(file, rule("v2")).expect("write");
    salve.wait_for("the edit to load", |engine| engine.rules_version() == 2);
    salve.wait_for("v2 commands", |engine| {
        engine
            .ledger()
            .commands_by_action()
            .get("v2")
            .copied()
            .unwrap_or(0)
            >= 20
    });

    // A broken edit: the old version stays in force and reports the file and line.
    std::fs::write(file, "fn condition(p) { last(\"load\") > }\n").expect("write");
    salve.wait_for("the broken edit to be rejected", |engine| {
        engine.last_reload().is_some_and(|r| !r.succeeded())
    });
    let rejected = salve.ask(|engine, _| engine.last_reload().cloned());
    let rejected = rejected.expect("a reload outcome");
    assert_eq!(rejected.version, 2);
    assert!(
        rejected.errors.iter().any(|e| e.contains("hot.rhai:1:")),
        "{:?}",
        rejected.errors
    );
    let before = salve.ask(|engine, _| engine.ledger().commands_by_action().get("v2").copied());
    salve.wait_for("v2 to keep acting", move |engine| {
        engine.ledger().commands_by_action().get("v2").copied() > before.map(|n| n + 20)
    });

    stop.store(true, Ordering::SeqCst);
    producer.join().expect("producer");
    let produced = produced.load(Ordering::SeqCst);
    salve.wait_for("every event", move |engine| {
        engine.stats().events_in >= produced
    });
    // The metrics, scraped over HTTP, agree: every event in, the reload rejected.
    let topic = broker.topics.telemetry[0].clone();
    let events_in = format!("salve_events_in_total{{topic=\"{topic}\"}} {produced}");
    let page = support::eventually(&events_in, || {
        let page = support::scrape(salve.metrics_addr());
        if page.contains(&events_in) {
            Ok(page)
        } else {
            Err(format!("not in:\n{page}"))
        }
    });
    assert!(page.contains("salve_rules_version 2"), "{page}");
    assert!(page.contains("salve_rules_last_reload_success 0"), "{page}");
    assert!(
        page.contains("salve_commands_total{action=\"v2\"}"),
        "{page}"
    );
    let report = salve.stop();
    assert_eq!(
        report.engine.events_in, produced,
        "every event processed once"
    );
    assert_eq!(report.engine.commands, produced, "one command per event");

    // Read back: one command per entity, none twice; v1 before the swap, v2 after.
    let records = broker.read_until(&broker.topics.commands, |r| r.len() as u64 >= produced);
    let commands: Vec<serde_json::Value> = records.iter().map(|r| r.json()).collect();
    let entities: HashSet<&str> = commands
        .iter()
        .filter_map(|c| c["entity"].as_str())
        .collect();
    assert_eq!(entities.len() as u64, produced);
    assert_eq!(commands.len() as u64, produced);
    let actions: HashSet<&str> = commands
        .iter()
        .filter_map(|c| c["action"].as_str())
        .collect();
    assert_eq!(actions, HashSet::from(["v1", "v2"]));
    let first_v2 = commands
        .iter()
        .filter(|c| c["action"] == "v2")
        .filter_map(|c| c["issued_at"].as_i64())
        .min()
        .expect("a v2 command");
    let last_v1 = commands
        .iter()
        .filter(|c| c["action"] == "v1")
        .filter_map(|c| c["issued_at"].as_i64())
        .max()
        .expect("a v1 command");
    assert!(
        last_v1 <= first_v2,
        "the swap is atomic: no v1 after the first v2"
    );
}

#[test]
fn a_burst_of_writes_reloads_once() {
    let broker = TestBroker::new("burst");
    let (rules, mut config) = broker.hot_rules();
    config.rules.reload_debounce_ms = 500;
    let salve = RunningSalve::start_operated(config);
    // An editor saving, or a checkout: many writes within the debounce.
    for version in 2..=6 {
        std::fs::write(&rules.file, rule(&format!("v{version}"))).expect("write");
    }
    salve.wait_for("the burst to load", |engine| engine.rules_version() >= 2);
    // Long past the debounce: nothing more comes.
    std::thread::sleep(Duration::from_millis(1_500));
    let (version, trigger, action) = salve.ask(|engine, _| {
        (
            engine.rules_version(),
            engine.last_reload().map(|r| r.trigger.clone()),
            engine.rules().rules()[0].decl.action.clone(),
        )
    });
    assert_eq!(version, 2, "one reload for the whole burst");
    assert_eq!(trigger.as_deref(), Some("file"));
    assert_eq!(action, "v6", "the last write is what loaded");
    salve.stop();
}
