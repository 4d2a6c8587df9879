//! The declaration map at the top level of a rule file.

use crate::duration::duration_ms;
use rhai::{Dynamic, Map};

/// What a rule file declares about itself.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// Unique name, `[a-z0-9_]+`; it names incidents, commands and metrics.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// The events this rule looks at; the engine calls the rule only for these.
    pub select: Vec<Selector>,
    /// Parameters passed to `condition(p)`, with their defaults.
    pub params: Map,
    /// The remediation to request when the condition holds, e.g. `restart`.
    pub action: String,
    /// Parameters copied into the command's `params`.
    pub action_params: serde_json::Map<String, serde_json::Value>,
    /// How long to wait for the actuator's acknowledgement; `None` takes the engine default.
    pub ack_timeout_ms: Option<i64>,
    /// How long the condition must hold before it is a failure (Prometheus' `for`, which is a
    /// keyword in Rhai). 0 acts at once. A condition that clears sooner is a transient.
    pub hold_for_ms: i64,
    /// The action that undoes `action` once the entity is healthy again, e.g. `restore_route`
    /// after `reroute`: a paired action.
    pub revert: Option<String>,
    /// How long the clear condition must hold, after the action succeeded, before `revert`.
    pub clear_for_ms: i64,
    /// A label: the rule judges the group of entities sharing its value (e.g. a `service`)
    /// rather than each entity. Incidents and commands are then per group.
    pub group_by: Option<String>,
    /// Open incidents that hold this rule's action back, e.g. on the database its services
    /// share.
    pub inhibited_by: Vec<Inhibitor>,
}

/// An incident elsewhere that inhibits a rule: an open incident of `rule` on any entity whose
/// `upstream_label` has the value that the judged entity's `label` has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inhibitor {
    /// The upstream rule, e.g. `primary_failover`.
    pub rule: String,
    /// The dependent's label that names its upstream, e.g. `database` = `orders`.
    pub label: String,
    /// The upstream's label with that value, e.g. `cluster` = `orders`; `label` by default.
    pub upstream_label: String,
}

/// Picks the events a rule looks at. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `metric`, `health` or `event`.
    pub kind: Option<String>,
    /// The series name, e.g. `process_exit`.
    pub name: Option<String>,
    /// Labels the event must carry with these values.
    pub labels: Vec<(String, String)>,
}

/// A declaration that does not have the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct DeclarationError {
    /// What is wrong, naming the key.
    pub message: String,
    /// The key at fault, so the loader can point at its line.
    pub key: Option<String>,
}

const KEYS: &[&str] = &[
    "name",
    "description",
    "select",
    "params",
    "action",
    "action_params",
    "ack_timeout",
    "hold_for",
    "revert",
    "clear_for",
    "group_by",
    "inhibited_by",
];
const SELECTOR_KEYS: &[&str] = &["kind", "name", "labels"];
const KINDS: &[&str] = &["metric", "health", "event"];

fn error(key: &str, message: String) -> DeclarationError {
    DeclarationError {
        message,
        key: Some(key.to_owned()),
    }
}

impl Declaration {
    /// Reads the value a rule file's top level evaluated to.
    pub fn from_dynamic(value: Dynamic) -> Result<Self, DeclarationError> {
        let type_name = value.type_name();
        let map = value.try_cast::<Map>().ok_or_else(|| DeclarationError {
            message: format!(
                "the file must end with a declaration map #{{ name: ..., select: [...], action: ... }}, but its last value is {type_name}"
            ),
            key: None,
        })?;
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                return Err(error(
                    key,
                    format!("unknown key `{key}` in the declaration; expected one of {KEYS:?}"),
                ));
            }
        }
        let name = required_string(&map, "name")?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(error(
                "name",
                format!("`name` must match [a-z0-9_]+, got {name:?}"),
            ));
        }
        let description = optional_string(&map, "description")?.unwrap_or_default();
        let select = selectors(&map)?;
        let params = match map.get("params") {
            None => Map::new(),
            Some(value) => value.clone().try_cast::<Map>().ok_or_else(|| {
                error(
                    "params",
                    format!("`params` must be a map, got {}", value.type_name()),
                )
            })?,
        };
        let action = required_string(&map, "action")?;
        let action_params = match map.get("action_params") {
            None => serde_json::Map::new(),
            Some(value) => match to_json(value) {
                serde_json::Value::Object(object) => object,
                _ => {
                    return Err(error(
                        "action_params",
                        format!("`action_params` must be a map, got {}", value.type_name()),
                    ))
                }
            },
        };
        let ack_timeout_ms = match map.get("ack_timeout") {
            None => None,
            Some(value) => {
                let ms = duration_ms(value)
                    .map_err(|e| error("ack_timeout", format!("`ack_timeout`: {e}")))?;
                if ms == 0 {
                    return Err(error(
                        "ack_timeout",
                        "`ack_timeout` must be longer than zero".into(),
                    ));
                }
                Some(ms)
            }
        };
        let hold_for_ms = match map.get("hold_for") {
            None => 0,
            Some(value) => {
                duration_ms(value).map_err(|e| error("hold_for", format!("`hold_for`: {e}")))?
            }
        };
        let revert = optional_string(&map, "revert")?;
        if revert.as_deref() == Some(action.as_str()) {
            return Err(error(
                "revert",
                format!("`revert` must undo `action`, so it cannot be `{action}` too"),
            ));
        }
        let clear_for_ms = match map.get("clear_for") {
            None => 0,
            Some(_) if revert.is_none() => {
                return Err(error(
                    "clear_for",
                    "`clear_for` times the `revert` action, and this rule has none".into(),
                ))
            }
            Some(value) => {
                duration_ms(value).map_err(|e| error("clear_for", format!("`clear_for`: {e}")))?
            }
        };
        let group_by = optional_string(&map, "group_by")?;
        if group_by.as_deref() == Some("") {
            return Err(error("group_by", "`group_by` must name a label".into()));
        }
        let inhibited_by = inhibitors(&map)?;
        Ok(Self {
            name,
            description,
            select,
            params,
            action,
            action_params,
            ack_timeout_ms,
            hold_for_ms,
            revert,
            clear_for_ms,
            group_by,
            inhibited_by,
        })
    }
}

fn required_string(map: &Map, key: &str) -> Result<String, DeclarationError> {
    optional_string(map, key)?.ok_or_else(|| error(key, format!("`{key}` is required")))
}

fn optional_string(map: &Map, key: &str) -> Result<Option<String>, DeclarationError> {
    match map.get(key) {
        None => Ok(None),
        Some(value) => value
            .clone()
            .into_immutable_string()
            .map(|s| Some(s.to_string()))
            .map_err(|type_name| error(key, format!("`{key}` must be a string, got {type_name}"))),
    }
}

fn inhibitors(map: &Map) -> Result<Vec<Inhibitor>, DeclarationError> {
    let Some(value) = map.get("inhibited_by") else {
        return Ok(Vec::new());
    };
    let shape = || {
        error(
            "inhibited_by",
            "`inhibited_by` must be an array of #{ rule: \"...\", label: \"...\" } maps, with an optional upstream_label".into(),
        )
    };
    let list = value.clone().into_array().map_err(|_| shape())?;
    list.into_iter()
        .map(|item| {
            let entry = item.try_cast::<Map>().ok_or_else(shape)?;
            if entry
                .keys()
                .any(|k| !["rule", "label", "upstream_label"].contains(&k.as_str()))
            {
                return Err(shape());
            }
            let field = |key: &str| {
                entry
                    .get(key)
                    .and_then(|v| v.clone().into_immutable_string().ok())
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(shape)
            };
            let label = field("label")?;
            let upstream_label = match entry.get("upstream_label") {
                None => label.clone(),
                Some(_) => field("upstream_label")?,
            };
            Ok(Inhibitor {
                rule: field("rule")?,
                label,
                upstream_label,
            })
        })
        .collect()
}

fn selectors(map: &Map) -> Result<Vec<Selector>, DeclarationError> {
    let value = map.get("select").ok_or_else(|| {
        error(
            "select",
            "`select` is required: a list of #{ kind, name, labels } selectors".into(),
        )
    })?;
    let list = value.clone().into_array().map_err(|type_name| {
        error(
            "select",
            format!("`select` must be an array of selector maps, got {type_name}"),
        )
    })?;
    if list.is_empty() {
        return Err(error(
            "select",
            "`select` is empty: the rule would never run".into(),
        ));
    }
    list.into_iter().map(selector).collect()
}

fn selector(value: Dynamic) -> Result<Selector, DeclarationError> {
    let type_name = value.type_name();
    let map = value.try_cast::<Map>().ok_or_else(|| {
        error(
            "select",
            format!("each selector must be a map such as #{{ kind: \"event\", name: \"process_exit\" }}, got {type_name}"),
        )
    })?;
    for key in map.keys() {
        if !SELECTOR_KEYS.contains(&key.as_str()) {
            return Err(error(
                key,
                format!("unknown selector key `{key}`; expected one of {SELECTOR_KEYS:?}"),
            ));
        }
    }
    let kind = optional_string(&map, "kind")?;
    if let Some(kind) = &kind {
        if !KINDS.contains(&kind.as_str()) {
            return Err(error(
                "kind",
                format!("selector kind must be one of {KINDS:?}, got {kind:?}"),
            ));
        }
    }
    let name = optional_string(&map, "name")?;
    let mut labels = Vec::new();
    if let Some(value) = map.get("labels") {
        let label_map = value.clone().try_cast::<Map>().ok_or_else(|| {
            error(
                "labels",
                format!("selector `labels` must be a map, got {}", value.type_name()),
            )
        })?;
        for (key, value) in label_map {
            let text = value.into_immutable_string().map_err(|type_name| {
                error(
                    "labels",
                    format!("selector label `{key}` must be a string, got {type_name}"),
                )
            })?;
            labels.push((key.to_string(), text.to_string()));
        }
        labels.sort();
    }
    if kind.is_none() && name.is_none() && labels.is_empty() {
        return Err(error(
            "select",
            "a selector must set at least one of kind, name, labels".into(),
        ));
    }
    Ok(Selector { kind, name, labels })
}

/// Converts a Rhai value into JSON for commands and decision logs.
pub(crate) fn to_json(value: &Dynamic) -> serde_json::Value {
    use serde_json::Value;
    if value.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = value.as_int() {
        return Value::from(i);
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return Value::Array(array.iter().map(to_json).collect());
    }
    if let Some(map) = value.read_lock::<Map>() {
        return Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        );
    }
    Value::String(value.to_string())
}
