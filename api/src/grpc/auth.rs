//! Who may call what: a tower layer in front of every service the server hosts.
//!
//! It classifies each call by its gRPC path before any service sees it, and fails closed: a
//! method it does not know as a query or as open is treated as mutating. So a method added to
//! the proto later needs the token until someone decides otherwise here.

use http::{HeaderMap, Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// The `salve.v1.Salve` methods that only read.
const QUERIES: &[&str] = &[
    "GetStatus",
    "ListEntities",
    "GetEntity",
    "GetSeriesWindow",
    "ListIncidents",
    "GetIncident",
    "ListRules",
    "WatchDecisions",
];

/// Services that only describe the server: queries too.
const QUERY_SERVICES: &[&str] = &[
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Open to anyone who can connect: a Kubernetes gRPC probe cannot send a token.
const OPEN_SERVICES: &[&str] = &["grpc.health.v1.Health"];

/// What a call may do, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Health checks.
    Open,
    /// Reads.
    Query,
    /// Changes, and anything not known to be one of the others.
    Mutate,
}

/// Classifies a gRPC path, `/package.Service/Method`.
pub(crate) fn access(path: &str) -> Access {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Access::Mutate;
    };
    if OPEN_SERVICES.contains(&service) {
        Access::Open
    } else if QUERY_SERVICES.contains(&service)
        || (service == crate::proto::SERVICE_NAME && QUERIES.contains(&method))
    {
        Access::Query
    } else {
        Access::Mutate
    }
}

/// The rules in force, from `[api]`.
#[derive(Clone)]
pub(crate) struct Policy {
    /// The bearer token; `None` refuses every call that needs one.
    token: Option<Vec<u8>>,
    open_queries_on_loopback: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: this may end up in a log.
        f.debug_struct("Policy")
            .field("token_configured", &self.token.is_some())
            .field("open_queries_on_loopback", &self.open_queries_on_loopback)
            .finish()
    }
}

impl Policy {
    pub(crate) fn new(token: Option<String>, open_queries_on_loopback: bool) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(String::into_bytes),
            open_queries_on_loopback,
        }
    }

    /// Lets a call through, or says why not.
    pub(crate) fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        match access(path) {
            Access::Open => Ok(()),
            Access::Query
                if self.open_queries_on_loopback && peer.is_some_and(|p| p.ip().is_loopback()) =>
            {
                Ok(())
            }
            Access::Query => self.bearer(headers, "queries from this peer"),
            Access::Mutate => self.bearer(headers, "mutating calls"),
        }
    }

    fn bearer(&self, headers: &HeaderMap, what: &str) -> Result<(), Status> {
        let Some(expected) = &self.token else {
            return Err(Status::unauthenticated(format!(
                "{what} need a bearer token, and this server has none configured: set api.token or api.token_file"
            )));
        };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{what} need the metadata `authorization: Bearer <token>`"
                ))
            })?;
        // Constant time over the bytes, so the answer's timing says nothing of how much of a
        // guess was right. (Only the token's length can leak, which is not the secret.)
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the bearer token is not valid"))
        }
    }
}

/// The peer of a plain or TLS connection.
fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// Puts [`Policy`] in front of a service.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Authorized<S> {
    inner: S,
    policy: Arc<Policy>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Authorized<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verdict = self.policy.check(
            request.uri().path(),
            request.headers(),
            peer(request.extensions()),
        );
        match verdict {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => {
                tracing::debug!(path = request.uri().path(), %status, "call refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
