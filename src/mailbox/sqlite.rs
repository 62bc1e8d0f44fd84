//! The durable store behind `--data-dir`: one SQLite database (WAL,
//! `synchronous=FULL`) written by one thread.
//!
//! Writes are group-committed: the writer takes every operation waiting on its
//! channel, applies them in one transaction, and only after the commit answers
//! the sends that wait for their message to be durable. Removals (delivered,
//! acked, expired, purged) are not waited for: lost in a crash, they only mean
//! that a message is delivered again, which at-least-once allows.
//!
//! A batch that fails because the disk is full answers its sends with
//! [`WriteError::DiskFull`]; its removals are kept and retried with every
//! later batch, so that they are committed once there is room again.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated at open; a
//! database from a newer tcphub is refused rather than guessed at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::memory::Stored;

/// The database file inside the data dir.
pub const FILE_NAME: &str = "mailbox.db";
/// The schema changes, in order: step `n` brings a database from version `n`
/// to version `n + 1` (`PRAGMA user_version`).
const MIGRATIONS: [&str; 2] = [
    "CREATE TABLE messages (
        number INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        stored_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        until_ack INTEGER NOT NULL
    );
    CREATE INDEX messages_by_name ON messages (name, number);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // Every read is served from memory, so the index only cost writes: a
    // commit of sends to many names dirtied one index page per name.
    "DROP INDEX messages_by_name;",
];
/// The schema this build writes.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Message numbers of one boot: each start begins a fresh block of ids, so an
/// id is never issued twice, even for messages that left the database.
const IDS_PER_BOOT: u64 = 1 << 32;
/// Free space the data dir must have at start: the WAL index alone takes
/// 32 KiB, and the first commit and the checkpoint at close need some more.
const ROOM_TO_START: usize = 64 * 1024;

/// Why the store could not be opened; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data dir cannot be created or written.
    #[error("data dir {0} is not writable: {1}")]
    NotWritable(PathBuf, String),
    /// The disk holding the data dir is full.
    #[error("data dir {0} has no room left: {1}; free some space or use another --data-dir")]
    DiskFull(PathBuf, String),
    /// The file is not a database this build can read.
    #[error("mailbox database {0} is unreadable (corrupt or not a database): {1}")]
    Unreadable(PathBuf, String),
    /// The database could not be opened for another reason (an I/O error).
    #[error("mailbox database {0} cannot be opened: {1}")]
    Failed(PathBuf, String),
    /// The schema is newer than this build knows.
    #[error(
        "mailbox database {0} has schema version {1}, newer than this tcphub supports ({SCHEMA_VERSION}); \
         run a newer tcphub or use another --data-dir"
    )]
    TooNew(PathBuf, i64),
}

/// Why a write did not become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The disk (or the database's quota) is full.
    #[error("the disk is full")]
    DiskFull,
    /// Any other failure of the database; logged where it happened.
    #[error("the mailbox database failed")]
    Failed,
}

/// A message row to insert.
#[derive(Debug)]
pub struct Row {
    /// The name it is stored for.
    pub name: Arc<str>,
    /// Its number.
    pub number: u64,
    /// Its JSON text.
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Kept until acked.
    pub until_ack: bool,
}

enum Op {
    Insert(Row, oneshot::Sender<Result<(), WriteError>>),
    Delete(Vec<u64>),
    /// Commit what came before, close the database and end the thread.
    Close(oneshot::Sender<()>),
}

/// The handle on the writer thread; the thread ends when the handle is dropped
/// or [`Store::close`] is called.
#[derive(Debug)]
pub struct Store {
    ops: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Insert(row, _) => write!(f, "Insert({})", row.number),
            Op::Delete(numbers) => write!(f, "Delete({numbers:?})"),
            Op::Close(_) => write!(f, "Close"),
        }
    }
}

/// What the database held at open.
#[derive(Debug)]
pub struct Loaded {
    /// Unexpired messages by name, in storing order.
    pub messages: Vec<(Arc<str>, Stored)>,
    /// Messages that had expired while the hub was down (now removed).
    pub expired: u64,
    /// The number the next message id of this boot takes.
    pub next_number: u64,
}

impl Store {
    /// Opens (or creates) the database in `dir`, migrates it, loads what it
    /// holds, and starts the writer thread.
    pub fn open(dir: &Path, now_ms: u64) -> Result<(Store, Loaded), OpenError> {
        let not_writable = |err: &dyn std::fmt::Display| {
            OpenError::NotWritable(dir.to_path_buf(), err.to_string())
        };
        std::fs::create_dir_all(dir).map_err(|err| not_writable(&err))?;
        // SQLite would open a database in a read-only directory, or on a full
        // disk, and fail only at the first write (or with a bare "disk I/O
        // error" while it sets up its WAL index): find out now.
        let probe = dir.join(".tcphub-write-probe");
        let probed = std::fs::write(&probe, vec![0; ROOM_TO_START]);
        let _ = std::fs::remove_file(&probe);
        probed.map_err(|err| match err.kind() {
            std::io::ErrorKind::StorageFull => {
                OpenError::DiskFull(dir.to_path_buf(), err.to_string())
            }
            _ => not_writable(&err),
        })?;
        let path = dir.join(FILE_NAME);
        let failed = |err: rusqlite::Error| open_failure(dir, &path, &err);
        let mut conn = Connection::open(&path).map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failed)?;
        migrate(&mut conn, dir, &path)?;
        let loaded = load(&mut conn, now_ms).map_err(failed)?;
        let (ops, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("mailbox-writer".into())
            .spawn(move || write_batches(conn, &receiver))
            .map_err(|err| not_writable(&err))?;
        Ok((Store { ops }, loaded))
    }

    /// Inserts `row`; resolves once it is committed.
    pub async fn insert(&self, row: Row) -> Result<(), WriteError> {
        let (done, committed) = oneshot::channel();
        self.ops
            .send(Op::Insert(row, done))
            .map_err(|_| WriteError::Failed)?;
        committed.await.map_err(|_| WriteError::Failed)?
    }

    /// Removes messages, in the next batch, without waiting for it.
    pub fn delete(&self, numbers: Vec<u64>) {
        if !numbers.is_empty() {
            // The writer is gone only once closed (after the drain) or if it
            // panicked; the rows then stay, to be delivered again after a restart.
            let _ = self.ops.send(Op::Delete(numbers));
        }
    }

    /// Commits what is queued, closes the database (merging its WAL into the
    /// file) and ends the writer; later writes fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.ops.send(Op::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// What an error at open means: a full disk, a file that is not a database
/// (or a damaged one), or another failure, such as an I/O error.
fn open_failure(dir: &Path, path: &Path, err: &rusqlite::Error) -> OpenError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => OpenError::DiskFull(dir.to_path_buf(), err.to_string()),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OpenError::Unreadable(path.to_path_buf(), err.to_string())
        }
        _ => OpenError::Failed(path.to_path_buf(), err.to_string()),
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], one step at a time, each in a
/// transaction of its own.
fn migrate(conn: &mut Connection, dir: &Path, path: &Path) -> Result<(), OpenError> {
    let failed = |err: rusqlite::Error| open_failure(dir, path, &err);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew(path.to_path_buf(), version));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(step).map_err(failed)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

/// Removes what expired, reads the rest, and starts a new boot's block of ids.
fn load(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<Loaded> {
    let tx = conn.transaction()?;
    let expired = tx.execute(
        "DELETE FROM messages WHERE expires_at <= ?1",
        [now_ms as i64],
    )?;
    let boots: i64 = tx
        .query_row("SELECT value FROM meta WHERE key = 'boots'", [], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0);
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('boots', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [boots + 1],
    )?;
    let mut messages = Vec::new();
    let mut max_number = 0;
    {
        let mut rows = tx.prepare(
            "SELECT number, name, body, stored_at, expires_at, until_ack FROM messages ORDER BY number",
        )?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let number = row.get::<_, i64>(0)? as u64;
            let name: String = row.get(1)?;
            let body: String = row.get(2)?;
            max_number = max_number.max(number);
            // A body this build wrote is always JSON; anything else stays a string.
            let message = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
            messages.push((
                Arc::from(name),
                Stored {
                    number,
                    message: Arc::new(message),
                    size: body.len() as u64,
                    stored_at_ms: row.get::<_, i64>(3)? as u64,
                    expires_at_ms: row.get::<_, i64>(4)? as u64,
                    until_ack: row.get(5)?,
                    durable: true,
                    delivered_to: None,
                },
            ));
        }
    }
    tx.commit()?;
    let boot_start = (boots as u64) * IDS_PER_BOOT + 1;
    Ok(Loaded {
        messages,
        expired: expired as u64,
        next_number: boot_start.max(max_number + 1),
    })
}

/// The writer thread: one transaction per batch of waiting operations, until
/// the store is closed or dropped.
fn write_batches(mut conn: Connection, ops: &mpsc::Receiver<Op>) {
    // Removals of batches that failed, tried again with each later batch.
    let mut unremoved: Vec<u64> = Vec::new();
    let mut full = false;
    let mut closing = None;
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && !matches!(batch.last(), Some(Op::Close(_))) {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(Op::Close(_)) = batch.last()
            && let Some(Op::Close(done)) = batch.pop()
        {
            closing = Some(done);
        }
        if !unremoved.is_empty() {
            batch.push(Op::Delete(std::mem::take(&mut unremoved)));
        }
        if batch.is_empty() {
            break;
        }
        let outcome = apply(&mut conn, &batch).map_err(|err| {
            if err.sqlite_error_code() == Some(ErrorCode::DiskFull) {
                WriteError::DiskFull
            } else {
                error!(%err, "mailbox write failed");
                WriteError::Failed
            }
        });
        match outcome {
            Err(WriteError::DiskFull) if !full => {
                full = true;
                warn!(
                    "mailbox database: the disk is full; sends that store get 503 mailbox_full until there is room"
                );
            }
            Ok(()) if full => {
                full = false;
                info!("mailbox database: there is room on the disk again");
            }
            _ => {}
        }
        for op in batch {
            match op {
                // The sender may have given up (its request was dropped).
                Op::Insert(_, done) => drop(done.send(outcome)),
                Op::Delete(numbers) if outcome.is_err() => unremoved.extend(numbers),
                Op::Delete(_) | Op::Close(_) => {}
            }
        }
        if closing.is_some() {
            break;
        }
    }
    if !unremoved.is_empty() {
        warn!(
            messages = unremoved.len(),
            "mailbox database: removals not committed (the disk is full); those messages are delivered again after a restart"
        );
    }
    if let Err((_, err)) = conn.close() {
        error!(%err, "closing the mailbox database failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

fn apply(conn: &mut Connection, batch: &[Op]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages (number, name, body, stored_at, expires_at, until_ack)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM messages WHERE number = ?1")?;
        for op in batch {
            match op {
                Op::Insert(row, _) => {
                    insert.execute(params![
                        row.number as i64,
                        &*row.name,
                        row.body,
                        row.stored_at_ms as i64,
                        row.expires_at_ms as i64,
                        row.until_ack
                    ])?;
                }
                Op::Delete(numbers) => {
                    for number in numbers {
                        delete.execute([*number as i64])?;
                    }
                }
                Op::Close(_) => {}
            }
        }
    }
    tx.commit()
}
