//! Reads telemetry from a JSON-lines file, for `salve replay` and rule tests.

use std::io::BufRead;

/// Reads a JSON-lines file one line at a time into one buffer, so that a file of any size
/// replays in the memory of one event. A line longer than `max_bytes` is kept only in part,
/// and said to be so: an input without newlines cannot fill the memory.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buffer: Vec<u8>,
    number: usize,
    max_bytes: usize,
}

/// One line that is not blank, without its line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based, counting blank lines too.
    pub number: usize,
    /// The line, or its first `max_bytes + 1` bytes when it is longer.
    pub bytes: &'a [u8],
    /// The line's whole length: more than `bytes.len()` when it was cut.
    pub length: usize,
}

impl Line<'_> {
    /// Whether the line was longer than the reader keeps.
    pub fn cut(&self) -> bool {
        self.length > self.bytes.len()
    }
}

impl<R: BufRead> LineReader<R> {
    /// Reads from `reader`, from its first line, keeping at most `max_bytes + 1` bytes of a
    /// line: enough to tell that it is over `max_bytes`.
    pub fn new(reader: R, max_bytes: usize) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
            number: 0,
            max_bytes,
        }
    }

    /// The next line that is not blank; `None` at the end of the input.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        loop {
            let Some(length) = self.read_line()? else {
                return Ok(None);
            };
            self.number += 1;
            let mut length = length;
            if length == self.buffer.len() && self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
                length -= 1;
            }
            let cut = length > self.buffer.len();
            if cut || !self.buffer.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(Line {
                    number: self.number,
                    bytes: &self.buffer,
                    length,
                }));
            }
        }
    }

    /// Reads up to the next newline, keeping what fits; returns the line's length without
    /// the newline, or `None` at the end of the input.
    fn read_line(&mut self) -> std::io::Result<Option<usize>> {
        self.buffer.clear();
        let keep = self.max_bytes.saturating_add(1);
        let mut length = 0_usize;
        let mut read_any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                return Ok(read_any.then_some(length));
            }
            read_any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = keep.saturating_sub(self.buffer.len());
            self.buffer
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            length = length.saturating_add(chunk.len());
            let consumed = chunk.len() + usize::from(newline.is_some());
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(Some(length));
            }
        }
    }
}

#[cfg(test)]
mod tests;
