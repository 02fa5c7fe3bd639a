//! Ports for test nodes, chosen below the kernel's ephemeral range.
//!
//! A port the kernel picks for `127.0.0.1:0` comes from the same range
//! (`net.ipv4.ip_local_port_range`) as the source ports of outgoing
//! connections. A test that stops a node and starts it again on its port
//! then races every connection opened meanwhile: one that happened to take
//! the port as its source makes the restart fail with "address in use"
//! (seen in CI). Ports below that range are never handed out that way; each
//! is handed out once per process, and checked free when handed out.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the kernel's ephemeral range starts when it cannot be read (the
/// Linux default).
const EPHEMERAL_START: u16 = 32768;

/// The lowest port handed out.
const FIRST: u16 = 10_000;

/// The next candidate, as an offset into the range; starts at a place of
/// this process's own, so that two test processes seldom try the same
/// ports.
static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A port on 127.0.0.1 that is free now, below the ephemeral range, and
/// not handed out before by this process. Falls back to a port the kernel
/// chooses when the range below the ephemeral one is too small.
pub fn take() -> std::io::Result<SocketAddr> {
    let end = ephemeral_start();
    if end <= FIRST + 1000 {
        return TcpListener::bind(("127.0.0.1", 0))?.local_addr();
    }
    let len = usize::from(end - FIRST);
    let _ = NEXT.compare_exchange(
        usize::MAX,
        std::process::id() as usize * 7919 % len,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..len {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % len;
        let Ok(offset) = u16::try_from(offset) else {
            continue;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], FIRST + offset));
        // Free now; the listener never accepted, so closing it leaves no
        // connection behind.
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "every port below the ephemeral range is taken",
    ))
}

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<SocketAddr> = (0..200).map(|_| take().expect("port")).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        for addr in &ports {
            assert!(addr.port() < ephemeral_start(), "{addr}");
            TcpListener::bind(addr).expect("still free");
        }
    }
}
