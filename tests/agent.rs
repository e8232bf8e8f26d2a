//! The live agent, end to end through the binary on the local backend: inotify → journal →
//! coalescer → live batches, start-up replay after kill -9, inotify queue overflow → reconcile,
//! SIGTERM mid-transfer → exit 0 and resume, SIGHUP reload, READY=1 to $NOTIFY_SOCKET, and
//! `systemd-analyze verify` of the unit files. Over sftp, ftp, ftps and smb (real servers on
//! 127.0.0.1): new files and a folder move follow live, also after the server dropped the
//! agent's idle connection.
//!
//! The tests of this file run one at a time (one lock): one of them shrinks the kernel's
//! inotify queue, which would make the others see overflows.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

#[path = "common/smbd.rs"]
mod smbd;
#[path = "common/sshd.rs"]
mod sshd;
#[path = "common/vsftpd.rs"]
mod vsftpd;

struct Setup {
    dir: tempfile::TempDir,
    local: PathBuf,
    /// The remote folder on this machine's disk (what the tests read and compare).
    remote: PathBuf,
    /// The job's `remote_path`: `remote` itself, except on smb (a folder of the share).
    remote_key: String,
    config: PathBuf,
    /// The job's connection keys (`protocol = "local"` unless over a server).
    keys: String,
}

/// A `watch` job `live` from `local` to `remote` (mirror-upload with delete_orphans, so deletes
/// propagate), plus `extra` lines in the job.
fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(&remote).unwrap();
    let config = dir.path().join("omnisync.toml");
    let s = Setup {
        dir,
        local,
        remote_key: remote.to_str().unwrap().to_string(),
        remote,
        config,
        keys: "protocol = \"local\"\n".into(),
    };
    s.write_config(extra);
    s
}

/// The same job to a server on 127.0.0.1: `keys` reach it, `remote` is the job's folder on
/// this machine's disk (created and given to the server's user here) and `remote_key` the
/// job's `remote_path` for it.
fn setup_server(keys: String, remote: PathBuf, remote_key: String) -> Setup {
    let mut s = setup("");
    std::fs::create_dir_all(&remote).unwrap();
    let (uid, gid) = sshd::uid_gid();
    std::os::unix::fs::lchown(&remote, Some(uid), Some(gid)).unwrap();
    s.remote = remote;
    s.remote_key = remote_key;
    s.keys = keys;
    s.write_config("");
    s
}

/// The same job over SFTP to a loopback sshd.
fn setup_sftp(server: &sshd::Sshd) -> Setup {
    let remote = server.data.join("live");
    setup_server(
        server.job_keys(),
        remote.clone(),
        remote.to_str().unwrap().into(),
    )
}

impl Setup {
    fn job_text(&self, name: &str, local: &Path, remote: &str, extra: &str) -> String {
        format!(
            "[[job]]\nname = {name:?}\n{}mode = \"mirror-upload\"\n\
             delete_orphans = true\nmax_delete = \"100%\"\nlocal_path = {local:?}\nremote_path = {remote:?}\n\
             trigger = \"watch\"\n{extra}\n",
            self.keys
        )
    }

    fn write_config(&self, extra: &str) {
        let text = format!(
            "[agent]\nstate_dir = {:?}\n\n{}",
            self.dir.path().join("state"),
            self.job_text("live", &self.local, &self.remote_key, extra)
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(&self) -> Agent {
        let log = self.dir.path().join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(["agent", "--log-level"])
            // OMNISYNC_TEST_AGENT_LOG: more detail when chasing a failure (an EnvFilter).
            .arg(std::env::var("OMNISYNC_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut agent = Agent { child, log };
        // Ready once the start-up reconcile is recorded.
        let t = Instant::now();
        while !(agent.log_text().contains("reconcile: full scan")
            && self
                .stats("live")
                .is_some_and(|s| s["reconciles"].as_u64() >= Some(1)))
        {
            let exited = agent.child.try_wait().unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(60) && exited.is_none(),
                "no start-up reconcile after {:?} (agent exit: {exited:?}); agent log:\n{}\nstats: {:?}",
                t.elapsed(),
                agent.log_text(),
                self.stats("live")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn stats(&self, job: &str) -> Option<serde_json::Value> {
        self.cli(&["journal", "stats", "--json", "--job", job])
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
    }

    /// Action records of the log since run `after` (exclusive), as (action, path, to, bytes).
    fn actions_after(&self, after: i64) -> Vec<(String, String, Option<String>, u64)> {
        self.cli(&["log", "--json", "--limit", "100000"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["run"].as_i64().unwrap_or(0) > after)
            .map(|v| {
                (
                    v["action"].as_str().unwrap_or("").to_string(),
                    v["path"].as_str().unwrap_or("").to_string(),
                    v["to"].as_str().map(str::to_string),
                    v["bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    fn last_run(&self) -> i64 {
        self.cli(&["log", "--json", "--limit", "100000"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["run"].as_i64())
            .max()
            .unwrap_or(0)
    }
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    fn stop(mut self) -> (Option<i32>, Duration) {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), t.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every file and folder below `root` (relative path → content, None for folders), without
/// the `.omnisync` folder.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".omnisync" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).ok());
            }
        }
    }
    out
}

fn settle(s: &Setup) {
    let t = Instant::now();
    while tree(&s.local) != tree(&s.remote) {
        if t.elapsed() > Duration::from_secs(30) {
            let (l, r) = (tree(&s.local), tree(&s.remote));
            let differ: Vec<_> = l
                .keys()
                .chain(r.keys())
                .filter(|k| l.get(*k) != r.get(*k))
                .take(10)
                .collect();
            panic!(
                "timed out waiting for the remote to match the local tree; first paths that \
                 differ: {differ:?}; stats: {:?}; agent log:\n{}",
                s.stats("live"),
                agent_log(s)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // And nothing left to do.
    wait_for(Duration::from_secs(30), "the journal to drain", || {
        s.stats("live")
            .is_some_and(|v| v["pending"].as_u64() == Some(0))
    });
}

fn write_file(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

#[test]
fn a_new_file_reaches_the_remote_and_the_journal_records_it() {
    let _g = serial();
    let s = setup("");
    let agent = s.start();
    let t = Instant::now();
    write_file(&s.local.join("a.txt"), b"hello");
    wait_for(Duration::from_secs(10), "a.txt on the remote", || {
        std::fs::read(s.remote.join("a.txt")).ok().as_deref() == Some(b"hello")
    });
    let took = t.elapsed();
    // Files written in a brand-new folder before its watch exists arrive through the
    // folder's scan.
    write_file(&s.local.join("docs/deep/b.txt"), b"inside");
    settle(&s);
    let journal = s.cli(&["journal", "--json", "--job", "live"]);
    let rows: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r["kind"] == "close_write" && r["path"] == "a.txt" && r["state"] == "applied"),
        "{journal}"
    );
    assert!(rows.iter().all(|r| r["state"] != "pending"), "{journal}");
    let status = s.cli(&["status"]);
    assert!(status.contains("agent: running"), "{status}");
    let jobs = s.cli(&["jobs"]);
    assert!(jobs.contains("on change; reconcile"), "{jobs}");
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
    eprintln!("new file on the remote after {took:?}");
}

/// Sequences of edits on the local side, applied as fast as the test can: the remote ends
/// identical, renames of synced files send no bytes, and repeated writes fold.
#[test]
fn edit_sequences_end_right_with_few_actions() {
    let _g = serial();
    let s = setup("");
    write_file(&s.local.join("synced/r.txt"), &vec![b'r'; 100_000]);
    write_file(&s.local.join("synced/s.txt"), &vec![b's'; 100_000]);
    let agent = s.start();
    settle(&s);

    // 1. One file rewritten 50 times (each write closed): sent a few times at most, not 50.
    let before = s.last_run();
    let p = s.local.join("hot.txt");
    for i in 0..50 {
        std::fs::write(&p, format!("version {i}\n").repeat(100)).unwrap();
    }
    settle(&s);
    let acts = s.actions_after(before);
    let uploads = acts.iter().filter(|a| a.0 == "upload").count();
    assert!(
        (1..=5).contains(&uploads),
        "50 rewrites → {uploads} uploads: {acts:?}"
    );

    // 2. Written, rewritten 50 times while open, renamed and deleted at once: nothing is left,
    //    at most one upload and its delete.
    let before = s.last_run();
    {
        let mut f = std::fs::File::create(s.local.join("tmp.bin")).unwrap();
        for _ in 0..50 {
            f.write_all(&[7u8; 4096]).unwrap();
        }
    }
    std::fs::rename(s.local.join("tmp.bin"), s.local.join("tmp2.bin")).unwrap();
    std::fs::remove_file(s.local.join("tmp2.bin")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert!(acts.iter().all(|a| a.0 != "error"), "{acts:?}");
    assert!(
        acts.iter().filter(|a| a.0 == "upload").count() <= 1,
        "{acts:?}"
    );

    // 3. A rename chain of a synced file: moves only, zero bytes.
    let before = s.last_run();
    std::fs::rename(s.local.join("synced/r.txt"), s.local.join("synced/r2.txt")).unwrap();
    std::fs::rename(s.local.join("synced/r2.txt"), s.local.join("r3.txt")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert!(acts.iter().all(|a| a.0 == "move_remote"), "{acts:?}");
    assert!((1..=2).contains(&acts.len()), "{acts:?}");

    // 4. A new file with the content of a synced file: a server-side copy, not an upload.
    let before = s.last_run();
    std::fs::copy(s.local.join("synced/s.txt"), s.local.join("copy-of-s.txt")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert_eq!(
        acts.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        vec!["copy_remote"],
        "{acts:?}"
    );

    // 5. Delete a folder: its files go (to the trash), in one batch.
    let before = s.last_run();
    std::fs::remove_dir_all(s.local.join("synced")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert!(acts.iter().all(|a| a.0 == "delete_remote"), "{acts:?}");
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn moving_a_folder_of_10000_files_is_one_move_and_no_upload() {
    let _g = serial();
    let s = setup("");
    for i in 0..10_000 {
        write_file(
            &s.local.join(format!("big/sub{}/f{i}.txt", i % 100)),
            format!("{i}").as_bytes(),
        );
    }
    let agent = s.start();
    settle(&s);
    let before = s.last_run();
    std::fs::rename(s.local.join("big"), s.local.join("moved")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert_eq!(acts.len(), 1, "{:?}", &acts[..acts.len().min(5)]);
    assert_eq!(acts[0].0, "move_remote");
    assert_eq!(
        (acts[0].1.as_str(), acts[0].2.as_deref()),
        ("big", Some("moved"))
    );
    assert_eq!(acts.iter().map(|a| a.3).sum::<u64>(), 0);
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

/// A folder moved out of the watched tree and back in under another name a moment later
/// (on the same filesystem, so the same inodes) is recorded as a `remove` and a `moved_in`,
/// like a rename whose two halves the watcher saw apart: it is still one move, not a delete
/// of 300 remote files followed by 300 uploads.
#[test]
fn a_folder_moved_out_and_back_in_under_a_new_name_is_one_move() {
    let _g = serial();
    let s = setup("");
    for i in 0..300 {
        write_file(
            &s.local.join(format!("tree/f{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    let agent = s.start();
    settle(&s);
    let before = s.last_run();
    let outside = s.dir.path().join("outside");
    std::fs::rename(s.local.join("tree"), &outside).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::rename(&outside, s.local.join("back")).unwrap();
    settle(&s);
    let acts = s.actions_after(before);
    assert_eq!(acts.len(), 1, "{:?}", &acts[..acts.len().min(5)]);
    assert_eq!(
        (acts[0].0.as_str(), acts[0].1.as_str(), acts[0].2.as_deref()),
        ("move_remote", "tree", Some("back"))
    );
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

/// Over a server: a new file follows live; the server then drops the agent's idle
/// connection (its session processes killed), and the next new file still arrives (the agent
/// reconnects; a failed batch is retried); a renamed folder is one `move_remote`, nothing
/// uploaded again.
fn follows_live_over_a_server(s: &Setup, kill_sessions: &dyn Fn() -> usize, what: &str) {
    for i in 0..300 {
        write_file(
            &s.local.join(format!("tree/f{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    let agent = s.start();
    settle(s);
    let t = Instant::now();
    write_file(&s.local.join("new.txt"), b"live");
    wait_for(
        Duration::from_secs(10),
        &format!("new.txt on the {what} remote"),
        || std::fs::read(s.remote.join("new.txt")).ok().as_deref() == Some(b"live"),
    );
    eprintln!("new file over {what} after {:?}", t.elapsed());
    let dropped_at = s.last_run();
    assert!(kill_sessions() > 0, "no {what} session to drop");
    let t = Instant::now();
    write_file(&s.local.join("after-drop.txt"), b"again");
    while std::fs::read(s.remote.join("after-drop.txt"))
        .ok()
        .as_deref()
        != Some(b"again")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "after-drop.txt is not on the {what} remote 30 s after the session was dropped; \
             agent log:\n{}",
            agent_log(s)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "new file over {what} after a dropped session: {:?}",
        t.elapsed()
    );
    settle(s);
    // A connection the server closed while it was idle is opened again before anything is
    // sent into it: the file is not an error first and a retry later.
    let errors: Vec<_> = s
        .actions_after(dropped_at)
        .into_iter()
        .filter(|a| a.0 == "error")
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}");
    let before = s.last_run();
    std::fs::rename(s.local.join("tree"), s.local.join("moved")).unwrap();
    settle(s);
    let acts = s.actions_after(before);
    assert_eq!(acts.len(), 1, "{what}: {acts:?}");
    assert_eq!(acts[0].0, "move_remote", "{what}: {acts:?}");
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0), "{what}: agent log:\n{}", agent_log(s));
}

/// Every agent log the setup wrote (for failure messages).
fn agent_log(s: &Setup) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(s.dir.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("agent-") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

#[test]
fn over_sftp_new_files_a_dropped_session_and_a_folder_move_follow_live() {
    let _g = serial();
    let server = sshd::Sshd::start();
    let s = setup_sftp(&server);
    follows_live_over_a_server(&s, &|| server.kill_sessions(), "sftp");
}

#[test]
fn over_ftp_and_ftps_new_files_a_dropped_session_and_a_folder_move_follow_live() {
    let _g = serial();
    for tls in [false, true] {
        let server = vsftpd::Vsftpd::start(vsftpd::Options {
            tls,
            ..vsftpd::Options::default()
        });
        let remote = server.data.join("live");
        let s = setup_server(
            server.job_keys(),
            remote.clone(),
            remote.to_str().unwrap().into(),
        );
        let what = if tls { "ftps" } else { "ftp" };
        follows_live_over_a_server(&s, &|| server.kill_sessions(), what);
    }
}

/// A file whose upload failed is retried on its own a second or two later, without a new
/// event and without waiting for a reconcile: over sftp the server's user may not write into a
/// folder (owned by root) until the test gives it to them.
#[test]
fn a_failed_upload_is_retried_soon_without_a_new_event() {
    let _g = serial();
    let server = sshd::Sshd::start();
    let s = setup_sftp(&server);
    std::fs::create_dir_all(s.local.join("locked")).unwrap();
    std::fs::create_dir_all(s.remote.join("locked")).unwrap(); // root's, 0755
    let agent = s.start();
    settle(&s);
    let before = s.last_run();
    write_file(&s.local.join("locked/f.txt"), b"once allowed");
    wait_for(Duration::from_secs(10), "the upload to fail", || {
        s.actions_after(before).iter().any(|a| a.0 == "error")
    });
    assert!(!s.remote.join("locked/f.txt").exists());
    server.chown(&s.remote.join("locked"));
    let t = Instant::now();
    while std::fs::read(s.remote.join("locked/f.txt")).ok().as_deref() != Some(b"once allowed") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "locked/f.txt did not arrive within 10 s of being allowed; agent log:\n{}",
            agent_log(&s)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "retried upload arrived {:?} after the folder was allowed",
        t.elapsed()
    );
    settle(&s);
    let acts = s.actions_after(before);
    assert_eq!(
        acts.iter().filter(|a| a.0 == "upload").count(),
        1,
        "{acts:?}"
    );
    assert!(
        agent_log(&s).contains("retrying what failed"),
        "{}",
        agent_log(&s)
    );
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn over_smb_new_files_a_dropped_session_and_a_folder_move_follow_live() {
    let _g = serial();
    let server = smbd::Smbd::start();
    let s = setup_server(
        server.job_keys(),
        server.share_dir.join("live"),
        "live".into(),
    );
    follows_live_over_a_server(&s, &|| server.kill_sessions(), "smb");
}

#[test]
fn kill_9_during_a_burst_then_restart_replays_and_completes() {
    let _g = serial();
    let s = setup("");
    let mut agent = s.start();
    let local = s.local.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..5000 {
            write_file(
                &local.join(format!("burst/d{}/f{i}.bin", i % 50)),
                format!("content of file {i}\n").repeat(50).as_bytes(),
            );
        }
    });
    // Kill it while the burst is being applied.
    wait_for(
        Duration::from_secs(60),
        "part of the burst on the remote",
        || tree(&s.remote).len() > 500,
    );
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    writer.join().unwrap();
    let pending_before = s
        .stats("live")
        .and_then(|v| v["pending"].as_u64())
        .unwrap_or(0);

    let agent = s.start();
    settle(&s);
    let files = tree(&s.remote)
        .keys()
        .filter(|k| k.ends_with(".bin"))
        .count();
    assert_eq!(files, 5000);
    let partials = tree(&s.remote)
        .keys()
        .filter(|k| k.contains("omnisync-partial"))
        .count();
    assert_eq!(partials, 0);
    // The journal shows what the restart replayed.
    let journal = s.cli(&["journal", "--json", "--job", "live", "--limit", "0"]);
    let replayed = journal
        .lines()
        .filter(|l| l.contains("\"state\":\"reconciled\""))
        .count() as u64;
    assert!(
        replayed >= pending_before,
        "pending before restart {pending_before}, replayed {replayed}"
    );
    assert!(agent.log_text().contains("reconcile: full scan"));
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

/// Restores a sysctl on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Option<Sysctl> {
        let old = std::fs::read_to_string(path).ok()?;
        std::fs::write(path, value).ok()?;
        Some(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

#[test]
fn an_inotify_queue_overflow_triggers_a_reconcile_and_nothing_is_missed() {
    let _g = serial();
    let s = setup("");
    // The queue size is read when the agent's inotify instance is created.
    let guard = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "64");
    if guard.is_none() {
        eprintln!(
            "cannot shrink fs.inotify.max_queued_events (not root, or /proc/sys read-only): \
             only checking that a flood of events ends complete"
        );
    }
    let shrunk = guard.is_some();
    let agent = s.start();
    drop(guard);
    for i in 0..3000 {
        write_file(&s.local.join(format!("flood/f{i}")), b"x");
    }
    settle(&s);
    assert_eq!(
        tree(&s.remote)
            .keys()
            .filter(|k| k.starts_with("flood/f"))
            .count(),
        3000
    );
    let log = agent.log_text();
    if shrunk {
        assert!(log.contains("overflow"), "{log}");
        assert!(log.contains("events were lost"), "{log}");
    }
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn sigterm_mid_transfer_exits_0_quickly_and_the_transfer_resumes() {
    let _g = serial();
    let s = setup("chunk_size = \"1MiB\"\n");
    let agent = s.start();
    // 2 GiB of zeros in a sparse file: fast to make, long enough to stop mid-copy.
    let big = s.local.join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let partial = s.remote.join("big.bin.omnisync-partial");
    wait_for(Duration::from_secs(30), "the transfer to start", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 64 << 20)
    });
    // `status` shows the transfer in flight with its bytes done.
    wait_for(Duration::from_secs(10), "the transfer in `status`", || {
        let v: serde_json::Value =
            serde_json::from_str(&s.cli(&["status", "--json"])).unwrap_or_default();
        v["transfers"].as_array().is_some_and(|a| {
            a.iter().any(|t| {
                t["path"] == "big.bin"
                    && t["in_flight"] == true
                    && t["bytes_done"].as_u64().unwrap_or(0) > 0
            })
        })
    });
    // A manual run of the job the agent is running never races it: it says the job is busy.
    let out = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .args(["run", "live"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, took) = agent.stop();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        !s.remote.join("big.bin").exists(),
        "a partial file reached its final name"
    );
    let done = std::fs::metadata(&partial).unwrap().len();
    assert!(done < 2 << 30);
    let status = s.cli(&["status", "--json"]);
    assert!(status.contains("big.bin"), "{status}");

    let before = s.last_run();
    let agent = s.start();
    settle(&s);
    assert_eq!(
        std::fs::metadata(s.remote.join("big.bin")).unwrap().len(),
        2 << 30
    );
    let acts = s.actions_after(before);
    let sent: u64 = acts.iter().filter(|a| a.0 == "upload").map(|a| a.3).sum();
    assert!(
        sent < 2 << 30,
        "resumed transfer sent {sent} bytes: {acts:?}"
    );
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn sighup_reloads_the_config() {
    let _g = serial();
    let s = setup("");
    let agent = s.start();
    let (l2, r2) = (s.dir.path().join("local2"), s.dir.path().join("remote2"));
    std::fs::create_dir_all(&l2).unwrap();
    std::fs::create_dir_all(&r2).unwrap();
    // Add a second job.
    let text = format!(
        "[agent]\nstate_dir = {:?}\n\n{}{}",
        s.dir.path().join("state"),
        s.job_text("live", &s.local, &s.remote_key, ""),
        s.job_text("second", &l2, r2.to_str().unwrap(), "")
    );
    std::fs::write(&s.config, text).unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the second job to start", || {
        agent.log_text().contains("job started")
    });
    write_file(&l2.join("n.txt"), b"second");
    wait_for(
        Duration::from_secs(30),
        "n.txt on the second remote",
        || r2.join("n.txt").exists(),
    );
    // The first job still runs (unchanged, not restarted).
    write_file(&s.local.join("still.txt"), b"first");
    wait_for(
        Duration::from_secs(30),
        "still.txt on the first remote",
        || s.remote.join("still.txt").exists(),
    );
    // Remove the first job: it stops.
    let text = format!(
        "[agent]\nstate_dir = {:?}\n\n{}",
        s.dir.path().join("state"),
        s.job_text("second", &l2, r2.to_str().unwrap(), "")
    );
    std::fs::write(&s.config, text).unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the first job to stop", || {
        agent.log_text().contains("stopping the job")
    });
    write_file(&s.local.join("after.txt"), b"x");
    std::thread::sleep(Duration::from_millis(700));
    assert!(!s.remote.join("after.txt").exists());
    // A broken config on SIGHUP keeps the running one.
    std::fs::write(&s.config, "[[job]\nbroken").unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the reload error", || {
        agent.log_text().contains("config not reloaded")
    });
    write_file(&l2.join("m.txt"), b"still live");
    wait_for(
        Duration::from_secs(30),
        "m.txt on the second remote",
        || r2.join("m.txt").exists(),
    );
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn the_agent_sends_ready_to_the_notify_socket() {
    let _g = serial();
    let s = setup("");
    let sock_path = s.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .arg("agent")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = String::new();
    let t = Instant::now();
    while !(got.contains("READY=1") && got.contains("WATCHDOG=1"))
        && t.elapsed() < Duration::from_secs(30)
    {
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            got.push('\n');
        }
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert!(got.contains("READY=1"), "{got}");
    assert!(got.contains("STATUS="), "{got}");
    assert!(got.contains("WATCHDOG=1"), "{got}");
    assert_eq!(st.code(), Some(0));
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut rest = String::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(rest.contains("STOPPING=1"), "{rest}");
}

#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for unit in ["omnisync.service", "omnisync-user.service"] {
        // The unit names /usr/local/bin/omnisync; verify a copy naming the built binary.
        let text = std::fs::read_to_string(root.join("systemd").join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/omnisync", bin().to_str().unwrap());
        let name = if unit == "omnisync-user.service" {
            "omnisync.service"
        } else {
            unit
        };
        let sub = dir.path().join(unit.trim_end_matches(".service"));
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join(name);
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new("systemd-analyze");
        if unit == "omnisync-user.service" {
            // A user manager needs a runtime directory, even offline.
            let rt = dir.path().join("runtime");
            std::fs::create_dir_all(&rt).unwrap();
            cmd.arg("--user").env("XDG_RUNTIME_DIR", &rt);
        }
        let out = cmd
            .arg("verify")
            .arg(&path)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("systemd-analyze (package systemd) is needed; scripts/test.sh installs it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Only lines about our unit count (the host's own units may have warnings).
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("omnisync")).collect();
        assert!(out.status.success() && ours.is_empty(), "{unit}: {stderr}");
    }
}
