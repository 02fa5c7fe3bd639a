//! TLS for every caller of a node (rustls, with ring): the cluster CA to
//! trust, and the certificate to show. A node calls its peers with its own
//! certificate; an operator's tools with the operator's (`client.pem`); a
//! user's client with none, trusting the CA only.
//!
//! The PEM files are read here too, for the server's side
//! (`pygmy_server::tls`) to share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no certificate, or no private key, in PEM.
    #[error("{path} holds no {what} in PEM")]
    Missing {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls refused the files (a key that is not the certificate's, a
    /// CA certificate it cannot parse).
    #[error("TLS with {path}: {source}")]
    Refused {
        /// The file it was about.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// The cryptography every config uses: ring's (ECDHE with X25519 and the
/// NIST curves; AES-GCM and ChaCha20-Poly1305).
///
/// rustls 0.23.48 deprecates ring's provider for want of a post-quantum
/// key exchange, which only its aws-lc-rs provider has. Pygmy keeps ring:
/// aws-lc-rs adds a large C build (and cmake for the static musl image)
/// to every build, and a cluster's own links are not the long-lived
/// secrets a harvest-now-decrypt-later attack is worth (docs/operations.md,
/// "TLS").
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| TlsError::Missing {
        path: path.to_path_buf(),
        what: "private key",
    })
}

/// The roots of trust: the cluster CA's certificates in `ca`.
pub fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|source| TlsError::Refused {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// A client config that trusts the CA in `ca` and shows the certificate
/// and key of `identity` (none: a user's client, for public endpoints).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let refused = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Refused { path, source }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused(ca))?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(refused(cert))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}
