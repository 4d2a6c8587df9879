//! WatchDecisions against the real Kafka runner on the embedded broker: decisions reach the
//! watch feed only through the runner's publisher, so that is what this drives.

use crate::proto::salve_client::SalveClient;
use crate::proto::{self, watch_decisions_response::Event, DecisionKind, IncidentState};
use crate::ApiConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use salve_connectors::{
    control_channel, run_with, EmbeddedBroker, KafkaConfig, Shutdown, TopicsConfig,
};
use salve_engine::{Engine, EngineConfig};
use salve_rules::{RuleSet, SHIPPED_RULES};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Long enough for a consumer group to form on the mock cluster and a message to go round.
const PATIENCE: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn exit(entity: &str, ts: i64) -> String {
    format!(r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_decisions_streams_what_the_runner_publishes_as_filtered() {
    let prefix = format!("watch-{}", std::process::id());
    let topics = TopicsConfig {
        partitions: 1,
        create: false,
        ..TopicsConfig::with_prefix(&prefix)
    };
    // The mock cluster stays on this thread, which runs the test's future.
    let broker = EmbeddedBroker::start(&topics).expect("mock cluster starts");
    let bootstrap = broker.bootstrap_servers();
    let mut kafka = KafkaConfig {
        group_id: prefix.clone(),
        commit_interval_ms: 200,
        ..KafkaConfig::default()
    };
    // The mock coordinator delays a group's first rebalance by the session timeout less 1 s.
    kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());

    let (control, inbox) = control_channel(None);
    let shutdown = Arc::new(Shutdown::default());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let runner = {
        let (shutdown, bootstrap, topics) =
            (Arc::clone(&shutdown), bootstrap.clone(), topics.clone());
        std::thread::spawn(move || {
            let mut engine = Engine::new(EngineConfig::default(), |runtime| {
                RuleSet::load_sources(
                    runtime,
                    SHIPPED_RULES
                        .iter()
                        .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
                )
            })
            .expect("rules load");
            run_with(
                &mut engine,
                &bootstrap,
                &kafka,
                &topics,
                &shutdown,
                Some(&inbox),
                || {
                    let _ = ready_tx.send(());
                },
            )
            .map_err(|e| e.to_string())
        })
    };
    tokio::time::timeout(PATIENCE, ready_rx)
        .await
        .expect("the runner starts")
        .expect("the runner reports ready");

    let config = ApiConfig {
        listen: "127.0.0.1:0".into(),
        ..ApiConfig::default()
    };
    let server = crate::grpc::bind(&config, control).await.expect("binds");
    let addr = server.local_addr();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let mut client = SalveClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut stream = client
        .watch_decisions(proto::WatchDecisionsRequest {
            rule: "crash_loop".into(),
            entity: "pod-watched".into(),
            kinds: vec![DecisionKind::Transition.into()],
        })
        .await
        .expect("watches")
        .into_inner();

    // Two entities crash-loop; only one is watched.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let now = now_ms();
    for entity in ["pod-other", "pod-watched"] {
        for i in 0..3 {
            let payload = exit(entity, now - 3_000 + i * 1_000);
            producer
                .send(
                    BaseRecord::to(&topics.telemetry[0])
                        .key(entity)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("queued");
        }
    }
    producer.flush(PATIENCE).expect("delivered");

    let mut seen = Vec::new();
    let remediating = loop {
        let next = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a decision within patience")
            .expect("the stream is healthy")
            .expect("the stream goes on");
        let Some(Event::Decision(decision)) = next.event else {
            panic!("missed decisions, or an empty event: {next:?}");
        };
        assert_eq!(
            decision.entity, "pod-watched",
            "filtered by entity: {decision:?}"
        );
        assert_eq!(decision.rule, "crash_loop");
        assert_eq!(decision.kind, i32::from(DecisionKind::Transition));
        seen.push(decision.to);
        if decision.to == i32::from(IncidentState::Remediating) {
            break decision;
        }
    };
    assert_eq!(
        seen.first(),
        Some(&i32::from(IncidentState::Failing)),
        "{seen:?}"
    );
    assert_eq!(remediating.from, i32::from(IncidentState::Failing));
    assert!(remediating.incident.starts_with("crash_loop/pod-watched@"));

    // Shutting down ends the open stream rather than waiting on it.
    let _ = stop_server.send(());
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("the server stops with a watcher attached")
        .expect("server task")
        .expect("served");
    shutdown.graceful();
    let report = tokio::task::spawn_blocking(move || runner.join())
        .await
        .expect("joined")
        .expect("runner thread")
        .expect("the runner ran");
    assert!(!report.aborted);
    drop(broker);
}
