//! The route tables: every endpoint of every role, written once, as a typed
//! value that the server parses from a request and the client formats into
//! one.
//!
//! Each role has its route enum ([`FrontendRoute`], [`CatalogRoute`],
//! [`OrderRoute`]); [`NodeRoute`] adds what every node answers alike
//! (`/health`, `/metrics`). A [`Route`] knows its method and path
//! ([`Route::target`]), whether it is internal (the cluster token is
//! checked before its body is read) and how large a body it takes
//! ([`Route::info`]). [`parse`] turns a method and path into a route, or
//! into "no such endpoint" (404) or "not with this method" (405, with the
//! methods that are allowed): the 405s are derived from the table, never
//! listed by hand.
//!
//! ```
//! use pygmy_core::api::routes::{parse, CatalogRoute, Method, NodeRoute, Route, RouteError};
//! use pygmy_core::ItemId;
//!
//! let route: NodeRoute<CatalogRoute> = parse(&Method::GET, &["item", "3"]).unwrap();
//! assert_eq!(route, NodeRoute::Role(CatalogRoute::Item(ItemId(3))));
//! assert_eq!(route.path(), "/item/3");
//!
//! let wrong = parse::<NodeRoute<CatalogRoute>>(&Method::DELETE, &["item", "3"]);
//! assert!(matches!(wrong, Err(RouteError::MethodNotAllowed { ref allow, .. })
//!     if allow == &[Method::GET, Method::PUT]));
//! ```

use crate::types::ItemId;

pub use http::Method;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the store's users).
    Public,
    /// Only the cluster's nodes and its operator: the cluster token is
    /// checked from the headers, before the body is read.
    Internal,
}

/// How large a body an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// A user's or an operator's request: the small limit.
    Small,
    /// A replication call, which may carry a batch of ops or a snapshot:
    /// the large limit.
    Batch,
}

/// What the server must know of an endpoint before it reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// Whether the cluster token is required.
    pub access: Access,
    /// Which body limit applies.
    pub body: BodySize,
}

impl RouteInfo {
    /// A public endpoint with a small body.
    pub const PUBLIC: RouteInfo = RouteInfo {
        access: Access::Public,
        body: BodySize::Small,
    };
    /// An internal endpoint with a small body.
    pub const INTERNAL: RouteInfo = RouteInfo {
        access: Access::Internal,
        body: BodySize::Small,
    };
    /// An internal endpoint that takes a batch.
    pub const REPLICATION: RouteInfo = RouteInfo {
        access: Access::Internal,
        body: BodySize::Batch,
    };
}

/// A path whose shape names an endpoint, but with a parameter that is not
/// what the endpoint takes (`/item/abc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    /// The endpoint's access, so the token is checked before the 400.
    pub info: RouteInfo,
    /// What is wrong.
    pub message: String,
}

/// A request that names no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No endpoint has this path.
    #[error("no such endpoint: {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// Endpoints have this path, but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method asked for.
        method: Method,
        /// The path asked for.
        path: String,
        /// The methods that are.
        allow: Vec<Method>,
    },
    /// The endpoint exists; a parameter in its path is invalid.
    #[error("{}", .0.message)]
    BadParam(BadParam),
}

/// A role's table of endpoints.
pub trait Route: Sized {
    /// The route that `method` and `path` (its segments, without empty
    /// ones) name, or `None` if none has both; `Some(Err)` if the path's
    /// shape matches an endpoint of this method but a parameter does not
    /// parse.
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>>;

    /// The method and path segments of this route.
    fn target(&self) -> (Method, Vec<String>);

    /// Its access and body limit.
    fn info(&self) -> RouteInfo;

    /// Its method and path pattern, as in `/metrics` (`GET /item/{id}`):
    /// one per endpoint, whatever the parameters.
    fn label(&self) -> &'static str;

    /// One route of each endpoint of the table. A variant added to a table
    /// is added here too: the round-trip test and the test that holds each
    /// role's OpenAPI document to its table (`tests/openapi.rs`) read this
    /// list.
    fn every() -> Vec<Self>;

    /// The method.
    fn method(&self) -> Method {
        self.target().0
    }

    /// The path, `/`-joined (parameters are numbers and names that need no
    /// escaping).
    fn path(&self) -> String {
        let (_, segments) = self.target();
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.push_str(&segment);
        }
        path
    }
}

/// The methods tried to tell a 405 from a 404.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

/// Parses a request's method and path into a route of table `R`.
pub fn parse<R: Route>(method: &Method, path: &[&str]) -> Result<R, RouteError> {
    match R::recognize(method, path) {
        Some(Ok(route)) => Ok(route),
        Some(Err(bad)) => Err(RouteError::BadParam(bad)),
        None => {
            let shown = format!("/{}", path.join("/"));
            let allow: Vec<Method> = METHODS
                .into_iter()
                .filter(|other| other != method && R::recognize(other, path).is_some())
                .collect();
            if allow.is_empty() {
                Err(RouteError::NotFound { path: shown })
            } else {
                Err(RouteError::MethodNotAllowed {
                    method: method.clone(),
                    path: shown,
                    allow,
                })
            }
        }
    }
}

/// An item id in a path, for the route `make` builds.
fn item<R: Route>(raw: &str, make: fn(ItemId) -> R) -> Result<R, BadParam> {
    ItemId::parse(raw).map(make).map_err(|message| BadParam {
        info: make(ItemId(0)).info(),
        message,
    })
}

/// What every node answers, beside its role's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRoute<R> {
    /// `GET /health`: liveness. 200 while the process serves HTTP, with
    /// what it is doing (`state`).
    Health,
    /// `GET /ready`: readiness. 200 once the node can serve its role's
    /// requests now, 503 with the reason until then.
    Ready,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /openapi.json`: the OpenAPI document of the node's role.
    OpenApi,
    /// One of the role's own routes.
    Role(R),
}

impl<R: Route> Route for NodeRoute<R> {
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>> {
        match (method, path) {
            (&Method::GET, ["health"]) => Some(Ok(NodeRoute::Health)),
            (&Method::GET, ["ready"]) => Some(Ok(NodeRoute::Ready)),
            (&Method::GET, ["metrics"]) => Some(Ok(NodeRoute::Metrics)),
            (&Method::GET, ["openapi.json"]) => Some(Ok(NodeRoute::OpenApi)),
            _ => R::recognize(method, path).map(|r| r.map(NodeRoute::Role)),
        }
    }

    fn target(&self) -> (Method, Vec<String>) {
        match self {
            NodeRoute::Health => (Method::GET, segments(&["health"])),
            NodeRoute::Ready => (Method::GET, segments(&["ready"])),
            NodeRoute::Metrics => (Method::GET, segments(&["metrics"])),
            NodeRoute::OpenApi => (Method::GET, segments(&["openapi.json"])),
            NodeRoute::Role(route) => route.target(),
        }
    }

    fn info(&self) -> RouteInfo {
        match self {
            NodeRoute::Health | NodeRoute::Ready | NodeRoute::Metrics | NodeRoute::OpenApi => {
                RouteInfo::PUBLIC
            }
            NodeRoute::Role(route) => route.info(),
        }
    }

    fn every() -> Vec<Self> {
        let mut every = vec![
            NodeRoute::Health,
            NodeRoute::Ready,
            NodeRoute::Metrics,
            NodeRoute::OpenApi,
        ];
        every.extend(R::every().into_iter().map(NodeRoute::Role));
        every
    }

    fn label(&self) -> &'static str {
        match self {
            NodeRoute::Health => "GET /health",
            NodeRoute::Ready => "GET /ready",
            NodeRoute::Metrics => "GET /metrics",
            NodeRoute::OpenApi => "GET /openapi.json",
            NodeRoute::Role(route) => route.label(),
        }
    }
}

fn segments(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// The frontend's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendRoute {
    /// `GET /lookup?id=`: one book.
    Lookup,
    /// `GET /search?topic=`: the books of a topic.
    Search,
    /// `GET /buy?id=`: buy one copy.
    Buy,
    /// `POST /invalidate` (internal): a catalog replica's invalidation push.
    Invalidate,
}

impl Route for FrontendRoute {
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>> {
        Some(Ok(match (method, path) {
            (&Method::GET, ["lookup"]) => FrontendRoute::Lookup,
            (&Method::GET, ["search"]) => FrontendRoute::Search,
            (&Method::GET, ["buy"]) => FrontendRoute::Buy,
            (&Method::POST, ["invalidate"]) => FrontendRoute::Invalidate,
            _ => return None,
        }))
    }

    fn target(&self) -> (Method, Vec<String>) {
        match self {
            FrontendRoute::Lookup => (Method::GET, segments(&["lookup"])),
            FrontendRoute::Search => (Method::GET, segments(&["search"])),
            FrontendRoute::Buy => (Method::GET, segments(&["buy"])),
            FrontendRoute::Invalidate => (Method::POST, segments(&["invalidate"])),
        }
    }

    fn info(&self) -> RouteInfo {
        match self {
            FrontendRoute::Lookup | FrontendRoute::Search | FrontendRoute::Buy => RouteInfo::PUBLIC,
            // A catalog replica's push may carry many invalidations.
            FrontendRoute::Invalidate => RouteInfo::REPLICATION,
        }
    }

    fn every() -> Vec<Self> {
        vec![
            FrontendRoute::Lookup,
            FrontendRoute::Search,
            FrontendRoute::Buy,
            FrontendRoute::Invalidate,
        ]
    }

    fn label(&self) -> &'static str {
        match self {
            FrontendRoute::Lookup => "GET /lookup",
            FrontendRoute::Search => "GET /search",
            FrontendRoute::Buy => "GET /buy",
            FrontendRoute::Invalidate => "POST /invalidate",
        }
    }
}

/// The membership endpoints of a backend replica (catalog or order), all
/// internal: an operator's, to grow or shrink a `raft` service while it
/// serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRoute {
    /// `GET /members`: the membership, as its leader knows it.
    List,
    /// `POST /members` (a [`crate::api::internal::NewMember`]): add a replica.
    Add,
    /// `DELETE /members/<name>`: remove a replica.
    Remove(String),
}

impl MemberRoute {
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>> {
        Some(match (method, path) {
            (&Method::GET, ["members"]) => Ok(MemberRoute::List),
            (&Method::POST, ["members"]) => Ok(MemberRoute::Add),
            (&Method::DELETE, ["members", name]) => {
                if crate::replication::members::valid_node_name(name) {
                    Ok(MemberRoute::Remove((*name).to_owned()))
                } else {
                    Err(BadParam {
                        info: RouteInfo::INTERNAL,
                        message: format!(
                            "member name {name:?}: use letters, digits, - and _ (at most 64)"
                        ),
                    })
                }
            }
            _ => return None,
        })
    }

    fn target(&self) -> (Method, Vec<String>) {
        match self {
            MemberRoute::List => (Method::GET, segments(&["members"])),
            MemberRoute::Add => (Method::POST, segments(&["members"])),
            MemberRoute::Remove(name) => (Method::DELETE, vec!["members".into(), name.clone()]),
        }
    }

    /// One route of each membership endpoint.
    fn every() -> Vec<Self> {
        vec![
            MemberRoute::List,
            MemberRoute::Add,
            MemberRoute::Remove("replica-1".to_owned()),
        ]
    }

    fn label(&self) -> &'static str {
        match self {
            MemberRoute::List => "GET /members",
            MemberRoute::Add => "POST /members",
            MemberRoute::Remove(_) => "DELETE /members/{name}",
        }
    }
}

/// A catalog replica's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogRoute {
    /// `GET /item`, `GET /item?id=`, `GET /item?topic=`: books.
    Items,
    /// `GET /item/<id>`: one book.
    Item(ItemId),
    /// `PUT /item/<id>` (internal): change stock (a delta) and/or cost.
    Update(ItemId),
    /// `POST /item/<id>/sell` (internal): sell one copy under the
    /// request's idempotency key.
    Sell(ItemId),
    /// `PUT /item/propagate/<any>` (internal): the seed's propagation
    /// endpoint, here a shipment of ops (`broadcast`).
    Propagate,
    /// `GET /sales?after=&limit=` (internal): the sales made, for the
    /// order service's reconciliation.
    Sales,
    /// `POST /sales` (internal): many sales at once, each as
    /// [`CatalogRoute::Sell`] makes one.
    SellMany,
    /// `POST /sales/reconciled` (internal): the order service's reconciler
    /// has recorded the order of every sale up to a place.
    Reconciled,
    /// `POST /lookups` (internal): many books at once, each as
    /// [`CatalogRoute::Item`] reads one (a frontend's lookups that came
    /// together, read after one read index).
    LookupMany,
    /// `GET /lease?frontend=` (internal): a grant of a frontend's cache
    /// lease.
    Lease,
    /// `POST /replication/<rpc>` (internal): a peer's replication call.
    Replication(String),
    /// `/members` (internal): the membership.
    Members(MemberRoute),
    /// `GET /backup` (internal): the replica's state, after a read index,
    /// streamed.
    Backup,
}

impl Route for CatalogRoute {
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>> {
        Some(match (method, path) {
            (&Method::GET, ["item"]) => Ok(CatalogRoute::Items),
            (&Method::GET, ["item", id]) => item(id, CatalogRoute::Item),
            (&Method::PUT, ["item", "propagate", _]) => Ok(CatalogRoute::Propagate),
            (&Method::PUT, ["item", id]) => item(id, CatalogRoute::Update),
            (&Method::POST, ["item", id, "sell"]) => item(id, CatalogRoute::Sell),
            (&Method::GET, ["sales"]) => Ok(CatalogRoute::Sales),
            (&Method::POST, ["sales"]) => Ok(CatalogRoute::SellMany),
            (&Method::POST, ["sales", "reconciled"]) => Ok(CatalogRoute::Reconciled),
            (&Method::POST, ["lookups"]) => Ok(CatalogRoute::LookupMany),
            (&Method::GET, ["lease"]) => Ok(CatalogRoute::Lease),
            (&Method::GET, ["backup"]) => Ok(CatalogRoute::Backup),
            (&Method::POST, ["replication", rpc]) => {
                Ok(CatalogRoute::Replication((*rpc).to_owned()))
            }
            _ => return MemberRoute::recognize(method, path).map(|r| r.map(CatalogRoute::Members)),
        })
    }

    fn target(&self) -> (Method, Vec<String>) {
        match self {
            CatalogRoute::Items => (Method::GET, segments(&["item"])),
            CatalogRoute::Item(id) => (Method::GET, vec!["item".into(), id.to_string()]),
            CatalogRoute::Update(id) => (Method::PUT, vec!["item".into(), id.to_string()]),
            CatalogRoute::Sell(id) => (
                Method::POST,
                vec!["item".into(), id.to_string(), "sell".into()],
            ),
            CatalogRoute::Propagate => (Method::PUT, segments(&["item", "propagate", "all"])),
            CatalogRoute::Sales => (Method::GET, segments(&["sales"])),
            CatalogRoute::SellMany => (Method::POST, segments(&["sales"])),
            CatalogRoute::Reconciled => (Method::POST, segments(&["sales", "reconciled"])),
            CatalogRoute::LookupMany => (Method::POST, segments(&["lookups"])),
            CatalogRoute::Lease => (Method::GET, segments(&["lease"])),
            CatalogRoute::Backup => (Method::GET, segments(&["backup"])),
            CatalogRoute::Replication(rpc) => {
                (Method::POST, vec!["replication".into(), rpc.clone()])
            }
            CatalogRoute::Members(route) => route.target(),
        }
    }

    fn info(&self) -> RouteInfo {
        match self {
            CatalogRoute::Items | CatalogRoute::Item(_) => RouteInfo::PUBLIC,
            CatalogRoute::Update(_)
            | CatalogRoute::Sell(_)
            | CatalogRoute::SellMany
            | CatalogRoute::Reconciled
            | CatalogRoute::LookupMany
            | CatalogRoute::Sales
            | CatalogRoute::Lease
            | CatalogRoute::Backup
            | CatalogRoute::Members(_) => RouteInfo::INTERNAL,
            CatalogRoute::Propagate | CatalogRoute::Replication(_) => RouteInfo::REPLICATION,
        }
    }

    fn every() -> Vec<Self> {
        let mut every = vec![
            CatalogRoute::Items,
            CatalogRoute::Item(ItemId(1)),
            CatalogRoute::Update(ItemId(1)),
            CatalogRoute::Sell(ItemId(1)),
            CatalogRoute::Propagate,
            CatalogRoute::Sales,
            CatalogRoute::SellMany,
            CatalogRoute::Reconciled,
            CatalogRoute::LookupMany,
            CatalogRoute::Lease,
            CatalogRoute::Backup,
            CatalogRoute::Replication("raft-append".to_owned()),
        ];
        every.extend(MemberRoute::every().into_iter().map(CatalogRoute::Members));
        every
    }

    fn label(&self) -> &'static str {
        match self {
            CatalogRoute::Items => "GET /item",
            CatalogRoute::Item(_) => "GET /item/{id}",
            CatalogRoute::Update(_) => "PUT /item/{id}",
            CatalogRoute::Sell(_) => "POST /item/{id}/sell",
            CatalogRoute::Propagate => "PUT /item/propagate/{any}",
            CatalogRoute::Sales => "GET /sales",
            CatalogRoute::SellMany => "POST /sales",
            CatalogRoute::Reconciled => "POST /sales/reconciled",
            CatalogRoute::LookupMany => "POST /lookups",
            CatalogRoute::Lease => "GET /lease",
            CatalogRoute::Backup => "GET /backup",
            CatalogRoute::Replication(_) => "POST /replication/{rpc}",
            CatalogRoute::Members(route) => route.label(),
        }
    }
}

/// An order replica's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRoute {
    /// `GET /buy/<item>`: buy one copy (under the request's idempotency
    /// key, if it has one).
    Buy(ItemId),
    /// `POST /buys` (internal): many buys at once, each as
    /// [`OrderRoute::Buy`] makes one (a frontend's buys that came
    /// together).
    BuyMany,
    /// `GET /orders?after=&limit=`: a page of orders, without their
    /// idempotency keys.
    Orders,
    /// `GET /ledger` (internal): every order with its idempotency key, for
    /// the operator's checks.
    Ledger,
    /// `PUT /update` (internal): the seed's propagation endpoint, here a
    /// shipment of ops (`broadcast`).
    Propagate,
    /// `POST /replication/<rpc>` (internal): a peer's replication call.
    Replication(String),
    /// `/members` (internal): the membership.
    Members(MemberRoute),
    /// `GET /backup` (internal): the replica's state, after a read index,
    /// streamed.
    Backup,
}

impl Route for OrderRoute {
    fn recognize(method: &Method, path: &[&str]) -> Option<Result<Self, BadParam>> {
        Some(match (method, path) {
            (&Method::GET, ["buy", id]) => item(id, OrderRoute::Buy),
            (&Method::POST, ["buys"]) => Ok(OrderRoute::BuyMany),
            (&Method::GET, ["orders"]) => Ok(OrderRoute::Orders),
            (&Method::GET, ["ledger"]) => Ok(OrderRoute::Ledger),
            (&Method::PUT, ["update"]) => Ok(OrderRoute::Propagate),
            (&Method::GET, ["backup"]) => Ok(OrderRoute::Backup),
            (&Method::POST, ["replication", rpc]) => Ok(OrderRoute::Replication((*rpc).to_owned())),
            _ => return MemberRoute::recognize(method, path).map(|r| r.map(OrderRoute::Members)),
        })
    }

    fn target(&self) -> (Method, Vec<String>) {
        match self {
            OrderRoute::Buy(id) => (Method::GET, vec!["buy".into(), id.to_string()]),
            OrderRoute::BuyMany => (Method::POST, segments(&["buys"])),
            OrderRoute::Orders => (Method::GET, segments(&["orders"])),
            OrderRoute::Ledger => (Method::GET, segments(&["ledger"])),
            OrderRoute::Propagate => (Method::PUT, segments(&["update"])),
            OrderRoute::Backup => (Method::GET, segments(&["backup"])),
            OrderRoute::Replication(rpc) => (Method::POST, vec!["replication".into(), rpc.clone()]),
            OrderRoute::Members(route) => route.target(),
        }
    }

    fn info(&self) -> RouteInfo {
        match self {
            OrderRoute::Buy(_) | OrderRoute::Orders => RouteInfo::PUBLIC,
            OrderRoute::BuyMany
            | OrderRoute::Ledger
            | OrderRoute::Backup
            | OrderRoute::Members(_) => RouteInfo::INTERNAL,
            OrderRoute::Propagate | OrderRoute::Replication(_) => RouteInfo::REPLICATION,
        }
    }

    fn every() -> Vec<Self> {
        let mut every = vec![
            OrderRoute::Buy(ItemId(1)),
            OrderRoute::BuyMany,
            OrderRoute::Orders,
            OrderRoute::Ledger,
            OrderRoute::Propagate,
            OrderRoute::Backup,
            OrderRoute::Replication("raft-append".to_owned()),
        ];
        every.extend(MemberRoute::every().into_iter().map(OrderRoute::Members));
        every
    }

    fn label(&self) -> &'static str {
        match self {
            OrderRoute::Buy(_) => "GET /buy/{id}",
            OrderRoute::BuyMany => "POST /buys",
            OrderRoute::Orders => "GET /orders",
            OrderRoute::Ledger => "GET /ledger",
            OrderRoute::Propagate => "PUT /update",
            OrderRoute::Backup => "GET /backup",
            OrderRoute::Replication(_) => "POST /replication/{rpc}",
            OrderRoute::Members(route) => route.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<R: Route + PartialEq + std::fmt::Debug + Clone>(routes: &[R]) {
        for route in routes {
            let node = NodeRoute::Role(route.clone());
            let (method, segments) = node.target();
            let path: Vec<&str> = segments.iter().map(String::as_str).collect();
            let parsed: NodeRoute<R> = parse(&method, &path).expect("parses back");
            assert_eq!(parsed, node, "{method} {}", node.path());
        }
    }

    #[test]
    fn every_route_parses_back_from_its_target() {
        round_trip(&[
            FrontendRoute::Lookup,
            FrontendRoute::Search,
            FrontendRoute::Buy,
            FrontendRoute::Invalidate,
        ]);
        round_trip(&[
            CatalogRoute::Items,
            CatalogRoute::Item(ItemId(3)),
            CatalogRoute::Update(ItemId(-1)),
            CatalogRoute::Sell(ItemId(7)),
            CatalogRoute::Propagate,
            CatalogRoute::Sales,
            CatalogRoute::SellMany,
            CatalogRoute::LookupMany,
            CatalogRoute::Lease,
            CatalogRoute::Replication("raft-vote".into()),
            CatalogRoute::Members(MemberRoute::List),
            CatalogRoute::Members(MemberRoute::Add),
            CatalogRoute::Members(MemberRoute::Remove("catalog-4".into())),
        ]);
        round_trip(&[
            OrderRoute::Buy(ItemId(2)),
            OrderRoute::BuyMany,
            OrderRoute::Orders,
            OrderRoute::Ledger,
            OrderRoute::Propagate,
            OrderRoute::Replication("ship".into()),
            OrderRoute::Members(MemberRoute::Remove("order_9".into())),
        ]);
        let health: NodeRoute<OrderRoute> = parse(&Method::GET, &["health"]).expect("health");
        assert_eq!(health, NodeRoute::Health);
        let ready: NodeRoute<FrontendRoute> = parse(&Method::GET, &["ready"]).expect("ready");
        assert_eq!(ready, NodeRoute::Ready);
        round_trip(&FrontendRoute::every());
        round_trip(&CatalogRoute::every());
        round_trip(&OrderRoute::every());
    }

    /// `every()` names each endpoint of a table once.
    fn each_label_once<R: Route>() {
        let every = NodeRoute::<R>::every();
        let labels: std::collections::BTreeSet<&str> = every.iter().map(Route::label).collect();
        assert_eq!(labels.len(), every.len(), "{labels:?}");
    }

    #[test]
    fn every_lists_each_endpoint_once() {
        each_label_once::<FrontendRoute>();
        each_label_once::<CatalogRoute>();
        each_label_once::<OrderRoute>();
    }

    #[test]
    fn unknown_paths_are_not_found_and_wrong_methods_list_the_allowed() {
        let not_found = parse::<NodeRoute<FrontendRoute>>(&Method::GET, &["admin"]);
        assert!(matches!(not_found, Err(RouteError::NotFound { .. })));
        let metrics = parse::<NodeRoute<CatalogRoute>>(&Method::POST, &["metrics"]);
        assert!(
            matches!(metrics, Err(RouteError::MethodNotAllowed { allow, .. })
                if allow == [Method::GET])
        );
        let item = parse::<NodeRoute<CatalogRoute>>(&Method::DELETE, &["item", "1"]);
        assert!(
            matches!(item, Err(RouteError::MethodNotAllowed { allow, .. })
                if allow == [Method::GET, Method::PUT])
        );
    }

    #[test]
    fn a_bad_parameter_keeps_its_endpoints_access() {
        let update = parse::<CatalogRoute>(&Method::PUT, &["item", "x"]);
        assert!(
            matches!(update, Err(RouteError::BadParam(BadParam { info, .. }))
                if info.access == Access::Internal)
        );
        let read = parse::<CatalogRoute>(&Method::GET, &["item", "x"]);
        assert!(
            matches!(read, Err(RouteError::BadParam(BadParam { info, .. }))
                if info.access == Access::Public)
        );
    }
}
