//! `salve actuate`: actuators that ship with salve, run on the actuator SDK.

pub mod exec;
pub mod map;

use crate::config::Config;
use exec::ExecActuator;
use map::ActionMap;
use salve_connectors::actuator::{run_actuator, ActuatorReport, ActuatorSettings, ActuatorStats};
use salve_connectors::Shutdown;
use std::sync::Arc;

/// Why an actuator could not run.
pub type ActuateFailure = Box<dyn std::error::Error + Send + Sync>;

/// How to run `salve actuate exec`, besides the config and the map.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The actuator's name, in its acks and its consumer group.
    pub name: String,
    /// How many programs may run at once.
    pub max_in_flight: usize,
}

/// The topics that carry `map`'s actions: each action's `topics.actuators` entry, or
/// `topics.commands`.
pub fn command_topics(config: &Config, map: &ActionMap) -> Vec<String> {
    let mut topics: Vec<String> = map
        .actions
        .keys()
        .map(|action| config.topics.for_action(action).to_owned())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// Runs the exec actuator until `shutdown` asks it to stop. Blocks the calling thread.
pub fn run_exec(
    config: &Config,
    map: ActionMap,
    options: &ExecOptions,
    shutdown: &Shutdown,
    stats: Arc<ActuatorStats>,
    on_ready: impl FnOnce(&ActuatorSettings),
) -> Result<ActuatorReport, ActuateFailure> {
    if config.kafka.brokers.trim().is_empty() {
        return Err("kafka.brokers is empty: an actuator connects to the broker salve uses; set it in the config or as SALVE_KAFKA__BROKERS (salve run prints the address)".into());
    }
    let mut settings =
        ActuatorSettings::new(&options.name, &config.topics, command_topics(config, &map));
    settings.max_in_flight = options.max_in_flight;
    settings.commit_interval_ms = u64::try_from(config.kafka.commit_interval_ms).unwrap_or(1_000);
    let report = run_actuator(
        Arc::new(ExecActuator::new(map)),
        &config.kafka.brokers,
        &config.kafka,
        &settings,
        shutdown,
        stats,
        || on_ready(&settings),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests;
