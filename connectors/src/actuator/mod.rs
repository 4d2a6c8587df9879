//! The actuator SDK: write the action, and the runner does the Kafka side.
//!
//! An [`Actuator`] handles one [`Command`] and returns an [`Outcome`]. [`run_actuator`]
//! consumes the actuator's command topics in its own consumer group and, for each command:
//!
//! - answers a command it has already finished with the ack it sent the first time, without
//!   acting again ([`dedup`](self) by command `id`, recorded in a compacted topic so that it
//!   survives a restart);
//! - acks `rejected` a command whose `expires_at` has passed, without acting;
//! - otherwise acks `received`, calls the actuator, and acks `succeeded`, `failed` or
//!   `rejected` with the outcome's detail.
//!
//! At most `max_in_flight` commands run at once, and at most one per entity, in the order they
//! arrived. Offsets are committed only once the acks for every command before them are on the
//! broker (at-least-once). `docs/actuators.md` is the contract for actuators in any language.

mod dedup;
mod done;
mod offsets;
mod runner;
mod settings;

pub use dedup::DedupError;
pub use runner::{run_actuator, ActuatorError, ActuatorReport, ActuatorStats};
pub use salve_engine::wire::{Ack, AckStatus, Command};
pub use settings::ActuatorSettings;

use std::future::Future;

/// What an actuator made of a command. The string is the ack's `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The action completed.
    Succeeded(String),
    /// The action ran and did not work.
    Failed(String),
    /// The actuator will not act on this command, e.g. an action it does not know.
    Rejected(String),
}

impl Outcome {
    /// The ack status that reports this outcome.
    pub fn status(&self) -> AckStatus {
        match self {
            Outcome::Succeeded(_) => AckStatus::Succeeded,
            Outcome::Failed(_) => AckStatus::Failed,
            Outcome::Rejected(_) => AckStatus::Rejected,
        }
    }

    /// The ack's `detail`.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Succeeded(detail) | Outcome::Failed(detail) | Outcome::Rejected(detail) => {
                detail
            }
        }
    }
}

/// What the runner knows about a command besides the command itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The actuator's name, as it appears in its acks.
    pub actuator: String,
    /// Where the command was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When the runner handed it to the actuator, ms since the epoch.
    pub started_at: i64,
}

/// An action carried out for salve. Implement [`Actuator::handle`] and hand the actuator to
/// [`run_actuator`].
///
/// `handle` may be called for several commands at once (up to `max_in_flight`), never for two
/// commands of the same entity at once, and never twice for one command `id` once it has
/// finished. A handler that panics is reported as `failed`.
pub trait Actuator: Send + Sync + 'static {
    /// Carries out `command` and says how it went.
    fn handle(
        &self,
        command: &Command,
        context: &CommandContext,
    ) -> impl Future<Output = Outcome> + Send;
}

#[cfg(test)]
mod tests;
