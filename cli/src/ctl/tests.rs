//! `salve ctl` against a real server: the salve.v1 API on 127.0.0.1:0, its engine on a thread
//! that runs control jobs, fed events and clock ticks as jobs.

use super::{build, run, Call, CtlArgs, CtlError};
use clap::Parser;
use salve_api::ApiConfig;
use salve_connectors::{control_channel, ControlHandle, RuleLoader};
use salve_engine::{Engine, EngineConfig, RecordPosition};
use salve_rules::{RuleSet, SHIPPED_RULES};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "ctl-test-token";
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Ctl {
    #[command(flatten)]
    args: CtlArgs,
}

fn parse(args: &[&str]) -> CtlArgs {
    Ctl::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
        .map(|ctl| ctl.args)
        .unwrap_or_else(|error| panic!("{args:?} parses: {error}"))
}

struct Server {
    addr: String,
    control: ControlHandle,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn shipped(runtime: &salve_rules::Runtime) -> Result<RuleSet, salve_rules::LoadErrors> {
    RuleSet::load_sources(
        runtime,
        SHIPPED_RULES
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
}

/// The shipped rules, with crash_loop's restart waiting for an operator's approval.
fn shipped_with_approval(
    runtime: &salve_rules::Runtime,
) -> Result<RuleSet, salve_rules::LoadErrors> {
    RuleSet::load_sources(
        runtime,
        SHIPPED_RULES.iter().map(|(file, source)| {
            let source = if file.starts_with("crash_loop") {
                source.replace("verify_for: \"1m\",", "verify_for: \"1m\", approval: #{},")
            } else {
                (*source).to_owned()
            };
            ((*file).to_owned(), source)
        }),
    )
}

type Rules = fn(&salve_rules::Runtime) -> Result<RuleSet, salve_rules::LoadErrors>;

async fn server() -> Server {
    server_with(shipped).await
}

async fn server_with(rules: Rules) -> Server {
    let loader: RuleLoader = Arc::new(rules);
    let (control, inbox) = control_channel(Some(loader));
    let stop = Arc::new(AtomicBool::new(false));
    let engine_stop = Arc::clone(&stop);
    std::thread::spawn(move || {
        let config = EngineConfig {
            max_future_ms: i64::MAX,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, rules).expect("rules load");
        let mut out = Vec::new();
        while !engine_stop.load(Ordering::SeqCst) {
            inbox.run_pending(&mut engine, 100_000, &mut out);
            out.clear();
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let config = ApiConfig {
        listen: "127.0.0.1:0".into(),
        token: TOKEN.into(),
        ..ApiConfig::default()
    };
    let bound = salve_api::grpc::bind(&config, control.clone())
        .await
        .expect("binds");
    let addr = format!("http://{}", bound.local_addr());
    // Serves until the test's runtime ends.
    tokio::spawn(bound.serve(std::future::pending()));
    Server {
        addr,
        control,
        stop,
    }
}

impl Server {
    /// crash_loop opens on `entity`, and with no acks runs out of attempts and escalates.
    async fn escalate(&self, entity: &str, first_offset: i64) {
        self.crash_loop(entity, first_offset, true).await;
    }

    /// Three exits of `entity`: crash_loop opens an incident. With `until_quiet`, the clock
    /// then moves through every deadline.
    async fn crash_loop(&self, entity: &str, first_offset: i64, until_quiet: bool) {
        let events: Vec<String> = [91_000, 92_000, 93_000]
            .iter()
            .map(|ts| {
                format!(
                    r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit","labels":{{"service":"checkout"}}}}"#
                )
            })
            .collect();
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
                while let Some(at) = engine.next_deadline().filter(|_| until_quiet) {
                    engine.tick(at, context.out);
                }
            })
            .await
            .expect("the engine runs");
    }

    async fn ctl(&self, args: &[&str]) -> Result<String, CtlError> {
        let mut all = vec!["--addr", self.addr.as_str()];
        all.extend_from_slice(args);
        let mut out = Vec::new();
        run(&parse(&all), &mut out).await?;
        Ok(String::from_utf8(out).expect("UTF-8"))
    }

    async fn ok(&self, args: &[&str]) -> String {
        match self.ctl(args).await {
            Ok(text) => text,
            Err(error) => panic!("salve ctl {args:?}: {error}"),
        }
    }
}

fn contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[tokio::test]
async fn every_command_prints_what_the_server_answers() {
    let server = server().await;
    server.escalate("pod-1", 0).await;
    server.escalate("pod-2", 10).await;
    let id = {
        let json = server
            .ok(&["--json", "incidents", "--subject", "pod-1"])
            .await;
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        value["incidents"][0]["id"]
            .as_str()
            .expect("an incident id")
            .to_owned()
    };

    contains(
        &server.ok(&["status"]).await,
        &["mode", "active", "version 1", "escalated=2", "entities"],
    );
    let entities = server
        .ok(&["entities", "-l", "service=checkout", "--verdict", "failing"])
        .await;
    contains(
        &entities,
        &["ENTITY", "pod-1", "pod-2", "failing", "2 of 2 shown"],
    );
    contains(
        &server.ok(&["entities", "--limit", "1"]).await,
        &["1 of 2 shown", "next page: --page-token pod-1"],
    );
    contains(
        &server.ok(&["entity", "pod-1"]).await,
        &["health", "failing", "process_exit", &id],
    );
    contains(
        &server
            .ok(&["window", "pod-1", "process_exit", "--window", "1m"])
            .await,
        &["count", "3", "1m"],
    );
    contains(
        &server.ok(&["incidents", "--state", "escalated"]).await,
        &["INCIDENT", &id, "crash_loop", "escalated"],
    );
    contains(
        &server.ok(&["incident", &id]).await,
        &["TIME", "FROM", "failing", "remediating", "escalated"],
    );
    contains(
        &server.ok(&["rules"]).await,
        &[
            "RULE",
            "crash_loop",
            "restart",
            "ATTEMPTS",
            "rules version 1",
        ],
    );

    let token = ["--token", TOKEN];
    contains(
        &server
            .ok(&[&token[..], &["mode", "--rule", "crash_loop", "dry_run"]].concat())
            .await,
        &["mode: active (crash_loop: dry_run)"],
    );
    contains(
        &server
            .ok(&[&token[..], &["mode", "--rule", "crash_loop", "unset"]].concat())
            .await,
        &["mode: active\n"],
    );
    contains(
        &server
            .ok(&[&token[..], &["resolve", &id, "--note", "fixed the disk"]].concat())
            .await,
        &["resolved", &id, ": resolved\n"],
    );
    contains(
        &server
            .ok(&[&token[..], &["lift", "pod-2", "crash_loop"]].concat())
            .await,
        &["quarantine lifted", "crash_loop/pod-2@"],
    );
    contains(
        &server.ok(&[&token[..], &["reload"]].concat()).await,
        &["ok at", "version 2"],
    );
    let approve = server
        .ctl(&[&token[..], &["approve", &id]].concat())
        .await
        .expect_err("the incident is closed: nothing awaits approval");
    assert!(
        approve.to_string().starts_with("FAILED_PRECONDITION: "),
        "{approve}"
    );
    let deny = server
        .ctl(&[&token[..], &["deny", "crash_loop/nobody@0:0:1"]].concat())
        .await
        .expect_err("no such incident");
    assert!(deny.to_string().starts_with("NOT_FOUND: "), "{deny}");
}

#[tokio::test]
async fn approve_sends_the_awaited_action_and_deny_closes_the_incident() {
    let server = server_with(shipped_with_approval).await;
    server.crash_loop("pod-1", 0, false).await;
    server.crash_loop("pod-2", 10, false).await;
    let awaiting = server
        .ok(&["--json", "incidents", "--state", "awaiting_approval"])
        .await;
    let awaiting: serde_json::Value = serde_json::from_str(&awaiting).expect("JSON");
    let id_of = |entity: &str| {
        awaiting["incidents"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["subject"] == entity))
            .and_then(|i| i["id"].as_str())
            .unwrap_or_else(|| panic!("{entity} awaits approval: {awaiting}"))
            .to_owned()
    };
    let (approved, denied) = (id_of("pod-1"), id_of("pod-2"));

    let token = ["--token", TOKEN];
    assert_eq!(
        server
            .ok(&[&token[..], &["approve", &approved, "--note", "go"]].concat())
            .await,
        format!("approved {approved}: remediating\n")
    );
    assert_eq!(
        server
            .ok(&[&token[..], &["deny", &denied, "--note", "not now"]].concat())
            .await,
        format!("denied {denied}: failed\n")
    );
    let json = server
        .ok(&[&token[..], &["--json", "incident", &approved]].concat())
        .await;
    let incident: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(incident["state"], "INCIDENT_STATE_REMEDIATING", "{json}");
    let restarts = server
        .control
        .call(PATIENCE, |engine, _| {
            engine.ledger().commands_by_action().get("restart").copied()
        })
        .await
        .expect("the engine answers");
    assert_eq!(
        restarts,
        Some(1),
        "the approved restart went out, the denied one not"
    );
    contains(
        &server.ok(&["incident", &denied]).await,
        &[
            "awaiting_approval",
            "failed",
            "denied by an operator: not now",
        ],
    );
}

#[tokio::test]
async fn a_refused_call_fails_with_the_code_and_the_reason() {
    let server = server().await;
    let error = server.ctl(&["mode", "paused"]).await.expect_err("no token");
    assert!(
        error.to_string().starts_with("UNAUTHENTICATED: "),
        "{error}"
    );
    assert_eq!(
        format!("{:?}", error.exit_code()),
        format!("{:?}", std::process::ExitCode::FAILURE)
    );
    let wrong = server
        .ctl(&["--token", "nope", "mode", "paused"])
        .await
        .expect_err("wrong token");
    assert!(
        wrong.to_string().starts_with("UNAUTHENTICATED: "),
        "{wrong}"
    );
    let missing = server
        .ctl(&["incident", "crash_loop/nobody@0:0:1"])
        .await
        .expect_err("no such incident");
    assert!(missing.to_string().starts_with("NOT_FOUND: "), "{missing}");
}

#[tokio::test]
async fn json_is_the_protobuf_mapping_with_every_field() {
    let server = server().await;
    let text = server.ok(&["--json", "status"]).await;
    let status: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(status["globalMode"], "MODE_ACTIVE");
    assert_eq!(status["rulesVersion"], 1, "a JSON number: {text}");
    assert_eq!(status["entities"], 0, "defaults are printed too: {text}");
    assert!(status["assigned"].is_array());
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut out = Vec::new();
    let addr = format!("http://{free}");
    let error = run(&parse(&["--addr", &addr, "status"]), &mut out)
        .await
        .expect_err("nothing listens");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot connect to {addr}")),
        "{error}"
    );
}

#[test]
fn arguments_are_checked_before_anything_is_sent() {
    let build_of = |args: &[&str]| build(&parse(args).command);
    assert!(matches!(
        build_of(&["entities", "-l", "service"]),
        Err(CtlError::Usage(m)) if m.contains("key=value")
    ));
    assert!(matches!(
        build_of(&["entities", "--verdict", "sick"]),
        Err(CtlError::Usage(m)) if m.contains("healthy, pending or failing")
    ));
    assert!(matches!(
        build_of(&["incidents", "--state", "unspecified"]),
        Err(CtlError::Usage(_))
    ));
    assert!(matches!(
        build_of(&["mode", "unset"]),
        Err(CtlError::Usage(m)) if m.contains("--rule")
    ));
    assert!(matches!(
        build_of(&["window", "a", "b", "--window", "soon"]),
        Err(CtlError::Usage(_))
    ));
    let Ok(Call::Entities(request)) = build_of(&[
        "entities",
        "-l",
        "service=checkout,zone=a",
        "-l",
        "tier=web",
    ]) else {
        panic!("a selector");
    };
    assert_eq!(request.labels.len(), 3);
    let Ok(Call::Incidents(request)) = build_of(&[
        "incidents",
        "--state",
        "escalated",
        "--state",
        "backing_off",
        "--closed",
    ]) else {
        panic!("states");
    };
    assert_eq!(
        request.states,
        [
            i32::from(salve_api::proto::IncidentState::Escalated),
            i32::from(salve_api::proto::IncidentState::BackingOff)
        ]
    );
    assert!(request.include_closed);
    let Ok(Call::Window(request)) = build_of(&["window", "a", "b", "--window", "5m"]) else {
        panic!("a window");
    };
    assert_eq!(request.window_ms, 300_000);
}

#[test]
fn status_codes_print_as_grpc_names_them() {
    use super::client::code_name;
    use tonic::Code;
    assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
}

#[test]
fn tables_align_their_columns() {
    let text = super::render::table(
        &["A", "LONGER"],
        &[
            vec!["wide value".into(), "x".into()],
            vec!["b".into(), "y".into()],
        ],
    );
    assert_eq!(text, "A           LONGER\nwide value  x\nb           y\n");
}

#[test]
fn a_watched_transition_reads_as_one_line() {
    use salve_api::proto::{self, watch_decisions_response::Event};
    let event = proto::WatchDecisionsResponse {
        event: Some(Event::Decision(proto::Decision {
            ts_ms: 1_700_000_000_000,
            kind: proto::DecisionKind::Transition.into(),
            rule: "crash_loop".into(),
            entity: "pod-1".into(),
            from: proto::IncidentState::Failing.into(),
            to: proto::IncidentState::Remediating.into(),
            reason: "restart".into(),
            ..Default::default()
        })),
    };
    let mut out = Vec::new();
    super::render::watched(&mut out, false, &event).expect("writes");
    let line = String::from_utf8(out).expect("UTF-8");
    assert_eq!(
        line,
        "2023-11-14T22:13:20.000Z  transition     crash_loop  pod-1  failing -> remediating  restart\n"
    );
    let mut out = Vec::new();
    super::render::watched(&mut out, true, &event).expect("writes");
    let json: serde_json::Value = serde_json::from_slice(&out).expect("one JSON line");
    assert_eq!(json["decision"]["to"], "INCIDENT_STATE_REMEDIATING");
}
