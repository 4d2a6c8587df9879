//! Loading a directory of rule files into an immutable, validated [`RuleSet`].
//!
//! Loading is all or nothing: every file is compiled and checked, and any problem is reported
//! with file:line:column. A caller that already runs a rule set keeps it when loading fails.

use crate::declaration::{to_json, Declaration};
use crate::duration::duration_ms;
use crate::native::{self, Expr};
use crate::sandbox::{EvalError, Runtime};
use crate::usage::{usage, WindowUse};
use rhai::{Dynamic, Map, AST};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Parameter values from the configuration, by rule name and then parameter name. They replace
/// the defaults a rule file declares, so that thresholds are configuration, not code.
pub type ParamOverrides = BTreeMap<String, serde_json::Map<String, serde_json::Value>>;

/// One loaded rule.
#[derive(Debug)]
pub struct Rule {
    /// What the file declares.
    pub decl: Declaration,
    /// The file it came from, as shown in errors.
    pub file: String,
    ast: AST,
    /// Whether the file defines `fn clear(p)`.
    has_clear: bool,
    params: Dynamic,
    params_json: serde_json::Value,
    windows: Vec<WindowUse>,
    series_read: Vec<(String, usize)>,
    group_labels: Vec<String>,
    /// Which optional functions the file defines.
    has_target: bool,
    has_action_params: bool,
    has_verify: bool,
    /// Whether the rule's functions depend on nothing but their parameters and host reads.
    pure: bool,
    /// `condition`, `clear` and `verify`, when simple enough to evaluate without Rhai.
    compiled: [Option<Expr>; 3],
}

/// The verdict functions, in the order [`Rule::compiled`] keeps them.
const VERDICT_FUNCTIONS: [&str; 3] = ["condition", "clear", "verify"];

impl Rule {
    /// Whether the rule's functions return what they did last time whenever every host
    /// function they call returns what it did last time: true unless the source names the
    /// clock or the print and debug hooks. The engine skips such a call when a replay of its
    /// host reads comes out the same.
    pub fn is_pure(&self) -> bool {
        self.pure
    }

    /// `fn <function>(p)` compiled for native evaluation ([`crate::native`]), when the rule
    /// is pure and the function is one expression of the compiled kind. `function` is
    /// `condition`, `clear` or `verify`.
    pub fn compiled(&self, function: &str) -> Option<&Expr> {
        let index = VERDICT_FUNCTIONS.iter().position(|f| *f == function)?;
        self.compiled[index].as_ref()
    }

    /// The rule's parameters, defaults with the configuration's overrides applied, as JSON.
    pub fn params_json(&self) -> &serde_json::Value {
        &self.params_json
    }

    /// The labels the rule groups entities by: its `group_by`, and the labels its group
    /// functions name.
    pub fn group_labels(&self) -> &[String] {
        &self.group_labels
    }

    /// Whether the rule defines `fn target(p)`.
    pub fn has_target(&self) -> bool {
        self.has_target
    }

    /// Whether the rule defines `fn action_params(p)`.
    pub fn has_action_params(&self) -> bool {
        self.has_action_params
    }

    /// Every series the rule names in a host call, with the line of the call.
    pub fn series_read(&self) -> &[(String, usize)] {
        &self.series_read
    }

    /// Whether the rule defines `fn verify(p)`.
    pub fn has_verify(&self) -> bool {
        self.has_verify
    }

    /// Whether the rule defines `fn clear(p)`.
    pub fn has_clear(&self) -> bool {
        self.has_clear
    }

    /// The windowed calls the rule makes, so the engine keeps history only as far back as
    /// rules look, and percentile samples only for the series that rules ask percentiles of.
    pub fn window_uses(&self) -> &[WindowUse] {
        &self.windows
    }
}

/// A problem with one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file at fault.
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A validated set of rules, in file-name order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Loads every `*.rhai` file in `dir` (not recursive), in file-name order.
    pub fn load_dir(runtime: &Runtime, dir: &Path) -> Result<Self, LoadErrors> {
        Self::load_dir_with(runtime, dir, &ParamOverrides::new())
    }

    /// Like [`RuleSet::load_dir`], with parameter values from the configuration.
    pub fn load_dir_with(
        runtime: &Runtime,
        dir: &Path,
        overrides: &ParamOverrides,
    ) -> Result<Self, LoadErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            LoadErrors(vec![LoadError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read the rules directory: {e}"),
            }])
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
            .collect();
        paths.sort();
        let mut sources = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) => errors.push(LoadError {
                    file: path.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        Self::load_sources_with(runtime, sources, overrides)
    }

    /// Loads rules from `(file name, source)` pairs.
    pub fn load_sources(
        runtime: &Runtime,
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, LoadErrors> {
        Self::load_sources_with(runtime, sources, &ParamOverrides::new())
    }

    /// Like [`RuleSet::load_sources`], with parameter values from the configuration.
    pub fn load_sources_with(
        runtime: &Runtime,
        sources: impl IntoIterator<Item = (String, String)>,
        overrides: &ParamOverrides,
    ) -> Result<Self, LoadErrors> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut errors = Vec::new();
        for (file, source) in sources {
            match load_one(runtime, &file, &source, overrides) {
                Ok(rule) => {
                    if let Some(first) = rules.iter().find(|r| r.decl.name == rule.decl.name) {
                        errors.push(LoadError {
                            line: find_key_line(&source, "name"),
                            column: 0,
                            message: format!(
                                "rule name `{}` is already used by {}",
                                rule.decl.name, first.file
                            ),
                            file,
                        });
                    } else {
                        rules.push(rule);
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        // A rule whose file failed is not in `rules`; only a clean load can tell a misspelling.
        let clean = errors.is_empty();
        for rule in &rules {
            for inhibitor in &rule.decl.inhibited_by {
                if clean && !rules.iter().any(|r| r.decl.name == inhibitor.rule) {
                    errors.push(LoadError {
                        file: rule.file.clone(),
                        line: 0,
                        column: 0,
                        message: format!(
                            "inhibited_by names the rule `{}`, which is not loaded",
                            inhibitor.rule
                        ),
                    });
                }
            }
        }
        for rule in overrides.keys() {
            if clean && !rules.iter().any(|r| &r.decl.name == rule) {
                errors.push(LoadError {
                    file: format!("rules.params.{rule}"),
                    line: 0,
                    column: 0,
                    message: format!(
                        "the configuration sets parameters of `{rule}`, but no rule has that name"
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(Self { rules })
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// The rules, indexed as the engine refers to them.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule named `name`, if loaded.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.decl.name == name)
    }

    /// Calls every rule's condition once, and reports the errors that no data could avoid: a
    /// call to a function that does not exist, or a read of a parameter or property that is not
    /// there. The host sets up whatever state the call sees (an empty entity, for a check).
    /// Paths that this call does not take are not checked.
    pub fn probe(&self, runtime: &Runtime) -> Result<(), LoadErrors> {
        let errors: Vec<LoadError> = (0..self.rules.len())
            .flat_map(|index| {
                [
                    Some(self.condition(runtime, index)),
                    self.clear(runtime, index),
                    self.verify(runtime, index),
                    self.target(runtime, index).map(|r| r.map(|_| true)),
                    self.action_params(runtime, index).map(|r| r.map(|_| true)),
                ]
            })
            .flatten()
            .filter_map(|result| match result {
                Err(EvalError::Script {
                    file,
                    line,
                    column,
                    message,
                    always: true,
                    ..
                }) => Some(LoadError {
                    file,
                    line,
                    column,
                    message,
                }),
                _ => None,
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Evaluates rule `index`'s clear condition, `fn clear(p)`; `None` when the rule defines
    /// none, and the condition not holding is what clears it.
    pub fn clear(&self, runtime: &Runtime, index: usize) -> Option<Result<bool, EvalError>> {
        let rule = &self.rules[index];
        rule.has_clear
            .then(|| self.call(runtime, index, "clear"))
            .map(|value| value.and_then(|v| as_bool(rule, v)))
    }

    /// Calls rule `index`'s `fn verify(p)`: whether the entity is healthy, while a fix is
    /// verified. `None` when the rule defines none, and the condition not holding is what
    /// verifies.
    pub fn verify(&self, runtime: &Runtime, index: usize) -> Option<Result<bool, EvalError>> {
        let rule = &self.rules[index];
        rule.has_verify
            .then(|| self.call(runtime, index, "verify"))
            .map(|value| value.and_then(|v| as_bool(rule, v)))
    }

    /// Calls rule `index`'s `fn target(p)`: the entity a command goes to, when it is not the
    /// failing entity (e.g. the replica to promote). `None` when the rule defines none.
    pub fn target(&self, runtime: &Runtime, index: usize) -> Option<Result<Dynamic, EvalError>> {
        let rule = &self.rules[index];
        rule.has_target.then(|| self.call(runtime, index, "target"))
    }

    /// Calls rule `index`'s `fn <name>(p)` with its parameters.
    fn call(&self, runtime: &Runtime, index: usize, name: &str) -> Result<Dynamic, EvalError> {
        let rule = &self.rules[index];
        runtime.call_value(
            &rule.decl.name,
            &rule.file,
            &rule.ast,
            name,
            rule.params.clone(),
        )
    }

    /// Calls rule `index`'s `fn action_params(p)`: command parameters computed from the state,
    /// laid over the declared `action_params`. `None` when the rule defines none.
    pub fn action_params(
        &self,
        runtime: &Runtime,
        index: usize,
    ) -> Option<Result<serde_json::Map<String, serde_json::Value>, EvalError>> {
        let rule = &self.rules[index];
        rule.has_action_params.then(|| {
            let value = runtime.call_value(
                &rule.decl.name,
                &rule.file,
                &rule.ast,
                "action_params",
                rule.params.clone(),
            )?;
            match to_json(&value) {
                serde_json::Value::Object(map) => Ok(map),
                other => Err(EvalError::Script {
                    rule: rule.decl.name.clone(),
                    file: rule.file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("action_params must return a map, got {other}"),
                    always: false,
                }),
            }
        })
    }

    /// Evaluates rule `index`'s condition. Host functions see whatever frame the caller set up.
    pub fn condition(&self, runtime: &Runtime, index: usize) -> Result<bool, EvalError> {
        let rule = &self.rules[index];
        runtime.call_bool(
            &rule.decl.name,
            &rule.file,
            &rule.ast,
            "condition",
            rule.params.clone(),
        )
    }
}

/// A rule function's result as the boolean it must be.
fn as_bool(rule: &Rule, value: Dynamic) -> Result<bool, EvalError> {
    value.as_bool().map_err(|type_name| EvalError::NotABool {
        rule: rule.decl.name.clone(),
        type_name: type_name.to_owned(),
    })
}

fn load_one(
    runtime: &Runtime,
    file: &str,
    source: &str,
    overrides: &ParamOverrides,
) -> Result<Rule, LoadError> {
    let engine = runtime.engine();
    let mut ast = engine.compile(source).map_err(|e| {
        let pos = e.position();
        LoadError {
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message: e.err_type().to_string(),
        }
    })?;
    ast.set_source(file);
    let has_condition = ast
        .iter_functions()
        .any(|f| f.name == "condition" && f.params.len() == 1);
    let has_clear = ast
        .iter_functions()
        .any(|f| f.name == "clear" && f.params.len() == 1);
    if !has_condition {
        return Err(LoadError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: "the rule defines no `fn condition(p)`: it must return true when the entity is failing".into(),
        });
    }
    let value = engine.eval_ast::<Dynamic>(&ast).map_err(|e| {
        let pos = e.position();
        LoadError {
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message: format!("evaluating the declaration: {}", e.unwrap_inner()),
        }
    })?;
    let mut decl = Declaration::from_dynamic(value).map_err(|e| LoadError {
        file: file.to_owned(),
        line: e.key.as_deref().map_or(0, |key| find_key_line(source, key)),
        column: 0,
        message: e.message,
    })?;
    if let Some(values) = overrides.get(&decl.name) {
        override_params(&decl.name, &mut decl.params, values).map_err(|message| LoadError {
            file: file.to_owned(),
            line: find_key_line(source, "params"),
            column: 0,
            message,
        })?;
    }
    let usage = usage(source, &decl.params).map_err(|e| LoadError {
        file: file.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let mut group_labels = usage.group_labels;
    for label in decl
        .group_by
        .iter()
        .chain(decl.inhibited_by.iter().map(|i| &i.upstream_label))
        .chain(decl.blast_radius.iter().map(|b| &b.group))
        .chain(decl.canary.iter().map(|c| &c.group))
    {
        if !group_labels.contains(label) {
            group_labels.push(label.clone());
        }
    }
    let defines = |name: &str| {
        ast.iter_functions()
            .any(|f| f.name == name && f.params.len() == 1)
    };
    let (has_target, has_action_params) = (defines("target"), defines("action_params"));
    let has_verify = defines("verify");
    if has_verify && decl.verify_for_ms == 0 {
        return Err(LoadError {
            file: file.to_owned(),
            line: source
                .lines()
                .position(|l| l.trim_start().starts_with("fn verify"))
                .map_or(0, |i| i + 1),
            column: 0,
            message: "`fn verify(p)` is called while verifying, and this rule has no `verify_for`"
                .into(),
        });
    }
    let pure = usage.impure_at.is_none();
    let defined: Vec<&str> = ast.iter_functions().map(|f| f.name).collect();
    let compiled = VERDICT_FUNCTIONS.map(|function| {
        pure.then(|| native::compile(source, function, &decl.params, &defined))
            .flatten()
    });
    let params_json = to_json(&Dynamic::from_map(decl.params.clone()));
    // Not shared: each call gets its own copy, so a rule cannot keep state between calls.
    let params = Dynamic::from_map(decl.params.clone());
    // The top level ran once above; per-event calls run only the functions.
    let ast = ast.clone_functions_only();
    Ok(Rule {
        decl,
        file: file.to_owned(),
        ast,
        has_clear,
        params,
        params_json,
        windows: usage.windows,
        series_read: usage.series_read,
        group_labels,
        has_target,
        has_action_params,
        has_verify,
        pure,
        compiled,
    })
}

/// Replaces declared defaults with configured values of the same type. A duration stays a
/// duration, and an integer may become a float, but nothing else changes type: a threshold
/// that turns into a string would fail on every event instead of at start-up.
fn override_params(
    rule: &str,
    params: &mut Map,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    use serde_json::Value;
    for (key, value) in values {
        let path = format!("rules.params.{rule}.{key}");
        let Some(default) = params.get(key.as_str()) else {
            let known: Vec<&str> = params.keys().map(|k| k.as_str()).collect();
            return Err(format!(
                "{path}: `{rule}` has no parameter `{key}`; its parameters are {known:?}"
            ));
        };
        let expected =
            |what: &str| format!("{path}: expected {what} like the default {default}, got {value}");
        let replacement = if default.is_int() {
            value
                .as_i64()
                .map(Dynamic::from_int)
                .ok_or_else(|| expected("an integer"))?
        } else if default.is_float() {
            value
                .as_f64()
                .map(Dynamic::from_float)
                .ok_or_else(|| expected("a number"))?
        } else if default.is_bool() {
            value
                .as_bool()
                .map(Dynamic::from_bool)
                .ok_or_else(|| expected("true or false"))?
        } else if default.is_string() {
            let text = value.as_str().ok_or_else(|| expected("a string"))?;
            let replacement = Dynamic::from(text.to_owned());
            if duration_ms(default).is_ok() && duration_ms(&replacement).is_err() {
                return Err(expected("a duration such as \"90s\""));
            }
            replacement
        } else {
            match value {
                Value::Array(_) if default.is_array() => from_json(value),
                Value::Object(_) if default.is_map() => from_json(value),
                _ => return Err(expected(default.type_name())),
            }
        };
        params.insert(key.as_str().into(), replacement);
    }
    Ok(())
}

fn from_json(value: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Dynamic::from_int)
            .unwrap_or_else(|| Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(from_json).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), from_json(v)))
                .collect(),
        ),
    }
}

/// The first line that looks like `key:` in the source, so a bad declaration key can be pointed at.
fn find_key_line(source: &str, key: &str) -> usize {
    let pattern = format!("{key}:");
    source
        .lines()
        .position(|line| line.trim_start().starts_with(&pattern))
        .map_or(0, |i| i + 1)
}
