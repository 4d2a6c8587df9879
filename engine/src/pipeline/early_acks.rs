//! Acks that came before their incident was here.
//!
//! Every process follows every acks partition, so an ack reaches whichever process holds its
//! incident. While a partition moves, no process holds it: the old owner has handed it over
//! and the new one has not restored it from the changelog yet, and an ack arriving then
//! matches nothing anywhere. The new owner's follower did read it, though. So an ack whose
//! command is unknown here is kept for a while, and once a restore brings incidents in, the
//! kept acks of their commands are applied, in the order they came. Without this the attempt
//! would wait out its ack deadline, fail, and be tried again: a second restart for a fix that
//! worked.

use crate::wire::Ack;
use std::collections::VecDeque;

/// How many unknown acks are kept: every process reads every ack, so in a fleet most acks are
/// another process's. About 100 bytes each.
pub(crate) const KEPT: usize = 10_000;

/// How long an unknown ack is kept, in processing time. A partition moves in seconds; an
/// attempt whose ack is older than its ack timeout has failed anyway.
pub(crate) const KEPT_FOR_MS: i64 = 10 * 60_000;

/// Unknown acks, oldest first, each with the processing time it came at.
#[derive(Debug, Default)]
pub(crate) struct EarlyAcks {
    kept: VecDeque<(i64, Ack)>,
}

impl EarlyAcks {
    /// Keeps an ack whose command is unknown here, dropping the oldest beyond the limits.
    pub(crate) fn keep(&mut self, now_ms: i64, ack: &Ack) {
        self.kept.push_back((now_ms, ack.clone()));
        self.forget_old(now_ms);
    }

    /// Takes out, in arrival order, the kept acks of the commands `awaited` names.
    pub(crate) fn take_awaited(&mut self, now_ms: i64, awaited: impl Fn(&str) -> bool) -> Vec<Ack> {
        self.forget_old(now_ms);
        if self.kept.is_empty() {
            return Vec::new();
        }
        let mut taken = Vec::new();
        self.kept.retain(|(_, ack)| {
            let take = awaited(&ack.command_id);
            if take {
                taken.push(ack.clone());
            }
            !take
        });
        taken
    }

    fn forget_old(&mut self, now_ms: i64) {
        while self.kept.len() > KEPT
            || self
                .kept
                .front()
                .is_some_and(|(at, _)| now_ms - at > KEPT_FOR_MS)
        {
            self.kept.pop_front();
        }
    }

    /// How many are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests;
