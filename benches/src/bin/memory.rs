//! Memory per entity and per series: feed K entities x 5 series into an engine in-process and
//! compare the resident set size (`VmRSS`) before and after.
//!
//! Each scenario runs in a child process of its own, so that what one leaves in the allocator
//! does not blur the next:
//!
//! - `idle:K`: every series of K entities reports once, then nothing: what an entity that has
//!   gone quiet keeps costing (salve never evicts entities, nor expires a series that stops
//!   reporting);
//! - `active:K:I`: every series reports every I seconds for the whole 15-minute window
//!   (`engine.max_window`), so each series holds 900 / I buckets: a steadily reporting series.
//!
//! `cargo run --release -p salve-benches --bin memory`
#![forbid(unsafe_code)]

use clap::Parser;
use salve_benches::{
    entity_name, machine, partition_for, rss_bytes, shipped_engine, thousands, write_event, Rng,
    BASE_TS_MS, SERIES,
};
use salve_engine::{EntityState, Output, PartitionId, RecordPosition};
use std::error::Error;
use std::time::Instant;

type Failure = Box<dyn Error + Send + Sync>;

const PARTITIONS: i32 = 16;
const WINDOW_S: i64 = 15 * 60;

/// Resident memory per entity and per series.
#[derive(Parser, Debug)]
#[command(name = "memory")]
struct Args {
    /// Entity counts of the idle scenario (each series reports once).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000_usize, 100_000, 1_000_000])]
    idle: Vec<usize>,
    /// Active scenarios as ENTITIES:INTERVAL_SECONDS (each series reports every interval for
    /// 15 minutes).
    #[arg(long, value_delimiter = ',', default_values_t = ["10000:10".to_owned(), "1000:1".to_owned()])]
    active: Vec<String>,
    /// Runs one scenario in this process (used by the parent run).
    #[arg(long, hide = true)]
    child: Option<String>,
}

#[derive(Debug, Clone)]
struct Measured {
    scenario: String,
    entities: usize,
    events: u64,
    rss_before: u64,
    rss_after: u64,
    seconds: f64,
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    if let Some(child) = args.child {
        let measured = run_scenario(&child)?;
        println!(
            "RESULT {} {} {} {} {} {}",
            measured.scenario,
            measured.entities,
            measured.events,
            measured.rss_before,
            measured.rss_after,
            measured.seconds
        );
        return Ok(());
    }

    println!("machine: {}", machine());
    println!(
        "sizes: EntityState {} B, SeriesWindow {} B, bucket 40 B (i64 start, u32 count, 3 x f64)",
        std::mem::size_of::<EntityState>(),
        std::mem::size_of::<salve_engine::window::SeriesWindow>()
    );
    let mut scenarios: Vec<String> = args.idle.iter().map(|k| format!("idle:{k}")).collect();
    scenarios.extend(args.active.iter().map(|a| format!("active:{a}")));
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for scenario in &scenarios {
        let output = std::process::Command::new(&exe)
            .arg("--child")
            .arg(scenario)
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            return Err(format!(
                "scenario {scenario} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let measured = Measured {
            scenario: f.first().copied().unwrap_or_default().to_owned(),
            entities: usize::try_from(number(1)).unwrap_or(0),
            events: number(2),
            rss_before: number(3),
            rss_after: number(4),
            seconds: f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        };
        eprintln!("{scenario}: done in {:.1} s", measured.seconds);
        results.push(measured);
    }

    println!();
    println!(
        "{:<16} {:>10} {:>10} {:>12} {:>10} {:>12} {:>12} {:>9}",
        "scenario", "entities", "series", "events", "RSS delta", "B/entity", "B/series", "seconds"
    );
    for m in &results {
        let delta = m.rss_after.saturating_sub(m.rss_before);
        let series = m.entities * SERIES.len();
        println!(
            "{:<16} {:>10} {:>10} {:>12} {:>8.1}MiB {:>12} {:>12} {:>9.1}",
            m.scenario,
            thousands(m.entities as u64),
            thousands(series as u64),
            thousands(m.events),
            delta as f64 / 1024.0 / 1024.0,
            thousands(delta / m.entities.max(1) as u64),
            thousands(delta / series.max(1) as u64),
            m.seconds
        );
    }
    Ok(())
}

fn run_scenario(spec: &str) -> Result<Measured, Failure> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (entities, interval_s, rounds) = match parts.as_slice() {
        ["idle", k] => (k.parse::<usize>()?, WINDOW_S, 1),
        ["active", k, i] => {
            let interval = i.parse::<i64>()?.max(1);
            (k.parse::<usize>()?, interval, WINDOW_S / interval)
        }
        _ => return Err(format!("unknown scenario {spec}").into()),
    };
    let mut engine = shipped_engine();
    let mut text = String::with_capacity(512);
    let mut rng = Rng::new(7);
    let mut out: Vec<Output> = Vec::with_capacity(64);
    // Warm the buffers before the first reading.
    write_event(&mut text, 0, SERIES[0], BASE_TS_MS, &mut rng);
    let rss_before = rss_bytes().ok_or("no VmRSS in /proc/self/status")?;
    let started = Instant::now();
    let step_ms = (interval_s * 1000 / entities.max(1) as i64).max(1);
    let mut events = 0_u64;
    for round in 0..rounds {
        for index in 0..entities {
            let key = entity_name(index);
            let partition = PartitionId {
                topic: 0,
                partition: partition_for(&key, PARTITIONS),
            };
            let ts = BASE_TS_MS + round * interval_s * 1000 + index as i64 * step_ms;
            for series in SERIES {
                write_event(&mut text, index, series, ts, &mut rng);
                let position = RecordPosition {
                    partition,
                    offset: i64::try_from(events).unwrap_or(i64::MAX),
                };
                engine
                    .on_message(
                        position,
                        Some(key.as_bytes()),
                        text.as_bytes(),
                        None,
                        BASE_TS_MS,
                        &mut out,
                    )
                    .map_err(|e| format!("{e}: {text}"))?;
                out.clear();
                events += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes().ok_or("no VmRSS in /proc/self/status")?;
    if engine.entity_count() != entities {
        return Err(format!(
            "the engine holds {} entities, expected {entities}",
            engine.entity_count()
        )
        .into());
    }
    std::hint::black_box(&engine);
    Ok(Measured {
        scenario: spec.to_owned(),
        entities,
        events,
        rss_before,
        rss_after,
        seconds,
    })
}
