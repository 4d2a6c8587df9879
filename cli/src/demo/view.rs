//! The live view: one line per thing that happens (a fault injected, a verdict, an incident
//! moving to another state, an action on the fleet, an escalation), and the summary table at
//! the end. ANSI colours only when asked for (the CLI asks when stdout is a terminal).

use super::fleet::Note;
use super::observer::{state_name, verdict_name};
use super::scenarios::{Judgement, Scenario};
use super::ScenarioOutcome;
use salve_engine::wire::{Decision, DecisionKind, Escalation, IncidentState, Verdict};
use std::io::{self, Write};
use std::time::Instant;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

/// Writes the live view to `out`.
pub struct View<'a> {
    out: &'a mut dyn Write,
    colour: bool,
    started: Instant,
}

impl<'a> View<'a> {
    /// A view on `out`, in colour or not, timed from now.
    pub fn new(out: &'a mut dyn Write, colour: bool) -> Self {
        Self {
            out,
            colour,
            started: Instant::now(),
        }
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.colour {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn line(&mut self, scenario: &str, what: &str) -> io::Result<()> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let clock = self.paint(DIM, &format!("[{elapsed:6.1}s]"));
        let scenario = self.paint(BOLD, &format!("{scenario:<17}"));
        writeln!(self.out, "{clock} {scenario} {what}")?;
        self.out.flush()
    }

    /// Free text, e.g. the banner.
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }

    /// A fault injected.
    pub fn injected(&mut self, scenario: &Scenario) -> io::Result<()> {
        let what = self.paint(
            BOLD,
            &format!("▶ {}; expect: {}", scenario.story, scenario.kind.expected()),
        );
        self.line(scenario.kind.name(), &what)
    }

    /// A record of the decision log. Acks are left out: the actuator's own line says what it
    /// did.
    pub fn decision(&mut self, scenario: &str, decision: &Decision) -> io::Result<()> {
        let who = format!("{:<16} {:<18}", decision.rule, decision.entity);
        let what = match decision.kind {
            DecisionKind::Verdict => {
                let Some(verdict) = decision.verdict else {
                    return Ok(());
                };
                let style = match verdict {
                    Verdict::Failure => RED,
                    Verdict::Pending => YELLOW,
                    Verdict::Transient => GREEN,
                    Verdict::Inhibited => MAGENTA,
                };
                let evidence: Vec<String> = decision
                    .evidence
                    .iter()
                    .map(|e| {
                        let value = e.value.map_or("no data".to_owned(), |v| format!("{v:.3}"));
                        let value = value.trim_end_matches('0').trim_end_matches('.');
                        match e.window_ms {
                            Some(ms) => {
                                format!("{}({}, {}s) = {value}", e.function, e.series, ms / 1_000)
                            }
                            None => format!("{}({}) = {value}", e.function, e.series),
                        }
                    })
                    .collect();
                format!(
                    "{}: {} {}",
                    self.paint(style, &format!("verdict {}", verdict_name(verdict))),
                    evidence.join(", "),
                    self.paint(DIM, &format!("({})", decision.reason))
                )
            }
            DecisionKind::Transition => {
                let Some(to) = decision.to else {
                    return Ok(());
                };
                let states = match decision.from {
                    Some(from) => format!("{} → {}", state_name(from), state_name(to)),
                    None => format!("opened: {}", state_name(to)),
                };
                format!(
                    "{}: {}",
                    self.paint(state_style(to), &states),
                    self.paint(DIM, &decision.reason)
                )
            }
            DecisionKind::Ack | DecisionKind::WouldCommand => return Ok(()),
        };
        self.line(scenario, &format!("{who} {what}"))
    }

    /// An incident handed to a human.
    pub fn escalation(&mut self, scenario: &str, escalation: &Escalation) -> io::Result<()> {
        let what = format!(
            "{:<16} {:<18} {} {}",
            escalation.rule,
            escalation.entity,
            self.paint(&format!("{BOLD}{MAGENTA}"), "⚑ to a human:"),
            escalation.reason
        );
        self.line(scenario, &what)
    }

    /// Something the actuators or the fleet did.
    pub fn note(&mut self, scenario: &str, note: &Note) -> io::Result<()> {
        let what = format!(
            "{:<16} {:<18} {}",
            "fleet",
            note.entity,
            self.paint(BLUE, &note.text)
        );
        self.line(scenario, &what)
    }

    /// A scenario reached its outcome, or failed to.
    pub fn settled(&mut self, scenario: &Scenario, judgement: &Judgement) -> io::Result<()> {
        let what = match judgement {
            Judgement::Passed(seen) => self.paint(GREEN, &format!("✔ as expected: {seen}")),
            Judgement::Failed(seen) => self.paint(RED, &format!("✘ not as expected: {seen}")),
            Judgement::Pending(_) => return Ok(()),
        };
        self.line(scenario.kind.name(), &what)
    }

    /// The summary table.
    pub fn summary(&mut self, outcomes: &[ScenarioOutcome]) -> io::Result<()> {
        let header = ["scenario", "expected", "observed", "result"];
        let rows: Vec<[String; 4]> = outcomes
            .iter()
            .map(|o| {
                [
                    o.kind.name().to_owned(),
                    o.expected.to_owned(),
                    o.observed.clone(),
                    if o.passed { "pass" } else { "FAIL" }.to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let pad = |text: &str, width: usize| {
            format!("{text}{}", " ".repeat(width - text.chars().count()))
        };
        writeln!(self.out)?;
        let title: Vec<String> = header.iter().zip(widths).map(|(h, w)| pad(h, w)).collect();
        let title = title.join("  ");
        writeln!(self.out, "{}", self.paint(BOLD, title.trim_end()))?;
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    let padded = pad(cell, width);
                    if column == 3 {
                        let style = if cell == "pass" { GREEN } else { RED };
                        self.paint(style, padded.trim_end())
                    } else {
                        padded
                    }
                })
                .collect();
            writeln!(self.out, "{}", cells.join("  "))?;
        }
        let passed = outcomes.iter().filter(|o| o.passed).count();
        let verdict = format!("{passed} of {} scenarios as expected", outcomes.len());
        let style = if passed == outcomes.len() { GREEN } else { RED };
        writeln!(self.out, "{}", self.paint(style, &verdict))?;
        self.out.flush()
    }
}

fn state_style(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Failing | IncidentState::Failed => RED,
        IncidentState::Remediating
        | IncidentState::Reverting
        | IncidentState::BackingOff
        | IncidentState::AwaitingApproval => YELLOW,
        IncidentState::Verifying | IncidentState::Mitigated => CYAN,
        IncidentState::Resolved => GREEN,
        IncidentState::Escalated => MAGENTA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenarios::ScenarioKind;

    fn outcomes() -> Vec<ScenarioOutcome> {
        vec![
            ScenarioOutcome {
                kind: ScenarioKind::CrashLoop,
                subject: "checkout/pod-07".into(),
                target: None,
                expected: ScenarioKind::CrashLoop.expected(),
                observed: "failing → remediating (restart) → verifying → resolved".into(),
                passed: true,
            },
            ScenarioOutcome {
                kind: ScenarioKind::Storm,
                subject: "service=payments".into(),
                target: None,
                expected: ScenarioKind::Storm.expected(),
                observed: "did not happen".into(),
                passed: false,
            },
        ]
    }

    #[test]
    fn without_colour_the_view_has_no_escape_codes() {
        let mut out = Vec::new();
        let mut view = View::new(&mut out, false);
        view.summary(&outcomes()).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("crash-loop"), "{text}");
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("1 of 2 scenarios as expected"), "{text}");
    }

    #[test]
    fn with_colour_the_results_are_coloured() {
        let mut out = Vec::new();
        let mut view = View::new(&mut out, true);
        view.summary(&outcomes()).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.contains(&format!("{GREEN}pass{RESET}")), "{text}");
        assert!(text.contains(&format!("{RED}FAIL{RESET}")), "{text}");
    }
}
