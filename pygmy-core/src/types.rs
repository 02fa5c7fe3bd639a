//! The domain: books, orders, and the ids and values they carry.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A book's id in the catalog (the seed's `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(pub i64);

impl ItemId {
    /// Parses an item id as a request carries it (`?id=3`, `/item/3`);
    /// the error says why, for a 400 answer.
    ///
    /// ```
    /// use pygmy_core::ItemId;
    /// assert_eq!(ItemId::parse(" 3"), Ok(ItemId(3)));
    /// assert!(ItemId::parse("abc").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<ItemId, String> {
        raw.trim()
            .parse::<i64>()
            .map(ItemId)
            .map_err(|_| format!("the id must be an integer, not {raw:?}"))
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order's id, assigned by the order service (the seed's `order.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub i64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A price, held as whole cents so that sums are exact.
///
/// On the wire it is a JSON number, as in the seed: `10` for whole amounts,
/// `9.99` otherwise. A value with more than two decimals, a negative value or
/// a non-number is refused when parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    cents: i64,
}

impl Cost {
    /// The largest cost accepted: a billion, far above any book.
    pub const MAX_CENTS: i64 = 100_000_000_000;

    /// A cost of `cents` cents, if it is in `0..=MAX_CENTS`.
    pub fn from_cents(cents: i64) -> Option<Cost> {
        (0..=Self::MAX_CENTS)
            .contains(&cents)
            .then_some(Cost { cents })
    }

    /// A cost of whole units (the seed's costs are whole numbers).
    pub fn whole(units: i64) -> Option<Cost> {
        units.checked_mul(100).and_then(Cost::from_cents)
    }

    /// The cost in cents.
    pub fn cents(self) -> i64 {
        self.cents
    }

    /// Parses a JSON number: non-negative, at most two decimals.
    pub fn from_json(value: &serde_json::Number) -> Result<Cost, CostError> {
        if let Some(units) = value.as_i64() {
            return Cost::whole(units).ok_or(CostError::OutOfRange);
        }
        if value.as_u64().is_some() {
            return Err(CostError::OutOfRange);
        }
        let float = value.as_f64().ok_or(CostError::OutOfRange)?;
        let scaled = float * 100.0;
        let cents = scaled.round();
        if (scaled - cents).abs() > 1e-6 {
            return Err(CostError::TooPrecise);
        }
        if !(0.0..=Self::MAX_CENTS as f64).contains(&cents) {
            return Err(CostError::OutOfRange);
        }
        // In range and integral, so the cast is exact.
        Cost::from_cents(cents as i64).ok_or(CostError::OutOfRange)
    }
}

/// Why a number is not a valid [`Cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// Negative, or absurdly large.
    #[error("cost must be between 0 and 1000000000")]
    OutOfRange,
    /// More than two decimals.
    #[error("cost must have at most two decimals")]
    TooPrecise,
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cents % 100 == 0 {
            write!(f, "{}", self.cents / 100)
        } else {
            write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
        }
    }
}

impl Serialize for Cost {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.cents % 100 == 0 {
            serializer.serialize_i64(self.cents / 100)
        } else {
            serializer.serialize_f64(self.cents as f64 / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Cost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cost, D::Error> {
        struct CostVisitor;
        impl Visitor<'_> for CostVisitor {
            type Value = Cost;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number with at most two decimals")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cost, E> {
                Cost::from_json(&v.into()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cost, E> {
                Cost::from_json(&v.into()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cost, E> {
                let number = serde_json::Number::from_f64(v)
                    .ok_or_else(|| E::custom("cost must be a finite number"))?;
                Cost::from_json(&number).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(CostVisitor)
    }
}

/// A book of the catalog, with its stock.
///
/// Fields are declared in the order the seed's JSON showed them (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Price of one copy.
    pub cost: Cost,
    /// Copies in stock; never below zero.
    pub count: i64,
    /// The book's id.
    pub id: ItemId,
    /// Title, as shown to users.
    pub title: String,
    /// Topic, as searched by `search?topic=`.
    pub topic: String,
}

/// An order: one copy of one book, sold once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// When the order was taken, RFC 3339 in UTC.
    pub created: String,
    /// The order's id.
    pub id: OrderId,
    /// The book that was bought.
    pub item_id: ItemId,
    /// The idempotency key the buy carried (or that the frontend minted).
    pub key: IdempotencyKey,
}

/// The key that makes a buy exactly-once: a retry with the same key yields
/// the same order (header `Idempotency-Key`).
///
/// 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 128;

    /// Validates a key given by a client.
    pub fn parse(raw: &str) -> Result<IdempotencyKey, InvalidKey> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(IdempotencyKey(raw.to_owned()))
        } else {
            Err(InvalidKey)
        }
    }

    /// A fresh key, as the frontend mints for a buy that came without one:
    /// a version 7 UUID (RFC 9562: the time in milliseconds, then a counter
    /// and random bits), so keys minted one after another sort one after
    /// another. The orders' index by key and the op records' index by op
    /// id then take each new key at their right edge, a few pages a batch
    /// of buys, not one page anywhere in the index for every buy (as
    /// random keys would): what a buy writes does not grow with the
    /// indexes.
    pub fn mint() -> IdempotencyKey {
        IdempotencyKey(uuid::Uuid::now_v7().to_string())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        IdempotencyKey::parse(&raw).map_err(de::Error::custom)
    }
}

/// An idempotency key that is empty, too long, or has other characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 128 characters of A-Z a-z 0-9 - _ . :")]
pub struct InvalidKey;

/// The seed's catalog: seven books, 100 copies each.
pub fn default_books() -> Vec<Book> {
    const BOOKS: [(&str, &str, i64); 7] = [
        (
            "How to get a good grade in 677 in 20 minutes a day.",
            "distributed systems",
            10,
        ),
        ("RPCs for Dummies.", "distributed systems", 10),
        (
            "Xen and the Art of Surviving Graduate School.",
            "graduate school",
            9,
        ),
        (
            "Cooking for the Impatient Graduate Student.",
            "graduate school",
            8,
        ),
        ("How to finish Project 3 on time", "distributed systems", 7),
        ("Why theory classes are so hard.", "graduate school", 6),
        ("Spring in the Pioneer Valley", "graduate school", 5),
    ];
    BOOKS
        .iter()
        .zip(1..)
        .map(|(&(title, topic, cost), id)| Book {
            cost: Cost { cents: cost * 100 },
            count: 100,
            id: ItemId(id),
            title: title.to_owned(),
            topic: topic.to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_serializes_as_the_seed_did() {
        let whole = Cost::whole(10).expect("in range");
        assert_eq!(serde_json::to_string(&whole).expect("serializes"), "10");
        let cents = Cost::from_cents(999).expect("in range");
        assert_eq!(serde_json::to_string(&cents).expect("serializes"), "9.99");
    }

    #[test]
    fn cost_parsing_refuses_impossible_values() {
        let parse = |s: &str| serde_json::from_str::<Cost>(s);
        assert_eq!(parse("12.5").expect("valid").cents(), 1250);
        assert_eq!(parse("0").expect("valid").cents(), 0);
        assert!(parse("-1").is_err());
        assert!(parse("1.001").is_err());
        assert!(parse("1e300").is_err());
        assert!(parse("\"10\"").is_err());
    }

    #[test]
    fn minted_keys_sort_in_the_order_they_were_minted() {
        let keys: Vec<IdempotencyKey> = (0..10_000).map(|_| IdempotencyKey::mint()).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn keys_are_validated() {
        assert!(IdempotencyKey::parse("abc-123_x.y:z").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"a".repeat(129)).is_err());
        assert!(IdempotencyKey::parse(IdempotencyKey::mint().as_str()).is_ok());
    }

    #[test]
    fn default_catalog_is_the_seeds() {
        let books = default_books();
        assert_eq!(books.len(), 7);
        assert_eq!(books[0].id, ItemId(1));
        assert_eq!(books[6].title, "Spring in the Pioneer Valley");
        assert!(books.iter().all(|b| b.count == 100));
    }
}
