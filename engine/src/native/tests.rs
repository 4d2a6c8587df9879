//! Differential tests: a compiled function must agree with Rhai wherever it answers.

use crate::tests::{engine_configured, feed};
use crate::EngineConfig;

/// A seeded generator of rule bodies over literals, parameters and host calls.
struct Bodies(u64);

impl Bodies {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn number(&mut self) -> String {
        self.pick(&[
            "0",
            "1",
            "3",
            "10",
            "-2",
            "0.5",
            "2.5",
            "250.0",
            "1e2",
            "p.a",
            "p.b",
            "count(\"x\", \"10s\")",
            "count(\"x\", p.w)",
            "last(\"x\")",
            "mean(\"x\", 60)",
            "p99(\"lat\", \"10s\")",
            "consecutive_fails(\"h\")",
            "failing_for(\"h\")",
            "max(\"x\", 30)",
            "rate(\"x\", \"1m\")",
            "sum(\"nothing\", \"10s\")",
            "min(\"x\", 2.5)",
            "percentile(\"lat\", \"10s\", 0.5)",
            "count(\"x\", p.b)",
            "9223372036854775807",
        ])
        .to_owned()
    }

    /// A numeric expression, now and then of the wrong type.
    fn numeric(&mut self, depth: u32) -> String {
        if depth == 0 || self.below(3) == 0 {
            return if self.below(12) == 0 {
                self.pick(&["true", "p.on"]).to_owned()
            } else {
                self.number()
            };
        }
        let text = if self.below(6) == 0 {
            format!("-{}", self.numeric(depth - 1))
        } else {
            let op = self.pick(&["+", "-", "*", "/"]);
            format!(
                "{} {op} {}",
                self.numeric(depth - 1),
                self.numeric(depth - 1)
            )
        };
        self.maybe_parenthesized(text)
    }

    /// A boolean expression, now and then of the wrong type.
    fn boolean(&mut self, depth: u32) -> String {
        if depth == 0 || self.below(5) == 0 {
            return match self.below(12) {
                0 => self.number(),
                1 => self.pick(&["true", "false", "p.on"]).to_owned(),
                _ => {
                    let op = self.pick(&["==", "!=", "<", "<=", ">", ">="]);
                    format!("{} {op} {}", self.numeric(2), self.numeric(2))
                }
            };
        }
        let text = match self.below(8) {
            0 => format!("!{}", self.boolean(depth - 1)),
            1 => {
                let op = self.pick(&["==", "!="]);
                format!(
                    "{} {op} {}",
                    self.boolean(depth - 1),
                    self.boolean(depth - 1)
                )
            }
            _ => {
                let op = self.pick(&["&&", "||"]);
                format!(
                    "{} {op} {}",
                    self.boolean(depth - 1),
                    self.boolean(depth - 1)
                )
            }
        };
        self.maybe_parenthesized(text)
    }

    /// Parentheses sometimes, so that both parsers' precedence is exercised too.
    fn maybe_parenthesized(&mut self, text: String) -> String {
        if self.below(2) == 0 {
            format!("({text})")
        } else {
            text
        }
    }
}

#[test]
fn compiled_functions_agree_with_rhai_wherever_they_answer() {
    let mut bodies = Bodies(7);
    let (mut answered, mut compared) = (0, 0);
    for _ in 0..600 {
        let body = bodies.boolean(3);
        let source = format!(
            "fn condition(p) {{ {body} }}\n#{{ name: \"r\", select: [#{{ name: \"none\" }}], action: \"a\", params: #{{ a: 3, b: 0.5, w: \"10s\", on: true }} }}"
        );
        let config = EngineConfig {
            max_future_ms: i64::MAX,
            ..EngineConfig::default()
        };
        // Bodies that Rhai itself refuses at load time (a call that can never work) say
        // nothing about the compiled form.
        let Ok(mut engine) = std::panic::catch_unwind(|| {
            let sources = [("r.rhai".to_owned(), source.clone())];
            crate::Engine::new(config, |rt| salve_rules::RuleSet::load_sources(rt, sources))
        })
        .expect("no panic") else {
            continue;
        };
        let events: Vec<String> = (0..12)
            .flat_map(|i| {
                let ts = 1_000_000 + i * 1_000;
                [
                    format!(
                        r#"{{"entity":"e","ts":{ts},"kind":"metric","name":"x","value":{}}}"#,
                        i % 5
                    ),
                    format!(
                        r#"{{"entity":"e","ts":{ts},"kind":"metric","name":"lat","value":{}.5}}"#,
                        100 + i * 20
                    ),
                    format!(
                        r#"{{"entity":"e","ts":{ts},"kind":"health","name":"h","status":"{}"}}"#,
                        if i > 7 { "fail" } else { "pass" }
                    ),
                ]
            })
            .collect();
        feed(&mut engine, &events);
        let (rhai, native) = engine.condition_both_ways("e", 0);
        compared += 1;
        if let Some(Some(verdict)) = native {
            answered += 1;
            assert_eq!(rhai.ok(), Some(verdict), "{body}");
        }
    }
    assert!(compared > 150, "{compared} bodies loaded");
    eprintln!("the compiled form answered {answered} of {compared}");
    assert!(
        answered > compared / 5,
        "the compiled form answered {answered} of {compared}"
    );
}

#[test]
fn the_shipped_rules_verdicts_are_all_compiled() {
    let engine = engine_configured(
        EngineConfig {
            max_future_ms: i64::MAX,
            ..EngineConfig::default()
        },
        &[],
    );
    for rule in engine.rules().rules() {
        assert!(rule.compiled("condition").is_some(), "{}", rule.decl.name);
    }
    let latency = engine.rules().rule("latency_breaker").expect("shipped");
    assert!(latency.compiled("clear").is_some());
}
