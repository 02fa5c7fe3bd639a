//! Snapshots as files, written and read a row at a time: a snapshot is
//! never held in memory whole, whatever its size.
//!
//! The format is JSON lines: for each replicated table, a header line
//! `{"table":"<name>","columns":["<column>",...]}`, then one line per row,
//! a JSON array of its values (null, integer, real or text).
//!
//! The files live in a directory beside the database
//! (`<database>.snapshots/`): the current snapshot (named, with its meta,
//! in the table `raft_snapshot_file`), and while they are written,
//! `building-*` and `receiving-*` files. A file that no row names (left by
//! a crash) is deleted at open.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// The longest line a snapshot may have (one row): a peer's snapshot is
/// read a line at a time, and a line is held in memory.
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// What can go wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing its file.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// Reading or writing the database.
    #[error("snapshot database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A line that is not what the format says.
    #[error("snapshot line {line}: {reason}")]
    Format {
        /// Its number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A table's header line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableHeader {
    table: String,
    columns: Vec<String>,
}

/// The directory of a database's snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// Held while the current snapshot's file is looked up and opened, and
    /// while a replaced one is deleted: a snapshot sent while a newer one
    /// replaces it is opened before its file goes (an open file stays
    /// readable).
    files: Arc<Mutex<()>>,
}

impl SnapshotDir {
    /// The directory beside database `db` (`<db>.snapshots`), created if
    /// missing.
    pub fn beside(db: &Path) -> std::io::Result<Self> {
        let mut name = db.as_os_str().to_owned();
        name.push(".snapshots");
        let dir = PathBuf::from(name);
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotDir {
            dir,
            files: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // It guards no data: a panic while held leaves nothing half done.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the file that `current` names (it looks the current snapshot
    /// up), with no replaced file deleted meanwhile. Blocking.
    pub fn open_current<T>(
        &self,
        current: impl FnOnce() -> Result<Option<(T, String)>, crate::StoreError>,
    ) -> Result<Option<(T, std::fs::File)>, crate::StoreError> {
        let _files = self.lock();
        let Some((meta, name)) = current()? else {
            return Ok(None);
        };
        let file = std::fs::File::open(self.path(&name))
            .map_err(|e| crate::StoreError::Storage(Box::new(e)))?;
        Ok(Some((meta, file)))
    }

    /// Deletes file `name`, once no lookup of the current snapshot is under
    /// way. Blocking.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let _files = self.lock();
        match std::fs::remove_file(self.path(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Makes the directory's entries durable: a file created or renamed in
    /// it survives a power cut once this returns (its data is synced on
    /// its own). Called before the database names a new snapshot file, so
    /// that it never names one that a power cut took away. Blocking.
    pub fn sync(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The path of file `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh file name for a snapshot that is `kind` (`building`,
    /// `receiving`, or the index it ends at once it is kept).
    pub fn fresh(&self, kind: &str) -> String {
        format!("{kind}-{}.snap", uuid::Uuid::new_v4().simple())
    }

    /// Deletes every snapshot file but `keep`.
    pub fn clean(&self, keep: Option<&str>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if keep.is_some_and(|k| name == k) {
                continue;
            }
            if name.to_string_lossy().ends_with(".snap") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Writes file `path` with `write`, and makes it durable.
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Writes `tables` of `conn` to `out` (read in the caller's transaction).
pub fn dump(
    conn: &Connection,
    tables: &[String],
    out: &mut dyn Write,
) -> Result<(), SnapshotError> {
    for table in tables {
        let columns = columns(conn, table)?;
        let header = TableHeader {
            table: table.clone(),
            columns,
        };
        serde_json::to_writer(&mut *out, &header).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
        let width = header.columns.len();
        let mut rows = stmt.query([])?;
        let mut values = Vec::with_capacity(width);
        while let Some(row) = rows.next()? {
            values.clear();
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(n) => n.into(),
                    ValueRef::Real(x) => x.into(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                    ValueRef::Blob(_) => {
                        return Err(SnapshotError::Format {
                            line: 0,
                            reason: format!("table {table} holds a blob: blobs are not replicated"),
                        })
                    }
                });
            }
            serde_json::to_writer(&mut *out, &values).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// The columns of `table`.
pub fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    // `table` is one of the store's own (from sqlite_master, or checked
    // against them), never a peer's text.
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// Replaces `tables` in `tx` with the rows of the snapshot read from
/// `input`, a line at a time. The snapshot may come from a peer: every
/// table and column it names must be one of `tables` and their own.
pub fn restore(
    tx: &Connection,
    tables: &[String],
    input: impl BufRead,
) -> Result<(), SnapshotError> {
    for table in tables {
        tx.execute(&format!("DELETE FROM \"{table}\""), [])?;
    }
    let mut input = input;
    let mut line = String::new();
    let mut number = 0;
    let mut insert: Option<(rusqlite::Statement<'_>, usize)> = None;
    loop {
        line.clear();
        let read = (&mut input).take(MAX_LINE).read_line(&mut line)?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let bad = |reason: String| SnapshotError::Format {
            line: number,
            reason,
        };
        if !line.ends_with('\n') && read as u64 == MAX_LINE {
            return Err(bad(format!("longer than {MAX_LINE} bytes")));
        }
        let text = line.trim_end();
        if text.starts_with('{') {
            let header: TableHeader = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            if !tables.contains(&header.table) {
                return Err(bad(format!("unknown table {:?}", header.table)));
            }
            let own = columns(tx, &header.table)?;
            if header.columns.is_empty() || header.columns.iter().any(|c| !own.contains(c)) {
                return Err(bad(format!("unknown columns in {:?}", header.table)));
            }
            let names: Vec<String> = header.columns.iter().map(|c| format!("\"{c}\"")).collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO \"{}\" ({}) VALUES ({})",
                header.table,
                names.join(", "),
                marks.join(", ")
            );
            insert = Some((tx.prepare(&sql)?, names.len()));
            continue;
        }
        let Some((statement, width)) = insert.as_mut() else {
            return Err(bad("a row before any table".to_owned()));
        };
        let row: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if row.len() != *width {
            return Err(bad(format!("{} values for {width} columns", row.len())));
        }
        let values = row.into_iter().map(|v| match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Text(s),
            other => Value::Text(other.to_string()),
        });
        statement.execute(rusqlite::params_from_iter(values))?;
    }
}

/// A reader that copies what it reads to a writer: a received snapshot is
/// kept (as the current one) while it is restored, in one pass.
pub struct Tee<R, W> {
    /// Where the bytes come from.
    pub from: R,
    /// Where a copy goes.
    pub copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}
