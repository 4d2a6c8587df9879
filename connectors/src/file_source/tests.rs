use super::LineReader;

fn all(text: &[u8]) -> Vec<(usize, String)> {
    let mut reader = LineReader::new(text);
    let mut lines = Vec::new();
    while let Some((number, bytes)) = reader.next_line().expect("in memory") {
        lines.push((number, String::from_utf8_lossy(bytes).into_owned()));
    }
    lines
}

#[test]
fn lines_keep_their_file_numbers_past_blank_ones_and_lose_their_endings() {
    let text = b"{\"a\":1}\r\n\n   \n{\"b\":2}\n\t\r\n{\"c\":3}";
    assert_eq!(
        all(text),
        vec![
            (1, "{\"a\":1}".to_owned()),
            (4, "{\"b\":2}".to_owned()),
            (6, "{\"c\":3}".to_owned()),
        ]
    );
}

#[test]
fn an_empty_file_has_no_lines() {
    assert!(all(b"").is_empty());
    assert!(all(b"\n\n").is_empty());
}
