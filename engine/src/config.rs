//! The engine's configuration: the `[engine]` table of `salve.toml`.

use salve_rules::Limits;
use serde::{Deserialize, Deserializer};

/// How far automation goes, for the whole engine or one rule. Ordered from the most to the
/// least that automation does: where a global and a per-rule mode differ, the later one wins.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide, and send commands.
    #[default]
    Active,
    /// Decide and log every command as `would_command`; send none, escalate nothing.
    DryRun,
    /// Observe only: windows keep filling, no rule is evaluated, and no command is sent.
    /// Incidents already open wait: an attempt that comes due is held until resumed.
    Paused,
}

impl Mode {
    /// The config and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::DryRun => "dry_run",
            Mode::Paused => "paused",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "active" => Ok(Mode::Active),
            "dry_run" => Ok(Mode::DryRun),
            "paused" => Ok(Mode::Paused),
            other => Err(format!(
                "unknown mode {other:?}; expected active, dry_run or paused"
            )),
        }
    }
}

/// Tunables of the decision pipeline. Durations are written as `"1s"`, `"15m"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `active`, or `dry_run` to try rules on live telemetry without acting.
    pub mode: Mode,
    /// Events larger than this go to the dead-letter topic.
    pub max_event_bytes: usize,
    /// Bucket width of the sliding windows.
    #[serde(rename = "resolution", deserialize_with = "duration")]
    pub resolution_ms: i64,
    /// The longest window a rule may ask for; older data is dropped.
    #[serde(rename = "max_window", deserialize_with = "duration")]
    pub max_window_ms: i64,
    /// An event this much older than the newest event of its entity is late: it is not
    /// folded into the windows, and it is reported (dead-lettered with code `late`).
    #[serde(rename = "allowed_lateness", deserialize_with = "duration")]
    pub allowed_lateness_ms: i64,
    /// An event stamped further than this ahead of the processing clock is refused (code
    /// `future`): a producer with a fast clock would otherwise drag its entity's windows ahead.
    #[serde(rename = "max_future", deserialize_with = "duration")]
    pub max_future_ms: i64,
    /// A partition that receives nothing for this long (processing time) stops holding its
    /// event time back: it follows the processing clock, less `allowed_lateness`.
    #[serde(rename = "idle_timeout", deserialize_with = "duration")]
    pub idle_timeout_ms: i64,
    /// An entity not heard from for this long (in event time) is forgotten, unless it has an
    /// open incident. Keeps memory bounded as entities come and go (pods get new names).
    #[serde(rename = "entity_ttl", deserialize_with = "duration")]
    pub entity_ttl_ms: i64,
    /// How long to wait for an actuator's ack when a rule sets no `ack_timeout`.
    #[serde(rename = "ack_timeout", deserialize_with = "duration")]
    pub ack_timeout_ms: i64,
    /// Percentile samples kept per series at most (16 bytes each). A series busier than this
    /// within its longest percentile window is thinned, and its percentiles become estimates.
    pub max_percentile_samples: usize,
    /// Labels whose value keys a telemetry message instead of its entity: the first of them
    /// that an event carries. Producers that key a group's events by the group label (e.g.
    /// `service`) put the whole group on one partition, which group rules need. Empty: every
    /// message is keyed by its entity.
    pub partition_by: Vec<String>,
    /// Flap protection for rules that set none: at most this many commands of one action
    /// on one entity within `flap_window`; the next need escalates instead.
    pub flap_max_attempts: u32,
    /// See `flap_max_attempts`.
    #[serde(rename = "flap_window", deserialize_with = "duration")]
    pub flap_window_ms: i64,
    /// How long an escalated incident holds its rule off its subject before automation may
    /// act again by itself. `0s`, the default: until a human resolves it or lifts the
    /// quarantine.
    #[serde(rename = "quarantine_expiry", deserialize_with = "duration")]
    pub quarantine_expiry_ms: i64,
    /// Sandbox limits for every rule call.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Active,
            max_event_bytes: 1024 * 1024,
            resolution_ms: 1_000,
            max_window_ms: 15 * 60 * 1_000,
            allowed_lateness_ms: 60_000,
            max_future_ms: 60_000,
            idle_timeout_ms: 60_000,
            entity_ttl_ms: 60 * 60 * 1_000,
            ack_timeout_ms: 30_000,
            max_percentile_samples: 256,
            partition_by: Vec::new(),
            flap_max_attempts: 3,
            flap_window_ms: 60_000,
            quarantine_expiry_ms: 0,
            limits: Limits::default(),
        }
    }
}

/// A configuration value that breaks an invariant serde cannot check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("engine.{key}: {expected}")]
pub struct InvalidEngineConfig {
    /// The key at fault.
    pub key: &'static str,
    /// What was expected.
    pub expected: &'static str,
}

impl EngineConfig {
    /// Checks the relations between keys.
    pub fn validate(&self) -> Result<(), InvalidEngineConfig> {
        if self.resolution_ms <= 0 {
            return Err(InvalidEngineConfig {
                key: "resolution",
                expected: "a positive duration such as \"1s\"",
            });
        }
        if self.max_window_ms < self.resolution_ms {
            return Err(InvalidEngineConfig {
                key: "max_window",
                expected: "a duration at least as long as engine.resolution",
            });
        }
        if self.max_future_ms > self.allowed_lateness_ms {
            return Err(InvalidEngineConfig {
                key: "max_future",
                expected: "a duration no longer than engine.allowed_lateness: an event accepted that far ahead would make its entity's next real events late",
            });
        }
        if self.entity_ttl_ms < self.max_window_ms {
            return Err(InvalidEngineConfig {
                key: "entity_ttl",
                expected: "a duration at least as long as engine.max_window, so no window loses data an entity still needs",
            });
        }
        if self.ack_timeout_ms <= 0 {
            return Err(InvalidEngineConfig {
                key: "ack_timeout",
                expected: "a positive duration such as \"30s\"",
            });
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_operations", limits.max_operations as usize),
            ("limits.max_call_depth", limits.max_call_depth),
            ("limits.max_expr_depth", limits.max_expr_depth),
            ("limits.max_string_bytes", limits.max_string_bytes),
            ("limits.max_array_len", limits.max_array_len),
            ("limits.max_map_len", limits.max_map_len),
        ] {
            if value == 0 {
                return Err(InvalidEngineConfig {
                    key,
                    expected: "a positive number (0 would lift the limit in Rhai)",
                });
            }
        }
        if self.idle_timeout_ms <= 0 {
            return Err(InvalidEngineConfig {
                key: "idle_timeout",
                expected: "a positive duration such as \"1m\"",
            });
        }
        if self.flap_window_ms <= 0 {
            return Err(InvalidEngineConfig {
                key: "flap_window",
                expected: "a positive duration such as \"1m\": 0 would count nothing",
            });
        }
        if self.flap_max_attempts == 0 {
            return Err(InvalidEngineConfig {
                key: "flap_max_attempts",
                expected: "at least 1 command",
            });
        }
        if self.max_percentile_samples < 2 {
            return Err(InvalidEngineConfig {
                key: "max_percentile_samples",
                expected: "at least 2 samples",
            });
        }
        if self.max_event_bytes == 0 {
            return Err(InvalidEngineConfig {
                key: "max_event_bytes",
                expected: "a positive number of bytes",
            });
        }
        Ok(())
    }
}

/// Reads `"500ms"`, `"60s"`, `"15m"`, or an integer of seconds, as milliseconds.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Seconds(i64),
        Text(String),
    }
    match Written::deserialize(deserializer)? {
        Written::Seconds(seconds) if seconds >= 0 => seconds
            .checked_mul(1000)
            .ok_or_else(|| serde::de::Error::custom(format!("{seconds} s is too long"))),
        Written::Seconds(seconds) => Err(serde::de::Error::custom(format!(
            "invalid duration {seconds}: expected seconds as a non-negative integer or a string such as \"500ms\", \"60s\", \"2m\""
        ))),
        Written::Text(text) => salve_rules::parse_duration_ms(&text).map_err(serde::de::Error::custom),
    }
}
