//! Serving a node on raw hyper 1: the accept loop with graceful shutdown,
//! the limits on each request (header and body time, body size), and the
//! path from bytes to a handler: the route is parsed from the method and
//! path first (404 and 405 fall out of the role's route table), the
//! cluster token of an internal route is checked from the headers, and only
//! then is the body read, under the route's limit. What every node answers
//! alike (`GET /health`, `GET /metrics`) is answered here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pygmy_core::api::routes::{parse, Access, BodySize, NodeRoute, Route, RouteError};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::error::ApiError;
use super::metrics::{Metrics, RequestCounts};
use super::request::Request;
use super::response::{health, ApiResult, Response};
use super::Identity;

/// A node's request handler: one per role.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The role's route table.
    type Route: Route + Send;

    /// Answers one request to `route` (the token of an internal route
    /// already checked, the body already read).
    async fn handle(&self, route: Self::Route, request: Request) -> ApiResult;

    /// Who the node is.
    fn identity(&self) -> &Identity;

    /// Whether the node serves: a replica is not ready while it catches up
    /// (`GET /health` then answers 503).
    fn is_ready(&self) -> bool {
        true
    }

    /// The node's own figures for `GET /metrics` (the server adds the
    /// request counts every node has).
    fn metrics(&self, _out: &mut Metrics) {}
}

/// The limits every request is served under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body of a user or admin request.
    pub max_body: usize,
    /// Largest body of a replication call (a batch of ops).
    pub max_internal_body: usize,
    /// Longest time to receive the headers, and then the body.
    pub read_timeout: Duration,
    /// Longest time a handler may take before the client gets a 503.
    pub handler_timeout: Duration,
    /// Longest wait for open connections at shutdown; then they are closed.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            max_internal_body: pygmy_core::replication::MAX_CALL_BYTES,
            read_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` completes, then stops
/// accepting, lets open requests finish (at most `drain_timeout`) and
/// closes every connection, so nothing of the node outlives this call.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let counts = Arc::new(RequestCounts::default());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, say: not fatal.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (handler, counts) = (Arc::clone(&handler), Arc::clone(&counts));
                let service = service_fn(move |req| {
                    let (handler, counts) = (Arc::clone(&handler), Arc::clone(&counts));
                    async move {
                        let response = respond(&*handler, &counts, req, limits).await;
                        counts.record(response.status());
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.read_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                connections.spawn(
                    async move {
                        if let Err(err) = conn.await {
                            tracing::debug!(%peer, %err, "connection ended with an error");
                        }
                    }
                    .in_current_span(),
                );
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("connections still open after {:?}; closing them", limits.drain_timeout);
        }
    }
    connections.shutdown().await;
}

async fn respond<H: Handler>(
    handler: &H,
    counts: &RequestCounts,
    req: http::Request<Incoming>,
    limits: Limits,
) -> Response {
    let result = async {
        let (parts, body) = req.into_parts();
        let segments: Vec<&str> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let route = match parse::<NodeRoute<H::Route>>(&parts.method, &segments) {
            Ok(route) => route,
            Err(RouteError::BadParam(bad)) => {
                // The token first: an internal endpoint tells a caller
                // without it nothing, not even that its path is invalid.
                if bad.info.access == Access::Internal {
                    authorize(&parts.headers, handler.identity().token.as_deref())?;
                }
                return Err(RouteError::BadParam(bad).into());
            }
            Err(err) => return Err(err.into()),
        };
        let info = route.info();
        if info.access == Access::Internal {
            authorize(&parts.headers, handler.identity().token.as_deref())?;
        }
        let max = match info.body {
            BodySize::Small => limits.max_body,
            BodySize::Batch => limits.max_internal_body,
        };
        let body = read_body(body, max, limits.read_timeout).await?;
        let request = Request::new(parts.uri.query(), parts.headers, body);
        match route {
            NodeRoute::Health => Ok(health(handler.identity(), handler.is_ready())),
            NodeRoute::Metrics => Ok(metrics(handler, counts)),
            NodeRoute::Role(route) => {
                tokio::time::timeout(limits.handler_timeout, handler.handle(route, request))
                    .await
                    .map_err(|_| ApiError::unavailable("the request took too long"))?
            }
        }
    }
    .await;
    result.unwrap_or_else(ApiError::into_response)
}

/// Checks the cluster token in `headers`, if the cluster has one.
fn authorize(headers: &http::HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return Ok(());
    };
    let given = headers
        .get(pygmy_client::http::TOKEN_HEADER)
        .map(HeaderValue::as_bytes);
    if given.is_some_and(|given| constant_time_eq(given, expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn metrics<H: Handler>(handler: &H, counts: &RequestCounts) -> Response {
    let mut out = Metrics::new(&handler.identity().name);
    counts.write(&mut out);
    out.gauge(
        "pygmy_ready",
        "1 once the node serves, 0 while it catches up.",
        u64::from(handler.is_ready()),
    );
    handler.metrics(&mut out);
    let mut response = http::Response::new(Full::new(Bytes::from(out.into_text())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn read_body(body: Incoming, max: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| ApiError::request_timeout())?
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large(max)
            } else {
                ApiError::bad_request(format!("cannot read the body: {err}"))
            }
        })?;
    Ok(collected.to_bytes())
}
