//! Criterion micro-benchmarks of the per-event path, one piece at a time:
//! decode, window update, the whole `Engine::on_message`, and loading and reloading the rules.
//!
//! `cargo bench -p salve-benches --bench micro`
#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use salve_benches::rulegen::Pack;
use salve_benches::{
    entity_name, patch_ts, shipped_engine, write_event, Rng, Series, BASE_TS_MS, SERIES,
};
use salve_engine::window::SeriesWindow;
use salve_engine::{Engine, EngineConfig, Output, PartitionId, RecordPosition};
use salve_rules::{Limits, Runtime};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Distinct entities the engine benchmarks cycle through.
const ENTITIES: usize = 100_000;
/// Event time advances this much per event: a full cycle of the entities spans 100 s, longer
/// than the crash_loop rule's 60 s window, so its count stays at 1 and it never fires.
const TS_STEP_MS: i64 = 1;

fn event(index: usize, series: Series) -> (String, Vec<u8>, usize) {
    let mut text = String::new();
    let at = write_event(
        &mut text,
        index,
        series,
        BASE_TS_MS,
        &mut Rng::new(index as u64),
    );
    (entity_name(index), text.into_bytes(), at)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, series) in [
        ("metric", SERIES[0]),
        ("health", SERIES[4]),
        ("process_exit", Series::ProcessExit),
    ] {
        let (key, payload, _) = event(12_345, series);
        group.bench_function(format!("{name}_{}B", payload.len()), |b| {
            b.iter(|| {
                salve_engine::decode(
                    black_box(&payload),
                    Some(black_box(key.as_bytes())),
                    MAX_EVENT_BYTES,
                )
                .map(|e| e.ts_ms)
            });
        });
    }
    group.finish();
}

fn window(c: &mut Criterion) {
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(1));
    let resolution = 1_000;
    let retention = 15 * 60 * 1_000;
    // 10 samples a second: steady state holds 900 buckets; a 60 s aggregate reads 60 of them.
    let step = 100;
    let fresh = || {
        let mut w = SeriesWindow::new(Arc::from("latency_ms"));
        let mut ts = BASE_TS_MS;
        while ts < BASE_TS_MS + retention {
            w.record(ts, 1.0, resolution);
            ts += step;
        }
        (w, ts)
    };
    let (mut w, mut ts) = fresh();
    group.bench_function("record+expire", |b| {
        b.iter(|| {
            ts += step;
            w.record(black_box(ts), black_box(12.5), resolution);
            w.expire(ts, retention);
        });
    });
    let (mut w, mut ts) = fresh();
    group.bench_function("record+expire+aggregate_60s", |b| {
        b.iter(|| {
            ts += step;
            w.record(black_box(ts), black_box(12.5), resolution);
            w.expire(ts, retention);
            w.aggregate(ts, 60_000)
        });
    });
    let (w, ts) = fresh();
    group.bench_function("aggregate_60s", |b| {
        b.iter(|| black_box(&w).aggregate(black_box(ts), 60_000));
    });
    group.finish();
}

/// Feeds one event per iteration, cycling through `ENTITIES` pre-built payloads whose `ts` is
/// rewritten in place (13 ASCII digits) so that event time advances.
fn engine_case(c: &mut Criterion, name: &str, series: Series, mut engine: Engine) {
    let mut payloads: Vec<(String, Vec<u8>, usize)> =
        (0..ENTITIES).map(|i| event(i, series)).collect();
    let mut out: Vec<Output> = Vec::new();
    let mut ts = BASE_TS_MS;
    let mut next = 0_usize;
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let (key, payload, at) = &mut payloads[next];
            next = (next + 1) % ENTITIES;
            ts += TS_STEP_MS;
            patch_ts(payload, *at, ts);
            let position = RecordPosition {
                partition: PartitionId {
                    topic: 0,
                    partition: (next % 16) as i32,
                },
                offset: ts,
            };
            let result =
                engine.on_message(position, Some(key.as_bytes()), payload, None, ts, &mut out);
            out.clear();
            result
        });
    });
    group.finish();
    let stats = engine.stats();
    eprintln!(
        "  engine/{name}: {} events, {} rule evaluations ({} native, {} from memory), {} commands, {} decode errors, {} entities",
        stats.events_in,
        stats.rule_evaluations,
        stats.rule_calls_native,
        stats.rule_memo_hits,
        stats.commands,
        stats.decode_errors,
        engine.entity_count()
    );
}

/// The shipped rules with `latency_breaker`'s condition and clear written with a `let`,
/// which only Rhai runs: the baseline of the compiled form's gain.
fn rhai_only_engine() -> Engine {
    let sources = salve_rules::SHIPPED_RULES.iter().map(|(file, source)| {
        let source = source
            .replace(
                "p99(\"latency_ms\", p.window) > p.threshold_ms",
                "let limit = p.threshold_ms; p99(\"latency_ms\", p.window) > limit",
            )
            .replace(
                "p99(\"latency_ms\", p.window) <= p.threshold_ms",
                "let limit = p.threshold_ms; p99(\"latency_ms\", p.window) <= limit",
            );
        ((*file).to_owned(), source)
    });
    let engine = Engine::new(EngineConfig::default(), |runtime| {
        salve_rules::RuleSet::load_sources(runtime, sources)
    });
    match engine {
        Ok(engine) => engine,
        Err(errors) => panic!("the rewritten rules load: {errors}"),
    }
}

fn engine(c: &mut Criterion) {
    // cpu_pct: no shipped rule selects it.
    engine_case(
        c,
        "on_message/unselected_metric",
        SERIES[1],
        shipped_engine(),
    );
    engine_case(
        c,
        "on_message/process_exit_evaluated",
        Series::ProcessExit,
        shipped_engine(),
    );
    // latency_ms: latency_breaker's p99 condition, compiled, then run by Rhai.
    engine_case(
        c,
        "on_message/latency_ms_compiled",
        SERIES[0],
        shipped_engine(),
    );
    engine_case(
        c,
        "on_message/latency_ms_rhai",
        SERIES[0],
        rhai_only_engine(),
    );
}

fn rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules");
    let runtime = shipped_engine();
    group.bench_function("load_shipped", |b| {
        b.iter(|| salve::load_rules(runtime.runtime(), None).map(|r| r.rules().len()));
    });
    group.bench_function("runtime_new+load_shipped", |b| {
        b.iter(|| {
            let runtime = Runtime::new(Limits::default(), |_| {});
            salve::load_rules(&runtime, None).map(|r| r.rules().len())
        });
    });
    // What a hot reload does before swapping the set in: compile and validate every file
    // (`RuleSet::load_sources`), then probe each condition once, in the running engine's sandbox.
    // `reload/...` below measures the whole of `Engine::reload`, the swap included.
    for (name, pack) in [
        ("shipped", Pack::default()),
        ("shipped+98_generated", Pack::with_total(100, 4)),
    ] {
        group.bench_function(format!("reload_build+probe/{name}"), |b| {
            b.iter(|| {
                let set = pack.load(runtime.runtime()).map_err(|e| e.to_string())?;
                set.probe(runtime.runtime()).map_err(|e| e.to_string())?;
                Ok::<usize, String>(set.rules().len())
            });
        });
    }
    // The whole hot reload, `Engine::reload`: build, check, probe, and swap the set in, which
    // rebuilds the router, the retention plan and the group index over every entity held.
    for entities in [0_usize, 10_000] {
        let mut engine = shipped_engine();
        let mut out: Vec<Output> = Vec::new();
        for index in 0..entities {
            let (key, payload, _) = event(index, SERIES[0]);
            let position = RecordPosition {
                partition: PartitionId::default(),
                offset: index as i64,
            };
            let _ = engine.on_message(
                position,
                Some(key.as_bytes()),
                &payload,
                None,
                BASE_TS_MS,
                &mut out,
            );
        }
        let pack = Pack::default();
        group.bench_function(format!("reload/shipped/{entities}_entities"), |b| {
            b.iter(|| {
                out.clear();
                let outcome = engine.reload("bench", |rt| pack.load(rt), BASE_TS_MS, &mut out);
                outcome.succeeded()
            });
        });
    }
    group.bench_function("engine_new_with_shipped_rules", |b| {
        b.iter_batched(
            || (),
            |()| Engine::new(EngineConfig::default(), |rt| salve::load_rules(rt, None)),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = decode, window, engine, rules
}
criterion_main!(micro);
