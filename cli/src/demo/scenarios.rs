//! The seven scenarios: the fault each injects into the fleet, the outcome salve must reach,
//! and how that outcome is read from salve's decisions, commands and escalations (and, for
//! what the actuators did, from the fleet).

use super::fleet::{pod_id, storage_node_id, CrashCause, FleetError, FleetState, Role, Route};
use super::observer::Observed;
use salve_engine::wire::{EscalationCause, IncidentState, Verdict};
use std::collections::BTreeSet;

/// More than this share of a service crash-looping at once is a storm: the blast radius the
/// demo gives `crash_loop` (see [`super::demo_rules`]).
pub const STORM_SHARE: f64 = 0.25;
/// How many of the storm service's pods crash at once.
const STORM_PODS: usize = 12;
/// The service the storm hits.
const STORM_SERVICE: &str = "payments";

/// A scenario of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioKind {
    /// A pod crash-loops; a restart fixes it.
    CrashLoop,
    /// A latency spike short enough to ride out.
    LatencySpike,
    /// A sustained latency rise: reroute, then restore.
    LatencyRise,
    /// The database primary fails: promote the most current replica.
    PrimaryFailure,
    /// A storage node's checksums stop matching: resync it.
    ChecksumMismatch,
    /// A pod whose restarts do not hold: the flap limit hands it to a human.
    Flapping,
    /// Most of a service crash-loops at once: automation freezes for it.
    Storm,
}

impl ScenarioKind {
    /// Every scenario, in the order the demo injects them.
    pub const ALL: [ScenarioKind; 7] = [
        ScenarioKind::CrashLoop,
        ScenarioKind::LatencySpike,
        ScenarioKind::LatencyRise,
        ScenarioKind::PrimaryFailure,
        ScenarioKind::ChecksumMismatch,
        ScenarioKind::Flapping,
        ScenarioKind::Storm,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::CrashLoop => "crash-loop",
            ScenarioKind::LatencySpike => "latency-spike",
            ScenarioKind::LatencyRise => "latency-rise",
            ScenarioKind::PrimaryFailure => "primary-failure",
            ScenarioKind::ChecksumMismatch => "checksum-mismatch",
            ScenarioKind::Flapping => "flapping",
            ScenarioKind::Storm => "storm",
        }
    }

    /// The outcome salve must reach, for the summary.
    pub fn expected(self) -> &'static str {
        match self {
            ScenarioKind::CrashLoop => "restart, verified, resolved",
            ScenarioKind::LatencySpike => "ridden out as a transient, no command",
            ScenarioKind::LatencyRise => "reroute, then restore_route, resolved",
            ScenarioKind::PrimaryFailure => "promote the most current replica",
            ScenarioKind::ChecksumMismatch => "resync, the checksums match again",
            ScenarioKind::Flapping => "escalated to a human by the flap limit",
            ScenarioKind::Storm => "storm: automation frozen for the service",
        }
    }
}

impl std::fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--scenario` that names none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no scenario `{0}`; the scenarios are {names}", names = ScenarioKind::ALL.map(ScenarioKind::name).join(", "))]
pub struct UnknownScenario(pub String);

impl std::str::FromStr for ScenarioKind {
    type Err = UnknownScenario;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ScenarioKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownScenario(name.to_owned()))
    }
}

/// Where a scenario stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Not there yet: what has happened so far.
    Pending(String),
    /// The expected outcome, as observed.
    Passed(String),
    /// Something else happened.
    Failed(String),
}

/// A scenario injected into the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Which.
    pub kind: ScenarioKind,
    /// The entity (or group) the fault hits: the pod, the failed primary, the storage node,
    /// the service.
    pub subject: String,
    /// For a failover, the replica that must be promoted: the most current when the primary
    /// failed.
    pub target: Option<String>,
    /// Every entity whose records belong to this scenario, the subject included.
    pub entities: BTreeSet<String>,
    /// For a storm, the pods that crash.
    pub crashing: Vec<String>,
    /// What the injection did, for the live view.
    pub story: String,
}

impl Scenario {
    /// Injects `kind`'s fault into `fleet` at event time `now_ms`.
    pub fn inject(
        kind: ScenarioKind,
        fleet: &mut FleetState,
        now_ms: i64,
    ) -> Result<Self, FleetError> {
        let mut scenario = Scenario {
            kind,
            subject: String::new(),
            target: None,
            entities: BTreeSet::new(),
            crashing: Vec::new(),
            story: String::new(),
        };
        match kind {
            ScenarioKind::CrashLoop => {
                let pod = pod_id("checkout", 7);
                fleet.crash(&pod, CrashCause::Stuck, now_ms)?;
                scenario.story = format!("{pod} is stuck and exits every 2 s; a restart fixes it");
                scenario.subject = pod;
            }
            ScenarioKind::LatencySpike => {
                let pod = pod_id("checkout", 11);
                fleet.slow_down(&pod, 800.0, 8_000, now_ms)?;
                scenario.story =
                    format!("{pod}'s p99 latency jumps to 800 ms for 8 s, then recovers");
                scenario.subject = pod;
            }
            ScenarioKind::LatencyRise => {
                let pod = pod_id("search", 14);
                fleet.slow_down(&pod, 420.0, 60_000, now_ms)?;
                scenario.story =
                    format!("{pod}'s serving path slows to a p99 of 420 ms for a minute");
                scenario.subject = pod;
            }
            ScenarioKind::PrimaryFailure => {
                let target = fleet
                    .most_current_replica()
                    .ok_or(FleetError::NoReplica)?
                    .to_owned();
                let lags: Vec<String> = fleet
                    .databases
                    .iter()
                    .filter(|(_, n)| n.alive && n.role == Role::Replica)
                    .map(|(id, n)| format!("{id} {:.2} s", n.lag_s))
                    .collect();
                let primary = fleet.fail_primary()?;
                scenario.story = format!(
                    "the primary {primary} stops answering; replica lags: {}",
                    lags.join(", ")
                );
                scenario.entities = fleet.databases.keys().cloned().collect();
                scenario.subject = primary;
                scenario.target = Some(target);
            }
            ScenarioKind::ChecksumMismatch => {
                let node = storage_node_id(4);
                fleet.damage(&node, now_ms)?;
                scenario.story = format!(
                    "{node}'s data is damaged: every read of the bad block fails its checksum"
                );
                scenario.subject = node;
            }
            ScenarioKind::Flapping => {
                let pod = pod_id("search", 3);
                fleet.crash(&pod, CrashCause::Recurring { relapse_ms: 3_000 }, now_ms)?;
                scenario.story = format!(
                    "{pod} has a bug that a restart only hides: it crashes again 3 s after each"
                );
                scenario.subject = pod;
            }
            ScenarioKind::Storm => {
                // A shared dependency goes down: most pods of the service crash at once, a
                // little apart, and recover by themselves when it is back.
                let cause = CrashCause::Dependency {
                    until_ms: now_ms + 14_000,
                };
                for index in 0..STORM_PODS {
                    let pod = pod_id(STORM_SERVICE, index);
                    fleet.crash(&pod, cause, now_ms + 150 * index as i64)?;
                    scenario.crashing.push(pod);
                }
                scenario.entities = fleet.pods_of(STORM_SERVICE).map(str::to_owned).collect();
                scenario.story = format!(
                    "a dependency of {STORM_SERVICE} goes down for 14 s: {STORM_PODS} of its {} pods crash-loop at once",
                    scenario.entities.len()
                );
                scenario.subject = format!("service={STORM_SERVICE}");
            }
        }
        scenario.entities.insert(scenario.subject.clone());
        Ok(scenario)
    }

    /// Whether a record about `entity` belongs to this scenario.
    pub fn concerns(&self, entity: &str) -> bool {
        self.entities.contains(entity)
    }

    /// Where the scenario stands, from what salve decided and what the fleet looks like.
    pub fn judge(&self, observed: &Observed, fleet: &FleetState) -> Judgement {
        let subject = self.subject.as_str();
        match self.kind {
            ScenarioKind::CrashLoop => {
                let trail = observed.trail("crash_loop", subject);
                let states = observed.states("crash_loop", subject);
                let restarts = count_actions(observed, "crash_loop", subject, "restart");
                let up = fleet.pods.get(subject).is_some_and(|p| p.crash.is_none());
                if states.contains(&IncidentState::Escalated) {
                    Judgement::Failed(trail)
                } else if states.contains(&IncidentState::Resolved) && restarts > 0 && up {
                    Judgement::Passed(format!("{trail}; the pod stays up"))
                } else {
                    Judgement::Pending(trail)
                }
            }
            ScenarioKind::LatencySpike => {
                let commands = observed.commands_to("latency_breaker", subject);
                let pending = observed.has_verdict("latency_breaker", subject, Verdict::Pending);
                let transient =
                    observed.has_verdict("latency_breaker", subject, Verdict::Transient);
                let failure = observed.has_verdict("latency_breaker", subject, Verdict::Failure);
                if failure || !commands.is_empty() {
                    Judgement::Failed(format!(
                        "acted on the spike: {}",
                        observed.trail("latency_breaker", subject)
                    ))
                } else if transient {
                    Judgement::Passed("pending → transient; no command".into())
                } else if pending {
                    Judgement::Pending("pending".into())
                } else {
                    Judgement::Pending("no verdict yet".into())
                }
            }
            ScenarioKind::LatencyRise => {
                let trail = observed.trail("latency_breaker", subject);
                let states = observed.states("latency_breaker", subject);
                let rerouted = count_actions(observed, "latency_breaker", subject, "reroute") > 0;
                let restored =
                    count_actions(observed, "latency_breaker", subject, "restore_route") > 0;
                let back = fleet
                    .pods
                    .get(subject)
                    .is_some_and(|p| p.route == Route::Primary);
                if states.contains(&IncidentState::Escalated) {
                    Judgement::Failed(trail)
                } else if rerouted
                    && restored
                    && states.contains(&IncidentState::Mitigated)
                    && states.contains(&IncidentState::Resolved)
                    && back
                {
                    Judgement::Passed(format!("{trail}; traffic back on the pod"))
                } else {
                    Judgement::Pending(trail)
                }
            }
            ScenarioKind::PrimaryFailure => {
                let trail = observed.trail("primary_failover", subject);
                let states = observed.states("primary_failover", subject);
                let promoted: Vec<&str> = observed
                    .commands
                    .iter()
                    .filter(|c| c.rule == "primary_failover" && c.action == "promote")
                    .map(|c| c.entity.as_str())
                    .collect();
                let target = self.target.as_deref().unwrap_or_default();
                if let Some(wrong) = promoted.iter().find(|p| **p != target) {
                    Judgement::Failed(format!(
                        "promoted {wrong}, not the most current replica {target}"
                    ))
                } else if states.contains(&IncidentState::Escalated) {
                    Judgement::Failed(trail)
                } else if !promoted.is_empty()
                    && states.contains(&IncidentState::Resolved)
                    && fleet.primary() == Some(target)
                {
                    Judgement::Passed(format!("promoted {target}, the most current; {trail}"))
                } else {
                    Judgement::Pending(trail)
                }
            }
            ScenarioKind::ChecksumMismatch => {
                let trail = observed.trail("integrity", subject);
                let states = observed.states("integrity", subject);
                let resynced = count_actions(observed, "integrity", subject, "resync") > 0;
                let climbed = count_actions(observed, "integrity", subject, "restore") > 0;
                let clean = fleet.storage.get(subject).is_some_and(|n| !n.damaged);
                if climbed || states.contains(&IncidentState::Escalated) {
                    Judgement::Failed(trail)
                } else if resynced && states.last() == Some(&IncidentState::Verifying) && clean {
                    Judgement::Passed(format!(
                        "{trail} (for 10 min); no mismatch since the resync"
                    ))
                } else if resynced && states.last() == Some(&IncidentState::Resolved) && clean {
                    Judgement::Passed(trail)
                } else {
                    Judgement::Pending(trail)
                }
            }
            ScenarioKind::Flapping => {
                let restarts = count_actions(observed, "crash_loop", subject, "restart");
                let escalations = observed.escalations_of("crash_loop", subject);
                let states = observed.states("crash_loop", subject);
                match escalations.first() {
                    Some(escalation) if escalation.cause == EscalationCause::Flapping => {
                        Judgement::Passed(format!(
                            "{restarts} restarts, none held; escalated: {}",
                            escalation.reason
                        ))
                    }
                    Some(escalation) => Judgement::Failed(format!(
                        "escalated, not by the flap limit: {}",
                        escalation.reason
                    )),
                    None if states.contains(&IncidentState::Resolved) => {
                        Judgement::Failed(observed.trail("crash_loop", subject))
                    }
                    None => Judgement::Pending(observed.trail("crash_loop", subject)),
                }
            }
            ScenarioKind::Storm => self.judge_storm(observed),
        }
    }

    fn judge_storm(&self, observed: &Observed) -> Judgement {
        let storm_incident = format!("storm/crash_loop/{}", self.subject);
        let storm = observed
            .escalations
            .iter()
            .any(|e| e.incident == storm_incident && e.cause == EscalationCause::Storm);
        let restarted: BTreeSet<&str> = observed
            .commands
            .iter()
            .filter(|c| c.rule == "crash_loop" && self.entities.contains(&c.entity))
            .map(|c| c.entity.as_str())
            .collect();
        let held: BTreeSet<&str> = observed
            .decisions
            .iter()
            .filter(|d| {
                d.rule == "crash_loop"
                    && d.verdict == Some(Verdict::Inhibited)
                    && d.reason.starts_with("storm")
                    && self.entities.contains(&d.entity)
            })
            .map(|d| d.entity.as_str())
            .collect();
        let members = self.entities.len() - 1;
        let most = (STORM_SHARE * members as f64).floor() as usize;
        let seen = format!(
            "{} of {} crash-looping pods restarted, {} held back",
            restarted.len(),
            self.crashing.len(),
            held.len()
        );
        let all_judged = self
            .crashing
            .iter()
            .all(|pod| restarted.contains(pod.as_str()) || held.contains(pod.as_str()));
        if restarted.len() > most {
            Judgement::Failed(format!(
                "{seen}: more than {most}, the blast radius of {members} pods"
            ))
        } else if storm && all_judged && !held.is_empty() {
            Judgement::Passed(format!(
                "{seen}; one escalation: automation frozen for {}",
                self.subject
            ))
        } else {
            Judgement::Pending(seen)
        }
    }
}

fn count_actions(observed: &Observed, rule: &str, entity: &str, action: &str) -> usize {
    observed
        .commands_to(rule, entity)
        .iter()
        .filter(|c| c.action == action)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_named_for_the_command_line_and_back() {
        for kind in ScenarioKind::ALL {
            assert_eq!(kind.name().parse::<ScenarioKind>(), Ok(kind));
        }
        let error = "crashloop".parse::<ScenarioKind>().expect_err("unknown");
        assert!(
            error.to_string().contains("crash-loop, latency-spike"),
            "{error}"
        );
    }

    #[test]
    fn the_failover_scenario_expects_the_most_current_replica() {
        let mut fleet = FleetState::new(0);
        let scenario =
            Scenario::inject(ScenarioKind::PrimaryFailure, &mut fleet, 0).expect("injects");
        assert_eq!(scenario.subject, "orders-db/node-0");
        assert_eq!(scenario.target.as_deref(), Some("orders-db/node-2"));
        assert_eq!(fleet.primary(), None);
        assert!(scenario.concerns("orders-db/node-3"));
    }

    #[test]
    fn nothing_observed_is_pending_not_passed() {
        let mut fleet = FleetState::new(0);
        for kind in ScenarioKind::ALL {
            let scenario = Scenario::inject(kind, &mut fleet, 0).expect("injects");
            let judgement = scenario.judge(&Observed::default(), &fleet);
            assert!(
                matches!(judgement, Judgement::Pending(_)),
                "{kind}: {judgement:?}"
            );
        }
    }
}
