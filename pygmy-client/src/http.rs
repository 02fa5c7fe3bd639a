//! The HTTP plumbing the typed clients share: one pool of keep-alive
//! connections (hyper-util's client), the calls' targets built from the
//! typed routes, and decoding of the envelope.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pygmy_core::api::public::HealthResponse;
use pygmy_core::api::routes::{NodeRoute, OrderRoute, Route};
use pygmy_core::error::chain;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::error::{ClientError, ERROR_KIND_HEADER};

/// The header that carries the cluster token on internal calls.
pub const TOKEN_HEADER: &str = "x-pygmy-token";

/// The header that carries a buy's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Connection settings of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call.
    pub timeout: Duration,
    /// The cluster token to send on internal calls, if the cluster has one.
    pub token: Option<String>,
    /// TLS for `https://` URLs: the CA to trust and the certificate to
    /// show ([`crate::tls::client_config`]); none: `http://` only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            token: None,
            tls: None,
        }
    }
}

/// A pool of keep-alive HTTP/1 connections (hyper's), with the settings of
/// the calls made over it; clones share it. One per process is enough: it
/// keeps connections per host.
#[derive(Debug, Clone)]
pub struct Pool {
    client: PoolClient,
    timeout: Duration,
}

/// hyper's client, over plain TCP or, with TLS, over rustls (which also
/// takes `http://` URLs).
#[derive(Debug, Clone)]
enum PoolClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl PoolClient {
    fn request(&self, request: http::Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            PoolClient::Plain(client) => client.request(request),
            PoolClient::Tls(client) => client.request(request),
        }
    }
}

/// How often [`Http::wait_ready`] asks again.
const READY_POLL: Duration = Duration::from_millis(50);

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// A pool with these settings, to share between [`Http`]s (one connection
/// pool for all the nodes a process talks to).
pub fn pooled(options: &ClientOptions) -> Result<Pool, ClientError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(options.connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_max_idle_per_host(256)
        // Closed here before a node closes it (an idle connection is closed
        // there after its read timeout, 10 s by default): a call rarely
        // meets a connection the other side is closing.
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new());
    let client = match &options.tls {
        None => PoolClient::Plain(builder.build(connector)),
        Some(tls) => {
            // hyper-rustls sends the scheme's TCP connection through as is.
            connector.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::clone(tls))
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector);
            PoolClient::Tls(builder.build(connector))
        }
    };
    Ok(Pool {
        client,
        timeout: options.timeout,
    })
}

/// A call to make with [`Http::send`]: method, target, headers and body.
#[derive(Debug)]
pub struct Call {
    request: http::request::Builder,
    body: Bytes,
    /// Why the call cannot be made (a header or a body that does not
    /// encode), told when it is sent.
    invalid: Option<String>,
}

impl Call {
    /// Adds header `name: value`.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => self.request = self.request.header(name, value),
            _ => self.invalid = Some(format!("the header {name} cannot carry {value:?}")),
        }
        self
    }

    /// Sends `body` as JSON.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Call {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.body(bytes),
            Err(err) => Call {
                invalid: Some(format!("the body does not encode: {err}")),
                ..self
            },
        }
    }

    /// Sends `body`, JSON already encoded.
    pub fn body(mut self, body: Vec<u8>) -> Call {
        self.request = self.request.header(CONTENT_TYPE, "application/json");
        self.body = Bytes::from(body);
        self
    }
}

/// Escaped in a path segment: what the URL standard escapes there.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// A base URL and a pool of connections (shared by clones).
#[derive(Debug, Clone)]
pub struct Http {
    pool: Pool,
    base: Url,
    /// `http://host:port` (or `https://`), without a path: each call's
    /// target is built on it.
    origin: String,
    token: Option<String>,
}

impl Http {
    /// A client for the node at `base` (`http://host:port`, or
    /// `https://host:port` with [`ClientOptions::tls`]).
    pub fn new(base: &str, options: &ClientOptions) -> Result<Http, ClientError> {
        Http::with_client(pooled(options)?, base, options.token.clone())
    }

    /// A client for `base` sharing an existing pool.
    pub fn with_client(pool: Pool, base: &str, token: Option<String>) -> Result<Http, ClientError> {
        let base = Url::parse(base).map_err(|_| ClientError::InvalidUrl(base.to_owned()))?;
        let (scheme, host) = match (base.scheme(), base.host_str()) {
            (scheme @ ("http" | "https"), Some(host)) => (scheme, host),
            _ => return Err(ClientError::InvalidUrl(base.to_string())),
        };
        let origin = match base.port() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(Http {
            pool,
            origin,
            base,
            token,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A call of `route` with `query` pairs (each escaped), with the
    /// cluster token if there is one.
    pub fn request<R: Route>(&self, route: &R, query: &[(&str, &str)]) -> Call {
        let (method, segments) = route.target();
        let mut target = self.origin.clone();
        for segment in &segments {
            target.push('/');
            target.extend(utf8_percent_encode(segment, SEGMENT));
        }
        if segments.is_empty() {
            target.push('/');
        }
        if !query.is_empty() {
            target.push('?');
            let start = target.len();
            let mut pairs = url::form_urlencoded::Serializer::for_suffix(target, start);
            pairs.extend_pairs(query);
            target = pairs.finish();
        }
        let request = http::Request::builder().method(method).uri(target);
        let call = Call {
            request,
            body: Bytes::new(),
            invalid: None,
        };
        match &self.token {
            Some(token) => call.header(TOKEN_HEADER, token),
            None => call,
        }
    }

    /// Sends `call` and writes the body of a 2xx answer to `out` as it
    /// comes, a frame at a time (never whole in memory); answers the bytes
    /// written. The answer's head within the pool's timeout, and each
    /// frame within it of the last; a body cut short is an error.
    pub async fn download(
        &self,
        call: Call,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let (url, request) = self.prepare(call)?;
        let transport = |reason: String, connect: bool| ClientError::Transport {
            url: url.clone(),
            reason,
            connect,
        };
        let late = || transport(format!("no answer within {:?}", self.pool.timeout), false);
        let response = tokio::time::timeout(self.pool.timeout, self.pool.client.request(request))
            .await
            .map_err(|_| late())?
            .map_err(|e| transport(chain(&e), e.is_connect()))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let kind = response
                .headers()
                .get(ERROR_KIND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = tokio::time::timeout(self.pool.timeout, response.into_body().collect())
                .await
                .map_err(|_| late())?
                .map_err(|e| transport(chain(&e), false))?
                .to_bytes();
            return Err(ClientError::answer(status, kind.as_deref(), &body));
        }
        let mut body = response.into_body();
        let mut written = 0u64;
        loop {
            let frame = tokio::time::timeout(self.pool.timeout, body.frame())
                .await
                .map_err(|_| late())?;
            match frame {
                None => return Ok(written),
                Some(Err(e)) => {
                    return Err(transport(
                        format!("the body broke off: {}", chain(&e)),
                        false,
                    ))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.write_all(&data)
                            .await
                            .map_err(|e| ClientError::InvalidCall(format!("cannot write: {e}")))?;
                        written += data.len() as u64;
                    }
                }
            }
        }
    }

    /// The URL `call` goes to (for errors), and its request; the error it
    /// was built with, if any.
    fn prepare(&self, call: Call) -> Result<(String, http::Request<Full<Bytes>>), ClientError> {
        if let Some(invalid) = call.invalid {
            return Err(ClientError::InvalidCall(invalid));
        }
        let url = call
            .request
            .uri_ref()
            .map_or_else(|| self.origin.clone(), ToString::to_string);
        let request = call
            .request
            .body(Full::new(call.body))
            .map_err(|e| ClientError::InvalidCall(e.to_string()))?;
        Ok((url, request))
    }

    /// Sends `call` and returns the body of a 2xx answer, or the error the
    /// answer stands for; the whole call within the pool's timeout.
    pub async fn send_raw(&self, call: Call) -> Result<Bytes, ClientError> {
        let (url, request) = self.prepare(call)?;
        let transport = |reason: String, connect: bool| ClientError::Transport {
            url: url.clone(),
            reason,
            connect,
        };
        let exchange = async {
            let response = self
                .pool
                .client
                .request(request)
                .await
                .map_err(|e| transport(chain(&e), e.is_connect()))?;
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get(ERROR_KIND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(chain(&e), false))?
                .to_bytes();
            Ok::<_, ClientError>((status, kind, body))
        };
        let (status, kind, body) = tokio::time::timeout(self.pool.timeout, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.pool.timeout), false))??;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ClientError::answer(status, kind.as_deref(), &body))
        }
    }

    /// Sends `call` and decodes a 2xx answer as `T`.
    pub async fn send<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let body = self.send_raw(call).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: self.origin.clone(),
            reason: e.to_string(),
        })
    }
}

impl Http {
    /// `GET /health`: liveness (any role).
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        // Every role's table has `/health`; any one names the route.
        self.send(self.request(&NodeRoute::<OrderRoute>::Health, &[]))
            .await
    }

    /// `GET /ready` (any role): Ok once the node can serve; `Unavailable`
    /// with the node's reason until then. A node of an older build, which
    /// has no `/ready` (404), is asked its `/health`, which answered 503
    /// while it could not serve.
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        match self
            .send(self.request(&NodeRoute::<OrderRoute>::Ready, &[]))
            .await
        {
            Err(ClientError::NotFound(_)) => self.health().await,
            // A 503 carries the health body: its reason is the message.
            Err(ClientError::Unavailable(body)) => {
                let reason = serde_json::from_str::<HealthResponse>(&body)
                    .ok()
                    .and_then(|health| health.reason);
                Err(ClientError::Unavailable(reason.unwrap_or(body)))
            }
            answer => answer,
        }
    }

    /// Asks `/ready` until the node answers 200, at most `timeout` (a
    /// freshly started store takes about a second); the last failure once
    /// the time is up.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<HealthResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.ready().await {
                Ok(health) => return Ok(health),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(READY_POLL).await,
            }
        }
    }

    /// The one book of a single-item answer (`item: [book]`).
    pub fn first_item(
        &self,
        response: pygmy_core::api::public::ItemsResponse,
        what: &str,
    ) -> Result<pygmy_core::types::Book, ClientError> {
        response
            .item
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode {
                url: self.base.to_string(),
                reason: format!("{what} answered no item"),
            })
    }
}

#[cfg(test)]
mod tests {
    use pygmy_core::api::routes::{CatalogRoute, MemberRoute};

    use super::*;

    fn target(call: &Call) -> String {
        call.request
            .uri_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn targets_escape_path_segments_and_query_values() {
        let http = Http::new("http://127.0.0.1:8011", &ClientOptions::default()).expect("http");
        assert_eq!(
            target(&http.request(&CatalogRoute::Items, &[])),
            "http://127.0.0.1:8011/item"
        );
        assert_eq!(
            target(&http.request(&CatalogRoute::Items, &[("topic", "a b&c=d/é")])),
            "http://127.0.0.1:8011/item?topic=a+b%26c%3Dd%2F%C3%A9"
        );
        let remove = CatalogRoute::Members(MemberRoute::Remove("x y/z?%".to_owned()));
        assert_eq!(
            target(&http.request(&remove, &[])),
            "http://127.0.0.1:8011/members/x%20y%2Fz%3F%25"
        );
    }

    #[tokio::test]
    async fn a_header_that_cannot_be_sent_fails_the_call_not_the_process() {
        let http = Http::new("http://[::1]:9", &ClientOptions::default()).expect("http");
        let call = http
            .request(&CatalogRoute::Items, &[])
            .header("idempotency-key", "bad\nvalue");
        assert_eq!(target(&call), "http://[::1]:9/item");
        // Refused before anything is sent (nothing listens there anyway).
        let err = http.send_raw(call).await.expect_err("an invalid call");
        assert!(matches!(err, ClientError::InvalidCall(_)), "{err:?}");
        assert!(!err.is_replica_failure());
    }
}
