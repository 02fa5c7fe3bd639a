//! TLS of a node (docs/operations.md, "TLS"): with a topology's `[tls]`,
//! a node serves HTTPS with its own certificate and calls its peers over
//! HTTPS showing that same certificate, and every certificate must come
//! from the cluster's CA.
//!
//! A caller may connect without a certificate (a user's client, for the
//! public endpoints); one that shows a certificate the CA did not sign is
//! refused at the handshake. An internal endpoint demands both the cluster
//! token and a certificate of the CA (`http::serve`): the token stays as
//! a second factor.

use std::sync::Arc;

use pygmy_client::tls::{self, TlsError};
use pygmy_core::topology::{TlsFiles, Topology};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// What a node needs to speak TLS: its side of the handshake as a server,
/// and as a client of its peers.
#[derive(Clone)]
pub struct NodeTls {
    /// Accepts connections with the node's certificate.
    pub acceptor: TlsAcceptor,
    /// Calls peers, showing the node's certificate.
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Node `name`'s TLS in `topology`: none without `[tls]`. Reads files:
    /// call it off the async threads.
    pub fn of(topology: &Topology, name: &str) -> Result<Option<NodeTls>, TlsError> {
        let Some(files) = topology.tls_files(name) else {
            return Ok(None);
        };
        Ok(Some(NodeTls {
            acceptor: TlsAcceptor::from(server_config(&files)?),
            client: tls::client_config(&files.ca, Some((&files.cert, &files.key)))?,
        }))
    }
}

/// A server config with `files`' certificate that verifies a caller's
/// certificate against the CA, and lets a caller with none in.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let refused = |source| TlsError::Refused {
        path: files.ca.clone(),
        source,
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(tls::roots(&files.ca)?),
        tls::provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|err| refused(rustls::Error::General(err.to_string())))?;
    let config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            tls::certificates(&files.cert)?,
            tls::private_key(&files.key)?,
        )
        .map_err(|source| TlsError::Refused {
            path: files.cert.clone(),
            source,
        })?;
    Ok(Arc::new(config))
}
