//! The planner: a PURE function from (local tree, remote tree, base, options) to a plan.
//!
//! No I/O happens here, so every rule of SPEC "Modes" and "Details that settle edge cases" is
//! tested with tables and properties (`tests/planner_table.rs`, `tests/planner_props.rs`).
//!
//! How a plan is made:
//! 1. **Moves** are matched first. A path gone from one side whose identity reappears at a new
//!    path on the same side (local: same inode, and for files same size and mtime; remote: same
//!    size and mtime — and hash when known — or, for a folder, the same subtree) becomes one move
//!    on the other side. The base and the other side's tree are then relocated as if the move had
//!    happened, so a renamed folder yields one move and nothing for its children. A local file
//!    renamed over a synced file (a log rotation) moves onto it while the remote copy it replaces
//!    is the one last synced; chains of such renames run from their far end.
//! 2. Every path of the union of both trees and the base is classified per side against that
//!    side's base entry (`Change`), and the mode turns the pair into an `Intent`.
//! 3. Intents become actions; a folder deletion whose contents do not all go is turned back into
//!    a folder that stays; a file replacing a folder whose contents stay is an error.
//!    A new local file whose content the engine found identical to a synced file
//!    (`PlanInput::copy_sources`) becomes a server-side `copy_remote` instead of an upload,
//!    where the remote can copy (`PlanOptions::server_copy`).
//! 4. Guards: `max_delete` (counted after moves) and the emptied/missing root checks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::job::{Compare, ConflictPolicy, MaxDelete, Mode};
use crate::model::{ActionKind, Base, BaseRow, Entry, Kind, Side, Tree};
use crate::remote::{file_name, parent};
use crate::state::BaseUpdate;

/// Everything about a job the planner needs, as plain values.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub mode: Mode,
    pub conflict: ConflictPolicy,
    pub compare: Compare,
    pub delete_orphans: bool,
    pub max_delete: MaxDelete,
    pub force_delete: bool,
    /// Cross-side mtime tolerance (`mtime_tolerance`), ns.
    pub tolerance_ns: i64,
    pub local_precision_ns: i64,
    pub remote_precision_ns: i64,
    /// `YYYYMMDD-HHMMSS` of the run's start in UTC, for keep-both names.
    pub conflict_stamp: String,
    /// `trash` (only for messages: the executor does the trashing).
    pub job_trash: bool,
    /// The remote side can copy a file server-side (`Capabilities::server_copy`): uploads of
    /// content the remote already holds become `copy_remote` actions.
    pub server_copy: bool,
    /// A live batch plans only part of the tree: `Some(files in the whole base)`. The
    /// emptied-root guard does not apply to a part, and `max_delete` percentages count against
    /// the whole base.
    pub partial_of: Option<u64>,
}

impl PlanOptions {
    pub fn new(mode: Mode) -> PlanOptions {
        PlanOptions {
            mode,
            conflict: ConflictPolicy::Newer,
            compare: Compare::Fast,
            delete_orphans: false,
            max_delete: MaxDelete::Percent(50),
            force_delete: false,
            tolerance_ns: 1_000_000_000,
            local_precision_ns: 1,
            remote_precision_ns: 1,
            conflict_stamp: "19700101-000000".into(),
            job_trash: true,
            server_copy: false,
            partial_of: None,
        }
    }
}

/// The state of a side's root as seen before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootState {
    Ok,
    Missing,
    NotDir,
    Unreadable(String),
}

/// One side as listed.
#[derive(Debug, Clone, Copy)]
pub struct SideView<'a> {
    pub tree: &'a Tree,
    /// Folders whose listing failed: nothing at or below them is judged this run.
    pub unknown: &'a [String],
    pub root: &'a RootState,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub local: SideView<'a>,
    pub remote: SideView<'a>,
    /// The base restricted to paths the filters let through.
    pub base: &'a Base,
    /// New local file → a synced path whose local content the engine found identical (by
    /// hash). Only a hint: the planner still checks that the source is synced and unchanged on
    /// both sides before it plans a server-side copy. [`NO_COPIES`] when there are none.
    pub copy_sources: &'a CopySources,
}

/// New path → identical synced path (see [`PlanInput::copy_sources`]).
pub type CopySources = BTreeMap<String, String>;

/// An empty [`CopySources`], for callers that have none.
pub static NO_COPIES: CopySources = BTreeMap::new();

/// One step of a plan, in the action log's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub kind: ActionKind,
    pub path: String,
    /// Move/copy destination, or the keep-both copy's name for `conflict`.
    pub to: Option<String>,
    /// Bytes to send (transfers), else 0.
    pub bytes: u64,
    pub message: Option<String>,
    /// The entry read (transfers), moved, created or deleted.
    pub src: Option<Entry>,
    /// What the destination held when planned: replaced entries go to trash, and a destination
    /// that no longer matches at execution time is not overwritten.
    pub dst: Option<Entry>,
    /// Base rows written when the action succeeds (moves relocate rows; transfers, mkdirs and
    /// deletes have theirs computed by the executor from what it observed).
    pub base: Vec<BaseUpdate>,
}

impl Action {
    fn new(kind: ActionKind, path: &str) -> Action {
        Action {
            kind,
            path: path.to_string(),
            to: None,
            bytes: 0,
            message: None,
            src: None,
            dst: None,
            base: Vec::new(),
        }
    }

    fn msg(mut self, m: impl Into<String>) -> Action {
        self.message = Some(m.into());
        self
    }

    pub fn is_delete(&self) -> bool {
        matches!(
            self.kind,
            ActionKind::DeleteLocal | ActionKind::DeleteRemote
        )
    }

    pub fn is_file_delete(&self) -> bool {
        self.is_delete() && self.src.as_ref().is_some_and(|e| e.kind == Kind::File)
    }
}

/// Why a plan must not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    MaxDelete {
        count: u64,
        limit: u64,
        setting: MaxDelete,
    },
    RootMissing {
        side: Side,
        reason: String,
    },
    EmptiedRoot {
        side: Side,
        deletes: u64,
    },
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guard::MaxDelete {
                count,
                limit,
                setting,
            } => write!(
                f,
                "the plan would delete {}, more than max_delete = {setting} \
                 (limit {limit}); nothing was changed. Check the job's folders, then re-run \
                 with --force-delete to allow it",
                files(*count)
            ),
            Guard::RootMissing { side, reason } => write!(
                f,
                "the {} root {reason}, but the job has synced files before; nothing was \
                 changed (is a disk or share not mounted?)",
                side_name(*side)
            ),
            Guard::EmptiedRoot { side, deletes } => write!(
                f,
                "the {} root is empty although the last sync left files there; propagating \
                 that would delete {} on the {} side. Nothing was changed. If \
                 the folder was emptied on purpose, re-run with --force-delete",
                side_name(*side),
                files(*deletes),
                side_name(side.other())
            ),
        }
    }
}

fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Local => "local",
        Side::Remote => "remote",
    }
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In execution order: records (conflict/skip/error), moves, deletions (deepest first),
    /// folder creations (shallowest first), transfers.
    pub actions: Vec<Action>,
    /// Base rows to write with no action: equal files adopted, rows of paths gone on both
    /// sides dropped.
    pub base_updates: Vec<BaseUpdate>,
    pub guard: Option<Guard>,
    /// File deletions, counted after moves were matched.
    pub file_deletes: u64,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.actions.iter().map(|a| a.bytes).sum()
    }
}

/// A path's state on one side relative to that side's base entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not there now, not in the base.
    Absent,
    New,
    Unchanged,
    Changed,
    Deleted,
}

impl Change {
    fn is_new_or_changed(self) -> bool {
        matches!(self, Change::New | Change::Changed)
    }
}

/// What the mode decides for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    Nothing,
    /// Make the remote like the local (upload / mkdir_remote).
    Push {
        conflict: bool,
    },
    /// Make the local like the remote.
    Pull {
        conflict: bool,
    },
    DeleteLocal,
    DeleteRemote,
    Adopt,
    Drop,
    KeepBoth,
    Error(String),
    Skip(String),
}

/// Compares entries under the job's settings.
struct Cmp<'o> {
    o: &'o PlanOptions,
}

impl Cmp<'_> {
    /// Same side now vs. its own base entry: exact, since the base holds what the side
    /// reported.
    fn changed(&self, cur: &Entry, base: &Entry) -> bool {
        if cur.kind != base.kind {
            return true;
        }
        match cur.kind {
            Kind::Dir | Kind::Symlink => false,
            Kind::File => {
                if cur.size != base.size {
                    return true;
                }
                if self.o.compare == Compare::Secure {
                    if let (Some(a), Some(b)) = (&cur.hash, &base.hash) {
                        return a != b;
                    }
                }
                cur.mtime != base.mtime
            }
        }
    }

    fn change(&self, cur: Option<&Entry>, base: Option<&Entry>) -> Change {
        match (cur, base) {
            (None, None) => Change::Absent,
            (Some(_), None) => Change::New,
            (None, Some(_)) => Change::Deleted,
            (Some(c), Some(b)) => {
                if self.changed(c, b) {
                    Change::Changed
                } else {
                    Change::Unchanged
                }
            }
        }
    }

    /// Local vs. remote: equal content? (size and mtime within tolerance at the coarser
    /// precision, or equal hashes in secure mode when both are known)
    fn same_content(&self, l: &Entry, r: &Entry) -> bool {
        if l.kind != r.kind {
            return false;
        }
        match l.kind {
            Kind::Dir => true,
            Kind::Symlink => false,
            Kind::File => {
                if l.size != r.size {
                    return false;
                }
                if self.o.compare == Compare::Secure {
                    if let (Some(a), Some(b)) = (&l.hash, &r.hash) {
                        return a == b;
                    }
                }
                self.mtime_close(l.mtime, r.mtime)
            }
        }
    }

    fn mtime_close(&self, a: i64, b: i64) -> bool {
        let p = self
            .o
            .local_precision_ns
            .max(self.o.remote_precision_ns)
            .max(1);
        let (a, b) = (a.div_euclid(p), b.div_euclid(p));
        let diff = (a - b).unsigned_abs() as i128 * p as i128;
        diff <= self.o.tolerance_ns as i128
    }

    /// Are the two sides holding the same thing, by the base or by content?
    fn in_sync(&self, l: &Entry, r: &Entry, b: Option<&BaseRow>) -> bool {
        if let Some(BaseRow {
            local: Some(bl),
            remote: Some(br),
        }) = b
        {
            if !self.changed(l, bl) && !self.changed(r, br) {
                return true;
            }
        }
        self.same_content(l, r)
    }
}

fn depth(p: &str) -> usize {
    p.bytes().filter(|&c| c == b'/').count()
}

/// Is `p` equal to `dir` or inside it?
fn at_or_under(p: &str, dir: &str) -> bool {
    dir.is_empty()
        || p == dir
        || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

fn under_any(p: &str, dirs: &[String]) -> bool {
    dirs.iter().any(|d| p.len() > d.len() && at_or_under(p, d))
}

/// Is `p`'s subtree touching one of `dirs` (at, above or below `p`)? A move must not carry
/// an unreadable folder, whose listed contents are incomplete.
fn overlaps_any(p: &str, dirs: &[String]) -> bool {
    dirs.iter().any(|d| at_or_under(p, d) || at_or_under(d, p))
}

/// Entries of `map` at or below `dir`, in order: the folder itself, then the contiguous key
/// range `dir/` .. `dir0` (`0` is the byte after `/`).
fn subtree<'m, V>(
    map: &'m BTreeMap<String, V>,
    dir: &str,
) -> Box<dyn Iterator<Item = (&'m String, &'m V)> + 'm> {
    if dir.is_empty() {
        return Box::new(map.iter());
    }
    let own = map.get_key_value(dir);
    let lo = format!("{dir}/");
    let hi = format!("{dir}0");
    Box::new(own.into_iter().chain(map.range(lo..hi)))
}

/// A sorted map as the planner sees it once the moves it matched are applied: the caller's map
/// with the moved keys hidden and their relocated entries added. A renamed folder costs its
/// own entries, not a copy of the whole 100,000-entry map (which cost more than planning).
struct Moved<'a, V> {
    orig: &'a BTreeMap<String, V>,
    /// Keys of `orig` that moved away.
    hidden: HashSet<&'a str>,
    /// Relocated entries; they win over `orig` on equal keys.
    added: BTreeMap<String, V>,
}

/// The merged iteration of a [`Moved`] map (or of part of it), in key order.
struct MovedIter<'m, V> {
    orig: std::iter::Peekable<Box<dyn Iterator<Item = (&'m String, &'m V)> + 'm>>,
    added: std::iter::Peekable<Box<dyn Iterator<Item = (&'m String, &'m V)> + 'm>>,
    hidden: &'m HashSet<&'m str>,
}

impl<'m, V> Iterator for MovedIter<'m, V> {
    type Item = (&'m String, &'m V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_added = match (self.orig.peek(), self.added.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((o, _)), Some((a, _))) => a <= o,
            };
            if take_added {
                let (k, v) = self.added.next()?;
                // An added key replaces the same key of `orig`.
                self.orig.next_if(|(o, _)| *o == k);
                return Some((k, v));
            }
            let (k, v) = self.orig.next()?;
            if self.hidden.is_empty() || !self.hidden.contains(k.as_str()) {
                return Some((k, v));
            }
        }
    }
}

impl<'a, V: Clone> Moved<'a, V> {
    fn new(orig: &'a BTreeMap<String, V>) -> Self {
        Moved {
            orig,
            hidden: HashSet::new(),
            added: BTreeMap::new(),
        }
    }

    /// About the number of entries (for reserving).
    fn len_hint(&self) -> usize {
        self.orig.len() + self.added.len()
    }

    fn get_key_value(&self, k: &str) -> Option<(&String, &V)> {
        if let Some(kv) = self.added.get_key_value(k) {
            return Some(kv);
        }
        if !self.hidden.is_empty() && self.hidden.contains(k) {
            return None;
        }
        self.orig.get_key_value(k)
    }

    fn get(&self, k: &str) -> Option<&V> {
        self.get_key_value(k).map(|(_, v)| v)
    }

    fn contains_key(&self, k: &str) -> bool {
        self.get_key_value(k).is_some()
    }

    fn iter<'m>(&'m self) -> MovedIter<'m, V>
    where
        'a: 'm,
    {
        MovedIter {
            orig: (Box::new(self.orig.iter()) as Box<dyn Iterator<Item = _>>).peekable(),
            added: (Box::new(self.added.iter()) as Box<dyn Iterator<Item = _>>).peekable(),
            hidden: &self.hidden,
        }
    }

    /// Entries at or below `dir`, in order.
    fn subtree<'m>(&'m self, dir: &str) -> MovedIter<'m, V>
    where
        'a: 'm,
    {
        MovedIter {
            orig: subtree(self.orig, dir).peekable(),
            added: subtree(&self.added, dir).peekable(),
            hidden: &self.hidden,
        }
    }

    /// Move everything at or below `from` to the same place below `to`.
    fn relocate(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, V)> = self
            .subtree(from)
            .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
            .collect();
        let orig = self.orig;
        for (k, _) in subtree(orig, from) {
            self.hidden.insert(k.as_str());
        }
        let gone: Vec<String> = subtree(&self.added, from).map(|(k, _)| k.clone()).collect();
        for k in gone {
            self.added.remove(&k);
        }
        self.added.extend(moved);
    }
}

type TreeView<'a> = Moved<'a, Entry>;
type BaseView<'a> = Moved<'a, BaseRow>;

/// The keep-both copy's name: `NAME.conflict-STAMP[-N].EXT` beside `path`, not taken by
/// anything in `taken`, at most 255 bytes.
pub fn conflict_name(path: &str, stamp: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let dir = parent(path);
    let name = file_name(path);
    // The last extension is kept; a dotfile with no other dot has none.
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 1.. {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let tail = format!(".conflict-{stamp}{suffix}{ext}");
        let mut stem_part = stem;
        while stem_part.len() + tail.len() > 255 {
            let mut cut = stem_part.len() - 1;
            while !stem_part.is_char_boundary(cut) {
                cut -= 1;
            }
            stem_part = &stem_part[..cut];
        }
        let candidate = crate::remote::join(dir, &format!("{stem_part}{tail}"));
        if !taken(&candidate) {
            return candidate;
        }
    }
    unreachable!()
}

/// Make the plan. Pure: same input, same plan.
pub fn plan(input: &PlanInput<'_>, o: &PlanOptions) -> Plan {
    let cmp = Cmp { o };
    let mut out = Plan::default();

    // Guard: a root that is missing, not a folder or unreadable, for a job that synced before.
    let base_files = input
        .base
        .values()
        .filter(|r| {
            r.local.as_ref().is_some_and(Entry::is_file)
                || r.remote.as_ref().is_some_and(Entry::is_file)
        })
        .count() as u64;
    let base_files = o.partial_of.unwrap_or(base_files);
    for (side, view) in [(Side::Local, &input.local), (Side::Remote, &input.remote)] {
        let reason = match view.root {
            RootState::Ok => continue,
            RootState::Missing => "is missing".to_string(),
            RootState::NotDir => "is not a directory".to_string(),
            RootState::Unreadable(e) => format!("cannot be read ({e})"),
        };
        if base_files > 0 {
            out.guard = Some(Guard::RootMissing { side, reason });
            return out;
        }
    }

    let mut local = TreeView::new(input.local.tree);
    let mut remote = TreeView::new(input.remote.tree);
    let mut base = BaseView::new(input.base);
    let unknown: Vec<String> = input
        .local
        .unknown
        .iter()
        .chain(input.remote.unknown)
        .cloned()
        .collect();

    let mut moves = Vec::new();
    if o.mode.writes_remote() {
        match_local_moves(&cmp, &local, &mut remote, &mut base, &unknown, &mut moves);
    }
    if o.mode.writes_local() {
        match_remote_moves(&cmp, &mut local, &remote, &mut base, &unknown, &mut moves);
    }

    // Per-path intents over the union of paths, in order.
    let mut intents: Vec<(String, Intent)> = Vec::new();
    for (path, l, r, b) in union3(&local, &remote, &base) {
        if unknown.iter().any(|d| at_or_under(path, d)) {
            continue;
        }
        let intent = decide(&cmp, o, l, r, b);
        if intent != Intent::Nothing {
            intents.push((path.to_string(), intent));
        }
    }

    let copies = CopyCheck {
        sources: input.copy_sources,
        unknown: &unknown,
    };
    materialize(&cmp, o, &local, &remote, &base, &copies, intents, &mut out);

    // Rows of paths a move relocates are written with that move, after its relocation:
    // written before it (as plain base updates are), the move would overwrite them.
    if !moves.is_empty() {
        for u in std::mem::take(&mut out.base_updates) {
            let owner = moves
                .iter_mut()
                .rev()
                .find(|m| m.to.as_deref().is_some_and(|t| at_or_under(&u.path, t)));
            match owner {
                Some(m) => m.base.push(u),
                None => out.base_updates.push(u),
            }
        }
    }

    // Order: records, moves, deletions deepest first, mkdirs shallowest first, transfers.
    let mut records = Vec::new();
    let mut deletes = Vec::new();
    let mut mkdirs = Vec::new();
    let mut transfers = Vec::new();
    for a in std::mem::take(&mut out.actions) {
        match a.kind {
            ActionKind::Conflict | ActionKind::Skip | ActionKind::Error => records.push(a),
            ActionKind::MoveLocal | ActionKind::MoveRemote | ActionKind::CopyRemote => {
                moves.push(a)
            }
            ActionKind::DeleteLocal | ActionKind::DeleteRemote => deletes.push(a),
            ActionKind::MkdirLocal | ActionKind::MkdirRemote => mkdirs.push(a),
            ActionKind::Upload | ActionKind::Download => transfers.push(a),
        }
    }
    deletes.sort_by(|a, b| b.path.cmp(&a.path));
    out.file_deletes = deletes.iter().filter(|a| a.is_file_delete()).count() as u64;
    out.actions = records;
    out.actions.extend(moves);
    out.actions.extend(deletes);
    out.actions.extend(mkdirs);
    out.actions.extend(transfers);

    // The emptied-root guard first: its message says more than the count would.
    // Guard: a root that is suddenly empty must not propagate its emptiness.
    if !o.force_delete && base_files > 0 && o.partial_of.is_none() {
        for (side, view, del_kind) in [
            (Side::Local, &input.local, ActionKind::DeleteRemote),
            (Side::Remote, &input.remote, ActionKind::DeleteLocal),
        ] {
            if !view.tree.is_empty() {
                continue;
            }
            let deletes = out
                .actions
                .iter()
                .filter(|a| a.kind == del_kind && a.is_file_delete())
                .count() as u64;
            if deletes > 0 {
                out.guard = Some(Guard::EmptiedRoot { side, deletes });
                break;
            }
        }
    }
    // Guard: max_delete, counted after moves were matched.
    if !o.force_delete && out.guard.is_none() {
        let limit = match o.max_delete {
            MaxDelete::Count(n) => Some(n),
            MaxDelete::Percent(p) if base_files > 0 => Some(base_files * p as u64 / 100),
            MaxDelete::Percent(_) => None,
        };
        if let Some(limit) = limit {
            if out.file_deletes > limit {
                out.guard = Some(Guard::MaxDelete {
                    count: out.file_deletes,
                    limit,
                    setting: o.max_delete,
                });
            }
        }
    }

    out
}

type Row<'a> = (
    &'a str,
    Option<&'a Entry>,
    Option<&'a Entry>,
    Option<&'a BaseRow>,
);

/// The sorted union of three sorted maps' keys, with each map's value.
fn union3<'a>(l: &'a TreeView<'_>, r: &'a TreeView<'_>, b: &'a BaseView<'_>) -> Vec<Row<'a>> {
    let mut li = l.iter().peekable();
    let mut ri = r.iter().peekable();
    let mut bi = b.iter().peekable();
    let mut out = Vec::with_capacity(l.len_hint().max(r.len_hint()).max(b.len_hint()));
    loop {
        // The smallest of the three next keys and which maps hold it, in at most two
        // comparisons (string comparisons were most of the planner's time).
        let mut key: Option<&'a String> = None;
        let mut has = [false; 3];
        let peeks = [
            li.peek().map(|(k, _)| *k),
            ri.peek().map(|(k, _)| *k),
            bi.peek().map(|(k, _)| *k),
        ];
        for (i, k) in peeks.into_iter().enumerate() {
            let Some(k) = k else { continue };
            match key.map(|m| k.as_str().cmp(m.as_str())) {
                None | Some(Ordering::Less) => {
                    key = Some(k);
                    has = [false; 3];
                    has[i] = true;
                }
                Some(Ordering::Equal) => has[i] = true,
                Some(Ordering::Greater) => {}
            }
        }
        let Some(key) = key else { break };
        let lv = if has[0] {
            li.next().map(|(_, v)| v)
        } else {
            None
        };
        let rv = if has[1] {
            ri.next().map(|(_, v)| v)
        } else {
            None
        };
        let bv = if has[2] {
            bi.next().map(|(_, v)| v)
        } else {
            None
        };
        out.push((key.as_str(), lv, rv, bv));
    }
    out
}

fn decide(
    cmp: &Cmp<'_>,
    o: &PlanOptions,
    l: Option<&Entry>,
    r: Option<&Entry>,
    b: Option<&BaseRow>,
) -> Intent {
    let bl = b.and_then(|b| b.local.as_ref());
    let br = b.and_then(|b| b.remote.as_ref());

    // Symlinks are never followed nor replaced.
    let l_link = l.is_some_and(|e| e.kind == Kind::Symlink);
    let r_link = r.is_some_and(|e| e.kind == Kind::Symlink);
    if l_link || r_link {
        let relevant = match o.mode {
            Mode::Bidirectional => true,
            Mode::Upload | Mode::MirrorUpload => l_link || r.is_some() && l.is_some(),
            Mode::Download | Mode::Mirror => r_link || l.is_some() && r.is_some(),
        };
        if !relevant {
            return Intent::Nothing;
        }
        let side = if l_link { "local" } else { "remote" };
        return Intent::Skip(format!("symlink on the {side} side: not followed"));
    }

    let lc = cmp.change(l, bl);
    let rc = cmp.change(r, br);
    use Change::*;

    match o.mode {
        Mode::Bidirectional => match (lc, rc) {
            (Absent, Absent) | (Deleted, Deleted) | (Deleted, Absent) | (Absent, Deleted) => {
                if b.is_some() {
                    Intent::Drop
                } else {
                    Intent::Nothing
                }
            }
            (Unchanged, Unchanged) => Intent::Nothing,
            (New | Changed, Absent | Unchanged | Deleted) | (Unchanged, Absent) => {
                Intent::Push { conflict: false }
            }
            (Absent | Unchanged | Deleted, New | Changed) | (Absent, Unchanged) => {
                Intent::Pull { conflict: false }
            }
            (Deleted, Unchanged) => Intent::DeleteRemote,
            (Unchanged, Deleted) => Intent::DeleteLocal,
            (New | Changed, New | Changed) => {
                let (l, r) = (l.unwrap(), r.unwrap());
                if cmp.in_sync(l, r, b) {
                    Intent::Adopt
                } else if l.kind != r.kind {
                    Intent::Error(format!(
                        "type clash: a {} on the local side and a {} on the remote side; \
                         neither matches the last sync, nothing was changed",
                        l.kind.as_str(),
                        r.kind.as_str()
                    ))
                } else {
                    match o.conflict {
                        ConflictPolicy::Local => Intent::Push { conflict: true },
                        ConflictPolicy::Remote => Intent::Pull { conflict: true },
                        ConflictPolicy::Newer => {
                            if l.mtime >= r.mtime {
                                Intent::Push { conflict: true }
                            } else {
                                Intent::Pull { conflict: true }
                            }
                        }
                        ConflictPolicy::KeepBoth => Intent::KeepBoth,
                    }
                }
            }
        },
        Mode::Upload | Mode::MirrorUpload | Mode::Download | Mode::Mirror => {
            let to_remote = matches!(o.mode, Mode::Upload | Mode::MirrorUpload);
            let (s, d, sc, dc) = if to_remote {
                (l, r, lc, rc)
            } else {
                (r, l, rc, lc)
            };
            let push = if to_remote {
                |conflict| Intent::Push { conflict }
            } else {
                |conflict| Intent::Pull { conflict }
            };
            let delete_dest = if to_remote {
                Intent::DeleteRemote
            } else {
                Intent::DeleteLocal
            };
            let mirror = o.mode.is_mirror();
            match sc {
                Absent | Deleted => {
                    if mirror && o.delete_orphans && d.is_some() {
                        delete_dest
                    } else if sc == Deleted {
                        Intent::Drop
                    } else {
                        Intent::Nothing
                    }
                }
                New | Changed => {
                    let s = s.unwrap();
                    match d {
                        Some(d) if cmp.in_sync_oriented(s, d, b, to_remote) => Intent::Adopt,
                        Some(_) if dc.is_new_or_changed() => push(true),
                        _ => push(false),
                    }
                }
                Unchanged => {
                    if !mirror {
                        return Intent::Nothing;
                    }
                    let s = s.unwrap();
                    match d {
                        Some(d) if cmp.in_sync_oriented(s, d, b, to_remote) => Intent::Nothing,
                        _ => push(false),
                    }
                }
            }
        }
    }
}

impl Cmp<'_> {
    /// `in_sync` with the source/destination pair put back in local/remote order.
    fn in_sync_oriented(
        &self,
        s: &Entry,
        d: &Entry,
        b: Option<&BaseRow>,
        s_is_local: bool,
    ) -> bool {
        if s_is_local {
            self.in_sync(s, d, b)
        } else {
            self.in_sync(d, s, b)
        }
    }
}

/// What a server-side copy needs besides the trees: the engine's hints and the folders whose
/// listing failed.
struct CopyCheck<'a> {
    sources: &'a CopySources,
    unknown: &'a [String],
}

impl CopyCheck<'_> {
    /// The synced file whose remote copy can become `q`'s (a new local file `lq` about to be
    /// uploaded to an absent remote path), with its remote entry and base row. The source must
    /// be synced and unchanged on both sides, stay where it is this run (so a copy in the
    /// moves phase, before any deletion, reads it), and agree with `lq` in size (and hash,
    /// where both are known).
    #[allow(clippy::too_many_arguments)]
    fn source<'t>(
        &self,
        cmp: &Cmp<'_>,
        local: &TreeView<'_>,
        remote: &'t TreeView<'_>,
        base: &'t BaseView<'_>,
        deleted_remote: &HashSet<&str>,
        q: &str,
        lq: &Entry,
    ) -> Option<(&'t str, &'t Entry, &'t BaseRow)> {
        if !cmp.o.server_copy || !cmp.o.mode.writes_remote() || !lq.is_file() {
            return None;
        }
        let p = self.sources.get(q)?;
        if p == q || overlaps_any(p, self.unknown) || overlaps_any(q, self.unknown) {
            return None;
        }
        let (p, row) = base.get_key_value(p.as_str())?;
        let (Some(bl), Some(br)) = (&row.local, &row.remote) else {
            return None;
        };
        let (lp, rp) = (local.get(p)?, remote.get(p)?);
        if !bl.is_file() || !br.is_file() || cmp.changed(lp, bl) || cmp.changed(rp, br) {
            return None;
        }
        if lq.size != bl.size || lq.size != rp.size || deleted_remote.contains(p.as_str()) {
            return None;
        }
        if let (Some(a), Some(b)) = (&lq.hash, bl.hash.as_ref().or(br.hash.as_ref())) {
            if a != b {
                return None;
            }
        }
        // Copies run with the moves, before deletions: a remote file where the target's
        // folder goes would block it (the upload, after the deletions, does not mind).
        if blocking_ancestor(remote, &HashSet::new(), q).is_some() {
            return None;
        }
        Some((p.as_str(), rp, row))
    }
}

#[allow(clippy::too_many_arguments)]
fn materialize(
    cmp: &Cmp<'_>,
    o: &PlanOptions,
    local: &TreeView<'_>,
    remote: &TreeView<'_>,
    base: &BaseView<'_>,
    copies: &CopyCheck<'_>,
    intents: Vec<(String, Intent)>,
    out: &mut Plan,
) {
    // Which paths each side will lose, to check that a folder deletion takes all its contents.
    let mut deleted_local: HashSet<&str> = HashSet::new();
    let mut deleted_remote: HashSet<&str> = HashSet::new();
    for (p, i) in &intents {
        match i {
            Intent::DeleteLocal => {
                deleted_local.insert(p.as_str());
            }
            Intent::DeleteRemote => {
                deleted_remote.insert(p.as_str());
            }
            // A file pushed over a folder, or a folder pushed over a file, removes the other.
            Intent::Push { .. }
                if local.get(p).map(|e| e.kind) != remote.get(p).map(|e| e.kind)
                    && remote.contains_key(p) =>
            {
                deleted_remote.insert(p.as_str());
            }
            Intent::Pull { .. }
                if local.get(p).map(|e| e.kind) != remote.get(p).map(|e| e.kind)
                    && local.contains_key(p) =>
            {
                deleted_local.insert(p.as_str());
            }
            _ => {}
        }
    }
    let all_go = |tree: &TreeView<'_>, deleted: &HashSet<&str>, dir: &str| -> bool {
        tree.subtree(dir).all(|(k, _)| deleted.contains(k.as_str()))
    };

    // Names a keep-both copy must not take.
    let mut taken_names: HashSet<String> = HashSet::new();
    let mut skip_under: Vec<String> = Vec::new();

    for (path, intent) in &intents {
        let p = path.as_str();
        if under_any(p, &skip_under) {
            continue;
        }
        let l = local.get(p);
        let r = remote.get(p);
        let b = base.get(p);
        match intent {
            Intent::Nothing => {}
            Intent::Adopt => out.base_updates.push(BaseUpdate {
                path: path.clone(),
                row: Some(BaseRow {
                    local: l.cloned(),
                    remote: r.cloned(),
                }),
            }),
            Intent::Drop => out.base_updates.push(BaseUpdate {
                path: path.clone(),
                row: None,
            }),
            Intent::Skip(m) => {
                out.actions
                    .push(Action::new(ActionKind::Skip, p).msg(m.clone()));
                // A symlink where the other side has a folder: nothing is written through it.
                skip_under.push(path.clone());
            }
            Intent::Error(m) => {
                out.actions
                    .push(Action::new(ActionKind::Error, p).msg(m.clone()));
                skip_under.push(path.clone());
            }
            Intent::DeleteLocal | Intent::DeleteRemote => {
                let (kind, victim, tree, deleted, keep_kind) = if *intent == Intent::DeleteLocal {
                    (
                        ActionKind::DeleteLocal,
                        l,
                        local,
                        &deleted_local,
                        ActionKind::MkdirRemote,
                    )
                } else {
                    (
                        ActionKind::DeleteRemote,
                        r,
                        remote,
                        &deleted_remote,
                        ActionKind::MkdirLocal,
                    )
                };
                let Some(victim) = victim else {
                    if b.is_some() {
                        out.base_updates.push(BaseUpdate {
                            path: path.clone(),
                            row: None,
                        });
                    }
                    continue;
                };
                if victim.is_dir() && !all_go(tree, deleted, p) {
                    // Something inside stays (changed on this side): keep the folder, and
                    // recreate it on the side where it was deleted.
                    let other = if kind == ActionKind::DeleteLocal {
                        r
                    } else {
                        l
                    };
                    // (Only where the mode writes: a mirror never touches its source.)
                    let may_write = if keep_kind == ActionKind::MkdirRemote {
                        o.mode.writes_remote()
                    } else {
                        o.mode.writes_local()
                    };
                    if other.is_none() && may_write {
                        let mut a = Action::new(keep_kind, p);
                        a.src = Some(victim.clone());
                        out.actions.push(a);
                    }
                    continue;
                }
                let mut a = Action::new(kind, p);
                a.src = Some(victim.clone());
                out.actions.push(a);
            }
            Intent::Push { conflict } | Intent::Pull { conflict } => {
                let push = matches!(intent, Intent::Push { .. });
                let (s, d, tree_d, deleted_d, del_kind, mk_kind, xfer) = if push {
                    (
                        l,
                        r,
                        remote,
                        &deleted_remote,
                        ActionKind::DeleteRemote,
                        ActionKind::MkdirRemote,
                        ActionKind::Upload,
                    )
                } else {
                    (
                        r,
                        l,
                        local,
                        &deleted_local,
                        ActionKind::DeleteLocal,
                        ActionKind::MkdirLocal,
                        ActionKind::Download,
                    )
                };
                let Some(s) = s else { continue };
                // A file replacing a folder whose contents stay is a clash, not a conflict
                // resolved by a transfer: only the error is logged.
                if s.kind == Kind::File
                    && d.is_some_and(Entry::is_dir)
                    && !all_go(tree_d, deleted_d, p)
                {
                    out.actions.push(Action::new(ActionKind::Error, p).msg(
                        "type clash: a file replaces a folder whose contents \
                         changed or are kept; nothing was changed",
                    ));
                    skip_under.push(path.clone());
                    continue;
                }
                // A destination ancestor that is not a folder and stays (a destination-only
                // type change a one-way mode leaves alone) leaves no place for this path.
                if let Some(anc) = blocking_ancestor(tree_d, deleted_d, p) {
                    let (sn, dn) = if push {
                        ("local", "remote")
                    } else {
                        ("remote", "local")
                    };
                    let kind = tree_d.get(anc).expect("ancestor listed").kind.as_str();
                    let m = format!(
                        "type clash: {anc:?} is a {kind} on the {dn} side but a folder on \
                         the {sn} side; nothing was changed"
                    );
                    out.actions.push(Action::new(ActionKind::Error, p).msg(m));
                    skip_under.push(path.clone());
                    continue;
                }
                if *conflict {
                    let winner = if push { "local" } else { "remote" };
                    let why = if o.mode == Mode::Bidirectional {
                        format!("conflict = {}", o.conflict.as_str())
                    } else {
                        format!("the source side in {} mode", o.mode.as_str())
                    };
                    let fate = if o.job_trash {
                        "the other goes to trash"
                    } else {
                        "the other is overwritten (trash = false)"
                    };
                    out.actions
                        .push(Action::new(ActionKind::Conflict, p).msg(format!(
                            "changed on both sides; the {winner} version wins ({why}), {fate}"
                        )));
                }
                match (s.kind, d.map(|e| e.kind)) {
                    (Kind::Dir, Some(Kind::Dir)) => out.base_updates.push(BaseUpdate {
                        path: path.clone(),
                        row: Some(BaseRow {
                            local: l.cloned(),
                            remote: r.cloned(),
                        }),
                    }),
                    (Kind::Dir, dk) => {
                        if let Some(Kind::File) = dk {
                            let mut del = Action::new(del_kind, p);
                            del.src = d.cloned();
                            out.actions.push(del);
                        }
                        let mut a = Action::new(mk_kind, p);
                        a.src = Some(s.clone());
                        out.actions.push(a);
                    }
                    (Kind::File, None) if push && !*conflict => {
                        let src = copies.source(cmp, local, remote, base, deleted_d, p, s);
                        if let Some((from, rp, row)) = src {
                            // No bytes travel: the remote copies its own file. The row is
                            // what the executor expects; it writes what it then observes.
                            let hash = s
                                .hash
                                .clone()
                                .or_else(|| row.local.as_ref().and_then(|e| e.hash.clone()));
                            let mut a = Action::new(ActionKind::CopyRemote, from);
                            a.to = Some(path.clone());
                            a.src = Some(rp.clone());
                            a.base.push(BaseUpdate {
                                path: path.clone(),
                                row: Some(BaseRow {
                                    local: Some(Entry {
                                        hash: hash.clone(),
                                        ..s.clone()
                                    }),
                                    remote: Some(Entry {
                                        inode: None,
                                        hash,
                                        ..s.clone()
                                    }),
                                }),
                            });
                            out.actions.push(a);
                        } else {
                            let mut a = Action::new(xfer, p);
                            a.bytes = s.size;
                            a.src = Some(s.clone());
                            out.actions.push(a);
                        }
                    }
                    (Kind::File, dk) => {
                        if dk == Some(Kind::Dir) {
                            let mut del = Action::new(del_kind, p);
                            del.src = d.cloned();
                            out.actions.push(del);
                        }
                        let mut a = Action::new(xfer, p);
                        a.bytes = s.size;
                        a.src = Some(s.clone());
                        a.dst = d.filter(|e| e.is_file()).cloned();
                        out.actions.push(a);
                    }
                    (Kind::Symlink, _) => {}
                }
            }
            Intent::KeepBoth => {
                let (Some(l), Some(r)) = (l, r) else { continue };
                let taken = |c: &str| {
                    local.contains_key(c) || remote.contains_key(c) || taken_names.contains(c)
                };
                let copy = conflict_name(p, &o.conflict_stamp, &taken);
                taken_names.insert(copy.clone());
                let mut rec = Action::new(ActionKind::Conflict, p).msg(
                    "changed on both sides; both kept (keep-both): the remote version is saved as the copy",
                );
                rec.to = Some(copy.clone());
                out.actions.push(rec);
                let mut mv = Action::new(ActionKind::MoveRemote, p);
                mv.to = Some(copy.clone());
                mv.src = Some(r.clone());
                out.actions.push(mv);
                let mut down = Action::new(ActionKind::Download, &copy);
                down.bytes = r.size;
                down.src = Some(r.clone());
                out.actions.push(down);
                let mut up = Action::new(ActionKind::Upload, p);
                up.bytes = l.size;
                up.src = Some(l.clone());
                out.actions.push(up);
            }
        }
    }
}

/// Entries of `tree` without a `side` entry in the base: one merge walk of the two sorted maps
/// instead of a lookup per path.
fn not_in_base<'a>(
    tree: &'a TreeView<'_>,
    base: &BaseView<'_>,
    side: Side,
) -> Vec<(&'a String, &'a Entry)> {
    arrivals(tree, base, |_, row| {
        row.is_none_or(|r| match side {
            Side::Local => r.local.is_none(),
            Side::Remote => r.remote.is_none(),
        })
    })
}

/// Entries of `tree` that `arrived` accepts, given the base row of their path (if any), in
/// one merge walk of the two sorted maps.
fn arrivals<'a>(
    tree: &'a TreeView<'_>,
    base: &BaseView<'_>,
    arrived: impl Fn(&Entry, Option<&BaseRow>) -> bool,
) -> Vec<(&'a String, &'a Entry)> {
    let mut bi = base.iter().peekable();
    let mut out = Vec::new();
    for (p, e) in tree.iter() {
        let mut row = None;
        while let Some((k, r)) = bi.peek() {
            match k.as_str().cmp(p.as_str()) {
                Ordering::Less => {
                    bi.next();
                }
                Ordering::Equal => {
                    row = Some(*r);
                    break;
                }
                Ordering::Greater => break,
            }
        }
        if arrived(e, row) {
            out.push((p, e));
        }
    }
    out
}

/// A remote file's identity for move matching: size, mtime, hash when known.
type FileKey = (u64, i64, Option<[u8; 32]>);

/// The nearest proper ancestor of `p` in `tree` that is not a folder and is not deleted by
/// this plan.
fn blocking_ancestor<'t>(
    tree: &'t TreeView<'_>,
    deleted: &HashSet<&str>,
    p: &str,
) -> Option<&'t str> {
    let mut q = parent(p);
    while !q.is_empty() {
        if let Some((k, e)) = tree.get_key_value(q) {
            if !e.is_dir() && !deleted.contains(q) {
                return Some(k.as_str());
            }
        }
        q = parent(q);
    }
    None
}

/// Local paths that hold a file (or folder) other than the one their base row knows: paths
/// new locally, and synced files that another file replaced (a different inode).
fn local_arrivals<'a>(
    local: &'a TreeView<'_>,
    base: &BaseView<'_>,
) -> Vec<(&'a String, &'a Entry)> {
    arrivals(local, base, |e, row| {
        match row.and_then(|r| r.local.as_ref()) {
            None => true,
            Some(bl) => {
                e.kind == Kind::File
                    && bl.kind == Kind::File
                    && e.inode.is_some()
                    && bl.inode.is_some()
                    && e.inode != bl.inode
            }
        }
    })
}

/// Local renames: a base path whose file or folder (its inode) left it locally and shows up
/// at another local path. That path is new, or it is a synced file the rename replaced
/// (`mv a b` over an existing `b`; a log rotation, `mv log.1 log.2; mv log log.1`): such a
/// target is moved over only when its remote version is the one last synced (or gone), and
/// that version goes to trash as an overwritten file would. Chains run from their far end
/// (`log.1` to `log.2` before `log` to `log.1`); a cycle (two files swapped) is no move.
/// Did folder `p` of the base become folder `q`? A folder keeps its files through a rename:
/// some file the base holds below `p` is at the same place below `q` now, with the same inode,
/// size and mtime. A freed inode number that the filesystem gave a new folder (`rm -r e;
/// mkdir d`, in one batch) shows no such file, and moving the remote `e` there would carry
/// its files to a place they never were. A folder with no file below it shows nothing either
/// way and is simply made anew.
fn kept_a_file(base: &BaseView<'_>, local: &TreeView<'_>, p: &str, q: &str) -> bool {
    base.subtree(p).any(|(k, row)| {
        let Some(bl) = row.local.as_ref().filter(|e| e.kind == Kind::File) else {
            return false;
        };
        let Some(rest) = k.strip_prefix(p).filter(|r| r.starts_with('/')) else {
            return false;
        };
        local.get(&format!("{q}{rest}")).is_some_and(|e| {
            e.kind == Kind::File
                && e.inode.is_some()
                && e.inode == bl.inode
                && e.size == bl.size
                && e.mtime == bl.mtime
        })
    })
}

fn match_local_moves(
    cmp: &Cmp<'_>,
    local: &TreeView<'_>,
    remote: &mut TreeView<'_>,
    base: &mut BaseView<'_>,
    unknown: &[String],
    moves: &mut Vec<Action>,
) {
    // Arrived local paths by inode.
    let mut by_inode: HashMap<u64, &str> = HashMap::new();
    let mut dup_inodes: HashSet<u64> = HashSet::new();
    for (p, e) in local_arrivals(local, base) {
        if e.kind == Kind::Symlink {
            continue;
        }
        let Some(ino) = e.inode else { continue };
        if by_inode.insert(ino, p.as_str()).is_some() {
            dup_inodes.insert(ino);
        }
    }
    if by_inode.is_empty() {
        return;
    }
    let mut candidates: Vec<(String, String)> = Vec::new();
    for (p, row) in base.iter() {
        let Some(bl) = &row.local else { continue };
        let Some(ino) = bl.inode else { continue };
        // The hash lookup first: it rules out nearly every row, far cheaper than the tree's.
        let Some(q) = by_inode.get(&ino) else {
            continue;
        };
        if dup_inodes.contains(&ino) {
            continue;
        }
        // What `p` held must have left it: `p` is gone, or holds another file now.
        if let Some(lp) = local.get(p) {
            if bl.kind != Kind::File || lp.kind != Kind::File || lp.inode == Some(ino) {
                continue;
            }
        }
        // The same file, not a freed inode number given to a new one: a file keeps its size
        // and mtime through a rename. Checked before chains are followed, so that a reused
        // number cannot close a false cycle.
        let Some(lq) = local.get(q) else { continue };
        if lq.kind != bl.kind
            || (lq.kind == Kind::File && (lq.size != bl.size || lq.mtime != bl.mtime))
            || (lq.kind == Kind::Dir && !kept_a_file(base, local, p, q))
        {
            continue;
        }
        candidates.push((p.clone(), q.to_string()));
    }
    // A move onto a path that another move empties runs after it: by how many moves follow
    // in its chain, then shallowest target first (a move into a folder another move creates
    // comes after it, as the executor makes missing parents, which would then block that
    // other move; a folder's own move still comes before its children's).
    let next: HashMap<&str, &str> = candidates
        .iter()
        .map(|(p, q)| (p.as_str(), q.as_str()))
        .collect();
    // For each source, how many moves must run before its own (those further along its
    // chain); `None` in a cycle or on a chain that leads into one. Each chain is walked once:
    // a shifted numbered series can be a chain of thousands.
    let mut after: HashMap<&str, Option<usize>> = HashMap::new();
    for (p, _) in &candidates {
        let mut walk: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut at = p.as_str();
        // What the last source walked waits for: the moves before `at`'s own plus `at`'s, or
        // nothing when `at` is the far end (no move from it).
        let mut wait = loop {
            if let Some(&known) = after.get(at) {
                break known.map(|n| n + 1);
            }
            let Some(&to) = next.get(at) else {
                break Some(0);
            };
            if !seen.insert(at) {
                break None;
            }
            walk.push(at);
            at = to;
        };
        for src in walk.into_iter().rev() {
            after.insert(src, wait);
            wait = wait.map(|n| n + 1);
        }
    }
    let mut ordered: Vec<(usize, String, String)> = candidates
        .iter()
        .filter_map(|(p, q)| {
            after
                .get(p.as_str())
                .copied()
                .flatten()
                .map(|n| (n, p.clone(), q.clone()))
        })
        .collect();
    ordered.sort_by_key(|(n, p, q)| (*n, depth(q), depth(p), p.clone()));
    for (_, p, q) in ordered {
        if overlaps_any(&p, unknown) || overlaps_any(&q, unknown) || at_or_under(&q, &p) {
            continue;
        }
        let Some(row) = base.get(&p).cloned() else {
            continue; // relocated by an earlier folder move
        };
        let (Some(bl), Some(br)) = (&row.local, &row.remote) else {
            continue;
        };
        let Some(lq) = local.get(&q) else { continue };
        if lq.kind != bl.kind {
            continue;
        }
        // A target that is not new: a synced file replaced locally, whose remote version
        // is the one last synced (or gone); anything else is left to the per-path rules.
        let mut dst = None;
        if let Some(bq) = base.get(&q) {
            let (Some(bql), Some(bqr)) = (&bq.local, &bq.remote) else {
                continue;
            };
            if bl.kind != Kind::File || bql.kind != Kind::File || bqr.kind != Kind::File {
                continue;
            }
            match remote.get(&q) {
                Some(rq) if rq.kind == Kind::File && !cmp.changed(rq, bqr) => {
                    dst = Some(rq.clone())
                }
                Some(_) => continue,
                None => {}
            }
        } else if remote.contains_key(&q) {
            continue;
        }
        // Moves run before deletions: a file where the target's folder goes would block it.
        if blocking_ancestor(remote, &HashSet::new(), &q).is_some() {
            continue;
        }
        if lq.kind == Kind::File && (lq.size != bl.size || lq.mtime != bl.mtime) {
            continue;
        }
        let Some(rp) = remote.get(&p) else { continue };
        if cmp.changed(rp, br) {
            continue;
        }
        let mut a = Action::new(ActionKind::MoveRemote, &p);
        a.to = Some(q.clone());
        a.src = Some(rp.clone());
        if dst.is_some() {
            a.message = Some(format!(
                "renamed over the synced {q:?}, whose remote version it replaces"
            ));
        }
        a.dst = dst;
        a.base = relocation_updates(base, &p, &q);
        remote.relocate(&p, &q);
        base.relocate(&p, &q);
        moves.push(a);
    }
}

/// Remote renames: a base path gone remotely whose content (file: size, mtime, hash when
/// known; folder: its whole subtree) shows up, unambiguously, at a new remote path.
fn match_remote_moves(
    cmp: &Cmp<'_>,
    local: &mut TreeView<'_>,
    remote: &TreeView<'_>,
    base: &mut BaseView<'_>,
    unknown: &[String],
    moves: &mut Vec<Action>,
) {
    // Both by merge walks of the sorted maps, not a lookup per path.
    let mut new_remote = not_in_base(remote, base, Side::Remote);
    new_remote.retain(|(_, e)| e.kind != Kind::Symlink);
    if new_remote.is_empty() {
        return;
    }
    let mut gone: Vec<(String, Entry)> = Vec::new();
    let mut ri = remote.iter().peekable();
    for (p, row) in base.iter() {
        let Some(br) = &row.remote else { continue };
        while ri.next_if(|(k, _)| k.as_str() < p.as_str()).is_some() {}
        if ri.peek().is_none_or(|(k, _)| *k != p) {
            gone.push((p.clone(), br.clone()));
        }
    }
    if gone.is_empty() {
        return;
    }

    // Identity keys: files by (size, mtime, hash); folders by a digest of their subtree.
    fn file_key(e: &Entry) -> FileKey {
        (e.size, e.mtime, e.hash.as_deref().copied())
    }
    fn subtree_sig<'m>(
        items: impl Iterator<Item = (&'m str, &'m Entry)>,
        root: &str,
    ) -> Option<[u8; 32]> {
        let mut h = blake3::Hasher::new();
        let mut files = 0;
        for (k, e) in items {
            if k == root {
                continue;
            }
            h.update(&k.as_bytes()[root.len()..]);
            h.update(&[0, e.kind as u8]);
            if e.kind == Kind::File {
                files += 1;
                h.update(&e.size.to_le_bytes());
                h.update(&e.mtime.to_le_bytes());
            }
        }
        (files > 0).then(|| *h.finalize().as_bytes())
    }

    let mut new_files: HashMap<FileKey, Vec<&str>> = HashMap::new();
    let mut new_dirs: HashMap<[u8; 32], Vec<&str>> = HashMap::new();
    for (p, e) in &new_remote {
        if e.kind == Kind::File {
            new_files.entry(file_key(e)).or_default().push(p.as_str());
        }
    }
    let any_gone_dir = gone.iter().any(|(_, e)| e.is_dir());
    if any_gone_dir {
        for (p, e) in &new_remote {
            if e.kind == Kind::Dir {
                let items = remote.subtree(p).map(|(k, v)| (k.as_str(), v));
                if let Some(sig) = subtree_sig(items, p) {
                    new_dirs.entry(sig).or_default().push(p.as_str());
                }
            }
        }
    }
    let mut gone_files: HashMap<FileKey, usize> = HashMap::new();
    for (_, e) in &gone {
        if e.kind == Kind::File {
            *gone_files.entry(file_key(e)).or_default() += 1;
        }
    }

    let mut candidates: Vec<(String, String)> = Vec::new();
    for (p, e) in &gone {
        match e.kind {
            Kind::File => {
                let key = file_key(e);
                if let (Some(qs), Some(1)) = (new_files.get(&key), gone_files.get(&key)) {
                    if qs.len() == 1 {
                        candidates.push((p.clone(), qs[0].to_string()));
                    }
                }
            }
            Kind::Dir => {
                let items = base
                    .subtree(p)
                    .filter_map(|(k, row)| row.remote.as_ref().map(|e| (k.as_str(), e)));
                if let Some(sig) = subtree_sig(items, p) {
                    if let Some(qs) = new_dirs.get(&sig) {
                        if qs.len() == 1 {
                            candidates.push((p.clone(), qs[0].to_string()));
                        }
                    }
                }
            }
            Kind::Symlink => {}
        }
    }
    // Shallowest target first: a move into a folder another move creates comes after it
    // (the executor makes missing parents, which would then block that other move); a
    // folder's own move still comes before its children's.
    candidates.sort_by_key(|(p, q)| (depth(q), depth(p), p.clone()));
    let mut used_targets: HashSet<String> = HashSet::new();
    for (p, q) in candidates {
        if overlaps_any(&p, unknown) || overlaps_any(&q, unknown) || at_or_under(&q, &p) {
            continue;
        }
        if used_targets.contains(&q) || used_targets.iter().any(|t| at_or_under(&q, t)) {
            continue;
        }
        let Some(row) = base.get(&p).cloned() else {
            continue;
        };
        let (Some(bl), Some(_)) = (&row.local, &row.remote) else {
            continue;
        };
        if base.contains_key(&q) || local.contains_key(&q) || !remote.contains_key(&q) {
            continue;
        }
        if blocking_ancestor(local, &HashSet::new(), &q).is_some() {
            continue;
        }
        let Some(lp) = local.get(&p) else { continue };
        if cmp.changed(lp, bl) {
            continue;
        }
        let mut a = Action::new(ActionKind::MoveLocal, &p);
        a.to = Some(q.clone());
        a.src = Some(lp.clone());
        a.base = relocation_updates(base, &p, &q);
        local.relocate(&p, &q);
        base.relocate(&p, &q);
        used_targets.insert(q);
        moves.push(a);
    }
}

/// The base rows a move rewrites: every row at or below `from` goes to `to`.
fn relocation_updates(base: &BaseView<'_>, from: &str, to: &str) -> Vec<BaseUpdate> {
    let mut ups = Vec::new();
    for (k, row) in base.subtree(from) {
        ups.push(BaseUpdate {
            path: k.clone(),
            row: None,
        });
        ups.push(BaseUpdate {
            path: format!("{to}{}", &k[from.len()..]),
            row: Some(row.clone()),
        });
    }
    ups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_follow_spec() {
        let none = |_: &str| false;
        let s = "20261122-020000";
        assert_eq!(
            conflict_name("a.tar.gz", s, &none),
            "a.tar.conflict-20261122-020000.gz"
        );
        assert_eq!(
            conflict_name("d/Makefile", s, &none),
            "d/Makefile.conflict-20261122-020000"
        );
        assert_eq!(
            conflict_name(".bashrc", s, &none),
            ".bashrc.conflict-20261122-020000"
        );
        let first = "x.conflict-20261122-020000.txt".to_string();
        let taken = move |c: &str| c == first;
        assert_eq!(
            conflict_name("x.txt", s, &taken),
            "x.conflict-20261122-020000-2.txt"
        );
        let long = "é".repeat(127) + ".txt"; // 258 bytes
        let c = conflict_name(&long, s, &none);
        assert!(c.len() <= 255, "{}", c.len());
        assert!(c.ends_with(".conflict-20261122-020000.txt"));
    }

    #[test]
    fn subtree_and_relocate() {
        let mut t: Tree = Tree::new();
        for k in ["a", "a.txt", "a/b", "a/b/c", "ab", "b"] {
            t.insert(k.into(), Entry::dir(0));
        }
        let keys: Vec<&str> = subtree(&t, "a").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "a/b", "a/b/c"]);
        t.insert("z/q/b".into(), Entry::file(1, 0)); // replaced by the move
        let mut v = TreeView::new(&t);
        v.relocate("a", "z/q");
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a.txt", "ab", "b", "z/q", "z/q/b", "z/q/b/c"]);
        assert!(v.get("z/q/b").unwrap().is_dir());
        assert!(v.get("a/b").is_none() && !v.contains_key("a"));
        // A moved subtree moves again, and back where an original key was hidden.
        v.relocate("z", "y");
        v.relocate("y/q", "a");
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "a.txt", "a/b", "a/b/c", "ab", "b"]);
        let sub: Vec<&str> = v.subtree("a").map(|(k, _)| k.as_str()).collect();
        assert_eq!(sub, ["a", "a/b", "a/b/c"]);
    }
}
