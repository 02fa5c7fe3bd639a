//! TLS between every pair of nodes and for every client: the default
//! store's shape with `[tls]`, its certificates made by `--make-certs`'s
//! function. The store serves (raft, buys, pushes all over HTTPS); a user
//! reaches the public endpoints trusting the CA alone; an internal
//! endpoint demands a certificate of the CA and the token; a certificate
//! of another CA is refused at the handshake, a peer's as a user's.

use std::time::Duration;

use pygmy_client::tls::client_config;
use pygmy_client::{CatalogClient, Client, ClientError, ClientOptions, InternalClient};
use pygmy_core::api::public::ItemUpdate;
use pygmy_core::topology::{TlsConfig, CLIENT_CERT_NAME};
use pygmy_core::types::ItemId;
use pygmy_server::certs::make_certs;
use pygmy_server::testing::Options;
use pygmy_server::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_tls_serves_over_https_and_refuses_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = pygmy_server::testing::topology(&Options::raft(), dir.path());
    let certs = dir.path().join("certs");
    topology.tls = Some(TlsConfig {
        ca: certs.join("ca.pem"),
        cert_dir: certs.clone(),
    });
    let written = make_certs(&topology, &certs).expect("certificates");
    assert_eq!(written.len(), 1 + 7 + 1, "the CA, 7 nodes, the operator");
    assert!(
        make_certs(&topology, &certs).is_err(),
        "never overwrites a certificate"
    );
    let cluster = Cluster::start(topology).await.expect("start");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("every node ready over TLS");
    let topology = cluster.topology().clone();
    let frontend = cluster.url("frontend").expect("frontend");
    assert!(frontend.starts_with("https://"), "{frontend}");

    // A user: trusts the CA, shows no certificate.
    let user = ClientOptions {
        tls: Some(client_config(&certs.join("ca.pem"), None).expect("user TLS")),
        ..ClientOptions::default()
    };
    let store = Client::with_options(&frontend, &user).expect("client");
    let order = store.buy(ItemId(1)).await.expect("a buy over https");
    assert!(order.0 > 0);
    assert_eq!(store.lookup(ItemId(1)).await.expect("lookup").count, 99);
    // Cached now; a change must still reach the frontend (the catalog's
    // push to it, over TLS).
    assert_eq!(store.lookup(ItemId(1)).await.expect("lookup").count, 99);

    let catalog_url = cluster.url("catalog-0").expect("catalog-0");
    let restock = ItemUpdate {
        count: Some(10),
        cost: None,
    };
    // The token without a certificate: refused.
    let with_token = ClientOptions {
        token: topology.token.clone(),
        ..user.clone()
    };
    let catalog = CatalogClient::new(&catalog_url, &with_token).expect("client");
    match catalog.update(ItemId(1), &restock).await {
        Err(ClientError::Unauthorized(message)) => {
            assert!(message.contains("client certificate"), "{message}")
        }
        other => panic!("a restock without a certificate: {other:?}"),
    }
    // The operator's certificate and the token: taken.
    let operator = ClientOptions {
        token: topology.token.clone(),
        tls: Some(
            client_config(
                &certs.join("ca.pem"),
                Some((
                    &certs.join(format!("{CLIENT_CERT_NAME}.pem")),
                    &certs.join(format!("{CLIENT_CERT_NAME}.key")),
                )),
            )
            .expect("operator TLS"),
        ),
        ..ClientOptions::default()
    };
    let catalog = CatalogClient::new(&catalog_url, &operator).expect("client");
    assert_eq!(
        catalog
            .update(ItemId(1), &restock)
            .await
            .expect("a restock")
            .count,
        109
    );
    assert_eq!(store.lookup(ItemId(1)).await.expect("lookup").count, 109);
    // The certificate without the token: refused.
    let no_token = ClientOptions {
        token: None,
        ..operator.clone()
    };
    let catalog = CatalogClient::new(&catalog_url, &no_token).expect("client");
    assert!(matches!(
        catalog.update(ItemId(1), &restock).await,
        Err(ClientError::Unauthorized(_))
    ));

    // Plain HTTP to an HTTPS node: no answer that serves.
    let plain = Client::new(&frontend.replace("https://", "http://")).expect("client");
    assert!(plain.lookup(ItemId(1)).await.is_err());

    // Another CA's certificates: a peer's (catalog-1 of another cluster)
    // and an operator's, both refused at the handshake, even with the
    // token and on a public endpoint.
    let other = dir.path().join("other");
    make_certs(&topology, &other).expect("another CA");
    for holder in ["catalog-1", CLIENT_CERT_NAME] {
        let impostor = ClientOptions {
            token: topology.token.clone(),
            tls: Some(
                client_config(
                    &certs.join("ca.pem"),
                    Some((
                        &other.join(format!("{holder}.pem")),
                        &other.join(format!("{holder}.key")),
                    )),
                )
                .expect("impostor TLS"),
            ),
            ..ClientOptions::default()
        };
        let peer = InternalClient::new(&catalog_url, &impostor).expect("client");
        match peer.health().await {
            Err(ClientError::Transport { .. }) => {}
            other => panic!("{holder} of another CA: {other:?}"),
        }
        let catalog = CatalogClient::new(&catalog_url, &impostor).expect("client");
        assert!(matches!(
            catalog.update(ItemId(1), &restock).await,
            Err(ClientError::Transport { .. })
        ));
    }
    // A client that trusts another CA does not trust the store.
    let fooled = ClientOptions {
        tls: Some(client_config(&other.join("ca.pem"), None).expect("TLS")),
        ..ClientOptions::default()
    };
    let store = Client::with_options(&frontend, &fooled).expect("client");
    assert!(matches!(
        store.lookup(ItemId(1)).await,
        Err(ClientError::Transport { .. })
    ));
    cluster.shutdown().await.expect("stop");
}
