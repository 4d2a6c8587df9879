//! The decision pipeline: event in, verdicts, commands and transitions out.
//!
//! The [`Engine`] is synchronous and deterministic. It never reads a clock or does I/O: its
//! drivers (the Kafka runner, `salve replay`) hand it events, acks and the current time, and
//! publish what it returns. State is kept per partition, so a partition's state can be dropped
//! when the partition is revoked and rebuilt wherever it is assigned next.

use crate::config::{EngineConfig, Mode};
use control::{Modes, ReloadOutcome};

mod canary;
pub mod control;
mod early_acks;
pub mod inspect;
pub(crate) mod storm;

use crate::entity::{EntityState, GroupSubject, InternedLabels, Pending, Subject};
use crate::group::{group_id, GroupIndex};
use crate::host::{self, Frame, SharedFrame};
use crate::incident::{command_id, incident_id, Incident};
use crate::ledger::Ledger;
use crate::memo::{self, MemoBook, RuleFn};
use crate::native::Plan;
use crate::retention::RetentionPlan;
use crate::router::Router;
use crate::stats::Stats;
use crate::telemetry::{decode_partitioned, DecodeError, Kind, Rejection, TelemetryEvent};
use crate::wire::{
    Ack, AckDecodeError, AckStatus, ChangelogRecord, Command, Decision, DecisionKind, Escalation,
    EscalationCause, IncidentState, Output, Verdict, WIRE_VERSION,
};
use canary::{GroupSafety, Rollout};
use hashbrown::{HashMap, HashSet};
use salve_rules::{EvalError, LoadErrors, RuleSet, Runtime};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::Arc;

/// Identifies a source partition: the index of the telemetry topic in the config, and the
/// Kafka partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub struct PartitionId {
    /// Index into the configured telemetry topics.
    pub topic: u16,
    /// The Kafka partition.
    pub partition: i32,
}

/// Where a record sits in its source: the partition and the offset within it. Incident ids
/// derive from the position of the record that opened them, which stays the same when the
/// record is delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordPosition {
    /// The source partition.
    pub partition: PartitionId,
    /// The Kafka offset, or the line number in a replayed file.
    pub offset: i64,
}

/// A moment at which an incident's attempt must be looked at again.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AckDeadline {
    at_ms: i64,
    /// The attempt's command; a deadline whose attempt has moved on is stale, and ignored.
    command_id: String,
    kind: DeadlineKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DeadlineKind {
    /// No final ack by now fails the attempt.
    Ack,
    /// The condition stayed away this long after the fix: resolved.
    Verify,
    /// The backoff is over: the next attempt.
    Retry,
    /// Nobody approved or denied the next action in time: escalate.
    Approval,
    /// An escalated incident's quarantine expires: automation may act again.
    Quarantine,
}

/// The state of one source partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// The entities by id. The key is shared with the group index, which lists members by it.
    entities: HashMap<Arc<str>, EntityState>,
    /// The entities by the labels that rules group by.
    groups: GroupIndex,
    /// What group rules found, by group id (`service=checkout`).
    group_subjects: HashMap<Box<str>, GroupSubject>,
    /// The largest event time seen: the end of every window evaluated here.
    watermark_ms: i64,
    commands: OpenCommands,
    /// Storms and canary rollouts, per rule and group.
    safety: GroupSafety,
    /// The watermark at the last sweep for idle entities.
    swept_at_ms: i64,
    /// The processing time of the partition's latest event.
    heard_at_ms: i64,
    /// The event time of the partition's first event here: windows hold nothing older, so
    /// a condition read from them cannot show that a failure cleared until they are full.
    history_from_ms: i64,
}

impl PartitionState {
    /// The subject keyed `key`: an entity's, or else a group's (then `true`).
    fn subject(&self, key: &str) -> Option<(&Subject, bool)> {
        match self.entities.get(key) {
            Some(entity) => Some((&entity.subject, false)),
            None => self.group_subjects.get(key).map(|g| (&g.subject, true)),
        }
    }

    /// The storm that freezes the group of entity `subject_key`, for the rule of its incident
    /// whose attempt is `command_id`, when that incident's next step would send a command.
    fn freeze(
        &mut self,
        rules: &RuleSet,
        subject_key: &str,
        command_id: &str,
        stats: &mut Stats,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Option<storm::Freeze> {
        let entity = self.entities.get(subject_key)?;
        let incident = entity
            .subject
            .incidents
            .iter()
            .find(|i| i.command_id == command_id)?;
        let next_sends = matches!(
            incident.state,
            IncidentState::Remediating
                | IncidentState::BackingOff
                | IncidentState::AwaitingApproval
        );
        if !next_sends {
            return None;
        }
        let rule = rules.rule(&incident.rule)?;
        storm::storm(
            rule,
            &incident.rule,
            (subject_key, entity),
            &self.entities,
            &self.groups,
            &mut self.safety.storms,
            stats,
            now_ms,
            out,
        )
        .0
    }
}

/// The commands awaiting an ack.
#[derive(Debug, Default)]
struct OpenCommands {
    deadlines: BinaryHeap<Reverse<AckDeadline>>,
    /// The subject (entity or group id) whose incident each open command belongs to.
    subjects: HashMap<String, Box<str>>,
}

/// The decision pipeline for the partitions this process owns.
pub struct Engine {
    config: EngineConfig,
    runtime: Runtime,
    rules: RuleSet,
    rule_names: Vec<Arc<str>>,
    router: Router,
    retention: RetentionPlan,
    /// The labels rules group by, interned.
    group_labels: Vec<Arc<str>>,
    /// Per rule: its longest window, for how much history a cleared condition needs.
    rule_windows: Vec<i64>,
    /// Per rule: whether it calls group functions or groups by a label, and so needs the
    /// partition's other entities during its calls.
    needs_group: Vec<bool>,
    frame: SharedFrame,
    /// What pure rule calls read, for answering the next from memory.
    memo_book: MemoBook,
    /// Whether rule calls may be answered from memory; off only to show, in tests, that
    /// answering from memory changes no decision.
    pub(crate) memoize: bool,
    /// Per rule: `condition`, `clear` and `verify`, when compiled for native evaluation.
    compiled: Vec<[Option<Plan>; 3]>,
    /// Whether compiled functions run natively; off only to show, in tests, that native
    /// evaluation changes no decision.
    pub(crate) native: bool,
    partitions: HashMap<PartitionId, PartitionState>,
    /// Series names and label strings, shared by every entity that uses them. hashbrown's
    /// hasher, like the entities' map: std's SipHash cost ~20 ns per lookup here.
    interned: HashSet<Arc<str>>,
    matched: Vec<usize>,
    stats: Stats,
    /// Subjects whose durable state changed since the last changelog records were emitted.
    dirty: Vec<(PartitionId, String)>,
    /// Subjects whose latest changelog record holds an escalation not yet known delivered.
    unconfirmed: Vec<(PartitionId, String)>,
    /// Restored subjects with an escalation not known delivered, to publish again.
    republish: Vec<(PartitionId, String)>,
    /// Acks whose command was unknown when they came, for incidents a restore brings in.
    early_acks: early_acks::EarlyAcks,
    /// A restore brought in incidents that wait for an ack: the next tick looks through
    /// `early_acks` for theirs.
    replay_early_acks: bool,
    /// Effectiveness and incident histories, read off the outputs.
    ledger: Ledger,
    /// The global mode and per-rule overrides, as set at start-up or since.
    pub(crate) modes: Modes,
    /// Per rule: whether its mode is paused, so it is not evaluated.
    paused: Vec<bool>,
    /// Whether any rule is paused: one load per event when none is.
    any_paused: bool,
    /// Bumped by every rule set installed.
    pub(crate) rules_version: u64,
    /// How the latest reload went.
    pub(crate) last_reload: Option<ReloadOutcome>,
}

/// A subject's state as the changelog holds it.
#[derive(Debug, serde::Deserialize)]
struct Durable {
    /// A group id rather than an entity.
    group: bool,
    subject: Subject,
    /// An entity's labels, so that a restored entity is in its groups before it reports.
    #[serde(default)]
    labels: Vec<(String, String)>,
}

/// [`Durable`], borrowed, for writing; `v` is the format's version.
#[derive(serde::Serialize)]
struct DurableRef<'a> {
    v: u32,
    group: bool,
    subject: &'a Subject,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<(&'a str, &'a str)>,
}

impl Engine {
    /// Builds an engine; `load` produces the initial rule set with the engine's sandbox.
    pub fn new(
        config: EngineConfig,
        load: impl FnOnce(&Runtime) -> Result<RuleSet, LoadErrors>,
    ) -> Result<Self, LoadErrors> {
        let frame: SharedFrame = Rc::new(RefCell::new(Frame::new(
            config.resolution_ms,
            config.max_window_ms,
        )));
        let runtime = Runtime::new(config.limits.clone(), |engine| {
            host::register(engine, &frame)
        });
        let rules = load(&runtime)?;
        check_windows(&rules, &config)?;
        // The frame holds an empty entity here: the probe sees no data.
        rules.probe(&runtime)?;
        frame.borrow_mut().noted.clear();
        let mode = config.mode;
        let mut engine = Self {
            config,
            runtime,
            rules: RuleSet::default(),
            rule_names: Vec::new(),
            router: Router::default(),
            retention: RetentionPlan::default(),
            group_labels: Vec::new(),
            needs_group: Vec::new(),
            rule_windows: Vec::new(),
            frame,
            memo_book: MemoBook::default(),
            memoize: true,
            compiled: Vec::new(),
            native: true,
            partitions: HashMap::new(),
            interned: HashSet::new(),
            matched: Vec::new(),
            stats: Stats::default(),
            dirty: Vec::new(),
            unconfirmed: Vec::new(),
            republish: Vec::new(),
            early_acks: early_acks::EarlyAcks::default(),
            replay_early_acks: false,
            ledger: Ledger::default(),
            modes: Modes::new(mode),
            paused: Vec::new(),
            any_paused: false,
            rules_version: 0,
            last_reload: None,
        };
        engine.install(rules);
        Ok(engine)
    }

    pub(crate) fn install(&mut self, rules: RuleSet) {
        self.rules_version += 1;
        // Memos name rules by position, which a new set reassigns.
        self.memo_book.reset();
        let mut frame = self.frame.borrow_mut();
        self.compiled = rules
            .rules()
            .iter()
            .map(|rule| {
                [RuleFn::Condition, RuleFn::Clear, RuleFn::Verify].map(|function| {
                    let expr = rule.compiled(function.name())?;
                    Plan::new(expr, &mut frame)
                })
            })
            .collect();
        drop(frame);
        for state in self.partitions.values_mut() {
            for entity in state.entities.values_mut() {
                entity.memos.clear();
            }
        }
        self.router = Router::new(&rules);
        let interned = &mut self.interned;
        self.retention = RetentionPlan::new(&rules, self.config.max_window_ms, |name| {
            intern(interned, name)
        });
        self.rule_names = rules
            .rules()
            .iter()
            .map(|r| Arc::from(r.decl.name.as_str()))
            .collect();
        self.needs_group = rules
            .rules()
            .iter()
            .map(|r| !r.group_labels().is_empty())
            .collect();
        let max_window = self.config.max_window_ms;
        self.rule_windows = rules
            .rules()
            .iter()
            .map(|r| {
                r.window_uses()
                    .iter()
                    .map(|u| u.window_ms.unwrap_or(max_window))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut labels: Vec<Arc<str>> = Vec::new();
        for label in rules.rules().iter().flat_map(|r| r.group_labels()) {
            if !labels.iter().any(|l| **l == **label) {
                labels.push(intern(&mut self.interned, label));
            }
        }
        // The index over every entity is rebuilt only when the labels it indexes change: a
        // reload that keeps them (most do) costs no pass over the entities.
        let regroup = labels != self.group_labels;
        self.group_labels = labels;
        let mut previous = std::mem::take(&mut self.stats.rules);
        self.stats.rules = rules
            .rules()
            .iter()
            .map(|r| {
                previous
                    .iter()
                    .position(|c| c.name == r.decl.name)
                    .map(|i| previous.swap_remove(i))
                    .unwrap_or_else(|| crate::stats::RuleCounters {
                        name: r.decl.name.clone(),
                        ..Default::default()
                    })
            })
            .collect();
        for state in self.partitions.values_mut().filter(|_| regroup) {
            state.groups = GroupIndex::new(self.group_labels.iter().cloned());
            let none = InternedLabels::default();
            for (key, entity) in &state.entities {
                state.groups.relabel(key, &none, entity.interned_labels());
            }
        }
        self.rules = rules;
        self.refresh_modes();
    }

    /// Recomputes which rules are paused, after the rules or the modes changed.
    pub(crate) fn refresh_modes(&mut self) {
        self.paused = self
            .rules
            .rules()
            .iter()
            .map(|r| self.modes.for_rule(&r.decl.name) == Mode::Paused)
            .collect();
        self.any_paused = self.paused.iter().any(|&p| p);
    }

    /// The sandbox, for loading a replacement rule set.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// How rule `rule`'s verdict functions run: for each that the rule defines, its name and
    /// whether it is evaluated natively (see [`salve_rules::native`]); otherwise Rhai runs
    /// it, answered from memory when the rule is pure and its reads repeat.
    pub fn verdict_functions(&self, rule: usize) -> Vec<(&'static str, bool)> {
        let Some(loaded) = self.rules.rules().get(rule) else {
            return Vec::new();
        };
        let defined = [true, loaded.has_clear(), loaded.has_verify()];
        [RuleFn::Condition, RuleFn::Clear, RuleFn::Verify]
            .into_iter()
            .filter(|function| defined[*function as usize])
            .map(|function| {
                let native = self
                    .compiled
                    .get(rule)
                    .is_some_and(|plans| plans[function as usize].is_some());
                (function.name(), native)
            })
            .collect()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Decodes and processes one telemetry message. A message that cannot be read, or whose
    /// time is out of bounds, changes nothing but a counter; the caller dead-letters it.
    ///
    /// `record_ts_ms` is the Kafka record timestamp, used when the event carries no `ts`.
    pub fn on_message(
        &mut self,
        position: RecordPosition,
        key: Option<&[u8]>,
        payload: &[u8],
        record_ts_ms: Option<i64>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let event = self.decode_message(key, payload)?;
        self.on_decoded(position, event, record_ts_ms, now_ms, out)
    }

    /// The first half of [`Engine::on_message`]: counts a message in and decodes it as
    /// configured. For a caller that picks `now_ms` from the event's own time, as
    /// `salve replay` does, without decoding it twice.
    pub fn decode_message<'p>(
        &mut self,
        key: Option<&[u8]>,
        payload: &'p [u8],
    ) -> Result<TelemetryEvent<'p>, Rejection> {
        self.stats.events_in += 1;
        decode_partitioned(
            payload,
            key,
            self.config.max_event_bytes,
            &self.config.partition_by,
        )
        .map_err(|error| {
            self.stats.decode_errors += 1;
            error.into()
        })
    }

    /// Refuses, as [`Engine::decode_message`] would, a message known to be `size` bytes that
    /// the caller kept only the beginning of, as `salve replay` does with an overlong line.
    pub fn refuse_too_large(&mut self, size: usize) -> Rejection {
        self.stats.events_in += 1;
        self.stats.decode_errors += 1;
        DecodeError::TooLarge {
            size,
            limit: self.config.max_event_bytes,
        }
        .into()
    }

    /// The second half of [`Engine::on_message`], for an event from
    /// [`Engine::decode_message`].
    pub fn on_decoded(
        &mut self,
        position: RecordPosition,
        mut event: TelemetryEvent<'_>,
        record_ts_ms: Option<i64>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let ts = *event.ts_ms.get_or_insert(record_ts_ms.unwrap_or(now_ms));
        let ahead_ms = ts.saturating_sub(now_ms);
        if ahead_ms > self.config.max_future_ms {
            self.stats.future_events += 1;
            return Err(Rejection::Future {
                ts,
                ahead_ms,
                max_ms: self.config.max_future_ms,
            });
        }
        self.on_event(position, &event, now_ms, out)
    }

    /// Processes one decoded event. A late one is refused, and changes nothing but a counter.
    pub fn on_event(
        &mut self,
        position: RecordPosition,
        event: &TelemetryEvent<'_>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let start = out.len();
        let result = self.process_event(position, event, now_ms, out);
        self.ledger.observe(&out[start..]);
        result
    }

    fn process_event(
        &mut self,
        position: RecordPosition,
        event: &TelemetryEvent<'_>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let resolution = self.config.resolution_ms;
        let group_labels = &self.group_labels;
        let state = self
            .partitions
            .entry(position.partition)
            .or_insert_with(|| PartitionState {
                groups: GroupIndex::new(group_labels.iter().cloned()),
                ..PartitionState::default()
            });
        let ts = event.ts_ms.unwrap_or(now_ms);
        let first_time = state.watermark_ms == 0;
        state.watermark_ms = state.watermark_ms.max(ts);
        state.heard_at_ms = now_ms;
        let watermark = state.watermark_ms;
        if first_time {
            // Subjects restored from the changelog before the partition's first event were
            // heard at time 0; from here they are idle only from now on.
            for entity in state.entities.values_mut() {
                entity.last_heard_ms = entity.last_heard_ms.max(watermark);
            }
            for group in state.group_subjects.values_mut() {
                group.last_heard_ms = group.last_heard_ms.max(watermark);
            }
            state.swept_at_ms = watermark;
            state.history_from_ms = watermark;
        }

        let entity_key = event.entity.as_ref();
        // One probe: find the entity, or insert it with an owned key.
        let mut found = state.entities.entry_ref(entity_key).or_default_entry();
        let behind_ms = found.get().last_seen_ms.saturating_sub(ts);
        if behind_ms > self.config.allowed_lateness_ms {
            self.stats.late_events += 1;
            return Err(Rejection::Late {
                entity: entity_key.to_owned(),
                ts,
                behind_ms,
                allowed_ms: self.config.allowed_lateness_ms,
            });
        }
        let interned = &mut self.interned;
        let replaced =
            (found.get_mut()).update_labels(&event.labels, |text| intern(interned, text));
        if let Some(old) = replaced {
            if !state.groups.is_empty() {
                state
                    .groups
                    .relabel(found.key(), &old, found.get().interned_labels());
            }
        }
        let entity = found.into_mut();
        entity.last_seen_ms = entity.last_seen_ms.max(ts);
        entity.last_heard_ms = watermark;
        let entity_now = entity.last_seen_ms;
        let series = entity.series_mut(&event.name, |name| intern(interned, name));
        let retention = self.retention.for_series(series.name_arc());
        series.observe(
            ts,
            event.value.unwrap_or(1.0),
            entity_now,
            resolution,
            retention,
            self.config.max_percentile_samples,
        );
        if event.kind == Kind::Health {
            series.record_health(event.value == Some(1.0), ts);
        }

        if watermark - state.swept_at_ms >= self.config.entity_ttl_ms / 10 {
            let mut forgotten = Vec::new();
            let expired = sweep_idle(state, self.config.entity_ttl_ms, &mut forgotten);
            self.dirty
                .extend(forgotten.into_iter().map(|key| (position.partition, key)));
            self.stats.entities_expired += expired;
            if expired > 0 {
                // Strings that only the interner still holds belonged to expired entities.
                self.interned.retain(|text| Arc::strong_count(text) > 1);
            }
        }

        self.router.matching(event, &mut self.matched);
        if self.any_paused {
            let paused = &self.paused;
            self.matched.retain(|&rule| !paused[rule]);
        }
        if self.matched.is_empty() {
            return Ok(());
        }
        let matched = std::mem::take(&mut self.matched);
        let before = out.len();
        for &rule in &matched {
            self.evaluate(position, rule, entity_key, watermark, now_ms, out);
        }
        self.matched = matched;
        self.record_changes(position.partition, before, out);
        // A condition that cleared may have ended a storm.
        self.thaw(position.partition, now_ms);
        Ok(())
    }

    /// Lets go the attempts held by storms of `partition` that have subsided: each is due
    /// at once, and sends its command unless something else holds it.
    pub(crate) fn thaw(&mut self, partition: PartitionId, now_ms: i64) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if state.safety.held.is_empty() {
            return;
        }
        let released = storm::thawed(
            &self.rules,
            &mut state.safety.held,
            &mut state.safety.storms,
            &state.entities,
            &state.groups,
        );
        for (subject, command_id) in released {
            state
                .commands
                .watch(&command_id, now_ms, DeadlineKind::Retry, &subject);
        }
    }

    fn evaluate(
        &mut self,
        position: RecordPosition,
        rule_index: usize,
        entity_key: &str,
        watermark: i64,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(state) = self.partitions.get_mut(&position.partition) else {
            return;
        };
        let rule = &self.rules.rules()[rule_index];
        let mut judge = Judge {
            calls: RuleCalls {
                frame: &self.frame,
                book: self.memoize.then_some(&mut self.memo_book),
                compiled: self.compiled.get(rule_index).filter(|_| self.native),
                rules: &self.rules,
                runtime: &self.runtime,
                index: rule_index,
                watermark,
                key: entity_key,
                group: None,
            },
            rule,
            rule_name: Arc::clone(&self.rule_names[rule_index]),
            config: &self.config,
            modes: &self.modes,
            ledger: &self.ledger,
            stats: &mut self.stats,
            position,
            now_ms,
            unlatched: None,
            rollout_changed: None,
            history_ms: self.rule_windows[rule_index],
            history_from_ms: state.history_from_ms,
        };
        if !self.needs_group[rule_index] {
            if let Some(entity) = state.entities.get_mut(entity_key) {
                let safety = &mut state.safety;
                judge.judge(entity_key, entity, None, &mut state.commands, safety, out);
            }
            if let Some(key) = judge.rollout_changed.take() {
                self.dirty.push((position.partition, key));
            }
            if let Some(subject) = judge.unlatched {
                self.dirty.push((position.partition, subject));
            }
            return;
        }
        // Group functions read the partition's other entities: the map moves into the frame
        // for the calls, with this entity out of it.
        let Some((shared_key, mut entity)) = state.entities.remove_entry(entity_key) else {
            return;
        };
        let group_key = match &rule.decl.group_by {
            None => None,
            // An entity without the label belongs to no group this rule judges.
            Some(label) => entity.label(label).map(|value| group_id(label, value)),
        };
        if rule.decl.group_by.is_none() || group_key.is_some() {
            let mut others = std::mem::take(&mut state.entities);
            judge.calls.group = Some((&mut others, &mut state.groups));
            let mut group = group_key.map(|key| {
                let subject = state.group_subjects.entry_ref(key.as_str()).or_default();
                subject.last_heard_ms = watermark;
                (key, subject)
            });
            let group = group
                .as_mut()
                .map(|(key, subject)| (key.as_str(), &mut subject.subject));
            let safety = &mut state.safety;
            judge.judge(
                entity_key,
                &mut entity,
                group,
                &mut state.commands,
                safety,
                out,
            );
            let unlatched = judge.unlatched.take();
            if let Some(key) = judge.rollout_changed.take() {
                self.dirty.push((position.partition, key));
            }
            state.entities = others;
            if let Some(subject) = unlatched {
                self.dirty.push((position.partition, subject));
            }
        }
        state.entities.insert(shared_key, entity);
    }

    /// Decodes and applies one ack message.
    pub fn on_ack_message(
        &mut self,
        payload: &[u8],
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), AckDecodeError> {
        match Ack::decode(payload) {
            Ok(ack) => {
                self.on_ack(&ack, now_ms, out);
                Ok(())
            }
            Err(error) => {
                self.stats.ack_decode_errors += 1;
                Err(error)
            }
        }
    }

    /// Applies an actuator's ack to the attempt it names.
    pub fn on_ack(&mut self, ack: &Ack, now_ms: i64, out: &mut Vec<Output>) {
        let start = out.len();
        self.apply_ack(ack, now_ms, out);
        self.ledger.observe(&out[start..]);
    }

    fn apply_ack(&mut self, ack: &Ack, now_ms: i64, out: &mut Vec<Output>) {
        let found = self.partitions.iter_mut().find_map(|(id, state)| {
            state
                .commands
                .subjects
                .get(&ack.command_id)
                .cloned()
                .map(|e| (*id, state, e))
        });
        let Some((partition, state, subject_key)) = found else {
            self.stats.acks_unmatched += 1;
            tracing::debug!(command_id = %ack.command_id, "ack matches no open attempt here");
            // Its incident may be on its way here, in a partition being moved.
            self.early_acks.keep(now_ms, ack);
            return;
        };
        // A failed attempt may climb the ladder at once: whether a storm holds that back is
        // decided before the subject is borrowed from the group it is counted in.
        let frozen = match ack.status {
            AckStatus::Failed | AckStatus::Rejected => state.freeze(
                &self.rules,
                &subject_key,
                &ack.command_id,
                &mut self.stats,
                now_ms,
                out,
            ),
            AckStatus::Received | AckStatus::Succeeded => None,
        };
        let Some(subject) =
            subject_mut(&mut state.entities, &mut state.group_subjects, &subject_key)
        else {
            self.stats.acks_unmatched += 1;
            return;
        };
        let Some(index) = subject.incident_by_command(&ack.command_id) else {
            self.stats.acks_unmatched += 1;
            return;
        };
        let incident = &subject.incidents[index];
        // Only an attempt that waits for its ack can take one: a late or repeated ack for an
        // attempt already verifying, or failed, is recorded and changes nothing.
        if !incident.state.awaits_ack() {
            self.stats.acks_unmatched += 1;
            return;
        }
        self.stats.acks += 1;
        let detail = ack.detail.as_deref().unwrap_or("");
        let mut record = Decision::new(
            DecisionKind::Ack,
            now_ms,
            &incident.rule,
            &subject_key,
            if detail.is_empty() {
                format!("actuator reported {}", ack.status.as_str())
            } else {
                format!("actuator reported {}: {detail}", ack.status.as_str())
            },
        );
        record.incident = Some(incident.id.clone());
        record.attempt = Some(incident.attempt);
        record.command_id = Some(ack.command_id.clone());
        record.ack_status = Some(ack.status);
        record.actuator = ack.actuator.clone();
        out.push(Output::Decision(record));
        let before = out.len();
        let mut lifecycle = Lifecycle {
            rules: &self.rules,
            config: &self.config,
            modes: &self.modes,
            ledger: &self.ledger,
            stats: &mut self.stats,
            now_ms,
            frozen,
            held: Vec::new(),
        };
        match ack.status {
            AckStatus::Received => {}
            AckStatus::Succeeded => {
                lifecycle.stats.attempts_succeeded += 1;
                lifecycle.succeeded(&subject_key, subject, index, &mut state.commands, out);
            }
            AckStatus::Failed | AckStatus::Rejected => {
                lifecycle.stats.attempts_failed += 1;
                let verb = if ack.status == AckStatus::Failed {
                    "failed"
                } else {
                    "rejected"
                };
                let reason = format!("the actuator {verb} the command: {detail}");
                lifecycle.failed(
                    &subject_key,
                    subject,
                    index,
                    reason,
                    &mut state.commands,
                    out,
                );
            }
        }
        state.safety.note_held(lifecycle.held);
        self.record_changes(partition, before, out);
        self.thaw(partition, now_ms);
    }

    /// Fires every deadline at or before `now_ms`: ack timeouts, verifications that held,
    /// and retries whose backoff is over.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        // Before `start`: the ledger counted these escalations in the process that made them.
        self.publish_again(out);
        let start = out.len();
        // Before the deadlines: an ack that came in time wins over its ack deadline.
        self.apply_early_acks(now_ms, out);
        self.fire_deadlines(now_ms, out);
        self.ledger.observe(&out[start..]);
    }

    fn fire_deadlines(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        for (id, state) in self.partitions.iter_mut() {
            // An idle partition does not stall time: once nothing has arrived for idle_timeout,
            // its event time follows the processing clock, less the allowed lateness, so its
            // idle entities still expire and since_last() still grows.
            let idle_for = now_ms.saturating_sub(state.heard_at_ms);
            if state.heard_at_ms > 0 && idle_for >= self.config.idle_timeout_ms {
                let floor = now_ms.saturating_sub(self.config.allowed_lateness_ms);
                if floor > state.watermark_ms {
                    state.watermark_ms = floor;
                    self.stats.idle_advances += 1;
                    if state.watermark_ms - state.swept_at_ms >= self.config.entity_ttl_ms / 10 {
                        let mut forgotten = Vec::new();
                        self.stats.entities_expired +=
                            sweep_idle(state, self.config.entity_ttl_ms, &mut forgotten);
                        self.dirty
                            .extend(forgotten.into_iter().map(|key| (*id, key)));
                    }
                }
            }
        }
        let mut lifecycle = Lifecycle {
            rules: &self.rules,
            config: &self.config,
            modes: &self.modes,
            ledger: &self.ledger,
            stats: &mut self.stats,
            now_ms,
            frozen: None,
            held: Vec::new(),
        };
        // Which outputs each partition's deadlines produced, to mark their subjects changed.
        let mut changed: Vec<(PartitionId, std::ops::Range<usize>)> = Vec::new();
        for (id, state) in self.partitions.iter_mut() {
            let start = out.len();
            while state
                .commands
                .deadlines
                .peek()
                .is_some_and(|Reverse(d)| d.at_ms <= now_ms)
            {
                let Some(Reverse(deadline)) = state.commands.deadlines.pop() else {
                    break;
                };
                let Some(subject_key) = state.commands.subjects.get(&deadline.command_id).cloned()
                else {
                    continue;
                };
                // A retry, or a timeout that climbs the ladder, sends a command: not into a
                // storm.
                lifecycle.frozen = match deadline.kind {
                    DeadlineKind::Retry | DeadlineKind::Ack => state.freeze(
                        lifecycle.rules,
                        &subject_key,
                        &deadline.command_id,
                        lifecycle.stats,
                        now_ms,
                        out,
                    ),
                    _ => None,
                };
                let Some(subject) =
                    subject_mut(&mut state.entities, &mut state.group_subjects, &subject_key)
                else {
                    continue;
                };
                let Some(index) = subject.incident_by_command(&deadline.command_id) else {
                    continue;
                };
                let incident = &subject.incidents[index];
                match (deadline.kind, incident.state) {
                    (DeadlineKind::Ack, IncidentState::Remediating | IncidentState::Reverting) => {
                        lifecycle.stats.attempts_timed_out += 1;
                        let reason = format!(
                            "no final ack within {} ms of issuing the command",
                            incident.ack_deadline_ms - incident.issued_at_ms
                        );
                        lifecycle.failed(
                            &subject_key,
                            subject,
                            index,
                            reason,
                            &mut state.commands,
                            out,
                        );
                    }
                    (DeadlineKind::Verify, IncidentState::Verifying) => {
                        lifecycle.stats.verified += 1;
                        // No latch: the verification saw the condition stay away, so the next
                        // time it holds is a new failure.
                        let incident = subject.incidents.remove(index);
                        state.commands.subjects.remove(&deadline.command_id);
                        let reason = "verified: the condition stayed away for the rule's verify_for after the fix".to_owned();
                        out.push(Output::Decision(close_attempt(
                            incident,
                            &subject_key,
                            now_ms,
                            IncidentState::Resolved,
                            reason,
                        )));
                    }
                    (DeadlineKind::Approval, IncidentState::AwaitingApproval) => {
                        let reason =
                            "nobody approved or denied the next action before the rule's approval timeout"
                                .to_owned();
                        lifecycle.escalate(
                            &subject_key,
                            subject,
                            index,
                            reason,
                            EscalationCause::ApprovalTimeout,
                            &mut state.commands,
                            out,
                        );
                    }
                    (DeadlineKind::Quarantine, IncidentState::Escalated) => {
                        let incident = subject.incidents.remove(index);
                        state.commands.subjects.remove(&deadline.command_id);
                        subject.forget_recent();
                        let reason = format!(
                            "the quarantine expired after {} ms (engine.quarantine_expiry); automation may act again",
                            lifecycle.config.quarantine_expiry_ms
                        );
                        out.push(Output::Decision(close_attempt(
                            incident,
                            &subject_key,
                            now_ms,
                            IncidentState::Failed,
                            reason,
                        )));
                    }
                    (DeadlineKind::Retry, IncidentState::BackingOff) => {
                        lifecycle.stats.retries += 1;
                        lifecycle.next_attempt(
                            &subject_key,
                            subject,
                            index,
                            None,
                            &mut state.commands,
                            out,
                        );
                    }
                    // The attempt moved on since this deadline was set.
                    _ => {}
                }
                state.safety.note_held(std::mem::take(&mut lifecycle.held));
            }
            if out.len() > start {
                changed.push((*id, start..out.len()));
            }
        }
        // What the deadlines changed (an incident closed, say) may have ended a storm.
        for (partition, _) in &changed {
            self.thaw(*partition, now_ms);
        }
        for (partition, range) in changed {
            self.mark_changes(partition, range, out);
        }
        self.emit_changelog(out);
    }

    /// Marks the subjects whose incidents changed in `out[before..]` (a transition names its
    /// subject), and appends their changelog records.
    fn record_changes(&mut self, partition: PartitionId, before: usize, out: &mut Vec<Output>) {
        self.mark_changes(partition, before..out.len(), out);
        self.emit_changelog(out);
    }

    /// Marks the subjects that transitions in `out[range]` name as changed in `partition`.
    fn mark_changes(
        &mut self,
        partition: PartitionId,
        range: std::ops::Range<usize>,
        out: &[Output],
    ) {
        for output in &out[range] {
            if let Output::Decision(d) = output {
                let changes = matches!(
                    d.kind,
                    DecisionKind::Transition | DecisionKind::WouldCommand
                );
                if changes
                    && !self
                        .dirty
                        .iter()
                        .any(|(p, s)| *p == partition && *s == d.entity)
                {
                    self.dirty.push((partition, d.entity.clone()));
                }
            }
        }
    }

    /// Appends a changelog record for every changed subject: its state, or a tombstone when
    /// nothing durable is left.
    fn emit_changelog(&mut self, out: &mut Vec<Output>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for (partition, subject) in dirty {
            let Some(state) = self.partitions.get(&partition) else {
                continue;
            };
            if let Some(key) = subject.strip_prefix(canary::ROLLOUT_PREFIX) {
                let value = state.safety.rollouts.get(key).and_then(|rollout| {
                    serde_json::to_string(
                        &serde_json::json!({"v": WIRE_VERSION, "rollout": rollout}),
                    )
                    .ok()
                });
                out.push(Output::Changelog(ChangelogRecord {
                    partition,
                    subject,
                    value,
                }));
                continue;
            }
            let entity = state.entities.get(subject.as_str());
            let (durable, group) = match entity {
                Some(entity) => (Some(&entity.subject), false),
                None => (
                    state
                        .group_subjects
                        .get(subject.as_str())
                        .map(|g| &g.subject),
                    true,
                ),
            };
            if durable.is_some_and(Subject::has_unconfirmed_escalation) {
                self.unconfirmed.push((partition, subject.clone()));
            }
            let value = durable.filter(|s| !s.is_durable_empty()).and_then(|s| {
                serde_json::to_string(&DurableRef {
                    v: WIRE_VERSION,
                    group,
                    subject: s,
                    labels: entity.map(|e| e.labels().collect()).unwrap_or_default(),
                })
                .ok()
            });
            out.push(Output::Changelog(ChangelogRecord {
                partition,
                subject,
                value,
            }));
        }
    }

    /// Restores a subject's durable state from its changelog record, when `partition` is
    /// assigned: its incidents resume where they were, with their deadlines.
    pub fn restore(
        &mut self,
        partition: PartitionId,
        subject_key: &str,
        value: &[u8],
    ) -> Result<(), String> {
        if let Some(key) = subject_key.strip_prefix(canary::ROLLOUT_PREFIX) {
            #[derive(serde::Deserialize)]
            struct Persisted {
                rollout: Rollout,
            }
            let persisted: Persisted = serde_json::from_slice(value)
                .map_err(|e| format!("changelog record for {subject_key}: {e}"))?;
            let group_labels = &self.group_labels;
            self.partitions
                .entry(partition)
                .or_insert_with(|| PartitionState {
                    groups: GroupIndex::new(group_labels.iter().cloned()),
                    ..PartitionState::default()
                })
                .safety
                .rollouts
                .insert(key.to_owned(), persisted.rollout);
            return Ok(());
        }
        let durable: Durable = serde_json::from_slice(value)
            .map_err(|e| format!("changelog record for {subject_key}: {e}"))?;
        let group_labels = &self.group_labels;
        let state = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                groups: GroupIndex::new(group_labels.iter().cloned()),
                ..PartitionState::default()
            });
        for incident in &durable.subject.incidents {
            let deadline = match incident.state {
                IncidentState::Remediating | IncidentState::Reverting => {
                    Some((DeadlineKind::Ack, incident.ack_deadline_ms))
                }
                IncidentState::Verifying => Some((DeadlineKind::Verify, incident.verify_until_ms)),
                IncidentState::BackingOff => Some((DeadlineKind::Retry, incident.retry_at_ms)),
                IncidentState::AwaitingApproval => {
                    Some((DeadlineKind::Approval, incident.approval_until_ms))
                }
                IncidentState::Escalated if incident.quarantine_until_ms > 0 => {
                    Some((DeadlineKind::Quarantine, incident.quarantine_until_ms))
                }
                _ => None,
            };
            if let Some((kind, at_ms)) = deadline {
                state
                    .commands
                    .watch(&incident.command_id, at_ms, kind, subject_key);
            }
        }
        self.stats.incidents_restored += durable.subject.incidents.len() as u64;
        self.replay_early_acks |= durable
            .subject
            .incidents
            .iter()
            .any(|incident| incident.state.awaits_ack());
        if durable.subject.has_unconfirmed_escalation() {
            self.republish.push((partition, subject_key.to_owned()));
        }
        // A later record of the subject replaces what an earlier one restored.
        let replaced = subject_mut(&mut state.entities, &mut state.group_subjects, subject_key)
            .map(|s| s.incidents.iter().map(|i| i.id.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        self.ledger.forget(replaced);
        for incident in &durable.subject.incidents {
            let rule = self.rules.rule(&incident.rule);
            self.ledger.restored(
                &incident.id,
                &incident.rule,
                subject_key,
                incident.state,
                incident.failing_at_ms,
                rule.and_then(|rule| latest_action(rule, incident)),
            );
        }
        if durable.group {
            state
                .group_subjects
                .entry_ref(subject_key)
                .or_default()
                .subject = durable.subject;
        } else {
            let mut found = state.entities.entry_ref(subject_key).or_default_entry();
            let entity = found.get_mut();
            entity.subject = durable.subject;
            entity.last_heard_ms = state.watermark_ms;
            let labels = crate::telemetry::Labels::borrowed(
                durable.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            let interned = &mut self.interned;
            if let Some(old) = entity.update_labels(&labels, |text| intern(interned, text)) {
                state
                    .groups
                    .relabel(found.key(), &old, found.get().interned_labels());
            }
        }
        Ok(())
    }

    /// Tells the engine that every output it returned so far has been delivered (the driver
    /// flushed them to the broker): escalations awaiting that are known delivered, and the
    /// changelog records of their incidents, appended to `out`, say so.
    pub fn confirm_delivered(&mut self, out: &mut Vec<Output>) {
        let mut unconfirmed = std::mem::take(&mut self.unconfirmed);
        unconfirmed.sort_unstable();
        unconfirmed.dedup();
        for (partition, key) in unconfirmed {
            let Some(state) = self.partitions.get_mut(&partition) else {
                continue;
            };
            let Some(subject) = subject_mut(&mut state.entities, &mut state.group_subjects, &key)
            else {
                continue;
            };
            let mut confirmed = false;
            for incident in &mut subject.incidents {
                confirmed |= incident.unconfirmed_escalation.take().is_some();
            }
            if confirmed {
                self.dirty.push((partition, key));
            }
        }
        self.emit_changelog(out);
    }

    /// Applies the kept acks of commands that restored incidents wait for.
    fn apply_early_acks(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if !std::mem::take(&mut self.replay_early_acks) {
            return;
        }
        let partitions = &self.partitions;
        // Only an attempt that waits for its ack: a kept ack of an attempt the old owner had
        // already closed stays kept, as it would have matched nothing there either.
        let awaited = |command_id: &str| {
            partitions.values().any(|state| {
                state
                    .commands
                    .subjects
                    .get(command_id)
                    .and_then(|key| state.subject(key))
                    .and_then(|(subject, _)| {
                        let index = subject.incident_by_command(command_id)?;
                        Some(subject.incidents[index].state.awaits_ack())
                    })
                    .unwrap_or(false)
            })
        };
        for ack in self.early_acks.take_awaited(now_ms, awaited) {
            self.stats.acks_replayed += 1;
            self.apply_ack(&ack, now_ms, out);
        }
    }

    /// Publishes again the escalations of restored incidents that were not known delivered:
    /// the same records, which consumers dedup by `incident`.
    fn publish_again(&mut self, out: &mut Vec<Output>) {
        if self.republish.is_empty() {
            return;
        }
        let mut republish = std::mem::take(&mut self.republish);
        republish.sort_unstable();
        republish.dedup();
        for (partition, key) in republish {
            let Some(state) = self.partitions.get(&partition) else {
                continue;
            };
            let escalations = state
                .subject(&key)
                .into_iter()
                .flat_map(|(s, _)| &s.incidents)
                .filter(|i| i.state == IncidentState::Escalated)
                .filter_map(|i| i.unconfirmed_escalation.clone());
            let before = out.len();
            out.extend(escalations.map(Output::Escalation));
            if out.len() > before {
                self.unconfirmed.push((partition, key));
            }
        }
    }

    /// The earliest pending deadline, so a driver can sleep until it.
    pub fn next_deadline(&self) -> Option<i64> {
        self.partitions
            .values()
            .filter_map(|s| s.commands.deadlines.peek().map(|Reverse(d)| d.at_ms))
            .min()
    }

    /// Forgets a partition's state, when the partition is revoked.
    pub fn revoke(&mut self, partition: PartitionId) {
        if let Some(state) = self.partitions.remove(&partition) {
            let open = state
                .entities
                .into_values()
                .map(|e| e.subject)
                .chain(state.group_subjects.into_values().map(|g| g.subject))
                .flat_map(|s| s.incidents.into_iter().map(|i| i.id));
            self.ledger.forget(open);
        }
    }

    /// Effectiveness and incident histories.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Entities held, across partitions.
    pub fn entity_count(&self) -> usize {
        self.partitions.values().map(|s| s.entities.len()).sum()
    }
}

impl OpenCommands {
    /// Watches an issued command for its ack and its deadline.
    fn track(&mut self, command: Issued, subject_key: &str) {
        self.watch(
            &command.id,
            command.deadline_ms,
            DeadlineKind::Ack,
            subject_key,
        );
    }

    /// Looks at the incident whose current attempt is `command_id`, on `subject_key`, again
    /// at `at_ms`.
    fn watch(&mut self, command_id: &str, at_ms: i64, kind: DeadlineKind, subject_key: &str) {
        self.deadlines.push(Reverse(AckDeadline {
            at_ms,
            command_id: command_id.to_owned(),
            kind,
        }));
        self.subjects
            .insert(command_id.to_owned(), Box::from(subject_key));
    }
}

/// The incidents and pending states of an entity, or of a group by its id.
fn subject_mut<'a>(
    entities: &'a mut HashMap<Arc<str>, EntityState>,
    groups: &'a mut HashMap<Box<str>, GroupSubject>,
    key: &str,
) -> Option<&'a mut Subject> {
    if entities.contains_key(key) {
        return entities.get_mut(key).map(|e| &mut e.subject);
    }
    groups.get_mut(key).map(|g| &mut g.subject)
}

/// The partition's other entities and its group index, lent to group functions for a call.
type GroupAccess<'a> = (&'a mut HashMap<Arc<str>, EntityState>, &'a mut GroupIndex);

/// Moves `incident` to `backing_off` because its next attempt is held (a paused rule, a
/// storm), and records the transition with why.
fn back_off_held(
    now_ms: i64,
    subject_key: &str,
    incident: &mut Incident,
    reason: String,
    out: &mut Vec<Output>,
) {
    let mut record = incident_transition(
        now_ms,
        subject_key,
        incident,
        IncidentState::BackingOff,
        reason,
    );
    record.command_id = Some(incident.command_id.clone());
    incident.state = IncidentState::BackingOff;
    out.push(Output::Decision(record));
}

/// Why another rule's incident on `subject` (keyed `subject_key`) holds `rule`'s new failure
/// back: its fix acts on the subject itself and is out (`remediating`, `reverting`), between
/// attempts (`backing_off`) or being verified. A mitigated, escalated or approval-awaiting
/// incident does not: nothing of it is in flight.
fn under_remediation(subject: &Subject, rule: &str, subject_key: &str) -> Option<String> {
    let busy = subject.incidents.iter().find(|incident| {
        &*incident.rule != rule
            && incident.target == subject_key
            && matches!(
                incident.state,
                IncidentState::Remediating
                    | IncidentState::Reverting
                    | IncidentState::BackingOff
                    | IncidentState::Verifying
            )
    })?;
    Some(format!(
        "condition of {rule} holds, but {} is {} on {subject_key} ({}): one remediation in flight per entity, held until it is over",
        busy.rule,
        busy.state.as_str(),
        busy.id
    ))
}

#[cfg(test)]
impl Engine {
    /// How many places hold entity `entity_key`'s id: the map, and the group index once per
    /// label it is grouped by (they share one allocation).
    pub(crate) fn entity_key_holders(&self, entity_key: &str) -> Option<usize> {
        self.partitions
            .values()
            .find_map(|state| state.entities.get_key_value(entity_key))
            .map(|(key, _)| Arc::strong_count(key))
    }

    /// Rule `rule`'s condition on `entity`, through Rhai and through its compiled plan
    /// (`None` when it has none; `Some(None)` when the plan gives up).
    pub(crate) fn condition_both_ways(
        &mut self,
        entity_key: &str,
        rule: usize,
    ) -> (Result<bool, EvalError>, Option<Option<bool>>) {
        let state = self
            .partitions
            .values_mut()
            .find(|state| state.entities.contains_key(entity_key))
            .expect("the entity is known");
        let watermark = state.watermark_ms;
        let (shared_key, mut entity) = state
            .entities
            .remove_entry(entity_key)
            .expect("the entity is known");
        let mut frame = self.frame.borrow_mut();
        frame.now_ms = entity.last_seen_ms;
        frame.partition_now_ms = watermark;
        frame.key = entity_key.to_owned();
        std::mem::swap(&mut frame.entity, &mut entity);
        frame.begin_call();
        drop(frame);
        let rhai = self.rules.condition(&self.runtime, rule);
        let mut frame = self.frame.borrow_mut();
        let native = self.compiled[rule][0].as_ref().map(|plan| {
            frame.begin_call();
            plan.verdict(&mut frame)
        });
        std::mem::swap(&mut frame.entity, &mut entity);
        drop(frame);
        let state = self.partitions.values_mut().next().expect("a partition");
        state.entities.insert(shared_key, entity);
        (rhai, native)
    }
}

/// How a verdict function's call was answered.
enum Way {
    /// By its compiled form.
    Native,
    /// From the entity's memo.
    Memo,
    /// By the script.
    Script,
}

/// Calls one rule's functions with an entity's state in the frame.
struct RuleCalls<'a> {
    frame: &'a SharedFrame,
    /// Where calls of pure rules are remembered; `None` when memos are off.
    book: Option<&'a mut MemoBook>,
    /// The rule's compiled verdict functions; `None` when native evaluation is off.
    compiled: Option<&'a [Option<Plan>; 3]>,
    rules: &'a RuleSet,
    runtime: &'a Runtime,
    index: usize,
    watermark: i64,
    /// The entity under evaluation.
    key: &'a str,
    /// For rules that read other entities.
    group: Option<GroupAccess<'a>>,
}

impl RuleCalls<'_> {
    fn call<T>(
        &mut self,
        entity: &mut EntityState,
        call: impl FnOnce(&RuleSet, &Runtime, usize) -> Option<Result<T, EvalError>>,
        stats: &mut Stats,
    ) -> Option<T> {
        self.prepare_frame(entity);
        // The same swaps lend the state to the frame and take it back.
        self.swap_into_frame(entity);
        self.frame.borrow_mut().begin_call();
        let result = call(self.rules, self.runtime, self.index);
        self.swap_into_frame(entity);
        self.counted(result?, stats)
    }

    /// Like [`RuleCalls::call`], for a function that returns a verdict: a pure rule's call is
    /// answered from the entity's memo when the reads it made last time come out the same.
    fn call_verdict(
        &mut self,
        entity: &mut EntityState,
        function: RuleFn,
        call: impl FnOnce(&RuleSet, &Runtime, usize) -> Option<Result<bool, EvalError>>,
        stats: &mut Stats,
    ) -> Option<bool> {
        self.prepare_frame(entity);
        self.swap_into_frame(entity);
        let verdict = self.verdict_in_frame(function, call);
        self.swap_into_frame(entity);
        let (result, way) = verdict?;
        match way {
            Way::Native => stats.rule_calls_native += 1,
            Way::Memo => stats.rule_memo_hits += 1,
            Way::Script => {}
        }
        self.counted(result, stats)
    }

    /// With the entity in the frame: the verdict, by the cheapest way that gives the
    /// script's answer. `None` when the rule does not define the function.
    fn verdict_in_frame(
        &mut self,
        function: RuleFn,
        call: impl FnOnce(&RuleSet, &Runtime, usize) -> Option<Result<bool, EvalError>>,
    ) -> Option<(Result<bool, EvalError>, Way)> {
        if let Some(plan) = self.compiled.and_then(|c| c[function as usize].as_ref()) {
            let mut frame = self.frame.borrow_mut();
            frame.begin_call();
            if let Some(verdict) = plan.verdict(&mut frame) {
                return Some((Ok(verdict), Way::Native));
            }
        }
        let pure = self.rules.rules()[self.index].is_pure();
        let slot = memo::slot(self.index, function);
        if let Some(book) = self.book.as_deref_mut().filter(|_| pure) {
            let mut frame = self.frame.borrow_mut();
            let frame = &mut *frame;
            if let Some((shape, answer)) = frame.entity.memos.recall(slot, &mut book.recalled) {
                if frame.replay(book.reads(shape), &book.recalled) {
                    return Some((Ok(answer), Way::Memo));
                }
            }
        }
        self.frame.borrow_mut().begin_call();
        let result = call(self.rules, self.runtime, self.index)?;
        if let (Ok(answer), Some(book)) = (&result, self.book.as_deref_mut().filter(|_| pure)) {
            let mut frame = self.frame.borrow_mut();
            let frame = &mut *frame;
            if !frame.opaque {
                frame
                    .entity
                    .memos
                    .remember(book, slot, &frame.noted, *answer);
            }
        }
        Some((result, Way::Script))
    }

    /// Sets the frame up for a call on `entity`.
    fn prepare_frame(&self, entity: &EntityState) {
        let mut frame = self.frame.borrow_mut();
        frame.now_ms = entity.last_seen_ms;
        frame.partition_now_ms = self.watermark;
        frame.key.clear();
        frame.key.push_str(self.key);
    }

    /// Counts a finished call, and unwraps its result.
    fn counted<T>(&self, result: Result<T, EvalError>, stats: &mut Stats) -> Option<T> {
        stats.rule_evaluations += 1;
        let counters = stats.rules.get_mut(self.index);
        if let Some(counters) = counters {
            counters.evaluations += 1;
        }
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                rule_failed(stats, self.index, &error);
                None
            }
        }
    }

    /// Exchanges the entity, and for group rules the partition's other entities and group
    /// index, with the frame's.
    fn swap_into_frame(&mut self, entity: &mut EntityState) {
        let mut frame = self.frame.borrow_mut();
        std::mem::swap(&mut frame.entity, entity);
        if let Some((others, groups)) = &mut self.group {
            std::mem::swap(&mut frame.others, *others);
            std::mem::swap(&mut frame.groups, *groups);
        }
    }

    /// Whether the condition holds; `None` when the call failed.
    fn holds(&mut self, entity: &mut EntityState, stats: &mut Stats) -> Option<bool> {
        let condition = |rules: &RuleSet, rt: &Runtime, i| Some(rules.condition(rt, i));
        self.call_verdict(entity, RuleFn::Condition, condition, stats)
    }

    /// Whether the entity is clear: `fn clear(p)` when the rule has one, else the condition
    /// not holding. `None` when a call failed.
    fn cleared(&mut self, entity: &mut EntityState, stats: &mut Stats) -> Option<bool> {
        if self.rules.rules()[self.index].has_clear() {
            self.call_verdict(
                entity,
                RuleFn::Clear,
                |rules, rt, i| rules.clear(rt, i),
                stats,
            )
        } else {
            self.holds(entity, stats).map(|holds| !holds)
        }
    }
}

/// One rule judging one event's entity, or the entity's group.
struct Judge<'a> {
    calls: RuleCalls<'a>,
    rule: &'a salve_rules::Rule,
    rule_name: Arc<str>,
    config: &'a EngineConfig,
    modes: &'a Modes,
    ledger: &'a Ledger,
    stats: &'a mut Stats,
    position: RecordPosition,
    now_ms: i64,
    /// A subject whose durable state changed without a transition to show it (a rule
    /// re-armed), for the changelog.
    unlatched: Option<String>,
    /// A canary rollout that changed, by its changelog key.
    rollout_changed: Option<String>,
    /// The rule's longest window: how much history must be in the windows before a
    /// condition that does not hold shows that the failure cleared.
    history_ms: i64,
    /// The event time from which the partition's windows hold history.
    history_from_ms: i64,
}

/// The subject a rule judges: the group when it has one, else the entity itself. Borrowed
/// afresh at each use, since the entity is lent to the frame for every call in between.
fn subject<'a>(
    entity: &'a mut EntityState,
    group: &'a mut Option<(&str, &mut Subject)>,
) -> &'a mut Subject {
    match group {
        Some((_, subject)) => subject,
        None => &mut entity.subject,
    }
}

impl Judge<'_> {
    fn judge(
        &mut self,
        entity_key: &str,
        entity: &mut EntityState,
        mut group: Option<(&str, &mut Subject)>,
        commands: &mut OpenCommands,
        safety: &mut GroupSafety,
        out: &mut Vec<Output>,
    ) {
        let subject_key = group.as_ref().map_or(entity_key, |(key, _)| *key);
        let rule = self.rule;
        let rule_name = Arc::clone(&self.rule_name);
        let now_ms = self.now_ms;
        // One remediation in flight per rule and subject: a failure that persists joins it.
        let open = subject(entity, &mut group)
            .incidents
            .iter()
            .position(|i| i.rule == rule_name);
        if let Some(open) = open {
            if subject(entity, &mut group).incidents[open].state == IncidentState::Mitigated {
                let Some(cleared) = self.calls.cleared(entity, self.stats) else {
                    return;
                };
                let entity_now = entity.last_seen_ms;
                let clear = Clear {
                    cleared,
                    timeout_ms: self.timeout_ms(),
                    now_ms,
                    entity_now,
                };
                let subject = subject(entity, &mut group);
                if let Some(command) =
                    revert_when_clear(rule, subject_key, &mut subject.incidents[open], clear, out)
                {
                    self.stats.commands += 1;
                    commands.track(command, subject_key);
                }
            } else if subject(entity, &mut group).incidents[open].state == IncidentState::Verifying
            {
                // Two-phase validation: the actuator said it worked; the telemetry disagrees.
                // Within `settle` of the fix, windows still hold data from before it.
                // Measured on the entity's event time: after a restart, the events redelivered
                // from before the fix must not fail it.
                if entity.last_seen_ms < subject(entity, &mut group).incidents[open].verify_from_ms
                {
                    return;
                }
                let failing = if self.rule.has_verify() {
                    let verify = |rules: &RuleSet, rt: &Runtime, i| rules.verify(rt, i);
                    self.calls
                        .call_verdict(entity, RuleFn::Verify, verify, self.stats)
                        .map(|healthy| !healthy)
                } else {
                    self.calls.holds(entity, self.stats)
                };
                let Some(true) = failing else {
                    return;
                };
                self.stats.verifications_failed += 1;
                let evidence = self.calls.frame.borrow().evidence();
                let reason = format!(
                    "the fix did not hold while verifying: {}",
                    describe_evidence(&evidence, "no evidence noted")
                );
                // The failure may climb the ladder at once: not into a storm. A group subject
                // is no member of a group, and has no storm.
                let frozen = match group {
                    None => self.storm(entity_key, entity, &mut safety.storms, out).0,
                    Some(_) => None,
                };
                let mut lifecycle = self.lifecycle();
                lifecycle.frozen = frozen;
                let subject = subject(entity, &mut group);
                lifecycle.failed(subject_key, subject, open, reason, commands, out);
                safety.note_held(lifecycle.held);
            }
            return;
        }
        let Some(holds) = self.calls.holds(entity, self.stats) else {
            return;
        };
        // After an incident closed, the rule waits for its condition to clear before it may
        // open another: what still fails after a fix is the lifecycle's business (verify,
        // retry, escalate), not a reason to fire again on every event.
        let entity_now = entity.last_seen_ms;
        let latched = subject(entity, &mut group);
        if latched.is_latched(&rule_name) {
            // Windows that began after the failure (a restart restored the latch, not the
            // history) cannot show that it cleared: wait until they cover the rule's windows.
            let full = entity_now - self.history_from_ms >= self.history_ms;
            if holds || !full {
                self.stats.verdicts_latched += 1;
            } else {
                latched.unlatch(&rule_name);
                self.unlatched = Some(subject_key.to_owned());
            }
            return;
        }
        let hold_ms = rule.decl.hold_for_ms;
        let entity_now = entity.last_seen_ms;
        let pending = subject(entity, &mut group)
            .pending
            .iter()
            .position(|p| p.rule == rule_name);
        if !holds {
            // With a clear condition, the band between the two keeps the pending state: the
            // spike has not ended until the clear condition says so (hysteresis).
            if pending.is_some() && self.calls.cleared(entity, self.stats) == Some(false) {
                return;
            }
            // A condition that clears before its hold_for ran out was a transient: recorded,
            // never acted on.
            if let Some(index) = pending {
                let ended = subject(entity, &mut group).pending.swap_remove(index);
                let since = ended.since_ms;
                self.stats.verdicts_transient += 1;
                let reason = if ended.inhibited {
                    format!(
                        "condition of {} cleared while its action was held back: nothing left to do",
                        rule.decl.name
                    )
                } else if entity_now - since < hold_ms {
                    format!(
                        "condition of {} cleared after {} ms, within its hold_for of {hold_ms} ms: a transient",
                        rule.decl.name,
                        entity_now - since
                    )
                } else {
                    format!(
                        "condition of {} cleared before an event confirmed it had held for its hold_for of {hold_ms} ms: a transient",
                        rule.decl.name
                    )
                };
                self.emit_verdict(subject_key, Verdict::Transient, reason, out);
            }
            return;
        }
        let mut held_ms = 0;
        let mut pending = pending;
        if hold_ms > 0 {
            let pendings = &mut subject(entity, &mut group).pending;
            if let Some(index) = pending {
                // Not seen holding for longer than hold_for (the entity fell silent): the
                // pending state went stale, and its timing restarts rather than firing at once.
                if entity_now - pendings[index].last_held_ms > hold_ms {
                    pendings.swap_remove(index);
                    pending = None;
                }
            }
            match pending {
                None => {
                    pendings.push(Pending::new(rule_name, entity_now));
                    self.stats.verdicts_pending += 1;
                    let reason = format!(
                        "condition of {} holds; a failure if it still holds after {hold_ms} ms",
                        rule.decl.name
                    );
                    self.emit_verdict(subject_key, Verdict::Pending, reason, out);
                    return;
                }
                Some(index) => {
                    pendings[index].last_held_ms = entity_now;
                    held_ms = entity_now - pendings[index].since_ms;
                    if held_ms < hold_ms {
                        return;
                    }
                }
            }
        }
        // An open incident upstream (the shared database, say) holds the action back: the
        // failure is recorded once as inhibited, and acts when the upstream incident closes
        // if it still holds then.
        // One remediation in flight per entity: another rule's fix that is out or being
        // verified on this subject holds back a rule that would act on the subject too, so
        // that two actuators never work on one pod (a restart during a replace, say) and
        // neither verification judges the other's effect. A rule with `fn target` acts
        // elsewhere (a failover promotes a replica while the dead primary is replaced).
        let busy = if rule.has_target() {
            None
        } else {
            under_remediation(subject(entity, &mut group), &rule.decl.name, subject_key)
        };
        let held_back = busy
            .or_else(|| self.inhibition(entity_key, entity))
            .or_else(|| self.blast_radius(entity_key, entity, &mut safety.storms, out))
            .or_else(|| self.canary(entity_key, entity, &mut safety.rollouts, out));
        if let Some(reason) = held_back {
            let pendings = &mut subject(entity, &mut group).pending;
            let index = pending.unwrap_or_else(|| {
                pendings.push(Pending::new(Arc::clone(&rule_name), entity_now));
                pendings.len() - 1
            });
            pendings[index].last_held_ms = entity_now;
            if !pendings[index].inhibited {
                pendings[index].inhibited = true;
                self.stats.verdicts_inhibited += 1;
                self.emit_verdict(subject_key, Verdict::Inhibited, reason, out);
            }
            return;
        }
        if let Some(index) = pending {
            subject(entity, &mut group).pending.swap_remove(index);
        }
        self.stats.verdicts_failure += 1;
        let incident_id = incident_id(&rule.decl.name, subject_key, self.position);
        let held = if held_ms > 0 {
            format!("condition of {} held for {held_ms} ms", rule.decl.name)
        } else {
            format!("condition of {} holds", rule.decl.name)
        };
        let mut failure = verdict(
            self.calls.frame,
            now_ms,
            &rule.decl.name,
            subject_key,
            Verdict::Failure,
            held,
        );
        failure.incident = Some(incident_id.clone());
        let reason = describe_evidence(&failure.evidence, &rule.decl.description);
        out.push(Output::Decision(failure));

        let mut incident = Incident {
            id: incident_id,
            rule: rule_name,
            opened_at_ms: entity_now,
            failing_at_ms: Some(now_ms),
            state: IncidentState::Failing,
            attempt: 0,
            step: 0,
            step_attempts: 0,
            command_id: String::new(),
            issued_at_ms: now_ms,
            ack_deadline_ms: now_ms,
            clear_since_ms: None,
            clear_last_ms: 0,
            verify_from_ms: 0,
            verify_until_ms: 0,
            retry_at_ms: 0,
            approval_until_ms: 0,
            approved_step: None,
            quarantine_until_ms: 0,
            target: String::new(),
            params: serde_json::Map::new(),
            unconfirmed_escalation: None,
        };
        // Where the command goes and what it carries may depend on the state: the replica to
        // promote, the primary it replaces.
        let target = match self
            .calls
            .call(entity, |rules, rt, i| rules.target(rt, i), self.stats)
        {
            None if rule.has_target() => Err("no command issued: target() failed"),
            None => Ok(subject_key.to_owned()),
            Some(value) if value.is_unit() => {
                Err("no command issued: target() found no entity to act on")
            }
            Some(value) => Ok(value.to_string()),
        };
        let mut params = rule.decl.action_params.clone();
        if let Some(group_label) = &rule.decl.group_by {
            if let Some(value) = entity.label(group_label) {
                params
                    .entry(group_label.clone())
                    .or_insert_with(|| serde_json::Value::from(value));
            }
        }
        let computed = match target {
            Err(why) => Err(why),
            Ok(target) => match self.calls.call(
                entity,
                |rules, rt, i| rules.action_params(rt, i),
                self.stats,
            ) {
                Some(computed) => Ok((target, computed)),
                None if rule.has_action_params() => {
                    Err("no command issued: action_params() failed")
                }
                None => Ok((target, serde_json::Map::new())),
            },
        };
        let target = match computed {
            Ok((target, computed)) => {
                params.extend(computed);
                target
            }
            Err(why) => {
                let subject = subject(entity, &mut group);
                self.give_up(incident, subject, subject_key, why, commands, out);
                return;
            }
        };
        incident.target = target;
        incident.params = params;
        let subject = subject(entity, &mut group);
        subject.incidents.push(incident);
        let index = subject.incidents.len() - 1;
        let mut lifecycle = self.lifecycle();
        lifecycle.next_attempt(subject_key, subject, index, Some(reason), commands, out);
    }

    /// The lifecycle, for this judgement's incident.
    fn lifecycle(&mut self) -> Lifecycle<'_> {
        Lifecycle {
            rules: self.calls.rules,
            config: self.config,
            modes: self.modes,
            ledger: self.ledger,
            stats: self.stats,
            now_ms: self.now_ms,
            frozen: None,
            held: Vec::new(),
        }
    }

    /// Records a verdict on `subject_key`, with the values the last rule call noted as its
    /// evidence.
    fn emit_verdict(
        &self,
        subject_key: &str,
        kind: Verdict,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::Decision(verdict(
            self.calls.frame,
            self.now_ms,
            &self.rule.decl.name,
            subject_key,
            kind,
            reason,
        )));
    }

    /// Why an upstream incident inhibits this rule's action on `entity`, if one does.
    fn inhibition(&self, entity_key: &str, entity: &EntityState) -> Option<String> {
        let (others, groups) = self.calls.group.as_ref()?;
        for inhibitor in &self.rule.decl.inhibited_by {
            let Some(value) = entity.label(&inhibitor.label) else {
                continue;
            };
            for member in groups.members(&inhibitor.upstream_label, value) {
                let state = if member == entity_key {
                    Some(entity)
                } else {
                    others.get(member)
                };
                if state.is_some_and(|s| s.subject.has_incident_of(&inhibitor.rule)) {
                    return Some(format!(
                        "condition of {} holds, but {} has an open incident on {member} ({}={value}): inhibited",
                        self.rule.decl.name, inhibitor.rule, inhibitor.upstream_label
                    ));
                }
            }
        }
        None
    }

    /// Why the rule's blast radius holds this failure back, if it does: a storm in the
    /// entity's group (escalated once, when it starts), or the group's quota of members
    /// under remediation at once already taken.
    fn blast_radius(
        &mut self,
        entity_key: &str,
        entity: &EntityState,
        storms: &mut storm::Storms,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        let radius = self.rule.decl.blast_radius.as_ref()?;
        let (freeze, standing) = self.storm(entity_key, entity, storms, out);
        if let Some(freeze) = freeze {
            return Some(freeze.reason);
        }
        let standing = standing?;
        let in_flight = standing.in_flight;
        match radius.in_flight_limit(standing.members) {
            Some(max) if in_flight >= max => {
                let group = group_id(&radius.group, entity.label(&radius.group)?);
                Some(format!(
                    "queued: {group} already has {in_flight} of at most {max} members under remediation by {}",
                    self.rule_name
                ))
            }
            _ => None,
        }
    }

    /// The storm this rule is in on `entity`'s group, if any (see [`storm::storm`]), with
    /// how the group stands.
    fn storm(
        &mut self,
        entity_key: &str,
        entity: &EntityState,
        storms: &mut storm::Storms,
        out: &mut Vec<Output>,
    ) -> (Option<storm::Freeze>, Option<storm::Standing>) {
        let Some((others, groups)) = self.calls.group.as_ref() else {
            return (None, None);
        };
        storm::storm(
            self.rule,
            &self.rule_name,
            (entity_key, entity),
            others,
            groups,
            storms,
            self.stats,
            self.now_ms,
            out,
        )
    }

    fn timeout_ms(&self) -> i64 {
        self.rule
            .decl
            .ack_timeout_ms
            .unwrap_or(self.config.ack_timeout_ms)
    }

    /// An incident that cannot be acted on goes straight to a human.
    fn give_up(
        &mut self,
        incident: Incident,
        subject: &mut Subject,
        subject_key: &str,
        why: &str,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        subject.incidents.push(incident);
        let index = subject.incidents.len() - 1;
        let mut lifecycle = self.lifecycle();
        let cause = EscalationCause::Unactionable;
        lifecycle.escalate(
            subject_key,
            subject,
            index,
            why.to_owned(),
            cause,
            commands,
            out,
        );
    }
}

/// What happens to an incident after its attempts succeed or fail: verification, retries
/// with backoff, the ladder, flap protection and escalation.
struct Lifecycle<'a> {
    rules: &'a RuleSet,
    config: &'a EngineConfig,
    modes: &'a Modes,
    /// For `disable_below`: how the rule's fixes have fared.
    ledger: &'a Ledger,
    stats: &'a mut Stats,
    now_ms: i64,
    /// The storm that freezes the group of the incident at hand, if one does: its next
    /// command is held rather than sent.
    frozen: Option<storm::Freeze>,
    /// Attempts held for a storm during this call, as (storm, subject, command id), for the
    /// partition to let go when the storm subsides.
    held: Vec<(storm::Freeze, Box<str>, String)>,
}

impl Lifecycle<'_> {
    fn rule(&self, name: &str) -> Option<&salve_rules::Rule> {
        self.rules.rule(name)
    }

    /// The actuator reported success: a paired action waits for its revert, a rule with
    /// `verify_for` verifies, and any other incident is resolved.
    fn succeeded(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        let now_ms = self.now_ms;
        let incident = &subject.incidents[index];
        let rule = self.rule(&incident.rule);
        let paired = rule
            .filter(|_| incident.state == IncidentState::Remediating)
            .and_then(|r| {
                r.decl
                    .revert
                    .as_deref()
                    .map(|v| (v.to_owned(), r.decl.clear_for_ms))
            });
        let (verify_for, settle) = rule
            .filter(|_| incident.state == IncidentState::Remediating)
            .map_or((0, 0), |r| (r.decl.verify_for_ms, r.decl.settle_ms));
        let (to, reason) = if let Some((revert, clear_for)) = paired {
            // The action holds the entity in a mitigated state (e.g. traffic rerouted) until
            // its revert: the incident stays open and watches the clear condition.
            (
                IncidentState::Mitigated,
                format!("the actuator reported success; {revert} follows once the rule is clear for {clear_for} ms"),
            )
        } else if verify_for > 0 {
            subject.incidents[index].verify_until_ms = now_ms.saturating_add(verify_for);
            let incident = &subject.incidents[index];
            commands.deadlines.push(Reverse(AckDeadline {
                at_ms: now_ms.saturating_add(verify_for),
                command_id: incident.command_id.clone(),
                kind: DeadlineKind::Verify,
            }));
            (
                IncidentState::Verifying,
                format!("the actuator reported success; resolved if the condition stays away for {verify_for} ms"),
            )
        } else {
            let incident = subject.incidents.remove(index);
            commands.subjects.remove(&incident.command_id);
            subject.latch(Arc::clone(&incident.rule));
            out.push(Output::Decision(close_attempt(
                incident,
                subject_key,
                now_ms,
                IncidentState::Resolved,
                "the actuator reported success".to_owned(),
            )));
            return;
        };
        let incident = &mut subject.incidents[index];
        if to == IncidentState::Mitigated {
            commands.subjects.remove(&incident.command_id);
        }
        incident.verify_from_ms = now_ms.saturating_add(settle);
        let mut record = incident_transition(now_ms, subject_key, incident, to, reason);
        record.command_id = Some(incident.command_id.clone());
        incident.state = to;
        incident.clear_since_ms = None;
        out.push(Output::Decision(record));
    }

    /// An attempt failed: retry after a backoff, climb the ladder, or escalate.
    fn failed(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        reason: String,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        let now_ms = self.now_ms;
        let incident = &subject.incidents[index];
        let Some(rule) = self.rule(&incident.rule) else {
            close_orphan(subject_key, subject, index, reason, commands, now_ms, out);
            return;
        };
        let action = if incident.state == IncidentState::Reverting {
            rule.decl.revert.clone().unwrap_or_default()
        } else {
            step_action(rule, incident.step).to_owned()
        };
        let retry = &rule.decl.retry;
        if incident.state == IncidentState::Reverting {
            // A revert that fails leaves the entity mitigated, not broken: a human decides.
            self.escalate(
                subject_key,
                subject,
                index,
                format!("{action} failed: {reason}"),
                EscalationCause::RevertFailed,
                commands,
                out,
            );
        } else if incident.step_attempts < retry.attempts {
            let delay = backoff_ms(retry, incident.step_attempts, &incident.id);
            let incident = &mut subject.incidents[index];
            incident.retry_at_ms = now_ms.saturating_add(delay);
            commands.deadlines.push(Reverse(AckDeadline {
                at_ms: now_ms.saturating_add(delay),
                command_id: incident.command_id.clone(),
                kind: DeadlineKind::Retry,
            }));
            let mut record = incident_transition(
                now_ms,
                subject_key,
                incident,
                IncidentState::BackingOff,
                format!(
                    "{action} failed ({reason}); attempt {} of {} in {delay} ms",
                    incident.step_attempts + 1,
                    retry.attempts
                ),
            );
            record.command_id = Some(incident.command_id.clone());
            incident.state = IncidentState::BackingOff;
            out.push(Output::Decision(record));
        } else if incident.step < rule.decl.ladder.len() {
            let next = &rule.decl.ladder[incident.step].action;
            let incident = &mut subject.incidents[index];
            let mut record = incident_transition(
                now_ms,
                subject_key,
                incident,
                IncidentState::Failing,
                format!("{action} failed ({reason}); climbing to {next}"),
            );
            record.command_id = Some(incident.command_id.clone());
            out.push(Output::Decision(record));
            incident.state = IncidentState::Failing;
            incident.step += 1;
            incident.step_attempts = 0;
            self.next_attempt(subject_key, subject, index, None, commands, out);
        } else {
            let tries = incident.attempt;
            self.escalate(
                subject_key,
                subject,
                index,
                format!("{action} failed ({reason}), and no attempt or ladder step is left after {tries} command{}", if tries == 1 { "" } else { "s" }),
                EscalationCause::Exhausted,
                commands,
                out,
            );
        }
    }

    /// Issues the incident's next command, at its current ladder step, unless the flap limit
    /// forbids it.
    fn next_attempt(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        reason: Option<String>,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        let now_ms = self.now_ms;
        let Some(rule) = self.rule(&subject.incidents[index].rule) else {
            let reason = "the rule is no longer loaded".to_owned();
            close_orphan(subject_key, subject, index, reason, commands, now_ms, out);
            return;
        };
        let step = subject.incidents[index].step;
        let action = step_action(rule, step).to_owned();
        let flap = self.flap(rule);
        let dry = match (self.modes.for_rule(&rule.decl.name), rule.decl.shadow) {
            (Mode::Paused, _) => {
                self.hold_while_paused(subject_key, subject, index, commands, out);
                return;
            }
            (Mode::DryRun, _) => Some("dry run"),
            (_, true) => Some("shadow rule"),
            (Mode::Active, false) => None,
        };
        if let Some(why) = dry {
            self.would_command(subject_key, subject, index, &action, why, reason, out);
            return;
        }
        if let Some(freeze) = self.frozen.clone() {
            self.hold_for_storm(subject_key, subject, index, &action, freeze, out);
            return;
        }
        if let Some(why) = self.disabled(rule) {
            let cause = EscalationCause::RuleDisabled;
            self.escalate(subject_key, subject, index, why, cause, commands, out);
            return;
        }
        if let Some(approval) = rule.decl.approval.as_ref().filter(|a| a.covers(&action)) {
            if subject.incidents[index].approved_step != Some(step) {
                let timeout_ms = approval.timeout_ms;
                self.await_approval(
                    subject_key,
                    subject,
                    index,
                    &action,
                    timeout_ms,
                    commands,
                    out,
                );
                return;
            }
        }
        if let Err(recent) = subject.admit(&action, now_ms, flap.max_attempts, flap.within_ms) {
            self.stats.flap_stops += 1;
            let reason = format!(
                "flapping: {recent} {action} commands on {subject_key} within {} ms already, the limit; automation stops here",
                flap.within_ms
            );
            let cause = EscalationCause::Flapping;
            self.escalate(subject_key, subject, index, reason, cause, commands, out);
            return;
        }
        let timeout_ms = step_timeout(rule, step, self.config);
        let incident = &mut subject.incidents[index];
        commands.subjects.remove(&incident.command_id);
        let target = incident.target.clone();
        let params = incident.params.clone();
        let reason = reason.unwrap_or_else(|| {
            format!(
                "attempt {} of {action} for {}",
                incident.step_attempts + 1,
                incident.id
            )
        });
        let issued = issue(
            incident,
            subject_key,
            Issue {
                target: &target,
                action: &action,
                params,
                reason,
                to: IncidentState::Remediating,
                timeout_ms,
                now_ms,
            },
            out,
        );
        self.stats.commands += 1;
        commands.track(issued, subject_key);
    }

    /// Asks a human to approve the next action: the incident waits, keyed by the id its
    /// command will have, until approved, denied, or the timeout escalates it.
    #[allow(clippy::too_many_arguments)]
    fn await_approval(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        action: &str,
        timeout_ms: i64,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        let now_ms = self.now_ms;
        let incident = &mut subject.incidents[index];
        if incident.attempt == 0 {
            out.push(Output::Decision(transition(
                now_ms,
                &incident.rule,
                subject_key,
                &incident.id,
                None,
                IncidentState::Failing,
                "rule failed".into(),
            )));
        }
        commands.subjects.remove(&incident.command_id);
        incident.command_id = command_id(&incident.id, incident.attempt + 1);
        incident.approval_until_ms = now_ms.saturating_add(timeout_ms);
        commands.watch(
            &incident.command_id,
            incident.approval_until_ms,
            DeadlineKind::Approval,
            subject_key,
        );
        let mut record = incident_transition(
            now_ms,
            subject_key,
            incident,
            IncidentState::AwaitingApproval,
            format!(
                "{action} on {} needs an operator's approval within {timeout_ms} ms (salve ctl approve {})",
                incident.target, incident.id
            )
        );
        record.command_id = Some(incident.command_id.clone());
        incident.state = IncidentState::AwaitingApproval;
        out.push(Output::Decision(record));
    }

    /// Holds an attempt that came due while its rule is paused: the incident backs off, and
    /// looks again after a resolution step, until the mode changes.
    fn hold_while_paused(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        let incident = &mut subject.incidents[index];
        let at_ms = self.now_ms.saturating_add(self.config.resolution_ms);
        incident.retry_at_ms = at_ms;
        commands.watch(
            &incident.command_id,
            at_ms,
            DeadlineKind::Retry,
            subject_key,
        );
        if incident.state != IncidentState::BackingOff {
            back_off_held(
                self.now_ms,
                subject_key,
                incident,
                "paused: the next attempt waits until the rule is resumed".to_owned(),
                out,
            );
        }
    }

    /// Holds an attempt that came due while a storm freezes the group: the incident backs
    /// off with no deadline, and the partition lets it go once the storm subsides.
    fn hold_for_storm(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        action: &str,
        freeze: storm::Freeze,
        out: &mut Vec<Output>,
    ) {
        let incident = &mut subject.incidents[index];
        back_off_held(
            self.now_ms,
            subject_key,
            incident,
            format!(
                "{}; {action} is held until the storm subsides",
                freeze.reason
            ),
            out,
        );
        self.held
            .push((freeze, Box::from(subject_key), incident.command_id.clone()));
    }

    /// Records the command the incident would get, sends nothing, and closes the incident: a
    /// dry run, or a shadow rule, must not escalate or retry what it never did.
    #[allow(clippy::too_many_arguments)]
    fn would_command(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        action: &str,
        why: &str,
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) {
        self.stats.would_commands += 1;
        let mut incident = subject.incidents.remove(index);
        incident.attempt += 1;
        let id = command_id(&incident.id, incident.attempt);
        let mut opened = transition(
            self.now_ms,
            &incident.rule,
            subject_key,
            &incident.id,
            None,
            IncidentState::Failing,
            "rule failed".into(),
        );
        opened.attempt = Some(incident.attempt);
        out.push(Output::Decision(opened));
        let params = serde_json::Value::Object(incident.params.clone());
        let mut record = Decision::new(
            DecisionKind::WouldCommand,
            self.now_ms,
            &incident.rule,
            subject_key,
            format!(
                "{why}: would send {action} to {} with params {params}{}",
                incident.target,
                reason.map(|r| format!(", because {r}")).unwrap_or_default()
            ),
        );
        record.incident = Some(incident.id.clone());
        record.attempt = Some(incident.attempt);
        record.command_id = Some(id.clone());
        out.push(Output::Decision(record));
        incident.command_id = id;
        subject.latch(Arc::clone(&incident.rule));
        out.push(Output::Decision(close_attempt(
            incident,
            subject_key,
            self.now_ms,
            IncidentState::Resolved,
            format!("{why}: nothing was sent"),
        )));
    }

    /// Why `rule` may no longer act, when its `disable_below` says its fixes fail too often.
    fn disabled(&self, rule: &salve_rules::Rule) -> Option<String> {
        let limit = rule.decl.disable_below?;
        let record = self.ledger.rules().get(&rule.decl.name)?;
        let (succeeded, failed) = record
            .actions
            .values()
            .fold((0, 0), |(s, f), a| (s + a.succeeded, f + a.failed));
        let finished = succeeded + failed;
        if finished < u64::from(limit.min_attempts) {
            return None;
        }
        let rate = succeeded as f64 / finished as f64;
        (rate < limit.success_rate).then(|| {
            format!(
                "rule {} is disabled: {succeeded} of its last {finished} attempts succeeded ({:.0}%), below its disable_below of {:.0}%; a human decides",
                rule.decl.name,
                rate * 100.0,
                limit.success_rate * 100.0
            )
        })
    }

    /// The flap limit for `rule`.
    fn flap(&self, rule: &salve_rules::Rule) -> salve_rules::Flap {
        rule.decl.flap.unwrap_or(salve_rules::Flap {
            max_attempts: self.config.flap_max_attempts,
            within_ms: self.config.flap_window_ms,
        })
    }

    /// Hands the incident to a human: it stays open, escalated, and publishes an escalation.
    #[allow(clippy::too_many_arguments)]
    fn escalate(
        &mut self,
        subject_key: &str,
        subject: &mut Subject,
        index: usize,
        reason: String,
        cause: EscalationCause,
        commands: &mut OpenCommands,
        out: &mut Vec<Output>,
    ) {
        self.stats.escalations += 1;
        let incident = &mut subject.incidents[index];
        commands.subjects.remove(&incident.command_id);
        if incident.attempt == 0 && incident.state == IncidentState::Failing {
            // Nothing was sent: the incident has no attempt to number.
            out.push(Output::Decision(transition(
                self.now_ms,
                &incident.rule,
                subject_key,
                &incident.id,
                None,
                IncidentState::Failing,
                "rule failed".into(),
            )));
        }
        hand_over(subject_key, incident, reason, cause, self.now_ms, out);
        if self.config.quarantine_expiry_ms > 0 {
            if incident.command_id.is_empty() {
                // Escalated before any command: give the quarantine a key of its own.
                incident.command_id = command_id(&incident.id, 0);
            }
            incident.quarantine_until_ms =
                self.now_ms.saturating_add(self.config.quarantine_expiry_ms);
            commands.watch(
                &incident.command_id,
                incident.quarantine_until_ms,
                DeadlineKind::Quarantine,
                subject_key,
            );
        }
    }
}

/// Moves an incident to `escalated`: its transition, and the escalation record for humans.
/// It stays open.
fn hand_over(
    subject_key: &str,
    incident: &mut Incident,
    reason: String,
    cause: EscalationCause,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    let record = incident_transition(
        now_ms,
        subject_key,
        incident,
        IncidentState::Escalated,
        reason.clone(),
    );
    out.push(Output::Decision(record));
    let escalation = Escalation {
        v: WIRE_VERSION,
        incident: incident.id.clone(),
        entity: subject_key.to_owned(),
        rule: incident.rule.to_string(),
        reason,
        cause,
        attempts: incident.attempt,
        ts: now_ms,
    };
    incident.unconfirmed_escalation = Some(escalation.clone());
    out.push(Output::Escalation(escalation));
    incident.state = IncidentState::Escalated;
}

/// Closes an incident whose rule is gone (reloaded away, or a restart with another pack):
/// it ends here rather than wait forever for a lifecycle no rule describes.
fn close_orphan(
    subject_key: &str,
    subject: &mut Subject,
    index: usize,
    reason: String,
    commands: &mut OpenCommands,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    let incident = subject.incidents.remove(index);
    commands.subjects.remove(&incident.command_id);
    out.push(Output::Decision(close_attempt(
        incident,
        subject_key,
        now_ms,
        IncidentState::Failed,
        reason,
    )));
}

/// The action of ladder step `step`: 0 is the rule's `action`.
fn step_action(rule: &salve_rules::Rule, step: usize) -> &str {
    match step.checked_sub(1) {
        None => &rule.decl.action,
        Some(i) => rule
            .decl
            .ladder
            .get(i)
            .map_or(&rule.decl.action, |s| &s.action),
    }
}

/// The action `incident` last commanded, if it commanded any: its revert while reverting,
/// else its ladder step's, or the step before when it has climbed but not yet acted.
fn latest_action<'r>(rule: &'r salve_rules::Rule, incident: &Incident) -> Option<&'r str> {
    if incident.attempt == 0 {
        return None;
    }
    if incident.state == IncidentState::Reverting {
        return rule.decl.revert.as_deref();
    }
    let step = if incident.step_attempts == 0 {
        incident.step.saturating_sub(1)
    } else {
        incident.step
    };
    Some(step_action(rule, step))
}

/// The ack timeout of ladder step `step`.
fn step_timeout(rule: &salve_rules::Rule, step: usize, config: &EngineConfig) -> i64 {
    step.checked_sub(1)
        .and_then(|i| rule.decl.ladder.get(i))
        .and_then(|s| s.ack_timeout_ms)
        .or(rule.decl.ack_timeout_ms)
        .unwrap_or(config.ack_timeout_ms)
}

/// The delay before retry `done + 1` of an action: exponential, capped, plus jitter drawn
/// from the incident id, so that a replay, or a restart, waits the same.
fn backoff_ms(retry: &salve_rules::Retry, done: u32, incident: &str) -> i64 {
    let exponent = i32::try_from(done.saturating_sub(1)).unwrap_or(i32::MAX);
    let base =
        (retry.backoff_ms as f64 * retry.factor.powi(exponent)).min(retry.max_backoff_ms as f64);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in incident.bytes().chain(done.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let unit = (hash >> 11) as f64 / (1u64 << 53) as f64;
    (base * (1.0 + retry.jitter * unit)).round() as i64
}

/// A command to issue for an incident.
struct Issue<'a> {
    /// The entity the command acts on (the failing one, unless the rule picks a target).
    target: &'a str,
    action: &'a str,
    params: serde_json::Map<String, serde_json::Value>,
    reason: String,
    /// The state the incident enters once the command is out.
    to: IncidentState,
    timeout_ms: i64,
    now_ms: i64,
}

/// What [`OpenCommands::track`] needs of an issued command.
struct Issued {
    id: String,
    deadline_ms: i64,
}

/// Starts the incident's next attempt: the command, and the transition that records it.
/// `subject_key` names the entity or group the incident is about.
fn issue(
    incident: &mut Incident,
    subject_key: &str,
    issue: Issue<'_>,
    out: &mut Vec<Output>,
) -> Issued {
    incident.attempt += 1;
    incident.step_attempts += 1;
    let id = command_id(&incident.id, incident.attempt);
    let deadline_ms = issue.now_ms.saturating_add(issue.timeout_ms);
    // An incident that waited for approval was opened when it started waiting.
    if incident.attempt == 1 && incident.approved_step.is_none() {
        let mut opened = transition(
            issue.now_ms,
            &incident.rule,
            subject_key,
            &incident.id,
            None,
            IncidentState::Failing,
            "rule failed".into(),
        );
        opened.attempt = Some(1);
        out.push(Output::Decision(opened));
    }
    let mut issued = incident_transition(
        issue.now_ms,
        subject_key,
        incident,
        issue.to,
        match (
            issue.target == subject_key,
            incident.state == IncidentState::AwaitingApproval,
        ) {
            // Leaving awaiting_approval: the history says who let it go.
            (true, true) => format!("{} issued, {}", issue.action, issue.reason),
            (false, true) => format!(
                "{} issued to {}, {}",
                issue.action, issue.target, issue.reason
            ),
            (true, false) => format!("{} issued", issue.action),
            (false, false) => format!("{} issued to {}", issue.action, issue.target),
        },
    );
    issued.command_id = Some(id.clone());
    out.push(Output::Command(Command {
        v: WIRE_VERSION,
        id: id.clone(),
        incident: incident.id.clone(),
        entity: issue.target.to_owned(),
        action: issue.action.to_owned(),
        params: issue.params.clone(),
        rule: incident.rule.to_string(),
        reason: issue.reason,
        attempt: incident.attempt,
        issued_at: issue.now_ms,
        expires_at: deadline_ms,
    }));
    out.push(Output::Decision(issued));
    incident.state = issue.to;
    incident.command_id = id.clone();
    incident.issued_at_ms = issue.now_ms;
    incident.ack_deadline_ms = deadline_ms;
    if incident.attempt == 1 {
        incident.target = issue.target.to_owned();
        incident.params = issue.params;
    }
    Issued { id, deadline_ms }
}

/// What one evaluation of a mitigated incident found.
struct Clear {
    cleared: bool,
    timeout_ms: i64,
    now_ms: i64,
    /// The entity's event time: the clock clear_for is measured on.
    entity_now: i64,
}

/// Times the clear condition of a mitigated incident, and issues the revert once it has held
/// for the rule's `clear_for`. The revert goes where the action went, with the same params.
fn revert_when_clear(
    rule: &salve_rules::Rule,
    subject_key: &str,
    incident: &mut Incident,
    Clear {
        cleared,
        timeout_ms,
        now_ms,
        entity_now,
    }: Clear,
    out: &mut Vec<Output>,
) -> Option<Issued> {
    let clear_for = rule.decl.clear_for_ms;
    if !cleared {
        incident.clear_since_ms = None;
        return None;
    }
    // Not seen clear for longer than clear_for (the entity fell silent): start over.
    let since = match incident.clear_since_ms {
        Some(since) if entity_now - incident.clear_last_ms <= clear_for => since,
        _ => entity_now,
    };
    incident.clear_since_ms = Some(since);
    incident.clear_last_ms = entity_now;
    let held = entity_now - since;
    if held < clear_for {
        return None;
    }
    let revert = rule.decl.revert.as_deref()?;
    let reason = format!(
        "clear for {held} ms (clear_for {clear_for} ms): undo {}",
        rule.decl.action
    );
    let target = incident.target.clone();
    let params = incident.params.clone();
    Some(issue(
        incident,
        subject_key,
        Issue {
            target: &target,
            action: revert,
            params,
            reason,
            to: IncidentState::Reverting,
            timeout_ms,
            now_ms,
        },
        out,
    ))
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rule_names)
            .field("partitions", &self.partitions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Refuses windows, as written in the rules' source, that the engine could never answer: the
/// same check a call makes at run time, made at load time with the call's file and line.
fn check_windows(rules: &RuleSet, config: &EngineConfig) -> Result<(), LoadErrors> {
    let mut errors = Vec::new();
    for rule in rules.rules() {
        for usage in rule.window_uses() {
            let Some(window_ms) = usage.window_ms else {
                continue;
            };
            let problem = if window_ms > config.max_window_ms {
                format!(
                    "{}: a window of {window_ms} ms exceeds engine.max_window ({} ms)",
                    usage.function, config.max_window_ms
                )
            } else if window_ms < config.resolution_ms {
                format!(
                    "{}: a window of {window_ms} ms is shorter than engine.resolution ({} ms), the width of one bucket",
                    usage.function, config.resolution_ms
                )
            } else {
                continue;
            };
            errors.push(salve_rules::LoadError {
                file: rule.file.clone(),
                line: usage.line,
                column: 0,
                message: problem,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LoadErrors(errors))
    }
}

/// Counts a failed rule call, and logs it at a rate that keeps a broken rule from flooding the
/// log: the 1st, 2nd, 4th, 8th... time.
fn rule_failed(stats: &mut Stats, rule: usize, error: &EvalError) {
    stats.rule_errors += 1;
    let budget = matches!(error, EvalError::BudgetExceeded { .. });
    if let Some(counters) = stats.rules.get_mut(rule) {
        counters.errors += 1;
        counters.budget_stops += u64::from(budget);
    }
    let count = if budget {
        stats.rule_budget_stops += 1;
        stats.rule_budget_stops
    } else {
        stats.rule_errors
    };
    if count.is_power_of_two() {
        tracing::warn!(occurrences = count, "{error}");
    }
}

/// Forgets the partition's entities idle for `ttl_ms` of event time, unless an incident of
/// theirs is open, and the groups no rule has judged for as long. A full pass, but only every
/// tenth of the TTL of event time, so its cost per event stays constant.
/// Subjects forgotten that had a changelog record are pushed to `forgotten`, for tombstones:
/// a compacted changelog would otherwise keep every entity that ever had an incident.
fn sweep_idle(state: &mut PartitionState, ttl_ms: i64, forgotten: &mut Vec<String>) -> u64 {
    let horizon = state.watermark_ms.saturating_sub(ttl_ms);
    let before = state.entities.len();
    let idle =
        |last_heard: i64, subject: &Subject| last_heard <= horizon && subject.incidents.is_empty();
    let none = InternedLabels::default();
    for (key, entity) in state
        .entities
        .extract_if(|_, entity| idle(entity.last_heard_ms, &entity.subject))
    {
        if !state.groups.is_empty() {
            state.groups.relabel(&key, entity.interned_labels(), &none);
        }
        if !entity.subject.is_durable_empty() {
            forgotten.push(key.to_string());
        }
    }
    for (key, group) in state
        .group_subjects
        .extract_if(|_, group| idle(group.last_heard_ms, &group.subject))
    {
        if !group.subject.is_durable_empty() {
            forgotten.push(key.into_string());
        }
    }
    state.swept_at_ms = state.watermark_ms;
    (before - state.entities.len()) as u64
}

fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    Arc::clone(names.get_or_insert_with(name, |name| Arc::from(name)))
}

/// A transition of `incident` from its current state to `to`, with its attempt number.
fn incident_transition(
    ts: i64,
    subject_key: &str,
    incident: &Incident,
    to: IncidentState,
    reason: String,
) -> Decision {
    let mut record = transition(
        ts,
        &incident.rule,
        subject_key,
        &incident.id,
        Some(incident.state),
        to,
        reason,
    );
    record.attempt = Some(incident.attempt);
    record
}

fn transition(
    ts: i64,
    rule: &str,
    entity: &str,
    incident: &str,
    from: Option<IncidentState>,
    to: IncidentState,
    reason: String,
) -> Decision {
    let mut record = Decision::new(DecisionKind::Transition, ts, rule, entity, reason);
    record.incident = Some(incident.to_owned());
    record.from = from;
    record.to = Some(to);
    record
}

/// A verdict record, with the window values the rule call noted in `frame` as its evidence.
fn verdict(
    frame: &SharedFrame,
    now_ms: i64,
    rule: &str,
    entity: &str,
    verdict: Verdict,
    reason: String,
) -> Decision {
    let mut record = Decision::new(DecisionKind::Verdict, now_ms, rule, entity, reason);
    record.verdict = Some(verdict);
    record.evidence = frame.borrow().evidence();
    record
}

/// The transition that closes an incident's current attempt.
fn close_attempt(
    incident: Incident,
    entity: &str,
    now_ms: i64,
    to: IncidentState,
    reason: String,
) -> Decision {
    let mut closed = incident_transition(now_ms, entity, &incident, to, reason);
    closed.command_id = Some(incident.command_id);
    closed
}

/// "count(process_exit, 60s) = 3": the evidence as one line for the command's `reason`.
fn describe_evidence(evidence: &[crate::wire::Evidence], fallback: &str) -> String {
    if evidence.is_empty() {
        return fallback.to_owned();
    }
    evidence
        .iter()
        .map(|e| {
            let value = e.value.map_or("no data".to_owned(), |v| format!("{v}"));
            match e.window_ms {
                Some(w) => format!(
                    "{}({}, {}s) = {}",
                    e.function,
                    e.series,
                    w as f64 / 1000.0,
                    value
                ),
                None => format!("{}({}) = {}", e.function, e.series, value),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
