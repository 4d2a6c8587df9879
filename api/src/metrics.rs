//! The Prometheus `/metrics` endpoint. Not built yet: see issue #5.

use crate::MetricsConfig;
use salve_connectors::ControlHandle;
use std::future::Future;
use std::net::SocketAddr;

/// Why the endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Not built yet.
    #[error("the metrics endpoint is not built yet")]
    NotBuilt,
}

/// A bound, not yet serving, metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
}

/// Binds the listener of `config.listen`, so the address is known before serving.
pub async fn bind(
    config: &MetricsConfig,
    control: ControlHandle,
) -> Result<MetricsServer, MetricsError> {
    let _ = (config, control);
    Err(MetricsError::NotBuilt)
}

impl MetricsServer {
    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MetricsError> {
        shutdown.await;
        Ok(())
    }
}
