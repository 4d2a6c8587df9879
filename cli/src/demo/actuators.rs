//! The demo's actuator, written with the actuator SDK: it carries salve's commands out on the
//! simulated fleet, so that a restart really ends a crash loop and a promotion really changes
//! the primary. The runner around it (dedup, expiry, acks, commits) is the one real actuators
//! use.

use super::fleet::{Fleet, FleetError, Route};
use salve_connectors::actuator::{Actuator, Command, CommandContext, Outcome};
use std::sync::Arc;
use std::time::Duration;

/// The actions the demo fleet knows.
pub const ACTIONS: [&str; 7] = [
    "restart",
    "reroute",
    "restore_route",
    "promote",
    "replace",
    "resync",
    "restore",
];

/// How long a replaced database node waits at most for a primary to rejoin, in wall time.
const REJOIN_PATIENCE: Duration = Duration::from_secs(60);

/// Carries commands out on a [`Fleet`].
#[derive(Debug, Clone)]
pub struct FleetActuator {
    fleet: Arc<Fleet>,
}

impl FleetActuator {
    /// An actuator acting on `fleet`.
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }

    /// Waits `wall`, as the real action would take a moment; false if the demo is stopping.
    async fn work_for(&self, wall: Duration) -> bool {
        tokio::time::sleep(wall).await;
        !self.fleet.stopping()
    }

    async fn replace(&self, node: &str) -> Result<String, FleetError> {
        // A fresh database node syncs from the primary, so it can only rejoin once there is
        // one: during a failover that is after the promotion.
        let waited = tokio::time::Instant::now();
        while !self.fleet.lock().can_rejoin(node) {
            if self.fleet.stopping() || waited.elapsed() > REJOIN_PATIENCE {
                return Err(FleetError::NoPrimary);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.fleet.lock().replace(node)
    }
}

impl Actuator for FleetActuator {
    async fn handle(&self, command: &Command, _context: &CommandContext) -> Outcome {
        let entity = command.entity.as_str();
        let now_ms = || self.fleet.clock.now_ms();
        let done = match command.action.as_str() {
            // The pod is killed at once and takes a moment to come up again; the ack follows
            // that moment, after any exit from before the restart has reached salve.
            "restart" => {
                let restarted = self.fleet.lock().restart(entity, now_ms());
                if !self.work_for(Duration::from_millis(300)).await {
                    return Outcome::Failed("the demo is stopping".into());
                }
                restarted
            }
            "reroute" => self.fleet.lock().route(entity, Route::Standby),
            "restore_route" => self.fleet.lock().route(entity, Route::Primary),
            "promote" => {
                let old_primary = command
                    .params
                    .get("old_primary")
                    .and_then(serde_json::Value::as_str);
                self.fleet.lock().promote(entity, old_primary)
            }
            "replace" => self.replace(entity).await,
            // Repaired before the ack, like a restart, so that no mismatch read before the
            // repair can reach salve after the ack and fail the verification.
            "resync" | "restore" => {
                let repaired = self.fleet.lock().repair(entity, &command.action);
                if !self.work_for(Duration::from_millis(500)).await {
                    return Outcome::Failed("the demo is stopping".into());
                }
                repaired
            }
            other => {
                return Outcome::Rejected(format!(
                    "the demo fleet cannot `{other}`; it knows {}",
                    ACTIONS.join(", ")
                ))
            }
        };
        match done {
            Ok(detail) => Outcome::Succeeded(detail),
            Err(error @ FleetError::Unknown(_)) => Outcome::Rejected(error.to_string()),
            Err(error) => Outcome::Failed(error.to_string()),
        }
    }
}
