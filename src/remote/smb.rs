//! `protocol = "smb"`: a folder on an SMB 2/3 share (Windows, Samba, a NAS), over one session.
//!
//! Like the sftp backend, this wraps an async client (`smb2`, pure Rust) behind the blocking
//! [`Remote`] trait with a small tokio runtime of its own. `smb2`'s `Connection` is a cheap
//! clone of one multiplexed session: every trait call takes a clone and the share's `Tree`, so
//! the `transfers` workers keep several files in flight over one session, each pipelined.
//!
//! What this relies on, and why:
//! - Dialect and signing are negotiated by `smb2` (SMB 2.0.2–3.1.1; signing when the server
//!   requires it). Encryption is not: smb2 0.39 (the newest release) never offers
//!   SMB2_GLOBAL_CAP_ENCRYPTION, so a server or share that *requires* encryption refuses this
//!   client, and the refusal says so (exit 3); `desired` servers work, signed and unencrypted.
//! - Names are `%XX`-encoded for Windows ([`super::smb_names`]); a share name that is no such
//!   encoding is reported as a bad name and never addressed.
//! - `rename` replaces in one SET_INFO (`ReplaceIfExists`), so a reader sees the old file or
//!   the new one. A server-side copy is FSCTL_SRV_COPYCHUNK; a server without it makes the
//!   copy capability false for the rest of the run and the engine uploads instead.
//! - A file larger than 1 MiB is written through a handle of our own with its WRITEs
//!   pipelined ([`write::Pipe`]). A checkpoint's FLUSH (Samba's fsync) goes out on that handle
//!   once the WRITEs before it are answered, and the WRITEs after it go on meanwhile: Samba runs
//!   the fsync in its thread pool. A resume opens the partial, cuts it at the checkpoint and
//!   refuses one shorter than that.
//! - A dropped session is revived by `smb2` in place (`auto_reconnect`); the share's tree
//!   connection died with it, so the first call that meets a stale tree connects the share
//!   again and repeats itself once when repeating cannot change what it asked for (listings,
//!   stats, opens for reading, times, mkdir). A connection known to be dead before a call (the
//!   server closed it while idle) is revived before anything is sent. Writes in flight fail;
//!   the next run (in the agent: a retry of the failed paths a second later) resumes them.
//! - Mtimes are FILETIMEs (100 ns ticks). Samba lists a Unix symlink as what it points to and
//!   `wide links = no` keeps it inside the share, so no link is ever seen here.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use smb2::client::Connection;
use smb2::pack::FileTime;
use smb2::{ClientConfig, ErrorKind, FileReader, FileTimes, RenameOptions, SmbClient, Tree};

mod write;
use tokio::task::JoinHandle;
use write::{write_small, Pipe, SMALL_FILE};

use super::smb_names::{decode_name, encode_path};
use super::{
    check_rel_path, copy_preconditions, read_secret, Capabilities, CheckedDirs, Listing, PutNew,
    Remote, RemoteError, Result, RootStatus, WriteHandle,
};
use crate::job::Job;
use crate::model::{Entry, Kind};

/// Bytes per positioned read; `smb2` splits it further if the server's MaxReadSize is smaller.
const READ_BLOCK: u64 = 1 << 20;
/// Reads in flight per open file: 8 MiB on the wire, about a loopback Samba's sweet spot.
const READS_IN_FLIGHT: usize = 8;
/// At most this many connections to the share, however many `transfers`.
const MAX_CONNECTIONS: usize = 8;
/// TCP connect, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Negotiate, session setup and tree connect together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// FILETIME of the Unix epoch (100 ns ticks since 1601-01-01).
const EPOCH_TICKS: i64 = 116_444_736_000_000_000;

pub struct SmbRemote {
    /// `Some` until drop.
    rt: Option<tokio::runtime::Runtime>,
    rth: tokio::runtime::Handle,
    /// The sessions, shared with the writers (which commit small files after `open_write`).
    links: Links,
    /// `remote_path` inside the share, without leading or trailing slashes (`""` = the share).
    root: String,
    label: String,
    server_copy: AtomicBool,
    checked_dirs: CheckedDirs,
}

fn conn_err(msg: impl Into<String>) -> RemoteError {
    RemoteError::Connection(msg.into())
}

/// Map an `smb2` failure of `op` on `path` to the trait's errors.
fn smb_err(op: &'static str, path: &str, e: smb2::Error) -> RemoteError {
    use std::io::ErrorKind as Io;
    let kind = match e.kind() {
        ErrorKind::NotFound => {
            return RemoteError::NotFound {
                op,
                path: path.to_string(),
            }
        }
        ErrorKind::AccessDenied => Io::PermissionDenied,
        ErrorKind::AlreadyExists => Io::AlreadyExists,
        ErrorKind::ConnectionLost | ErrorKind::SessionExpired => Io::ConnectionAborted,
        ErrorKind::TimedOut => Io::TimedOut,
        _ => Io::Other,
    };
    RemoteError::Io {
        op,
        path: path.to_string(),
        source: std::io::Error::new(kind, e.to_string()),
    }
}

/// The session or the share's tree connection is gone (a revival invalidates trees).
fn is_lost(e: &smb2::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionLost | ErrorKind::SessionExpired
    ) || matches!(
        e.status(),
        Some(smb2::types::status::NtStatus::NETWORK_NAME_DELETED)
    )
}

fn ns_from_filetime(t: FileTime) -> i64 {
    (t.0 as i64).saturating_sub(EPOCH_TICKS).saturating_mul(100)
}

fn filetime_from_ns(ns: i64) -> FileTime {
    FileTime((ns.div_euclid(100) + EPOCH_TICKS).max(0) as u64)
}

fn kind_of(is_dir: bool, is_link: bool) -> Kind {
    if is_link {
        Kind::Symlink
    } else if is_dir {
        Kind::Dir
    } else {
        Kind::File
    }
}

/// `/a/b/` → `a/b`; `/` → `""`.
fn normalize_root(p: &str) -> String {
    p.trim_matches('/').to_string()
}

/// Why a login failed, in words a user can act on.
/// Why a client of this build and a server that insists on encryption cannot agree (shown in
/// the refusal, so the user knows it is the client's limit, not a configuration mistake).
const ENCRYPTION_GAP: &str = "smb2 0.39, the newest release, never offers \
     SMB2_GLOBAL_CAP_ENCRYPTION in its NEGOTIATE request and has no option to, so a server that \
     requires encryption selects no cipher for this client";

/// Why a login failed, in words a user can act on. `no_cipher`: the negotiated connection has
/// no encryption cipher (so a share that requires encryption is refused).
fn login_problem(e: &smb2::Error, user: &str, share: &str, addr: &str, no_cipher: bool) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "445"));
    use smb2::types::status::NtStatus;
    if let smb2::Error::ConnectFailed { attempts, .. } = e {
        let why: Vec<String> = attempts
            .iter()
            .map(|a| match a.error_kind {
                Some(std::io::ErrorKind::ConnectionRefused) => format!(
                    "connection refused by {} (is an SMB server listening on that port?)",
                    a.addr
                ),
                Some(kind) => format!("cannot connect to {}: {kind}", a.addr),
                None => format!(
                    "timed out connecting to {} after {}s (firewall or wrong port?)",
                    a.addr,
                    CONNECT_TIMEOUT.as_secs()
                ),
            })
            .collect();
        return if why.is_empty() {
            format!("cannot resolve host of {addr:?}")
        } else {
            why.join("; ")
        };
    }
    match (e.kind(), e.status()) {
        (_, Some(NtStatus::BAD_NETWORK_NAME)) => format!(
            "the server has no share named {share:?} (check `share`; `smbclient -L {host} -p \
             {port} -U {user}` lists the shares)"
        ),
        (ErrorKind::AuthRequired, _) | (_, Some(NtStatus::LOGON_FAILURE)) => format!(
            "authentication failed: the server refused the password for user {user:?} \
             (check username, password and domain)"
        ),
        (ErrorKind::GuestSessionRefused, _) => format!(
            "authentication failed: the server offered only a guest session for user {user:?} \
             (a wrong password on a server that maps bad users to guest)"
        ),
        (ErrorKind::AccessDenied, _)
            if matches!(
                e,
                smb2::Error::Protocol {
                    command: smb2::types::Command::SessionSetup,
                    ..
                }
            ) =>
        {
            format!(
                "server requires SMB3 encryption, which this build's smb2 client cannot \
                 negotiate: the server refused the session for user {user:?} after a successful \
                 login ({ENCRYPTION_GAP}; Samba: `server smb encrypt = required`). Set \
                 `server smb encrypt = desired` (or `if_required`) on the server, or reach the \
                 files through a share that allows signed, unencrypted sessions"
            )
        }
        (ErrorKind::AccessDenied, _) if no_cipher => format!(
            "access denied: user {user:?} may not connect to share {share:?}: either the user \
             is not allowed on it, or the share requires encryption (Samba: `smb encrypt = \
             required` in the share's section): server requires SMB3 encryption, which this \
             build's smb2 client cannot negotiate ({ENCRYPTION_GAP})"
        ),
        (ErrorKind::AccessDenied, _) => {
            format!("access denied: user {user:?} may not connect to share {share:?} ({e})")
        }
        _ => e.to_string(),
    }
}

impl SmbRemote {
    /// Connect, negotiate, log in and connect the share. Every failure is a
    /// [`RemoteError::Connection`] whose message names the cause and never holds a secret.
    pub fn connect(job: &Job) -> Result<SmbRemote> {
        let host = job
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| conn_err("no host configured"))?;
        let port = job.port.unwrap_or(445);
        let share = job
            .share
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| conn_err("no share configured"))?;
        let user = job.username.clone().unwrap_or_default();
        let password = read_secret(&job.password)
            .map_err(conn_err)?
            .unwrap_or_default();
        let domain = job.domain.clone().unwrap_or_default();
        let root = normalize_root(&job.remote_path);
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let label = format!("smb://{user}@{addr}/{share}/{root}");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omnisync-smb")
            .enable_all()
            .build()
            .map_err(|e| conn_err(format!("cannot start the I/O runtime: {e}")))?;
        let rth = rt.handle().clone();
        let config = ClientConfig {
            addr: addr.clone(),
            timeout: CONNECT_TIMEOUT,
            username: user.clone(),
            password,
            domain,
            auto_reconnect: true,
            // Samba 4.17 has no SMB compression, and trying LZ4 on every frame of already
            // compressed data costs CPU this 2-core class of machine does not have.
            compression: false,
            ..Default::default()
        };
        let prefix = format!("{user}@{addr}");
        let first = rth
            .block_on(Link::open(rth.clone(), config.clone(), share.clone()))
            .map_err(|m| conn_err(format!("{prefix}: {m}")))?;
        // One connection per file in flight: Samba serves each connection from one
        // single-threaded process, so this is what lets the server work on several files at
        // once (and use more than one core). The first is opened here, the others when a
        // transfer thread first needs one.
        let extra = (1..job.transfers.clamp(1, MAX_CONNECTIONS))
            .map(|_| OnceLock::new())
            .collect();
        Ok(SmbRemote {
            rt: Some(rt),
            rth: rth.clone(),
            links: Links {
                first: Arc::new(first),
                extra,
                config,
                share,
            },
            root,
            label,
            server_copy: AtomicBool::new(true),
            checked_dirs: CheckedDirs::default(),
        })
    }

    /// The connection this thread works through: threads are spread over the connections
    /// round-robin, each keeping its own, so a transfer uses one connection throughout.
    fn link(&self) -> Arc<Link> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
        let l = &self.links;
        let k = SLOT.with(|s| *s) % (l.extra.len() + 1);
        if k == 0 {
            return l.first.clone();
        }
        l.extra[k - 1]
            .get_or_init(|| {
                let open = Link::open(self.rth.clone(), l.config.clone(), l.share.clone());
                match self.rth.block_on(open) {
                    Ok(link) => Some(Arc::new(link)),
                    Err(e) => {
                        // The server may limit connections per client; the first one serves.
                        tracing::debug!("smb: extra connection refused ({e}); sharing the first");
                        None
                    }
                }
            })
            .clone()
            .unwrap_or_else(|| l.first.clone())
    }

    /// The path on the share of a relative path (names encoded), after validating it.
    fn full(&self, op: &'static str, path: &str) -> Result<String> {
        check_rel_path(path).map_err(|e| RemoteError::refused(op, path, e))?;
        let enc = encode_path(path);
        Ok(match (self.root.is_empty(), enc.is_empty()) {
            (true, _) => enc,
            (false, true) => self.root.clone(),
            (false, false) => format!("{}/{enc}", self.root),
        })
    }
}

/// The connections to the share: the first, and up to `transfers - 1` more opened on demand
/// (`None`: the server refused one).
struct Links {
    first: Arc<Link>,
    extra: Vec<OnceLock<Option<Arc<Link>>>>,
    config: ClientConfig,
    share: String,
}

/// The session and the share's tree connection, and how to revive them.
struct Link {
    rth: tokio::runtime::Handle,
    /// Held only to connect the share again after a revival.
    client: tokio::sync::Mutex<SmbClient>,
    /// The session's connection and the share's tree connection, both cheap to clone.
    current: Mutex<(Connection, Arc<Tree>)>,
    share: String,
}

impl Link {
    /// Connect, negotiate, log in and connect the share, within [`LOGIN_TIMEOUT`]; the error
    /// says why in words (never with a secret).
    async fn open(
        rth: tokio::runtime::Handle,
        config: ClientConfig,
        share: String,
    ) -> std::result::Result<Link, String> {
        let (user, addr) = (config.username.clone(), config.addr.clone());
        let login = async {
            let mut client = SmbClient::connect(config)
                .await
                .map_err(|e| login_problem(&e, &user, &share, &addr, false))?;
            let no_cipher = client.params().is_some_and(|p| p.cipher.is_none());
            let tree = client
                .connect_share(&share)
                .await
                .map_err(|e| login_problem(&e, &user, &share, &addr, no_cipher))?;
            let conn = client
                .connection_for(&tree)
                .map_err(|e| login_problem(&e, &user, &share, &addr, no_cipher))?;
            Ok::<_, String>((client, conn, tree))
        };
        let (client, conn, tree) =
            tokio::time::timeout(LOGIN_TIMEOUT, login)
                .await
                .map_err(|_| {
                    format!(
                        "negotiate, login and share connect did not finish within {}s",
                        LOGIN_TIMEOUT.as_secs()
                    )
                })??;
        Ok(Link {
            rth,
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new((conn, Arc::new(tree))),
            share,
        })
    }

    fn session(&self) -> (Connection, Arc<Tree>) {
        let g = self.current.lock().unwrap();
        (g.0.clone(), g.1.clone())
    }

    /// Connect the share again after the session was revived (or revive it), unless another
    /// thread already did since `stale` was handed out.
    fn refresh(&self, stale: &Arc<Tree>) -> std::result::Result<(), smb2::Error> {
        self.rth.block_on(async {
            let mut client = self.client.lock().await;
            if !Arc::ptr_eq(&self.current.lock().unwrap().1, stale) {
                return Ok(());
            }
            if client.is_disconnected() {
                client.reconnect().await?;
            }
            let tree = match client.connect_share(&self.share).await {
                Ok(t) => t,
                Err(e) if is_lost(&e) => {
                    client.reconnect().await?;
                    client.connect_share(&self.share).await?
                }
                Err(e) => return Err(e),
            };
            let conn = client.connection_for(&tree)?;
            *self.current.lock().unwrap() = (conn, Arc::new(tree));
            Ok(())
        })
    }

    /// Run `f` on the current session; when the session turns out lost, connect again and
    /// (when `idempotent`) run it once more. A connection already known to be dead (the server
    /// closed it while it was idle) is revived first, so that nothing is sent into it: a write
    /// fails only when the connection dies while it is under way.
    fn call<T, F, Fut>(&self, idempotent: bool, f: F) -> std::result::Result<T, smb2::Error>
    where
        F: Fn(Connection, Arc<Tree>) -> Fut,
        Fut: Future<Output = std::result::Result<T, smb2::Error>>,
    {
        let (mut conn, mut tree) = self.session();
        if conn.is_disconnected() {
            tracing::debug!("smb: the connection was closed while idle; connecting again");
            self.refresh(&tree)?;
            (conn, tree) = self.session();
        }
        match self.rth.block_on(f(conn, tree.clone())) {
            Err(e) if is_lost(&e) => {
                tracing::debug!("smb: session lost ({e}); connecting the share again");
                self.refresh(&tree)?;
                if !idempotent {
                    return Err(e);
                }
                let (conn, tree) = self.session();
                self.rth.block_on(f(conn, tree))
            }
            other => other,
        }
    }
}

impl SmbRemote {
    fn stat_full(&self, op: &'static str, path: &str, full: &str) -> Result<Option<Entry>> {
        let full = full.to_string();
        let r = self.link().call(true, |mut conn, tree| {
            let full = full.clone();
            async move { tree.stat(&mut conn, &full).await }
        });
        match r {
            Ok(info) => Ok(Some(Entry {
                kind: kind_of(info.is_directory, info.is_link()),
                size: if info.is_directory { 0 } else { info.size },
                mtime: ns_from_filetime(info.modified),
                inode: None,
                hash: None,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                Ok(None)
            }
            Err(e) => Err(smb_err(op, path, e)),
        }
    }

    /// Create one directory, tolerating one that already exists as a directory.
    fn mkdir_one(&self, op: &'static str, rel: &str, full: &str) -> Result<()> {
        let f = full.to_string();
        let r = self.link().call(true, |mut conn, tree| {
            let f = f.clone();
            async move { tree.create_directory(&mut conn, &f).await }
        });
        match r {
            Ok(()) => Ok(()),
            Err(e) => match self.stat_full(op, rel, full)? {
                Some(x) if x.kind == Kind::Dir => Ok(()),
                Some(_) => Err(RemoteError::refused(
                    op,
                    rel,
                    format!("{full:?} exists and is not a directory"),
                )),
                None => Err(smb_err(op, rel, e)),
            },
        }
    }

    fn set_times_full(&self, path: &str, full: &str, mtime_ns: i64) -> Result<()> {
        let full = full.to_string();
        let times = FileTimes::new().set_modified(filetime_from_ns(mtime_ns));
        self.link()
            .call(true, |mut conn, tree| {
                let full = full.clone();
                async move { tree.set_times(&mut conn, &full, times).await }
            })
            .map_err(|e| smb_err("set mtime", path, e))
    }
}

impl SmbRemote {
    /// One compound CREATE + SET_INFO(FileRenameInformation) + CLOSE; with `replace` false the
    /// server refuses an existing `to` (STATUS_OBJECT_NAME_COLLISION).
    fn rename_opt(&self, from: &str, to: &str, replace: bool) -> Result<()> {
        let (f, t) = (self.full("rename", from)?, self.full("rename", to)?);
        self.link()
            .call(false, |mut conn, tree| {
                let (f, t) = (f.clone(), t.clone());
                async move {
                    tree.rename_with(
                        &mut conn,
                        &f,
                        &t,
                        RenameOptions::new().replace_if_exists(replace),
                    )
                    .await
                }
            })
            .map_err(|e| smb_err("rename", from, e))?;
        self.checked_dirs.forget(from);
        Ok(())
    }
}

/// [`Remote::put_new`] of a small file: [`write_small`]'s compound (CREATE, WRITE, SET_INFO,
/// CLOSE, whose answer gives the size and mtime the server now has) to the partial name `pf`,
/// then a rename to `tf` that the server refuses onto an existing name. Unless the file is in
/// place, the partial is deleted.
async fn put_small(
    mut conn: Connection,
    tree: Arc<Tree>,
    pf: String,
    tf: String,
    data: Arc<Vec<u8>>,
    mtime: Option<FileTime>,
) -> std::result::Result<PutNew, smb2::Error> {
    let len = data.len() as u64;
    let put = match write_small(conn.clone(), tree.clone(), pf.clone(), data, mtime).await {
        Ok(Some((size, mtime))) if size == len => {
            let no_replace = RenameOptions::new().replace_if_exists(false);
            match tree.rename_with(&mut conn, &pf, &tf, no_replace).await {
                Ok(()) => {
                    return Ok(PutNew::Done(Entry {
                        kind: Kind::File,
                        size,
                        mtime: ns_from_filetime(mtime),
                        inode: None,
                        hash: None,
                    }))
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutNew::Appeared),
                Err(e) => Err(e),
            }
        }
        Ok(Some((size, _))) => Ok(PutNew::Short(size)),
        // No size reported: the steps' way (a stat) cannot be taken from here.
        Ok(None) => Err(smb2::Error::invalid_data(
            "the server did not report the written file's size",
        )),
        Err(e) => Err(e),
    };
    if !is_lost_result(&put) {
        let _ = tree.delete_file(&mut conn, &pf).await;
    }
    put
}

/// A failure from a lost session, where nothing more can be sent on it.
fn is_lost_result(r: &std::result::Result<PutNew, smb2::Error>) -> bool {
    r.as_ref().err().is_some_and(is_lost)
}

impl Drop for SmbRemote {
    fn drop(&mut self) {
        let l = &self.links;
        let links: Vec<Arc<Link>> = std::iter::once(l.first.clone())
            .chain(l.extra.iter().filter_map(|x| x.get().cloned().flatten()))
            .collect();
        let _ = self.rth.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), async {
                for link in links {
                    let tree = link.current.lock().unwrap().1.clone();
                    let mut client = link.client.lock().await;
                    let _ = client.disconnect_share(&tree).await;
                }
            })
            .await
        });
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

type ReadTask = JoinHandle<std::result::Result<Vec<u8>, smb2::Error>>;

/// Reads a file sequentially with positioned reads pipelined ahead of the consumer.
struct SmbReader {
    rth: tokio::runtime::Handle,
    file: Option<Arc<FileReader>>,
    path: String,
    size: u64,
    next: u64,
    pending: VecDeque<ReadTask>,
    buf: Vec<u8>,
    pos: usize,
}

impl SmbReader {
    fn fill(&mut self) {
        let Some(file) = &self.file else { return };
        while self.pending.len() < READS_IN_FLIGHT && self.next < self.size {
            let (file, off) = (file.clone(), self.next);
            let len = READ_BLOCK.min(self.size - off);
            self.pending
                .push_back(self.rth.spawn(async move { file.read_at(off, len).await }));
            self.next += len;
        }
    }
}

impl Read for SmbReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.fill();
            let Some(task) = self.pending.pop_front() else {
                return Ok(0);
            };
            let res = self
                .rth
                .block_on(task)
                .map_err(|e| std::io::Error::other(format!("read task failed: {e}")))?;
            match res {
                Ok(data) if data.is_empty() => {
                    // The file shrank since it was opened: what follows is not there either.
                    self.pending.clear();
                    self.next = self.size;
                    return Ok(0);
                }
                Ok(data) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Err(e) => {
                    self.pending.clear();
                    self.next = self.size;
                    return Err(match smb_err("read", &self.path, e) {
                        RemoteError::Io { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    });
                }
            }
        }
    }
}

impl Drop for SmbReader {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(file) = self.file.take() {
            // Close once the reads in flight are answered (they hold the handle too).
            self.rth.spawn(async move {
                for t in pending {
                    let _ = t.await;
                }
                if let Ok(file) = Arc::try_unwrap(file) {
                    let _ = file.close().await;
                }
            });
        }
    }
}

/// How a [`SmbWriter`] writes.
enum WriteState {
    /// A new file not sent yet: the bytes so far (at most [`SMALL_FILE`]). Nothing is on the
    /// server until the writer finishes, so a small file is written in one round trip (see
    /// [`write_small`]); growing past the limit or a `sync` switches to `Stream`.
    Buffered(Vec<u8>),
    /// An open handle with WRITEs pipelined.
    Stream(Box<Pipe>),
    /// Finished (closed, or written whole by `set_mtime_and_stat`).
    Done,
}

/// Writes a file from an offset: a small new file in one compound at the end, anything else
/// through a [`Pipe`].
struct SmbWriter {
    link: Arc<Link>,
    state: WriteState,
    path: String,
    /// The file's path on the share.
    full: String,
}

impl SmbWriter {
    /// Open a handle on the server at `offset` (creating the file) and send what was buffered.
    fn open_at(&mut self, offset: u64) -> Result<&mut Pipe> {
        if let WriteState::Buffered(buf) = &mut self.state {
            let buf = std::mem::take(buf);
            let (full, rth) = (self.full.clone(), self.link.rth.clone());
            let mut pipe = self
                .link
                .call(false, |conn, tree| {
                    Pipe::open(rth.clone(), conn, tree, full.clone(), offset)
                })
                .map_err(|e| smb_err("open", &self.path, e))?;
            pipe.write(&buf)
                .map_err(|e| smb_err("write", &self.path, e))?;
            self.state = WriteState::Stream(Box::new(pipe));
        }
        match &mut self.state {
            WriteState::Stream(w) => Ok(w),
            _ => Err(RemoteError::refused("write", &self.path, "file is closed")),
        }
    }

    /// Send a buffered file whole (see [`write_small`]).
    fn commit(&mut self, buf: Vec<u8>, mtime: Option<FileTime>) -> Result<Option<(u64, FileTime)>> {
        self.state = WriteState::Done;
        let (full, data) = (self.full.clone(), Arc::new(buf));
        self.link
            .call(true, |conn, tree| {
                write_small(conn, tree, full.clone(), data.clone(), mtime)
            })
            .map_err(|e| smb_err("write", &self.path, e))
    }

    /// Close the file, setting its mtime first when asked; its size and mtime as the server
    /// reported them on closing.
    fn finish(&mut self, mtime: Option<FileTime>) -> Result<Option<(u64, FileTime)>> {
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Done => Ok(None),
            WriteState::Buffered(buf) => self.commit(buf, mtime),
            WriteState::Stream(mut w) => {
                w.finish(mtime).map_err(|e| smb_err("close", &self.path, e))
            }
        }
    }
}

impl WriteHandle for SmbWriter {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        if let WriteState::Buffered(buf) = &mut self.state {
            if buf.len() + data.len() <= SMALL_FILE {
                buf.extend_from_slice(data);
                return Ok(());
            }
        }
        let path = self.path.clone();
        self.open_at(0)?
            .write(data)
            .map_err(|e| smb_err("write", &path, e))
    }

    fn sync(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.open_at(0)?
            .sync()
            .map_err(|e| smb_err("flush", &path, e))
    }

    /// The FLUSH goes out on the file's handle once every WRITE sent so far is answered (see
    /// [`Pipe`]), and the WRITEs after it go on meanwhile.
    fn sync_begin(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.open_at(0)?
            .sync_begin()
            .map_err(|e| smb_err("flush", &path, e))
    }

    fn sync_done(&mut self) -> Result<bool> {
        match &mut self.state {
            WriteState::Stream(w) => w.sync_done().map_err(|e| smb_err("flush", &self.path, e)),
            _ => Ok(false),
        }
    }

    /// Through the open handle either way: a small file in its one compound, a streamed one in
    /// a SET_INFO + CLOSE compound; the CLOSE reports the size and mtime, so the engine needs
    /// no stat by path.
    fn set_mtime_and_stat(&mut self, mtime_ns: i64) -> Result<Option<Entry>> {
        Ok(self
            .finish(Some(filetime_from_ns(mtime_ns)))?
            .map(|(size, mtime)| Entry {
                kind: Kind::File,
                size,
                mtime: ns_from_filetime(mtime),
                inode: None,
                hash: None,
            }))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.finish(None).map(|_| ())
    }
}

impl Remote for SmbRemote {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_copy: self.server_copy.load(Ordering::Relaxed),
            set_mtime: true,
            content_hash: false,
            resume_write: true,
            case_insensitive: true,
            inodes: false,
            mtime_precision_ns: 100,
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn root_status(&self) -> RootStatus {
        let root = self.root.clone();
        let r = self.link().call(true, |mut conn, tree| {
            let root = root.clone();
            async move { tree.stat(&mut conn, &root).await }
        });
        match r {
            Ok(info) if info.is_directory => {}
            Ok(_) => return RootStatus::NotDir,
            Err(e) if e.kind() == ErrorKind::NotFound => return RootStatus::Missing,
            Err(e) if e.kind() == ErrorKind::NotADirectory => return RootStatus::NotDir,
            Err(e) => return RootStatus::Unreadable(smb_err("stat", "", e).to_string()),
        }
        let root = self.root.clone();
        let opened = self.link().call(true, |conn, tree| {
            let root = root.clone();
            async move {
                let mut reader = tree.open_directory_reader(conn, &root).await?;
                reader.next_batch().await.map(|_| ())
            }
        });
        match opened {
            Ok(()) => RootStatus::Dir,
            Err(e) => RootStatus::Unreadable(smb_err("list", "", e).to_string()),
        }
    }

    fn create_root(&self) -> Result<()> {
        let mut prefix = String::new();
        for part in self.root.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.mkdir_one("mkdir", "", &prefix)?;
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Listing> {
        let full = self.full("list", dir)?;
        let entries = self
            .link()
            .call(true, |mut conn, tree| {
                let full = full.clone();
                async move { tree.list_directory(&mut conn, &full).await }
            })
            .map_err(|e| smb_err("list", dir, e))?;
        let mut out = Listing::default();
        for e in entries {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let Some(name) = decode_name(&e.name) else {
                out.bad_names.push(e.name);
                continue;
            };
            let kind = kind_of(e.is_directory, e.is_link());
            out.entries.push((
                name,
                Entry {
                    kind,
                    size: if kind == Kind::File { e.size } else { 0 },
                    mtime: ns_from_filetime(e.modified),
                    inode: None,
                    hash: None,
                },
            ));
        }
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Option<Entry>> {
        let full = self.full("stat", path)?;
        self.stat_full("stat", path, &full)
    }

    fn open_read(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        let full = self.full("read", path)?;
        let file = self
            .link()
            .call(true, |conn, tree| {
                let full = full.clone();
                async move { tree.open_file_reader(conn, &full).await }
            })
            .map_err(|e| smb_err("open", path, e))?;
        if file.info().is_directory {
            let rth = self.rth.clone();
            rth.spawn(async move {
                let _ = file.close().await;
            });
            return Err(RemoteError::refused("read", path, "not a regular file"));
        }
        let size = file.size();
        Ok(Box::new(SmbReader {
            rth: self.rth.clone(),
            file: Some(Arc::new(file)),
            path: path.to_string(),
            size,
            next: offset.min(size),
            pending: VecDeque::new(),
            buf: Vec::new(),
            pos: 0,
        }))
    }

    fn open_write(&self, path: &str, offset: u64) -> Result<Box<dyn WriteHandle>> {
        let full = self.full("write", path)?;
        let mut w = SmbWriter {
            link: self.link(),
            state: WriteState::Buffered(Vec::new()),
            path: path.to_string(),
            full,
        };
        // A new file is not sent yet: a small one goes in one compound when it is complete, a
        // larger one opens a handle once it outgrows the buffer. No stat first either: the
        // CREATE opens files only (FILE_NON_DIRECTORY_FILE), so the server refuses a folder.
        // The compound addresses names as a plain share does; a DFS share's need its prefix,
        // which `smb2`'s open adds, so there a handle is opened at once (as for a resume).
        if offset > 0 || w.link.session().1.is_dfs {
            w.open_at(offset)?;
        }
        Ok(Box::new(w))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_opt(from, to, true)
    }

    /// Two round trips run as one task on the runtime ([`put_small`]), so the calling thread
    /// waits once per file rather than once per answer. A DFS share's names need the prefix
    /// `smb2`'s open adds, so there (and above [`SMALL_FILE`]) the steps go one by one.
    fn put_new(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<PutNew> {
        let link = self.link();
        if data.len() > SMALL_FILE || link.session().1.is_dfs {
            return super::put_new_steps(self, path, partial, data, mtime_ns);
        }
        let (pf, tf) = (self.full("write", partial)?, self.full("rename", path)?);
        let data = Arc::new(data.to_vec());
        let mtime = mtime_ns.map(filetime_from_ns);
        let rth = link.rth.clone();
        let put = link
            .call(false, |conn, tree| {
                let task = rth.spawn(put_small(
                    conn,
                    tree,
                    pf.clone(),
                    tf.clone(),
                    data.clone(),
                    mtime,
                ));
                async move {
                    task.await
                        .unwrap_or_else(|e| Err(smb2::Error::invalid_data(e.to_string())))
                }
            })
            .map_err(|e| smb_err("write", path, e))?;
        self.checked_dirs.forget(partial);
        Ok(put)
    }

    /// SMB2 SET_INFO rename with ReplaceIfExists off: the server refuses an existing name.
    fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        match self.rename_opt(from, to, false) {
            Ok(()) => Ok(true),
            Err(e) if e.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let full = self.full("remove", path)?;
        self.link()
            .call(false, |mut conn, tree| {
                let full = full.clone();
                async move { tree.delete_file(&mut conn, &full).await }
            })
            .map_err(|e| smb_err("remove", path, e))
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        let full = self.full("rmdir", path)?;
        self.link()
            .call(false, |mut conn, tree| {
                let full = full.clone();
                async move { tree.delete_directory(&mut conn, &full).await }
            })
            .map_err(|e| smb_err("rmdir", path, e))?;
        self.checked_dirs.forget(path);
        Ok(())
    }

    fn mkdir_all(&self, dir: &str) -> Result<()> {
        self.checked_dirs.walk(dir, |prefix| {
            let full = self.full("mkdir", prefix)?;
            self.mkdir_one("mkdir", dir, &full)
        })
    }

    fn set_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        let full = self.full("set mtime", path)?;
        self.set_times_full(path, &full, mtime_ns)
    }

    fn copy_file(&self, from: &str, to: &str) -> Result<()> {
        if !self.server_copy.load(Ordering::Relaxed) {
            return Err(RemoteError::refused(
                "copy",
                from,
                "the server does not offer server-side copy (FSCTL_SRV_COPYCHUNK)",
            ));
        }
        let (f, t) = (self.full("copy", from)?, self.full("copy", to)?);
        let src = copy_preconditions(
            from,
            self.stat_full("copy", from, &f)?,
            to,
            self.stat_full("copy", to, &t)?,
        )?;
        let r = self.link().call(false, |mut conn, tree| {
            let (f, t) = (f.clone(), t.clone());
            async move { tree.server_side_copy_file(&mut conn, &f, &t).await }
        });
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                self.server_copy.store(false, Ordering::Relaxed);
                return Err(smb_err("copy", from, e));
            }
            Err(e) => return Err(smb_err("copy", from, e)),
        }
        // A copy looks like its source: same modification time.
        self.set_times_full(to, &t, src.mtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetimes_round_trip_at_100ns() {
        let ns = 1_700_000_000_123_456_700i64;
        assert_eq!(ns_from_filetime(filetime_from_ns(ns)), ns);
        assert_eq!(ns_from_filetime(FileTime(EPOCH_TICKS as u64)), 0);
        assert_eq!(filetime_from_ns(0).0, EPOCH_TICKS as u64);
    }

    #[test]
    fn roots_are_normalized() {
        assert_eq!(normalize_root("/backup/x/"), "backup/x");
        assert_eq!(normalize_root("/"), "");
        assert_eq!(normalize_root(""), "");
    }
}
