//! Each role's OpenAPI document (`docs/openapi/<role>.json`, served at
//! `GET /openapi.json`) names exactly the endpoints of its route table: a
//! route with no entry in its document fails, and so does an entry with
//! no route (each entry, its path parameters filled in, must parse to the
//! route of the same method and pattern).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;

use http::Method;
use pygmy_core::api::routes::{parse, CatalogRoute, FrontendRoute, NodeRoute, OrderRoute, Route};

/// `METHOD /path/{param}` of every operation of `role`'s document.
fn documented(role: &str) -> BTreeSet<String> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/openapi")
        .join(format!("{role}.json"));
    let text = std::fs::read_to_string(&file).expect("the role's OpenAPI document");
    let document: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

/// A path of `pattern`, each `{parameter}` filled with a valid value.
fn example(pattern: &str) -> Vec<String> {
    pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| match segment {
            "{id}" => "7".to_owned(),
            "{rpc}" => "raft-vote".to_owned(),
            "{name}" => "catalog-d".to_owned(),
            "{any}" => "all".to_owned(),
            other if other.starts_with('{') => panic!("no example for the parameter {other}"),
            other => other.to_owned(),
        })
        .collect()
}

fn the_document_and_the_table_agree<R: Route + Debug>(role: &str) {
    let documented = documented(role);
    let declared: BTreeSet<String> = NodeRoute::<R>::every()
        .iter()
        .map(|route| route.label().to_owned())
        .collect();
    let undocumented: Vec<&String> = declared.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&declared).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{role}: routes missing from docs/openapi/{role}.json: {undocumented:?}; \
         documented operations with no route: {unknown:?}"
    );
    for operation in &documented {
        let (method, pattern) = operation.split_once(' ').expect("METHOD /path");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let path = example(pattern);
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let route: NodeRoute<R> = parse(&method, &segments)
            .unwrap_or_else(|err| panic!("{role}: {operation} does not parse: {err}"));
        assert_eq!(
            route.label(),
            operation,
            "{role}: {operation} parses to {route:?}"
        );
    }
}

#[test]
fn the_frontend_document_names_every_frontend_route() {
    the_document_and_the_table_agree::<FrontendRoute>("frontend");
}

#[test]
fn the_catalog_document_names_every_catalog_route() {
    the_document_and_the_table_agree::<CatalogRoute>("catalog");
}

#[test]
fn the_order_document_names_every_order_route() {
    the_document_and_the_table_agree::<OrderRoute>("order");
}
