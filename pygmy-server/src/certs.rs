//! `pygmy-server --make-certs DIR`: a cluster CA and a certificate for
//! each node of a topology, and one for the operator's tools (rcgen).
//!
//! Each node's certificate names the node (DNS), its address's IP, and
//! loopback (`localhost`, 127.0.0.1: a container's own health check asks
//! there); it serves and calls as that node (both key usages). The
//! operator's, `client.pem`, only calls. Keys are ECDSA P-256, written
//! mode 0600. A file already there is never overwritten: a new CA means
//! new certificates for every node, which an operator does on purpose.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use pygmy_core::topology::{Topology, CLIENT_CERT_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen could not make a key or a certificate.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written (or is there already).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How long the certificates made are valid, in years from this one.
const VALID_YEARS: i32 = 10;

/// The CA's file names in `DIR`: `ca.pem` (which the topology's `ca`
/// names) and its key `ca.key` (keep it off the nodes).
pub const CA_NAME: &str = "ca";

/// Makes a CA, a certificate for every node of `topology` and one for the
/// operator in `dir` (made if missing); answers the files written.
pub fn make_certs(topology: &Topology, dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut ca = valid_for_years(CertificateParams::new(Vec::<String>::new())?);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Pygmy cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    written.push(write(
        dir,
        CA_NAME,
        &ca_cert.pem(),
        &ca_key.serialize_pem(),
    )?);
    let issuer = Issuer::new(ca, ca_key);

    for node in &topology.nodes {
        let mut names = vec![node.name.clone(), "localhost".to_owned()];
        names.dedup();
        let mut params = valid_for_years(CertificateParams::new(names)?);
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if !node.addr.ip().is_unspecified() && !ips.contains(&node.addr.ip()) {
            ips.push(node.addr.ip());
        }
        params
            .subject_alt_names
            .extend(ips.into_iter().map(SanType::IpAddress));
        params
            .distinguished_name
            .push(DnType::CommonName, node.name.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        written.push(signed(dir, &node.name, params, &issuer)?);
    }
    let mut operator = valid_for_years(CertificateParams::new(Vec::<String>::new())?);
    operator
        .distinguished_name
        .push(DnType::CommonName, "Pygmy operator");
    operator.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    written.push(signed(dir, CLIENT_CERT_NAME, operator, &issuer)?);
    Ok(written)
}

/// `params` valid from the start of this year for [`VALID_YEARS`].
fn valid_for_years(mut params: CertificateParams) -> CertificateParams {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    // The year, near enough (a leap day's error does not matter here).
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    params
}

/// A key and its certificate signed by `issuer`, written as `name`.
fn signed(
    dir: &Path,
    name: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<PathBuf, CertsError> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write(dir, name, &cert.pem(), &key.serialize_pem())
}

/// Writes `<name>.pem` and `<name>.key` (mode 0600) in `dir`, neither
/// there before; answers the certificate's path.
fn write(dir: &Path, name: &str, cert: &str, key: &str) -> Result<PathBuf, CertsError> {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    create(&key_path, key, 0o600)?;
    create(&cert_path, cert, 0o644)?;
    Ok(cert_path)
}

fn create(path: &Path, text: &str, mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}
