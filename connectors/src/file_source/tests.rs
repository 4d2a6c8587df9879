use super::LineReader;

fn all(text: &[u8], max_bytes: usize) -> Vec<(usize, String, usize)> {
    // A small buffer, so that lines span reads.
    let mut reader = LineReader::new(std::io::BufReader::with_capacity(4, text), max_bytes);
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line().expect("in memory") {
        lines.push((
            line.number,
            String::from_utf8_lossy(line.bytes).into_owned(),
            line.length,
        ));
    }
    lines
}

#[test]
fn lines_keep_their_file_numbers_past_blank_ones_and_lose_their_endings() {
    let text = b"{\"a\":1}\r\n\n   \n{\"b\":2}\n\t\r\n{\"c\":3}";
    assert_eq!(
        all(text, 100),
        vec![
            (1, "{\"a\":1}".to_owned(), 7),
            (4, "{\"b\":2}".to_owned(), 7),
            (6, "{\"c\":3}".to_owned(), 7),
        ]
    );
}

#[test]
fn an_empty_input_has_no_lines() {
    assert!(all(b"", 100).is_empty());
    assert!(all(b"\n\n", 100).is_empty());
}

#[test]
fn a_line_over_the_limit_is_cut_and_says_how_long_it_was() {
    let long = "x".repeat(50);
    let text = format!("{long}\n{{}}\n{}", " ".repeat(30));
    let lines = all(text.as_bytes(), 10);
    assert_eq!(lines[0], (1, "x".repeat(11), 50));
    // The next line is read whole, from where the long one ended.
    assert_eq!(lines[1], (2, "{}".to_owned(), 2));
    // Even a long blank line is over the limit, not skipped.
    assert_eq!(lines[2].2, 30);
    assert_eq!(lines.len(), 3);
}
