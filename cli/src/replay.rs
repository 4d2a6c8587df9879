//! `salve replay`: the engine over a file of events, with event time as the clock.
//!
//! No broker, no wall clock: the same file always gives the same output. A simulated actuator
//! answers each command after a delay, so the whole loop (verdict, command, ack, outcome) can
//! be seen and tested from a file. This is the rule author's workbench and the golden-test
//! harness.

use salve_connectors::file_source::Line;
use salve_engine::wire::{Ack, AckStatus};
use salve_engine::{decode, Engine, Output, RecordPosition};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// How the simulated actuator answers one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedOutcome {
    /// Send this final status.
    Ack(AckStatus),
    /// Stay silent, so the attempt times out.
    Silent,
}

impl std::str::FromStr for SimulatedOutcome {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "succeeded" => Ok(Self::Ack(AckStatus::Succeeded)),
            "failed" => Ok(Self::Ack(AckStatus::Failed)),
            "rejected" => Ok(Self::Ack(AckStatus::Rejected)),
            "none" => Ok(Self::Silent),
            other => Err(format!(
                "unknown ack outcome {other:?}: expected succeeded, failed, rejected or none"
            )),
        }
    }
}

/// The simulated actuator: a default outcome, per-action overrides, and a delay.
#[derive(Debug, Clone)]
pub struct Actuator {
    /// For actions not in `by_action`.
    pub default: SimulatedOutcome,
    /// Per action, e.g. `restart` → succeeded.
    pub by_action: BTreeMap<String, SimulatedOutcome>,
    /// From command to ack, in event time.
    pub delay_ms: i64,
}

impl Actuator {
    /// Reads `--ack-map`, a JSON object from action to outcome.
    pub fn parse_map(json: &str) -> Result<BTreeMap<String, SimulatedOutcome>, String> {
        let map: BTreeMap<String, String> = serde_json::from_str(json)
            .map_err(|e| format!("--ack-map must be a JSON object of action to outcome: {e}"))?;
        map.into_iter()
            .map(|(action, outcome)| Ok((action, outcome.parse()?)))
            .collect()
    }

    fn outcome(&self, action: &str) -> SimulatedOutcome {
        *self.by_action.get(action).unwrap_or(&self.default)
    }
}

/// One line of replay output.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplayLine {
    /// What the simulated actuator answered.
    Ack(Ack),
    /// A line that is not a valid event.
    DeadLetter {
        /// 1-based line number.
        line: usize,
        /// Stable error code.
        code: &'static str,
        /// Why.
        reason: String,
    },
    /// A command or decision, as the engine produced it (it carries its own `type`).
    #[serde(untagged)]
    Engine(Output),
}

/// An ack the simulated actuator will send; ordered by time, then by issue order.
#[derive(Debug)]
struct ScheduledAck {
    at: i64,
    seq: u64,
    command_id: String,
    status: AckStatus,
}

impl PartialEq for ScheduledAck {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for ScheduledAck {}
impl PartialOrd for ScheduledAck {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ScheduledAck {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Replay<'e> {
    engine: &'e mut Engine,
    actuator: Actuator,
    now: i64,
    acks: BinaryHeap<Reverse<ScheduledAck>>,
    seq: u64,
    out: Vec<Output>,
    emit: &'e mut dyn FnMut(ReplayLine),
}

impl Replay<'_> {
    fn flush(&mut self) {
        for output in std::mem::take(&mut self.out) {
            // State for the changelog topic: a replay starts from nothing and keeps nothing.
            if matches!(output, Output::Changelog(_)) {
                continue;
            }
            if let Output::Command(command) = &output {
                if let SimulatedOutcome::Ack(status) = self.actuator.outcome(&command.action) {
                    self.seq += 1;
                    self.acks.push(Reverse(ScheduledAck {
                        at: command.issued_at.saturating_add(self.actuator.delay_ms),
                        seq: self.seq,
                        command_id: command.id.clone(),
                        status,
                    }));
                }
            }
            (self.emit)(ReplayLine::Engine(output));
        }
    }

    /// Delivers every ack and fires every deadline up to `until`, in time order; acks first
    /// when they fall on the same instant as a deadline.
    fn advance(&mut self, until: i64) {
        loop {
            let next_ack = self.acks.peek().map(|Reverse(ack)| ack.at);
            let next_deadline = self.engine.next_deadline();
            let next = match (next_ack, next_deadline) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_ack == Some(next) {
                if let Some(Reverse(scheduled)) = self.acks.pop() {
                    let ack = Ack {
                        v: None,
                        command_id: scheduled.command_id,
                        status: scheduled.status,
                        detail: Some("simulated".into()),
                        ts: Some(scheduled.at),
                        actuator: Some("replay".into()),
                    };
                    (self.emit)(ReplayLine::Ack(ack.clone()));
                    self.engine.on_ack(&ack, self.now, &mut self.out);
                }
            } else {
                self.engine.tick(self.now, &mut self.out);
            }
            self.flush();
        }
        self.now = self.now.max(until);
    }
}

/// Replays `lines` through `engine`, calling `emit` for each output line. After the last
/// event, time runs on until every pending ack and deadline has fired.
pub fn replay(
    engine: &mut Engine,
    lines: &[Line],
    actuator: Actuator,
    max_event_bytes: usize,
    emit: &mut dyn FnMut(ReplayLine),
) {
    let mut replay = Replay {
        engine,
        actuator,
        now: i64::MIN,
        acks: BinaryHeap::new(),
        seq: 0,
        out: Vec::new(),
        emit,
    };
    for line in lines {
        // Peek at the event time first: everything due before it happens before it.
        if let Some(ts) = decode(&line.bytes, None, max_event_bytes)
            .ok()
            .and_then(|event| event.ts_ms)
        {
            replay.advance(ts);
        }
        // An event without `ts` happens at the replay clock (0 before any timestamped event).
        replay.now = replay.now.max(0);
        let now = replay.now;
        // The line number stands in for the Kafka offset: it names the record that opens an
        // incident.
        let position = RecordPosition {
            offset: i64::try_from(line.number).unwrap_or(i64::MAX),
            ..RecordPosition::default()
        };
        let result =
            replay
                .engine
                .on_message(position, None, &line.bytes, None, now, &mut replay.out);
        if let Err(error) = result {
            (replay.emit)(ReplayLine::DeadLetter {
                line: line.number,
                code: error.code(),
                reason: error.to_string(),
            });
        }
        replay.flush();
    }
    replay.advance(i64::MAX);
}
