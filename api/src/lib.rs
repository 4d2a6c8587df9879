//! salve's operator surface: the `salve.v1` gRPC API that `salve ctl` and dashboards use, and
//! the Prometheus `/metrics` endpoint. Both reach the engine only through a
//! [`salve_connectors::ControlHandle`], so they never block or share its hot path.
#![forbid(unsafe_code)]

pub mod config;

pub use config::{ApiConfig, MetricsConfig, TlsConfig};
pub mod grpc;
pub mod metrics;
pub mod proto;
