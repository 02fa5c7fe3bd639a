//! The wire format, shared by the server (which writes it) and the client
//! SDK (which reads it).
//!
//! Every response carries `message` and ends with the [`Envelope`]:
//! `status` (`"Success"` or `"Failed"`) and `validation_code` (the HTTP
//! status); successes add `item` (a list of books, or the updated book) or
//! `order`. Fields are declared in the order the seed printed them
//! (sorted), so the bytes match its examples.
//!
//! - [`public`]: the seed's API and what any client may read.
//! - [`internal`]: the cluster's own protocol between its nodes, and for
//!   its operators (every route of it demands the cluster token).
//! - [`routes`]: every endpoint of every role as a typed route.

pub mod internal;
pub mod public;
pub mod routes;

use serde::{Deserialize, Serialize};

/// `"Success"` or `"Failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The request did what it asked.
    Success,
    /// It did not; `message` says why.
    Failed,
}

/// The fields every answer ends with, after its own (the seed printed keys
/// sorted, and these two sort last): whether it succeeded, and its HTTP
/// status again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `Success` or `Failed`.
    pub status: Status,
    /// The HTTP status.
    pub validation_code: u16,
}

impl Envelope {
    /// A 200 success.
    pub const OK: Envelope = Envelope {
        status: Status::Success,
        validation_code: 200,
    };
    /// A 201 success (`PUT /item`).
    pub const CREATED: Envelope = Envelope {
        status: Status::Success,
        validation_code: 201,
    };

    /// A failure with this HTTP status.
    pub fn failed(code: u16) -> Envelope {
        Envelope {
            status: Status::Failed,
            validation_code: code,
        }
    }
}

/// The seed's empty `message` object on reads: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}
