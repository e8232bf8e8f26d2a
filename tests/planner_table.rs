//! Table-driven tests of the planner (Mutagen `reconcile_test.go` style): every case names a
//! mode and options, the two trees and the base, and the exact plan expected — actions in
//! execution order as `(kind, path, to)`, base updates as `+path` (row written) / `-path`
//! (row dropped), and the guard.

use omnisync::job::{Compare, ConflictPolicy, MaxDelete, Mode};
use omnisync::model::{ActionKind as K, Base, BaseRow, Entry, Kind, Side, Tree};
use omnisync::plan::{plan, CopySources, Guard, Plan, PlanInput, PlanOptions, RootState, SideView};

const SEC: i64 = 1_000_000_000;
const STAMP: &str = "20261122-020000";

// ---------------------------------------------------------------------------------------------
// A tiny DSL for trees.

type E = (String, Entry);

/// A file: size, mtime in whole seconds.
fn f(p: &str, size: u64, mtime: i64) -> E {
    (p.to_string(), Entry::file(size, mtime * SEC))
}

/// A file with an mtime in nanoseconds.
fn f_ns(p: &str, size: u64, mtime_ns: i64) -> E {
    (p.to_string(), Entry::file(size, mtime_ns))
}

/// A local file with an inode.
fn fi(p: &str, size: u64, mtime: i64, ino: u64) -> E {
    let mut e = Entry::file(size, mtime * SEC);
    e.inode = Some(ino);
    (p.to_string(), e)
}

/// A file with a content hash (one byte repeated).
fn fh(p: &str, size: u64, mtime: i64, h: u8) -> E {
    let mut e = Entry::file(size, mtime * SEC);
    e.hash = Some(Box::new([h; 32]));
    (p.to_string(), e)
}

fn d(p: &str) -> E {
    (p.to_string(), Entry::dir(0))
}

/// A local folder with an inode.
fn di(p: &str, ino: u64) -> E {
    let mut e = Entry::dir(0);
    e.inode = Some(ino);
    (p.to_string(), e)
}

fn sl(p: &str) -> E {
    (
        p.to_string(),
        Entry {
            kind: Kind::Symlink,
            size: 0,
            mtime: 0,
            inode: None,
            hash: None,
        },
    )
}

/// An expected action without a destination.
fn a(k: K, p: &str) -> (K, String, Option<String>) {
    (k, p.to_string(), None)
}

/// An expected action with a destination (moves, copies, keep-both conflicts).
fn at(k: K, p: &str, to: &str) -> (K, String, Option<String>) {
    (k, p.to_string(), Some(to.to_string()))
}

/// The expected guard, by kind.
#[derive(Debug, Clone, PartialEq)]
enum G {
    Max { count: u64, limit: u64 },
    Missing(Side),
    Emptied(Side, u64),
}

#[derive(Clone)]
struct Case {
    name: String,
    opts: PlanOptions,
    local: Tree,
    remote: Tree,
    base: Base,
    local_unknown: Vec<String>,
    remote_unknown: Vec<String>,
    local_root: RootState,
    remote_root: RootState,
    copy_sources: CopySources,
    expect: Vec<(K, String, Option<String>)>,
    ups: Vec<String>,
    guard: Option<G>,
}

fn case(name: impl Into<String>, mode: Mode) -> Case {
    let mut opts = PlanOptions::new(mode);
    // Small trees would trip the default 50% on every deletion; guards have their own cases.
    opts.max_delete = MaxDelete::Percent(100);
    opts.conflict_stamp = STAMP.to_string();
    Case {
        name: name.into(),
        opts,
        local: Tree::new(),
        remote: Tree::new(),
        base: Base::new(),
        local_unknown: Vec::new(),
        remote_unknown: Vec::new(),
        local_root: RootState::Ok,
        remote_root: RootState::Ok,
        copy_sources: CopySources::new(),
        expect: Vec::new(),
        ups: Vec::new(),
        guard: None,
    }
}

impl Case {
    /// The same entries on both sides and in the base: the state right after a sync.
    fn synced(mut self, es: impl IntoIterator<Item = E>) -> Case {
        for (p, e) in es {
            self.local.insert(p.clone(), e.clone());
            self.remote.insert(p.clone(), e.clone());
            self.base.insert(
                p,
                BaseRow {
                    local: Some(e.clone()),
                    remote: Some(e),
                },
            );
        }
        self
    }
    fn local(mut self, es: impl IntoIterator<Item = E>) -> Case {
        self.local.extend(es);
        self
    }
    fn remote(mut self, es: impl IntoIterator<Item = E>) -> Case {
        self.remote.extend(es);
        self
    }
    fn both(self, es: impl IntoIterator<Item = E> + Clone) -> Case {
        self.local(es.clone()).remote(es)
    }
    /// A base row for `p` with the given local and remote entries.
    fn base_row(mut self, p: &str, l: Option<Entry>, r: Option<Entry>) -> Case {
        self.base.insert(
            p.to_string(),
            BaseRow {
                local: l,
                remote: r,
            },
        );
        self
    }
    fn rm_local(mut self, ps: &[&str]) -> Case {
        for p in ps {
            assert!(
                self.local.remove(*p).is_some(),
                "{}: no local {p}",
                self.name
            );
        }
        self
    }
    fn rm_remote(mut self, ps: &[&str]) -> Case {
        for p in ps {
            assert!(
                self.remote.remove(*p).is_some(),
                "{}: no remote {p}",
                self.name
            );
        }
        self
    }
    fn opt(mut self, set: impl FnOnce(&mut PlanOptions)) -> Case {
        set(&mut self.opts);
        self
    }
    fn policy(self, c: ConflictPolicy) -> Case {
        self.opt(|o| o.conflict = c)
    }
    /// The engine found new local `to` identical to synced `from`.
    fn same_content(mut self, to: &str, from: &str) -> Case {
        self.copy_sources.insert(to.to_string(), from.to_string());
        self
    }
    fn orphans(self) -> Case {
        self.opt(|o| o.delete_orphans = true)
    }
    fn expect(mut self, v: impl IntoIterator<Item = (K, String, Option<String>)>) -> Case {
        self.expect = v.into_iter().collect();
        self
    }
    fn ups(mut self, v: &[&str]) -> Case {
        self.ups = v.iter().map(|s| s.to_string()).collect();
        self
    }
    fn guard(mut self, g: G) -> Case {
        self.guard = Some(g);
        self
    }

    fn plan(&self) -> Plan {
        let input = PlanInput {
            local: SideView {
                tree: &self.local,
                unknown: &self.local_unknown,
                root: &self.local_root,
            },
            remote: SideView {
                tree: &self.remote,
                unknown: &self.remote_unknown,
                root: &self.remote_root,
            },
            base: &self.base,
            copy_sources: &self.copy_sources,
        };
        plan(&input, &self.opts)
    }

    /// Empty when the plan is as expected, else a description of the difference.
    fn check(&self) -> Option<String> {
        let p = self.plan();
        let got: Vec<(K, String, Option<String>)> = p
            .actions
            .iter()
            .map(|a| (a.kind, a.path.clone(), a.to.clone()))
            .collect();
        let mut got_ups: Vec<String> = p
            .base_updates
            .iter()
            .map(|u| format!("{}{}", if u.row.is_some() { '+' } else { '-' }, u.path))
            .collect();
        got_ups.sort();
        let mut want_ups = self.ups.clone();
        want_ups.sort();
        let got_guard = p.guard.as_ref().map(|g| match g {
            Guard::MaxDelete { count, limit, .. } => G::Max {
                count: *count,
                limit: *limit,
            },
            Guard::RootMissing { side, .. } => G::Missing(*side),
            Guard::EmptiedRoot { side, deletes } => G::Emptied(*side, *deletes),
        });
        let mut msg = String::new();
        if got != self.expect {
            msg += &format!(
                "  actions:\n    want {}\n    got  {}\n",
                fmt_actions(&self.expect),
                fmt_actions(&got)
            );
        }
        if got_ups != want_ups {
            msg += &format!("  base updates: want {want_ups:?}, got {got_ups:?}\n");
        }
        if got_guard != self.guard {
            msg += &format!("  guard: want {:?}, got {:?}\n", self.guard, got_guard);
        }
        (!msg.is_empty())
            .then(|| format!("case {:?} ({}):\n{msg}", self.name, mode_name(&self.opts)))
    }
}

fn mode_name(o: &PlanOptions) -> String {
    format!(
        "{} conflict={} compare={} orphans={}",
        o.mode.as_str(),
        o.conflict.as_str(),
        o.compare.as_str(),
        o.delete_orphans
    )
}

fn fmt_actions(v: &[(K, String, Option<String>)]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|(k, p, to)| match to {
            Some(t) => format!("{} {p}->{t}", k.as_str()),
            None => format!("{} {p}", k.as_str()),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn run(cases: Vec<Case>) {
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name.clone()),
            "duplicate case name {:?}",
            c.name
        );
    }
    let failures: Vec<String> = cases.iter().filter_map(Case::check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Every mode × {new, changed, deleted, unchanged} on each side and on both.

/// The state every matrix case starts from: `a` synced, plus `z`, an untouched file that keeps
/// the roots from looking emptied.
fn start(name: &str, mode: Mode) -> Case {
    case(format!("{}: {name}", mode.as_str()), mode).synced([f("a", 1, 10), f("z", 9, 10)])
}

/// One row of the change matrix: the plan for each mode, in `Mode::ALL` order:
/// download, upload, bidirectional, mirror, mirror-upload.
struct Row {
    name: &'static str,
    setup: fn(Case) -> Case,
    per_mode: [Exp; 5],
}

type Exp = (Vec<(K, String, Option<String>)>, Vec<&'static str>);

fn none() -> Exp {
    (vec![], vec![])
}
fn acts(v: Vec<(K, String, Option<String>)>) -> Exp {
    (v, vec![])
}

#[test]
fn change_matrix_every_mode() {
    let rows: Vec<Row> = vec![
        Row {
            name: "unchanged on both sides",
            setup: |c| c,
            per_mode: [none(), none(), none(), none(), none()],
        },
        Row {
            name: "local new",
            setup: |c| c.local([f("n", 3, 30)]),
            per_mode: [
                none(),
                acts(vec![a(K::Upload, "n")]),
                acts(vec![a(K::Upload, "n")]),
                none(),
                acts(vec![a(K::Upload, "n")]),
            ],
        },
        Row {
            name: "local changed",
            setup: |c| c.local([f("a", 2, 20)]),
            per_mode: [
                none(),
                acts(vec![a(K::Upload, "a")]),
                acts(vec![a(K::Upload, "a")]),
                // mirror: local changes are overwritten.
                acts(vec![a(K::Download, "a")]),
                acts(vec![a(K::Upload, "a")]),
            ],
        },
        Row {
            name: "local deleted",
            setup: |c| c.rm_local(&["a"]),
            per_mode: [
                // download: not sent again while the source is unchanged.
                none(),
                // upload: no deletions; the row is dropped.
                (vec![], vec!["-a"]),
                acts(vec![a(K::DeleteRemote, "a")]),
                // mirror: restored.
                acts(vec![a(K::Download, "a")]),
                // mirror-upload without delete_orphans: no deletions.
                (vec![], vec!["-a"]),
            ],
        },
        Row {
            name: "remote new",
            setup: |c| c.remote([f("n", 3, 30)]),
            per_mode: [
                acts(vec![a(K::Download, "n")]),
                none(),
                acts(vec![a(K::Download, "n")]),
                acts(vec![a(K::Download, "n")]),
                none(),
            ],
        },
        Row {
            name: "remote changed",
            setup: |c| c.remote([f("a", 2, 20)]),
            per_mode: [
                acts(vec![a(K::Download, "a")]),
                none(),
                acts(vec![a(K::Download, "a")]),
                acts(vec![a(K::Download, "a")]),
                // mirror-upload: remote changes are overwritten.
                acts(vec![a(K::Upload, "a")]),
            ],
        },
        Row {
            name: "remote deleted",
            setup: |c| c.rm_remote(&["a"]),
            per_mode: [
                (vec![], vec!["-a"]),
                none(),
                acts(vec![a(K::DeleteLocal, "a")]),
                (vec![], vec!["-a"]),
                acts(vec![a(K::Upload, "a")]),
            ],
        },
        Row {
            name: "new on both sides, equal",
            setup: |c| c.both([f("n", 3, 30)]),
            per_mode: [
                (vec![], vec!["+n"]),
                (vec![], vec!["+n"]),
                (vec![], vec!["+n"]),
                (vec![], vec!["+n"]),
                (vec![], vec!["+n"]),
            ],
        },
        Row {
            name: "new on both sides, different",
            setup: |c| c.local([f("n", 3, 30)]).remote([f("n", 4, 40)]),
            per_mode: [
                acts(vec![a(K::Conflict, "n"), a(K::Download, "n")]),
                acts(vec![a(K::Conflict, "n"), a(K::Upload, "n")]),
                // newer: the remote (40 s) wins.
                acts(vec![a(K::Conflict, "n"), a(K::Download, "n")]),
                acts(vec![a(K::Conflict, "n"), a(K::Download, "n")]),
                acts(vec![a(K::Conflict, "n"), a(K::Upload, "n")]),
            ],
        },
        Row {
            name: "changed on both sides, equal",
            setup: |c| c.both([f("a", 5, 50)]),
            per_mode: [
                (vec![], vec!["+a"]),
                (vec![], vec!["+a"]),
                (vec![], vec!["+a"]),
                (vec![], vec!["+a"]),
                (vec![], vec!["+a"]),
            ],
        },
        Row {
            name: "changed on both sides, different",
            setup: |c| c.local([f("a", 2, 20)]).remote([f("a", 3, 30)]),
            per_mode: [
                acts(vec![a(K::Conflict, "a"), a(K::Download, "a")]),
                acts(vec![a(K::Conflict, "a"), a(K::Upload, "a")]),
                acts(vec![a(K::Conflict, "a"), a(K::Download, "a")]),
                acts(vec![a(K::Conflict, "a"), a(K::Download, "a")]),
                acts(vec![a(K::Conflict, "a"), a(K::Upload, "a")]),
            ],
        },
        Row {
            name: "deleted on both sides",
            setup: |c| c.rm_local(&["a"]).rm_remote(&["a"]),
            per_mode: [
                (vec![], vec!["-a"]),
                (vec![], vec!["-a"]),
                (vec![], vec!["-a"]),
                (vec![], vec!["-a"]),
                (vec![], vec!["-a"]),
            ],
        },
        Row {
            name: "local deleted, remote changed",
            setup: |c| c.rm_local(&["a"]).remote([f("a", 2, 20)]),
            per_mode: [
                acts(vec![a(K::Download, "a")]),
                (vec![], vec!["-a"]),
                // the modification survives.
                acts(vec![a(K::Download, "a")]),
                acts(vec![a(K::Download, "a")]),
                (vec![], vec!["-a"]),
            ],
        },
        Row {
            name: "local changed, remote deleted",
            setup: |c| c.local([f("a", 2, 20)]).rm_remote(&["a"]),
            per_mode: [
                (vec![], vec!["-a"]),
                acts(vec![a(K::Upload, "a")]),
                acts(vec![a(K::Upload, "a")]),
                (vec![], vec!["-a"]),
                acts(vec![a(K::Upload, "a")]),
            ],
        },
        Row {
            name: "local changed, remote unchanged-but-new-file elsewhere",
            setup: |c| c.local([f("a", 2, 20)]).remote([f("b", 7, 70)]),
            per_mode: [
                acts(vec![a(K::Download, "b")]),
                acts(vec![a(K::Upload, "a")]),
                acts(vec![a(K::Upload, "a"), a(K::Download, "b")]),
                acts(vec![a(K::Download, "a"), a(K::Download, "b")]),
                acts(vec![a(K::Upload, "a")]),
            ],
        },
    ];
    let mut cases = Vec::new();
    for row in rows {
        for (mode, (acts, ups)) in Mode::ALL.into_iter().zip(row.per_mode) {
            cases.push((row.setup)(start(row.name, mode)).expect(acts).ups(&ups));
        }
    }
    run(cases);
}

// ---------------------------------------------------------------------------------------------
// Conflicts.

#[test]
fn conflict_policies() {
    let base = |name: &str, c: ConflictPolicy| {
        case(name, Mode::Bidirectional)
            .synced([f("doc.txt", 1, 10), f("z", 9, 10)])
            .policy(c)
    };
    let local_newer = |c: Case| c.local([f("doc.txt", 2, 30)]).remote([f("doc.txt", 3, 20)]);
    let remote_newer = |c: Case| c.local([f("doc.txt", 2, 20)]).remote([f("doc.txt", 3, 30)]);
    let conflict_then = |k: K| vec![a(K::Conflict, "doc.txt"), a(k, "doc.txt")];
    let copy = "doc.conflict-20261122-020000.txt";
    let keep_both = |p: &str, copy: &str| {
        vec![
            at(K::Conflict, p, copy),
            at(K::MoveRemote, p, copy),
            a(K::Download, copy),
            a(K::Upload, p),
        ]
    };
    run(vec![
        local_newer(base("newer: local newer wins", ConflictPolicy::Newer))
            .expect(conflict_then(K::Upload)),
        remote_newer(base("newer: remote newer wins", ConflictPolicy::Newer))
            .expect(conflict_then(K::Download)),
        local_newer(base("local policy, local newer", ConflictPolicy::Local))
            .expect(conflict_then(K::Upload)),
        remote_newer(base("local policy, remote newer", ConflictPolicy::Local))
            .expect(conflict_then(K::Upload)),
        local_newer(base("remote policy, local newer", ConflictPolicy::Remote))
            .expect(conflict_then(K::Download)),
        remote_newer(base("remote policy, remote newer", ConflictPolicy::Remote))
            .expect(conflict_then(K::Download)),
        local_newer(base("keep-both, local newer", ConflictPolicy::KeepBoth))
            .expect(keep_both("doc.txt", copy)),
        remote_newer(base("keep-both, remote newer", ConflictPolicy::KeepBoth))
            .expect(keep_both("doc.txt", copy)),
        // keep-both on a first run (no base) and in a subfolder.
        case("keep-both first run in a folder", Mode::Bidirectional)
            .policy(ConflictPolicy::KeepBoth)
            .synced([d("d")])
            .local([f("d/a.tar.gz", 2, 20)])
            .remote([f("d/a.tar.gz", 3, 30)])
            .expect(keep_both(
                "d/a.tar.gz",
                "d/a.tar.conflict-20261122-020000.gz",
            )),
        // A name already taken on either side gets -2.
        case("keep-both collision appends -2", Mode::Bidirectional)
            .policy(ConflictPolicy::KeepBoth)
            .synced([f("doc.txt", 1, 10), f(copy, 4, 5)])
            .local([f("doc.txt", 2, 20)])
            .remote([f("doc.txt", 3, 30)])
            .expect(keep_both("doc.txt", "doc.conflict-20261122-020000-2.txt")),
        case("keep-both dotfile has no extension", Mode::Bidirectional)
            .policy(ConflictPolicy::KeepBoth)
            .synced([f(".bashrc", 1, 10), f("z", 9, 10)])
            .local([f(".bashrc", 2, 20)])
            .remote([f(".bashrc", 3, 30)])
            .expect(keep_both(".bashrc", ".bashrc.conflict-20261122-020000")),
        // Two conflicts in one folder get distinct names.
        case("keep-both two conflicts", Mode::Bidirectional)
            .policy(ConflictPolicy::KeepBoth)
            .synced([f("a.txt", 1, 10), f("b.txt", 1, 10)])
            .local([f("a.txt", 2, 20), f("b.txt", 2, 20)])
            .remote([f("a.txt", 3, 30), f("b.txt", 3, 30)])
            .expect([
                at(K::Conflict, "a.txt", "a.conflict-20261122-020000.txt"),
                at(K::Conflict, "b.txt", "b.conflict-20261122-020000.txt"),
                at(K::MoveRemote, "a.txt", "a.conflict-20261122-020000.txt"),
                at(K::MoveRemote, "b.txt", "b.conflict-20261122-020000.txt"),
                a(K::Download, "a.conflict-20261122-020000.txt"),
                a(K::Upload, "a.txt"),
                a(K::Download, "b.conflict-20261122-020000.txt"),
                a(K::Upload, "b.txt"),
            ]),
        // Equal content changed on both sides is no conflict under any policy.
        case("keep-both: equal change is adopted", Mode::Bidirectional)
            .policy(ConflictPolicy::KeepBoth)
            .synced([f("doc.txt", 1, 10)])
            .both([f("doc.txt", 2, 20)])
            .ups(&["+doc.txt"]),
    ]);
}

#[test]
fn conflict_plan_details() {
    // The transfer resolving a conflict carries the loser as `dst` (it goes to trash), and
    // `bytes` is the winner's size.
    let c = case("details", Mode::Bidirectional)
        .synced([f("a", 1, 10)])
        .local([f("a", 2, 20)])
        .remote([f("a", 3, 30)]);
    let p = c.plan();
    assert_eq!(p.actions.len(), 2);
    let t = &p.actions[1];
    assert_eq!(t.kind, K::Download);
    assert_eq!(t.bytes, 3);
    assert_eq!(t.src.as_ref().map(|e| e.size), Some(3));
    assert_eq!(t.dst.as_ref().map(|e| e.size), Some(2));
    assert_eq!(p.bytes(), 3);

    // keep-both: the remote version is moved aside, downloaded under the copy's name, and the
    // local version uploaded over the original name.
    let p = c.policy(ConflictPolicy::KeepBoth).plan();
    let kinds: Vec<K> = p.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [K::Conflict, K::MoveRemote, K::Download, K::Upload]);
    assert_eq!(p.actions[1].src.as_ref().map(|e| e.size), Some(3));
    assert_eq!(p.actions[2].src.as_ref().map(|e| e.size), Some(3));
    assert_eq!(p.actions[3].src.as_ref().map(|e| e.size), Some(2));
    assert_eq!(
        p.actions[3].dst, None,
        "the remote original was moved aside"
    );
}

// ---------------------------------------------------------------------------------------------
// First runs.

#[test]
fn first_run() {
    let mut cases = Vec::new();
    for mode in Mode::ALL {
        let m = mode.as_str();
        cases.push(
            case(format!("{m}: first run adopts equal files"), mode)
                .both([d("d"), f("d/a", 1, 10), f("b", 2, 20)])
                .ups(&["+d", "+d/a", "+b"]),
        );
        let (k, wins) = match mode {
            Mode::Download | Mode::Mirror => (K::Download, "remote"),
            Mode::Upload | Mode::MirrorUpload => (K::Upload, "local"),
            Mode::Bidirectional => (K::Download, "newer (remote)"),
        };
        cases.push(
            case(
                format!("{m}: first run different content, {wins} wins"),
                mode,
            )
            .local([f("a", 1, 10)])
            .remote([f("a", 2, 20)])
            .expect([a(K::Conflict, "a"), a(k, "a")]),
        );
    }
    cases.push(
        case(
            "bidirectional: first run, local newer wins",
            Mode::Bidirectional,
        )
        .local([f("a", 1, 30)])
        .remote([f("a", 2, 20)])
        .expect([a(K::Conflict, "a"), a(K::Upload, "a")]),
    );
    cases.push(
        case(
            "bidirectional: first run merges both sides",
            Mode::Bidirectional,
        )
        .local([f("l", 1, 10), d("ld")])
        .remote([f("r", 2, 20), d("rd")])
        .expect([
            a(K::MkdirRemote, "ld"),
            a(K::MkdirLocal, "rd"),
            a(K::Upload, "l"),
            a(K::Download, "r"),
        ]),
    );
    run(cases);
}

// ---------------------------------------------------------------------------------------------
// One-way and mirror rules.

#[test]
fn one_way_and_mirror_rules() {
    run(vec![
        // Intake folder: processed files removed locally are not downloaded again.
        case(
            "download: processed files are not re-imported",
            Mode::Download,
        )
        .synced([f("inv1.pdf", 1, 10), f("inv2.pdf", 2, 10)])
        .rm_local(&["inv1.pdf", "inv2.pdf"]),
        case(
            "upload: remotely consumed files are not re-sent",
            Mode::Upload,
        )
        .synced([f("out1.csv", 1, 10), f("out2.csv", 2, 10)])
        .rm_remote(&["out1.csv", "out2.csv"]),
        // ... but a new version of a consumed file travels.
        case(
            "download: changed source re-sent after dest deletion",
            Mode::Download,
        )
        .synced([f("inv1.pdf", 1, 10), f("z", 1, 1)])
        .rm_local(&["inv1.pdf"])
        .remote([f("inv1.pdf", 5, 50)])
        .expect([a(K::Download, "inv1.pdf")]),
        case("mirror: destination deletion is restored", Mode::Mirror)
            .synced([f("a", 1, 10), f("z", 1, 1)])
            .rm_local(&["a"])
            .expect([a(K::Download, "a")]),
        case(
            "mirror-upload: destination deletion is restored",
            Mode::MirrorUpload,
        )
        .synced([f("a", 1, 10), f("z", 1, 1)])
        .rm_remote(&["a"])
        .expect([a(K::Upload, "a")]),
        case(
            "download: destination-only change left alone",
            Mode::Download,
        )
        .synced([f("a", 1, 10)])
        .local([f("a", 2, 20), f("extra", 1, 1)]),
        case("upload: destination-only change left alone", Mode::Upload)
            .synced([f("a", 1, 10)])
            .remote([f("a", 2, 20), f("extra", 1, 1)]),
        case("mirror: destination-only change overwritten", Mode::Mirror)
            .synced([f("a", 1, 10)])
            .local([f("a", 2, 20), f("extra", 1, 1)])
            .expect([a(K::Download, "a")]),
        case(
            "mirror-upload: destination-only change overwritten",
            Mode::MirrorUpload,
        )
        .synced([f("a", 1, 10)])
        .remote([f("a", 2, 20), f("extra", 1, 1)])
        .expect([a(K::Upload, "a")]),
        case(
            "mirror + delete_orphans: dest-only files deleted",
            Mode::Mirror,
        )
        .orphans()
        .synced([f("a", 1, 10), f("b", 1, 10)])
        .local([d("od"), f("od/x", 1, 1), f("extra", 1, 1)])
        .expect([
            a(K::DeleteLocal, "od/x"),
            a(K::DeleteLocal, "od"),
            a(K::DeleteLocal, "extra"),
        ]),
        case(
            "mirror-upload + delete_orphans: dest-only files deleted",
            Mode::MirrorUpload,
        )
        .orphans()
        .synced([f("a", 1, 10)])
        .remote([f("extra", 1, 1)])
        .expect([a(K::DeleteRemote, "extra")]),
        case(
            "mirror + delete_orphans: source deletion propagates",
            Mode::Mirror,
        )
        .orphans()
        .synced([f("a", 1, 10), f("z", 1, 1)])
        .rm_remote(&["a"])
        .expect([a(K::DeleteLocal, "a")]),
        case(
            "mirror-upload + delete_orphans: source deletion propagates",
            Mode::MirrorUpload,
        )
        .orphans()
        .synced([f("a", 1, 10), f("z", 1, 1)])
        .rm_local(&["a"])
        .expect([a(K::DeleteRemote, "a")]),
        case(
            "mirror + delete_orphans: changed orphan also deleted",
            Mode::Mirror,
        )
        .orphans()
        .synced([f("a", 1, 10), f("z", 1, 1)])
        .rm_remote(&["a"])
        .local([f("a", 2, 20)])
        .expect([a(K::DeleteLocal, "a")]),
        case("mirror without delete_orphans keeps orphans", Mode::Mirror)
            .synced([f("z", 1, 1)])
            .local([f("extra", 1, 1)]),
        case("upload: local-only dir created remotely", Mode::Upload)
            .local([d("e"), d("e/f")])
            .expect([a(K::MkdirRemote, "e"), a(K::MkdirRemote, "e/f")]),
        case("download: remote-only dir created locally", Mode::Download)
            .remote([d("e")])
            .expect([a(K::MkdirLocal, "e")]),
        case("download: local-only dir left alone", Mode::Download).local([d("e")]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Folders.

#[test]
fn folders() {
    run(vec![
        case(
            "bidirectional: empty dir created remotely",
            Mode::Bidirectional,
        )
        .local([d("e")])
        .expect([a(K::MkdirRemote, "e")]),
        case(
            "bidirectional: empty dir created locally",
            Mode::Bidirectional,
        )
        .remote([d("e"), d("e/sub")])
        .expect([a(K::MkdirLocal, "e"), a(K::MkdirLocal, "e/sub")]),
        case(
            "bidirectional: empty dir removed remotely",
            Mode::Bidirectional,
        )
        .synced([d("e"), f("z", 1, 1)])
        .rm_local(&["e"])
        .expect([a(K::DeleteRemote, "e")]),
        case(
            "bidirectional: empty dir removed locally",
            Mode::Bidirectional,
        )
        .synced([d("e"), f("z", 1, 1)])
        .rm_remote(&["e"])
        .expect([a(K::DeleteLocal, "e")]),
        case(
            "bidirectional: folder with files removed",
            Mode::Bidirectional,
        )
        .synced([
            d("e"),
            f("e/1", 1, 1),
            d("e/s"),
            f("e/s/2", 1, 1),
            f("z", 1, 1),
        ])
        .rm_local(&["e", "e/1", "e/s", "e/s/2"])
        .expect([
            a(K::DeleteRemote, "e/s/2"),
            a(K::DeleteRemote, "e/s"),
            a(K::DeleteRemote, "e/1"),
            a(K::DeleteRemote, "e"),
        ]),
        case("mirror + orphans: empty dir removed", Mode::Mirror)
            .orphans()
            .synced([f("z", 1, 1)])
            .local([d("e")])
            .expect([a(K::DeleteLocal, "e")]),
        case(
            "local folder deleted, remote added a file inside",
            Mode::Bidirectional,
        )
        .synced([d("d"), f("d/f", 1, 1), f("z", 1, 1)])
        .rm_local(&["d", "d/f"])
        .remote([f("d/g", 2, 2)])
        .expect([
            a(K::DeleteRemote, "d/f"),
            a(K::MkdirLocal, "d"),
            a(K::Download, "d/g"),
        ]),
        case(
            "remote folder deleted, local added a file inside",
            Mode::Bidirectional,
        )
        .synced([d("d"), f("d/f", 1, 1), f("z", 1, 1)])
        .rm_remote(&["d", "d/f"])
        .local([f("d/g", 2, 2)])
        .expect([
            a(K::DeleteLocal, "d/f"),
            a(K::MkdirRemote, "d"),
            a(K::Upload, "d/g"),
        ]),
        case(
            "local folder deleted, remote changed a file inside",
            Mode::Bidirectional,
        )
        .synced([d("d"), f("d/f", 1, 1), f("d/h", 1, 1), f("z", 1, 1)])
        .rm_local(&["d", "d/f", "d/h"])
        .remote([f("d/f", 2, 2)])
        .expect([
            a(K::DeleteRemote, "d/h"),
            a(K::MkdirLocal, "d"),
            a(K::Download, "d/f"),
        ]),
        case(
            "remote folder deleted, local added a file deep inside",
            Mode::Bidirectional,
        )
        .synced([d("d"), d("d/s"), f("d/s/f", 1, 1), f("z", 1, 1)])
        .rm_remote(&["d", "d/s", "d/s/f"])
        .local([f("d/s/g", 2, 2)])
        .expect([
            a(K::DeleteLocal, "d/s/f"),
            a(K::MkdirRemote, "d"),
            a(K::MkdirRemote, "d/s"),
            a(K::Upload, "d/s/g"),
        ]),
        case(
            "mirror-upload: remote folder deleted, restored",
            Mode::MirrorUpload,
        )
        .synced([d("d"), f("d/f", 1, 1), f("z", 1, 1)])
        .rm_remote(&["d", "d/f"])
        .expect([a(K::MkdirRemote, "d"), a(K::Upload, "d/f")]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Types and symlinks.

#[test]
fn types_and_symlinks() {
    run(vec![
        case("type clash on first run", Mode::Bidirectional)
            .local([f("x", 1, 1)])
            .remote([d("x"), f("x/y", 1, 1)])
            .expect([a(K::Error, "x")]),
        case("type clash after a base", Mode::Bidirectional)
            .synced([f("x", 1, 1), f("z", 1, 1)])
            .local([f("x", 2, 2)])
            .remote([d("x"), f("x/y", 1, 1)])
            .expect([a(K::Error, "x")]),
        case("type clash, dir local, file remote", Mode::Bidirectional)
            .synced([f("x", 1, 1), f("z", 1, 1)])
            .local([d("x"), f("x/y", 1, 1)])
            .remote([f("x", 2, 2)])
            .expect([a(K::Error, "x")]),
        case(
            "one-sided type change: remote file became a folder",
            Mode::Bidirectional,
        )
        .synced([f("x", 1, 1), f("z", 1, 1)])
        .remote([d("x"), f("x/y", 1, 1)])
        .expect([
            a(K::DeleteLocal, "x"),
            a(K::MkdirLocal, "x"),
            a(K::Download, "x/y"),
        ]),
        case(
            "one-sided type change: local folder became a file",
            Mode::Bidirectional,
        )
        .synced([d("x"), f("x/y", 1, 1), f("z", 1, 1)])
        .rm_local(&["x", "x/y"])
        .local([f("x", 2, 2)])
        .expect([
            a(K::DeleteRemote, "x/y"),
            a(K::DeleteRemote, "x"),
            a(K::Upload, "x"),
        ]),
        case("one-sided type change in upload mode", Mode::Upload)
            .synced([f("x", 1, 1), f("z", 1, 1)])
            .local([d("x")])
            .expect([a(K::DeleteRemote, "x"), a(K::MkdirRemote, "x")]),
        case("symlink local, bidirectional", Mode::Bidirectional)
            .local([sl("s")])
            .expect([a(K::Skip, "s")]),
        case("symlink remote, bidirectional", Mode::Bidirectional)
            .remote([sl("s")])
            .expect([a(K::Skip, "s")]),
        case("symlink remote, download", Mode::Download)
            .remote([sl("s")])
            .expect([a(K::Skip, "s")]),
        case("symlink local, upload", Mode::Upload)
            .local([sl("s")])
            .expect([a(K::Skip, "s")]),
        case("symlink local vs remote file, download", Mode::Download)
            .local([sl("s")])
            .remote([f("s", 1, 1)])
            .expect([a(K::Skip, "s")]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Moves.

#[test]
fn moves() {
    let synced_local_inode = |c: Case, p: &str, size, mtime, ino| {
        let (_, mut e) = f(p, size, mtime);
        let r = e.clone();
        e.inode = Some(ino);
        c.local([(p.to_string(), e.clone())])
            .remote([(p.to_string(), r.clone())])
            .base_row(p, Some(e), Some(r))
    };
    let mut cases = Vec::new();
    for mode in [Mode::Bidirectional, Mode::Upload, Mode::MirrorUpload] {
        let m = mode.as_str();
        cases.push(
            synced_local_inode(
                case(format!("{m}: local file move"), mode),
                "a.txt",
                5,
                50,
                7,
            )
            .synced([f("z", 1, 1)])
            .rm_local(&["a.txt"])
            .local([fi("b/a.txt", 5, 50, 7), di("b", 8)])
            .expect([
                at(K::MoveRemote, "a.txt", "b/a.txt"),
                a(K::MkdirRemote, "b"),
            ]),
        );
    }
    cases.push(
        synced_local_inode(
            case("download: local move is a dest-only change", Mode::Download),
            "a",
            5,
            50,
            7,
        )
        .rm_local(&["a"])
        .local([fi("b", 5, 50, 7)]),
    );
    cases.push(
        synced_local_inode(
            case(
                "local move with a changed file is no move",
                Mode::Bidirectional,
            ),
            "a",
            5,
            50,
            7,
        )
        .synced([f("z", 1, 1)])
        .rm_local(&["a"])
        .local([fi("b", 6, 60, 7)])
        .expect([a(K::DeleteRemote, "a"), a(K::Upload, "b")]),
    );
    cases.push(
        synced_local_inode(
            case("local move, remote changed the source", Mode::Bidirectional),
            "a",
            5,
            50,
            7,
        )
        .synced([f("z", 1, 1)])
        .rm_local(&["a"])
        .local([fi("b", 5, 50, 7)])
        .remote([f("a", 6, 60)])
        .expect([a(K::Download, "a"), a(K::Upload, "b")]),
    );
    // A file renamed over a synced file (`mv a b`): one move onto `b`, no upload; the remote
    // `b` it replaces goes to trash in the executor.
    for mode in [Mode::Bidirectional, Mode::Upload, Mode::MirrorUpload] {
        let m = mode.as_str();
        let c = case(format!("{m}: file renamed over a synced file"), mode);
        let c = synced_local_inode(c, "a", 5, 50, 7);
        let c = synced_local_inode(c, "b", 9, 90, 8);
        cases.push(
            c.rm_local(&["a", "b"])
                .local([fi("b", 5, 50, 7)])
                .expect([at(K::MoveRemote, "a", "b")]),
        );
    }
    // A log rotation: `mv log.1 log.2; mv log log.1`, then a new `log`. The far end of the
    // chain moves first, so each target is free or replaced as planned when its move runs.
    // The new `log` may get the inode number `log.2` had (freed by the rename over it and
    // reused by the filesystem): not the same file, and no cycle either.
    for (name, new_ino) in [
        ("log rotation", 4),
        ("log rotation, inode number reused", 3),
    ] {
        let c = case(name, Mode::MirrorUpload).orphans();
        let c = synced_local_inode(c, "log", 10, 10, 1);
        let c = synced_local_inode(c, "log.1", 20, 20, 2);
        let c = synced_local_inode(c, "log.2", 30, 30, 3);
        cases.push(
            c.rm_local(&["log", "log.1", "log.2"])
                .local([
                    fi("log", 4, 40, new_ino),
                    fi("log.1", 10, 10, 1),
                    fi("log.2", 20, 20, 2),
                ])
                .expect([
                    at(K::MoveRemote, "log.1", "log.2"),
                    at(K::MoveRemote, "log", "log.1"),
                    a(K::Upload, "log"),
                ]),
        );
    }
    // The same rotation with logs of one size written within the mtime tolerance: size and
    // mtime alone call every rotated file unchanged (the remote kept the old contents); the
    // inodes show the renames.
    let mut c = case(
        "log rotation, same sizes within the tolerance",
        Mode::MirrorUpload,
    );
    for (i, p) in ["log", "log.1", "log.2"].iter().enumerate() {
        let mtime = 10 * SEC + i as i64 * SEC / 4;
        let (_, mut l) = f_ns(p, 8, mtime);
        let r = l.clone();
        l.inode = Some(i as u64 + 1);
        c = c
            .base_row(p, Some(l), Some(r.clone()))
            .remote([(p.to_string(), r)]);
    }
    let moved = |p: &str, from: i64, ino: u64| {
        let (_, mut e) = f_ns(p, 8, 10 * SEC + from * SEC / 4);
        e.inode = Some(ino);
        (p.to_string(), e)
    };
    cases.push(
        c.local([
            moved("log.1", 0, 1),
            moved("log.2", 1, 2),
            fi("log", 8, 11, 9),
        ])
        .expect([
            at(K::MoveRemote, "log.1", "log.2"),
            at(K::MoveRemote, "log", "log.1"),
            a(K::Upload, "log"),
        ]),
    );
    // The replaced file changed remotely since the last sync: no move over it; the rules per
    // path decide (here: the remote change is recorded as a conflict and the local side wins,
    // as in any mirror; without `delete_orphans` the remote `a` stays).
    let c = case("renamed over a file changed remotely", Mode::MirrorUpload);
    let c = synced_local_inode(c, "a", 5, 50, 7);
    let c = synced_local_inode(c, "b", 9, 90, 8);
    cases.push(
        c.rm_local(&["a", "b"])
            .local([fi("b", 5, 50, 7)])
            .rm_remote(&["b"])
            .remote([f("b", 11, 110)])
            .expect([a(K::Conflict, "b"), a(K::Upload, "b")])
            .ups(&["-a"]),
    );
    // Two files swapped: a cycle, which renames cannot do without a third name: uploads.
    let c = case("two files swapped", Mode::MirrorUpload);
    let c = synced_local_inode(c, "a", 5, 50, 7);
    let c = synced_local_inode(c, "b", 9, 90, 8);
    cases.push(
        c.rm_local(&["a", "b"])
            .local([fi("a", 9, 90, 8), fi("b", 5, 50, 7)])
            .expect([a(K::Upload, "a"), a(K::Upload, "b")]),
    );
    cases.push(
        case("remote file move", Mode::Bidirectional)
            .synced([f("a", 5, 50), f("z", 1, 1)])
            .rm_remote(&["a"])
            .remote([f("b", 5, 50)])
            .expect([at(K::MoveLocal, "a", "b")]),
    );
    cases.push(
        case("remote file move, mirror", Mode::Mirror)
            .synced([f("a", 5, 50), f("z", 1, 1)])
            .rm_remote(&["a"])
            .remote([f("b", 5, 50)])
            .expect([at(K::MoveLocal, "a", "b")]),
    );
    cases.push(
        case("remote folder move", Mode::Bidirectional)
            .synced([
                d("d"),
                f("d/1", 1, 1),
                f("d/2", 2, 2),
                d("d/s"),
                f("d/s/3", 3, 3),
            ])
            .rm_remote(&["d", "d/1", "d/2", "d/s", "d/s/3"])
            .remote([
                d("e"),
                f("e/1", 1, 1),
                f("e/2", 2, 2),
                d("e/s"),
                f("e/s/3", 3, 3),
            ])
            .expect([at(K::MoveLocal, "d", "e")]),
    );
    cases.push(
        case(
            "ambiguous remote move: two identical candidates",
            Mode::Bidirectional,
        )
        .synced([f("a", 5, 50), f("z", 1, 1)])
        .rm_remote(&["a"])
        .remote([f("b", 5, 50), f("c", 5, 50)])
        .expect([
            a(K::DeleteLocal, "a"),
            a(K::Download, "b"),
            a(K::Download, "c"),
        ]),
    );
    cases.push(
        case(
            "ambiguous remote move: two identical sources",
            Mode::Bidirectional,
        )
        .synced([f("a", 5, 50), f("b", 5, 50), f("z", 1, 1)])
        .rm_remote(&["a", "b"])
        .remote([f("c", 5, 50)])
        .expect([
            a(K::DeleteLocal, "b"),
            a(K::DeleteLocal, "a"),
            a(K::Download, "c"),
        ]),
    );
    run(cases);
}

/// A local folder with 1,000 files renamed: one remote rename, no uploads, no deletes.
#[test]
fn local_folder_rename_thousand_files() {
    for mode in [Mode::Bidirectional, Mode::Upload, Mode::MirrorUpload] {
        let mut c = case(format!("{}: folder rename", mode.as_str()), mode)
            .opt(|o| o.max_delete = MaxDelete::Count(0));
        let (_, mut dl) = di("old", 1);
        let (_, dr) = d("old");
        c = c.base_row("old", Some(dl.clone()), Some(dr.clone()));
        c.remote.insert("old".into(), dr);
        dl.inode = Some(1);
        c.local.insert("new".into(), dl);
        for i in 0..1000u64 {
            let name = format!("f{i:04}.dat");
            let (_, le) = fi(&name, i, 1000 + i as i64, 100 + i);
            let (_, re) = f(&name, i, 1000 + i as i64);
            c.local.insert(format!("new/{name}"), le.clone());
            c.remote.insert(format!("old/{name}"), re.clone());
            c = c.base_row(&format!("old/{name}"), Some(le), Some(re));
        }
        let p = c.plan();
        let count = |k: K| p.actions.iter().filter(|a| a.kind == k).count();
        assert_eq!(p.actions.len(), 1, "{}: {:?}", c.name, p.actions.first());
        assert_eq!(count(K::MoveRemote), 1);
        assert_eq!(p.actions[0].path, "old");
        assert_eq!(p.actions[0].to.as_deref(), Some("new"));
        assert_eq!(count(K::Upload), 0);
        assert_eq!(p.file_deletes, 0);
        assert!(p.guard.is_none(), "{:?}", p.guard);
        assert!(p.base_updates.is_empty());
        // The move rewrites all 1,001 rows.
        let ups = &p.actions[0].base;
        assert_eq!(ups.iter().filter(|u| u.row.is_none()).count(), 1001);
        assert_eq!(ups.iter().filter(|u| u.row.is_some()).count(), 1001);
        assert!(ups
            .iter()
            .filter(|u| u.row.is_some())
            .all(|u| u.path == "new" || u.path.starts_with("new/")));
    }
}

// ---------------------------------------------------------------------------------------------
// Guards.

fn five_files(name: &str, mode: Mode) -> Case {
    case(name, mode).synced([
        f("1", 1, 1),
        f("2", 1, 1),
        f("3", 1, 1),
        f("4", 1, 1),
        f("5", 1, 1),
    ])
}

#[test]
fn guards() {
    let dels = |n: usize| {
        let mut v: Vec<_> = (1..=n)
            .map(|i| a(K::DeleteRemote, &i.to_string()))
            .collect();
        v.reverse();
        v
    };
    let cnt = |n| move |o: &mut PlanOptions| o.max_delete = MaxDelete::Count(n);
    let pct = |n| move |o: &mut PlanOptions| o.max_delete = MaxDelete::Percent(n);
    let bi = Mode::Bidirectional;
    run(vec![
        five_files("count 2, deleting 2 is allowed", bi)
            .opt(cnt(2))
            .rm_local(&["1", "2"])
            .expect(dels(2)),
        five_files("count 2, deleting 3 trips", bi)
            .opt(cnt(2))
            .rm_local(&["1", "2", "3"])
            .expect(dels(3))
            .guard(G::Max { count: 3, limit: 2 }),
        five_files("40% of 5 = 2, deleting 2 is allowed", bi)
            .opt(pct(40))
            .rm_local(&["1", "2"])
            .expect(dels(2)),
        five_files("40% of 5 = 2, deleting 3 trips", bi)
            .opt(pct(40))
            .rm_local(&["1", "2", "3"])
            .expect(dels(3))
            .guard(G::Max { count: 3, limit: 2 }),
        five_files("default 50% of 5, deleting 3 trips", bi)
            .opt(pct(50))
            .rm_local(&["1", "2", "3"])
            .expect(dels(3))
            .guard(G::Max { count: 3, limit: 2 }),
        five_files("force_delete disables max_delete", bi)
            .opt(cnt(0))
            .opt(|o| o.force_delete = true)
            .rm_local(&["1", "2", "3"])
            .expect(dels(3)),
        case("percent ignored on empty base", Mode::MirrorUpload)
            .orphans()
            .opt(pct(0))
            .remote([f("x", 1, 1), f("y", 1, 1)])
            .expect([a(K::DeleteRemote, "y"), a(K::DeleteRemote, "x")]),
        case("count applies on empty base", Mode::MirrorUpload)
            .orphans()
            .opt(cnt(1))
            .remote([f("x", 1, 1), f("y", 1, 1)])
            .expect([a(K::DeleteRemote, "y"), a(K::DeleteRemote, "x")])
            .guard(G::Max { count: 2, limit: 1 }),
        case("folder deletions are not file deletions", bi)
            .opt(cnt(0))
            .synced([d("e"), d("e/s"), f("z", 1, 1)])
            .rm_local(&["e", "e/s"])
            .expect([a(K::DeleteRemote, "e/s"), a(K::DeleteRemote, "e")]),
        case("remote moves are not deletions", bi)
            .opt(cnt(0))
            .synced([d("d"), f("d/1", 1, 1), f("d/2", 2, 2), f("z", 1, 1)])
            .rm_remote(&["d", "d/1", "d/2"])
            .remote([d("e"), f("e/1", 1, 1), f("e/2", 2, 2)])
            .expect([at(K::MoveLocal, "d", "e")]),
        // Root missing with a base: nothing planned at all.
        five_files("local root missing", bi)
            .opt(|o| o.force_delete = true)
            .opt(|o| o.max_delete = MaxDelete::Count(100))
            .rm_local(&["1", "2", "3", "4", "5"])
            .root(Side::Local, RootState::Missing)
            .guard(G::Missing(Side::Local)),
        five_files("remote root missing, download", Mode::Download)
            .rm_remote(&["1", "2", "3", "4", "5"])
            .root(Side::Remote, RootState::Missing)
            .guard(G::Missing(Side::Remote)),
        five_files("remote root not a dir", Mode::Upload)
            .rm_remote(&["1", "2", "3", "4", "5"])
            .root(Side::Remote, RootState::NotDir)
            .guard(G::Missing(Side::Remote)),
        five_files("local root unreadable", Mode::Upload)
            .rm_local(&["1", "2", "3", "4", "5"])
            .root(
                Side::Local,
                RootState::Unreadable("permission denied".into()),
            )
            .guard(G::Missing(Side::Local)),
        case(
            "remote root missing on a first run is no guard",
            Mode::Upload,
        )
        .local([f("a", 1, 1)])
        .root(Side::Remote, RootState::Missing)
        .expect([a(K::Upload, "a")]),
        // Emptied root.
        five_files("emptied local root, bidirectional", bi)
            .rm_local(&["1", "2", "3", "4", "5"])
            .expect(dels(5))
            .guard(G::Emptied(Side::Local, 5)),
        five_files("emptied remote root, bidirectional", bi)
            .rm_remote(&["1", "2", "3", "4", "5"])
            .expect(
                ["5", "4", "3", "2", "1"]
                    .iter()
                    .map(|p| a(K::DeleteLocal, p))
                    .collect::<Vec<_>>(),
            )
            .guard(G::Emptied(Side::Remote, 5)),
        five_files("emptied remote root, mirror + orphans", Mode::Mirror)
            .orphans()
            .rm_remote(&["1", "2", "3", "4", "5"])
            .expect(
                ["5", "4", "3", "2", "1"]
                    .iter()
                    .map(|p| a(K::DeleteLocal, p))
                    .collect::<Vec<_>>(),
            )
            .guard(G::Emptied(Side::Remote, 5)),
        five_files(
            "emptied local root, mirror-upload + orphans",
            Mode::MirrorUpload,
        )
        .orphans()
        .rm_local(&["1", "2", "3", "4", "5"])
        .expect(dels(5))
        .guard(G::Emptied(Side::Local, 5)),
        five_files("emptied remote root, download: normal", Mode::Download)
            .rm_remote(&["1", "2", "3", "4", "5"])
            .ups(&["-1", "-2", "-3", "-4", "-5"]),
        five_files("emptied local root, upload: normal", Mode::Upload)
            .rm_local(&["1", "2", "3", "4", "5"])
            .ups(&["-1", "-2", "-3", "-4", "-5"]),
        five_files(
            "emptied local root, mirror without orphans",
            Mode::MirrorUpload,
        )
        .rm_local(&["1", "2", "3", "4", "5"])
        .ups(&["-1", "-2", "-3", "-4", "-5"]),
        five_files("emptied local root, force_delete", bi)
            .opt(|o| o.force_delete = true)
            .rm_local(&["1", "2", "3", "4", "5"])
            .expect(dels(5)),
        five_files(
            "emptied remote root in mirror restores, no guard",
            Mode::MirrorUpload,
        )
        .rm_remote(&["1", "2", "3", "4", "5"])
        .expect(
            ["1", "2", "3", "4", "5"]
                .iter()
                .map(|p| a(K::Upload, p))
                .collect::<Vec<_>>(),
        ),
    ]);
}

impl Case {
    fn root(mut self, side: Side, st: RootState) -> Case {
        match side {
            Side::Local => self.local_root = st,
            Side::Remote => self.remote_root = st,
        }
        self
    }
    fn unknown(mut self, side: Side, dir: &str) -> Case {
        match side {
            Side::Local => self.local_unknown.push(dir.to_string()),
            Side::Remote => self.remote_unknown.push(dir.to_string()),
        }
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Unreadable folders, comparison rules.

#[test]
fn unknown_folders() {
    let synced = |name: &str, mode| {
        case(name, mode).synced([
            d("d"),
            f("d/f", 1, 1),
            d("d/s"),
            f("d/s/g", 1, 1),
            f("z", 1, 1),
        ])
    };
    run(vec![
        // The local listing of `d` failed: its children look deleted but are not judged.
        synced("local unknown folder, bidirectional", Mode::Bidirectional)
            .rm_local(&["d/f", "d/s", "d/s/g"])
            .unknown(Side::Local, "d")
            .remote([f("d/f", 2, 2), f("d/new", 3, 3)]),
        synced("remote unknown folder, bidirectional", Mode::Bidirectional)
            .rm_remote(&["d/f", "d/s", "d/s/g"])
            .unknown(Side::Remote, "d")
            .local([f("d/f", 2, 2), f("d/new", 3, 3)]),
        synced("remote unknown subfolder, mirror + orphans", Mode::Mirror)
            .orphans()
            .rm_remote(&["d/s/g"])
            .unknown(Side::Remote, "d/s")
            .local([f("d/s/extra", 1, 1), f("d/f", 2, 2)])
            .expect([a(K::Download, "d/f")]),
        synced("local unknown folder, upload", Mode::Upload)
            .rm_local(&["d/f", "d/s", "d/s/g"])
            .unknown(Side::Local, "d"),
    ]);
}

#[test]
fn comparison_rules() {
    let secure = |o: &mut PlanOptions| o.compare = Compare::Secure;
    let bi = Mode::Bidirectional;
    run(vec![
        case("secure: same size+mtime, different hash is a change", bi)
            .opt(secure)
            .synced([fh("a", 1, 10, 1), fh("z", 1, 1, 9)])
            .local([fh("a", 1, 10, 2)])
            .expect([a(K::Upload, "a")]),
        case("secure: different mtime, same hash is no change", bi)
            .opt(secure)
            .synced([fh("a", 1, 10, 1)])
            .local([fh("a", 1, 20, 1)]),
        case("fast: different mtime is a change", bi)
            .synced([fh("a", 1, 10, 1)])
            .local([fh("a", 1, 20, 1)])
            .expect([a(K::Upload, "a")]),
        case("fast: same size+mtime, different hash is no change", bi)
            .synced([fh("a", 1, 10, 1)])
            .local([fh("a", 1, 10, 2)]),
        case("secure first run: equal hash, different mtime adopted", bi)
            .opt(secure)
            .local([fh("a", 1, 10, 1)])
            .remote([fh("a", 1, 50, 1)])
            .ups(&["+a"]),
        case("secure first run: different hash is a conflict", bi)
            .opt(secure)
            .local([fh("a", 1, 10, 1)])
            .remote([fh("a", 1, 10, 2)])
            .expect([a(K::Conflict, "a"), a(K::Upload, "a")]),
        case("fast first run: mtime 40 s apart is a conflict", bi)
            .local([fh("a", 1, 10, 1)])
            .remote([fh("a", 1, 50, 1)])
            .expect([a(K::Conflict, "a"), a(K::Download, "a")]),
        // Cross-side mtime tolerance (default 1 s).
        case("tolerance: 1 s apart is equal", bi)
            .local([f("a", 1, 10)])
            .remote([f("a", 1, 11)])
            .ups(&["+a"]),
        case("tolerance: 2 s apart is different", bi)
            .local([f("a", 1, 10)])
            .remote([f("a", 1, 12)])
            .expect([a(K::Conflict, "a"), a(K::Download, "a")]),
        case("tolerance 2 s (FAT): 2 s apart is equal", bi)
            .opt(|o| o.tolerance_ns = 2 * SEC)
            .local([f("a", 1, 10)])
            .remote([f("a", 1, 12)])
            .ups(&["+a"]),
        case("size differs: never equal", Mode::Download)
            .local([f("a", 1, 10)])
            .remote([f("a", 2, 10)])
            .expect([a(K::Conflict, "a"), a(K::Download, "a")]),
        // Precision: the remote has whole seconds.
        case("precision 1 s: 10.4 s vs 10 s is equal (no tolerance)", bi)
            .opt(|o| {
                o.remote_precision_ns = SEC;
                o.tolerance_ns = 0;
            })
            .local([f_ns("a", 1, 10 * SEC + 400_000_000)])
            .remote([f_ns("a", 1, 10 * SEC)])
            .ups(&["+a"]),
        case(
            "precision 1 s: 10.4 s vs 10 s is equal (default tolerance)",
            Mode::Upload,
        )
        .opt(|o| o.remote_precision_ns = SEC)
        .local([f_ns("a", 1, 10 * SEC + 400_000_000)])
        .remote([f_ns("a", 1, 10 * SEC)])
        .ups(&["+a"]),
        case(
            "precision 1 ns: 10.4 s vs 10 s differs without tolerance",
            bi,
        )
        .opt(|o| o.tolerance_ns = 0)
        .local([f_ns("a", 1, 10 * SEC + 400_000_000)])
        .remote([f_ns("a", 1, 10 * SEC)])
        .expect([a(K::Conflict, "a"), a(K::Upload, "a")]),
        // Each side is compared with its own base entry exactly: a remote that rounds is not
        // "changed" when its base holds the rounded value.
        case("virtual mtimes: base holds what the server reported", bi)
            .opt(|o| o.remote_precision_ns = SEC)
            .base_row(
                "a",
                Some(Entry::file(1, 10 * SEC + 400_000_000)),
                Some(Entry::file(1, 10 * SEC)),
            )
            .local([f_ns("a", 1, 10 * SEC + 400_000_000)])
            .remote([f_ns("a", 1, 10 * SEC)]),
        case(
            "virtual mtimes: server could not set mtime at all",
            Mode::Upload,
        )
        .base_row(
            "a",
            Some(Entry::file(1, 10 * SEC)),
            Some(Entry::file(1, 999 * SEC)),
        )
        .local([f("a", 1, 10)])
        .remote([f("a", 1, 999)]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Regressions found by `planner_props.rs`.

#[test]
fn regressions() {
    run(vec![
        // A conflict that turns out to be a type clash logs only the error (it used to log a
        // `conflict` record announcing a winner, then the error).
        case(
            "mirror first run: remote file vs local folder with contents",
            Mode::Mirror,
        )
        .local([d("b"), f("b/y", 1, 1)])
        .remote([f("b", 2, 2)])
        .expect([a(K::Error, "b")]),
        case(
            "bidirectional: file vs folder with contents, both changed",
            Mode::Bidirectional,
        )
        .synced([f("b", 1, 1), f("z", 1, 1)])
        .local([f("b", 3, 3)])
        .remote([d("b"), f("b/y", 2, 2)])
        .expect([a(K::Error, "b")]),
        // A destination-only type change a one-way mode leaves alone blocks what would go
        // inside it: an error, not an upload that cannot succeed.
        case(
            "upload: remote folder replaced by a file, local adds inside",
            Mode::Upload,
        )
        .synced([d("c"), f("z", 1, 1)])
        .rm_remote(&["c"])
        .remote([f("c", 2, 2)])
        .local([f("c/x", 1, 1), d("c/d"), f("c/d/y", 1, 1)])
        .expect([a(K::Error, "c/d"), a(K::Error, "c/x")]),
        case(
            "download: local folder replaced by a file, remote adds inside",
            Mode::Download,
        )
        .synced([d("c"), f("z", 1, 1)])
        .rm_local(&["c"])
        .local([f("c", 2, 2)])
        .remote([f("c/x", 1, 1)])
        .expect([a(K::Error, "c/x")]),
        case(
            "upload: remote folder replaced by a file, nothing to send",
            Mode::Upload,
        )
        .synced([d("c"), f("z", 1, 1)])
        .rm_remote(&["c"])
        .remote([f("c", 2, 2)]),
        case(
            "mirror-upload: remote folder replaced by a file is restored",
            Mode::MirrorUpload,
        )
        .synced([d("c"), f("z", 1, 1)])
        .rm_remote(&["c"])
        .remote([f("c", 2, 2)])
        .local([f("c/x", 1, 1)])
        .expect([
            a(K::DeleteRemote, "c"),
            a(K::MkdirRemote, "c"),
            a(K::Upload, "c/x"),
        ]),
        // Moves run before deletions: a local folder moved under a name the remote now holds
        // as a file is not a remote move (it used to fail on "a is not a folder").
        case("upload: local move under a remote file", Mode::Upload)
            .base_row("b", Some(di("b", 1).1), Some(Entry::dir(0)))
            .base_row("b/x", Some(fi("b/x", 1, 1, 2).1), Some(f("b/x", 1, 1).1))
            .remote([d("b"), f("b/x", 1, 1), f("a", 2, 2)])
            .local([di("a", 3), di("a/x", 1), fi("a/x/x", 1, 1, 2)])
            .expect([
                a(K::Conflict, "a"),
                a(K::DeleteRemote, "a"),
                a(K::MkdirRemote, "a"),
                a(K::MkdirRemote, "a/x"),
                a(K::Upload, "a/x/x"),
            ])
            .ups(&["-b", "-b/x"]),
        // A mirror keeps a destination folder that still holds something it cannot delete,
        // without recreating it on the source (it used to plan mkdir_remote in `mirror`).
        case(
            "mirror + orphans: source folder deleted, dest folder holds a symlink",
            Mode::Mirror,
        )
        .orphans()
        .synced([d("a"), f("z", 1, 1)])
        .rm_remote(&["a"])
        .local([sl("a/x")]),
        case(
            "mirror-upload + orphans: source folder deleted, dest holds a symlink",
            Mode::MirrorUpload,
        )
        .orphans()
        .synced([d("a"), f("z", 1, 1)])
        .rm_local(&["a"])
        .remote([sl("a/x")]),
        case(
            "bidirectional: folder deleted, other side holds a symlink: recreated",
            Mode::Bidirectional,
        )
        .synced([d("a"), f("z", 1, 1)])
        .rm_remote(&["a"])
        .local([sl("a/x")])
        .expect([a(K::Skip, "a/x"), a(K::MkdirRemote, "a")]),
    ]);
}

#[test]
fn regressions_moves_and_symlinks() {
    let synced_local = |c: Case, p: &str, e: E, ino: u64| {
        let mut l = e.1.clone();
        l.inode = Some(ino);
        c.remote([(p.to_string(), e.1.clone())])
            .base_row(p, Some(l), Some(e.1))
    };
    run(vec![
        // `mv a c/x; mv c b/x`: the folder's move goes first (the file's move would create
        // b/x as a parent and block it). The folder's file `k` shows it is the same folder.
        synced_local(
            synced_local(
                synced_local(
                    case(
                        "local: file moved into a folder that moved",
                        Mode::MirrorUpload,
                    ),
                    "a",
                    f("a", 1, 1),
                    1,
                ),
                "c",
                d("c"),
                2,
            ),
            "c/k",
            f("c/k", 2, 2),
            4,
        )
        .local([
            di("b", 3),
            di("b/x", 2),
            fi("b/x/x", 1, 1, 1),
            fi("b/x/k", 2, 2, 4),
        ])
        .expect([
            at(K::MoveRemote, "c", "b/x"),
            at(K::MoveRemote, "a", "b/x/x"),
            a(K::MkdirRemote, "b"),
        ]),
        // The same, but the folder held no file: its inode number alone could be a freed one
        // given to a new folder (`rm -r c; mkdir -p b/x`), so it is made anew; the file still
        // moves.
        synced_local(
            synced_local(
                case(
                    "local: file moved into an empty folder that moved",
                    Mode::MirrorUpload,
                ),
                "a",
                f("a", 1, 1),
                1,
            ),
            "c",
            d("c"),
            2,
        )
        .local([di("b", 3), di("b/x", 2), fi("b/x/x", 1, 1, 1)])
        .expect([
            at(K::MoveRemote, "a", "b/x/x"),
            a(K::MkdirRemote, "b"),
            a(K::MkdirRemote, "b/x"),
        ])
        .ups(&["-c"]),
        // A freed inode number given to a new folder: `rm -r e; mkdir d`, where `d` got the
        // number `e` had. The remote `e` and its file stay where they are (upload mode never
        // deletes), and nothing of `e` is carried into `d`.
        synced_local(
            synced_local(
                case(
                    "local: a new folder with a removed folder's inode number",
                    Mode::Upload,
                ),
                "e",
                d("e"),
                2,
            ),
            "e/w",
            f("e/w", 1, 1),
            5,
        )
        .local([di("d", 2), fi("d/z", 1, 3, 5)])
        .expect([a(K::MkdirRemote, "d"), a(K::Upload, "d/z")])
        .ups(&["-e", "-e/w"]),
        // On a remote a folder's identity is its contents, which the file joined: the files
        // move one by one.
        case(
            "remote: file moved into a folder that moved",
            Mode::Bidirectional,
        )
        .synced([f("a", 1, 1), d("c"), f("c/k", 2, 2)])
        .rm_remote(&["a", "c", "c/k"])
        .remote([d("b"), d("b/x"), f("b/x/k", 2, 2), f("b/x/x", 1, 1)])
        .expect([
            at(K::MoveLocal, "a", "b/x/x"),
            at(K::MoveLocal, "c/k", "b/x/k"),
            a(K::DeleteLocal, "c"),
            a(K::MkdirLocal, "b"),
            a(K::MkdirLocal, "b/x"),
        ]),
        // A folder replaced by a symlink on one side: nothing at or below it is synced
        // (it used to delete the other side's files and download through the link).
        case("local folder replaced by a symlink", Mode::Bidirectional)
            .synced([d("b"), f("b/f", 1, 1), f("z", 1, 1)])
            .rm_local(&["b", "b/f"])
            .local([sl("b")])
            .remote([f("b/g", 2, 2)])
            .expect([a(K::Skip, "b")]),
        case(
            "remote symlink where local has a folder, download",
            Mode::Download,
        )
        .local([d("b"), f("b/f", 1, 1)])
        .remote([sl("b")])
        .expect([a(K::Skip, "b")]),
    ]);
}

/// A move never carries a folder whose listing failed: its contents are missing from the
/// listing, and relocated base rows would read as deletions.
#[test]
fn regressions_moves_and_unreadable_folders() {
    run(vec![
        // It used to plan move_local c -> a, then delete_remote a/x (the unlisted c/x
        // relocated to a/x looked deleted locally).
        case(
            "remote folder move, local copy unreadable",
            Mode::Bidirectional,
        )
        .synced([d("c"), f("c/x", 1, 1), f("z", 1, 1)])
        .rm_local(&["c/x"])
        .unknown(Side::Local, "c")
        .rm_remote(&["c", "c/x"])
        .remote([d("a"), f("a/x", 1, 1)])
        .expect([a(K::MkdirLocal, "a"), a(K::Download, "a/x")]),
        // It used to plan move_remote c -> a, then delete_local a/x.
        case(
            "local folder move, remote copy unreadable",
            Mode::Bidirectional,
        )
        .base_row("c", Some(di("c", 1).1), Some(Entry::dir(0)))
        .base_row("c/x", Some(fi("c/x", 1, 1, 2).1), Some(f("c/x", 1, 1).1))
        .synced([f("z", 1, 1)])
        .remote([d("c")])
        .unknown(Side::Remote, "c")
        .local([di("a", 1), fi("a/x", 1, 1, 2)])
        .expect([a(K::MkdirRemote, "a"), a(K::Upload, "a/x")]),
        case(
            "local folder moved into an unreadable remote folder",
            Mode::Upload,
        )
        .base_row("c", Some(di("c", 1).1), Some(Entry::dir(0)))
        .base_row("c/x", Some(fi("c/x", 1, 1, 2).1), Some(f("c/x", 1, 1).1))
        .synced([d("u"), f("z", 1, 1)])
        .remote([d("c"), f("c/x", 1, 1)])
        .unknown(Side::Remote, "u")
        .local([di("u/c", 1), fi("u/c/x", 1, 1, 2)])
        .ups(&["-c", "-c/x"]),
    ]);
}

/// Base rows of paths inside a moved folder are written by the move, after it relocates the
/// rows; as plain base updates (written before the actions) the move would overwrite them.
#[test]
fn base_updates_inside_a_move_ride_with_it() {
    let c = case("upload: folder moved, a file inside deleted", Mode::Upload)
        .base_row("b", Some(di("b", 1).1), Some(Entry::dir(0)))
        .base_row("b/k", Some(fi("b/k", 2, 2, 3).1), Some(f("b/k", 2, 2).1))
        .base_row("b/y", Some(fi("b/y", 1, 1, 2).1), Some(f("b/y", 1, 1).1))
        .remote([d("b"), f("b/k", 2, 2), f("b/y", 1, 1)])
        .local([di("c", 1), fi("c/k", 2, 2, 3)])
        .expect([at(K::MoveRemote, "b", "c")]);
    run(vec![c.clone()]);
    let p = c.plan();
    let ups: Vec<String> = p.actions[0]
        .base
        .iter()
        .map(|u| format!("{}{}", if u.row.is_some() { '+' } else { '-' }, u.path))
        .collect();
    assert_eq!(ups, ["-b", "+c", "-b/k", "+c/k", "-b/y", "+c/y", "-c/y"]);
}

/// A new local file with the content of a synced file becomes a server-side copy of it, where
/// the remote can copy (`server_copy`) and the engine found the contents equal.
#[test]
fn server_side_copies() {
    let copy = |o: &mut PlanOptions| o.server_copy = true;
    let start = |name: &str, mode: Mode| {
        case(format!("{}: {name}", mode.as_str()), mode)
            .synced([f("p", 100, 10), f("z", 1, 1)])
            .opt(copy)
    };
    let mut cases = Vec::new();
    for mode in [Mode::Upload, Mode::MirrorUpload, Mode::Bidirectional] {
        cases.push(
            start("copy of a synced file", mode)
                .local([f("q", 100, 20)])
                .same_content("q", "p")
                .expect([at(K::CopyRemote, "p", "q")]),
        );
        cases.push(
            start("copy into a new folder", mode)
                .local([d("n"), f("n/q", 100, 20)])
                .same_content("n/q", "p")
                .expect([at(K::CopyRemote, "p", "n/q"), a(K::MkdirRemote, "n")]),
        );
        cases.push(
            start("no server copy", mode)
                .opt(|o| o.server_copy = false)
                .local([f("q", 100, 20)])
                .same_content("q", "p")
                .expect([a(K::Upload, "q")]),
        );
        cases.push(
            start("no hint from the engine", mode)
                .local([f("q", 100, 20)])
                .expect([a(K::Upload, "q")]),
        );
        cases.push(
            start("source changed locally", mode)
                .local([f("p", 100, 15), f("q", 100, 20)])
                .same_content("q", "p")
                .expect([a(K::Upload, "p"), a(K::Upload, "q")]),
        );
        cases.push(
            start("sizes differ", mode)
                .local([f("q", 101, 20)])
                .same_content("q", "p")
                .expect([a(K::Upload, "q")]),
        );
        cases.push(
            start("remote already has the target", mode)
                .local([f("q", 100, 20)])
                .remote([f("q", 100, 5)])
                .same_content("q", "p")
                .policy(ConflictPolicy::Local)
                .expect([a(K::Conflict, "q"), a(K::Upload, "q")]),
        );
        cases.push(
            start("source not in the base", mode)
                .local([f("q", 100, 20), f("s", 100, 10)])
                .remote([f("s", 100, 10)])
                .same_content("q", "s")
                .ups(&["+s"])
                .expect([a(K::Upload, "q")]),
        );
    }
    // The source changed on the remote: it is no longer what the local file holds.
    cases.push(
        start("source changed remotely", Mode::Bidirectional)
            .remote([f("p", 100, 12)])
            .local([f("q", 100, 20)])
            .same_content("q", "p")
            .expect([a(K::Download, "p"), a(K::Upload, "q")]),
    );
    cases.push(
        start("source changed remotely", Mode::MirrorUpload)
            .remote([f("p", 100, 12)])
            .local([f("q", 100, 20)])
            .same_content("q", "p")
            .expect([a(K::Upload, "p"), a(K::Upload, "q")]),
    );
    // Download modes never write the remote.
    for mode in [Mode::Download, Mode::Mirror] {
        cases.push(
            start("a local copy is a destination-only change", mode)
                .local([f("q", 100, 20)])
                .same_content("q", "p"),
        );
    }
    // The source moved away locally this run: the move goes, the new file is uploaded.
    let moved = |c: Case| {
        let mut e = Entry::file(100, 10 * SEC);
        e.inode = Some(7);
        let r = Entry::file(100, 10 * SEC);
        c.base_row("m", Some(e.clone()), Some(r.clone()))
            .remote([("m".to_string(), r)])
    };
    cases.push(
        moved(start("source moved away", Mode::Bidirectional))
            .local([fi("m2", 100, 10, 7), f("q", 100, 20)])
            .same_content("q", "m")
            .expect([at(K::MoveRemote, "m", "m2"), a(K::Upload, "q")]),
    );
    // The source is deleted remotely this run (bidirectional: it goes locally too).
    cases.push(
        start("source deleted remotely", Mode::Bidirectional)
            .rm_remote(&["p"])
            .local([f("q", 100, 20)])
            .same_content("q", "p")
            .expect([a(K::DeleteLocal, "p"), a(K::Upload, "q")]),
    );
    // A remote file where the target's folder goes: the copy would run before that deletion.
    cases.push(
        start("target folder replaces a remote file", Mode::Bidirectional)
            .synced([f("n", 3, 3)])
            .rm_local(&["n"])
            .local([d("n"), f("n/q", 100, 20)])
            .same_content("n/q", "p")
            .expect([
                a(K::DeleteRemote, "n"),
                a(K::MkdirRemote, "n"),
                a(K::Upload, "n/q"),
            ]),
    );
    // Secure mode: hashes that are known must agree.
    cases.push(
        case("secure: hashes differ", Mode::Upload)
            .opt(copy)
            .opt(|o| o.compare = Compare::Secure)
            .synced([fh("p", 100, 10, 1), f("z", 1, 1)])
            .local([fh("q", 100, 20, 2)])
            .same_content("q", "p")
            .expect([a(K::Upload, "q")]),
    );
    cases.push(
        case("secure: hashes agree", Mode::Upload)
            .opt(copy)
            .opt(|o| o.compare = Compare::Secure)
            .synced([fh("p", 100, 10, 1), f("z", 1, 1)])
            .local([fh("q", 100, 20, 1)])
            .same_content("q", "p")
            .expect([at(K::CopyRemote, "p", "q")]),
    );
    // A folder whose listing failed: nothing in it is a source.
    cases.push(
        case("source in an unreadable folder", Mode::Upload)
            .opt(copy)
            .synced([d("u"), f("u/p", 100, 10), f("z", 1, 1)])
            .local([f("q", 100, 20)])
            .same_content("q", "u/p")
            .unknown(Side::Remote, "u")
            .expect([a(K::Upload, "q")]),
    );
    run(cases);
}

/// The copy's base row is the local file and a remote entry with its size and mtime (the
/// executor gives the copy the local mtime, then writes what it observes); it runs in the
/// moves phase, after moves and before deletions.
#[test]
fn server_side_copy_details() {
    let mut e = Entry::file(100, 10 * SEC);
    e.inode = Some(7);
    let c = case("details", Mode::MirrorUpload)
        .opt(|o| {
            o.server_copy = true;
            o.delete_orphans = true
        })
        .synced([f("p", 100, 10), f("z", 1, 1)])
        .base_row("m", Some(e), Some(Entry::file(100, 10 * SEC)))
        .remote([f("m", 100, 10), f("orphan", 1, 1)])
        .local([fi("m2", 100, 10, 7), fi("q", 100, 20, 9)])
        .same_content("q", "p")
        .expect([
            at(K::MoveRemote, "m", "m2"),
            at(K::CopyRemote, "p", "q"),
            a(K::DeleteRemote, "orphan"),
        ]);
    run(vec![c.clone()]);
    let p = c.plan();
    let cp = &p.actions[1];
    assert_eq!(cp.bytes, 0);
    assert_eq!(p.bytes(), 0);
    assert_eq!(cp.src, Some(Entry::file(100, 10 * SEC)));
    assert_eq!(cp.base.len(), 1);
    assert_eq!(cp.base[0].path, "q");
    let row = cp.base[0].row.as_ref().unwrap();
    assert_eq!(row.local, Some(fi("q", 100, 20, 9).1));
    assert_eq!(row.remote, Some(Entry::file(100, 20 * SEC)));
}

/// A numbered series shifted by one (`f00000` renamed to `f00001`, that one to `f00002`…):
/// one chain of 20,000 renames over synced files, planned as 20,000 moves from the far end,
/// and in linear time (following the chain from every source would take minutes).
#[test]
fn a_long_rename_chain_is_planned_from_its_far_end() {
    const N: u64 = 20_000;
    let name = |i: u64| format!("f{i:05}");
    let mut c = case("shifted series", Mode::MirrorUpload);
    for i in 0..N {
        let (_, mut l) = f(&name(i), i + 1, i as i64 + 1);
        let r = l.clone();
        l.inode = Some(i + 100);
        c = c.base_row(&name(i), Some(l), Some(r.clone()));
        c = c.remote([(name(i), r)]);
        // The file that was `f(i)` is now at `f(i + 1)`.
        c = c.local([fi(&name(i + 1), i + 1, i as i64 + 1, i + 100)]);
    }
    let c = c.local([fi(&name(0), 1, 999_999, 7)]);
    let mut want: Vec<(K, String, Option<String>)> = (0..N)
        .rev()
        .map(|i| at(K::MoveRemote, &name(i), &name(i + 1)))
        .collect();
    want.push(a(K::Upload, &name(0)));
    run(vec![c.expect(want)]);
}
