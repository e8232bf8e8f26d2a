//! PURE: folds the change journal of one job into the next batch of paths to sync.
//!
//! The watcher records what inotify saw (create, write, close-after-write, delete, rename,
//! queue overflow); this module decides which paths are ready and when to look again. It does
//! not decide what to do with a path: a ready path is re-planned by the same three-way planner
//! as a full run, restricted to that path and what lies below it. That is why the live path and
//! a reconcile always end in the same state, and why the rules here can stay small:
//!
//! - a file closed after writing, a rename or a new folder is ready at once, unless the path is
//!   *hot* (a batch synced it less than the debounce ago): a hot path waits until it has been
//!   quiet for the debounce, so a file rewritten 50 times in a row is sent once or twice, not
//!   50 times, while a new file still goes out in milliseconds;
//! - a delete waits until its path has been quiet for the debounce, and paths moved in wait
//!   with it: a rename whose two halves were recorded apart (a `remove`, then a `moved_in` or
//!   the `rename`) still reaches the planner as one batch, which moves the file instead of
//!   deleting it and uploading it again;
//! - writes to a file that stays open fold into one upload once the file has been quiet for the
//!   debounce (a later close makes it ready at once);
//! - a path created and deleted again within the window cancels out (its changes are dropped);
//! - a rename makes both names ready, so a chain `a → b → c` re-plans `a`, `b` and `c`, and the
//!   planner matches the one move `a → c` by inode; the names of a rename are due together
//!   (never one without the other, which would turn the move into an upload and a delete);
//! - a ready folder swallows every ready path below it (the folder's subtree is re-planned as a
//!   whole, so a renamed folder is one move however many files it holds);
//! - a queue overflow or lost watch asks for a full reconcile, which consumes everything.

use std::collections::{BTreeMap, HashMap};

/// What the watcher recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A file or folder was created.
    Create,
    /// A file or folder was moved in from outside the tree (possibly over an existing one).
    MovedIn,
    /// File data was written (the file may still be open).
    Modify,
    /// A file opened for writing was closed.
    CloseWrite,
    /// Metadata changed (mtime, mode).
    Attrib,
    /// A file or folder disappeared (deleted, or moved out of the tree).
    Remove,
    /// An in-tree rename: `path` → `to`.
    Rename,
    /// Events were lost (queue overflow, watch limit, watcher error): reconcile everything.
    Overflow,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::Create,
        ChangeKind::MovedIn,
        ChangeKind::Modify,
        ChangeKind::CloseWrite,
        ChangeKind::Attrib,
        ChangeKind::Remove,
        ChangeKind::Rename,
        ChangeKind::Overflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::MovedIn => "moved_in",
            ChangeKind::Modify => "modify",
            ChangeKind::CloseWrite => "close_write",
            ChangeKind::Attrib => "attrib",
            ChangeKind::Remove => "remove",
            ChangeKind::Rename => "rename",
            ChangeKind::Overflow => "overflow",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    /// When it was recorded, nanoseconds since the Unix epoch.
    pub at_ns: i64,
    pub kind: ChangeKind,
    /// Path relative to the job's local root ("" for the root itself).
    pub path: String,
    /// The new name of a rename.
    pub to: Option<String>,
    /// The path was a folder when the event was recorded.
    pub dir: bool,
}

/// The next thing to do for a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Run a full reconcile instead of a batch (consumes every change given).
    pub reconcile: bool,
    /// Paths to re-plan now (each with whatever lies below it), sorted, none below another.
    pub ready: Vec<String>,
    /// Changes this batch covers (ready paths, and paths below a ready folder).
    pub consumed: Vec<i64>,
    /// Changes that cancel out (created and deleted within the window) or are noise.
    pub dropped: Vec<i64>,
    /// When to look again for paths still being written (the earliest debounce deadline).
    pub wake_at_ns: Option<i64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        !self.reconcile
            && self.ready.is_empty()
            && self.consumed.is_empty()
            && self.dropped.is_empty()
    }
}

#[derive(Default)]
struct PathState {
    ids: Vec<i64>,
    /// The first change seen for the path in this window was its creation.
    born: bool,
    /// The path does not exist after the last change (deleted or renamed away).
    gone: bool,
    /// Written and not yet closed: the time of the last write.
    open_since: Option<i64>,
    /// Ready now (closed, deleted, renamed, created folder, metadata change).
    ready: bool,
    /// The last change was a `remove`: due only once quiet for the debounce (see below).
    removed: bool,
    /// The last change was a `moved_in`.
    moved_in: bool,
    /// A change other than noise touched it.
    touched: bool,
    /// The time of its last change.
    last: i64,
}

impl PathState {
    /// A change that settles the path at once: it is there now (`gone = false`: moved in,
    /// renamed to) or not (removed, renamed away), and nothing is being written to it.
    fn settle(&mut self, id: i64, gone: bool) {
        self.ids.push(id);
        self.touched = true;
        self.gone = gone;
        self.open_since = None;
        self.ready = true;
    }

    /// Note what the path's last change was.
    fn last_was(&mut self, kind: ChangeKind) {
        self.removed = kind == ChangeKind::Remove;
        self.moved_in = kind == ChangeKind::MovedIn;
    }
}

/// Is `p` equal to or below `dir`? (`dir` = "" is the root, above everything.)
pub fn is_under(p: &str, dir: &str) -> bool {
    dir.is_empty()
        || p == dir
        || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

/// Fold `changes` (in journal order) into the batch due at `now_ns`. `recent` holds, for paths
/// synced by a recent batch, when that batch ran: such a path is hot until the debounce has
/// passed.
pub fn coalesce(
    changes: &[Change],
    now_ns: i64,
    debounce_ns: i64,
    recent: &HashMap<String, i64>,
) -> Batch {
    let mut out = Batch::default();
    if changes.iter().any(|c| c.kind == ChangeKind::Overflow) {
        out.reconcile = true;
        out.consumed = changes.iter().map(|c| c.id).collect();
        return out;
    }
    let mut paths: BTreeMap<&str, PathState> = BTreeMap::new();
    let mut noise: Vec<i64> = Vec::new();
    for c in changes {
        for p in std::iter::once(&c.path).chain(c.to.as_ref()) {
            if let Some(s) = paths.get_mut(p.as_str()) {
                s.last = s.last.max(c.at_ns);
            } else if c.kind != ChangeKind::Overflow {
                paths.entry(p.as_str()).or_default().last = c.at_ns;
            }
        }
        for p in std::iter::once(&c.path).chain(c.to.as_ref()) {
            if let Some(s) = paths.get_mut(p.as_str()) {
                // (A rename's new name is neither removed nor moved in.)
                s.last_was(if Some(p) == c.to.as_ref() {
                    ChangeKind::Rename
                } else {
                    c.kind
                });
            }
        }
        match c.kind {
            ChangeKind::Overflow => unreachable!("handled above"),
            // A folder's own metadata or data events say nothing about its contents.
            ChangeKind::Modify | ChangeKind::CloseWrite | ChangeKind::Attrib if c.dir => {
                noise.push(c.id);
            }
            ChangeKind::Create => {
                let s = paths.entry(&c.path).or_default();
                if s.ids.is_empty() {
                    s.born = true;
                }
                s.ids.push(c.id);
                s.gone = false;
                s.touched = true;
                if c.dir {
                    s.ready = true;
                } else {
                    // A new file is being written until it is closed; an empty file that is
                    // never written becomes ready after the debounce.
                    s.open_since = Some(c.at_ns);
                }
            }
            ChangeKind::MovedIn => paths.entry(&c.path).or_default().settle(c.id, false),
            ChangeKind::Modify => {
                let s = paths.entry(&c.path).or_default();
                s.ids.push(c.id);
                s.touched = true;
                s.open_since = Some(c.at_ns);
            }
            ChangeKind::CloseWrite | ChangeKind::Attrib => {
                let s = paths.entry(&c.path).or_default();
                s.ids.push(c.id);
                s.touched = true;
                if c.kind == ChangeKind::CloseWrite {
                    s.open_since = None;
                }
                if s.open_since.is_none() {
                    s.ready = true;
                }
            }
            ChangeKind::Remove => paths.entry(&c.path).or_default().settle(c.id, true),
            ChangeKind::Rename => {
                paths.entry(&c.path).or_default().settle(c.id, true);
                // Renamed over a file being written: the rename is what counts now.
                if let Some(to) = &c.to {
                    paths.entry(to).or_default().settle(c.id, false);
                }
            }
        }
    }

    // Cancelled: created and gone again within the window (a rename away leaves its new name
    // ready, which keeps the rename's change consumed).
    let mut cancelled: Vec<&str> = Vec::new();
    for (p, s) in &paths {
        if s.born && s.gone {
            cancelled.push(p);
        }
    }
    let mut dropped_ids: Vec<i64> = noise;
    for p in &cancelled {
        // A cancelled folder cancels what happened below it too.
        let below: Vec<&str> = paths
            .range::<str, _>((std::ops::Bound::Included(*p), std::ops::Bound::Unbounded))
            .take_while(|(q, _)| is_under(q, p))
            .map(|(q, _)| *q)
            .collect();
        for q in below {
            if let Some(s) = paths.remove(q) {
                dropped_ids.extend(s.ids);
            }
        }
    }

    // A removal waits until the path has been quiet for the debounce, and while one waits, so
    // do paths moved in: a rename whose two halves reached the journal apart (the watcher
    // saw no partner in time, under load) is a `remove` and a `moved_in` (or a `remove` and
    // then the `rename`), and a batch that ran the removal alone would delete the remote copy
    // and then upload it again under the new name.
    let removals_quiet_at: Option<i64> = paths
        .values()
        .filter(|s| s.touched && s.removed)
        .map(|s| s.last.saturating_add(debounce_ns))
        .filter(|&q| q > now_ns)
        .max();

    // Ready or due: closed, or quiet for the debounce.
    let mut ready: Vec<&str> = Vec::new();
    let mut wake: Option<i64> = None;
    // Removals and moves-in that wait, with when (a ready folder above one takes it along).
    let mut waiting: Vec<(&str, i64)> = Vec::new();
    for (p, s) in &paths {
        if !s.touched {
            continue;
        }
        let wait_until = if s.removed {
            Some(s.last.saturating_add(debounce_ns))
        } else if s.moved_in {
            removals_quiet_at
        } else {
            None
        };
        if let Some(q) = wait_until.filter(|&q| q > now_ns) {
            waiting.push((p, q));
            continue;
        }
        // A file still open for writing waits for its close or the debounce, even when an
        // earlier close made it ready: the next close brings its final content.
        let due = match s.open_since {
            Some(t) => {
                let deadline = t.saturating_add(debounce_ns);
                if deadline <= now_ns {
                    true
                } else {
                    wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
                    false
                }
            }
            None => {
                let hot = recent
                    .get(*p)
                    .is_some_and(|t| t.saturating_add(debounce_ns) > s.last.min(now_ns));
                let quiet_at = s.last.saturating_add(debounce_ns);
                if s.ready && hot && quiet_at > now_ns {
                    wake = Some(wake.map_or(quiet_at, |w| w.min(quiet_at)));
                    false
                } else {
                    s.ready
                }
            }
        };
        if due {
            ready.push(p);
        }
    }
    // The two names of a rename are due together.
    loop {
        let mut changed = false;
        for c in changes {
            let (ChangeKind::Rename, Some(to)) = (c.kind, &c.to) else {
                continue;
            };
            let (a, b) = (c.path.as_str(), to.as_str());
            if !paths.contains_key(a) || !paths.contains_key(b) {
                continue;
            }
            let ra = ready.contains(&a);
            let rb = ready.contains(&b);
            if ra != rb {
                ready.retain(|p| *p != a && *p != b);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A ready folder (or any ready path) swallows the ready paths below it. Paths still being
    // written below a ready folder are left for later: the folder's subtree scan sees the file
    // as it is now, and the close brings it back.
    ready.sort_unstable();
    let mut roots: Vec<&str> = Vec::new();
    for p in ready {
        if roots.last().is_some_and(|r| is_under(p, r)) {
            continue;
        }
        roots.push(p);
    }
    for (p, q) in waiting {
        if !roots.iter().any(|r| is_under(p, r)) {
            wake = Some(wake.map_or(q, |w| w.min(q)));
        }
    }
    let mut consumed: Vec<i64> = Vec::new();
    for (p, s) in &paths {
        let covered = roots.iter().any(|r| is_under(p, r));
        if !covered {
            continue;
        }
        let still_open = s
            .open_since
            .is_some_and(|t| t.saturating_add(debounce_ns) > now_ns);
        if still_open && !roots.contains(p) {
            continue;
        }
        consumed.extend(&s.ids);
    }
    consumed.sort_unstable();
    consumed.dedup();
    dropped_ids.sort_unstable();
    dropped_ids.dedup();
    dropped_ids.retain(|i| consumed.binary_search(i).is_err());
    out.ready = roots.into_iter().map(str::to_string).collect();
    out.consumed = consumed;
    out.dropped = dropped_ids;
    out.wake_at_ns = wake;
    out
}
