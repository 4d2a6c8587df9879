//! The connection to the API, the bearer token on every call, and what each call prints.

use super::render;
use super::{Call, CtlArgs};
use salve_api::proto::{self, salve_client::SalveClient};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// How long to wait for the server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `salve ctl` failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why, with the causes.
        message: String,
    },
    /// The server refused the call, or it failed.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(Status),
    /// The reload ran, and the rules were rejected: the previous ones keep running.
    #[error("the reload was rejected; rules version {0} keeps running")]
    ReloadRejected(u64),
    /// Printing failed (a closed pipe, say), or a message could not be put as JSON.
    #[error("output: {0}")]
    Output(String),
}

impl CtlError {
    /// 2 for a wrong command line, as clap does; 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

impl From<Status> for CtlError {
    fn from(status: Status) -> Self {
        CtlError::Rpc(status)
    }
}

impl From<std::io::Error> for CtlError {
    fn from(error: std::io::Error) -> Self {
        CtlError::Output(error.to_string())
    }
}

/// The gRPC name of a status code, e.g. `UNAUTHENTICATED`, as grpcurl prints it.
pub(crate) fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client of the API, with the token.
pub(crate) struct Client(SalveClient<InterceptedService<Channel, Bearer>>);

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path)
        .map_err(|error| CtlError::Usage(format!("{what} {}: {error}", path.display())))
}

fn causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Connects to `args.addr`, with TLS for an https address.
pub(crate) async fn connect(args: &CtlArgs) -> Result<Client, CtlError> {
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|token| {
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| CtlError::Usage("the token must be printable ASCII".into()))
        })
        .transpose()?;
    let mut endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|error| {
            CtlError::Usage(format!(
                "--addr {:?} is not a URL like http://127.0.0.1:7420: {error}",
                args.addr
            ))
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if args.addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("--ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(
                read("--cert", cert)?,
                read("--key", key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| CtlError::Usage(format!("TLS: {}", causes(&error))))?;
    } else if args.ca.is_some() || args.cert.is_some() {
        return Err(CtlError::Usage(
            "--ca, --cert and --key need an https:// address".into(),
        ));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| CtlError::Connect {
            addr: args.addr.clone(),
            message: causes(&error),
        })?;
    Ok(Client(SalveClient::with_interceptor(
        channel,
        Bearer(token),
    )))
}

impl Client {
    /// Makes `call` and prints its answer: a table, or JSON.
    pub(crate) async fn call(
        &mut self,
        call: Call,
        json: bool,
        out: &mut impl Write,
    ) -> Result<(), CtlError> {
        let client = &mut self.0;
        match call {
            Call::Status => {
                let status = client
                    .get_status(proto::GetStatusRequest {})
                    .await?
                    .into_inner();
                render::emit(out, json, &status, render::status)
            }
            Call::Entities(request) => {
                let page = client.list_entities(request).await?.into_inner();
                render::emit(out, json, &page, render::entities)
            }
            Call::Entity(request) => {
                let entity = client.get_entity(request).await?.into_inner();
                render::emit(out, json, &entity, render::entity)
            }
            Call::Window(request) => {
                let window = client.get_series_window(request).await?.into_inner();
                render::emit(out, json, &window, render::window)
            }
            Call::Incidents(request) => {
                let incidents = client.list_incidents(request).await?.into_inner();
                render::emit(out, json, &incidents, render::incidents)
            }
            Call::Incident(request) => {
                let incident = client.get_incident(request).await?.into_inner();
                render::emit(out, json, &incident, render::incident)
            }
            Call::Rules => {
                let rules = client
                    .list_rules(proto::ListRulesRequest {})
                    .await?
                    .into_inner();
                render::emit(out, json, &rules, render::rules)
            }
            Call::Watch(request) => {
                let mut stream = client.watch_decisions(request).await?.into_inner();
                while let Some(event) = stream.message().await? {
                    render::watched(out, json, &event)?;
                    // Lines are for a person or a pipe reading as they come.
                    out.flush()?;
                }
                Ok(())
            }
            Call::Resolve(request) => {
                let resolved = client.resolve_incident(request).await?.into_inner();
                render::emit(out, json, &resolved, render::resolved)
            }
            Call::Approve(request) => {
                let approved = client.approve_incident(request).await?.into_inner();
                render::emit(out, json, &approved, |a| {
                    render::outcome("approved", a.incident.as_ref())
                })
            }
            Call::Deny(request) => {
                let denied = client.deny_incident(request).await?.into_inner();
                render::emit(out, json, &denied, |d| {
                    render::outcome("denied", d.incident.as_ref())
                })
            }
            Call::Lift(request) => {
                let lifted = client.lift_quarantine(request).await?.into_inner();
                render::emit(out, json, &lifted, |l| {
                    format!(
                        "quarantine lifted: incident {} closed; automation may act again\n",
                        l.incident_id
                    )
                })
            }
            Call::Mode(request) => {
                let modes = client.set_mode(request).await?.into_inner();
                render::emit(out, json, &modes, render::modes)
            }
            Call::Reload => {
                let outcome = client.reload(proto::ReloadRequest {}).await?.into_inner();
                render::emit(out, json, &outcome, render::reload)?;
                if outcome.succeeded {
                    Ok(())
                } else {
                    Err(CtlError::ReloadRejected(outcome.version))
                }
            }
        }
    }
}
