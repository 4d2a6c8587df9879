//! Detection latency: from producing the event that completes a crash loop to its restart
//! command being readable on the commands topic, through a real detector on the embedded
//! broker (librdkafka's mock cluster, in this process), or on the broker that `--brokers`
//! names (a Kafka cluster, Tansu).
//!
//! For each detector named by `--detector`, in one run:
//!
//! 1. **Max throughput.** The detector starts on a backlog pre-produced before any
//!    measurement (the realistic mix, with start and end sentinels per partition). Its rate is
//!    timed from the first start-sentinel command to the last end-sentinel command, as in the
//!    `throughput` binary's phase (b).
//! 2. **Steady load.** A producer thread, standing for the agents, offers `--load` (default
//!    half) of that rate to a fresh live topic: background events cycling through the
//!    realistic mix with their `ts` set to the wall clock, plus `--bursts-per-second` crash
//!    loops of fresh entities (`lat/burst-NNNNNNN`). The instant just before the third exit is
//!    handed to the producer is the start. The end is when a consumer tailing the commands topic
//!    gets the restart command keyed by that entity. Latencies go into an hdrhistogram in µs.
//!
//! Detectors: `relay` (a bare rdkafka consumer and producer that answers every third message of
//! a key: the floor that the clients, the broker and the machine set), `salve` (the runner tuned for latency), `salve-defaults` (the runner with the
//! settings `salve run` uses on the embedded broker), `python` (`benches/python/detector.py`:
//! the same crash-loop logic and a p99 latency rule, with kafka-python), and `salve-commit-1h`
//! (an experiment: `salve` with `kafka.commit_interval` at 1 h, so no commit falls in a phase).
//!
//! `cargo run --release -p salve-benches --bin latency -- --detector salve,salve-defaults,python`
#![forbid(unsafe_code)]

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ThreadedProducer,
};
use salve_benches::kafka::{
    produce_all, runner_kafka_config, send_waiting, sentinel, tail_consumer, BenchBroker, Failure,
    RunningSalve,
};
use salve_benches::relay::Relay;
use salve_benches::{
    load_average, machine, partition_for, patch_ts, shipped_engine_with, thousands, ts_offset,
    wall_ms, Message, Stream, WorkloadSpec,
};
use salve_connectors::TopicsConfig;
use salve_engine::EngineConfig;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The backlog topic's name, after the run's topic prefix.
const BACKLOG: &str = "bench.backlog";
/// Stay well under the ~5 MiB the mock cluster keeps per partition.
const BYTES_PER_PARTITION: usize = 4 * 1024 * 1024;
const BURST_PREFIX: &str = "lat/burst-";
/// The slowest crash loops listed per phase, with when they were sent: periodic stalls show.
const WORST: usize = 12;

/// The runner's consumer and producer settings for a latency-sensitive deployment.
///
/// `fetch.wait.max.ms`: the mock cluster holds an empty fetch response for the whole wait even
/// when data arrives meanwhile (a Kafka broker answers as soon as data arrives), so the default
/// of 500 ms is added to any event that finds the consumer's partitions drained.
/// `linger.ms=0`: send a command as soon as it is issued, not 1 ms later.
const TUNED_CONSUMER: [(&str, &str); 1] = [("fetch.wait.max.ms", "1")];
const TUNED_PRODUCER: [(&str, &str); 1] = [("linger.ms", "0")];

/// Detection latency at a steady load, against the detector's own maximum throughput.
#[derive(Parser, Debug)]
#[command(name = "latency")]
struct Args {
    /// Detectors, in order: relay, salve, salve-defaults, salve-commit-1h, python.
    #[arg(long, value_delimiter = ',', default_value = "salve")]
    detector: Vec<String>,
    /// Events pre-produced for the max-throughput phase (sentinels come on top).
    #[arg(long, default_value_t = 300_000)]
    backlog: usize,
    /// Distinct entities of the realistic mix.
    #[arg(long, default_value_t = 100_000)]
    entities: usize,
    /// Steady loads as shares of the detector's measured maximum throughput, e.g. `0.25,0.5`.
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    load: Vec<f64>,
    /// Offer every detector `--load` times the first detector's maximum, so that all of them
    /// see the same load (e.g. the relay at salve's half load).
    #[arg(long)]
    rate_from_first: bool,
    /// Offer these events/s instead of `--load` times the measured maximum.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Length of each steady phase.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Steady phases per detector and load; the summary shows the one with the median p99.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Measured crash loops per second (each is 3 events of the offered load). At most 1% of
    /// the offered events are these.
    #[arg(long, default_value_t = 200.0)]
    bursts_per_second: f64,
    /// Crash loops of each steady phase's first seconds that are not recorded.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Partitions of each live topic; 4 is what `topics.partitions` creates by default. The
    /// mock cluster answers a fetch with one message set per partition, so more partitions let
    /// the agents send sooner (`--producer linger.ms=0`) without every detector falling behind.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    live_partitions: i32,
    /// Python interpreter for the python detector.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: String,
    /// An extra librdkafka property of the agents' producer, KEY=VALUE; repeatable.
    #[arg(long = "producer", value_parser = property)]
    producer: Vec<(String, String)>,
    /// An extra librdkafka consumer property of salve's runner, on top of its profile;
    /// repeatable. For tuning experiments.
    #[arg(long = "salve-consumer", value_parser = property)]
    salve_consumer: Vec<(String, String)>,
    /// An extra librdkafka producer property of salve's runner; repeatable.
    #[arg(long = "salve-producer", value_parser = property)]
    salve_producer: Vec<(String, String)>,
    /// salve's `kafka.commit_interval` in ms (default 1000). For experiments: each commit first
    /// flushes the outputs on the runner's thread.
    #[arg(long)]
    salve_commit_interval_ms: Option<i64>,
    /// Only measure how long `flush` takes on a `ThreadedProducer` (what salve's runner
    /// flushes before each commit) with one message just sent, N times, and exit.
    #[arg(long)]
    flush_probe: Option<usize>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Run against this Kafka-protocol broker (`host:port,...`) instead of the embedded mock
    /// cluster: a Kafka cluster, or Tansu. The run creates topics and groups of its own, named
    /// `bench-<wall ms>.*`, and leaves them there. No detector gets the settings for the mock:
    /// `salve` keeps only `linger.ms=0`, `salve-defaults` runs on salve's defaults.
    #[arg(long)]
    brokers: Option<String>,
}

fn property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// What one detector did in one run.
#[derive(Debug)]
struct DetectorResult {
    name: String,
    max_rate: f64,
    /// Each steady phase with its load, as a share of `max_rate`.
    steady: Vec<(f64, Steady)>,
}

/// One steady phase.
#[derive(Debug)]
struct Steady {
    offered_rate: f64,
    achieved_rate: f64,
    histogram: Histogram<u64>,
    /// The crash loops sent in the first and in the second half of the phase: a detector that
    /// does not keep up shows a growing latency.
    halves: [Histogram<u64>; 2],
    missing: u64,
    /// The slowest crash loops: (latency µs, seconds into the phase of the send).
    worst: Vec<(u64, f64)>,
    load: String,
}

impl Steady {
    fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());

    let broker = BenchBroker::start(args.brokers.as_deref())?;
    let bootstrap = broker.bootstrap_servers();
    let prefix = broker.prefix();
    let service_topics = broker.service_topics();
    println!("broker: {}", broker.describe());
    let backlog_topic = format!("{prefix}{BACKLOG}");
    if let Some(times) = args.flush_probe {
        return flush_probe(&bootstrap, &service_topics.decisions, times);
    }

    // The backlog for the max-throughput phases, produced once, read by every detector.
    let estimate = 280;
    let partitions = i32::try_from(
        (args.backlog * estimate)
            .div_ceil(BYTES_PER_PARTITION)
            .max(4),
    )
    .unwrap_or(i32::MAX);
    broker.create_topic(&backlog_topic, partitions)?;
    let spec = WorkloadSpec::new(args.backlog, args.entities, partitions);
    let now = wall_ms();
    let mut backlog: Vec<Message> = (0..partitions)
        .flat_map(|p| (0..3).map(move |i| sentinel("start", p, i, now)))
        .collect();
    backlog.extend(Stream::new(&spec).take(args.backlog).map(|mut m| {
        if let Some(at) = ts_offset(&m.payload) {
            patch_ts(&mut m.payload, at, now);
        }
        m
    }));
    backlog.extend((0..partitions).flat_map(|p| (0..3).map(move |i| sentinel("end", p, i, now))));
    produce_all(&bootstrap, &backlog_topic, &backlog)?;
    println!(
        "backlog: {} events ({} sentinels) in {partitions} partitions, {} entities",
        thousands(backlog.len() as u64),
        6 * partitions,
        thousands(args.entities as u64)
    );

    // The agents' events for the steady phases: one round of the realistic mix, recycled.
    let pool_spec = WorkloadSpec::new(args.entities * 6, args.entities, args.live_partitions);
    let pool: Vec<(Message, usize)> = Stream::new(&pool_spec)
        .take(args.entities * 6)
        .filter_map(|m| ts_offset(&m.payload).map(|at| (m, at)))
        .collect();

    let mut results: Vec<DetectorResult> = Vec::new();
    let mut next_burst = 0_u64;
    for name in &args.detector {
        let live = format!("{prefix}bench.live.{name}");
        broker.create_topic(&live, args.live_partitions)?;
        // Partitioned like the widest telemetry topic, as the changelog must be.
        broker.create_topic(
            &format!("{}.{live}", service_topics.changelog),
            partitions.max(args.live_partitions),
        )?;
        let observer = tail_consumer(
            &bootstrap,
            &format!("{prefix}bench.observer.{name}"),
            &service_topics.commands,
        )?;
        let detector = Detector::start(
            name,
            &args,
            &broker,
            [backlog_topic.as_str(), live.as_str()],
            &service_topics,
        )?;
        let first_max = results
            .first()
            .map(|r| r.max_rate)
            .filter(|_| args.rate_from_first);
        let outcome = measure(
            &args,
            first_max,
            &bootstrap,
            &live,
            &observer,
            partitions,
            backlog.len() as u64,
            &pool,
            &mut next_burst,
            name,
        );
        let stopped = detector.stop();
        let result = outcome?;
        println!("{name}: stopped: {}", stopped?);
        results.push(result);
    }
    drop(broker);
    summary(&args, &results);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    args: &Args,
    first_max: Option<f64>,
    bootstrap: &str,
    live: &str,
    observer: &BaseConsumer,
    partitions: i32,
    backlog_events: u64,
    pool: &[(Message, usize)],
    next_burst: &mut u64,
    name: &str,
) -> Result<DetectorResult, Failure> {
    let timeout = Duration::from_secs(args.timeout);
    let elapsed = backlog_rate(observer, partitions, timeout)?;
    let max_rate = backlog_events as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{name}: max throughput {} events/s ({} events in {:.2?}); load average {}",
        thousands(max_rate as u64),
        thousands(backlog_events),
        elapsed,
        load_average()
    );
    if elapsed < Duration::from_millis(100) {
        // A broker that hands the observer the commands in one late batch (Tansu) makes the
        // span between the first and the last sentinel's command meaningless.
        println!(
            "{name}: warning: the backlog took {elapsed:.2?} from the first command to the last; \
             too short to time, so offer a load with --rate or produce a larger --backlog"
        );
    }
    let rates: Vec<(f64, f64)> = if args.rate.is_empty() {
        let base = first_max.unwrap_or(max_rate);
        args.load
            .iter()
            .map(|l| (l * base / max_rate, l * base))
            .collect()
    } else {
        args.rate.iter().map(|r| (r / max_rate, *r)).collect()
    };
    let mut steady = Vec::new();
    for (load, rate) in rates {
        for round in 1..=args.repeat.max(1) {
            let phase = steady_phase(args, bootstrap, live, observer, pool, rate, next_burst)?;
            println!(
            "{name} at {:.0}% #{round}: offered {} events/s, delivered {} events/s; {} crash loops recorded, {} missing; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; p50 of the first and second half {:.2} / {:.2} ms; load average {}",
            100.0 * load,
            thousands(phase.offered_rate as u64),
            thousands(phase.achieved_rate as u64),
            thousands(phase.histogram.len()),
            phase.missing,
            phase.quantile_ms(0.5),
            phase.quantile_ms(0.99),
            phase.quantile_ms(0.999),
            phase.histogram.max() as f64 / 1000.0,
            phase.halves[0].value_at_quantile(0.5) as f64 / 1000.0,
            phase.halves[1].value_at_quantile(0.5) as f64 / 1000.0,
            phase.load,
        );
            let worst: Vec<String> = phase
                .worst
                .iter()
                .map(|(us, at)| format!("{:.1} ms at {at:.2} s", *us as f64 / 1000.0))
                .collect();
            println!("  slowest: {}", worst.join(", "));
            steady.push((load, phase));
        }
    }
    Ok(DetectorResult {
        name: name.to_owned(),
        max_rate,
        steady,
    })
}

/// Waits for the sentinels' commands: the time from the first start sentinel's command to the
/// last end sentinel's.
fn backlog_rate(
    observer: &BaseConsumer,
    partitions: i32,
    timeout: Duration,
) -> Result<Duration, Failure> {
    let deadline = Instant::now() + timeout;
    let mut first = None;
    let mut ends = HashSet::new();
    let expected = usize::try_from(partitions).unwrap_or(0);
    while Instant::now() < deadline {
        let Some(Ok(message)) = observer.poll(Duration::from_millis(1)) else {
            continue;
        };
        let seen = Instant::now();
        let key = message.key().unwrap_or_default();
        if key.starts_with(b"bench/start-") && first.is_none() {
            first = Some(seen);
        } else if key.starts_with(b"bench/end-") {
            ends.insert(key.to_vec());
            if ends.len() == expected {
                let first = first.ok_or("an end sentinel's command came before any start's")?;
                return Ok(seen - first);
            }
        }
    }
    Err(format!(
        "saw {} of {partitions} end sentinels' commands before the timeout",
        ends.len()
    )
    .into())
}

/// A crash loop's third exit, handed to the producer at `sent`.
struct Sent {
    burst: u64,
    at: Instant,
}

/// Offers the steady load on a thread of its own while this thread watches the commands.
fn steady_phase(
    args: &Args,
    bootstrap: &str,
    live: &str,
    observer: &BaseConsumer,
    pool: &[(Message, usize)],
    rate: f64,
    next_burst: &mut u64,
) -> Result<Steady, Failure> {
    let bursts_per_second = args.bursts_per_second.min(rate * 0.01 / 3.0).max(1.0);
    let first_burst = *next_burst;
    let warmup_bursts = (args.warmup_seconds * bursts_per_second) as u64;
    let (sent_tx, sent_rx) = mpsc::channel::<Sent>();
    let offer = Offer {
        rate,
        bursts_per_second,
        seconds: args.seconds,
        first_burst,
        topic: live.to_owned(),
        partitions: args.live_partitions,
    };
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", bootstrap)
        // A latency-sensitive agent would send at once (0), but the mock cluster answers a fetch
        // with at most one message set per partition: sets of one message each cap what any
        // consumer reads below the offered load, and every detector, the bare relay included,
        // falls behind. 1 ms is the least that the mock keeps up with.
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000");
    for (key, value) in &args.producer {
        producer_config.set(key, value);
    }
    let producer: BaseProducer = producer_config.create()?;
    let started = Instant::now();
    let offered = std::thread::scope(|scope| -> Result<Steady, Failure> {
        let agents = scope.spawn(|| offer.run(&producer, pool, sent_tx));
        let mut sends: HashMap<u64, Instant> = HashMap::new();
        let mut early: HashMap<u64, Instant> = HashMap::new();
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
        let mut halves = [histogram.clone(), histogram.clone()];
        let half = Duration::from_secs_f64(args.seconds / 2.0);
        let mut worst: Vec<(u64, f64)> = Vec::new();
        let mut received = 0_u64;
        let mut produced = None;
        let mut drain_deadline = None;
        loop {
            if produced.is_none() && agents.is_finished() {
                produced = Some(Instant::now());
                drain_deadline = Some(Instant::now() + Duration::from_secs(5));
            }
            for sent in sent_rx.try_iter() {
                sends.insert(sent.burst, sent.at);
            }
            let bursts_sent = sends.len() as u64;
            if drain_deadline.is_some_and(|d| Instant::now() > d)
                || (produced.is_some() && received >= bursts_sent)
            {
                break;
            }
            let Some(Ok(message)) = observer.poll(Duration::from_millis(1)) else {
                continue;
            };
            let seen = Instant::now();
            let Some(burst) = message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(BURST_PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            for sent in sent_rx.try_iter() {
                sends.insert(sent.burst, sent.at);
            }
            received += 1;
            match sends.get(&burst) {
                Some(at) => {
                    if burst >= first_burst + warmup_bursts {
                        let into = &mut halves[usize::from(*at - started >= half)];
                        let _ = into.record(
                            (seen - *at)
                                .as_micros()
                                .try_into()
                                .unwrap_or(u64::MAX)
                                .max(1),
                        );
                        record(&mut histogram, &mut worst, seen - *at, *at - started);
                    }
                }
                None => {
                    early.insert(burst, seen);
                }
            }
        }
        // A command that came before its send instant was read off the channel.
        for (burst, seen) in early {
            if let Some(at) = sends.get(&burst) {
                if burst >= first_burst + warmup_bursts {
                    record(
                        &mut histogram,
                        &mut worst,
                        seen.saturating_duration_since(*at),
                        *at - started,
                    );
                }
            }
        }
        let report = agents
            .join()
            .map_err(|_| "the producer thread panicked")??;
        let missing = (sends.len() as u64).saturating_sub(received);
        Ok(Steady {
            offered_rate: rate,
            achieved_rate: report.events as f64 / report.elapsed.as_secs_f64().max(1e-9),
            histogram,
            halves,
            missing,
            worst,
            load: load_average(),
        })
    })?;
    *next_burst = first_burst + 1_000_000;
    producer.flush(Duration::from_secs(30))?;
    Ok(offered)
}

fn record(
    histogram: &mut Histogram<u64>,
    worst: &mut Vec<(u64, f64)>,
    latency: Duration,
    since_start: Duration,
) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(us);
    worst.push((us, since_start.as_secs_f64()));
    worst.sort_by_key(|w| std::cmp::Reverse(w.0));
    worst.truncate(WORST);
}

/// The steady load the agents offer.
struct Offer {
    rate: f64,
    bursts_per_second: f64,
    seconds: f64,
    first_burst: u64,
    topic: String,
    partitions: i32,
}

/// What the agents sent.
struct Offered {
    events: u64,
    elapsed: Duration,
}

impl Offer {
    fn run(
        &self,
        producer: &BaseProducer,
        pool: &[(Message, usize)],
        sent: mpsc::Sender<Sent>,
    ) -> Result<Offered, Failure> {
        if pool.is_empty() {
            return Err("no background events to offer".into());
        }
        let mut pool: Vec<(Message, usize)> = pool.to_vec();
        let background_rate = (self.rate - 3.0 * self.bursts_per_second).max(0.0);
        let start = Instant::now();
        let mut events = 0_u64;
        let mut background = 0_u64;
        let mut bursts = 0_u64;
        let mut next = 0_usize;
        loop {
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= self.seconds {
                break;
            }
            let mut idle = true;
            while (bursts as f64) < elapsed * self.bursts_per_second {
                let burst = self.first_burst + bursts;
                let entity = format!("{BURST_PREFIX}{burst:07}");
                let partition = partition_for(&entity, self.partitions);
                let ts = wall_ms();
                for exit in 0..3 {
                    let payload = format!(
                        r#"{{"v":1,"entity":"{entity}","ts":{},"kind":"event","name":"process_exit","labels":{{"service":"lat"}}}}"#,
                        ts + exit
                    );
                    let at = Instant::now();
                    send_waiting(
                        producer,
                        BaseRecord::to(&self.topic)
                            .key(entity.as_str())
                            .payload(payload.as_bytes())
                            .partition(partition),
                    )?;
                    if exit == 2 {
                        let _ = sent.send(Sent { burst, at });
                    }
                }
                bursts += 1;
                events += 3;
                idle = false;
            }
            let now = wall_ms();
            while (background as f64) < elapsed * background_rate {
                let len = pool.len();
                let (message, at) = &mut pool[next];
                next = (next + 1) % len;
                patch_ts(&mut message.payload, *at, now);
                send_waiting(
                    producer,
                    BaseRecord::to(&self.topic)
                        .key(message.key.as_str())
                        .payload(message.payload.as_slice())
                        .partition(message.partition),
                )?;
                background += 1;
                events += 1;
                idle = false;
            }
            producer.poll(Duration::ZERO);
            if idle {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(Offered {
            events,
            elapsed: start.elapsed(),
        })
    }
}

/// A detector under test, running in this process (salve) or as a child (python).
enum Detector {
    Relay(Relay),
    Salve(RunningSalve),
    Python {
        child: Child,
        stdin: Option<ChildStdin>,
    },
}

impl Detector {
    fn start(
        name: &str,
        args: &Args,
        broker: &BenchBroker,
        [backlog, live]: [&str; 2],
        service_topics: &TopicsConfig,
    ) -> Result<Self, Failure> {
        let bootstrap = &broker.bootstrap_servers();
        // Each detector run starts from no incidents: a changelog of its own.
        let topics = TopicsConfig {
            telemetry: vec![backlog.to_owned(), live.to_owned()],
            create: false,
            changelog: format!("{}.{live}", service_topics.changelog),
            ..service_topics.clone()
        };
        let group = format!("{}bench.latency.{name}", broker.prefix());
        let engine = || shipped_engine_with(EngineConfig::default());
        let extra = |tuned: bool| {
            let mut kafka = if tuned {
                // A Kafka broker answers a fetch as soon as data arrives: no short wait needed.
                let consumer = if broker.is_embedded() {
                    &TUNED_CONSUMER[..]
                } else {
                    &[]
                };
                runner_kafka_config(
                    &group,
                    broker.is_embedded(),
                    consumer.iter().copied(),
                    TUNED_PRODUCER,
                )
            } else {
                runner_kafka_config(&group, broker.is_embedded(), [], [])
            };
            kafka.consumer.extend(args.salve_consumer.iter().cloned());
            kafka.producer.extend(args.salve_producer.iter().cloned());
            if let Some(ms) = args.salve_commit_interval_ms {
                kafka.commit_interval_ms = ms;
            }
            kafka
        };
        match name {
            "relay" => Ok(Self::Relay(Relay::start(
                bootstrap,
                &topics.telemetry,
                &topics.commands,
                &["bench/", BURST_PREFIX],
            )?)),
            "salve" | "salve-defaults" => Ok(Self::Salve(RunningSalve::start(
                bootstrap,
                &topics,
                extra(name == "salve"),
                engine,
            )?)),
            "salve-commit-1h" => {
                // An experiment, not a setting to use: commits (and the output flush before
                // each) only every hour, so none falls inside a phase.
                let mut kafka = extra(true);
                kafka.commit_interval_ms = 3_600_000;
                Ok(Self::Salve(RunningSalve::start(
                    bootstrap, &topics, kafka, engine,
                )?))
            }
            "python" => {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/detector.py");
                let mut child = Command::new(&args.python)
                    .arg(script)
                    .args(["--bootstrap", bootstrap])
                    .args(["--telemetry", &format!("{backlog},{live}")])
                    .args(["--commands", &service_topics.commands])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let mut lines = BufReader::new(stdout).lines();
                match lines.next() {
                    Some(Ok(line)) if line.starts_with("ready") => {}
                    other => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("the python detector did not start: {other:?}").into());
                    }
                }
                // Its last words come after stdin closes; a thread keeps the pipe drained.
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        println!("  python: {line}");
                    }
                });
                let stdin = child.stdin.take();
                Ok(Self::Python { child, stdin })
            }
            other => Err(format!(
                "unknown detector {other:?}: expected relay, salve, salve-defaults, salve-commit-1h or python"
            )
            .into()),
        }
    }

    /// Stops the detector and says what it processed.
    fn stop(self) -> Result<String, Failure> {
        match self {
            Self::Relay(relay) => Ok(format!("{} messages read", thousands(relay.stop()?))),
            Self::Salve(runner) => {
                let report = runner.stop()?;
                Ok(format!(
                    "{} events in, {} commands, {} outputs published",
                    thousands(report.engine.events_in),
                    report.engine.commands,
                    report.published
                ))
            }
            Self::Python { mut child, stdin } => {
                // Closing stdin asks the script to stop.
                if let Some(mut stdin) = stdin {
                    let _ = stdin.flush();
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(status) = child.try_wait()? {
                        return Ok(format!("exited with {status}"));
                    }
                    if Instant::now() > deadline {
                        child.kill()?;
                        child.wait()?;
                        return Ok("killed after 10 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Times `flush` right after one `send`, as salve's runner flushes its outputs before a commit.
fn flush_probe(bootstrap: &str, topic: &str, times: usize) -> Result<(), Failure> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()?;
    let mut spans = Vec::with_capacity(times);
    for _ in 0..times {
        producer
            .send(
                BaseRecord::<str, [u8]>::to(topic)
                    .key("probe")
                    .payload(b"{}".as_slice()),
            )
            .map_err(|(e, _)| e)?;
        let started = Instant::now();
        producer.flush(Duration::from_secs(10))?;
        spans.push(started.elapsed());
    }
    spans.sort();
    println!(
        "flush with one message in flight, {times} times: min {:.2?}, median {:.2?}, max {:.2?}",
        spans.first().copied().unwrap_or_default(),
        spans.get(spans.len() / 2).copied().unwrap_or_default(),
        spans.last().copied().unwrap_or_default()
    );
    Ok(())
}

fn summary(args: &Args, results: &[DetectorResult]) {
    println!();
    println!(
        "median of {} steady phase(s) each, by p99; load as a share of each detector's own maximum:",
        args.repeat.max(1),
    );
    println!(
        "{:<16} {:>12} {:>8} {:>6} {:>12} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "detector",
        "max ev/s",
        "vs 1st",
        "load",
        "offered",
        "recorded",
        "missing",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    let base = results.first().map(|r| r.max_rate);
    for result in results {
        let mut loads: Vec<f64> = result.steady.iter().map(|(l, _)| *l).collect();
        loads.dedup();
        for load in loads {
            let mut phases: Vec<&Steady> = result
                .steady
                .iter()
                .filter(|(l, _)| *l == load)
                .map(|(_, s)| s)
                .collect();
            phases.sort_by(|a, b| a.quantile_ms(0.99).total_cmp(&b.quantile_ms(0.99)));
            let Some(median) = phases.get(phases.len() / 2) else {
                continue;
            };
            println!(
                "{:<16} {:>12} {:>8} {:>5.0}% {:>12} {:>10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                result.name,
                thousands(result.max_rate as u64),
                base.map_or("-".into(), |b| format!("{:.2}", result.max_rate / b)),
                100.0 * load,
                thousands(median.offered_rate as u64),
                thousands(median.histogram.len()),
                median.missing,
                median.quantile_ms(0.5),
                median.quantile_ms(0.99),
                median.quantile_ms(0.999),
                median.histogram.max() as f64 / 1000.0,
            );
        }
    }
    println!("load average at end: {}", load_average());
}
