//! The ftp/ftps backend against a real vsftpd on 127.0.0.1 (see `common/vsftpd.rs`): the ways a
//! connection is refused (exit 3), a server that cannot set mtimes, a transfer cut mid-way that
//! resumes; and against a scripted fake server, hostile names in a listing.

#[path = "common/checkpoint.rs"]
mod checkpoint;
#[path = "common/sshd.rs"]
mod sshd;
#[path = "common/vsftpd.rs"]
mod vsftpd;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vsftpd::{Options, Vsftpd};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

/// A job `j` against one vsftpd; `extra` is appended to the job and replaces the server's keys
/// it names (TOML refuses a key twice).
struct Setup {
    s: Vsftpd,
    dir: tempfile::TempDir,
    config: PathBuf,
    local: PathBuf,
    remote: PathBuf,
}

impl Setup {
    fn new(opts: Options, mode: &str, extra: &str) -> Setup {
        let s = Vsftpd::start(opts);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir(&local).unwrap();
        let remote = s.data.join("tree");
        let config = dir.path().join("omnisync.toml");
        let keys: String = s
            .job_keys()
            .lines()
            .filter(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                !extra
                    .lines()
                    .any(|e| e.split('=').next().unwrap_or("").trim() == key)
            })
            .map(|l| format!("{l}\n"))
            .collect();
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

    fn omnisync(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn run(&self) -> (i32, Vec<serde_json::Value>, String) {
        let out = self.omnisync(&["run", "j", "--json"]);
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

fn set_mtime(p: &Path, secs: i64) {
    filetime::set_file_mtime(p, filetime::FileTime::from_unix_time(secs, 0)).unwrap();
}

fn ftp_job(s: &Vsftpd, remote: &Path, local: &Path) -> omnisync::job::Job {
    use omnisync::job::{Job, Mode, Protocol, Secret};
    let mut j = Job::local(
        "t",
        local.to_path_buf(),
        remote.to_str().unwrap(),
        Mode::Upload,
    );
    j.protocol = if s.opts.tls {
        Protocol::Ftps
    } else {
        Protocol::Ftp
    };
    j.host = Some("127.0.0.1".into());
    j.port = Some(s.port);
    j.username = Some(sshd::USER.into());
    j.password = Secret::File(s.password_file.clone());
    if s.opts.tls {
        j.tls_ca_file = Some(s.ca_file());
    }
    j
}

/// The `Remote` contract, operation by operation, against vsftpd (plain, then FTPS).
#[test]
fn every_remote_operation_round_trips() {
    use omnisync::model::Kind;
    use omnisync::remote::ftp::FtpRemote;
    use omnisync::remote::{Remote, RootStatus};
    use std::io::Read;
    for tls in [false, true] {
        let s = Vsftpd::start(Options {
            tls,
            ..Options::default()
        });
        let local = tempfile::tempdir().unwrap();
        let root = s.data.join("root");
        let r = FtpRemote::connect(&ftp_job(&s, &root, local.path())).unwrap();
        let caps = r.capabilities();
        assert!(caps.set_mtime && caps.resume_write && !caps.server_copy);
        assert_eq!(caps.mtime_precision_ns, 1_000_000_000);
        let scheme = if tls { "ftps" } else { "ftp" };
        assert!(r
            .describe()
            .starts_with(&format!("{scheme}://omnitest@127.0.0.1:")));
        assert_eq!(r.root_status(), RootStatus::Missing);
        r.create_root().unwrap();
        assert_eq!(r.root_status(), RootStatus::Dir);

        r.mkdir_all("a/b").unwrap();
        let data = pattern(3 << 20, 5);
        let mut w = r.open_write("a/b/f.bin", 0).unwrap();
        w.write_all(&data[..1 << 20]).unwrap();
        w.sync().unwrap();
        w.close().unwrap();
        // Resume the write at 1 MiB (REST + STOR), in two pieces with a checkpoint between.
        let mut w = r.open_write("a/b/f.bin", 1 << 20).unwrap();
        w.write_all(&data[1 << 20..2 << 20]).unwrap();
        w.sync().unwrap();
        w.write_all(&data[2 << 20..]).unwrap();
        w.close().unwrap();
        assert_eq!(std::fs::read(root.join("a/b/f.bin")).unwrap(), data);
        // An empty file is still created.
        r.open_write("a/empty", 0).unwrap().close().unwrap();
        assert_eq!(std::fs::read(root.join("a/empty")).unwrap(), b"");

        let mut got = Vec::new();
        r.open_read("a/b/f.bin", 1000)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, &data[1000..], "REST + RETR");

        r.set_mtime("a/b/f.bin", 1_600_000_000_000_000_000).unwrap();
        let e = r.stat("a/b/f.bin").unwrap().unwrap();
        assert_eq!(
            (e.kind, e.size, e.mtime),
            (Kind::File, 3 << 20, 1_600_000_000_000_000_000)
        );
        assert_eq!(r.stat("a/b").unwrap().unwrap().kind, Kind::Dir);
        assert!(r.stat("a/nope").unwrap().is_none());
        let l = r.list("a").unwrap();
        let mut names: Vec<_> = l
            .entries
            .iter()
            .map(|(n, e)| format!("{n} {}", e.kind.as_str()))
            .collect();
        names.sort();
        assert_eq!(names, vec!["b dir", "empty file"]);
        assert!(r.list("nope").unwrap_err().is_not_found());

        // Rename over an existing file replaces it.
        r.rename("a/empty", "a/b/f.bin").unwrap();
        assert!(r.stat("a/empty").unwrap().is_none());
        assert_eq!(r.stat("a/b/f.bin").unwrap().unwrap().size, 0);
        r.remove_file("a/b/f.bin").unwrap();
        assert!(r.remove_file("a/b/f.bin").unwrap_err().is_not_found());
        r.remove_dir("a/b").unwrap();
        assert!(r.remove_dir("a/b").unwrap_err().is_not_found());
        assert!(r.open_read("a/gone", 0).is_err());
        // Hostile paths are refused before anything is sent.
        assert!(r.stat("../etc").is_err());
    }
}

/// A new file's upload the way the engine does it (write the partial, set its time, rename it
/// into place with `rename_new`), plain and FTPS: after the run's first upload the time travels
/// with the rename (pipelined on plain FTP), and the rename still refuses a file that appeared
/// at the final name, still sets every time, and a time never followed by a rename is set when
/// the remote is dropped.
#[test]
fn new_files_get_their_time_and_never_replace_one_that_appeared() {
    use omnisync::model::Kind;
    use omnisync::remote::ftp::FtpRemote;
    use omnisync::remote::Remote;
    for tls in [false, true] {
        let s = Vsftpd::start(Options {
            tls,
            ..Options::default()
        });
        let local = tempfile::tempdir().unwrap();
        let root = s.data.join("root");
        let mtime = |p: &str| {
            let m = std::fs::metadata(root.join(p)).unwrap();
            filetime::FileTime::from_last_modification_time(&m).unix_seconds()
        };
        {
            let r = FtpRemote::connect(&ftp_job(&s, &root, local.path())).unwrap();
            r.create_root().unwrap();
            r.mkdir_all("d").unwrap();
            r.list("d").unwrap(); // the engine knows the folder from its scan
            let upload = |name: &str, secs: i64| -> bool {
                let partial = format!("d/{name}.omnisync-partial");
                let mut w = r.open_write(&partial, 0).unwrap();
                w.write_all(name.as_bytes()).unwrap();
                let e = w.set_mtime_and_stat(secs * 1_000_000_000).unwrap().unwrap();
                assert_eq!(
                    (e.kind, e.size, e.mtime),
                    (Kind::File, name.len() as u64, secs * 1_000_000_000)
                );
                w.close().unwrap();
                let placed = r.rename_new(&partial, &format!("d/{name}")).unwrap();
                if !placed {
                    r.remove_file(&partial).unwrap();
                }
                placed
            };
            for (i, name) in ["first", "second", "third"].iter().enumerate() {
                let secs = 1_500_000_000 + i as i64 * 1000;
                assert!(upload(name, secs), "{name}");
                assert_eq!(
                    std::fs::read(root.join("d").join(name)).unwrap(),
                    name.as_bytes()
                );
                assert_eq!(mtime(&format!("d/{name}")), secs, "{name}");
            }
            // Something appeared at the final name since the scan: left alone.
            std::fs::write(root.join("d/theirs"), b"not ours").unwrap();
            assert!(!upload("theirs", 1_500_100_000));
            assert_eq!(std::fs::read(root.join("d/theirs")).unwrap(), b"not ours");
            assert!(!root.join("d/theirs.omnisync-partial").exists());
            // Whole small files (`put_new`: over plain FTP, after the uploads above showed
            // that the server keeps what it is sent, one pipelined exchange; over FTPS the
            // steps): in place with their time, never over a file that appeared, never a
            // partial left behind.
            use omnisync::remote::PutNew;
            for (i, name) in ["p1", "p2", "p3"].iter().enumerate() {
                let secs = 1_600_000_000 + i as i64;
                let body = name.repeat(5000 * (i + 1));
                let partial = format!("d/{name}.omnisync-partial");
                let done = r
                    .put_new(
                        &format!("d/{name}"),
                        &partial,
                        body.as_bytes(),
                        Some(secs * 1_000_000_000),
                    )
                    .unwrap();
                match done {
                    PutNew::Done(e) => assert_eq!(
                        (e.kind, e.size, e.mtime),
                        (Kind::File, body.len() as u64, secs * 1_000_000_000)
                    ),
                    other => panic!("{name}: {other:?}"),
                }
                assert_eq!(
                    std::fs::read(root.join("d").join(name)).unwrap(),
                    body.as_bytes()
                );
                assert_eq!(mtime(&format!("d/{name}")), secs, "{name}");
                assert!(!root.join(&partial).exists());
            }
            std::fs::write(root.join("d/theirs2"), b"not ours").unwrap();
            let r2 = r
                .put_new(
                    "d/theirs2",
                    "d/theirs2.omnisync-partial",
                    b"ours",
                    Some(1_600_100_000_000_000_000),
                )
                .unwrap();
            assert!(matches!(r2, PutNew::Appeared), "{r2:?}");
            assert_eq!(std::fs::read(root.join("d/theirs2")).unwrap(), b"not ours");
            assert!(!root.join("d/theirs2.omnisync-partial").exists());
            // A folder the server cannot write to: an error at once, not a 60 s wait for a
            // data connection the server never takes, and the connection stays usable.
            std::fs::create_dir(root.join("ro")).unwrap();
            r.list("ro").unwrap();
            let mut perm = std::fs::metadata(root.join("ro")).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
            std::fs::set_permissions(root.join("ro"), perm).unwrap();
            let t0 = std::time::Instant::now();
            let big = vec![7u8; 1 << 20];
            let refused = r.put_new(
                "ro/x",
                "ro/x.omnisync-partial",
                &big,
                Some(1_600_000_000_000_000_000),
            );
            assert!(refused.is_err(), "{refused:?}");
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "{:?}",
                t0.elapsed()
            );
            assert!(!root.join("ro/x").exists());
            assert!(matches!(
                r.put_new(
                    "d/after",
                    "d/after.omnisync-partial",
                    b"after",
                    Some(1_600_000_000_000_000_000)
                )
                .unwrap(),
                PutNew::Done(_)
            ));
            assert_eq!(std::fs::read(root.join("d/after")).unwrap(), b"after");
            // A written partial that is never renamed (a run cut short).
            let mut w = r.open_write("d/left.omnisync-partial", 0).unwrap();
            w.write_all(b"left").unwrap();
            w.set_mtime_and_stat(1_500_200_000_000_000_000).unwrap();
            w.close().unwrap();
        }
        assert_eq!(
            mtime("d/left.omnisync-partial"),
            1_500_200_000,
            "set on drop"
        );
    }
}

#[test]
fn wrong_password_is_exit_3_without_the_secret() {
    let t = Setup::new(Options::default(), "upload", "");
    std::fs::write(&t.s.password_file, "definitely-wrong-pw\n").unwrap();
    std::fs::write(t.local.join("x.txt"), b"x").unwrap();
    let (code, _, err) = t.run();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("definitely-wrong-pw"), "secret leaked: {err}");
    let out = t.omnisync(&["test", "j"]);
    assert_eq!(out.status.code(), Some(3));
}

/// FTPS offers TLS 1.2 first (so data connections can resume the control connection's
/// session, as vsftpd requires by default); a server that accepts only TLS 1.3 gets TLS 1.3,
/// on the control connection and on every data connection.
#[test]
fn ftps_falls_back_to_tls13_when_the_server_refuses_tls12() {
    let t = Setup::new(
        Options {
            tls: true,
            tls13_only: true,
            ..Options::default()
        },
        "upload",
        "",
    );
    for i in 0..6 {
        std::fs::write(t.local.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload").len(), 6, "{recs:?}");
    for i in 0..6 {
        assert_eq!(
            std::fs::read_to_string(t.remote.join(format!("f{i}.txt"))).unwrap(),
            format!("file {i}")
        );
    }
    let out = t.omnisync(&["test", "j"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ftps_verifies_the_certificate_and_a_wrong_ca_is_exit_3() {
    let tls = Options {
        tls: true,
        ..Options::default()
    };
    let t = Setup::new(tls, "upload", "");
    std::fs::write(t.local.join("x.txt"), b"secret payload").unwrap();
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["x.txt"]);
    assert_eq!(
        std::fs::read(t.remote.join("x.txt")).unwrap(),
        b"secret payload"
    );
    let out = t.omnisync(&["test", "j"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ftps://omnitest@127.0.0.1:") && text.contains("exists and is writable"),
        "{text}"
    );

    let wrong = Setup::new(
        tls,
        "upload",
        &format!("tls_ca_file = {:?}\n", t.s.wrong_ca_file()),
    );
    std::fs::write(wrong.local.join("x.txt"), b"x").unwrap();
    let (code, _, err) = wrong.run();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("TLS certificate check failed") && err.contains("unknown issuer"),
        "{err}"
    );
    assert!(!wrong.remote.join("x.txt").exists());
    let out = wrong.omnisync(&["test", "j"]);
    assert_eq!(out.status.code(), Some(3));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tls_ca_file"), "{text}");
}

#[test]
fn server_without_mtime_setting_records_its_times_and_the_second_run_is_a_no_op() {
    let opts = Options {
        mdtm_write: false,
        ..Options::default()
    };
    let t = Setup::new(opts, "bidirectional", "");
    std::fs::create_dir(t.local.join("sub")).unwrap();
    for (p, data) in [("a.txt", "a"), ("sub/b.txt", "bb")] {
        let f = t.local.join(p);
        std::fs::write(&f, data).unwrap();
        set_mtime(&f, 1_600_000_000);
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload"), vec!["a.txt", "sub/b.txt"]);
    // The server kept its own times (upload time), not ours.
    let m = std::fs::metadata(t.remote.join("a.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(m.mtime(), 1_600_000_000);

    for _ in 0..2 {
        let (code, recs, err) = t.run();
        assert_eq!(code, 0, "{err}");
        let changes: Vec<_> = recs
            .iter()
            .filter(|r| r["action"] != "summary" && r.get("action").is_some())
            .collect();
        assert!(changes.is_empty(), "second run is not a no-op: {changes:?}");
    }

    // A real change on the server is still seen.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(t.remote.join("a.txt"), "changed").unwrap();
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "download"), vec!["a.txt"], "{recs:?}");
}

/// `ftp_active = true` against a server that refuses passive mode: listings, uploads and
/// downloads all go through `PORT`, over plain FTP and over FTPS.
#[test]
fn active_mode_when_the_server_allows_no_passive() {
    for tls in [false, true] {
        let opts = Options {
            active: true,
            tls,
            ..Options::default()
        };
        let t = Setup::new(opts, "bidirectional", "");
        std::fs::write(t.local.join("up.txt"), b"up").unwrap();
        let (code, recs, err) = t.run();
        assert_eq!(code, 0, "tls={tls}: {err}");
        assert_eq!(actions(&recs, "upload"), vec!["up.txt"]);
        std::fs::write(t.remote.join("down.txt"), b"down").unwrap();
        let (uid, gid) = sshd::uid_gid();
        std::os::unix::fs::lchown(t.remote.join("down.txt"), Some(uid), Some(gid)).unwrap();
        let (code, recs, err) = t.run();
        assert_eq!(code, 0, "tls={tls}: {err}");
        assert_eq!(actions(&recs, "download"), vec!["down.txt"]);
        assert_eq!(std::fs::read(t.local.join("down.txt")).unwrap(), b"down");

        // The same job in passive mode fails against this server: the mode really changed.
        let passive = Setup::new(opts, "upload", "ftp_active = false\n");
        std::fs::write(passive.local.join("x.txt"), b"x").unwrap();
        let (code, _, err) = passive.run();
        assert_ne!(
            code, 0,
            "passive mode worked against a PORT-only server: {err}"
        );
    }
}

/// A server that allows few connections per address (here `transfers` + 1, vsftpd
/// `max_per_ip`) never sees more from one run: uploads, listings with their spread-out MDTM
/// pass, and downloads all finish without a "421 too many connections".
#[test]
fn connections_stay_within_transfers_plus_one() {
    let opts = Options {
        max_per_ip: 3,
        ..Options::default()
    };
    let t = Setup::new(opts, "bidirectional", "transfers = 2\n");
    for d in 0..3 {
        std::fs::create_dir_all(t.local.join(format!("d{d}"))).unwrap();
        for i in 0..80 {
            std::fs::write(t.local.join(format!("d{d}/f{i}.txt")), format!("{d}/{i}")).unwrap();
        }
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "upload").len(), 240, "{err}");
    // Changed on the server: listed (MDTM over the pool) and downloaded.
    let (uid, gid) = sshd::uid_gid();
    std::thread::sleep(Duration::from_millis(1100));
    for d in 0..3 {
        for i in 0..10 {
            let p = t.remote.join(format!("d{d}/f{i}.txt"));
            std::fs::write(&p, "changed on the server").unwrap();
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
        }
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "download").len(), 30, "{err}");
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert!(actions(&recs, "download").is_empty() && actions(&recs, "upload").is_empty());
}

/// A server whose names are Latin-1 bytes: with `ftp_encoding = "latin1"` they arrive as the
/// same characters in UTF-8; without it they are not UTF-8, so they are reported, never guessed.
#[test]
fn latin1_names_with_ftp_encoding_and_reported_without() {
    use std::os::unix::ffi::OsStrExt;
    for latin1 in [true, false] {
        let extra = if latin1 {
            "ftp_encoding = \"latin1\"\n"
        } else {
            ""
        };
        let t = Setup::new(Options::default(), "download", extra);
        std::fs::create_dir_all(&t.remote).unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(t.remote.join(name), b"latin").unwrap();
        std::fs::write(t.remote.join("plain.txt"), b"plain").unwrap();
        let (uid, gid) = sshd::uid_gid();
        for e in walk(&t.remote) {
            std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).unwrap();
        }
        let (code, recs, err) = t.run();
        if latin1 {
            assert_eq!(code, 0, "{err}");
            assert_eq!(actions(&recs, "download"), vec!["café.txt", "plain.txt"]);
            assert_eq!(std::fs::read(t.local.join("café.txt")).unwrap(), b"latin");
        } else {
            assert_ne!(
                code, 0,
                "a name that cannot be read must show in the exit code"
            );
            assert_eq!(actions(&recs, "download"), vec!["plain.txt"], "{err}");
            let errors = actions(&recs, "error");
            assert_eq!(errors.len(), 1, "{recs:?}");
            assert!(errors[0].starts_with("caf"), "{errors:?}");
        }
    }
}

/// vsftpd lists only minutes (LIST): a folder of many files gets each time from MDTM, spread
/// over several pooled connections, and every downloaded file carries its exact second.
#[test]
fn many_files_get_exact_times_from_mdtm() {
    let t = Setup::new(Options::default(), "download", "transfers = 4\n");
    std::fs::create_dir_all(t.remote.join("many")).unwrap();
    for i in 0..300i64 {
        let p = t.remote.join(format!("many/f{i:03}.txt"));
        std::fs::write(&p, format!("{i}")).unwrap();
        set_mtime(&p, 1_700_000_000 + i * 7);
    }
    let (uid, gid) = sshd::uid_gid();
    for e in walk(&t.remote) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).unwrap();
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(actions(&recs, "download").len(), 300);
    use std::os::unix::fs::MetadataExt;
    for i in 0..300i64 {
        let m = std::fs::metadata(t.local.join(format!("many/f{i:03}.txt"))).unwrap();
        assert_eq!(m.mtime(), 1_700_000_000 + i * 7, "f{i:03}");
    }
    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    assert!(actions(&recs, "download").is_empty(), "{recs:?}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// Kill the server's session processes in the middle of a 256 MiB upload; the next run
/// resumes from its checkpoint (sends less than the whole file) and the result is identical.
#[test]
fn upload_cut_mid_way_resumes() {
    const SIZE: usize = 256 << 20;
    let t = Setup::new(Options::default(), "upload", "chunk_size = \"1MiB\"\n");
    let data = pattern(SIZE, 11);
    std::fs::write(t.local.join("big.bin"), &data).unwrap();
    let want = *blake3::hash(&data).as_bytes();
    drop(data);

    let partial = t.remote.join("big.bin.omnisync-partial");
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&t.config)
        .args(["run", "j", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let cut_at = loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        // Past the first checkpoint (every 64 MiB, after the server confirmed the bytes).
        if len >= 96 << 20 {
            let n = t.s.kill_sessions();
            assert!(n >= 1, "no session process to kill");
            break len;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended before the cut ({st})");
        }
        assert!(Instant::now() < deadline, "upload did not progress");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(cut_at < SIZE as u64);
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "the cut run claims success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !t.remote.join("big.bin").exists(),
        "a partial took the final name"
    );
    assert!(partial.exists(), "the partial must stay for resuming");

    let (code, recs, err) = t.run();
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
    drop(t.dir);
}

/// The same cut during a 256 MiB download: the next run continues with `REST` + `RETR`.
/// New small files go to the server in batches over pooled connections (`put_new_many`).
/// The server's session processes are killed twice in the middle of 3,000 of them: no file
/// ever has wrong content under its final name, and the next run completes the tree and
/// leaves no partial behind.
#[test]
fn sessions_killed_during_batches_of_small_files_lose_nothing() {
    const FILES: usize = 3000;
    let t = Setup::new(Options::default(), "upload", "");
    for i in 0..FILES {
        let p = t.local.join(format!("d{}/f{i}.txt", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pattern(500 + i % 700, i as u64)).unwrap();
    }
    let on_server = || walk(&t.remote).len();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&t.config)
        .args(["run", "j", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    for at in [FILES / 10, FILES / 2] {
        while on_server() < at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the upload did not progress ({} on the server); stderr:\n{}",
                    on_server(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            kills += usize::from(t.s.kill_sessions() > 0);
        }
    }
    assert!(kills >= 1, "the run ended before any session was killed");
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "first run: exit {:?} after {kills} kills; {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    let check = |allow_missing: bool| {
        let mut present = 0;
        for p in walk(&t.remote).into_iter().filter(|p| p.is_file()) {
            let rel = p.strip_prefix(&t.remote).unwrap();
            let name = rel.to_string_lossy();
            if name.ends_with(".omnisync-partial") {
                assert!(
                    allow_missing,
                    "a partial is left after a complete run: {name}"
                );
                continue;
            }
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(t.local.join(rel)).unwrap(),
                "{name} has other content than the local file"
            );
            present += 1;
        }
        assert!(
            allow_missing || present == FILES,
            "{present} of {FILES} files"
        );
    };
    check(true);
    let (code, _, err) = t.run();
    assert_eq!(
        code,
        0,
        "{err}\nfirst run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(false);
}

#[test]
fn download_cut_mid_way_resumes() {
    const SIZE: usize = 256 << 20;
    let t = Setup::new(Options::default(), "download", "chunk_size = \"1MiB\"\n");
    std::fs::create_dir_all(&t.remote).unwrap();
    let data = pattern(SIZE, 12);
    std::fs::write(t.remote.join("big.bin"), &data).unwrap();
    let (uid, gid) = sshd::uid_gid();
    for e in walk(&t.remote) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).unwrap();
    }
    let want = *blake3::hash(&data).as_bytes();
    drop(data);

    let partial = t.local.join("big.bin.omnisync-partial");
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&t.config)
        .args(["run", "j", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the first checkpoint: the local side records it once its background fsync (begun
    // at 64 MiB) has finished, so the partial's size alone does not say that one exists.
    checkpoint::wait_for_checkpoint(
        &mut child,
        &t.dir.path().join("state/omnisync.db"),
        64 << 20,
    );
    assert!(t.s.kill_sessions() >= 1, "no session process to kill");
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "the cut run claims success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.local.join("big.bin").exists());

    let (code, recs, err) = t.run();
    assert_eq!(code, 0, "{err}");
    let down = recs
        .iter()
        .find(|r| r["action"] == "download")
        .unwrap_or_else(|| panic!("no download in {recs:?}"));
    let sent = down["bytes"].as_u64().unwrap();
    assert!(
        sent <= SIZE as u64 - (64 << 20),
        "sent {sent}: it did not resume"
    );
    let got =
        omnisync::remote::local::hash_file(std::fs::File::open(t.local.join("big.bin")).unwrap())
            .unwrap();
    assert_eq!(got, want, "content differs after resume");
    assert!(!partial.exists());
}

// ---------------------------------------------------------------------------------------------
// A scripted server for what no real server would list
// ---------------------------------------------------------------------------------------------

/// A one-folder FTP server (`/srv`) whose LIST reply is `listing`, served from a thread. Only
/// `/srv/a.txt` ("hello") can be read; every other path is missing.
fn fake_server(listing: &'static str, mlsd: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(conn, listing, mlsd);
            });
        }
    });
    port
}

/// With `mlsd`, the server also offers MLST/MLSD (the listing is then MLSD lines) and MFMT.
fn serve(conn: TcpStream, listing: &str, mlsd: bool) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    let mut data: Option<TcpListener> = None;
    out.write_all(b"220 fake\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        let (cmd, arg) = l.split_once(' ').unwrap_or((l, ""));
        let reply: String = match cmd.to_ascii_uppercase().as_str() {
            "USER" => "331 password".into(),
            "PASS" => "230 ok".into(),
            "TYPE" | "OPTS" => "200 ok".into(),
            "NOOP" => "200 ok".into(),
            "FEAT" if mlsd => "211-Features:\r\n EPSV\r\n MDTM\r\n SIZE\r\n MFMT\r\n \
                               MLST type*;size*;modify*;\r\n211 End"
                .into(),
            "FEAT" => "211-Features:\r\n EPSV\r\n MDTM\r\n SIZE\r\n211 End".into(),
            "MLST" if mlsd && arg == "/srv/a.txt" => {
                "250-Listing\r\n type=file;size=5;modify=20231114221320; /srv/a.txt\r\n250 End"
                    .into()
            }
            "MLST" if mlsd && arg == "/srv" => {
                "250-Listing\r\n type=dir;modify=20231114221320; /srv\r\n250 End".into()
            }
            "PWD" => "257 \"/\"".into(),
            "CWD" if arg == "/srv" => "250 ok".into(),
            "SIZE" if arg == "/srv/a.txt" => "213 5".into(),
            "MDTM" => "213 20231114221320".into(),
            "EPSV" => {
                let d = TcpListener::bind("127.0.0.1:0")?;
                let p = d.local_addr()?.port();
                data = Some(d);
                format!("229 Entering Extended Passive Mode (|||{p}|)")
            }
            c @ ("LIST" | "MLSD" | "RETR") => {
                let Some(d) = data.take() else {
                    out.write_all(b"425 no data connection\r\n")?;
                    continue;
                };
                if c == "RETR" && arg != "/srv/a.txt" {
                    out.write_all(b"550 no such file\r\n")?;
                    continue;
                }
                out.write_all(b"150 here it comes\r\n")?;
                let (mut s, _) = d.accept()?;
                if c != "RETR" {
                    s.write_all(listing.as_bytes())?;
                } else {
                    s.write_all(b"hello")?;
                }
                drop(s);
                "226 done".into()
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => "550 no".into(),
        };
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}

/// A server with MLSD, MLST and MFMT (none of which vsftpd has): listings come from MLSD with
/// exact seconds, stats from MLST, and the download carries the server's time.
#[test]
fn mlsd_and_mlst_servers() {
    let listing = "type=cdir;modify=20231114221320; .\r\n\
                   type=file;size=5;modify=20231114221320; a.txt\r\n\
                   type=OS.unix=symlink;modify=20231114221320; link\r\n";
    let port = fake_server(listing, true);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let config = dir.path().join("omnisync.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n\n[[job]]\nname = \"j\"\nmode = \"download\"\n\
             protocol = \"ftp\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"u\"\n\
             password = \"p\"\nremote_path = \"/srv\"\nlocal_path = {:?}\n",
            dir.path().join("state"),
            local
        ),
    )
    .unwrap();
    let run = || {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .args(["run", "j", "--json"])
            .output()
            .unwrap();
        let recs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (
            out.status.code(),
            recs,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, recs, err) = run();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(actions(&recs, "download"), vec!["a.txt"], "{recs:?}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(local.join("a.txt")).unwrap();
    assert_eq!((m.len(), m.mtime()), (5, 1_700_000_000));
    let (code, recs, err) = run();
    assert_eq!(code, Some(0), "{err}");
    assert!(actions(&recs, "download").is_empty(), "{recs:?}");
}

#[test]
fn hostile_names_in_a_listing_are_refused() {
    let listing = "-rw-r--r-- 1 u g 5 Nov 14 22:13 a.txt\r\n\
                   -rw-r--r-- 1 u g 5 Nov 14 22:13 ../escape.txt\r\n\
                   -rw-r--r-- 1 u g 5 Nov 14 22:13 /tmp/absolute.txt\r\n\
                   -rw-r--r-- 1 u g 5 Nov 14 22:13 sub/slash.txt\r\n\
                   drwxr-xr-x 2 u g 4096 Nov 14 22:13 ..\r\n\
                   this line is no listing at all\r\n";
    let port = fake_server(listing, false);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("inner/local");
    std::fs::create_dir_all(&local).unwrap();
    let config = dir.path().join("omnisync.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n\n[[job]]\nname = \"j\"\nmode = \"download\"\n\
             protocol = \"ftp\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"u\"\n\
             password = \"p\"\nremote_path = \"/srv\"\nlocal_path = {:?}\n",
            dir.path().join("state"),
            local
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "j", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let recs: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        actions(&recs, "download"),
        vec!["a.txt"],
        "{stdout}{stderr}"
    );
    assert_eq!(std::fs::read(local.join("a.txt")).unwrap(), b"hello");
    let errors = actions(&recs, "error");
    for bad in ["../escape.txt", "/tmp/absolute.txt", "sub/slash.txt"] {
        assert!(
            errors.iter().any(|e| e.contains(bad)),
            "{bad} not reported: {errors:?}\n{stdout}{stderr}"
        );
    }
    assert!(
        errors.iter().any(|e| e.contains("this line is no listing")),
        "unparseable line not reported: {errors:?}"
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "errors must show in the exit code"
    );
    // Nothing was written anywhere but the local root.
    assert!(!dir.path().join("inner/escape.txt").exists());
    assert!(!Path::new("/tmp/absolute.txt").exists());
    let mut names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.txt"]);
}
