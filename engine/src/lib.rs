//! salve's engine: the telemetry model, per-entity windowed state, and the decision pipeline
//! that turns events into verdicts, incidents and remediation commands.
//!
//! Start at [`Engine`]: drivers feed it events, acks and time, and publish its [`Output`]s.
#![forbid(unsafe_code)]

pub mod config;
mod entity;
mod group;
mod host;
pub mod incident;
mod pipeline;
mod quantiles;
mod retention;
mod router;
pub mod stats;
pub mod telemetry;
pub mod window;
pub mod wire;

pub use config::{EngineConfig, Mode};
pub use entity::EntityState;
pub use pipeline::{Engine, PartitionId, RecordPosition};
pub use stats::Stats;
pub use telemetry::{decode, decode_partitioned, DecodeError, Rejection, TelemetryEvent};
pub use wire::{Ack, AckStatus, Command, Decision, Output};

#[cfg(test)]
mod tests;
