//! The baselines of `bench/throughput.sh`: small programs that do only
//! what the request path or the storage must do, so that Pygmy's figures
//! have a ceiling to be compared with (docs/benchmarks.md).
//!
//! - `bare-backend ADDR`: answers every request with one book as JSON.
//! - `bare-forward ADDR BACKEND...`: forwards every request to a backend
//!   (one backend connection per client connection, round robin) and
//!   answers what it answered: the two hops of a fresh lookup, with
//!   nothing else.
//! - `sqlite-commits DIR`: durable commits per second (WAL, `synchronous
//!   = FULL`), one row per commit and sixteen.

use std::net::SocketAddr;

/// The address given as argument `n`, or an error that says what is
/// expected.
pub fn addr_arg(n: usize) -> Result<SocketAddr, String> {
    let text = std::env::args()
        .nth(n)
        .ok_or_else(|| format!("argument {n}: an address such as 127.0.0.1:9001"))?;
    text.parse()
        .map_err(|e| format!("argument {n}: {text:?} is not an address: {e}"))
}
