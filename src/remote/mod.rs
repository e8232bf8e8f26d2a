//! The `Remote` trait: everything the engine asks of one side of a job.
//!
//! Both sides of a job are `Remote`s: the local folder is a [`local::LocalFs`], and so is the
//! remote side of a `protocol = "local"` job. The engine never asks which protocol it talks to;
//! it reads [`Capabilities`] and falls back where a capability is absent.
//!
//! Contract for implementors:
//! - Paths are relative to the side's root, `/`-separated, already validated by
//!   [`check_rel_path`]; `""` is the root itself. An implementation must never touch anything
//!   outside its root, and must not follow symlinks in any component of a path it writes.
//! - Methods may be called from several threads at once (`transfers` workers).
//! - Errors carry the operation and the path; `NotFound` is distinct so callers can react.

pub mod ecdsa_key;
pub mod ftp;
pub mod ftp_list;
pub mod local;
pub mod sftp;
pub mod sftp_find;
pub mod sftp_pipe;
pub mod smb;
pub mod smb_names;
pub mod tcp_link;

use std::io::Read;

use crate::job::Secret;
use crate::model::{Entry, Kind};

/// What a side can do. The engine adapts to these, never to protocol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// A server-side copy exists (`copy_file`).
    pub server_copy: bool,
    /// Modification times can be set; when false the base records what the side reports.
    pub set_mtime: bool,
    /// A content hash (blake3) can be had without moving the content over a network.
    pub content_hash: bool,
    /// `open_write` at a non-zero offset keeps the bytes before it (resumable writes).
    pub resume_write: bool,
    /// Names differing only in case are the same file.
    pub case_insensitive: bool,
    /// Inodes are reported (moves recognised by identity).
    pub inodes: bool,
    /// Granularity of reported mtimes, in nanoseconds (1 = exact, 1e9 = whole seconds).
    pub mtime_precision_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{op} {path:?}: not found")]
    NotFound { op: &'static str, path: String },
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path:?}: {message}")]
    Refused {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("connection: {0}")]
    Connection(String),
}

impl RemoteError {
    pub fn io(op: &'static str, path: &str, source: std::io::Error) -> RemoteError {
        if source.kind() == std::io::ErrorKind::NotFound {
            RemoteError::NotFound {
                op,
                path: path.to_string(),
            }
        } else {
            RemoteError::Io {
                op,
                path: path.to_string(),
                source,
            }
        }
    }

    pub fn refused(op: &'static str, path: &str, message: impl Into<String>) -> RemoteError {
        RemoteError::Refused {
            op,
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }

    /// Something already holds the name (see [`Remote::rename_new`]).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, RemoteError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists)
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// The message of [`Remote::read_link`] on a backend that cannot read symlinks.
pub const READ_LINK_UNSUPPORTED: &str = "reading symlinks is not supported by this backend";

impl RemoteError {
    /// Did [`Remote::read_link`] fail because the backend cannot read links at all?
    pub fn is_read_link_unsupported(&self) -> bool {
        matches!(self, RemoteError::Refused { message, .. } if message == READ_LINK_UNSUPPORTED)
    }
}

/// One directory's entries. Names that cannot be represented (not UTF-8) are reported apart,
/// never guessed at.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<(String, Entry)>,
    pub bad_names: Vec<String>,
}

/// The state of a side's root folder before a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootStatus {
    Dir,
    Missing,
    NotDir,
    Unreadable(String),
}

/// Same version of a file as planned? Kind, and for a file size and mtime, must match, and the
/// inode where both know it.
pub fn same_file(now: &Entry, planned: &Entry) -> bool {
    now.kind == planned.kind
        && (now.kind != Kind::File || (now.size == planned.size && now.mtime == planned.mtime))
        && (now.inode.is_none() || planned.inode.is_none() || now.inode == planned.inode)
}

/// Fill `buf` from `r`: `Ok(Err(Shorter))` when the source ends first.
pub fn fill(
    r: &mut dyn Read,
    buf: &mut [u8],
    path: &str,
) -> Result<std::result::Result<(), NotAsPlanned>> {
    match r.read_exact(buf) {
        Ok(()) => Ok(Ok(())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Err(NotAsPlanned::Shorter)),
        Err(e) => Err(RemoteError::io("read", path, e)),
    }
}

/// Read the whole file at `path` into `buf` by path, then check with a stat that it is still
/// the version `now` (seen just before): [`Remote::read_as_planned`]'s default, after its
/// first stat.
pub fn read_whole_unchanged<R: Remote + ?Sized>(
    r: &R,
    path: &str,
    now: &Entry,
    buf: &mut [u8],
) -> Result<std::result::Result<(), NotAsPlanned>> {
    if let Err(short) = fill(&mut *r.open_read(path, 0)?, buf, path)? {
        return Ok(Err(short));
    }
    if !r.stat(path)?.is_some_and(|after| same_file(&after, now)) {
        return Ok(Err(NotAsPlanned::ChangedWhileRead));
    }
    Ok(Ok(()))
}

/// How a source read by [`Remote::read_as_planned`] is not the planned version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAsPlanned {
    Vanished,
    Changed,
    Shorter,
    ChangedWhileRead,
}

impl std::fmt::Display for NotAsPlanned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotAsPlanned::Vanished => "source vanished since it was planned; will retry next run",
            NotAsPlanned::Changed => "source changed since it was planned; will retry next run",
            NotAsPlanned::Shorter => {
                "source is shorter than planned (changed while read); will retry"
            }
            NotAsPlanned::ChangedWhileRead => {
                "source changed while it was read; not committed, will retry"
            }
        })
    }
}

/// An open destination file being written sequentially from some offset.
pub trait WriteHandle: Send {
    fn write_all(&mut self, data: &[u8]) -> Result<()>;
    /// Make what was written durable before a checkpoint claims it.
    fn sync(&mut self) -> Result<()>;

    /// Begin making what was written so far durable without waiting for it, so that writing
    /// goes on meanwhile; [`WriteHandle::sync_done`] says when it is. The default syncs now.
    fn sync_begin(&mut self) -> Result<()> {
        self.sync()
    }

    /// Has the sync begun last finished (and every write before it succeeded)? Answers
    /// without waiting; `true` once per finished sync. A failed sync is an error here or
    /// from the next call.
    fn sync_done(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// Do the bytes written through this handle outlive the writing process without a sync,
    /// for as long as the machine runs? On a local disk the page cache keeps them when the
    /// process crashes or is killed; a server can restart on its own, so remote handles say
    /// no. Where they do, checkpoints between syncs are recorded without one (see
    /// [`crate::state::Checkpoint`]: trusted only in the boot that wrote them).
    fn outlives_process(&self) -> bool {
        false
    }
    /// Finish the write; errors here mean the data may not be complete.
    fn close(self: Box<Self>) -> Result<()>;

    /// Set the written file's modification time through the open handle (as `cp -p` does)
    /// and report the file as it now is (mtime as the filesystem stored it). `None`: the
    /// backend has no such shortcut; the caller sets the mtime and stats by path. Saves two
    /// path lookups per file on a local disk.
    fn set_mtime_and_stat(&mut self, _mtime_ns: i64) -> Result<Option<Entry>> {
        Ok(None)
    }
}

pub trait Remote: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// For messages: `local:/data/x`, `sftp://user@host:22/path`. Never contains a secret.
    fn describe(&self) -> String;

    fn root_status(&self) -> RootStatus;

    /// Create the root folder (and its parents).
    fn create_root(&self) -> Result<()>;

    /// The entries of one directory, by name. Names are returned as the server gives them;
    /// the caller validates them with [`check_name`].
    fn list(&self, dir: &str) -> Result<Listing>;

    /// `Ok(None)` when the path does not exist. Does not follow a final symlink.
    fn stat(&self, path: &str) -> Result<Option<Entry>>;

    /// A reader positioned at `offset`.
    fn open_read(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>>;

    /// Read the whole file at `path` into `buf` (`planned.size` bytes) where it is, before
    /// and after the read, the version `planned` describes; that version as it is now.
    /// `Ok(Err(_))` says how it is not (the transfer is retried later). The default stats by
    /// path around [`Remote::open_read`]; a local disk checks the open file itself.
    fn read_as_planned(
        &self,
        path: &str,
        planned: &Entry,
        buf: &mut [u8],
    ) -> Result<std::result::Result<Entry, NotAsPlanned>> {
        let Some(now) = self.stat(path)? else {
            return Ok(Err(NotAsPlanned::Vanished));
        };
        if !same_file(&now, planned) {
            return Ok(Err(NotAsPlanned::Changed));
        }
        Ok(read_whole_unchanged(self, path, &now, buf)?.map(|()| now))
    }

    /// Open `path` for writing at `offset`: 0 creates or truncates it; a non-zero offset keeps
    /// the first `offset` bytes and drops anything after them.
    fn open_write(&self, path: &str, offset: u64) -> Result<Box<dyn WriteHandle>>;

    /// Rename, replacing a file at `to` atomically where it exists.
    fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Rename `from` to `to` only when nothing exists at `to`: `Ok(false)` (and nothing
    /// renamed) when something does. The default looks first, which leaves a short race; a
    /// side with an atomic no-replace rename overrides it.
    fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        if self.stat(to)?.is_some() {
            return Ok(false);
        }
        self.rename(from, to).map(|()| true)
    }

    /// Write `data`, the whole content of a small file, to `partial` (created, or cut when it
    /// exists) and give it `mtime_ns` (where `Some`), in one call; returns the partial's stat
    /// as the side reports it afterwards, which the caller checks (`None`: the side cannot
    /// say). The caller removes the partial after an error. The default takes the steps one
    /// at a time; a network side overrides it to pipeline them.
    fn write_whole(
        &self,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<Option<Entry>> {
        write_whole_steps(self, partial, data, mtime_ns)
    }

    /// Write `data`, the whole content of a new small file, to `partial`; give it `mtime_ns`
    /// (where `Some`); check that the side kept every byte; then rename it to `path` unless
    /// something exists there by now (as [`Self::rename_new`]). Unless the file is in place,
    /// the partial is removed: a short or failed write never stays under either name. The
    /// default takes the steps one at a time; a network side overrides it to pipeline them.
    fn put_new(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<PutNew> {
        put_new_steps(self, path, partial, data, mtime_ns)
    }

    /// How this side takes new small files in batches ([`Self::put_new_many`]); `None`: one
    /// at a time.
    fn put_new_batching(&self) -> Option<Batching> {
        None
    }

    /// [`Self::put_new`] of several new files, answers in the same order. The default takes
    /// them one by one; a side that pipelines sends them together and the caller waits once.
    fn put_new_many(&self, files: &[NewFile<'_>]) -> Vec<Result<PutNew>> {
        files
            .iter()
            .map(|f| self.put_new(f.path, f.partial, f.data, f.mtime_ns))
            .collect()
    }

    fn remove_file(&self, path: &str) -> Result<()>;

    /// Remove an empty directory.
    fn remove_dir(&self, path: &str) -> Result<()>;

    fn mkdir_all(&self, dir: &str) -> Result<()>;

    /// Set the modification time (ns since the epoch); a no-op where `set_mtime` is false.
    fn set_mtime(&self, path: &str, mtime_ns: i64) -> Result<()>;

    /// Server-side copy, where `server_copy` is true.
    fn copy_file(&self, from: &str, to: &str) -> Result<()> {
        let _ = to;
        Err(RemoteError::refused(
            "copy",
            from,
            "server-side copy is not supported",
        ))
    }

    /// Small files this side can usefully have in flight at once, beyond `transfers`: each
    /// costs a few round trips of latency and little bandwidth, so a side that pipelines
    /// requests on one connection (sftp) moves many more of them at a time than a job's
    /// `transfers` allows for large files. 0 = just `transfers`.
    fn small_file_parallelism(&self) -> usize {
        0
    }

    /// The target of symlink `path` as the link stores it (text only: never followed,
    /// resolved or checked). The default refuses with [`READ_LINK_UNSUPPORTED`]; backends whose
    /// listings cannot describe links (SMB, FTP) keep it. Not used by sync (links are skipped
    /// there); the mount shows links with it.
    fn read_link(&self, path: &str) -> Result<String> {
        Err(RemoteError::refused(
            "readlink",
            path,
            READ_LINK_UNSUPPORTED,
        ))
    }

    /// Which connection the side's operations use now: changes each time it reconnects.
    /// Sides without a connection (local folders) always say 0.
    fn connection_id(&self) -> u64 {
        0
    }

    /// After an operation failed: when connection `id` (from [`Remote::connection_id`]) was
    /// lost, make sure a new one is up, logging in again with bounded retries and backoff.
    /// `Ok(true)` means a newer connection is in place and the failed work may be retried
    /// (handles of the old one, open readers and writers, are gone); `Ok(false)` means the
    /// connection was not lost, so the failure had another cause; `Err` means reconnecting
    /// failed.
    fn reconnect(&self, id: u64) -> Result<bool> {
        let _ = id;
        Ok(false)
    }

    /// blake3 of a file's content. The default reads it through `open_read`.
    fn hash(&self, path: &str) -> Result<[u8; 32]> {
        let mut reader = self.open_read(path, 0)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = crate::buf::AlignedBuf::new(1 << 20);
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| RemoteError::io("read", path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(*hasher.finalize().as_bytes())
    }
}

/// The password a job's config points to: `Ok(None)` for no password. Errors name where the
/// secret was looked for, never its value. A password file's trailing line break is dropped.
pub fn read_secret(secret: &Secret) -> std::result::Result<Option<String>, String> {
    match secret {
        Secret::None => Ok(None),
        Secret::Inline(p) => Ok(Some(p.clone())),
        Secret::Env(var) => match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Err(format!(
                "password_env: environment variable {var} is not set"
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                "password_env: environment variable {var} is not valid UTF-8"
            )),
        },
        Secret::File(path) => match std::fs::read_to_string(path) {
            Ok(v) => {
                let v = v.strip_suffix('\n').unwrap_or(&v);
                let v = v.strip_suffix('\r').unwrap_or(v);
                Ok(Some(v.to_string()))
            }
            Err(e) => Err(format!("password_file {}: {e}", path.display())),
        },
    }
}

/// Folders checked during a run to be real directories (not symlinks, not files), so that a
/// write below them does not re-check every component. Shared by the backends.
#[derive(Debug, Default)]
pub struct CheckedDirs(std::sync::Mutex<std::collections::HashSet<String>>);

impl CheckedDirs {
    pub fn insert(&self, dir: String) {
        self.0.lock().unwrap().insert(dir);
    }

    /// Forget `path` and everything below it (after it was renamed or removed).
    pub fn forget(&self, path: &str) {
        let prefix = format!("{path}/");
        self.0
            .lock()
            .unwrap()
            .retain(|d| d != path && !d.starts_with(&prefix));
    }

    /// The prefixes of `dir` (`a`, `a/b`, `a/b/c`) not checked yet, in order: for a side that
    /// checks them all at once and then [`CheckedDirs::insert`]s each one it accepts.
    pub fn unchecked(&self, dir: &str) -> Vec<String> {
        let known = self.0.lock().unwrap();
        if dir.is_empty() || known.contains(dir) {
            return Vec::new();
        }
        dir.match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(dir.len()))
            .map(|end| &dir[..end])
            .filter(|p| !known.contains(*p))
            .map(str::to_string)
            .collect()
    }

    /// Call `check` on each prefix of `dir` (`a`, `a/b`, `a/b/c`) not checked yet, in order;
    /// a prefix is remembered once `check` accepts it. Stops at the first error.
    pub fn walk(&self, dir: &str, mut check: impl FnMut(&str) -> Result<()>) -> Result<()> {
        for prefix in self.unchecked(dir) {
            check(&prefix)?;
            self.insert(prefix);
        }
        Ok(())
    }
}

/// What a server-side copy needs before it asks the server: `from` (as stat'ed) is a regular
/// file, and `to` is absent or a regular file. Returns the source's entry.
pub fn copy_preconditions(
    from: &str,
    src: Option<Entry>,
    to: &str,
    dst: Option<Entry>,
) -> Result<Entry> {
    let src = match src {
        Some(e) if e.is_file() => e,
        Some(_) => return Err(RemoteError::refused("copy", from, "not a regular file")),
        None => {
            return Err(RemoteError::NotFound {
                op: "copy",
                path: from.to_string(),
            })
        }
    };
    match dst {
        Some(e) if !e.is_file() => Err(RemoteError::refused(
            "copy",
            to,
            format!("exists and is a {}", e.kind.as_str()),
        )),
        _ => Ok(src),
    }
}

/// Is `name` a single, harmless path component? A server that returns `..`, `/x`, `a/b` or
/// names with NUL cannot make us address anything outside the job's folders.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name == "." || name == ".." {
        return Err(format!("refusing name {name:?}"));
    }
    if name.contains('/') {
        return Err(format!("name {name:?} contains '/'"));
    }
    if name.contains('\0') {
        return Err(format!("name {name:?} contains NUL"));
    }
    Ok(())
}

/// Is `path` a relative, `/`-separated path whose every component passes [`check_name`]?
pub fn check_rel_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    for part in path.split('/') {
        check_name(part).map_err(|e| format!("path {path:?}: {e}"))?;
    }
    Ok(())
}

/// How a side takes new small files in batches ([`Remote::put_new_batching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Files per [`Remote::put_new_many`] call.
    pub files: usize,
    /// Calls in flight at once (one worker thread each).
    pub batches: usize,
    /// The largest file that goes in a batch; larger ones go one at a time.
    pub max_file: u64,
}

/// One new small file for [`Remote::put_new_many`]: the arguments of [`Remote::put_new`].
pub struct NewFile<'a> {
    pub path: &'a str,
    pub partial: &'a str,
    pub data: &'a [u8],
    pub mtime_ns: Option<i64>,
}

/// What [`Remote::put_new`] did.
#[derive(Debug)]
pub enum PutNew {
    /// The file is in place; this is its stat (a rename keeps size, mtime and inode).
    Done(Entry),
    /// The side kept only this many bytes; the partial was removed.
    Short(u64),
    /// Something appeared at the path meanwhile; it was left alone and the partial removed.
    Appeared,
}

/// [`Remote::put_new`] through the side's other operations: open, write, set the mtime
/// through the handle (or by path), close, stat, `rename_new`.
pub fn put_new_steps<R: Remote + ?Sized>(
    r: &R,
    path: &str,
    partial: &str,
    data: &[u8],
    mtime_ns: Option<i64>,
) -> Result<PutNew> {
    let put = || -> Result<PutNew> {
        Ok(match write_whole_steps(r, partial, data, mtime_ns)? {
            Some(e) if e.is_file() && e.size == data.len() as u64 => {
                if r.rename_new(partial, path)? {
                    PutNew::Done(e)
                } else {
                    PutNew::Appeared
                }
            }
            other => PutNew::Short(other.map_or(0, |e| e.size)),
        })
    };
    let res = put();
    if !matches!(res, Ok(PutNew::Done(_))) {
        let _ = r.remove_file(partial);
    }
    res
}

/// [`Remote::write_whole`] through the side's other operations: open, write, set the mtime
/// through the handle (or by path), close, stat.
pub fn write_whole_steps<R: Remote + ?Sized>(
    r: &R,
    partial: &str,
    data: &[u8],
    mtime_ns: Option<i64>,
) -> Result<Option<Entry>> {
    let mut w = r.open_write(partial, 0)?;
    let written = w.write_all(data).and_then(|()| match mtime_ns {
        Some(t) => w.set_mtime_and_stat(t),
        None => Ok(None),
    });
    let closed = w.close();
    let finished = written?;
    closed?;
    if let (Some(t), None) = (mtime_ns, &finished) {
        r.set_mtime(partial, t)?;
    }
    match finished {
        Some(e) => Ok(Some(e)),
        None => r.stat(partial),
    }
}

/// `a/b/c` → `a/b`; `c` → `""`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// `a/b/c` → `c`.
pub fn file_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Join a directory and a name (`""` is the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        // Sized once, no formatting machinery: the scan joins every listed name.
        let mut p = String::with_capacity(dir.len() + 1 + name.len());
        p.push_str(dir);
        p.push('/');
        p.push_str(name);
        p
    }
}

/// Resolve `host` and connect to the first address that answers (TCP_NODELAY set), each step
/// bounded by `timeout`; the error names what failed. `service` says what should listen
/// (e.g. "an SSH server") in the connection-refused message.
pub(crate) async fn tcp_connect(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
    service: &str,
) -> std::result::Result<tokio::net::TcpStream, String> {
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(format!("cannot resolve host {host:?}: {e}")),
            Err(_) => {
                return Err(format!(
                    "cannot resolve host {host:?}: DNS lookup timed out"
                ))
            }
        };
    if addrs.is_empty() {
        return Err(format!("cannot resolve host {host:?}: no addresses"));
    }
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!(
                    "connection refused by {addr} (is {service} listening on port {port}?)"
                );
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                last = format!(
                    "timed out connecting to {addr} after {}s (firewall or wrong port?)",
                    timeout.as_secs()
                )
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "/etc", "x\0y"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", ".hidden", "...", "a b", "ü", "a\\b"] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
        assert!(check_rel_path("a/../b").is_err());
        assert!(check_rel_path("/a").is_err());
        assert!(check_rel_path("a//b").is_err());
        assert!(check_rel_path("a/b/c").is_ok());
    }

    #[test]
    fn checked_dirs_list_the_unchecked_prefixes_in_order() {
        let c = CheckedDirs::default();
        assert_eq!(c.unchecked("a/b/c"), ["a", "a/b", "a/b/c"]);
        assert!(c.unchecked("").is_empty());
        c.insert("a".into());
        c.insert("a/b/c".into());
        assert!(
            c.unchecked("a/b/c").is_empty(),
            "a checked folder needs nothing"
        );
        assert_eq!(c.unchecked("a/b/d"), ["a/b", "a/b/d"]);
        c.forget("a");
        assert_eq!(c.unchecked("a/b/c"), ["a", "a/b", "a/b/c"]);
    }

    #[test]
    fn checked_dirs_walk_each_unchecked_prefix_once() {
        let c = CheckedDirs::default();
        let mut seen = Vec::new();
        c.walk("a/b/c", |p| {
            seen.push(p.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "a/b", "a/b/c"]);
        seen.clear();
        c.walk("a/b/d", |p| {
            seen.push(p.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a/b/d"]);
        let err = c.walk("x/y", |p| Err(RemoteError::refused("t", p, "no")));
        assert!(err.is_err());
        c.forget("a/b");
        seen.clear();
        c.walk("a/b/c", |p| {
            seen.push(p.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a/b", "a/b/c"]);
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("c"), "");
        assert_eq!(file_name("a/b/c"), "c");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "x"), "a/x");
    }
}
