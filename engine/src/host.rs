//! The host functions rules call to read windowed state, and the frame they read it from.
//!
//! Before calling a rule, the engine moves the entity's state into the shared [`Frame`] (a swap,
//! no copy) and moves it back afterwards. Host functions read the frame and record every value
//! they return as evidence, so each verdict carries the numbers it rested on.

use crate::entity::EntityState;
use crate::window::Aggregate;
use crate::wire::Evidence;
use salve_rules::{duration_ms, Dynamic, EvalAltResult, RhaiEngine};
use std::cell::RefCell;
use std::rc::Rc;

/// What host functions can see during one rule call.
#[derive(Debug, Default)]
pub struct Frame {
    /// The window end: the entity's latest event time. Windows are the entity's own, so
    /// another entity's clock (ahead, or skewed) cannot empty them.
    pub now_ms: i64,
    /// The partition's event time, the largest seen on it, for `since_last`.
    pub partition_now_ms: i64,
    /// The longest window a rule may ask for.
    pub max_window_ms: i64,
    /// The bucket width: the shortest window a rule may ask for.
    pub resolution_ms: i64,
    /// The entity under evaluation, moved in for the call.
    pub entity: EntityState,
    /// Values returned so far in this call.
    pub evidence: Vec<Evidence>,
}

/// The frame shared between the engine and the registered host functions.
pub type SharedFrame = Rc<RefCell<Frame>>;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

fn window_arg(frame: &Frame, window: &Dynamic) -> HostResult<i64> {
    let ms = duration_ms(window).map_err(|e| e.to_string())?;
    if ms < frame.resolution_ms {
        return Err(format!(
            "a window of {ms} ms is shorter than engine.resolution ({} ms), the width of one bucket",
            frame.resolution_ms
        )
        .into());
    }
    if ms > frame.max_window_ms {
        return Err(format!(
            "a window of {ms} ms exceeds engine.max_window ({} ms)",
            frame.max_window_ms
        )
        .into());
    }
    Ok(ms)
}

fn note(frame: &mut Frame, function: &str, series: &str, window_ms: Option<i64>, value: f64) {
    frame.evidence.push(Evidence {
        function: function.to_owned(),
        series: series.to_owned(),
        window_ms,
        value: value.is_finite().then_some(value),
    });
}

/// Computes a windowed function's result, and the number recorded as evidence.
type Windowed = fn(&Frame, &str, i64) -> (Dynamic, f64);

fn call_windowed(
    frame: &SharedFrame,
    name: &'static str,
    series: &str,
    window: &Dynamic,
    compute: Windowed,
) -> HostResult<Dynamic> {
    let mut frame = frame.borrow_mut();
    let window_ms = window_arg(&frame, window)?;
    let (value, evidence) = compute(&frame, series, window_ms);
    note(&mut frame, name, series, Some(window_ms), evidence);
    Ok(value)
}

/// Registers `name(series, window)` once for each way a window is written: `"60s"`, `60`,
/// `1.5`. Exact types matter: Rhai prefers a built-in whose types match exactly (such as the
/// string `max(a, b)`) over a function that takes any value, so a catch-all window parameter
/// would let `max("latency_ms", "10s")` compare two strings.
fn register_windowed(
    engine: &mut RhaiEngine,
    frame: &SharedFrame,
    name: &'static str,
    compute: Windowed,
) {
    let f = Rc::clone(frame);
    engine.register_fn(
        name,
        move |series: &str, window: salve_rules::ImmutableString| {
            call_windowed(&f, name, series, &Dynamic::from(window), compute)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(name, move |series: &str, window: i64| {
        call_windowed(&f, name, series, &Dynamic::from(window), compute)
    });
    let f = Rc::clone(frame);
    engine.register_fn(name, move |series: &str, window: f64| {
        call_windowed(&f, name, series, &Dynamic::from(window), compute)
    });
}

/// An aggregate over the window, NaN when the entity never reported the series.
fn aggregate(
    frame: &Frame,
    series: &str,
    window_ms: i64,
    pick: fn(&Aggregate, i64) -> f64,
) -> (Dynamic, f64) {
    let value = frame.entity.series(series).map_or(f64::NAN, |s| {
        pick(&s.aggregate(frame.now_ms, window_ms), window_ms)
    });
    (Dynamic::from_float(value), value)
}

/// Registers every host function on a rule engine.
pub fn register(engine: &mut RhaiEngine, frame: &SharedFrame) {
    register_windowed(engine, frame, "count", |frame, series, window_ms| {
        let count = frame
            .entity
            .series(series)
            .map_or(0, |s| s.aggregate(frame.now_ms, window_ms).count);
        (
            Dynamic::from_int(i64::try_from(count).unwrap_or(i64::MAX)),
            count as f64,
        )
    });
    register_windowed(engine, frame, "sum", |f, s, w| {
        aggregate(f, s, w, |a, _| a.sum)
    });
    register_windowed(engine, frame, "mean", |f, s, w| {
        aggregate(f, s, w, |a, _| a.mean())
    });
    register_windowed(engine, frame, "min", |f, s, w| {
        aggregate(f, s, w, |a, _| a.min)
    });
    register_windowed(engine, frame, "max", |f, s, w| {
        aggregate(f, s, w, |a, _| a.max)
    });
    register_windowed(engine, frame, "rate", |f, s, w| {
        aggregate(f, s, w, |a, window_ms| {
            a.count as f64 * 1000.0 / window_ms as f64
        })
    });
    {
        let frame = Rc::clone(frame);
        engine.register_fn("last", move |series: &str| -> f64 {
            let mut frame = frame.borrow_mut();
            let value = frame
                .entity
                .series(series)
                .and_then(|s| s.last())
                .map_or(f64::NAN, |(_, v)| v);
            note(&mut frame, "last", series, None, value);
            value
        });
    }
    {
        let frame = Rc::clone(frame);
        engine.register_fn("since_last", move |series: &str| -> f64 {
            let mut frame = frame.borrow_mut();
            let now = frame.partition_now_ms;
            let value = frame
                .entity
                .series(series)
                .and_then(|s| s.last())
                .map_or(f64::INFINITY, |(ts, _)| {
                    now.saturating_sub(ts) as f64 / 1000.0
                });
            note(&mut frame, "since_last", series, None, value);
            value
        });
    }
    {
        let frame = Rc::clone(frame);
        engine.register_fn("consecutive_fails", move |series: &str| -> i64 {
            let mut frame = frame.borrow_mut();
            let value = frame
                .entity
                .series(series)
                .map_or(0, |s| s.consecutive_fails());
            note(
                &mut frame,
                "consecutive_fails",
                series,
                None,
                f64::from(value),
            );
            i64::from(value)
        });
    }
    {
        let frame = Rc::clone(frame);
        engine.register_fn("failing_for", move |series: &str| -> f64 {
            let mut frame = frame.borrow_mut();
            let now = frame.now_ms;
            let value = frame
                .entity
                .series(series)
                .map_or(0.0, |s| s.failing_for_ms(now) as f64 / 1000.0);
            note(&mut frame, "failing_for", series, None, value);
            value
        });
    }
    {
        let frame = Rc::clone(frame);
        engine.register_fn("label", move |key: &str| -> Dynamic {
            let frame = frame.borrow();
            frame
                .entity
                .label(key)
                .map_or(Dynamic::UNIT, |v| Dynamic::from(v.to_owned()))
        });
    }
}
