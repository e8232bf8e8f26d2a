//! The change journal (`changes`), its batches, the agent's status row, and the scoped base
//! reads of the live path. Part of the state database: all SQL still lives under `state`.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{read_side, Context, Result, Store, ENTRY_COLUMNS};
use crate::coalesce::{Change, ChangeKind};
use crate::model::{Base, BaseRow};

/// Rows per INSERT statement of [`Store::insert_changes`] (6 parameters each, well under
/// SQLite's 32,766 parameters).
pub const ROWS_PER_INSERT: usize = 500;

/// A change as the watcher records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    pub job_id: i64,
    pub at_ns: i64,
    pub kind: ChangeKind,
    pub path: String,
    pub to: Option<String>,
    pub dir: bool,
}

/// A journal row as `omnisync journal` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeRow {
    pub id: i64,
    pub job: String,
    /// RFC 3339 UTC with nanoseconds.
    pub time: String,
    pub kind: String,
    pub path: String,
    pub to: Option<String>,
    pub dir: bool,
    pub state: String,
    pub batch: Option<i64>,
}

/// Filters of [`Store::query_changes`]. `limit = 0` means no limit.
#[derive(Debug, Clone, Default)]
pub struct JournalFilter {
    pub job: Option<String>,
    pub pending: bool,
    pub since_ns: Option<i64>,
    pub limit: usize,
}

/// A finished batch, for the journal's `batches` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub kind: &'static str,
    pub run: Option<i64>,
    pub paths: u64,
    pub actions: u64,
    pub result: String,
}

/// `omnisync journal stats` for one job.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JournalStats {
    pub job: String,
    pub pending: u64,
    pub applied: u64,
    pub dropped: u64,
    pub reconciled: u64,
    /// RFC 3339 time of the oldest pending change.
    pub oldest_pending: Option<String>,
    pub batches: u64,
    pub reconciles: u64,
    /// Paths re-planned by live batches, and the actions they took.
    pub batch_paths: u64,
    pub batch_actions: u64,
    /// Changes per action applied by live batches (higher: more folded away).
    pub coalescing_ratio: Option<f64>,
}

/// A resumable transfer: (job, path, direction, bytes done, size).
pub type TransferRow = (String, String, String, u64, u64);

/// The agent's own row: who it is and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentRow {
    pub pid: i64,
    pub started: String,
    pub heartbeat: String,
    pub status: String,
    /// JSON array of the transfers in flight with their bytes done.
    pub transfers: String,
}

pub fn ns_to_rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ns.to_string())
}

impl Store {
    /// Append changes in one transaction; returns their ids in order.
    ///
    /// Rows go in as multi-row INSERTs of up to [`ROWS_PER_INSERT`]: one statement per row
    /// held the journal to ~140,000 events/s on this machine, short of a burst's needs.
    pub fn insert_changes(&mut self, rows: &[NewChange]) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(ids);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a journal transaction")?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = String::with_capacity(80 + chunk.len() * 24);
            sql.push_str("INSERT INTO changes(job_id, at, kind, path, path2, is_dir) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?)");
            }
            let mut st = tx.prepare_cached(&sql).ctx("preparing a journal insert")?;
            let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
            let kinds: Vec<&'static str> = chunk.iter().map(|r| r.kind.as_str()).collect();
            for (r, k) in chunk.iter().zip(&kinds) {
                args.push(&r.job_id);
                args.push(&r.at_ns);
                args.push(k);
                args.push(&r.path);
                args.push(&r.to);
                args.push(&r.dir);
            }
            st.execute(args.as_slice())
                .ctx(format!("journaling {} changes", chunk.len()))?;
            // Rowids of one multi-row INSERT in a write transaction are consecutive.
            let last = tx.last_insert_rowid();
            let first = last - chunk.len() as i64 + 1;
            ids.extend(first..=last);
        }
        tx.commit().ctx("committing journal changes")?;
        Ok(ids)
    }

    /// The pending changes of a job, in journal order.
    pub fn pending_changes(&self, job_id: i64) -> Result<Vec<Change>> {
        let ctx = || format!("reading the pending changes of job {job_id}");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, at, kind, path, path2, is_dir FROM changes \
                 WHERE job_id = ?1 AND state = 'pending' ORDER BY id",
            )
            .ctx(ctx())?;
        let rows = st
            .query_map([job_id], |r| {
                let kind: String = r.get(2)?;
                Ok(Change {
                    id: r.get(0)?,
                    at_ns: r.get(1)?,
                    kind: ChangeKind::parse(&kind).unwrap_or(ChangeKind::Overflow),
                    path: r.get(3)?,
                    to: r.get(4)?,
                    dir: r.get(5)?,
                })
            })
            .ctx(ctx())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(ctx())
    }

    /// Record a batch (or reconcile) and mark the changes it covered, in one transaction.
    /// `consumed` become `applied` (`reconciled` for a reconcile), `dropped` become `dropped`.
    pub fn finish_batch(
        &mut self,
        job_id: i64,
        info: &BatchInfo,
        consumed: &[i64],
        dropped: &[i64],
    ) -> Result<i64> {
        let ctx = || format!("recording a batch of job {job_id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ctx())?;
        tx.prepare_cached(
            "INSERT INTO batches(job_id, at, kind, run, changes, paths, actions, result) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job_id,
                crate::engine::now_rfc3339(),
                info.kind,
                info.run,
                consumed.len() as i64,
                info.paths as i64,
                info.actions as i64,
                info.result
            ])
        })
        .ctx(ctx())?;
        let batch = tx.last_insert_rowid();
        let state = if info.kind == "batch" {
            "applied"
        } else {
            "reconciled"
        };
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE changes SET state = ?2, batch = ?3 WHERE id = ?1 AND job_id = ?4",
                )
                .ctx(ctx())?;
            for id in consumed {
                st.execute(params![id, state, batch, job_id]).ctx(ctx())?;
            }
            for id in dropped {
                st.execute(params![id, "dropped", batch, job_id])
                    .ctx(ctx())?;
            }
        }
        tx.commit().ctx(ctx())?;
        Ok(batch)
    }

    /// Mark every pending change of a job up to `up_to` (inclusive) as covered by a reconcile.
    /// `kind` is `reconcile`, or `replay` for the agent's start-up reconcile (changes left
    /// pending by an earlier agent).
    pub fn reconcile_changes(
        &mut self,
        job_id: i64,
        up_to: i64,
        run: Option<i64>,
        kind: &str,
    ) -> Result<u64> {
        let ctx = || format!("recording a reconcile of job {job_id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ctx())?;
        let n = tx
            .prepare_cached(
                "SELECT count(*) FROM changes WHERE job_id = ?1 AND state = 'pending' AND id <= ?2",
            )
            .and_then(|mut s| s.query_row(params![job_id, up_to], |r| r.get::<_, i64>(0)))
            .ctx(ctx())?;
        tx.prepare_cached(
            "INSERT INTO batches(job_id, at, kind, run, changes, paths, actions, result) \
             VALUES (?1, ?2, ?5, ?3, ?4, 0, 0, 'ok')",
        )
        .and_then(|mut s| s.execute(params![job_id, crate::engine::now_rfc3339(), run, n, kind]))
        .ctx(ctx())?;
        let batch = tx.last_insert_rowid();
        tx.prepare_cached(
            "UPDATE changes SET state = 'reconciled', batch = ?3 \
             WHERE job_id = ?1 AND state = 'pending' AND id <= ?2",
        )
        .and_then(|mut s| s.execute(params![job_id, up_to, batch]))
        .ctx(ctx())?;
        tx.commit().ctx(ctx())?;
        Ok(n as u64)
    }

    /// The highest journal id (0 when empty).
    pub fn last_change_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM changes", [], |r| r.get(0))
            .ctx("reading the last journal id")
    }

    /// Forget settled changes and batches recorded before `before_ns`.
    pub fn prune_journal(&mut self, before_ns: i64) -> Result<usize> {
        let n = self
            .conn
            .execute(
                "DELETE FROM changes WHERE state != 'pending' AND at < ?1",
                [before_ns],
            )
            .ctx("pruning the journal")?;
        let cutoff = ns_to_rfc3339(before_ns);
        self.conn
            .execute("DELETE FROM batches WHERE at < ?1", [cutoff])
            .ctx("pruning journal batches")?;
        Ok(n)
    }

    /// Journal rows, oldest first (the newest `limit` when limited).
    pub fn query_changes(&self, f: &JournalFilter) -> Result<Vec<ChangeRow>> {
        let mut sql = String::from(
            "SELECT c.id, j.name, c.at, c.kind, c.path, c.path2, c.is_dir, c.state, c.batch \
             FROM changes c JOIN jobs j ON j.id = c.job_id WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(job) = &f.job {
            args.push(job.clone().into());
            sql.push_str(&format!(" AND j.name = ?{}", args.len()));
        }
        if f.pending {
            sql.push_str(" AND c.state = 'pending'");
        }
        if let Some(since) = f.since_ns {
            args.push(since.into());
            sql.push_str(&format!(" AND c.at >= ?{}", args.len()));
        }
        sql.push_str(" ORDER BY c.id DESC");
        if f.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", f.limit));
        }
        let ctx = || "reading the journal".to_string();
        let mut st = self.conn.prepare(&sql).ctx(ctx())?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(ChangeRow {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    time: ns_to_rfc3339(r.get(2)?),
                    kind: r.get(3)?,
                    path: r.get(4)?,
                    to: r.get(5)?,
                    dir: r.get(6)?,
                    state: r.get(7)?,
                    batch: r.get(8)?,
                })
            })
            .ctx(ctx())?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>().ctx(ctx())?;
        out.reverse();
        Ok(out)
    }

    /// Journal statistics per job (every job that has journal rows or batches).
    pub fn journal_stats(&self, job: Option<&str>) -> Result<Vec<JournalStats>> {
        let ctx = || "reading journal statistics".to_string();
        let mut st = self
            .conn
            .prepare(
                "SELECT j.id, j.name FROM jobs j WHERE (?1 IS NULL OR j.name = ?1) \
                 AND (EXISTS (SELECT 1 FROM changes c WHERE c.job_id = j.id) \
                      OR EXISTS (SELECT 1 FROM batches b WHERE b.job_id = j.id)) \
                 ORDER BY j.name",
            )
            .ctx(ctx())?;
        let jobs = st
            .query_map([job], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .ctx(ctx())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(ctx())?;
        let mut out = Vec::new();
        for (id, name) in jobs {
            let mut s = JournalStats {
                job: name,
                ..Default::default()
            };
            let mut q = self
                .conn
                .prepare_cached(
                    "SELECT state, count(*) FROM changes WHERE job_id = ?1 GROUP BY state",
                )
                .ctx(ctx())?;
            let counts = q
                .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .ctx(ctx())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx(ctx())?;
            for (state, n) in counts {
                let n = n as u64;
                match state.as_str() {
                    "pending" => s.pending = n,
                    "applied" => s.applied = n,
                    "dropped" => s.dropped = n,
                    "reconciled" => s.reconciled = n,
                    _ => {}
                }
            }
            s.oldest_pending = self
                .conn
                .prepare_cached(
                    "SELECT min(at) FROM changes WHERE job_id = ?1 AND state = 'pending'",
                )
                .and_then(|mut q| q.query_row([id], |r| r.get::<_, Option<i64>>(0)))
                .ctx(ctx())?
                .map(ns_to_rfc3339);
            let (batches, reconciles, paths, actions, changes): (i64, i64, i64, i64, i64) = self
                .conn
                .prepare_cached(
                    "SELECT coalesce(sum(kind = 'batch'), 0), coalesce(sum(kind != 'batch'), 0), \
                            coalesce(sum(CASE WHEN kind = 'batch' THEN paths END), 0), \
                            coalesce(sum(CASE WHEN kind = 'batch' THEN actions END), 0), \
                            coalesce(sum(CASE WHEN kind = 'batch' THEN changes END), 0) \
                     FROM batches WHERE job_id = ?1",
                )
                .and_then(|mut q| {
                    q.query_row([id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                })
                .ctx(ctx())?;
            s.batches = batches as u64;
            s.reconciles = reconciles as u64;
            s.batch_paths = paths as u64;
            s.batch_actions = actions as u64;
            let folded = changes as u64 + s.dropped;
            s.coalescing_ratio = (actions > 0).then(|| folded as f64 / actions as f64);
            out.push(s);
        }
        Ok(out)
    }

    /// The base rows at `path` and below it (the whole base for "").
    pub fn load_base_under(&self, job_id: i64, path: &str) -> Result<Base> {
        let ctx = || format!("loading the base of job {job_id} under {path:?}");
        let mut out = Base::new();
        if path.is_empty() {
            return self.load_base(job_id);
        }
        // `p` and the rows below `p/` all sort in ["p", "p0") ('0' follows '/'): one range
        // scan of the primary key (an OR of two conditions made SQLite scan the whole job).
        // Siblings such as "p.txt" fall in the range too and are skipped.
        let hi = format!("{path}0");
        let below = format!("{path}/");
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE job_id = ?1 \
                 AND path >= ?2 AND path < ?3 ORDER BY path"
            ))
            .ctx(ctx())?;
        let mut rows = st.query(params![job_id, path, hi]).ctx(ctx())?;
        while let Some(row) = rows.next().ctx(ctx())? {
            let p: String = row.get(0).ctx(ctx())?;
            if p != path && !p.starts_with(&below) {
                continue;
            }
            let local = read_side(row, 1, &p)?;
            let remote = read_side(row, 6, &p)?;
            out.insert(p, BaseRow { local, remote });
        }
        Ok(out)
    }

    /// One base row.
    pub fn base_row(&self, job_id: i64, path: &str) -> Result<Option<BaseRow>> {
        let ctx = || format!("loading the base row of {path:?}");
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE job_id = ?1 AND path = ?2"
            ))
            .ctx(ctx())?;
        let mut rows = st.query(params![job_id, path]).ctx(ctx())?;
        match rows.next().ctx(ctx())? {
            None => Ok(None),
            Some(row) => Ok(Some(BaseRow {
                local: read_side(row, 1, path)?,
                remote: read_side(row, 6, path)?,
            })),
        }
    }

    /// Paths of synced files (on both sides) of the given size: copy candidates for a new file.
    pub fn base_paths_of_size(&self, job_id: i64, size: u64, limit: usize) -> Result<Vec<String>> {
        let ctx = || format!("looking up synced files of {size} bytes");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path FROM entries WHERE job_id = ?1 AND l_kind = 'file' \
                 AND r_kind = 'file' AND l_size = ?2 AND r_size = ?2 LIMIT ?3",
            )
            .ctx(ctx())?;
        let rows = st
            .query_map(params![job_id, size as i64, limit as i64], |r| r.get(0))
            .ctx(ctx())?;
        rows.collect::<rusqlite::Result<Vec<String>>>().ctx(ctx())
    }

    /// The agent says who it is (at start) and what it is doing (heartbeat).
    pub fn set_agent_status(&mut self, pid: i64, started: &str, status: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO agent(id, pid, started, heartbeat, status) VALUES (1, ?1, ?2, ?3, ?4) \
                 ON CONFLICT(id) DO UPDATE SET pid = ?1, started = ?2, heartbeat = ?3, status = ?4",
            )
            .and_then(|mut s| {
                s.execute(params![pid, started, crate::engine::now_rfc3339(), status])
            })
            .map(|_| ())
            .ctx("recording the agent's status")
    }

    /// The agent's transfers in flight, as JSON (see `agent`).
    pub fn set_agent_transfers(&mut self, json: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE agent SET transfers = ?1 WHERE id = 1")
            .and_then(|mut s| s.execute([json]))
            .map(|_| ())
            .ctx("recording the agent's transfers")
    }

    pub fn agent_status(&self) -> Result<Option<AgentRow>> {
        self.conn
            .query_row(
                "SELECT pid, started, heartbeat, status, transfers FROM agent WHERE id = 1",
                [],
                |r| {
                    Ok(AgentRow {
                        pid: r.get(0)?,
                        started: r.get(1)?,
                        heartbeat: r.get(2)?,
                        status: r.get(3)?,
                        transfers: r.get(4)?,
                    })
                },
            )
            .optional()
            .ctx("reading the agent's status")
    }

    /// Runs not finished, newest first: (run id, job, started).
    pub fn unfinished_runs(&self) -> Result<Vec<(i64, String, String)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT r.id, j.name, r.started FROM runs r JOIN jobs j ON j.id = r.job_id \
                 WHERE r.finished IS NULL ORDER BY r.id DESC LIMIT 100",
            )
            .ctx("reading unfinished runs")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ctx("reading unfinished runs")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("reading unfinished runs")
    }

    /// Resume checkpoints of every job: (job, path, direction, bytes done, size). Bytes
    /// written without a sync in an earlier boot do not count (see [`super::Checkpoint`]).
    pub fn transfers_in_progress(&self) -> Result<Vec<TransferRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT j.name, t.path, t.direction, \
                 CASE WHEN t.boot IS NULL OR t.boot IS ?1 THEN t.\"offset\" \
                 ELSE min(coalesce(t.durable, t.\"offset\"), t.\"offset\") END, t.src_size \
                 FROM transfers t JOIN jobs j ON j.id = t.job_id ORDER BY j.name, t.path",
            )
            .ctx("reading transfers in progress")?;
        let rows = st
            .query_map([super::this_boot()], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, i64>(4)? as u64,
                ))
            })
            .ctx("reading transfers in progress")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("reading transfers in progress")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_ids_batches_and_stats() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let rows: Vec<NewChange> = (0..1234)
            .map(|i| NewChange {
                job_id: j,
                at_ns: i,
                kind: if i % 2 == 0 {
                    ChangeKind::CloseWrite
                } else {
                    ChangeKind::Rename
                },
                path: format!("p{i}"),
                to: (i % 2 == 1).then(|| format!("q{i}")),
                dir: i % 3 == 0,
            })
            .collect();
        let ids = s.insert_changes(&rows).unwrap();
        assert_eq!(ids.len(), 1234);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        let pending = s.pending_changes(j).unwrap();
        assert_eq!(pending.len(), 1234);
        for (c, (r, id)) in pending.iter().zip(rows.iter().zip(&ids)) {
            assert_eq!(
                (c.id, &c.path, &c.to, c.kind, c.dir),
                (*id, &r.path, &r.to, r.kind, r.dir)
            );
        }
        let info = BatchInfo {
            kind: "batch",
            run: None,
            paths: 2,
            actions: 1,
            result: "ok".into(),
        };
        s.finish_batch(j, &info, &ids[..10], &ids[10..12]).unwrap();
        let n = s.reconcile_changes(j, ids[100], None, "replay").unwrap();
        assert_eq!(n, 89);
        let st = &s.journal_stats(Some("j")).unwrap()[0];
        assert_eq!(
            (
                st.applied,
                st.dropped,
                st.reconciled,
                st.pending,
                st.batches,
                st.reconciles
            ),
            (10, 2, 89, 1234 - 101, 1, 1)
        );
        assert_eq!(st.coalescing_ratio, Some(12.0));
        let q = s
            .query_changes(&JournalFilter {
                job: Some("j".into()),
                pending: true,
                since_ns: None,
                limit: 5,
            })
            .unwrap();
        assert_eq!(q.len(), 5);
        assert_eq!(q.last().unwrap().id, *ids.last().unwrap());
    }

    #[test]
    fn base_under_a_path_is_the_path_and_below_not_siblings() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.job_id("j").unwrap();
        let e = crate::model::Entry {
            kind: crate::model::Kind::File,
            size: 1,
            mtime: 1,
            inode: None,
            hash: None,
        };
        let mut base = Base::new();
        for p in ["a", "a b", "a.txt", "a/x", "a/y/z", "a0", "b"] {
            base.insert(
                p.to_string(),
                BaseRow {
                    local: Some(e.clone()),
                    remote: Some(e.clone()),
                },
            );
        }
        s.replace_base(j, &base).unwrap();
        let got: Vec<String> = s.load_base_under(j, "a").unwrap().into_keys().collect();
        assert_eq!(got, vec!["a", "a/x", "a/y/z"]);
        assert_eq!(s.load_base_under(j, "").unwrap().len(), 7);
        assert!(s.base_row(j, "a b").unwrap().is_some());
        assert_eq!(s.base_paths_of_size(j, 1, 3).unwrap().len(), 3);
    }
}
