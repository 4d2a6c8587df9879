//! `salve.toml`: every key, its default, and `SALVE_SECTION__KEY` environment overrides.

use salve_connectors::{KafkaConfig, TopicsConfig};
use salve_engine::EngineConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration. Every table and key is optional; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Brokers, consumer group, commit interval, client properties.
    pub kafka: KafkaConfig,
    /// Topic names and creation.
    pub topics: TopicsConfig,
    /// Windows, limits and timeouts of the decision pipeline.
    pub engine: EngineConfig,
    /// Where the rules come from.
    pub rules: RulesConfig,
    /// Logging.
    pub log: LogConfig,
    /// The gRPC API.
    pub api: salve_api::ApiConfig,
    /// The Prometheus endpoint.
    pub metrics: salve_api::MetricsConfig,
}

/// The `[rules]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// A directory of `.rhai` files. When absent, the rules shipped inside salve are used.
    pub dir: Option<PathBuf>,
    /// `[rules.params.<rule>]`: values that replace a rule's declared parameter defaults.
    pub params: salve_rules::ParamOverrides,
    /// Reload the rules when a file in `dir` changes. SIGHUP and `salve ctl reload` reload
    /// them whatever this says.
    pub watch: bool,
    /// How long the directory must be quiet after a change before the reload: an editor's
    /// burst of writes, or a `git checkout`, reloads once.
    #[serde(rename = "reload_debounce", with = "humantime_serde_ms")]
    pub reload_debounce_ms: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            params: salve_rules::ParamOverrides::new(),
            watch: true,
            reload_debounce_ms: 500,
        }
    }
}

/// `"500ms"`-style durations for millisecond fields.
mod humantime_serde_ms {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "expected a duration like \"500ms\" or \"2s\", got {text:?}: {e}"
                ))
            })
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `salve=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an override has a bad key or value.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, and any environment overrides applied.
        origin: String,
        /// toml's message, naming the key and what was expected.
        message: String,
    },
    /// An environment override names no table, e.g. `SALVE___X`.
    #[error(
        "environment variable {var}: expected SALVE_<TABLE>__<KEY>, e.g. SALVE_KAFKA__BROKERS"
    )]
    BadVariable {
        /// The variable.
        var: String,
    },
}

/// The prefix of environment overrides; `__` separates tables from keys.
pub const ENV_PREFIX: &str = "SALVE_";

/// The top-level tables, for catching `SALVE_KAFKA_BROKERS` written for `SALVE_KAFKA__BROKERS`.
const TABLES: &[&str] = &[
    "kafka", "topics", "engine", "rules", "log", "api", "metrics",
];

impl Config {
    /// Reads `path` (if any), applies `SALVE_TABLE__KEY` overrides from `env`, and checks it all.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let file = path.map_or("defaults".to_owned(), |p| p.display().to_string());
        // Check the file on its own first: only parsing from text keeps line numbers.
        let invalid_file = |e: toml::de::Error| ConfigError::Invalid {
            origin: file.clone(),
            message: e.to_string(),
        };
        toml::from_str::<Config>(&text).map_err(invalid_file)?;
        let mut table: toml::Table = toml::from_str(&text).map_err(invalid_file)?;
        let mut applied = Vec::new();
        for (var, value) in env {
            let Some(path) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Only SALVE_TABLE__KEY names configuration; other SALVE_ variables belong to
            // tools around salve (e.g. SALVE_TEST_BROKERS). A single underscore after a table
            // name is a typo that would otherwise be ignored in silence.
            if !path.contains("__") {
                let lower = path.to_lowercase();
                if TABLES
                    .iter()
                    .any(|table| lower.starts_with(&format!("{table}_")))
                {
                    return Err(ConfigError::BadVariable { var });
                }
                continue;
            }
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::BadVariable { var });
            }
            set_path(&mut table, &keys, parse_value(&value));
            applied.push(var);
        }
        let origin = if applied.is_empty() {
            file
        } else {
            format!("{file} with {}", applied.join(", "))
        };
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.clone(),
            message,
        };
        config
            .kafka
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        config
            .topics
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        config
            .engine
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }
}

/// An override's value: TOML when it parses as such (`42`, `true`, `["a"]`), else a string.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}
