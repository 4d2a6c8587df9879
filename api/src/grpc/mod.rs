//! The `salve.v1` gRPC server, with `grpc.health.v1` and server reflection (v1 and v1alpha) so
//! that generic clients such as grpcurl work.
//!
//! Every call goes through [`auth`] first; a call that passes becomes a job on the engine's
//! thread ([`service`]).

mod auth;
mod convert;
mod service;

use crate::proto::salve_server::SalveServer;
use crate::{ApiConfig, TlsConfig};
use salve_connectors::control::ControlError;
use salve_connectors::ControlHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// A boxed error from a library, kept as the source of an [`ApiError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `api.listen` is empty: the API is turned off, and should not be started.
    #[error("api.listen is empty: the gRPC API is turned off")]
    Disabled,
    /// The listener could not be bound.
    #[error("api.listen: cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why not.
        source: std::io::Error,
    },
    /// A setting is wrong; `key` names it, as in `salve.toml`.
    #[error("{key}: {message}")]
    Config {
        /// The config key, e.g. `api.tls.cert`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Serve(#[source] BoxError),
}

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    policy: auth::Policy,
    tls: Option<ServerTlsConfig>,
    control: ControlHandle,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("policy", &self.policy)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Binds the listener of `config.listen`, so the address is known before serving. Reads the
/// token file and the TLS files now, so a mistake in them stops start-up with the key named.
pub async fn bind(config: &ApiConfig, control: ControlHandle) -> Result<GrpcServer, ApiError> {
    if config.listen.is_empty() {
        return Err(ApiError::Disabled);
    }
    let token = token(config)?;
    let tls = config.tls.as_ref().map(tls).transpose()?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ApiError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    if token.is_none() {
        tracing::warn!(
            "api: no token configured (api.token or api.token_file): mutating calls are refused"
        );
    }
    Ok(GrpcServer {
        listener,
        local_addr,
        policy: auth::Policy::new(token, config.open_queries_on_loopback),
        tls,
        control,
    })
}

/// The configured token: `api.token`, or the contents of `api.token_file`.
fn token(config: &ApiConfig) -> Result<Option<String>, ApiError> {
    let Some(path) = &config.token_file else {
        return Ok(Some(config.token.clone()).filter(|t| !t.is_empty()));
    };
    if !config.token.is_empty() {
        return Err(ApiError::Config {
            key: "api.token_file",
            message: "api.token is set too; set one of them".into(),
        });
    }
    let token = std::fs::read_to_string(path).map_err(|error| ApiError::Config {
        key: "api.token_file",
        message: format!("cannot read {}: {error}", path.display()),
    })?;
    // A mounted secret often ends in a newline that is not part of the token.
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Config {
            key: "api.token_file",
            message: format!("{} is empty", path.display()),
        });
    }
    Ok(Some(token.to_owned()))
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, ApiError> {
    let pem = std::fs::read(path).map_err(|error| ApiError::Config {
        key,
        message: format!("cannot read {}: {error}", path.display()),
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(ApiError::Config {
            key,
            message: format!("{} is not a PEM file", path.display()),
        });
    }
    Ok(pem)
}

/// `[api.tls]` as tonic's TLS config, checked by building it once.
fn tls(config: &TlsConfig) -> Result<ServerTlsConfig, ApiError> {
    let cert = read_pem("api.tls.cert", &config.cert)?;
    let key = read_pem("api.tls.key", &config.key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(client_ca) = &config.client_ca {
        let ca = read_pem("api.tls.client_ca", client_ca)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    // tonic parses the PEM only here: try it now, so a bad key stops start-up, not serving.
    Server::builder()
        .tls_config(tls.clone())
        .map_err(|error| ApiError::Config {
            key: "api.tls",
            message: format!("{error}: {}", source_chain(&error)),
        })?;
    Ok(tls)
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(error) = source {
        chain.push(error.to_string());
        source = error.source();
    }
    chain.join(": ")
}

impl GrpcServer {
    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains: open watch streams end, calls in
    /// flight finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let watched = self.control.clone();
        let salve = SalveServer::new(service::SalveService::new(self.control, stopping.clone()));
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<SalveServer<service::SalveService>>()
            .await;
        tokio::spawn(watch_the_engine(watched, health_reporter.clone(), stopping));
        // Both reflection versions describe every service, each other included, so a client
        // of either version lists the same services.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ApiError::Serve(Box::new(e)))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ApiError::Serve(Box::new(e)))?;

        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server
                .tls_config(tls)
                .map_err(|e| ApiError::Serve(Box::new(e)))?;
        }
        let signal = async move {
            shutdown.await;
            health_reporter
                .set_not_serving::<SalveServer<service::SalveService>>()
                .await;
            let _ = stopping_tx.send(true);
        };
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tracing::info!(addr = %self.local_addr, "gRPC API (salve.v1) serving");
        server
            .layer(auth::AuthLayer::new(self.policy))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(salve)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(|e| ApiError::Serve(Box::new(e)))
    }
}

/// How often health asks the engine whether it answers, and how long it waits.
const ENGINE_PROBE_EVERY: Duration = Duration::from_secs(1);
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps `grpc.health.v1` honest: the API is NOT_SERVING while the engine does not answer a
/// no-op job within [`ENGINE_PROBE_TIMEOUT`] (stopped, or stalled on the broker), so that a
/// readiness probe takes the process out of rotation, and SERVING again once it answers.
async fn watch_the_engine(
    control: ControlHandle,
    health: tonic_health::server::HealthReporter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let mut answering = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ENGINE_PROBE_EVERY) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let probe = control.call(ENGINE_PROBE_TIMEOUT, |_, _| ()).await;
        if probe.is_ok() == answering {
            continue;
        }
        answering = probe.is_ok();
        let status = match probe {
            Ok(()) => {
                tracing::info!("the engine answers again: health is SERVING");
                ServingStatus::Serving
            }
            Err(error) => {
                let message = format!("{error}: health is NOT_SERVING");
                if stalled(&error) {
                    tracing::warn!("{message}");
                } else {
                    tracing::info!("{message}");
                }
                ServingStatus::NotServing
            }
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(crate::proto::SERVICE_NAME, status)
            .await;
    }
}

/// Whether a probe that failed with `error` shows a stall, which an operator should hear of
/// as a warning. An engine that has stopped is what every shutdown looks like: the runner
/// returns before the API does, and the probe in between found it gone.
fn stalled(error: &ControlError) -> bool {
    !matches!(error, ControlError::Stopped)
}

#[cfg(test)]
mod tests;
