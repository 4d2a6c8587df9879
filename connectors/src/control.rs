//! The control plane's way into a running engine.
//!
//! The engine is owned by the runner's thread and is never shared: a query or a change is a
//! job sent to that thread, which runs it between two messages and publishes whatever it
//! produced, like any other output. So a reload, a resolve or a mode change can neither race
//! an event nor drop one, and the engine needs no lock on its hot path.
//!
//! What the runner knows and the engine does not (consumer lag, messages per topic, the
//! latency from an event to its command) is kept in [`RunnerShared`], readable from any
//! thread. Decisions are broadcast to whoever watches.

use crate::lock;
use salve_engine::{Decision, Engine, Output, ReloadOutcome};
use salve_rules::{LoadErrors, RuleSet, Runtime};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// What a job gets besides the engine.
pub struct JobContext<'a> {
    /// The processing clock, as the runner passes it to the engine.
    pub now_ms: i64,
    /// Outputs the job produces (decisions, changelog records); the runner publishes them
    /// when the job returns.
    pub out: &'a mut Vec<Output>,
}

/// Work for the engine's thread.
pub type Job = Box<dyn FnOnce(&mut Engine, &mut JobContext<'_>) + Send>;

/// Builds a rule set in the engine's sandbox, from wherever the rules live: what a reload
/// runs, the same as start-up.
pub type RuleLoader = Arc<dyn Fn(&Runtime) -> Result<RuleSet, LoadErrors> + Send + Sync>;

/// Why a job did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// The engine is not running: it stopped, or has not started.
    #[error("the engine is not running")]
    Stopped,
    /// The engine did not get to the job in time: it is stalled, or waiting on the broker.
    #[error("the engine did not answer within {0:?}")]
    Timeout(Duration),
    /// Reload was asked for, but this engine was started without a rule loader.
    #[error("this engine has no rule source to reload from")]
    NoRuleSource,
}

/// Decisions kept for a slow watcher before it starts missing some.
const WATCH_BUFFER: usize = 4096;

/// Buckets of the event-to-command latency, in seconds, Prometheus-style upper bounds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Per bucket of [`LATENCY_BUCKETS_S`], not cumulative; the last counts the rest.
    pub buckets: [u64; LATENCY_BUCKETS_S.len() + 1],
    /// Total seconds.
    pub sum_s: f64,
    /// Observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one latency, in milliseconds.
    pub fn record_ms(&mut self, ms: i64) {
        let seconds = ms.max(0) as f64 / 1000.0;
        let bucket = LATENCY_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[bucket] += 1;
        self.sum_s += seconds;
        self.count += 1;
    }
}

/// What the runner knows about its own work, shared with the control plane.
#[derive(Debug)]
pub struct RunnerShared {
    /// Telemetry messages read, per topic, in the order of `topics.telemetry`.
    events_in: Mutex<BTreeMap<String, u64>>,
    /// Messages produced, per topic.
    published: Mutex<BTreeMap<String, u64>>,
    /// Consumer lag per telemetry partition, from librdkafka's statistics.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Partitions assigned to this process.
    assigned: Mutex<Vec<(String, i32)>>,
    /// From an event's record timestamp to the moment its command was handed to the producer.
    latency: Mutex<LatencyHistogram>,
    /// Jobs run.
    jobs: AtomicU64,
    decisions: broadcast::Sender<Arc<Decision>>,
}

impl Default for RunnerShared {
    fn default() -> Self {
        Self {
            events_in: Mutex::default(),
            published: Mutex::default(),
            lag: Mutex::default(),
            assigned: Mutex::default(),
            latency: Mutex::default(),
            jobs: AtomicU64::new(0),
            decisions: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

impl RunnerShared {
    /// Telemetry messages read, by topic.
    pub fn events_in(&self) -> BTreeMap<String, u64> {
        lock(&self.events_in).clone()
    }

    /// Messages produced, by topic.
    pub fn published(&self) -> BTreeMap<String, u64> {
        lock(&self.published).clone()
    }

    /// The latest consumer lag, by (topic, partition); only once librdkafka has reported it.
    pub fn consumer_lag(&self) -> BTreeMap<(String, i32), i64> {
        lock(&self.lag).clone()
    }

    /// Partitions currently assigned to this process.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        lock(&self.assigned).clone()
    }

    /// The event-to-command latency so far.
    pub fn latency(&self) -> LatencyHistogram {
        lock(&self.latency).clone()
    }

    /// Decisions from now on. A watcher that falls more than a few thousand behind is told
    /// how many it missed, and goes on.
    pub fn watch_decisions(&self) -> broadcast::Receiver<Arc<Decision>> {
        self.decisions.subscribe()
    }

    /// Adds the runner's local counts, by topic index, and zeroes them.
    pub(crate) fn add_events_in(&self, topics: &[String], counts: &mut [u64]) {
        let mut shared = lock(&self.events_in);
        for (topic, count) in topics.iter().zip(counts.iter_mut()) {
            *shared.entry(topic.clone()).or_default() += std::mem::take(count);
        }
    }

    pub(crate) fn count_out(&self, topic: &str) {
        let mut counts = lock(&self.published);
        match counts.get_mut(topic) {
            Some(count) => *count += 1,
            None => {
                counts.insert(topic.to_owned(), 1);
            }
        }
    }

    pub(crate) fn record_latency(&self, ms: i64) {
        lock(&self.latency).record_ms(ms);
    }

    pub(crate) fn set_lag(&self, lag: BTreeMap<(String, i32), i64>) {
        *lock(&self.lag) = lag;
    }

    pub(crate) fn set_assigned(&self, assigned: Vec<(String, i32)>) {
        *lock(&self.assigned) = assigned;
    }

    /// Whether anyone watches decisions; a clone is made only then.
    pub(crate) fn watched(&self) -> bool {
        self.decisions.receiver_count() > 0
    }

    pub(crate) fn broadcast(&self, decision: &Decision) {
        let _ = self.decisions.send(Arc::new(decision.clone()));
    }
}

/// The control plane's end: cheap to clone, usable from any thread or task.
#[derive(Clone)]
pub struct ControlHandle {
    jobs: mpsc::Sender<Job>,
    shared: Arc<RunnerShared>,
    loader: Option<RuleLoader>,
}

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle").finish_non_exhaustive()
    }
}

/// The runner's end: pass it to [`crate::run_with`].
#[derive(Debug)]
pub struct ControlInbox {
    pub(crate) jobs: mpsc::Receiver<Job>,
    pub(crate) shared: Arc<RunnerShared>,
}

/// A connected pair. `loader` is what [`ControlHandle::reload`] loads from.
pub fn control_channel(loader: Option<RuleLoader>) -> (ControlHandle, ControlInbox) {
    let (sender, receiver) = mpsc::channel();
    let shared = Arc::new(RunnerShared::default());
    (
        ControlHandle {
            jobs: sender,
            shared: Arc::clone(&shared),
            loader,
        },
        ControlInbox {
            jobs: receiver,
            shared,
        },
    )
}

impl ControlHandle {
    /// Runs `job` on the engine's thread and returns what it returned, waiting at most
    /// `timeout`.
    pub async fn call<R: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl FnOnce(&mut Engine, &mut JobContext<'_>) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |engine, context| {
            let _ = reply.send(job(engine, context));
        });
        self.jobs.send(job).map_err(|_| ControlError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ControlError::Stopped),
            Err(_) => Err(ControlError::Timeout(timeout)),
        }
    }

    /// Like [`ControlHandle::call`], for a caller outside any async runtime.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl FnOnce(&mut Engine, &mut JobContext<'_>) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let (reply, answer) = mpsc::channel();
        let job: Job = Box::new(move |engine, context| {
            let _ = reply.send(job(engine, context));
        });
        self.jobs.send(job).map_err(|_| ControlError::Stopped)?;
        answer.recv_timeout(timeout).map_err(|error| match error {
            mpsc::RecvTimeoutError::Timeout => ControlError::Timeout(timeout),
            mpsc::RecvTimeoutError::Disconnected => ControlError::Stopped,
        })
    }

    /// Reloads the rules from the rule source, through the same checks as start-up; a set
    /// that fails them is not swapped in, and the outcome says why. `trigger` is recorded:
    /// `file`, `signal` or `api`.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ControlError> {
        let loader = self.loader.clone().ok_or(ControlError::NoRuleSource)?;
        let trigger = trigger.to_owned();
        self.call(Duration::from_secs(30), move |engine, context| {
            engine
                .reload(
                    &trigger,
                    |runtime| loader(runtime),
                    context.now_ms,
                    context.out,
                )
                .clone()
        })
        .await
    }

    /// What the runner knows about its own work.
    pub fn runner(&self) -> &RunnerShared {
        &self.shared
    }
}

impl ControlInbox {
    /// Runs every job waiting, and returns how many ran. The runner calls it between
    /// messages; a driver without Kafka (a test, `salve replay`) may call it itself.
    pub fn run_pending(&self, engine: &mut Engine, now_ms: i64, out: &mut Vec<Output>) -> u64 {
        let mut ran = 0;
        while let Ok(job) = self.jobs.try_recv() {
            let mut context = JobContext { now_ms, out };
            job(engine, &mut context);
            ran += 1;
        }
        self.shared.jobs.fetch_add(ran, Ordering::Relaxed);
        ran
    }
}

#[cfg(test)]
mod tests;
