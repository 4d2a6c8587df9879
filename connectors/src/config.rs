//! The `[kafka]` and `[topics]` tables of `salve.toml`.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How salve talks to Kafka.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port,...`. Empty starts the embedded broker (for trying salve out and tests).
    pub brokers: String,
    /// The consumer group that salve processes share; partitions are spread among them.
    pub group_id: String,
    /// How often processed offsets are committed, after their outputs are flushed.
    #[serde(
        rename = "commit_interval",
        deserialize_with = "salve_engine::config::duration"
    )]
    pub commit_interval_ms: i64,
    /// Extra librdkafka consumer properties, e.g. `"security.protocol" = "ssl"`.
    #[serde(deserialize_with = "properties")]
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka producer properties, for both producers; `linger.ms` (also known as
    /// `queue.buffering.max.ms`) only for the one of commands and escalations.
    #[serde(deserialize_with = "properties")]
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producer of decisions, changelog records and dead
    /// letters, over `producer`. It batches: `linger.ms` is 100 unless set here.
    #[serde(deserialize_with = "properties")]
    pub record_producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "salve".into(),
            commit_interval_ms: 1_000,
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            record_producer: BTreeMap::new(),
        }
    }
}

/// A librdkafka client configuration: the bootstrap servers, then salve's `defaults`, then the
/// user's `overrides` from `[kafka.consumer]` or `[kafka.producer]`, which win. A default is
/// left out when the user sets its property under another name (`queue.buffering.max.ms` for
/// `linger.ms`): librdkafka would take whichever name it met last, and rust-rdkafka hands
/// them over in no fixed order.
pub(crate) fn client_config(
    bootstrap: &str,
    defaults: &[(&str, String)],
    overrides: &BTreeMap<String, String>,
) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in defaults {
        let overridden = overrides.keys().any(|k| canonical(k) == canonical(key));
        if !overridden {
            config.set(*key, value);
        }
    }
    for (key, value) in overrides {
        config.set(key, value);
    }
    config
}

/// What to do about a TLS setting in a build without TLS.
const NO_TLS: &str =
    "this salve was built without TLS, which TLS and SASL need: build it with the cargo feature `tls` (see the README)";

/// librdkafka's second names for its properties, each with the name it stands for
/// (`rdkafka_conf.c`, `_RK_C_ALIAS`).
const ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("sasl.mechanism", "sasl.mechanisms"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.id",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.client.secret",
    ),
    ("max.partition.fetch.bytes", "fetch.message.max.bytes"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
    ("acks", "request.required.acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("enable.auto.commit", "auto.commit.enable"),
];

/// The one name of a property that librdkafka knows by two.
pub(crate) fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| target)
}

/// Whether librdkafka treats a property as a secret, or its name says it is one: its value is
/// never repeated in an error.
fn secret(name: &str) -> bool {
    [
        "password",
        "secret",
        "passphrase",
        "key",
        "sasl.username",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// librdkafka properties are strings, but `linger.ms = 5` should not need quotes.
fn properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Integer(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// The topics salve reads and writes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Telemetry topics, consumed in the group.
    pub telemetry: Vec<String>,
    /// The default actuator topic for commands.
    pub commands: String,
    /// Per-action actuator topics, e.g. `restart = "salve.commands.restart"`.
    pub actuators: BTreeMap<String, String>,
    /// Actuators' acknowledgements.
    pub acks: String,
    /// The decision log.
    pub decisions: String,
    /// Incidents handed to a human: paging and ticketing systems consume these.
    pub escalations: String,
    /// Open incidents per subject, compacted, partitioned like the telemetry: restored when a
    /// partition is assigned. It needs at least as many partitions as each telemetry topic.
    pub changelog: String,
    /// Messages that could not be read, with the reason in headers.
    pub dead_letter: String,
    /// Dead-lettered payloads larger than this keep only their head; a header gives the size.
    pub dead_letter_max_bytes: usize,
    /// Create missing topics at start.
    pub create: bool,
    /// Partitions for created topics.
    pub partitions: i32,
    /// Replication factor for created topics.
    pub replication: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            telemetry: vec!["salve.telemetry".into()],
            commands: "salve.commands".into(),
            actuators: BTreeMap::new(),
            acks: "salve.acks".into(),
            decisions: "salve.decisions".into(),
            escalations: "salve.escalations".into(),
            changelog: "salve.changelog".into(),
            dead_letter: "salve.deadletter".into(),
            dead_letter_max_bytes: 1_000_000,
            create: true,
            partitions: 4,
            replication: 1,
        }
    }
}

/// A configuration value that breaks an invariant serde cannot check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {expected}")]
pub struct InvalidConfig {
    /// The key at fault, e.g. `topics.telemetry`.
    pub key: &'static str,
    /// What was expected.
    pub expected: Cow<'static, str>,
}

impl TopicsConfig {
    /// Every topic named `<prefix>.<role>` (`<prefix>.telemetry`, `<prefix>.commands`, ...),
    /// the rest as the defaults: for a test's own topics, or a second salve beside the first.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            telemetry: vec![format!("{prefix}.telemetry")],
            commands: format!("{prefix}.commands"),
            acks: format!("{prefix}.acks"),
            decisions: format!("{prefix}.decisions"),
            escalations: format!("{prefix}.escalations"),
            changelog: format!("{prefix}.changelog"),
            dead_letter: format!("{prefix}.deadletter"),
            ..Self::default()
        }
    }

    /// The topic for a command's action.
    pub fn for_action(&self, action: &str) -> &str {
        self.actuators.get(action).unwrap_or(&self.commands)
    }

    /// Every topic salve touches, for creation.
    pub fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.telemetry.iter().map(String::as_str).collect();
        all.extend([
            self.commands.as_str(),
            self.acks.as_str(),
            self.decisions.as_str(),
            self.escalations.as_str(),
            self.changelog.as_str(),
            self.dead_letter.as_str(),
        ]);
        all.extend(self.actuators.values().map(String::as_str));
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let outputs = [
            &self.commands,
            &self.acks,
            &self.decisions,
            &self.escalations,
            &self.changelog,
            &self.dead_letter,
        ];
        if outputs
            .into_iter()
            .chain(self.actuators.values())
            .any(|topic| self.telemetry.contains(topic))
        {
            return Err(InvalidConfig {
                key: "topics.telemetry",
                expected: "topics that salve does not also write to (commands, acks, decisions, escalations, changelog, dead_letter, actuators): it would read its own output".into(),
            });
        }
        if self.telemetry.is_empty() || self.telemetry.iter().any(String::is_empty) {
            return Err(InvalidConfig {
                key: "topics.telemetry",
                expected: "a non-empty list of topic names".into(),
            });
        }
        if self.telemetry.len() > usize::from(u16::MAX) {
            return Err(InvalidConfig {
                key: "topics.telemetry",
                expected: "at most 65535 topics".into(),
            });
        }
        if self.partitions < 1 {
            return Err(InvalidConfig {
                key: "topics.partitions",
                expected: "at least 1".into(),
            });
        }
        if self.replication < 1 {
            return Err(InvalidConfig {
                key: "topics.replication",
                expected: "at least 1".into(),
            });
        }
        Ok(())
    }
}

/// librdkafka properties that salve owns: changing them would break at-least-once delivery.
/// Their other names (`metadata.broker.list`, `auto.commit.enable`) are refused too.
pub const RESERVED_CONSUMER_PROPERTIES: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// Producer properties that salve owns: the brokers come from `kafka.brokers`, and salve
/// sends outside transactions, which a transactional producer refuses.
pub const RESERVED_PRODUCER_PROPERTIES: &[&str] = &["bootstrap.servers", "transactional.id"];

/// A table's reserved properties, and why they are.
type Reserved = (&'static [&'static str], &'static str);

const CONSUMER_RESERVED: Reserved = (
    RESERVED_CONSUMER_PROPERTIES,
    "salve commits offsets itself, after their outputs are delivered (use kafka.group_id and kafka.brokers)",
);
const PRODUCER_RESERVED: Reserved = (
    RESERVED_PRODUCER_PROPERTIES,
    "salve sends outside transactions, to the brokers of kafka.brokers",
);

/// Checks each property of a table as librdkafka will when the client is created, so that a
/// misspelt name or a bad value is reported with its table when the configuration loads
/// rather than by a client deep inside a run. Checks that span properties (`acks=1` with
/// `enable.idempotence`) are librdkafka's, when salve creates the client.
fn check_properties(
    key: &'static str,
    properties: &BTreeMap<String, String>,
    (reserved, why): Reserved,
) -> Result<(), InvalidConfig> {
    let refuse = |expected: String| InvalidConfig {
        key,
        expected: expected.into(),
    };
    if let Some(owned) = properties
        .keys()
        .find(|k| reserved.iter().any(|r| canonical(r) == canonical(k)))
    {
        return Err(refuse(format!(
            "no {owned:?} ({}, under any of their names): {why}",
            reserved.join(", ")
        )));
    }
    for (index, name) in properties.keys().enumerate() {
        if let Some(twin) = properties
            .keys()
            .skip(index + 1)
            .find(|other| canonical(other) == canonical(name))
        {
            return Err(refuse(format!(
                "each property once: {name:?} and {twin:?} are two names of one property"
            )));
        }
    }
    if let Some((name, _)) = properties
        .iter()
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        return Err(refuse(format!("no NUL character in {name:?} or its value")));
    }
    // librdkafka accepts this one without OpenSSL and fails only when the client starts.
    if let Some(protocol) = properties.get("security.protocol") {
        let encrypted = ["ssl", "sasl_ssl"].contains(&protocol.to_ascii_lowercase().as_str());
        if encrypted && !cfg!(feature = "tls") {
            return Err(refuse(format!(
                "a security.protocol this salve was built with, not {protocol:?}: {NO_TLS}"
            )));
        }
    }
    let mut config = rdkafka::ClientConfig::new();
    for (name, value) in properties {
        config.set(name, value);
    }
    config.create_native_config().map_err(|error| {
        refuse(match error {
            rdkafka::error::KafkaError::ClientConfig(_, description, name, value) => {
                let (value, description) = if secret(&name) && !value.is_empty() {
                    let description = if description.contains(&value) {
                        "librdkafka refused it".to_owned()
                    } else {
                        description
                    };
                    ("(hidden)".to_owned(), description)
                } else {
                    (format!("{value:?}"), description)
                };
                let hint = if description.contains("not available at build time") {
                    format!("; {NO_TLS}")
                } else {
                    String::new()
                };
                format!(
                    "librdkafka properties it accepts, not {name:?} = {value}: {description}{hint}"
                )
            }
            other => format!("librdkafka properties it accepts: {other}"),
        })
    })?;
    Ok(())
}

impl KafkaConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check_properties("kafka.consumer", &self.consumer, CONSUMER_RESERVED)?;
        check_properties("kafka.producer", &self.producer, PRODUCER_RESERVED)?;
        check_properties(
            "kafka.record_producer",
            &self.record_producer,
            PRODUCER_RESERVED,
        )?;
        if self.group_id.is_empty() {
            return Err(InvalidConfig {
                key: "kafka.group_id",
                expected: "a non-empty consumer group name".into(),
            });
        }
        if self.commit_interval_ms <= 0 {
            return Err(InvalidConfig {
                key: "kafka.commit_interval",
                expected: "a positive duration such as \"1s\"".into(),
            });
        }
        Ok(())
    }
}
