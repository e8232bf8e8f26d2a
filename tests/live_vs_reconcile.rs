//! The live path and a full reconcile end in the same state from the same starting point
//! (DESIGN.md, "Invariants worth testing with properties").
//!
//! Two identical setups (a local folder synced to a `local` remote, each with its own state)
//! get the same random local edits: new files, rewrites, deletions, renames of files (also
//! over a synced file and into another folder), new folders, renamed and deleted folders.
//! Setup A then runs the way the agent does, scoped to the paths the edits touched (both
//! names of a rename, the folder of a folder operation); setup B runs a full reconcile.
//! Afterwards both remotes hold the same tree, and a full run of A has nothing left to do: the
//! live path left nothing for a reconcile to fix. Real files, real SQLite state, the real
//! engine; proptest shrinks a failure to its shortest edit script.
//!
//! The `*_pipeline_*` properties take the agent's own way to the batches instead of the list
//! of touched paths: inotify (notify) → the watcher's converter → the coalescer, batch after
//! batch until the journal is empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use omnisync::coalesce::{coalesce, Change};
use omnisync::engine::{run_job_with, RunContext, RunSummary};
use omnisync::filter::Filter;
use omnisync::job::{MaxDelete, Mode};
use omnisync::model::ActionRecord;
use omnisync::watch::{self, Converter};
use proptest::prelude::*;

#[path = "common/in_process.rs"]
mod in_process;

const DIRS: &[&str] = &["d", "e", "d/s"];
const FILES: &[&str] = &["a", "b", "d/x", "d/y", "d/s/z", "e/w", "d/t.tmp"];

#[derive(Debug, Clone)]
enum Edit {
    /// Write file `FILES[i]` (creating its folders) with content `c`.
    Write(usize, u8),
    Delete(usize),
    /// Rename file `FILES[i]` to `FILES[j]` (over it, if it is there; folders created).
    Rename(usize, usize),
    Mkdir(usize),
    /// Rename folder `DIRS[i]` to `DIRS[j]` (only where the target is absent).
    RenameDir(usize, usize),
    RemoveDir(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let f = 0..FILES.len();
    let d = 0..DIRS.len();
    prop_oneof![
        3 => (f.clone(), any::<u8>()).prop_map(|(i, c)| Edit::Write(i, c)),
        1 => f.clone().prop_map(Edit::Delete),
        3 => (f.clone(), f).prop_map(|(i, j)| Edit::Rename(i, j)),
        1 => d.clone().prop_map(Edit::Mkdir),
        2 => (d.clone(), d.clone()).prop_map(|(i, j)| Edit::RenameDir(i, j)),
        1 => d.prop_map(Edit::RemoveDir),
    ]
}

/// A fixed time for step `n`: whole seconds apart, the same in both setups.
fn at(n: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 10 * n as u64)
}

fn write(root: &Path, rel: &str, c: u8, n: usize, touched: &mut BTreeSet<String>) {
    mkdirs(root, parent(rel), touched);
    let p = root.join(rel);
    if p.is_dir() {
        return;
    }
    // The size varies with the content, so a rewrite is a change even by size.
    let data = vec![c; 1 + c as usize % 7];
    std::fs::write(&p, data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(at(n))
        .unwrap();
    touched.insert(rel.to_string());
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Create `rel` and its missing parents (each new folder is an event of its own).
fn mkdirs(root: &Path, rel: &str, touched: &mut BTreeSet<String>) -> bool {
    if rel.is_empty() {
        return true;
    }
    let p = root.join(rel);
    if p.is_dir() {
        return true;
    }
    if p.exists() || !mkdirs(root, parent(rel), touched) {
        return false;
    }
    std::fs::create_dir(&p).unwrap();
    touched.insert(rel.to_string());
    true
}

/// Apply `e` at step `n`; what it touched goes to `touched` (what the watcher would report).
fn apply(root: &Path, e: &Edit, n: usize, touched: &mut BTreeSet<String>) {
    match *e {
        Edit::Write(i, c) => write(root, FILES[i], c, n, touched),
        Edit::Delete(i) => {
            if root.join(FILES[i]).is_file() {
                std::fs::remove_file(root.join(FILES[i])).unwrap();
                touched.insert(FILES[i].to_string());
            }
        }
        Edit::Rename(i, j) => {
            let (from, to) = (FILES[i], FILES[j]);
            if i == j || !root.join(from).is_file() || root.join(to).is_dir() {
                return;
            }
            if !mkdirs(root, parent(to), touched) {
                return;
            }
            std::fs::rename(root.join(from), root.join(to)).unwrap();
            touched.insert(from.to_string());
            touched.insert(to.to_string());
        }
        Edit::Mkdir(i) => {
            mkdirs(root, DIRS[i], touched);
        }
        Edit::RenameDir(i, j) => {
            let (from, to) = (DIRS[i], DIRS[j]);
            // Not into itself, not onto something that is there.
            if i == j
                || to.starts_with(&format!("{from}/"))
                || !root.join(from).is_dir()
                || root.join(to).exists()
                || !mkdirs(root, parent(to), touched)
            {
                return;
            }
            std::fs::rename(root.join(from), root.join(to)).unwrap();
            touched.insert(from.to_string());
            touched.insert(to.to_string());
        }
        Edit::RemoveDir(i) => {
            if root.join(DIRS[i]).is_dir() {
                std::fs::remove_dir_all(root.join(DIRS[i])).unwrap();
                touched.insert(DIRS[i].to_string());
            }
        }
    }
}

/// Every file (content, mtime) and folder below `root`, without `.omnisync`.
fn tree(root: &Path) -> BTreeMap<String, Option<(Vec<u8>, SystemTime)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".omnisync" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(rel, Some((std::fs::read(&p).unwrap(), m)));
            }
        }
    }
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    local: PathBuf,
    remote: PathBuf,
    agent: omnisync::job::AgentSettings,
    job: omnisync::job::Job,
    opts: omnisync::engine::RunOptions,
}

impl Setup {
    fn new(mode: Mode, exclude: &[&str], initial: &[(usize, u8)]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
        std::fs::create_dir_all(&local).unwrap();
        std::fs::create_dir_all(&remote).unwrap();
        let (agent, mut job, mut opts) =
            in_process::setup(tmp.path(), "prop", &local, &remote, mode);
        // Edits may empty the local root: that is what the user did, not a lost mount.
        opts.force_delete = true;
        job.delete_orphans = matches!(mode, Mode::MirrorUpload);
        job.max_delete = MaxDelete::Percent(100);
        job.exclude = exclude.iter().map(|e| e.to_string()).collect();
        let mut ignored = BTreeSet::new();
        for &(i, c) in initial {
            write(&local, FILES[i], c, 0, &mut ignored);
        }
        let s = Setup {
            _tmp: tmp,
            local,
            remote,
            agent,
            job,
            opts,
        };
        let first = s.run(None);
        assert_eq!(first.errors, 0, "the first sync failed");
        s
    }

    fn run(&self, scope: Option<&[String]>) -> RunSummary {
        let sink = |_: &ActionRecord| {};
        run_job_with(
            &self.agent,
            &self.job,
            &self.opts,
            &sink,
            RunContext {
                scope,
                ..Default::default()
            },
        )
        .unwrap()
    }
}

/// The touched paths as a batch's scope: sorted, none below another.
fn scope_of(touched: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in touched {
        if out.last().is_some_and(|r| p.starts_with(&format!("{r}/"))) {
            continue;
        }
        out.push(p.clone());
    }
    out
}

fn check(
    mode: Mode,
    exclude: &[&str],
    initial: &[(usize, u8)],
    edits: &[Edit],
) -> Result<(), TestCaseError> {
    let a = Setup::new(mode, exclude, initial);
    let b = Setup::new(mode, exclude, initial);
    prop_assert_eq!(tree(&a.remote), tree(&b.remote));
    let mut touched = BTreeSet::new();
    let mut ignored = BTreeSet::new();
    for (n, e) in edits.iter().enumerate() {
        apply(&a.local, e, n + 1, &mut touched);
        apply(&b.local, e, n + 1, &mut ignored);
    }
    prop_assert_eq!(tree(&a.local), tree(&b.local));
    let scope = scope_of(&touched);
    let live = a.run(Some(&scope));
    prop_assert_eq!(live.errors, 0);
    same_end(&a, &b, &format!("the live batch (scope {scope:?})"))
}

/// B runs a full reconcile; its remote must be A's, and a reconcile of A (after its live
/// path, `what`) must find nothing left to do.
fn same_end(a: &Setup, b: &Setup, what: &str) -> Result<(), TestCaseError> {
    let full = b.run(None);
    prop_assert_eq!(full.errors, 0);
    prop_assert_eq!(
        tree(&a.remote),
        tree(&b.remote),
        "{} and the reconcile left different remotes",
        what
    );
    let after = a.run(None);
    prop_assert_eq!(
        after.counts.values().sum::<u64>(),
        0,
        "a reconcile after {} still had work: {:?}",
        what,
        after.counts
    );
    Ok(())
}

/// [`check`] with the batches the agent would make: A's edits are watched (inotify, the
/// converter), and the coalescer, at a time when everything is due, cuts them into batches.
fn check_pipeline(
    mode: Mode,
    exclude: &[&str],
    initial: &[(usize, u8)],
    edits: &[Edit],
) -> Result<(), TestCaseError> {
    let a = Setup::new(mode, exclude, initial);
    let b = Setup::new(mode, exclude, initial);
    let (tx, rx) = std::sync::mpsc::channel();
    let _watcher = watch::watch(&a.local, move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let mut ignored = BTreeSet::new();
    // What the job sees of the local tree (the tests exclude only `*.tmp`).
    let seen = |root: &Path| {
        let mut t = tree(root);
        if !exclude.is_empty() {
            t.retain(|k, _| !k.ends_with(".tmp"));
        }
        t
    };
    let untouched = seen(&a.local);
    for (n, e) in edits.iter().enumerate() {
        apply(&a.local, e, n + 1, &mut ignored);
        apply(&b.local, e, n + 1, &mut ignored);
    }
    prop_assert_eq!(tree(&a.local), tree(&b.local));
    let changed = seen(&a.local) != untouched;
    // Everything the watcher reports, until it has been quiet for a while.
    let filter = Filter::new(&a.job.include, &a.job.exclude).unwrap();
    let mut conv = Converter::new(a.local.clone(), filter);
    let mut observed = Vec::new();
    while let Ok(ev) = rx.recv_timeout(Duration::from_millis(150)) {
        conv.push(&ev.unwrap(), Instant::now(), &mut observed);
    }
    conv.flush_stale(Instant::now() + Duration::from_secs(1), &mut observed);
    let mut pending: Vec<Change> = observed
        .into_iter()
        .enumerate()
        .map(|(i, o)| Change {
            id: i as i64 + 1,
            at_ns: 1,
            kind: o.kind,
            path: o.path,
            to: o.to,
            dir: o.dir,
        })
        .collect();
    prop_assert!(
        !changed || !pending.is_empty(),
        "the watcher saw none of the edits"
    );
    let journal = format!("{pending:?}");
    let mut batches: Vec<Vec<String>> = Vec::new();
    while !pending.is_empty() {
        let batch = coalesce(&pending, i64::MAX / 4, 200_000_000, &HashMap::new());
        if batch.reconcile {
            a.run(None);
            batches.push(vec!["(reconcile)".into()]);
            break;
        }
        if !batch.ready.is_empty() {
            let live = a.run(Some(&batch.ready));
            prop_assert_eq!(live.errors, 0, "batch {:?}", batch.ready);
            batches.push(batch.ready.clone());
        }
        let before = pending.len();
        pending.retain(|c| !batch.consumed.contains(&c.id) && !batch.dropped.contains(&c.id));
        prop_assert!(
            pending.len() < before,
            "the coalescer left {:?} pending",
            pending
        );
    }
    same_end(
        &a,
        &b,
        &format!("the live batches {batches:?} (journal {journal})"),
    )
}

fn initial() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((0..FILES.len(), any::<u8>()), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LIVE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mirror_upload_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check(Mode::MirrorUpload, &[], &init, &edits)?;
    }

    /// With an exclude pattern (`*.tmp`): what it excludes stays out on both paths, also when
    /// a rename moves a file in or out of it.
    #[test]
    fn mirror_upload_with_a_filter_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check(Mode::MirrorUpload, &["*.tmp"], &init, &edits)?;
    }

    #[test]
    fn upload_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check(Mode::Upload, &[], &init, &edits)?;
    }

    #[test]
    fn mirror_upload_pipeline_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check_pipeline(Mode::MirrorUpload, &["*.tmp"], &init, &edits)?;
    }

    #[test]
    fn bidirectional_pipeline_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check_pipeline(Mode::Bidirectional, &[], &init, &edits)?;
    }

    #[test]
    fn bidirectional_live_equals_reconcile(
        init in initial(),
        edits in prop::collection::vec(edit(), 1..7),
    ) {
        check(Mode::Bidirectional, &[], &init, &edits)?;
    }
}
