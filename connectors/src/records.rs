//! The producer of what nobody waits for: decisions, changelog records and dead letters.
//!
//! Commands and escalations go out at once, through the runner's own producer. The records
//! here go through a second producer that batches them (`linger.ms` 100 by default, as Kafka
//! Streams' producer does): with one producer at 1 ms, nearly every record landed alone in an
//! empty partition queue and woke librdkafka's broker thread, and on a two-core machine that
//! thread competes with the runner and the fetcher for a core.
//!
//! A commit must still wait until every record that its events caused is delivered, but not
//! for the linger: librdkafka lifts the linger only while `rd_kafka_flush` runs, and
//! rust-rdkafka calls it with a zero timeout, polling 100 ms at a time in between, so the
//! broker thread usually wakes after the flag is gone. So each record carries a sequence
//! number, a commit
//! notes the last number sent before it ([`Sequenced::barrier`]), and the runner commits its
//! offsets once no record up to that number is outstanding, while it goes on processing.

use crate::lock;
use crate::runner::DeliveryState;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The producer's batching delay, unless `[kafka.record_producer]` sets `linger.ms`.
pub(crate) const RECORD_LINGER_MS: &str = "100";

/// Records handed to the producer and not yet reported delivered or failed, by number.
#[derive(Debug, Default)]
pub(crate) struct Sequenced {
    state: Mutex<SequencedState>,
}

#[derive(Debug, Default)]
struct SequencedState {
    last_sent: usize,
    outstanding: BTreeSet<usize>,
}

impl Sequenced {
    /// Numbers the next record and counts it outstanding until its delivery report.
    pub(crate) fn sent(&self) -> usize {
        let mut state = lock(&self.state);
        state.last_sent += 1;
        let number = state.last_sent;
        state.outstanding.insert(number);
        number
    }

    /// The record's delivery was reported, whether it succeeded or failed (failures are
    /// counted in [`DeliveryState`], and stop the run at the next commit).
    pub(crate) fn reported(&self, number: usize) {
        lock(&self.state).outstanding.remove(&number);
    }

    /// The number of the last record sent so far: a commit taken now waits for it.
    pub(crate) fn barrier(&self) -> usize {
        lock(&self.state).last_sent
    }

    /// Whether every record up to `barrier` has been reported.
    pub(crate) fn passed(&self, barrier: usize) -> bool {
        lock(&self.state)
            .outstanding
            .first()
            .is_none_or(|&oldest| oldest > barrier)
    }
}

/// Counts delivery failures like the runner's producer, and reports each record's number.
pub(crate) struct RecordContext {
    pub(crate) delivery: Arc<DeliveryState>,
    pub(crate) sequenced: Arc<Sequenced>,
}

impl ClientContext for RecordContext {}

impl ProducerContext for RecordContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        if let Err((error, message)) = result {
            self.delivery.failed(error, message);
        }
        self.sequenced.reported(number);
    }
}

/// The record producer.
pub(crate) type RecordProducer = ThreadedProducer<RecordContext>;

/// Offsets to commit, by (telemetry topic index, partition): the next offset to read.
pub(crate) type Offsets = HashMap<(u16, i32), i64>;

/// Offsets taken for a commit, each waiting for the records sent before it.
#[derive(Debug, Default)]
pub(crate) struct AwaitingCommits {
    queue: Mutex<VecDeque<(Offsets, usize)>>,
}

impl AwaitingCommits {
    /// Queues `offsets` until every record up to `barrier` is delivered.
    pub(crate) fn push(&self, offsets: Offsets, barrier: usize) {
        if !offsets.is_empty() {
            lock(&self.queue).push_back((offsets, barrier));
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    /// Takes the offsets of every commit whose records are all delivered, merged (a later
    /// offset of a partition wins). Barriers only grow along the queue, so it stops at the
    /// first that has not passed.
    pub(crate) fn take_passed(&self, sequenced: &Sequenced) -> Offsets {
        let mut queue = lock(&self.queue);
        let mut merged = Offsets::new();
        while let Some((_, barrier)) = queue.front() {
            if !sequenced.passed(*barrier) {
                break;
            }
            if let Some((offsets, _)) = queue.pop_front() {
                merge(&mut merged, offsets);
            }
        }
        merged
    }

    /// Takes every queued offset of `partitions`, for a hand-over: it commits them only
    /// after flushing every record.
    pub(crate) fn take_partitions(&self, partitions: &[(u16, i32)]) -> Offsets {
        let mut taken = Offsets::new();
        for (offsets, _) in lock(&self.queue).iter_mut() {
            for partition in partitions {
                if let Some(offset) = offsets.remove(partition) {
                    merge(&mut taken, Offsets::from([(*partition, offset)]));
                }
            }
        }
        taken
    }

    /// Takes everything queued, for a stop that has flushed every record.
    pub(crate) fn take_all(&self) -> Offsets {
        let mut merged = Offsets::new();
        for (offsets, _) in lock(&self.queue).drain(..) {
            merge(&mut merged, offsets);
        }
        merged
    }
}

/// Adds `offsets` to `into`, keeping the later offset of each partition.
pub(crate) fn merge(into: &mut Offsets, offsets: Offsets) {
    for (partition, offset) in offsets {
        let kept = into.entry(partition).or_insert(offset);
        *kept = (*kept).max(offset);
    }
}

#[cfg(test)]
mod tests;
