use super::*;

const PLAIN: &[&str] = &[
    r#"{"v":1,"entity":"checkout/pod-1","ts":1700000000000,"kind":"metric","name":"latency_ms","value":12.5,"labels":{"service":"checkout","zone":"a"}}"#,
    r#"{"entity":"db-1","ts":"2023-11-14T22:13:20.250Z","kind":"health","name":"liveness","status":"fail"}"#,
    r#" { "entity" : "e" , "kind" : "event" , "name" : "deploy" , "labels" : { } } "#,
    r#"{"entity":"e","kind":"metric","name":"x","value":-0.5e-3}"#,
    r#"{"entity":"e","kind":"metric","name":"x","value":0}"#,
    "{\"entity\":\"é\",\n\t\"kind\":\"metric\",\r\"name\":\"ü\",\"value\":1E2}",
    r#"{}"#,
    r#"{"entity":"e","kind":"event","name":"process_exit","attrs":{"code":137,"signal":"SIGKILL","x":["a\"}",[1,{}]]}}"#,
    r#"{"entity":"e","kind":"event","name":"x","attrs":"text","labels":{"k":"v"}}"#,
    r#"{"entity":"e","kind":"event","name":"x","attrs":-1.5e3}"#,
    r#"{"entity":"e","kind":"event","name":"x","attrs":[] }"#,
];

/// What the scanner makes of `text`, from an empty `RawEvent` as the decoder gives it.
fn scan_plain(text: &str) -> Option<RawEvent<'_>> {
    let mut raw = RawEvent::default();
    scan(text, &mut raw).map(|()| raw)
}

/// What serde makes of `text`, for comparison.
fn serde(text: &str) -> Option<String> {
    serde_json::from_str::<RawEvent<'_>>(text)
        .ok()
        .map(|raw| format!("{raw:?}"))
}

#[test]
fn plain_events_are_scanned_as_serde_reads_them() {
    for text in PLAIN {
        let scanned = scan_plain(text).map(|raw| format!("{raw:?}"));
        assert!(scanned.is_some(), "scanned: {text}");
        assert_eq!(scanned, serde(text), "{text}");
    }
}

#[test]
fn anything_unusual_is_left_to_serde() {
    for text in [
        r#"{"entity":"a\"b","kind":"event","name":"x"}"#,
        r#"{"entity":"e","kind":"event","name":"x","attrs":{"code":1,}}"#,
        r#"{"entity":"e","kind":"event","name":"x","attrs":tru}"#,
        r#"{"entity":"e","kind":"event","name":"x","attrs":null}"#,
        r#"{"entity":"e","kind":"event","name":"x","other":1}"#,
        r#"{"entity":"e","entity":"f","kind":"event","name":"x"}"#,
        r#"{"entity":"e","kind":"metric","name":"x","value":null}"#,
        r#"{"entity":"e","kind":"metric","name":"x","value":1e400}"#,
        r#"{"entity":"e","kind":"metric","name":"x","value":01}"#,
        r#"{"entity":"e","kind":"metric","name":"x","value":1.}"#,
        r#"{"entity":"e","kind":"metric","name":"x","value":+1}"#,
        r#"{"entity":"e","kind":"other","name":"x"}"#,
        r#"{"entity":"e","kind":"event","name":"x"} trailing"#,
        r#"{"entity":"e","kind":"event","name":"x",}"#,
        r#"{"v":-1,"entity":"e","kind":"event","name":"x"}"#,
        r#"{"v":1.0,"entity":"e","kind":"event","name":"x"}"#,
        r#"{"entity":"e","kind":"event","name":"x","labels":{"k":1}}"#,
        "{\"entity\":\"tab\there\",\"kind\":\"event\",\"name\":\"x\"}",
        r#"[1,2]"#,
        "",
    ] {
        assert!(scan_plain(text).is_none(), "{text}");
    }
}

/// Every mutation of the plain events that the scanner reads, serde reads the same way.
#[test]
fn the_scanner_never_disagrees_with_serde() {
    let mut state = 11_u64;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % n
    };
    let alphabet = b"{}[]:,\"\\ \t\n-+.0123456789eEtrufalsnvk_x\x01";
    let (mut scanned, mut tried) = (0, 0);
    for _ in 0..40_000 {
        let mut bytes = PLAIN[next(PLAIN.len())].as_bytes().to_vec();
        for _ in 0..=next(3) {
            let at = next(bytes.len() + 1);
            match next(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = alphabet[next(alphabet.len())],
                _ => bytes.insert(at, alphabet[next(alphabet.len())]),
            }
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        tried += 1;
        if let Some(raw) = scan_plain(text) {
            scanned += 1;
            assert_eq!(Some(format!("{raw:?}")), serde(text), "{text}");
        };
    }
    assert!(scanned > tried / 20, "{scanned} of {tried} mutants scanned");
}

#[test]
fn the_first_byte_that_may_end_a_string_is_found_exactly() {
    let stops = |byte: u8| byte == b'"' || byte == b'\\' || byte < 0x20;
    let naive = |chunk: [u8; 8]| chunk.iter().position(|&b| stops(b));
    for byte in 0..=255_u8 {
        for at in 0..8 {
            let mut chunk = *b"abcdefgh";
            chunk[at] = byte;
            assert_eq!(
                first_string_stop(u64::from_le_bytes(chunk)),
                naive(chunk),
                "{byte:#x} at {at}"
            );
        }
    }
    // Words full of the bytes next to the bounds, where borrows between bytes could
    // mislead the tricks.
    let tricky = [
        0x00, 0x01, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xff,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..200_000 {
        let mut chunk = [0_u8; 8];
        for byte in &mut chunk {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = tricky[(state % tricky.len() as u64) as usize];
        }
        assert_eq!(
            first_string_stop(u64::from_le_bytes(chunk)),
            naive(chunk),
            "{chunk:x?}"
        );
    }
}
