//! salve's connectors: the Kafka source and sinks that drive the engine, the embedded broker,
//! the JSON-lines file source that `salve replay` reads, and the actuator SDK.
#![forbid(unsafe_code)]

pub mod actuator;
pub mod changelog;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod embedded;
pub mod file_source;
mod records;
pub mod runner;
pub mod topics;

/// Locks `mutex`, taking the data even if a thread panicked while holding it: every value
/// kept under the connectors' locks stays consistent between two statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use config::{KafkaConfig, TopicsConfig};
pub use control::{control_channel, ControlHandle, ControlInbox, JobContext, RuleLoader};
pub use embedded::EmbeddedBroker;
pub use runner::{run, run_with, RunError, RunReport, Shutdown};
