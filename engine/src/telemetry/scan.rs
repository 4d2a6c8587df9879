//! The fast path of decoding: a scanner for events in the plain form producers write, with
//! the known fields only and strings without escapes (but anything in `attrs`, which serde
//! checks on its own). It reads such an event in one pass with no allocation but the labels'
//! list. Anything else (an escape, an unknown field, a duplicate, `null`, a number out of
//! range, malformed JSON) makes it give up, and serde reads the event instead: so the scanner never accepts what serde would
//! refuse, and never reads a value differently (both parse numbers exactly).

use super::{BorrowedStr, HealthStatus, Kind, Labels, RawEvent, Repr};
use serde_json::value::RawValue;
use smallvec::SmallVec;
use std::borrow::Cow;

/// Reads `text` into `raw`, which must be empty, when it is a plain event; `None` leaves it to
/// serde, with `raw` partly filled. Filling the caller's `raw` in place, rather than returning
/// one, saves copying the whole event, labels and all, on every message.
pub(super) fn scan<'a>(text: &'a str, raw: &mut RawEvent<'a>) -> Option<()> {
    let mut scanner = Scanner { text, at: 0 };
    scanner.whitespace();
    scanner.expect(b'{')?;
    scanner.whitespace();
    if scanner.peek()? == b'}' {
        scanner.at += 1;
    } else {
        loop {
            let key = scanner.string()?;
            scanner.whitespace();
            scanner.expect(b':')?;
            scanner.whitespace();
            // A field met twice, which serde refuses, falls to the last arm: every field
            // read is `Some`, since `null` is left to serde.
            match key {
                "v" if raw.v.is_none() => raw.v = Some(scanner.unsigned()?),
                "entity" if raw.entity.is_none() => {
                    raw.entity = Some(BorrowedStr(Cow::Borrowed(scanner.string()?)))
                }
                "ts" if raw.ts.is_none() => raw.ts = Some(scanner.ts()?),
                "kind" if raw.kind.is_none() => {
                    raw.kind = Some(match scanner.string()? {
                        "metric" => Kind::Metric,
                        "health" => Kind::Health,
                        "event" => Kind::Event,
                        _ => return None,
                    })
                }
                "name" if raw.name.is_none() => {
                    raw.name = Some(BorrowedStr(Cow::Borrowed(scanner.string()?)))
                }
                "value" if raw.value.is_none() => raw.value = Some(scanner.number()?),
                "status" if raw.status.is_none() => {
                    raw.status = Some(match scanner.string()? {
                        "pass" => HealthStatus::Pass,
                        "fail" => HealthStatus::Fail,
                        _ => return None,
                    })
                }
                "labels" if raw.labels.is_none() => {
                    let Repr::Borrowed(pairs) = &mut raw.labels.insert(Labels::default()).0 else {
                        return None;
                    };
                    scanner.labels(pairs)?;
                }
                "attrs" if raw.attrs.is_none() => raw.attrs = Some(scanner.raw_value()?),
                _ => return None,
            }
            scanner.whitespace();
            match scanner.next()? {
                b',' => scanner.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.whitespace();
    (scanner.at == text.len()).then_some(())
}

/// The index of the first byte of `word` (in memory order) that is a quote, a backslash or a
/// control character, if any. The classic bit tricks set a byte's high bit where it was zero,
/// or below the bound; a borrow can flag bytes after a true hit, never before one, so the
/// lowest flag is exact.
fn first_string_stop(word: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let flags = quote | backslash | control;
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's whitespace, and only that.
    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        // Eight bytes at a time, up to the first byte that can end the string; the last few
        // bytes of the text one at a time.
        loop {
            if let Some(chunk) = bytes.get(self.at..self.at + 8) {
                let word = u64::from_le_bytes(chunk.try_into().ok()?);
                match first_string_stop(word) {
                    Some(index) => {
                        self.at += index;
                        break;
                    }
                    None => self.at += 8,
                }
            } else {
                match *bytes.get(self.at)? {
                    b'"' | b'\\' | 0..=0x1f => break,
                    _ => self.at += 1,
                }
            }
        }
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        // Both ends are ASCII quotes, so the slice is on character boundaries.
        let text = self.text.get(start..self.at)?;
        self.at += 1;
        Some(text)
    }

    /// The text of a number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number_text(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        self.text.get(start..self.at)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A number, as serde reads it into an `f64`; one out of range is serde's to refuse.
    fn number(&mut self) -> Option<f64> {
        let value: f64 = self.number_text()?.parse().ok()?;
        value.is_finite().then_some(value)
    }

    /// A non-negative integer that fits in a `u64`.
    fn unsigned(&mut self) -> Option<u64> {
        let text = self.number_text()?;
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    /// `ts` as written: a number's text, or a string with its quotes.
    fn ts(&mut self) -> Option<&'a str> {
        if self.peek()? == b'"' {
            let start = self.at;
            self.string()?;
            self.text.get(start..self.at)
        } else {
            self.number_text()
        }
    }

    /// Any JSON value, kept as its text: found by skipping over it, then checked by serde.
    fn raw_value(&mut self) -> Option<&'a RawValue> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut depth = 0_usize;
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    loop {
                        match *bytes.get(self.at)? {
                            b'"' => break,
                            b'\\' => self.at += 2,
                            _ => self.at += 1,
                        }
                    }
                    self.at += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
                _ => self.at += 1,
            }
            if depth == 0 && matches!(bytes.get(start), Some(b'"' | b'{' | b'[')) {
                break;
            }
        }
        let raw: &RawValue = serde_json::from_str(self.text.get(start..self.at)?).ok()?;
        // serde reads `null` as no attrs at all: left to it.
        (raw.get() != "null").then_some(raw)
    }

    /// An object of strings to strings, pushed onto `pairs` in place (returning a list
    /// would copy it once more).
    fn labels(&mut self, pairs: &mut SmallVec<[(&'a str, &'a str); 4]>) -> Option<()> {
        self.expect(b'{')?;
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            let value = self.string()?;
            pairs.push((key, value));
            self.whitespace();
            match self.next()? {
                b',' => self.whitespace(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
