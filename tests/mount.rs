//! `omnisync mount`: real FUSE mounts through the binary, on every backend (local, and real
//! sshd, vsftpd and smbd servers through `tests/common`). Skipped (with the reason printed)
//! where /dev/fuse is missing or we are not root.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::ftp_backend::FtpBackend;
use common::sftp_backend::SftpBackend;
use common::smb_backend::SmbBackend;
use common::{sshd, toml_str, Backend, LocalBackend};

const CHUNK: u64 = 1 << 20;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

/// Why the mount tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mounting without libfuse needs root".into());
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipping the mount test: {why}");
            return;
        }
    };
}

fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Setup {
    dir: tempfile::TempDir,
    remote: PathBuf,
    mnt: PathBuf,
    config: PathBuf,
}

/// A download job `j` whose remote side is `b`'s folder.
fn setup(b: &dyn Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let remote = b.remote_root();
    let local = dir.path().join("local");
    let mnt = dir.path().join("mnt");
    for d in [&remote, &local, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let config = dir.path().join("omnisync.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {}\n\n{}",
            toml_str(state.to_str().unwrap()),
            b.job_toml(
                "j",
                "download",
                &format!(
                    "local_path = {}\ntrigger = \"manual\"\n",
                    toml_str(local.to_str().unwrap())
                )
            )
        ),
    )
    .unwrap();
    Setup {
        dir,
        remote,
        mnt,
        config,
    }
}

/// A small tree plus a sparse 256 MiB file with data at a few places, and (where the backend
/// shows links as links) three symlinks: relative, up a folder, dangling. All given to the
/// server's user.
fn fill(b: &dyn Backend) {
    let remote = b.remote_root();
    std::fs::create_dir_all(remote.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(remote.join("empty dir")).unwrap();
    std::fs::write(remote.join("a.txt"), b"hello mount\n").unwrap();
    std::fs::write(remote.join("sub/deeper/c"), b"").unwrap();
    let big: Vec<u8> = (0..3 * CHUNK + 777)
        .map(|i| (i * 2654435761 % 251) as u8)
        .collect();
    std::fs::write(remote.join("sub/b.bin"), &big).unwrap();
    let mut f = std::fs::File::create(remote.join("sparse.img")).unwrap();
    f.set_len(256 * CHUNK).unwrap();
    for at in [0, 100 * CHUNK + 12_345, 256 * CHUNK - 10] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&at.to_le_bytes()).unwrap();
        f.write_all(b"marker").unwrap_or(());
    }
    f.set_len(256 * CHUNK).unwrap();
    if b.remote_symlinks() {
        std::os::unix::fs::symlink("a.txt", remote.join("link")).unwrap();
        std::os::unix::fs::symlink("../a.txt", remote.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("no/such/file", remote.join("dangling")).unwrap();
    }
    adopt_tree(b, &remote);
}

fn adopt_tree(b: &dyn Backend, p: &Path) {
    b.adopt(p);
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            adopt_tree(b, &e.unwrap().path());
        }
    }
}

/// A mount served by `omnisync mount … --foreground`, unmounted (and killed) when dropped.
struct Mounted {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Mounted {
    fn start(s: &Setup) -> Mounted {
        Mounted::start_with(s, &[])
    }

    fn start_with(s: &Setup, extra: &[&str]) -> Mounted {
        let child = Command::new(bin())
            .arg("--config")
            .arg(&s.config)
            .args(["mount", "j"])
            .arg(&s.mnt)
            .arg("--foreground")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.dir.path().join("mount.log")).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            mnt: s.mnt.clone(),
        };
        let t0 = Instant::now();
        while !is_mounted(&s.mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mount exited with {st}: {}",
                    std::fs::read_to_string(s.dir.path().join("mount.log")).unwrap()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no mount after 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// SIGTERM, then the process must exit 0 and leave no mount behind.
    fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "mount exited with {status}");
        assert!(
            !is_mounted(&self.mnt),
            "still in /proc/mounts after SIGTERM"
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// One path as `stat` shows it: kind (`d`, `f`, `l`), size, mtime in seconds, link target.
type Seen = (char, u64, i64, Option<PathBuf>);

/// Everything below `root`, skipping `.omnisync`; never follows a link.
fn walk(root: &Path) -> BTreeMap<String, Seen> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if rel == ".omnisync" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, link) = if ft.is_symlink() {
                ('l', Some(std::fs::read_link(&p).unwrap()))
            } else if ft.is_dir() {
                ('d', None)
            } else {
                ('f', None)
            };
            let size = if kind == 'd' { 0 } else { m.len() };
            out.insert(rel, (kind, size, m.mtime(), link));
            if kind == 'd' {
                go(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn hash(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

/// `.omnisync/status` as key → value; every line must be `key: value`.
fn status(mnt: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(mnt.join(".omnisync/status")).unwrap();
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad status line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn remote_reads(mnt: &Path) -> u64 {
    status(mnt)["remote_reads"].parse().unwrap()
}

/// What every backend must show: the same tree, sizes, mtimes, links and contents; cached
/// re-reads; ranged reads of a big file; `.omnisync/status`. `links_shown`: the backend reads
/// symlinks (local, sftp); elsewhere they are left out of the view. `dir_minutes`: the
/// backend lists folders' mtimes to the minute (FTP `LIST`: `MDTM` is for files).
fn check_view(remote: &Path, mnt: &Path, links_shown: bool, dir_minutes: bool) {
    let minutes = |mut t: BTreeMap<String, Seen>| {
        if dir_minutes {
            for seen in t.values_mut().filter(|s| s.0 == 'd') {
                seen.2 -= seen.2.rem_euclid(60);
            }
        }
        t
    };
    let mut want = minutes(walk(remote));
    if !links_shown {
        want.retain(|_, seen| seen.0 != 'l');
    }
    let got = minutes(walk(mnt));
    assert_eq!(
        got, want,
        "tree through the mount differs from the remote's"
    );
    for (p, (kind, ..)) in &want {
        if *kind == 'f' && p != "sparse.img" {
            assert_eq!(hash(&mnt.join(p)), hash(&remote.join(p)), "content of {p}");
        }
    }
    let st = status(mnt);
    assert_eq!(st["job"], "j");
    assert_eq!(st["files"], "4");
    assert_eq!(st["symlinks"], if links_shown { "3" } else { "0" });
    assert_eq!(st["last_run"], "never");
    assert_eq!(st["pending_changes"], "0");
    if links_shown {
        // The kernel resolves a link's text within the mount, as for any symlink.
        assert_eq!(std::fs::read(mnt.join("sub/up")).unwrap(), b"hello mount\n");
        assert_eq!(
            std::fs::read_link(mnt.join("dangling")).unwrap(),
            Path::new("no/such/file")
        );
        let ls = Command::new("ls").arg("-l").arg(mnt).output().unwrap();
        let ls = String::from_utf8_lossy(&ls.stdout);
        assert!(ls.contains("link -> a.txt"), "ls -l shows {ls}");
        assert!(ls
            .lines()
            .any(|l| l.starts_with('l') && l.ends_with("dangling -> no/such/file")));
    }

    // Everything read once is now cached: reading it all again sends nothing to the remote.
    let before = remote_reads(mnt);
    assert_eq!(
        std::fs::read(mnt.join("sub/b.bin")).unwrap(),
        std::fs::read(remote.join("sub/b.bin")).unwrap()
    );
    assert_eq!(
        remote_reads(mnt),
        before,
        "a second read went to the remote"
    );

    // 4 KiB in the middle of 256 MiB fetches the one chunk that holds it (kernel read-ahead
    // may at most touch the next one).
    read_sparse_middle(mnt);
    let fetched = remote_reads(mnt) - before;
    assert!(
        (1..=2).contains(&fetched),
        "a 4 KiB read fetched {fetched} chunks"
    );
    let bytes: u64 = status(mnt)["remote_bytes"].parse().unwrap();
    assert!(bytes < 64 * CHUNK, "fetched {bytes} bytes in all");
}

fn read_sparse_middle(mnt: &Path) {
    let at = 100 * CHUNK + 12_345;
    let mut f = std::fs::File::open(mnt.join("sparse.img")).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..8], &at.to_le_bytes());
    assert_eq!(&buf[8..14], b"marker");
}

/// The files the mount's cache folder holds.
fn cache_files(s: &Setup) -> usize {
    std::fs::read_dir(s.dir.path().join("state/mount-cache/j"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".chunks")
        })
        .count()
}

/// After `check_view` and an unmount: a.txt changes on the remote; the next mount serves what
/// the first one read from the cache it left (no remote read), and fetches a.txt anew (its
/// old chunks dropped).
fn remount_reuses_the_cache(b: &dyn Backend, s: &Setup) {
    let sparse = s.remote.join("sparse.img").exists();
    assert_eq!(cache_files(s), 3, "a.txt, b.bin, sparse.img");
    std::fs::write(s.remote.join("a.txt"), b"changed, and longer\n").unwrap();
    b.adopt(&s.remote.join("a.txt"));
    let m = Mounted::start(s);
    assert_eq!(
        cache_files(s),
        1 + sparse as usize,
        "a.txt's stale cache kept"
    );
    assert_eq!(
        std::fs::read(s.mnt.join("sub/b.bin")).unwrap(),
        std::fs::read(s.remote.join("sub/b.bin")).unwrap()
    );
    if sparse {
        read_sparse_middle(&s.mnt);
    }
    let st = status(&s.mnt);
    assert_eq!(st["remote_reads"], "0", "cached before the remount: {st:?}");
    assert!(st["cache_hits"].parse::<u64>().unwrap() >= 4, "{st:?}");
    assert_eq!(
        std::fs::read(s.mnt.join("a.txt")).unwrap(),
        b"changed, and longer\n"
    );
    assert_eq!(remote_reads(&s.mnt), 1);
    m.terminate();
}

/// The whole check on backend `b`: view, links, cache; `more` runs while the first mount is
/// up; then an unmount on SIGTERM and a remount that reuses the cache.
fn view_on(b: &dyn Backend, links_shown: bool, more: impl FnOnce(&Setup)) {
    let s = setup(b);
    fill(b);
    let m = Mounted::start(&s);
    check_view(&s.remote, &s.mnt, links_shown, b.name().starts_with("ftp"));
    expect_erofs("create", std::fs::File::create(s.mnt.join("new")));
    more(&s);
    m.terminate();
    remount_reuses_the_cache(b, &s);
}

fn expect_erofs(what: &str, r: std::io::Result<impl Sized>) {
    match r {
        Ok(_) => panic!("{what} succeeded on a read-only mount"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
    }
}

#[test]
fn local_view_reads_caches_refuses_writes_and_unmounts_on_sigterm() {
    require_fuse!();
    view_on(
        &LocalBackend::new(),
        true,
        refuses_writes_and_reads_enoent_once_removed,
    );
}

fn refuses_writes_and_reads_enoent_once_removed(s: &Setup) {
    let mnt = &s.mnt;
    expect_erofs("create", std::fs::File::create(mnt.join("new")));
    expect_erofs(
        "open for writing",
        std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("a.txt")),
    );
    expect_erofs(
        "truncate",
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(mnt.join("a.txt")),
    );
    expect_erofs("mkdir", std::fs::create_dir(mnt.join("d")));
    expect_erofs("unlink", std::fs::remove_file(mnt.join("a.txt")));
    expect_erofs("rmdir", std::fs::remove_dir(mnt.join("empty dir")));
    expect_erofs("rename", std::fs::rename(mnt.join("a.txt"), mnt.join("b")));
    expect_erofs(
        "chmod",
        std::fs::set_permissions(
            mnt.join("a.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        ),
    );
    expect_erofs(
        "symlink",
        std::os::unix::fs::symlink("a.txt", mnt.join("l")),
    );
    expect_erofs("link", std::fs::hard_link(mnt.join("a.txt"), mnt.join("h")));
    expect_erofs(
        "write status",
        std::fs::write(mnt.join(".omnisync/status"), b"x"),
    );
    // utimes
    let f = std::fs::File::open(mnt.join("a.txt")).unwrap();
    expect_erofs(
        "set mtime",
        f.set_modified(std::time::SystemTime::UNIX_EPOCH),
    );
    drop(f);
    assert_eq!(
        std::fs::read(s.remote.join("a.txt")).unwrap(),
        b"hello mount\n"
    );
    let _ = std::fs::read_to_string(mnt.join(".omnisync/journal")).unwrap();

    // Removed on the remote since the listing: a read of what is not cached is ENOENT.
    std::fs::remove_file(s.remote.join("sparse.img")).unwrap();
    let mut f = std::fs::File::open(mnt.join("sparse.img")).unwrap();
    let mut buf = [0u8; 16];
    let e = f.read_exact(&mut buf).expect_err("read a removed file");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}

#[test]
fn sftp_view_matches_the_server_and_reuses_its_cache_after_a_remount() {
    require_fuse!();
    view_on(&SftpBackend::start(), true, |s| {
        assert!(status(&s.mnt)["remote"].starts_with("sftp://"));
    });
}

/// vsftpd lists links as links but FTP cannot read their targets: they are left out.
#[test]
fn ftp_view_matches_the_server_and_reuses_its_cache_after_a_remount() {
    require_fuse!();
    view_on(&FtpBackend::start(false), false, |s| {
        assert!(status(&s.mnt)["remote"].starts_with("ftp://"));
    });
}

/// Samba shows a link as what it points to; none are seeded.
#[test]
fn smb_view_matches_the_server_and_reuses_its_cache_after_a_remount() {
    require_fuse!();
    view_on(&SmbBackend::start(), false, |s| {
        assert!(status(&s.mnt)["remote"].starts_with("smb://"));
    });
}

#[test]
fn a_hung_server_gives_eio_after_the_read_timeout_and_never_stalls_the_mount() {
    require_fuse!();
    let b = SftpBackend::start();
    let server = b.sshd();
    let s = setup(&b);
    std::fs::write(s.remote.join("f"), b"never read before").unwrap();
    b.adopt(&s.remote.join("f"));
    let m = Mounted::start_with(&s, &["--read-timeout", "2s"]);
    // Freeze the connection's server side (not the listener): the remote stops answering.
    let sessions = sshd::descendants(server.pid());
    assert!(!sessions.is_empty());
    for p in &sessions {
        // SAFETY: signalling processes of the sshd this test started.
        unsafe { libc::kill(*p as i32, libc::SIGSTOP) };
    }
    let mnt = s.mnt.clone();
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || std::fs::read(mnt.join("f")));
    // Meanwhile the tree and the status still answer.
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.mnt.join("f").exists());
    assert_eq!(status(&s.mnt)["job"], "j");
    let r = reader.join().unwrap();
    let took = t0.elapsed();
    for p in &sessions {
        // SAFETY: as above.
        unsafe { libc::kill(*p as i32, libc::SIGCONT) };
    }
    let e = r.expect_err("a read from a frozen server succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(took < Duration::from_secs(15), "EIO took {took:?}");
    m.terminate();
}

#[test]
fn refresh_shows_remote_changes_and_a_vanished_file_is_enoent() {
    require_fuse!();
    let b = LocalBackend::new();
    let s = setup(&b);
    std::fs::write(s.remote.join("f"), b"one").unwrap();
    std::fs::write(s.remote.join("gone"), b"bye").unwrap();
    // A run first: the status shows it.
    let run = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .args(["run", "j"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let child = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .args(["mount", "j"])
        .arg(&s.mnt)
        .args(["--foreground", "--refresh", "1s", "--cache-size", "4MiB"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Mounted {
        child: Some(child),
        mnt: s.mnt.clone(),
    };
    wait_until("the mount", Duration::from_secs(60), || is_mounted(&s.mnt));
    assert_eq!(std::fs::read(s.mnt.join("f")).unwrap(), b"one");
    let st = status(&s.mnt);
    assert_eq!(st["cache_limit"], (4 * CHUNK).to_string());
    assert_eq!(st["last_run_result"], "ok");
    assert_eq!(st["last_run_errors"], "0");
    assert!(st["last_run_finished"].ends_with('Z'), "{st:?}");
    // The cache stays within --cache-size: 6 MiB read through a 4 MiB cache.
    let six: Vec<u8> = (0..6 * CHUNK).map(|i| (i % 253) as u8).collect();
    std::fs::write(s.remote.join("six"), &six).unwrap();
    wait_until("six to appear", Duration::from_secs(20), || {
        s.mnt.join("six").exists()
    });
    assert!(std::fs::read(s.mnt.join("six")).unwrap() == six);
    let used: u64 = status(&s.mnt)["cache_bytes"].parse().unwrap();
    assert!(used <= 4 * CHUNK, "cache holds {used} bytes");
    let on_disk: u64 = std::fs::read_dir(s.dir.path().join("state/mount-cache/j"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum();
    assert!(on_disk <= 5 * CHUNK, "cache files use {on_disk} bytes");
    // Changed size and mtime: a new listing, and the content is fetched anew.
    std::fs::write(s.remote.join("f"), b"two, longer").unwrap();
    std::fs::remove_file(s.remote.join("gone")).unwrap();
    wait_until("the refresh", Duration::from_secs(20), || {
        std::fs::read(s.mnt.join("f")).unwrap() == b"two, longer"
    });
    wait_until("gone to go", Duration::from_secs(20), || {
        !s.mnt.join("gone").exists()
    });
    m.terminate();
}

#[test]
fn detached_mount_returns_once_mounted_and_ends_on_unmount() {
    require_fuse!();
    let b = LocalBackend::new();
    let s = setup(&b);
    std::fs::write(s.remote.join("f"), b"x").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .args(["mount", "j"])
        .arg(&s.mnt)
        .output()
        .unwrap();
    let guard = Mounted {
        child: None,
        mnt: s.mnt.clone(),
    };
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&s.mnt));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let pid: i32 = text
        .split("pid ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert_eq!(std::fs::read(s.mnt.join("f")).unwrap(), b"x");
    // A second mount on the same folder is refused.
    let again = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .args(["mount", "j"])
        .arg(&s.mnt)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let um = if Path::new("/usr/bin/fusermount3").exists() {
        Command::new("fusermount3").arg("-u").arg(&s.mnt).status()
    } else {
        Command::new("umount").arg(&s.mnt).status()
    };
    assert!(um.unwrap().success());
    // SAFETY: kill(pid, 0) only checks that the process exists.
    wait_until(
        "the mount process to end",
        Duration::from_secs(20),
        || unsafe { libc::kill(pid, 0) != 0 },
    );
    assert!(!is_mounted(&s.mnt));
    drop(guard);
}
