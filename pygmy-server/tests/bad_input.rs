//! Every endpoint, fed bad input: each gets the JSON envelope with the
//! right status, and nothing changes.

use pygmy_core::api::public::ErrorResponse;
use pygmy_core::api::Status;
use pygmy_core::types::ItemId;
use pygmy_server::testing::{Options, TestCluster, TOKEN};
use reqwest::Method;

struct Case {
    node: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
}

const AUTH: &[(&str, &str)] = &[("x-pygmy-token", TOKEN)];
const LONG_TOPIC: &str = concat!(
    "/search?topic=",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
);
const WRONG_TOKEN: &[(&str, &str)] = &[("x-pygmy-token", "guess")];

fn case(node: &'static str, method: Method, path: &'static str, status: u16) -> Case {
    Case {
        node,
        method,
        path,
        body: None,
        headers: &[],
        status,
    }
}

fn with_body(
    mut c: Case,
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Case {
    c.body = Some(body);
    c.headers = headers;
    c
}

fn cases() -> Vec<Case> {
    use Method as M;
    let f = "frontend";
    let c = "catalog-0";
    let o = "order-0";
    vec![
        // Frontend.
        case(f, M::GET, "/lookup", 400),
        case(f, M::GET, "/lookup?id=", 400),
        case(f, M::GET, "/lookup?id=abc", 400),
        case(f, M::GET, "/lookup?id=1.5", 400),
        case(f, M::GET, "/lookup?id=99999999999999999999", 400),
        case(f, M::GET, "/lookup?id=1%27%20OR%20%271%27=%271", 400),
        case(f, M::GET, "/lookup?id=0", 404),
        case(f, M::GET, "/lookup?id=-3", 404),
        case(f, M::GET, "/search", 400),
        case(f, M::GET, "/search?topic=", 400),
        case(f, M::GET, LONG_TOPIC, 400),
        case(f, M::GET, "/buy", 400),
        case(f, M::GET, "/buy?id=x", 400),
        case(f, M::GET, "/buy?id=77", 404),
        with_body(
            case(f, M::GET, "/buy?id=1", 400),
            "",
            &[("idempotency-key", "has spaces")],
        ),
        case(f, M::POST, "/lookup?id=1", 405),
        case(f, M::DELETE, "/buy?id=1", 405),
        case(f, M::GET, "/admin", 404),
        with_body(
            case(f, M::POST, "/invalidate", 401),
            r#"{"item":1,"topic":"x"}"#,
            &[],
        ),
        with_body(
            case(f, M::POST, "/invalidate", 401),
            r#"{"item":1,"topic":"x"}"#,
            WRONG_TOKEN,
        ),
        with_body(case(f, M::POST, "/invalidate", 400), r#"{"item":"#, AUTH),
        // Catalog.
        case(c, M::GET, "/item/abc", 400),
        case(c, M::GET, "/item/1%20OR%201=1", 400),
        case(c, M::GET, "/item/4242", 404),
        case(c, M::GET, "/item?id=zz", 400),
        case(c, M::GET, "/item?id=4242", 404),
        case(c, M::DELETE, "/item/1", 405),
        with_body(case(c, M::PUT, "/item/1", 401), r#"{"count":1}"#, &[]),
        with_body(
            case(c, M::PUT, "/item/1", 401),
            r#"{"count":1}"#,
            WRONG_TOKEN,
        ),
        with_body(case(c, M::PUT, "/item/1", 400), r#"{"count":"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 400), r#"{}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 400), r#"{"count":"5"}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 400), r#"{"title":"x"}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 422), r#"{"count":1.5}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 422), r#"{"cost":-1}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 422), r#"{"cost":1.234}"#, AUTH),
        with_body(case(c, M::PUT, "/item/1", 422), r#"{"count":-101}"#, AUTH),
        with_body(case(c, M::PUT, "/item/4242", 404), r#"{"count":1}"#, AUTH),
        with_body(case(c, M::PUT, "/item/x", 400), r#"{"count":1}"#, AUTH),
        with_body(case(c, M::PUT, "/item/x", 401), r#"{"count":1}"#, &[]),
        with_body(
            case(c, M::PUT, "/item/1", 422),
            r#"{"count":-9223372036854775808}"#,
            AUTH,
        ),
        case(c, M::GET, "/replication/ship", 405),
        with_body(
            case(c, M::PUT, "/item/propagate/1", 401),
            r#"{"entries":[]}"#,
            &[],
        ),
        with_body(
            case(c, M::PUT, "/item/propagate/1", 400),
            r#"{"entries":"#,
            AUTH,
        ),
        with_body(case(c, M::POST, "/item/1/sell", 401), "", &[]),
        with_body(case(c, M::POST, "/item/1/sell", 400), "", AUTH),
        with_body(case(c, M::POST, "/sales", 401), r#"{"sales":[]}"#, &[]),
        with_body(case(c, M::POST, "/sales", 400), "", AUTH),
        with_body(case(c, M::POST, "/sales", 400), r#"{"sales":[]}"#, AUTH),
        with_body(case(c, M::POST, "/sales", 400), r#"{"sales":{}}"#, AUTH),
        with_body(
            case(c, M::POST, "/sales", 400),
            r#"{"sales":[{"item":1}]}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/sales", 400),
            r#"{"sales":[{"item":"1","key":"k"}]}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/sales", 400),
            r#"{"sales":[{"item":1,"key":"no spaces"}]}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/sales", 400),
            r#"{"sales":[{"item":1,"key":"k","count":2}]}"#,
            AUTH,
        ),
        with_body(case(c, M::POST, "/lookups", 401), r#"{"items":[1]}"#, &[]),
        with_body(case(c, M::POST, "/lookups", 400), "", AUTH),
        with_body(case(c, M::POST, "/lookups", 400), r#"{"items":[]}"#, AUTH),
        with_body(case(c, M::POST, "/lookups", 400), r#"{"items":{}}"#, AUTH),
        with_body(
            case(c, M::POST, "/lookups", 400),
            r#"{"items":["1"]}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/lookups", 400),
            r#"{"items":[1.5]}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/lookups", 400),
            r#"{"items":[1],"topic":"x"}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/lookups", 400),
            // 65 books: one more than a call carries.
            concat!(
                r#"{"items":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"#,
                r#"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}"#
            ),
            AUTH,
        ),
        case(c, M::GET, "/lease?frontend=frontend", 401),
        with_body(case(c, M::GET, "/lease", 400), "", AUTH),
        with_body(case(c, M::GET, "/lease?frontend=nobody", 404), "", AUTH),
        with_body(case(c, M::POST, "/lease?frontend=frontend", 405), "", AUTH),
        with_body(case(c, M::GET, "/sales?after=x", 400), "", AUTH),
        // Whole numbers the stores cannot hold.
        with_body(
            case(c, M::GET, "/sales?after=9223372036854775808", 400),
            "",
            AUTH,
        ),
        with_body(
            case(c, M::GET, "/sales?limit=99999999999999999999", 400),
            "",
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/replication/ship", 401),
            r#"{"entries":[]}"#,
            &[],
        ),
        with_body(case(c, M::POST, "/replication/nope", 404), "{}", AUTH),
        with_body(
            case(c, M::POST, "/replication/entries", 400),
            r#"{"origin":1}"#,
            AUTH,
        ),
        // Membership (internal; the broadcast backend has a fixed one).
        case(c, M::GET, "/members", 401),
        with_body(
            case(c, M::POST, "/members", 401),
            r#"{"name":"catalog-9","url":"http://127.0.0.1:1"}"#,
            &[],
        ),
        with_body(
            case(c, M::DELETE, "/members/catalog-1", 401),
            "",
            WRONG_TOKEN,
        ),
        with_body(case(c, M::DELETE, "/members/a%20b", 400), "", AUTH),
        with_body(case(c, M::POST, "/members", 400), "not json", AUTH),
        with_body(
            case(c, M::POST, "/members", 400),
            r#"{"name":"catalog-9","url":"http://127.0.0.1:1","extra":1}"#,
            AUTH,
        ),
        with_body(
            case(c, M::POST, "/members", 422),
            r#"{"name":"catalog-9","url":"http://127.0.0.1:1"}"#,
            AUTH,
        ),
        with_body(case(c, M::GET, "/members", 422), "", AUTH),
        case(c, M::PUT, "/members", 405),
        // Order.
        with_body(case(o, M::DELETE, "/members/order-1", 422), "", AUTH),
        case(o, M::GET, "/buy/abc", 400),
        case(o, M::GET, "/buy/4242", 404),
        case(o, M::POST, "/buy/1", 405),
        with_body(case(o, M::POST, "/buys", 401), r#"{"buys":[]}"#, &[]),
        with_body(case(o, M::POST, "/buys", 400), "", AUTH),
        with_body(case(o, M::POST, "/buys", 400), r#"{"buys":[]}"#, AUTH),
        with_body(
            case(o, M::POST, "/buys", 400),
            r#"{"buys":[{"item":1,"key":""}]}"#,
            AUTH,
        ),
        with_body(
            case(o, M::POST, "/buys", 400),
            r#"{"buys":[{"key":"k"}]}"#,
            AUTH,
        ),
        case(o, M::GET, "/orders/1", 404),
        with_body(case(o, M::PUT, "/update", 401), r#"{"entries":[]}"#, &[]),
        with_body(case(o, M::PUT, "/update", 400), "not json", AUTH),
        with_body(
            case(o, M::POST, "/replication/ship", 401),
            "{}",
            WRONG_TOKEN,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_envelope_and_the_right_status() {
    let test = TestCluster::start(Options::default()).await;
    let http = reqwest::Client::new();
    let mut wrong = Vec::new();
    for case in cases() {
        let url = format!("{}{}", test.url(case.node), case.path);
        let mut request = http.request(case.method.clone(), &url);
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let body = response.bytes().await.expect("body");
        let envelope: Result<ErrorResponse, _> = serde_json::from_slice(&body);
        let ok = status == case.status
            && is_json
            && envelope.as_ref().is_ok_and(|e| {
                e.envelope.status == Status::Failed
                    && e.envelope.validation_code == status
                    && !e.message.is_empty()
            });
        if !ok {
            wrong.push(format!(
                "{} {} {}: expected {}, got {status} {}",
                case.node,
                case.method,
                case.path,
                case.status,
                String::from_utf8_lossy(&body)
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    // None of it changed anything.
    assert_eq!(test.stocks(ItemId(1)).await, vec![100, 100]);
    assert!(test
        .order("order-0")
        .ledger()
        .await
        .expect("orders")
        .is_empty());
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused() {
    let test = TestCluster::start(Options::default()).await;
    let body = format!(r#"{{"count":1,"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let response = reqwest::Client::new()
        .put(format!("{}/item/1", test.url("catalog-0")))
        .header("x-pygmy-token", TOKEN)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 413);
    let envelope: ErrorResponse = response.json().await.expect("envelope");
    assert_eq!(envelope.envelope.validation_code, 413);
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = Options {
        token: None,
        ..Options::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = pygmy_server::testing::topology(&options, dir.path());
    topology.read_timeout_ms = 300;
    let cluster = pygmy_server::Cluster::start(topology).await.expect("start");
    let addr = cluster.topology().node("catalog-0").expect("node").addr;
    // The token the cluster generated at its start (none was set).
    let token = cluster.topology().token.clone().expect("a generated token");
    // Headers sent, then a body that never comes.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /item/1 HTTP/1.1\r\nhost: x\r\nx-pygmy-token: {token}\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server must not wait forever");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "got {answer}");
    cluster.shutdown().await.expect("shutdown");
}

/// Every role answers an unknown path with 404 and a known path with the
/// wrong method with 405 and an `Allow` header, both as envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_answers_unknown_paths_and_wrong_methods_alike() {
    let test = TestCluster::start(Options::default()).await;
    let http = reqwest::Client::new();
    let probes: &[(&str, Method, &str, u16, Option<&str>)] = &[
        ("frontend", Method::GET, "/nothing/here", 404, None),
        ("catalog-0", Method::GET, "/nothing/here", 404, None),
        ("order-0", Method::GET, "/nothing/here", 404, None),
        ("frontend", Method::POST, "/metrics", 405, Some("GET")),
        ("catalog-0", Method::POST, "/metrics", 405, Some("GET")),
        ("order-0", Method::POST, "/metrics", 405, Some("GET")),
        ("frontend", Method::DELETE, "/health", 405, Some("GET")),
        ("catalog-0", Method::DELETE, "/health", 405, Some("GET")),
        ("order-0", Method::DELETE, "/health", 405, Some("GET")),
        ("frontend", Method::PUT, "/lookup", 405, Some("GET")),
        (
            "catalog-0",
            Method::DELETE,
            "/item/1",
            405,
            Some("GET, PUT"),
        ),
        ("catalog-0", Method::GET, "/item/1/sell", 405, Some("POST")),
        ("catalog-0", Method::PUT, "/sales", 405, Some("GET, POST")),
        ("catalog-0", Method::GET, "/lookups", 405, Some("POST")),
        (
            "catalog-0",
            Method::GET,
            "/replication/ship",
            405,
            Some("POST"),
        ),
        ("order-0", Method::POST, "/orders", 405, Some("GET")),
        ("order-0", Method::GET, "/buys", 405, Some("POST")),
        ("order-0", Method::GET, "/update", 405, Some("PUT")),
    ];
    let mut wrong = Vec::new();
    for (node, method, path, status, allow) in probes {
        let url = format!("{}{}", test.url(node), path);
        let response = http
            .request(method.clone(), &url)
            .send()
            .await
            .expect("send");
        let got = response.status().as_u16();
        let got_allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let envelope: Result<ErrorResponse, _> = response.json().await;
        let ok = got == *status
            && got_allow.as_deref() == *allow
            && envelope.is_ok_and(|e| {
                e.envelope.status == Status::Failed && e.envelope.validation_code == got
            });
        if !ok {
            wrong.push(format!(
                "{node} {method} {path}: expected {status} {allow:?}, got {got} {got_allow:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    test.shutdown().await;
}
