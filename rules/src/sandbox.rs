//! The sandboxed Rhai engine that loads and runs rules.
//!
//! Rhai has no file, network or process access of its own, and salve builds it without the
//! module system, so a rule cannot `import` anything either. What remains to bound is work:
//! every call gets an operation budget, and strings, arrays, maps, call depth and expression
//! depth are capped, so a runaway rule is stopped and the others keep running.

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Scope, AST};
use serde::Deserialize;
use std::cell::RefCell;

/// Resource limits applied to every rule call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rhai operations one call may run before it is stopped.
    pub max_operations: u64,
    /// Nesting of function calls.
    pub max_call_depth: usize,
    /// Nesting of expressions, at parse time.
    pub max_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_bytes: usize,
    /// Items in one array.
    pub max_array_len: usize,
    /// Entries in one map.
    pub max_map_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 50_000,
            max_call_depth: 16,
            max_expr_depth: 64,
            max_string_bytes: 16 * 1024,
            max_array_len: 4096,
            max_map_len: 1024,
        }
    }
}

/// Why a rule call did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The call ran out of its operation budget and was stopped.
    #[error("rule {rule} exceeded its budget of {budget} operations and was stopped")]
    BudgetExceeded {
        /// The rule's name.
        rule: String,
        /// The configured budget.
        budget: u64,
    },
    /// The script raised an error, or a host function refused its arguments.
    #[error("rule {rule} failed at {file}:{line}:{column}: {message}")]
    Script {
        /// The rule's name.
        rule: String,
        /// The rule's file.
        file: String,
        /// 1-based line; 0 when unknown.
        line: usize,
        /// 1-based column; 0 when unknown.
        column: usize,
        /// Rhai's message.
        message: String,
        /// True when the error cannot depend on the data: an unknown function, property or
        /// variable. Such a rule is wrong for every event.
        always: bool,
    },
    /// `condition` returned something other than a boolean.
    #[error("rule {rule}: condition returned {type_name}, expected a bool")]
    NotABool {
        /// The rule's name.
        rule: String,
        /// What it returned instead.
        type_name: String,
    },
}

/// A sandboxed Rhai engine with the host's functions registered, plus a reusable scope.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    scope: RefCell<Scope<'static>>,
}

impl Runtime {
    /// Builds a sandboxed engine; `register` adds the host functions rules may call.
    pub fn new(limits: Limits, register: impl FnOnce(&mut Engine)) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_bytes)
            .set_max_array_size(limits.max_array_len)
            .set_max_map_size(limits.max_map_len)
            .set_strict_variables(true)
            .set_fail_on_invalid_map_property(true);
        // `eval` would let a rule compile code the loader never checked.
        engine.disable_symbol("eval");
        // Rules run on every matching event: their prints are for debugging, not for the log.
        engine.on_print(|text| tracing::debug!(target: "salve::rule_print", "{text}"));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "salve::rule_print", source = source.unwrap_or(""), line = pos.line().unwrap_or(0), "{text}")
        });
        register(&mut engine);
        Self {
            engine,
            limits,
            scope: RefCell::new(Scope::new()),
        }
    }

    /// The underlying engine, for compiling.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits this runtime enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Calls `fn_name(arg)` in `ast` and returns whatever it returns.
    pub(crate) fn call_value(
        &self,
        rule: &str,
        file: &str,
        ast: &AST,
        fn_name: &str,
        arg: Dynamic,
    ) -> Result<Dynamic, EvalError> {
        let mut scope = self.scope.borrow_mut();
        scope.clear();
        // The AST's top level ran once at load; only the function is called per event.
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        self.engine
            .call_fn_with_options::<Dynamic>(options, &mut scope, ast, fn_name, (arg,))
            .map_err(|err| self.classify(rule, file, *err))
    }

    /// Calls `fn_name(arg)` in `ast` and expects a boolean.
    pub(crate) fn call_bool(
        &self,
        rule: &str,
        file: &str,
        ast: &AST,
        fn_name: &str,
        arg: Dynamic,
    ) -> Result<bool, EvalError> {
        let value = self.call_value(rule, file, ast, fn_name, arg)?;
        value.as_bool().map_err(|type_name| EvalError::NotABool {
            rule: rule.to_owned(),
            type_name: type_name.to_owned(),
        })
    }

    fn classify(&self, rule: &str, file: &str, err: EvalAltResult) -> EvalError {
        if matches!(err.unwrap_inner(), EvalAltResult::ErrorTooManyOperations(_)) {
            return EvalError::BudgetExceeded {
                rule: rule.to_owned(),
                budget: self.limits.max_operations,
            };
        }
        let pos = err.position();
        // A call with a `()` argument fails only because a value is missing, e.g. a method on
        // `label("zone")` of an entity without that label: that depends on the data.
        let always = match err.unwrap_inner() {
            EvalAltResult::ErrorFunctionNotFound(signature, _) => !signature.contains("()"),
            EvalAltResult::ErrorPropertyNotFound(..) | EvalAltResult::ErrorVariableNotFound(..) => {
                true
            }
            _ => false,
        };
        EvalError::Script {
            rule: rule.to_owned(),
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message: err.unwrap_inner().to_string(),
            always,
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
