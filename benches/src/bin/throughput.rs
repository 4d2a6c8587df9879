//! End-to-end throughput, in one run, on librdkafka's mock cluster (salve's embedded broker),
//! or on the Kafka-protocol broker that `--brokers` names:
//!
//! - (a) a bare rdkafka `BaseConsumer` reading the telemetry topic: the ceiling;
//! - (b) salve's runner (`salve_connectors::run`) with the shipped rules, consuming the same
//!   topic in a fresh consumer group, publishing commands and decisions, committing;
//! - (c) the same engine fed the same messages from memory: the engine's own cost;
//! - (d) a plain `BaseConsumer` poll loop that hands each message to the engine, publishing
//!   and committing nothing: what the runner adds on top of polling and the engine;
//! - (e) `salve replay`'s pipeline over the same events in a JSON-lines file, no broker: read
//!   the file, decode, run the engine on event time, write every output as a JSON line (to a
//!   sink). What a user's `salve replay` or `salve test` run costs per event.
//!
//! The topic is pre-produced before any measurement. Each partition starts and ends with a
//! burst of three `process_exit` events of a sentinel entity, which the `crash_loop` rule
//! turns into a command. (b) is timed from the first start-sentinel command seen on the
//! commands topic to the last end-sentinel command, so the consumer group's join (3 s on the
//! mock cluster) is not counted, and the end is known without peeking into the runner.
//! (a) and (d) are timed from their first message to their last.
//!
//! `cargo run --release -p salve-benches --bin throughput -- --events 1000000 --repeat 3`
#![forbid(unsafe_code)]

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use salve_benches::kafka::{
    produce_all, runner_kafka_config, sentinel, tail_consumer, BenchBroker, Failure, RunningSalve,
};
use salve_benches::{
    current_tid, feed, generate, machine, process_cpu, shipped_engine, thousands, thread_cpu,
    wall_ms, Message, WorkloadSpec, BASE_TS_MS,
};
use salve_connectors::runner::consumer_defaults;
use salve_connectors::{EmbeddedBroker, RunReport, TopicsConfig};
use salve_engine::{Engine, Output, PartitionId, RecordPosition};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// The telemetry topic's name, after the run's topic prefix.
const TELEMETRY: &str = "bench.telemetry";
/// Stay well under the ~5 MiB the mock cluster keeps per partition.
const BYTES_PER_PARTITION: usize = 4 * 1024 * 1024;

/// salve's end-to-end throughput against a bare consumer, on the embedded broker.
#[derive(Parser, Debug)]
#[command(name = "throughput")]
struct Args {
    /// Telemetry events to pre-produce (6 sentinel events per partition come on top).
    #[arg(long, env = "SALVE_BENCH_EVENTS", default_value_t = 50_000)]
    events: usize,
    /// Distinct entities, each reporting 5 series per round. Default: events / 50, so 10
    /// rounds, between 1,000 and the 100,000 (which `--events 5000000` reaches).
    #[arg(long, env = "SALVE_BENCH_ENTITIES")]
    entities: Option<usize>,
    /// Partitions of the telemetry topic. Default: enough to keep each under 4 MiB.
    #[arg(long)]
    partitions: Option<i32>,
    /// Runs of each phase; the summary shows the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Which phases to run, e.g. `b` alone for profiling: a = bare consumer, b = salve's
    /// runner, c = the engine from memory, d = a bare consumer loop that calls the engine
    /// (no publishing, no commits: splits (b)'s cost between the engine and the runner),
    /// e = `salve replay` over a JSON-lines file.
    #[arg(long, default_value = "abcde")]
    phases: String,
    /// An extra librdkafka consumer property, KEY=VALUE, for (a), (b) and (d) alike; repeatable.
    /// For tuning experiments: the documented figures use none.
    #[arg(long = "consumer", value_parser = property)]
    consumer: Vec<(String, String)>,
    /// An extra librdkafka producer property for salve's producers in (b), as
    /// `[kafka.producer]` (whose `linger.ms` reaches only the producer of commands); repeatable.
    #[arg(long = "producer", value_parser = property)]
    producer: Vec<(String, String)>,
    /// An extra librdkafka property for the producer of decisions and changelog records in
    /// (b), as `[kafka.record_producer]`; repeatable.
    #[arg(long = "record-producer", value_parser = property)]
    record_producer: Vec<(String, String)>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Run (a), (b) and (d) against this Kafka-protocol broker (`host:port,...`) instead of
    /// the embedded mock cluster. The run creates topics and groups of its own, named
    /// `bench-<wall ms>.*`, and leaves them there. Neither the runner nor the bare consumer
    /// gets the settings for the mock.
    #[arg(long)]
    brokers: Option<String>,
}

/// Where (a), (b) and (d) read: the broker, with this run's names on it, and its telemetry
/// topic.
struct Target<'a> {
    broker: &'a BenchBroker,
    telemetry: String,
}

fn property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Extra client properties from the command line.
#[derive(Debug, Clone, Default)]
struct Extra {
    consumer: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
    record_producer: BTreeMap<String, String>,
}

/// A point in time, with the CPU time spent so far.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    process: Option<Duration>,
    thread: Option<Duration>,
}

impl Sample {
    fn now(tid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            process: process_cpu(),
            thread: tid.and_then(thread_cpu),
        }
    }
}

/// One measured phase.
#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    events: u64,
    elapsed: Duration,
    /// CPU time of the whole process (librdkafka's threads and the mock broker included).
    process_cpu: Option<Duration>,
    /// CPU time of the thread that polls (a) or runs the engine (b, c, d).
    thread_cpu: Option<Duration>,
}

impl Phase {
    fn between(name: &'static str, events: u64, start: Sample, end: Sample) -> Self {
        let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Self {
            name,
            events,
            elapsed: end.at - start.at,
            process_cpu: diff(start.process, end.process),
            thread_cpu: diff(start.thread, end.thread),
        }
    }

    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// CPU time as a share of wall time; "-" when too short for the kernel's 10 ms ticks.
fn percent(part: Option<Duration>, whole: Duration) -> String {
    if whole < Duration::from_millis(500) {
        return "-".into();
    }
    part.map_or("?".into(), |p| {
        format!(
            "{:.0}%",
            100.0 * p.as_secs_f64() / whole.as_secs_f64().max(1e-9)
        )
    })
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let entities = args
        .entities
        .unwrap_or((args.events / 50).clamp(1_000, 100_000));
    let timeout = Duration::from_secs(args.timeout);
    let repeat = args.repeat.max(1);
    let run = |phase: char| args.phases.contains(phase);
    let extra = Extra {
        consumer: args.consumer.iter().cloned().collect(),
        producer: args.producer.iter().cloned().collect(),
        record_producer: args.record_producer.iter().cloned().collect(),
    };
    if !extra.consumer.is_empty() || !extra.producer.is_empty() || !extra.record_producer.is_empty()
    {
        println!("extra client properties: {extra:?}");
    }
    println!("machine: {}", machine());

    // The workload, with the sentinels around it.
    let started = Instant::now();
    let mut spec = WorkloadSpec::new(args.events, entities, 1);
    let estimate = generate(&WorkloadSpec::new(1_000, 100, 1)).bytes() / 1_000 + 80;
    let partitions = args.partitions.unwrap_or_else(|| {
        let needed = (args.events * estimate).div_ceil(BYTES_PER_PARTITION);
        i32::try_from(needed.max(4)).unwrap_or(i32::MAX)
    });
    spec.partitions = partitions;
    let workload = generate(&spec);
    let mut messages: Vec<Message> = Vec::with_capacity(workload.messages.len() + 6 * 1024);
    for p in 0..partitions {
        messages.extend((0..3).map(|i| sentinel("start", p, i, BASE_TS_MS - 10_000)));
    }
    messages.extend(workload.messages.iter().cloned());
    for p in 0..partitions {
        messages.extend((0..3).map(|i| sentinel("end", p, i, workload.last_ts_ms + 1_000)));
    }
    let total = messages.len() as u64;
    let bytes: usize = messages.iter().map(|m| m.payload.len() + m.key.len()).sum();
    println!(
        "workload: {} events ({} + {} sentinels), {} entities x 5 series, {} process_exit in {} bursts, {:.0} B/event on average, {} partitions; generated in {:.1?}",
        thousands(total),
        thousands(workload.messages.len() as u64),
        6 * partitions,
        thousands(entities as u64),
        thousands(workload.exit_events as u64),
        thousands(workload.bursts as u64),
        bytes as f64 / total as f64,
        partitions,
        started.elapsed(),
    );

    // (c) first, before the broker exists: the engine alone, on this thread.
    let mut in_memory = Vec::new();
    let mut fed_commands = None;
    if run('c') {
        let tid = current_tid();
        for round in 1..=repeat {
            let mut engine = shipped_engine();
            let start = Sample::now(tid);
            let fed = feed(&mut engine, &messages, wall_ms);
            let end = Sample::now(tid);
            let stats = engine.stats();
            println!(
                "(c) #{round}: {:.0} events/s; {} commands, {} outputs, {} decode errors; {} rule calls, {} answered from memory",
                fed.events as f64 / (end.at - start.at).as_secs_f64(),
                fed.commands,
                fed.outputs,
                fed.decode_errors,
                thousands(stats.rule_evaluations),
                thousands(stats.rule_memo_hits),
            );
            drop(engine);
            fed_commands = Some(fed.commands);
            in_memory.push(Phase::between(
                "(c) salve engine, from memory",
                fed.events,
                start,
                end,
            ));
        }
    }

    // (e) before the broker exists too: salve replay's pipeline, from a file.
    let mut from_file = Vec::new();
    if run('e') {
        let path = std::env::temp_dir().join(format!("salve-bench-{}.jsonl", std::process::id()));
        write_json_lines(&path, &messages)?;
        let replayed = (1..=repeat).try_for_each(|round| -> Result<(), Failure> {
            let phase = replay_file(&path, total)?;
            println!("(e) #{round}: {:.0} events/s", phase.rate());
            from_file.push(phase);
            Ok(())
        });
        let _ = std::fs::remove_file(&path);
        replayed?;
    }

    let mut bare = Vec::new();
    let mut runner = Vec::new();
    let mut polled = Vec::new();
    if run('a') || run('b') || run('d') {
        // The broker, and the topic filled before anything is timed.
        let broker = BenchBroker::start(args.brokers.as_deref())?;
        let target = Target {
            broker: &broker,
            telemetry: format!("{}{TELEMETRY}", broker.prefix()),
        };
        println!("broker: {}", broker.describe());
        broker.create_topic(&target.telemetry, partitions)?;
        let produced = Instant::now();
        produce_all(&broker.bootstrap_servers(), &target.telemetry, &messages)?;
        let produce_time = produced.elapsed();
        // Only the mock cluster evicts. On an external broker (a) reads every event or
        // times out, and Tansu 0.6 under-reports high watermarks after large batches.
        if broker.is_embedded() {
            check_retained(&target, partitions, total)?;
        }
        println!(
            "produced {} events in {:.1?} ({:.0} events/s), every one delivered{}",
            thousands(total),
            produce_time,
            total as f64 / produce_time.as_secs_f64(),
            if broker.is_embedded() {
                "; every partition holds all its events"
            } else {
                ""
            }
        );
        let run_topics = TopicsConfig {
            telemetry: vec![target.telemetry.clone()],
            create: false,
            ..broker.service_topics()
        };
        for round in 1..=repeat {
            if run('a') {
                let phase = bare_consumer(
                    &target,
                    round,
                    partitions,
                    total,
                    timeout,
                    &extra.consumer,
                    None,
                )?;
                println!("(a) #{round}: {:.0} events/s", phase.rate());
                bare.push(phase);
            }
            if run('d') {
                let mut engine = shipped_engine();
                let phase = bare_consumer(
                    &target,
                    round,
                    partitions,
                    total,
                    timeout,
                    &extra.consumer,
                    Some(&mut engine),
                )?;
                println!(
                    "(d) #{round}: {:.0} events/s; {} commands",
                    phase.rate(),
                    engine.stats().commands
                );
                polled.push(phase);
            }
            if run('b') {
                let (phase, report) = {
                    // Each round starts from no incidents: a changelog of its own, or round 2
                    // would restore round 1's and measure something else.
                    let round_topics = TopicsConfig {
                        changelog: format!("{}.round{round}", run_topics.changelog),
                        ..run_topics.clone()
                    };
                    broker.create_topic(&round_topics.changelog, partitions)?;
                    salve_runner(&target, &round_topics, &extra, round, partitions, timeout)?
                };
                println!(
                    "(b) #{round}: {:.0} events/s; the runner saw {} events, issued {} commands, published {} outputs, dead-lettered {}, committed {} times",
                    phase.rate(),
                    thousands(report.engine.events_in),
                    report.engine.commands,
                    report.published,
                    report.dead_lettered,
                    report.commits
                );
                if report.engine.events_in != total {
                    return Err(format!(
                        "the runner saw {} events, {total} were produced",
                        report.engine.events_in
                    )
                    .into());
                }
                if fed_commands.is_some_and(|c| c != report.engine.commands) {
                    println!(
                        "note: the runner issued {} commands, the in-memory engine {fed_commands:?}",
                        report.engine.commands
                    );
                }
                runner.push(phase);
            }
        }
        drop(broker);
    }

    println!();
    println!("median of {repeat} run(s) each:");
    println!(
        "{:<36} {:>10} {:>8} {:>12} {:>8} {:>11} {:>12}",
        "phase", "events", "seconds", "events/s", "vs (a)", "thread CPU", "process CPU"
    );
    let medians: Vec<Option<Phase>> = [&bare, &runner, &in_memory, &polled, &from_file]
        .into_iter()
        .map(|phases| median(phases))
        .collect();
    let base = medians[0].as_ref().map(Phase::rate);
    for phase in medians.iter().flatten() {
        println!(
            "{:<36} {:>10} {:>8.2} {:>12} {:>8} {:>11} {:>12}",
            phase.name,
            thousands(phase.events),
            phase.elapsed.as_secs_f64(),
            thousands(phase.rate() as u64),
            base.map_or("-".into(), |b| format!("{:.0}%", 100.0 * phase.rate() / b)),
            percent(phase.thread_cpu, phase.elapsed),
            percent(phase.process_cpu, phase.elapsed),
        );
    }
    println!();
    if let [Some(a), Some(b), Some(c), ..] = medians.as_slice() {
        println!(
            "(b)/(a) = {:.2}   (c)/(a) = {:.2}   (b)/(c) = {:.2}",
            b.rate() / a.rate(),
            c.rate() / a.rate(),
            b.rate() / c.rate()
        );
    }
    if let Some(c) = &medians[2] {
        println!("engine from memory: {:.0} ns/event", 1e9 / c.rate());
    }
    if let Some(b) = &medians[1] {
        println!("runner: {:.0} ns/event of wall time", 1e9 / b.rate());
    }
    Ok(())
}

/// Writes each payload as one line: the file `salve replay` reads.
fn write_json_lines(path: &std::path::Path, messages: &[Message]) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for message in messages {
        if message.payload.contains(&b'\n') {
            return Err("a generated payload holds a newline".into());
        }
        file.write_all(&message.payload)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(())
}

/// (e): what `salve replay FILE` does, timed from opening the file to the last output line
/// written. Nothing acknowledges the commands, as in (b) and (c).
fn replay_file(path: &std::path::Path, total: u64) -> Result<Phase, Failure> {
    use std::io::Write as _;
    let tid = current_tid();
    let mut engine = shipped_engine();
    let actuator = salve::replay::Actuator {
        default: salve::replay::SimulatedOutcome::Silent,
        by_action: BTreeMap::new(),
        delay_ms: 0,
        operator: Vec::new(),
    };
    let mut sink = std::io::BufWriter::new(std::io::sink());
    let mut lines_out = 0_u64;
    let mut failed = None;
    let start = Sample::now(tid);
    let mut lines = salve_connectors::file_source::LineReader::new(
        std::io::BufReader::new(std::fs::File::open(path)?),
        salve_engine::EngineConfig::default().max_event_bytes,
    );
    salve::replay::replay(&mut engine, &mut lines, actuator, &mut |line| match line
        .write_to(&mut sink)
    {
        Ok(()) => lines_out += 1,
        Err(error) => failed = Some(error),
    })?;
    sink.flush()?;
    let end = Sample::now(tid);
    if let Some(error) = failed {
        return Err(error.into());
    }
    let stats = engine.stats();
    if stats.events_in != total || stats.decode_errors != 0 || stats.late_events != 0 {
        return Err(format!(
            "the engine saw {} events, {} unreadable and {} late; {total} were written, all readable and in time",
            stats.events_in, stats.decode_errors, stats.late_events
        )
        .into());
    }
    if lines_out == 0 {
        return Err("replay wrote no output".into());
    }
    Ok(Phase::between(
        "(e) salve replay, from a file",
        total,
        start,
        end,
    ))
}

/// The phase with the median rate.
fn median(phases: &[Phase]) -> Option<Phase> {
    let mut sorted: Vec<&Phase> = phases.iter().collect();
    sorted.sort_by(|x, y| x.rate().total_cmp(&y.rate()));
    sorted.get(sorted.len() / 2).map(|p| (*p).clone())
}

fn plain_consumer(
    target: &Target,
    group: &str,
    extra: &BTreeMap<String, String>,
) -> Result<BaseConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", target.broker.bootstrap_servers())
        .set("group.id", format!("{}{group}", target.broker.prefix()));
    // What salve's runner sets on this broker, so that only the work differs.
    for (key, value) in consumer_defaults() {
        config.set(key, value);
    }
    if target.broker.is_embedded() {
        for (key, value) in EmbeddedBroker::CONSUMER_SETTINGS {
            config.set(key, value);
        }
    }
    for (key, value) in extra {
        config.set(key, value);
    }
    config.create()
}

/// The mock cluster drops a partition's oldest messages past ~5 MiB: make sure none went.
fn check_retained(target: &Target, partitions: i32, total: u64) -> Result<(), Failure> {
    let consumer = plain_consumer(target, "bench.check", &BTreeMap::new())?;
    let mut held = 0_u64;
    for p in 0..partitions {
        let (low, high) =
            consumer.fetch_watermarks(&target.telemetry, p, Duration::from_secs(10))?;
        if low != 0 {
            return Err(format!(
                "the mock cluster evicted the first {low} messages of partition {p}; use more --partitions"
            )
            .into());
        }
        held += u64::try_from(high).unwrap_or(0);
    }
    if held != total {
        return Err(format!("the topic holds {held} events, {total} were produced").into());
    }
    Ok(())
}

/// (a), or (d) with `engine`: a plain poll loop, handing each message to the engine when given.
fn bare_consumer(
    target: &Target,
    round: usize,
    partitions: i32,
    total: u64,
    timeout: Duration,
    extra: &BTreeMap<String, String>,
    mut engine: Option<&mut Engine>,
) -> Result<Phase, Failure> {
    let group = if engine.is_some() { "engine" } else { "bare" };
    let consumer = plain_consumer(target, &format!("bench.{group}.{round}"), extra)?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(&target.telemetry, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let tid = current_tid();
    let deadline = Instant::now() + timeout;
    let mut count = 0_u64;
    let mut bytes = 0_usize;
    let mut first = None;
    let mut out: Vec<Output> = Vec::new();
    while count < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if first.is_none() {
                    first = Some(Sample::now(tid));
                }
                count += 1;
                bytes +=
                    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
                if let Some(engine) = engine.as_deref_mut() {
                    let position = RecordPosition {
                        partition: PartitionId {
                            topic: 0,
                            partition: message.partition(),
                        },
                        offset: message.offset(),
                    };
                    let payload = message.payload().unwrap_or_default();
                    let record_ts = message.timestamp().to_millis();
                    let _ = engine.on_message(
                        position,
                        message.key(),
                        payload,
                        record_ts,
                        wall_ms(),
                        &mut out,
                    );
                    out.clear();
                }
            }
            Some(Err(error)) => eprintln!("bare consumer: {error}"),
            None if Instant::now() > deadline => {
                return Err(format!("read {count} of {total} events before the timeout").into())
            }
            None => {}
        }
    }
    let end = Sample::now(tid);
    std::hint::black_box(bytes);
    let first = first.ok_or("no message")?;
    // The first message opens the interval; the others are counted in it.
    Ok(Phase::between(
        if engine.is_some() {
            "(d) BaseConsumer + engine, no output"
        } else {
            "(a) bare rdkafka BaseConsumer"
        },
        total - 1,
        first,
        end,
    ))
}

fn salve_runner(
    target: &Target,
    topics: &TopicsConfig,
    extra: &Extra,
    round: usize,
    partitions: i32,
    timeout: Duration,
) -> Result<(Phase, RunReport), Failure> {
    // Watches the commands topic for the sentinels' commands.
    let broker = target.broker;
    let bootstrap = broker.bootstrap_servers();
    let observer = tail_consumer(
        &bootstrap,
        &format!("{}bench.observer", broker.prefix()),
        &topics.commands,
    )?;
    let mut kafka = runner_kafka_config(
        &format!("{}bench.salve.{round}", broker.prefix()),
        broker.is_embedded(),
        extra.consumer.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        extra.producer.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    kafka.record_producer.extend(extra.record_producer.clone());
    let runner = RunningSalve::start(&bootstrap, topics, kafka, shipped_engine)?;
    let tid = runner.tid;
    let deadline = Instant::now() + timeout;
    let mut first = None;
    let mut ends = HashSet::new();
    let end = loop {
        if Instant::now() > deadline {
            let outcome = runner.stop();
            return Err(format!(
                "(b) saw {} of {partitions} end sentinels before the timeout; runner: {outcome:?}",
                ends.len()
            )
            .into());
        }
        let Some(Ok(message)) = observer.poll(Duration::from_millis(2)) else {
            continue;
        };
        let seen = Instant::now();
        // Commands are keyed by entity; only the sentinels' matter here.
        let key = message.key().unwrap_or_default();
        if key.starts_with(b"bench/start-") && first.is_none() {
            first = Some(Sample::now(tid));
        } else if key.starts_with(b"bench/end-") {
            ends.insert(key.to_vec());
            if ends.len() == usize::try_from(partitions).unwrap_or(0) {
                let mut end = Sample::now(tid);
                end.at = seen;
                break end;
            }
        }
    };
    let report = runner.stop()?;
    let first = first.ok_or("no start sentinel command was seen")?;
    let phase = Phase::between(
        "(b) salve runner, Kafka in and out",
        report.engine.events_in,
        first,
        end,
    );
    Ok((phase, report))
}
