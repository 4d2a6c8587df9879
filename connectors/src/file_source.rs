//! Reads telemetry from a JSON-lines file, for `salve replay` and rule tests.

use std::io::BufRead;

/// One line of the file, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    /// The bytes, without the newline.
    pub bytes: Vec<u8>,
}

/// Reads every non-blank line.
pub fn read_lines(reader: impl BufRead) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (index, line) in reader.split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines.push(Line {
            number: index + 1,
            bytes,
        });
    }
    Ok(lines)
}
