//! `pygmy-server --probe`: a node's `/ready` asked over a plain socket,
//! with no runtime, for a container's health check (traffic waits until
//! the node can serve it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection, or no answer in time.
    #[error("cannot ask: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS session could not start.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The node answered, but cannot serve yet (503: a replica catching
    /// up, a frontend that reaches no ready replica of a backend).
    #[error("answered {0:?}")]
    NotServing(String),
}

/// Asks the node at `addr` for `GET /ready` (a listener on every address,
/// `0.0.0.0`, is asked on loopback), over TLS with `tls` (the node's
/// certificate names its IP and loopback): Ok if it answers 200 within
/// `timeout`.
pub fn ready(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(), ProbeError> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = b"GET /ready HTTP/1.0\r\nhost: probe\r\n\r\n";
    let mut head = [0u8; 64];
    let n = match tls {
        None => ask(stream, request, &mut head)?,
        Some(config) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let session = rustls::ClientConnection::new(config, name)?;
            ask(
                rustls::StreamOwned::new(session, stream),
                request,
                &mut head,
            )?
        }
    };
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotServing(status_line.to_owned()))
    }
}

/// Sends `request` on `stream` and reads the start of the answer.
fn ask(mut stream: impl Read + Write, request: &[u8], head: &mut [u8]) -> std::io::Result<usize> {
    stream.write_all(request)?;
    stream.flush()?;
    stream.read(head)
}
