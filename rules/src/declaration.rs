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
    /// After an actuator reports success, how long the condition must stay away before the
    /// incident is resolved. If it holds again meanwhile, the attempt failed. 0 trusts the ack.
    pub verify_for_ms: i64,
    /// How long after the fix the telemetry may still show the failure (a window that still
    /// holds data from before it) without failing the verification.
    pub settle_ms: i64,
    /// How often a failed attempt is tried again, and after what delay.
    pub retry: Retry,
    /// The actions to climb to, in order, once `action` has failed `retry.attempts` times.
    /// After the last, salve escalates to a human.
    pub ladder: Vec<Step>,
    /// This rule's flap limit, when it differs from the engine's.
    pub flap: Option<Flap>,
    /// A shadow rule runs beside the active ones, and logs the commands it would send
    /// (`would_command` decisions) without sending them: `mode: "shadow"`.
    pub shadow: bool,
    /// Limits on how much of a group this rule acts on at once.
    pub blast_radius: Option<BlastRadius>,
    /// Actions that wait for an operator's approval before they are sent.
    pub approval: Option<Approval>,
    /// When many members of a group fail at once, act on a canary share first and widen in
    /// waves as each is verified.
    pub canary: Option<Canary>,
    /// Stop acting, and escalate instead, once the rule's fixes fail too often.
    pub disable_below: Option<DisableBelow>,
}

/// A rule whose verified success rate, over at least `min_attempts` finished attempts,
/// falls below `success_rate` stops acting: each incident it opens escalates instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisableBelow {
    /// The least share of finished attempts that must succeed.
    pub success_rate: f64,
    /// How many attempts must have finished before the rate is trusted.
    pub min_attempts: u32,
}

/// Canary waves: when at least `min_failing` members of a group fail for the rule at once,
/// the rule acts on `waves[0]` of them first (at least one), then, once all it acted on are
/// resolved, on `waves[1]`, and so on. A canary that escalates halts the rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// The label that forms the groups, e.g. `service`.
    pub group: String,
    /// Cumulative shares of the failing members, increasing, the last 1.0.
    pub waves: Vec<f64>,
    /// How many members must fail at once for a rollout to start.
    pub min_failing: u32,
}

/// Human approval: the incident waits in `awaiting_approval` until an operator approves or
/// denies it (`salve ctl approve|deny`), and escalates if nobody does within `timeout_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// The actions that need it; empty means every action of the rule.
    pub actions: Vec<String>,
    /// How long to wait for an answer.
    pub timeout_ms: i64,
}

impl Approval {
    /// Whether `action` needs approval.
    pub fn covers(&self, action: &str) -> bool {
        self.actions.is_empty() || self.actions.iter().any(|a| a == action)
    }
}

/// How much of a group (the entities sharing a label's value) a rule may act on at once.
#[derive(Debug, Clone, PartialEq)]
pub struct BlastRadius {
    /// The label that forms the groups, e.g. `service`.
    pub group: String,
    /// At most this many members under remediation at once; the others wait their turn.
    pub max_in_flight: Option<u32>,
    /// At most this share of the members under remediation at once, and always at least
    /// one: a limit that grows with the group, where `max_in_flight` is fixed.
    pub max_in_flight_share: Option<f64>,
    /// When more than this share of the members fail at once, automation freezes for the
    /// group and salve escalates a storm: a shared cause is likelier than many broken members.
    pub storm_share: f64,
}

impl BlastRadius {
    /// How many of a group of `members` may be under remediation at once: the stricter of
    /// `max_in_flight` and `max_in_flight_share`, a share rounding down but never to zero
    /// (a group must be able to heal); `None` when neither is set.
    pub fn in_flight_limit(&self, members: u32) -> Option<u32> {
        let by_share = self
            .max_in_flight_share
            .map(|share| ((share * f64::from(members)).floor() as u32).max(1));
        match (self.max_in_flight, by_share) {
            (Some(count), Some(share)) => Some(count.min(share)),
            (count, share) => count.or(share),
        }
    }
}

/// Retries of a failed attempt, with exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts of each action in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The delay before the first retry.
    pub backoff_ms: i64,
    /// Each further retry waits this many times longer.
    pub factor: f64,
    /// The longest delay.
    pub max_backoff_ms: i64,
    /// A random share of the delay, up to this fraction, added so that many incidents that
    /// failed together do not retry together.
    pub jitter: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff_ms: 10_000,
            factor: 2.0,
            max_backoff_ms: 300_000,
            jitter: 0.1,
        }
    }
}

/// One rung of an escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The action, e.g. `restore`.
    pub action: String,
    /// Its own ack timeout; `None` takes the rule's.
    pub ack_timeout_ms: Option<i64>,
}

/// Flap protection: more than `max_attempts` commands of one action on one entity within
/// `within_ms` stop automation for it and escalate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    /// Commands allowed in the window.
    pub max_attempts: u32,
    /// The window.
    pub within_ms: i64,
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
    "verify_for",
    "settle",
    "retry",
    "ladder",
    "flap",
    "mode",
    "blast_radius",
    "approval",
    "canary",
    "disable_below",
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
        let verify_for_ms = match map.get("verify_for") {
            None => 0,
            Some(value) => {
                duration_ms(value).map_err(|e| error("verify_for", format!("`verify_for`: {e}")))?
            }
        };
        let settle_ms = match map.get("settle") {
            None => 0,
            Some(_) if verify_for_ms == 0 => {
                return Err(error(
                    "settle",
                    "`settle` delays the verification, and this rule has no `verify_for`".into(),
                ))
            }
            Some(value) => {
                duration_ms(value).map_err(|e| error("settle", format!("`settle`: {e}")))?
            }
        };
        if settle_ms >= verify_for_ms && verify_for_ms > 0 {
            return Err(error(
                "settle",
                "`settle` must be shorter than `verify_for`, or nothing would be verified".into(),
            ));
        }
        let retry = retry(&map)?;
        let ladder = ladder(&map)?;
        if revert.is_some() && (verify_for_ms > 0 || !ladder.is_empty()) {
            return Err(error(
                "revert",
                "a paired action (`revert`) is undone by its clear condition, so it takes no `verify_for` or `ladder`".into(),
            ));
        }
        let flap = flap(&map)?;
        let blast_radius = blast_radius(&map)?;
        let approval = approval(&map)?;
        let canary = canary(&map)?;
        let disable_below = disable_below(&map)?;
        let shadow = match optional_string(&map, "mode")?.as_deref() {
            None | Some("active") => false,
            Some("shadow") => true,
            Some(other) => {
                return Err(error(
                    "mode",
                    format!("`mode` must be \"active\" or \"shadow\", got {other:?}"),
                ))
            }
        };
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
            verify_for_ms,
            settle_ms,
            retry,
            ladder,
            flap,
            shadow,
            blast_radius,
            approval,
            canary,
            disable_below,
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

/// The entries of a map-valued key, checked against the keys it allows.
fn sub_map(
    map: &Map,
    key: &str,
    allowed: &[&str],
    example: &str,
) -> Result<Option<Map>, DeclarationError> {
    let Some(value) = map.get(key) else {
        return Ok(None);
    };
    let entries = value.clone().try_cast::<Map>().ok_or_else(|| {
        error(
            key,
            format!(
                "`{key}` must be a map such as {example}, got {}",
                value.type_name()
            ),
        )
    })?;
    if let Some(unknown) = entries.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(error(
            key,
            format!("unknown key `{unknown}` in `{key}`; expected one of {allowed:?}"),
        ));
    }
    Ok(Some(entries))
}

fn positive_int(entries: &Map, key: &str, field: &str) -> Result<Option<u32>, DeclarationError> {
    entries
        .get(field)
        .map(|v| {
            v.as_int()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| error(key, format!("`{key}.{field}` must be a positive integer")))
        })
        .transpose()
}

fn duration_in(entries: &Map, key: &str, field: &str) -> Result<Option<i64>, DeclarationError> {
    entries
        .get(field)
        .map(|v| duration_ms(v).map_err(|e| error(key, format!("`{key}.{field}`: {e}"))))
        .transpose()
}

fn fraction_in(
    entries: &Map,
    key: &str,
    field: &str,
    at_least: f64,
) -> Result<Option<f64>, DeclarationError> {
    entries
        .get(field)
        .map(|v| {
            v.as_float()
                .ok()
                .or_else(|| v.as_int().ok().map(|i| i as f64))
                .filter(|f| f.is_finite() && *f >= at_least)
                .ok_or_else(|| {
                    error(
                        key,
                        format!("`{key}.{field}` must be a number of at least {at_least}"),
                    )
                })
        })
        .transpose()
}

fn retry(map: &Map) -> Result<Retry, DeclarationError> {
    let example =
        "#{ attempts: 3, backoff: \"10s\", factor: 2.0, max_backoff: \"5m\", jitter: 0.1 }";
    let allowed = ["attempts", "backoff", "factor", "max_backoff", "jitter"];
    let Some(entries) = sub_map(map, "retry", &allowed, example)? else {
        return Ok(Retry::default());
    };
    let defaults = Retry::default();
    let jitter = fraction_in(&entries, "retry", "jitter", 0.0)?.unwrap_or(defaults.jitter);
    if jitter > 1.0 {
        return Err(error("retry", "`retry.jitter` must be at most 1".into()));
    }
    Ok(Retry {
        attempts: positive_int(&entries, "retry", "attempts")?.unwrap_or(defaults.attempts),
        backoff_ms: duration_in(&entries, "retry", "backoff")?.unwrap_or(defaults.backoff_ms),
        factor: fraction_in(&entries, "retry", "factor", 1.0)?.unwrap_or(defaults.factor),
        max_backoff_ms: duration_in(&entries, "retry", "max_backoff")?
            .unwrap_or(defaults.max_backoff_ms),
        jitter,
    })
}

fn ladder(map: &Map) -> Result<Vec<Step>, DeclarationError> {
    let Some(value) = map.get("ladder") else {
        return Ok(Vec::new());
    };
    let shape = || {
        error(
            "ladder",
            "`ladder` must be an array of #{ action: \"restore\", ack_timeout: \"30m\" } maps"
                .into(),
        )
    };
    let list = value.clone().into_array().map_err(|_| shape())?;
    list.into_iter()
        .map(|item| {
            let entries = item.try_cast::<Map>().ok_or_else(shape)?;
            if entries
                .keys()
                .any(|k| !["action", "ack_timeout"].contains(&k.as_str()))
            {
                return Err(shape());
            }
            let action = entries
                .get("action")
                .and_then(|v| v.clone().into_immutable_string().ok())
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(shape)?;
            let ack_timeout_ms = duration_in(&entries, "ladder", "ack_timeout")?;
            if ack_timeout_ms == Some(0) {
                return Err(error(
                    "ladder",
                    "a ladder step's `ack_timeout` must be longer than zero".into(),
                ));
            }
            Ok(Step {
                action,
                ack_timeout_ms,
            })
        })
        .collect()
}

fn blast_radius(map: &Map) -> Result<Option<BlastRadius>, DeclarationError> {
    let example =
        "#{ group: \"service\", max_in_flight: 2, max_in_flight_share: 0.1, storm_share: 0.5 }";
    let allowed = [
        "group",
        "max_in_flight",
        "max_in_flight_share",
        "storm_share",
    ];
    let Some(entries) = sub_map(map, "blast_radius", &allowed, example)? else {
        return Ok(None);
    };
    let group = group_label(&entries, "blast_radius", example)?;
    let storm_share = fraction_in(&entries, "blast_radius", "storm_share", 0.0)?.unwrap_or(0.5);
    if storm_share > 1.0 {
        return Err(error(
            "blast_radius",
            "`blast_radius.storm_share` must be at most 1".into(),
        ));
    }
    let max_in_flight_share = fraction_in(&entries, "blast_radius", "max_in_flight_share", 0.0)?;
    if max_in_flight_share.is_some_and(|share| share <= 0.0 || share > 1.0) {
        return Err(error(
            "blast_radius",
            format!(
                "`blast_radius.max_in_flight_share` must be a share in (0, 1], as in {example}"
            ),
        ));
    }
    Ok(Some(BlastRadius {
        group,
        max_in_flight: positive_int(&entries, "blast_radius", "max_in_flight")?,
        max_in_flight_share,
        storm_share,
    }))
}

fn disable_below(map: &Map) -> Result<Option<DisableBelow>, DeclarationError> {
    let example = "#{ success_rate: 0.5, min_attempts: 10 }";
    let allowed = ["success_rate", "min_attempts"];
    let Some(entries) = sub_map(map, "disable_below", &allowed, example)? else {
        return Ok(None);
    };
    let success_rate = fraction_in(&entries, "disable_below", "success_rate", 0.0)?
        .filter(|r| *r > 0.0 && *r <= 1.0)
        .ok_or_else(|| {
            error(
                "disable_below",
                format!("`disable_below.success_rate` must be a share in (0, 1], as in {example}"),
            )
        })?;
    let min_attempts = positive_int(&entries, "disable_below", "min_attempts")?.unwrap_or(10);
    Ok(Some(DisableBelow {
        success_rate,
        min_attempts,
    }))
}

fn canary(map: &Map) -> Result<Option<Canary>, DeclarationError> {
    let example = "#{ group: \"service\", waves: [0.1, 0.5, 1.0], min_failing: 3 }";
    let Some(entries) = sub_map(map, "canary", &["group", "waves", "min_failing"], example)? else {
        return Ok(None);
    };
    let group = group_label(&entries, "canary", example)?;
    let waves = match entries.get("waves") {
        None => vec![0.1, 0.5, 1.0],
        Some(value) => value
            .clone()
            .into_array()
            .ok()
            .and_then(|list| {
                list.into_iter()
                    .map(|w| {
                        w.as_float()
                            .ok()
                            .or_else(|| w.as_int().ok().map(|i| i as f64))
                    })
                    .collect::<Option<Vec<f64>>>()
            })
            .ok_or_else(|| {
                error(
                    "canary",
                    format!("`canary.waves` must be an array of shares, as in {example}"),
                )
            })?,
    };
    let increasing = waves.windows(2).all(|w| w[0] < w[1]);
    let in_range = waves.iter().all(|w| *w > 0.0 && *w <= 1.0);
    if waves.is_empty() || !increasing || !in_range || waves.last() != Some(&1.0) {
        return Err(error(
            "canary",
            format!("`canary.waves` must be increasing shares in (0, 1], ending with 1.0, as in {example}"),
        ));
    }
    let min_failing = positive_int(&entries, "canary", "min_failing")?.unwrap_or(3);
    Ok(Some(Canary {
        group,
        waves,
        min_failing,
    }))
}

fn approval(map: &Map) -> Result<Option<Approval>, DeclarationError> {
    let example = "#{ actions: [\"restore\"], timeout: \"30m\" }";
    let Some(entries) = sub_map(map, "approval", &["actions", "timeout"], example)? else {
        return Ok(None);
    };
    let actions = match entries.get("actions") {
        None => Vec::new(),
        Some(value) => value
            .clone()
            .into_array()
            .ok()
            .and_then(|list| {
                list.into_iter()
                    .map(|a| a.into_immutable_string().ok().map(|s| s.to_string()))
                    .collect::<Option<Vec<String>>>()
            })
            .filter(|list| !list.is_empty())
            .ok_or_else(|| {
                error(
                    "approval",
                    format!("`approval.actions` must be a non-empty array of action names, as in {example}; leave it out for every action"),
                )
            })?,
    };
    let timeout_ms = duration_in(&entries, "approval", "timeout")?.unwrap_or(60 * 60 * 1_000);
    if timeout_ms == 0 {
        return Err(error(
            "approval",
            "`approval.timeout` must be longer than zero".into(),
        ));
    }
    Ok(Some(Approval {
        actions,
        timeout_ms,
    }))
}

/// The `group` entry of a map-valued key: the label that forms the groups it acts on.
fn group_label(entries: &Map, key: &str, example: &str) -> Result<String, DeclarationError> {
    entries
        .get("group")
        .and_then(|v| v.clone().into_immutable_string().ok())
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            error(
                key,
                format!("`{key}.group` must name a label, as in {example}"),
            )
        })
}

fn flap(map: &Map) -> Result<Option<Flap>, DeclarationError> {
    let example = "#{ max_attempts: 3, within: \"1m\" }";
    let Some(entries) = sub_map(map, "flap", &["max_attempts", "within"], example)? else {
        return Ok(None);
    };
    let (Some(max_attempts), Some(within_ms)) = (
        positive_int(&entries, "flap", "max_attempts")?,
        duration_in(&entries, "flap", "within")?,
    ) else {
        return Err(error(
            "flap",
            format!("`flap` needs both keys, as in {example}"),
        ));
    };
    if within_ms == 0 {
        return Err(error(
            "flap",
            "`flap.within` must be longer than zero, or nothing would be counted".into(),
        ));
    }
    Ok(Some(Flap {
        max_attempts,
        within_ms,
    }))
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
