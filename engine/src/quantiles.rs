//! Percentiles over a sliding event-time window, for the series that rules ask them of.
//!
//! Telemetry series usually report every second or every few seconds, so a rule's percentile
//! window (say 10 s) holds a handful of samples. Keeping the samples themselves costs 16 bytes
//! each and answers exactly, where an hdrhistogram costs 11-22 KB per series whatever it
//! holds. Above `cap` samples, the samples are thinned: of each pair of neighbours of
//! the lightest weight one is kept, carrying both weights. Memory stays within `cap`
//! samples, and percentiles of a
//! busier series become estimates whose rank error grows with the thinning, the trade every
//! bounded-memory summary makes.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: i64,
    value: f32,
    /// How many original samples this one stands for.
    weight: u32,
}

/// The recent samples of one series.
#[derive(Debug, Clone, Default)]
pub struct Quantiles {
    /// Ordered by event time.
    samples: VecDeque<Sample>,
    /// Counts merges, to pick which neighbour a merge keeps. The pick is a hash rather than
    /// an alternation: a series with a periodic pattern would alias with a fixed rhythm.
    merges: u32,
}

impl Quantiles {
    /// Adds one sample, thinning the lightest samples when more than `cap` are held.
    pub fn record(&mut self, ts: i64, value: f64, cap: usize) {
        let sample = Sample {
            ts,
            value: value as f32,
            weight: 1,
        };
        match self.samples.back() {
            Some(last) if last.ts > ts => {
                let at = self.samples.partition_point(|s| s.ts <= ts);
                self.samples.insert(at, sample);
            }
            _ => self.samples.push_back(sample),
        }
        if self.samples.len() > cap.max(2) {
            self.thin(cap.max(2));
        }
    }

    /// Thins the samples to three quarters of `cap`, lightest first: each time-adjacent pair of the
    /// lightest weight becomes one sample of both weights, whose value is one of the two. The
    /// weights thus even out, every sample comes to stand for about as many originals as any
    /// other, and the samples stay a fair picture of the whole window.
    fn thin(&mut self, cap: usize) {
        while self.samples.len() > cap * 3 / 4 {
            let lightest = self.samples.iter().map(|s| s.weight).min().unwrap_or(1);
            let before = self.samples.len();
            let mut thinned = VecDeque::with_capacity(before);
            let mut samples = self.samples.drain(..);
            let mut held = samples.next();
            while let Some(a) = held {
                match samples.next() {
                    Some(b) if a.weight == lightest && b.weight == lightest => {
                        thinned.push_back(merge(&mut self.merges, a, b));
                        held = samples.next();
                    }
                    next => {
                        thinned.push_back(a);
                        held = next;
                    }
                }
            }
            drop(samples);
            if thinned.len() == before {
                // A lone lightest sample: it joins its newer neighbour, or its older one.
                if let Some(at) = thinned.iter().position(|s| s.weight == lightest) {
                    let pair = if at + 1 < thinned.len() {
                        at
                    } else {
                        at.saturating_sub(1)
                    };
                    if let (Some(a), Some(b)) =
                        (thinned.get(pair).copied(), thinned.get(pair + 1).copied())
                    {
                        thinned[pair] = merge(&mut self.merges, a, b);
                        thinned.remove(pair + 1);
                    }
                }
            }
            self.samples = thinned;
            if self.samples.len() == before {
                break;
            }
        }
    }

    /// Drops samples that no window up to `retention_ms` before `now` can reach.
    pub fn expire(&mut self, now: i64, retention_ms: i64) {
        let before = self.samples.len();
        while self
            .samples
            .front()
            .is_some_and(|s| s.ts <= now - retention_ms)
        {
            self.samples.pop_front();
        }
        if self.samples.len() < before && self.samples.capacity() > 4 * self.samples.len().max(4) {
            self.samples.shrink_to(2 * self.samples.len());
        }
    }

    /// The `q`-quantile (0 to 1) of the samples taken in (now - window, now], interpolated
    /// linearly between neighbours as Prometheus' `quantile_over_time` does; NaN when the
    /// window holds none. `scratch` is reused between calls to spare an allocation.
    pub fn quantile(&self, now: i64, window_ms: i64, q: f64, scratch: &mut Vec<(f32, u32)>) -> f64 {
        scratch.clear();
        scratch.extend(
            self.samples
                .iter()
                .filter(|s| s.ts > now - window_ms && s.ts <= now)
                .map(|s| (s.value, s.weight)),
        );
        if scratch.is_empty() {
            return f64::NAN;
        }
        scratch.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let total: u64 = scratch.iter().map(|&(_, w)| u64::from(w)).sum();
        // The rank in the sorted, weight-expanded samples, 0-based.
        let rank = q.clamp(0.0, 1.0) * (total - 1) as f64;
        let below = rank.floor();
        let lower = value_at(scratch, below as u64);
        let upper = value_at(scratch, rank.ceil() as u64);
        lower + (rank - below) * (upper - lower)
    }

    /// Samples held, each standing for one or more originals.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.samples.len()
    }
}

/// One sample standing for both: the value of one, picked with odds by weight so that the
/// picture stays unbiased.
fn merge(merges: &mut u32, a: Sample, b: Sample) -> Sample {
    *merges = merges.wrapping_add(1);
    let total = a.weight.saturating_add(b.weight);
    let roll = mix(*merges, a.ts) % u64::from(total.max(1));
    let mut keep = if roll < u64::from(a.weight) { a } else { b };
    keep.weight = total;
    keep
}

/// splitmix64's finalizer: a well-spread bit from a counter and a timestamp.
fn mix(counter: u32, ts: i64) -> u64 {
    let mut z = (u64::from(counter) << 32 ^ ts as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value at 0-based `position` of the weight-expanded, value-sorted samples.
fn value_at(sorted: &[(f32, u32)], position: u64) -> f64 {
    let mut seen = 0u64;
    for &(value, weight) in sorted {
        seen += u64::from(weight);
        if position < seen {
            return f64::from(value);
        }
    }
    sorted.last().map_or(f64::NAN, |&(v, _)| f64::from(v))
}

#[cfg(test)]
mod tests;
