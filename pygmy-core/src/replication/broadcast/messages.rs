//! `broadcast`'s messages: the RPC names (`POST /replication/<rpc>`) and
//! their bodies.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::journal::Entry;

/// Forward an op to a higher-ranked replica.
pub const PROPOSE: &str = "propose";
/// Ops of one origin, in order.
pub const SHIP: &str = "ship";
/// A replica's high-water mark per origin.
pub const HIGH_WATERS: &str = "high_waters";
/// Read back ops of one origin.
pub const ENTRIES: &str = "entries";
/// A higher-ranked replica is back.
pub const RESUME: &str = "resume";

/// Body of `resume`: a higher-ranked replica is back and takes the writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The replica that is back.
    pub from: String,
}

/// Body of `ship`: ops of one origin, in order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "C: Serialize + DeserializeOwned")]
pub struct ShipRequest<C> {
    /// The ops, by ascending `origin_seq`, all of one origin.
    pub entries: Vec<Entry<C>>,
}

/// Answer of `ship`: how far the receiver now has the sender's ops.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShipAck {
    /// The receiver's high-water mark for the sender.
    pub high_water: u64,
}

/// Body of `entries`: which ops to read.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntriesRequest {
    /// Of which origin.
    pub origin: String,
    /// After which `origin_seq`.
    pub after: u64,
    /// At most how many.
    pub limit: usize,
}
