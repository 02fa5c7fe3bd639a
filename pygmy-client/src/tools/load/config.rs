//! What a load run sends: its kinds of request ([`Operation`]), their
//! [`Mix`], and the run's [`LoadConfig`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pygmy_core::types::ItemId;
use serde::{Deserialize, Serialize};

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /lookup?id=`.
    Lookup,
    /// `GET /search?topic=`.
    Search,
    /// `GET /buy?id=`.
    Buy,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Lookup => "lookup",
            Operation::Search => "search",
            Operation::Buy => "buy",
        })
    }
}

/// What the workers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mix {
    /// The seed client's session: search a topic, look up one of the books
    /// found, buy it if the lookup shows stock; again.
    Session,
    /// Each request drawn at random with these weights.
    Weighted {
        /// Weight of lookups (of a random item).
        lookup: u32,
        /// Weight of searches (of a random topic).
        search: u32,
        /// Weight of buys (of a random item).
        buy: u32,
    },
}

impl FromStr for Mix {
    type Err = String;

    /// `session`, or weights like `lookup=45,search=45,buy=10`.
    fn from_str(text: &str) -> Result<Mix, String> {
        if text == "session" {
            return Ok(Mix::Session);
        }
        let (mut lookup, mut search, mut buy) = (0, 0, 0);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
            match name.trim() {
                "lookup" => lookup = weight,
                "search" => search = weight,
                "buy" => buy = weight,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}: lookup, search or buy"
                    ))
                }
            }
        }
        if lookup + search + buy == 0 {
            return Err("the weights add up to 0".to_owned());
        }
        Ok(Mix::Weighted {
            lookup,
            search,
            buy,
        })
    }
}

/// How to run the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Requests in flight at most (workers).
    pub concurrency: usize,
    /// Requests per second for an open loop; none for a closed loop.
    pub rate: Option<f64>,
    /// What to send.
    pub mix: Mix,
    /// Seed of the random choices (the same seed sends the same requests
    /// from each worker, answers permitting).
    pub seed: u64,
    /// Items to look up and buy.
    pub items: Vec<ItemId>,
    /// Topics to search.
    pub topics: Vec<String>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Record every lookup and buy with its times and what it saw or did,
    /// for [`crate::tools::history::check`] (in
    /// [`super::LoadReport::history`]).
    pub history: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            requests: Some(1000),
            duration: None,
            concurrency: 16,
            rate: None,
            mix: Mix::Session,
            seed: 677,
            items: (1..=7).map(ItemId).collect(),
            topics: vec![
                "distributed systems".to_owned(),
                "graduate school".to_owned(),
            ],
            progress: false,
            history: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!("session".parse::<Mix>(), Ok(Mix::Session));
        assert_eq!(
            "lookup=45,search=45,buy=10".parse::<Mix>(),
            Ok(Mix::Weighted {
                lookup: 45,
                search: 45,
                buy: 10
            })
        );
        assert_eq!(
            "buy=1".parse::<Mix>(),
            Ok(Mix::Weighted {
                lookup: 0,
                search: 0,
                buy: 1
            })
        );
        assert!("lookup=0".parse::<Mix>().is_err());
        assert!("sell=3".parse::<Mix>().is_err());
        assert!("lookup=x".parse::<Mix>().is_err());
        assert!("lookup".parse::<Mix>().is_err());
    }
}
