//! The answers of the seed's API and of what any client may read:
//! lookups, searches, buys, updates, pages of orders, health, and every
//! failure. The original `client.py` reads these bytes.

use serde::{Deserialize, Serialize};

use super::{Empty, Envelope};
use crate::types::{Book, ItemId, Order, OrderId};

/// `GET /lookup`, `GET /search`, `GET /item...`: a list of books.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemsResponse {
    /// The books found (one for a lookup).
    pub item: Vec<Book>,
    /// Always `{}`.
    pub message: Empty,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl ItemsResponse {
    /// A 200 answer with these books.
    pub fn new(item: Vec<Book>) -> Self {
        ItemsResponse {
            item,
            message: Empty {},
            envelope: Envelope::OK,
        }
    }
}

/// The `order` object of a buy: its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    /// The order's id.
    pub id: OrderId,
}

/// `GET /buy?id=` (frontend) and `GET /buy/<id>` (order service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyResponse {
    /// `Item with id N bought successfully.`
    pub message: String,
    /// The order taken.
    pub order: OrderRef,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl BuyResponse {
    /// The seed's answer to a successful buy.
    pub fn new(item: ItemId, order: OrderId) -> Self {
        BuyResponse {
            message: format!("Item with id {item} bought successfully."),
            order: OrderRef { id: order },
            envelope: Envelope::OK,
        }
    }
}

/// `PUT /item/<id>`: 201 with the book as it is after the update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateResponse {
    /// The updated book (the seed sent `{}`; a client that ignores it works).
    pub item: Book,
    /// Always `{}`.
    pub message: Empty,
    /// `status` and `validation_code`: `Success`, 201.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl UpdateResponse {
    /// A 201 answer with the updated book.
    pub fn new(item: Book) -> Self {
        UpdateResponse {
            item,
            message: Empty {},
            envelope: Envelope::CREATED,
        }
    }
}

/// An order as the public `GET /orders` shows it: without the idempotency
/// key, which would let anyone replay another user's buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicOrder {
    /// When the order was taken, RFC 3339 in UTC.
    pub created: String,
    /// The order's id.
    pub id: OrderId,
    /// The book that was bought.
    pub item_id: ItemId,
}

impl From<Order> for PublicOrder {
    fn from(order: Order) -> Self {
        PublicOrder {
            created: order.created,
            id: order.id,
            item_id: order.item_id,
        }
    }
}

/// `GET /orders?after=&limit=`: a page of orders, by ascending id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPage {
    /// Always `{}`.
    pub message: Empty,
    /// The orders with an id above `after`, at most `limit`.
    pub order: Vec<PublicOrder>,
    /// The `after` of the next page; `null` on the last page.
    pub next_after: Option<OrderId>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl OrderPage {
    /// The largest page.
    pub const MAX_LIMIT: u64 = 1_000;
    /// The page size when none is asked for.
    pub const DEFAULT_LIMIT: u64 = 100;

    /// A 200 answer with `orders`, a page of at most `limit`.
    pub fn new(orders: Vec<Order>, limit: usize) -> Self {
        let next_after = if orders.len() >= limit {
            orders.last().map(|o| o.id)
        } else {
            None
        };
        OrderPage {
            message: Empty {},
            order: orders.into_iter().map(PublicOrder::from).collect(),
            next_after,
            envelope: Envelope::OK,
        }
    }
}

/// Any failure: `{"message": "...", "status": "Failed", "validation_code": C}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, for a person.
    pub message: String,
    /// `status` and `validation_code`: `Failed`, the HTTP status.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl ErrorResponse {
    /// A failure with this HTTP status and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ErrorResponse {
            message: message.into(),
            envelope: Envelope::failed(code),
        }
    }
}

/// `GET /health` and `GET /ready`: what the node is, and whether it can
/// serve now. Both answer this body; `/health` (liveness) with 200 while
/// the process serves HTTP, `/ready` (readiness) with 200 only when
/// `state` is `ok`, else 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// The node's name in the topology.
    pub node: String,
    /// `frontend`, `catalog` or `order`.
    pub role: String,
    /// `ok` once the node can serve; `catching_up` for a replica that is
    /// not yet a voter caught up with a leader; `no_backend` for a
    /// frontend that reaches no ready replica of one of its backends.
    pub state: String,
    /// Why the node is not ready, in words (none once it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A raft replica: the leader of its service it knows, by name (none
    /// while there is none, and for other nodes). A hint for callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// The body of `PUT /item/<id>`: a change of stock and/or a new price.
///
/// `count` is a delta, as the seed's buy used it (`{"count": -1}` sells one,
/// `{"count": 10}` restocks ten); `cost` replaces the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ItemUpdate {
    /// Change of stock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// New price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::types::Cost>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::default_books;

    #[test]
    fn buy_matches_the_seed_example() {
        let json =
            serde_json::to_string(&BuyResponse::new(ItemId(1), OrderId(196))).expect("serializes");
        assert_eq!(
            json,
            r#"{"message":"Item with id 1 bought successfully.","order":{"id":196},"status":"Success","validation_code":200}"#
        );
    }

    #[test]
    fn lookup_matches_the_seed_example() {
        let book = default_books().swap_remove(2);
        let json = serde_json::to_string(&ItemsResponse::new(vec![book])).expect("serializes");
        assert_eq!(
            json,
            r#"{"item":[{"cost":9,"count":100,"id":3,"title":"Xen and the Art of Surviving Graduate School.","topic":"graduate school"}],"message":{},"status":"Success","validation_code":200}"#
        );
    }

    #[test]
    fn failure_matches_the_seed_example() {
        let json = serde_json::to_string(&ErrorResponse::new(
            404,
            "The item with id 1 is no longer present in the catalog server",
        ))
        .expect("serializes");
        assert_eq!(
            json,
            r#"{"message":"The item with id 1 is no longer present in the catalog server","status":"Failed","validation_code":404}"#
        );
    }
}
