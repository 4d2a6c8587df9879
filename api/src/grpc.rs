//! The `salve.v1` gRPC server. Not built yet: see issue #5.

use crate::ApiConfig;
use salve_connectors::ControlHandle;
use std::future::Future;
use std::net::SocketAddr;

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Not built yet.
    #[error("the gRPC API is not built yet")]
    NotBuilt,
}

/// A bound, not yet serving, gRPC server.
#[derive(Debug)]
pub struct GrpcServer {
    local_addr: SocketAddr,
}

/// Binds the listener of `config.listen`, so the address is known before serving.
pub async fn bind(config: &ApiConfig, control: ControlHandle) -> Result<GrpcServer, ApiError> {
    let _ = (config, control);
    Err(ApiError::NotBuilt)
}

impl GrpcServer {
    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        shutdown.await;
        Ok(())
    }
}
