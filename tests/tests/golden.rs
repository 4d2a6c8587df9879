//! Golden replay tests: every directory under `tests/golden/` is one case.
//!
//! A case has `events.jsonl`, `expected.jsonl`, an optional `case.json` with the simulated
//! actuator (`{"ack": "succeeded", "ack_delay": "2s", "ack_map": {"restart": "failed"}}`) and an
//! optional `rules/` directory (default: the shipped rules). Run with `SALVE_BLESS=1` to write
//! `expected.jsonl` from the current output, then review the diff before committing it.

use salve::replay::{replay, Actuator, SimulatedOutcome};
use salve_connectors::file_source::read_lines;
use salve_engine::{Engine, EngineConfig};
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    ack: Option<String>,
    #[serde(default)]
    ack_delay: Option<String>,
    #[serde(default)]
    ack_map: Option<serde_json::Value>,
}

fn run_case(dir: &Path) -> Vec<String> {
    let case: Case = match std::fs::read_to_string(dir.join("case.json")) {
        Ok(text) => serde_json::from_str(&text).expect("case.json parses"),
        Err(_) => Case::default(),
    };
    let default: SimulatedOutcome = case
        .ack
        .as_deref()
        .unwrap_or("none")
        .parse()
        .expect("ack outcome");
    let by_action = match &case.ack_map {
        Some(map) => Actuator::parse_map(&map.to_string()).expect("ack_map"),
        None => Default::default(),
    };
    let delay_ms = salve_rules::parse_duration_ms(case.ack_delay.as_deref().unwrap_or("1s"))
        .expect("ack_delay");
    let rules_dir = dir.join("rules");
    let rules_dir = rules_dir.is_dir().then_some(rules_dir);
    let config = EngineConfig::default();
    let mut engine = Engine::new(config.clone(), |rt| {
        salve::load_rules(rt, rules_dir.as_deref())
    })
    .unwrap_or_else(|e| panic!("{}: rules: {e}", dir.display()));
    let file = std::fs::File::open(dir.join("events.jsonl")).expect("events.jsonl");
    let lines = read_lines(std::io::BufReader::new(file)).expect("readable");
    let mut output = Vec::new();
    replay(
        &mut engine,
        &lines,
        Actuator {
            default,
            by_action,
            delay_ms,
        },
        config.max_event_bytes,
        &mut |line| {
            output.push(serde_json::to_string(&line).expect("serializable"));
        },
    );
    output
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("events.jsonl").is_file())
        .collect();
    cases.sort();
    cases
}

#[test]
fn golden_replays_match_their_expected_output() {
    let bless = std::env::var_os("SALVE_BLESS").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 8,
        "expected the golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let actual = run_case(dir);
        let expected_path = dir.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, actual.join("\n") + "\n").expect("writable");
            continue;
        }
        let expected_text = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with SALVE_BLESS=1",
                expected_path.display()
            )
        });
        let expected: Vec<&str> = expected_text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if expected != actual {
            let at = expected
                .iter()
                .zip(&actual)
                .position(|(e, a)| e != a)
                .unwrap_or(expected.len().min(actual.len()));
            failures.push(format!(
                "{}: output differs at line {} ({} expected lines, {} actual)\n  expected: {}\n  actual:   {}",
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                at + 1,
                expected.len(),
                actual.len(),
                expected.get(at).copied().unwrap_or("<end>"),
                actual.get(at).map(String::as_str).unwrap_or("<end>"),
            ));
        }
    }
    assert!(failures.is_empty(), "{}\n(after an intended change: SALVE_BLESS=1 cargo test -p salve-tests --test golden, then review the diff)", failures.join("\n"));
}

#[test]
fn replay_is_deterministic() {
    for dir in cases() {
        assert_eq!(run_case(&dir), run_case(&dir), "{}", dir.display());
    }
}
