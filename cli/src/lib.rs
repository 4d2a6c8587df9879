//! The `salve` binary's library: configuration, and the commands that wire the engine to its
//! connectors. Integration tests call these directly.
#![forbid(unsafe_code)]

pub mod actuate;
pub mod cases;
pub mod config;
pub mod replay;
pub mod run;

pub use config::Config;

use salve_rules::{LoadErrors, RuleSet, Runtime, SHIPPED_RULES};
use std::path::Path;

/// Loads the rules from `dir`, or the rules shipped inside salve when `dir` is `None`.
pub fn load_rules(runtime: &Runtime, dir: Option<&Path>) -> Result<RuleSet, LoadErrors> {
    match dir {
        Some(dir) => RuleSet::load_dir(runtime, dir),
        None => RuleSet::load_sources(
            runtime,
            SHIPPED_RULES
                .iter()
                .map(|(file, source)| (format!("<shipped>/{file}"), (*source).to_owned())),
        ),
    }
}

#[cfg(test)]
mod tests;
