//! `salve demo`: the whole loop in one process. An embedded broker, a simulated fleet that
//! emits telemetry, salve with the shipped rules, and an actuator written with the SDK that
//! acts on the fleet; then seven faults injected in turn, a live view of the incidents, and a
//! summary of what each scenario was expected to do and what salve did.
//!
//! [`run_demo`] is the whole of it, for the CLI and for the integration tests alike: the
//! outcomes it reports are read from salve's decisions, commands and escalations on the broker.

pub mod actuators;
pub mod fleet;
pub mod observer;
pub mod scenarios;
pub mod view;

use actuators::FleetActuator;
use fleet::{Fleet, FleetError, SimClock};
use observer::{group_is_consuming, Observed, Observer, ObserverError, Record};
use salve_connectors::actuator::{run_actuator, ActuatorReport, ActuatorSettings, ActuatorStats};
use salve_connectors::embedded::EmbeddedError;
use salve_connectors::{EmbeddedBroker, KafkaConfig, RunReport, Shutdown, TopicsConfig};
use salve_engine::{Engine, EngineConfig};
use salve_rules::{ParamOverrides, RuleSet, SHIPPED_RULES};
use scenarios::{Judgement, Scenario, ScenarioKind, STORM_SHARE};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use view::View;

/// The slowest and fastest event-time clock the demo runs on. Below 1, event time would fall
/// behind salve's clock, and verification judges only events newer than the fix (by salve's
/// clock); above 4, a crash that returns 3 s after a restart would return before the restart
/// is acknowledged.
pub const SPEEDS: std::ops::RangeInclusive<f64> = 1.0..=4.0;

/// How long a component may take to start.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// How to run the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// The scenarios to inject, in order.
    pub scenarios: Vec<ScenarioKind>,
    /// How many times faster than the wall clock the fleet's event time runs.
    pub speed: f64,
    /// Wall time between one injection and the next.
    pub stagger: Duration,
    /// ANSI colours in the live view.
    pub colour: bool,
    /// How long after its injection a scenario may take to reach its outcome.
    pub patience: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            scenarios: ScenarioKind::ALL.to_vec(),
            speed: 2.0,
            stagger: Duration::from_secs(3),
            colour: false,
            patience: Duration::from_secs(180),
        }
    }
}

/// One scenario's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioOutcome {
    /// Which.
    pub kind: ScenarioKind,
    /// The entity or group the fault hit.
    pub subject: String,
    /// For a failover, the replica that had to be promoted.
    pub target: Option<String>,
    /// What salve had to do.
    pub expected: &'static str,
    /// What it did, as read from its records.
    pub observed: String,
    /// Whether that was the expected outcome.
    pub passed: bool,
}

/// What a demo run did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// One per scenario injected, in order.
    pub outcomes: Vec<ScenarioOutcome>,
    /// Every decision, command and escalation salve published.
    pub observed: Observed,
    /// How long the demo ran, from start to summary.
    pub elapsed: Duration,
    /// A stop was requested before every scenario settled.
    pub interrupted: bool,
}

impl DemoReport {
    /// Whether every scenario reached its expected outcome.
    pub fn passed(&self) -> bool {
        !self.interrupted && self.outcomes.iter().all(|o| o.passed)
    }

    /// The outcome of `kind`, if it ran.
    pub fn outcome(&self, kind: ScenarioKind) -> Option<&ScenarioOutcome> {
        self.outcomes.iter().find(|o| o.kind == kind)
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `speed` is outside [`SPEEDS`].
    #[error("--speed must be from {low} to {high}, not {0}", low = SPEEDS.start(), high = SPEEDS.end())]
    Speed(f64),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] EmbeddedError),
    /// The rules did not load.
    #[error("the demo's rules were rejected:\n{0}")]
    Rules(String),
    /// salve stopped with an error.
    #[error("salve stopped: {0}")]
    Salve(String),
    /// The actuator stopped with an error.
    #[error("the demo actuator stopped: {0}")]
    Actuator(String),
    /// The fleet's telemetry could not be sent.
    #[error(transparent)]
    Emitter(#[from] fleet::EmitterError),
    /// salve's topics could not be read.
    #[error(transparent)]
    Observer(#[from] ObserverError),
    /// A scenario could not be injected.
    #[error("injecting a scenario: {0}")]
    Fleet(#[from] FleetError),
    /// A component did not start in time.
    #[error("{0} did not start within {secs} s", secs = STARTUP_PATIENCE.as_secs())]
    NotReady(&'static str),
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// A component's thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The live view could not be written.
    #[error("writing the live view: {0}")]
    Output(#[from] std::io::Error),
}

/// The shipped rules, with one addition for the storm scenario: `crash_loop` gets a blast
/// radius (more than [`STORM_SHARE`] of a service crash-looping at once is a storm). No
/// shipped rule declares one, and only a rule's declaration can, not `[rules.params]`.
pub fn demo_rules() -> Vec<(String, String)> {
    SHIPPED_RULES
        .iter()
        .map(|(file, source)| {
            if *file != "crash_loop.rhai" {
                return (format!("<shipped>/{file}"), (*source).to_owned());
            }
            // The declaration map is the file's last value: add a key before its closing
            // brace. Should the file ever end differently, loading fails and says where.
            let body = source.trim_end().strip_suffix('}').unwrap_or(source);
            let body = body.trim_end();
            let comma = if body.ends_with(',') { "" } else { "," };
            let source = format!(
                "{body}{comma}\n    blast_radius: #{{ group: \"service\", storm_share: {STORM_SHARE:?} }},\n}}\n"
            );
            (format!("<shipped>/{file} + demo blast_radius"), source)
        })
        .collect()
}

/// The engine settings of the demo: the defaults, and
/// - `partition_by`, so that a service and the database cluster each land on one partition,
///   as the group rules (`primary_failover`, the storm's blast radius) need;
/// - a flap limit of 2 restarts a minute rather than 3, so that a pod whose restarts do not
///   hold is stopped by the flap limit before `crash_loop`'s 3 attempts run out;
/// - room for event time to run ahead of salve's clock at `--speed` above 1.
pub fn demo_engine_config() -> EngineConfig {
    let ahead_ms = 15 * 60 * 1_000;
    EngineConfig {
        partition_by: vec!["cluster".into(), "service".into()],
        flap_max_attempts: 2,
        max_future_ms: ahead_ms,
        allowed_lateness_ms: ahead_ms,
        ..EngineConfig::default()
    }
}

fn demo_kafka(bootstrap: &str) -> KafkaConfig {
    let mut kafka = KafkaConfig {
        brokers: bootstrap.to_owned(),
        group_id: "salve-demo".into(),
        commit_interval_ms: 500,
        ..KafkaConfig::default()
    };
    EmbeddedBroker::tune(&mut kafka);
    kafka
}

/// A component on its own thread, and how to stop it.
type Worker<T> = (Arc<Shutdown>, JoinHandle<Result<T, String>>);

/// The threads of a running demo. Dropping it aborts them.
struct Components {
    fleet: Arc<Fleet>,
    actuator: Option<Worker<ActuatorReport>>,
    salve: Option<Worker<RunReport>>,
    emitter: Option<JoinHandle<Result<(), fleet::EmitterError>>>,
}

impl Components {
    /// Stops the fleet, then the actuator, then salve; gracefully unless `abort`.
    fn stop(&mut self, abort: bool) -> Result<(), DemoError> {
        self.fleet.stop();
        let stop = |shutdown: &Shutdown| {
            if abort {
                shutdown.abort();
            } else {
                shutdown.graceful();
            }
        };
        let mut first_error = None;
        if let Some(emitter) = self.emitter.take() {
            match emitter.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => first_error = first_error.or(Some(DemoError::Emitter(error))),
                Err(_) => first_error = first_error.or(Some(DemoError::Panicked("fleet"))),
            }
        }
        if let Some((shutdown, actuator)) = self.actuator.take() {
            stop(&shutdown);
            match actuator.join() {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => first_error = first_error.or(Some(DemoError::Actuator(error))),
                Err(_) => first_error = first_error.or(Some(DemoError::Panicked("actuator"))),
            }
        }
        if let Some((shutdown, salve)) = self.salve.take() {
            stop(&shutdown);
            match salve.join() {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => first_error = first_error.or(Some(DemoError::Salve(error))),
                Err(_) => first_error = first_error.or(Some(DemoError::Panicked("salve"))),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The first component that stopped by itself, with its error.
    fn failed(&mut self) -> Option<DemoError> {
        let stopped = self.salve.as_ref().is_some_and(|(_, h)| h.is_finished())
            || self.actuator.as_ref().is_some_and(|(_, h)| h.is_finished())
            || self.emitter.as_ref().is_some_and(JoinHandle::is_finished);
        if !stopped {
            return None;
        }
        Some(
            self.stop(true)
                .err()
                .unwrap_or(DemoError::Salve("a component stopped early".into())),
        )
    }
}

impl Drop for Components {
    fn drop(&mut self) {
        let _ = self.stop(true);
    }
}

/// A scenario in progress.
struct Active {
    scenario: Scenario,
    injected: Instant,
    judgement: Judgement,
}

impl Active {
    fn settled(&self) -> bool {
        !matches!(self.judgement, Judgement::Pending(_))
    }
}

/// Runs the demo and writes the live view and the summary to `out`. Returns when every
/// scenario has reached an outcome or run out of patience, or when `shutdown` is requested.
pub fn run_demo(
    options: &DemoOptions,
    shutdown: &Shutdown,
    out: &mut dyn Write,
) -> Result<DemoReport, DemoError> {
    if !SPEEDS.contains(&options.speed) {
        return Err(DemoError::Speed(options.speed));
    }
    let started = Instant::now();
    let mut view = View::new(out, options.colour);
    let topics = TopicsConfig {
        create: false,
        ..TopicsConfig::default()
    };
    // Declared before the components, so that it outlives their threads.
    let broker = EmbeddedBroker::start(&topics)?;
    let bootstrap = broker.bootstrap_servers();
    let kafka = demo_kafka(&bootstrap);
    let mut settings = ActuatorSettings::new("demo", &topics, vec![topics.commands.clone()]);
    settings.max_in_flight = 16;
    settings.commit_interval_ms = 500;
    settings.create_dedup_topic = false;
    broker.create_topic(&settings.dedup_topic, topics.partitions)?;

    let fleet = Fleet::new(SimClock::start(options.speed));
    let mut components = Components {
        fleet: Arc::clone(&fleet),
        actuator: None,
        salve: None,
        emitter: None,
    };

    let rules = start_salve(&mut components, &bootstrap, &kafka, &topics)?;
    view.text(&banner(options, &bootstrap, &rules))?;
    start_actuator(&mut components, &fleet, &bootstrap, &kafka, &settings)?;
    let emitter_fleet = Arc::clone(&fleet);
    let (emitter_bootstrap, telemetry) = (bootstrap.clone(), topics.telemetry[0].clone());
    components.emitter = Some(
        std::thread::Builder::new()
            .name("demo-fleet".into())
            .spawn(move || fleet::run_emitter(&emitter_fleet, &emitter_bootstrap, &telemetry))
            .map_err(|e| DemoError::Thread("fleet", e))?,
    );
    let observer = Observer::new(&bootstrap, &kafka.group_id, &topics)?;

    view.text("waiting for salve to join its consumer group and take in the fleet's telemetry…")?;
    let waiting = Instant::now();
    while !group_is_consuming(
        &bootstrap,
        &kafka.group_id,
        &topics.telemetry[0],
        topics.partitions,
    )? {
        if let Some(error) = components.failed() {
            return Err(error);
        }
        if shutdown.requested() {
            components.stop(true)?;
            return Ok(DemoReport {
                outcomes: Vec::new(),
                observed: Observed::default(),
                elapsed: started.elapsed(),
                interrupted: true,
            });
        }
        if waiting.elapsed() > STARTUP_PATIENCE {
            return Err(DemoError::NotReady("salve's consumer"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut queue: VecDeque<ScenarioKind> = options.scenarios.iter().copied().collect();
    let mut active: Vec<Active> = Vec::new();
    let mut observed = Observed::default();
    let mut next_injection = Instant::now();
    let mut interrupted = false;
    loop {
        if shutdown.requested() {
            interrupted = true;
            break;
        }
        if let Some(error) = components.failed() {
            return Err(error);
        }
        if Instant::now() >= next_injection {
            if let Some(kind) = queue.pop_front() {
                let scenario = {
                    let mut state = fleet.lock();
                    Scenario::inject(kind, &mut state, fleet.clock.now_ms())?
                };
                view.injected(&scenario)?;
                active.push(Active {
                    scenario,
                    injected: Instant::now(),
                    judgement: Judgement::Pending(String::new()),
                });
                next_injection = Instant::now() + options.stagger;
            }
        }
        for record in observer.poll(Duration::from_millis(100), 1_000) {
            match &record {
                Record::Decision(decision) => {
                    view.decision(scenario_of(&active, &decision.entity), decision)?;
                }
                Record::Escalation(escalation) => {
                    view.escalation(scenario_of(&active, &escalation.entity), escalation)?;
                }
                Record::Command(_) => {}
            }
            observed.push(record);
        }
        let notes = fleet.lock().take_notes();
        for note in notes {
            view.note(scenario_of(&active, &note.entity), &note)?;
        }
        let mut settled_now = Vec::new();
        {
            let state = fleet.lock();
            for (index, item) in active.iter_mut().enumerate() {
                if item.settled() {
                    continue;
                }
                item.judgement = match item.scenario.judge(&observed, &state) {
                    Judgement::Pending(seen) if item.injected.elapsed() > options.patience => {
                        Judgement::Failed(format!(
                            "not reached within {} s: {seen}",
                            options.patience.as_secs()
                        ))
                    }
                    judgement => judgement,
                };
                if item.settled() {
                    settled_now.push(index);
                }
            }
        }
        for index in settled_now {
            view.settled(&active[index].scenario, &active[index].judgement)?;
        }
        if queue.is_empty() && active.iter().all(Active::settled) {
            break;
        }
    }

    // A passed scenario is judged once more at the end: what salve did since may contradict
    // it (a resync verified, then undone).
    {
        let state = fleet.lock();
        for item in active.iter_mut() {
            if let Judgement::Passed(_) = item.judgement {
                if let failed @ Judgement::Failed(_) = item.scenario.judge(&observed, &state) {
                    item.judgement = failed;
                }
            }
        }
    }
    let outcomes: Vec<ScenarioOutcome> = active
        .into_iter()
        .map(|item| {
            let (observed, passed) = match item.judgement {
                Judgement::Passed(seen) => (seen, true),
                Judgement::Failed(seen) => (seen, false),
                Judgement::Pending(seen) => (format!("interrupted: {seen}"), false),
            };
            ScenarioOutcome {
                kind: item.scenario.kind,
                subject: item.scenario.subject,
                target: item.scenario.target,
                expected: item.scenario.kind.expected(),
                observed,
                passed,
            }
        })
        .collect();
    view.text("stopping: the fleet, the actuator (finishing its commands), then salve…")?;
    components.stop(shutdown.aborted())?;
    view.summary(&outcomes)?;
    // The observer and the broker go last, in that order (the reverse of their declaration).
    Ok(DemoReport {
        outcomes,
        observed,
        elapsed: started.elapsed(),
        interrupted,
    })
}

/// The scenario that a record about `entity` belongs to, by name, or `-`.
fn scenario_of<'a>(active: &'a [Active], entity: &str) -> &'a str {
    active
        .iter()
        .rev()
        .find(|a| a.scenario.concerns(entity))
        .map_or("-", |a| a.scenario.kind.name())
}

/// Starts salve on its own thread with the demo's rules and engine settings; returns the
/// names of the rules once it is connected.
fn start_salve(
    components: &mut Components,
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
) -> Result<Vec<String>, DemoError> {
    let shutdown = Arc::new(Shutdown::default());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<String>, String>>();
    let (bootstrap, kafka, topics) = (bootstrap.to_owned(), kafka.clone(), topics.clone());
    let worker_shutdown = Arc::clone(&shutdown);
    let salve = std::thread::Builder::new()
        .name("salve-engine".into())
        .spawn(move || {
            // The engine stays on the thread that builds it.
            let engine = Engine::new(demo_engine_config(), |runtime| {
                RuleSet::load_sources_with(runtime, demo_rules(), &ParamOverrides::new())
            });
            let mut engine = match engine {
                Ok(engine) => engine,
                Err(errors) => {
                    let _ = ready_tx.send(Err(errors.to_string()));
                    return Err(errors.to_string());
                }
            };
            let rules: Vec<String> = engine
                .rules()
                .rules()
                .iter()
                .map(|r| r.decl.name.clone())
                .collect();
            salve_connectors::run(
                &mut engine,
                &bootstrap,
                &kafka,
                &topics,
                &worker_shutdown,
                || {
                    let _ = ready_tx.send(Ok(rules));
                },
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| DemoError::Thread("salve", e))?;
    components.salve = Some((shutdown, salve));
    match ready_rx.recv_timeout(STARTUP_PATIENCE) {
        Ok(Ok(rules)) => Ok(rules),
        Ok(Err(errors)) => Err(DemoError::Rules(errors)),
        Err(_) => Err(components.failed().unwrap_or(DemoError::NotReady("salve"))),
    }
}

/// Starts the demo actuator on its own thread and waits until it is connected.
fn start_actuator(
    components: &mut Components,
    fleet: &Arc<Fleet>,
    bootstrap: &str,
    kafka: &KafkaConfig,
    settings: &ActuatorSettings,
) -> Result<(), DemoError> {
    let shutdown = Arc::new(Shutdown::default());
    let (ready_tx, ready_rx) = mpsc::channel();
    let actuator = Arc::new(FleetActuator::new(Arc::clone(fleet)));
    let (bootstrap, kafka, settings) = (bootstrap.to_owned(), kafka.clone(), settings.clone());
    let worker_shutdown = Arc::clone(&shutdown);
    let handle = std::thread::Builder::new()
        .name("demo-actuator".into())
        .spawn(move || {
            run_actuator(
                actuator,
                &bootstrap,
                &kafka,
                &settings,
                &worker_shutdown,
                Arc::new(ActuatorStats::default()),
                || {
                    let _ = ready_tx.send(());
                },
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| DemoError::Thread("actuator", e))?;
    components.actuator = Some((shutdown, handle));
    ready_rx.recv_timeout(STARTUP_PATIENCE).map_err(|_| {
        components
            .failed()
            .unwrap_or(DemoError::NotReady("the demo actuator"))
    })
}

fn banner(options: &DemoOptions, bootstrap: &str, rules: &[String]) -> String {
    let scenarios: Vec<&str> = options.scenarios.iter().map(|s| s.name()).collect();
    format!(
        "salve demo: the whole loop in one process\n  \
         fleet      {services} services × {pods} pods ({names}), database cluster {db} (1 primary, 3 replicas), {storage} storage nodes\n  \
         broker     embedded (librdkafka mock cluster) at {bootstrap}\n  \
         salve      rules {rules}; crash_loop with a blast radius of {share}% of a service, for the storm\n  \
         actuator   `demo`, on the actuator SDK: {actions}\n  \
         clock      the fleet's event time runs at {speed}× (--speed): hold_for, clear_for and windows pass {speed}× faster; verify_for, backoffs and ack timeouts run on salve's wall clock\n  \
         scenarios  {scenarios}, injected {stagger} s apart",
        services = fleet::SERVICES.len(),
        pods = fleet::PODS_PER_SERVICE,
        names = fleet::SERVICES.join(", "),
        db = fleet::DB_CLUSTER,
        storage = fleet::STORAGE_NODES,
        rules = rules.join(", "),
        share = STORM_SHARE * 100.0,
        actions = actuators::ACTIONS.join(", "),
        speed = options.speed,
        scenarios = scenarios.join(", "),
        stagger = options.stagger.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_rules_are_the_shipped_pack_with_a_blast_radius_on_crash_loop() {
        let runtime_config = demo_engine_config();
        let engine = Engine::new(runtime_config, |runtime| {
            RuleSet::load_sources_with(runtime, demo_rules(), &ParamOverrides::new())
        })
        .expect("the demo rules load");
        let rules = engine.rules().rules();
        assert_eq!(rules.len(), SHIPPED_RULES.len());
        for rule in rules {
            let radius = rule.decl.blast_radius.as_ref();
            if rule.decl.name == "crash_loop" {
                let radius = radius.expect("crash_loop has a blast radius in the demo");
                assert_eq!(radius.group, "service");
                assert_eq!(radius.storm_share, STORM_SHARE);
            } else {
                assert!(radius.is_none(), "{}", rule.decl.name);
            }
        }
    }

    #[test]
    fn a_speed_out_of_range_is_refused_before_anything_starts() {
        let options = DemoOptions {
            speed: 0.5,
            ..DemoOptions::default()
        };
        let error = run_demo(&options, &Shutdown::default(), &mut Vec::new()).expect_err("refused");
        assert!(matches!(error, DemoError::Speed(_)), "{error}");
    }
}
