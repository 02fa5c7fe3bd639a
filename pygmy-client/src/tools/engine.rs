//! The load generator's HTTP engine: each worker owns one keep-alive
//! HTTP/1 connection to the frontend (hyper, no pool, no locks between
//! workers), and decodes only what the run needs from each answer. Lean on
//! purpose: the generator must never be what limits a measurement.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ClientError, ERROR_KIND_HEADER};

/// The longest wait for one answer.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection to the frontend, opened on first use and again after it
/// breaks.
pub struct Connection {
    /// `host:port`, to connect to.
    authority: String,
    /// `http://host:port` or `https://host:port`, for errors.
    origin: String,
    host: HeaderValue,
    /// For `https://`: the TLS client and the name the frontend's
    /// certificate must bear.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// A connection to the frontend at `base` (`http://host:port`, or
    /// `https://host:port` with `tls`).
    pub fn new(
        base: &url::Url,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, ClientError> {
        let invalid = || ClientError::InvalidUrl(base.to_string());
        let host = base.host_str().ok_or_else(invalid)?;
        let port = base.port_or_known_default().ok_or_else(invalid)?;
        let authority = format!("{host}:{port}");
        let tls = match (base.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => {
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(name.to_owned()).map_err(|_| invalid())?;
                Some((TlsConnector::from(Arc::clone(config)), name))
            }
            ("https", None) => {
                return Err(ClientError::InvalidCall(format!(
                    "{base} is https: give the CA to trust (--ca)"
                )))
            }
            _ => return Err(invalid()),
        };
        Ok(Connection {
            host: HeaderValue::from_str(&authority).map_err(|_| invalid())?,
            origin: format!("{}://{authority}", base.scheme()),
            authority,
            tls,
            sender: None,
        })
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, ClientError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let transport = |reason: String, connect| ClientError::Transport {
                url: self.origin.clone(),
                reason,
                connect,
            };
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| transport(e.to_string(), true))?;
            let _ = stream.set_nodelay(true);
            let sender = match &self.tls {
                None => handshake(stream).await,
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| transport(format!("TLS: {e}"), true))?;
                    handshake(stream).await
                }
            }
            .map_err(|e| transport(e.to_string(), true))?;
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| ClientError::Transport {
            url: self.origin.clone(),
            reason: "no connection".to_owned(),
            connect: true,
        })
    }

    /// `GET path_and_query`: the body of a 2xx answer, or the error the
    /// answer stands for. A request unanswered after [`REQUEST_TIMEOUT`]
    /// fails as a transport error (its outcome unknown).
    pub async fn get(&mut self, path_and_query: &str) -> Result<Bytes, ClientError> {
        let host = self.host.clone();
        let url = format!("{}{path_and_query}", self.origin);
        let timed_out = ClientError::Transport {
            url: url.clone(),
            reason: format!("no answer within {REQUEST_TIMEOUT:?}"),
            connect: false,
        };
        let request = async {
            let sender = self.sender().await?;
            let request = Request::get(path_and_query)
                .header(HOST, host)
                .body(Empty::new())
                .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
            let transport = |e: hyper::Error| ClientError::Transport {
                url: url.clone(),
                reason: e.to_string(),
                connect: false,
            };
            let response = sender.send_request(request).await.map_err(transport)?;
            let status = response.status();
            let kind = response.headers().get(ERROR_KIND_HEADER).cloned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(transport)?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                let kind = kind.as_ref().and_then(|k| k.to_str().ok());
                Err(ClientError::answer(status.as_u16(), kind, &body))
            }
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .unwrap_or(Err(timed_out));
        if matches!(result, Err(ClientError::Transport { .. })) {
            // Open a new connection for the next request.
            self.sender = None;
        }
        result
    }
}

/// HTTP/1 over `stream`, its connection driven by a task of its own (it
/// ends when the server closes it or the sender is dropped).
async fn handshake<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The parts of a lookup's or search's answer a session follows.
#[derive(Debug, Deserialize)]
pub struct Items {
    /// The books, reduced to id and stock.
    pub item: Vec<ItemRef>,
}

/// A book, reduced to id and stock.
#[derive(Debug, Deserialize)]
pub struct ItemRef {
    /// Its id.
    pub id: i64,
    /// Its stock.
    pub count: i64,
}

/// The part of a buy's answer the checker needs.
#[derive(Debug, Deserialize)]
pub struct Bought {
    /// The order.
    pub order: OrderRef,
}

/// The order's id.
#[derive(Debug, Deserialize)]
pub struct OrderRef {
    /// It.
    pub id: i64,
}

/// Decodes `body` as `T`, or tells why not.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        url: "(load)".to_owned(),
        reason: e.to_string(),
    })
}
