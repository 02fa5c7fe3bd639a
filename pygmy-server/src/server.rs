//! Serving a node on raw hyper 1: the accept loop with graceful shutdown,
//! the limits on each request (header and body time, body size), and the
//! turning of every handler error into the JSON envelope.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::api::{ApiError, ApiResult, Request, Response};

/// A node's request handler.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request (its body already read).
    async fn handle(&self, request: Request) -> ApiResult;
}

/// The limits every request is served under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted.
    pub max_body: usize,
    /// Longest time to receive the headers, and then the body.
    pub read_timeout: Duration,
    /// Longest time a handler may take before the client gets a 503.
    pub handler_timeout: Duration,
    /// Longest wait for open connections at shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            read_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` completes, then stops
/// accepting and lets open requests finish (at most `drain_timeout`).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
                let handler = Arc::clone(&handler);
                let service = service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, std::convert::Infallible>(respond(&*handler, req, limits).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.read_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(
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
}

async fn respond<H: Handler>(
    handler: &H,
    req: http::Request<Incoming>,
    limits: Limits,
) -> Response {
    let result = async {
        let request = read_request(req, limits).await?;
        tokio::time::timeout(limits.handler_timeout, handler.handle(request))
            .await
            .map_err(|_| ApiError::Unavailable("the request took too long".to_owned()))?
    }
    .await;
    result.unwrap_or_else(ApiError::into_response)
}

async fn read_request(req: http::Request<Incoming>, limits: Limits) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let body = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout)?
    .map_err(|err| {
        if err.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge(limits.max_body)
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
