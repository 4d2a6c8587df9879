//! What `salve ctl` prints: aligned tables for people, protobuf JSON for programs.
//!
//! JSON follows the protobuf JSON mapping, as grpcurl prints it (lowerCamelCase names, enums by
//! name), with two choices for scripts: every field is printed, defaults too, so a key is never
//! missing; and 64-bit numbers are JSON numbers, not strings (salve's counts and millisecond
//! times are far below 2^53).

use super::CtlError;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use salve_api::proto;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

fn pool() -> Result<&'static DescriptorPool, CtlError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).map_err(|error| error.to_string())
    })
    .as_ref()
    .map_err(|error| CtlError::Output(format!("salve.proto's descriptors: {error}")))
}

/// `message` as protobuf JSON; one line unless `pretty`.
pub(crate) fn json<M: prost::Message + prost::Name>(
    message: &M,
    pretty: bool,
) -> Result<String, CtlError> {
    let name = M::full_name();
    let descriptor = pool()?
        .get_message_by_name(&name)
        .ok_or_else(|| CtlError::Output(format!("no descriptor for {name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|error| CtlError::Output(format!("{name}: {error}")))?;
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let mut buffer = Vec::new();
    let result = if pretty {
        let mut serializer = serde_json::Serializer::pretty(&mut buffer);
        dynamic.serialize_with_options(&mut serializer, &options)
    } else {
        let mut serializer = serde_json::Serializer::new(&mut buffer);
        dynamic.serialize_with_options(&mut serializer, &options)
    };
    result.map_err(|error| CtlError::Output(format!("{name} as JSON: {error}")))?;
    String::from_utf8(buffer).map_err(|error| CtlError::Output(error.to_string()))
}

/// Prints `message` as JSON, or as `table` renders it.
pub(crate) fn emit<M: prost::Message + prost::Name>(
    out: &mut impl Write,
    as_json: bool,
    message: &M,
    table: impl FnOnce(&M) -> String,
) -> Result<(), CtlError> {
    if as_json {
        writeln!(out, "{}", json(message, true)?)?;
    } else {
        write!(out, "{}", table(message))?;
    }
    Ok(())
}

/// Columns padded to their widest cell; the last one is not padded.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `key  value` lines, keys aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

/// The snake_case name of an enum value, without its prefix: `INCIDENT_STATE_BACKING_OFF` →
/// `backing_off`; `-` for unspecified, the number for one this build does not know.
fn short(name: Option<&str>, prefix: &str, value: i32) -> String {
    match name {
        Some(_) if value == 0 => "-".into(),
        Some(name) => name.trim_start_matches(prefix).to_ascii_lowercase(),
        None => value.to_string(),
    }
}

pub(crate) fn state(value: i32) -> String {
    let name = proto::IncidentState::try_from(value).ok();
    short(name.map(|s| s.as_str_name()), "INCIDENT_STATE_", value)
}

pub(crate) fn mode(value: i32) -> String {
    let name = proto::Mode::try_from(value).ok();
    short(name.map(|m| m.as_str_name()), "MODE_", value)
}

fn health(value: i32) -> String {
    let name = proto::Health::try_from(value).ok();
    short(name.map(|h| h.as_str_name()), "HEALTH_", value)
}

fn kind(value: i32) -> String {
    let name = proto::DecisionKind::try_from(value).ok();
    short(name.map(|k| k.as_str_name()), "DECISION_KIND_", value)
}

fn verdict(value: i32) -> String {
    let name = proto::Verdict::try_from(value).ok();
    short(name.map(|v| v.as_str_name()), "VERDICT_", value)
}

fn ack(value: i32) -> String {
    let name = proto::AckStatus::try_from(value).ok();
    short(name.map(|a| a.as_str_name()), "ACK_STATUS_", value)
}

/// An epoch-millisecond time as RFC 3339 UTC; `-` for none.
pub(crate) fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => "-".into(),
    }
}

fn optional_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), time)
}

fn duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v}"))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn sorted<V: Clone>(map: &std::collections::HashMap<String, V>) -> Vec<(String, V)> {
    let mut pairs: Vec<(String, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

fn counts(map: &std::collections::HashMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    sorted(map)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn modes_line(global: i32, rules: &std::collections::HashMap<String, i32>) -> String {
    let mut line = mode(global);
    if !rules.is_empty() {
        let own: Vec<String> = sorted(rules)
            .into_iter()
            .map(|(rule, m)| format!("{rule}: {}", mode(m)))
            .collect();
        let _ = write!(line, " ({})", own.join(", "));
    }
    line
}

fn reload_line(outcome: &proto::ReloadOutcome) -> String {
    if outcome.succeeded {
        format!(
            "ok at {} ({}): version {}, added {}, removed {}",
            time(outcome.at_ms),
            outcome.trigger,
            outcome.version,
            list(&outcome.added),
            list(&outcome.removed)
        )
    } else {
        format!(
            "REJECTED at {} ({}): {} error(s); version {} keeps running",
            time(outcome.at_ms),
            outcome.trigger,
            outcome.errors.len(),
            outcome.version
        )
    }
}

pub(crate) fn status(status: &proto::EngineStatus) -> String {
    let partitions = if status.assigned.is_empty() {
        "none assigned (not consuming from Kafka)".to_owned()
    } else {
        status
            .assigned
            .iter()
            .map(|p| match p.lag {
                Some(lag) => format!("{}:{} (lag {lag})", p.topic, p.partition),
                None => format!("{}:{}", p.topic, p.partition),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = fields(&[
        ("mode", modes_line(status.global_mode, &status.rule_modes)),
        (
            "rules",
            format!(
                "{} loaded, version {}",
                status.rules_loaded, status.rules_version
            ),
        ),
        (
            "last reload",
            status
                .last_reload
                .as_ref()
                .map_or_else(|| "-".into(), reload_line),
        ),
        ("partitions", partitions),
        ("consumer lag", status.consumer_lag.to_string()),
        ("entities", status.entities.to_string()),
        ("open incidents", counts(&status.open_incidents)),
        ("events in", counts(&status.events_in)),
        ("published", counts(&status.published)),
    ]);
    if let Some(reload) = status.last_reload.as_ref().filter(|r| !r.succeeded) {
        for error in &reload.errors {
            let _ = writeln!(text, "  {error}");
        }
    }
    text
}

fn labels(labels: &std::collections::HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    sorted(labels)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn entities(page: &proto::ListEntitiesResponse) -> String {
    let rows: Vec<Vec<String>> = page
        .entities
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                health(e.health),
                time(e.last_seen_ms),
                e.incidents.len().to_string(),
                list(&e.pending_rules),
                labels(&e.labels),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ENTITY",
            "HEALTH",
            "LAST SEEN",
            "INCIDENTS",
            "PENDING",
            "LABELS",
        ],
        &rows,
    );
    let _ = writeln!(text, "{} of {} shown", page.entities.len(), page.total);
    if !page.next_page_token.is_empty() {
        let _ = writeln!(text, "next page: --page-token {}", page.next_page_token);
    }
    text
}

fn incident_rows(incidents: &[proto::Incident]) -> String {
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.rule.clone(),
                i.subject.clone(),
                state(i.state),
                i.attempt.to_string(),
                if i.action.is_empty() {
                    "-".into()
                } else {
                    i.action.clone()
                },
                optional_time(i.opened_at_ms),
                if i.open {
                    "open".into()
                } else {
                    format!("closed {}", optional_time(i.closed_at_ms))
                },
            ]
        })
        .collect();
    table(
        &[
            "INCIDENT", "RULE", "SUBJECT", "STATE", "ATTEMPT", "ACTION", "OPENED", "",
        ],
        &rows,
    )
}

pub(crate) fn entity(entity: &proto::Entity) -> String {
    let partition = entity.partition.as_ref().map_or_else(
        || "-".into(),
        |p| format!("{}:{}", p.topic_index, p.partition),
    );
    let mut text = fields(&[
        ("entity", entity.id.clone()),
        ("health", health(entity.health)),
        ("last seen", time(entity.last_seen_ms)),
        ("partition", partition),
        ("labels", labels(&entity.labels)),
        ("series", list(&entity.series)),
        ("pending rules", list(&entity.pending_rules)),
    ]);
    if !entity.incidents.is_empty() {
        text.push('\n');
        text.push_str(&incident_rows(&entity.incidents));
    }
    text
}

pub(crate) fn window(window: &proto::SeriesWindow) -> String {
    let percentiles = if window.percentiles.is_empty() {
        "-".into()
    } else {
        sorted(&window.percentiles)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last = match (window.last_ts_ms, window.last_value) {
        (Some(ts), Some(value)) => format!("{value} at {}", time(ts)),
        _ => "-".into(),
    };
    fields(&[
        ("entity", window.entity.clone()),
        ("series", window.series.clone()),
        (
            "window",
            duration(u64::try_from(window.window_ms).unwrap_or(0)),
        ),
        ("count", window.count.to_string()),
        ("sum", number(window.sum)),
        ("mean", number(window.mean)),
        ("min", number(window.min)),
        ("max", number(window.max)),
        ("rate", format!("{}/s", window.rate_per_s)),
        ("last", last),
        ("percentiles", percentiles),
        (
            "in a row",
            format!(
                "{} failed, {} passed",
                window.consecutive_fails, window.consecutive_passes
            ),
        ),
    ])
}

pub(crate) fn incidents(list: &proto::ListIncidentsResponse) -> String {
    if list.incidents.is_empty() {
        return "no incidents\n".into();
    }
    incident_rows(&list.incidents)
}

pub(crate) fn incident(incident: &proto::Incident) -> String {
    let mut text = fields(&[
        ("incident", incident.id.clone()),
        ("rule", incident.rule.clone()),
        (
            "subject",
            if incident.group {
                format!("{} (group)", incident.subject)
            } else {
                incident.subject.clone()
            },
        ),
        ("state", state(incident.state)),
        (
            "open",
            if incident.open {
                "yes".into()
            } else {
                format!("no, closed {}", optional_time(incident.closed_at_ms))
            },
        ),
        ("attempt", incident.attempt.to_string()),
        ("action", incident.action.clone()),
        ("command", incident.command_id.clone()),
        ("target", incident.target.clone()),
        ("opened", optional_time(incident.opened_at_ms)),
    ]);
    let rows: Vec<Vec<String>> = incident
        .history
        .iter()
        .map(|h| {
            vec![
                time(h.ts_ms),
                state(h.from),
                state(h.to),
                h.attempt.map_or_else(|| "-".into(), |a| a.to_string()),
                h.reason.clone(),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(&["TIME", "FROM", "TO", "ATTEMPT", "REASON"], &rows));
    text
}

pub(crate) fn rules(rules: &proto::ListRulesResponse) -> String {
    let rows: Vec<Vec<String>> = rules
        .rules
        .iter()
        .map(|r| {
            let e = r.effectiveness.clone().unwrap_or_default();
            let mut mode_text = mode(r.mode);
            if r.shadow {
                mode_text.push_str(" (shadow)");
            }
            vec![
                r.name.clone(),
                mode_text,
                r.evaluations.to_string(),
                r.errors.to_string(),
                e.opened.to_string(),
                e.resolved.to_string(),
                e.failed.to_string(),
                e.escalated.to_string(),
                e.mttr_mean_ms.map_or_else(|| "-".into(), duration),
                r.file.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "RULE",
            "MODE",
            "EVALS",
            "ERRORS",
            "OPENED",
            "RESOLVED",
            "FAILED",
            "ESCALATED",
            "MTTR",
            "FILE",
        ],
        &rows,
    );
    let actions: Vec<Vec<String>> = rules
        .rules
        .iter()
        .flat_map(|r| {
            let outcomes = r
                .effectiveness
                .as_ref()
                .map(|e| sorted(&e.actions))
                .unwrap_or_default();
            outcomes.into_iter().map(move |(action, o)| {
                vec![
                    r.name.clone(),
                    action,
                    o.attempts.to_string(),
                    o.succeeded.to_string(),
                    o.failed.to_string(),
                    o.escalated.to_string(),
                    o.success_rate
                        .map_or_else(|| "-".into(), |rate| format!("{:.0}%", rate * 100.0)),
                ]
            })
        })
        .collect();
    if !actions.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &[
                "RULE",
                "ACTION",
                "ATTEMPTS",
                "SUCCEEDED",
                "FAILED",
                "ESCALATED",
                "SUCCESS",
            ],
            &actions,
        ));
    }
    let _ = writeln!(text, "\nrules version {}", rules.rules_version);
    if let Some(reload) = &rules.last_reload {
        let _ = writeln!(text, "last reload: {}", reload_line(reload));
        for error in &reload.errors {
            let _ = writeln!(text, "  {error}");
        }
    }
    text
}

pub(crate) fn resolved(response: &proto::ResolveIncidentResponse) -> String {
    outcome("resolved", response.incident.as_ref())
}

/// What an operator's action did to an incident: `approved ID: remediating`.
pub(crate) fn outcome(done: &str, incident: Option<&proto::Incident>) -> String {
    match incident {
        Some(incident) => format!("{done} {}: {}\n", incident.id, state(incident.state)),
        None => format!("{done}\n"),
    }
}

pub(crate) fn modes(modes: &proto::SetModeResponse) -> String {
    format!(
        "mode: {}\n",
        modes_line(modes.global_mode, &modes.rule_modes)
    )
}

pub(crate) fn reload(outcome: &proto::ReloadOutcome) -> String {
    let mut text = format!("{}\n", reload_line(outcome));
    for error in &outcome.errors {
        let _ = writeln!(text, "  {error}");
    }
    text
}

/// One watched event: a line of text, or a line of JSON.
pub(crate) fn watched(
    out: &mut impl Write,
    as_json: bool,
    event: &proto::WatchDecisionsResponse,
) -> Result<(), CtlError> {
    use proto::watch_decisions_response::Event;
    if as_json {
        writeln!(out, "{}", json(event, false)?)?;
        return Ok(());
    }
    match &event.event {
        Some(Event::Decision(d)) => {
            let what = match proto::DecisionKind::try_from(d.kind) {
                Ok(proto::DecisionKind::Transition) => {
                    format!("{} -> {}", state(d.from), state(d.to))
                }
                Ok(proto::DecisionKind::Verdict) => verdict(d.verdict),
                Ok(proto::DecisionKind::Ack) => {
                    format!("{} from {}", ack(d.ack_status), d.actuator)
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "{}  {:<13}  {}  {}  {}  {}",
                time(d.ts_ms),
                kind(d.kind),
                d.rule,
                d.entity,
                what,
                d.reason
            )?;
        }
        Some(Event::Missed(missed)) => {
            writeln!(out, "... fell behind: {missed} decision(s) missed")?;
        }
        None => {}
    }
    Ok(())
}
