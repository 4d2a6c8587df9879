//! `salve ctl`: a client of the `salve.v1` gRPC API, for operators. Tables by default, the
//! protobuf JSON mapping with `--json` (the same document grpcurl prints, with every field).

mod client;
mod render;
#[cfg(test)]
mod tests;

use clap::{Args, Subcommand};
use salve_api::proto;
use std::path::PathBuf;
use std::process::ExitCode;

pub use client::CtlError;

/// `salve ctl`'s flags and command.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API's address: http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        env = "SALVE_ADDR",
        default_value = "http://127.0.0.1:7420",
        global = true
    )]
    pub addr: String,
    /// The bearer token, for mutating calls (and for queries when the server requires it).
    #[arg(long, env = "SALVE_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print protobuf JSON instead of tables (one object per line for `watch`).
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM CA certificate to verify the server with (https only).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS (with --key).
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// One call of the API.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The engine: modes, partitions and lag, rule-set version, last reload, incidents.
    Status,
    /// Entities, filtered by labels and verdict.
    Entities {
        /// A label selector: key=value, comma-separated or repeated; all must match.
        #[arg(short = 'l', long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// Only entities judged so: healthy, pending or failing.
        #[arg(long)]
        verdict: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// The page after this token, as printed under the previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// One entity, with its series and open incidents.
    Entity {
        /// The entity id.
        id: String,
    },
    /// The aggregates of an entity's series over a window.
    Window {
        /// The entity id.
        entity: String,
        /// The series name, e.g. latency_ms.
        series: String,
        /// The window, e.g. 5m; default: the engine's longest.
        #[arg(long)]
        window: Option<String>,
    },
    /// Incidents: open ones, newest first, and recently closed ones with --closed.
    Incidents {
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        /// Only this entity's or group's.
        #[arg(long)]
        subject: Option<String>,
        /// Only in this state (repeatable): awaiting_approval, remediating, escalated, ...
        #[arg(long = "state")]
        states: Vec<String>,
        /// Include recently closed incidents.
        #[arg(long)]
        closed: bool,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One incident, with its history.
    Incident {
        /// The incident id, e.g. crash_loop/pod-1@0:0:42.
        id: String,
    },
    /// The rules in force: mode, calls, effectiveness; and the latest reload's errors.
    Rules,
    /// Follow decisions as they are made, until interrupted.
    Watch {
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        /// Only this entity's.
        #[arg(long)]
        entity: Option<String>,
        /// Only this kind (repeatable): verdict, transition, ack, would_command.
        #[arg(long = "kind")]
        kinds: Vec<String>,
    },
    /// Resolve an escalated incident by hand.
    Resolve {
        /// The incident id.
        id: String,
        /// Why, for the decision log.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Approve the action an incident awaits: it is sent at once.
    Approve {
        /// The incident id.
        id: String,
        /// Why, for the decision log.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny the action an incident awaits: the incident closes unresolved.
    Deny {
        /// The incident id.
        id: String,
        /// Why, for the decision log.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Lift the quarantine of RULE on ENTITY: its escalated incident closes, automation resumes.
    Lift {
        /// The entity or group id.
        entity: String,
        /// The rule.
        rule: String,
        /// Why, for the decision log.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Set the mode, globally or of one rule: active, dry_run, paused; unset drops a rule's own.
    Mode {
        /// The rule; without it, the global mode.
        #[arg(long)]
        rule: Option<String>,
        /// active, dry_run, paused, or unset (with --rule).
        mode: String,
    },
    /// Reload the rules from disk, through the same checks as start-up.
    Reload,
}

/// Runs `salve ctl`, printing to stdout, errors to stderr as `salve ctl: CODE: message`.
pub fn main(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("salve ctl: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(run(&args, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("salve ctl: {error}");
            error.exit_code()
        }
    }
}

/// Runs one command, writing what it prints to `out`.
pub async fn run(args: &CtlArgs, out: &mut impl std::io::Write) -> Result<(), CtlError> {
    let request = build(&args.command)?;
    let mut client = client::connect(args).await?;
    client.call(request, args.json, out).await
}

/// A command, checked and turned into its request before anything is sent.
#[derive(Debug)]
pub(crate) enum Call {
    Status,
    Entities(proto::ListEntitiesRequest),
    Entity(proto::GetEntityRequest),
    Window(proto::GetSeriesWindowRequest),
    Incidents(proto::ListIncidentsRequest),
    Incident(proto::GetIncidentRequest),
    Rules,
    Watch(proto::WatchDecisionsRequest),
    Resolve(proto::ResolveIncidentRequest),
    Approve(proto::ApproveIncidentRequest),
    Deny(proto::DenyIncidentRequest),
    Lift(proto::LiftQuarantineRequest),
    Mode(proto::SetModeRequest),
    Reload,
}

fn usage(message: impl Into<String>) -> CtlError {
    CtlError::Usage(message.into())
}

/// Parses a snake_case name into a proto enum whose values read `PREFIX_NAME`.
fn enum_value<E: Into<i32>>(
    what: &str,
    text: &str,
    prefix: &str,
    from_name: impl Fn(&str) -> Option<E>,
    expected: &str,
) -> Result<i32, CtlError> {
    from_name(&format!("{prefix}{}", text.to_ascii_uppercase()))
        .map(Into::into)
        .filter(|value| *value != 0)
        .ok_or_else(|| usage(format!("unknown {what} {text:?}; expected {expected}")))
}

fn selector(items: &[String]) -> Result<std::collections::HashMap<String, String>, CtlError> {
    items
        .iter()
        .flat_map(|item| item.split(','))
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(usage(format!(
                "selector {pair:?} is not key=value, e.g. -l service=checkout"
            ))),
        })
        .collect()
}

fn window_ms(text: &str) -> Result<i64, CtlError> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| usage(format!("--window {text:?}: {error}; e.g. 5m or 30s")))?;
    i64::try_from(duration.as_millis()).map_err(|_| usage(format!("--window {text:?} is too long")))
}

pub(crate) fn build(command: &CtlCommand) -> Result<Call, CtlError> {
    Ok(match command {
        CtlCommand::Status => Call::Status,
        CtlCommand::Entities {
            selector: labels,
            verdict,
            limit,
            page_token,
        } => Call::Entities(proto::ListEntitiesRequest {
            labels: selector(labels)?,
            health: verdict
                .as_deref()
                .map(|v| {
                    enum_value(
                        "verdict",
                        v,
                        "HEALTH_",
                        proto::Health::from_str_name,
                        "healthy, pending or failing",
                    )
                })
                .transpose()?
                .unwrap_or_default(),
            page_token: page_token.clone().unwrap_or_default(),
            page_size: limit.unwrap_or(0),
        }),
        CtlCommand::Entity { id } => Call::Entity(proto::GetEntityRequest { id: id.clone() }),
        CtlCommand::Window {
            entity,
            series,
            window,
        } => Call::Window(proto::GetSeriesWindowRequest {
            entity: entity.clone(),
            series: series.clone(),
            window_ms: window.as_deref().map(window_ms).transpose()?.unwrap_or(0),
        }),
        CtlCommand::Incidents {
            rule,
            subject,
            states,
            closed,
            limit,
        } => Call::Incidents(proto::ListIncidentsRequest {
            rule: rule.clone().unwrap_or_default(),
            subject: subject.clone().unwrap_or_default(),
            states: states
                .iter()
                .map(|s| {
                    enum_value(
                        "state",
                        s,
                        "INCIDENT_STATE_",
                        proto::IncidentState::from_str_name,
                        "failing, awaiting_approval, remediating, mitigated, reverting, verifying, backing_off, escalated, resolved or failed",
                    )
                })
                .collect::<Result<_, _>>()?,
            include_closed: *closed,
            limit: limit.unwrap_or(0),
        }),
        CtlCommand::Incident { id } => {
            Call::Incident(proto::GetIncidentRequest { id: id.clone() })
        }
        CtlCommand::Rules => Call::Rules,
        CtlCommand::Watch {
            rule,
            entity,
            kinds,
        } => Call::Watch(proto::WatchDecisionsRequest {
            rule: rule.clone().unwrap_or_default(),
            entity: entity.clone().unwrap_or_default(),
            kinds: kinds
                .iter()
                .map(|k| {
                    enum_value(
                        "kind",
                        k,
                        "DECISION_KIND_",
                        proto::DecisionKind::from_str_name,
                        "verdict, transition, ack or would_command",
                    )
                })
                .collect::<Result<_, _>>()?,
        }),
        CtlCommand::Resolve { id, note } => Call::Resolve(proto::ResolveIncidentRequest {
            id: id.clone(),
            note: note.clone(),
        }),
        CtlCommand::Approve { id, note } => Call::Approve(proto::ApproveIncidentRequest {
            id: id.clone(),
            note: note.clone(),
        }),
        CtlCommand::Deny { id, note } => Call::Deny(proto::DenyIncidentRequest {
            id: id.clone(),
            note: note.clone(),
        }),
        CtlCommand::Lift { entity, rule, note } => {
            Call::Lift(proto::LiftQuarantineRequest {
                subject: entity.clone(),
                rule: rule.clone(),
                note: note.clone(),
            })
        }
        CtlCommand::Mode { rule, mode } => {
            let mode = match mode.as_str() {
                "unset" if rule.is_none() => {
                    return Err(usage(
                        "only a rule's mode can be unset (--rule NAME); the global mode is active, dry_run or paused",
                    ))
                }
                "unset" => proto::Mode::Unspecified.into(),
                other => enum_value(
                    "mode",
                    other,
                    "MODE_",
                    proto::Mode::from_str_name,
                    "active, dry_run, paused or unset",
                )?,
            };
            Call::Mode(proto::SetModeRequest {
                rule: rule.clone().unwrap_or_default(),
                mode,
            })
        }
        CtlCommand::Reload => Call::Reload,
    })
}
