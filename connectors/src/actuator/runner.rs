//! The actuator runner: consume commands in a group, run them on the actuator with bounded
//! concurrency, ack them, and commit offsets once their acks are on the broker.
//!
//! One thread owns the consumer and every decision; handlers run on a tokio runtime and report
//! back over a channel. The consumer context holds that state, because a rebalance (which
//! runs inside `poll`) must finish the commands of the partitions it takes away, ack them and
//! commit before their next owner reads them: otherwise that owner could start a command whose
//! dedup record is not written yet.

use super::dedup::{ensure_dedup_topic, DedupError, DedupLog};
use super::done::DoneRecord;
use super::offsets::{OffsetTracker, TopicPartition};
use super::{Actuator, ActuatorSettings, CommandContext, Outcome};
use crate::config::{client_config, InvalidConfig, KafkaConfig};
use crate::runner::{
    consumer_defaults, flush_outputs, wall_ms, DeliveryContext, DeliveryState, OutputProducer,
    RunError, Shutdown, ABORT, RUNNING,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use salve_engine::wire::{Ack, AckStatus, Command, WIRE_VERSION};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a rebalance waits for the commands of revoked partitions to finish. Past it the
/// partitions go anyway, and their next owner may run those commands again.
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(240);

/// Why the actuator runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// The settings are inconsistent.
    #[error("actuator settings: {0}")]
    Settings(#[from] InvalidConfig),
    /// A Kafka client could not be created or configured.
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    /// The dedup record could not be created or restored.
    #[error(transparent)]
    Dedup(#[from] DedupError),
    /// Acks or dedup records could not be delivered; offsets were not committed.
    #[error(transparent)]
    Delivery(#[from] RunError),
    /// The runtime for the handlers could not start.
    #[error("cannot start the handler runtime: {0}")]
    Runtime(std::io::Error),
}

/// Live counters of a running actuator, readable from any thread.
#[derive(Debug, Default)]
pub struct ActuatorStats {
    /// Command messages read from the command topics.
    pub consumed: AtomicU64,
    /// Commands handed to the actuator.
    pub started: AtomicU64,
    /// Commands the actuator reported `succeeded`.
    pub succeeded: AtomicU64,
    /// Commands the actuator reported `failed` (a panic counts here).
    pub failed: AtomicU64,
    /// Commands the actuator reported `rejected`.
    pub rejected: AtomicU64,
    /// Commands refused because their `expires_at` had passed.
    pub expired: AtomicU64,
    /// Commands already finished, answered with their first ack and not run again.
    pub duplicates: AtomicU64,
    /// Finished commands read from the dedup topic at start, and still remembered.
    pub restored: AtomicU64,
    /// Messages that are not a command this build can read.
    pub invalid: AtomicU64,
    /// Offset commits made.
    pub commits: AtomicU64,
    /// Commands running now.
    pub in_flight: AtomicU64,
    /// Commands read and not started yet.
    pub waiting: AtomicU64,
}

/// What an actuator run did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActuatorReport {
    /// Command messages read.
    pub consumed: u64,
    /// Commands handed to the actuator.
    pub started: u64,
    /// Outcomes `succeeded`.
    pub succeeded: u64,
    /// Outcomes `failed`.
    pub failed: u64,
    /// Outcomes `rejected`.
    pub rejected: u64,
    /// Commands refused as expired.
    pub expired: u64,
    /// Commands answered from the dedup record.
    pub duplicates: u64,
    /// Finished commands restored from the dedup topic at start.
    pub restored: u64,
    /// Unreadable messages.
    pub invalid: u64,
    /// Offset commits made.
    pub commits: u64,
    /// The run was abandoned by [`Shutdown::abort`]: nothing more was committed.
    pub aborted: bool,
}

impl ActuatorStats {
    /// A snapshot of the counters.
    pub fn report(&self) -> ActuatorReport {
        let read = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        ActuatorReport {
            consumed: read(&self.consumed),
            started: read(&self.started),
            succeeded: read(&self.succeeded),
            failed: read(&self.failed),
            rejected: read(&self.rejected),
            expired: read(&self.expired),
            duplicates: read(&self.duplicates),
            restored: read(&self.restored),
            invalid: read(&self.invalid),
            commits: read(&self.commits),
            aborted: false,
        }
    }
}

/// A command read from Kafka and not finished.
struct Received {
    command: Command,
    topic: String,
    partition: i32,
    offset: i64,
}

/// A command the actuator is working on.
struct Running {
    entity: String,
    expires_at: i64,
    topic: String,
    partition: i32,
    offset: i64,
}

/// A handler's report.
struct Finished {
    id: String,
    outcome: Outcome,
}

/// A message that is not a command this build can act on.
struct Unreadable {
    id: Option<String>,
    entity: Option<String>,
    reason: String,
}

struct State<A: Actuator> {
    actuator: Arc<A>,
    settings: ActuatorSettings,
    /// Where handlers run. The runtime itself stays with [`run_actuator`], which shuts it down
    /// when the run ends.
    handlers: tokio::runtime::Handle,
    producer: OutputProducer,
    delivery: Arc<DeliveryState>,
    dedup: DedupLog,
    offsets: OffsetTracker,
    waiting: VecDeque<Received>,
    running: HashMap<String, Running>,
    /// Entities with a command running: their next command waits, to keep their order.
    busy: HashSet<String>,
    finished_tx: mpsc::Sender<Finished>,
    finished_rx: mpsc::Receiver<Finished>,
    stats: Arc<ActuatorStats>,
    /// An error met inside a rebalance callback; the loop stops on it.
    fatal: Option<ActuatorError>,
}

struct ActuatorContext<A: Actuator> {
    state: Mutex<State<A>>,
    /// Set when the run ends on an error or an abort: closing the consumer then commits nothing.
    abandoned: AtomicBool,
}

impl<A: Actuator> ClientContext for ActuatorContext<A> {}

impl<A: Actuator> ConsumerContext for ActuatorContext<A> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        if self.abandoned.load(Ordering::SeqCst) {
            return;
        }
        let revoked: HashSet<TopicPartition> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut state = crate::lock(&self.state);
        if let Err(error) = state.hand_over(consumer, &revoked) {
            tracing::error!("could not hand revoked partitions over: {error}");
            state.fatal.get_or_insert(error);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Assign(_)) {
            return;
        }
        // Commands of new partitions may have been finished by their previous owner: learn
        // of that before acting on any of them.
        let mut state = crate::lock(&self.state);
        if let Err(error) = state.dedup.catch_up(wall_ms()) {
            state.fatal.get_or_insert(error.into());
        }
    }
}

impl<A: Actuator> State<A> {
    fn refresh_gauges(&self) {
        self.stats
            .in_flight
            .store(self.running.len() as u64, Ordering::SeqCst);
        self.stats
            .waiting
            .store(self.waiting.len() as u64, Ordering::SeqCst);
    }

    /// Takes a message off the command topic.
    fn accept(&mut self, message: &BorrowedMessage<'_>) -> Result<(), ActuatorError> {
        self.stats.consumed.fetch_add(1, Ordering::SeqCst);
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        self.offsets.start(topic, partition, offset);
        match decode(message.payload().unwrap_or_default()) {
            Ok(command) => self.waiting.push_back(Received {
                command,
                topic: topic.to_owned(),
                partition,
                offset,
            }),
            Err(unreadable) => {
                self.stats.invalid.fetch_add(1, Ordering::SeqCst);
                match unreadable.id {
                    Some(id) => {
                        let ack = self.ack(
                            &id,
                            AckStatus::Rejected,
                            format!("invalid command: {}", unreadable.reason),
                        );
                        let key = unreadable.entity.unwrap_or(id);
                        self.send_ack(&key, &ack)?;
                    }
                    None => tracing::warn!(
                        "skipping a message at {topic}:{partition}:{offset} that is not a command and has no id to reject: {}",
                        unreadable.reason
                    ),
                }
                self.offsets.finish(topic, partition, offset);
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    /// Starts waiting commands, oldest first, while there is room and their entity is free.
    fn dispatch(&mut self) -> Result<(), ActuatorError> {
        let mut index = 0;
        while index < self.waiting.len() && self.running.len() < self.settings.max_in_flight {
            if self.busy.contains(&self.waiting[index].command.entity) {
                index += 1;
                continue;
            }
            if let Some(received) = self.waiting.remove(index) {
                self.begin(received)?;
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    fn begin(&mut self, received: Received) -> Result<(), ActuatorError> {
        let now = wall_ms();
        let Received {
            command,
            topic,
            partition,
            offset,
        } = received;
        if let Some(first) = self.dedup.lookup(&command.id).cloned() {
            // Done before, maybe by another instance or before a crash: say so again, do not
            // act again.
            self.stats.duplicates.fetch_add(1, Ordering::SeqCst);
            self.send_ack(&command.entity, &first)?;
            self.offsets.finish(&topic, partition, offset);
            return Ok(());
        }
        if now > command.expires_at {
            self.stats.expired.fetch_add(1, Ordering::SeqCst);
            let ack = self.ack(
                &command.id,
                AckStatus::Rejected,
                format!(
                    "expired: expires_at {} is {} ms before the actuator could start it",
                    command.expires_at,
                    now - command.expires_at
                ),
            );
            self.send_ack(&command.entity, &ack)?;
            self.offsets.finish(&topic, partition, offset);
            return Ok(());
        }
        let received = self.ack(&command.id, AckStatus::Received, String::new());
        self.send_ack(&command.entity, &received)?;
        self.stats.started.fetch_add(1, Ordering::SeqCst);
        let context = CommandContext {
            actuator: self.settings.name.clone(),
            topic: topic.clone(),
            partition,
            offset,
            started_at: now,
        };
        self.busy.insert(command.entity.clone());
        self.running.insert(
            command.id.clone(),
            Running {
                entity: command.entity.clone(),
                expires_at: command.expires_at,
                topic,
                partition,
                offset,
            },
        );
        let actuator = Arc::clone(&self.actuator);
        let report = self.finished_tx.clone();
        self.handlers.spawn(async move {
            let id = command.id.clone();
            // A separate task, so that a panicking handler is reported as a failure.
            let handled =
                tokio::spawn(async move { actuator.handle(&command, &context).await }).await;
            let outcome = handled.unwrap_or_else(|error| {
                Outcome::Failed(format!("the actuator's handler panicked: {error}"))
            });
            // The runner may be gone (aborted); then there is no one to tell.
            let _ = report.send(Finished { id, outcome });
        });
        Ok(())
    }

    /// Records and acks a handler's outcome.
    fn complete(&mut self, finished: Finished) -> Result<(), ActuatorError> {
        let Some(running) = self.running.remove(&finished.id) else {
            return Ok(());
        };
        self.busy.remove(&running.entity);
        let counter = match finished.outcome {
            Outcome::Succeeded(_) => &self.stats.succeeded,
            Outcome::Failed(_) => &self.stats.failed,
            Outcome::Rejected(_) => &self.stats.rejected,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let ack = self.ack(
            &finished.id,
            finished.outcome.status(),
            finished.outcome.detail().to_owned(),
        );
        let record = DoneRecord {
            v: WIRE_VERSION,
            expires_at: running.expires_at,
            ack: ack.clone(),
        };
        // The record goes first: both are flushed before the offset is committed, and a
        // record without its ack is answered with that ack when the command comes again.
        let payload = serde_json::to_vec(&record).unwrap_or_default();
        send(
            &self.producer,
            BaseRecord::to(&self.settings.dedup_topic)
                .key(finished.id.as_str())
                .payload(&payload[..]),
        )?;
        self.dedup.remember(finished.id, record);
        self.send_ack(&running.entity, &ack)?;
        self.offsets
            .finish(&running.topic, running.partition, running.offset);
        self.refresh_gauges();
        Ok(())
    }

    /// Gives up on the commands still running when a graceful stop has waited `patience`:
    /// each is acked `failed` and recorded as finished, like any outcome, so that its offset
    /// can be committed and a redelivery is answered with that ack instead of acting again
    /// after salve has counted the attempt failed. A handler that reports later is ignored.
    fn abandon_running(&mut self, patience: Duration) -> Result<(), ActuatorError> {
        // An outcome already reported is the command's real one, not an abandonment.
        self.drain_finished()?;
        let mut ids: Vec<String> = self.running.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            tracing::warn!(
                command = id,
                "abandoned: still running when the stop gave up"
            );
            let outcome = Outcome::Failed(format!(
                "abandoned: the actuator was stopping and the action had not finished after {patience:?}; it may have acted in part"
            ));
            self.complete(Finished { id, outcome })?;
        }
        Ok(())
    }

    /// Takes in every outcome reported so far.
    fn drain_finished(&mut self) -> Result<(), ActuatorError> {
        while let Ok(finished) = self.finished_rx.try_recv() {
            self.complete(finished)?;
        }
        Ok(())
    }

    fn ack(&self, id: &str, status: AckStatus, detail: String) -> Ack {
        Ack {
            v: Some(WIRE_VERSION),
            command_id: id.to_owned(),
            status,
            detail: (!detail.is_empty()).then_some(detail),
            ts: Some(wall_ms()),
            actuator: Some(self.settings.name.clone()),
        }
    }

    fn send_ack(&self, key: &str, ack: &Ack) -> Result<(), ActuatorError> {
        let payload = serde_json::to_vec(ack).unwrap_or_default();
        send(
            &self.producer,
            BaseRecord::to(&self.settings.acks_topic)
                .key(key)
                .payload(&payload[..]),
        )
    }

    /// Tombstones for forgotten records, so that compaction drops them from the topic.
    fn expire_records(&mut self) -> Result<(), ActuatorError> {
        for id in self.dedup.expire(wall_ms()) {
            let record: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(&self.settings.dedup_topic).key(id.as_str());
            send(&self.producer, record)?;
        }
        Ok(())
    }

    /// Flushes acks and records, then commits what follows from them, for the partitions that
    /// `include` accepts. A delivery failure is fatal; a failed commit is retried next time.
    fn commit(
        &mut self,
        consumer: &BaseConsumer<impl ConsumerContext>,
        include: impl Fn(&TopicPartition) -> bool,
    ) -> Result<(), ActuatorError> {
        flush_outputs(&self.producer, &self.delivery)?;
        let points = self.offsets.committable(include);
        if points.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(points.len());
        for ((topic, partition), offset) in &points {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                self.offsets.mark_committed(&points);
                self.stats.commits.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => tracing::warn!("offset commit failed, will retry: {error}"),
        }
        Ok(())
    }

    /// Finishes the revoked partitions' running commands and commits them, so that their next
    /// owner neither loses nor repeats them. Their waiting commands are left to that owner.
    fn hand_over(
        &mut self,
        consumer: &BaseConsumer<impl ConsumerContext>,
        revoked: &HashSet<TopicPartition>,
    ) -> Result<(), ActuatorError> {
        self.waiting
            .retain(|r| !revoked.contains(&(r.topic.clone(), r.partition)));
        let deadline = Instant::now() + HAND_OVER_PATIENCE;
        while self
            .running
            .values()
            .any(|r| revoked.contains(&(r.topic.clone(), r.partition)))
        {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "commands of revoked partitions still running after {HAND_OVER_PATIENCE:?}; their next owner may run them again"
                );
                break;
            }
            if let Ok(finished) = self.finished_rx.recv_timeout(Duration::from_millis(50)) {
                self.complete(finished)?;
            }
        }
        self.commit(consumer, |tp| revoked.contains(tp))?;
        for tp in revoked {
            self.offsets.forget(tp);
        }
        self.refresh_gauges();
        Ok(())
    }
}

/// Sends `record`, waiting for room when the producer's queue is full.
fn send(producer: &OutputProducer, record: BaseRecord<'_, str, [u8]>) -> Result<(), ActuatorError> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

/// Reads a command; what cannot be read is rejected when it has an id to reject.
fn decode(payload: &[u8]) -> Result<Command, Unreadable> {
    let unreadable = |reason: String| {
        let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
        let field = |name: &str| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Unreadable {
            id: field("id"),
            entity: field("entity"),
            reason,
        }
    };
    let command: Command =
        serde_json::from_slice(payload).map_err(|e| unreadable(e.to_string()))?;
    if command.v != WIRE_VERSION {
        return Err(unreadable(format!(
            "version {} is not supported; this actuator reads version {WIRE_VERSION}",
            command.v
        )));
    }
    if command.id.is_empty() {
        return Err(unreadable("field `id` is empty".into()));
    }
    Ok(command)
}

/// The producer settings acks rely on.
fn producer_defaults() -> [(&'static str, String); 3] {
    [
        ("acks", "all".into()),
        // Retries neither duplicate nor reorder acks: `received` stays before the outcome.
        ("enable.idempotence", "true".into()),
        ("linger.ms", "1".into()),
    ]
}

/// Runs `actuator` on the command topics in `settings` until `shutdown` asks it to stop.
/// Blocks the calling thread. `on_ready` runs once the dedup record is restored and the
/// consumer is subscribed. `stats` is updated as the run goes.
///
/// A graceful stop takes no new command, lets the running ones finish, acks them, commits and
/// returns. An abort returns at once and commits nothing, as a crash would.
pub fn run_actuator<A: Actuator>(
    actuator: Arc<A>,
    bootstrap: &str,
    kafka: &KafkaConfig,
    settings: &ActuatorSettings,
    shutdown: &Shutdown,
    stats: Arc<ActuatorStats>,
    on_ready: impl FnOnce(),
) -> Result<ActuatorReport, ActuatorError> {
    settings.validate()?;
    if settings.create_dedup_topic {
        ensure_dedup_topic(
            bootstrap,
            kafka,
            &settings.dedup_topic,
            settings.dedup_partitions,
            settings.dedup_replication,
        )?;
    }
    let mut dedup = DedupLog::open(
        bootstrap,
        kafka,
        &settings.dedup_topic,
        &settings.group_id,
        settings.dedup_retention_ms,
    )?;
    dedup.catch_up(wall_ms())?;
    stats.restored.store(dedup.len() as u64, Ordering::SeqCst);
    tracing::info!(
        actuator = settings.name,
        remembered = dedup.len(),
        "dedup record restored"
    );

    let delivery = Arc::new(DeliveryState::default());
    let producer: OutputProducer = client_config(bootstrap, &producer_defaults(), &kafka.producer)
        .create_with_context(DeliveryContext(Arc::clone(&delivery)))?;
    let handlers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.max_in_flight.clamp(1, 4))
        .thread_name(format!("actuator-{}", settings.name))
        .enable_all()
        .build()
        .map_err(ActuatorError::Runtime)?;
    let (finished_tx, finished_rx) = mpsc::channel();
    let state = State {
        actuator,
        settings: settings.clone(),
        handlers: handlers.handle().clone(),
        producer,
        delivery,
        dedup,
        offsets: OffsetTracker::default(),
        waiting: VecDeque::new(),
        running: HashMap::new(),
        busy: HashSet::new(),
        finished_tx,
        finished_rx,
        stats: Arc::clone(&stats),
        fatal: None,
    };
    let context = ActuatorContext {
        state: Mutex::new(state),
        abandoned: AtomicBool::new(false),
    };
    let mut consumer_config = client_config(bootstrap, &consumer_defaults(), &kafka.consumer);
    consumer_config.set("group.id", &settings.group_id);
    let consumer: BaseConsumer<ActuatorContext<A>> =
        consumer_config.create_with_context(context)?;
    let topics: Vec<&str> = settings.command_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    on_ready();

    let result = drive(&consumer, settings, shutdown);
    // Dropping the runtime would wait for every handler to yield; one that blocks its thread,
    // or that a stop gave up on, must not keep the runner from returning.
    handlers.shutdown_background();
    let clean = matches!(result, Ok(false));
    if !clean {
        // The consumer closes as this function returns; its closing rebalance must not commit
        // for a run that crashed or was aborted.
        consumer.context().abandoned.store(true, Ordering::SeqCst);
    }
    let aborted = result?;
    let mut report = stats.report();
    report.aborted = aborted;
    Ok(report)
}

/// The loop. Returns `true` when the run was aborted.
fn drive<A: Actuator>(
    consumer: &BaseConsumer<ActuatorContext<A>>,
    settings: &ActuatorSettings,
    shutdown: &Shutdown,
) -> Result<bool, ActuatorError> {
    let lock = || crate::lock(&consumer.context().state);
    let commit_interval = Duration::from_millis(settings.commit_interval_ms);
    let mut last_commit = Instant::now();
    loop {
        match shutdown.state() {
            RUNNING => {}
            ABORT => return Ok(true),
            _ => break,
        }
        let backlog_full = lock().waiting.len() >= settings.max_waiting;
        if backlog_full {
            // Stop reading until running commands make room; they report over the channel.
            let mut state = lock();
            if let Ok(finished) = state.finished_rx.recv_timeout(Duration::from_millis(20)) {
                state.complete(finished)?;
            }
        } else {
            // No lock across poll: a rebalance inside it takes the lock.
            let polled = consumer.poll(Duration::from_millis(20));
            let mut state = lock();
            if let Some(error) = state.fatal.take() {
                return Err(error);
            }
            match polled {
                Some(Ok(message)) => state.accept(&message)?,
                Some(Err(error)) => tracing::warn!("actuator consumer: {error}"),
                None => {}
            }
        }
        let mut state = lock();
        state.drain_finished()?;
        state.dedup.follow(wall_ms());
        // Checked after taking in outcomes: a slot freed after a stop request starts nothing.
        if shutdown.state() == RUNNING {
            state.dispatch()?;
        }
        if last_commit.elapsed() >= commit_interval {
            last_commit = Instant::now();
            state.expire_records()?;
            state.commit(consumer, |_| true)?;
        }
    }

    // Graceful stop: take nothing new, finish what runs, ack it, commit.
    let patience = Duration::from_millis(settings.stop_patience_ms);
    let deadline = Instant::now() + patience;
    let mut state = lock();
    state.waiting.clear();
    state.refresh_gauges();
    while !state.running.is_empty() {
        if shutdown.state() == ABORT {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            state.abandon_running(patience)?;
            break;
        }
        if let Ok(finished) = state.finished_rx.recv_timeout(Duration::from_millis(50)) {
            state.complete(finished)?;
        }
    }
    state.commit(consumer, |_| true)?;
    Ok(false)
}

/// [`decode`] for unit tests: the command, or (id, entity, reason) of what was unreadable.
#[cfg(test)]
pub(crate) fn decode_for_tests(
    payload: &[u8],
) -> Result<Command, (Option<String>, Option<String>, String)> {
    decode(payload).map_err(|u| (u.id, u.entity, u.reason))
}
