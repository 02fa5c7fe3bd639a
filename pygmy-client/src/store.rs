//! The client of a Pygmy store: its frontend's `lookup`, `search` and `buy`.

use std::sync::Arc;
use std::time::Duration;

use pygmy_core::api::public::{BuyResponse, HealthResponse, ItemsResponse};
use pygmy_core::api::routes::FrontendRoute;
use pygmy_core::types::{Book, IdempotencyKey, ItemId, OrderId};

use crate::error::ClientError;
use crate::http::{ClientOptions, Http, IDEMPOTENCY_HEADER};

/// A typed client of a Pygmy frontend.
///
/// ```no_run
/// # async fn demo() -> Result<(), pygmy_client::ClientError> {
/// use pygmy_client::Client;
/// use pygmy_core::types::ItemId;
///
/// let store = Client::new("http://127.0.0.1:8010")?;
/// for book in store.search("distributed systems").await? {
///     println!("{} ({} in stock)", book.title, book.count);
/// }
/// let order = store.buy(ItemId(1)).await?;
/// println!("order {order}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client of the frontend at `frontend_url` (`http://host:port`).
    pub fn new(frontend_url: &str) -> Result<Client, ClientError> {
        Client::with_options(frontend_url, &ClientOptions::default())
    }

    /// The same, with connection settings.
    pub fn with_options(
        frontend_url: &str,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        Ok(Client {
            http: Http::new(frontend_url, options)?,
            tls: options.tls.clone(),
        })
    }

    /// The frontend's base URL.
    pub fn url(&self) -> &url::Url {
        self.http.base()
    }

    /// The TLS it calls an `https://` frontend with, if any.
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// `GET /ready`: Ok once the frontend reaches a ready replica of each
    /// backend; `Unavailable` with its reason until then.
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        self.http.ready().await
    }

    /// Waits until the frontend is ready, at most `timeout`: a store just
    /// started answers 503 for about a second.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<HealthResponse, ClientError> {
        self.http.wait_ready(timeout).await
    }

    /// The book with this id (`GET /lookup?id=`).
    pub async fn lookup(&self, id: ItemId) -> Result<Book, ClientError> {
        let id = id.to_string();
        let request = self.http.request(&FrontendRoute::Lookup, &[("id", &id)]);
        let response: ItemsResponse = self.http.send(request).await?;
        self.http.first_item(response, "a lookup")
    }

    /// The books of a topic (`GET /search?topic=`); none for an unknown topic.
    pub async fn search(&self, topic: &str) -> Result<Vec<Book>, ClientError> {
        let request = self
            .http
            .request(&FrontendRoute::Search, &[("topic", topic)]);
        let response: ItemsResponse = self.http.send(request).await?;
        Ok(response.item)
    }

    /// Buys one copy (`GET /buy?id=`); the frontend mints the idempotency
    /// key. Returns the order's id.
    pub async fn buy(&self, id: ItemId) -> Result<OrderId, ClientError> {
        self.buy_inner(id, None).await
    }

    /// Buys one copy under `key`: calling it again with the same key (after
    /// a timeout, say) returns the same order and buys nothing more.
    pub async fn buy_with_key(
        &self,
        id: ItemId,
        key: &IdempotencyKey,
    ) -> Result<OrderId, ClientError> {
        self.buy_inner(id, Some(key)).await
    }

    async fn buy_inner(
        &self,
        id: ItemId,
        key: Option<&IdempotencyKey>,
    ) -> Result<OrderId, ClientError> {
        let id = id.to_string();
        let mut request = self.http.request(&FrontendRoute::Buy, &[("id", &id)]);
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_HEADER, key.as_str());
        }
        let response: BuyResponse = self.http.send(request).await?;
        Ok(response.order.id)
    }
}
