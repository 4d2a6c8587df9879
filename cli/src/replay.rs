//! `salve replay`: the engine over a file of events, with event time as the clock.
//!
//! No broker, no wall clock: the same file always gives the same output. A simulated actuator
//! answers each command after a delay, so the whole loop (verdict, command, ack, outcome) can
//! be seen and tested from a file. This is the rule author's workbench and the golden-test
//! harness.

use salve_connectors::file_source::LineReader;
use salve_engine::wire::{Ack, AckStatus};
use salve_engine::{Engine, Output, RecordPosition};
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
    /// What a simulated operator does, and when.
    pub operator: Vec<OperatorAction>,
}

/// A simulated operator's move: what `salve ctl` would do at `at` of event time, on the
/// open incident of `rule` on `entity`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAction {
    /// When, in event time (milliseconds, like events' `ts`).
    pub at: i64,
    /// `approve`, `deny`, `resolve` or `lift`.
    #[serde(rename = "do")]
    pub action: OperatorVerb,
    /// The incident's rule.
    pub rule: String,
    /// The incident's entity, or group id.
    pub entity: String,
    /// The operator's note.
    #[serde(default)]
    pub note: String,
}

/// What a simulated operator can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorVerb {
    /// Approve the action an incident waits on.
    Approve,
    /// Deny it.
    Deny,
    /// Resolve an escalated incident.
    Resolve,
    /// Lift a quarantine.
    Lift,
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
    /// A simulated operator's move, and what came of it.
    Operator {
        /// When (event time).
        ts: i64,
        /// What.
        action: OperatorVerb,
        /// On which incident.
        incident: Option<String>,
        /// `ok`, or why it was refused.
        result: String,
    },
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

impl ReplayLine {
    /// Writes the line as `salve replay` prints it: one JSON object and a newline.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
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
    /// The operator's moves still to come, latest first.
    operator: Vec<OperatorAction>,
    now: i64,
    acks: BinaryHeap<Reverse<ScheduledAck>>,
    seq: u64,
    out: Vec<Output>,
    emit: &'e mut dyn FnMut(ReplayLine),
}

impl Replay<'_> {
    fn operate(&mut self, action: &OperatorAction) {
        let filter = salve_engine::IncidentFilter {
            rule: Some(action.rule.clone()),
            subject: Some(action.entity.clone()),
            ..Default::default()
        };
        let incident = self.engine.incidents(&filter).first().map(|i| i.id.clone());
        let (now, note) = (self.now, action.note.as_str());
        let result = match &incident {
            None => Err(format!(
                "no open incident of {} on {}",
                action.rule, action.entity
            )),
            Some(id) => match action.action {
                OperatorVerb::Approve => self.engine.approve_incident(id, note, now, &mut self.out),
                OperatorVerb::Deny => self.engine.deny_incident(id, note, now, &mut self.out),
                OperatorVerb::Resolve => self.engine.resolve_incident(id, note, now, &mut self.out),
                OperatorVerb::Lift => self
                    .engine
                    .lift_quarantine(&action.entity, &action.rule, note, now, &mut self.out)
                    .map(|_| ()),
            }
            .map_err(|e| e.to_string()),
        };
        (self.emit)(ReplayLine::Operator {
            ts: now,
            action: action.action,
            incident,
            result: result.err().unwrap_or_else(|| "ok".to_owned()),
        });
        self.flush();
    }

    fn flush(&mut self) {
        // Drained from a vector taken and put back, so its allocation serves every event.
        let mut out = std::mem::take(&mut self.out);
        for output in out.drain(..) {
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
        self.out = out;
    }

    /// Delivers every ack and fires every deadline up to `until`, in time order; acks first
    /// when they fall on the same instant as a deadline.
    fn advance(&mut self, until: i64) {
        loop {
            let next_ack = self.acks.peek().map(|Reverse(ack)| ack.at);
            let next_deadline = self.engine.next_deadline();
            let next_move = self.operator.last().map(|m| m.at);
            let Some(next) = [next_ack, next_deadline, next_move]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_move == Some(next) {
                if let Some(action) = self.operator.pop() {
                    self.operate(&action);
                }
            } else if next_ack == Some(next) {
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

/// Replays the lines of `lines` through `engine`, calling `emit` for each output line. After
/// the last event, time runs on until every pending ack and deadline has fired. Only a read
/// error stops it; a line that is not an event is emitted as a dead letter.
pub fn replay<R: std::io::BufRead>(
    engine: &mut Engine,
    lines: &mut LineReader<R>,
    actuator: Actuator,
    emit: &mut dyn FnMut(ReplayLine),
) -> std::io::Result<()> {
    let mut operator = actuator.operator.clone();
    // Popped from the end: latest first, and in file order among equal times.
    operator.reverse();
    operator.sort_by_key(|a| Reverse(a.at));
    let mut replay = Replay {
        engine,
        actuator,
        operator,
        now: i64::MIN,
        acks: BinaryHeap::new(),
        seq: 0,
        out: Vec::new(),
        emit,
    };
    while let Some(line) = lines.next_line()? {
        let number = line.number;
        let decoded = if line.cut() {
            // Only its beginning was kept: refused for its whole size.
            Err(replay.engine.refuse_too_large(line.length))
        } else {
            replay.engine.decode_message(None, line.bytes)
        };
        let result = decoded.and_then(|event| {
            // Everything due before the event happens before it. An event without `ts`
            // happens at the replay clock (0 before any timestamped event).
            if let Some(ts) = event.ts_ms {
                replay.advance(ts);
            }
            replay.now = replay.now.max(0);
            // The line number stands in for the Kafka offset: it names the record that opens
            // an incident.
            let position = RecordPosition {
                offset: i64::try_from(number).unwrap_or(i64::MAX),
                ..RecordPosition::default()
            };
            replay
                .engine
                .on_decoded(position, event, None, replay.now, &mut replay.out)
        });
        if let Err(error) = result {
            (replay.emit)(ReplayLine::DeadLetter {
                line: number,
                code: error.code(),
                reason: error.to_string(),
            });
        }
        replay.flush();
    }
    replay.advance(i64::MAX);
    Ok(())
}
