//! `pygmy-server --probe`: a node's `/ready` asked over a plain socket,
//! with no runtime, for a container's health check (traffic waits until
//! the node can serve it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection, or no answer in time.
    #[error("cannot ask: {0}")]
    Io(#[from] std::io::Error),
    /// The node answered, but cannot serve yet (503: a replica catching
    /// up, a frontend that reaches no ready replica of a backend).
    #[error("answered {0:?}")]
    NotServing(String),
}

/// Asks the node at `addr` for `GET /ready` (a listener on every address,
/// `0.0.0.0`, is asked on loopback): Ok if it answers 200 within `timeout`.
pub fn ready(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nhost: probe\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotServing(status_line.to_owned()))
    }
}
