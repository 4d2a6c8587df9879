//! The `salve` binary's library: configuration, and the commands that wire the engine to its
//! connectors. Integration tests call these directly.
#![forbid(unsafe_code)]

pub mod actuate;
pub mod cases;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod replay;
pub mod run;
pub mod serve;

pub use config::Config;

use salve_rules::{LoadErrors, ParamOverrides, RuleSet, Runtime, SHIPPED_RULES};
use std::path::Path;

/// Loads the rules from `dir`, or the rules shipped inside salve when `dir` is `None`.
pub fn load_rules(runtime: &Runtime, dir: Option<&Path>) -> Result<RuleSet, LoadErrors> {
    load_rules_with(runtime, dir, &ParamOverrides::new())
}

/// Like [`load_rules`], with parameter values from the configuration's `[rules.params]`.
pub fn load_rules_with(
    runtime: &Runtime,
    dir: Option<&Path>,
    overrides: &ParamOverrides,
) -> Result<RuleSet, LoadErrors> {
    match dir {
        Some(dir) => RuleSet::load_dir_with(runtime, dir, overrides),
        None => RuleSet::load_sources_with(
            runtime,
            SHIPPED_RULES
                .iter()
                .map(|(file, source)| (format!("<shipped>/{file}"), (*source).to_owned())),
            overrides,
        ),
    }
}

/// Series that a rule reads but that no rule selects and the shipped vocabulary does not
/// name: often a typo, which would otherwise read as "no data" forever. One line each, as
/// `file:line: message`.
pub fn unknown_series(rules: &RuleSet) -> Vec<String> {
    let selected: Vec<&str> = rules
        .rules()
        .iter()
        .flat_map(|r| r.decl.select.iter().filter_map(|s| s.name.as_deref()))
        .collect();
    let mut warnings = Vec::new();
    for rule in rules.rules() {
        for (series, line) in rule.series_read() {
            let known = selected.contains(&series.as_str())
                || salve_rules::VOCABULARY.contains(&series.as_str());
            let message = format!(
                "{}:{line}: {} reads the series `{series}`, which no rule selects and the documented vocabulary does not name",
                rule.file, rule.decl.name
            );
            if !known && !warnings.contains(&message) {
                warnings.push(message);
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests;
