//! The agent's SQLite database: the base, runs, the action log and resume checkpoints.
//!
//! All SQL of the project lives in this module. One database file per agent, in WAL mode so the
//! CLI can read while the agent writes; every multi-row write is one transaction, so a burst of
//! 100,000 rows costs one fsync, not 100,000.
//!
//! Storage conventions: sizes (`u64`) and inodes (`u64`) are stored as SQLite integers by
//! bit-casting to `i64` and back, so the full range round-trips; mtimes are `i64` nanoseconds;
//! hashes are 32-byte BLOBs; kinds are the strings of [`Kind::as_str`]; times are RFC 3339 UTC
//! strings, compared as text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::model::{ActionRecord, Base, BaseRow, Entry, Kind};

mod journal;
mod snapshot;
pub use journal::{AgentRow, BatchInfo, ChangeRow, JournalFilter, JournalStats, NewChange};

/// How long a writer waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Every write transaction begins IMMEDIATE: a deferred one that reads first and then writes
/// cannot wait for a writer that committed meanwhile (SQLite answers "database is locked" at
/// once, without the busy handler), which lost the agent's journal updates under contention.
///
/// Retry a busy database every 0.1 ms at first, then every millisecond, for BUSY_TIMEOUT.
fn busy_wait(attempt: i32) -> bool {
    let fast = 200;
    let waited_ms = if attempt < fast {
        attempt as u64 / 10
    } else {
        20 + (attempt - fast) as u64
    };
    if waited_ms >= BUSY_TIMEOUT.as_millis() as u64 {
        return false;
    }
    std::thread::sleep(if attempt < fast {
        Duration::from_micros(100)
    } else {
        Duration::from_millis(1)
    });
    true
}

/// The schema, as numbered migrations: `MIGRATIONS[i]` takes the database from
/// `user_version = i` to `i + 1`. Append new migrations; never edit an applied one.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, the base, runs, the action log, resume checkpoints.
    r#"
    CREATE TABLE jobs (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );

    CREATE TABLE entries (
        job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        path    TEXT NOT NULL,
        l_kind  TEXT CHECK (l_kind IN ('file', 'dir', 'symlink')),
        l_size  INTEGER,
        l_mtime INTEGER,
        l_inode INTEGER,
        l_hash  BLOB CHECK (l_hash IS NULL OR length(l_hash) = 32),
        r_kind  TEXT CHECK (r_kind IN ('file', 'dir', 'symlink')),
        r_size  INTEGER,
        r_mtime INTEGER,
        r_inode INTEGER,
        r_hash  BLOB CHECK (r_hash IS NULL OR length(r_hash) = 32),
        PRIMARY KEY (job_id, path)
    ) WITHOUT ROWID;

    CREATE TABLE runs (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id    INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        started   TEXT NOT NULL,
        finished  TEXT,
        dry_run   INTEGER NOT NULL DEFAULT 0,
        result    TEXT,
        exit_code INTEGER,
        summary   TEXT,
        bytes     INTEGER NOT NULL DEFAULT 0,
        errors    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_job ON runs(job_id, id);

    CREATE TABLE actions (
        id      INTEGER PRIMARY KEY,
        time    TEXT NOT NULL,
        job     TEXT NOT NULL,
        run     INTEGER NOT NULL,
        action  TEXT NOT NULL,
        path    TEXT NOT NULL,
        "to"    TEXT,
        bytes   INTEGER NOT NULL DEFAULT 0,
        ms      INTEGER,
        dry_run INTEGER NOT NULL DEFAULT 0,
        message TEXT
    );
    CREATE INDEX actions_job_time ON actions(job, time);
    CREATE INDEX actions_run ON actions(run);
    CREATE INDEX actions_time ON actions(time);

    CREATE TABLE transfers (
        job_id    INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        path      TEXT NOT NULL,
        direction TEXT NOT NULL,
        src_size  INTEGER NOT NULL,
        src_mtime INTEGER NOT NULL,
        src_inode INTEGER,
        "offset"  INTEGER NOT NULL,
        updated   TEXT NOT NULL,
        PRIMARY KEY (job_id, path, direction)
    ) WITHOUT ROWID;
    "#,
    // 2: the agent's change journal, its batches, and what the agent is doing.
    r#"
    CREATE TABLE changes (
        id     INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at     INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        path   TEXT NOT NULL,
        path2  TEXT,
        is_dir INTEGER NOT NULL DEFAULT 0,
        state  TEXT NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'applied', 'dropped', 'reconciled')),
        batch  INTEGER
    );
    CREATE INDEX changes_job_state ON changes(job_id, state, id);

    CREATE TABLE batches (
        id      INTEGER PRIMARY KEY,
        job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at      TEXT NOT NULL,
        kind    TEXT NOT NULL CHECK (kind IN ('batch', 'reconcile', 'replay')),
        run     INTEGER,
        changes INTEGER NOT NULL,
        paths   INTEGER NOT NULL,
        actions INTEGER NOT NULL,
        result  TEXT NOT NULL
    );
    CREATE INDEX batches_job ON batches(job_id, id);

    CREATE TABLE agent (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        pid       INTEGER NOT NULL,
        started   TEXT NOT NULL,
        heartbeat TEXT NOT NULL,
        status    TEXT NOT NULL,
        transfers TEXT NOT NULL DEFAULT '[]'
    );
    "#,
    // 3: checkpoints written without a sync: the part made durable, and the boot (kernel boot
    // id) in which the rest was written (NULL: all of `offset` is durable).
    r#"
    ALTER TABLE transfers ADD COLUMN durable INTEGER;
    ALTER TABLE transfers ADD COLUMN boot TEXT;
    "#,
    // 4: the same constraints without `IN (...)`: SQLite checks `x IN (list)` by building a
    // temporary b-tree of the list on every row written, which made writing a base row about
    // twice as costly (100,000 rows: 1.4-1.7 s against 0.4-0.7 s). Tables rebuilt, rows kept.
    r#"
    CREATE TABLE entries_v4 (
        job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        path    TEXT NOT NULL,
        l_kind  TEXT CHECK (l_kind = 'file' OR l_kind = 'dir' OR l_kind = 'symlink'),
        l_size  INTEGER,
        l_mtime INTEGER,
        l_inode INTEGER,
        l_hash  BLOB CHECK (l_hash IS NULL OR length(l_hash) = 32),
        r_kind  TEXT CHECK (r_kind = 'file' OR r_kind = 'dir' OR r_kind = 'symlink'),
        r_size  INTEGER,
        r_mtime INTEGER,
        r_inode INTEGER,
        r_hash  BLOB CHECK (r_hash IS NULL OR length(r_hash) = 32),
        PRIMARY KEY (job_id, path)
    ) WITHOUT ROWID;
    INSERT INTO entries_v4 (job_id, path, l_kind, l_size, l_mtime, l_inode, l_hash,
                            r_kind, r_size, r_mtime, r_inode, r_hash)
        SELECT job_id, path, l_kind, l_size, l_mtime, l_inode, l_hash,
               r_kind, r_size, r_mtime, r_inode, r_hash FROM entries;
    DROP TABLE entries;
    ALTER TABLE entries_v4 RENAME TO entries;

    CREATE TABLE changes_v4 (
        id     INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at     INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        path   TEXT NOT NULL,
        path2  TEXT,
        is_dir INTEGER NOT NULL DEFAULT 0,
        state  TEXT NOT NULL DEFAULT 'pending'
               CHECK (state = 'pending' OR state = 'applied' OR state = 'dropped'
                      OR state = 'reconciled'),
        batch  INTEGER
    );
    INSERT INTO changes_v4 (id, job_id, at, kind, path, path2, is_dir, state, batch)
        SELECT id, job_id, at, kind, path, path2, is_dir, state, batch FROM changes;
    DROP TABLE changes;
    ALTER TABLE changes_v4 RENAME TO changes;
    CREATE INDEX changes_job_state ON changes(job_id, state, id);
    "#,
    // 5: a job's whole base as one blob (see `snapshot`), deleted by the same transaction as
    // any write to the job's rows, so that one that exists always equals them.
    r#"
    CREATE TABLE base_snapshots (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        data   BLOB NOT NULL
    );
    CREATE TRIGGER entries_insert_drops_snapshot AFTER INSERT ON entries BEGIN
        DELETE FROM base_snapshots WHERE job_id = NEW.job_id;
    END;
    CREATE TRIGGER entries_update_drops_snapshot AFTER UPDATE ON entries BEGIN
        DELETE FROM base_snapshots WHERE job_id = OLD.job_id OR job_id = NEW.job_id;
    END;
    CREATE TRIGGER entries_delete_drops_snapshot AFTER DELETE ON entries BEGIN
        DELETE FROM base_snapshots WHERE job_id = OLD.job_id;
    END;
    "#,
];

/// Bases of fewer rows are read from the rows: they take milliseconds either way.
const SNAPSHOT_MIN_ROWS: usize = 5_000;

/// The schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub type Result<T> = std::result::Result<T, StateError>;

/// A failure of the state database, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {}: {context}: {source}", path.display())]
    Open {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state database {} has schema version {found}, newer than this omnisync understands \
         ({supported}); upgrade omnisync",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("state database: {context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database: {context}: {detail}")]
    Corrupt { context: String, detail: String },
    #[error("state database: run {0} does not exist")]
    UnknownRun(i64),
}

/// Attach a context sentence to a rusqlite error.
trait Context<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T>;
    /// `ctx` with the context made only on an error: for statements run once per row.
    fn ctx_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn ctx(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| StateError::Sql {
            context: context.into(),
            source,
        })
    }

    fn ctx_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StateError::Sql {
            context: context(),
            source,
        })
    }
}

/// One change to the base: `row: None` deletes the path's row. A row with neither side is
/// meaningless and is treated as a deletion too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUpdate {
    pub path: String,
    pub row: Option<BaseRow>,
}

/// A resume checkpoint: `offset` bytes of the source (as identified by size, mtime and inode)
/// have been written to the destination's partial file, `durable` of them (at most `offset`)
/// made durable by a sync.
///
/// Bytes past `durable` were written without a sync, which only a destination whose writes
/// outlive the writing process allows ([`crate::remote::WriteHandle::outlives_process`]: a
/// local disk's page cache). They are trusted while the machine has not restarted: the store
/// records the boot they were written in ([`this_boot`]), and a checkpoint read back in
/// another boot claims only `durable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub src_size: u64,
    pub src_mtime: i64,
    pub src_inode: Option<u64>,
    pub offset: u64,
    pub durable: u64,
}

/// This boot of the machine (the kernel's random boot id), read once; `None` where there is
/// none to read. Data written before a crash of the process, but not synced, is still in the
/// page cache while this stays the same.
pub fn this_boot() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// A checkpoint row as read: what it claims in `boot` (the boot reading it).
fn checkpoint_from_row(
    r: &rusqlite::Row<'_>,
    at: usize,
    boot: Option<&str>,
) -> rusqlite::Result<Checkpoint> {
    let offset = r.get::<_, i64>(at + 3)? as u64;
    let durable = r
        .get::<_, Option<i64>>(at + 4)?
        .map_or(offset, |d| d as u64)
        .min(offset);
    let written_in = r.get::<_, Option<String>>(at + 5)?;
    // Unsynced bytes from another boot (or when this one is unknown) may never have reached
    // the disk.
    let offset = match written_in {
        Some(w) if Some(w.as_str()) != boot => durable,
        _ => offset,
    };
    Ok(Checkpoint {
        src_size: r.get::<_, i64>(at)? as u64,
        src_mtime: r.get(at + 1)?,
        src_inode: r.get::<_, Option<i64>>(at + 2)?.map(|i| i as u64),
        offset,
        durable,
    })
}

/// Filters of [`Store::query_actions`]. `limit = 0` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub job: Option<String>,
    pub action: Option<String>,
    pub search: Option<String>,
    /// RFC 3339 UTC; records with `time >= since` (compared as text).
    pub since: Option<String>,
    pub run: Option<i64>,
    pub limit: usize,
}

/// One row of `runs`, with the job's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: i64,
    pub job: String,
    pub started: String,
    pub finished: Option<String>,
    pub dry_run: bool,
    pub result: Option<String>,
    pub exit_code: Option<i32>,
    pub bytes: u64,
    pub errors: u64,
}

/// The state database of one agent.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const ENTRY_COLUMNS: &str = "path, l_kind, l_size, l_mtime, l_inode, l_hash, \
                             r_kind, r_size, r_mtime, r_inode, r_hash";

const UPSERT_ENTRY: &str = "INSERT OR REPLACE INTO entries \
    (job_id, path, l_kind, l_size, l_mtime, l_inode, l_hash, \
     r_kind, r_size, r_mtime, r_inode, r_hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const DELETE_ENTRY: &str = "DELETE FROM entries WHERE job_id = ?1 AND path = ?2";

const INSERT_ACTION: &str = "INSERT INTO actions \
    (time, job, run, action, path, \"to\", bytes, ms, dry_run, message) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const ACTION_COLUMNS: &str = "time, job, run, action, path, \"to\", bytes, ms, dry_run, message";

/// The columns of one side of an entry row, ready to bind.
struct SideCols {
    kind: Option<&'static str>,
    size: Option<i64>,
    mtime: Option<i64>,
    inode: Option<i64>,
    hash: Option<[u8; 32]>,
}

impl SideCols {
    fn of(e: Option<&Entry>) -> SideCols {
        match e {
            None => SideCols {
                kind: None,
                size: None,
                mtime: None,
                inode: None,
                hash: None,
            },
            Some(e) => SideCols {
                kind: Some(e.kind.as_str()),
                size: Some(e.size as i64),
                mtime: Some(e.mtime),
                inode: e.inode.map(|i| i as i64),
                hash: e.hash.as_deref().copied(),
            },
        }
    }
}

fn row_is_empty(row: &BaseRow) -> bool {
    row.local.is_none() && row.remote.is_none()
}

/// Insert or replace one base row with a (cached) prepared statement.
fn upsert_entry(conn: &Connection, job_id: i64, path: &str, row: &BaseRow) -> Result<()> {
    let l = SideCols::of(row.local.as_ref());
    let r = SideCols::of(row.remote.as_ref());
    let mut stmt = conn
        .prepare_cached(UPSERT_ENTRY)
        .ctx("preparing a base update")?;
    stmt.execute(params![
        job_id,
        path,
        l.kind,
        l.size,
        l.mtime,
        l.inode,
        l.hash.as_ref().map(|h| &h[..]),
        r.kind,
        r.size,
        r.mtime,
        r.inode,
        r.hash.as_ref().map(|h| &h[..]),
    ])
    .ctx_with(|| format!("saving the base row of {path:?}"))?;
    Ok(())
}

/// Read one side of an entry row starting at column `at` (kind, size, mtime, inode, hash).
fn read_side(row: &Row<'_>, at: usize, path: &str) -> Result<Option<Entry>> {
    let get = |e: rusqlite::Error| StateError::Sql {
        context: format!("reading the base row of {path:?}"),
        source: e,
    };
    let corrupt = |detail: String| StateError::Corrupt {
        context: format!("reading the base row of {path:?}"),
        detail,
    };
    // Borrowed reads (no String/Vec per row): a 100,000-row base loads in tens of ms.
    let kind = match row.get_ref(at).map_err(get)? {
        rusqlite::types::ValueRef::Null => return Ok(None),
        rusqlite::types::ValueRef::Text(t) => {
            let t = std::str::from_utf8(t).unwrap_or("?");
            Kind::parse(t).ok_or_else(|| corrupt(format!("unknown kind {t:?}")))?
        }
        other => return Err(corrupt(format!("kind of type {:?}", other.data_type()))),
    };
    let size: Option<i64> = row.get(at + 1).map_err(get)?;
    let mtime: Option<i64> = row.get(at + 2).map_err(get)?;
    let inode: Option<i64> = row.get(at + 3).map_err(get)?;
    let hash = match row.get_ref(at + 4).map_err(get)? {
        rusqlite::types::ValueRef::Null => None,
        rusqlite::types::ValueRef::Blob(h) => Some(
            <[u8; 32]>::try_from(h)
                .map_err(|_| corrupt(format!("hash of {} bytes, expected 32", h.len())))?,
        ),
        other => return Err(corrupt(format!("hash of type {:?}", other.data_type()))),
    };
    Ok(Some(Entry {
        kind,
        size: size.unwrap_or(0) as u64,
        mtime: mtime.unwrap_or(0),
        inode: inode.map(|i| i as u64),
        hash: hash.map(Box::new),
    }))
}

fn read_action(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    Ok(ActionRecord {
        time: row.get(0)?,
        job: row.get(1)?,
        run: row.get(2)?,
        action: row.get(3)?,
        path: row.get(4)?,
        to: row.get(5)?,
        bytes: row.get::<_, i64>(6)? as u64,
        ms: row.get::<_, Option<i64>>(7)?.map(|m| m as u64),
        dry_run: row.get::<_, i64>(8)? != 0,
        message: row.get(9)?,
    })
}

impl Store {
    /// Open (creating the parent directories and the file if needed) and migrate the database.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|source| StateError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }
        let open_err = |context: &'static str| {
            move |source| StateError::Open {
                path: path.to_path_buf(),
                context,
                source,
            }
        };
        let conn = Connection::open(path).map_err(open_err("cannot open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("cannot set the busy timeout"))?;
        // Returns the resulting mode; a filesystem without WAL support keeps its old mode,
        // which is still correct, only less concurrent.
        // Switching to WAL needs a moment of exclusive access, and SQLite reports a busy
        // database here without calling the busy handler: two `run`s (or `run --all
        // --parallel`) opening a fresh database at once would fail. Retry within the timeout.
        let started = std::time::Instant::now();
        loop {
            match conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_err("cannot switch to WAL mode")(e)),
            }
        }
        let mut store = Store::configure(conn).map_err(|e| match e {
            StateError::Sql { source, .. } => StateError::Open {
                path: path.to_path_buf(),
                context: "cannot configure the connection",
                source,
            },
            other => other,
        })?;
        store.migrate(path)?;
        Ok(store)
    }

    /// A private in-memory database, fully migrated (tests).
    pub fn open_in_memory() -> Result<Store> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StateError::Open {
            path: path.to_path_buf(),
            context: "cannot open",
            source,
        })?;
        let mut store = Store::configure(conn)?;
        store.migrate(path)?;
        Ok(store)
    }

    fn configure(conn: Connection) -> Result<Store> {
        // SQLite's own busy handler backs off to 100 ms sleeps: with the agent's journal
        // writer and a job's batch writing at once, that put 200 ms stalls on the live path.
        // Short sleeps instead, still giving up after BUSY_TIMEOUT.
        conn.busy_handler(Some(busy_wait))
            .ctx("setting the busy handler")?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .ctx("setting synchronous = NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx("enabling foreign keys")?;
        // No checkpoint when a run closes the database: that checkpoint, the WAL file's
        // removal and its re-creation by the next run cost four fsyncs (WAL, folder, WAL,
        // database) — a tenth of a 100,000-file no-op run. The WAL stays and is checkpointed
        // as it grows (SQLite's auto-checkpoint at 1,000 pages). Losing its last commits in a
        // power cut is what synchronous = NORMAL already allows: the base reverts to an
        // earlier consistent state, as after a run killed mid-way, which the planner handles.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .ctx("disabling the checkpoint on close")?;
        conn.set_prepared_statement_cache_capacity(32);
        // Unicode-aware lower case for `log --search` (SQLite's own lower() folds ASCII only).
        conn.create_scalar_function(
            "omni_lower",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                Ok(ctx
                    .get::<Option<String>>(0)?
                    .map(|s| s.to_lowercase())
                    .unwrap_or_default())
            },
        )
        .ctx("registering omni_lower")?;
        Ok(Store { conn })
    }

    /// Apply the migrations the database has not seen yet, each in its own transaction. The
    /// version is re-read under the write lock, so two processes opening a fresh database at
    /// once do not both migrate it.
    fn migrate(&mut self, path: &Path) -> Result<()> {
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| StateError::Open {
                    path: path.to_path_buf(),
                    context: "cannot lock the database for migration",
                    source,
                })?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|source| StateError::Open {
                    path: path.to_path_buf(),
                    context: "cannot read the schema version",
                    source,
                })?;
            if version > SCHEMA_VERSION {
                return Err(StateError::TooNew {
                    path: path.to_path_buf(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if version == SCHEMA_VERSION {
                return Ok(());
            }
            let sql = MIGRATIONS[version as usize];
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", version + 1))
                .and_then(|()| tx.commit())
                .map_err(|source| StateError::Open {
                    path: path.to_path_buf(),
                    context: "schema migration failed",
                    source,
                })?;
        }
    }

    /// The id of the job called `name`, created on first use.
    pub fn job_id(&mut self, name: &str) -> Result<i64> {
        self.conn
            .prepare_cached("INSERT INTO jobs(name) VALUES (?1) ON CONFLICT(name) DO NOTHING")
            .and_then(|mut s| s.execute([name]))
            .ctx(format!("registering job {name:?}"))?;
        self.conn
            .prepare_cached("SELECT id FROM jobs WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)))
            .ctx(format!("looking up job {name:?}"))
    }

    /// The whole base of a job.
    ///
    /// From the job's snapshot when it has one; otherwise from the rows, and a base of
    /// [`SNAPSHOT_MIN_ROWS`] or more leaves a snapshot for the next run (unless another
    /// connection wrote meanwhile: then the next run reads the rows again).
    pub fn load_base(&self, job_id: i64) -> Result<Base> {
        // Decoded where SQLite holds it, without a copy of the blob.
        let snap: Option<std::result::Result<Base, String>> = self
            .conn
            .prepare_cached("SELECT data FROM base_snapshots WHERE job_id = ?1")
            .and_then(|mut s| {
                s.query_row([job_id], |r| {
                    Ok(match r.get_ref(0)?.as_blob() {
                        Ok(blob) => snapshot::decode(blob),
                        Err(_) => Err("not a blob".to_string()),
                    })
                })
                .optional()
            })
            .ctx(format!("reading the base snapshot of job {job_id}"))?;
        match snap {
            Some(Ok(base)) => return Ok(base),
            Some(Err(e)) => tracing::warn!(
                job_id,
                "the base snapshot cannot be read ({e}); reading the base rows instead"
            ),
            None => {}
        }
        // The rows and the snapshot written from them in one transaction: if another
        // connection wrote rows after this one read them, the write is refused (no wait in
        // WAL mode) and no snapshot is left.
        let tx = self
            .conn
            .unchecked_transaction()
            .ctx("starting to read the base")?;
        let base = self.load_base_rows(job_id)?;
        if base.len() >= SNAPSHOT_MIN_ROWS {
            let blob = snapshot::encode(&base);
            let stored = tx
                .execute(
                    "INSERT OR REPLACE INTO base_snapshots (job_id, data) VALUES (?1, ?2)",
                    params![job_id, blob],
                )
                .and_then(|_| tx.commit());
            if let Err(e) = stored {
                tracing::debug!(job_id, "no base snapshot left: {e}");
            }
        }
        Ok(base)
    }

    fn load_base_rows(&self, job_id: i64) -> Result<Base> {
        let ctx = || format!("loading the base of job {job_id}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE job_id = ?1 ORDER BY path"
            ))
            .ctx(ctx())?;
        let mut rows = stmt.query([job_id]).ctx(ctx())?;
        let mut rows_out = Vec::new();
        // The error context is formatted only on an error, not twice per row.
        let err = |source| StateError::Sql {
            context: ctx(),
            source,
        };
        while let Some(row) = rows.next().map_err(err)? {
            let path: String = row.get(0).map_err(err)?;
            let local = read_side(row, 1, &path)?;
            let remote = read_side(row, 6, &path)?;
            rows_out.push((path, BaseRow { local, remote }));
        }
        // Rows come in primary-key order: collecting sorted pairs builds the map in bulk.
        Ok(rows_out.into_iter().collect())
    }

    /// Does the job have any base row?
    pub fn has_base(&self, job_id: i64) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM entries WHERE job_id = ?1)")
            .and_then(|mut s| s.query_row([job_id], |r| r.get::<_, bool>(0)))
            .ctx(format!("checking the base of job {job_id}"))
    }

    /// Rows of the base where either side is a file (the denominator of `max_delete = "N%"`).
    pub fn base_file_count(&self, job_id: i64) -> Result<u64> {
        self.conn
            .prepare_cached(
                "SELECT count(*) FROM entries \
                 WHERE job_id = ?1 AND (l_kind = 'file' OR r_kind = 'file')",
            )
            .and_then(|mut s| s.query_row([job_id], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .ctx(format!("counting the files in the base of job {job_id}"))
    }

    /// Apply many base changes in one transaction.
    pub fn apply_base_updates(&mut self, job_id: i64, updates: &[BaseUpdate]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a base update transaction")?;
        for u in updates {
            match &u.row {
                Some(row) if !row_is_empty(row) => upsert_entry(&tx, job_id, &u.path, row)?,
                _ => {
                    tx.prepare_cached(DELETE_ENTRY)
                        .and_then(|mut s| s.execute(params![job_id, u.path]))
                        .ctx_with(|| format!("deleting the base row of {:?}", u.path))?;
                }
            }
        }
        tx.commit().ctx("committing base updates")
    }

    /// Replace the whole base of a job, in one transaction.
    pub fn replace_base(&mut self, job_id: i64, base: &Base) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a base replacement transaction")?;
        tx.execute("DELETE FROM entries WHERE job_id = ?1", [job_id])
            .ctx(format!("clearing the base of job {job_id}"))?;
        for (path, row) in base {
            if !row_is_empty(row) {
                upsert_entry(&tx, job_id, path, row)?;
            }
        }
        tx.commit().ctx("committing the new base")
    }

    /// Record the start of a run; returns the run's id.
    pub fn start_run(&mut self, job_id: i64, started: &str, dry_run: bool) -> Result<i64> {
        self.conn
            .prepare_cached("INSERT INTO runs(job_id, started, dry_run) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.insert(params![job_id, started, dry_run]))
            .ctx(format!("recording the start of a run of job {job_id}"))
    }

    /// Record the end of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_run(
        &mut self,
        run_id: i64,
        finished: &str,
        result: &str,
        exit_code: i32,
        summary_json: &str,
        bytes: u64,
        errors: u64,
    ) -> Result<()> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE runs SET finished = ?2, result = ?3, exit_code = ?4, summary = ?5, \
                 bytes = ?6, errors = ?7 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    run_id,
                    finished,
                    result,
                    exit_code,
                    summary_json,
                    bytes as i64,
                    errors as i64
                ])
            })
            .ctx(format!("recording the end of run {run_id}"))?;
        if n == 0 {
            return Err(StateError::UnknownRun(run_id));
        }
        Ok(())
    }

    /// Append records to the action log, in one transaction.
    pub fn insert_actions(&mut self, recs: &[ActionRecord]) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting an action log transaction")?;
        {
            let mut stmt = tx
                .prepare_cached(INSERT_ACTION)
                .ctx("preparing an action log insert")?;
            for r in recs {
                stmt.execute(params![
                    r.time,
                    r.job,
                    r.run,
                    r.action,
                    r.path,
                    r.to,
                    r.bytes as i64,
                    r.ms.map(|m| m as i64),
                    r.dry_run,
                    r.message,
                ])
                .ctx_with(|| format!("logging {} {:?}", r.action, r.path))?;
            }
        }
        tx.commit().ctx("committing action log records")
    }

    /// Records matching every given filter: `job`, `action` and `run` exact, `search` a
    /// case-insensitive substring of `path`, `to` or `message` (`%` and `_` are literal; case
    /// folding is Unicode, through the `omni_lower` function registered on each connection), `since` = `time >= since`. Returns the last
    /// `limit` matching records (by id; all when `limit` is 0) in ascending time/id order.
    pub fn query_actions(&self, f: &LogFilter) -> Result<Vec<ActionRecord>> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        // Binds a value and returns its placeholder, `?N`.
        let mut bind = |v: Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(job) = &f.job {
            conds.push(format!("job = {}", bind(Value::Text(job.clone()))));
        }
        if let Some(action) = &f.action {
            conds.push(format!("action = {}", bind(Value::Text(action.clone()))));
        }
        if let Some(search) = &f.search {
            let p = bind(Value::Text(search.to_lowercase()));
            conds.push(format!(
                "(instr(omni_lower(path), {p}) > 0 \
                  OR instr(omni_lower(\"to\"), {p}) > 0 \
                  OR instr(omni_lower(message), {p}) > 0)"
            ));
        }
        if let Some(since) = &f.since {
            conds.push(format!("time >= {}", bind(Value::Text(since.clone()))));
        }
        if let Some(run) = f.run {
            conds.push(format!("run = {}", bind(Value::Integer(run))));
        }
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit = if f.limit == 0 {
            -1
        } else {
            i64::try_from(f.limit).unwrap_or(i64::MAX)
        };
        let limit = bind(Value::Integer(limit));
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM \
             (SELECT id, {ACTION_COLUMNS} FROM actions{where_sql} ORDER BY id DESC LIMIT {limit}) \
             ORDER BY time, id"
        );
        let ctx = "querying the action log";
        let mut stmt = self.conn.prepare(&sql).ctx(ctx)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), read_action)
            .ctx(ctx)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(ctx)
    }

    /// Delete action records with `time < older_than`; returns how many.
    pub fn prune_actions(&mut self, older_than: &str) -> Result<usize> {
        self.conn
            .prepare_cached("DELETE FROM actions WHERE time < ?1")
            .and_then(|mut s| s.execute([older_than]))
            .ctx(format!(
                "pruning action log records older than {older_than}"
            ))
    }

    /// The most recent run of `job` that was not a dry run, finished or not.
    pub fn last_run(&self, job: &str) -> Result<Option<RunInfo>> {
        self.conn
            .prepare_cached(
                "SELECT r.id, j.name, r.started, r.finished, r.dry_run, r.result, r.exit_code, \
                        r.bytes, r.errors \
                 FROM runs r JOIN jobs j ON j.id = r.job_id \
                 WHERE j.name = ?1 AND r.dry_run = 0 \
                 ORDER BY r.id DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([job], |r| {
                    Ok(RunInfo {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        started: r.get(2)?,
                        finished: r.get(3)?,
                        dry_run: r.get::<_, i64>(4)? != 0,
                        result: r.get(5)?,
                        exit_code: r.get(6)?,
                        bytes: r.get::<_, i64>(7)? as u64,
                        errors: r.get::<_, i64>(8)? as u64,
                    })
                })
                .optional()
            })
            .ctx(format!("looking up the last run of job {job:?}"))
    }

    /// The resume checkpoint of one transfer, if any, as it stands in this boot.
    pub fn get_checkpoint(
        &self,
        job_id: i64,
        path: &str,
        direction: &str,
    ) -> Result<Option<Checkpoint>> {
        self.get_checkpoint_in(job_id, path, direction, this_boot())
    }

    /// [`Self::get_checkpoint`] as read in `boot`.
    pub fn get_checkpoint_in(
        &self,
        job_id: i64,
        path: &str,
        direction: &str,
        boot: Option<&str>,
    ) -> Result<Option<Checkpoint>> {
        self.conn
            .prepare_cached(
                "SELECT src_size, src_mtime, src_inode, \"offset\", durable, boot FROM transfers \
                 WHERE job_id = ?1 AND path = ?2 AND direction = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![job_id, path, direction], |r| {
                    checkpoint_from_row(r, 0, boot)
                })
                .optional()
            })
            .ctx(format!("reading the {direction} checkpoint of {path:?}"))
    }

    /// Save (insert or overwrite) the resume checkpoint of one transfer.
    pub fn put_checkpoint(
        &mut self,
        job_id: i64,
        path: &str,
        direction: &str,
        cp: &Checkpoint,
    ) -> Result<()> {
        // Unsynced bytes are claimed only with the boot they were written in.
        let durable = cp.durable.min(cp.offset);
        let (offset, boot) = match this_boot() {
            Some(b) if durable < cp.offset => (cp.offset, Some(b)),
            _ => (durable, None),
        };
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO transfers \
                 (job_id, path, direction, src_size, src_mtime, src_inode, \"offset\", durable, \
                  boot, updated) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                  strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
            )
            .and_then(|mut s| {
                s.execute(params![
                    job_id,
                    path,
                    direction,
                    cp.src_size as i64,
                    cp.src_mtime,
                    cp.src_inode.map(|i| i as i64),
                    offset as i64,
                    durable as i64,
                    boot,
                ])
            })
            .ctx(format!("saving the {direction} checkpoint of {path:?}"))?;
        Ok(())
    }

    /// Every resume checkpoint of a job, as it stands in this boot: (path, direction,
    /// checkpoint).
    pub fn load_checkpoints(&self, job_id: i64) -> Result<Vec<(String, String, Checkpoint)>> {
        self.conn
            .prepare_cached(
                "SELECT path, direction, src_size, src_mtime, src_inode, \"offset\", durable, boot \
                 FROM transfers WHERE job_id = ?1 ORDER BY path, direction",
            )
            .and_then(|mut s| {
                let boot = this_boot();
                s.query_map(params![job_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        checkpoint_from_row(r, 2, boot)?,
                    ))
                })?
                .collect()
            })
            .ctx(format!("reading the checkpoints of job {job_id}"))
    }

    /// Forget the resume checkpoint of one transfer (no error if there is none).
    pub fn clear_checkpoint(&mut self, job_id: i64, path: &str, direction: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM transfers WHERE job_id = ?1 AND path = ?2 AND direction = ?3",
            )
            .and_then(|mut s| s.execute(params![job_id, path, direction]))
            .ctx(format!("clearing the {direction} checkpoint of {path:?}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `run --all --parallel` opening a fresh database from several threads at once
    /// failed with "cannot switch to WAL mode: database is locked".
    #[test]
    fn a_fresh_database_opened_by_many_at_once() {
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state/omnisync.db");
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let path = &path;
                        s.spawn(move || {
                            let mut st = Store::open(path).expect("open");
                            st.job_id(&format!("job{i}")).expect("job id");
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
            });
        }
    }

    fn file(size: u64, mtime: i64, inode: Option<u64>, hash: Option<[u8; 32]>) -> Entry {
        Entry {
            kind: Kind::File,
            size,
            mtime,
            inode,
            hash: hash.map(Box::new),
        }
    }

    fn rec(time: &str, job: &str, run: i64, action: &str, path: &str) -> ActionRecord {
        ActionRecord {
            time: time.to_string(),
            job: job.to_string(),
            run,
            action: action.to_string(),
            path: path.to_string(),
            to: None,
            bytes: 10,
            ms: Some(3),
            dry_run: false,
            message: None,
        }
    }

    fn paths(recs: &[ActionRecord]) -> Vec<&str> {
        recs.iter().map(|r| r.path.as_str()).collect()
    }

    fn sample_base() -> Base {
        let mut base = Base::new();
        base.insert(
            "a.txt".into(),
            BaseRow {
                local: Some(file(5, 1_700_000_000_123_456_789, Some(42), Some([7; 32]))),
                remote: Some(file(5, 1_700_000_000_000_000_000, None, Some([7; 32]))),
            },
        );
        base.insert(
            "dir".into(),
            BaseRow {
                local: Some(Entry::dir(-5)),
                remote: None,
            },
        );
        base.insert(
            "dir/link".into(),
            BaseRow {
                local: None,
                remote: Some(Entry {
                    kind: Kind::Symlink,
                    size: 0,
                    mtime: 0,
                    inode: None,
                    hash: None,
                }),
            },
        );
        base.insert(
            "big".into(),
            BaseRow {
                // Values past i64::MAX survive the bit-cast.
                local: Some(file(u64::MAX, i64::MIN, Some(u64::MAX - 1), None)),
                remote: Some(file(1 << 40, i64::MAX, Some(3), None)),
            },
        );
        base
    }

    #[test]
    fn migrations_are_idempotent_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state/omnisync.db");
        {
            let mut s = Store::open(&path).unwrap();
            let id = s.job_id("j").unwrap();
            s.replace_base(id, &sample_base()).unwrap();
            let mode: String = s
                .conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = s
                .conn
                .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .unwrap();
            assert_eq!(fk, 1);
            let sync: i64 = s
                .conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(sync, 1, "NORMAL");
        }
        for _ in 0..2 {
            let mut s = Store::open(&path).unwrap();
            let v: i64 = s
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            let id = s.job_id("j").unwrap();
            assert_eq!(s.load_base(id).unwrap(), sample_base());
        }
    }

    /// A database written by a build of schema 3 keeps its base and journal through the
    /// rebuild of migration 4, whose constraints still refuse what they refused.
    #[test]
    fn schema_3_databases_migrate_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("omnisync.db");
        {
            let c = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 3).unwrap();
            c.execute("INSERT INTO jobs (id, name) VALUES (1, 'j')", [])
                .unwrap();
            c.execute(
                "INSERT INTO changes (job_id, at, kind, path, state) VALUES \
                 (1, 5, 'close_write', 'a', 'pending'), (1, 6, 'remove', 'b', 'applied')",
                [],
            )
            .unwrap();
        }
        {
            // Rows written through schema 3's table, by this build's code.
            let c = Connection::open(&path).unwrap();
            let tx = c.unchecked_transaction().unwrap();
            for (p, row) in &sample_base() {
                upsert_entry(&tx, 1, p, row).unwrap();
            }
            tx.commit().unwrap();
        }
        let s = Store::open(&path).unwrap();
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(s.load_base(1).unwrap(), sample_base());
        let changes: Vec<(i64, String, String)> = s
            .conn
            .prepare("SELECT id, path, state FROM changes ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            changes,
            vec![
                (1, "a".to_string(), "pending".to_string()),
                (2, "b".to_string(), "applied".to_string())
            ]
        );
        for bad in [
            "INSERT INTO entries (job_id, path, l_kind) VALUES (1, 'x', 'fifo')",
            "INSERT INTO entries (job_id, path, r_kind) VALUES (1, 'x', 'File')",
            "INSERT INTO entries (job_id, path, l_hash) VALUES (1, 'x', x'00')",
            "INSERT INTO changes (job_id, at, kind, path, state) VALUES (1, 1, 'k', 'p', 'done')",
            "INSERT INTO entries (job_id, path) VALUES (2, 'x')",
        ] {
            assert!(s.conn.execute(bad, []).is_err(), "{bad}");
        }
        // Writing a base row builds no temporary b-tree any more.
        let opcodes: Vec<String> = s
            .conn
            .prepare(&format!("EXPLAIN {UPSERT_ENTRY}"))
            .unwrap()
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n(rusqlite::types::Null, 12)),
                |r| r.get::<_, String>(1),
            )
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(opcodes.iter().any(|o| o == "Insert" || o == "IdxInsert"));
        assert!(!opcodes.iter().any(|o| o == "OpenEphemeral"), "{opcodes:?}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("omnisync.db");
        drop(Store::open(&path).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn job_ids_are_stable() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s.job_id("a").unwrap();
        let b = s.job_id("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.job_id("a").unwrap(), a);
        assert_eq!(s.job_id("b").unwrap(), b);
    }

    #[test]
    fn base_round_trip() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let other = s.job_id("other").unwrap();
        assert!(s.load_base(j).unwrap().is_empty());
        s.replace_base(j, &sample_base()).unwrap();
        assert_eq!(s.load_base(j).unwrap(), sample_base());
        assert!(s.load_base(other).unwrap().is_empty());
        // a.txt and big are files; dir and dir/link are not.
        assert_eq!(s.base_file_count(j).unwrap(), 2);
        assert_eq!(s.base_file_count(other).unwrap(), 0);

        // replace_base drops rows that are not in the new base.
        let mut smaller = sample_base();
        smaller.remove("a.txt");
        s.replace_base(j, &smaller).unwrap();
        assert_eq!(s.load_base(j).unwrap(), smaller);
        assert_eq!(s.base_file_count(j).unwrap(), 1);
    }

    fn has_snapshot(s: &Store, job: i64) -> bool {
        s.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM base_snapshots WHERE job_id = ?1)",
                [job],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// A large base read whole leaves a snapshot; any write to the job's rows removes it in
    /// the same transaction, so the next read sees the rows as they are.
    #[test]
    fn base_snapshots_follow_every_write_of_the_rows() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let other = s.job_id("other").unwrap();
        let mut base = Base::new();
        for i in 0..SNAPSHOT_MIN_ROWS + 10 {
            let mut row = BaseRow {
                local: Some(Entry::file(i as u64, 1_700_000_000_000_000_000 + i as i64)),
                remote: Some(Entry::file(i as u64, 1_700_000_000_000_000_000)),
            };
            if i % 7 == 0 {
                row.local.as_mut().unwrap().inode = Some(i as u64 * 13);
                row.remote.as_mut().unwrap().hash = Some(Box::new([i as u8; 32]));
            }
            base.insert(format!("d{}/f{i}.txt", i % 50), row);
        }
        s.replace_base(j, &base).unwrap();
        s.replace_base(other, &sample_base()).unwrap();
        assert!(!has_snapshot(&s, j));
        assert_eq!(s.load_base(j).unwrap(), base);
        assert!(has_snapshot(&s, j));
        // Read from the snapshot: the same base; and what the snapshot says, not the rows
        // (a snapshot put there by hand, which no trigger drops).
        assert_eq!(s.load_base(j).unwrap(), base);
        let put = |s: &Store, b: &Base| {
            s.conn
                .execute(
                    "UPDATE base_snapshots SET data = ?2 WHERE job_id = ?1",
                    params![j, snapshot::encode(b)],
                )
                .unwrap()
        };
        put(&s, &sample_base());
        assert_eq!(s.load_base(j).unwrap(), sample_base());
        put(&s, &base);
        // Small bases are read from their rows.
        assert_eq!(s.load_base(other).unwrap(), sample_base());
        assert!(!has_snapshot(&s, other));

        // An update, a new row, a deleted row: each drops the snapshot.
        let changed = "d3/f3.txt".to_string();
        let mut row = base[&changed].clone();
        row.remote.as_mut().unwrap().mtime += 1;
        let writes = [
            BaseUpdate {
                path: changed.clone(),
                row: Some(row.clone()),
            },
            BaseUpdate {
                path: "new".into(),
                row: Some(row.clone()),
            },
            BaseUpdate {
                path: "d4/f4.txt".into(),
                row: None,
            },
        ];
        for u in writes {
            match &u.row {
                Some(r) => base.insert(u.path.clone(), r.clone()),
                None => base.remove(&u.path),
            };
            s.apply_base_updates(j, &[u]).unwrap();
            assert!(!has_snapshot(&s, j));
            assert_eq!(s.load_base(j).unwrap(), base);
            assert!(has_snapshot(&s, j));
        }
        // A write to another job's rows leaves this job's snapshot alone.
        s.replace_base(other, &Base::new()).unwrap();
        assert!(has_snapshot(&s, j));
        // A damaged snapshot is ignored, and replaced.
        s.conn
            .execute(
                "UPDATE base_snapshots SET data = x'00' || data WHERE job_id = ?1",
                [j],
            )
            .unwrap();
        assert_eq!(s.load_base(j).unwrap(), base);
        assert_eq!(s.load_base(j).unwrap(), base);
        s.conn
            .execute(
                "UPDATE base_snapshots SET data = CAST(x'00' || data AS BLOB) WHERE job_id = ?1",
                [j],
            )
            .unwrap();
        assert_eq!(s.load_base(j).unwrap(), base);
        assert!(has_snapshot(&s, j));
        s.replace_base(j, &Base::new()).unwrap();
        assert!(!has_snapshot(&s, j));
        assert!(s.load_base(j).unwrap().is_empty());
    }

    #[test]
    fn updates_insert_replace_and_delete() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let other = s.job_id("other").unwrap();
        s.replace_base(j, &sample_base()).unwrap();
        s.replace_base(other, &sample_base()).unwrap();
        let new_row = BaseRow {
            local: Some(file(9, 9, Some(9), None)),
            remote: None,
        };
        s.apply_base_updates(
            j,
            &[
                BaseUpdate {
                    path: "a.txt".into(),
                    row: None,
                },
                BaseUpdate {
                    path: "dir".into(),
                    row: Some(new_row.clone()),
                },
                BaseUpdate {
                    path: "new".into(),
                    row: Some(new_row.clone()),
                },
                BaseUpdate {
                    path: "dir/link".into(),
                    row: Some(BaseRow::default()),
                },
                BaseUpdate {
                    path: "never-existed".into(),
                    row: None,
                },
            ],
        )
        .unwrap();
        let mut want = sample_base();
        want.remove("a.txt");
        want.remove("dir/link");
        want.insert("dir".into(), new_row.clone());
        want.insert("new".into(), new_row);
        assert_eq!(s.load_base(j).unwrap(), want);
        // Other jobs are untouched.
        assert_eq!(s.load_base(other).unwrap(), sample_base());
    }

    #[test]
    fn hundred_thousand_updates_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("omnisync.db")).unwrap();
        let j = s.job_id("j").unwrap();
        let updates: Vec<BaseUpdate> = (0..100_000u64)
            .map(|i| BaseUpdate {
                path: format!("d{}/f{i}.bin", i % 100),
                row: Some(BaseRow {
                    local: Some(file(i, i as i64 * 1_000_000_000, Some(i), None)),
                    remote: Some(file(i, i as i64 * 1_000_000_000, None, Some([1; 32]))),
                }),
            })
            .collect();
        s.apply_base_updates(j, &updates).unwrap();
        assert_eq!(s.base_file_count(j).unwrap(), 100_000);
        let deletes: Vec<BaseUpdate> = updates
            .iter()
            .step_by(2)
            .map(|u| BaseUpdate {
                path: u.path.clone(),
                row: None,
            })
            .collect();
        s.apply_base_updates(j, &deletes).unwrap();
        let base = s.load_base(j).unwrap();
        assert_eq!(base.len(), 50_000);
        assert_eq!(base["d1/f1.bin"], updates[1].row.clone().unwrap());
    }

    #[test]
    fn runs_and_last_run() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        assert_eq!(s.last_run("j").unwrap(), None);
        assert_eq!(s.last_run("nope").unwrap(), None);
        let r1 = s.start_run(j, "2026-01-01T00:00:00Z", false).unwrap();
        s.finish_run(r1, "2026-01-01T00:00:05Z", "ok", 0, r#"{"bytes":7}"#, 7, 0)
            .unwrap();
        let dry = s.start_run(j, "2026-01-02T00:00:00Z", true).unwrap();
        assert!(dry > r1);
        let last = s.last_run("j").unwrap().unwrap();
        assert_eq!(
            last,
            RunInfo {
                id: r1,
                job: "j".into(),
                started: "2026-01-01T00:00:00Z".into(),
                finished: Some("2026-01-01T00:00:05Z".into()),
                dry_run: false,
                result: Some("ok".into()),
                exit_code: Some(0),
                bytes: 7,
                errors: 0,
            }
        );
        // An unfinished run counts.
        let r3 = s.start_run(j, "2026-01-03T00:00:00Z", false).unwrap();
        let last = s.last_run("j").unwrap().unwrap();
        assert_eq!(last.id, r3);
        assert_eq!(last.finished, None);
        assert_eq!(last.exit_code, None);
        assert!(matches!(
            s.finish_run(9999, "x", "ok", 0, "{}", 0, 0),
            Err(StateError::UnknownRun(9999))
        ));
    }

    fn log_fixture() -> Store {
        let mut s = Store::open_in_memory().unwrap();
        let mut recs = [
            rec("2026-01-01T00:00:00Z", "a", 1, "download", "one.txt"),
            rec("2026-01-01T00:00:01Z", "a", 1, "upload", "Two.TXT"),
            rec("2026-01-02T00:00:00Z", "b", 2, "download", "100%_done.pdf"),
            rec("2026-01-02T00:00:01Z", "b", 2, "move_remote", "x/old"),
            rec("2026-01-03T00:00:00Z", "a", 3, "error", "three"),
            rec("2026-01-03T00:00:01Z", "a", 3, "conflict", "four"),
        ];
        recs[3].to = Some("x/NEW-Name".into());
        recs[4].message = Some("Permission DENIED".into());
        recs[4].ms = None;
        recs[5].dry_run = true;
        recs[5].bytes = u64::MAX;
        s.insert_actions(&recs[..3]).unwrap();
        s.insert_actions(&recs[3..]).unwrap();
        s.insert_actions(&[]).unwrap();
        s
    }

    fn query(s: &Store, f: LogFilter) -> Vec<ActionRecord> {
        s.query_actions(&f).unwrap()
    }

    #[test]
    fn action_records_round_trip() {
        let s = log_fixture();
        let all = query(&s, LogFilter::default());
        assert_eq!(all.len(), 6);
        assert_eq!(
            all[0],
            rec("2026-01-01T00:00:00Z", "a", 1, "download", "one.txt")
        );
        assert_eq!(all[3].to.as_deref(), Some("x/NEW-Name"));
        assert_eq!(all[4].message.as_deref(), Some("Permission DENIED"));
        assert_eq!(all[4].ms, None);
        assert!(all[5].dry_run);
        assert!(!all[4].dry_run);
        assert_eq!(all[5].bytes, u64::MAX);
    }

    #[test]
    fn action_query_filters() {
        let s = log_fixture();
        let q = |f: LogFilter| paths(&query(&s, f)).join(",");
        assert_eq!(
            q(LogFilter {
                job: Some("b".into()),
                ..Default::default()
            }),
            "100%_done.pdf,x/old"
        );
        assert_eq!(
            q(LogFilter {
                action: Some("download".into()),
                ..Default::default()
            }),
            "one.txt,100%_done.pdf"
        );
        assert_eq!(
            q(LogFilter {
                run: Some(3),
                ..Default::default()
            }),
            "three,four"
        );
        assert_eq!(
            q(LogFilter {
                since: Some("2026-01-02T00:00:01Z".into()),
                ..Default::default()
            }),
            "x/old,three,four"
        );
        assert_eq!(
            q(LogFilter {
                job: Some("a".into()),
                action: Some("download".into()),
                ..Default::default()
            }),
            "one.txt"
        );
        assert_eq!(
            q(LogFilter {
                job: Some("zzz".into()),
                ..Default::default()
            }),
            ""
        );
    }

    #[test]
    fn action_search_is_case_insensitive_and_literal() {
        let s = log_fixture();
        let search = |needle: &str| {
            paths(&query(
                &s,
                LogFilter {
                    search: Some(needle.into()),
                    ..Default::default()
                },
            ))
            .join(",")
        };
        // path, either case
        assert_eq!(search("two.txt"), "Two.TXT");
        assert_eq!(search("ONE.t"), "one.txt");
        assert_eq!(search(".txt"), "one.txt,Two.TXT");
        // to and message
        assert_eq!(search("new-name"), "x/old");
        assert_eq!(search("permission denied"), "three");
        // % and _ are literal characters, not wildcards
        assert_eq!(search("%"), "100%_done.pdf");
        assert_eq!(search("0%_d"), "100%_done.pdf");
        assert_eq!(search("_"), "100%_done.pdf");
        assert_eq!(search("o%e"), "");
        assert_eq!(search("t_o"), "");
        // combined with another filter
        assert_eq!(
            paths(&query(
                &s,
                LogFilter {
                    job: Some("b".into()),
                    search: Some("X/".into()),
                    ..Default::default()
                }
            )),
            vec!["x/old"]
        );
    }

    #[test]
    fn action_limit_returns_the_last_records_in_ascending_order() {
        let s = log_fixture();
        let got = query(
            &s,
            LogFilter {
                limit: 2,
                ..Default::default()
            },
        );
        assert_eq!(paths(&got), vec!["three", "four"]);
        let got = query(
            &s,
            LogFilter {
                job: Some("a".into()),
                limit: 3,
                ..Default::default()
            },
        );
        assert_eq!(paths(&got), vec!["Two.TXT", "three", "four"]);
        let got = query(
            &s,
            LogFilter {
                limit: 100,
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 6);
        assert_eq!(got[0].path, "one.txt");
    }

    #[test]
    fn prune_deletes_only_older_records() {
        let mut s = log_fixture();
        assert_eq!(s.prune_actions("2026-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(s.prune_actions("2026-01-02T00:00:01Z").unwrap(), 3);
        assert_eq!(
            paths(&query(&s, LogFilter::default())),
            vec!["x/old", "three", "four"]
        );
        assert_eq!(s.prune_actions("2026-01-02T00:00:01Z").unwrap(), 0);
        assert_eq!(s.prune_actions("2027-01-01T00:00:00Z").unwrap(), 3);
        assert!(query(&s, LogFilter::default()).is_empty());
    }

    #[test]
    fn checkpoints() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let k = s.job_id("k").unwrap();
        assert_eq!(s.get_checkpoint(j, "a", "upload").unwrap(), None);
        let cp = Checkpoint {
            src_size: u64::MAX,
            src_mtime: -1,
            src_inode: Some(u64::MAX),
            offset: 4 << 20,
            durable: 4 << 20,
        };
        s.put_checkpoint(j, "a", "upload", &cp).unwrap();
        assert_eq!(s.get_checkpoint(j, "a", "upload").unwrap(), Some(cp));
        // Keyed by job, path and direction.
        assert_eq!(s.get_checkpoint(j, "a", "download").unwrap(), None);
        assert_eq!(s.get_checkpoint(k, "a", "upload").unwrap(), None);
        assert_eq!(s.get_checkpoint(j, "b", "upload").unwrap(), None);
        // Overwrite.
        let cp2 = Checkpoint {
            src_size: 10,
            src_mtime: 5,
            src_inode: None,
            offset: 8 << 20,
            durable: 8 << 20,
        };
        s.put_checkpoint(j, "a", "upload", &cp2).unwrap();
        assert_eq!(s.get_checkpoint(j, "a", "upload").unwrap(), Some(cp2));
        let updated: String = s
            .conn
            .query_row("SELECT updated FROM transfers", [], |r| r.get(0))
            .unwrap();
        assert!(updated.ends_with('Z') && updated.len() == 20, "{updated}");
        s.clear_checkpoint(j, "a", "upload").unwrap();
        assert_eq!(s.get_checkpoint(j, "a", "upload").unwrap(), None);
        // Clearing what is not there is fine.
        s.clear_checkpoint(j, "a", "upload").unwrap();
    }

    #[test]
    fn unsynced_checkpoints_hold_only_in_the_boot_that_wrote_them() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let cp = Checkpoint {
            src_size: 1 << 30,
            src_mtime: 7,
            src_inode: Some(3),
            offset: 192 << 20,
            durable: 64 << 20,
        };
        s.put_checkpoint(j, "a", "download", &cp).unwrap();
        let Some(boot) = this_boot() else {
            // No boot id to tie the unsynced part to: only the durable part is recorded.
            let got = s.get_checkpoint(j, "a", "download").unwrap().unwrap();
            assert_eq!((got.offset, got.durable), (64 << 20, 64 << 20));
            return;
        };
        // This boot: all of it, as the page cache still holds what was written.
        assert_eq!(s.get_checkpoint(j, "a", "download").unwrap(), Some(cp));
        assert_eq!(
            s.get_checkpoint_in(j, "a", "download", Some(boot)).unwrap(),
            Some(cp)
        );
        assert_eq!(
            s.load_checkpoints(j).unwrap(),
            vec![("a".to_string(), "download".to_string(), cp)]
        );
        let shown = |s: &Store| s.transfers_in_progress().unwrap()[0].3;
        assert_eq!(shown(&s), 192 << 20);
        s.conn
            .execute("UPDATE transfers SET boot = 'another-boot'", [])
            .unwrap();
        assert_eq!(shown(&s), 64 << 20, "`status` after a restart");
        s.put_checkpoint(j, "a", "download", &cp).unwrap();
        // After a restart (or with the boot unknown), only what a sync made durable.
        let after = Checkpoint {
            offset: 64 << 20,
            ..cp
        };
        for other in [Some("another-boot"), None] {
            assert_eq!(
                s.get_checkpoint_in(j, "a", "download", other).unwrap(),
                Some(after),
                "{other:?}"
            );
        }
        // A checkpoint that is all durable holds in any boot, and one from before this
        // migration (no `durable`, no `boot`) is durable.
        let synced = Checkpoint {
            durable: 192 << 20,
            ..cp
        };
        s.put_checkpoint(j, "a", "download", &synced).unwrap();
        assert_eq!(
            s.get_checkpoint_in(j, "a", "download", Some("another-boot"))
                .unwrap(),
            Some(synced)
        );
        s.conn
            .execute("UPDATE transfers SET durable = NULL, boot = NULL", [])
            .unwrap();
        assert_eq!(
            s.get_checkpoint_in(j, "a", "download", Some("another-boot"))
                .unwrap(),
            Some(synced)
        );
    }

    #[test]
    fn errors_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = Store::open(&blocker.join("sub/omnisync.db")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("state directory"), "{msg}");
        assert!(msg.contains("file/sub"), "{msg}");
    }
}
