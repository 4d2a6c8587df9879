//! The Prometheus `/metrics` endpoint.
//!
//! A scrape is one [`ControlHandle::call`]: a job on the engine's thread copies the counters
//! out (see [`snapshot`]) and returns, so the engine is held only for a copy and every number
//! in one scrape comes from the same moment between two messages. Rendering then happens here,
//! on the async runtime. An engine that does not answer in time gets the scrape a 503 with the
//! reason, never a page of zeros that would look like a reset.
//!
//! The body is the Prometheus text format 0.0.4 by default, and OpenMetrics 1.0 when the
//! scraper asks for it in `Accept` (Prometheus does), the way the Prometheus org's own clients
//! negotiate; see [`render`].

mod render;
mod snapshot;

use crate::MetricsConfig;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use salve_connectors::ControlHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use render::Format;

/// How long a scrape waits for the engine. Prometheus' default scrape timeout is 10 s; an
/// engine that takes longer than this to get between two messages is stalled, and saying so
/// quickly is more useful than a scrape that times out with no reason.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound (in use, not local, not an address).
    #[error("cannot listen on {addr:?}: {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address it listened on.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A bound, not yet serving, metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    control: ControlHandle,
}

/// Binds the listener of `config.listen`, so the address is known before serving.
pub async fn bind(
    config: &MetricsConfig,
    control: ControlHandle,
) -> Result<MetricsServer, MetricsError> {
    let bind_error = |source| MetricsError::Bind {
        addr: config.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(config.listen.trim())
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok(MetricsServer {
        listener,
        local_addr,
        control,
    })
}

impl MetricsServer {
    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `GET /metrics` until `shutdown` completes; scrapes in flight then finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MetricsError> {
        let addr = self.local_addr;
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(self.control));
        tracing::info!(%addr, "metrics endpoint listening");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| MetricsError::Serve { addr, source })
    }
}

async fn scrape(State(control): State<Arc<ControlHandle>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
    let engine = match control
        .call(SCRAPE_TIMEOUT, |engine, _| {
            snapshot::EngineSnapshot::take(engine)
        })
        .await
    {
        Ok(engine) => engine,
        Err(error) => {
            tracing::warn!("metrics scrape: {error}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("no metrics: {error}\n"),
            )
                .into_response();
        }
    };
    // Read after the engine answered: the runner's counts are its own, under their own locks,
    // and are at least as fresh as the engine's this way.
    let runner = snapshot::RunnerSnapshot::take(control.runner());
    match render::render(&engine, &runner, format) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!("metrics scrape: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("cannot render metrics: {error}\n"),
            )
                .into_response()
        }
    }
}
