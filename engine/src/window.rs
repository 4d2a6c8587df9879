//! Sliding event-time windows for one series of one entity.
//!
//! Samples are folded into buckets of `resolution` (1 s by default), so the memory a series
//! costs is bounded by the number of buckets it has data in, not by the event rate. A window
//! of length W evaluated at time `now` covers the buckets that start in (now - W, now].

use crate::quantiles::Quantiles;
use crate::retention::SeriesRetention;
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: i64,
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
}

/// Aggregates over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Samples in the window.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest; NaN when empty.
    pub min: f64,
    /// The largest; NaN when empty.
    pub max: f64,
}

impl Aggregate {
    /// Sum over count; NaN when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The runs of passing and failing checks of a health series.
#[derive(Debug, Clone, Default)]
struct HealthRuns {
    consecutive_fails: u32,
    consecutive_passes: u32,
    /// Event time of the first fail in the current run of fails.
    failing_since: i64,
    /// Event time of the newest health check counted.
    last_check_ts: i64,
}

/// One series' recent history.
#[derive(Debug, Clone)]
pub struct SeriesWindow {
    name: Arc<str>,
    /// Boxed: with history kept only as far back as rules look, most series keep no buckets,
    /// and an empty `VecDeque` would still cost 32 bytes in every one of them.
    #[allow(clippy::box_collection)]
    buckets: Option<Box<VecDeque<Bucket>>>,
    last_value: f64,
    last_ts: i64,
    /// Only health series have runs of passes and fails.
    health: Option<Box<HealthRuns>>,
    /// Samples for percentiles, only while some rule asks a percentile of this series.
    quantiles: Option<Box<Quantiles>>,
}

impl SeriesWindow {
    /// An empty series.
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            buckets: None,
            last_value: f64::NAN,
            last_ts: i64::MIN,
            health: None,
            quantiles: None,
        }
    }

    /// The series name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The series name, as interned.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Folds one sample into what the series keeps under `retention`, and drops what no
    /// window up to `now` needs any more.
    pub fn observe(
        &mut self,
        ts: i64,
        value: f64,
        now: i64,
        resolution_ms: i64,
        retention: SeriesRetention,
        max_samples: usize,
    ) {
        if retention.buckets_ms > 0 {
            self.record(ts, value, resolution_ms);
            self.expire(now, retention.buckets_ms);
        } else {
            self.note_last(ts, value);
            self.buckets = None;
        }
        match retention.samples_ms {
            Some(samples_ms) => {
                let quantiles = self.quantiles.get_or_insert_with(Box::default);
                quantiles.record(ts, value, max_samples);
                quantiles.expire(now, samples_ms);
            }
            None => self.quantiles = None,
        }
    }

    /// The `q`-quantile over (now - window, now]; `None` when the series keeps no samples,
    /// NaN when the window holds none.
    pub fn quantile(
        &self,
        now: i64,
        window_ms: i64,
        q: f64,
        scratch: &mut Vec<(f32, u32)>,
    ) -> Option<f64> {
        self.quantiles
            .as_ref()
            .map(|quantiles| quantiles.quantile(now, window_ms, q, scratch))
    }

    /// Folds one sample in. Samples may arrive out of order; each lands in its own bucket.
    pub fn record(&mut self, ts: i64, value: f64, resolution_ms: i64) {
        let start = ts - ts.rem_euclid(resolution_ms);
        let fresh = Bucket {
            start,
            count: 1,
            sum: value,
            min: value,
            max: value,
        };
        let buckets = self.buckets.get_or_insert_with(Box::default);
        match buckets.back_mut() {
            None => buckets.push_back(fresh),
            Some(last) if last.start == start => fold(last, value),
            Some(last) if last.start < start => buckets.push_back(fresh),
            Some(_) => match buckets.binary_search_by_key(&start, |b| b.start) {
                Ok(i) => fold(&mut buckets[i], value),
                Err(i) => buckets.insert(i, fresh),
            },
        }
        self.note_last(ts, value);
    }

    fn note_last(&mut self, ts: i64, value: f64) {
        if ts >= self.last_ts {
            self.last_ts = ts;
            self.last_value = value;
        }
    }

    /// Counts a health check's outcome, taken at `ts`, into the consecutive-run counters.
    pub fn record_health(&mut self, pass: bool, ts: i64) {
        // The runs follow event time: a check older than the newest one counted cannot start
        // or end a run (a late fail after a newer pass must not read as failing since then).
        let runs = self.health.get_or_insert_with(|| {
            Box::new(HealthRuns {
                last_check_ts: i64::MIN,
                ..HealthRuns::default()
            })
        });
        if ts < runs.last_check_ts {
            return;
        }
        runs.last_check_ts = ts;
        if pass {
            runs.consecutive_passes = runs.consecutive_passes.saturating_add(1);
            runs.consecutive_fails = 0;
        } else {
            if runs.consecutive_fails == 0 {
                runs.failing_since = ts;
            }
            runs.consecutive_fails = runs.consecutive_fails.saturating_add(1);
            runs.consecutive_passes = 0;
        }
    }

    /// How long, in ms up to `now`, the health checks have been failing without a pass in
    /// between; 0 when the latest check passed.
    pub fn failing_for_ms(&self, now: i64) -> i64 {
        match &self.health {
            Some(runs) if runs.consecutive_fails > 0 => {
                now.saturating_sub(runs.failing_since).max(0)
            }
            _ => 0,
        }
    }

    /// Drops buckets that no window up to `retention_ms` before `now` can reach.
    pub fn expire(&mut self, now: i64, retention_ms: i64) {
        let Some(buckets) = self.buckets.as_mut() else {
            return;
        };
        let before = buckets.len();
        while buckets
            .front()
            .is_some_and(|b| b.start <= now - retention_ms)
        {
            buckets.pop_front();
        }
        // A burst can leave a large, mostly empty ring behind; give most of it back.
        if buckets.is_empty() {
            self.buckets = None;
        } else if buckets.len() < before && buckets.capacity() > 4 * buckets.len().max(8) {
            buckets.shrink_to(2 * buckets.len());
        }
    }

    /// Aggregates the buckets that start within (now - window, now].
    pub fn aggregate(&self, now: i64, window_ms: i64) -> Aggregate {
        let mut agg = Aggregate {
            count: 0,
            sum: 0.0,
            min: f64::NAN,
            max: f64::NAN,
        };
        for bucket in self.buckets.iter().flat_map(|b| b.iter()).rev() {
            if bucket.start > now {
                continue;
            }
            if bucket.start <= now - window_ms {
                break;
            }
            agg.count += u64::from(bucket.count);
            agg.sum += bucket.sum;
            agg.min = agg.min.min(bucket.min);
            agg.max = agg.max.max(bucket.max);
        }
        agg
    }

    /// The most recent sample by event time, and when it was taken.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.last_ts != i64::MIN).then_some((self.last_ts, self.last_value))
    }

    /// Consecutive failing health checks up to the latest.
    pub fn consecutive_fails(&self) -> u32 {
        self.health.as_ref().map_or(0, |r| r.consecutive_fails)
    }

    /// Consecutive passing health checks up to the latest.
    pub fn consecutive_passes(&self) -> u32 {
        self.health.as_ref().map_or(0, |r| r.consecutive_passes)
    }
}

fn fold(bucket: &mut Bucket, value: f64) {
    bucket.count = bucket.count.saturating_add(1);
    bucket.sum += value;
    bucket.min = bucket.min.min(value);
    bucket.max = bucket.max.max(value);
}
