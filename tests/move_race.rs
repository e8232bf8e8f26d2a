//! A local file renamed over a synced one becomes a move onto it (`plan::match_local_moves`,
//! `Executor::do_move`), which replaces the remote file only as it was when planned. Here
//! another writer changes that remote file between planning and the move, which a real server
//! produces only by chance: the action record sink runs between actions, so a record that comes
//! before the move (a conflict) is where the other writer acts.

use std::path::Path;
use std::sync::Mutex;

use omnisync::engine::run_job;
use omnisync::job::Mode;
use omnisync::model::ActionRecord;

#[path = "common/in_process.rs"]
mod in_process;

fn write(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// Every file below `dir` whose content is `content`.
fn holding(dir: &Path, content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap() == content.as_bytes() {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn a_move_never_replaces_a_target_changed_since_planning() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    write(&local.join("a.txt"), "the file renamed");
    write(&local.join("b.txt"), "the file renamed over");
    write(&local.join("c.txt"), "c");
    std::fs::create_dir_all(&remote).unwrap();
    let (agent, job, opts) =
        in_process::setup(tmp.path(), "race", &local, &remote, Mode::MirrorUpload);
    run_job(&agent, &job, &opts, &|_| {}).unwrap();
    assert_eq!(read(&remote.join("b.txt")), "the file renamed over");

    // `c.txt` changed on both sides: its conflict record comes before every move.
    write(&local.join("c.txt"), "c, changed here");
    write(&remote.join("c.txt"), "c, changed on the remote");
    std::fs::rename(local.join("a.txt"), local.join("b.txt")).unwrap();
    let records: Mutex<Vec<ActionRecord>> = Mutex::new(Vec::new());
    let sink = |r: &ActionRecord| {
        if r.action == "conflict" && r.path == "c.txt" {
            write(&remote.join("b.txt"), "another writer's b");
        }
        records.lock().unwrap().push(r.clone());
    };
    let summary = run_job(&agent, &job, &opts, &sink).unwrap();
    let recs = records.lock().unwrap().clone();
    let actions: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r.action.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("conflict", "c.txt"),
            ("error", "a.txt"),
            ("upload", "c.txt")
        ],
        "{recs:?}"
    );
    let msg = recs[1].message.as_deref().unwrap_or_default();
    assert!(msg.contains("changed since it was planned"), "{msg}");
    assert_eq!(summary.errors, 1);
    // Nothing was replaced or lost: the other writer's file is in place, the source too.
    assert_eq!(read(&remote.join("b.txt")), "another writer's b");
    assert_eq!(read(&remote.join("a.txt")), "the file renamed");

    // The next run sees the other writer's change: no move over it; the mirror's local side
    // wins as for any remote change, and the other writer's version goes to trash.
    let records: Mutex<Vec<ActionRecord>> = Mutex::new(Vec::new());
    let sink = |r: &ActionRecord| records.lock().unwrap().push(r.clone());
    let summary = run_job(&agent, &job, &opts, &sink).unwrap();
    let recs = records.lock().unwrap().clone();
    assert_eq!(summary.errors, 0, "{recs:?}");
    assert!(recs.iter().all(|r| r.action != "move_remote"), "{recs:?}");
    assert_eq!(read(&remote.join("b.txt")), "the file renamed");
    assert_eq!(
        holding(&remote.join(".omnisync/trash"), "another writer's b").len(),
        1
    );
}
