//! Reads telemetry from a JSON-lines file, for `salve replay` and rule tests.

use std::io::BufRead;

/// Reads a JSON-lines file one line at a time into one buffer, so that a file of any size
/// replays in the memory of its longest line.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buffer: Vec<u8>,
    number: usize,
}

impl<R: BufRead> LineReader<R> {
    /// Reads from `reader`, from its first line.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
            number: 0,
        }
    }

    /// The next line that is not blank, with its 1-based number and without its line ending;
    /// `None` at the end of the file.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, &[u8])>> {
        loop {
            self.buffer.clear();
            if self.reader.read_until(b'\n', &mut self.buffer)? == 0 {
                return Ok(None);
            }
            self.number += 1;
            let mut line = self.buffer.as_slice();
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest;
            }
            if let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                let end = line.len();
                return Ok(Some((self.number, &self.buffer[..end])));
            }
        }
    }
}

#[cfg(test)]
mod tests;
