//! Serving a node on raw hyper 1: the accept loop with graceful shutdown,
//! the limits on each request (header and body time, body size), the
//! turning of every handler error into the JSON envelope, and what every
//! node answers alike: `GET /health` and `GET /metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::{ApiError, ApiResult, Request, Response};
use crate::node::{health, Identity};

/// A node's request handler.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request (its body already read).
    async fn handle(&self, request: Request) -> ApiResult;

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

/// Prometheus text being written, each line labelled with the node.
#[derive(Debug)]
pub struct Metrics {
    node: String,
    text: String,
}

impl Metrics {
    fn new(node: &str) -> Self {
        Metrics {
            node: node.to_owned(),
            text: String::new(),
        }
    }

    /// A counter (a total since start).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "counter", "", value);
    }

    /// A gauge (a value now).
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "gauge", "", value);
    }

    fn sample(&mut self, name: &str, help: &str, kind: &str, labels: &str, value: u64) {
        use std::fmt::Write;
        if !self.text.contains(&format!("# TYPE {name} ")) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let _ = writeln!(
            self.text,
            "{name}{{node=\"{}\"{labels}}} {value}",
            self.node
        );
    }
}

/// Requests answered by a node, by status class.
#[derive(Debug, Default)]
struct RequestCounts {
    by_class: [AtomicU64; 5],
}

impl RequestCounts {
    fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut Metrics) {
        for (i, count) in self.by_class.iter().enumerate() {
            let labels = format!(",code=\"{}xx\"", i + 1);
            out.sample(
                "pygmy_requests_total",
                "Requests answered, by status class.",
                "counter",
                &labels,
                count.load(Ordering::Relaxed),
            );
        }
    }
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
            max_internal_body: 8 * 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `path` is a replication call, which may carry a batch of ops.
fn is_replication(path: &str) -> bool {
    path.starts_with("/replication/") || path.starts_with("/item/propagate/") || path == "/update"
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
        let request = read_request(req, limits).await?;
        if request.method == Method::GET {
            match request.path().as_slice() {
                ["metrics"] => return Ok(metrics(handler, counts)),
                ["health"] => return Ok(health(handler.identity(), handler.is_ready())),
                _ => {}
            }
        }
        tokio::time::timeout(limits.handler_timeout, handler.handle(request))
            .await
            .map_err(|_| ApiError::Unavailable("the request took too long".to_owned()))?
    }
    .await;
    result.unwrap_or_else(ApiError::into_response)
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
    let mut response = http::Response::new(Full::new(Bytes::from(out.text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn read_request(req: http::Request<Incoming>, limits: Limits) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let max = if is_replication(parts.uri.path()) {
        limits.max_internal_body
    } else {
        limits.max_body
    };
    let body = tokio::time::timeout(limits.read_timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge(max)
            } else {
                ApiError::BadRequest(format!("cannot read the body: {err}"))
            }
        })?
        .to_bytes();
    Ok(Request::new(
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body,
    ))
}

/// Bytes of a body, for handlers that take JSON: 400 on invalid JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}
