//! End-to-end scenarios through the real binary: every mode, dry runs, trash, the safety guards,
//! conflicts, filters, awkward names, unreadable files and stale partial files.
//!
//! Each scenario is a function of a [`Backend`]; the `local` module at the bottom runs them all
//! with `protocol = "local"`. A module for another protocol calls the same functions with its own
//! backend (see `scenario_tests!`).

mod common;

use common::*;
use serde_json::Value;

/// Paths of every record, for "never mentioned" checks.
fn all_paths(r: &RunOut) -> Vec<String> {
    r.records
        .iter()
        .flat_map(|rec| {
            [rec["path"].as_str(), rec["to"].as_str()]
                .into_iter()
                .flatten()
                .map(str::to_string)
        })
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// No record is a transfer, delete, move or copy.
#[track_caller]
fn assert_no_changes(r: &RunOut) {
    // ACTIONS lists every change first, then the records (conflict, skip, error).
    for a in &ACTIONS[..9] {
        assert!(r.of(a).is_empty(), "unexpected {a}; {}", r.dump());
    }
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

pub fn download_mode(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "dl", "download", "");
    fx.write(Remote, "a.txt", "A1", T0);
    fx.write(Remote, "dir/b.txt", "B1", T0);
    fx.write(Remote, "dir/sub/c.txt", "C1", T0);
    fx.mkdir(Remote, "empty");
    fx.write(Remote, "gone-local.txt", "G", T0);
    fx.write(Remote, "edited-local.txt", "E1", T0);
    fx.write(Remote, "both.txt", "X1", T0);
    fx.write(Local, "local-only.txt", "L", T0);
    let remote_before = fx.snap(Remote);

    let r = fx.sync_settled("dl");
    assert_eq!(
        r.paths("download"),
        strs(&[
            "a.txt",
            "both.txt",
            "dir/b.txt",
            "dir/sub/c.txt",
            "edited-local.txt",
            "gone-local.txt"
        ]),
        "{}",
        r.dump()
    );
    assert_eq!(r.record("download", "a.txt")["bytes"], 2);
    assert!(
        r.paths("mkdir_local").contains(&"empty".to_string()),
        "{}",
        r.dump()
    );
    assert!(r.of("upload").is_empty() && r.of("mkdir_remote").is_empty());
    assert_eq!(r.count("download"), 6);
    assert_eq!(r.count("bytes"), 2 + 2 + 2 + 2 + 2 + 1);
    fx.assert_tree(
        Local,
        &[
            ("a.txt", Some("A1")),
            ("both.txt", Some("X1")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("dir/sub", None),
            ("dir/sub/c.txt", Some("C1")),
            ("edited-local.txt", Some("E1")),
            ("empty", None),
            ("gone-local.txt", Some("G")),
            ("local-only.txt", Some("L")),
        ],
    );
    // mtimes are preserved
    let m = std::fs::metadata(fx.path(Local, "dir/sub/c.txt")).unwrap();
    assert_eq!(mtime_ns_of(&m), T0 * 1_000_000_000);
    assert_eq!(
        fx.snap(Remote),
        remote_before,
        "download never writes remote"
    );

    // Changes on both sides.
    fx.write(Remote, "a.txt", "A2-remote", T0 + 100);
    fx.write(Remote, "new/n.txt", "N", T0 + 100);
    fx.remove(Remote, "dir/b.txt");
    fx.write(Remote, "both.txt", "X2-remote", T0 + 100);
    fx.remove(Local, "gone-local.txt");
    fx.write(Local, "edited-local.txt", "E-local", T0 + 50);
    fx.write(Local, "local-new.txt", "LN", T0 + 50);
    fx.write(Local, "both.txt", "X-local", T0 + 60);
    let remote_before = fx.snap(Remote);

    let r = fx.sync_settled("dl");
    assert_eq!(
        r.paths("download"),
        strs(&["a.txt", "both.txt", "new/n.txt"]),
        "{}",
        r.dump()
    );
    // both sides changed: a conflict record, the source wins, the local version goes to trash
    assert_eq!(r.paths("conflict"), strs(&["both.txt"]), "{}", r.dump());
    assert!(r.of("delete_local").is_empty() && r.of("upload").is_empty());
    fx.assert_tree(
        Local,
        &[
            ("a.txt", Some("A2-remote")),
            ("both.txt", Some("X2-remote")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("dir/sub", None),
            ("dir/sub/c.txt", Some("C1")),
            ("edited-local.txt", Some("E-local")),
            ("empty", None),
            ("local-new.txt", Some("LN")),
            ("local-only.txt", Some("L")),
            ("new", None),
            ("new/n.txt", Some("N")),
        ],
    );
    let trashed = synced_view(&snapshot(&fx.path(Local, ".omnisync/trash")));
    assert!(
        trashed.values().any(|v| v.as_deref() == Some("X-local")),
        "the destination's version of a both-sides change goes to trash: {trashed:?}"
    );
    assert_eq!(
        fx.snap(Remote),
        remote_before,
        "download never writes remote"
    );
}

pub fn upload_mode(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "up", "upload", "");
    fx.write(Local, "a.txt", "A1", T0);
    fx.write(Local, "dir/b.txt", "B1", T0);
    fx.write(Local, "dir/sub/c.txt", "C1", T0);
    fx.mkdir(Local, "empty");
    fx.write(Local, "gone-remote.txt", "G", T0);
    fx.write(Local, "edited-remote.txt", "E1", T0);
    fx.write(Local, "both.txt", "X1", T0);
    fx.write(Remote, "remote-only.txt", "R", T0);
    let local_before = fx.snap(Local);

    let r = fx.sync_settled("up");
    assert_eq!(
        r.paths("upload"),
        strs(&[
            "a.txt",
            "both.txt",
            "dir/b.txt",
            "dir/sub/c.txt",
            "edited-remote.txt",
            "gone-remote.txt"
        ]),
        "{}",
        r.dump()
    );
    assert_eq!(r.record("upload", "dir/b.txt")["bytes"], 2);
    assert!(
        r.paths("mkdir_remote").contains(&"empty".to_string()),
        "{}",
        r.dump()
    );
    assert!(r.of("download").is_empty() && r.of("mkdir_local").is_empty());
    fx.assert_tree(
        Remote,
        &[
            ("a.txt", Some("A1")),
            ("both.txt", Some("X1")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("dir/sub", None),
            ("dir/sub/c.txt", Some("C1")),
            ("edited-remote.txt", Some("E1")),
            ("empty", None),
            ("gone-remote.txt", Some("G")),
            ("remote-only.txt", Some("R")),
        ],
    );
    let m = std::fs::metadata(fx.path(Remote, "dir/sub/c.txt")).unwrap();
    assert!(
        !b.preserves_mtime() || {
            let p = b.mtime_precision_ns();
            mtime_ns_of(&m).div_euclid(p) == (T0 * 1_000_000_000).div_euclid(p)
        },
        "mtime preserved on the remote"
    );
    assert_eq!(fx.snap(Local), local_before, "upload never writes local");

    fx.write(Local, "a.txt", "A2-local", T0 + 100);
    fx.write(Local, "new/n.txt", "N", T0 + 100);
    fx.remove(Local, "dir/b.txt");
    fx.write(Local, "both.txt", "X2-local", T0 + 100);
    fx.remove(Remote, "gone-remote.txt");
    fx.write(Remote, "edited-remote.txt", "E-remote", T0 + 50);
    fx.write(Remote, "remote-new.txt", "RN", T0 + 50);
    fx.write(Remote, "both.txt", "X-remote", T0 + 60);
    let local_before = fx.snap(Local);

    let r = fx.sync_settled("up");
    assert_eq!(
        r.paths("upload"),
        strs(&["a.txt", "both.txt", "new/n.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(r.paths("conflict"), strs(&["both.txt"]), "{}", r.dump());
    assert!(r.of("delete_remote").is_empty() && r.of("download").is_empty());
    fx.assert_tree(
        Remote,
        &[
            ("a.txt", Some("A2-local")),
            ("both.txt", Some("X2-local")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("dir/sub", None),
            ("dir/sub/c.txt", Some("C1")),
            ("edited-remote.txt", Some("E-remote")),
            ("empty", None),
            ("new", None),
            ("new/n.txt", Some("N")),
            ("remote-new.txt", Some("RN")),
            ("remote-only.txt", Some("R")),
        ],
    );
    let trashed = synced_view(&snapshot(&fx.path(Remote, ".omnisync/trash")));
    assert!(
        trashed.values().any(|v| v.as_deref() == Some("X-remote")),
        "the destination's version of a both-sides change goes to trash: {trashed:?}"
    );
    assert_eq!(fx.snap(Local), local_before, "upload never writes local");
}

pub fn bidirectional_mode(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    fx.write(Local, "l1.txt", "L1", T0);
    fx.write(Local, "ldir/l2.txt", "L2", T0);
    fx.mkdir(Local, "lempty");
    fx.write(Remote, "r1.txt", "R1", T0);
    fx.write(Remote, "rdir/r2.txt", "R2", T0);
    fx.mkdir(Remote, "rempty");
    fx.write_both("shared/x.txt", "X", T0);

    let r = fx.sync_settled("bi");
    assert_eq!(
        r.paths("upload"),
        strs(&["l1.txt", "ldir/l2.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("download"),
        strs(&["r1.txt", "rdir/r2.txt"]),
        "{}",
        r.dump()
    );
    assert!(
        r.paths("mkdir_remote").contains(&"lempty".to_string()),
        "{}",
        r.dump()
    );
    assert!(
        r.paths("mkdir_local").contains(&"rempty".to_string()),
        "{}",
        r.dump()
    );
    assert!(
        !all_paths(&r).contains(&"shared/x.txt".to_string()),
        "equal files are adopted without transfer; {}",
        r.dump()
    );
    let first = [
        ("l1.txt", Some("L1")),
        ("ldir", None),
        ("ldir/l2.txt", Some("L2")),
        ("lempty", None),
        ("r1.txt", Some("R1")),
        ("rdir", None),
        ("rdir/r2.txt", Some("R2")),
        ("rempty", None),
        ("shared", None),
        ("shared/x.txt", Some("X")),
    ];
    fx.assert_tree(Local, &first);
    fx.assert_in_sync();

    // Change, add and delete on each side.
    fx.write(Local, "l1.txt", "L1-changed", T0 + 100);
    fx.write(Local, "lnew.txt", "LN", T0 + 100);
    fx.remove(Local, "shared/x.txt");
    fx.remove(Local, "lempty");
    fx.write(Remote, "r1.txt", "R1-changed", T0 + 100);
    fx.write(Remote, "rdir/rnew.txt", "RN", T0 + 100);
    fx.remove(Remote, "ldir/l2.txt");
    fx.remove(Remote, "rempty");

    let r = fx.sync_settled("bi");
    assert_eq!(
        r.paths("upload"),
        strs(&["l1.txt", "lnew.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("download"),
        strs(&["r1.txt", "rdir/rnew.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["lempty", "shared/x.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_local"),
        strs(&["ldir/l2.txt", "rempty"]),
        "{}",
        r.dump()
    );
    assert!(r.of("conflict").is_empty(), "{}", r.dump());
    fx.assert_tree(
        Local,
        &[
            ("l1.txt", Some("L1-changed")),
            ("ldir", None),
            ("lnew.txt", Some("LN")),
            ("r1.txt", Some("R1-changed")),
            ("rdir", None),
            ("rdir/r2.txt", Some("R2")),
            ("rdir/rnew.txt", Some("RN")),
            ("shared", None),
        ],
    );
    fx.assert_in_sync();
}

pub fn mirror_mode(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "mi", "mirror", "delete_orphans = true");
    fx.write(Remote, "a.txt", "A1", T0);
    fx.write(Remote, "dir/b.txt", "B1", T0);
    fx.write(Remote, "keep.txt", "K", T0);
    fx.mkdir(Remote, "emptyr");
    fx.write(Local, "orphan.txt", "O", T0);
    fx.write(Local, "a.txt", "A-local-different", T0 + 500);
    let remote_before = fx.snap(Remote);

    let r = fx.sync_settled("mi");
    assert_eq!(
        r.paths("download"),
        strs(&["a.txt", "dir/b.txt", "keep.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_local"),
        strs(&["orphan.txt"]),
        "{}",
        r.dump()
    );
    fx.assert_in_sync();
    let trashed = synced_view(&snapshot(&fx.path(Local, ".omnisync/trash")));
    let vals: Vec<_> = trashed.values().flatten().cloned().collect();
    assert!(
        vals.contains(&"A-local-different".to_string()) && vals.contains(&"O".to_string()),
        "overwritten and orphaned local files go to trash: {trashed:?}"
    );

    // Local changes are overwritten, local deletions restored, local additions removed.
    fx.write(Local, "dir/b.txt", "B-local", T0 + 100);
    fx.remove(Local, "keep.txt");
    fx.write(Local, "extra.txt", "EX", T0 + 100);
    // Remote changes, additions and deletions travel.
    fx.write(Remote, "a.txt", "A2", T0 + 200);
    fx.write(Remote, "c.txt", "C", T0 + 200);
    fx.remove(Remote, "emptyr");
    let remote_before2 = fx.snap(Remote);

    let r = fx.sync_settled("mi");
    assert_eq!(
        r.paths("download"),
        strs(&["a.txt", "c.txt", "dir/b.txt", "keep.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_local"),
        strs(&["emptyr", "extra.txt"]),
        "{}",
        r.dump()
    );
    assert!(r.of("upload").is_empty() && r.of("delete_remote").is_empty());
    fx.assert_tree(
        Local,
        &[
            ("a.txt", Some("A2")),
            ("c.txt", Some("C")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("keep.txt", Some("K")),
        ],
    );
    fx.assert_in_sync();
    assert_ne!(remote_before, remote_before2);
    assert_eq!(
        fx.snap(Remote),
        remote_before2,
        "mirror never writes remote"
    );
}

pub fn mirror_keeps_orphans_without_delete_orphans(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "mi", "mirror", "");
    fx.write(Remote, "a.txt", "A1", T0);
    fx.write(Local, "orphan.txt", "O", T0);
    fx.sync_settled("mi");
    fx.write(Local, "a.txt", "A-local", T0 + 100);
    fx.remove(Local, "orphan.txt");
    fx.write(Local, "orphan2.txt", "O2", T0);
    let r = fx.sync_settled("mi");
    assert_eq!(r.paths("download"), strs(&["a.txt"]), "{}", r.dump());
    assert!(r.of("delete_local").is_empty(), "{}", r.dump());
    fx.assert_tree(Local, &[("a.txt", Some("A1")), ("orphan2.txt", Some("O2"))]);
}

pub fn mirror_upload_mode(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "mu", "mirror-upload", "delete_orphans = true");
    fx.write(Local, "a.txt", "A1", T0);
    fx.write(Local, "dir/b.txt", "B1", T0);
    fx.write(Local, "keep.txt", "K", T0);
    fx.mkdir(Local, "emptyl");
    fx.write(Remote, "orphan.txt", "O", T0);
    fx.write(Remote, "a.txt", "A-remote-different", T0 + 500);
    let local_before = fx.snap(Local);

    let r = fx.sync_settled("mu");
    assert_eq!(
        r.paths("upload"),
        strs(&["a.txt", "dir/b.txt", "keep.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["orphan.txt"]),
        "{}",
        r.dump()
    );
    fx.assert_in_sync();
    let trashed = synced_view(&snapshot(&fx.path(Remote, ".omnisync/trash")));
    let vals: Vec<_> = trashed.values().flatten().cloned().collect();
    assert!(
        vals.contains(&"A-remote-different".to_string()) && vals.contains(&"O".to_string()),
        "overwritten and orphaned remote files go to trash: {trashed:?}"
    );

    fx.write(Remote, "dir/b.txt", "B-remote", T0 + 100);
    fx.remove(Remote, "keep.txt");
    fx.write(Remote, "extra.txt", "EX", T0 + 100);
    fx.write(Local, "a.txt", "A2", T0 + 200);
    fx.write(Local, "c.txt", "C", T0 + 200);
    fx.remove(Local, "emptyl");
    let local_before2 = fx.snap(Local);

    let r = fx.sync_settled("mu");
    assert_eq!(
        r.paths("upload"),
        strs(&["a.txt", "c.txt", "dir/b.txt", "keep.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["emptyl", "extra.txt"]),
        "{}",
        r.dump()
    );
    assert!(r.of("download").is_empty() && r.of("delete_local").is_empty());
    fx.assert_tree(
        Remote,
        &[
            ("a.txt", Some("A2")),
            ("c.txt", Some("C")),
            ("dir", None),
            ("dir/b.txt", Some("B1")),
            ("keep.txt", Some("K")),
        ],
    );
    fx.assert_in_sync();
    assert_ne!(local_before, local_before2);
    assert_eq!(
        fx.snap(Local),
        local_before2,
        "mirror-upload never writes local"
    );
}

// ---------------------------------------------------------------------------------------------
// Dry runs
// ---------------------------------------------------------------------------------------------

/// `(action, path, to)` of every record, sorted.
fn plan_of(r: &RunOut) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = r
        .records
        .iter()
        .map(|x| {
            (
                x["action"].as_str().unwrap().to_string(),
                x["path"].as_str().unwrap().to_string(),
                x["to"].as_str().map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn dry_run_changes_nothing(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    for i in 0..4 {
        fx.write_both(&format!("f{i}.txt"), format!("F{i}"), T0);
    }
    fx.write_both("dir/d.txt", "D", T0);
    fx.write_both("old/o.txt", "O", T0);
    fx.sync_settled("bi");

    fx.write(Local, "f0.txt", "F0-local-change", T0 + 100);
    fx.write(Local, "lnew/x.txt", "LX-new", T0 + 100);
    fx.mkdir(Local, "lempty");
    fx.remove(Local, "f1.txt");
    fx.write(Remote, "f2.txt", "F2-remote-change!", T0 + 100);
    fx.write(Remote, "rnew.txt", "RNEW", T0 + 100);
    fx.remove(Remote, "f3.txt");
    fx.rename(Local, "old", "renamed");
    let before = fx.snap_both();

    let d = fx.run(&["run", "bi", "--dry-run", "--json"]);
    assert_eq!(d.code, 0, "{}", d.dump());
    assert_eq!(fx.snap_both(), before, "a dry run changes nothing");
    assert!(!d.records.is_empty());
    for rec in &d.records {
        assert_eq!(rec["dry_run"], true, "{rec}");
        assert_eq!(rec["ms"], Value::Null, "{rec}");
        assert_eq!(rec["job"], "bi");
    }
    assert_eq!(d.summary.as_ref().unwrap()["dry_run"], true, "{}", d.dump());
    assert_eq!(d.record("upload", "f0.txt")["bytes"], 15);
    assert_eq!(d.record("upload", "lnew/x.txt")["bytes"], 6);
    assert_eq!(d.record("download", "f2.txt")["bytes"], 17);
    assert_eq!(d.record("download", "rnew.txt")["bytes"], 4);
    assert_eq!(d.record("move_remote", "old")["to"], "renamed");
    assert_eq!(d.record("move_remote", "old")["bytes"], 0);
    assert_eq!(d.paths("delete_remote"), strs(&["f1.txt"]));
    assert_eq!(d.paths("delete_local"), strs(&["f3.txt"]));
    assert_eq!(d.count("bytes"), 15 + 6 + 17 + 4);

    // The dry run recorded no base: a second one plans the same.
    let d2 = fx.run(&["run", "bi", "--dry-run", "--json"]);
    assert_eq!(plan_of(&d2), plan_of(&d), "{}", d2.dump());
    assert_eq!(fx.snap_both(), before);

    // The real run does exactly what was planned.
    let real = fx.sync_settled("bi");
    assert_eq!(plan_of(&real), plan_of(&d), "{}\n{}", d.dump(), real.dump());
    for rec in &real.records {
        assert_eq!(rec["dry_run"], false, "{rec}");
        assert!(rec["ms"].is_u64(), "{rec}");
    }
    assert_eq!(real.count("bytes"), d.count("bytes"));
    fx.assert_in_sync();
}

pub fn dry_run_first_run_creates_nothing(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "dl", "download", "");
    fx.add_job(
        "planonly",
        "mirror",
        "dry_run = true\ndelete_orphans = true",
    );
    std::fs::remove_dir(&fx.local).unwrap();
    fx.write(Remote, "a.txt", "AAAA", T0);
    fx.write(Remote, "d/b.txt", "BB", T0);
    let before = fx.snap(Remote);

    let d = fx.run(&["run", "dl", "--dry-run", "--json"]);
    assert_eq!(d.code, 0, "{}", d.dump());
    assert_eq!(
        d.paths("download"),
        strs(&["a.txt", "d/b.txt"]),
        "{}",
        d.dump()
    );
    assert_eq!(d.record("download", "a.txt")["bytes"], 4);
    assert!(!fx.local.exists(), "a dry run does not create local_path");
    assert_eq!(fx.snap(Remote), before);

    // `dry_run = true` in the job: the same, without the flag.
    let d = fx.run(&["run", "planonly", "--json"]);
    assert_eq!(d.code, 0, "{}", d.dump());
    assert!(
        d.records.iter().all(|r| r["dry_run"] == true),
        "{}",
        d.dump()
    );
    assert_eq!(
        d.paths("download"),
        strs(&["a.txt", "d/b.txt"]),
        "{}",
        d.dump()
    );
    assert!(
        !fx.local.exists(),
        "a dry_run job does not create local_path"
    );

    let r = fx.sync_settled("dl");
    assert_eq!(plan_of(&r).len(), r.records.len());
    assert_eq!(r.paths("download"), strs(&["a.txt", "d/b.txt"]));
    fx.assert_in_sync();
}

// ---------------------------------------------------------------------------------------------
// Trash and the reserved folder
// ---------------------------------------------------------------------------------------------

/// The trash file for `rel` of today's run (allowing for a run that crossed UTC midnight).
fn trashed(fx: &Fixture<'_>, side: Side, dates: &[String], rel: &str) -> Option<String> {
    dates
        .iter()
        .find_map(|d| std::fs::read_to_string(fx.trash(side, d).join(rel)).ok())
}

pub fn trash_keeps_overwritten_and_deleted_files(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = 10");
    // Trash dates are UTC whatever the local time zone.
    fx.env.push(("TZ".into(), TZ_EAST.into()));
    fx.write_both("a.txt", "A1", T0);
    fx.write_both("dir/b.txt", "B1", T0);
    fx.write_both("keep.txt", "K", T0);
    fx.write_both("sub/.omnisync/not-reserved.txt", "NR", T0);
    fx.write(Local, ".omnisync/notes.txt", "local private", T0);
    fx.write(Remote, ".omnisync/other.txt", "remote private", T0);
    let mut dates = vec![utc_date()];
    let r = fx.sync_settled("bi");
    assert!(
        r.records.is_empty(),
        "equal trees adopt silently; {}",
        r.dump()
    );

    fx.write(Remote, "a.txt", "A2", T0 + 10);
    fx.remove(Remote, "dir/b.txt");
    fx.remove(Local, "keep.txt");
    fx.write(Local, "sub/.omnisync/new.txt", "NEW", T0 + 10);
    let r = fx.sync("bi");
    dates.push(utc_date());
    assert_eq!(r.paths("download"), strs(&["a.txt"]), "{}", r.dump());
    assert_eq!(
        r.paths("upload"),
        strs(&["sub/.omnisync/new.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_local"),
        strs(&["dir/b.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["keep.txt"]),
        "{}",
        r.dump()
    );
    assert_eq!(trashed(&fx, Local, &dates, "a.txt").as_deref(), Some("A1"));
    assert_eq!(
        trashed(&fx, Local, &dates, "dir/b.txt").as_deref(),
        Some("B1")
    );
    assert_eq!(
        trashed(&fx, Remote, &dates, "keep.txt").as_deref(),
        Some("K")
    );
    assert_eq!(fx.read(Local, "a.txt"), "A2");
    assert!(!fx.exists(Local, "dir/b.txt") && !fx.exists(Remote, "keep.txt"));

    // A second trash of the same path on the same day: `~2`.
    fx.write(Remote, "a.txt", "A3", T0 + 20);
    fx.sync_settled("bi");
    dates.push(utc_date());
    assert_eq!(fx.read(Local, "a.txt"), "A3");
    assert_eq!(trashed(&fx, Local, &dates, "a.txt").as_deref(), Some("A1"));
    assert_eq!(
        trashed(&fx, Local, &dates, "a.txt~2").as_deref(),
        Some("A2")
    );
    // And again: `~3`, `~4`, `~5`, each version kept under its own name.
    for (i, v) in ["A4", "A5", "A6"].iter().enumerate() {
        fx.write(Remote, "a.txt", v, T0 + 30 + 10 * i as i64);
        fx.sync_settled("bi");
        dates.push(utc_date());
    }
    assert_eq!(fx.read(Local, "a.txt"), "A6");
    for (name, v) in [("a.txt~3", "A3"), ("a.txt~4", "A4"), ("a.txt~5", "A5")] {
        assert_eq!(
            trashed(&fx, Local, &dates, name).as_deref(),
            Some(v),
            "{name}"
        );
    }

    // `.omnisync/` at the root is never synced, either way.
    let l = fx.snap(Local);
    let r = fx.snap(Remote);
    assert!(!r.keys().any(|p| p.contains("notes.txt")), "{r:?}");
    assert!(!l.keys().any(|p| p.contains("other.txt")), "{l:?}");
    assert!(!r
        .keys()
        .any(|p| p.ends_with("/a.txt") && p.starts_with(".omnisync/")));
    assert!(!l.keys().any(|p| p.ends_with("keep.txt")) || fx.exists(Local, ".omnisync/trash"));
    for d in &dates {
        assert!(!fx.trash(Remote, d).join("a.txt").exists());
        assert!(!fx.trash(Local, d).join("keep.txt").exists());
    }
    assert_eq!(fx.read(Local, ".omnisync/notes.txt"), "local private");
    assert_eq!(fx.read(Remote, ".omnisync/other.txt"), "remote private");
    assert_eq!(fx.read(Remote, "sub/.omnisync/new.txt"), "NEW");
    fx.assert_in_sync();
}

pub fn trash_off_deletes_for_good(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "mu",
        "mirror-upload",
        "delete_orphans = true\ntrash = false",
    );
    fx.write(Local, "a.txt", "A1", T0);
    fx.write(Local, "b.txt", "B1", T0);
    fx.write(Local, "c.txt", "C1", T0);
    fx.sync_settled("mu");
    fx.remove(Local, "b.txt");
    fx.write(Local, "a.txt", "A2", T0 + 5);
    let r = fx.sync_settled("mu");
    assert_eq!(r.paths("delete_remote"), strs(&["b.txt"]), "{}", r.dump());
    assert!(!fx.exists(Remote, ".omnisync"), "{:?}", fx.snap(Remote));
    fx.assert_tree(Remote, &[("a.txt", Some("A2")), ("c.txt", Some("C1"))]);
}

// ---------------------------------------------------------------------------------------------
// max_delete
// ---------------------------------------------------------------------------------------------

pub fn max_delete_percent(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "mu",
        "mirror-upload",
        "delete_orphans = true\nmax_delete = \"50%\"",
    );
    for i in 0..10 {
        fx.write(Local, &format!("f{i}.txt"), format!("F{i}"), T0);
    }
    fx.sync_settled("mu");
    for i in 0..6 {
        fx.remove(Local, &format!("f{i}.txt"));
    }
    let before = fx.snap_both();
    let r = fx.run(&["run", "mu", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(r.stderr.contains("--force-delete"), "{}", r.dump());
    assert!(r.stderr.contains('6'), "says how many: {}", r.dump());
    assert!(r.records.is_empty(), "{}", r.dump());
    assert_eq!(fx.snap_both(), before, "nothing deleted");
    // Text mode says the same.
    let t = fx.run(&["run", "mu"]);
    assert_eq!(t.code, 4, "{}", t.dump());
    assert!(t.stderr.contains("--force-delete"), "{}", t.dump());

    let r = fx.run(&["run", "mu", "--json", "--force-delete"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.count("delete_remote"), 6);
    fx.assert_in_sync();

    // 2 of 4 is 50%: not more than the limit.
    fx.remove(Local, "f6.txt");
    fx.remove(Local, "f7.txt");
    let r = fx.sync_settled("mu");
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["f6.txt", "f7.txt"]),
        "{}",
        r.dump()
    );
    fx.assert_in_sync();
}

pub fn max_delete_count(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = 2");
    for i in 0..6 {
        fx.write_both(&format!("d/f{i}.txt"), format!("F{i}"), T0);
    }
    fx.sync_settled("bi");
    for i in 0..3 {
        fx.remove(Remote, &format!("d/f{i}.txt"));
    }
    let before = fx.snap_both();
    let r = fx.run(&["run", "bi", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(r.stderr.contains("--force-delete"), "{}", r.dump());
    assert!(r.stderr.contains('3'), "{}", r.dump());
    assert_eq!(fx.snap_both(), before, "nothing deleted");
    // A dry run shows the plan but stops the same way.
    let d = fx.run(&["run", "bi", "--json", "--dry-run"]);
    assert_eq!(d.code, 4, "{}", d.dump());
    assert_eq!(fx.snap_both(), before);

    let r = fx.run(&["run", "bi", "--json", "--force-delete"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        r.paths("delete_local"),
        strs(&["d/f0.txt", "d/f1.txt", "d/f2.txt"])
    );
    fx.assert_in_sync();

    // Exactly the limit passes.
    fx.remove(Remote, "d/f3.txt");
    fx.remove(Remote, "d/f4.txt");
    let r = fx.sync_settled("bi");
    assert_eq!(
        r.paths("delete_local"),
        strs(&["d/f3.txt", "d/f4.txt"]),
        "{}",
        r.dump()
    );
}

pub fn renamed_folder_is_one_move(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = 0");
    for i in 0..25 {
        fx.write(
            Local,
            &format!("photos/img{i:02}.jpg"),
            format!("jpeg {i}"),
            T0 + i,
        );
    }
    fx.write(Local, "photos/2024/x.jpg", "x", T0);
    fx.sync_settled("bi");

    fx.rename(Local, "photos", "pictures");
    let r = fx.sync_settled("bi");
    assert_eq!(
        r.actions(),
        vec![("move_remote".to_string(), "photos".to_string())],
        "{}",
        r.dump()
    );
    assert_eq!(r.records[0]["to"], "pictures");
    assert_eq!(r.count("bytes"), 0);
    assert_eq!(r.count("move_remote"), 1);
    assert_eq!(r.count("upload") + r.count("delete_remote"), 0);
    assert!(!fx.exists(Remote, "photos"));
    assert_eq!(fx.read(Remote, "pictures/img07.jpg"), "jpeg 7");
    fx.assert_in_sync();

    // The same on the remote side comes back as one local move.
    fx.rename(Remote, "pictures", "images");
    let r = fx.sync_settled("bi");
    assert_eq!(
        r.actions(),
        vec![("move_local".to_string(), "pictures".to_string())],
        "{}",
        r.dump()
    );
    assert_eq!(r.records[0]["to"], "images");
    assert_eq!(r.count("bytes"), 0);
    assert!(!fx.exists(Local, "pictures"));
    fx.assert_in_sync();
}

/// A log rotation renames files over synced ones (`mv app.log.1 app.log.2`): each becomes a
/// move onto the path it replaced, run from the far end of the chain, so only the new log is
/// sent; the version the rotation dropped goes to the remote trash, as an overwritten one does.
pub fn rotated_logs_are_moves_not_uploads(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "up", "mirror-upload", "delete_orphans = true");
    fx.write(Local, "logs/app.log", "three", T0 + 3);
    fx.write(Local, "logs/app.log.1", "two two", T0 + 2);
    fx.write(Local, "logs/app.log.2", "one one one", T0 + 1);
    let mut dates = vec![utc_date()];
    fx.sync_settled("up");

    fx.rename(Local, "logs/app.log.1", "logs/app.log.2");
    fx.rename(Local, "logs/app.log", "logs/app.log.1");
    fx.write(Local, "logs/app.log", "four", T0 + 4);
    let r = fx.sync_settled("up");
    dates.push(utc_date());
    let expected: Vec<(String, String)> = [
        ("move_remote", "logs/app.log.1"),
        ("move_remote", "logs/app.log"),
        ("upload", "logs/app.log"),
    ]
    .iter()
    .map(|(a, p)| (a.to_string(), p.to_string()))
    .collect();
    assert_eq!(r.actions(), expected, "{}", r.dump());
    assert_eq!(r.records[0]["to"], "logs/app.log.2");
    assert_eq!(r.records[1]["to"], "logs/app.log.1");
    assert_eq!(r.count("bytes"), 4, "{}", r.dump());
    assert_eq!(fx.read(Remote, "logs/app.log.2"), "two two");
    assert_eq!(fx.read(Remote, "logs/app.log.1"), "three");
    assert_eq!(fx.read(Remote, "logs/app.log"), "four");
    assert_eq!(
        trashed(&fx, Remote, &dates, "logs/app.log.2").as_deref(),
        Some("one one one")
    );
    fx.assert_in_sync();

    // With the trash off, the move renames straight over the file it replaces.
    fx.add_job(
        "up-notrash",
        "mirror-upload",
        "delete_orphans = true\ntrash = false",
    );
    fx.sync_settled("up-notrash");
    fx.rename(Local, "logs/app.log.1", "logs/app.log.2");
    let r = fx.sync_settled("up-notrash");
    assert_eq!(
        r.actions(),
        vec![("move_remote".to_string(), "logs/app.log.1".to_string())],
        "{}",
        r.dump()
    );
    assert_eq!(r.count("bytes"), 0);
    assert_eq!(fx.read(Remote, "logs/app.log.2"), "three");
    assert!(!fx.exists(Remote, "logs/app.log.1"));
    fx.assert_in_sync();
}

// ---------------------------------------------------------------------------------------------
// Emptied and missing roots
// ---------------------------------------------------------------------------------------------

fn seed_five(fx: &Fixture<'_>) {
    for i in 0..5 {
        fx.write_both(&format!("s{}/f{i}.txt", i % 2), format!("F{i}"), T0);
    }
}

fn empty_dir(p: &std::path::Path) {
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            std::fs::remove_dir_all(e).unwrap();
        } else {
            std::fs::remove_file(e).unwrap();
        }
    }
}

pub fn emptied_local_root_stops_bidirectional(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = \"100%\"");
    seed_five(&fx);
    fx.sync_settled("bi");
    empty_dir(&fx.local);
    // The reserved folder does not make a root "not empty".
    fx.write(Local, ".omnisync/trash/2001-01-01/old.txt", "old", T0);
    let before = fx.snap_both();
    let r = fx.run(&["run", "bi", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(r.stderr.contains("empty"), "{}", r.dump());
    assert!(r.stderr.contains("--force-delete"), "{}", r.dump());
    assert_eq!(fx.snap_both(), before, "nothing deleted remotely");

    // On purpose: --force-delete propagates the deletions.
    let r = fx.run(&["run", "bi", "--json", "--force-delete"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        r.count("delete_remote"),
        7,
        "5 files and 2 folders; {}",
        r.dump()
    );
    fx.assert_tree(Remote, &[]);
    fx.sync("bi").assert_noop();
}

pub fn missing_local_root_is_never_recreated(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    seed_five(&fx);
    fx.sync_settled("bi");
    std::fs::remove_dir_all(&fx.local).unwrap();
    let before = fx.snap(Remote);
    for extra in [None, Some("--force-delete")] {
        let mut args = vec!["run", "bi", "--json"];
        args.extend(extra);
        let r = fx.run(&args);
        assert_eq!(r.code, 4, "{}", r.dump());
        assert!(!fx.local.exists(), "local_path must not be recreated");
        assert_eq!(fx.snap(Remote), before, "nothing deleted remotely");
    }
    // A download-type job that synced before: the same.
    let mut fx2 = Fixture::new(b);
    fx2.add_job("dl", "download", "");
    std::fs::remove_dir_all(&fx2.local).unwrap();
    let r = fx2.run(&["run", "dl", "--json"]);
    assert_eq!(r.code, 0, "first run creates the local root: {}", r.dump());
    assert!(fx2.local.is_dir());
    std::fs::remove_dir_all(&fx2.local).unwrap();
    let r = fx2.run(&["run", "dl", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(!fx2.local.exists(), "local_path must not be recreated");
}

pub fn emptied_remote_is_fine_for_download(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "dl", "download", "");
    seed_five(&fx);
    fx.sync_settled("dl");
    empty_dir(&fx.root(Remote));
    let before = fx.snap(Local);
    let r = fx.sync_settled("dl");
    assert!(r.records.is_empty(), "{}", r.dump());
    assert_eq!(fx.snap(Local), before);
}

/// A missing remote root after a sync stops the run with exit 4 (taking precedence over exit 3).
pub fn missing_remote_root_stops_download(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "dl", "download", "");
    seed_five(&fx);
    fx.sync_settled("dl");
    let before = fx.snap(Local);
    std::fs::remove_dir_all(fx.root(Remote)).unwrap();
    let r = fx.run(&["run", "dl", "--json"]);
    std::fs::create_dir_all(fx.root(Remote)).unwrap();
    b.adopt(&fx.root(Remote));
    assert_eq!(r.code, 4, "{}", r.dump());
    assert_eq!(fx.snap(Local), before);
}

/// The same after the source was emptied by its owner (normal for an intake job): the job has
/// synced before, so a missing root is still exit 4 (SPEC "Emptied root").
pub fn missing_remote_root_after_source_emptied(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "dl", "download", "");
    seed_five(&fx);
    fx.sync_settled("dl");
    empty_dir(&fx.root(Remote));
    fx.sync_settled("dl");
    let before = fx.snap(Local);
    std::fs::remove_dir_all(fx.root(Remote)).unwrap();
    let r = fx.run(&["run", "dl", "--json"]);
    std::fs::create_dir_all(fx.root(Remote)).unwrap();
    b.adopt(&fx.root(Remote));
    assert_eq!(r.code, 4, "{}", r.dump());
    assert_eq!(fx.snap(Local), before);
}

pub fn emptied_remote_stops_mirror_with_delete_orphans(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "mi",
        "mirror",
        "delete_orphans = true\nmax_delete = \"100%\"",
    );
    seed_five(&fx);
    fx.sync_settled("mi");
    empty_dir(&fx.root(Remote));
    let before = fx.snap_both();
    let r = fx.run(&["run", "mi", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert_eq!(fx.snap_both(), before, "nothing deleted locally");
}

// ---------------------------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------------------------

/// Position of the first record matching.
fn pos(r: &RunOut, action: &str, path: &str) -> usize {
    r.records
        .iter()
        .position(|x| x["action"] == action && x["path"] == path)
        .unwrap_or_else(|| panic!("no {action} {path}; {}", r.dump()))
}

/// Is `name` `STEM.conflict-YYYYMMDD-HHMMSS[EXT]` with a stamp between `lo` and `hi`?
fn check_conflict_name(name: &str, stem: &str, ext: &str, lo: &str, hi: &str) {
    let prefix = format!("{stem}.conflict-");
    assert!(
        name.starts_with(&prefix) && name.ends_with(ext),
        "{name:?} is not {stem}.conflict-TS{ext}"
    );
    let ts = &name[prefix.len()..name.len() - ext.len()];
    assert_eq!(ts.len(), 15, "{name:?}");
    assert_eq!(&ts[8..9], "-", "{name:?}");
    assert!(
        ts.chars()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit()),
        "{name:?}"
    );
    assert!(
        lo <= ts && ts <= hi,
        "stamp {ts} not within the run ({lo}..{hi})"
    );
}

pub fn conflict_keep_both(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "bi", "bidirectional", "conflict = \"keep-both\"");
    // The stamp is the run's start in UTC whatever the local time zone.
    fx.env.push(("TZ".into(), TZ_EAST.into()));
    fx.write_both("doc.txt", "base", T0);
    fx.write_both("arch/a.tar.gz", "base-gz", T0);
    fx.write_both("Makefile", "base-mk", T0);
    fx.write_both(".bashrc", "base-rc", T0);
    fx.sync_settled("bi");

    for (p, l, r) in [
        ("doc.txt", "doc local", "doc remote!"),
        ("arch/a.tar.gz", "gz local", "gz remote!"),
        ("Makefile", "mk local", "mk remote!"),
        (".bashrc", "rc local", "rc remote!"),
    ] {
        fx.write(Local, p, l, T0 + 100);
        fx.write(Remote, p, r, T0 + 200);
    }
    let lo = utc_stamp();
    let r = fx.sync("bi");
    let hi = utc_stamp();
    assert_eq!(
        r.paths("conflict"),
        strs(&[".bashrc", "Makefile", "arch/a.tar.gz", "doc.txt"]),
        "{}",
        r.dump()
    );
    for (p, stem, ext, l, rv) in [
        ("doc.txt", "doc", ".txt", "doc local", "doc remote!"),
        (
            "arch/a.tar.gz",
            "arch/a.tar",
            ".gz",
            "gz local",
            "gz remote!",
        ),
        ("Makefile", "Makefile", "", "mk local", "mk remote!"),
        (".bashrc", ".bashrc", "", "rc local", "rc remote!"),
    ] {
        let rec = r.record("conflict", p);
        let to = rec["to"]
            .as_str()
            .unwrap_or_else(|| panic!("conflict without to: {rec}"));
        check_conflict_name(to, stem, ext, &lo, &hi);
        for side in [Local, Remote] {
            assert_eq!(fx.read(side, p), l, "{side:?} {p}: the local version stays");
            assert_eq!(
                fx.read(side, to),
                rv,
                "{side:?} {to}: the remote version beside it"
            );
        }
        // The conflict record comes before the transfers that resolve it.
        let c = pos(&r, "conflict", p);
        for (i, x) in r.records.iter().enumerate() {
            if x["path"] == p || x["path"] == to || x["to"] == to {
                assert!(
                    i >= c,
                    "record {x} before its conflict record; {}",
                    r.dump()
                );
            }
        }
    }
    assert!(r.count("errors") == 0);
    fx.assert_in_sync();
    fx.sync("bi").assert_noop();
}

/// A conflict record for `path`, then the transfer that resolves it.
#[track_caller]
fn assert_resolved(r: &RunOut, path: &str, transfer: &str) {
    assert!(
        pos(r, "conflict", path) < pos(r, transfer, path),
        "{}",
        r.dump()
    );
}

pub fn conflict_newer(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "bi", "bidirectional", "conflict = \"newer\"");
    fx.env.push(("TZ".into(), TZ_WEST.into()));
    fx.write_both("l-newer.txt", "base1", T0);
    fx.write_both("r-newer.txt", "base2", T0);
    // First run, different content at one path: a conflict too.
    fx.write(Local, "first.txt", "first local", T0 + 300);
    fx.write(Remote, "first.txt", "first remote", T0 + 100);
    let r = fx.sync_settled("bi");
    assert_resolved(&r, "first.txt", "upload");
    assert_eq!(fx.read(Remote, "first.txt"), "first local");

    fx.write(Local, "l-newer.txt", "local wins", T0 + 500);
    fx.write(Remote, "l-newer.txt", "remote loses", T0 + 400);
    fx.write(Local, "r-newer.txt", "local loses", T0 + 400);
    fx.write(Remote, "r-newer.txt", "remote wins", T0 + 500);
    let date = utc_date();
    let r = fx.sync_settled("bi");
    let dates = [date, utc_date()];
    assert_resolved(&r, "l-newer.txt", "upload");
    assert_resolved(&r, "r-newer.txt", "download");
    assert_eq!(fx.read(Remote, "l-newer.txt"), "local wins");
    assert_eq!(fx.read(Local, "r-newer.txt"), "remote wins");
    assert_eq!(
        trashed(&fx, Remote, &dates, "l-newer.txt").as_deref(),
        Some("remote loses")
    );
    assert_eq!(
        trashed(&fx, Local, &dates, "r-newer.txt").as_deref(),
        Some("local loses")
    );
    fx.assert_in_sync();
}

pub fn conflict_local_wins(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "conflict = \"local\"");
    fx.write_both("f.txt", "base", T0);
    fx.sync_settled("bi");
    fx.write(Local, "f.txt", "older local", T0 + 100);
    fx.write(Remote, "f.txt", "newer remote", T0 + 900);
    let date = utc_date();
    let r = fx.sync_settled("bi");
    let dates = [date, utc_date()];
    assert_resolved(&r, "f.txt", "upload");
    assert_eq!(fx.read(Remote, "f.txt"), "older local");
    assert_eq!(
        trashed(&fx, Remote, &dates, "f.txt").as_deref(),
        Some("newer remote")
    );
    fx.assert_in_sync();
}

pub fn conflict_remote_wins(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "conflict = \"remote\"");
    fx.write_both("f.txt", "base", T0);
    fx.sync_settled("bi");
    fx.write(Local, "f.txt", "newer local", T0 + 900);
    fx.write(Remote, "f.txt", "older remote", T0 + 100);
    let date = utc_date();
    let r = fx.sync_settled("bi");
    let dates = [date, utc_date()];
    assert_resolved(&r, "f.txt", "download");
    assert_eq!(fx.read(Local, "f.txt"), "older remote");
    assert_eq!(
        trashed(&fx, Local, &dates, "f.txt").as_deref(),
        Some("newer local")
    );
    fx.assert_in_sync();
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

pub fn filters_include_exclude(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "mu",
        "mirror-upload",
        r#"delete_orphans = true
max_delete = "100%"
include = ["*.txt", "docs/**"]
exclude = ["*.tmp", "skip*", "re:^secret/"]"#,
    );
    fx.write(Local, "a.txt", "A", T0);
    fx.write(Local, "deep/er/z.txt", "Z", T0);
    fx.write(Local, "b.pdf", "not included", T0);
    fx.write(Local, "docs/x.pdf", "X", T0);
    fx.write(Local, "docs/y.tmp", "excluded beats include", T0);
    fx.write(Local, "c.tmp", "excluded", T0);
    fx.write(Local, "skipme.txt", "excluded beats include", T0);
    fx.write(Local, "secret/s.txt", "regex excluded", T0);
    fx.write(
        Local,
        "notsecret/secret/s.txt",
        "regex anchored at the root",
        T0,
    );
    // Remote-only: excluded or not included files are invisible, never deleted.
    fx.write(Remote, "r.pdf", "remote not included", T0);
    fx.write(Remote, "old.tmp", "remote excluded", T0);
    fx.write(Remote, "secret/keep.txt", "remote regex excluded", T0);
    fx.write(Remote, "orphan.txt", "included orphan", T0);

    let r = fx.sync_settled("mu");
    assert_eq!(
        r.paths("upload"),
        strs(&[
            "a.txt",
            "deep/er/z.txt",
            "docs/x.pdf",
            "notsecret/secret/s.txt"
        ]),
        "{}",
        r.dump()
    );
    assert_eq!(
        r.paths("delete_remote"),
        strs(&["orphan.txt"]),
        "{}",
        r.dump()
    );
    for p in all_paths(&r) {
        for bad in ["b.pdf", "y.tmp", "c.tmp", "skipme", "r.pdf", "old.tmp"] {
            assert!(!p.contains(bad), "{p} mentioned; {}", r.dump());
        }
        assert!(!p.starts_with("secret"), "{p} mentioned; {}", r.dump());
    }
    let v = fx.view(Remote);
    for p in [
        "b.pdf",
        "docs/y.tmp",
        "c.tmp",
        "skipme.txt",
        "secret/s.txt",
        "orphan.txt",
    ] {
        assert!(!v.contains_key(p), "{p} on the remote: {v:?}");
    }
    for (p, c) in [
        ("r.pdf", "remote not included"),
        ("old.tmp", "remote excluded"),
        ("secret/keep.txt", "remote regex excluded"),
        ("a.txt", "A"),
        ("docs/x.pdf", "X"),
    ] {
        assert_eq!(fx.read(Remote, p), c);
    }

    // Changing or deleting an excluded file locally does nothing.
    fx.write(Local, "c.tmp", "changed", T0 + 9);
    fx.remove(Local, "b.pdf");
    let r = fx.sync_settled("mu");
    assert!(r.records.is_empty(), "{}", r.dump());
}

pub fn filters_regex_download(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "dl",
        "mirror",
        r#"delete_orphans = true
max_delete = "100%"
exclude = ["re:^draft-.*\\.docx$", "build/**", "~$*", "logs/*.log", "**/cache/**"]"#,
    );
    fx.write(Remote, "draft-1.docx", "excluded", T0);
    fx.write(
        Remote,
        "sub/draft-1.docx",
        "regex searches the whole path; ^ anchors it",
        T0,
    );
    fx.write(Remote, "final.docx", "F", T0);
    fx.write(Remote, "build/out/x.o", "excluded", T0);
    fx.write(Remote, "~$lock.docx", "excluded", T0);
    fx.write(Local, "build/local.o", "local excluded, kept", T0);
    fx.write(Local, "draft-2.docx", "local excluded, kept", T0);
    // `*` stays within one segment; `**/` matches zero or more folders.
    fx.write(Remote, "logs/a.log", "excluded", T0);
    fx.write(
        Remote,
        "logs/old/b.log",
        "not excluded: * is one segment",
        T0,
    );
    fx.write(Remote, "cache/c1", "excluded", T0);
    fx.write(Remote, "x/y/cache/c2", "excluded", T0);
    fx.write(Remote, "x/cachet", "not excluded", T0);
    let r = fx.sync_settled("dl");
    assert_eq!(
        r.paths("download"),
        strs(&[
            "final.docx",
            "logs/old/b.log",
            "sub/draft-1.docx",
            "x/cachet"
        ]),
        "{}",
        r.dump()
    );
    assert!(r.of("delete_local").is_empty(), "{}", r.dump());
    let v = fx.view(Local);
    for p in [
        "logs/a.log",
        "cache/c1",
        "x/y/cache/c2",
        "build/out/x.o",
        "~$lock.docx",
    ] {
        assert!(!v.contains_key(p), "{p} was downloaded: {v:?}");
    }
    let v: Vec<(String, Option<String>)> = v
        .into_iter()
        .filter(|(p, _)| {
            ![
                "logs",
                "logs/old",
                "x",
                "x/y",
                "x/y/cache",
                "cache",
                "build/out",
            ]
            .contains(&p.as_str())
        })
        .collect();
    let want: Vec<(String, Option<String>)> = tree(&[
        ("build", None),
        ("build/local.o", Some("local excluded, kept")),
        ("draft-2.docx", Some("local excluded, kept")),
        ("final.docx", Some("F")),
        ("logs/old/b.log", Some("not excluded: * is one segment")),
        ("sub", None),
        (
            "sub/draft-1.docx",
            Some("regex searches the whole path; ^ anchors it"),
        ),
        ("x/cachet", Some("not excluded")),
    ])
    .into_iter()
    .collect();
    assert_eq!(v, want);
}

// ---------------------------------------------------------------------------------------------
// Names and special entries
// ---------------------------------------------------------------------------------------------

pub fn unicode_long_and_empty_names(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    let nfc = "caf\u{e9}.txt";
    let nfd = "cafe\u{301}.txt";
    let long_ascii = format!("{}.txt", "l".repeat(246));
    let long_multi = format!("{}.txt", "\u{e9}".repeat(123));
    assert_eq!(long_ascii.len(), 250);
    assert_eq!(long_multi.len(), 250);
    let exact = b.byte_exact_names();
    if exact {
        fx.write(Local, nfc, "NFC local", T0);
        fx.write(Remote, nfd, "NFD remote", T0);
        fx.write(Local, &format!("dir-{nfd}/inner.txt"), "in NFD folder", T0);
    } else {
        eprintln!(
            "{}: names are not byte-exact; NFC/NFD sub-case skipped",
            b.name()
        );
    }
    fx.write(Local, &long_ascii, "long ascii", T0);
    fx.write(Remote, &format!("deep/{long_multi}"), "long multibyte", T0);
    fx.write(Local, "empty.dat", "", T0);
    fx.write(Remote, "sub/empty-remote.dat", "", T0);
    fx.mkdir(Local, "e1");
    fx.mkdir(Local, "deep2/e2/e3");
    fx.mkdir(Remote, "re1/re2");

    let r = fx.sync_settled("bi");
    assert_eq!(r.count("errors"), 0, "{}", r.dump());
    assert_eq!(r.record("upload", "empty.dat")["bytes"], 0);
    assert_eq!(r.record("download", "sub/empty-remote.dat")["bytes"], 0);
    assert_eq!(r.record("upload", &long_ascii)["bytes"], 10);
    fx.assert_in_sync();
    for side in [Local, Remote] {
        if exact {
            assert_eq!(fx.read(side, nfc), "NFC local");
            assert_eq!(fx.read(side, nfd), "NFD remote");
            assert_eq!(
                fx.read(side, &format!("dir-{nfd}/inner.txt")),
                "in NFD folder"
            );
            assert!(!fx.exists(side, &format!("dir-{nfc}")));
        }
        assert_eq!(
            fx.read(side, &format!("deep/{long_multi}")),
            "long multibyte"
        );
        assert_eq!(fx.read(side, "empty.dat"), "");
        assert!(fx.path(side, "deep2/e2/e3").is_dir());
        assert!(fx.path(side, "e1").is_dir());
        assert!(fx.path(side, "re1/re2").is_dir());
    }
    if exact {
        let names: Vec<String> = std::fs::read_dir(fx.root(Remote))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("caf"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    // Changes to long names travel (their partial name is shortened).
    fx.write(Local, &long_ascii, "long ascii, changed", T0 + 10);
    fx.write(
        Remote,
        &format!("deep/{long_multi}"),
        "long multibyte, changed",
        T0 + 10,
    );
    if exact {
        fx.write(Remote, nfc, "NFC remote change", T0 + 10);
    }
    let r = fx.sync_settled("bi");
    assert_eq!(r.count("errors"), 0, "{}", r.dump());
    assert_eq!(fx.read(Remote, &long_ascii), "long ascii, changed");
    assert_eq!(
        fx.read(Local, &format!("deep/{long_multi}")),
        "long multibyte, changed"
    );
    if exact {
        assert_eq!(fx.read(Local, nfc), "NFC remote change");
        assert_eq!(fx.read(Local, nfd), "NFD remote");
    }
    fx.assert_in_sync();
}

pub fn symlinks_are_skipped_never_followed(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    let outside = fx.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "outside the root").unwrap();
    fx.write(Local, "a.txt", "A", T0);
    fx.write(Local, "dir/b.txt", "B", T0);
    fx.symlink(Local, "link.txt", "a.txt");
    fx.symlink(Local, "dirlink", "dir");
    fx.symlink(Local, "out", outside.to_str().unwrap());
    fx.symlink(Local, "dangling", "nowhere");
    let remote_links = b.remote_symlinks();
    if remote_links {
        fx.write(Remote, "r.txt", "R", T0);
        fx.symlink(Remote, "rlink", "r.txt");
        fx.symlink(Remote, "rout", outside.to_str().unwrap());
    }
    let r = fx.sync("bi");
    let mut want_skips = vec!["dangling", "dirlink", "link.txt", "out"];
    if remote_links {
        want_skips.extend(["rlink", "rout"]);
    }
    assert_eq!(r.paths("skip"), strs(&want_skips), "{}", r.dump());
    assert_eq!(r.code, 0);
    assert_eq!(r.count("errors"), 0);
    for p in all_paths(&r) {
        assert!(
            !p.starts_with("dirlink/") && !p.starts_with("out/"),
            "followed: {}",
            r.dump()
        );
    }
    let rv = fx.view(Remote);
    for p in [
        "link.txt",
        "dirlink",
        "out",
        "dangling",
        "dirlink/b.txt",
        "out/secret.txt",
    ] {
        assert!(!rv.contains_key(p), "{p} reached the remote: {rv:?}");
    }
    assert_eq!(fx.read(Remote, "dir/b.txt"), "B");
    if remote_links {
        let lv = fx.view(Local);
        for p in ["rlink", "rout", "rout/secret.txt"] {
            assert!(!lv.contains_key(p), "{p} reached local: {lv:?}");
        }
        assert_eq!(fx.read(Local, "r.txt"), "R");
    }
    // The links themselves are untouched, and the outside file too.
    assert_eq!(
        std::fs::read_link(fx.path(Local, "link.txt")).unwrap(),
        std::path::Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "outside the root"
    );
    // Later runs only skip them again.
    let r = fx.sync("bi");
    assert_no_changes(&r);
    assert_eq!(r.paths("skip"), strs(&want_skips), "{}", r.dump());
}

// ---------------------------------------------------------------------------------------------
// Unreadable files, stale partials
// ---------------------------------------------------------------------------------------------

fn set_mode(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn unreadable_file_is_an_error_rest_syncs(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "up", "upload", "");
    fx.write(Local, "good1.txt", "G1", T0);
    fx.write(Local, "bad.txt", "secret", T0);
    fx.write(Local, "lockeddir/inner.txt", "I", T0);
    fx.write(Local, "sub/good2.txt", "G2", T0);
    if !unprivileged(&mut fx) {
        return;
    }
    set_mode(&fx.path(Local, "bad.txt"), 0o000);
    set_mode(&fx.path(Local, "lockeddir"), 0o000);
    let r = fx.run(&["run", "up", "--json"]);
    // Permissions back so the temp folder can be cleaned and the next run reads them.
    set_mode(&fx.path(Local, "bad.txt"), 0o644);
    set_mode(&fx.path(Local, "lockeddir"), 0o755);
    assert_eq!(r.code, 1, "{}", r.dump());
    let errors = r.paths("error");
    assert!(errors.contains(&"bad.txt".to_string()), "{}", r.dump());
    assert!(errors.contains(&"lockeddir".to_string()), "{}", r.dump());
    assert_eq!(r.count("errors") as usize, errors.len());
    assert_eq!(
        r.paths("upload"),
        strs(&["good1.txt", "sub/good2.txt"]),
        "{}",
        r.dump()
    );
    assert!(!fx.exists(Remote, "bad.txt"));
    assert!(!fx.exists(Remote, "lockeddir/inner.txt"));
    assert_eq!(fx.read(Remote, "sub/good2.txt"), "G2");

    // Readable again: the next run sends what failed.
    let r = fx.sync_settled("up");
    assert_eq!(
        r.paths("upload"),
        strs(&["bad.txt", "lockeddir/inner.txt"]),
        "{}",
        r.dump()
    );
    fx.assert_in_sync();
}

pub fn stale_partials_are_cleaned_and_never_synced(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    fx.write(Local, "a.txt", "A", T0);
    fx.write(Local, "a.txt.omnisync-partial", "half of A", T0);
    fx.write(Local, "d/x.bin.omnisync-partial", "junk", T0);
    fx.write(Remote, "r.txt", "R", T0);
    fx.write(Remote, "r.txt.omnisync-partial", "half of R", T0);
    fx.write(Remote, "e/y.omnisync-partial", "junk", T0);
    // `run` asserts that no partial is left after the run.
    let r = fx.sync_settled("bi");
    for p in all_paths(&r) {
        assert!(!p.contains("omnisync-partial"), "{}", r.dump());
    }
    fx.assert_in_sync();
    assert_eq!(fx.read(Local, "r.txt"), "R");
    assert_eq!(fx.read(Remote, "a.txt"), "A");
}

// ---------------------------------------------------------------------------------------------
// More edge cases of SPEC "Details that settle edge cases"
// ---------------------------------------------------------------------------------------------

/// Run the binary as `nobody` over a fixture it owns, when running as root (root reads
/// anything). Returns false (after printing why) when the backend cannot serve such a run.
fn unprivileged(fx: &mut Fixture<'_>) -> bool {
    if !is_root() {
        return true;
    }
    let nobody = 65534;
    if let Err(why) = fx.backend.allow_client_uid(nobody) {
        eprintln!(
            "SKIPPED permission case on {}: running as root, and {why}",
            fx.backend.name()
        );
        return false;
    }
    lchown_tree(fx.dir.path(), nobody);
    fx.run_as = Some(nobody);
    true
}

/// A folder whose listing fails is not judged: its synced contents are not deleted on the
/// other side, even in the modes that propagate deletions.
pub fn unreadable_folder_deletes_nothing(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "bi", "bidirectional", "");
    fx.write_both("locked/inner.txt", "I", T0);
    fx.write_both("locked/deeper/x.txt", "X", T0);
    fx.write_both("ok.txt", "OK", T0);
    fx.sync_settled("bi");
    if !unprivileged(&mut fx) {
        return;
    }
    fx.write(Local, "new.txt", "N", T0);
    set_mode(&fx.path(Local, "locked"), 0o000);
    let before = fx.snap(Remote);
    let r = fx.run(&["run", "bi", "--json"]);
    set_mode(&fx.path(Local, "locked"), 0o755);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.paths("error"), strs(&["locked"]), "{}", r.dump());
    assert!(r.of("delete_remote").is_empty(), "{}", r.dump());
    assert_eq!(r.paths("upload"), strs(&["new.txt"]), "{}", r.dump());
    let after = fx.snap(Remote);
    for p in ["locked/inner.txt", "locked/deeper/x.txt"] {
        assert_eq!(after.get(p), before.get(p), "{p} touched");
    }
    let r = fx.sync_settled("bi");
    assert!(r.records.is_empty(), "{}", r.dump());
    fx.assert_in_sync();
}

/// A file on one side where the other has a folder, neither matching the base: an error
/// record (exit 1), never a silent overwrite; the rest syncs.
pub fn type_clash_is_an_error(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    fx.write(Local, "x", "a file", T0);
    fx.write(Remote, "x/inside.txt", "in a folder", T0);
    fx.write(Local, "fine.txt", "F", T0);
    let r = fx.run(&["run", "bi", "--json"]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert!(r.paths("error").contains(&"x".to_string()), "{}", r.dump());
    assert_eq!(fx.read(Local, "x"), "a file");
    assert_eq!(fx.read(Remote, "x/inside.txt"), "in a folder");
    assert_eq!(fx.read(Remote, "fine.txt"), "F");
}

/// A one-sided type change after a base is an ordinary change.
pub fn one_sided_type_change_travels(b: &dyn Backend) {
    // A replaced file counts as a deletion for max_delete: allow them all here.
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = \"100%\"");
    fx.write_both("x", "was a file", T0);
    fx.write_both("y/inner.txt", "was a folder", T0);
    fx.write_both("z.txt", "Z", T0);
    fx.sync_settled("bi");
    fx.remove(Local, "x");
    fx.write(Local, "x/now.txt", "now a folder", T0 + 10);
    fx.remove(Remote, "y");
    fx.write(Remote, "y", "now a file", T0 + 10);
    let r = fx.sync_settled("bi");
    assert_eq!(r.count("errors"), 0, "{}", r.dump());
    fx.assert_tree(
        Local,
        &[
            ("x", None),
            ("x/now.txt", Some("now a folder")),
            ("y", Some("now a file")),
            ("z.txt", Some("Z")),
        ],
    );
    fx.assert_in_sync();
}

/// Deleted on one side, changed on the other: the change wins (nothing is lost).
pub fn delete_versus_change_keeps_the_change(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    fx.write_both("a.txt", "A", T0);
    fx.write_both("b.txt", "B", T0);
    fx.write_both("c.txt", "C", T0);
    fx.sync_settled("bi");
    fx.remove(Local, "a.txt");
    fx.write(Remote, "a.txt", "A changed remotely", T0 + 10);
    fx.remove(Remote, "b.txt");
    fx.write(Local, "b.txt", "B changed locally", T0 + 10);
    // The same change made on both sides is no conflict.
    fx.write_both("c.txt", "C changed on both", T0 + 10);
    let r = fx.sync_settled("bi");
    assert!(
        r.of("delete_local").is_empty() && r.of("delete_remote").is_empty(),
        "{}",
        r.dump()
    );
    assert!(r.of("conflict").is_empty(), "{}", r.dump());
    assert_eq!(r.paths("download"), strs(&["a.txt"]), "{}", r.dump());
    assert_eq!(r.paths("upload"), strs(&["b.txt"]), "{}", r.dump());
    fx.assert_tree(
        Local,
        &[
            ("a.txt", Some("A changed remotely")),
            ("b.txt", Some("B changed locally")),
            ("c.txt", Some("C changed on both")),
        ],
    );
    fx.assert_in_sync();
}

/// A folder whose deletion would take excluded files with it stays; its synced files go.
pub fn folder_with_excluded_files_is_kept(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "mu",
        "mirror-upload",
        "delete_orphans = true\nmax_delete = \"100%\"\nexclude = [\"*.tmp\"]",
    );
    fx.write(Local, "keep.txt", "K", T0);
    fx.write(Remote, "old/a.txt", "A", T0);
    fx.write(Remote, "old/sub/b.txt", "B", T0);
    fx.write(Remote, "old/sub/work.tmp", "excluded", T0);
    fx.write(Remote, "gone/c.txt", "C", T0);
    let r = fx.run(&["run", "mu", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        r.paths("delete_remote")
            .into_iter()
            .filter(|p| p.ends_with(".txt"))
            .collect::<Vec<_>>(),
        strs(&["gone/c.txt", "old/a.txt", "old/sub/b.txt"]),
        "{}",
        r.dump()
    );
    fx.assert_tree(
        Remote,
        &[
            ("keep.txt", Some("K")),
            ("old", None),
            ("old/sub", None),
            ("old/sub/work.tmp", Some("excluded")),
        ],
    );
    let r = fx.sync("mu");
    assert_no_changes(&r);
}

/// On a first run a percentage does not apply but an absolute count does.
pub fn max_delete_on_first_run(b: &dyn Backend) {
    let mut fx = Fixture::with_job(
        b,
        "pct",
        "mirror-upload",
        "delete_orphans = true\nmax_delete = \"10%\"",
    );
    fx.add_job(
        "cnt",
        "mirror-upload",
        "delete_orphans = true\nmax_delete = 2",
    );
    fx.write(Local, "a.txt", "A", T0);
    for i in 0..5 {
        fx.write(Remote, &format!("orphan{i}.txt"), "O", T0);
    }
    let before = fx.snap_both();
    let r = fx.run(&["run", "cnt", "--json"]);
    assert_eq!(
        r.code,
        4,
        "an absolute count applies on a first run: {}",
        r.dump()
    );
    assert!(r.stderr.contains("--force-delete"), "{}", r.dump());
    assert_eq!(fx.snap_both(), before);
    let r = fx.run(&["run", "pct", "--json"]);
    assert_eq!(
        r.code,
        0,
        "a percentage does not apply on a first run: {}",
        r.dump()
    );
    assert_eq!(r.count("delete_remote"), 5);
    fx.assert_tree(Remote, &[("a.txt", Some("A"))]);
}

/// "Emptied" is judged after filters: a root holding only excluded files is empty.
pub fn emptied_root_is_judged_after_filters(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "bi",
        "bidirectional",
        "exclude = [\"*.tmp\"]\nmax_delete = \"100%\"",
    );
    seed_five(&fx);
    fx.sync_settled("bi");
    empty_dir(&fx.local);
    fx.write(Local, "scratch.tmp", "junk", T0);
    let before = fx.snap_both();
    let r = fx.run(&["run", "bi", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert_eq!(fx.snap_both(), before);
}

/// mtimes are compared with `mtime_tolerance`; `secure` compares content.
pub fn compare_fast_tolerance_and_secure(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "fast", "bidirectional", "");
    // Same size, mtimes 0.4 s apart: equal under the default 1 s tolerance, adopted.
    fx.write(Local, "near.txt", "12345", T0);
    fx.write(Remote, "near.txt", "12345", T0);
    filetime::set_file_mtime(
        fx.path(Remote, "near.txt"),
        filetime::FileTime::from_unix_time(T0, 400_000_000),
    )
    .unwrap();
    // Same size and mtime, different content: `fast` cannot tell, `secure` can.
    fx.write(Local, "same-meta.txt", "local", T0);
    fx.write(Remote, "same-meta.txt", "remot", T0);
    let r = fx.run(&["run", "fast", "--json", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(r.records.is_empty(), "fast: both adopted; {}", r.dump());

    fx.add_job(
        "secure",
        "bidirectional",
        "compare = \"secure\"\nconflict = \"keep-both\"",
    );
    let r = fx.run(&["run", "secure", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        r.paths("conflict"),
        strs(&["same-meta.txt"]),
        "{}",
        r.dump()
    );
    assert!(
        !all_paths(&r).contains(&"near.txt".to_string()),
        "{}",
        r.dump()
    );
    fx.sync("secure").assert_noop();

    // A later change that keeps size and mtime is still seen in secure mode.
    fx.write(Remote, "near.txt", "54321", T0);
    let r = fx.sync_settled("secure");
    assert_eq!(r.paths("download"), strs(&["near.txt"]), "{}", r.dump());
    assert_eq!(fx.read(Local, "near.txt"), "54321");
}

/// Files larger than a chunk arrive whole (several checkpoints), in both directions.
pub fn multi_chunk_transfers(b: &dyn Backend) {
    let fx = Fixture::with_job(
        b,
        "bi",
        "bidirectional",
        "chunk_size = \"64KiB\"\ncompare = \"secure\"",
    );
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big2: Vec<u8> = big.iter().rev().copied().collect();
    fx.write(Local, "up.bin", &big, T0);
    fx.write(Remote, "down.bin", &big2, T0);
    let r = fx.sync_settled("bi");
    assert_eq!(r.record("upload", "up.bin")["bytes"], 300_000);
    assert_eq!(r.record("download", "down.bin")["bytes"], 300_000);
    assert_eq!(std::fs::read(fx.path(Remote, "up.bin")).unwrap(), big);
    assert_eq!(std::fs::read(fx.path(Local, "down.bin")).unwrap(), big2);
    fx.assert_in_sync();
}

/// keep-both: a taken copy name gets `-2`; a name that would exceed 255 bytes has its stem
/// shortened on a character boundary.
pub fn keep_both_collisions_and_long_names(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "conflict = \"keep-both\"");
    let long = format!("{}.txt", "\u{e9}".repeat(123));
    fx.write_both("doc.txt", "base", T0);
    fx.write_both(&long, "base", T0);
    // Occupy the copy names of the next seconds.
    let now = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    for s in 0..20 {
        let ts = (now + time::Duration::seconds(s)).format(&f).unwrap();
        fx.write_both(&format!("doc.conflict-{ts}.txt"), "occupied", T0);
    }
    fx.sync_settled("bi");
    fx.write(Local, "doc.txt", "doc local", T0 + 100);
    fx.write(Remote, "doc.txt", "doc remote!", T0 + 200);
    fx.write(Local, &long, "long local", T0 + 100);
    fx.write(Remote, &long, "long remote!", T0 + 200);
    let r = fx.sync("bi");
    let to = r.record("conflict", "doc.txt")["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        to.starts_with("doc.conflict-") && to.ends_with("-2.txt"),
        "{to}; {}",
        r.dump()
    );
    for side in [Local, Remote] {
        assert_eq!(fx.read(side, &to), "doc remote!");
        assert_eq!(fx.read(side, "doc.txt"), "doc local");
    }
    let occupied = fx
        .view(Local)
        .into_iter()
        .filter(|(_, v)| v.as_deref() == Some("occupied"))
        .count();
    assert_eq!(occupied, 20, "existing files are never overwritten");

    let to = r.record("conflict", &long)["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(to.len() <= 255, "{} bytes: {to}", to.len());
    assert!(to.contains(".conflict-") && to.ends_with(".txt"), "{to}");
    assert!(to.starts_with('\u{e9}'), "{to}");
    for side in [Local, Remote] {
        assert_eq!(fx.read(side, &to), "long remote!");
        assert_eq!(fx.read(side, &long), "long local");
    }
    fx.assert_in_sync();
    fx.sync("bi").assert_noop();
}

/// Dated trash folders older than `trash_retention_days` are pruned at the end of a run.
pub fn old_trash_is_pruned(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "trash_retention_days = 7");
    let today = utc_date();
    for side in [Local, Remote] {
        fx.write(side, ".omnisync/trash/2001-01-01/old.txt", "old", T0);
        fx.write(side, ".omnisync/trash/2001-01-01/d/older.txt", "old", T0);
        fx.write(
            side,
            &format!(".omnisync/trash/{today}/recent.txt"),
            "recent",
            T0,
        );
    }
    fx.write(Local, "a.txt", "A", T0);
    fx.sync_settled("bi");
    for side in [Local, Remote] {
        assert!(
            !fx.exists(side, ".omnisync/trash/2001-01-01"),
            "{side:?}: {:?}",
            fx.snap(side)
        );
        assert!(
            fx.exists(side, &format!(".omnisync/trash/{today}/recent.txt")),
            "{side:?}"
        );
    }
}

/// Names with spaces and punctuation, dotfiles, and names that differ only in case.
pub fn odd_names(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "");
    let names = [
        "with space.txt",
        "per%25cent #hash [x] {y} (z).txt",
        "-leading-dash",
        ".hidden",
        "tab\there.txt",
        "back\\slash.txt",
        "quote\"s'.txt",
        "\u{1F600} emoji.txt",
        "trailing dot.",
        "trailing space ",
    ];
    for (i, n) in names.iter().enumerate() {
        let side = if i % 2 == 0 { Local } else { Remote };
        fx.write(side, &format!("d {i}/{n}"), format!("content {i}"), T0);
    }
    if b.byte_exact_names() {
        fx.write(Local, "Case.txt", "upper", T0);
        fx.write(Local, "case.txt", "lower", T0);
    }
    let r = fx.sync_settled("bi");
    assert_eq!(r.count("errors"), 0, "{}", r.dump());
    for (i, n) in names.iter().enumerate() {
        for side in [Local, Remote] {
            assert_eq!(
                fx.read(side, &format!("d {i}/{n}")),
                format!("content {i}"),
                "{n:?}"
            );
        }
    }
    fx.assert_in_sync();
}

/// `run --all --parallel` runs every enabled job.
pub fn run_all_parallel(b: &dyn Backend) {
    let mut fx = Fixture::new(b);
    // Three download jobs from one remote (disjoint by filters) into their own folders.
    let jobs: Vec<String> = (0..3)
        .map(|i| {
            let local = fx.dir.path().join(format!("l{i}"));
            b.job_toml(
                &format!("job{i}"),
                "download",
                &format!(
                    "local_path = {}\ninclude = [\"j{i}-*\"]\n",
                    toml_str(local.to_str().unwrap())
                ),
            )
        })
        .collect();
    fx.set_config(&format!("{}\n{}", fx.agent_toml(), jobs.join("\n")));
    for i in 0..3 {
        fx.write(Remote, &format!("j{i}-file.txt"), format!("{i}"), T0);
    }
    let r = fx.run(&["run", "--all", "--parallel", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let summaries = r
        .stdout
        .lines()
        .filter(|l| l.contains("\"summary\""))
        .count();
    assert_eq!(summaries, 3, "{}", r.dump());
    assert_eq!(r.of("download").len(), 3, "{}", r.dump());
    for i in 0..3 {
        fx.local = fx.dir.path().join(format!("l{i}"));
        fx.assert_tree(Local, &[(&format!("j{i}-file.txt"), Some(&format!("{i}")))]);
    }
}

/// Filters make a path invisible to a job: it does not delete the partial file of a path it
/// excludes (another job on the same remote folder may be writing it right now).
pub fn partials_of_excluded_paths_are_left_alone(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "mine", "upload", "include = [\"mine-*\"]");
    fx.write(Local, "mine-a.txt", "A", T0);
    fx.write(Remote, "theirs.bin.omnisync-partial", "in flight", T0);
    fx.write(Remote, "d/theirs2.bin.omnisync-partial", "in flight", T0);
    let r = fx.run_unchecked(&["run", "mine", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(fx.read(Remote, "mine-a.txt"), "A");
    assert_eq!(fx.read(Remote, "theirs.bin.omnisync-partial"), "in flight");
    assert_eq!(
        fx.read(Remote, "d/theirs2.bin.omnisync-partial"),
        "in flight"
    );
}

/// The remote side emptied under a bidirectional job: nothing is deleted locally.
pub fn emptied_remote_root_stops_bidirectional(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = \"100%\"");
    seed_five(&fx);
    fx.sync_settled("bi");
    empty_dir(&fx.root(Remote));
    let before = fx.snap_both();
    let r = fx.run(&["run", "bi", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(r.stderr.contains("remote root is empty"), "{}", r.dump());
    assert_eq!(fx.snap_both(), before, "nothing deleted locally");
}

/// A root that is not a folder, or cannot be read, stops a job that synced before (exit 4).
pub fn unusable_local_root_stops_the_run(b: &dyn Backend) {
    let mut fx = Fixture::with_job(b, "bi", "bidirectional", "");
    seed_five(&fx);
    fx.sync_settled("bi");
    let remote_before = fx.snap(Remote);

    let saved = fx.dir.path().join("saved-local");
    std::fs::rename(&fx.local, &saved).unwrap();
    std::fs::write(&fx.local, "a file where the folder was").unwrap();
    let r = fx.run(&["run", "bi", "--json", "--force-delete"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(r.stderr.contains("not a directory"), "{}", r.dump());
    assert_eq!(fx.snap(Remote), remote_before);
    std::fs::remove_file(&fx.local).unwrap();
    std::fs::rename(&saved, &fx.local).unwrap();

    if !unprivileged(&mut fx) {
        return;
    }
    set_mode(&fx.local, 0o000);
    let r = fx.run(&["run", "bi", "--json"]);
    set_mode(&fx.local, 0o755);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert_eq!(fx.snap(Remote), remote_before);
    fx.sync("bi").assert_noop();
}

/// "Synced before" is about the job, not about files: a download job whose first run only
/// created folders must not silently recreate a missing local_path either.
pub fn missing_local_root_after_folders_only_sync(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "dl", "download", "");
    fx.mkdir(Remote, "inbox");
    let r = fx.sync_settled("dl");
    assert_eq!(r.paths("mkdir_local"), strs(&["inbox"]), "{}", r.dump());
    std::fs::remove_dir_all(&fx.local).unwrap();
    let r = fx.run(&["run", "dl", "--json"]);
    assert_eq!(r.code, 4, "{}", r.dump());
    assert!(!fx.local.exists(), "local_path was recreated silently");
}

/// A path trashed as a file and later, the same day, as a folder's content: the trash must
/// still take it (SPEC: deleted files go to trash, never vanish, and a deletion never fails
/// because of what the trash already holds).
pub fn trash_after_a_file_became_a_folder_the_same_day(b: &dyn Backend) {
    let fx = Fixture::with_job(b, "bi", "bidirectional", "max_delete = \"100%\"");
    fx.write_both("x", "file x", T0);
    fx.write_both("keep.txt", "K", T0);
    fx.sync_settled("bi");
    fx.remove(Remote, "x");
    let date = utc_date();
    fx.sync_settled("bi"); // local x → trash/DATE/x (a file)
    fx.write(Remote, "x/y", "y in folder", T0 + 5);
    fx.sync_settled("bi");
    fx.remove(Remote, "x");
    let r = fx.run(&["run", "bi", "--json"]); // local x/y → trash/DATE/x/y: x is a file there
    let dates = [date, utc_date()];
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(!fx.exists(Local, "x"), "{}", r.dump());
    let trashed: Vec<String> = dates
        .iter()
        .flat_map(|d| {
            synced_view(&snapshot(&fx.trash(Local, d)))
                .into_values()
                .flatten()
        })
        .collect();
    assert!(trashed.contains(&"file x".to_string()), "{trashed:?}");
    assert!(trashed.contains(&"y in folder".to_string()), "{trashed:?}");
}

// ---------------------------------------------------------------------------------------------
// The suite, once per backend
// ---------------------------------------------------------------------------------------------

/// Every scenario, written once: `all_scenarios!(tag, backend_expr)` makes one `#[test]` per
/// scenario in the calling module, each with a fresh backend from `backend_expr`.
///
/// An entry may carry attributes for one backend only, `#[sftp(ignore = "BUG(sftp): …")] name`
/// (the tag is the module's first argument), or for every backend, `#[all(ignore = "…")] name`.
macro_rules! all_scenarios {
    ($tag:ident, $backend:expr) => {
        scenario_tests!($tag, $backend;
            download_mode,
            upload_mode,
            bidirectional_mode,
            mirror_mode,
            mirror_keeps_orphans_without_delete_orphans,
            mirror_upload_mode,
            dry_run_changes_nothing,
            dry_run_first_run_creates_nothing,
            trash_keeps_overwritten_and_deleted_files,
            trash_off_deletes_for_good,
            max_delete_percent,
            max_delete_count,
            renamed_folder_is_one_move,
            rotated_logs_are_moves_not_uploads,
            emptied_local_root_stops_bidirectional,
            missing_local_root_is_never_recreated,
            emptied_remote_is_fine_for_download,
            missing_remote_root_stops_download,
            missing_remote_root_after_source_emptied,
            emptied_remote_stops_mirror_with_delete_orphans,
            conflict_keep_both,
            conflict_newer,
            conflict_local_wins,
            conflict_remote_wins,
            filters_include_exclude,
            filters_regex_download,
            unicode_long_and_empty_names,
            symlinks_are_skipped_never_followed,
            unreadable_file_is_an_error_rest_syncs,
            stale_partials_are_cleaned_and_never_synced,
            unreadable_folder_deletes_nothing,
            type_clash_is_an_error,
            one_sided_type_change_travels,
            delete_versus_change_keeps_the_change,
            folder_with_excluded_files_is_kept,
            max_delete_on_first_run,
            emptied_root_is_judged_after_filters,
            compare_fast_tolerance_and_secure,
            multi_chunk_transfers,
            keep_both_collisions_and_long_names,
            old_trash_is_pruned,
            odd_names,
            run_all_parallel,
            emptied_remote_root_stops_bidirectional,
            unusable_local_root_stops_the_run,
            missing_local_root_after_folders_only_sync,
            trash_after_a_file_became_a_folder_the_same_day,
            partials_of_excluded_paths_are_left_alone,
            #[ftp(ignore = "FTP has no server-side copy (vsftpd offers none; RFC 959 has no COPY)")]
            #[ftps(ignore = "FTP has no server-side copy (vsftpd offers none; RFC 959 has no COPY)")]
            local_copy_is_a_server_side_copy,
        );
    };
}

/// `scenario_tests!(tag, backend_expr; [#[tag(attr)]…] name, …)`: one `#[test]` per name; the
/// attributes whose tag is `tag` or `all` are put on that test, the others dropped.
macro_rules! scenario_tests {
    ($tag:ident, $backend:expr; $($(#[$t:ident($($m:tt)*)])* $name:ident),* $(,)?) => {
        $(
            scenario_test!($tag, $backend, [$(($t, ($($m)*)))*] [] $name);
        )*
    };
}

/// One test; the `[(tag, (attr))…]` list is consumed one attribute at a time into `[#[attr]…]`.
macro_rules! scenario_test {
    ($tag:ident, $backend:expr, [] [$($keep:tt)*] $name:ident) => {
        #[test]
        $($keep)*
        fn $name() {
            let b = $backend;
            super::$name(&b);
        }
    };
    ($tag:ident, $backend:expr, [($t:ident, ($($m:tt)*)) $($rest:tt)*] [$($keep:tt)*] $name:ident) => {
        scenario_test!(@pick $t $tag, $backend, [$($rest)*] [$($keep)*] [#[$($m)*]] $name);
    };
    // Keep the attribute when its tag is `all` or this backend's; one arm per backend tag.
    (@pick all $tag:ident, $($r:tt)*) => { scenario_test!(@keep $tag, $($r)*); };
    (@pick local local, $($r:tt)*) => { scenario_test!(@keep local, $($r)*); };
    (@pick sftp sftp, $($r:tt)*) => { scenario_test!(@keep sftp, $($r)*); };
    (@pick smb smb, $($r:tt)*) => { scenario_test!(@keep smb, $($r)*); };
    (@pick ftp ftp, $($r:tt)*) => { scenario_test!(@keep ftp, $($r)*); };
    (@pick ftps ftps, $($r:tt)*) => { scenario_test!(@keep ftps, $($r)*); };
    (@pick $t:ident $tag:ident, $backend:expr, $rest:tt $keep:tt [$($a:tt)*] $name:ident) => {
        scenario_test!($tag, $backend, $rest $keep $name);
    };
    (@keep $tag:ident, $backend:expr, $rest:tt [$($keep:tt)*] [$($a:tt)*] $name:ident) => {
        scenario_test!($tag, $backend, $rest [$($keep)* $($a)*] $name);
    };
}

mod local {
    use super::common::LocalBackend;

    all_scenarios!(local, LocalBackend::new());
}

/// The same scenarios against a real OpenSSH sshd on 127.0.0.1 (one server per test), its
/// served folder seeded and inspected directly on this machine.
mod sftp {
    use super::common::sftp_backend::SftpBackend;

    all_scenarios!(sftp, SftpBackend::start());
}

/// The same scenarios against a real Samba smbd on 127.0.0.1 (one server per test), its
/// served folder seeded and inspected directly on this machine (names decoded).
mod smb {
    use super::common::smb_backend::SmbBackend;

    all_scenarios!(smb, SmbBackend::start());
}

/// The same scenarios against a real vsftpd on 127.0.0.1 (one server per test): plain FTP.
mod ftp {
    use super::common::ftp_backend::FtpBackend;

    all_scenarios!(ftp, FtpBackend::start(false));
}

/// And over explicit FTPS (AUTH TLS), the server's certificate verified through `tls_ca_file`.
mod ftps {
    use super::common::ftp_backend::FtpBackend;

    all_scenarios!(ftps, FtpBackend::start(true));
}

/// A local copy of a synced file (a plain `cp`: new inode, new mtime) becomes one server-side
/// `copy_remote` where the remote can copy: no byte is sent, the remote copy has the content
/// and the local copy's mtime, and the next run has nothing to do. A small file is uploaded.
pub fn local_copy_is_a_server_side_copy(b: &dyn Backend) {
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for mode in ["upload", "mirror-upload", "bidirectional"] {
        // Each mode starts from an empty remote (the backend is shared).
        empty_dir(&b.remote_root());
        let fx = Fixture::with_job(b, "j", mode, "");
        fx.write(Local, "orig.bin", &big, T0);
        fx.write(Local, "small.txt", "small", T0);
        fx.sync_settled("j");

        fx.mkdir(Local, "dup");
        std::fs::copy(fx.path(Local, "orig.bin"), fx.path(Local, "dup/copy.bin")).unwrap();
        std::fs::copy(fx.path(Local, "small.txt"), fx.path(Local, "small2.txt")).unwrap();

        let dry = fx.run(&["run", "j", "--dry-run", "--json"]);
        assert_eq!(dry.code, 0, "{}", dry.dump());
        assert_eq!(
            dry.record("copy_remote", "orig.bin")["to"],
            "dup/copy.bin",
            "{mode}"
        );
        assert!(!fx.exists(Remote, "dup/copy.bin"));

        let r = fx.sync_settled("j");
        assert_eq!(
            r.action_set(),
            vec![
                ("copy_remote".to_string(), "orig.bin".to_string()),
                ("mkdir_remote".to_string(), "dup".to_string()),
                ("upload".to_string(), "small2.txt".to_string()),
            ],
            "{mode}: {}",
            r.dump()
        );
        let rec = r.record("copy_remote", "orig.bin");
        assert_eq!(rec["to"], "dup/copy.bin", "{}", r.dump());
        assert_eq!(rec["bytes"], 0, "{}", r.dump());
        assert_eq!(r.count("copy_remote"), 1);
        assert_eq!(r.count("bytes"), 5, "only small2.txt is sent; {}", r.dump());
        assert_eq!(std::fs::read(fx.path(Remote, "dup/copy.bin")).unwrap(), big);
        fx.assert_in_sync();
    }
}
