//! `salve run`: the engine on Kafka, on the embedded broker when no brokers are configured.

use crate::config::Config;
use crate::load_rules_with;
use salve_connectors::{topics, ControlInbox, EmbeddedBroker, RunReport, Shutdown};
use salve_engine::Engine;

/// Where salve is listening, printed once it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The bootstrap address clients use.
    pub bootstrap: String,
    /// True when salve started its own broker.
    pub embedded: bool,
    /// The rules in force.
    pub rules: Vec<String>,
}

/// Where the operator surface listens, for the banner.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    /// The gRPC API.
    pub api: Option<std::net::SocketAddr>,
    /// The metrics endpoint.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Why `salve run` could not run.
pub type RunFailure = Box<dyn std::error::Error + Send + Sync>;

/// Runs until `shutdown` is requested; blocks the calling thread. `on_ready` gets the
/// addresses once every client is connected. With `control`, the control plane's jobs run on
/// this thread between messages (see [`crate::serve`]).
pub fn run(
    config: &Config,
    shutdown: &Shutdown,
    control: Option<&ControlInbox>,
    on_ready: impl FnOnce(&Ready),
) -> Result<RunReport, RunFailure> {
    // The embedded broker lives on this thread for as long as the run.
    let embedded = if config.kafka.brokers.trim().is_empty() {
        Some(EmbeddedBroker::start(&config.topics)?)
    } else {
        None
    };
    let mut kafka = config.kafka.clone();
    if embedded.is_some() {
        EmbeddedBroker::tune(&mut kafka);
    }
    let bootstrap = match &embedded {
        Some(broker) => broker.bootstrap_servers(),
        None => config.kafka.brokers.clone(),
    };
    if embedded.is_none() && config.topics.create {
        topics::ensure_topics(&bootstrap, &config.kafka.consumer, &config.topics)?;
    }
    let mut engine = Engine::new(config.engine.clone(), |runtime| {
        load_rules_with(runtime, config.rules.dir.as_deref(), &config.rules.params)
    })
    .map_err(|errors| format!("rules rejected:\n{errors}"))?;
    let ready = Ready {
        bootstrap: bootstrap.clone(),
        embedded: embedded.is_some(),
        rules: engine
            .rules()
            .rules()
            .iter()
            .map(|r| r.decl.name.clone())
            .collect(),
    };
    let report = salve_connectors::run_with(
        &mut engine,
        &bootstrap,
        &kafka,
        &config.topics,
        shutdown,
        control,
        || on_ready(&ready),
    )?;
    drop(embedded);
    Ok(report)
}

/// The banner `salve run` prints: where to send telemetry and where to look.
pub fn banner(config: &Config, ready: &Ready, endpoints: Endpoints) -> String {
    let t = &config.topics;
    let broker = if ready.embedded {
        "embedded broker (librdkafka mock cluster; ~5 MiB per partition, for trying salve out)"
    } else {
        "external broker"
    };
    let mut text = format!(
        "salve is running on the {broker}\n  bootstrap    {}\n  telemetry    {}   <- produce events here\n  commands     {}   -> actuators consume these\n  acks         {}   <- actuators report here\n  decisions    {}\n  escalations  {}   -> for humans\n  dead letter  {}\n  rules        {}\n",
        ready.bootstrap,
        t.telemetry.join(", "),
        t.commands,
        t.acks,
        t.decisions,
        t.escalations,
        t.dead_letter,
        ready.rules.join(", "),
    );
    for (action, topic) in &t.actuators {
        text.push_str(&format!("  actuator     {action} -> {topic}\n"));
    }
    if let Some(api) = endpoints.api {
        text.push_str(&format!(
            "  gRPC API     {api}   <- salve ctl --addr http://{api}\n"
        ));
    }
    if let Some(metrics) = endpoints.metrics {
        text.push_str(&format!("  metrics      http://{metrics}/metrics\n"));
    }
    if let Some(dir) = &config.rules.dir {
        let how = if config.rules.watch {
            "reloaded on change, SIGHUP or salve ctl reload"
        } else {
            "reloaded on SIGHUP or salve ctl reload"
        };
        text.push_str(&format!("  rules dir    {}   ({how})\n", dir.display()));
    }
    text.push_str("Stop with Ctrl-C: salve flushes, commits and exits.");
    text
}
