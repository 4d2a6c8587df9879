//! Golden replay tests: every directory under `tests/golden/` is one case (see
//! `salve::cases` for the layout), compared line by line with its `expected.jsonl`.
//! Run with `SALVE_BLESS=1` to write `expected.jsonl` from the current output, then review
//! the diff before committing it.

use salve::cases::{diff, discover, expected_text, run, Case, Compare};
use salve_engine::EngineConfig;
use std::path::Path;

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    discover(&root).expect("tests/golden is readable")
}

#[test]
fn golden_replays_match_their_expected_output() {
    let bless = std::env::var_os("SALVE_BLESS").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "expected the golden cases, found {}",
        cases.len()
    );
    let config = EngineConfig::default();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run(case, None, &config, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let expected_path = case.dir.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, expected_text(&actual, Compare::Everything))
                .expect("writable");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with SALVE_BLESS=1",
                expected_path.display()
            )
        });
        if let Some(diff) = diff(&expected, &actual, Compare::Everything) {
            failures.push(format!("{}:\n{diff}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(after an intended change: SALVE_BLESS=1 cargo test -p salve-tests --test golden, then review the diff)",
        failures.join("\n")
    );
}

#[test]
fn replay_is_deterministic() {
    let config = EngineConfig::default();
    for case in cases() {
        let first = run(&case, None, &config, &Default::default()).expect("runs");
        let second = run(&case, None, &config, &Default::default()).expect("runs");
        assert_eq!(first, second, "{}", case.name);
    }
}
