//! salve's rule runtime.
//!
//! A rule is a Rhai file. Its top level evaluates to a *declaration* map (name, selectors,
//! parameters, action), and it defines `fn condition(p)`, which the engine calls with the
//! rule's parameters whenever an event that the selectors match arrives. The engine registers
//! the host functions (`count`, `mean`, ...) that read windowed state; this crate only knows
//! how to load, sandbox and call rules.
#![forbid(unsafe_code)]

mod declaration;
mod duration;
pub mod native;
mod rule_set;
mod sandbox;
mod usage;

pub use declaration::{
    Approval, BlastRadius, Canary, Declaration, DeclarationError, DisableBelow, Flap, Inhibitor,
    Retry, Selector, Step,
};
pub use duration::{duration_ms, parse_duration_ms, DurationError};
pub use rule_set::{LoadError, LoadErrors, ParamOverrides, Rule, RuleSet};
pub use sandbox::{EvalError, Limits, Runtime};
pub use usage::{WindowUse, GROUP_FUNCTIONS, PERCENTILE_FUNCTIONS, WINDOWED_FUNCTIONS};

/// Rhai's dynamic value and map types, re-exported so that hosts need no direct dependency.
pub use rhai::{
    Array, Dynamic, Engine as RhaiEngine, EvalAltResult, ImmutableString, Map, NativeCallContext,
    Position,
};

/// The series the shipped rules and their documentation use. `salve check` asks about a
/// series a rule reads that is neither here nor selected by any rule: often a typo.
pub const VOCABULARY: &[&str] = &[
    "process_exit",
    "liveness",
    "latency_ms",
    "cpu_util",
    "replication_lag_s",
    "error_rate",
    "deploy",
    "checksum_mismatch",
];

/// The rule files that ship with salve, embedded so the binary runs from any directory.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    ("crash_loop.rhai", include_str!("../pack/crash_loop.rhai")),
    (
        "node_unhealthy.rhai",
        include_str!("../pack/node_unhealthy.rhai"),
    ),
    (
        "latency_breaker.rhai",
        include_str!("../pack/latency_breaker.rhai"),
    ),
    (
        "saturation_scale.rhai",
        include_str!("../pack/saturation_scale.rhai"),
    ),
    (
        "primary_failover.rhai",
        include_str!("../pack/primary_failover.rhai"),
    ),
    (
        "deploy_regression.rhai",
        include_str!("../pack/deploy_regression.rhai"),
    ),
    ("integrity.rhai", include_str!("../pack/integrity.rhai")),
];

#[cfg(test)]
mod tests;
