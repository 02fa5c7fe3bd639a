//! The HTTP plumbing the typed clients share: one pooled reqwest client,
//! URL building, and decoding of the envelope.

use std::time::Duration;

use pygmy_core::api::routes::Route;
use pygmy_core::error::chain;
use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;
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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            token: None,
        }
    }
}

/// A base URL and a pooled HTTP client (keep-alive connections, shared by
/// clones).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Http {
    /// A client for the node at `base` (`http://host:port`).
    pub fn new(base: &str, options: &ClientOptions) -> Result<Http, ClientError> {
        Http::with_client(pooled(options)?, base, options.token.clone())
    }

    /// A client for `base` sharing an existing reqwest client (and its pool).
    pub fn with_client(
        client: reqwest::Client,
        base: &str,
        token: Option<String>,
    ) -> Result<Http, ClientError> {
        let base = Url::parse(base).map_err(|_| ClientError::InvalidUrl(base.to_owned()))?;
        if base.scheme() != "http" || base.host().is_none() {
            return Err(ClientError::InvalidUrl(base.to_string()));
        }
        Ok(Http {
            client,
            base,
            token,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A request for `route` with `query` pairs (each escaped), with the
    /// cluster token if there is one.
    pub fn request<R: Route>(&self, route: &R, query: &[(&str, &str)]) -> RequestBuilder {
        let (method, segments) = route.target();
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(&segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.header(TOKEN_HEADER, token),
            None => request,
        }
    }

    /// Sends `request` and returns the body of a 2xx answer, or the error
    /// the answer stands for.
    pub async fn send_raw(&self, request: RequestBuilder) -> Result<bytes::Bytes, ClientError> {
        let request = request
            .build()
            .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
        let url = request.url().to_string();
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                reason: chain(&e),
                connect: e.is_connect(),
            })?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get(ERROR_KIND_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: chain(&e),
            connect: false,
        })?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ClientError::answer(status, kind.as_deref(), &body))
        }
    }

    /// Sends `request` and decodes a 2xx answer as `T`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, ClientError> {
        let body = self.send_raw(request).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: self.base.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A reqwest client with these settings, to share between [`Http`]s (one
/// connection pool for all the nodes a process talks to).
pub fn pooled(options: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .no_proxy()
        .build()
        .map_err(|e| ClientError::InvalidUrl(e.to_string()))
}

impl Http {
    /// The one book of a single-item answer (`item: [book]`).
    pub fn first_item(
        &self,
        response: pygmy_core::api::ItemsResponse,
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
