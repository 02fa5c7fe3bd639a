//! Serving a node on raw hyper 1: the accept loop with graceful shutdown,
//! the limits on each request (header and body time, body size), and the
//! path from bytes to a handler: the route is parsed from the method and
//! path first (404 and 405 fall out of the role's route table), the
//! cluster token of an internal route is checked from the headers, and only
//! then is the body read, under the route's limit and once there is room
//! for it under the node's cap on bodies in flight (one budget for
//! anonymous requests, one apart for those with the token: peers never
//! wait behind anonymous clients). Connections are capped too, with slots
//! apart past the cap for connections whose every request carries the
//! token. What every node answers alike (`GET /health`, `GET /ready`,
//! `GET /metrics`, `GET /openapi.json`) is answered here, and every request's latency is
//! counted by route.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use pygmy_core::api::routes::{parse, Access, BodySize, NodeRoute, Route, RouteError};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::error::ApiError;
use super::metrics::{Latencies, Metrics, RequestCounts};
use super::node::NodeInfo;
use super::request::Request;
use super::response::{health, openapi, ready, ApiResult, Readiness, Response};

/// A node's request handler: one per role.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The role's route table.
    type Route: Route + Send;

    /// Answers one request to `route` (the token of an internal route
    /// already checked, the body already read).
    async fn handle(&self, route: Self::Route, request: Request) -> ApiResult;

    /// Who the node is.
    fn node(&self) -> &NodeInfo;

    /// Whether the node can serve its role's requests now (`GET /ready`
    /// answers 503 until then): a replica once it is caught up, a
    /// frontend once it reaches a ready replica of each backend.
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }

    /// A raft replica: the leader of its service it knows, by name (for
    /// `GET /health`, where callers learn where to send writes).
    fn leader(&self) -> Option<String> {
        None
    }

    /// The node's own figures for `GET /metrics` (the server adds the
    /// request counts every node has).
    async fn metrics(&self, _out: &mut Metrics) {}

    /// Called once when the node is told to stop, before it stops
    /// accepting: a replica leaves replication here (see
    /// `pygmy_core::replication::Replicator::stop`).
    async fn stop(&self) {}
}

/// The limits every request is served under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once for anyone; more take a peer slot,
    /// or wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// Connections past `max_connections` kept for requests with the
    /// cluster token (none on a node without a token): such a connection
    /// has [`PEER_HEADER_TIMEOUT`] for each request's headers, and a
    /// request without the token on it is answered 503 and the
    /// connection closed. So peers that need a new connection get one
    /// while anonymous clients hold every other.
    pub peer_connections: usize,
    /// Most bytes of request bodies being read or held at once, over all
    /// connections (at least the largest body); a request that finds no
    /// room within half of `read_timeout` is answered 503. Twice over: one
    /// budget for anonymous requests, one apart for those that carry the
    /// cluster token, so that peers never wait behind anonymous clients.
    pub max_body_in_flight: usize,
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
            max_connections: 4096,
            peer_connections: 256,
            max_body_in_flight: 64 * 1024 * 1024,
            max_body: 64 * 1024,
            max_internal_body: pygmy_core::replication::MAX_CALL_BYTES,
            read_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a connection on a peer slot has for each request's headers (a
/// peer sends them at once).
pub const PEER_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's slot under the caps, held while it is open.
struct Slot {
    _permit: OwnedSemaphorePermit,
    /// One of `peer_connections`: only requests with the token are served.
    peers_only: bool,
}

/// Serves `handler` on `listener` (over TLS with `tls`) until `shutdown`
/// completes, then stops the handler ([`Handler::stop`]), stops accepting, lets open requests finish (at most `drain_timeout`) and
/// closes every connection, so nothing of the node outlives this call.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let server = Arc::new(Server::new(limits, handler.node().token.is_some()));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        // A connection slot first: past both caps, new connections wait
        // in the backlog, and nothing is read from them.
        let next = async {
            let slot = server.slot().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            (slot, accepted) = next => {
                let Some(slot) = slot else { break };
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
                let peers_only = slot.peers_only;
                let header_timeout = if peers_only {
                    limits.read_timeout.min(PEER_HEADER_TIMEOUT)
                } else {
                    limits.read_timeout
                };
                let connection = Connection {
                    handler: Arc::clone(&handler),
                    server: Arc::clone(&server),
                    peers_only,
                    header_timeout,
                    watcher: graceful.watcher(),
                };
                let tls = tls.clone();
                connections.spawn(
                    async move {
                        let served = match tls {
                            None => connection.serve(stream, Caller::Plain).await,
                            // The handshake in the connection's own task,
                            // in the time its headers would have.
                            Some(acceptor) => {
                                match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => {
                                        let certified = stream
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .is_some_and(|certs| !certs.is_empty());
                                        let caller = if certified {
                                            Caller::Certified
                                        } else {
                                            Caller::Anonymous
                                        };
                                        connection.serve(stream, caller).await
                                    }
                                    Ok(Err(err)) => Err(format!("TLS handshake: {err}")),
                                    Err(_) => Err("no TLS handshake in time".to_owned()),
                                }
                            }
                        };
                        if let Err(err) = served {
                            tracing::debug!(%peer, %err, "connection ended with an error");
                        }
                        drop(slot);
                    }
                    .in_current_span(),
                );
            }
            () = &mut shutdown => break,
        }
    }
    handler.stop().await;
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("connections still open after {:?}; closing them", limits.drain_timeout);
        }
    }
    connections.shutdown().await;
}

/// Who called on a connection, as far as TLS tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// No TLS on this node: the cluster token alone admits to internal
    /// endpoints.
    Plain,
    /// TLS, and the caller showed a certificate of the cluster's CA (the
    /// handshake checked it): a peer or an operator.
    Certified,
    /// TLS without a certificate: public endpoints only.
    Anonymous,
}

/// One accepted connection, before it is served.
struct Connection<H> {
    handler: Arc<H>,
    server: Arc<Server>,
    /// On a peer slot: only requests with the token are served.
    peers_only: bool,
    header_timeout: Duration,
    watcher: Watcher,
}

impl<H: Handler> Connection<H> {
    /// Serves HTTP/1 on `stream` until it closes (or the server drains it).
    async fn serve<S>(self, stream: S, caller: Caller) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            handler,
            server,
            peers_only,
            header_timeout,
            watcher,
        } = self;
        let service = service_fn(move |req| {
            let (handler, server) = (Arc::clone(&handler), Arc::clone(&server));
            async move {
                let started = Instant::now();
                let (route, response) = if peers_only {
                    respond_to_peer(&*handler, &server, caller, req).await
                } else {
                    respond(&*handler, &server, caller, req).await
                };
                server.counts.record(response.status());
                server.latencies.record(route, started.elapsed());
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        watcher.watch(conn).await.map_err(|err| err.to_string())
    }
}

/// What one node's server keeps across its connections.
struct Server {
    limits: Limits,
    counts: RequestCounts,
    latencies: Latencies,
    /// One permit per connection that may be open for anyone.
    connections: Arc<Semaphore>,
    /// One permit per connection past those, for requests with the token.
    peer_connections: Arc<Semaphore>,
    /// How many `peer_connections` has in all.
    peer_slots: usize,
    /// One permit per byte of body that may be held, for anonymous
    /// requests (the public routes).
    bodies: Arc<Semaphore>,
    /// The same, apart, for requests that carry the cluster token (peers:
    /// raft's appends and votes, sales, pushes; operators): anonymous
    /// clients that hold their whole budget with slow bodies never make
    /// them wait.
    peer_bodies: Arc<Semaphore>,
}

impl Server {
    /// A server under `limits`; the peer slots only for a node with a
    /// token (without one, no request can be told to be a peer's).
    fn new(limits: Limits, has_token: bool) -> Self {
        let peer_slots = if has_token {
            limits.peer_connections.min(Semaphore::MAX_PERMITS)
        } else {
            0
        };
        let most_body = limits.max_body.max(limits.max_internal_body);
        let in_flight = limits
            .max_body_in_flight
            .max(most_body)
            .min(Semaphore::MAX_PERMITS);
        Server {
            limits,
            counts: RequestCounts::default(),
            latencies: Latencies::default(),
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            peer_connections: Arc::new(Semaphore::new(peer_slots)),
            peer_slots,
            bodies: Arc::new(Semaphore::new(in_flight)),
            peer_bodies: Arc::new(Semaphore::new(in_flight)),
        }
    }

    /// The next connection's slot: one for anyone if there is one, else
    /// the first that frees, a peer slot included; none once the server
    /// stops.
    async fn slot(&self) -> Option<Slot> {
        let slot = |peers_only| {
            move |permit| Slot {
                _permit: permit,
                peers_only,
            }
        };
        if let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() {
            return Some(slot(false)(permit));
        }
        tokio::select! {
            biased;
            permit = Arc::clone(&self.connections).acquire_owned() => permit.ok().map(slot(false)),
            permit = Arc::clone(&self.peer_connections).acquire_owned() => permit.ok().map(slot(true)),
        }
    }

    /// Room for a body of at most `bytes`, in the budget of its `access`
    /// (an internal route's token is checked before), waited for at most
    /// half the read timeout (a body that takes its whole read timeout
    /// gives its room back by then): the permit is held until the request
    /// is answered.
    async fn room_for(
        &self,
        bytes: usize,
        access: Access,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if bytes == 0 {
            return Ok(None);
        }
        let budget = match access {
            Access::Public => &self.bodies,
            Access::Internal => &self.peer_bodies,
        };
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let room = Arc::clone(budget).acquire_many_owned(permits);
        match tokio::time::timeout(self.limits.read_timeout / 2, room).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(ApiError::unavailable(
                "too many request bodies in flight; try again",
            )),
        }
    }

    fn write_metrics(&self, out: &mut Metrics) {
        self.counts.write(out);
        self.latencies.write(out);
        let open = self.limits.max_connections.max(1) - self.connections.available_permits();
        out.gauge(
            "pygmy_connections_open",
            "Connections open (at most max_connections).",
            u64::try_from(open).unwrap_or(u64::MAX),
        );
        out.gauge(
            "pygmy_connections_max",
            "The most connections open at once.",
            u64::try_from(self.limits.max_connections).unwrap_or(u64::MAX),
        );
        let peers = self.peer_slots - self.peer_connections.available_permits();
        out.gauge(
            "pygmy_peer_connections_open",
            "Connections open on the slots kept for the cluster token.",
            u64::try_from(peers).unwrap_or(u64::MAX),
        );
        out.gauge(
            "pygmy_peer_connections_max",
            "The slots kept past max_connections for the cluster token.",
            u64::try_from(self.peer_slots).unwrap_or(u64::MAX),
        );
    }
}

/// Answers one request on a peer slot: as [`respond`] if it carries the
/// cluster token, else 503 and the connection closed (the slot is given
/// back).
async fn respond_to_peer<H: Handler>(
    handler: &H,
    server: &Server,
    caller: Caller,
    req: http::Request<Incoming>,
) -> (&'static str, Response) {
    if authorize(req.headers(), handler.node().token.as_deref(), caller).is_ok() {
        return respond(handler, server, caller, req).await;
    }
    let mut response = Response::from(ApiError::unavailable("too many connections; try again"));
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    ("past_the_cap", response)
}

/// Answers one request, and says which route it was (for its latency).
async fn respond<H: Handler>(
    handler: &H,
    server: &Server,
    caller: Caller,
    req: http::Request<Incoming>,
) -> (&'static str, Response) {
    let mut label = "unmatched";
    let result = async {
        let limits = server.limits;
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
                    authorize(&parts.headers, handler.node().token.as_deref(), caller)?;
                }
                return Err(RouteError::BadParam(bad).into());
            }
            Err(err) => return Err(err.into()),
        };
        label = route.label();
        let info = route.info();
        if info.access == Access::Internal {
            authorize(&parts.headers, handler.node().token.as_deref(), caller)?;
        }
        let max = match info.body {
            BodySize::Small => limits.max_body,
            BodySize::Batch => limits.max_internal_body,
        };
        let _room = server
            .room_for(body_bound(&parts.headers, &body, max)?, info.access)
            .await?;
        let body = read_body(body, max, limits.read_timeout).await?;
        let request = Request::new(parts.uri.query(), parts.headers, body);
        match route {
            NodeRoute::Health => Ok(health(
                handler.node(),
                handler.readiness(),
                handler.leader(),
            )),
            NodeRoute::Ready => Ok(ready(handler.node(), handler.readiness(), handler.leader())),
            NodeRoute::Metrics => Ok(metrics(handler, server).await),
            NodeRoute::OpenApi => Ok(openapi(handler.node().role)),
            NodeRoute::Role(route) => {
                tokio::time::timeout(limits.handler_timeout, handler.handle(route, request))
                    .await
                    .map_err(|_| ApiError::unavailable("the request took too long"))?
            }
        }
    }
    .await;
    (label, result.unwrap_or_else(Response::from))
}

/// The most bytes `body` can carry under the limit `max`: 0 for none, its
/// `Content-Length` if it gives one (413 at once if that is over `max`),
/// else `max`.
fn body_bound(headers: &http::HeaderMap, body: &Incoming, max: usize) -> Result<usize, ApiError> {
    if body.is_end_stream() {
        return Ok(0);
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max as u64 => Err(ApiError::payload_too_large(max)),
        Some(length) => Ok(usize::try_from(length).unwrap_or(max)),
        None => Ok(max),
    }
}

/// Admits a call to an internal endpoint: under TLS only a caller that
/// showed a certificate of the cluster's CA; and the cluster token in
/// `headers`, if the cluster has one.
fn authorize(
    headers: &http::HeaderMap,
    token: Option<&str>,
    caller: Caller,
) -> Result<(), ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized_without_certificate());
    }
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

async fn metrics<H: Handler>(handler: &H, server: &Server) -> Response {
    let mut out = Metrics::new(&handler.node().name);
    server.write_metrics(&mut out);
    out.gauge(
        "pygmy_ready",
        "1 once the node can serve (GET /ready answers 200), else 0.",
        u64::from(handler.readiness().is_ready()),
    );
    handler.metrics(&mut out).await;
    let mut response = http::Response::new(Either::Left(Full::new(Bytes::from(out.into_text()))));
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
