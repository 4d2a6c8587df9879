//! Shared harness for tests that talk to a real broker over TCP: librdkafka's mock cluster by
//! default, or the broker named by `SALVE_TEST_BROKERS` (e.g. a Tansu started by
//! `scripts/test.sh`). Every test uses its own topics and consumer group, so tests can share
//! one external broker and run in parallel.
#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use salve::Config;
use salve_connectors::{EmbeddedBroker, RunReport, Shutdown, TopicsConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a test waits for something that should happen within a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A broker for one test, with topics of its own.
pub struct TestBroker {
    pub bootstrap: String,
    pub topics: TopicsConfig,
    pub group: String,
    embedded: Option<EmbeddedBroker>,
}

impl TestBroker {
    /// A mock cluster, or the external broker in `SALVE_TEST_BROKERS`, with fresh topic names.
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{name}-{}-{n}", std::process::id());
        // Every topic is the test's own: a changelog shared with another test, or a run
        // before, would restore its incidents here.
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
                    .expect("topics can be created on SALVE_TEST_BROKERS");
                Self {
                    bootstrap,
                    topics,
                    group: prefix,
                    embedded: None,
                }
            }
            None => {
                let embedded = EmbeddedBroker::start(&topics).expect("mock cluster starts");
                Self {
                    bootstrap: embedded.bootstrap_servers(),
                    topics,
                    group: prefix,
                    embedded: Some(embedded),
                }
            }
        }
    }

    /// The embedded broker, for fault injection; `None` on an external broker.
    pub fn embedded(&self) -> Option<&EmbeddedBroker> {
        self.embedded.as_ref()
    }

    /// True when the test runs against an external broker.
    pub fn is_external(&self) -> bool {
        self.embedded.is_none()
    }

    /// A salve config pointing at this broker and these topics.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.kafka.brokers = self.bootstrap.clone();
        config.kafka.group_id = self.group.clone();
        config.kafka.commit_interval_ms = 200;
        // A restarted member rejoins within the mock coordinator's rebalance delay, which is
        // the session timeout less a second.
        config
            .kafka
            .consumer
            .insert("session.timeout.ms".into(), "6000".into());
        config.topics = self.topics.clone();
        // Topics exist already; the mock cluster made them, or ensure_topics did.
        config.topics.create = false;
        config
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("message.max.bytes", "16000000")
            .set("linger.ms", "0")
            .create()
            .expect("producer")
    }

    /// Produces `payload` with `key` to `topic` and waits for the broker to take it.
    pub fn produce(&self, topic: &str, key: Option<&str>, payload: &[u8]) {
        let producer = self.producer();
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Reads `topic` from the beginning until `done` holds or patience runs out.
    pub fn read_until(&self, topic: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        self.read_for(topic, PATIENCE, done)
    }

    /// Reads `topic` from the beginning for up to `wait`, stopping early when `done` holds.
    pub fn read_for(
        &self,
        topic: &str,
        wait: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.auto.commit", "false")
            // librdkafka needs a group id to assign(); this reader never joins or commits.
            .set("group.id", format!("{}.reader", self.group))
            .set("fetch.message.max.bytes", "16000000")
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
        while start.elapsed() < wait && !done(&records) {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    h.value
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        records
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// salve running on a thread of the test process.
pub struct RunningSalve {
    pub shutdown: Arc<Shutdown>,
    handle: Option<JoinHandle<Result<RunReport, String>>>,
    operated: Option<Operated>,
}

/// The operator surface of a salve started with [`RunningSalve::start_operated`].
pub struct Operated {
    /// The way into the engine, as the API uses it.
    pub control: salve_connectors::ControlHandle,
    /// The servers and reload triggers.
    pub operator: Option<salve::serve::Operator>,
    /// The runtime they run on.
    pub runtime: tokio::runtime::Runtime,
}

impl RunningSalve {
    /// Starts salve with `config` and waits until it is connected.
    pub fn start(config: Config) -> Self {
        Self::start_with(config, None, None)
    }

    /// Starts salve as `salve run` does: with the gRPC API, metrics and reload triggers that
    /// `config` turns on, and a control handle for the test.
    pub fn start_operated(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (control, inbox) =
            salve_connectors::control_channel(Some(salve::serve::rule_loader(&config)));
        let operator = runtime
            .block_on(salve::serve::Operator::start(&config, control.clone()))
            .expect("the operator surface starts");
        let operated = Operated {
            control,
            operator: Some(operator),
            runtime,
        };
        Self::start_with(config, Some(inbox), Some(operated))
    }

    fn start_with(
        config: Config,
        inbox: Option<salve_connectors::ControlInbox>,
        operated: Option<Operated>,
    ) -> Self {
        let shutdown = Arc::new(Shutdown::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_shutdown = Arc::clone(&shutdown);
        let handle = std::thread::spawn(move || {
            salve::run::run(&config, &worker_shutdown, inbox.as_ref(), |_| {
                let _ = ready_tx.send(());
            })
            .map_err(|e| e.to_string())
        });
        if ready_rx.recv_timeout(PATIENCE).is_err() {
            let result = handle.join();
            panic!("salve did not become ready: {result:?}");
        }
        Self {
            shutdown,
            handle: Some(handle),
            operated,
        }
    }

    /// Waits until `done` holds of the engine, asking it through the control plane.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&salve_engine::Engine) -> bool + Clone + Send + 'static,
    ) {
        let start = Instant::now();
        loop {
            let check = done.clone();
            if self.ask(move |engine, _| check(engine)) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The operator surface; panics unless started with [`RunningSalve::start_operated`].
    pub fn operated(&self) -> &Operated {
        self.operated.as_ref().expect("started with start_operated")
    }

    /// The gRPC API's address, as `salve ctl --addr` takes it.
    pub fn api_addr(&self) -> String {
        let addr = self
            .operated()
            .operator
            .as_ref()
            .and_then(|o| o.api)
            .expect("the API is on");
        format!("http://{addr}")
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.operated()
            .operator
            .as_ref()
            .and_then(|o| o.metrics)
            .expect("metrics are on")
    }

    /// Runs `job` on the engine's thread and returns its answer.
    pub fn ask<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut salve_engine::Engine, &mut salve_connectors::JobContext<'_>) -> R
            + Send
            + 'static,
    ) -> R {
        self.operated()
            .control
            .call_blocking(PATIENCE, job)
            .expect("the engine answers")
    }

    /// Graceful stop: flush, commit, return the report.
    pub fn stop(mut self) -> RunReport {
        self.shutdown.graceful();
        self.join()
    }

    /// Waits for salve to stop by itself with an error, and returns it.
    pub fn wait_for_failure(mut self) -> String {
        let handle = self.handle.take().expect("running");
        let start = Instant::now();
        while !handle.is_finished() {
            assert!(start.elapsed() < PATIENCE, "salve kept running");
            std::thread::sleep(Duration::from_millis(50));
        }
        match handle.join().expect("salve thread") {
            Ok(report) => panic!("salve stopped without an error: {report:?}"),
            Err(error) => error,
        }
    }

    /// Stop as a crash would: nothing more is committed.
    pub fn kill(mut self) -> RunReport {
        self.shutdown.abort();
        self.join()
    }

    fn join(&mut self) -> RunReport {
        self.stop_operator();
        let handle = self.handle.take().expect("running");
        handle
            .join()
            .expect("salve thread")
            .expect("salve ran without error")
    }
}

impl RunningSalve {
    fn stop_operator(&mut self) {
        if let Some(operated) = &mut self.operated {
            if let Some(operator) = operated.operator.take() {
                operated.runtime.block_on(operator.stop());
            }
        }
    }
}

impl Drop for RunningSalve {
    fn drop(&mut self) {
        self.stop_operator();
        if let Some(handle) = self.handle.take() {
            self.shutdown.abort();
            let _ = handle.join();
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A `load` metric of 99 from `entity`, stamped now: what the hot rules act on.
pub fn load_event(entity: &str) -> String {
    format!(
        r#"{{"v":1,"entity":"{entity}","ts":{},"kind":"metric","name":"load","value":99}}"#,
        now_ms()
    )
}

/// Asks `look` for fresh answers until it returns something, or patience runs out.
pub fn eventually<T>(what: &str, mut look: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match look() {
            Ok(found) => return found,
            Err(last) if start.elapsed() > PATIENCE => {
                panic!("timed out waiting for {what}: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn exit_event(entity: &str, ts: i64) -> String {
    format!(
        r#"{{"v":1,"entity":"{entity}","ts":{ts},"kind":"event","name":"process_exit","labels":{{"service":"checkout"}}}}"#
    )
}

/// Records that parse as JSON and satisfy `pred`.
pub fn matching(
    records: &[Record],
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .filter(|v| pred(v))
        .collect()
}

/// The Python interpreter that sees Debian's python3-kafka: the system one. A pyenv or venv
/// `python3` on PATH does not see its dist-packages. `SALVE_TEST_PYTHON` overrides it.
pub fn python() -> String {
    std::env::var("SALVE_TEST_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

/// Whether `python()` can import kafka-python.
pub fn python_kafka_importable() -> bool {
    std::process::Command::new(python())
        .args(["-c", "import kafka"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A rule that acts on every entity whose `load` passes 50, with the action named `version`:
/// the commands show which version of the rule was in force.
pub fn hot_rule(version: &str) -> String {
    format!(
        r#"
fn condition(p) {{ last("load") > 50.0 }}
#{{ name: "hot", select: [#{{ name: "load" }}], action: "{version}" }}
"#
    )
}

/// A rules directory holding `hot.rhai` at version `v1` (see [`hot_rule`]).
pub struct HotRules {
    /// The directory; removed when this is dropped.
    pub dir: tempfile::TempDir,
    /// `hot.rhai` in it, to edit.
    pub file: std::path::PathBuf,
}

impl TestBroker {
    /// A fresh rules directory with `hot.rhai` at `v1`, and this broker's config that reads
    /// it, with the API and metrics servers off.
    pub fn hot_rules(&self) -> (HotRules, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hot.rhai");
        std::fs::write(&file, hot_rule("v1")).expect("write");
        let mut config = self.config();
        config.rules.dir = Some(dir.path().to_owned());
        config.api.listen.clear();
        config.metrics.listen.clear();
        (HotRules { dir, file }, config)
    }
}

/// GETs `/metrics` from `addr` over plain HTTP/1.1 and returns the body.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: salve\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
