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
pub mod ledger;
mod memo;
mod native;
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
pub use ledger::Ledger;
pub use pipeline::control::{ControlError, Modes, ReloadOutcome};
pub use pipeline::inspect::{
    EngineStatus, EntityFilter, EntityView, Health, IncidentFilter, IncidentView, Page, RuleView,
    SeriesView,
};
pub use pipeline::{Engine, PartitionId, RecordPosition};
pub use stats::{RuleCounters, Stats};
pub use telemetry::{decode, decode_partitioned, DecodeError, Rejection, TelemetryEvent};
pub use wire::{Ack, AckStatus, Command, Decision, EscalationCause, IncidentState, Output};

#[cfg(test)]
mod tests;
