//! Properties of the planner, checked against an in-memory simulation of the executor.
//!
//! A scenario starts from a random small tree (three names, depth ≤ 2) that is either synced
//! (the base holds it) or not (first run), then runs a few rounds: random edits on each side
//! (write, touch, delete, mkdir, move, symlink), a plan, and the plan applied by `World`
//! following the executor's semantics (base updates first; transfers copy an entry, give a
//! local copy a new inode and store what the side can hold — whole seconds on a coarse remote;
//! deletes move files to the side's trash; moves relocate subtrees and create missing parents;
//! every action's preconditions are checked as the executor checks them). Scenarios also vary
//! the mode, conflict policy, compare mode, delete_orphans, force_delete, a folder whose
//! listing fails, and whether the remote copies server-side (new local files with the content
//! of a synced file are then given to the planner as copy sources, as the engine finds them). After every round:
//!
//! - plans are executable: no action finds its source or destination other than planned;
//! - (a) bidirectional without errors: both sides hold the same tree;
//! - (b) idempotence: a plan made right after the run has no actions (other than the records
//!   of what cannot be synced: errors, skips) and no base updates, in every mode;
//! - (c) no version lost: every file content that existed before the run still exists on a
//!   side or in a trash;
//! - one-way and mirror modes never change their source side; mirror modes with
//!   `delete_orphans` end with equal trees, without it with every source file on the
//!   destination; nothing at or below an unreadable folder is planned;
//! - a lone rename on one side is exactly one move on the other.
//!
//! `PROPTEST_CASES=100000 cargo test --test planner_props` hunts longer.

use std::collections::{BTreeMap, BTreeSet};

use omnisync::job::{Compare, ConflictPolicy, MaxDelete, Mode};
use omnisync::model::{ActionKind as K, Base, BaseRow, Entry, Kind, Tree};
use omnisync::plan::{
    plan, Action, CopySources, Plan, PlanInput, PlanOptions, RootState, SideView,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const SEC: i64 = 1_000_000_000;
const TOPS: [&str; 3] = ["a", "b", "c"];
const KIDS: [&str; 2] = ["x", "y"];

/// The names edits pick from: `a`, `b`, `c` and `a/x` … `c/y`.
fn universe() -> Vec<String> {
    let mut v: Vec<String> = TOPS.iter().map(|s| s.to_string()).collect();
    for t in TOPS {
        for k in KIDS {
            v.push(format!("{t}/{k}"));
        }
    }
    v
}

fn parent(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn at_or_under(p: &str, dir: &str) -> bool {
    p == dir || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

/// A file version: its content id decides size and mtime (two different contents never look
/// alike, even in `fast` mode); `touched` moves the mtime without changing the content.
fn file_entry(c: u32, touched: bool, secure: bool) -> Entry {
    let mtime = 100 + 10 * c as i64 + if touched { 1000 } else { 0 };
    let mut e = Entry::file(1 + (c % 4) as u64, mtime * SEC);
    if secure {
        e.hash = Some(Box::new([c as u8; 32]));
    }
    e
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    entry: Entry,
    /// Content id for files.
    content: Option<u32>,
}

/// One side: its nodes, its trash (content ids), and inode allocation for a local side.
#[derive(Debug, Clone)]
struct SideState {
    nodes: BTreeMap<String, Node>,
    trash: Vec<u32>,
    is_local: bool,
    next_inode: u64,
    /// Added to the mtime of files written on this side (sub-second local clocks).
    frac_ns: i64,
    /// The side stores mtimes at this precision (a server with whole seconds).
    precision_ns: i64,
}

impl SideState {
    fn new(is_local: bool, frac_ns: i64, precision_ns: i64) -> SideState {
        SideState {
            nodes: BTreeMap::new(),
            trash: Vec::new(),
            is_local,
            next_inode: if is_local { 1 } else { 0 },
            frac_ns,
            precision_ns,
        }
    }

    /// A fresh entry as this side would list it: a local one gets a new inode, the mtime is
    /// what the side can store.
    fn fresh(&mut self, mut e: Entry) -> Entry {
        e.inode = None;
        if self.is_local {
            self.next_inode += 1;
            e.inode = Some(self.next_inode);
        }
        if e.is_file() {
            e.mtime -= e.mtime.rem_euclid(self.precision_ns);
        }
        e
    }

    /// Content `c` as written on this side (not yet stored: see `fresh`).
    fn version(&self, c: u32, touched: bool, secure: bool) -> Entry {
        let mut e = file_entry(c, touched, secure);
        e.mtime += self.frac_ns;
        e.mtime -= e.mtime.rem_euclid(self.precision_ns);
        e
    }

    fn tree(&self) -> Tree {
        self.nodes
            .iter()
            .map(|(k, n)| (k.clone(), n.entry.clone()))
            .collect()
    }

    fn keys_under(&self, dir: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|k| at_or_under(k, dir))
            .cloned()
            .collect()
    }

    fn has_children(&self, dir: &str) -> bool {
        self.nodes.keys().any(|k| k != dir && at_or_under(k, dir))
    }

    /// Is some proper ancestor of `p` a non-folder?
    fn blocked(&self, p: &str) -> bool {
        let mut q = parent(p);
        while !q.is_empty() {
            if self.nodes.get(q).is_some_and(|n| !n.entry.is_dir()) {
                return true;
            }
            q = parent(q);
        }
        false
    }

    fn mkdir_all(&mut self, p: &str) -> Result<(), String> {
        if p.is_empty() {
            return Ok(());
        }
        let mut prefix = String::new();
        for part in p.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            match self.nodes.get(&prefix) {
                Some(n) if n.entry.is_dir() => {}
                Some(_) => return Err(format!("mkdir {p}: {prefix} is not a folder")),
                None => {
                    let e = self.fresh(Entry::dir(0));
                    self.nodes.insert(
                        prefix.clone(),
                        Node {
                            entry: e,
                            content: None,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn remove_subtree(&mut self, p: &str) {
        for k in self.keys_under(p) {
            self.nodes.remove(&k);
        }
    }

    fn relocate(&mut self, from: &str, to: &str) {
        let keys = self.keys_under(from);
        let moved: Vec<(String, Node)> = keys
            .into_iter()
            .map(|k| {
                let n = self.nodes.remove(&k).unwrap();
                (format!("{to}{}", &k[from.len()..]), n)
            })
            .collect();
        self.nodes.extend(moved);
    }

    fn contents(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .values()
            .filter_map(|n| n.content)
            .chain(self.trash.iter().copied())
    }

    /// Path → kind and content, for comparing the two sides.
    fn shape(&self) -> BTreeMap<String, (Kind, Option<u32>)> {
        self.nodes
            .iter()
            .map(|(k, n)| (k.clone(), (n.entry.kind, n.content)))
            .collect()
    }

    fn apply_edit(&mut self, ed: &Edit, secure: bool) {
        let u = universe();
        match *ed {
            Edit::Write(i, c) => {
                let p = &u[i];
                if self.blocked(p) {
                    return;
                }
                let entry = self.version(c, false, secure);
                match self.nodes.get_mut(p.as_str()) {
                    // Edited in place: a local file keeps its inode.
                    Some(n) if n.entry.is_file() => {
                        let ino = n.entry.inode;
                        n.entry = entry;
                        n.entry.inode = ino;
                        n.content = Some(c);
                    }
                    other => {
                        if other.is_some() {
                            self.remove_subtree(p);
                        }
                        self.mkdir_all(parent(p)).unwrap();
                        let e = self.fresh(entry);
                        self.nodes.insert(
                            p.clone(),
                            Node {
                                entry: e,
                                content: Some(c),
                            },
                        );
                    }
                }
            }
            Edit::Touch(i) => {
                let Some(n) = self.nodes.get(u[i].as_str()) else {
                    return;
                };
                if let Some(c) = n.content {
                    let touched = n.entry.mtime == self.version(c, false, secure).mtime;
                    let mut e = self.version(c, touched, secure);
                    e.inode = n.entry.inode;
                    self.nodes.get_mut(u[i].as_str()).unwrap().entry = e;
                }
            }
            Edit::Delete(i) => self.remove_subtree(&u[i]),
            Edit::Link(i) => {
                let p = &u[i];
                if self.blocked(p) {
                    return;
                }
                self.remove_subtree(p);
                self.mkdir_all(parent(p)).unwrap();
                let link = Entry {
                    kind: Kind::Symlink,
                    size: 0,
                    mtime: 0,
                    inode: None,
                    hash: None,
                };
                let e = self.fresh(link);
                self.nodes.insert(
                    p.clone(),
                    Node {
                        entry: e,
                        content: None,
                    },
                );
            }
            Edit::Mkdir(i) => {
                let p = &u[i];
                if self.blocked(p) {
                    return;
                }
                if self
                    .nodes
                    .get(p.as_str())
                    .is_some_and(|n| !n.entry.is_dir())
                {
                    self.nodes.remove(p.as_str());
                }
                self.mkdir_all(p).unwrap();
            }
            Edit::Move(i, j) => {
                let (p, q) = (&u[i], &u[j]);
                if !self.nodes.contains_key(p.as_str())
                    || self.nodes.contains_key(q.as_str())
                    || at_or_under(q, p)
                    || self.blocked(q)
                {
                    return;
                }
                self.mkdir_all(parent(q)).unwrap();
                self.relocate(p, q);
            }
        }
    }
}

/// Same file as planned? (the executor's `same_file`)
fn same_file(now: &Entry, planned: &Entry) -> bool {
    now.kind == planned.kind
        && (now.kind != Kind::File || (now.size == planned.size && now.mtime == planned.mtime))
        && (now.inode.is_none() || planned.inode.is_none() || now.inode == planned.inode)
}

#[derive(Debug, Clone)]
struct World {
    local: SideState,
    remote: SideState,
    base: Base,
    /// A folder (local side?, path) whose listing fails.
    unreadable: Option<(bool, String)>,
}

impl World {
    fn side(&mut self, local: bool) -> &mut SideState {
        if local {
            &mut self.local
        } else {
            &mut self.remote
        }
    }

    fn set_base(&mut self, ups: &[omnisync::state::BaseUpdate]) {
        for u in ups {
            match &u.row {
                Some(r) => {
                    self.base.insert(u.path.clone(), r.clone());
                }
                None => {
                    self.base.remove(&u.path);
                }
            }
        }
    }

    /// The folder whose listing fails this run, if it is a folder now.
    fn unreadable(&self) -> Option<(bool, &str)> {
        let (local, p) = self.unreadable.as_ref()?;
        let side = if *local { &self.local } else { &self.remote };
        side.nodes
            .get(p)
            .is_some_and(|n| n.entry.is_dir())
            .then_some((*local, p.as_str()))
    }

    fn plan(&self, o: &PlanOptions) -> Plan {
        let (mut lt, mut rt) = (self.local.tree(), self.remote.tree());
        let (mut lu, mut ru) = (Vec::new(), Vec::new());
        if let Some((local, p)) = self.unreadable() {
            // Its listing failed: its contents are missing from the side's tree.
            let (t, u) = if local {
                (&mut lt, &mut lu)
            } else {
                (&mut rt, &mut ru)
            };
            t.retain(|k, _| k == p || !at_or_under(k, p));
            u.push(p.to_string());
        }
        let ok = RootState::Ok;
        let copies = if o.server_copy {
            self.copy_sources()
        } else {
            CopySources::new()
        };
        let input = PlanInput {
            local: SideView {
                tree: &lt,
                unknown: &lu,
                root: &ok,
            },
            remote: SideView {
                tree: &rt,
                unknown: &ru,
                root: &ok,
            },
            base: &self.base,
            copy_sources: &copies,
        };
        plan(&input, o)
    }

    /// What the engine would find: each new local file (no local base entry, absent on the
    /// remote) → the first synced path, unchanged on both sides, with the same content.
    fn copy_sources(&self) -> CopySources {
        let mut out = CopySources::new();
        for (q, n) in &self.local.nodes {
            let Some(c) = n.content else { continue };
            if self.base.get(q).is_some_and(|r| r.local.is_some())
                || self.remote.nodes.contains_key(q)
            {
                continue;
            }
            for (p, row) in &self.base {
                let (Some(bl), Some(br)) = (&row.local, &row.remote) else {
                    continue;
                };
                let (Some(lp), Some(rp)) = (self.local.nodes.get(p), self.remote.nodes.get(p))
                else {
                    continue;
                };
                if lp.content == Some(c) && lp.entry == *bl && rp.entry == *br {
                    out.insert(q.clone(), p.clone());
                    break;
                }
            }
        }
        out
    }

    fn versions(&self) -> BTreeSet<u32> {
        self.local
            .contents()
            .chain(self.remote.contents())
            .collect()
    }

    /// Apply one action as the executor does; an error means the plan could not be carried
    /// out as planned.
    fn apply(&mut self, a: &Action) -> Result<(), String> {
        match a.kind {
            K::Conflict | K::Skip | K::Error => Ok(()),
            K::MoveLocal | K::MoveRemote => {
                let side = self.side(a.kind == K::MoveLocal);
                let to = a.to.as_deref().ok_or("move without to")?;
                let now = side.nodes.get(&a.path).ok_or("move: source gone")?;
                let planned = a.src.as_ref().ok_or("move without src")?;
                if !same_file(&now.entry, planned) {
                    return Err("move: source changed".into());
                }
                // A file renamed over a synced one replaces the version planned, which goes
                // to trash; anything else at the destination stops the move.
                match (side.nodes.get(to), &a.dst) {
                    (None, _) => {}
                    (Some(now), Some(seen)) if same_file(&now.entry, seen) => {
                        if let Some(c) = now.content {
                            side.trash.push(c);
                        }
                        side.nodes.remove(to);
                    }
                    (Some(_), _) => return Err(format!("move: {to} exists")),
                }
                side.mkdir_all(parent(to))?;
                side.relocate(&a.path, to);
                self.set_base(&a.base);
                Ok(())
            }
            K::CopyRemote => {
                let to = a.to.as_deref().ok_or("copy without to")?;
                let planned = a.src.as_ref().ok_or("copy without src")?;
                let n = self
                    .remote
                    .nodes
                    .get(&a.path)
                    .cloned()
                    .ok_or("copy: source gone")?;
                if !same_file(&n.entry, planned) {
                    return Err("copy: source changed".into());
                }
                if self.remote.nodes.contains_key(to) {
                    return Err(format!("copy: {to} exists"));
                }
                let planned_local = a
                    .base
                    .iter()
                    .find(|u| u.path == to)
                    .and_then(|u| u.row.as_ref())
                    .and_then(|r| r.local.clone())
                    .ok_or("copy without the local entry it stands for")?;
                self.remote.mkdir_all(parent(to))?;
                // The executor gives the copy the local file's mtime (stored at the remote's
                // precision), then writes the base row from what both sides hold.
                let entry = self.remote.fresh(Entry {
                    mtime: planned_local.mtime,
                    ..n.entry.clone()
                });
                self.remote.nodes.insert(
                    to.to_string(),
                    Node {
                        entry: entry.clone(),
                        content: n.content,
                    },
                );
                let local_now = self
                    .local
                    .nodes
                    .get(to)
                    .filter(|l| same_file(&l.entry, &planned_local))
                    .map(|l| l.entry.clone());
                self.base.insert(
                    to.to_string(),
                    BaseRow {
                        local: local_now,
                        remote: Some(entry),
                    },
                );
                Ok(())
            }
            K::DeleteLocal | K::DeleteRemote => {
                let side = self.side(a.kind == K::DeleteLocal);
                let planned = a.src.as_ref().ok_or("delete without src")?;
                match side.nodes.get(&a.path) {
                    None => {}
                    Some(now) if !same_file(&now.entry, planned) => {
                        return Err("delete: changed since planned".into())
                    }
                    Some(now) => {
                        if now.entry.is_dir() {
                            if side.has_children(&a.path) {
                                return Err("delete: folder not empty".into());
                            }
                        } else if let Some(c) = now.content {
                            side.trash.push(c);
                        }
                        side.nodes.remove(&a.path);
                    }
                }
                self.base.remove(&a.path);
                Ok(())
            }
            K::MkdirLocal | K::MkdirRemote => {
                self.side(a.kind == K::MkdirLocal).mkdir_all(&a.path)?;
                let l = self.local.nodes.get(&a.path).map(|n| n.entry.clone());
                let r = self.remote.nodes.get(&a.path).map(|n| n.entry.clone());
                if let (Some(l), Some(r)) = (l, r) {
                    if l.is_dir() && r.is_dir() {
                        self.base.insert(
                            a.path.clone(),
                            BaseRow {
                                local: Some(l),
                                remote: Some(r),
                            },
                        );
                    }
                }
                Ok(())
            }
            K::Upload | K::Download => {
                let up = a.kind == K::Upload;
                let planned = a.src.as_ref().ok_or("transfer without src")?;
                let (src, dst) = if up {
                    (&self.local, &mut self.remote)
                } else {
                    (&self.remote, &mut self.local)
                };
                let s = src
                    .nodes
                    .get(&a.path)
                    .ok_or("transfer: source gone")?
                    .clone();
                if !same_file(&s.entry, planned) {
                    return Err("transfer: source changed".into());
                }
                match (dst.nodes.get(&a.path), &a.dst) {
                    (None, _) => {}
                    (Some(now), Some(seen)) if same_file(&now.entry, seen) => {}
                    (Some(now), _) => {
                        return Err(format!(
                            "transfer: destination changed ({:?} vs planned {:?})",
                            now.entry, a.dst
                        ))
                    }
                }
                dst.mkdir_all(parent(&a.path))?;
                if let Some(old) = dst.nodes.get(&a.path) {
                    if let Some(c) = old.content {
                        dst.trash.push(c);
                    }
                }
                let d_entry = dst.fresh(s.entry.clone());
                dst.nodes.insert(
                    a.path.clone(),
                    Node {
                        entry: d_entry.clone(),
                        content: s.content,
                    },
                );
                let row = if up {
                    BaseRow {
                        local: Some(s.entry),
                        remote: Some(d_entry),
                    }
                } else {
                    BaseRow {
                        local: Some(d_entry),
                        remote: Some(s.entry),
                    }
                };
                self.base.insert(a.path.clone(), row);
                Ok(())
            }
        }
    }

    /// Run a plan as the engine does: base updates first, then the actions in order.
    fn execute(&mut self, p: &Plan) -> Vec<String> {
        self.set_base(&p.base_updates);
        let mut errors = Vec::new();
        for a in &p.actions {
            if let Err(e) = self.apply(a) {
                errors.push(format!("{} {}: {e}", a.kind.as_str(), a.path));
            }
        }
        errors
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Debug, Clone)]
enum Spec {
    None,
    File(u32),
    Dir(Vec<Spec>),
}

#[derive(Debug, Clone)]
enum Edit {
    /// Create or overwrite a file (replacing a folder) with content.
    Write(usize, u32),
    /// Change a file's mtime only.
    Touch(usize),
    Delete(usize),
    Mkdir(usize),
    Move(usize, usize),
    /// Replace whatever is there with a symlink.
    Link(usize),
}

#[derive(Debug, Clone)]
struct Scenario {
    mode: Mode,
    policy: ConflictPolicy,
    secure: bool,
    /// The remote keeps whole seconds; local files have sub-second mtimes.
    coarse: bool,
    orphans: bool,
    force: bool,
    first_run: bool,
    /// The remote copies server-side.
    server_copy: bool,
    start: Vec<Spec>,
    /// (local edits, remote edits) per round.
    rounds: Vec<(Vec<Edit>, Vec<Edit>)>,
    /// A folder (local side?, universe index) whose listing fails in every round.
    unreadable: Option<(bool, usize)>,
}

fn spec_leaf() -> impl Strategy<Value = Spec> {
    prop_oneof![
        2 => Just(Spec::None),
        3 => (0u32..6).prop_map(Spec::File),
        1 => Just(Spec::Dir(vec![])),
    ]
}

fn spec_top() -> impl Strategy<Value = Spec> {
    prop_oneof![
        1 => Just(Spec::None),
        2 => (0u32..6).prop_map(Spec::File),
        3 => prop::collection::vec(spec_leaf(), KIDS.len()).prop_map(Spec::Dir),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let n = universe().len();
    prop_oneof![
        4 => (0..n, 0u32..10).prop_map(|(i, c)| Edit::Write(i, c)),
        1 => (0..n).prop_map(Edit::Touch),
        3 => (0..n).prop_map(Edit::Delete),
        1 => (0..n).prop_map(Edit::Mkdir),
        6 => (0..n, 0..n).prop_map(|(i, j)| Edit::Move(i, j)),
        1 => (0..n).prop_map(Edit::Link),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 0..4)
}

fn scenario_with(modes: Vec<Mode>) -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(modes),
        prop::sample::select(ConflictPolicy::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::collection::vec(spec_top(), TOPS.len()),
        prop::collection::vec((edits(), edits()), 1..4),
        prop::option::weighted(0.25, (any::<bool>(), 0..universe().len())),
    )
        .prop_map(
            |(
                mode,
                policy,
                secure,
                coarse,
                orphans,
                force,
                first_run,
                server_copy,
                start,
                rounds,
                unreadable,
            )| Scenario {
                mode,
                policy: if mode == Mode::Bidirectional {
                    policy
                } else {
                    ConflictPolicy::Newer
                },
                secure,
                coarse,
                orphans: orphans && mode.is_mirror(),
                force,
                first_run,
                server_copy,
                start,
                rounds,
                unreadable,
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(Mode::ALL.to_vec())
}

impl Scenario {
    fn options(&self) -> PlanOptions {
        let mut o = PlanOptions::new(self.mode);
        o.conflict = self.policy;
        o.compare = if self.secure {
            Compare::Secure
        } else {
            Compare::Fast
        };
        o.delete_orphans = self.orphans;
        if self.coarse {
            o.remote_precision_ns = SEC;
        }
        o.force_delete = self.force;
        o.server_copy = self.server_copy;
        // The emptied-root guard still trips without force; max_delete has its own tables.
        o.max_delete = MaxDelete::Count(1000);
        o
    }

    /// The starting world: the tree on both sides, and in the base unless a first run.
    fn world(&self) -> World {
        let (frac, precision) = if self.coarse {
            (400_000_000, SEC)
        } else {
            (0, 1)
        };
        let mut w = World {
            local: SideState::new(true, frac, 1),
            remote: SideState::new(false, 0, precision),
            base: Base::new(),
            unreadable: self
                .unreadable
                .map(|(local, i)| (local, universe()[i].clone())),
        };
        let secure = self.secure;
        let mut put = |p: String, content: Option<u32>| {
            let entry = match content {
                Some(c) => w.local.version(c, false, secure),
                None => Entry::dir(0),
            };
            let l = w.local.fresh(entry.clone());
            let r = w.remote.fresh(entry);
            w.local.nodes.insert(
                p.clone(),
                Node {
                    entry: l.clone(),
                    content,
                },
            );
            w.remote.nodes.insert(
                p.clone(),
                Node {
                    entry: r.clone(),
                    content,
                },
            );
            if !self.first_run {
                w.base.insert(
                    p,
                    BaseRow {
                        local: Some(l),
                        remote: Some(r),
                    },
                );
            }
        };
        for (top, spec) in TOPS.iter().zip(&self.start) {
            match spec {
                Spec::None => {}
                Spec::File(c) => put(top.to_string(), Some(*c)),
                Spec::Dir(kids) => {
                    put(top.to_string(), None);
                    for (k, s) in KIDS.iter().zip(kids) {
                        let p = format!("{top}/{k}");
                        match s {
                            Spec::None => {}
                            Spec::File(c) => put(p, Some(*c)),
                            Spec::Dir(_) => put(p, None),
                        }
                    }
                }
            }
        }
        w
    }
}

/// What happened in one round.
struct Round {
    before: World,
    plan: Plan,
    after: World,
    exec_errors: Vec<String>,
    replan: Plan,
}

fn run(s: &Scenario) -> Vec<Round> {
    let o = s.options();
    let mut w = s.world();
    let mut out = Vec::new();
    for (le, re) in &s.rounds {
        for e in le {
            w.local.apply_edit(e, s.secure);
        }
        for e in re {
            w.remote.apply_edit(e, s.secure);
        }
        let before = w.clone();
        let p = w.plan(&o);
        let exec_errors = if p.guard.is_none() {
            w.execute(&p)
        } else {
            Vec::new()
        };
        let replan = w.plan(&o);
        out.push(Round {
            before,
            plan: p,
            after: w.clone(),
            exec_errors,
            replan,
        });
    }
    out
}

fn show_plan(p: &Plan) -> String {
    let mut s = String::new();
    for a in &p.actions {
        s += &format!(
            "    {} {}{}{}\n",
            a.kind.as_str(),
            a.path,
            a.to.as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default(),
            a.message
                .as_deref()
                .map(|m| format!("  ({m})"))
                .unwrap_or_default()
        );
    }
    for u in &p.base_updates {
        s += &format!(
            "    base {}{}\n",
            if u.row.is_some() { '+' } else { '-' },
            u.path
        );
    }
    if let Some(g) = &p.guard {
        s += &format!("    guard: {g}\n");
    }
    s
}

fn show_world(w: &World) -> String {
    format!(
        "    local  {:?}\n    remote {:?}\n    base   {:?}\n",
        w.local.shape(),
        w.remote.shape(),
        w.base.keys().collect::<Vec<_>>()
    )
}

fn fail(i: usize, r: &Round, what: String) -> TestCaseError {
    TestCaseError::fail(format!(
        "round {i}: {what}\n  before:\n{}  plan:\n{}  after:\n{}  exec errors: {:?}\n  replan:\n{}",
        show_world(&r.before),
        show_plan(&r.plan),
        show_world(&r.after),
        r.exec_errors,
        show_plan(&r.replan)
    ))
}

type Shape = BTreeMap<String, (Kind, Option<u32>)>;

/// Both sides' shapes without symlinks (never synced, only skipped) and the unreadable folder,
/// what is below them, and the folders holding them (which stay where a folder holding only
/// synced files would go).
fn comparable(w: &World, unreadable: Option<&str>) -> (Shape, Shape) {
    let (mut l, mut r) = (w.local.shape(), w.remote.shape());
    let links: Vec<String> = l
        .iter()
        .chain(r.iter())
        .filter(|(_, (k, _))| *k == Kind::Symlink)
        .map(|(p, _)| p.clone())
        .chain(unreadable.map(str::to_string))
        .collect();
    for m in [&mut l, &mut r] {
        m.retain(|p, _| !links.iter().any(|s| at_or_under(p, s) || at_or_under(s, p)));
    }
    (l, r)
}

fn has_error(p: &Plan) -> bool {
    p.actions.iter().any(|a| a.kind == K::Error)
}

/// The plan ran to the end as planned (no guard, no action failed).
fn ran(r: &Round) -> bool {
    r.plan.guard.is_none() && r.exec_errors.is_empty()
}

/// 3000 cases per property by default (the file runs in a few seconds); `PROPTEST_CASES`
/// overrides it for a longer hunt.
/// From a synced start, rename `u[i]` to `u[j]` on one side and nothing else: the plan must
/// be that one move (plus new parent folders), and running it must leave both sides equal.
fn check_rename(s: &Scenario, local: bool, i: usize, j: usize) -> Result<(), TestCaseError> {
    let s = Scenario {
        first_run: false,
        unreadable: None,
        ..s.clone()
    };
    let o = s.options();
    let mut w = s.world();
    let before = w.clone();
    let u = universe();
    let (p, q) = (&u[i], &u[j]);
    let untouched = w.side(local).nodes.clone();
    w.side(local).apply_edit(&Edit::Move(i, j), s.secure);
    if w.side(local).nodes == untouched {
        return Ok(()); // the rename was not possible
    }
    let holds_file = w
        .side(local)
        .nodes
        .iter()
        .any(|(k, n)| at_or_under(k, q) && n.entry.is_file());
    if !holds_file {
        // A folder with no file below it has no identity on a remote, and locally its inode
        // number may be a freed one given to a new folder: it is made anew.
        return Ok(());
    }
    let plan = w.plan(&o);
    let (mv, mk) = if local {
        (K::MoveRemote, K::MkdirRemote)
    } else {
        (K::MoveLocal, K::MkdirLocal)
    };
    let moves: Vec<&Action> = plan.actions.iter().filter(|a| a.kind == mv).collect();
    let others: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| !(a.kind == mv || (a.kind == mk && at_or_under(q, &a.path) && &a.path != q)))
        .collect();
    let round = |after: World, exec_errors, replan| Round {
        before: before.clone(),
        plan: plan.clone(),
        after,
        exec_errors,
        replan,
    };
    if moves.len() != 1
        || moves[0].path != *p
        || moves[0].to.as_deref() != Some(q.as_str())
        || !others.is_empty()
        || plan.guard.is_some()
    {
        return Err(fail(
            0,
            &round(w.clone(), vec![], Plan::default()),
            format!("{p} -> {q}: not one move"),
        ));
    }
    let mut after = w.clone();
    let errors = after.execute(&plan);
    let replan = after.plan(&o);
    let (l, r) = comparable(&after, None);
    if !errors.is_empty() || !replan.actions.is_empty() || !replan.base_updates.is_empty() || l != r
    {
        return Err(fail(
            0,
            &round(after, errors, replan),
            format!("{p} -> {q}: not synced after the move"),
        ));
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every planned action can be carried out: its source and destination are what the
    /// plan says when the action's turn comes.
    #[test]
    fn plans_are_executable(s in scenario()) {
        for (i, r) in run(&s).iter().enumerate() {
            if !r.exec_errors.is_empty() {
                return Err(fail(i, r, "an action could not be applied".into()));
            }
        }
    }

    /// (a) After a bidirectional run without errors both sides hold the same tree — whatever
    /// the conflict policy, since every policy resolves a conflict on both sides.
    #[test]
    fn bidirectional_converges(s in scenario_with(vec![Mode::Bidirectional])) {
        for (i, r) in run(&s).iter().enumerate() {
            if !ran(r) || has_error(&r.plan) {
                continue;
            }
            let unreadable = r.before.unreadable().map(|(_, p)| p);
            let (l, rt) = comparable(&r.after, unreadable);
            if l != rt {
                return Err(fail(i, r, "the two sides differ after the run".into()));
            }
        }
    }

    /// (b) A plan made right after a run changes nothing, in every mode.
    #[test]
    fn idempotent(s in scenario()) {
        for (i, r) in run(&s).iter().enumerate() {
            if !ran(r) {
                continue;
            }
            let leftover: Vec<&Action> = r
                .replan
                .actions
                .iter()
                .filter(|a| !matches!(a.kind, K::Error | K::Skip))
                .collect();
            if !leftover.is_empty() || !r.replan.base_updates.is_empty() || r.replan.guard.is_some() {
                return Err(fail(i, r, format!("{:?}: the second plan is not empty", s.mode)));
            }
            // What cannot be synced is reported again, and nothing new.
            for a in &r.replan.actions {
                if !r.plan.actions.iter().any(|b| b.kind == a.kind && b.path == a.path) {
                    return Err(fail(i, r, format!("new record {} {}", a.kind.as_str(), a.path)));
                }
            }
        }
    }

    /// (c) No version lost: every file content before the run is, after it, on a side or in
    /// a trash.
    #[test]
    fn no_version_lost(s in scenario()) {
        for (i, r) in run(&s).iter().enumerate() {
            let before = r.before.versions();
            let after = r.after.versions();
            let lost: Vec<u32> = before.difference(&after).copied().collect();
            if !lost.is_empty() {
                return Err(fail(i, r, format!("{:?}: contents {lost:?} lost", s.mode)));
            }
        }
    }

    /// One-way and mirror modes never change their source side; `download` and `upload`
    /// delete on the destination only what a transfer or folder replaces.
    #[test]
    fn one_way_modes_leave_the_source_alone(
        s in scenario_with(vec![Mode::Download, Mode::Upload, Mode::Mirror, Mode::MirrorUpload])
    ) {
        for (i, r) in run(&s).iter().enumerate() {
            let (b, a) = if s.mode.writes_local() {
                (&r.before.remote, &r.after.remote)
            } else {
                (&r.before.local, &r.after.local)
            };
            if b.nodes != a.nodes || b.trash != a.trash {
                return Err(fail(i, r, format!("{:?}: the source side changed", s.mode)));
            }
            if s.mode.is_mirror() {
                continue;
            }
            for d in r.plan.actions.iter().filter(|a| a.is_delete()) {
                let replaced = r.plan.actions.iter().any(|a| {
                    a.path == d.path
                        && matches!(a.kind, K::Upload | K::Download | K::MkdirLocal | K::MkdirRemote)
                });
                if !replaced {
                    return Err(fail(i, r, format!("{:?}: deletes {}", s.mode, d.path)));
                }
            }
        }
    }

    /// Nothing at or below a folder whose listing failed is planned, on either side.
    #[test]
    fn unreadable_folders_are_left_alone(s in scenario()) {
        for (i, r) in run(&s).iter().enumerate() {
            let Some((_, u)) = r.before.unreadable() else { continue };
            let touched = r.plan.actions.iter().find(|a| {
                at_or_under(&a.path, u) || a.to.as_deref().is_some_and(|t| at_or_under(t, u))
            });
            if let Some(a) = touched {
                return Err(fail(i, r, format!("{} {} under unreadable {u}", a.kind.as_str(), a.path)));
            }
            if let Some(b) = r.plan.base_updates.iter().find(|b| at_or_under(&b.path, u)) {
                return Err(fail(i, r, format!("base update {} under unreadable {u}", b.path)));
            }
        }
    }

    /// A local rename of a file, or of a folder holding a file (nothing else changed), is
    /// one remote move, plus the creation of the new parent folders: no upload, no deletion.
    #[test]
    fn a_local_rename_is_one_remote_move(
        s in scenario_with(vec![Mode::Bidirectional, Mode::Upload, Mode::MirrorUpload]),
        i in 0..universe().len(),
        j in 0..universe().len(),
    ) {
        check_rename(&s, true, i, j)?;
    }

    /// A remote rename of a file, or of a folder holding a file, is one local move.
    #[test]
    fn a_remote_rename_is_one_local_move(
        s in scenario_with(vec![Mode::Bidirectional, Mode::Download, Mode::Mirror]),
        i in 0..universe().len(),
        j in 0..universe().len(),
    ) {
        check_rename(&s, false, i, j)?;
    }

    /// Mirror modes: with delete_orphans the destination ends equal to the source; without,
    /// it holds at least every source path with the source's content.
    #[test]
    fn mirror_modes_copy_the_source(s in scenario_with(vec![Mode::Mirror, Mode::MirrorUpload])) {
        for (i, r) in run(&s).iter().enumerate() {
            if !ran(r) || has_error(&r.plan) {
                continue;
            }
            let unreadable = r.before.unreadable().map(|(_, p)| p);
            let (l, rt) = comparable(&r.after, unreadable);
            let (src, dst) = if s.mode == Mode::Mirror { (rt, l) } else { (l, rt) };
            if s.orphans {
                if src != dst {
                    return Err(fail(i, r, "mirror + delete_orphans: sides differ".into()));
                }
            } else if let Some((p, c)) = src.iter().find(|(p, c)| dst.get(*p) != Some(c)) {
                return Err(fail(i, r, format!("mirror: {p} ({c:?}) not on the destination")));
            }
        }
    }
}

/// The generator reaches every kind of action (so the properties above are not vacuous).
#[test]
fn scenarios_reach_every_action_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = scenario();
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut keep_both = 0;
    for _ in 0..3000 {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        for r in run(&s) {
            for a in &r.plan.actions {
                *seen.entry(a.kind.as_str()).or_default() += 1;
                if a.kind == K::Conflict && a.to.is_some() {
                    keep_both += 1;
                }
            }
        }
    }
    let missing: Vec<&str> = K::ALL
        .iter()
        .map(|k| k.as_str())
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "never planned: {missing:?} (seen {seen:?})"
    );
    assert!(keep_both > 0, "no keep-both conflict planned");
    eprintln!("{seen:?}, keep-both {keep_both}");
}
