//! The books a catalog starts with: the seed's seven, or a catalog file
//! (`catalog_file`, `[[book]]` tables) read from beside the topology.

use std::collections::HashSet;

use serde::Deserialize;

use super::{ConfigError, Topology};
use crate::types::{default_books, Book};

/// The books of a catalog file: `[[book]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    book: Vec<Book>,
}

impl Topology {
    /// The books the catalog starts with.
    pub fn books(&self) -> Result<Vec<Book>, ConfigError> {
        let Some(file) = &self.catalog_file else {
            return Ok(default_books());
        };
        let path = &self.resolve(file);
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let file: CatalogFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut ids = HashSet::new();
        for book in &file.book {
            if !ids.insert(book.id) {
                return Err(ConfigError::Invalid(format!(
                    "book id {} appears twice",
                    book.id
                )));
            }
            if !(0..=crate::catalog::MAX_COUNT).contains(&book.count) {
                return Err(ConfigError::Invalid(format!(
                    "book {}: bad count {}",
                    book.id, book.count
                )));
            }
        }
        Ok(file.book)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_catalog_file_is_read_from_beside_the_topology() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = "[[book]]\ncost = 3\ncount = 4\nid = 9\ntitle = \"T\"\ntopic = \"t\"\n";
        std::fs::write(dir.path().join("books.toml"), book).expect("write");
        let mut topology = Topology::default_local();
        topology.catalog_file = Some(PathBuf::from("books.toml"));
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, topology.to_toml()).expect("write");
        let loaded = Topology::load(&path).expect("load");
        assert_eq!(loaded.catalog_file, Some(PathBuf::from("books.toml")));
        let books = loaded.books().expect("books");
        assert_eq!((books.len(), books[0].id.0, books[0].count), (1, 9, 4));
        let bad = "[[book]]\ncost = -3\ncount = 4\nid = 9\ntitle = \"T\"\ntopic = \"t\"\n";
        std::fs::write(dir.path().join("books.toml"), bad).expect("write");
        assert!(loaded.books().is_err());
    }
}
