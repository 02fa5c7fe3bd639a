//! The cluster's own protocol, between its nodes and for its operators
//! (every route here demands the cluster token): the calls of many
//! (`POST /sales`, `POST /buys`, `POST /lookups`), the sales the
//! reconciler reads, the ledger, invalidation pushes and cache leases, and
//! membership changes.

use serde::{Deserialize, Serialize};

use super::public::OrderRef;
use super::{Empty, Envelope};
use crate::replication::KnownMembers;
use crate::types::{Book, ItemId, Order};

/// `GET /ledger` (internal): every order the replica holds, by id, with
/// its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerResponse {
    /// Always `{}`.
    pub message: Empty,
    /// The orders, by ascending id.
    pub order: Vec<Order>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl LedgerResponse {
    /// A 200 answer with these orders.
    pub fn new(order: Vec<Order>) -> Self {
        LedgerResponse {
            message: Empty {},
            order,
            envelope: Envelope::OK,
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
    /// The progress of the reconciler of the order shard asked for
    /// (`?shard=`, 0 by default; `POST /sales/reconciled`): every sale of
    /// its keys up to it has its order (0 until the first). Kept under `raft` only,
    /// where every replica numbers the sales alike; absent under
    /// `broadcast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<u64>,
    /// The sales, in order.
    pub sales: Vec<Sale>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The body of `POST /sales/reconciled` (internal): the order service has
/// recorded the order of every sale up to `upto`, as `GET /sales` numbers
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciledRequest {
    /// The last sale whose order is recorded, and every one before it.
    pub upto: u64,
    /// The order shard whose reconciler it is (0, and not sent, in a store
    /// of one order shard).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard: u32,
    /// The order shards of the store (1, and not sent, for one).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub shards: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// `POST /sales/reconciled` (internal): the reconciler's progress as it is
/// after the call (it never moves back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciledResponse {
    /// Always `{}`.
    pub message: Empty,
    /// Every sale up to it has its order.
    pub reconciled: u64,
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
pub struct Answers<R> {
    /// Always `{}`.
    pub message: Empty,
    /// One result per item asked, in the same order.
    pub results: Vec<R>,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl<R> Answers<R> {
    /// A 200 answer with these results.
    pub fn new(results: Vec<R>) -> Self {
        Answers {
            message: Empty {},
            results,
            envelope: Envelope::OK,
        }
    }
}

/// `POST /sales` (internal): each sale's result, in the order asked.
pub type SaleAnswers = Answers<SaleResult>;

/// `POST /buys` (internal): each buy's result, in the order asked.
pub type BuyAnswers = Answers<BuyResult>;

/// `POST /lookups` (internal): each lookup's result, in the order asked.
pub type LookupAnswers = Answers<LookupResult>;

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
    /// The catalog's members as this replica knows them (`raft` only): a
    /// frontend takes leases from each member of the newest membership it
    /// was told of, those its topology file does not name included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<KnownMembers>,
    /// Always empty.
    pub message: Empty,
    /// `status` and `validation_code`: `Success`, 200.
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{default_books, OrderId};

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
        let lookups = LookupAnswers::new(vec![
            LookupResult::Found(book.clone()),
            LookupResult::Failed(refusal("not_found")),
        ]);
        let sales = SaleAnswers::new(vec![
            SaleResult::Sold(book),
            SaleResult::Failed(refusal("not_found")),
        ]);
        let buys = BuyAnswers::new(vec![
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
            serde_json::from_str::<LookupAnswers>(&lookups_json).expect("reads"),
            lookups
        );
        assert_eq!(
            serde_json::from_str::<SaleAnswers>(&sales_json).expect("reads"),
            sales
        );
        assert_eq!(
            serde_json::from_str::<BuyAnswers>(&buys_json).expect("reads"),
            buys
        );
    }
}
