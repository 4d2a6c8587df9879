//! Which offsets may be committed when commands finish out of order.
//!
//! Commands run concurrently, so a later offset can finish before an earlier one. A
//! partition's commit point is its lowest unfinished offset, or one past the highest offset
//! seen when nothing is unfinished: committing past an unfinished command would lose it in a
//! crash.

use std::collections::{BTreeSet, HashMap};

/// A topic and partition.
pub(crate) type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionOffsets {
    unfinished: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: i64,
    /// The last offset committed (or handed out by [`OffsetTracker::committable`]).
    committed: i64,
}

impl PartitionOffsets {
    fn commit_point(&self) -> i64 {
        self.unfinished.first().copied().unwrap_or(self.next)
    }
}

/// Unfinished offsets per partition, and the commit points that follow from them.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionOffsets>,
}

impl OffsetTracker {
    /// A command at `offset` was read and is not finished.
    pub(crate) fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        let entry = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| PartitionOffsets {
                committed: offset,
                ..PartitionOffsets::default()
            });
        entry.unfinished.insert(offset);
        entry.next = entry.next.max(offset + 1);
    }

    /// The command at `offset` is finished: its ack is produced (or it needed none).
    pub(crate) fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(entry) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            entry.unfinished.remove(&offset);
        }
    }

    /// Commit points that moved since they were last marked committed, for the partitions
    /// that `include` accepts.
    pub(crate) fn committable(
        &self,
        include: impl Fn(&TopicPartition) -> bool,
    ) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(tp, _)| include(tp))
            .filter_map(|(tp, p)| {
                let point = p.commit_point();
                (point > p.committed).then(|| (tp.clone(), point))
            })
            .collect()
    }

    /// These commit points are on the broker.
    pub(crate) fn mark_committed(&mut self, committed: &[(TopicPartition, i64)]) {
        for (tp, offset) in committed {
            if let Some(entry) = self.partitions.get_mut(tp) {
                entry.committed = entry.committed.max(*offset);
            }
        }
    }

    /// The partition was revoked: its next owner starts from its committed offset.
    pub(crate) fn forget(&mut self, tp: &TopicPartition) {
        self.partitions.remove(tp);
    }
}
