//! The request a handler sees: its body read (within the route's limits),
//! its query decoded, with typed accessors that answer 400 on bad input.

use bytes::Bytes;
use http::HeaderMap;
use pygmy_core::types::{IdempotencyKey, ItemId};

use super::error::ApiError;

/// A request whose body has been read (within the size and time limits).
/// Its method and path are already its route (the handler's argument).
#[derive(Debug)]
pub struct Request {
    /// The query pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Request {
    /// Builds a request from the query of its URI, its headers and body.
    pub fn new(query: Option<&str>, headers: HeaderMap, body: Bytes) -> Self {
        Request {
            query: query
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
            headers,
            body,
        }
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The required parameter `name`, not empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.param(name) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(ApiError::bad_request(format!(
                "the query parameter {name:?} is required"
            ))),
        }
    }

    /// The idempotency key the request carries, if any (400 if invalid).
    pub fn idempotency_key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(raw) = self.headers.get(pygmy_client::http::IDEMPOTENCY_HEADER) else {
            return Ok(None);
        };
        let raw = raw
            .to_str()
            .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))?;
        IdempotencyKey::parse(raw)
            .map(Some)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// The item id in query parameter `name` (required): 400 unless it is
    /// an integer.
    pub fn item_id(&self, name: &str) -> Result<ItemId, ApiError> {
        ItemId::parse(self.required(name)?).map_err(ApiError::bad_request)
    }

    /// The optional whole-number query parameter `name`: 400 if it is not
    /// one from 0 to 2^63 - 1 (what the stores can hold).
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.param(name)
            .map(|raw| {
                raw.parse::<u64>()
                    .ok()
                    .filter(|n| i64::try_from(*n).is_ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{name} must be a whole number from 0 to {}",
                            i64::MAX
                        ))
                    })
            })
            .transpose()
    }

    /// The body as JSON of type `T`: 400 if it is not.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
