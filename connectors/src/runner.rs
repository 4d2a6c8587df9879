//! The Kafka runner: consume telemetry in a group, drive the engine, publish its outputs, and
//! commit offsets only once everything they caused has been acknowledged by the broker.
//!
//! The loop is single-threaded: one engine, owned by the thread that runs it. Offsets are
//! committed every `kafka.commit_interval`, on shutdown, and for revoked partitions just
//! before a rebalance takes them away. Commands and escalations go out at once and are flushed
//! at each commit; decisions, changelog records and dead letters go through a batching
//! producer ([`crate::records`]), and a commit's offsets wait, without blocking the loop,
//! until every record sent before it is delivered. A delivery failure stops the runner without
//! committing, so the events are processed again after a restart (at-least-once). Commands
//! keep their ids across that, so actuators can dedup.
//!
//! Acks are read by a second consumer outside the group that follows every partition of the
//! acks topic, so an ack reaches the process that owns the incident whatever key the actuator
//! used. Acks are few; reading them all costs little.

use crate::config::{client_config, KafkaConfig, TopicsConfig};
use crate::control::{ControlInbox, RunnerShared};
use crate::dead_letter::{self, Source};
use crate::lock;
use crate::records::{
    self, AwaitingCommits, Offsets, RecordContext, RecordProducer, Sequenced, RECORD_LINGER_MS,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use salve_engine::{Engine, Output, PartitionId, RecordPosition, Stats};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
pub(crate) const ABORT: u8 = 2;

/// Messages the loop takes from the consumer's queue between two looks at the clock,
/// housekeeping and the commit timer; about 0.2 ms of work at full load.
const ROUND: usize = 64;

/// Asks a running [`run`] to stop.
#[derive(Debug, Default)]
pub struct Shutdown(AtomicU8);

impl Shutdown {
    /// Stop consuming, flush, commit, return.
    pub fn graceful(&self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, GRACEFUL, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Stop at once without committing, as a crash would. For tests of redelivery.
    pub fn abort(&self) {
        self.0.store(ABORT, Ordering::SeqCst);
    }

    /// Whether a stop was asked for, graceful or not: for loops beside the runner that share
    /// its shutdown, such as `salve demo`'s.
    pub fn requested(&self) -> bool {
        self.state() != RUNNING
    }

    /// Whether a stop at once ([`Shutdown::abort`]) was asked for.
    pub fn aborted(&self) -> bool {
        self.state() == ABORT
    }

    pub(crate) fn state(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A client could not be created or configured.
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    /// The broker did not take an output; offsets were not committed.
    #[error("{failures} output message(s) could not be delivered, so offsets were not committed (first error: {first})")]
    Delivery {
        /// How many.
        failures: u64,
        /// The first error.
        first: String,
    },
    /// The acks topic has no partitions.
    #[error("the acks topic {0} does not exist or has no partitions")]
    NoAcksTopic(String),
    /// A second stop request arrived while salve was waiting on the broker; nothing more was
    /// committed.
    #[error("aborted while waiting for the broker; uncommitted events will be processed again")]
    Aborted,
    /// The state of an assigned partition could not be read back.
    #[error(transparent)]
    Changelog(#[from] crate::changelog::ChangelogError),
}

/// What a run did, returned when it stops.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The engine's counters.
    pub engine: Stats,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Commands and decisions published.
    pub published: u64,
    /// Offset commits made.
    pub commits: u64,
    /// The run was abandoned by [`Shutdown::abort`]: nothing more was committed.
    pub aborted: bool,
}

#[derive(Default)]
pub(crate) struct DeliveryState {
    failures: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryState {
    /// Fails if any output could not be delivered.
    pub(crate) fn check(&self) -> Result<(), RunError> {
        let failures = self.failures.load(Ordering::SeqCst);
        if failures > 0 {
            let first = lock(&self.first_error).clone().unwrap_or_default();
            return Err(RunError::Delivery { failures, first });
        }
        Ok(())
    }

    /// Counts a message the broker did not take, keeping the first error for the report.
    pub(crate) fn failed(&self, error: impl Display, message: &impl Message) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        let mut first = lock(&self.first_error);
        first.get_or_insert_with(|| format!("{error} (topic {})", message.topic()));
    }
}

pub(crate) struct DeliveryContext(pub(crate) Arc<DeliveryState>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            self.0.failed(error, message);
        }
    }
}

pub(crate) type OutputProducer = ThreadedProducer<DeliveryContext>;

/// In a [`Pending`] slot: nothing processed since the slot's offset was last taken.
const NO_OFFSET: i64 = i64::MIN;

/// Offsets processed but not yet committed, one slot per partition read from.
///
/// The loop keeps a handle on the slot of the partition it read last (messages come in runs
/// per partition), so noting an offset is one store instead of a lock and a hash insert per
/// message. The revoke callback and the commit take the offsets out of the slots. They run on
/// the loop's own thread, inside `poll()` or between messages, so they always see the offset
/// of the last message processed.
#[derive(Default)]
struct Pending {
    slots: Mutex<HashMap<(u16, i32), Arc<AtomicI64>>>,
}

impl Pending {
    /// The slot of `partition`, made on first use.
    fn slot(&self, partition: (u16, i32)) -> Arc<AtomicI64> {
        Arc::clone(
            lock(&self.slots)
                .entry(partition)
                .or_insert_with(|| Arc::new(AtomicI64::new(NO_OFFSET))),
        )
    }

    /// Takes every offset noted since the last take.
    fn take_all(&self) -> Offsets {
        lock(&self.slots)
            .iter()
            .filter_map(|(&partition, slot)| {
                let offset = slot.swap(NO_OFFSET, Ordering::AcqRel);
                (offset != NO_OFFSET).then_some((partition, offset))
            })
            .collect()
    }

    /// Drops the slots of `partitions` and returns their offsets. The loop drops its handle
    /// on a slot whenever a rebalance happened, so it never notes an offset in a dropped slot.
    fn remove(&self, partitions: &[PartitionId]) -> Offsets {
        let mut slots = lock(&self.slots);
        partitions
            .iter()
            .filter_map(|p| {
                let key = (p.topic, p.partition);
                let offset = slots.remove(&key)?.swap(NO_OFFSET, Ordering::AcqRel);
                (offset != NO_OFFSET).then_some((key, offset))
            })
            .collect()
    }

    /// Puts back offsets whose commit failed, unless a later one was noted since.
    fn put_back(&self, offsets: Offsets) {
        let mut slots = lock(&self.slots);
        for (partition, offset) in offsets {
            slots
                .entry(partition)
                .or_insert_with(|| Arc::new(AtomicI64::new(NO_OFFSET)))
                .fetch_max(offset, Ordering::AcqRel);
        }
    }
}

struct GroupContext {
    /// Set on [`Shutdown::abort`]: a crash commits nothing, not even on the way out.
    abandoned: std::sync::atomic::AtomicBool,
    producer: Arc<OutputProducer>,
    records: Arc<RecordProducer>,
    delivery: Arc<DeliveryState>,
    telemetry: Vec<String>,
    pending: Arc<Pending>,
    /// Commits waiting for the records sent before them.
    awaiting: AwaitingCommits,
    revoked: Mutex<Vec<PartitionId>>,
    /// Set when `revoked` has entries, so the loop checks it with one load per message.
    revocations: std::sync::atomic::AtomicBool,
    /// Partitions assigned since the loop last looked, whose state it must restore.
    assigned: Mutex<Vec<PartitionId>>,
    /// A delivery failure seen while handing partitions over; the loop stops on it.
    fatal: Mutex<Option<RunError>>,
    commits: AtomicU64,
    /// Where consumer lag goes, when a control plane watches.
    shared: Option<Arc<RunnerShared>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut lag = std::collections::BTreeMap::new();
        for (topic, stats) in &statistics.topics {
            if !self.telemetry.contains(topic) {
                continue;
            }
            for (&partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal unassigned partition; a negative lag is unknown.
                if partition >= 0 && stats.consumer_lag >= 0 {
                    lag.insert((topic.clone(), partition), stats.consumer_lag);
                }
            }
        }
        shared.set_lag(lag);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = list.elements().into_iter().filter_map(|element| {
                let topic = self.telemetry.iter().position(|t| t == element.topic())?;
                Some(PartitionId {
                    topic: topic as u16,
                    partition: element.partition(),
                })
            });
            lock(&self.assigned).extend(assigned);
            self.revocations.store(true, Ordering::SeqCst);
            return;
        }
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        if self.abandoned.load(Ordering::SeqCst) {
            return;
        }
        let mut revoked = Vec::new();
        for element in list.elements() {
            if let Some(topic) = self.telemetry.iter().position(|t| t == element.topic()) {
                revoked.push(PartitionId {
                    topic: topic as u16,
                    partition: element.partition(),
                });
            }
        }
        // Hand the revoked partitions over with their work committed, so the next owner
        // does not process them again: what is noted, and what waits for its records. Flush
        // even with no offset to commit: a tick or an ack may have written changelog records
        // that the next owner restores from.
        let keys: Vec<(u16, i32)> = revoked.iter().map(|p| (p.topic, p.partition)).collect();
        let mut offsets = self.awaiting.take_partitions(&keys);
        records::merge(&mut offsets, self.pending.remove(&revoked));
        if !revoked.is_empty() {
            let flushed = flush_outputs(&*self.producer, &self.delivery)
                .and_then(|()| flush_outputs(&*self.records, &self.delivery));
            match flushed {
                Err(error) => {
                    tracing::error!("outputs not delivered; revoked partitions are not committed: {error}");
                    *lock(&self.fatal) = Some(error);
                }
                Ok(()) if offsets.is_empty() => {}
                Ok(()) => match commit_offsets(consumer, &self.telemetry, &offsets) {
                    Ok(()) => {
                        self.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => tracing::warn!(
                        "could not commit revoked partitions; their next owner processes the uncommitted events again: {error}"
                    ),
                },
            }
        }
        lock(&self.revoked).extend(revoked);
        self.revocations.store(true, Ordering::SeqCst);
    }
}

/// Waits until the broker has every output sent so far; fails if any delivery failed.
pub(crate) fn flush_outputs<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    delivery: &DeliveryState,
) -> Result<(), RunError> {
    // librdkafka's flush waits in 100 ms slices whatever happens meanwhile, which stalled
    // every commit by 100 ms while an output was in flight (benches/latency --flush-probe).
    // Waiting in 1 ms steps returns as soon as the last delivery report is in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            producer.flush(Duration::ZERO)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    delivery.check()
}

/// Commits `offsets`. Only call it after [`flush_outputs`] succeeded for them.
fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    telemetry: &[String],
    offsets: &Offsets,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for (&(topic, partition), &next) in offsets {
        list.add_partition_offset(
            &telemetry[usize::from(topic)],
            partition,
            Offset::Offset(next),
        )?;
    }
    consumer.commit(&list, CommitMode::Sync)
}

/// Marks the run abandoned when dropped, unless it ended cleanly: the consumer closes after
/// this guard drops, and its closing rebalance must not commit for a run that stopped on an
/// error or an abort.
struct CommitOnlyOnCleanStop<'a> {
    abandoned: &'a std::sync::atomic::AtomicBool,
    clean: bool,
}

impl Drop for CommitOnlyOnCleanStop<'_> {
    fn drop(&mut self) {
        if !self.clean {
            self.abandoned.store(true, Ordering::SeqCst);
        }
    }
}

pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Hands `record` to `producer`, waiting for room in its queue rather than dropping it,
/// unless told to stop at once.
fn send_waiting<C: ProducerContext + 'static, K: rdkafka::message::ToBytes + ?Sized>(
    producer: &ThreadedProducer<C>,
    shutdown: &Shutdown,
    record: BaseRecord<'_, K, [u8], C::DeliveryOpaque>,
) -> Result<(), RunError> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The background thread drains the queue as the broker takes messages.
                if shutdown.state() == ABORT {
                    return Err(RunError::Aborted);
                }
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

struct Publisher<'a> {
    /// Commands and escalations.
    producer: &'a OutputProducer,
    /// Decisions, changelog records and dead letters.
    records: &'a RecordProducer,
    sequenced: &'a Sequenced,
    topics: &'a TopicsConfig,
    shutdown: &'a Shutdown,
    shared: Option<&'a RunnerShared>,
    buffer: Vec<u8>,
    published: u64,
    dead_lettered: u64,
}

impl Publisher<'_> {
    /// Sends a command or an escalation.
    fn send<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        record: BaseRecord<'_, K, [u8]>,
    ) -> Result<(), RunError> {
        send_waiting(self.producer, self.shutdown, record)
    }

    /// Sends a decision, a changelog record or a dead letter, numbered for the commits that
    /// wait for it.
    fn send_record<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        record: BaseRecord<'_, K, [u8], ()>,
    ) -> Result<(), RunError> {
        let number = self.sequenced.sent();
        let numbered = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: number,
        };
        send_waiting(self.records, self.shutdown, numbered)
    }

    fn outputs(&mut self, outputs: &mut Vec<Output>) -> Result<(), RunError> {
        for output in outputs.drain(..) {
            self.buffer.clear();
            if let Output::Changelog(record) = &output {
                // To the changelog partition numbered like the source partition, so that
                // whoever is assigned that partition finds the state there.
                let key = record.key();
                let base = BaseRecord::<str, [u8]>::to(&self.topics.changelog)
                    .key(key.as_str())
                    .partition(record.partition.partition);
                let base = match &record.value {
                    Some(value) => base.payload(value.as_bytes()),
                    None => base,
                };
                self.send_record(base)?;
                if let Some(shared) = self.shared {
                    shared.count_out(&self.topics.changelog);
                }
                continue;
            }
            if let (Output::Decision(decision), Some(shared)) = (&output, self.shared) {
                if shared.watched() {
                    shared.broadcast(decision);
                }
            }
            let (topic, written) = match &output {
                Output::Command(command) => (
                    self.topics.for_action(&command.action),
                    serde_json::to_writer(&mut self.buffer, command),
                ),
                Output::Decision(decision) => (
                    self.topics.decisions.as_str(),
                    serde_json::to_writer(&mut self.buffer, decision),
                ),
                Output::Changelog(_) => continue,
                Output::Escalation(escalation) => (
                    self.topics.escalations.as_str(),
                    serde_json::to_writer(&mut self.buffer, escalation),
                ),
            };
            if let Err(error) = written {
                tracing::error!("cannot serialize an output, skipping it: {error}");
                continue;
            }
            let buffer = std::mem::take(&mut self.buffer);
            let record = BaseRecord::to(topic).key(output.key()).payload(&buffer[..]);
            let sent = match &output {
                Output::Decision(_) => self.send_record(record),
                _ => self.send(record),
            };
            self.buffer = buffer;
            sent?;
            self.published += 1;
            if let Some(shared) = self.shared {
                shared.count_out(topic);
            }
        }
        Ok(())
    }

    /// Sends `message` to the dead-letter topic, with why and where it came from.
    fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        code: &str,
        reason: &str,
    ) -> Result<(), RunError> {
        let payload = message.payload().unwrap_or_default();
        let key = message.key();
        let source = Source {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let (headers, kept): (OwnedHeaders, &[u8]) = dead_letter::record(
            payload,
            code,
            reason,
            source,
            self.topics.dead_letter_max_bytes,
        );
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topics.dead_letter)
            .payload(kept)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(&key[..key.len().min(dead_letter::MAX_KEY_BYTES)]);
        }
        self.send_record(record)?;
        self.dead_lettered += 1;
        if let Some(shared) = self.shared {
            shared.count_out(&self.topics.dead_letter);
        }
        Ok(())
    }
}

/// Runs the engine against Kafka until `shutdown` asks it to stop. Blocks the calling thread,
/// which must be the thread that built `engine`. `on_ready` runs once the clients are up.
pub fn run(
    engine: &mut Engine,
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    shutdown: &Shutdown,
    on_ready: impl FnOnce(),
) -> Result<RunReport, RunError> {
    run_with(engine, bootstrap, kafka, topics, shutdown, None, on_ready)
}

/// [`run`], steered by a control plane: jobs from `control`'s handle run on this thread
/// between messages, and the runner's counters and decisions are shared with it.
pub fn run_with(
    engine: &mut Engine,
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    shutdown: &Shutdown,
    control: Option<&ControlInbox>,
    on_ready: impl FnOnce(),
) -> Result<RunReport, RunError> {
    let shared = control.map(|c| &*c.shared);
    let delivery = Arc::new(DeliveryState::default());
    let producer_config = client_config(bootstrap, &producer_defaults(topics), &kafka.producer);
    let producer: Arc<OutputProducer> =
        Arc::new(producer_config.create_with_context(DeliveryContext(Arc::clone(&delivery)))?);
    let sequenced = Arc::new(Sequenced::default());
    let mut record_config = client_config(
        bootstrap,
        &record_producer_defaults(topics),
        &record_producer_overrides(kafka),
    );
    // Commits wait for each record's report, successes included.
    record_config.set("delivery.report.only.error", "false");
    let records: Arc<RecordProducer> =
        Arc::new(record_config.create_with_context(RecordContext {
            delivery: Arc::clone(&delivery),
            sequenced: Arc::clone(&sequenced),
        })?);

    let pending = Arc::new(Pending::default());
    let context = GroupContext {
        abandoned: std::sync::atomic::AtomicBool::new(false),
        producer: Arc::clone(&producer),
        records: Arc::clone(&records),
        delivery: Arc::clone(&delivery),
        telemetry: topics.telemetry.clone(),
        pending: Arc::clone(&pending),
        awaiting: AwaitingCommits::default(),
        revoked: Mutex::new(Vec::new()),
        revocations: std::sync::atomic::AtomicBool::new(false),
        assigned: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
        commits: AtomicU64::new(0),
        shared: control.map(|c| Arc::clone(&c.shared)),
    };
    let mut consumer_config = client_config(bootstrap, &consumer_defaults(), &kafka.consumer);
    if control.is_some() && !kafka.consumer.contains_key("statistics.interval.ms") {
        // For the consumer lag that metrics and status report.
        consumer_config.set("statistics.interval.ms", "5000");
    }
    consumer_config.set("group.id", &kafka.group_id);
    let consumer: BaseConsumer<GroupContext> = consumer_config.create_with_context(context)?;
    crate::changelog::check_partitions(&consumer, topics)?;
    let telemetry: Vec<&str> = topics.telemetry.iter().map(String::as_str).collect();
    consumer.subscribe(&telemetry)?;

    let mut guard = CommitOnlyOnCleanStop {
        abandoned: &consumer.context().abandoned,
        clean: false,
    };
    let acks = ack_follower(bootstrap, kafka, &topics.acks)?;
    on_ready();

    let mut publisher = Publisher {
        producer: &producer,
        records: &records,
        sequenced: &sequenced,
        topics,
        shutdown,
        shared,
        buffer: Vec::with_capacity(1024),
        published: 0,
        dead_lettered: 0,
    };
    let mut out = Vec::new();
    let commit_interval =
        Duration::from_millis(u64::try_from(kafka.commit_interval_ms).unwrap_or(1_000));
    let mut last_commit = Instant::now();
    let mut last_housekeeping = Instant::now();
    let mut last_shared = Instant::now();
    let mut commits = 0_u64;
    // Counted here and handed to the control plane now and then: no lock per message.
    let mut events_in = vec![0_u64; topics.telemetry.len()];
    let single_topic = topics.telemetry.len() == 1;
    // The pending-offset slot of the partition read last.
    let mut last_slot: Option<((u16, i32), Arc<AtomicI64>)> = None;

    loop {
        match shutdown.state() {
            RUNNING => {}
            ABORT => {
                let mut report = report(engine, &publisher, commits, &consumer);
                report.aborted = true;
                return Ok(report);
            }
            _ => break,
        }
        // A round: wait for a message, then take what is already queued without waiting, up
        // to ROUND messages. The clock, the shutdown flag, housekeeping and the commit timer
        // are looked at once per round instead of once per message: three clock reads per
        // message were ~5% of the runner's time (perf), and a round of ROUND messages lasts
        // well under a millisecond at full load.
        let mut polled = consumer.poll(Duration::from_millis(20));
        // Read after the wait, so the engine's processing time is not behind by it.
        let now = wall_ms();
        let mut handled = 0;
        loop {
            // A rebalance runs inside poll(): drop revoked partitions' state before
            // processing anything else, so no message lands in state that is about to be
            // thrown away. A plain load first: the swap is a full barrier, paid per message.
            if consumer.context().revocations.load(Ordering::Acquire)
                && consumer.context().revocations.swap(false, Ordering::SeqCst)
            {
                // The slot may be gone with a revoked partition.
                last_slot = None;
                apply_rebalance(engine, &consumer, bootstrap, kafka, topics, shared)?;
            }
            match polled {
                Some(Ok(message)) => {
                    // The consumer subscribes to the telemetry topics only; with one of them
                    // (the usual case) its name need not be read and compared per message.
                    let topic = if single_topic {
                        0
                    } else {
                        topics
                            .telemetry
                            .iter()
                            .position(|t| t == message.topic())
                            .unwrap_or(0) as u16
                    };
                    let partition = PartitionId {
                        topic,
                        partition: message.partition(),
                    };
                    let payload = message.payload().unwrap_or_default();
                    let record_ts = message.timestamp().to_millis();
                    let position = RecordPosition {
                        partition,
                        offset: message.offset(),
                    };
                    if let Some(count) = events_in.get_mut(usize::from(topic)) {
                        *count += 1;
                    }
                    if let Err(error) = engine.on_message(
                        position,
                        message.key(),
                        payload,
                        record_ts,
                        now,
                        &mut out,
                    ) {
                        publisher.dead_letter(&message, error.code(), &error.to_string())?;
                    }
                    if let (Some(shared), Some(ts)) = (shared, record_ts) {
                        for output in &out {
                            if matches!(output, Output::Command(_)) {
                                shared.record_latency(wall_ms() - ts);
                            }
                        }
                    }
                    publisher.outputs(&mut out)?;
                    let key = (topic, message.partition());
                    if last_slot.as_ref().is_none_or(|(k, _)| *k != key) {
                        last_slot = Some((key, pending.slot(key)));
                    }
                    if let Some((_, slot)) = &last_slot {
                        slot.store(message.offset() + 1, Ordering::Release);
                    }
                }
                Some(Err(error)) => tracing::warn!("consumer: {error}"),
                None => break,
            }
            handled += 1;
            if handled == ROUND {
                break;
            }
            polled = consumer.poll(Duration::ZERO);
        }

        let clock = Instant::now();
        if clock.duration_since(last_housekeeping) >= Duration::from_millis(5) {
            last_housekeeping = clock;
            let now = wall_ms();
            while let Some(result) = acks.poll(Duration::ZERO) {
                let message = match result {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!("acks consumer: {error}");
                        break;
                    }
                };
                let payload = message.payload().unwrap_or_default();
                if let Err(error) = engine.on_ack_message(payload, now, &mut out) {
                    publisher.dead_letter(&message, "invalid_ack", &error.to_string())?;
                }
            }
            engine.tick(now, &mut out);
            publisher.outputs(&mut out)?;
            if let Some(control) = control {
                control.run_pending(engine, now, &mut out);
                publisher.outputs(&mut out)?;
                if clock.duration_since(last_shared) >= Duration::from_millis(250) {
                    last_shared = clock;
                    control
                        .shared
                        .add_events_in(&topics.telemetry, &mut events_in);
                }
            }
        }

        let awaiting = &consumer.context().awaiting;
        if clock.duration_since(last_commit) >= commit_interval {
            last_commit = clock;
            // Commands and escalations first, at once: they linger 1 ms at most.
            flush_outputs(&*producer, &delivery)?;
            // Every escalation published so far is delivered: none need be published again
            // after a restart.
            engine.confirm_delivered(&mut out);
            publisher.outputs(&mut out)?;
            awaiting.push(pending.take_all(), sequenced.barrier());
        }
        if !awaiting.is_empty() {
            let delivered = awaiting.take_passed(&sequenced);
            commits += commit_delivered(&consumer, &delivery, topics, &pending, delivered)?;
        }
    }
    flush_outputs(&*producer, &delivery)?;
    // What that confirms is changelog records, for the record producer alone.
    engine.confirm_delivered(&mut out);
    publisher.outputs(&mut out)?;
    flush_outputs(&*records, &delivery)?;
    if shutdown.aborted() {
        // A second stop request while the records were flushing: commit nothing.
        let mut report = report(engine, &publisher, commits, &consumer);
        report.aborted = true;
        return Ok(report);
    }
    let mut offsets = consumer.context().awaiting.take_all();
    records::merge(&mut offsets, pending.take_all());
    commits += commit_delivered(&consumer, &delivery, topics, &pending, offsets)?;
    if let Some(control) = control {
        control
            .shared
            .add_events_in(&topics.telemetry, &mut events_in);
    }
    guard.clean = true;
    Ok(report(engine, &publisher, commits, &consumer))
}

/// After a rebalance, which runs inside `poll()`: drops revoked partitions' state, restores
/// assigned partitions' state from the changelog, and stops on a delivery failure met while
/// handing partitions over.
fn apply_rebalance(
    engine: &mut Engine,
    consumer: &BaseConsumer<GroupContext>,
    bootstrap: &str,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    shared: Option<&RunnerShared>,
) -> Result<(), RunError> {
    let revoked: Vec<PartitionId> = std::mem::take(&mut *lock(&consumer.context().revoked));
    for partition in revoked {
        engine.revoke(partition);
    }
    let assigned: Vec<PartitionId> = std::mem::take(&mut *lock(&consumer.context().assigned));
    if !assigned.is_empty() {
        crate::changelog::restore(engine, bootstrap, kafka, topics, &assigned)?;
    }
    if let (Some(shared), Ok(assignment)) = (shared, consumer.assignment()) {
        let mut owned: Vec<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        owned.sort();
        shared.set_assigned(owned);
    }
    if let Some(error) = lock(&consumer.context().fatal).take() {
        return Err(error);
    }
    Ok(())
}

/// Commits `offsets`, whose outputs are all delivered, unless a delivery failed: that is
/// fatal, and the run stops without committing. A commit failure (a rebalance in progress, a
/// coordinator moving) is not: the offsets go back into `pending` and the next commit carries
/// them.
fn commit_delivered(
    consumer: &BaseConsumer<GroupContext>,
    delivery: &DeliveryState,
    topics: &TopicsConfig,
    pending: &Pending,
    offsets: Offsets,
) -> Result<u64, RunError> {
    delivery.check()?;
    if offsets.is_empty() {
        return Ok(0);
    }
    match commit_offsets(consumer, &topics.telemetry, &offsets) {
        Ok(()) => Ok(1),
        Err(error) => {
            tracing::warn!("offset commit failed, will retry: {error}");
            pending.put_back(offsets);
            Ok(0)
        }
    }
}

fn report(
    engine: &Engine,
    publisher: &Publisher<'_>,
    commits: u64,
    consumer: &BaseConsumer<GroupContext>,
) -> RunReport {
    RunReport {
        engine: engine.stats().clone(),
        dead_lettered: publisher.dead_lettered,
        published: publisher.published,
        commits: commits + consumer.context().commits.load(Ordering::Relaxed),
        aborted: false,
    }
}

/// A consumer outside the group that follows every partition of the acks topic from its end.
///
/// The end offsets are resolved before `run` reports ready, so an ack produced after that is
/// never skipped. A topic that was just created may take a moment to show in metadata.
fn ack_follower(
    bootstrap: &str,
    kafka: &KafkaConfig,
    acks_topic: &str,
) -> Result<BaseConsumer, RunError> {
    let mut config = client_config(bootstrap, &consumer_defaults(), &kafka.consumer);
    // librdkafka needs a group id even to assign() partitions by hand. This consumer never
    // subscribes or commits, so it never joins that group or shares anything through it.
    config.set("group.id", format!("{}.ack-follower", kafka.group_id));
    let consumer: BaseConsumer = config.create()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let partitions = loop {
        let metadata = consumer.fetch_metadata(Some(acks_topic), Duration::from_secs(5))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == acks_topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !partitions.is_empty() {
            break partitions;
        }
        if Instant::now() >= deadline {
            return Err(RunError::NoAcksTopic(acks_topic.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) =
            consumer.fetch_watermarks(acks_topic, partition, Duration::from_secs(10))?;
        list.add_partition_offset(acks_topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// The consumer settings salve relies on. `[kafka.consumer]` may override the tuning ones;
/// validation refuses overrides of the ones that delivery depends on.
pub fn consumer_defaults() -> [(&'static str, String); 6] {
    [
        // Offsets are committed by the runner, after outputs are flushed.
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        // The default of 1 s idles the consumer whenever processing outpaces fetching.
        ("fetch.queue.backoff.ms", "10".into()),
        // librdkafka keeps one fetch in flight per broker, and leaves out of it the partitions
        // whose queue is full. When the fetch names only partitions with nothing new, the
        // broker holds it for the whole wait, and the partitions with a backlog wait with it:
        // catching up while other partitions are idle went in steps of the default 500 ms.
        ("fetch.wait.max.ms", "100".into()),
        // Incremental rebalancing: a member joining or leaving moves only the partitions
        // that change owner, and the others keep their state.
        ("partition.assignment.strategy", "cooperative-sticky".into()),
    ]
}

/// The record producer's settings: the same, but batching for longer.
fn record_producer_defaults(topics: &TopicsConfig) -> [(&'static str, String); 4] {
    producer_defaults(topics).map(|(key, value)| match key {
        "linger.ms" => (key, RECORD_LINGER_MS.to_owned()),
        _ => (key, value),
    })
}

/// `[kafka.producer]` but for its batching delay, then `[kafka.record_producer]` over it. A
/// `linger.ms` of 0 that tunes commands for latency would otherwise unbatch the records, which
/// nobody waits for.
fn record_producer_overrides(kafka: &KafkaConfig) -> std::collections::BTreeMap<String, String> {
    let mut overrides: std::collections::BTreeMap<String, String> = kafka
        .producer
        .iter()
        .filter(|(key, _)| crate::config::canonical(key) != crate::config::canonical("linger.ms"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    overrides.extend(kafka.record_producer.clone());
    overrides
}

/// The producer settings salve relies on; `[kafka.producer]` overrides them.
fn producer_defaults(topics: &TopicsConfig) -> [(&'static str, String); 4] {
    let max_message = (topics.dead_letter_max_bytes + 64 * 1024).max(1_048_576);
    [
        ("acks", "all".into()),
        // Retries neither duplicate nor reorder outputs, so the decision log stays in order.
        ("enable.idempotence", "true".into()),
        ("linger.ms", "1".into()),
        ("message.max.bytes", max_message.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_producer_takes_the_producer_settings_but_its_linger() {
        let mut kafka = KafkaConfig::default();
        kafka.producer.insert("linger.ms".into(), "0".into());
        kafka
            .producer
            .insert("queue.buffering.max.ms".into(), "0".into());
        kafka
            .producer
            .insert("compression.type".into(), "lz4".into());
        let overrides = record_producer_overrides(&kafka);
        assert_eq!(
            overrides.get("compression.type").map(String::as_str),
            Some("lz4")
        );
        assert_eq!(overrides.get("linger.ms"), None);
        assert_eq!(overrides.get("queue.buffering.max.ms"), None);
        kafka
            .record_producer
            .insert("linger.ms".into(), "20".into());
        let overrides = record_producer_overrides(&kafka);
        assert_eq!(overrides.get("linger.ms").map(String::as_str), Some("20"));
    }

    #[test]
    fn a_fetch_is_held_at_most_100_ms_unless_the_user_says_otherwise() {
        let none = std::collections::BTreeMap::new();
        let config = client_config("localhost:9092", &consumer_defaults(), &none);
        assert_eq!(config.get("fetch.wait.max.ms"), Some("100"));
        let mut own = std::collections::BTreeMap::new();
        own.insert("fetch.wait.max.ms".to_owned(), "500".to_owned());
        let config = client_config("localhost:9092", &consumer_defaults(), &own);
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
    }

    fn partition(partition: i32) -> PartitionId {
        PartitionId {
            topic: 0,
            partition,
        }
    }

    #[test]
    fn a_take_returns_the_last_offset_noted_per_partition_once() {
        let pending = Pending::default();
        let a = pending.slot((0, 1));
        a.store(5, Ordering::Release);
        a.store(9, Ordering::Release);
        pending.slot((0, 2)).store(3, Ordering::Release);
        let taken = pending.take_all();
        assert_eq!(taken, Offsets::from([((0, 1), 9), ((0, 2), 3)]));
        assert!(pending.take_all().is_empty(), "taken offsets are gone");
        // The loop's handle stays valid after a take.
        a.store(10, Ordering::Release);
        assert_eq!(pending.take_all(), Offsets::from([((0, 1), 10)]));
    }

    #[test]
    fn a_revoked_partition_hands_over_its_offset_and_a_new_assignment_starts_afresh() {
        let pending = Pending::default();
        pending.slot((0, 1)).store(7, Ordering::Release);
        pending.slot((0, 2)).store(4, Ordering::Release);
        let revoked = pending.remove(&[partition(1), partition(3)]);
        assert_eq!(revoked, Offsets::from([((0, 1), 7)]));
        assert_eq!(pending.take_all(), Offsets::from([((0, 2), 4)]));
        // Assigned again later: a new slot, with nothing noted yet.
        let again = pending.slot((0, 1));
        assert!(pending.take_all().is_empty());
        again.store(12, Ordering::Release);
        assert_eq!(pending.take_all(), Offsets::from([((0, 1), 12)]));
    }

    #[test]
    fn offsets_of_a_failed_commit_come_back_unless_a_later_one_was_noted() {
        let pending = Pending::default();
        let slot = pending.slot((0, 1));
        slot.store(5, Ordering::Release);
        pending.slot((0, 2)).store(8, Ordering::Release);
        let failed = pending.take_all();
        slot.store(6, Ordering::Release);
        pending.put_back(failed);
        assert_eq!(
            pending.take_all(),
            Offsets::from([((0, 1), 6), ((0, 2), 8)])
        );
    }
}
