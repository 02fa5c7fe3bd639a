//! `sqlite-commits DIR [ROWS]`: SQLite's durable commit rate in a database
//! under DIR (WAL, `synchronous = FULL`, as Pygmy's log): one row per
//! commit, then sixteen rows per commit. Prints commits/s and rows/s.

use std::time::Instant;

use rusqlite::{params, Connection};

fn run(conn: &mut Connection, rows: usize, per_commit: usize) -> rusqlite::Result<(f64, f64)> {
    conn.execute("DELETE FROM t", [])?;
    let row = "x".repeat(200);
    let started = Instant::now();
    let mut commits = 0usize;
    for start in (0..rows).step_by(per_commit) {
        let tx = conn.transaction()?;
        for id in start..(start + per_commit).min(rows) {
            tx.prepare_cached("INSERT INTO t (id, v) VALUES (?1, ?2)")?
                .execute(params![id as i64, row])?;
        }
        tx.commit()?;
        commits += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((commits as f64 / seconds, rows as f64 / seconds))
}

fn main() -> Result<(), String> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: sqlite-commits DIR [ROWS]")?;
    let rows: usize = std::env::args()
        .nth(2)
        .map_or(Ok(4000), |n| n.parse())
        .map_err(|e| format!("ROWS: {e}"))?;
    let path = std::path::Path::new(&dir).join("commits.db");
    let mut conn = Connection::open(&path).map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
        .and_then(|()| {
            conn.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        })
        .map_err(|e| e.to_string())?;
    for per_commit in [1, 16] {
        let (commits, rows) = run(&mut conn, rows, per_commit).map_err(|e| e.to_string())?;
        println!("sqlite_{per_commit}_per_commit commits/s {commits:.0} rows/s {rows:.0}");
    }
    Ok(())
}
