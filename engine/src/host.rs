//! The host functions rules call to read windowed state, and the frame they read it from.
//!
//! Before calling a rule, the engine moves the entity's state into the shared [`Frame`] (a swap,
//! no copy) and moves it back afterwards. Host functions read the frame and note every value
//! they return, so each verdict carries the numbers it rested on as evidence.

use crate::entity::EntityState;
use crate::group::GroupIndex;
use crate::window::{Aggregate, SeriesWindow};
use crate::wire::Evidence;
use salve_rules::native::Const;
use salve_rules::{duration_ms, Array, Dynamic, EvalAltResult, ImmutableString, Map, RhaiEngine};
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
    /// Its id.
    pub key: String,
    /// For rules that read groups: the partition's other entities, moved in for the call.
    pub others: hashbrown::HashMap<std::sync::Arc<str>, EntityState>,
    /// For rules that read groups: the partition's group index, moved in for the call.
    pub groups: GroupIndex,
    /// Values returned so far in this call. They are cheap records, turned into [`Evidence`]
    /// only when a verdict is emitted, and most calls emit none. In order, they are also
    /// the reads a replay computes again (see [`Frame::replay`]).
    pub noted: Vec<Noted>,
    /// Whether this call used a function that cannot be replayed (a label, a member list, a
    /// pick): its answer may not be remembered.
    pub opaque: bool,
    /// Window strings already parsed, e.g. `"60s"`: rules use a handful.
    windows: Vec<(ImmutableString, i64)>,
    /// Reused by percentile queries.
    scratch: Vec<(f32, u32)>,
}

/// A value a host function returned, as noted during a call.
#[derive(Debug, Clone)]
pub struct Noted {
    /// The call.
    pub read: Read,
    /// What it returned, as a number: the returned value itself, or a count as a float.
    pub value: f64,
}

/// One host function call, as a rule made it: enough to make it again without the script.
#[derive(Debug, Clone)]
pub struct Read {
    function: &'static str,
    series: ImmutableString,
    window_ms: Option<i64>,
    how: Replay,
}

/// How a read is computed.
#[derive(Debug, Clone)]
enum Replay {
    Windowed(Windowed),
    Plain(Plain),
    Quantile(f64),
    Group(ImmutableString, GroupWindowed),
    /// A value a replay cannot compute; calls that note one are opaque.
    Opaque,
}

#[cfg(test)]
impl Read {
    /// A read of `function(series)`, computed as `last` would be, for tests.
    pub fn plain_for_test(function: &'static str, series: &str) -> Self {
        Self {
            function,
            series: series.into(),
            window_ms: None,
            how: Replay::Plain(|_, _| float(f64::NAN)),
        }
    }
}

impl PartialEq for Read {
    /// The same function of the same arguments. The function's name fixes its computation
    /// (the fn pointers are not compared: two copies of one function may differ).
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function
            && self.series == other.series
            && self.window_ms == other.window_ms
            && match (&self.how, &other.how) {
                (Replay::Quantile(a), Replay::Quantile(b)) => a.to_bits() == b.to_bits(),
                (Replay::Group(a, _), Replay::Group(b, _)) => a == b,
                (Replay::Windowed(_), Replay::Windowed(_))
                | (Replay::Plain(_), Replay::Plain(_)) => true,
                _ => false,
            }
    }
}

impl Frame {
    /// An empty frame for windows of `resolution_ms` up to `max_window_ms`.
    pub fn new(resolution_ms: i64, max_window_ms: i64) -> Self {
        Self {
            resolution_ms,
            max_window_ms,
            ..Self::default()
        }
    }

    /// The values noted in this call, as the evidence of a verdict.
    pub fn evidence(&self) -> Vec<Evidence> {
        self.noted
            .iter()
            .map(|n| Evidence {
                function: n.read.function.to_owned(),
                series: n.read.series.to_string(),
                window_ms: n.read.window_ms,
                value: n.value.is_finite().then_some(n.value),
            })
            .collect()
    }

    /// Starts a call: nothing noted yet, nothing opaque.
    pub fn begin_call(&mut self) {
        self.noted.clear();
        self.opaque = false;
    }

    /// Makes `reads` again, in order, against the state now in the frame, noting each value
    /// as the call did. Returns whether every value came out bit for bit as in `values`; it
    /// stops at the first that did not, or that could not be computed.
    pub fn replay<'r>(
        &mut self,
        reads: impl IntoIterator<Item = &'r Read>,
        values: &[u64],
    ) -> bool {
        self.begin_call();
        let mut values = values.iter();
        for read in reads {
            let Some(&expected) = values.next() else {
                return false;
            };
            match self.read(read) {
                Some((_, value)) if value.to_bits() == expected => {}
                _ => return false,
            }
        }
        values.next().is_none()
    }

    /// Makes `read` against the state in the frame, and notes it as the call would; `None`
    /// when the host function would have raised an error. Returns what the function returns,
    /// and the number noted.
    pub fn read(&mut self, read: &Read) -> Option<(Dynamic, f64)> {
        let (returned, value) = self.compute(read)?;
        self.noted.push(Noted {
            read: read.clone(),
            value,
        });
        Some((returned, value))
    }

    /// What `read` returns, and the number noted for it.
    fn compute(&mut self, read: &Read) -> Option<(Dynamic, f64)> {
        match (&read.how, read.window_ms) {
            (Replay::Windowed(compute), Some(window_ms)) => {
                compute(self, &read.series, window_ms).ok()
            }
            (Replay::Plain(compute), None) => Some(compute(self, &read.series)),
            (Replay::Quantile(q), Some(window_ms)) => {
                quantile(self, &read.series, window_ms, *q).ok()
            }
            (Replay::Group(label, compute), Some(window_ms)) => {
                compute(self, label, &read.series, window_ms).ok()
            }
            _ => None,
        }
    }

    /// The milliseconds of a window written as a string, parsed once per distinct string.
    fn window_text_ms(&mut self, text: &ImmutableString) -> HostResult<i64> {
        if let Some((_, ms)) = self.windows.iter().find(|(known, _)| known == text) {
            return Ok(*ms);
        }
        let ms = duration_ms(&Dynamic::from(text.clone())).map_err(|e| e.to_string())?;
        if self.windows.len() < 64 {
            self.windows.push((text.clone(), ms));
        }
        Ok(ms)
    }
}

/// The frame shared between the engine and the registered host functions.
pub type SharedFrame = Rc<RefCell<Frame>>;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

fn check_window(frame: &Frame, ms: i64) -> HostResult<i64> {
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

fn note(
    frame: &mut Frame,
    function: &'static str,
    series: ImmutableString,
    window_ms: Option<i64>,
    how: Replay,
    value: f64,
) {
    frame.opaque |= matches!(how, Replay::Opaque);
    frame.noted.push(Noted {
        read: Read {
            function,
            series,
            window_ms,
            how,
        },
        value,
    });
}

/// Computes a windowed function's result, and the number noted as evidence.
type Windowed = fn(&mut Frame, &str, i64) -> HostResult<(Dynamic, f64)>;

/// Computes a value of a series that takes no window, and the number noted as evidence.
type Plain = fn(&Frame, &str) -> (Dynamic, f64);

/// How a rule wrote a window.
enum Window {
    Text(ImmutableString),
    Seconds(Dynamic),
}

/// A window as the rule wrote it, in milliseconds, checked against the engine's bounds.
fn resolve_window(frame: &mut Frame, window: Window) -> HostResult<i64> {
    let ms = match window {
        Window::Text(text) => frame.window_text_ms(&text)?,
        Window::Seconds(seconds) => duration_ms(&seconds).map_err(|e| e.to_string())?,
    };
    check_window(frame, ms)
}

fn call_windowed(
    frame: &SharedFrame,
    name: &'static str,
    series: ImmutableString,
    window: Window,
    compute: Windowed,
) -> HostResult<Dynamic> {
    let mut frame = frame.borrow_mut();
    let window_ms = resolve_window(&mut frame, window)?;
    let (value, evidence) = compute(&mut frame, &series, window_ms)?;
    let how = Replay::Windowed(compute);
    note(&mut frame, name, series, Some(window_ms), how, evidence);
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
        move |series: ImmutableString, window: ImmutableString| {
            call_windowed(&f, name, series, Window::Text(window), compute)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(name, move |series: ImmutableString, window: i64| {
        let window = Window::Seconds(Dynamic::from(window));
        call_windowed(&f, name, series, window, compute)
    });
    let f = Rc::clone(frame);
    engine.register_fn(name, move |series: ImmutableString, window: f64| {
        let window = Window::Seconds(Dynamic::from(window));
        call_windowed(&f, name, series, window, compute)
    });
}

/// Registers `name(series)`: a value of the series that takes no window.
fn register_plain(
    engine: &mut RhaiEngine,
    frame: &SharedFrame,
    name: &'static str,
    compute: Plain,
) {
    let f = Rc::clone(frame);
    engine.register_fn(name, move |series: ImmutableString| -> Dynamic {
        let mut frame = f.borrow_mut();
        let (value, evidence) = compute(&frame, &series);
        note(
            &mut frame,
            name,
            series,
            None,
            Replay::Plain(compute),
            evidence,
        );
        value
    });
}

/// An aggregate over the window, NaN when the entity never reported the series.
fn aggregate(
    frame: &Frame,
    series: &str,
    window_ms: i64,
    pick: fn(&Aggregate, i64) -> f64,
) -> HostResult<(Dynamic, f64)> {
    let value = frame.entity.series(series).map_or(f64::NAN, |s| {
        pick(&s.aggregate(frame.now_ms, window_ms), window_ms)
    });
    Ok((Dynamic::from_float(value), value))
}

/// The `q`-quantile of the series over the window; NaN when the entity has no samples in it.
fn quantile(frame: &mut Frame, series: &str, window_ms: i64, q: f64) -> HostResult<(Dynamic, f64)> {
    if !(0.0..=1.0).contains(&q) {
        return Err(format!("a quantile must be between 0 and 1, got {q}").into());
    }
    let Some(window) = frame.entity.series(series) else {
        return Ok(float(f64::NAN));
    };
    match window.quantile(frame.now_ms, window_ms, q, &mut frame.scratch) {
        Some(value) => Ok(float(value)),
        None => Err(format!(
            "no percentile samples are kept for `{series}`: salve keeps them for the series named in calls such as p99(\"{series}\", \"10s\") or p99(p.series, p.window)"
        )
        .into()),
    }
}

/// Registers `percentile(series, window, q)` for each way a window is written.
fn register_percentile(engine: &mut RhaiEngine, frame: &SharedFrame) {
    fn call(
        frame: &SharedFrame,
        series: ImmutableString,
        window: Window,
        q: f64,
    ) -> HostResult<Dynamic> {
        let mut frame = frame.borrow_mut();
        let window_ms = resolve_window(&mut frame, window)?;
        let (value, evidence) = quantile(&mut frame, &series, window_ms, q)?;
        let how = Replay::Quantile(q);
        note(
            &mut frame,
            "percentile",
            series,
            Some(window_ms),
            how,
            evidence,
        );
        Ok(value)
    }
    let f = Rc::clone(frame);
    engine.register_fn(
        "percentile",
        move |series: ImmutableString, window: ImmutableString, q: f64| {
            call(&f, series, Window::Text(window), q)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "percentile",
        move |series: ImmutableString, window: i64, q: f64| {
            call(&f, series, Window::Seconds(Dynamic::from(window)), q)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "percentile",
        move |series: ImmutableString, window: f64, q: f64| {
            call(&f, series, Window::Seconds(Dynamic::from(window)), q)
        },
    );
}

fn float(value: f64) -> (Dynamic, f64) {
    (Dynamic::from_float(value), value)
}

/// Calls `visit` for each member of the entity's group by `label`, the entity included. An
/// entity without the label is in no group, and has no members.
fn each_member(
    frame: &Frame,
    label: &str,
    mut visit: impl FnMut(&str, &EntityState),
) -> HostResult<()> {
    if !frame.groups.indexes(label) {
        return Err(format!(
            "entities are not grouped by `{label}` for this call: name the label as a string literal or parameter in a group function, or in `group_by`"
        )
        .into());
    }
    let Some(value) = frame.entity.label(label) else {
        return Ok(());
    };
    for key in frame.groups.members(label, value) {
        if *key == *frame.key {
            visit(key, &frame.entity);
        } else if let Some(member) = frame.others.get(key) {
            visit(key, member);
        }
    }
    Ok(())
}

/// A windowed aggregate over a group's members, each member's window ending at its own
/// latest event.
type GroupWindowed = fn(&Frame, &str, &str, i64) -> HostResult<(Dynamic, f64)>;

fn group_aggregate(
    frame: &Frame,
    label: &str,
    series: &str,
    window_ms: i64,
) -> HostResult<Aggregate> {
    let mut total = Aggregate {
        count: 0,
        sum: 0.0,
        min: f64::NAN,
        max: f64::NAN,
    };
    each_member(frame, label, |_, member| {
        if let Some(window) = member.series(series) {
            let agg = window.aggregate(member.last_seen_ms, window_ms);
            total.count += agg.count;
            total.sum += agg.sum;
            total.min = total.min.min(agg.min);
            total.max = total.max.max(agg.max);
        }
    })?;
    Ok(total)
}

/// Registers `name(label, series, window)` for each way a window is written.
fn register_group_windowed(
    engine: &mut RhaiEngine,
    frame: &SharedFrame,
    name: &'static str,
    compute: GroupWindowed,
) {
    fn call(
        frame: &SharedFrame,
        name: &'static str,
        label: ImmutableString,
        series: ImmutableString,
        window: Window,
        compute: GroupWindowed,
    ) -> HostResult<Dynamic> {
        let mut frame = frame.borrow_mut();
        let window_ms = resolve_window(&mut frame, window)?;
        let (value, evidence) = compute(&frame, &label, &series, window_ms)?;
        let how = Replay::Group(label, compute);
        note(&mut frame, name, series, Some(window_ms), how, evidence);
        Ok(value)
    }
    let f = Rc::clone(frame);
    engine.register_fn(
        name,
        move |label: ImmutableString, series: ImmutableString, window: ImmutableString| {
            call(&f, name, label, series, Window::Text(window), compute)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        name,
        move |label: ImmutableString, series: ImmutableString, window: i64| {
            let window = Window::Seconds(Dynamic::from(window));
            call(&f, name, label, series, window, compute)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        name,
        move |label: ImmutableString, series: ImmutableString, window: f64| {
            let window = Window::Seconds(Dynamic::from(window));
            call(&f, name, label, series, window, compute)
        },
    );
}

/// The member of the group whose latest `series` value is the smallest (or largest), among
/// those carrying every label in `filter`; `()` when none qualifies.
fn pick(
    frame: &SharedFrame,
    name: &'static str,
    label: &str,
    series: ImmutableString,
    filter: &Map,
    smallest: bool,
) -> HostResult<Dynamic> {
    let mut frame = frame.borrow_mut();
    let mut best: Option<(String, f64)> = None;
    each_member(&frame, label, |key, member| {
        let qualifies = filter.iter().all(|(k, v)| {
            member.label(k).is_some_and(|have| {
                v.clone()
                    .into_immutable_string()
                    .is_ok_and(|want| want == have)
            })
        });
        let Some(value) = qualifies
            .then(|| member.series(&series).and_then(|s| s.last()))
            .flatten()
            .map(|(_, v)| v)
        else {
            return;
        };
        let better = best.as_ref().is_none_or(|(best_key, best_value)| {
            let ordering = value.total_cmp(best_value);
            // Ties go to the smaller id, so the pick does not depend on the index's order.
            ordering
                == if smallest {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
                || (ordering == std::cmp::Ordering::Equal && key < best_key.as_str())
        });
        if better {
            best = Some((key.to_owned(), value));
        }
    })?;
    let (picked, value) = best.map_or((Dynamic::UNIT, f64::NAN), |(key, value)| {
        (Dynamic::from(key), value)
    });
    // The pick is a member's id, which a number cannot stand for.
    note(&mut frame, name, series, None, Replay::Opaque, value);
    Ok(picked)
}

/// Registers the functions over the entity's group.
fn register_groups(engine: &mut RhaiEngine, frame: &SharedFrame) {
    for (name, compute) in group_windowed_functions() {
        register_group_windowed(engine, frame, name, compute);
    }
    let f = Rc::clone(frame);
    engine.register_fn(
        "members",
        move |label: ImmutableString| -> HostResult<Array> {
            let mut frame = f.borrow_mut();
            frame.opaque = true;
            let mut members = Array::new();
            each_member(&frame, &label, |key, _| {
                members.push(Dynamic::from(key.to_owned()))
            })?;
            Ok(members)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "failing",
        move |label: ImmutableString| -> HostResult<i64> {
            let mut frame = f.borrow_mut();
            frame.opaque = true;
            let mut failing = 0;
            each_member(&frame, &label, |_, member| {
                failing += i64::from(!member.subject.incidents.is_empty());
            })?;
            Ok(failing)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "failing",
        move |label: ImmutableString, rule: ImmutableString| -> HostResult<i64> {
            let mut frame = f.borrow_mut();
            frame.opaque = true;
            let mut failing = 0;
            each_member(&frame, &label, |_, member| {
                failing += i64::from(member.subject.has_incident_of(&rule));
            })?;
            Ok(failing)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "pick_min",
        move |label: ImmutableString, series: ImmutableString, filter: Map| {
            pick(&f, "pick_min", &label, series, &filter, true)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn(
        "pick_max",
        move |label: ImmutableString, series: ImmutableString, filter: Map| {
            pick(&f, "pick_max", &label, series, &filter, false)
        },
    );
    let f = Rc::clone(frame);
    engine.register_fn("entity", move || -> String {
        let mut frame = f.borrow_mut();
        frame.opaque = true;
        frame.key.clone()
    });
}

/// The aggregates over a group's members, by name.
fn group_windowed_functions() -> [(&'static str, GroupWindowed); 5] {
    [
        ("group_count", |f, l, s, w| {
            let count = group_aggregate(f, l, s, w)?.count;
            Ok((
                Dynamic::from_int(i64::try_from(count).unwrap_or(i64::MAX)),
                count as f64,
            ))
        }),
        ("group_sum", |f, l, s, w| {
            Ok(float(group_aggregate(f, l, s, w)?.sum))
        }),
        ("group_mean", |f, l, s, w| {
            Ok(float(group_aggregate(f, l, s, w)?.mean()))
        }),
        ("group_min", |f, l, s, w| {
            Ok(float(group_aggregate(f, l, s, w)?.min))
        }),
        ("group_max", |f, l, s, w| {
            Ok(float(group_aggregate(f, l, s, w)?.max))
        }),
    ]
}

/// The functions of `(series, window)`, by name.
fn windowed_functions() -> [(&'static str, Windowed); 11] {
    [
        ("count", |frame, series, window_ms| {
            let count = frame
                .entity
                .series(series)
                .map_or(0, |s| s.aggregate(frame.now_ms, window_ms).count);
            Ok((
                Dynamic::from_int(i64::try_from(count).unwrap_or(i64::MAX)),
                count as f64,
            ))
        }),
        ("sum", |f, s, w| aggregate(f, s, w, |a, _| a.sum)),
        ("mean", |f, s, w| aggregate(f, s, w, |a, _| a.mean())),
        ("min", |f, s, w| aggregate(f, s, w, |a, _| a.min)),
        ("max", |f, s, w| aggregate(f, s, w, |a, _| a.max)),
        ("rate", |f, s, w| {
            aggregate(f, s, w, |a, window_ms| {
                a.count as f64 * 1000.0 / window_ms as f64
            })
        }),
        ("p50", |f, s, w| quantile(f, s, w, 0.5)),
        ("p90", |f, s, w| quantile(f, s, w, 0.9)),
        ("p95", |f, s, w| quantile(f, s, w, 0.95)),
        ("p99", |f, s, w| quantile(f, s, w, 0.99)),
        ("p999", |f, s, w| quantile(f, s, w, 0.999)),
    ]
}

/// The functions of a series alone, by name.
fn plain_functions() -> [(&'static str, Plain); 5] {
    [
        ("last", |frame, series| {
            float(last_sample(frame, series).map_or(f64::NAN, |(_, v)| v))
        }),
        ("since_last", |frame, series| {
            let now = frame.partition_now_ms;
            float(last_sample(frame, series).map_or(f64::INFINITY, |(ts, _)| {
                now.saturating_sub(ts) as f64 / 1000.0
            }))
        }),
        ("consecutive_fails", |frame, series| {
            run_length(frame, series, SeriesWindow::consecutive_fails)
        }),
        ("consecutive_passes", |frame, series| {
            run_length(frame, series, SeriesWindow::consecutive_passes)
        }),
        ("failing_for", |frame, series| {
            let now = frame.now_ms;
            float(
                frame
                    .entity
                    .series(series)
                    .map_or(0.0, |s| s.failing_for_ms(now) as f64 / 1000.0),
            )
        }),
    ]
}

/// The entity's latest sample of `series`, as (time, value).
fn last_sample(frame: &Frame, series: &str) -> Option<(i64, f64)> {
    frame.entity.series(series).and_then(SeriesWindow::last)
}

/// A health series' current run of fails or passes; 0 when the entity never reported it.
fn run_length(frame: &Frame, series: &str, run: fn(&SeriesWindow) -> u32) -> (Dynamic, f64) {
    let length = frame.entity.series(series).map_or(0, run);
    (Dynamic::from_int(i64::from(length)), f64::from(length))
}

/// The read that `function(args)` makes, for a host function whose reads a replay or a
/// compiled rule can compute, with the window resolved and checked as a call would; `None`
/// for any other function, or arguments of types the host function does not take.
pub fn read_of(frame: &mut Frame, function: &str, args: &[Const]) -> Option<Read> {
    let window = |frame: &mut Frame, arg: &Const| {
        let window = match arg {
            Const::Str(text) => Window::Text(text.clone()),
            Const::Int(seconds) => Window::Seconds(Dynamic::from_int(*seconds)),
            Const::Float(seconds) => Window::Seconds(Dynamic::from_float(*seconds)),
            Const::Bool(_) => return None,
        };
        resolve_window(frame, window).ok()
    };
    let (name, how, series, window_ms) = match args {
        [Const::Str(series), at] => {
            let (name, compute) = windowed_functions()
                .into_iter()
                .find(|(name, _)| *name == function)?;
            (
                name,
                Replay::Windowed(compute),
                series,
                Some(window(frame, at)?),
            )
        }
        [Const::Str(series), at, Const::Float(q)] if function == "percentile" => {
            if !(0.0..=1.0).contains(q) {
                return None;
            }
            let window_ms = window(frame, at)?;
            ("percentile", Replay::Quantile(*q), series, Some(window_ms))
        }
        [Const::Str(series)] => {
            let (name, compute) = plain_functions()
                .into_iter()
                .find(|(name, _)| *name == function)?;
            (name, Replay::Plain(compute), series, None)
        }
        [Const::Str(label), Const::Str(series), at] => {
            let (name, compute) = group_windowed_functions()
                .into_iter()
                .find(|(name, _)| *name == function)?;
            let window_ms = window(frame, at)?;
            (
                name,
                Replay::Group(label.clone(), compute),
                series,
                Some(window_ms),
            )
        }
        _ => return None,
    };
    Some(Read {
        function: name,
        series: series.clone(),
        window_ms,
        how,
    })
}

/// Registers every host function on a rule engine.
pub fn register(engine: &mut RhaiEngine, frame: &SharedFrame) {
    register_groups(engine, frame);
    for (name, compute) in windowed_functions() {
        register_windowed(engine, frame, name, compute);
    }
    register_percentile(engine, frame);
    for (name, compute) in plain_functions() {
        register_plain(engine, frame, name, compute);
    }
    {
        let frame = Rc::clone(frame);
        engine.register_fn("label", move |key: &str| -> Dynamic {
            let mut frame = frame.borrow_mut();
            frame.opaque = true;
            frame
                .entity
                .label(key)
                .map_or(Dynamic::UNIT, |v| Dynamic::from(v.to_owned()))
        });
    }
}
