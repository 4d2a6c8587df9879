//! The `/metrics` endpoint over real HTTP: an engine on its own thread is driven through a
//! crash loop (three exits, a restart, its ack, the verification), the endpoint is scraped
//! with a plain HTTP/1.1 request, and the page is read by parsers that are not ours: the
//! `prometheus-parse` crate always, and the Prometheus org's Python reference parsers
//! (`prometheus_client.parser` for the text format 0.0.4, `prometheus_client.openmetrics.parser`
//! for OpenMetrics) when python3-prometheus-client is installed. Without it those checks skip,
//! unless `SALVE_REQUIRE_INTEROP` is set (scripts/test.sh sets it after installing it).

use salve_api::metrics::{self, MetricsServer};
use salve_api::MetricsConfig;
use salve_connectors::{control_channel, ControlHandle, ControlInbox};
use salve_engine::{Engine, EngineConfig, Output};
use salve_rules::{RuleSet, SHIPPED_RULES};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The processing clock of the test engine: a fixed instant, so nothing depends on the time
/// the test runs at.
const NOW: i64 = 1_700_000_000_000;
/// crash_loop verifies a restart for a minute after its ack.
const VERIFY_MS: i64 = 60_000;
const ENTITY: &str = "checkout/pod-1";

fn shipped(runtime: &salve_rules::Runtime) -> Result<RuleSet, salve_rules::LoadErrors> {
    RuleSet::load_sources(
        runtime,
        SHIPPED_RULES
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
}

fn exit(entity: &str, ts: i64) -> String {
    format!(r#"{{"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit"}}"#)
}

/// What the engine thread was fed, for the assertions.
#[derive(Debug, Default)]
struct Fed {
    messages: u64,
    decode_errors: u64,
    restarts: u64,
}

/// An engine on its own thread, as the runner keeps it: `feed` builds and feeds it, then it
/// serves control jobs until stopped, and hands back what `feed` returned.
struct EngineThread<T> {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<T>>,
}

impl<T: Send + 'static> EngineThread<T> {
    /// Serves control jobs at processing time `now_ms`.
    fn start(
        inbox: ControlInbox,
        now_ms: i64,
        feed: impl FnOnce(&mut Vec<Output>) -> (Engine, T) + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let (mut engine, fed) = feed(&mut out);
            while !stopping.load(Ordering::Relaxed) {
                inbox.run_pending(&mut engine, now_ms, &mut out);
                out.clear();
                std::thread::sleep(Duration::from_millis(1));
            }
            fed
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("not stopped yet")
            .join()
            .expect("the engine thread did not panic")
    }
}

impl<T> Drop for EngineThread<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The shipped rules take the crash loop, its restart is acked and verified, and one message
/// is unreadable.
fn feed_crash_loop(out: &mut Vec<Output>) -> (Engine, Fed) {
    let mut engine = Engine::new(EngineConfig::default(), shipped).expect("rules load");
    let mut fed = Fed::default();
    let mut offset = 0;
    let mut message = |engine: &mut Engine, payload: &[u8], out: &mut Vec<Output>| {
        offset += 1;
        let position = salve_engine::RecordPosition {
            offset,
            ..Default::default()
        };
        engine.on_message(position, None, payload, None, NOW, out)
    };
    for ts in [NOW - 40_000, NOW - 20_000, NOW - 1_000] {
        message(&mut engine, exit(ENTITY, ts).as_bytes(), out).expect("valid");
    }
    // One healthy neighbour, and one message no one can read.
    message(&mut engine, exit("checkout/pod-2", NOW).as_bytes(), out).expect("valid");
    assert!(message(&mut engine, b"{not json", out).is_err());
    fed.messages = offset as u64;
    fed.decode_errors = 1;
    let restarts: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Command(c) if c.action == "restart" => Some(c.id.clone()),
            _ => None,
        })
        .collect();
    fed.restarts = restarts.len() as u64;
    for id in &restarts {
        let ack = format!(r#"{{"command_id":"{id}","status":"succeeded"}}"#);
        engine
            .on_ack_message(ack.as_bytes(), NOW, out)
            .expect("a valid ack");
    }
    // The fix held for its verification window: the incident resolves.
    engine.tick(NOW + VERIFY_MS + 1_000, out);
    (engine, fed)
}

/// The endpoint on its own runtime, bound to a free port.
struct Endpoint {
    /// Held, not read: the server runs on it until the endpoint drops.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Endpoint {
    fn start(control: ControlHandle) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let config = MetricsConfig {
            listen: "127.0.0.1:0".into(),
        };
        let server: MetricsServer = runtime
            .block_on(metrics::bind(&config, control))
            .expect("binds a free port");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0, "the real port, not the one asked for");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            _runtime: runtime,
            addr,
            stop: Some(stop),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A bare HTTP/1.1 GET, so the test depends on no client library's idea of the protocol.
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout set");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response read");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "a rendered page has a known length"
    );
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A running engine that went through the crash loop, and its endpoint.
fn crash_loop_scraped() -> (EngineThread<Fed>, Endpoint) {
    let (control, inbox) = control_channel(None);
    let engine = EngineThread::start(inbox, NOW + VERIFY_MS + 1_000, feed_crash_loop);
    (engine, Endpoint::start(control))
}

/// The value of the sample `name` whose labels include `labels`, from prometheus-parse.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "one {name}{labels:?}, got {found:?}");
    match &found[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => *v,
        other => panic!("{name} is {other:?}, not a counter or a gauge"),
    }
}

/// Histogram buckets from prometheus-parse, asserting they are cumulative and end in +Inf.
fn buckets(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no histogram {name}{labels:?}"));
    let prometheus_parse::Value::Histogram(buckets) = &found.value else {
        panic!("{name} is {:?}, not a histogram", found.value);
    };
    assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than));
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{name}: buckets are cumulative: {buckets:?}"
    );
    assert_eq!(
        buckets.last().map(|b| b.less_than),
        Some(f64::INFINITY),
        "{name}: the last bucket is +Inf"
    );
    buckets.iter().map(|b| b.count).collect()
}

#[test]
fn a_scrape_shows_a_crash_loop_in_the_prometheus_text_format() {
    let (engine, endpoint) = crash_loop_scraped();
    let response = get(endpoint.addr, "/metrics", None);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = &response.body;
    assert!(!body.contains("# EOF"), "no OpenMetrics marker in 0.0.4");
    assert!(!body.contains("# UNIT"), "no OpenMetrics marker in 0.0.4");
    let fed = engine.stop();
    assert_eq!(fed.restarts, 1);

    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads it");
    let total = |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels);
    assert_eq!(total("salve_engine_events_total", &[]), fed.messages as f64);
    assert_eq!(total("salve_decode_errors_total", &[]), 1.0);
    assert_eq!(
        total("salve_dead_lettered_total", &[("reason", "decode_error")]),
        1.0
    );
    assert_eq!(total("salve_late_events_total", &[]), 0.0);
    assert_eq!(total("salve_commands_total", &[("action", "restart")]), 1.0);
    assert_eq!(total("salve_acks_total", &[("status", "succeeded")]), 1.0);
    assert_eq!(total("salve_acks_total", &[("status", "failed")]), 0.0);
    assert_eq!(
        total("salve_escalations_total", &[("cause", "exhausted")]),
        0.0
    );
    // Every valid event reached crash_loop.
    assert_eq!(
        total("salve_rule_evaluations_total", &[("rule", "crash_loop")]),
        (fed.messages - fed.decode_errors) as f64
    );
    assert_eq!(
        total("salve_rule_errors_total", &[("rule", "crash_loop")]),
        0.0
    );
    // crash_loop's condition is compiled: every call of it ran natively.
    assert_eq!(
        total("salve_rule_calls_native_total", &[]),
        (fed.messages - fed.decode_errors) as f64
    );
    assert_eq!(total("salve_rule_memo_hits_total", &[]), 0.0);
    assert_eq!(
        total(
            "salve_rule_action_attempts_total",
            &[("rule", "crash_loop"), ("action", "restart")]
        ),
        1.0
    );
    assert_eq!(
        total(
            "salve_rule_action_succeeded_total",
            &[("rule", "crash_loop"), ("action", "restart")]
        ),
        1.0
    );
    assert_eq!(
        total(
            "salve_rule_incidents_opened_total",
            &[("rule", "crash_loop")]
        ),
        1.0
    );
    assert_eq!(
        total(
            "salve_rule_incidents_resolved_total",
            &[("rule", "crash_loop")]
        ),
        1.0
    );
    assert_eq!(total("salve_incidents", &[("state", "failing")]), 0.0);
    assert_eq!(total("salve_incidents", &[("state", "verifying")]), 0.0);
    assert_eq!(total("salve_entities", &[]), 2.0);
    assert_eq!(total("salve_rules_version", &[]), 1.0);
    assert_eq!(total("salve_rules_last_reload_success", &[]), 1.0);
    assert_eq!(
        total(
            "salve_rule_mode",
            &[("rule", "crash_loop"), ("mode", "active")]
        ),
        1.0
    );
    assert_eq!(
        total(
            "salve_rule_mode",
            &[("rule", "crash_loop"), ("mode", "paused")]
        ),
        0.0
    );

    // Opened at NOW, resolved by the tick at NOW + 61 s: above the 60 s bound, within 120 s,
    // and so in every bucket from 120 s up.
    let resolve = buckets(
        &scrape,
        "salve_rule_time_to_resolve_seconds",
        &[("rule", "crash_loop")],
    );
    let within = |bound: f64| {
        let index = salve_engine::ledger::RESOLVE_BUCKETS_S
            .iter()
            .position(|b| *b == bound)
            .expect("a bound");
        resolve[index]
    };
    assert_eq!(within(60.0), 0.0);
    assert_eq!(within(120.0), 1.0);
    assert_eq!(resolve.last(), Some(&1.0));
    // The restart resolved it: the same time, by rule and action.
    let by_action = buckets(
        &scrape,
        "salve_rule_action_time_to_resolve_seconds",
        &[("rule", "crash_loop"), ("action", "restart")],
    );
    assert_eq!(by_action, resolve);
    assert_eq!(
        resolve.len(),
        salve_engine::ledger::RESOLVE_BUCKETS_S.len() + 1
    );
    // No runner here, so no latency was observed; the histogram is still complete.
    let latency = buckets(&scrape, "salve_event_to_command_latency_seconds", &[]);
    assert_eq!(latency.len(), 13);
    assert!(latency.iter().all(|c| *c == 0.0));

    // The counters are typed as counters, which they are only when TYPE names the samples.
    let commands = scrape
        .samples
        .iter()
        .find(|s| s.metric == "salve_commands_total")
        .expect("commands");
    assert!(matches!(
        commands.value,
        prometheus_parse::Value::Counter(_)
    ));

    if let Some(families) = python_parse(body, "prometheus") {
        check_python_families(&families, &fed);
    }
}

#[test]
fn openmetrics_is_served_to_a_scraper_that_asks_for_it() {
    let (engine, endpoint) = crash_loop_scraped();
    // What Prometheus 2.x and 3.x send.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let response = get(endpoint.addr, "/metrics", Some(accept));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(response.body.ends_with("# EOF\n"));
    assert!(response
        .body
        .contains("# TYPE salve_commands counter\nsalve_commands_total{action=\"restart\"} 1\n"));
    let openmetrics = response.body;

    // A scraper that prefers plain text gets it.
    let response = get(
        endpoint.addr,
        "/metrics",
        Some("text/plain;version=0.0.4,application/openmetrics-text;q=0.5"),
    );
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let fed = engine.stop();
    if let Some(families) = python_parse(&openmetrics, "openmetrics") {
        check_python_families(&families, &fed);
    }
}

/// A rule that never returns: the operation budget stops every call of it.
const SPIN: &str = r#"
fn condition(p) { loop { } }
#{ name: "spin", select: [#{ kind: "event" }], action: "none" }
"#;

#[test]
fn a_rule_stopped_by_its_budget_is_counted_per_rule() {
    let (control, inbox) = control_channel(None);
    let engine = EngineThread::start(inbox, NOW, |out| {
        let mut engine = Engine::new(EngineConfig::default(), |runtime| {
            RuleSet::load_sources(
                runtime,
                SHIPPED_RULES
                    .iter()
                    .map(|(f, s)| ((*f).to_owned(), (*s).to_owned()))
                    .chain([("spin.rhai".to_owned(), SPIN.to_owned())]),
            )
        })
        .expect("rules load");
        for (offset, ts) in [NOW - 2_000, NOW - 1_000].into_iter().enumerate() {
            let position = salve_engine::RecordPosition {
                offset: offset as i64,
                ..Default::default()
            };
            engine
                .on_message(position, None, exit(ENTITY, ts).as_bytes(), None, NOW, out)
                .expect("valid");
        }
        (engine, ())
    });
    let endpoint = Endpoint::start(control);
    let response = get(endpoint.addr, "/metrics", None);
    engine.stop();
    assert_eq!(response.status, 200, "{}", response.body);
    let scrape = prometheus_parse::Scrape::parse(response.body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads it");
    let total = |name: &str, rule: &str| sample(&scrape, name, &[("rule", rule)]);
    assert_eq!(total("salve_rule_budget_stops_total", "spin"), 2.0);
    assert_eq!(
        total("salve_rule_errors_total", "spin"),
        2.0,
        "a stopped call failed: an error too"
    );
    assert_eq!(total("salve_rule_budget_stops_total", "crash_loop"), 0.0);
    assert_eq!(total("salve_rule_evaluations_total", "crash_loop"), 2.0);
}

#[test]
fn an_engine_that_cannot_answer_gets_a_503_with_the_reason() {
    let (control, inbox) = control_channel(None);
    drop(inbox);
    let endpoint = Endpoint::start(control);
    let response = get(endpoint.addr, "/metrics", None);
    assert_eq!(response.status, 503);
    assert!(
        response.body.contains("the engine is not running"),
        "{}",
        response.body
    );
    assert_eq!(get(endpoint.addr, "/elsewhere", None).status, 404);
}

/// Checks on what the Python reference parser made of the page: every family has the type
/// salve meant (a parser that cannot match a TYPE line to its samples falls back to
/// `unknown`), and the values are the ones fed.
fn check_python_families(families: &[Value], fed: &Fed) {
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
    };
    for f in families {
        assert_ne!(f["type"], "unknown", "untyped family: {f}");
        assert_ne!(f["type"], "untyped", "untyped family: {f}");
    }
    assert_eq!(family("salve_commands")["type"], "counter");
    assert_eq!(family("salve_incidents")["type"], "gauge");
    assert_eq!(
        family("salve_event_to_command_latency_seconds")["type"],
        "histogram"
    );
    let value = |name: &str, sample: &str, labels: &[(&str, &str)]| {
        let samples: Vec<&Value> = family(name)["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .filter(|s| s["name"] == sample && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .collect();
        assert_eq!(samples.len(), 1, "{sample}{labels:?}: {samples:?}");
        samples[0]["value"].as_f64().expect("a number")
    };
    assert_eq!(
        value("salve_engine_events", "salve_engine_events_total", &[]),
        fed.messages as f64
    );
    assert_eq!(
        value(
            "salve_commands",
            "salve_commands_total",
            &[("action", "restart")]
        ),
        1.0
    );
    let buckets: Vec<(String, f64)> = family("salve_rule_time_to_resolve_seconds")["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| {
            s["name"] == "salve_rule_time_to_resolve_seconds_bucket"
                && s["labels"]["rule"] == "crash_loop"
        })
        .map(|s| {
            (
                s["labels"]["le"].as_str().unwrap_or_default().to_owned(),
                s["value"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(buckets.last().map(|b| b.0.as_str()), Some("+Inf"));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().map(|b| b.1), Some(1.0));
}

/// The page as the Python reference parser reads it, as JSON families, or `None` (with the
/// reason printed) when python3-prometheus-client is not installed and not required.
fn python_parse(body: &str, format: &str) -> Option<Vec<Value>> {
    const SCRIPT: &str = r#"
import json, math, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name,
        "type": f.type,
        "samples": [
            {"name": s.name, "labels": s.labels,
             "value": s.value if math.isfinite(s.value) else str(s.value)}
            for s in f.samples
        ],
    })
json.dump(families, sys.stdout)
"#;
    let python = python();
    let importable = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        assert!(
            std::env::var_os("SALVE_REQUIRE_INTEROP").is_none(),
            "SALVE_REQUIRE_INTEROP is set but {python} cannot import prometheus_client"
        );
        eprintln!(
            "skipping the Python reference parser: {python} cannot import prometheus_client \
             (scripts/install-test-deps.sh installs python3-prometheus-client)"
        );
        return None;
    }
    let mut child = std::process::Command::new(&python)
        .args(["-c", SCRIPT, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("page written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "the {format} reference parser rejected the page: {}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("JSON families"))
}

/// The interpreter that sees Debian's python3-prometheus-client: the system one, since a pyenv
/// or venv `python3` on PATH does not see its dist-packages. `SALVE_TEST_PYTHON` overrides it
/// (as in tests/tests/support, which this crate cannot share).
fn python() -> String {
    std::env::var("SALVE_TEST_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}
