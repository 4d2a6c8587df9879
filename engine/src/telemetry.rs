//! The telemetry event: its wire form and its strict, allocation-light decoder.
//!
//! The happy path deserializes into borrowed strings in one pass. Only when that fails does the
//! decoder parse again, into a generic value, to name the field at fault: bad input is rare, and
//! its reason must be clear.

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;

mod scan;

/// The telemetry wire-format version this build reads.
pub const TELEMETRY_VERSION: u64 = 1;

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A numeric sample: `value` is required.
    Metric,
    /// A health check: `status` is required.
    Health,
    /// Something happened, e.g. `process_exit`; `value` is optional.
    Event,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metric => "metric",
            Kind::Health => "health",
            Kind::Event => "event",
        }
    }
}

/// A health check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Healthy.
    Pass,
    /// Unhealthy.
    Fail,
}

/// Labels in wire order, borrowed from the input unless one of them holds an escape.
///
/// The borrowed form is two words a string and holds up to four labels inline, so decoding
/// a typical event allocates nothing for them and moves little: a `Cow` per string made each
/// label half as big again, and its copies showed in the decoder's profile.
#[derive(Debug, Clone)]
pub struct Labels<'a>(Repr<'a>);

#[derive(Debug, Clone)]
enum Repr<'a> {
    Borrowed(SmallVec<[(&'a str, &'a str); 4]>),
    /// Some key or value held an escape, so every label was copied out unescaped.
    Owned(Vec<(Box<str>, Box<str>)>),
}

impl Default for Labels<'_> {
    fn default() -> Self {
        Labels(Repr::Borrowed(SmallVec::new()))
    }
}

impl PartialEq for Labels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a> Labels<'a> {
    /// Labels that borrow their keys and values.
    pub fn borrowed(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Labels(Repr::Borrowed(pairs.into_iter().collect()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|&(k, _)| k == key).map(|(_, v)| v)
    }

    /// The labels in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (borrowed, owned) = match &self.0 {
            Repr::Borrowed(pairs) => (pairs.as_slice(), &[][..]),
            Repr::Owned(pairs) => (&[][..], pairs.as_slice()),
        };
        let borrowed = borrowed.iter().map(|&(k, v)| (k, v));
        borrowed.chain(owned.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Borrowed(pairs) => pairs.len(),
            Repr::Owned(pairs) => pairs.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the labels borrow their strings (from the decoded message, or from what was
    /// given to [`Labels::borrowed`]) rather than own unescaped copies.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.0, Repr::Borrowed(_))
    }
}

/// A string that borrows from the input unless it holds escapes (serde's `Cow` alone never borrows).
#[derive(Debug, Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for LabelsVisitor<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs: SmallVec<[(Cow<'a, str>, Cow<'a, str>); 4]> = SmallVec::new();
                while let Some((BorrowedStr(key), BorrowedStr(value))) = map.next_entry()? {
                    pairs.push((key, value));
                }
                let borrowed: Option<SmallVec<_>> = pairs
                    .iter()
                    .map(|pair| match pair {
                        (Cow::Borrowed(k), Cow::Borrowed(v)) => Some((*k, *v)),
                        _ => None,
                    })
                    .collect();
                Ok(Labels(match borrowed {
                    Some(borrowed) => Repr::Borrowed(borrowed),
                    None => Repr::Owned(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.into_owned().into(), v.into_owned().into()))
                            .collect(),
                    ),
                }))
            }
        }
        deserializer.deserialize_map(LabelsVisitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawEvent<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    entity: Option<BorrowedStr<'a>>,
    /// The JSON text of `ts`, as written: a number, or a string with its quotes.
    #[serde(borrow, default, deserialize_with = "json_text")]
    ts: Option<&'a str>,
    kind: Option<Kind>,
    #[serde(borrow)]
    name: Option<BorrowedStr<'a>>,
    value: Option<f64>,
    status: Option<HealthStatus>,
    #[serde(borrow)]
    labels: Option<Labels<'a>>,
    #[serde(borrow, default)]
    attrs: Option<&'a RawValue>,
}

/// The JSON text of a value; `null` is absent.
fn json_text<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de str>, D::Error> {
    let raw: Option<&'de RawValue> = Option::deserialize(deserializer)?;
    Ok(raw.map(RawValue::get))
}

/// A decoded telemetry event that borrows from the message it came from.
#[derive(Debug, Clone)]
pub struct TelemetryEvent<'a> {
    /// The entity it is about, e.g. `checkout/pod-1`.
    pub entity: Cow<'a, str>,
    /// Event time, ms since the epoch; `None` when the producer gave none.
    pub ts_ms: Option<i64>,
    /// What it reports.
    pub kind: Kind,
    /// The series name, e.g. `latency_ms`.
    pub name: Cow<'a, str>,
    /// The sample for metrics; optional for events; 1 or 0 for health pass or fail.
    pub value: Option<f64>,
    /// The health outcome, for health checks.
    pub status: Option<HealthStatus>,
    /// Labels such as `service`, `cluster`, `role`, `zone`.
    pub labels: Labels<'a>,
    /// Free JSON, kept as raw text.
    pub attrs: Option<&'a RawValue>,
}

/// Why a message is not a valid telemetry event. The reason travels to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than the configured limit.
    #[error("message is {size} bytes, over the limit of {limit} bytes (engine.max_event_bytes)")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8 JSON, or not an object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type or value.
    #[error("field `{field}`: {problem}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What was expected.
        problem: String,
    },
    /// The Kafka key is not what the event's partitioning calls for: its entity, or the value
    /// of its first `engine.partition_by` label.
    #[error("the message key {key:?} differs from the {source_field} {expected:?}")]
    KeyMismatch {
        /// The key.
        key: String,
        /// What the key should have been.
        expected: String,
        /// Where that came from: `field entity`, or `label service`.
        source_field: String,
    },
}

/// Why the engine did not take a message: it could not be read, or its time is out of bounds.
/// The driver dead-letters it with [`Rejection::code`] and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Not a valid telemetry event.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// Older than `engine.allowed_lateness` behind its entity's newest event.
    #[error("late: ts {ts} is {behind_ms} ms behind the newest event of {entity}, more than engine.allowed_lateness ({allowed_ms} ms)")]
    Late {
        /// The entity.
        entity: String,
        /// The event's time.
        ts: i64,
        /// How far behind.
        behind_ms: i64,
        /// The allowed lateness.
        allowed_ms: i64,
    },
    /// Further ahead of the processing clock than `engine.max_future`.
    #[error("future: ts {ts} is {ahead_ms} ms ahead of the processing clock, more than engine.max_future ({max_ms} ms); is the producer's clock right?")]
    Future {
        /// The event's time.
        ts: i64,
        /// How far ahead.
        ahead_ms: i64,
        /// The limit.
        max_ms: i64,
    },
}

impl Rejection {
    /// A short, stable code for metrics and the dead-letter header.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Invalid(error) => error.code(),
            Rejection::Late { .. } => "late",
            Rejection::Future { .. } => "future",
        }
    }
}

impl DecodeError {
    /// A short, stable code for metrics and the dead-letter header.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::Missing(_) => "missing_field",
            DecodeError::Invalid { .. } => "invalid_field",
            DecodeError::KeyMismatch { .. } => "key_mismatch",
        }
    }
}

/// Decodes one message. `key`, when present, must equal the `entity` field.
pub fn decode<'a>(
    bytes: &'a [u8],
    key: Option<&[u8]>,
    max_bytes: usize,
) -> Result<TelemetryEvent<'a>, DecodeError> {
    decode_partitioned(bytes, key, max_bytes, &[])
}

/// Decodes one message. `key`, when present, must equal the value of the first label of
/// `partition_by` that the event carries, or its `entity` field when it carries none of them.
/// Keying a group's events by the group's label puts the whole group on one partition, where
/// group rules can see all of it.
pub fn decode_partitioned<'a>(
    bytes: &'a [u8],
    key: Option<&[u8]>,
    max_bytes: usize,
    partition_by: &[String],
) -> Result<TelemetryEvent<'a>, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    // One UTF-8 check for the whole message: parsing from bytes would check each borrowed
    // string again.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DecodeError::NotJson(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    // Most events are plain: the scanner reads them, and leaves anything else to serde.
    let mut raw = RawEvent::default();
    if scan::scan(text, &mut raw).is_none() {
        raw = serde_json::from_str(text).map_err(|_| explain(bytes))?;
    }
    let fields = validate(&mut raw)?;
    if let Some(key) = key {
        let labels = raw.labels.as_ref();
        let by_label = partition_by.iter().find_map(|label| {
            let value = labels?.get(label)?;
            Some((label, value))
        });
        let expected = by_label.map_or(fields.entity.as_ref(), |(_, value)| value);
        if key != expected.as_bytes() {
            // Named only here: formatting it for every event cost an allocation each.
            let source_field = match by_label {
                Some((label, _)) => format!("label {label}"),
                None => "field entity".to_owned(),
            };
            return Err(DecodeError::KeyMismatch {
                key: String::from_utf8_lossy(key).into_owned(),
                expected: expected.to_owned(),
                source_field,
            });
        }
    }
    // Built here, in the caller's slot: assembled inside `validate`, the event and its
    // labels were copied once more on the way out through its `Result`.
    Ok(TelemetryEvent {
        entity: fields.entity,
        ts_ms: fields.ts_ms,
        kind: fields.kind,
        name: fields.name,
        value: fields.value,
        status: fields.status,
        labels: raw.labels.take().unwrap_or_default(),
        attrs: raw.attrs,
    })
}

/// An event's checked fields but its labels and attrs, which stay in the [`RawEvent`].
struct Validated<'a> {
    entity: Cow<'a, str>,
    ts_ms: Option<i64>,
    kind: Kind,
    name: Cow<'a, str>,
    value: Option<f64>,
    status: Option<HealthStatus>,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Checks the fields of `raw` and takes out those it checked.
fn validate<'a>(raw: &mut RawEvent<'a>) -> Result<Validated<'a>, DecodeError> {
    if let Some(v) = raw.v {
        if v != TELEMETRY_VERSION {
            return Err(invalid(
                "v",
                format!(
                    "version {v} is not supported; this build reads version {TELEMETRY_VERSION}"
                ),
            ));
        }
    }
    let entity = raw.entity.take().ok_or(DecodeError::Missing("entity"))?.0;
    if entity.is_empty() {
        return Err(invalid("entity", "must not be empty"));
    }
    let kind = raw.kind.ok_or(DecodeError::Missing("kind"))?;
    let name = raw.name.take().ok_or(DecodeError::Missing("name"))?.0;
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    let ts_ms = match raw.ts {
        None => None,
        Some(raw_ts) => {
            let ts = parse_ts(raw_ts).ok_or_else(|| {
                invalid(
                    "ts",
                    format!(
                        "{} is neither ms since the epoch nor an RFC 3339 timestamp",
                        raw_ts
                    ),
                )
            })?;
            if !(0..=MAX_TS_MS).contains(&ts) {
                return Err(invalid(
                    "ts",
                    format!("{ts} is outside 1970..9999 in ms since the epoch (microseconds or nanoseconds?)"),
                ));
            }
            Some(ts)
        }
    };
    let (value, status) = match kind {
        Kind::Metric => {
            let value = raw.value.ok_or(DecodeError::Missing("value"))?;
            (Some(value), raw.status)
        }
        Kind::Health => {
            let status = raw.status.ok_or(DecodeError::Missing("status"))?;
            let value = match status {
                HealthStatus::Pass => 1.0,
                HealthStatus::Fail => 0.0,
            };
            (Some(value), Some(status))
        }
        Kind::Event => (raw.value, raw.status),
    };
    if value.is_some_and(|v| !v.is_finite()) {
        return Err(invalid("value", "must be a finite number"));
    }
    Ok(Validated {
        entity,
        ts_ms,
        kind,
        name,
        value,
        status,
    })
}

/// The latest event time accepted: 9999-12-31T23:59:59.999Z. A larger `ts` is almost always
/// microseconds or nanoseconds sent as milliseconds; taking it would push the partition's
/// event time so far ahead that every window looked empty.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Reads the raw JSON of `ts`: an integer of ms, or a quoted RFC 3339 string; `null` is absent.
fn parse_ts(json: &str) -> Option<i64> {
    if let Some(quoted) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
        return parse_rfc3339_ms(quoted);
    }
    json.parse::<i64>().ok()
}

/// Parses RFC 3339, e.g. `2026-11-24T10:00:00.250Z`, into ms since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The slow path: says which field broke the fast decoder.
fn explain(bytes: &[u8]) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => return DecodeError::NotJson(e.to_string()),
    };
    let Some(object) = value.as_object() else {
        return DecodeError::NotJson(format!("expected an object, got {}", type_name(&value)));
    };
    let expect = |field: &'static str, ok: bool, expected: &str| -> Result<(), DecodeError> {
        match object.get(field) {
            Some(found) if !found.is_null() && !ok => Err(invalid(
                field,
                format!("expected {expected}, got {}", type_name(found)),
            )),
            _ => Ok(()),
        }
    };
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    let checks = [
        expect(
            "v",
            field("v").is_none_or(|v| v.is_u64()),
            "an unsigned integer",
        ),
        expect(
            "entity",
            field("entity").is_none_or(|v| v.is_string()),
            "a string",
        ),
        expect(
            "ts",
            field("ts").is_none_or(|v| v.is_i64() || v.is_string()),
            "ms since the epoch (an integer) or an RFC 3339 string",
        ),
        expect(
            "kind",
            field("kind").is_none_or(|v| matches!(v.as_str(), Some("metric" | "health" | "event"))),
            "one of \"metric\", \"health\", \"event\"",
        ),
        expect(
            "name",
            field("name").is_none_or(|v| v.is_string()),
            "a string",
        ),
        expect(
            "value",
            field("value").is_none_or(|v| v.is_number()),
            "a number",
        ),
        expect(
            "status",
            field("status").is_none_or(|v| matches!(v.as_str(), Some("pass" | "fail"))),
            "\"pass\" or \"fail\"",
        ),
        expect(
            "labels",
            field("labels").is_none_or(|v| {
                v.as_object()
                    .is_some_and(|m| m.values().all(|x| x.is_string()))
            }),
            "a map of strings to strings",
        ),
    ];
    if let Some(Err(error)) = checks.into_iter().find(Result::is_err) {
        return error;
    }
    DecodeError::NotJson("the event does not match the telemetry schema".into())
}

fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
