//! The `[api]` and `[metrics]` tables of `salve.toml`.

use serde::Deserialize;
use std::path::PathBuf;

/// The `[api]` table: the gRPC server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `host:port` to serve gRPC on; empty turns the API off. Port 0 picks a free port.
    pub listen: String,
    /// The bearer token that mutating calls must carry (`authorization: Bearer <token>`).
    /// Empty, with no `token_file`: mutating calls are refused.
    pub token: String,
    /// A file holding the token (a mounted Kubernetes secret, say); read at start-up.
    pub token_file: Option<PathBuf>,
    /// Let queries through without a token when the client connects over loopback. Off:
    /// every call needs the token.
    pub open_queries_on_loopback: bool,
    /// TLS for the server; mTLS when `client_ca` is set.
    pub tls: Option<TlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7420".into(),
            token: String::new(),
            token_file: None,
            open_queries_on_loopback: true,
            tls: None,
        }
    }
}

/// `[api.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to; set for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// The `[metrics]` table: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` on; empty turns it off. Port 0 picks a free port.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7421".into(),
        }
    }
}
