//! The executor: applies a plan's actions to the two sides, in the plan's phases, and reports
//! for each action what happened and which base rows to write.
//!
//! Nothing here overwrites or deletes blindly: every action first checks that what it is about
//! to replace or remove is still what the planner saw, replaced and deleted files go to the
//! side's trash (`.omnisync/trash/DATE/PATH`) when `trash = true`, and transfers write to a
//! partial name that is renamed into place only when complete and verified.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::job::{Compare, Job};
use crate::model::{ActionKind, BaseRow, Entry, Kind, Side};
use crate::plan::Action;
use crate::remote::{
    file_name, join, parent, same_file, Batching, NewFile, PutNew, Remote, RemoteError,
};
use crate::state::{BaseUpdate, Checkpoint, Store};

/// Where trash lives on each side, relative to the root.
pub const TRASH_DIR: &str = ".omnisync/trash";
pub const PARTIAL_SUFFIX: &str = ".omnisync-partial";
/// Resume checkpoints are at most this far apart (or `chunk_size` apart when it is larger).
pub const CHECKPOINT_MIN: u64 = 64 << 20;
/// After a checkpoint's sync that took `t`, the next may begin `SYNC_SPACING * t` later at the
/// earliest, so syncs run at most a fifth of a transfer's time. Where the network outruns the
/// disk, back-to-back syncs of a large file made the transfer disk-bound (an SFTP upload of
/// 1 GiB took 6.5 s against 3.5 s with no sync); where the disk keeps up, each sync is short
/// and checkpoints stay `CHECKPOINT_MIN` apart.
pub const SYNC_SPACING: u32 = 4;
/// Transfers of at most this many bytes count as small: they may run beyond `transfers` at
/// once where a side says it can keep many in flight ([`Remote::small_file_parallelism`]).
pub const SMALL_FILE: u64 = 1 << 20;
/// Where writes outlive the process ([`crate::remote::WriteHandle::outlives_process`]),
/// checkpoints without a sync per checkpoint with one: a restart of the machine resends at
/// most this many checkpoints' worth (1 GiB at the default spacing), a crash of the process
/// nothing more than elsewhere.
pub const UNSYNCED_PER_SYNC: u64 = 16;
/// Times one transfer is retried after its side reconnected (each retry resumes from the
/// last checkpoint), so a flapping connection cannot keep a worker busy forever.
pub const TRANSFER_RECONNECTS: u32 = 3;

/// Is a checkpoint at `offset` of a `size`-byte transfer, whose last durable point is
/// `durable`, worth its sync? Not when less is left to send than the sync would make durable:
/// the transfer would then end waiting for the server's disk (a sync cannot be left behind:
/// closing the file waits for it), while an interruption in what is left loses at most twice
/// the usual spacing of checkpoints.
fn worth_a_sync(offset: u64, durable: u64, size: u64) -> bool {
    size.saturating_sub(offset) >= offset.saturating_sub(durable)
}

/// When a checkpoint's sync may begin: [`SYNC_SPACING`] times the last sync's duration after
/// it finished, at the earliest.
#[derive(Debug, Clone, Copy)]
struct SyncPacer {
    next: Instant,
}

impl SyncPacer {
    fn new(now: Instant) -> Self {
        SyncPacer { next: now }
    }

    fn may_begin(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A sync begun at `began` finished at `now`.
    fn done(&mut self, began: Instant, now: Instant) {
        self.next = now + now.saturating_duration_since(began) * SYNC_SPACING;
    }
}

/// What one action did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    /// Bytes actually sent (less than the size for a resumed transfer).
    pub bytes: u64,
    pub ms: u64,
    /// For an action that failed, the action is reported as `error` with this message.
    pub error: Option<String>,
    /// Replaces the action's message (e.g. "resumed at 64.0 MiB").
    pub note: Option<String>,
    /// The action was turned into a `skip` (e.g. a folder that still holds excluded files).
    pub skipped: bool,
    pub base: Vec<BaseUpdate>,
}

/// A new small file checked and read for [`Executor::apply_many`]: its stat, its content
/// and (in secure mode) its hash.
type ReadSmall = (Entry, crate::buf::AlignedBuf, Option<[u8; 32]>);

impl Outcome {
    /// `a`, not applied yet: nothing sent, no error, no base change.
    fn new(a: Action) -> Outcome {
        Outcome {
            action: a,
            bytes: 0,
            ms: 0,
            error: None,
            note: None,
            skipped: false,
            base: Vec::new(),
        }
    }
}

/// Shared state of one run's execution.
pub struct Executor<'a> {
    pub job: &'a Job,
    pub job_id: i64,
    pub local: &'a dyn Remote,
    pub remote: &'a dyn Remote,
    pub store: &'a Mutex<Store>,
    /// `YYYY-MM-DD` (UTC) of the run's start: the trash folder of this run.
    pub trash_date: String,
    /// Checkpoints loaded at the start of the run, by (path, direction).
    pub checkpoints: Mutex<HashMap<(String, String), Checkpoint>>,
    /// Set to stop between chunks (SIGINT/SIGTERM): the chunk in flight is checkpointed.
    pub cancel: &'a AtomicBool,
    /// Bytes moved so far, for progress.
    pub progress_bytes: AtomicU64,
    /// Transfers in flight and their bytes done, for `omnisync status` (the agent's).
    pub board: Option<&'a TransferBoard>,
    /// Large transfers in flight: never more than the job's `transfers`, however many workers
    /// [`Executor::transfer_workers`] started for small files.
    pub large: Slots,
    /// Batches of new small files in flight ([`Executor::apply_many`]): never more than the
    /// side's [`Batching::batches`], however many workers a mixed plan started.
    pub batches: Slots,
}

/// A counting gate (a blocking semaphore) for the worker threads.
#[derive(Debug, Default)]
pub struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn acquire(&self, max: usize) -> SlotGuard<'_> {
        let mut busy = self.busy.lock().unwrap();
        while *busy >= max.max(1) {
            busy = self.freed.wait(busy).unwrap();
        }
        *busy += 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

/// Transfers in flight: (job, path, direction) → (bytes done, size). Updated once per chunk.
pub type TransferBoard = Mutex<std::collections::BTreeMap<(String, String, String), (u64, u64)>>;

/// The name a transfer writes to before it is complete: `NAME.omnisync-partial` beside the
/// target, or a hidden short name when that would exceed 255 bytes.
pub fn partial_name(path: &str) -> String {
    let name = file_name(path);
    let dir = parent(path);
    if name.len() + PARTIAL_SUFFIX.len() <= 255 {
        join(dir, &format!("{name}{PARTIAL_SUFFIX}"))
    } else {
        let h = blake3::hash(name.as_bytes()).to_hex();
        join(dir, &format!(".{}{PARTIAL_SUFFIX}", &h.as_str()[..24]))
    }
}

fn direction(kind: ActionKind) -> &'static str {
    if kind == ActionKind::Upload {
        "up"
    } else {
        "down"
    }
}

/// The base row a finished transfer leaves: the source as it was sent, the destination as it
/// now is, both with the content hash where one was computed.
fn record_transfer(out: &mut Outcome, mut src: Entry, mut dst: Entry, hash: Option<[u8; 32]>) {
    src.hash = hash.map(Box::new);
    dst.hash = hash.map(Box::new);
    let row = if out.action.kind == ActionKind::Upload {
        BaseRow {
            local: Some(src),
            remote: Some(dst),
        }
    } else {
        BaseRow {
            local: Some(dst),
            remote: Some(src),
        }
    };
    out.base.push(BaseUpdate {
        path: out.action.path.clone(),
        row: Some(row),
    });
}

/// The transfer's source as it is now, provided it is still the version `a` planned.
fn source_as_planned(src: &dyn Remote, a: &Action) -> Result<Entry, String> {
    let planned = a.src.as_ref().ok_or("transfer without a source entry")?;
    let now = src
        .stat(&a.path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| crate::remote::NotAsPlanned::Vanished.to_string())?;
    if !same_file(&now, planned) {
        return Err(crate::remote::NotAsPlanned::Changed.to_string());
    }
    Ok(now)
}

impl<'a> Executor<'a> {
    fn side(&self, s: Side) -> &'a dyn Remote {
        match s {
            Side::Local => self.local,
            Side::Remote => self.remote,
        }
    }

    /// Worker threads for these transfers: the job's `transfers`, or as many as the sides can
    /// keep small files in flight ([`Remote::small_file_parallelism`]) when there are that
    /// many small files; large files still go at most `transfers` at a time (see `large`).
    pub fn transfer_workers(&self, transfers: &[Action]) -> usize {
        self.workers_for(transfers.iter())
    }

    fn workers_for<'b>(&self, transfers: impl Iterator<Item = &'b Action>) -> usize {
        let small_par = self
            .local
            .small_file_parallelism()
            .max(self.remote.small_file_parallelism());
        let (mut n, mut small) = (0, 0);
        for a in transfers {
            n += 1;
            small += usize::from(a.bytes <= SMALL_FILE);
        }
        let small = if small_par > 0 { small } else { 0 };
        self.job
            .transfers
            .max(1)
            .max(small_par.min(small))
            .min(n.max(1))
    }

    /// Apply one action. Never panics on I/O; failures come back as `error` outcomes.
    pub fn apply(&self, a: Action) -> Outcome {
        let start = Instant::now();
        let mut out = Outcome::new(a);
        let res = match out.action.kind {
            ActionKind::Conflict | ActionKind::Skip | ActionKind::Error => Ok(()),
            ActionKind::MoveLocal | ActionKind::MoveRemote => self.do_move(&mut out),
            ActionKind::CopyRemote => self.do_copy(&mut out),
            ActionKind::DeleteLocal | ActionKind::DeleteRemote => self.do_delete(&mut out),
            ActionKind::MkdirLocal | ActionKind::MkdirRemote => self.do_mkdir(&mut out),
            ActionKind::Upload | ActionKind::Download => {
                let _slot =
                    (out.action.bytes > SMALL_FILE).then(|| self.large.acquire(self.job.transfers));
                self.do_transfer(&mut out)
            }
        };
        if let Err(e) = res {
            out.error = Some(e);
            out.base.clear();
        }
        out.ms = start.elapsed().as_millis() as u64;
        out
    }

    /// New small files the transfer's destination takes several at a time
    /// ([`Remote::put_new_batching`]); 1 = one at a time.
    pub fn put_batch(&self, a: &Action) -> usize {
        let dst = match a.kind {
            ActionKind::Upload => self.remote,
            ActionKind::Download => self.local,
            _ => return 1,
        };
        match dst.put_new_batching() {
            Some(b) if a.dst.is_none() && a.bytes <= b.max_file.min(SMALL_FILE) => b.files.max(1),
            _ => 1,
        }
    }

    /// Worker threads for these transfers when the new small files among them go in batches
    /// ([`Self::put_batch`]): one per batch in flight (at most the side's `batches`), plus
    /// [`Self::transfer_workers`] for the rest.
    pub fn batched_workers(&self, transfers: &[Action]) -> usize {
        let (batched, rest): (Vec<&Action>, Vec<&Action>) =
            transfers.iter().partition(|a| self.put_batch(a) > 1);
        let Some(first) = batched.first() else {
            return self.transfer_workers(transfers);
        };
        let per = self.put_batch(first);
        let most = [self.local, self.remote]
            .iter()
            .filter_map(|s| s.put_new_batching())
            .map(|b| b.batches)
            .max()
            .unwrap_or(1);
        let for_batches = batched.len().div_ceil(per).clamp(1, most.max(1));
        let for_rest = if rest.is_empty() {
            0
        } else {
            self.workers_for(rest.into_iter())
        };
        for_batches + for_rest
    }

    /// [`Self::apply`] for several transfers of new small files to one destination, whose
    /// writes go out together in one [`Remote::put_new_many`] call. Each file is checked and
    /// read as [`Self::put_small`] does; one that is not a plain new small file, or whose put
    /// failed, is applied on its own (which resumes a checkpoint, reconnects a lost
    /// connection and names the error), so the outcomes are those `apply` gives.
    pub fn apply_many(&self, actions: Vec<Action>) -> Vec<Outcome> {
        if actions.len() < 2 {
            return actions.into_iter().map(|a| self.apply(a)).collect();
        }
        // One destination: the side the first transfer writes to (a transfer the other way
        // goes on its own). At most its batches in flight, counted before any file is read.
        let kind = actions[0].kind;
        let dst = if kind == ActionKind::Upload {
            self.remote
        } else {
            self.local
        };
        let most = dst.put_new_batching().map_or(1, |b: Batching| b.batches);
        let slot = self.batches.acquire(most);
        let start = Instant::now();
        let mut outs: Vec<Option<Outcome>> = actions.iter().map(|_| None).collect();
        let mut ready: Vec<(usize, Outcome, ReadSmall)> = Vec::new();
        let mut alone = Vec::new();
        for (i, a) in actions.into_iter().enumerate() {
            if a.kind != kind {
                alone.push((i, a));
                continue;
            }
            let mut out = Outcome::new(a);
            match self.prepare_small(&mut out) {
                Ok(Some(read)) => ready.push((i, out, read)),
                Ok(None) => alone.push((i, out.action)),
                Err(e) => {
                    out.error = Some(e);
                    outs[i] = Some(out);
                }
            }
        }
        if !ready.is_empty() {
            let partials: Vec<String> = ready
                .iter()
                .map(|(_, o, ..)| partial_name(&o.action.path))
                .collect();
            let mtime = dst.capabilities().set_mtime;
            let files: Vec<NewFile<'_>> = ready
                .iter()
                .zip(&partials)
                .map(|((_, o, (s_now, data, _)), partial)| NewFile {
                    path: &o.action.path,
                    partial,
                    data,
                    mtime_ns: mtime.then_some(s_now.mtime),
                })
                .collect();
            let puts = dst.put_new_many(&files);
            drop(files);
            for ((i, mut out, (s_now, _, hash)), put) in ready.into_iter().zip(puts) {
                let size = s_now.size;
                match put {
                    Ok(PutNew::Done(d_final)) => {
                        out.bytes = size;
                        self.progress_bytes.fetch_add(size, Ordering::Relaxed);
                        record_transfer(&mut out, s_now, d_final, hash);
                    }
                    Ok(PutNew::Short(n)) => {
                        out.error = Some(format!("verification failed: wrote {n} of {size} bytes"))
                    }
                    Ok(PutNew::Appeared) => {
                        out.error = Some(
                            "destination appeared since it was planned; not overwriting it, \
                             will retry"
                                .into(),
                        )
                    }
                    // Lost connection, refused write…: the one-file path tries again and
                    // gives the error its usual form.
                    Err(_) => {
                        alone.push((i, out.action));
                        continue;
                    }
                }
                out.ms = start.elapsed().as_millis() as u64;
                outs[i] = Some(out);
            }
        }
        // The files taken one by one (a retry may wait for a new login) hold no batch slot.
        drop(slot);
        for (i, a) in alone {
            outs[i] = Some(self.apply(a));
        }
        outs.into_iter()
            .map(|o| o.expect("every action has an outcome"))
            .collect()
    }

    /// The checks and read of [`Self::transfer_once`] for a new small file headed for
    /// [`Self::put_small`]: `Ok(None)` when the transfer is not one (a checkpoint to resume, a
    /// destination that was seen, a size over [`SMALL_FILE`] now, a secure compare that the
    /// destination verifies by hash).
    fn prepare_small(&self, out: &mut Outcome) -> Result<Option<ReadSmall>, String> {
        let a = &out.action;
        let (src, dst) = match a.kind {
            ActionKind::Upload => (self.local, self.remote),
            ActionKind::Download => (self.remote, self.local),
            _ => return Ok(None),
        };
        let secure = self.job.compare == Compare::Secure;
        if a.dst.is_some()
            || self.checkpoint(&a.path, direction(a.kind)).is_some()
            || (secure && dst.capabilities().content_hash)
        {
            return Ok(None);
        }
        let planned = a.src.as_ref().ok_or("transfer without a source entry")?;
        if planned.size > SMALL_FILE {
            return Ok(None);
        }
        // Read and checked against the plan in one go: on a local disk one path lookup (the
        // open) where a stat, the open and a stat after the read took three.
        let mut data = crate::buf::AlignedBuf::new(planned.size as usize);
        let s_now = src
            .read_as_planned(&a.path, planned, &mut data)
            .map_err(|e| e.to_string())?
            .map_err(|why| why.to_string())?;
        let hash = secure.then(|| *blake3::hash(&data).as_bytes());
        check_planned_hash(out, hash.as_ref())?;
        dst.mkdir_all(parent(&a.path)).map_err(|e| e.to_string())?;
        Ok(Some((s_now, data, hash)))
    }

    fn do_move(&self, out: &mut Outcome) -> Result<(), String> {
        let a = &out.action;
        let side = self.side(if a.kind == ActionKind::MoveLocal {
            Side::Local
        } else {
            Side::Remote
        });
        let to = a.to.as_deref().ok_or("move without a destination")?;
        let now = side.stat(&a.path).map_err(|e| e.to_string())?;
        match (&now, &a.src) {
            (Some(now), Some(planned)) if same_file(now, planned) => {}
            (None, _) => return Err("source of the move is gone; will retry next run".into()),
            _ => return Err("source of the move changed since it was planned; will retry".into()),
        }
        // A file renamed over a synced one replaces it only as planned: the version seen
        // then, which goes to trash as an overwritten file does.
        match (side.stat(to).map_err(|e| e.to_string())?, &a.dst) {
            (None, _) => {}
            (Some(now), Some(seen)) if same_file(&now, seen) => {
                if now.is_file() && self.job.trash {
                    self.trash(side, to)?;
                }
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{to:?} changed since it was planned; not replacing it with a move, will retry"
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "{to:?} already exists; not overwriting it with a move"
                ))
            }
        }
        side.mkdir_all(parent(to)).map_err(|e| e.to_string())?;
        side.rename(&a.path, to).map_err(|e| e.to_string())?;
        out.base = a.base.clone();
        Ok(())
    }

    /// A server-side copy of the remote file `path` to `to`, standing for the new local file
    /// `to` (the action's planned base row holds that local entry). Only the remote works: no
    /// byte travels.
    fn do_copy(&self, out: &mut Outcome) -> Result<(), String> {
        let a = &out.action;
        let to = a.to.as_deref().ok_or("copy without a destination")?;
        // The source must still be what was planned: that is the content the copy stands for.
        if let Some(planned) = &a.src {
            match self.remote.stat(&a.path).map_err(|e| e.to_string())? {
                Some(now) if same_file(&now, planned) => {}
                None => return Err("source of the copy is gone; will retry next run".into()),
                Some(_) => {
                    return Err(
                        "source of the copy changed since it was planned; will retry".into(),
                    )
                }
            }
        }
        if self.remote.stat(to).map_err(|e| e.to_string())?.is_some() {
            return Err(format!(
                "{to:?} already exists; not overwriting it with a copy"
            ));
        }
        let planned_row = a
            .base
            .iter()
            .find(|u| u.path == to)
            .and_then(|u| u.row.clone());
        let planned_local = planned_row.as_ref().and_then(|r| r.local.clone());
        self.remote
            .mkdir_all(parent(to))
            .map_err(|e| e.to_string())?;
        self.remote
            .copy_file(&a.path, to)
            .map_err(|e| e.to_string())?;
        let Some(planned_local) = planned_local else {
            out.base = a.base.clone();
            return Ok(());
        };
        // The copy carries the local file's mtime, as an upload would, so the two sides
        // compare equal; where that fails, the base records what the remote reports anyway.
        if self.remote.capabilities().set_mtime {
            if let Err(e) = self.remote.set_mtime(to, planned_local.mtime) {
                out.note = Some(format!("copied; its modification time was not set: {e}"));
            }
        }
        // The base row is what both sides hold now, so the next run has nothing to do.
        let mut r_now = self
            .remote
            .stat(to)
            .map_err(|e| e.to_string())?
            .ok_or("copy vanished right after it was made")?;
        r_now.hash = planned_row
            .as_ref()
            .and_then(|r| r.remote.as_ref())
            .and_then(|e| e.hash.clone());
        let l_now = self
            .local
            .stat(to)
            .map_err(|e| e.to_string())?
            .filter(|now| same_file(now, &planned_local))
            .map(|mut now| {
                now.hash = planned_local.hash.clone();
                now
            });
        if l_now.is_none() {
            // Changed (or gone) while the remote copied: the copy is known as ours, and the
            // local file counts as new, so the next run uploads it over the copy.
            out.note = Some("the local file changed during the copy; it is sent next run".into());
        }
        out.base = vec![BaseUpdate {
            path: to.to_string(),
            row: Some(BaseRow {
                local: l_now,
                remote: Some(r_now),
            }),
        }];
        Ok(())
    }

    fn do_delete(&self, out: &mut Outcome) -> Result<(), String> {
        let a = &out.action;
        let side = self.side(if a.kind == ActionKind::DeleteLocal {
            Side::Local
        } else {
            Side::Remote
        });
        let Some(planned) = &a.src else {
            return Err("nothing to delete".into());
        };
        let now = side.stat(&a.path).map_err(|e| e.to_string())?;
        let Some(now) = now else {
            // Already gone: the goal is reached.
            out.base.push(BaseUpdate {
                path: a.path.clone(),
                row: None,
            });
            return Ok(());
        };
        if !same_file(&now, planned) {
            return Err("changed since it was planned; not deleting it, will retry".into());
        }
        match now.kind {
            Kind::Dir => match side.remove_dir(&a.path) {
                Ok(()) => {}
                Err(RemoteError::NotFound { .. }) => {}
                Err(e) => {
                    // Excluded or brand-new files inside: the folder stays.
                    out.skipped = true;
                    out.note = Some(format!("folder kept: {e}"));
                    return Ok(());
                }
            },
            _ => {
                if self.job.trash {
                    let to = self.trash(side, &a.path)?;
                    out.note = Some(format!("moved to {to}"));
                } else {
                    side.remove_file(&a.path).map_err(|e| e.to_string())?;
                }
            }
        }
        out.base.push(BaseUpdate {
            path: a.path.clone(),
            row: None,
        });
        Ok(())
    }

    /// Move `path` into this run's trash folder on `side`; returns the trash path.
    ///
    /// A path trashed twice on one day gets `~2`, `~3`…; when an earlier trashed *file*
    /// occupies a folder name this path needs (a file that later became a folder), the first
    /// such component is suffixed instead, so trashing never fails for lack of a name.
    fn trash(&self, side: &dyn Remote, path: &str) -> Result<String, String> {
        let day = format!("{TRASH_DIR}/{}", self.trash_date);
        // Usually the day's trash has no such path yet: its folder is made and the name taken
        // with a rename that refuses an existing one, without looking first (a round trip
        // less per file on a network side). A clash goes the long way below.
        let first = format!("{day}/{path}");
        if side.mkdir_all(parent(&first)).is_ok()
            && side.rename_new(path, &first).map_err(|e| e.to_string())?
        {
            return Ok(first);
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut last_err = String::new();
        for attempt in 0..parts.len() {
            // attempt 0: the path as it is; attempt k: component k-1 renamed `NAME~N`.
            let mut n = 2;
            loop {
                let rel = if attempt == 0 {
                    path.to_string()
                } else {
                    let mut p = parts.clone();
                    let renamed = format!("{}~{n}", parts[attempt - 1]);
                    p[attempt - 1] = &renamed;
                    p.join("/")
                };
                let base = format!("{day}/{rel}");
                let mut target = base.clone();
                if attempt == 0 {
                    let taken = |t: &str| side.stat(t).map(|e| e.is_some());
                    if taken(&target).map_err(|e| e.to_string())? {
                        let m = first_free_suffix(|m| taken(&format!("{base}~{m}")))
                            .map_err(|e| e.to_string())?;
                        target = format!("{base}~{m}");
                    }
                } else if side.stat(&target).map_err(|e| e.to_string())?.is_some() {
                    n += 1;
                    continue;
                }
                match side.mkdir_all(parent(&target)) {
                    Ok(()) => {
                        side.rename(path, &target).map_err(|e| e.to_string())?;
                        return Ok(target);
                    }
                    Err(e) => {
                        last_err = e.to_string();
                        if attempt == 0 || n > 50 {
                            break;
                        }
                        n += 1;
                    }
                }
            }
        }
        Err(format!("cannot move {path:?} to the trash: {last_err}"))
    }

    fn do_mkdir(&self, out: &mut Outcome) -> Result<(), String> {
        let a = &out.action;
        let side = self.side(if a.kind == ActionKind::MkdirLocal {
            Side::Local
        } else {
            Side::Remote
        });
        side.mkdir_all(&a.path).map_err(|e| e.to_string())?;
        let l = self.local.stat(&a.path).map_err(|e| e.to_string())?;
        let r = self.remote.stat(&a.path).map_err(|e| e.to_string())?;
        if let (Some(l), Some(r)) = (l, r) {
            if l.is_dir() && r.is_dir() {
                out.base.push(BaseUpdate {
                    path: a.path.clone(),
                    row: Some(BaseRow {
                        local: Some(l),
                        remote: Some(r),
                    }),
                });
            }
        }
        Ok(())
    }

    fn checkpoint(&self, path: &str, dir: &str) -> Option<Checkpoint> {
        self.checkpoints
            .lock()
            .unwrap()
            .get(&(path.to_string(), dir.to_string()))
            .copied()
    }

    fn put_checkpoint(&self, path: &str, dir: &str, cp: Checkpoint) -> Result<(), String> {
        self.store
            .lock()
            .unwrap()
            .put_checkpoint(self.job_id, path, dir, &cp)
            .map_err(|e| e.to_string())?;
        self.checkpoints
            .lock()
            .unwrap()
            .insert((path.to_string(), dir.to_string()), cp);
        Ok(())
    }

    fn clear_checkpoint(&self, path: &str, dir: &str) -> Result<(), String> {
        let had = self
            .checkpoints
            .lock()
            .unwrap()
            .remove(&(path.to_string(), dir.to_string()))
            .is_some();
        if had {
            self.store
                .lock()
                .unwrap()
                .clear_checkpoint(self.job_id, path, dir)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A transfer cut by a lost connection is tried again once the side has reconnected
    /// (up to [`TRANSFER_RECONNECTS`] times), resuming from its last checkpoint; when the side
    /// cannot reconnect, the transfer is an `error` and the next run resumes it.
    fn do_transfer(&self, out: &mut Outcome) -> Result<(), String> {
        let mut reconnects = 0;
        loop {
            let ids = (self.local.connection_id(), self.remote.connection_id());
            match self.transfer_once(out) {
                Err(e)
                    if reconnects < TRANSFER_RECONNECTS && !self.cancel.load(Ordering::Relaxed) =>
                {
                    match self.reconnected(ids) {
                        Ok(true) => {}
                        Ok(false) => return Err(e),
                        Err(why) => return Err(format!("{e}; {why}")),
                    }
                    reconnects += 1;
                    tracing::warn!(path = %out.action.path, error = %e, "connection lost during a transfer; retrying it on the new connection");
                    out.base.clear();
                    out.note = None;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    if reconnects > 0 {
                        let done = out.note.take().unwrap_or_else(|| "sent again".into());
                        out.note = Some(format!("connection lost and re-established; {done}"));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Did either side replace a connection lost since `ids` were taken? `Err` when one was
    /// lost and could not be replaced.
    fn reconnected(&self, ids: (u64, u64)) -> Result<bool, String> {
        let local = self.local.reconnect(ids.0).map_err(|e| e.to_string())?;
        let remote = self.remote.reconnect(ids.1).map_err(|e| e.to_string())?;
        Ok(local || remote)
    }

    fn transfer_once(&self, out: &mut Outcome) -> Result<(), String> {
        let a = out.action.clone();
        let up = a.kind == ActionKind::Upload;
        let (src, dst) = if up {
            (self.local, self.remote)
        } else {
            (self.remote, self.local)
        };
        let dir = direction(a.kind);
        let path = a.path.as_str();
        let planned = a.src.as_ref().ok_or("transfer without a source entry")?;

        // The source must still be what was planned, the destination what was seen.
        let s_now = source_as_planned(src, &a)?;
        // A destination planned as absent is not looked up now: the partial takes its name
        // with a rename that refuses an existing file (`rename_new`), which closes the race
        // and saves a round trip per new file on a network remote.
        let d_now = match &a.dst {
            None => None,
            Some(_) => dst.stat(path).map_err(|e| e.to_string())?,
        };
        match (&d_now, &a.dst) {
            (None, _) => {}
            (Some(now), Some(seen)) if same_file(now, seen) => {}
            (Some(_), _) => {
                return Err(
                    "destination changed since it was planned; not overwriting it, will retry"
                        .into(),
                )
            }
        }

        let size = s_now.size;
        let partial = partial_name(path);
        dst.mkdir_all(parent(path)).map_err(|e| e.to_string())?;

        // Resume from a checkpoint that matches this very source version.
        let mut offset = 0u64;
        // Of `offset`, what a sync made durable.
        let mut durable = 0u64;
        if let Some(cp) = self.checkpoint(path, dir) {
            let same_source = cp.src_size == size
                && cp.src_mtime == s_now.mtime
                && (cp.src_inode.is_none() || cp.src_inode == s_now.inode);
            let partial_len = dst
                .stat(&partial)
                .ok()
                .flatten()
                .filter(|e| e.is_file())
                .map(|e| e.size);
            if same_source && dst.capabilities().resume_write {
                if let Some(len) = partial_len {
                    if len >= cp.offset && cp.offset <= size {
                        offset = cp.offset;
                        durable = cp.durable.min(offset);
                    }
                }
            }
            if offset == 0 {
                self.clear_checkpoint(path, dir)?;
            }
        }
        let resumed_at = offset;

        let secure = self.job.compare == Compare::Secure;
        let mut hasher = secure.then(blake3::Hasher::new);
        if let (Some(h), true) = (hasher.as_mut(), offset > 0) {
            // Hash the prefix already sent, from the source, so the whole file is verified.
            let mut r = src.open_read(path, 0).map_err(|e| e.to_string())?;
            let mut left = offset;
            let mut buf = crate::buf::AlignedBuf::new(1 << 20);
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = r
                    .read(&mut buf[..want])
                    .map_err(|e| format!("read {path:?}: {e}"))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
        }

        // A new small file is read whole and handed over in one call, which a network side
        // pipelines (`Remote::put_new`). Where the side can hash what it stored, secure mode
        // takes the chunked path below, which checks that hash before the rename.
        if a.dst.is_none()
            && offset == 0
            && size <= SMALL_FILE
            && !(hasher.is_some() && dst.capabilities().content_hash)
        {
            return self.put_small(out, src, dst, s_now, hasher);
        }

        // The same for a small file that replaces one: written whole in one call.
        if a.dst.is_some()
            && offset == 0
            && size <= SMALL_FILE
            && !(hasher.is_some() && dst.capabilities().content_hash)
        {
            return self.replace_small(out, src, dst, s_now, hasher, d_now.as_ref());
        }

        let result = self.copy_chunks(
            src,
            dst,
            path,
            &partial,
            dir,
            &s_now,
            (offset, durable),
            &mut hasher,
        );
        let (sent, mut writer) = match result {
            Ok(done) => done,
            Err(e) => {
                // Keep a checkpointed partial for the next run; drop one that cannot resume.
                if self.checkpoint(path, dir).is_none() {
                    let _ = dst.remove_file(&partial);
                }
                out.bytes = 0;
                return Err(e);
            }
        };
        out.bytes = sent;
        // The mtime is set through the still-open partial where the backend can (futimens +
        // fstat: no path lookups), and what that reports is the partial's, and after the
        // rename the file's, final state.
        let set_mtime = dst.capabilities().set_mtime;
        let finished = if set_mtime {
            writer.set_mtime_and_stat(s_now.mtime)
        } else {
            Ok(None)
        };
        let closed = writer.close();
        let finished = finished.map_err(|e| e.to_string())?;
        closed.map_err(|e| e.to_string())?;

        // Verify: the source did not change while it was read, the partial is complete.
        let discard = |msg: String| -> Result<(), String> {
            let _ = dst.remove_file(&partial);
            let _ = self.clear_checkpoint(path, dir);
            Err(msg)
        };
        let s_after = src.stat(path).map_err(|e| e.to_string())?;
        if !s_after.as_ref().is_some_and(|e| same_file(e, &s_now)) {
            return discard("source changed while it was read; not committed, will retry".into());
        }
        // The mtime is set before the partial is checked, so that one stat both verifies it
        // and describes the final file (a rename keeps size, mtime and inode): on a network
        // remote that is one round trip less per file. Where the writer set it on the open
        // file, its fstat already is that stat.
        if set_mtime && finished.is_none() {
            dst.set_mtime(&partial, s_now.mtime)
                .map_err(|e| e.to_string())?;
        }
        let p_now = match finished {
            Some(e) => Some(e),
            None => dst.stat(&partial).map_err(|e| e.to_string())?,
        };
        let d_final = match p_now {
            Some(e) if e.is_file() && e.size == size => e,
            other => {
                return discard(format!(
                    "verification failed: wrote {} of {size} bytes",
                    other.map(|e| e.size).unwrap_or(0)
                ))
            }
        };
        let mut hash = None;
        if let Some(h) = hasher {
            let got = *h.finalize().as_bytes();
            if planned.hash.as_deref().is_some_and(|want| *want != got) {
                return discard("source content differs from the planned hash; will retry".into());
            }
            if dst.capabilities().content_hash {
                let back = dst.hash(&partial).map_err(|e| e.to_string())?;
                if back != got {
                    return discard("verification failed: content hash mismatch".into());
                }
            }
            hash = Some(got);
        }

        // The version being replaced goes to trash; then the partial takes its name.
        if let Some(old) = &d_now {
            if old.is_file() && self.job.trash {
                self.trash(dst, path)?;
            }
        }
        if a.dst.is_none() {
            if !dst.rename_new(&partial, path).map_err(|e| e.to_string())? {
                return discard(
                    "destination appeared since it was planned; not overwriting it, will retry"
                        .into(),
                );
            }
        } else {
            dst.rename(&partial, path).map_err(|e| e.to_string())?;
        }
        self.clear_checkpoint(path, dir)?;
        record_transfer(out, s_now, d_final, hash);
        if resumed_at > 0 {
            out.note = Some(format!(
                "resumed at byte {resumed_at} of {size}; sent {sent} bytes"
            ));
        }
        Ok(())
    }

    /// A new file of at most [`SMALL_FILE`] bytes: read whole, checked against the source
    /// (still the planned version, and its planned hash in secure mode) before anything is
    /// written, then written, verified and renamed into place by [`Remote::put_new`].
    fn put_small(
        &self,
        out: &mut Outcome,
        src: &dyn Remote,
        dst: &dyn Remote,
        s_now: Entry,
        hasher: Option<blake3::Hasher>,
    ) -> Result<(), String> {
        let path = out.action.path.clone();
        let size = s_now.size;
        let (data, hash) = read_small(out, src, &s_now, hasher)?;
        let mtime = dst.capabilities().set_mtime.then_some(s_now.mtime);
        let put = dst
            .put_new(&path, &partial_name(&path), &data, mtime)
            .map_err(|e| e.to_string())?;
        out.bytes = size;
        self.progress_bytes.fetch_add(size, Ordering::Relaxed);
        match put {
            PutNew::Done(d_final) => {
                record_transfer(out, s_now, d_final, hash);
                Ok(())
            }
            PutNew::Short(n) => Err(format!("verification failed: wrote {n} of {size} bytes")),
            PutNew::Appeared => Err(
                "destination appeared since it was planned; not overwriting it, will retry".into(),
            ),
        }
    }

    /// A small file that replaces the destination's `d_now` (still as planned): read whole and
    /// checked as [`Self::put_small`] does, written to the partial in one call
    /// ([`Remote::write_whole`], two round trips over SFTP where the steps took four), checked,
    /// then the old version goes to trash and the partial takes its name.
    fn replace_small(
        &self,
        out: &mut Outcome,
        src: &dyn Remote,
        dst: &dyn Remote,
        s_now: Entry,
        hasher: Option<blake3::Hasher>,
        d_now: Option<&Entry>,
    ) -> Result<(), String> {
        let path = out.action.path.clone();
        let partial = partial_name(&path);
        let size = s_now.size;
        let (data, hash) = read_small(out, src, &s_now, hasher)?;
        let mtime = dst.capabilities().set_mtime.then_some(s_now.mtime);
        let discard = |msg: String| -> Result<(), String> {
            let _ = dst.remove_file(&partial);
            Err(msg)
        };
        let d_final = match dst.write_whole(&partial, &data, mtime) {
            Ok(Some(e)) if e.is_file() && e.size == size => e,
            Ok(other) => {
                return discard(format!(
                    "verification failed: wrote {} of {size} bytes",
                    other.map(|e| e.size).unwrap_or(0)
                ))
            }
            Err(e) => return discard(e.to_string()),
        };
        out.bytes = size;
        self.progress_bytes.fetch_add(size, Ordering::Relaxed);
        if d_now.is_some_and(|old| old.is_file()) && self.job.trash {
            if let Err(e) = self.trash(dst, &path) {
                return discard(e);
            }
        }
        if let Err(e) = dst.rename(&partial, &path) {
            return discard(e.to_string());
        }
        record_transfer(out, s_now, d_final, hash);
        Ok(())
    }

    /// [`Self::copy_chunks_inner`], keeping the transfer board (if any) up to date.
    #[allow(clippy::too_many_arguments)]
    fn copy_chunks(
        &self,
        src: &dyn Remote,
        dst: &dyn Remote,
        path: &str,
        partial: &str,
        dir: &str,
        s_now: &Entry,
        from: (u64, u64),
        hasher: &mut Option<blake3::Hasher>,
    ) -> Result<(u64, Box<dyn crate::remote::WriteHandle>), String> {
        let r = self.copy_chunks_inner(src, dst, path, partial, dir, s_now, from, hasher);
        if let Some(b) = self.board {
            b.lock()
                .unwrap()
                .remove(&(self.job.name.clone(), path.to_string(), dir.to_string()));
        }
        r
    }

    /// Copy `src:path` from `from.0` (of which `from.1` bytes are durable) into
    /// `dst:partial`, checkpointing after each chunk that is not the last. Returns the bytes
    /// sent and the writer, still open.
    #[allow(clippy::too_many_arguments)]
    fn copy_chunks_inner(
        &self,
        src: &dyn Remote,
        dst: &dyn Remote,
        path: &str,
        partial: &str,
        dir: &str,
        s_now: &Entry,
        (mut offset, durable): (u64, u64),
        hasher: &mut Option<blake3::Hasher>,
    ) -> Result<(u64, Box<dyn crate::remote::WriteHandle>), String> {
        let size = s_now.size;
        let start = offset;
        // `chunk_size` is the unit written at a time (capped at 4 MiB of memory per worker);
        // a checkpoint is taken every `checkpoint_every` bytes: after an fsync of the partial
        // file, so it never claims data that is not on disk. An fsync per 4 MiB would halve
        // large-file throughput on this class of disk; resending up to 64 MiB after a crash
        // costs far less. Where the writer can sync in the background (`sync_begin`), writing
        // goes on meanwhile and the checkpoint is recorded once the sync has finished: it
        // claims as durable the offset the sync began at, never more.
        let chunk = self.job.chunk_size.clamp(1, 4 << 20);
        let checkpoint_every = self.job.chunk_size.max(CHECKPOINT_MIN);
        // Where the last checkpoint claims data durable (from the checkpoint this transfer
        // resumed, first).
        let mut durable = durable.min(offset);
        // The offset a background sync began at (and when), recorded as a checkpoint when it
        // is done.
        let mut syncing: Option<(u64, Instant)> = None;
        let mut pacer = SyncPacer::new(Instant::now());
        let mut reader = src.open_read(path, offset).map_err(|e| e.to_string())?;
        let mut writer = dst.open_write(partial, offset).map_err(|e| e.to_string())?;
        // Where writes outlive this process (a local disk), a checkpoint is recorded without a
        // sync every `checkpoint_every` bytes, trusted until the machine restarts, and syncs
        // come `UNSYNCED_PER_SYNC` times less often: a large local copy ran at the disk's
        // fdatasync speed where `cp` and rsync run at the page cache's.
        let outlives = writer.outlives_process();
        let sync_every = if outlives {
            checkpoint_every.saturating_mul(UNSYNCED_PER_SYNC)
        } else {
            checkpoint_every
        };
        // The offset the last checkpoint claims (durable or not).
        let mut recorded = offset;
        let buf_len = chunk.min(size.saturating_sub(offset)).max(1) as usize;
        let mut buf = crate::buf::AlignedBuf::new(buf_len);
        let checkpoint_at = |offset, durable| Checkpoint {
            src_size: size,
            src_mtime: s_now.mtime,
            src_inode: s_now.inode,
            offset,
            durable,
        };
        while offset < size {
            if self.cancel.load(Ordering::Relaxed) {
                // Stopping (SIGTERM): what was written is made durable and checkpointed, so
                // the next run resumes here.
                // (A stop is often the machine shutting down: made durable even where
                // writes outlive the process.)
                if (offset > durable || syncing.is_some()) && writer.sync().is_ok() {
                    self.put_checkpoint(path, dir, checkpoint_at(offset, offset))?;
                }
                writer.close().map_err(|e| e.to_string())?;
                return Err("interrupted; will resume from the last checkpoint".into());
            }
            let want = ((size - offset).min(buf.len() as u64)) as usize;
            let mut filled = 0;
            while filled < want {
                let n = reader
                    .read(&mut buf[filled..want])
                    .map_err(|e| format!("read {path:?}: {e}"))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Err(
                    "source is shorter than planned (changed while read); will retry".into(),
                );
            }
            writer
                .write_all(&buf[..filled])
                .map_err(|e| e.to_string())?;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..filled]);
            }
            offset += filled as u64;
            self.progress_bytes
                .fetch_add(filled as u64, Ordering::Relaxed);
            if let Some(b) = self.board {
                b.lock().unwrap().insert(
                    (self.job.name.clone(), path.to_string(), dir.to_string()),
                    (offset, size),
                );
            }
            if outlives && offset < size && offset - recorded >= checkpoint_every {
                self.put_checkpoint(path, dir, checkpoint_at(offset, durable))?;
                recorded = offset;
            }
            if offset < size
                && offset - durable >= sync_every
                && syncing.is_none()
                && pacer.may_begin(Instant::now())
                && worth_a_sync(offset, durable, size)
            {
                let began = Instant::now();
                writer.sync_begin().map_err(|e| e.to_string())?;
                syncing = Some((offset, began));
            }
            if let Some((at, began)) = syncing {
                if writer.sync_done().map_err(|e| e.to_string())? {
                    // Durable first, then claimed: a checkpoint never claims as durable what
                    // is not on disk (nor, without a sync, what the process did not write).
                    recorded = recorded.max(at);
                    self.put_checkpoint(path, dir, checkpoint_at(recorded, at))?;
                    durable = at;
                    syncing = None;
                    pacer.done(began, Instant::now());
                }
            }
        }
        // A source that grew is caught by the stat after reading. The caller closes the
        // writer (after setting the mtime through it).
        Ok((offset - start, writer))
    }
}

/// The first free `~N` suffix (N >= 2) of a name trashed again on the same day, where
/// `taken(N)` looks one up. Suffixes are taken in order, so the taken ones are 2..K: doubling
/// N and then halving the gap finds K+1 in about 2·log2(K) lookups, where trying 2, 3, …
/// took K (a document saved 200 times in a day cost 200 round trips per save on a network
/// side). After a gap (a trashed copy deleted by hand) the suffix found is free and above
/// every taken one the probes saw, never one in use.
fn first_free_suffix<E>(mut taken: impl FnMut(u64) -> Result<bool, E>) -> Result<u64, E> {
    // `lo` is taken, `hi` free.
    let mut lo = 1u64;
    let mut hi = 2u64;
    while taken(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if taken(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// A small source file read whole, checked to be still the planned version (and, in secure
/// mode, to have the planned hash), with its hash when `hasher` is given.
fn read_small(
    out: &Outcome,
    src: &dyn Remote,
    s_now: &Entry,
    hasher: Option<blake3::Hasher>,
) -> Result<(crate::buf::AlignedBuf, Option<[u8; 32]>), String> {
    let path = out.action.path.as_str();
    // Page-aligned (see `crate::buf`): 1,000 files of 1 MiB are a GiB of kernel copies.
    let mut data = crate::buf::AlignedBuf::new(s_now.size as usize);
    crate::remote::read_whole_unchanged(src, path, s_now, &mut data)
        .map_err(|e| e.to_string())?
        .map_err(|why| why.to_string())?;
    let hash = hasher.map(|mut h| *h.update(&data).finalize().as_bytes());
    check_planned_hash(out, hash.as_ref())?;
    Ok((data, hash))
}

/// In secure mode, the content read must have the hash the plan saw.
fn check_planned_hash(out: &Outcome, got: Option<&[u8; 32]>) -> Result<(), String> {
    let planned = out.action.src.as_ref().and_then(|e| e.hash.as_deref());
    match (got, planned) {
        (Some(got), Some(want)) if got != want => {
            Err("source content differs from the planned hash; will retry".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_free_trash_suffix_takes_logarithmically_many_lookups() {
        for k in [1u64, 2, 3, 4, 5, 7, 8, 9, 100, 1000, 4097] {
            // Suffixes 2..=k are taken (k = 1: none).
            let mut lookups = 0;
            let got = first_free_suffix(|n| {
                lookups += 1;
                Ok::<_, ()>(n <= k)
            })
            .unwrap();
            assert_eq!(got, k + 1, "taken up to {k}");
            let bound = 2 * (64 - k.leading_zeros()) + 1;
            assert!(
                lookups <= bound,
                "{lookups} lookups for {k} taken (bound {bound})"
            );
        }
        // The second trash of a day: one lookup, as before.
        let mut lookups = 0;
        assert_eq!(
            first_free_suffix(|_| {
                lookups += 1;
                Ok::<_, ()>(false)
            }),
            Ok(2)
        );
        assert_eq!(lookups, 1);
        // A gap below the taken ones is not reused: the result is free, above what was seen.
        let taken = |n: u64| Ok::<_, ()>(n == 2 || n == 4);
        let got = first_free_suffix(taken).unwrap();
        assert!(!taken(got).unwrap());
        // Errors stop the search.
        assert_eq!(first_free_suffix(|_| Err::<bool, _>("down")), Err("down"));
    }

    #[test]
    fn a_sync_is_worth_it_while_as_much_is_left_to_send_as_it_makes_durable() {
        const M: u64 = 1 << 20;
        // 1 GiB, nothing durable yet: at 64 MiB, and up to half-way.
        assert!(worth_a_sync(64 * M, 0, 1024 * M));
        assert!(worth_a_sync(512 * M, 0, 1024 * M));
        assert!(!worth_a_sync(513 * M, 0, 1024 * M));
        // Durable up to 800 MiB: a sync at 900 MiB still pays, one at 950 MiB does not.
        assert!(worth_a_sync(900 * M, 800 * M, 1024 * M));
        assert!(!worth_a_sync(950 * M, 800 * M, 1024 * M));
        // A resumed transfer counts from where it resumed.
        assert!(worth_a_sync(700 * M, 600 * M, 1024 * M));
        assert!(!worth_a_sync(1000 * M, 600 * M, 1024 * M));
    }

    #[test]
    fn the_first_sync_may_begin_at_once() {
        let t0 = Instant::now();
        assert!(SyncPacer::new(t0).may_begin(t0));
    }

    #[test]
    fn a_sync_is_followed_by_spacing_times_its_duration() {
        let t0 = Instant::now();
        let mut p = SyncPacer::new(t0);
        // A sync of 100 ms: the next may not begin for 400 ms after it ended.
        let ended = t0 + Duration::from_millis(100);
        p.done(t0, ended);
        assert!(!p.may_begin(ended));
        assert!(!p.may_begin(ended + Duration::from_millis(399)));
        assert!(p.may_begin(ended + Duration::from_millis(400)));
        // A quick sync keeps checkpoints close together.
        let t1 = ended + Duration::from_millis(400);
        p.done(t1, t1 + Duration::from_millis(1));
        assert!(p.may_begin(t1 + Duration::from_millis(5)));
    }
}
