//! The simulated fleet: services of pods, a database cluster and storage nodes that emit
//! telemetry in salve's wire format, faults that the scenarios inject, and the actions that
//! the demo actuators carry out on it.
//!
//! Everything here is plain state behind one mutex: [`FleetState::due`] turns the state into
//! the telemetry that is due at an event time, faults change what it reports, and actions
//! change the state. The emitter thread ([`run_emitter`]) only sends what `due` returns.

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The services, each of [`PODS_PER_SERVICE`] pods.
pub const SERVICES: [&str; 3] = ["checkout", "search", "payments"];
/// Pods per service.
pub const PODS_PER_SERVICE: usize = 20;
/// The database cluster: one primary and three replicas.
pub const DB_CLUSTER: &str = "orders";
/// Storage nodes.
pub const STORAGE_NODES: usize = 6;

/// How often a pod reports its latency, and every node its liveness, in event time.
const TICK_MS: i64 = 1_000;
/// Pods report `cpu_util` and `error_rate` every this many ticks.
const SLOW_SERIES_EVERY: u64 = 5;
/// A crash-looping process exits this often, in event time.
const EXIT_INTERVAL_MS: i64 = 2_000;
/// A damaged storage node reads a bad block this often, in event time.
const MISMATCH_INTERVAL_MS: i64 = 3_000;
/// The replication lag each replica starts with, in seconds: a fixed spread, so that which
/// replica is the most current is clear, and not always the first one.
const REPLICA_LAGS_S: [f64; 3] = [0.9, 0.15, 2.4];

/// The fleet's event-time clock: wall time since the demo started, run `speed` times faster.
///
/// Rules measure `hold_for`, `clear_for` and windows on event time, so a faster clock makes the
/// demo shorter. salve's own clock (`verify_for`, backoffs, ack timeouts) stays the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    started: Instant,
    epoch_ms: i64,
    speed: f64,
}

impl SimClock {
    /// A clock that starts now, at the wall time, and runs `speed` times as fast.
    pub fn start(speed: f64) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            started: Instant::now(),
            epoch_ms,
            speed,
        }
    }

    /// The current event time, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        let elapsed = self.started.elapsed().as_secs_f64() * 1_000.0 * self.speed;
        self.epoch_ms + elapsed as i64
    }

    /// How many times faster than the wall clock event time runs.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The wall time that `event_ms` of event time takes.
    pub fn wall(&self, event_ms: i64) -> Duration {
        Duration::from_secs_f64(event_ms.max(0) as f64 / 1_000.0 / self.speed)
    }
}

/// Why a pod keeps crashing, which decides what a restart does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CrashCause {
    /// A stuck process: a restart clears it for good.
    Stuck,
    /// A bug that a restart only hides: the pod crashes again `relapse_ms` after each restart.
    Recurring {
        /// Event time from a restart to the next exit.
        relapse_ms: i64,
    },
    /// A shared dependency that is down until `until_ms` (event time). The pod recovers by
    /// itself then, and a restart brings it back sooner.
    Dependency {
        /// When the dependency is back.
        until_ms: i64,
    },
}

/// A crash loop in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashLoop {
    /// What causes it.
    pub cause: CrashCause,
    /// The event time of the next exit.
    next_exit_ms: i64,
}

/// A stretch of high latency on a pod's serving path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowness {
    /// The p99 it reports meanwhile.
    pub level_ms: f64,
    /// When it ends (event time).
    pub until_ms: i64,
}

/// Where a pod's traffic is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Its own serving path.
    Primary,
    /// The standby, after a `reroute`.
    Standby,
}

/// A pod of a service.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Its service, the `service` label.
    pub service: String,
    /// Its usual p99 latency.
    base_latency_ms: f64,
    /// Its usual CPU use.
    base_cpu: f64,
    /// A crash loop, if it is in one.
    pub crash: Option<CrashLoop>,
    /// Slowness on its serving path, if any.
    pub slowness: Option<Slowness>,
    /// Where its traffic goes.
    pub route: Route,
    /// Restarts the actuators carried out.
    pub restarts: u32,
}

/// A database node's role, the `role` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes the writes.
    Primary,
    /// Follows the primary.
    Replica,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// A node of the database cluster.
#[derive(Debug, Clone)]
pub struct DbNode {
    /// Primary or replica.
    pub role: Role,
    /// Whether it answers its liveness checks.
    pub alive: bool,
    /// How far behind the primary it is, in seconds, for a replica.
    pub lag_s: f64,
    /// Times the actuators replaced it.
    pub replacements: u32,
}

/// A storage node.
#[derive(Debug, Clone)]
pub struct StorageNode {
    /// Damaged data: reads hit checksum mismatches until it is resynced or restored.
    pub damaged: bool,
    /// The event time of the next mismatch, while damaged.
    next_mismatch_ms: i64,
    /// Resyncs and restores the actuators carried out.
    pub repairs: u32,
}

/// One telemetry message: its Kafka key and its JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// The key salve expects with `engine.partition_by = ["cluster", "service"]`.
    pub key: String,
    /// The event, in the wire format.
    pub payload: Vec<u8>,
}

/// A telemetry event in the wire format (docs/wire-format.md).
#[derive(Serialize)]
struct Event<'a> {
    v: u32,
    entity: &'a str,
    ts: i64,
    kind: &'static str,
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    labels: BTreeMap<&'static str, &'a str>,
}

/// Something that happened to the fleet, for the live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The entity it happened to.
    pub entity: String,
    /// What happened.
    pub text: String,
}

/// The whole fleet. Entity ids are `<service>/pod-NN`, `orders-db/node-N` and
/// `storage/node-N`.
#[derive(Debug)]
pub struct FleetState {
    /// Pods by entity id.
    pub pods: BTreeMap<String, Pod>,
    /// Database nodes by entity id.
    pub databases: BTreeMap<String, DbNode>,
    /// Storage nodes by entity id.
    pub storage: BTreeMap<String, StorageNode>,
    /// The event time of the next regular report.
    next_tick_ms: i64,
    ticks: u64,
    noise: Noise,
    notes: Vec<Note>,
}

/// The id of pod `index` of `service`.
pub fn pod_id(service: &str, index: usize) -> String {
    format!("{service}/pod-{index:02}")
}

/// The id of database node `index`.
pub fn db_node_id(index: usize) -> String {
    format!("{DB_CLUSTER}-db/node-{index}")
}

/// The id of storage node `index`.
pub fn storage_node_id(index: usize) -> String {
    format!("storage/node-{index}")
}

impl FleetState {
    /// A healthy fleet whose first reports are due at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        let mut noise = Noise(0x5a17_e5ee_d000_0001);
        let mut pods = BTreeMap::new();
        for service in SERVICES {
            for index in 0..PODS_PER_SERVICE {
                pods.insert(
                    pod_id(service, index),
                    Pod {
                        service: service.to_owned(),
                        base_latency_ms: 45.0 + 30.0 * noise.unit(),
                        base_cpu: 0.3 + 0.2 * noise.unit(),
                        crash: None,
                        slowness: None,
                        route: Route::Primary,
                        restarts: 0,
                    },
                );
            }
        }
        let mut databases = BTreeMap::new();
        databases.insert(
            db_node_id(0),
            DbNode {
                role: Role::Primary,
                alive: true,
                lag_s: 0.0,
                replacements: 0,
            },
        );
        for (index, lag_s) in REPLICA_LAGS_S.iter().enumerate() {
            databases.insert(
                db_node_id(index + 1),
                DbNode {
                    role: Role::Replica,
                    alive: true,
                    lag_s: *lag_s,
                    replacements: 0,
                },
            );
        }
        let storage = (0..STORAGE_NODES)
            .map(|index| {
                (
                    storage_node_id(index),
                    StorageNode {
                        damaged: false,
                        next_mismatch_ms: 0,
                        repairs: 0,
                    },
                )
            })
            .collect();
        Self {
            pods,
            databases,
            storage,
            next_tick_ms: now_ms,
            ticks: 0,
            noise,
            notes: Vec::new(),
        }
    }

    /// The telemetry due up to `now_ms` (event time) since the last call, in time order per
    /// entity.
    pub fn due(&mut self, now_ms: i64) -> Vec<Telemetry> {
        let mut out = Vec::new();
        // Events between regular reports first (exits, mismatches), so that each entity's
        // events go out in time order.
        while self.next_tick_ms <= now_ms {
            let tick_ms = self.next_tick_ms;
            self.irregular_events(tick_ms, &mut out);
            self.regular_reports(tick_ms, &mut out);
            self.next_tick_ms += TICK_MS;
            self.ticks += 1;
        }
        out
    }

    /// Process exits and checksum mismatches up to `until_ms`.
    fn irregular_events(&mut self, until_ms: i64, out: &mut Vec<Telemetry>) {
        for (id, pod) in &mut self.pods {
            while let Some(crash) = pod.crash.as_mut() {
                if let CrashCause::Dependency { until_ms: back_ms } = crash.cause {
                    if crash.next_exit_ms >= back_ms {
                        pod.crash = None;
                        self.notes.push(Note {
                            entity: id.clone(),
                            text: "its dependency is back: the pod stops crashing".into(),
                        });
                        break;
                    }
                }
                if crash.next_exit_ms > until_ms {
                    break;
                }
                let ts = crash.next_exit_ms;
                crash.next_exit_ms += EXIT_INTERVAL_MS;
                out.push(telemetry(
                    &pod.service,
                    &Event {
                        v: 1,
                        entity: id,
                        ts,
                        kind: "event",
                        name: "process_exit",
                        value: None,
                        status: None,
                        labels: BTreeMap::from([("service", pod.service.as_str())]),
                    },
                ));
            }
        }
        for (id, node) in &mut self.storage {
            while node.damaged && node.next_mismatch_ms <= until_ms {
                let ts = node.next_mismatch_ms;
                node.next_mismatch_ms += MISMATCH_INTERVAL_MS;
                out.push(telemetry(
                    id,
                    &Event {
                        v: 1,
                        entity: id,
                        ts,
                        kind: "event",
                        name: "checksum_mismatch",
                        value: None,
                        status: None,
                        labels: BTreeMap::from([("pool", "blobs")]),
                    },
                ));
            }
        }
    }

    /// The reports every entity sends at a regular interval.
    fn regular_reports(&mut self, ts: i64, out: &mut Vec<Telemetry>) {
        let slow_series = self.ticks % SLOW_SERIES_EVERY == 0;
        for (id, pod) in &mut self.pods {
            if pod.slowness.is_some_and(|s| s.until_ms <= ts) {
                pod.slowness = None;
                self.notes.push(Note {
                    entity: id.clone(),
                    text: "its serving path is fast again".into(),
                });
            }
            let labels = || BTreeMap::from([("service", pod.service.as_str())]);
            // A per-second p99 summary. Traffic on the standby does not see the slowness of
            // the pod's own path.
            let latency = match (pod.slowness, pod.route) {
                (Some(slow), Route::Primary) => slow.level_ms * (0.95 + 0.1 * self.noise.unit()),
                (_, Route::Standby) => pod.base_latency_ms + 15.0 + 10.0 * self.noise.unit(),
                (None, Route::Primary) => pod.base_latency_ms + 20.0 * self.noise.unit(),
            };
            out.push(metric(
                &pod.service,
                id,
                ts,
                "latency_ms",
                latency,
                labels(),
            ));
            if slow_series {
                let cpu = pod.base_cpu + 0.1 * self.noise.unit();
                out.push(metric(&pod.service, id, ts, "cpu_util", cpu, labels()));
                let errors = 0.002 + 0.006 * self.noise.unit();
                out.push(metric(&pod.service, id, ts, "error_rate", errors, labels()));
            }
        }
        for (id, node) in &self.databases {
            let labels = || BTreeMap::from([("cluster", DB_CLUSTER), ("role", node.role.label())]);
            out.push(telemetry(
                DB_CLUSTER,
                &Event {
                    v: 1,
                    entity: id,
                    ts,
                    kind: "health",
                    name: "liveness",
                    value: None,
                    status: Some(if node.alive { "pass" } else { "fail" }),
                    labels: labels(),
                },
            ));
            if node.role == Role::Replica && node.alive {
                // Small noise that keeps the replicas in the same order.
                let lag = node.lag_s + 0.04 * self.noise.unit();
                out.push(metric(
                    DB_CLUSTER,
                    id,
                    ts,
                    "replication_lag_s",
                    lag,
                    labels(),
                ));
            }
        }
        if slow_series {
            for id in self.storage.keys() {
                out.push(telemetry(
                    id,
                    &Event {
                        v: 1,
                        entity: id,
                        ts,
                        kind: "health",
                        name: "liveness",
                        value: None,
                        status: Some("pass"),
                        labels: BTreeMap::from([("pool", "blobs")]),
                    },
                ));
            }
        }
    }

    /// What happened to the fleet since the last call.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    fn note(&mut self, entity: &str, text: String) {
        self.notes.push(Note {
            entity: entity.to_owned(),
            text,
        });
    }

    // Faults, injected by the scenarios.

    /// Starts a crash loop on `pod`: its first exit at `now_ms`, then one every 2 s.
    pub fn crash(&mut self, pod: &str, cause: CrashCause, now_ms: i64) -> Result<(), FleetError> {
        let state = self
            .pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::unknown(pod))?;
        state.crash = Some(CrashLoop {
            cause,
            next_exit_ms: now_ms,
        });
        Ok(())
    }

    /// Makes `pod`'s serving path slow, at a p99 of `level_ms`, for `for_ms` of event time.
    pub fn slow_down(
        &mut self,
        pod: &str,
        level_ms: f64,
        for_ms: i64,
        now_ms: i64,
    ) -> Result<(), FleetError> {
        let state = self
            .pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::unknown(pod))?;
        state.slowness = Some(Slowness {
            level_ms,
            until_ms: now_ms + for_ms,
        });
        Ok(())
    }

    /// The primary stops answering. Returns its id.
    pub fn fail_primary(&mut self) -> Result<String, FleetError> {
        let (id, node) = self
            .databases
            .iter_mut()
            .find(|(_, node)| node.role == Role::Primary && node.alive)
            .ok_or(FleetError::NoPrimary)?;
        node.alive = false;
        Ok(id.clone())
    }

    /// Damages the data of storage node `node`: a mismatch at `now_ms`, then every 3 s.
    pub fn damage(&mut self, node: &str, now_ms: i64) -> Result<(), FleetError> {
        let state = self
            .storage
            .get_mut(node)
            .ok_or_else(|| FleetError::unknown(node))?;
        state.damaged = true;
        state.next_mismatch_ms = now_ms;
        Ok(())
    }

    // What the demo actuators do.

    /// Restarts `pod`. A stuck process or a dependency outage is cleared; a recurring bug
    /// comes back `relapse_ms` later.
    pub fn restart(&mut self, pod: &str, now_ms: i64) -> Result<String, FleetError> {
        let state = self
            .pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::unknown(pod))?;
        state.restarts += 1;
        let detail = match state.crash {
            Some(CrashLoop {
                cause: CrashCause::Recurring { relapse_ms },
                ..
            }) => {
                state.crash = Some(CrashLoop {
                    cause: CrashCause::Recurring { relapse_ms },
                    next_exit_ms: now_ms + relapse_ms,
                });
                "pod restarted; it is up (the bug that crashed it is still there)".to_owned()
            }
            Some(_) => {
                state.crash = None;
                "pod restarted; it is up and stays up".to_owned()
            }
            None => "pod restarted; it was not crashing".to_owned(),
        };
        self.note(pod, format!("restart: {detail}"));
        Ok(detail)
    }

    /// Sends `pod`'s traffic to the standby, or back to the pod's own path.
    pub fn route(&mut self, pod: &str, route: Route) -> Result<String, FleetError> {
        let state = self
            .pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::unknown(pod))?;
        state.route = route;
        let detail = match route {
            Route::Standby => "traffic moved to the standby",
            Route::Primary => "traffic back on the pod's own path",
        };
        self.note(pod, detail.to_owned());
        Ok(detail.to_owned())
    }

    /// Promotes replica `node` to primary; `old_primary`, if named, becomes a replica.
    pub fn promote(&mut self, node: &str, old_primary: Option<&str>) -> Result<String, FleetError> {
        let state = self
            .databases
            .get(node)
            .ok_or_else(|| FleetError::unknown(node))?;
        if state.role != Role::Replica || !state.alive {
            return Err(FleetError::NotPromotable(node.to_owned()));
        }
        for (id, other) in &mut self.databases {
            if id == node {
                other.role = Role::Primary;
                other.lag_s = 0.0;
            } else if other.role == Role::Primary {
                // Whatever old_primary says, a cluster has one primary.
                other.role = Role::Replica;
            } else if other.alive {
                // The others now follow the new primary, which had the freshest data.
                other.lag_s = (other.lag_s * 0.3).max(0.05);
            }
        }
        let detail = match old_primary {
            Some(old) => format!("promoted to primary in place of {old}"),
            None => "promoted to primary".to_owned(),
        };
        self.note(node, detail.clone());
        Ok(detail)
    }

    /// Whether `node` would be back if replaced now: a replaced database node rejoins as a
    /// replica of a live primary, so it waits for one.
    pub fn can_rejoin(&self, node: &str) -> bool {
        self.databases
            .iter()
            .any(|(id, n)| id != node && n.role == Role::Primary && n.alive)
    }

    /// Replaces database node `node` with a fresh one, which rejoins as a replica.
    pub fn replace(&mut self, node: &str) -> Result<String, FleetError> {
        let state = self
            .databases
            .get_mut(node)
            .ok_or_else(|| FleetError::unknown(node))?;
        state.alive = true;
        state.role = Role::Replica;
        state.lag_s = 0.5;
        state.replacements += 1;
        let detail = "node replaced; the fresh node rejoined as a replica".to_owned();
        self.note(node, detail.clone());
        Ok(detail)
    }

    /// Repairs storage node `node` with `how` (`resync` from its peers, `restore` from a
    /// snapshot).
    pub fn repair(&mut self, node: &str, how: &str) -> Result<String, FleetError> {
        let state = self
            .storage
            .get_mut(node)
            .ok_or_else(|| FleetError::unknown(node))?;
        state.damaged = false;
        state.repairs += 1;
        let detail = format!("{how} done; every checksum matches");
        self.note(node, detail.clone());
        Ok(detail)
    }

    // Questions the scenarios ask.

    /// The database node that is primary and alive, if any.
    pub fn primary(&self) -> Option<&str> {
        self.databases
            .iter()
            .find(|(_, n)| n.role == Role::Primary && n.alive)
            .map(|(id, _)| id.as_str())
    }

    /// The live replica with the smallest replication lag: the one a failover should promote.
    pub fn most_current_replica(&self) -> Option<&str> {
        self.databases
            .iter()
            .filter(|(_, n)| n.role == Role::Replica && n.alive)
            .min_by(|(_, a), (_, b)| a.lag_s.total_cmp(&b.lag_s))
            .map(|(id, _)| id.as_str())
    }

    /// The pods of `service`.
    pub fn pods_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pods
            .iter()
            .filter(move |(_, p)| p.service == service)
            .map(|(id, _)| id.as_str())
    }
}

/// An action or fault named something the fleet does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// No entity with that id.
    #[error("the demo fleet has no `{0}`")]
    Unknown(String),
    /// No live primary to fail, or to rejoin.
    #[error("the database cluster has no live primary")]
    NoPrimary,
    /// No live replica to promote.
    #[error("the database cluster has no live replica")]
    NoReplica,
    /// Only a live replica can be promoted.
    #[error("`{0}` is not a live replica and cannot be promoted")]
    NotPromotable(String),
}

impl FleetError {
    fn unknown(entity: &str) -> Self {
        FleetError::Unknown(entity.to_owned())
    }
}

fn metric(
    key: &str,
    entity: &str,
    ts: i64,
    name: &'static str,
    value: f64,
    labels: BTreeMap<&'static str, &str>,
) -> Telemetry {
    telemetry(
        key,
        &Event {
            v: 1,
            entity,
            ts,
            kind: "metric",
            name,
            value: Some((value * 1_000.0).round() / 1_000.0),
            status: None,
            labels,
        },
    )
}

fn telemetry(key: &str, event: &Event<'_>) -> Telemetry {
    Telemetry {
        key: key.to_owned(),
        // Serializing a struct of strings and numbers cannot fail; an empty payload would be
        // dead-lettered, visibly, if it ever did.
        payload: serde_json::to_vec(event).unwrap_or_default(),
    }
}

/// SplitMix64: noise for the telemetry, the same on every run.
#[derive(Debug)]
struct Noise(u64);

impl Noise {
    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The fleet, its clock, and a flag that tells everything acting on it to stop.
#[derive(Debug)]
pub struct Fleet {
    state: Mutex<FleetState>,
    /// The event-time clock the fleet reports on.
    pub clock: SimClock,
    stopping: AtomicBool,
}

impl Fleet {
    /// A healthy fleet on `clock`.
    pub fn new(clock: SimClock) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(FleetState::new(clock.now_ms())),
            clock,
            stopping: AtomicBool::new(false),
        })
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the emitter and the actuators' waits to stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether [`Fleet::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The emitter could not send telemetry.
#[derive(Debug, thiserror::Error)]
#[error("the fleet's telemetry producer: {0}")]
pub struct EmitterError(#[from] rdkafka::error::KafkaError);

/// Sends the fleet's telemetry to `topic` until the fleet is stopped. Blocks the thread.
pub fn run_emitter(fleet: &Fleet, bootstrap: &str, topic: &str) -> Result<(), EmitterError> {
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    while !fleet.stopping() {
        let due = fleet.lock().due(fleet.clock.now_ms());
        for message in due {
            let mut record = BaseRecord::to(topic)
                .key(message.key.as_str())
                .payload(message.payload.as_slice());
            // A full queue drains as the broker takes messages: wait rather than drop.
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((error, back)) => {
                        if fleet.stopping() {
                            return Ok(());
                        }
                        tracing::debug!("fleet telemetry queue: {error}");
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    producer.flush(Duration::from_secs(5))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(telemetry: &[Telemetry]) -> Vec<serde_json::Value> {
        telemetry
            .iter()
            .map(|t| serde_json::from_slice(&t.payload).expect("JSON"))
            .collect()
    }

    /// Process exits per pod reported from `from_ms` to `to_ms`.
    fn exits(fleet: &mut FleetState, from_ms: i64, to_ms: i64) -> BTreeMap<String, usize> {
        let mut exits = BTreeMap::new();
        let mut now = from_ms;
        while now <= to_ms {
            for event in payloads(&fleet.due(now)) {
                if event["name"] == "process_exit" {
                    let pod = event["entity"].as_str().expect("entity").to_owned();
                    *exits.entry(pod).or_insert(0) += 1;
                }
            }
            now += TICK_MS;
        }
        exits
    }

    #[test]
    fn every_entity_reports_in_the_wire_format_keyed_by_its_group() {
        let mut fleet = FleetState::new(0);
        let first = fleet.due(0);
        let events = payloads(&first);
        let pods = events.iter().filter(|e| e["name"] == "latency_ms").count();
        assert_eq!(pods, SERVICES.len() * PODS_PER_SERVICE);
        let primary = first
            .iter()
            .zip(&events)
            .find(|(_, e)| e["labels"]["role"] == "primary")
            .expect("the primary reports");
        assert_eq!(primary.0.key, DB_CLUSTER);
        assert_eq!(primary.1["status"], "pass");
        let pod = first
            .iter()
            .zip(&events)
            .find(|(_, e)| e["entity"] == "search/pod-03")
            .expect("a pod reports");
        assert_eq!(pod.0.key, "search");
        assert_eq!(
            events
                .iter()
                .filter(|e| e["name"] == "replication_lag_s")
                .count(),
            3
        );
        // Nothing more is due until the next tick.
        assert!(fleet.due(TICK_MS - 1).is_empty());
    }

    #[test]
    fn a_restart_clears_a_stuck_process_and_only_delays_a_recurring_bug() {
        let mut fleet = FleetState::new(0);
        fleet
            .crash("checkout/pod-07", CrashCause::Stuck, 0)
            .expect("pod");
        fleet
            .crash(
                "search/pod-03",
                CrashCause::Recurring { relapse_ms: 3_000 },
                0,
            )
            .expect("pod");
        let before = exits(&mut fleet, 0, 4_000);
        assert_eq!(before.get("checkout/pod-07"), Some(&3));
        fleet.restart("checkout/pod-07", 4_500).expect("pod");
        fleet.restart("search/pod-03", 4_500).expect("pod");
        let after = exits(&mut fleet, 5_000, 20_000);
        assert_eq!(after.get("checkout/pod-07"), None);
        // The recurring bug is back 3 s after its restart (7.5 s), then every 2 s.
        assert_eq!(after.get("search/pod-03"), Some(&7));
    }

    #[test]
    fn a_dependency_outage_ends_by_itself() {
        let mut fleet = FleetState::new(0);
        fleet
            .crash(
                "payments/pod-01",
                CrashCause::Dependency { until_ms: 5_000 },
                0,
            )
            .expect("pod");
        assert_eq!(
            exits(&mut fleet, 0, 30_000).get("payments/pod-01"),
            Some(&3)
        );
        assert!(fleet.pods["payments/pod-01"].crash.is_none());
    }

    #[test]
    fn a_reroute_hides_the_slowness_of_the_pods_own_path() {
        let mut fleet = FleetState::new(0);
        fleet
            .slow_down("search/pod-14", 500.0, 60_000, 0)
            .expect("pod");
        let latency = |fleet: &mut FleetState, now: i64| {
            payloads(&fleet.due(now))
                .into_iter()
                .find(|e| e["entity"] == "search/pod-14" && e["name"] == "latency_ms")
                .and_then(|e| e["value"].as_f64())
                .expect("a latency")
        };
        assert!(latency(&mut fleet, 0) > 400.0);
        fleet.route("search/pod-14", Route::Standby).expect("pod");
        assert!(latency(&mut fleet, 1_000) < 120.0);
        fleet.route("search/pod-14", Route::Primary).expect("pod");
        assert!(latency(&mut fleet, 2_000) > 400.0);
    }

    #[test]
    fn a_failover_promotes_the_replica_it_is_told_and_the_old_primary_rejoins_as_a_replica() {
        let mut fleet = FleetState::new(0);
        let most_current = fleet.most_current_replica().expect("replicas").to_owned();
        assert_eq!(most_current, db_node_id(2), "lags {REPLICA_LAGS_S:?}");
        let old = fleet.fail_primary().expect("a primary");
        assert_eq!(fleet.primary(), None);
        assert!(!fleet.can_rejoin(&old));
        fleet
            .promote(&most_current, Some(&old))
            .expect("promotable");
        assert_eq!(fleet.primary(), Some(most_current.as_str()));
        assert!(fleet.can_rejoin(&old));
        fleet.replace(&old).expect("node");
        assert_eq!(fleet.databases[&old].role, Role::Replica);
        assert!(fleet.databases[&old].alive);
        assert_eq!(
            fleet.promote(&old, None).map(|_| ()),
            Ok(()),
            "a rejoined replica can be promoted"
        );
        assert!(fleet.promote("orders-db/node-9", None).is_err());
    }

    #[test]
    fn damage_reports_mismatches_until_repaired() {
        let mut fleet = FleetState::new(0);
        fleet.damage("storage/node-4", 0).expect("node");
        let mismatches = |fleet: &mut FleetState, from: i64, to: i64| {
            let mut count = 0;
            let mut now = from;
            while now <= to {
                count += payloads(&fleet.due(now))
                    .iter()
                    .filter(|e| e["name"] == "checksum_mismatch")
                    .count();
                now += TICK_MS;
            }
            count
        };
        assert_eq!(mismatches(&mut fleet, 0, 6_000), 3);
        fleet.repair("storage/node-4", "resync").expect("node");
        assert_eq!(mismatches(&mut fleet, 7_000, 30_000), 0);
    }
}
