//! Replay test cases, as `salve test` and the golden tests run them.
//!
//! A case is a directory with `events.jsonl` and `expected.jsonl`, and optionally `case.json`
//! (the simulated actuator: `{"ack": "succeeded", "ack_delay": "2s", "ack_map": {"restart":
//! "failed"}}`, and a simulated operator: `"operator": [{"at": 45000, "do": "approve",
//! "rule": "crash_loop", "entity": "checkout/pod-1"}]`) and `rules/` (rules for this case
//! only).

use crate::replay::{replay, Actuator, SimulatedOutcome};
use salve_connectors::file_source::LineReader;
use salve_engine::{Engine, EngineConfig};
use salve_rules::{LoadErrors, ParamOverrides};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One case directory.
#[derive(Debug, Clone)]
pub struct Case {
    /// The directory name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
}

/// `case.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    ack: Option<String>,
    ack_delay: Option<String>,
    ack_map: Option<BTreeMap<String, String>>,
    /// What a simulated operator does: `[{"at": 45000, "do": "approve", "rule": "crash_loop",
    /// "entity": "checkout/pod-1"}]`.
    #[serde(default)]
    operator: Vec<crate::replay::OperatorAction>,
    /// The engine's mode for this case: `dry_run` or `paused` instead of the config's.
    mode: Option<salve_engine::Mode>,
}

/// A case that could not be run, as opposed to one whose output differs.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `case.json` is not what it should be.
    #[error("{path}: {message}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The rules did not load.
    #[error("rules rejected:\n{0}")]
    Rules(#[from] LoadErrors),
}

/// What part of the output a comparison looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Every line: golden tests of the engine.
    Everything,
    /// Verdicts, commands and dead letters: rule tests, which should not break when the
    /// incident lifecycle around them changes, but must notice events that were refused.
    Outcomes,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaseError + '_ {
    move |source| CaseError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The case directories under `root`, by name. A missing `root` has no cases.
pub fn discover(root: &Path) -> Result<Vec<Case>, CaseError> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let dir = entry.map_err(io(root))?.path();
        if dir.join("events.jsonl").is_file() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            cases.push(Case { name, dir });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

fn settings(case: &Case) -> Result<Settings, CaseError> {
    let path = case.dir.join("case.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| CaseError::Settings {
            path: path.clone(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

fn actuator(case: &Case, settings: Settings) -> Result<Actuator, CaseError> {
    let path = case.dir.join("case.json");
    let bad = |message: String| CaseError::Settings {
        path: path.clone(),
        message,
    };
    let default: SimulatedOutcome = settings
        .ack
        .as_deref()
        .unwrap_or("none")
        .parse()
        .map_err(bad)?;
    let mut by_action = BTreeMap::new();
    for (action, outcome) in settings.ack_map.unwrap_or_default() {
        by_action.insert(action, outcome.parse().map_err(bad)?);
    }
    let delay_ms = salve_rules::parse_duration_ms(settings.ack_delay.as_deref().unwrap_or("1s"))
        .map_err(|e| bad(format!("ack_delay: {e}")))?;
    Ok(Actuator {
        default,
        by_action,
        delay_ms,
        operator: settings.operator,
    })
}

/// Replays a case and returns its output, one JSON line per entry. The case's own `rules/`
/// wins over `rules_dir`; with neither, the shipped rules run.
pub fn run(
    case: &Case,
    rules_dir: Option<&Path>,
    config: &EngineConfig,
    overrides: &ParamOverrides,
) -> Result<Vec<String>, CaseError> {
    let own_rules = case.dir.join("rules");
    let rules_dir = if own_rules.is_dir() {
        Some(own_rules.as_path())
    } else {
        rules_dir
    };
    let settings = settings(case)?;
    let mut config = config.clone();
    if let Some(mode) = settings.mode {
        config.mode = mode;
    }
    let mut engine = Engine::new(config.clone(), |rt| {
        crate::load_rules_with(rt, rules_dir, overrides)
    })?;
    let events = case.dir.join("events.jsonl");
    let file = std::fs::File::open(&events).map_err(io(&events))?;
    let mut lines = LineReader::new(std::io::BufReader::new(file), config.max_event_bytes);
    let mut output = Vec::new();
    replay(
        &mut engine,
        &mut lines,
        actuator(case, settings)?,
        &mut |line| {
            output.push(
                serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            );
        },
    )
    .map_err(io(&events))?;
    Ok(output)
}

fn keep(line: &str, compare: Compare) -> bool {
    if compare == Compare::Everything {
        return true;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return true;
    };
    value["type"] == "command"
        || value["type"] == "escalation"
        || value["type"] == "dead_letter"
        || (value["type"] == "decision"
            && (value["kind"] == "verdict" || value["kind"] == "would_command"))
}

/// A line as compared: its JSON value, so spacing and key order do not matter; or its text.
fn comparable(line: &str) -> Result<serde_json::Value, &str> {
    serde_json::from_str(line).map_err(|_| line.trim())
}

/// The lines of `output` that `compare` looks at, as `expected.jsonl` should hold them.
pub fn expected_text(output: &[String], compare: Compare) -> String {
    let mut text: String = output
        .iter()
        .filter(|l| keep(l, compare))
        .map(|l| format!("{l}\n"))
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// `None` when `actual` matches `expected`; else a diff: `-` expected only, `+` actual only.
pub fn diff(expected: &str, actual: &[String], compare: Compare) -> Option<String> {
    let expected: Vec<&str> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| keep(l, compare))
        .collect();
    let actual: Vec<&str> = actual
        .iter()
        .map(String::as_str)
        .filter(|l| keep(l, compare))
        .collect();
    let same = expected.len() == actual.len()
        && expected
            .iter()
            .zip(&actual)
            .all(|(e, a)| comparable(e) == comparable(a));
    if same {
        return None;
    }
    // A longest-common-subsequence diff: cases are short, so quadratic is fine.
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0_usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if comparable(expected[i]) == comparable(actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && comparable(expected[i]) == comparable(actual[j]) {
            out.push_str(&format!("  {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", actual[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", expected[i]));
            i += 1;
        }
    }
    Some(out)
}

/// The outcome of `salve test`.
#[derive(Debug, Default)]
pub struct Summary {
    /// Cases whose output matched.
    pub passed: usize,
    /// Cases that differed or could not run, with the diff or the error.
    pub failed: Vec<(String, String)>,
}

/// Runs every case under `dir/tests/` against the rules in `dir`. With `update`, writes each
/// case's `expected.jsonl` from its output instead of comparing.
pub fn test_rules(
    dir: &Path,
    config: &EngineConfig,
    overrides: &ParamOverrides,
    update: bool,
) -> Result<Summary, CaseError> {
    // Load once up front so a broken rule file is reported once, not per case.
    Engine::new(config.clone(), |rt| {
        crate::load_rules_with(rt, Some(dir), overrides)
    })?;
    let mut summary = Summary::default();
    let root = dir.join("tests");
    // A case directory without events would otherwise be skipped in silence.
    if root.is_dir() {
        for entry in std::fs::read_dir(&root).map_err(io(&root))? {
            let path = entry.map_err(io(&root))?.path();
            if path.is_dir() && !path.join("events.jsonl").is_file() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                summary
                    .failed
                    .push((name, format!("{} has no events.jsonl", path.display())));
            }
        }
    }
    let cases = discover(&root)?;
    if cases.is_empty() && summary.failed.is_empty() {
        return Err(CaseError::Settings {
            path: root,
            message: "no test cases: expected directories tests/<case>/ with events.jsonl and expected.jsonl".into(),
        });
    }
    for case in cases {
        let output = match run(&case, Some(dir), config, overrides) {
            Ok(output) => output,
            Err(error) => {
                summary.failed.push((case.name, error.to_string()));
                continue;
            }
        };
        let expected_path = case.dir.join("expected.jsonl");
        if update {
            std::fs::write(&expected_path, expected_text(&output, Compare::Outcomes))
                .map_err(io(&expected_path))?;
            summary.passed += 1;
            continue;
        }
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(text) => text,
            Err(error) => {
                summary
                    .failed
                    .push((case.name, format!("{}: {error}", expected_path.display())));
                continue;
            }
        };
        match diff(&expected, &output, Compare::Outcomes) {
            None => summary.passed += 1,
            Some(diff) => summary.failed.push((case.name, diff)),
        }
    }
    Ok(summary)
}
