//! Finished commands in memory: what the dedup topic holds, and when each may be forgotten.

use salve_engine::wire::Ack;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// One finished command, as stored in the dedup topic under its `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DoneRecord {
    /// Format version.
    pub(crate) v: u32,
    /// The command's `expires_at`: `retention` after it, the record is forgotten.
    pub(crate) expires_at: i64,
    /// The final ack that was sent.
    pub(crate) ack: Ack,
}

/// Finished commands by `id`, each kept until `retention_ms` after its command expired.
#[derive(Debug)]
pub(crate) struct DoneSet {
    done: HashMap<String, DoneRecord>,
    /// (forget at, id), to forget records in time order.
    by_deadline: BTreeSet<(i64, String)>,
    retention_ms: i64,
    /// Ids read from the topic already past their retention: they need tombstones.
    stale: Vec<String>,
}

impl DoneSet {
    pub(crate) fn new(retention_ms: i64) -> Self {
        Self {
            done: HashMap::new(),
            by_deadline: BTreeSet::new(),
            retention_ms,
            stale: Vec::new(),
        }
    }

    fn forget_at(&self, record: &DoneRecord) -> i64 {
        record.expires_at.saturating_add(self.retention_ms)
    }

    /// Takes in a message read from the dedup topic: a record, or a tombstone (`None`).
    pub(crate) fn apply(&mut self, id: String, record: Option<DoneRecord>, now: i64) {
        match record {
            None => self.forget(&id),
            Some(record) if self.forget_at(&record) < now => {
                self.forget(&id);
                self.stale.push(id);
            }
            Some(record) => self.remember(id, record),
        }
    }

    /// The final ack sent for command `id`, if it finished.
    pub(crate) fn lookup(&self, id: &str) -> Option<&Ack> {
        self.done.get(id).map(|record| &record.ack)
    }

    /// Records that command `id` finished.
    pub(crate) fn remember(&mut self, id: String, record: DoneRecord) {
        self.forget(&id);
        self.by_deadline
            .insert((self.forget_at(&record), id.clone()));
        self.done.insert(id, record);
    }

    fn forget(&mut self, id: &str) {
        if let Some(old) = self.done.remove(id) {
            let at = self.forget_at(&old);
            self.by_deadline.remove(&(at, id.to_owned()));
        }
    }

    /// Forgets the records whose retention ran out by `now`, and returns their ids and those
    /// of stale records read from the topic, so that tombstones can clear them from it.
    pub(crate) fn expire(&mut self, now: i64) -> Vec<String> {
        let mut expired = std::mem::take(&mut self.stale);
        while self.by_deadline.first().is_some_and(|(at, _)| *at < now) {
            if let Some((_, id)) = self.by_deadline.pop_first() {
                self.done.remove(&id);
                expired.push(id);
            }
        }
        expired
    }

    /// How many finished commands are remembered.
    pub(crate) fn len(&self) -> usize {
        self.done.len()
    }
}
