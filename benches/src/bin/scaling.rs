//! How the engine's cost grows with work, from memory (no broker), one scenario per child
//! process so that each starts with a clean allocator:
//!
//! - `entities:K`: the realistic mix over K entities with the shipped rules. One untimed
//!   round creates every entity; then events are timed in batches, generated between
//!   batches, so that 1M entities fit in memory. Reports events/s and the RSS the state
//!   holds.
//! - `rules:N:M:L`: the same mix over `--rules-entities` entities with the shipped rules plus
//!   generated ones, N rules in all: M that match emitted metrics and run (never firing), L
//!   that select an emitted metric with a label no event carries, and the rest selecting a
//!   series that is never emitted.
//!
//! Each rate is also shown as a ratio to the first scenario of its kind in the same run.
//!
//! `cargo run --release -p salve-benches --bin scaling`
#![forbid(unsafe_code)]

use clap::Parser;
use salve_benches::kafka::Failure;
use salve_benches::rulegen::Pack;
use salve_benches::{
    feed_from, machine, rss_bytes, shipped_engine, thousands, wall_ms, Message, Stream,
    WorkloadSpec, SERIES,
};
use salve_engine::Engine;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 16;
const BATCH: usize = 1 << 16;

/// Throughput and memory as entities and rules grow.
#[derive(Parser, Debug)]
#[command(name = "scaling")]
struct Args {
    /// Entity counts of the `entities` scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000_usize, 100_000, 1_000_000])]
    entities: Vec<usize>,
    /// Rule packs as TOTAL:MATCHING:LABEL_MISMATCH (the rest select series never emitted).
    #[arg(long, value_delimiter = ',', default_values_t = [
        "1:0:0".to_owned(), "10:0:0".to_owned(), "100:0:0".to_owned(),
        "100:0:20".to_owned(), "100:4:0".to_owned(),
    ])]
    rules: Vec<String>,
    /// Entities of the `rules` scenarios.
    #[arg(long, default_value_t = 100_000)]
    rules_entities: usize,
    /// Timed events per scenario, at least; 1M entities take two rounds (10M events).
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
    /// Runs of each scenario; the summary shows the median rate.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Runs one scenario in this process (used by the parent run).
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// What one scenario measured.
#[derive(Debug, Clone)]
struct Measured {
    scenario: String,
    rules: usize,
    entities: usize,
    events: u64,
    elapsed: Duration,
    rss_before: u64,
    rss_after: u64,
    evaluations: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    if let Some(child) = &args.child {
        let m = run_scenario(child, &args)?;
        println!(
            "RESULT {} {} {} {} {} {} {} {}",
            m.scenario,
            m.rules,
            m.entities,
            m.events,
            m.elapsed.as_nanos(),
            m.rss_before,
            m.rss_after,
            m.evaluations
        );
        return Ok(());
    }
    println!("machine: {}", machine());
    println!("load average at start: {}", salve_benches::load_average());
    let mut scenarios: Vec<String> = args
        .entities
        .iter()
        .map(|k| format!("entities:{k}"))
        .collect();
    scenarios.extend(args.rules.iter().map(|r| format!("rules:{r}")));
    let exe = std::env::current_exe()?;
    let mut results: Vec<Vec<Measured>> = Vec::new();
    for scenario in &scenarios {
        let mut runs = Vec::new();
        for round in 1..=args.repeat.max(1) {
            let output = std::process::Command::new(&exe)
                .arg("--child")
                .arg(scenario)
                .args(["--events", &args.events.to_string()])
                .args(["--rules-entities", &args.rules_entities.to_string()])
                .output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
                return Err(format!(
                    "scenario {scenario} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            };
            let measured = parse(line).ok_or_else(|| format!("unreadable result: {line}"))?;
            eprintln!(
                "{scenario} #{round}: {:.0} events/s over {:.1?}",
                measured.rate(),
                measured.elapsed
            );
            runs.push(measured);
        }
        results.push(runs);
    }

    println!();
    println!("median of {} run(s) each:", args.repeat.max(1));
    println!(
        "{:<18} {:>6} {:>10} {:>12} {:>12} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "scenario",
        "rules",
        "entities",
        "timed events",
        "events/s",
        "ns/event",
        "vs 1st",
        "evals/ev",
        "RSS MiB",
        "B/entity"
    );
    let mut bases: Vec<(&str, f64)> = Vec::new();
    for runs in &results {
        let mut sorted: Vec<&Measured> = runs.iter().collect();
        sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let Some(m) = sorted.get(sorted.len() / 2) else {
            continue;
        };
        let kind = m.scenario.split(':').next().unwrap_or_default();
        let base = match bases.iter().find(|(k, _)| *k == kind) {
            Some((_, rate)) => *rate,
            None => {
                bases.push((kind, m.rate()));
                m.rate()
            }
        };
        let rss = m.rss_after.saturating_sub(m.rss_before);
        println!(
            "{:<18} {:>6} {:>10} {:>12} {:>12} {:>9.0} {:>8.2} {:>10.3} {:>10.1} {:>10}",
            m.scenario,
            m.rules,
            thousands(m.entities as u64),
            thousands(m.events),
            thousands(m.rate() as u64),
            1e9 / m.rate(),
            m.rate() / base,
            m.evaluations as f64 / m.events.max(1) as f64,
            rss as f64 / 1024.0 / 1024.0,
            thousands(rss / m.entities.max(1) as u64),
        );
    }
    println!("load average at end: {}", salve_benches::load_average());
    Ok(())
}

fn parse(line: &str) -> Option<Measured> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let number = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Measured {
        scenario: (*f.first()?).to_owned(),
        rules: usize::try_from(number(1)?).ok()?,
        entities: usize::try_from(number(2)?).ok()?,
        events: number(3)?,
        elapsed: Duration::from_nanos(number(4)?),
        rss_before: number(5)?,
        rss_after: number(6)?,
        evaluations: number(7)?,
    })
}

fn run_scenario(spec: &str, args: &Args) -> Result<Measured, Failure> {
    let parts: Vec<&str> = spec.split(':').collect();
    let number = |text: &str| text.parse::<usize>();
    let (mut engine, entities): (Engine, usize) = match parts.as_slice() {
        ["entities", k] => (shipped_engine(), number(k)?),
        ["rules", total, matching, mismatch] => {
            let mut pack = Pack::with_total(number(total)?, number(matching)?);
            pack.label_mismatch = number(mismatch)?.min(pack.unmatched);
            pack.unmatched -= pack.label_mismatch;
            (pack.engine()?, args.rules_entities)
        }
        _ => return Err(format!("unknown scenario {spec}").into()),
    };
    let rules = engine.rules().rules().len();
    let spec_w = WorkloadSpec::new(usize::MAX, entities, PARTITIONS);
    let mut stream = Stream::new(&spec_w);
    let mut offsets = Vec::new();
    // A batch's worth of messages allocated and freed before the first reading, so that the
    // allocator's free lists, not the engine's state, hold the batches that come after.
    let mut batch: Vec<Message> = Stream::new(&spec_w).take(BATCH).collect();
    batch.clear();
    let rss_before = rss_bytes().ok_or("no VmRSS in /proc/self/status")?;

    // One round, untimed: every entity is created.
    let round = entities * SERIES.len();
    let mut warm = 0;
    while warm < round {
        batch.clear();
        batch.extend(stream.by_ref().take(BATCH.min(round - warm)));
        warm += batch.len();
        feed_from(&mut engine, &batch, wall_ms, &mut offsets);
    }
    let evaluations_before = engine.stats().rule_evaluations;

    let timed = args.events.max(2 * round);
    let mut elapsed = Duration::ZERO;
    let mut events = 0_u64;
    while (events as usize) < timed {
        batch.clear();
        batch.extend(stream.by_ref().take(BATCH.min(timed - events as usize)));
        let started = Instant::now();
        let fed = feed_from(&mut engine, &batch, wall_ms, &mut offsets);
        elapsed += started.elapsed();
        events += fed.events;
        if fed.decode_errors > 0 {
            return Err(format!("{} events did not decode", fed.decode_errors).into());
        }
    }
    batch.clear();
    let rss_after = rss_bytes().ok_or("no VmRSS in /proc/self/status")?;
    Ok(Measured {
        scenario: spec.to_owned(),
        rules,
        entities: engine.entity_count(),
        events,
        elapsed,
        rss_before,
        rss_after,
        evaluations: engine.stats().rule_evaluations - evaluations_before,
    })
}
