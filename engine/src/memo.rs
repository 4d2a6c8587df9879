//! Rule calls answered without running the script, when their host reads came out as they
//! did the last time.
//!
//! A pure rule function ([`salve_rules::Rule::is_pure`]) depends on nothing but its
//! parameters and what the host functions it calls return. Run again with every host call
//! returning what it returned before, it makes the same calls in the same order and returns
//! the same answer. So the engine remembers, for each entity and rule function, the values
//! the last call read and its answer. At the entity's next event it makes the same reads
//! natively, and when each value is the same to the bit, it takes the remembered answer.
//! The reads cost a fraction of the script, and an entity's p99 or failure count rarely
//! changes from one of its events to the next.
//!
//! What the reads were (function, series, window) is kept once per rule function and path,
//! in the [`MemoBook`]; an entity keeps one word per remembered call and one per value read.

use crate::host::{Noted, Read};

/// A rule's functions that return a verdict, and so may be answered from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleFn {
    Condition = 0,
    Clear = 1,
    Verify = 2,
}

impl RuleFn {
    /// The function's name in a rule file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RuleFn::Condition => "condition",
            RuleFn::Clear => "clear",
            RuleFn::Verify => "verify",
        }
    }
}

/// Distinct read sequences the book keeps at most; paths beyond it are not remembered.
/// Each rule function has a handful, one per way through its code.
const MAX_SHAPES: usize = u16::MAX as usize;

/// One function of one rule, as memos name it.
pub(crate) fn slot(rule: usize, function: RuleFn) -> u32 {
    let function = function as u32;
    u32::try_from(rule)
        .unwrap_or(u32::MAX / 4)
        .saturating_mul(4)
        .saturating_add(function)
}

/// The read sequences seen, shared by every entity's memos. Reset, with every memo, when a
/// rule set is installed: a memo names its rule by position.
#[derive(Debug, Default)]
pub(crate) struct MemoBook {
    shapes: Vec<(u32, Box<[Read]>)>,
    /// The values of the memo being replayed, copied out of the entity, which is in the
    /// frame meanwhile.
    pub(crate) recalled: Vec<u64>,
}

impl MemoBook {
    pub(crate) fn reset(&mut self) {
        self.shapes.clear();
    }

    /// The reads of a shape.
    pub(crate) fn reads(&self, shape: u16) -> &[Read] {
        self.shapes
            .get(usize::from(shape))
            .map_or(&[], |(_, reads)| reads)
    }

    /// The shape of the reads a call of `slot` made, registered on first sight; `None` once
    /// the book is full.
    fn shape_of(&mut self, slot: u32, noted: &[Noted]) -> Option<u16> {
        let same = |(s, reads): &(u32, Box<[Read]>)| {
            *s == slot
                && reads.len() == noted.len()
                && reads.iter().zip(noted).all(|(r, n)| *r == n.read)
        };
        if let Some(known) = self.shapes.iter().position(same) {
            return u16::try_from(known).ok();
        }
        if self.shapes.len() >= MAX_SHAPES {
            return None;
        }
        self.shapes
            .push((slot, noted.iter().map(|n| n.read.clone()).collect()));
        u16::try_from(self.shapes.len() - 1).ok()
    }
}

/// An entity's remembered calls, in one allocation: for each, a header word (slot, shape,
/// number of values, answer) and then its values' bits.
#[derive(Debug, Default)]
pub struct Memos(Option<Box<[u64]>>);

/// The header word of one memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    slot: u32,
    shape: u16,
    values: u8,
    answer: bool,
}

impl Header {
    fn pack(self) -> u64 {
        u64::from(self.slot)
            | u64::from(self.shape) << 32
            | u64::from(self.values) << 48
            | u64::from(self.answer) << 56
    }

    fn unpack(word: u64) -> Self {
        Self {
            slot: word as u32,
            shape: (word >> 32) as u16,
            values: (word >> 48) as u8,
            answer: (word >> 56) & 1 == 1,
        }
    }
}

impl Memos {
    /// Where the memo of `slot` starts, and its header.
    fn find(&self, slot: u32) -> Option<(usize, Header)> {
        let words = self.0.as_deref()?;
        let mut at = 0;
        while let Some(&word) = words.get(at) {
            let header = Header::unpack(word);
            if header.slot == slot {
                return Some((at, header));
            }
            at += 1 + usize::from(header.values);
        }
        None
    }

    /// The memo of `slot`: its shape and answer, with its values copied into `values`.
    pub(crate) fn recall(&self, slot: u32, values: &mut Vec<u64>) -> Option<(u16, bool)> {
        let (at, header) = self.find(slot)?;
        let words = self.0.as_deref()?;
        let start = at + 1;
        values.clear();
        values.extend_from_slice(words.get(start..start + usize::from(header.values))?);
        Some((header.shape, header.answer))
    }

    /// Remembers the answer of a call of `slot` and the values it read, in place of what
    /// was remembered of it before. A call that read more values than a header can count is
    /// not remembered.
    pub(crate) fn remember(
        &mut self,
        book: &mut MemoBook,
        slot: u32,
        noted: &[Noted],
        answer: bool,
    ) {
        let Ok(values) = u8::try_from(noted.len()) else {
            return self.forget(slot);
        };
        let Some(shape) = book.shape_of(slot, noted) else {
            return self.forget(slot);
        };
        let header = Header {
            slot,
            shape,
            values,
            answer,
        };
        let bits = noted.iter().map(|n| n.value.to_bits());
        // The usual case: the same path as before, rewritten in place.
        if let Some((at, old)) = self.find(slot) {
            if old.values == values {
                if let Some(words) = self.0.as_deref_mut() {
                    words[at] = header.pack();
                    for (word, value) in words[at + 1..].iter_mut().zip(bits) {
                        *word = value;
                    }
                }
                return;
            }
        }
        let mut words = self.without(slot);
        words.push(header.pack());
        words.extend(bits);
        self.0 = Some(words.into_boxed_slice());
    }

    /// Drops the memo of `slot`, if any.
    fn forget(&mut self, slot: u32) {
        if self.find(slot).is_some() {
            let words = self.without(slot);
            self.0 = (!words.is_empty()).then(|| words.into_boxed_slice());
        }
    }

    /// Every memo's words but those of `slot`.
    fn without(&self, slot: u32) -> Vec<u64> {
        let Some(words) = self.0.as_deref() else {
            return Vec::new();
        };
        let mut kept = Vec::with_capacity(words.len() + 2);
        let mut at = 0;
        while let Some(&word) = words.get(at) {
            let header = Header::unpack(word);
            let end = (at + 1 + usize::from(header.values)).min(words.len());
            if header.slot != slot {
                kept.extend_from_slice(&words[at..end]);
            }
            at = end;
        }
        kept
    }

    /// Forgets everything remembered.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests;
