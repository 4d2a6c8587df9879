//! `salve actuate`: actuators that ship with salve, run on the actuator SDK.

pub mod exec;
mod guard;
#[cfg(feature = "k8s")]
pub mod k8s;
pub mod map;

use crate::config::Config;
use exec::ExecActuator;
use map::ActionMap;
use salve_connectors::actuator::{run_actuator, ActuatorReport, ActuatorSettings, ActuatorStats};
use salve_connectors::Shutdown;
use std::sync::Arc;

/// Why an actuator could not run.
pub type ActuateFailure = Box<dyn std::error::Error + Send + Sync>;

/// How to run an actuator, besides the config.
#[derive(Debug, Clone)]
pub struct ActuatorOptions {
    /// The actuator's name, in its acks and its consumer group.
    pub name: String,
    /// How many commands may run at once.
    pub max_in_flight: usize,
}

/// The topics that carry `actions`: each action's `topics.actuators` entry, or
/// `topics.commands`.
pub fn command_topics<'a>(config: &Config, actions: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut topics: Vec<String> = actions
        .map(|action| config.topics.for_action(action).to_owned())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// The SDK settings for an actuator carrying out `actions`.
fn settings<'a>(
    config: &Config,
    options: &ActuatorOptions,
    actions: impl Iterator<Item = &'a str>,
) -> Result<ActuatorSettings, ActuateFailure> {
    if config.kafka.brokers.trim().is_empty() {
        return Err("kafka.brokers is empty: an actuator connects to the broker salve uses; set it in the config or as SALVE_KAFKA__BROKERS (salve run prints the address)".into());
    }
    let mut settings = ActuatorSettings::new(
        &options.name,
        &config.topics,
        command_topics(config, actions),
    );
    settings.max_in_flight = options.max_in_flight;
    settings.commit_interval_ms = u64::try_from(config.kafka.commit_interval_ms).unwrap_or(1_000);
    Ok(settings)
}

/// Runs the exec actuator until `shutdown` asks it to stop. Blocks the calling thread.
pub fn run_exec(
    config: &Config,
    map: ActionMap,
    options: &ActuatorOptions,
    shutdown: &Shutdown,
    stats: Arc<ActuatorStats>,
    on_ready: impl FnOnce(&ActuatorSettings),
) -> Result<ActuatorReport, ActuateFailure> {
    let settings = settings(config, options, map.actions.keys().map(String::as_str))?;
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

/// Runs the Kubernetes actuator until `shutdown` asks it to stop, for the cluster that
/// `KUBECONFIG`, `~/.kube/config` or the pod's service account names. Blocks the calling
/// thread.
#[cfg(feature = "k8s")]
pub fn run_k8s(
    config: &Config,
    namespace: Option<&str>,
    options: &ActuatorOptions,
    shutdown: &Shutdown,
    stats: Arc<ActuatorStats>,
    on_ready: impl FnOnce(&ActuatorSettings),
) -> Result<ActuatorReport, ActuateFailure> {
    let settings = settings(config, options, k8s::ACTIONS.into_iter())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut cluster = runtime.block_on(kube::Config::infer()).map_err(|error| {
        format!("no Kubernetes configuration found (KUBECONFIG, ~/.kube/config, or in-cluster): {error}")
    })?;
    if let Some(namespace) = namespace {
        cluster.default_namespace = namespace.to_owned();
    }
    let report = run_actuator(
        Arc::new(k8s::K8sActuator::new(cluster)),
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
