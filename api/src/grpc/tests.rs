//! Every RPC through a real tonic client, against a server on 127.0.0.1:0 whose engine runs on
//! its own thread, as under the Kafka runner: the thread only runs control jobs, and the tests
//! feed it events and clock ticks as jobs too, so time is theirs to move.
//!
//! WatchDecisions needs the runner's publisher, which only the Kafka runner drives: its test
//! runs the real runner against the embedded broker.

use super::auth::{access, Access};
use crate::proto::salve_client::SalveClient;
use crate::proto::{self, IncidentState as PState, Mode as PMode};
use crate::ApiConfig;
use salve_connectors::{control_channel, ControlHandle, RuleLoader};
use salve_engine::{Engine, EngineConfig, Output, RecordPosition};
use salve_rules::{RuleSet, SHIPPED_RULES};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "s3cret-token";
/// Generous: a call waits this long for the engine's thread, which answers within a millisecond
/// or two unless the machine is very busy.
const PATIENCE: Duration = Duration::from_secs(30);

/// Rule files the engine loads from; a test edits them before calling Reload.
type Sources = Arc<Mutex<Vec<(String, String)>>>;

struct Harness {
    control: ControlHandle,
    addr: SocketAddr,
    /// The processing clock that jobs see.
    clock: Arc<AtomicI64>,
    sources: Sources,
    /// Every output the engine produced, in order.
    outputs: Arc<Mutex<Vec<Output>>>,
    stop_engine: Arc<AtomicBool>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), super::ApiError>>>,
}

fn shipped() -> Vec<(String, String)> {
    SHIPPED_RULES
        .iter()
        .map(|(file, source)| ((*file).to_owned(), (*source).to_owned()))
        .collect()
}

impl Harness {
    async fn start(config: ApiConfig) -> Self {
        Self::start_with_rules(config, shipped()).await
    }

    async fn start_with_rules(config: ApiConfig, rules: Vec<(String, String)>) -> Self {
        let sources: Sources = Arc::new(Mutex::new(rules));
        let loader: RuleLoader = {
            let sources = Arc::clone(&sources);
            Arc::new(move |runtime| {
                let files = sources.lock().map(|s| s.clone()).unwrap_or_default();
                RuleSet::load_sources(runtime, files)
            })
        };
        let (control, inbox) = control_channel(Some(Arc::clone(&loader)));
        let clock = Arc::new(AtomicI64::new(100_000));
        let outputs = Arc::new(Mutex::new(Vec::new()));
        let stop_engine = Arc::new(AtomicBool::new(false));
        {
            let (clock, outputs, stop) = (
                Arc::clone(&clock),
                Arc::clone(&outputs),
                Arc::clone(&stop_engine),
            );
            std::thread::spawn(move || {
                // The tests' events carry their own times; accept any.
                let config = EngineConfig {
                    max_future_ms: i64::MAX,
                    ..EngineConfig::default()
                };
                let mut engine =
                    Engine::new(config, |runtime| loader(runtime)).expect("rules load");
                let mut out = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if inbox.run_pending(&mut engine, clock.load(Ordering::SeqCst), &mut out) > 0 {
                        if let Ok(mut all) = outputs.lock() {
                            all.append(&mut out);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        // The engine is built on its thread from `sources`: wait for that, so that a test
        // that edits them afterwards edits what a reload reads, not what start-up reads.
        control
            .call(PATIENCE, |_, _| ())
            .await
            .expect("the engine starts");
        let server = super::bind(&config, control.clone()).await.expect("binds");
        let addr = server.local_addr();
        let (stop_server, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            control,
            addr,
            clock,
            sources,
            outputs,
            stop_engine,
            stop_server: Some(stop_server),
            server: Some(server),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connects")
    }

    async fn client(&self) -> SalveClient<Channel> {
        SalveClient::new(self.channel().await)
    }

    /// Feeds telemetry lines as if read at consecutive offsets, at processing time `now`.
    async fn feed(&self, first_offset: i64, now: i64, events: Vec<String>) {
        self.clock.store(now, Ordering::SeqCst);
        self.control
            .call(PATIENCE, move |engine, context| {
                for (i, event) in events.iter().enumerate() {
                    let position = RecordPosition {
                        offset: first_offset + i as i64,
                        ..RecordPosition::default()
                    };
                    let _ = engine.on_message(
                        position,
                        None,
                        event.as_bytes(),
                        None,
                        context.now_ms,
                        context.out,
                    );
                }
            })
            .await
            .expect("engine runs");
    }

    /// Fires every deadline until none is left: with no acks, retries run out and crash_loop
    /// escalates.
    async fn run_out_the_deadlines(&self) {
        let last = self
            .control
            .call(PATIENCE, |engine, context| {
                let mut last = context.now_ms;
                while let Some(at) = engine.next_deadline() {
                    engine.tick(at, context.out);
                    last = at;
                }
                last
            })
            .await
            .expect("engine runs");
        self.clock.store(last + 1_000, Ordering::SeqCst);
    }

    /// Commands the engine has produced.
    async fn command_count(&self) -> usize {
        self.published(|o| matches!(o, Output::Command(_))).await
    }

    /// Outputs the engine has produced that match `wanted`. Asked on the engine's thread:
    /// the outputs of the jobs it ran in its current round are still in the job context,
    /// those of earlier rounds in `outputs`.
    async fn published(&self, wanted: fn(&Output) -> bool) -> usize {
        let outputs = Arc::clone(&self.outputs);
        self.control
            .call(PATIENCE, move |_, context| {
                let earlier = outputs
                    .lock()
                    .map(|all| all.iter().filter(|o| wanted(o)).count())
                    .unwrap_or(0);
                earlier + context.out.iter().filter(|o| wanted(o)).count()
            })
            .await
            .expect("engine runs")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_engine.store(true, Ordering::SeqCst);
    }
}

fn config_with_token() -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".into(),
        token: TOKEN.into(),
        ..ApiConfig::default()
    }
}

fn exit(entity: &str, ts: i64) -> String {
    format!(
        r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit","labels":{{"service":"checkout","zone":"a"}}}}"#
    )
}

fn cpu(entity: &str, ts: i64, value: f64) -> String {
    format!(
        r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"metric","name":"cpu_util","value":{value},"labels":{{"service":"db"}}}}"#
    )
}

fn authorized<T>(message: T) -> Request<T> {
    with_token(message, TOKEN)
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Three exits of `entity` within a minute: crash_loop opens an incident and restarts it.
async fn crash_loop(harness: &Harness, entity: &str, first_offset: i64) {
    harness
        .feed(
            first_offset,
            100_000,
            vec![
                exit(entity, 91_000),
                exit(entity, 92_000),
                exit(entity, 93_000),
            ],
        )
        .await;
}

/// `rule`'s effectiveness record, as ListRules gives it.
async fn effectiveness_of(client: &mut SalveClient<Channel>, rule: &str) -> proto::Effectiveness {
    client
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("rules")
        .into_inner()
        .rules
        .into_iter()
        .find(|r| r.name == rule)
        .and_then(|r| r.effectiveness)
        .unwrap_or_else(|| panic!("{rule}'s record"))
}

async fn incident_of(client: &mut SalveClient<Channel>, entity: &str) -> proto::Incident {
    let listed = client
        .list_incidents(proto::ListIncidentsRequest {
            subject: entity.into(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(listed.incidents.len(), 1, "{listed:?}");
    listed.incidents[0].clone()
}

#[tokio::test]
async fn every_query_answers_from_the_engine() {
    let harness = Harness::start(config_with_token()).await;
    crash_loop(&harness, "checkout/pod-1", 0).await;
    harness
        .feed(
            10,
            100_000,
            vec![cpu("db-1", 95_000, 0.25), cpu("db-1", 96_000, 0.75)],
        )
        .await;
    let mut client = harness.client().await;

    let status = client
        .get_status(proto::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.entities, 2);
    assert_eq!(status.rules_version, 1);
    assert_eq!(status.global_mode, i32::from(PMode::Active));
    assert_eq!(status.open_incidents.get("remediating"), Some(&1));
    assert_eq!(status.rules_loaded, SHIPPED_RULES.len() as u64);
    assert_eq!(status.state_partitions.len(), 1);
    assert!(status.last_reload.is_none());

    // Label selector, verdict filter, and paging.
    let checkout = client
        .list_entities(proto::ListEntitiesRequest {
            labels: [("service".to_owned(), "checkout".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    let ids: Vec<&str> = checkout.entities.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["checkout/pod-1"]);
    let failing = client
        .list_entities(proto::ListEntitiesRequest {
            health: proto::Health::Failing.into(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(failing.total, 1);
    assert_eq!(failing.entities[0].id, "checkout/pod-1");
    let first = client
        .list_entities(proto::ListEntitiesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!((first.total, first.entities.len()), (2, 1));
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_entities(proto::ListEntitiesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(second.entities.len(), 1);
    assert_ne!(second.entities[0].id, first.entities[0].id);
    assert!(second.next_page_token.is_empty(), "the last page");

    let entity = client
        .get_entity(proto::GetEntityRequest {
            id: "checkout/pod-1".into(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(entity.health, i32::from(proto::Health::Failing));
    assert_eq!(entity.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(entity.series, ["process_exit"]);
    assert_eq!(entity.last_seen_ms, 93_000);
    assert_eq!(entity.incidents.len(), 1);
    let missing = client
        .get_entity(proto::GetEntityRequest {
            id: "nobody".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    let window = client
        .get_series_window(proto::GetSeriesWindowRequest {
            entity: "db-1".into(),
            series: "cpu_util".into(),
            window_ms: 60_000,
        })
        .await
        .expect("window")
        .into_inner();
    assert_eq!(window.count, 2);
    assert_eq!(window.mean, Some(0.5));
    assert_eq!(window.max, Some(0.75));
    assert_eq!(window.last_value, Some(0.75));
    assert_eq!(window.last_ts_ms, Some(96_000));
    let no_series = client
        .get_series_window(proto::GetSeriesWindowRequest {
            entity: "db-1".into(),
            series: "memory".into(),
            window_ms: 0,
        })
        .await
        .expect_err("no such series");
    assert_eq!(no_series.code(), Code::NotFound);
    assert!(no_series.message().contains("reports no series"));

    let incident = incident_of(&mut client, "checkout/pod-1").await;
    assert_eq!(incident.rule, "crash_loop");
    assert_eq!(incident.state, i32::from(PState::Remediating));
    assert_eq!(incident.action, "restart");
    assert_eq!(incident.attempt, 1);
    let by_state = client
        .list_incidents(proto::ListIncidentsRequest {
            states: vec![PState::Escalated.into()],
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert!(by_state.incidents.is_empty(), "none escalated yet");
    let by_rule = client
        .list_incidents(proto::ListIncidentsRequest {
            rule: "node_unhealthy".into(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert!(by_rule.incidents.is_empty());

    let got = client
        .get_incident(proto::GetIncidentRequest {
            id: incident.id.clone(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(got.id, incident.id);
    let states: Vec<(i32, i32)> = got.history.iter().map(|h| (h.from, h.to)).collect();
    assert_eq!(
        states,
        [
            (PState::Unspecified.into(), PState::Failing.into()),
            (PState::Failing.into(), PState::Remediating.into())
        ]
    );

    let rules = client
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("rules")
        .into_inner();
    assert_eq!(rules.rules_version, 1);
    let crash = rules
        .rules
        .iter()
        .find(|r| r.name == "crash_loop")
        .expect("crash_loop is loaded");
    assert_eq!(crash.file, "crash_loop.rhai");
    assert_eq!(crash.mode, i32::from(PMode::Active));
    assert_eq!(crash.own_mode, i32::from(PMode::Unspecified));
    assert!(crash.evaluations >= 1);
    let effectiveness = crash.effectiveness.as_ref().expect("a record");
    assert_eq!(effectiveness.opened, 1);
    assert_eq!(
        effectiveness.actions.get("restart").map(|a| a.attempts),
        Some(1)
    );
    harness.stop().await;
}

#[tokio::test]
async fn mutating_calls_need_the_bearer_token() {
    let harness = Harness::start(config_with_token()).await;
    let mut client = harness.client().await;
    let pause = || proto::SetModeRequest {
        rule: String::new(),
        mode: PMode::Paused.into(),
    };

    let without = client
        .set_mode(Request::new(pause()))
        .await
        .expect_err("no token");
    assert_eq!(without.code(), Code::Unauthenticated, "{without:?}");
    assert!(without.message().contains("authorization: Bearer"));
    let wrong = client
        .set_mode(with_token(pause(), "s3cret-tokem"))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let status = client
        .get_status(proto::GetStatusRequest {})
        .await
        .expect("a query from loopback needs no token")
        .into_inner();
    assert_eq!(
        status.global_mode,
        i32::from(PMode::Active),
        "refused calls changed nothing"
    );

    let set = client
        .set_mode(authorized(pause()))
        .await
        .expect("the right token")
        .into_inner();
    assert_eq!(set.global_mode, i32::from(PMode::Paused));
    let status = client
        .get_status(proto::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.global_mode, i32::from(PMode::Paused));
    harness.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_mutating_calls_are_refused_and_say_how_to_allow_them() {
    let harness = Harness::start(ApiConfig {
        listen: "127.0.0.1:0".into(),
        ..ApiConfig::default()
    })
    .await;
    let mut client = harness.client().await;
    let refused = client
        .reload(with_token(proto::ReloadRequest {}, ""))
        .await
        .expect_err("no token configured");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("api.token"),
        "{}",
        refused.message()
    );
    harness.stop().await;
}

#[tokio::test]
async fn queries_need_the_token_when_loopback_is_not_trusted() {
    let harness = Harness::start(ApiConfig {
        open_queries_on_loopback: false,
        ..config_with_token()
    })
    .await;
    let mut client = harness.client().await;
    let refused = client
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    client
        .list_rules(authorized(proto::ListRulesRequest {}))
        .await
        .expect("with the token");
    // Probes cannot send a token: health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(harness.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: crate::proto::SERVICE_NAME.into(),
        })
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(
        serving.status,
        i32::from(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_action_that_resolves_an_incident_reports_its_time_to_resolve() {
    let harness = Harness::start(config_with_token()).await;
    // Opened at processing time 100 s.
    crash_loop(&harness, "pod-1", 0).await;
    let mut client = harness.client().await;
    let id = incident_of(&mut client, "pod-1").await.id;
    harness
        .control
        .call(PATIENCE, move |engine, context| {
            let ack = salve_engine::Ack {
                v: None,
                command_id: format!("{id}#1"),
                status: salve_engine::AckStatus::Succeeded,
                detail: None,
                ts: None,
                actuator: None,
            };
            engine.on_ack(&ack, context.now_ms, context.out);
        })
        .await
        .expect("engine runs");
    // crash_loop verifies for a minute after the ack, then resolves.
    harness.run_out_the_deadlines().await;

    let record = effectiveness_of(&mut client, "crash_loop").await;
    let restart = record.actions.get("restart").expect("restart's outcomes");
    assert_eq!(restart.succeeded, 1);
    assert_eq!(restart.mttr_count, 1);
    assert_eq!(restart.mttr_mean_ms, Some(60_000));
    harness.stop().await;
}

#[tokio::test]
async fn an_escalated_incident_is_resolved_by_an_operator() {
    let harness = Harness::start(config_with_token()).await;
    crash_loop(&harness, "pod-1", 0).await;
    let mut client = harness.client().await;
    let id = incident_of(&mut client, "pod-1").await.id;

    let too_early = client
        .resolve_incident(authorized(proto::ResolveIncidentRequest {
            id: id.clone(),
            note: String::new(),
        }))
        .await
        .expect_err("automation still owns it");
    assert_eq!(too_early.code(), Code::FailedPrecondition);

    harness.run_out_the_deadlines().await;
    let escalated = client
        .list_incidents(proto::ListIncidentsRequest {
            states: vec![PState::Escalated.into()],
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(escalated.incidents.len(), 1);
    assert_eq!(escalated.incidents[0].id, id);

    let resolved = client
        .resolve_incident(authorized(proto::ResolveIncidentRequest {
            id: id.clone(),
            note: "replaced the disk".into(),
        }))
        .await
        .expect("resolves")
        .into_inner()
        .incident
        .expect("still remembered");
    assert_eq!(resolved.state, i32::from(PState::Resolved));
    assert!(!resolved.open);
    let last = resolved.history.last().expect("history");
    assert_eq!(
        (last.from, last.to),
        (PState::Escalated.into(), PState::Resolved.into())
    );
    assert!(last.reason.contains("replaced the disk"), "{}", last.reason);
    let record = effectiveness_of(&mut client, "crash_loop").await;
    assert_eq!(record.mttr_count, 1, "the rule's incident was resolved");
    assert_eq!(
        record.actions.get("restart").map(|a| a.mttr_count),
        Some(0),
        "by the operator, not by a restart"
    );
    let resolution = harness
        .published(|o| matches!(o, Output::Decision(d) if d.reason.contains("replaced the disk")))
        .await;
    assert_eq!(
        resolution, 1,
        "the resolution reached the outputs the runner publishes"
    );

    let open = client
        .list_incidents(proto::ListIncidentsRequest::default())
        .await
        .expect("lists")
        .into_inner();
    assert!(open.incidents.is_empty());
    let with_closed = client
        .list_incidents(proto::ListIncidentsRequest {
            include_closed: true,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(with_closed.incidents.len(), 1);
    let again = client
        .resolve_incident(authorized(proto::ResolveIncidentRequest {
            id: id.clone(),
            note: String::new(),
        }))
        .await
        .expect_err("closed");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = client
        .resolve_incident(authorized(proto::ResolveIncidentRequest {
            id: "crash_loop/nobody@0:0:1".into(),
            note: String::new(),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let record = effectiveness_of(&mut client, "crash_loop").await;
    assert_eq!(record.escalated, 1);
    let restart = record.actions.get("restart").expect("restart's outcomes");
    assert!(restart.attempts >= 1);
    assert_eq!(restart.failed, restart.attempts, "no ack ever came");
    assert_eq!(restart.escalated, 1);
    harness.stop().await;
}

#[tokio::test]
async fn lifting_a_quarantine_lets_the_rule_act_again() {
    let harness = Harness::start(config_with_token()).await;
    crash_loop(&harness, "pod-1", 0).await;
    harness.run_out_the_deadlines().await;
    let mut client = harness.client().await;
    let id = incident_of(&mut client, "pod-1").await.id;
    let lift = |rule: &str| {
        authorized(proto::LiftQuarantineRequest {
            subject: "pod-1".into(),
            rule: rule.into(),
            note: "on call says go".into(),
        })
    };

    let not_quarantined = client
        .lift_quarantine(lift("node_unhealthy"))
        .await
        .expect_err("no quarantine of that rule");
    assert_eq!(not_quarantined.code(), Code::NotFound);
    let lifted = client
        .lift_quarantine(lift("crash_loop"))
        .await
        .expect("lifts")
        .into_inner();
    assert_eq!(lifted.incident_id, id);
    let closed = client
        .get_incident(proto::GetIncidentRequest { id: id.clone() })
        .await
        .expect("remembered")
        .into_inner();
    assert!(!closed.open);
    assert_eq!(closed.state, i32::from(PState::Failed));

    let before = harness.command_count().await;
    let now = harness.clock.load(Ordering::SeqCst);
    harness
        .feed(
            100,
            now,
            vec![
                exit("pod-1", now - 3_000),
                exit("pod-1", now - 2_000),
                exit("pod-1", now - 1_000),
            ],
        )
        .await;
    assert_eq!(
        harness.command_count().await,
        before + 1,
        "crash_loop acts again"
    );
    harness.stop().await;
}

#[tokio::test]
async fn modes_are_set_globally_and_per_rule_and_a_rule_override_can_be_dropped() {
    let harness = Harness::start(config_with_token()).await;
    let mut client = harness.client().await;
    let set = |rule: &str, mode: PMode| {
        authorized(proto::SetModeRequest {
            rule: rule.into(),
            mode: mode.into(),
        })
    };

    let paused = client
        .set_mode(set("crash_loop", PMode::Paused))
        .await
        .expect("sets")
        .into_inner();
    assert_eq!(
        paused.rule_modes.get("crash_loop"),
        Some(&i32::from(PMode::Paused))
    );
    let rules = client
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("rules")
        .into_inner();
    let crash = rules
        .rules
        .iter()
        .find(|r| r.name == "crash_loop")
        .expect("loaded");
    assert_eq!(
        (crash.mode, crash.own_mode),
        (PMode::Paused.into(), PMode::Paused.into())
    );
    // Paused: the crash loop opens nothing.
    crash_loop(&harness, "pod-1", 0).await;
    assert_eq!(harness.command_count().await, 0);

    let dropped = client
        .set_mode(set("crash_loop", PMode::Unspecified))
        .await
        .expect("drops the override")
        .into_inner();
    assert!(dropped.rule_modes.is_empty());
    let global = client
        .set_mode(set("", PMode::DryRun))
        .await
        .expect("sets")
        .into_inner();
    assert_eq!(global.global_mode, i32::from(PMode::DryRun));
    let unset_global = client
        .set_mode(set("", PMode::Unspecified))
        .await
        .expect_err("the global mode has no unset");
    assert_eq!(unset_global.code(), Code::InvalidArgument);
    let bad = client
        .set_mode(authorized(proto::SetModeRequest {
            rule: String::new(),
            mode: 42,
        }))
        .await
        .expect_err("no mode 42");
    assert_eq!(bad.code(), Code::InvalidArgument);
    harness.stop().await;
}

const EXTRA_RULE: &str = r#"
fn condition(p) {
    count("oom_kill", p.window) >= 1
}

#{
    name: "oom_watch",
    description: "An OOM kill: restart.",
    select: [#{ kind: "event", name: "oom_kill" }],
    params: #{ window: "60s" },
    action: "restart",
}
"#;

#[tokio::test]
async fn reload_reports_its_outcome_and_a_broken_set_keeps_the_old_rules() {
    let harness = Harness::start(config_with_token()).await;
    let mut client = harness.client().await;
    if let Ok(mut sources) = harness.sources.lock() {
        sources.push(("broken.rhai".into(), "fn condition(p) {\n  count(\n".into()));
    }
    let rejected = client
        .reload(authorized(proto::ReloadRequest {}))
        .await
        .expect("a rejected set is an outcome, not an RPC error")
        .into_inner();
    assert!(!rejected.succeeded);
    assert_eq!(rejected.version, 1, "the old set stays");
    assert_eq!(rejected.trigger, "api");
    assert!(
        rejected
            .errors
            .iter()
            .any(|e| e.starts_with("broken.rhai:")),
        "errors name file:line:col: {:?}",
        rejected.errors
    );

    if let Ok(mut sources) = harness.sources.lock() {
        sources.pop();
        sources.push(("oom_watch.rhai".into(), EXTRA_RULE.into()));
    }
    let reloaded = client
        .reload(authorized(proto::ReloadRequest {}))
        .await
        .expect("reloads")
        .into_inner();
    assert!(reloaded.succeeded, "{:?}", reloaded.errors);
    assert_eq!(reloaded.version, 2);
    assert_eq!(reloaded.added, ["oom_watch"]);
    assert!(reloaded.removed.is_empty());
    let rules = client
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("rules")
        .into_inner();
    assert_eq!(rules.rules_version, 2);
    assert!(rules.rules.iter().any(|r| r.name == "oom_watch"));
    assert_eq!(
        rules.last_reload.map(|r| r.version),
        Some(2),
        "the latest reload"
    );
    let status = client
        .get_status(proto::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.rules_version, 2);
    harness.stop().await;
}

/// The shipped rules, with crash_loop's restart waiting for an operator's approval.
fn rules_with_approval() -> Vec<(String, String)> {
    shipped()
        .into_iter()
        .map(|(file, source)| {
            let source = if file == "crash_loop.rhai" {
                source.replace(
                    "    action: \"restart\",\n",
                    "    action: \"restart\",\n    approval: #{ timeout: \"2m\" },\n",
                )
            } else {
                source
            };
            (file, source)
        })
        .collect()
}

#[tokio::test]
async fn an_action_awaiting_approval_is_approved_or_denied() {
    let harness = Harness::start_with_rules(config_with_token(), rules_with_approval()).await;
    crash_loop(&harness, "pod-1", 0).await;
    crash_loop(&harness, "pod-2", 10).await;
    let mut client = harness.client().await;
    let awaiting = client
        .list_incidents(proto::ListIncidentsRequest {
            states: vec![PState::AwaitingApproval.into()],
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(awaiting.incidents.len(), 2, "{awaiting:?}");
    assert_eq!(
        harness.command_count().await,
        0,
        "nothing is sent before approval"
    );
    let first = incident_of(&mut client, "pod-1").await.id;
    let second = incident_of(&mut client, "pod-2").await.id;

    let unauthenticated = client
        .approve_incident(proto::ApproveIncidentRequest {
            id: first.clone(),
            note: String::new(),
        })
        .await
        .expect_err("mutating");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    assert_eq!(harness.command_count().await, 0);

    let approved = client
        .approve_incident(authorized(proto::ApproveIncidentRequest {
            id: first.clone(),
            note: "go ahead".into(),
        }))
        .await
        .expect("approves")
        .into_inner()
        .incident
        .expect("open");
    assert_eq!(approved.state, i32::from(PState::Remediating));
    assert!(
        approved.history.iter().any(
            |h| (h.from, h.to) == (PState::AwaitingApproval.into(), PState::Remediating.into())
        ),
        "{:?}",
        approved.history
    );
    assert_eq!(harness.command_count().await, 1, "the restart is sent");
    let again = client
        .approve_incident(authorized(proto::ApproveIncidentRequest {
            id: first.clone(),
            note: String::new(),
        }))
        .await
        .expect_err("no longer awaiting");
    assert_eq!(again.code(), Code::FailedPrecondition);

    let denied = client
        .deny_incident(authorized(proto::DenyIncidentRequest {
            id: second.clone(),
            note: "not during the sale".into(),
        }))
        .await
        .expect("denies")
        .into_inner()
        .incident
        .expect("remembered");
    assert!(!denied.open);
    assert_eq!(denied.state, i32::from(PState::Failed));
    assert_eq!(
        harness.command_count().await,
        1,
        "nothing sent for the denied one"
    );
    harness.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_and_serves_the_salve_descriptors() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let harness = Harness::start(config_with_token()).await;
    let mut reflection = ServerReflectionClient::new(harness.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("salve.v1.Salve".into()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection answers")
        .into_inner();
    let Ok(Some(listed)) = answers.message().await else {
        panic!("no list of services");
    };
    let Some(MessageResponse::ListServicesResponse(listed)) = listed.message_response else {
        panic!("not a list of services: {listed:?}");
    };
    let names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "salve.v1.Salve",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let Ok(Some(file)) = answers.message().await else {
        panic!("no descriptor");
    };
    let Some(MessageResponse::FileDescriptorResponse(file)) = file.message_response else {
        panic!("not a descriptor: {file:?}");
    };
    assert!(!file.file_descriptor_proto.is_empty());
    harness.stop().await;
}

#[test]
fn calls_are_classified_failing_closed() {
    assert_eq!(access("/salve.v1.Salve/GetStatus"), Access::Query);
    assert_eq!(access("/salve.v1.Salve/WatchDecisions"), Access::Query);
    assert_eq!(access("/salve.v1.Salve/ResolveIncident"), Access::Mutate);
    assert_eq!(access("/salve.v1.Salve/SomethingNew"), Access::Mutate);
    assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
    assert_eq!(
        access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        Access::Query
    );
    assert_eq!(access("/other.Service/GetStatus"), Access::Mutate);
    assert_eq!(access("garbage"), Access::Mutate);
}

#[tokio::test]
async fn a_config_mistake_names_its_key() {
    let (control, _inbox) = control_channel(None);
    let missing_cert = ApiConfig {
        listen: "127.0.0.1:0".into(),
        tls: Some(crate::TlsConfig {
            cert: "/nonexistent/server.crt".into(),
            key: "/nonexistent/server.key".into(),
            client_ca: None,
        }),
        ..ApiConfig::default()
    };
    let error = super::bind(&missing_cert, control.clone())
        .await
        .expect_err("no such file");
    assert!(error.to_string().starts_with("api.tls.cert:"), "{error}");

    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").expect("writes");
    let empty_token = ApiConfig {
        listen: "127.0.0.1:0".into(),
        token_file: Some(empty.clone()),
        ..ApiConfig::default()
    };
    let error = super::bind(&empty_token, control.clone())
        .await
        .expect_err("empty token file");
    assert!(error.to_string().starts_with("api.token_file:"), "{error}");

    std::fs::write(&empty, format!("{TOKEN}\n")).expect("writes");
    let server = super::bind(&empty_token, control)
        .await
        .expect("the token file is read, its newline dropped");
    assert!(format!("{server:?}").contains("token_configured: true"));
}

mod interop;
mod tls;
mod watch;

#[tokio::test]
async fn health_is_not_serving_while_the_engine_does_not_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let harness = Harness::start(config_with_token()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(harness.channel().await);
    let status = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    // The engine's thread stops answering, as a stalled one would.
    harness.stop_engine.store(true, Ordering::SeqCst);
    let waited = std::time::Instant::now();
    loop {
        let overall = health
            .check(status(""))
            .await
            .expect("health answers")
            .into_inner();
        if overall.status == i32::from(ServingStatus::NotServing) {
            break;
        }
        assert!(waited.elapsed() < PATIENCE, "health stayed SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let salve = health
        .check(status(crate::proto::SERVICE_NAME))
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(salve.status, i32::from(ServingStatus::NotServing));
    harness.stop().await;
}

#[test]
fn health_warns_of_an_engine_that_stalls_not_of_one_that_stopped() {
    use salve_connectors::control::ControlError;
    assert!(super::stalled(&ControlError::Timeout(Duration::from_secs(
        2
    ))));
    assert!(!super::stalled(&ControlError::Stopped));
}
