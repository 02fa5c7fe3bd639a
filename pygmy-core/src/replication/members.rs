//! A replicated service's membership: who its replicas are, and the changes
//! an operator makes to it while it serves (`raft` only; the operator's
//! side is in docs/operations.md).
//!
//! ```
//! use pygmy_core::replication::MemberChange;
//!
//! let add: MemberChange =
//!     serde_json::from_str(r#"{"action": "add", "name": "catalog-4", "url": "http://10.0.0.4:8104"}"#)
//!         .unwrap();
//! assert_eq!(add.validate(), Ok(()));
//! let bad = MemberChange::Add { name: "catalog 4".into(), url: "http://10.0.0.4:8104".into() };
//! assert!(bad.validate().is_err());
//! ```

use serde::{Deserialize, Serialize};

/// Whether `name` may name a node: letters, digits, `-` and `_`, at most
/// 64 of them.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A change of a service's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum MemberChange {
    /// Add replica `name`, reached at `url` (`http://host:port`), already
    /// running with a topology that names it: it joins as a learner,
    /// catches up, and is made a voter.
    Add {
        /// Its name.
        name: String,
        /// Its address.
        url: String,
    },
    /// Remove replica `name` (voter or learner).
    Remove {
        /// Its name.
        name: String,
        /// Remove it even if fewer than a majority of the voters left
        /// would answer (for disasters: the change may then wait until
        /// enough of them are back).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
}

impl MemberChange {
    /// The replica the change is about.
    pub fn name(&self) -> &str {
        match self {
            MemberChange::Add { name, .. } | MemberChange::Remove { name, .. } => name,
        }
    }

    /// Checks the change's fields; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        if !valid_node_name(name) {
            return Err(format!(
                "member name {name:?}: use letters, digits, - and _ (at most 64)"
            ));
        }
        if let MemberChange::Add { url, .. } = self {
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or_default();
            if host.is_empty() || host.len() > 253 || host.contains(char::is_whitespace) {
                return Err(format!(
                    "member url {url:?}: expected http://host:port (https:// with TLS)"
                ));
            }
        }
        Ok(())
    }
}

/// What a member does in the service (voters sort first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// It votes, and counts toward every commit's majority.
    Voter,
    /// It receives the log but does not vote (a replica catching up).
    Learner,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its raft id.
    pub id: u64,
    /// Voter or learner.
    pub role: MemberRole,
    /// Whether it leads.
    pub leader: bool,
    /// Where its peers reach it, when the membership says (a replica added
    /// at run time); others are reached at their topology's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The last log index the leader knows it holds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

/// The membership of a service, as its leader knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The cluster's id.
    pub cluster: String,
    /// The leader's name, if one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The last index of the leader's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log: Option<u64>,
    /// Whether a change is under way (a joint configuration, in which both
    /// the old and the new voters must agree).
    pub changing: bool,
    /// Every member, voters first.
    pub members: Vec<MemberInfo>,
}

impl Members {
    /// Member `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Whether `name` is a voter, and no change is under way.
    pub fn has_voter(&self, name: &str) -> bool {
        !self.changing && self.get(name).is_some_and(|m| m.role == MemberRole::Voter)
    }
}

/// The members a replica knows of (its raft membership, applied or not):
/// what a catalog replica tells a frontend with each lease grant, so that
/// a replica added at run time reaches frontends whose topology file does
/// not name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMembers {
    /// The log index of that membership: a newer one has a higher index.
    pub index: u64,
    /// Every member, voters and learners.
    pub replicas: Vec<KnownMember>,
}

/// One member a replica knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMember {
    /// Its name.
    pub name: String,
    /// Where it is reached, when the membership says (a replica added at
    /// run time); others are at their topology's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
