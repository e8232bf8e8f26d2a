//! The sftp backend against a real OpenSSH sshd on 127.0.0.1 (see `common/sshd.rs`): every
//! `Remote` operation directly, then whole runs through the `omnisync` binary, the ways to log in
//! and the ways a connection is refused (exit 3), and a transfer cut mid-way that resumes.

#[path = "common/checkpoint.rs"]
mod checkpoint;
#[path = "common/sshd.rs"]
mod sshd;

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use omnisync::job::{Job, Mode, Protocol};
use omnisync::model::Kind;
use omnisync::remote::sftp::SftpRemote;
use omnisync::remote::{Remote, RemoteError, RootStatus};
use sshd::Sshd;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

fn sftp_job(s: &Sshd, remote: &Path, local: &Path) -> Job {
    let mut j = Job::local(
        "t",
        local.to_path_buf(),
        remote.to_str().unwrap(),
        Mode::Upload,
    );
    j.protocol = Protocol::Sftp;
    j.host = Some("127.0.0.1".into());
    j.port = Some(s.port);
    j.username = Some(sshd::USER.into());
    j.private_key = Some(s.user_key.clone());
    j.known_hosts = Some(s.known_hosts.clone());
    j
}

fn write_all(r: &dyn Remote, path: &str, offset: u64, data: &[u8]) {
    let mut w = r.open_write(path, offset).unwrap();
    w.write_all(data).unwrap();
    w.sync().unwrap();
    w.close().unwrap();
}

fn read_all(r: &dyn Remote, path: &str, offset: u64) -> Vec<u8> {
    let mut v = Vec::new();
    r.open_read(path, offset)
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// Deterministic bytes that do not compress.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn every_remote_operation_round_trips() {
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let root = s.data.join("root");
    let r = SftpRemote::connect(&sftp_job(&s, &root, local.path())).unwrap();
    let caps = r.capabilities();
    assert!(caps.server_copy && caps.set_mtime && caps.resume_write);
    assert!(!caps.content_hash && !caps.inodes);
    assert_eq!(caps.mtime_precision_ns, 1_000_000_000);
    assert!(r.describe().starts_with("sftp://omnitest@127.0.0.1:"));

    // Roots.
    assert_eq!(r.root_status(), RootStatus::Missing);
    r.create_root().unwrap();
    assert_eq!(r.root_status(), RootStatus::Dir);
    r.create_root().unwrap();

    // Write, stat, read; large enough for many pipelined requests.
    let big = pattern(5 << 20 | 12345, 7);
    write_all(&r, "a.bin", 0, &big);
    let e = r.stat("a.bin").unwrap().unwrap();
    assert_eq!((e.kind, e.size), (Kind::File, big.len() as u64));
    assert_eq!(e.mtime % 1_000_000_000, 0);
    assert_eq!(std::fs::read(root.join("a.bin")).unwrap(), big);
    assert!(read_all(&r, "a.bin", 0) == big);
    assert!(read_all(&r, "a.bin", 1_000_001) == big[1_000_001..]);
    assert!(read_all(&r, "a.bin", big.len() as u64).is_empty());
    assert_eq!(r.stat("nope").unwrap(), None);
    assert!(r.open_read("nope", 0).err().unwrap().is_not_found());

    // Write at an offset keeps the prefix and drops the tail; offset 0 truncates.
    write_all(&r, "w.txt", 0, b"hello world, long tail");
    write_all(&r, "w.txt", 5, b"!");
    assert_eq!(std::fs::read(root.join("w.txt")).unwrap(), b"hello!");
    write_all(&r, "w.txt", 0, b"x");
    assert_eq!(std::fs::read(root.join("w.txt")).unwrap(), b"x");
    // Resuming a file that is not there is an error, not a silent new file.
    assert!(r.open_write("missing.partial", 10).is_err());

    // mkdir_all, list (sizes, kinds, mtimes, symlinks, bad names).
    r.mkdir_all("d1/d2/d3").unwrap();
    r.mkdir_all("d1/d2/d3").unwrap();
    assert_eq!(r.stat("d1/d2/d3").unwrap().unwrap().kind, Kind::Dir);
    std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
    let bad = root.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
    std::fs::write(&bad, b"?").unwrap();
    s.chown_tree(&root);
    let mut l = r.list("").unwrap();
    l.entries.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<(&str, Kind, u64)> = l
        .entries
        .iter()
        .map(|(n, e)| (n.as_str(), e.kind, e.size))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a.bin", Kind::File, big.len() as u64),
            ("d1", Kind::Dir, 0),
            ("link", Kind::Symlink, 0),
            ("w.txt", Kind::File, 1),
        ]
    );
    assert_eq!(l.bad_names.len(), 1, "{:?}", l.bad_names);
    assert_eq!(r.stat("link").unwrap().unwrap().kind, Kind::Symlink);
    // Nothing is read or written through a symlinked folder.
    assert!(r.open_write("link/x", 0).is_err());
    assert!(r.open_read("link/passwd", 0).is_err());
    assert!(r.mkdir_all("link/sub").is_err());
    assert!(r.list("link").is_err());
    // Paths that escape are refused before any request.
    assert!(matches!(r.stat("../x"), Err(RemoteError::Refused { .. })));

    // set_mtime (whole seconds), atime is not 1970.
    r.set_mtime("a.bin", 1_600_000_000_999_999_999).unwrap();
    assert_eq!(
        r.stat("a.bin").unwrap().unwrap().mtime,
        1_600_000_000_000_000_000
    );
    let m = std::fs::metadata(root.join("a.bin")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mtime(), 1_600_000_000);
    assert!(m.atime() > 1_600_000_000);
    assert_eq!(m.len(), big.len() as u64, "set_mtime must not truncate");

    // Rename: plain, then replacing an existing file atomically.
    r.rename("w.txt", "d1/w2.txt").unwrap();
    assert_eq!(r.stat("w.txt").unwrap(), None);
    write_all(&r, "new.txt", 0, b"new content");
    r.rename("new.txt", "d1/w2.txt").unwrap();
    assert_eq!(
        std::fs::read(root.join("d1/w2.txt")).unwrap(),
        b"new content"
    );
    // A no-replace rename refuses an existing target and changes neither file.
    write_all(&r, "other.txt", 0, b"other");
    assert!(!r.rename_new("other.txt", "d1/w2.txt").unwrap());
    assert_eq!(
        std::fs::read(root.join("d1/w2.txt")).unwrap(),
        b"new content"
    );
    assert_eq!(std::fs::read(root.join("other.txt")).unwrap(), b"other");
    assert!(r.rename_new("other.txt", "d1/other.txt").unwrap());
    assert_eq!(r.stat("other.txt").unwrap(), None);
    assert!(r.rename_new("nope", "d1/nope").unwrap_err().is_not_found());

    // The mtime set through the open writer (FSETSTAT, FSTAT and CLOSE behind the WRITEs).
    let mut w = r.open_write("d1/timed.txt", 0).unwrap();
    w.write_all(b"timed").unwrap();
    let e = w
        .set_mtime_and_stat(1_500_000_000_500_000_000)
        .unwrap()
        .unwrap();
    w.close().unwrap();
    assert_eq!(
        (e.kind, e.size, e.mtime),
        (Kind::File, 5, 1_500_000_000_000_000_000)
    );
    assert_eq!(r.stat("d1/timed.txt").unwrap().unwrap().mtime, e.mtime);
    assert_eq!(std::fs::read(root.join("d1/timed.txt")).unwrap(), b"timed");

    // A background sync (FSYNC through a second handle) finishes while writing goes on, and
    // the content is what was written, in order.
    let part = pattern(3 << 20, 5);
    let mut w = r.open_write("d1/synced.bin", 0).unwrap();
    w.write_all(&part[..1 << 20]).unwrap();
    w.sync_begin().unwrap();
    w.write_all(&part[1 << 20..2 << 20]).unwrap();
    let t0 = Instant::now();
    while !w.sync_done().unwrap() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the sync never finished"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !w.sync_done().unwrap(),
        "one finished sync is reported once"
    );
    w.sync_begin().unwrap();
    w.write_all(&part[2 << 20..]).unwrap();
    w.sync().unwrap();
    w.close().unwrap();
    assert!(std::fs::read(root.join("d1/synced.bin")).unwrap() == part);

    // Folder rename.
    r.rename("d1/d2", "d1/moved").unwrap();
    assert_eq!(r.stat("d1/moved/d3").unwrap().unwrap().kind, Kind::Dir);

    // Server-side copy keeps content and mtime.
    r.copy_file("a.bin", "d1/copy.bin").unwrap();
    assert!(std::fs::read(root.join("d1/copy.bin")).unwrap() == big);
    assert_eq!(
        r.stat("d1/copy.bin").unwrap().unwrap().mtime,
        1_600_000_000_000_000_000
    );

    // Remove file and folders; errors for what is not there or not empty.
    r.remove_file("d1/copy.bin").unwrap();
    assert!(r.remove_file("d1/copy.bin").unwrap_err().is_not_found());
    assert!(r.remove_dir("d1").is_err(), "not empty");
    r.remove_dir("d1/moved/d3").unwrap();
    r.remove_dir("d1/moved").unwrap();
    assert_eq!(r.stat("d1/moved").unwrap(), None);

    // hash() reads through open_read.
    let h = r.hash("a.bin").unwrap();
    assert_eq!(h, *blake3::hash(&big).as_bytes());

    // Root that is a file.
    std::fs::write(s.data.join("file-root"), b"x").unwrap();
    s.chown(&s.data.join("file-root"));
    let r2 = SftpRemote::connect(&sftp_job(&s, &s.data.join("file-root"), local.path())).unwrap();
    assert_eq!(r2.root_status(), RootStatus::NotDir);
}

#[test]
fn many_threads_share_one_session() {
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let r = SftpRemote::connect(&sftp_job(&s, &s.data, local.path())).unwrap();
    // Eight threads each hold ten files open at once, three rounds: 240 opens in all, 80 at a
    // time, more than OpenSSH's 128 usable handles over the session's life. Nobody fails, so
    // handles are closed on the server as readers go away.
    for i in 0..8 {
        write_all(&r, &format!("f{i}"), 0, &pattern(300_000, i));
    }
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let r = &r;
            sc.spawn(move || {
                for _round in 0..3 {
                    let mut open = Vec::new();
                    for k in 0..10 {
                        let i = (t + k) % 8;
                        open.push((i, r.open_read(&format!("f{i}"), 0).unwrap()));
                    }
                    for (i, mut rd) in open {
                        let mut v = Vec::new();
                        rd.read_to_end(&mut v).unwrap();
                        assert!(v == pattern(300_000, i));
                    }
                }
            });
        }
    });
    // Readers dropped half-way leave nothing open either.
    for _ in 0..150 {
        let mut rd = r.open_read("f1", 0).unwrap();
        let mut buf = [0u8; 10];
        rd.read_exact(&mut buf).unwrap();
    }
    assert_eq!(read_all(&r, "f2", 0), pattern(300_000, 2));
}

/// Listing a folder requests its subfolders' listings ahead of time; a change made through
/// the remote in between must never let an older listing be returned.
#[test]
fn listings_requested_ahead_are_never_stale() {
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let r = SftpRemote::connect(&sftp_job(&s, &s.data, local.path())).unwrap();
    let names = |dir: &str| {
        let mut v: Vec<String> = r
            .list(dir)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.0)
            .collect();
        v.sort();
        v
    };
    r.mkdir_all("a/b").unwrap();
    write_all(&r, "a/b/one", 0, b"1");
    assert_eq!(names(""), ["a"]); // requests "a" ahead
    std::thread::sleep(Duration::from_millis(100));
    write_all(&r, "a/two", 0, b"2");
    assert_eq!(names("a"), ["b", "two"]); // requests "a/b" ahead
    std::thread::sleep(Duration::from_millis(100));
    r.rename("a/b/one", "a/b/uno").unwrap();
    assert_eq!(names("a/b"), ["uno"]);
    // Used once: the second list of a folder asks the server again.
    assert_eq!(names("a"), ["b", "two"]);
    assert_eq!(names("a/b"), ["uno"]);
    assert_eq!(names("a/b"), ["uno"]);
    r.remove_file("a/b/uno").unwrap();
    assert!(names("a/b").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Through the binary.

struct Setup {
    s: Sshd,
    dir: tempfile::TempDir,
    config: PathBuf,
    local: PathBuf,
    remote: PathBuf,
}

impl Setup {
    fn new(mode: &str, extra: &str) -> Setup {
        let s = Sshd::start();
        Setup::with(s, mode, extra)
    }

    fn with(s: Sshd, mode: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir(&local).unwrap();
        // One tree per job, so jobs sharing a server do not see each other's files.
        let remote = s.data.join(format!("tree-{mode}"));
        let config = dir.path().join("omnisync.toml");
        let mut keys = s.job_keys();
        if extra.contains("password") {
            keys = keys
                .lines()
                .filter(|l| !l.starts_with("private_key"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        if extra.contains("known_hosts") {
            keys = keys
                .lines()
                .filter(|l| !l.starts_with("known_hosts"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = {:?}\n\n[[job]]\nname = \"j\"\nmode = \"{mode}\"\n{keys}\
                 local_path = {:?}\nremote_path = {:?}\n{extra}",
                dir.path().join("state"),
                local,
                remote
            ),
        )
        .unwrap();
        Setup {
            s,
            dir,
            config,
            local,
            remote,
        }
    }

    fn omnisync(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config).args(args);
        c.env_remove("SSH_AUTH_SOCK");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn run(&self, env: &[(&str, &str)]) -> (i32, Vec<serde_json::Value>, String) {
        let out = self.omnisync(&["run", "j", "--json"], env);
        let recs = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (
            out.status.code().unwrap_or(-1),
            recs,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn remote_file(&self, rel: &str, data: &[u8]) {
        let p = self.remote.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        self.s.chown_tree(&self.remote);
    }
}

fn actions(recs: &[serde_json::Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .filter(|r| r["action"] == kind)
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn mtime_of(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().mtime()
}

#[test]
fn upload_then_download_then_bidirectional_through_the_binary() {
    let u = Setup::new("upload", "transfers = 4\nchunk_size = \"1MiB\"\n");
    std::fs::create_dir_all(u.local.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(u.local.join("empty")).unwrap();
    for i in 0..20 {
        std::fs::write(u.local.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let big = pattern(3 << 20 | 77, 3);
    std::fs::write(u.local.join("sub/deeper/big.bin"), &big).unwrap();
    filetime::set_file_mtime(
        u.local.join("f0.txt"),
        filetime::FileTime::from_unix_time(1_500_000_000, 123),
    )
    .unwrap();
    let (code, recs, err) = u.run(&[]);
    assert_eq!(code, 0, "{err}\n{recs:?}");
    assert_eq!(actions(&recs, "upload").len(), 21, "{recs:?}");
    assert!(std::fs::read(u.remote.join("sub/deeper/big.bin")).unwrap() == big);
    assert!(u.remote.join("empty").is_dir());
    assert_eq!(mtime_of(&u.remote.join("f0.txt")), 1_500_000_000);
    assert_eq!(
        std::fs::read_dir(&u.remote)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .count(),
        0
    );
    // Nothing changed: nothing to do (whole-second mtimes do not look like changes).
    let (code, recs, err) = u.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(actions(&recs, "upload").is_empty(), "{recs:?}");

    // Download job on the same server.
    let d = Setup::with(u.s, "download", "");
    d.remote_file("in/a.pdf", b"invoice a");
    d.remote_file("in/b.pdf", b"invoice b");
    filetime::set_file_mtime(
        d.remote.join("in/a.pdf"),
        filetime::FileTime::from_unix_time(1_400_000_000, 0),
    )
    .unwrap();
    let (code, recs, err) = d.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        actions(&recs, "download"),
        vec!["in/a.pdf", "in/b.pdf"],
        "{recs:?}"
    );
    assert_eq!(
        std::fs::read(d.local.join("in/a.pdf")).unwrap(),
        b"invoice a"
    );
    assert_eq!(mtime_of(&d.local.join("in/a.pdf")), 1_400_000_000);

    // Bidirectional: changes both ways, a deletion propagated, a conflict resolved.
    let b = Setup::with(d.s, "bidirectional", "");
    b.remote_file("r-only.txt", b"from remote");
    std::fs::write(b.local.join("l-only.txt"), b"from local").unwrap();
    let (code, recs, err) = b.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["l-only.txt"]);
    assert_eq!(actions(&recs, "download"), vec!["r-only.txt"]);
    // Remote edit, local delete.
    std::thread::sleep(Duration::from_millis(1100));
    b.remote_file("l-only.txt", b"edited on the server");
    std::fs::remove_file(b.local.join("r-only.txt")).unwrap();
    let (code, recs, err) = b.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "download"), vec!["l-only.txt"]);
    assert_eq!(actions(&recs, "delete_remote"), vec!["r-only.txt"]);
    assert_eq!(
        std::fs::read(b.local.join("l-only.txt")).unwrap(),
        b"edited on the server"
    );
    assert!(!b.remote.join("r-only.txt").exists());
    // The deleted file went to the remote trash.
    let trash = b.remote.join(".omnisync/trash");
    assert!(trash.is_dir(), "no remote trash");
}

#[test]
fn password_login_and_wrong_password() {
    let t = Setup::new("upload", "password_env = \"OMNI_PW\"\n");
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    let (code, recs, err) = t.run(&[("OMNI_PW", sshd::PASSWORD)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["x.txt"]);

    let (code, _, err) = t.run(&[("OMNI_PW", "definitely-wrong-pw")]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("definitely-wrong-pw"), "secret leaked: {err}");
    // Unset variable: exit 3 with the variable's name.
    let (code, _, err) = t.run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("OMNI_PW"), "{err}");
}

#[test]
fn key_login_refused_and_encrypted_key() {
    let t = Setup::new("upload", "");
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    // A key the server does not know.
    let other = t.dir.path().join("other_key");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret-pass", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let cfg = std::fs::read_to_string(&t.config).unwrap();
    let cfg = cfg.replace(
        &format!("private_key = {:?}", t.s.user_key),
        &format!("private_key = {other:?}\nprivate_key_passphrase_env = \"KEY_PASS\""),
    );
    std::fs::write(&t.config, cfg).unwrap();
    let (code, _, err) = t.run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("KEY_PASS"), "{err}");
    let (code, _, err) = t.run(&[("KEY_PASS", "secret-pass")]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused the key"), "{err}");
    assert!(!err.contains("secret-pass"), "{err}");
}

#[test]
fn unknown_host_key_stops_before_anything_is_sent() {
    let t = Setup::new("upload", "");
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    std::fs::write(&t.s.known_hosts, b"").unwrap();
    let (code, recs, err) = t.run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(recs.iter().all(|r| r.get("action").is_none()), "{recs:?}");
    assert!(!t.remote.exists(), "something was written");
    eprintln!("unknown host key message:\n{err}");
    assert!(err.contains("SHA256:"), "{err}");
    let line = format!("[127.0.0.1]:{} ssh-ed25519 AAAA", t.s.port);
    assert!(err.contains(&line), "{err}");
    // The printed line, added to known_hosts, makes the next run work.
    let printed = err
        .lines()
        .find(|l| l.starts_with(&format!("[127.0.0.1]:{}", t.s.port)))
        .unwrap();
    std::fs::write(&t.s.known_hosts, format!("{printed}\n")).unwrap();
    let (code, recs, err) = t.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["x.txt"]);
}

#[test]
fn changed_host_key_is_refused() {
    let t = Setup::new("upload", "");
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    let other = t.dir.path().join("fake_host");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &t.s.known_hosts,
        format!("[127.0.0.1]:{} {}", t.s.port, pubkey.trim()),
    )
    .unwrap();
    let (code, _, err) = t.run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("CHANGED") && err.contains("line 1"), "{err}");
    assert!(!t.remote.exists());
}

#[test]
fn known_hosts_default_is_never_accept_all() {
    // No known_hosts key and a HOME without one: unknown host, exit 3.
    let t = Setup::new("upload", "# known_hosts omitted\n");
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = t.run(&[("HOME", home.path().to_str().unwrap())]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(".ssh/known_hosts"), "{err}");
}

#[test]
fn test_command_reports_success_and_each_failure() {
    let t = Setup::new("upload", "");
    std::fs::create_dir(&t.remote).unwrap();
    t.s.chown(&t.remote);
    let out = t.omnisync(&["test", "j"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("omnisync test said:\n{stdout}");
    assert!(stdout.contains("round-trip"), "{stdout}");
    assert!(stdout.contains("writable"), "{stdout}");
    // The probe is gone.
    assert_eq!(
        std::fs::read_dir(t.remote.join(".omnisync"))
            .unwrap()
            .count(),
        0
    );

    let with = |from: &str, to: &str| {
        let cfg = std::fs::read_to_string(&t.config).unwrap();
        std::fs::write(&t.config, cfg.replace(from, to)).unwrap();
    };
    let fail = |what: &str, needle: &str| {
        let out = t.omnisync(&["test", "j"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what}: {err}");
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
    };
    // Not writable.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&t.remote, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(
            t.remote.join(".omnisync"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        fail("read-only remote_path", "not writable");
        std::fs::set_permissions(
            t.remote.join(".omnisync"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&t.remote, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Missing remote_path.
    std::fs::rename(&t.remote, t.s.data.join("elsewhere")).unwrap();
    fail("missing remote_path", "does not exist");
    std::fs::rename(t.s.data.join("elsewhere"), &t.remote).unwrap();
    // Refused: a port nobody listens on.
    let closed = sshd::free_port();
    with(&format!("port = {}", t.s.port), &format!("port = {closed}"));
    fail("refused", "connection refused");
    with(&format!("port = {closed}"), &format!("port = {}", t.s.port));
    // DNS.
    with("host = \"127.0.0.1\"", "host = \"no-such-host.invalid\"");
    fail("dns", "cannot resolve host");
    with("host = \"no-such-host.invalid\"", "host = \"127.0.0.1\"");
    // Host key.
    let kh = std::fs::read(&t.s.known_hosts).unwrap();
    std::fs::write(&t.s.known_hosts, b"").unwrap();
    fail("unknown host key", "host key verification failed");
    std::fs::write(&t.s.known_hosts, kh).unwrap();
    // Auth: a wrong user.
    with("username = \"omnitest\"", "username = \"nobody-here\"");
    fail("auth", "authentication failed");
    with("username = \"nobody-here\"", "username = \"omnitest\"");
    // Timeout: a listener that accepts and never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sp = silent.local_addr().unwrap().port();
    with(&format!("port = {}", t.s.port), &format!("port = {sp}"));
    let t0 = Instant::now();
    fail("timeout", "did not finish within");
    assert!(t0.elapsed() < Duration::from_secs(60));
    drop(silent);
}

/// Start `omnisync run j --json` in the background.
fn spawn_run(t: &Setup) -> std::process::Child {
    Command::new(bin())
        .arg("--config")
        .arg(&t.config)
        .args(["run", "j", "--json"])
        .env_remove("SSH_AUTH_SOCK")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until one of `partials` holds at least `at` bytes; panics when the run ends first.
fn wait_for_partial(child: &mut std::process::Child, partials: &[PathBuf], at: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for p in partials {
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            if len >= at {
                return len;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended before the cut ({st})");
        }
        assert!(Instant::now() < deadline, "upload did not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn records(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Stop the whole server in the middle of a 256 MiB upload and keep it down: the run tries to
/// reconnect (bounded backoff), then reports the error, keeps the partial and never puts it
/// under the final name. With the server back on the same port, the next run resumes from the
/// checkpoint (sends less than the whole file) and the result is identical.
#[test]
fn upload_cut_mid_way_resumes() {
    const SIZE: usize = 256 << 20;
    let mut t = Setup::new("upload", "chunk_size = \"1MiB\"\n");
    let data = pattern(SIZE, 11);
    std::fs::write(t.local.join("big.bin"), &data).unwrap();
    let want = *blake3::hash(&data).as_bytes();
    drop(data);

    let partial = t.remote.join("big.bin.omnisync-partial");
    let mut child = spawn_run(&t);
    // Past the first checkpoint (every 64 MiB, after an fsync on the server).
    checkpoint::wait_for_checkpoint(
        &mut child,
        &t.dir.path().join("state/omnisync.db"),
        64 << 20,
    );
    let cut_at = wait_for_partial(&mut child, std::slice::from_ref(&partial), 96 << 20);
    let sessions = t.s.stop();
    assert!(
        sessions >= 2,
        "expected the [priv] process and its child, killed {sessions}"
    );
    assert!(cut_at < SIZE as u64);
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the cut run claims success: {stderr}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "giving up took {:?}",
        t0.elapsed()
    );
    let recs = records(&out);
    let err = recs
        .iter()
        .find(|r| r["action"] == "error" && r["path"] == "big.bin")
        .unwrap_or_else(|| panic!("no error reported for big.bin: {recs:?}\n{stderr}"));
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("could not be re-established"),
        "{err}"
    );
    assert!(
        !t.remote.join("big.bin").exists(),
        "a partial took the final name"
    );
    assert!(partial.exists(), "the partial must stay for resuming");

    t.s.restart();
    let (code, recs, err) = t.run(&[]);
    assert_eq!(code, 0, "{err}");
    let up = recs
        .iter()
        .find(|r| r["action"] == "upload")
        .unwrap_or_else(|| panic!("no upload in {recs:?}"));
    let sent = up["bytes"].as_u64().unwrap();
    assert!(sent < SIZE as u64, "sent {sent}: it did not resume");
    assert!(
        sent <= SIZE as u64 - (64 << 20),
        "resumed too early: {sent}"
    );
    let got =
        omnisync::remote::local::hash_file(std::fs::File::open(t.remote.join("big.bin")).unwrap())
            .unwrap();
    assert_eq!(got, want, "content differs after resume");
    assert!(!partial.exists());
}

/// The server restarts (same port) while a run uploads several files, two at a time: the run
/// reconnects, the large transfers resume from their checkpoints on the new connection, and
/// the run ends with every file complete and identical, nothing partial left.
#[test]
fn server_restart_mid_run_reconnects_and_finishes() {
    let mut t = Setup::new("upload", "transfers = 2\nchunk_size = \"1MiB\"\n");
    let mut want = Vec::new();
    for i in 0..2u64 {
        let data = pattern(128 << 20, 20 + i);
        std::fs::write(t.local.join(format!("big{i}.bin")), &data).unwrap();
        want.push((format!("big{i}.bin"), *blake3::hash(&data).as_bytes()));
    }
    std::fs::create_dir(t.local.join("small")).unwrap();
    for i in 0..30u64 {
        let data = pattern(40_000 + i as usize, 100 + i);
        let name = format!("small/s{i:02}.txt");
        std::fs::write(t.local.join(&name), &data).unwrap();
        want.push((name, *blake3::hash(&data).as_bytes()));
    }
    let partials: Vec<PathBuf> = (0..2)
        .map(|i| t.remote.join(format!("big{i}.bin.omnisync-partial")))
        .collect();
    let mut child = spawn_run(&t);
    checkpoint::wait_for_checkpoint(
        &mut child,
        &t.dir.path().join("state/omnisync.db"),
        64 << 20,
    );
    wait_for_partial(&mut child, &partials, 80 << 20);
    t.s.stop();
    std::thread::sleep(Duration::from_millis(1200));
    t.s.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let recs = records(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{recs:?}");
    assert_eq!(actions(&recs, "upload").len(), want.len(), "{recs:?}");
    let notes: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["message"].as_str())
        .filter(|m| m.contains("connection lost and re-established"))
        .collect();
    assert!(!notes.is_empty(), "no transfer was retried: {recs:?}");
    assert!(
        notes.iter().any(|m| m.contains("resumed at byte")),
        "no transfer resumed from its checkpoint: {notes:?}"
    );
    for (name, hash) in &want {
        let got =
            omnisync::remote::local::hash_file(std::fs::File::open(t.remote.join(name)).unwrap())
                .unwrap();
        assert_eq!(&got, hash, "{name} differs");
    }
    let leftovers: Vec<_> = walk(&t.remote)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Nothing left to do.
    let (code, recs, err) = t.run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(actions(&recs, "upload").is_empty(), "{recs:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn secrets_do_not_appear_in_config_check_or_logs() {
    let t = Setup::new("upload", &format!("password = \"{}\"\n", sshd::PASSWORD));
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    let out = t.omnisync(&["run", "j", "--log-level", "trace"], &[]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("upload"), "{all}");
    assert!(
        !all.contains(sshd::PASSWORD),
        "the password appears in the output"
    );
}

#[test]
fn rsa_ecdsa_and_passphrase_keys_and_ssh_agent() {
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut authorized = std::fs::read_to_string(s.dir.path().join("authorized_keys")).unwrap();
    let mut made = Vec::new();
    for (name, args, pass) in [
        ("rsa", &["-t", "rsa", "-b", "3072"][..], ""),
        ("ecdsa", &["-t", "ecdsa", "-b", "256"][..], ""),
        ("ed25519-pass", &["-t", "ed25519"][..], "key-Pass-1"),
    ] {
        let path = keys.path().join(name);
        let st = Command::new("ssh-keygen")
            .arg("-q")
            .args(args)
            .args(["-N", pass, "-C", name, "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        authorized.push_str(&std::fs::read_to_string(path.with_extension("pub")).unwrap());
        made.push((path, pass));
    }
    std::fs::write(s.dir.path().join("authorized_keys"), authorized).unwrap();
    // Unencrypted RSA and ECDSA keys, directly (the passphrase one goes through the binary
    // below: setting the environment of this multi-threaded test process would be a race).
    for (path, _) in made.iter().filter(|(_, pass)| pass.is_empty()) {
        let mut job = sftp_job(&s, &s.data, local.path());
        job.private_key = Some(path.clone());
        let r = SftpRemote::connect(&job)
            .unwrap_or_else(|e| panic!("login with {} failed: {e}", path.display()));
        assert_eq!(r.root_status(), RootStatus::Dir);
    }

    // ssh-agent: neither key nor password configured.
    let sock = keys.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) is needed");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = Command::new("ssh-add")
        .arg("-q")
        .arg(&made[0].0)
        .env("SSH_AUTH_SOCK", &sock)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-add failed");
    let t = Setup::with(s, "upload", "");
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    let cfg = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(
        &t.config,
        cfg.replace(
            &format!("private_key = {:?}", t.s.user_key),
            &format!(
                "private_key = {:?}\nprivate_key_passphrase_env = \"KEY_PASS\"",
                made[2].0
            ),
        ),
    )
    .unwrap();
    let (code, recs, err) = t.run(&[("KEY_PASS", made[2].1)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["x.txt"]);
    std::fs::write(t.local.join("y.txt"), b"y").unwrap();
    let cfg = std::fs::read_to_string(&t.config).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("private_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&t.config, cfg).unwrap();
    let (code, recs, err) = t.run(&[("SSH_AUTH_SOCK", sock.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["y.txt"]);
    // No agent either: exit 3 saying what is missing.
    let (code, _, err) = t.run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ssh-agent"), "{err}");
}

/// Not a check, a measurement: `cargo test --test sftp -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_256mib_up_and_down() {
    const SIZE: usize = 256 << 20;
    let t = Setup::new("upload", "");
    std::fs::write(t.local.join("big.bin"), pattern(SIZE, 5)).unwrap();
    let t0 = Instant::now();
    let (code, _, err) = t.run(&[]);
    assert_eq!(code, 0, "{err}");
    let up = t0.elapsed();
    let d = Setup::with(t.s, "download", "");
    std::fs::create_dir_all(&d.remote).unwrap();
    std::fs::rename(t.remote.join("big.bin"), d.remote.join("big.bin")).unwrap();
    d.s.chown_tree(&d.remote);
    let t0 = Instant::now();
    let (code, _, err) = d.run(&[]);
    assert_eq!(code, 0, "{err}");
    let down = t0.elapsed();
    let mib = (SIZE >> 20) as f64;
    eprintln!(
        "256 MiB upload {:.2}s ({:.0} MiB/s), download {:.2}s ({:.0} MiB/s)",
        up.as_secs_f64(),
        mib / up.as_secs_f64(),
        down.as_secs_f64(),
        mib / down.as_secs_f64()
    );
}

/// Not a check: raw backend read and write speed, without the engine.
#[test]
#[ignore]
fn throughput_backend_read_write() {
    const SIZE: usize = 256 << 20;
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let r = SftpRemote::connect(&sftp_job(&s, &s.data, local.path())).unwrap();
    let data = pattern(SIZE, 9);
    let t0 = Instant::now();
    let mut w = r.open_write("big.bin", 0).unwrap();
    for c in data.chunks(4 << 20) {
        w.write_all(c).unwrap();
    }
    w.close().unwrap();
    let wt = t0.elapsed();
    let t0 = Instant::now();
    let mut rd = r.open_read("big.bin", 0).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0;
    loop {
        let k = rd.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    let rt = t0.elapsed();
    assert_eq!(n, SIZE);
    eprintln!(
        "backend: write {:.0} MiB/s, read {:.0} MiB/s",
        256.0 / wt.as_secs_f64(),
        256.0 / rt.as_secs_f64()
    );
}

/// Every entry below the root as the scanner would see it: (path, kind, size, mtime), and the
/// names that could not be read, both sorted.
type Walked = (Vec<(String, String, u64, i64)>, Vec<String>);

fn walk_remote(r: &SftpRemote) -> Walked {
    let (mut seen, mut bad) = (Vec::new(), Vec::new());
    let mut dirs = vec![String::new()];
    while let Some(d) = dirs.pop() {
        let l = r.list(&d).unwrap();
        bad.extend(l.bad_names.into_iter().map(|n| format!("{d}/{n}")));
        for (name, e) in l.entries {
            let p = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            if e.kind == Kind::Dir {
                dirs.push(p.clone());
            }
            seen.push((p, format!("{:?}", e.kind), e.size, e.mtime));
        }
    }
    seen.sort();
    bad.sort();
    (seen, bad)
}

#[test]
fn find_listing_matches_sftp_listing_and_falls_back() {
    let s = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let root = s.data.join("tree");
    std::fs::create_dir_all(root.join("dir/sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    for (name, len) in [
        ("top.txt", 5usize),
        ("dir/a b", 0),
        ("dir/it's \"q\"", 17),
        ("dir/new\nline", 3),
        ("dir/sub/ünï €", 1000),
        ("dir/sub/deeper/-rf", 2),
        ("dir/$(touch pwned)", 1),
    ] {
        std::fs::write(root.join(name), vec![b'x'; len]).unwrap();
    }
    filetime::set_file_mtime(
        root.join("top.txt"),
        filetime::FileTime::from_unix_time(1_600_000_000, 987_654_321),
    )
    .unwrap();
    std::os::unix::fs::symlink("top.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("dir/dangling")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(root.join("dir").join(bad), b"b").unwrap();
    s.chown_tree(&root);

    let by_find = SftpRemote::connect(&sftp_job(&s, &root, local.path())).unwrap();
    let with_find = walk_remote(&by_find);
    assert!(
        by_find.listed_by_find(),
        "the server runs find: one command for the tree"
    );
    let by_sftp = SftpRemote::connect(&sftp_job(&s, &root, local.path())).unwrap();
    by_sftp.use_find_listing(false);
    let with_sftp = walk_remote(&by_sftp);
    assert!(!by_sftp.listed_by_find());
    assert_eq!(with_find, with_sftp);
    assert!(!s.data.join("tree/pwned").exists() && !Path::new("pwned").exists());
    assert_eq!(
        with_find.1.len(),
        1,
        "the non-UTF-8 name is reported: {:?}",
        with_find.1
    );
    assert!(with_find
        .0
        .iter()
        .any(|e| e.0 == "top.txt" && e.3 == 1_600_000_000_000_000_000));
    assert!(with_find.0.iter().any(|e| e.0 == "empty" && e.1 == "Dir"));
    assert!(!with_find.0.iter().any(|e| e.0 == "fifo"));
    // A root that is a symlink to the folder is followed, as OPENDIR follows it.
    let link_root = s.data.join("tree-link");
    std::os::unix::fs::symlink(&root, &link_root).unwrap();
    let via_link = SftpRemote::connect(&sftp_job(&s, &link_root, local.path())).unwrap();
    assert_eq!(walk_remote(&via_link), with_sftp);
    assert!(via_link.listed_by_find());

    // A folder the login may not read makes find fail: the walk falls back to SFTP listings,
    // which report that folder's listing as failed, and everything else as before.
    let locked = root.join("dir/sub");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let fallback = SftpRemote::connect(&sftp_job(&s, &root, local.path())).unwrap();
    let top = fallback.list("").unwrap();
    assert!(!fallback.listed_by_find());
    assert!(top.entries.iter().any(|(n, _)| n == "top.txt"));
    assert!(fallback.list("dir/sub").is_err());
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}
