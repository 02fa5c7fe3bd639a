//! The wire format: the seed's JSON envelope, shared by the server (which
//! writes it) and the client SDK (which reads it).
//!
//! Every response carries `message` and ends with the [`Envelope`]:
//! `status` (`"Success"` or `"Failed"`) and `validation_code` (the HTTP
//! status); successes add `item` (a list of books, or the updated book) or
//! `order`. Fields are declared in
//! the order the seed printed them (sorted), so the bytes match its examples.

pub mod routes;

use serde::{Deserialize, Serialize};

use crate::types::{Book, ItemId, Order, OrderId};

/// `"Success"` or `"Failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The request did what it asked.
    Success,
    /// It did not; `message` says why.
    Failed,
}

/// The fields every answer ends with, after its own (the seed printed keys
/// sorted, and these two sort last): whether it succeeded, and its HTTP
/// status again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `Success` or `Failed`.
    pub status: Status,
    /// The HTTP status.
    pub validation_code: u16,
}

impl Envelope {
    /// A 200 success.
    pub const OK: Envelope = Envelope {
        status: Status::Success,
        validation_code: 200,
    };
    /// A 201 success (`PUT /item`).
    pub const CREATED: Envelope = Envelope {
        status: Status::Success,
        validation_code: 201,
    };

    /// A failure with this HTTP status.
    pub fn failed(code: u16) -> Envelope {
        Envelope {
            status: Status::Failed,
            validation_code: code,
        }
    }
}

/// The seed's empty `message` object on reads: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

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

/// `GET /ledger` (internal): every order the replica holds, by id, with
/// its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrdersResponse {
    /// Always `{}`.
    pub message: Empty,
    /// The orders, by ascending id.
    pub order: Vec<Order>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl OrdersResponse {
    /// A 200 answer with these orders.
    pub fn new(order: Vec<Order>) -> Self {
        OrdersResponse {
            message: Empty {},
            order,
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

/// The answer to an internal call that has nothing to say but yes
/// (`POST /invalidate`): `{"message": {}, "status": "Success",
/// "validation_code": 200}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// Always `{}`.
    pub message: Empty,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl Default for Acknowledged {
    fn default() -> Self {
        Acknowledged {
            message: Empty {},
            envelope: Envelope::OK,
        }
    }
}

/// `GET /health`: whether the node serves, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// The node's name in the topology.
    pub node: String,
    /// `frontend`, `catalog` or `order`.
    pub role: String,
    /// `ok` once the node serves (a replica serves once it caught up).
    pub state: String,
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

/// A sale the catalog made, as `GET /sales` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// The book sold.
    pub item: ItemId,
    /// The idempotency key it was sold under.
    pub key: crate::types::IdempotencyKey,
    /// Its place in the replica's apply order.
    pub seq: u64,
}

/// `GET /sales?after=&limit=` (internal): the sales made after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesResponse {
    /// The last place looked at (a cursor for the next call; sold-out
    /// attempts are passed over).
    pub last_seq: u64,
    /// Always `{}`.
    pub message: Empty,
    /// The sales, in order.
    pub sales: Vec<Sale>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// One sale asked of `POST /sales` (internal): one copy of `item` under
/// the buy's `key`, as `POST /item/<id>/sell` would make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The book to sell a copy of.
    pub item: ItemId,
    /// The buy's idempotency key: the same key sells at most once.
    pub key: crate::types::IdempotencyKey,
}

/// The body of `POST /sales` (internal): the sales an order replica has
/// waiting, made together (one request, and under load one raft entry,
/// instead of one of each per sale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesRequest {
    /// 1 to [`SalesRequest::MOST`] sales, each made (or refused) on its own.
    pub sales: Vec<SaleRequest>,
}

impl SalesRequest {
    /// The most sales one call carries: the longest keys still fit well
    /// within the default body limit (64 KiB).
    pub const MOST: usize = 64;
}

/// Why one item of a call of many (`POST /sales`, `POST /buys`,
/// `POST /lookups`) was not made: what a call of its own would have
/// answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The kind of failure, as the `x-pygmy-error` header names it.
    pub kind: String,
    /// Why, for a person.
    pub message: String,
}

/// What became of one sale of `POST /sales`: `{"sold": book}` with the
/// book after the sale, or `{"failed": {"kind": ..., "message": ...}}`
/// with what `POST /item/<id>/sell` would have answered (its
/// `x-pygmy-error` kind and its message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleResult {
    /// Sold (now or by an earlier call under the same key).
    Sold(Book),
    /// Not sold.
    Failed(Refusal),
}

/// One buy asked of `POST /buys` (internal): one copy of `item` under the
/// buy's `key`, as `GET /buy/<item>` would make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    /// The book to buy a copy of.
    pub item: ItemId,
    /// The buy's idempotency key: the same key buys at most once.
    pub key: crate::types::IdempotencyKey,
}

/// The body of `POST /buys` (internal): the buys a frontend has waiting,
/// made together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuysRequest {
    /// 1 to [`BuysRequest::MOST`] buys, each made (or refused) on its own.
    pub buys: Vec<BuyRequest>,
}

impl BuysRequest {
    /// The most buys one call carries (as [`SalesRequest::MOST`]).
    pub const MOST: usize = SalesRequest::MOST;
}

/// What became of one buy of `POST /buys`: `{"bought": {"id": N}}` with
/// the order, or `{"failed": {"kind": ..., "message": ...}}` with what
/// `GET /buy/<item>` would have answered (its `x-pygmy-error` kind and
/// its message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuyResult {
    /// Bought (now or by an earlier call under the same key).
    Bought(OrderRef),
    /// Not bought.
    Failed(Refusal),
}

/// The body of `POST /lookups` (internal): the lookups a frontend has
/// waiting, read together (one request and one read index instead of one
/// of each per lookup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupsRequest {
    /// 1 to [`LookupsRequest::MOST`] books, each found (or not) on its own.
    pub items: Vec<ItemId>,
}

impl LookupsRequest {
    /// The most lookups one call carries (as [`SalesRequest::MOST`]).
    pub const MOST: usize = SalesRequest::MOST;
}

/// What became of one lookup of `POST /lookups`: `{"found": book}`, or
/// `{"failed": {"kind": ..., "message": ...}}` with what `GET /item/<id>`
/// would have answered (its `x-pygmy-error` kind and its message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupResult {
    /// The book, as of a read index taken after the call arrived.
    Found(Book),
    /// Not found (no such book), or not read.
    Failed(Refusal),
}

/// The answer of a call of many (`POST /sales`, `POST /buys`,
/// `POST /lookups`, all internal): each item's result, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made<R> {
    /// Always `{}`.
    pub message: Empty,
    /// One result per item asked, in the same order.
    pub results: Vec<R>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl<R> Made<R> {
    /// A 200 answer with these results.
    pub fn new(results: Vec<R>) -> Self {
        Made {
            message: Empty {},
            results,
            envelope: Envelope::OK,
        }
    }
}

/// `POST /sales` (internal): each sale's result, in the order asked.
pub type SalesMade = Made<SaleResult>;

/// `POST /buys` (internal): each buy's result, in the order asked.
pub type BuysMade = Made<BuyResult>;

/// `POST /lookups` (internal): each lookup's result, in the order asked.
pub type LookupsMade = Made<LookupResult>;

/// The body of `POST /members` (internal): a replica to add to the
/// service, already running with a topology that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Its name.
    pub name: String,
    /// Where its peers reach it: `http://host:port`.
    pub url: String,
}

/// `GET`, `POST /members` and `DELETE /members/<name>` (internal): the
/// service's membership, as its leader knows it (after the change asked
/// for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The membership.
    #[serde(flatten)]
    pub members: crate::replication::Members,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The body of `POST /invalidate` on a frontend, pushed by the catalog after
/// each change to a book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// The book that changed.
    pub item: ItemId,
    /// Its topic.
    pub topic: String,
    /// Which push this is, for the frontend's cache lease (see
    /// [`crate::cache::lease`]); absent, the invalidation is applied all
    /// the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// The body of `POST /invalidate`: one [`Invalidation`], or a list of
/// them (a catalog replica sends together those that waited while its
/// previous push was under way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Invalidations {
    /// Several, applied in order.
    Many(Vec<Invalidation>),
    /// One.
    One(Invalidation),
}

impl Invalidations {
    /// The invalidations, in order.
    pub fn into_vec(self) -> Vec<Invalidation> {
        match self {
            Invalidations::Many(all) => all,
            Invalidations::One(one) => vec![one],
        }
    }
}

/// The number of an invalidation among those one catalog replica (in one
/// incarnation) pushed to one frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The catalog replica's name.
    pub source: String,
    /// Its incarnation (new at each start).
    pub incarnation: String,
    /// 1, 2, ... in the order they were numbered.
    pub seq: u64,
}

/// The answer to `GET /lease?frontend=<name>` on a catalog replica: a grant
/// of the frontend's cache lease (see [`crate::cache::lease`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The catalog replica's incarnation.
    pub incarnation: String,
    /// How many invalidations it has numbered for that frontend.
    pub issued: u64,
    /// Always empty.
    pub message: Empty,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
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

    /// The answers of the calls of many, one generic type, keep the wire
    /// form of docs/api.md, and read back.
    #[test]
    fn the_answers_of_calls_of_many_keep_their_wire_form() {
        let book = default_books().swap_remove(1);
        let refusal = |kind: &str| Refusal {
            kind: kind.to_owned(),
            message: "No item with id 99 in the catalog".to_owned(),
        };
        let book_json = r#"{"cost":10,"count":100,"id":2,"title":"RPCs for Dummies.","topic":"distributed systems"}"#;
        let failed =
            r#"{"failed":{"kind":"not_found","message":"No item with id 99 in the catalog"}}"#;
        let made = |results: &str| {
            format!(
                r#"{{"message":{{}},"results":[{results}],"status":"Success","validation_code":200}}"#
            )
        };
        let lookups = LookupsMade::new(vec![
            LookupResult::Found(book.clone()),
            LookupResult::Failed(refusal("not_found")),
        ]);
        let sales = SalesMade::new(vec![
            SaleResult::Sold(book),
            SaleResult::Failed(refusal("not_found")),
        ]);
        let buys = BuysMade::new(vec![
            BuyResult::Bought(OrderRef { id: OrderId(7) }),
            BuyResult::Failed(refusal("not_found")),
        ]);
        let lookups_json = made(&format!(r#"{{"found":{book_json}}},{failed}"#));
        let sales_json = made(&format!(r#"{{"sold":{book_json}}},{failed}"#));
        let buys_json = made(&format!(r#"{{"bought":{{"id":7}}}},{failed}"#));
        assert_eq!(serde_json::to_string(&lookups).expect("json"), lookups_json);
        assert_eq!(serde_json::to_string(&sales).expect("json"), sales_json);
        assert_eq!(serde_json::to_string(&buys).expect("json"), buys_json);
        assert_eq!(
            serde_json::from_str::<LookupsMade>(&lookups_json).expect("reads"),
            lookups
        );
        assert_eq!(
            serde_json::from_str::<SalesMade>(&sales_json).expect("reads"),
            sales
        );
        assert_eq!(
            serde_json::from_str::<BuysMade>(&buys_json).expect("reads"),
            buys
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
