//! Fixtures for the end-to-end suites: a job's two trees in a temp folder, a config file, and
//! the real `omnisync` binary run through `assert_cmd`.
//!
//! Everything a scenario needs from the remote side goes through [`Backend`], so the same
//! scenario functions can run against `protocol = "local"` (a second directory, here), a real
//! OpenSSH sshd ([`sftp_backend::SftpBackend`]) and, later, FTP/SMB servers whose served directory lives on
//! this machine.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filetime::FileTime;
use serde_json::Value;
use tempfile::TempDir;

pub mod ftp_backend;
pub mod sftp_backend;
pub mod smb_backend;
pub mod smbd;
pub mod sshd;
pub mod vsftpd;

/// A base mtime for seeded files (2023-11-14T22:13:20Z), whole seconds so that every protocol
/// can represent it.
pub const T0: i64 = 1_700_000_000;

/// The remote side of a job, as a scenario sees it.
pub trait Backend {
    /// Short name for messages (`local`, `sftp`, …).
    fn name(&self) -> &str;

    /// A complete `[[job]]` table: `name`, `mode`, the remote-side keys (protocol, remote_path,
    /// host, credentials…) and then `extra` verbatim (which the fixture uses for `local_path`
    /// and the scenario's own keys).
    fn job_toml(&self, name: &str, mode: &str, extra: &str) -> String;

    /// The folder on this machine that the job's `remote_path` shows: scenarios seed and inspect
    /// the remote tree here directly.
    fn remote_root(&self) -> PathBuf;

    /// Called after a scenario created or changed something under [`Backend::remote_root`]
    /// directly (real servers: give it to the server's user, with `lchown`: `path` may be a
    /// symlink, never follow it).
    fn adopt(&self, _path: &Path) {}

    /// Granularity of the remote side's mtimes in nanoseconds (1e9 for SFTP/FTP).
    fn mtime_precision_ns(&self) -> i64 {
        1
    }

    /// Modification times written to the remote stick (SFTP SETSTAT, FTP MFMT…).
    fn preserves_mtime(&self) -> bool {
        true
    }

    /// The remote side shows symlinks as links (so they can be seeded there and must be skipped).
    fn remote_symlinks(&self) -> bool {
        true
    }

    /// Names reach the remote byte-exact (no Unicode normalisation, no case folding).
    fn byte_exact_names(&self) -> bool {
        true
    }

    /// Where a relative path lives under [`Backend::remote_root`] (SMB stores names Windows
    /// forbids `%XX`-encoded).
    fn disk_path(&self, rel: &str) -> String {
        rel.to_string()
    }

    /// The relative path a path under [`Backend::remote_root`] stands for (the inverse of
    /// [`Backend::disk_path`]).
    fn path_of_disk(&self, disk_rel: &str) -> String {
        disk_rel.to_string()
    }

    /// Let the binary reach the remote when it runs under `uid` (root-only permission tests run
    /// it as `nobody`, since root reads anything): a plain directory is given to `uid`, a server
    /// keeps its tree and `uid` gets the client files (key, known_hosts). `Err(why)` when the
    /// backend cannot; the scenario prints why and skips its permission case.
    fn allow_client_uid(&self, _uid: u32) -> Result<(), String> {
        Err(format!(
            "the {} backend cannot run the binary under another uid",
            self.name()
        ))
    }
}

/// `protocol = "local"`: the remote is another directory on this machine.
pub struct LocalBackend {
    dir: TempDir,
}

impl LocalBackend {
    pub fn new() -> LocalBackend {
        let dir = tempfile::Builder::new()
            .prefix("omnisync-remote-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("remote")).unwrap();
        LocalBackend { dir }
    }
}

impl Default for LocalBackend {
    fn default() -> Self {
        LocalBackend::new()
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn job_toml(&self, name: &str, mode: &str, extra: &str) -> String {
        format!(
            "[[job]]\nname = {}\nmode = {}\nprotocol = \"local\"\nremote_path = {}\n{extra}",
            toml_str(name),
            toml_str(mode),
            toml_str(self.remote_root().to_str().unwrap()),
        )
    }

    fn remote_root(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    fn allow_client_uid(&self, uid: u32) -> Result<(), String> {
        let remote = self.remote_root();
        lchown_tree(&remote, uid);
        // Its temp folder must be traversable too.
        std::os::unix::fs::lchown(self.dir.path(), Some(uid), Some(uid)).unwrap();
        Ok(())
    }
}

/// Give a tree to `uid` (group `uid` too), never following symlinks.
pub fn lchown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            lchown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Which side of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

pub use Side::{Local, Remote};

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { bytes: Vec<u8>, mtime_ns: i64 },
    Dir { mtime_ns: i64 },
    Symlink { target: PathBuf },
}

/// path (relative, `/`-separated) → node; everything, `.omnisync/` included.
pub type Snapshot = BTreeMap<String, Node>;

/// Snapshot of everything below `root` (nothing followed through symlinks). Missing root → empty.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    if root.is_dir() {
        walk(root, "", &mut out);
    }
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Snapshot) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().into_string().expect("test names are UTF-8");
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mtime_ns = mtime_ns_of(&meta);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            out.insert(rel, Node::Symlink { target });
        } else if meta.is_dir() {
            out.insert(rel.clone(), Node::Dir { mtime_ns });
            walk(&path, &rel, out);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_else(|_| b"<unreadable>".to_vec());
            out.insert(rel, Node::File { bytes, mtime_ns });
        }
    }
}

pub fn mtime_ns_of(meta: &std::fs::Metadata) -> i64 {
    let t = FileTime::from_last_modification_time(meta);
    t.unix_seconds() * 1_000_000_000 + t.nanoseconds() as i64
}

/// What a side holds as far as syncing goes: `.omnisync/` at the root left out, folders as
/// `None`, files as `Some(content)`, symlinks as `Some("-> target")`.
pub fn synced_view(s: &Snapshot) -> BTreeMap<String, Option<String>> {
    s.iter()
        .filter(|(p, _)| !is_reserved(p))
        .map(|(p, n)| {
            let v = match n {
                Node::File { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
                Node::Dir { .. } => None,
                Node::Symlink { target } => Some(format!("-> {}", target.display())),
            };
            (p.clone(), v)
        })
        .collect()
}

fn is_reserved(p: &str) -> bool {
    p == ".omnisync" || p.starts_with(".omnisync/")
}

/// Expected tree: `(path, Some(content))` for a file, `(path, None)` for a folder.
pub fn tree(items: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    items
        .iter()
        .map(|(p, c)| (p.to_string(), c.map(str::to_string)))
        .collect()
}

/// The `.omnisync-partial` files anywhere below `root`.
pub fn partials(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_keys()
        .filter(|p| p.ends_with(".omnisync-partial"))
        .collect()
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc().format(&f).unwrap()
}

/// Now in UTC as `YYYYMMDD-HHMMSS` (the keep-both stamp format).
pub fn utc_stamp() -> String {
    let f = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    time::OffsetDateTime::now_utc().format(&f).unwrap()
}

/// A time zone far east of UTC (POSIX form, needs no tzdata): local dates differ from UTC
/// dates from 10:00 UTC on.
pub const TZ_EAST: &str = "OMNI-14";
/// A time zone far west of UTC: local dates differ from UTC dates before 12:00 UTC.
pub const TZ_WEST: &str = "OMNI+12";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The output of one invocation of the binary.
#[derive(Debug, Clone)]
pub struct RunOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// With `--json`: every stdout line that is not the summary.
    pub records: Vec<Value>,
    /// With `--json`: the `summary` object (its inner map).
    pub summary: Option<Value>,
    pub elapsed: Duration,
}

impl RunOut {
    /// `(action, path)` of every record, in order.
    pub fn actions(&self) -> Vec<(String, String)> {
        self.records
            .iter()
            .map(|r| {
                (
                    r["action"].as_str().unwrap_or_default().to_string(),
                    r["path"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// `(action, path)` sorted, for set-like comparisons.
    pub fn action_set(&self) -> Vec<(String, String)> {
        let mut v = self.actions();
        v.sort();
        v
    }

    /// The records of one action.
    pub fn of(&self, action: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["action"] == action)
            .collect()
    }

    /// The paths of one action's records, sorted.
    pub fn paths(&self, action: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .of(action)
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// The record for `path` with `action`; panics when absent.
    pub fn record(&self, action: &str, path: &str) -> &Value {
        self.records
            .iter()
            .find(|r| r["action"] == action && r["path"] == path)
            .unwrap_or_else(|| panic!("no {action} record for {path:?}; {}", self.dump()))
    }

    /// A count from the summary object.
    pub fn count(&self, key: &str) -> u64 {
        let s = self
            .summary
            .as_ref()
            .unwrap_or_else(|| panic!("no summary; {}", self.dump()));
        s[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no {key:?}; {}", self.dump()))
    }

    /// Every action count of the summary is zero and no byte moved.
    pub fn assert_noop(&self) {
        assert_eq!(self.code, 0, "{}", self.dump());
        assert!(
            self.records.is_empty(),
            "expected no actions; {}",
            self.dump()
        );
        for k in ACTIONS {
            assert_eq!(self.count(k), 0, "summary {k} not zero; {}", self.dump());
        }
        assert_eq!(self.count("bytes"), 0, "{}", self.dump());
        assert_eq!(self.count("errors"), 0, "{}", self.dump());
    }

    pub fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub const ACTIONS: [&str; 12] = [
    "download",
    "upload",
    "delete_local",
    "delete_remote",
    "move_local",
    "move_remote",
    "copy_remote",
    "mkdir_local",
    "mkdir_remote",
    "conflict",
    "skip",
    "error",
];

/// One job's world: local tree, the backend's remote tree, config file, state folder.
pub struct Fixture<'b> {
    pub dir: TempDir,
    pub local: PathBuf,
    pub backend: &'b dyn Backend,
    pub config: PathBuf,
    pub state: PathBuf,
    jobs: Vec<String>,
    /// Run the binary under this uid/gid (root-only permission tests).
    pub run_as: Option<u32>,
    /// Extra environment for the binary (e.g. `TZ`).
    pub env: Vec<(String, String)>,
}

impl<'b> Fixture<'b> {
    /// Empty local folder (created), empty remote folder, no jobs yet.
    pub fn new(backend: &'b dyn Backend) -> Fixture<'b> {
        let dir = tempfile::Builder::new()
            .prefix("omnisync-e2e-")
            .tempdir()
            .unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::create_dir_all(backend.remote_root()).unwrap();
        let fx = Fixture {
            config: dir.path().join("omnisync.toml"),
            state: dir.path().join("state"),
            local,
            backend,
            dir,
            jobs: Vec::new(),
            run_as: None,
            env: Vec::new(),
        };
        fx.write_config();
        fx
    }

    /// A fixture with one job `name` in `mode`, `extra` TOML lines added to the job.
    pub fn with_job(backend: &'b dyn Backend, name: &str, mode: &str, extra: &str) -> Fixture<'b> {
        let mut fx = Fixture::new(backend);
        fx.add_job(name, mode, extra);
        fx
    }

    /// Append a job (manual trigger, this fixture's local folder) and rewrite the config.
    pub fn add_job(&mut self, name: &str, mode: &str, extra: &str) {
        let mut more = format!(
            "local_path = {}\ntrigger = \"manual\"\n",
            toml_str(self.local.to_str().unwrap())
        );
        more.push_str(extra);
        if !more.ends_with('\n') {
            more.push('\n');
        }
        self.jobs.push(self.backend.job_toml(name, mode, &more));
        self.write_config();
    }

    /// The config's `[agent]` header.
    pub fn agent_toml(&self) -> String {
        format!(
            "[agent]\nstate_dir = {}\n",
            toml_str(self.state.to_str().unwrap())
        )
    }

    fn write_config(&self) {
        let mut text = self.agent_toml();
        for j in &self.jobs {
            text.push('\n');
            text.push_str(j);
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// Replace the config file with `text` verbatim.
    pub fn set_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn root(&self, side: Side) -> PathBuf {
        match side {
            Local => self.local.clone(),
            Remote => self.backend.remote_root(),
        }
    }

    pub fn path(&self, side: Side, rel: &str) -> PathBuf {
        let root = self.root(side);
        if rel.is_empty() {
            root
        } else if side == Remote {
            root.join(self.backend.disk_path(rel))
        } else {
            root.join(rel)
        }
    }

    fn adopt(&self, side: Side, rel: &str) {
        if side == Remote {
            // The file and every folder down to it.
            let mut cur = String::new();
            for part in rel.split('/') {
                if !cur.is_empty() {
                    cur.push('/');
                }
                cur.push_str(part);
                self.backend.adopt(&self.path(side, &cur));
            }
        }
    }

    /// Write a file (parents created) and set its mtime to `mtime` (seconds since the epoch).
    pub fn write(&self, side: Side, rel: &str, content: impl AsRef<[u8]>, mtime: i64) {
        let p = self.path(side, rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        filetime::set_file_mtime(&p, FileTime::from_unix_time(mtime, 0)).unwrap();
        self.adopt(side, rel);
    }

    /// The same file on both sides, same content and mtime.
    pub fn write_both(&self, rel: &str, content: impl AsRef<[u8]>, mtime: i64) {
        self.write(Local, rel, content.as_ref(), mtime);
        self.write(Remote, rel, content.as_ref(), mtime);
    }

    pub fn read(&self, side: Side, rel: &str) -> String {
        std::fs::read_to_string(self.path(side, rel))
            .unwrap_or_else(|e| panic!("{side:?} {rel}: {e}"))
    }

    pub fn exists(&self, side: Side, rel: &str) -> bool {
        std::fs::symlink_metadata(self.path(side, rel)).is_ok()
    }

    pub fn mkdir(&self, side: Side, rel: &str) {
        std::fs::create_dir_all(self.path(side, rel)).unwrap();
        self.adopt(side, rel);
    }

    /// Remove a file or a whole folder.
    pub fn remove(&self, side: Side, rel: &str) {
        let p = self.path(side, rel);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{side:?} {rel}: {e}"));
        if meta.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }

    pub fn rename(&self, side: Side, from: &str, to: &str) {
        let to_p = self.path(side, to);
        std::fs::create_dir_all(to_p.parent().unwrap()).unwrap();
        std::fs::rename(self.path(side, from), &to_p).unwrap();
        self.adopt(side, to);
    }

    pub fn symlink(&self, side: Side, rel: &str, target: &str) {
        let p = self.path(side, rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
        self.adopt(side, rel);
    }

    /// Everything on one side, `.omnisync/` included.
    pub fn snap(&self, side: Side) -> Snapshot {
        let snap = snapshot(&self.root(side));
        match side {
            Local => snap,
            Remote => snap
                .into_iter()
                .map(|(p, n)| (self.backend.path_of_disk(&p), n))
                .collect(),
        }
    }

    /// Both sides (for "nothing changed" assertions).
    pub fn snap_both(&self) -> (Snapshot, Snapshot) {
        (self.snap(Local), self.snap(Remote))
    }

    /// What one side holds for syncing (no `.omnisync/`, no mtimes).
    pub fn view(&self, side: Side) -> BTreeMap<String, Option<String>> {
        synced_view(&self.snap(side))
    }

    /// Assert a side holds exactly `want` (outside `.omnisync/`).
    #[track_caller]
    pub fn assert_tree(&self, side: Side, want: &[(&str, Option<&str>)]) {
        assert_eq!(
            self.view(side),
            tree(want),
            "{side:?} tree ({})",
            self.backend.name()
        );
    }

    /// Both sides hold the same files, folders and contents, and the files' mtimes agree (at
    /// the remote's precision).
    #[track_caller]
    pub fn assert_in_sync(&self) {
        let l = self.snap(Local);
        let r = self.snap(Remote);
        assert_eq!(synced_view(&l), synced_view(&r), "local vs remote");
        if !self.backend.preserves_mtime() {
            return;
        }
        let prec = self.backend.mtime_precision_ns().max(1);
        for (p, n) in &l {
            if let (Node::File { mtime_ns: a, .. }, Some(Node::File { mtime_ns: b, .. })) =
                (n, r.get(p))
            {
                assert_eq!(
                    a.div_euclid(prec),
                    b.div_euclid(prec),
                    "mtime of {p} differs between the sides"
                );
            }
        }
    }

    /// The trash folder of `date` on `side`.
    pub fn trash(&self, side: Side, date: &str) -> PathBuf {
        self.path(side, &format!(".omnisync/trash/{date}"))
    }

    /// Run the binary with `--config` and `args`. Lines of stdout are parsed as JSON when
    /// `--json` is among the args. After a `run` that completed (exit 0 or 1), no
    /// `*.omnisync-partial` may be left on either side.
    ///
    /// The binary runs with `/` as its working directory, so nothing may depend on the cwd.
    pub fn run(&self, args: &[&str]) -> RunOut {
        let r = self.run_unchecked(args);
        if args.first() == Some(&"run") && (r.code == 0 || r.code == 1) {
            for side in [Local, Remote] {
                let left = partials(&self.root(side));
                assert!(
                    left.is_empty(),
                    "partial files left on {side:?}: {left:?}; {}",
                    r.dump()
                );
            }
        }
        r
    }

    /// [`Fixture::run`] without the check for partial files.
    pub fn run_unchecked(&self, args: &[&str]) -> RunOut {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_omnisync"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("RUST_LOG")
            .env_remove("OMNISYNC_CONFIG")
            .env_remove("SSH_AUTH_SOCK")
            .current_dir("/");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(uid) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let t = Instant::now();
        let out = assert_cmd::Command::from_std(cmd)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let elapsed = t.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let mut records = Vec::new();
        let mut summary = None;
        if args.contains(&"--json") {
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {line:?}\n{stderr}")
                });
                if let Some(s) = v.get("summary") {
                    summary = Some(s.clone());
                } else {
                    records.push(v);
                }
            }
        }
        RunOut {
            code,
            stdout,
            stderr,
            records,
            summary,
            elapsed,
        }
    }

    /// `run JOB --json`, which must exit 0.
    #[track_caller]
    pub fn sync(&self, job: &str) -> RunOut {
        let r = self.run(&["run", job, "--json"]);
        assert_eq!(r.code, 0, "run {job}: {}", r.dump());
        r
    }

    /// `run JOB --json` twice: the first must exit 0, the second must be a no-op.
    #[track_caller]
    pub fn sync_settled(&self, job: &str) -> RunOut {
        let r = self.sync(job);
        let again = self.sync(job);
        again.assert_noop();
        r
    }
}
