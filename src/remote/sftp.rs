//! `protocol = "sftp"`: a folder on an SSH server, over one SSH connection per job run.
//!
//! The [`Remote`] trait is blocking and is called from several threads at once (the `transfers`
//! workers), while russh and russh-sftp are async. The backend owns a small tokio runtime (two
//! workers) that drives the SSH connection, and every trait method bridges with
//! `Handle::block_on` on the calling thread. Requests of different threads interleave on the
//! single SFTP session; that is what the protocol's request ids are for.
//!
//! What the server must be trusted with, and what it is not:
//! - Host keys are verified against `known_hosts`; an unknown or changed key stops the connection
//!   with the key's fingerprint and the exact line to add. No key is ever accepted by default.
//! - Names in listings are checked by the caller; names that are not UTF-8 arrive here already
//!   mangled (russh-sftp decodes them lossily), so a name holding U+FFFD is reported as a bad name
//!   and never addressed.
//! - Paths are built from the validated relative path under `remote_path`, and no component of a
//!   path that is read or written may be a symlink (checked with LSTAT, cached per run).
//!
//! Protocol facts this relies on (SFTP v3 as OpenSSH serves it):
//! - READDIR and LSTAT attributes describe links, not their targets; times are whole seconds.
//! - OpenSSH handles are 4-byte indexes and russh-sftp decodes them as lossy UTF-8, so index 128
//!   and up become unusable: at most [`MAX_HANDLES`] handles are open at once per session.
//! - `posix-rename@openssh.com` replaces a target atomically (plain RENAME refuses), `copy-data`
//!   copies between two handles on the server, `fsync@openssh.com` makes writes durable.

use crate::remote::CheckedDirs;
use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{
    check_rel_path, copy_preconditions, read_secret, Batching, Capabilities, Listing, NewFile,
    PutNew, Remote, RemoteError, Result, RootStatus, WriteHandle,
};
use crate::job::Job;
use crate::model::{Entry, Kind};

/// Open handles per SFTP session: OpenSSH's handle 128 is unusable through russh-sftp (see the
/// module doc), and some servers cap handles lower still; 100 leaves room for both.
pub const MAX_HANDLES: usize = 100;
/// Bytes per READ / WRITE request when the server does not say (no `limits@openssh.com`);
/// 32 of them in flight keep 2 MiB on the wire, what OpenSSH's channel window lets through.
const IO_BLOCK: usize = 64 << 10;
/// At most this per request when the server's limits allow it (OpenSSH: 255 KiB). Four times
/// fewer requests than 64 KiB for the same bytes: a 512 MiB download took ~40% less system
/// CPU (0.64-0.82 s instead of 1.2-1.5 s) and large uploads were ~10-20% faster here.
const IO_BLOCK_MAX: usize = 255 << 10;
/// Folder listings requested ahead of the scan at once (see [`Listings`]). Each holds a handle
/// for a few round trips; 32 keep the server busy on loopback without crowding transfers out
/// of the [`MAX_HANDLES`] slots.
const PREFETCH_DIRS: usize = 32;
/// Requests in flight per open file (reads ramp up to this, see [`SftpReader`]).
const IN_FLIGHT: usize = 32;
/// Answers a full write window waits for before it sends more: a quarter of the window, so
/// the writing thread wakes once per 8 answers and its next WRITEs leave in one SSH message,
/// while 24 stay on the wire.
const REFILL: usize = IN_FLIGHT / 4;
/// Small files transferred at once one per thread (see [`Remote::small_file_parallelism`]):
/// each holds one handle for about two round trips (OPEN, then WRITE+FSETSTAT+FSTAT+CLOSE).
/// More in flight means more requests per SSH message, so the server's sshd relays and answers
/// them in fewer reads and writes: 10,000 × 4 KiB over loopback took 1.23-1.55 s (median 1.31)
/// with 64 against 1.35-1.73 s (median 1.44) with 32, alternating. 1,000 × 1 MiB took 2.3-2.6 s
/// with 64 and 2.8-2.9 s with 128. Each holds its file in memory (at most 1 MiB), and beyond
/// the [`MAX_HANDLES`] slots the rest wait.
const SMALL_FILES_IN_FLIGHT: usize = 64;
/// New files of at most [`PUT_BATCH_MAX_FILE`] go [`PUT_BATCH`] to a [`Remote::put_new_many`]
/// call, whose thread waits once for all of them, [`PUT_BATCHES`] calls at once. 10,000 ×
/// 4 KiB (tmpfs, alternating rounds): 0.91-1.06 s in 8 batches of 16 against 1.18-1.48 s one
/// file per thread, 64 in flight (client CPU 0.64-0.78 against 0.99-1.31 s, context switches
/// 6-7k against 21-25k); 8 batches of 8 took 1.10-1.38 s, 4 of 16 1.10-1.32 s.
const PUT_BATCH: usize = 16;
const PUT_BATCHES: usize = 8;
/// Larger files gain nothing from batching (their bytes, not their requests, are the work),
/// and 128 of 1 MiB in flight were slower than 64.
const PUT_BATCH_MAX_FILE: u64 = 64 << 10;
/// Longest wait for a free handle slot (see [`SftpRemote::permits`]).
const HANDLE_WAIT: Duration = Duration::from_secs(300);
/// TCP connect, per resolved address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// SSH handshake, authentication and SFTP start-up together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One SFTP request (an fsync of a large file on a slow disk is the slowest).
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// An SSH keepalive after this long without traffic from the server; after
/// [`KEEPALIVE_MAX`] unanswered ones the connection counts as lost (a dead peer is noticed
/// within ~45 s, before [`REQUEST_TIMEOUT_SECS`] would fail a request that waits on it).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;
/// Waits before each attempt to log in again after the connection was lost: ~16 s in all,
/// enough for an sshd restart or a short network outage; a server down for longer fails the
/// run's remaining work quickly (see [`SftpRemote::reconnect_from`]) and the next run resumes.
const RECONNECT_BACKOFF_MS: &[u64] = &[100, 400, 1_000, 2_000, 4_000, 8_000];

/// AES-GCM first: ring runs it on AES-NI, about twice as fast here as russh's software
/// ChaCha20-Poly1305 (russh's default first choice), which stays the fallback.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";
const EXT_COPY_DATA: &str = "copy-data";
const EXT_FSYNC: &str = "fsync@openssh.com";
const EXT_LIMITS: &str = "limits@openssh.com";

/// What the server advertised in its SFTP VERSION packet (and `limits@openssh.com`).
#[derive(Debug, Clone, Copy)]
struct Extensions {
    posix_rename: bool,
    copy_data: bool,
    fsync: bool,
    read_block: usize,
    write_block: usize,
    max_handles: usize,
}

pub struct SftpRemote {
    /// `Some` until drop, where it is shut down after the session is closed.
    rt: Option<tokio::runtime::Runtime>,
    rth: tokio::runtime::Handle,
    /// The connection in use; replaced as a whole when it was lost and a new login succeeded.
    conn: Mutex<Arc<Conn>>,
    /// Held while logging in again, so that threads that all saw the same connection drop
    /// wait for one new connection instead of opening one each.
    relogin: Mutex<()>,
    /// Set once reconnecting failed: later operations fail at once with this message.
    down: Mutex<Option<String>>,
    next_id: AtomicU64,
    login: LoginParams,
    /// `remote_path` without trailing slashes (`/` stays `/`).
    root: String,
    label: String,
    /// Directories (relative) already seen to be real directories during this run.
    checked_dirs: CheckedDirs,
    listings: Listings,
    /// A new file's FSTAT agreed with what was written and set (its size, and the mtime to the
    /// second): later new files skip it (see [`put_new_on`]).
    fstat_agrees: std::sync::atomic::AtomicBool,
}

type DirTask = JoinHandle<std::result::Result<Vec<russh_sftp::protocol::File>, SftpError>>;

/// Listings of subfolders, requested as soon as their parent was listed: a scan walks a tree
/// one folder per thread and would otherwise wait for each folder's OPENDIR/READDIR/CLOSE
/// round trips in turn (1,000 folders took ~1.8 s on loopback). A listing is used at most
/// once, by the `list` of that folder; every change made through this remote drops them all,
/// so no listing older than the last change is ever returned. Only one level is requested
/// ahead of what was asked for, so an excluded folder costs one listing, not its subtree.
struct Listings {
    pending: Mutex<std::collections::HashMap<String, DirTask>>,
    slots: Arc<Semaphore>,
    /// Listings from one `find` of the whole tree (see [`super::sftp_find`]), by relative
    /// folder, with when they were made: each used at most once, dropped with the rest on a
    /// change, and not used after [`TREE_LISTING_TTL`].
    tree: Mutex<
        Option<(
            std::time::Instant,
            std::collections::HashMap<String, Listing>,
        )>,
    >,
    /// 0: not tried yet; 1: the server runs our `find`; 2: it does not (SFTP listings only).
    exec: std::sync::atomic::AtomicU8,
}

/// How long listings from a `find` of the tree are trusted: a scan takes them within a
/// second; a mount browsing later must not see an old tree.
const TREE_LISTING_TTL: Duration = Duration::from_secs(20);

impl Listings {
    fn take(&self, full: &str) -> Option<DirTask> {
        self.pending.lock().unwrap().remove(full)
    }

    fn take_tree(&self, rel: &str) -> Option<Listing> {
        let mut t = self.tree.lock().unwrap();
        let (made, map) = t.as_mut()?;
        if made.elapsed() > TREE_LISTING_TTL {
            *t = None;
            return None;
        }
        map.remove(rel)
    }

    /// Call before a change made through this remote; the listings are dropped now and again
    /// when the returned guard goes, so none requested while the change was under way (which
    /// might predate it on the server) survives it.
    fn changing(&self) -> ClearOnDrop<'_> {
        self.clear();
        ClearOnDrop(self)
    }

    fn clear(&self) {
        *self.tree.lock().unwrap() = None;
        let mut p = self.pending.lock().unwrap();
        if !p.is_empty() {
            for (_, t) in p.drain() {
                t.abort();
            }
        }
    }
}

struct ClearOnDrop<'a>(&'a Listings);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// What it takes to log in (again).
struct LoginParams {
    host: String,
    port: u16,
    user: String,
    known_hosts: PathBuf,
    auths: Vec<Auth>,
}

/// One SSH connection and its SFTP sessions, shared by the operations, readers and writers
/// that use it; a reconnect makes a new one, and whatever still holds the old one fails fast.
struct Conn {
    id: u64,
    ssh: client::Handle<HostKeyCheck>,
    /// Two SFTP sessions (channels) where the server allows a second, each served by its own
    /// server process, which works through its requests one at a time; creating a file
    /// (inode allocation) dominates that work for small files, and two sessions let a
    /// 2-core server do it in parallel. Requests are spread over them round-robin; a handle
    /// is used only on the session that opened it.
    sessions: Vec<RawSftpSession>,
    next_session: std::sync::atomic::AtomicUsize,
    handles: Arc<Semaphore>,
    ext: Extensions,
    /// Its sender lives in the SSH session's handler, which russh drops when the connection
    /// ends (EOF, reset, failed keepalives): then every request still waiting fails at once
    /// instead of after [`REQUEST_TIMEOUT_SECS`] (russh-sftp keeps waiting for replies that
    /// will never come).
    alive: watch::Receiver<()>,
}

const LOST: &str = "session closed (the SSH connection was lost)";

impl Conn {
    /// A session for a sequence of requests that share a handle.
    fn pick(&self) -> usize {
        self.next_session.fetch_add(1, Ordering::Relaxed) % self.sessions.len()
    }

    /// A session for one request.
    fn sftp(&self) -> &RawSftpSession {
        &self.sessions[self.pick()]
    }

    /// The session a handle belongs to.
    fn on(&self, sid: usize) -> &RawSftpSession {
        &self.sessions[sid]
    }

    fn close_sessions(&self) {
        for s in &self.sessions {
            let _ = s.close_session();
        }
    }

    fn is_dead(&self) -> bool {
        self.ssh.is_closed() || self.alive.has_changed().is_err()
    }

    /// `f`, or a "connection lost" error as soon as the connection ends.
    async fn guard<T>(
        &self,
        f: impl Future<Output = std::result::Result<T, SftpError>>,
    ) -> std::result::Result<T, SftpError> {
        let mut alive = self.alive.clone();
        tokio::select! {
            biased;
            r = f => r,
            _ = async { while alive.changed().await.is_ok() {} } => {
                Err(SftpError::UnexpectedBehavior(LOST.into()))
            }
        }
    }

    /// Did `e` come from this connection being lost (rather than from the server's answer)?
    fn lost(&self, e: &SftpError) -> bool {
        status_code(e).is_none()
            && (self.is_dead()
                || matches!(e, SftpError::UnexpectedBehavior(m) if m.contains("session closed")))
    }

    /// Wait for `n` of the session's [`MAX_HANDLES`] handle slots. Transfers hold one each, so
    /// a long wait means a leak: give up after [`HANDLE_WAIT`] rather than hang a run.
    async fn permits(&self, n: u32) -> std::result::Result<OwnedSemaphorePermit, SftpError> {
        match tokio::time::timeout(HANDLE_WAIT, self.handles.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(SftpError::Limited(format!(
                "all {MAX_HANDLES} file handles of the SFTP session stayed busy for {}s",
                HANDLE_WAIT.as_secs()
            ))),
        }
    }
}

/// The SSH client's side of the handshake: host key verification against known_hosts.
pub struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    /// Why the server's key was refused, for the connection error.
    problem: Arc<Mutex<Option<String>>>,
    /// Dropped with the handler when the connection ends (see [`Conn::alive`]).
    _alive: watch::Sender<()>,
}

/// `host` for port 22, `[host]:port` otherwise: how known_hosts names a server.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl HostKeyCheck {
    fn judge(&self, key: &PublicKey) -> std::result::Result<(), String> {
        let name = known_hosts_name(&self.host, self.port);
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let algo = key.algorithm();
        let line = match key.to_openssh() {
            Ok(k) => format!("{name} {}", k.trim()),
            Err(_) => format!("{name} {algo} <key>"),
        };
        let file = self.known_hosts.display();
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "host key verification failed: {name} is not in {file}. The server presented the \
                 {algo} key {fingerprint}. If that is the server's key (compare with \
                 `ssh-keygen -lf` of its host key on the server), add this line to {file}:\n{line}"
            )),
            Err(russh::keys::Error::KeyChanged { line: n }) => Err(format!(
                "host key verification failed: the host key of {name} has CHANGED. {file} line {n} \
                 records a different {algo} key; the server now presents {fingerprint}. Someone \
                 may be intercepting the connection. If the server's key was replaced on purpose, \
                 remove line {n} of {file} and add:\n{line}"
            )),
            Err(e) => Err(format!(
                "host key verification failed: cannot read {file}: {e}"
            )),
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let verdict = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self.judge(key),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => Err(
                "host key verification failed: the server presented a host certificate; \
                 certificate authorities are not supported, list its plain host key in known_hosts"
                    .to_string(),
            ),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(msg) => {
                *self.problem.lock().unwrap() = Some(msg);
                Ok(false)
            }
        }
    }
}

fn conn_err(msg: impl Into<String>) -> RemoteError {
    RemoteError::Connection(msg.into())
}

/// Map an SFTP failure of `op` on `path` to the trait's errors.
fn sftp_err(op: &'static str, path: &str, e: SftpError) -> RemoteError {
    use std::io::ErrorKind;
    let (kind, msg) = match &e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => {
                return RemoteError::NotFound {
                    op,
                    path: path.to_string(),
                }
            }
            code => {
                // OpenSSH's message repeats the code's name ("Permission denied"); say it once.
                let name = code.to_string();
                let msg = s.error_message.trim();
                let text = if msg.is_empty() || msg.eq_ignore_ascii_case(&name) {
                    name
                } else {
                    format!("{name} ({msg})")
                };
                let kind = if code == StatusCode::PermissionDenied {
                    ErrorKind::PermissionDenied
                } else {
                    ErrorKind::Other
                };
                (kind, text)
            }
        },
        SftpError::Timeout => (
            ErrorKind::TimedOut,
            "the server did not answer in time".to_string(),
        ),
        SftpError::UnexpectedBehavior(m) if m.contains("session closed") => (
            ErrorKind::ConnectionAborted,
            "the SFTP session is closed (connection lost)".to_string(),
        ),
        SftpError::UnexpectedBehavior(m) if m.starts_with(RECONNECT_FAILED) => {
            (ErrorKind::ConnectionAborted, m.clone())
        }
        _ => (ErrorKind::Other, e.to_string()),
    };
    RemoteError::Io {
        op,
        path: path.to_string(),
        source: std::io::Error::new(kind, msg),
    }
}

fn status_code(e: &SftpError) -> Option<StatusCode> {
    match e {
        SftpError::Status(s) => Some(s.status_code),
        _ => None,
    }
}

/// The reply to an EXTENDED request that answers with a status.
fn expect_ok(p: Packet) -> std::result::Result<(), SftpError> {
    match p {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(SftpError::Status(s)),
        _ => Err(SftpError::UnexpectedPacket),
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// An entry from LSTAT-style attributes; `None` for sockets, devices, FIFOs.
/// Do two listings of one folder hold the same names with the same type, size and mtime?
fn same_listing(a: &Listing, b: &Listing) -> bool {
    let key = |l: &Listing| {
        let mut v: Vec<(String, Kind, u64, i64)> = l
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.kind, e.size, e.mtime))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        let mut bad = l.bad_names.clone();
        bad.sort();
        (v, bad)
    };
    key(a) == key(b)
}

fn entry_from_attrs(a: &FileAttributes) -> Option<Entry> {
    let kind = match a.permissions.map(|p| p & S_IFMT) {
        Some(S_IFDIR) => Kind::Dir,
        Some(S_IFREG) => Kind::File,
        Some(S_IFLNK) => Kind::Symlink,
        Some(_) => return None,
        // No type bits at all: a server that hides them; a size means a file.
        None if a.size.is_some() => Kind::File,
        None => return None,
    };
    Some(Entry {
        kind,
        size: if kind == Kind::File {
            a.size.unwrap_or(0)
        } else {
            0
        },
        mtime: a.mtime.map(|s| s as i64 * 1_000_000_000).unwrap_or(0),
        inode: None,
        hash: None,
    })
}

/// An LSTAT's answer as an entry; anything that is not a file, folder or link we sync reads
/// as a link, so it is never written through or descended into.
fn lstat_entry(a: &FileAttributes) -> Entry {
    entry_from_attrs(a).unwrap_or(Entry {
        kind: Kind::Symlink,
        size: 0,
        mtime: 0,
        inode: None,
        hash: None,
    })
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// Which way to log in, decided from the job before connecting.
#[derive(Clone)]
enum Auth {
    Key {
        path: PathBuf,
        passphrase: Option<String>,
    },
    Password(String),
    Agent,
}

impl SftpRemote {
    /// Connect, verify the host key, log in and start SFTP. Every failure is a
    /// [`RemoteError::Connection`] whose message names the cause and never holds a secret.
    pub fn connect(job: &Job) -> Result<SftpRemote> {
        let host = job
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| conn_err("no host configured"))?;
        let port = job.port.unwrap_or(22);
        let user = match &job.username {
            Some(u) if !u.is_empty() => u.clone(),
            _ => std::env::var("USER").map_err(|_| conn_err("no username configured"))?,
        };
        let known_hosts = match &job.known_hosts {
            Some(p) => p.clone(),
            None => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
                .ok_or_else(|| {
                    conn_err(
                        "no known_hosts configured and $HOME is not set to find ~/.ssh/known_hosts",
                    )
                })?,
        };
        let mut auths = Vec::new();
        if let Some(path) = &job.private_key {
            let passphrase = match &job.private_key_passphrase_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    conn_err(format!(
                        "private_key_passphrase_env: environment variable {var} is not set"
                    ))
                })?),
                None => None,
            };
            auths.push(Auth::Key {
                path: path.clone(),
                passphrase,
            });
        }
        if let Some(pw) = read_secret(&job.password).map_err(conn_err)? {
            auths.push(Auth::Password(pw));
        }
        if auths.is_empty() {
            auths.push(Auth::Agent);
        }
        let root = normalize_root(&job.remote_path);
        let label = format!("sftp://{user}@{host}:{port}{}", display_root(&root));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omnisync-sftp")
            .enable_all()
            .build()
            .map_err(|e| conn_err(format!("cannot start the I/O runtime: {e}")))?;
        let rth = rt.handle().clone();
        let login = LoginParams {
            host,
            port,
            user,
            known_hosts,
            auths,
        };
        let conn = rth
            .block_on(login.login(1))
            .map_err(|e| conn_err(format!("{}: {}", login.prefix(), e.msg)))?;
        Ok(SftpRemote {
            rt: Some(rt),
            rth,
            conn: Mutex::new(Arc::new(conn)),
            relogin: Mutex::new(()),
            down: Mutex::new(None),
            next_id: AtomicU64::new(2),
            login,
            root,
            label,
            checked_dirs: CheckedDirs::default(),
            listings: Listings {
                pending: Mutex::new(std::collections::HashMap::new()),
                slots: Arc::new(Semaphore::new(PREFETCH_DIRS)),
                tree: Mutex::new(None),
                exec: std::sync::atomic::AtomicU8::new(0),
            },
            fstat_agrees: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// What [`put_new_on`]'s answer means for `path`: a refused OPEN takes the steps one by
    /// one (they name the problem).
    fn put_outcome(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
        raw: std::result::Result<PutRaw, SftpError>,
    ) -> Result<PutNew> {
        let raw = raw.map_err(|e| sftp_err("write", path, e))?;
        self.forget_dir(partial);
        Ok(match raw {
            PutRaw::Done(e, agrees) => {
                if agrees {
                    self.fstat_agrees.store(true, Ordering::Relaxed);
                }
                PutNew::Done(e)
            }
            PutRaw::Short(n) => PutNew::Short(n),
            PutRaw::Appeared => PutNew::Appeared,
            PutRaw::Refused => return super::put_new_steps(self, path, partial, data, mtime_ns),
        })
    }

    fn run<F: Future>(&self, f: F) -> F::Output {
        self.rth.block_on(f)
    }

    fn conn(&self) -> Arc<Conn> {
        self.conn.lock().unwrap().clone()
    }

    fn ext(&self) -> Extensions {
        self.conn().ext
    }

    /// Run `f` (one or a few requests) on the current connection; when that connection turns
    /// out to be lost, log in again ([`Self::reconnect_from`]) and run `f` once more on the
    /// new one. Every operation goes through here, so a connection dropped between two of
    /// them (or during a scan) costs a reconnect, not an error. A repeated request whose
    /// first copy did reach the server fails (a rename's source is gone), it never does harm.
    fn call<T, Fut>(&self, f: impl Fn(Arc<Conn>) -> Fut) -> std::result::Result<T, SftpError>
    where
        Fut: Future<Output = std::result::Result<T, SftpError>>,
    {
        let conn = self.conn();
        match self.run(conn.guard(f(conn.clone()))) {
            Err(e) if conn.lost(&e) => {
                self.reconnect_from(conn.id)
                    .map_err(SftpError::UnexpectedBehavior)?;
                let conn = self.conn();
                self.run(conn.guard(f(conn.clone())))
            }
            r => r,
        }
    }

    /// [`Self::call`] with `f`'s future run as a task of its own on the runtime, so that the
    /// calling thread waits once for all of its round trips rather than once per answer.
    fn call_task<T, Fut>(&self, f: impl Fn(Arc<Conn>) -> Fut) -> std::result::Result<T, SftpError>
    where
        Fut: Future<Output = std::result::Result<T, SftpError>> + Send + 'static,
        T: Send + 'static,
    {
        self.call(|c| {
            let task = self.rth.spawn(f(c));
            async move {
                task.await
                    .unwrap_or_else(|e| Err(SftpError::UnexpectedBehavior(e.to_string())))
            }
        })
    }

    /// Replace connection `id`, which was lost, by a new login: attempts after each wait of
    /// [`RECONNECT_BACKOFF_MS`]. Only one thread logs in; the others wait and use its
    /// connection. When every attempt failed (or the login itself was refused: host key,
    /// authentication), the remote is marked down and later calls fail at once.
    fn reconnect_from(&self, id: u64) -> std::result::Result<(), String> {
        let _one = self.relogin.lock().unwrap();
        if let Some(why) = self.down.lock().unwrap().clone() {
            return Err(why);
        }
        if self.conn().id != id {
            return Ok(()); // another thread already reconnected
        }
        let started = std::time::Instant::now();
        let mut last = String::new();
        for (attempt, wait) in RECONNECT_BACKOFF_MS.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(*wait));
            let new_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            match self.run(self.login.login(new_id)) {
                Ok(conn) => {
                    tracing::warn!(
                        remote = %self.label,
                        attempt = attempt + 1,
                        ms = started.elapsed().as_millis() as u64,
                        "SSH connection lost; reconnected"
                    );
                    let old = std::mem::replace(&mut *self.conn.lock().unwrap(), Arc::new(conn));
                    self.rth.spawn(async move {
                        old.close_sessions();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            old.ssh
                                .disconnect(russh::Disconnect::ByApplication, "", "en"),
                        )
                        .await;
                    });
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(remote = %self.label, attempt = attempt + 1, error = %e.msg, "reconnect failed");
                    last = e.msg;
                    if !e.retry {
                        break;
                    }
                }
            }
        }
        let why = format!(
            "{RECONNECT_FAILED} to {} after {:.0}s: {last}",
            self.login.prefix(),
            started.elapsed().as_secs_f64()
        );
        *self.down.lock().unwrap() = Some(why.clone());
        Err(why)
    }

    /// The server path of a relative path.
    /// Whether a walk from the root may list the whole tree with one `find` (the default) or
    /// must use SFTP listings only.
    pub fn use_find_listing(&self, on: bool) {
        self.listings
            .exec
            .store(if on { 0 } else { 2 }, Ordering::Relaxed);
    }

    /// Did the last walk from the root get its listings from `find`?
    pub fn listed_by_find(&self) -> bool {
        self.listings.exec.load(Ordering::Relaxed) == 1
    }

    /// One folder's listing by SFTP (OPENDIR, READDIRs, CLOSE), or the one requested ahead;
    /// with `prefetch`, the listings of its subfolders are requested ahead of the walk.
    fn list_sftp(&self, dir: &str, full: &str, prefetch: bool) -> Result<Listing> {
        let full = full.to_string();
        let ahead = self.listings.take(&full).and_then(|task| {
            let conn = self.conn();
            // A listing that failed (lost connection included) is simply asked for again.
            self.run(conn.guard(async { task.await.map_err(|_| SftpError::Timeout)? }))
                .ok()
        });
        let files = match ahead {
            Some(f) => f,
            None => self
                .call(|c| read_dir(c, full.clone()))
                .map_err(|e| sftp_err("list", dir, e))?,
        };
        let mut out = Listing::default();
        for f in files {
            let name = f.filename;
            if name == "." || name == ".." {
                continue;
            }
            if name.contains('\u{FFFD}') {
                // Not UTF-8 on the server (decoded lossily on the way): cannot be addressed.
                out.bad_names.push(name);
                continue;
            }
            if let Some(e) = entry_from_attrs(&f.attrs) {
                out.entries.push((name, e));
            }
        }
        // READDIR attributes are LSTAT's: the folders listed here are real folders, so the
        // scan descending into them costs no extra LSTAT per folder.
        self.note_dirs(dir, &out);
        if !prefetch {
            return Ok(out);
        }
        for (name, e) in &out.entries {
            if e.kind == Kind::Dir {
                self.list_ahead(format!("{full}/{name}"));
            }
        }
        Ok(out)
    }

    /// Ask for the SFTP listing of the server folder `full` now; [`Self::list_sftp`] takes it.
    fn list_ahead(&self, full: String) {
        let (c, slots, path) = (self.conn(), self.listings.slots.clone(), full.clone());
        let task = self.rth.spawn(async move {
            let _slot = slots.acquire_owned().await;
            c.guard(read_dir(c.clone(), path)).await
        });
        if let Some(old) = self.listings.pending.lock().unwrap().insert(full, task) {
            old.abort();
        }
    }

    /// The folders of a listing are real folders (READDIR and `find` report lstat's type):
    /// later checks of paths below them need no LSTAT.
    fn note_dirs(&self, dir: &str, l: &Listing) {
        for (name, e) in &l.entries {
            if e.kind == Kind::Dir {
                self.checked_dirs.insert(super::join(dir, name));
            }
        }
    }

    /// Every folder's listing below `full` (relative `rel`) from one `find` through an exec
    /// channel; `None` when the server will not run it or its answer is not complete, and
    /// the caller lists by SFTP. See [`super::sftp_find`].
    fn find_tree(
        &self,
        rel: &str,
        full: &str,
    ) -> Option<std::collections::HashMap<String, Listing>> {
        let conn = self.conn();
        let cmd = super::sftp_find::command(full);
        let t = std::time::Instant::now();
        let mut parser = super::sftp_find::FindParser::new(rel);
        let mut bytes = 0usize;
        let done = self.run(async {
            tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS), async {
                let mut ch = conn.ssh.channel_open_session().await.ok()?;
                ch.exec(true, cmd).await.ok()?;
                // Nothing to read from us: a server that runs something else (a forced
                // sftp-server) sees end of input and ends instead of waiting.
                ch.eof().await.ok()?;
                let mut status = None;
                while let Some(msg) = ch.wait().await {
                    match msg {
                        russh::ChannelMsg::Data { data } => {
                            bytes += data.len();
                            parser.feed(&data);
                        }
                        russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                        russh::ChannelMsg::Failure => return None,
                        russh::ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                (status == Some(0)).then_some(())
            })
            .await
            .ok()
            .flatten()
        });
        let tree = done.and_then(|()| parser.finish());
        tracing::debug!(
            bytes,
            folders = tree.as_ref().map(|t| t.len()),
            ms = t.elapsed().as_millis() as u64,
            "find listing"
        );
        tree
    }

    fn full(&self, op: &'static str, path: &str) -> Result<String> {
        check_rel_path(path).map_err(|e| RemoteError::refused(op, path, e))?;
        Ok(if path.is_empty() {
            self.root.clone()
        } else if self.root == "/" {
            format!("/{path}")
        } else {
            format!("{}/{path}", self.root)
        })
    }

    /// Refuse to act below a component that is a symlink or not a directory. The components
    /// not checked yet are LSTATed all at once: one round trip, not one per level.
    fn check_parents(&self, op: &'static str, path: &str) -> Result<()> {
        let todo = self.checked_dirs.unchecked(super::parent(path));
        for (prefix, found) in todo.iter().zip(self.lstat_each(op, path, &todo)?) {
            match found.map_err(|e| sftp_err(op, path, e))?.kind {
                Kind::Dir => self.checked_dirs.insert(prefix.clone()),
                Kind::Symlink => {
                    return Err(RemoteError::refused(
                        op,
                        path,
                        format!("{prefix:?} is a symlink; not following it"),
                    ))
                }
                _ => {
                    return Err(RemoteError::refused(
                        op,
                        path,
                        format!("{prefix:?} is not a directory"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// LSTAT each of `rels` (paths relative to the root), all requests in flight together;
    /// each answer in order (anything that is not a file, folder or link reads as a link: it
    /// is never written through). `Err` only when the requests could not be made at all.
    fn lstat_each(
        &self,
        op: &'static str,
        path: &str,
        rels: &[String],
    ) -> Result<Vec<std::result::Result<Entry, SftpError>>> {
        if rels.is_empty() {
            return Ok(Vec::new());
        }
        let fulls = rels
            .iter()
            .map(|r| self.full(op, r))
            .collect::<Result<Vec<_>>>()?;
        let answers = self
            .call(|c| {
                let fulls = fulls.clone();
                async move {
                    let reqs: Vec<Req<'_>> = fulls
                        .into_iter()
                        .map(|f| -> Req<'_> {
                            let s = c.sftp();
                            Box::pin(async move { s.lstat(f).await.map(|a| Some(a.attrs)) })
                        })
                        .collect();
                    Ok(in_order(reqs).await)
                }
            })
            .map_err(|e| sftp_err(op, path, e))?;
        Ok(answers
            .into_iter()
            .map(|a| a.map(|attrs| lstat_entry(&attrs.unwrap_or_default())))
            .collect())
    }

    fn forget_dir(&self, path: &str) {
        self.checked_dirs.forget(path);
    }

    /// LSTAT of a server path: `Ok(None)` when it does not exist.
    fn lstat_full(&self, op: &'static str, path: &str, full: &str) -> Result<Option<Entry>> {
        match self.call(|c| {
            let full = full.to_string();
            async move { c.sftp().lstat(full).await }
        }) {
            Ok(a) => Ok(Some(lstat_entry(&a.attrs))),
            Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => Ok(None),
            Err(e) => Err(sftp_err(op, path, e)),
        }
    }

    /// Create one directory (server path), tolerating one that already exists as a directory.
    fn mkdir_one(&self, op: &'static str, rel: &str, full: &str) -> Result<()> {
        match self.lstat_full(op, rel, full)? {
            Some(e) if e.kind == Kind::Dir => return Ok(()),
            Some(e) if e.kind == Kind::Symlink => {
                return Err(RemoteError::refused(
                    op,
                    rel,
                    format!("{full:?} is a symlink; not following it"),
                ))
            }
            Some(_) => {
                return Err(RemoteError::refused(
                    op,
                    rel,
                    format!("{full:?} exists and is not a directory"),
                ))
            }
            None => {}
        }
        match self.call(|c| {
            let full = full.to_string();
            async move { c.sftp().mkdir(full, FileAttributes::empty()).await }
        }) {
            Ok(_) => Ok(()),
            Err(e) => match self.lstat_full(op, rel, full)? {
                // Created by someone else in between (another transfer thread).
                Some(x) if x.kind == Kind::Dir => Ok(()),
                _ => Err(sftp_err(op, rel, e)),
            },
        }
    }

    fn remove_full(&self, full: &str) -> std::result::Result<(), SftpError> {
        self.call(|c| {
            let full = full.to_string();
            async move { c.sftp().remove(full).await.map(|_| ()) }
        })
    }

    /// OPEN `full` on the current connection (reconnecting first if it was lost); with
    /// `truncate_to`, cut the open file to that length. Returns the connection the handle
    /// belongs to, the handle and its slot.
    fn open_handle(
        &self,
        op: &'static str,
        path: &str,
        full: String,
        flags: OpenFlags,
        truncate_to: Option<u64>,
    ) -> Result<(Arc<Conn>, usize, String, OwnedSemaphorePermit)> {
        self.call(|c| {
            let full = full.clone();
            async move {
                let permit = c.permits(1).await?;
                let sid = c.pick();
                let h = c
                    .on(sid)
                    .open(full, flags, FileAttributes::empty())
                    .await?
                    .handle;
                if let Some(size) = truncate_to {
                    let attrs = FileAttributes {
                        size: Some(size),
                        ..FileAttributes::empty()
                    };
                    if let Err(e) = c.on(sid).fsetstat(h.clone(), attrs).await {
                        let _ = c.on(sid).close(h).await;
                        return Err(e);
                    }
                }
                Ok((c, sid, h, permit))
            }
        })
        .map_err(|e| sftp_err(op, path, e))
    }
}

/// OPENDIR, READDIR until EOF, CLOSE: one folder's names with their (LSTAT) attributes.
/// READDIRs go out two at a time (the server answers them in order: the next names, or EOF),
/// so a folder of up to one reply's worth of names (OpenSSH: 100) costs two round trips, and
/// the CLOSE is not waited for: its reply releases the handle's slot in the background.
async fn read_dir(
    c: Arc<Conn>,
    full: String,
) -> std::result::Result<Vec<russh_sftp::protocol::File>, SftpError> {
    let permit = c.permits(1).await?;
    let sid = c.pick();
    let h = c.on(sid).opendir(full).await?.handle;
    let mut files = Vec::new();
    let res = 'pages: loop {
        let (a, b) = tokio::join!(c.on(sid).readdir(h.as_str()), c.on(sid).readdir(h.as_str()));
        for r in [a, b] {
            match r {
                Ok(name) => files.extend(name.files),
                Err(e) if status_code(&e) == Some(StatusCode::Eof) => break 'pages Ok(()),
                Err(e) => break 'pages Err(e),
            }
        }
    };
    let closer = c.clone();
    tokio::spawn(async move {
        let _ = closer.guard(closer.on(sid).close(h)).await;
        drop(permit);
    });
    res?;
    Ok(files)
}

/// What [`put_new_on`] found, before the mapping to [`PutNew`].
enum PutRaw {
    /// In place; `true` when its FSTAT showed the size and time written and set.
    Done(Entry, bool),
    Short(u64),
    Appeared,
    /// The exclusive OPEN was refused (a partial left by an earlier run, most likely).
    Refused,
}

/// A future for [`in_order`].
type Req<'a> = Pin<
    Box<dyn Future<Output = std::result::Result<Option<FileAttributes>, SftpError>> + Send + 'a>,
>;

/// Await every request, polling each (and so, for russh-sftp, sending each) first in the
/// order given: they go out back to back, and the server answers them in that order.
async fn in_order(
    mut reqs: Vec<Req<'_>>,
) -> Vec<std::result::Result<Option<FileAttributes>, SftpError>> {
    let mut out: Vec<Option<_>> = reqs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (r, o) in reqs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match r.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// [`Remote::put_new`] in three round trips: OPEN with O_EXCL; the WRITEs, FSETSTAT (the
/// mtime), FSTAT and CLOSE back to back; RENAME, which OpenSSH refuses onto an existing name
/// (link + unlink). Only a complete, closed partial is renamed; unless it was, it is removed.
/// With `trust_fstat` (an earlier file's FSTAT showed that the server keeps exactly the bytes
/// its WRITEs acknowledged and the time FSETSTAT sets, to the second) no FSTAT is sent, one
/// request of six less per file, and the entry is what was written and set.
/// What [`write_through`] left.
enum Written {
    /// The file's state after CLOSE: as its FSTAT reported it, or as written when FSTATs are
    /// trusted (`None`: no FSTAT and nothing set to trust); `true` when an FSTAT showed
    /// exactly the size and time written and set.
    Kept(Option<Entry>, bool),
    /// The server refused the OPEN with a status.
    Refused,
}

/// OPEN `pf` with `flags`, then WRITE `data` whole, set its time (FSETSTAT), FSTAT it (unless
/// `trust_fstat`) and CLOSE it, all behind the OPEN's answer: two round trips for a small
/// file. The first failure after the OPEN is the error, once every answer is in.
async fn write_through(
    s: &RawSftpSession,
    pf: &str,
    flags: OpenFlags,
    data: &[u8],
    block: usize,
    mtime_ns: Option<i64>,
    trust_fstat: bool,
) -> std::result::Result<Written, SftpError> {
    let set_secs = mtime_ns.map(|t| t.div_euclid(1_000_000_000));
    // A time SFTP v3 cannot carry (before 1970, after 2106) is clamped: ask what was kept.
    let trust_fstat = trust_fstat && set_secs.is_some_and(|t| (0..=u32::MAX as i64).contains(&t));
    let h = match s.open(pf, flags, FileAttributes::empty()).await {
        Ok(h) => h.handle,
        Err(e) if status_code(&e).is_some() => return Ok(Written::Refused),
        Err(e) => return Err(e),
    };
    let mut reqs: Vec<Req<'_>> = Vec::new();
    for (i, chunk) in data.chunks(block).enumerate() {
        let h = h.clone();
        reqs.push(Box::pin(async move {
            s.write(h, (i * block) as u64, chunk.to_vec())
                .await
                .map(|_| None)
        }));
    }
    if let Some(t) = mtime_ns {
        let h = h.clone();
        reqs.push(Box::pin(async move {
            s.fsetstat(h, mtime_attrs(t)).await.map(|_| None)
        }));
    }
    if !trust_fstat {
        let h2 = h.clone();
        reqs.push(Box::pin(
            async move { s.fstat(h2).await.map(|a| Some(a.attrs)) },
        ));
    }
    reqs.push(Box::pin(async move { s.close(h).await.map(|_| None) }));
    let mut attrs = None;
    let mut failed = None;
    for r in in_order(reqs).await {
        match r {
            Ok(Some(a)) => attrs = Some(a),
            Ok(None) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let written = set_secs.map(|t| Entry::file(data.len() as u64, t * 1_000_000_000));
    let kept = match (trust_fstat, &written) {
        (true, Some(w)) => Some(w.clone()),
        _ => attrs.as_ref().and_then(entry_from_attrs),
    };
    let agrees = !trust_fstat && written.is_some() && kept == written;
    Ok(Written::Kept(kept, agrees))
}

async fn put_new_on(
    c: Arc<Conn>,
    pf: String,
    tf: String,
    data: Arc<[u8]>,
    mtime_ns: Option<i64>,
    trust_fstat: bool,
) -> std::result::Result<PutRaw, SftpError> {
    let permit = c.permits(1).await?;
    let s = c.on(c.pick());
    let excl = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let block = c.ext.write_block;
    let written = write_through(s, &pf, excl, &data, block, mtime_ns, trust_fstat).await;
    drop(permit);
    let raw = match written {
        Ok(Written::Refused) => return Ok(PutRaw::Refused),
        Err(e) => Err(e),
        Ok(Written::Kept(Some(e), agrees)) if e.is_file() && e.size == data.len() as u64 => {
            match s.rename(pf.as_str(), tf.as_str()).await {
                Ok(_) => return Ok(PutRaw::Done(e, agrees)),
                Err(e) if status_code(&e).is_some() => match s.lstat(tf).await {
                    Ok(_) => Ok(PutRaw::Appeared),
                    Err(_) => Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(Written::Kept(kept, _)) => Ok(PutRaw::Short(kept.map_or(0, |e| e.size))),
    };
    let _ = s.remove(pf).await;
    raw
}

/// [`Remote::write_whole`]: the partial created or cut, written, timed and closed in two
/// round trips. `Ok(None)` when the OPEN was refused with a status (the caller takes the
/// steps one by one, which name the problem).
async fn write_whole_on(
    c: Arc<Conn>,
    pf: String,
    data: Arc<[u8]>,
    mtime_ns: Option<i64>,
    trust_fstat: bool,
) -> std::result::Result<Option<(Option<Entry>, bool)>, SftpError> {
    let _permit = c.permits(1).await?;
    let s = c.on(c.pick());
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let block = c.ext.write_block;
    match write_through(s, &pf, flags, &data, block, mtime_ns, trust_fstat).await? {
        Written::Refused => Ok(None),
        Written::Kept(kept, agrees) => Ok(Some((kept, agrees))),
    }
}

/// Server-side copy of the file `f` to `t` (created or truncated) with `copy-data`.
async fn copy_data(c: Arc<Conn>, f: String, t: String) -> std::result::Result<(), SftpError> {
    let permit = c.permits(2).await?;
    let sid = c.pick();
    let rh = c
        .on(sid)
        .open(f, OpenFlags::READ, FileAttributes::empty())
        .await?
        .handle;
    let wh = match c
        .on(sid)
        .open(
            t,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            FileAttributes::empty(),
        )
        .await
    {
        Ok(h) => h.handle,
        Err(e) => {
            let _ = c.on(sid).close(rh).await;
            return Err(e);
        }
    };
    // copy-data: read handle, read offset, length (0 = to EOF), write handle, offset.
    let mut data = Vec::with_capacity(rh.len() + wh.len() + 32);
    put_str(&mut data, &rh);
    put_u64(&mut data, 0);
    put_u64(&mut data, 0);
    put_str(&mut data, &wh);
    put_u64(&mut data, 0);
    let copied = match c.on(sid).extended(EXT_COPY_DATA, data).await {
        Ok(p) => expect_ok(p),
        Err(e) => Err(e),
    };
    let c1 = c.on(sid).close(rh).await;
    let c2 = c.on(sid).close(wh).await;
    drop(permit);
    copied.and(c1.map(|_| ())).and(c2.map(|_| ()))
}

/// `remote_path` as the server should see it: trailing slashes dropped, `/` kept, empty = `.`.
fn normalize_root(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        if p.starts_with('/') {
            "/".into()
        } else {
            ".".into()
        }
    } else {
        t.to_string()
    }
}

fn display_root(root: &str) -> String {
    if root.starts_with('/') {
        root.to_string()
    } else {
        format!("/~/{root}")
    }
}

/// Why a login failed, and whether trying again later may help (a refused connection may be
/// a server restarting; a refused host key or password will not change by waiting).
struct LoginError {
    msg: String,
    retry: bool,
}

impl LoginError {
    fn retry(msg: impl Into<String>) -> LoginError {
        LoginError {
            msg: msg.into(),
            retry: true,
        }
    }

    fn fatal(msg: impl Into<String>) -> LoginError {
        LoginError {
            msg: msg.into(),
            retry: false,
        }
    }
}

/// The start of every reconnect failure message (see [`sftp_err`]).
const RECONNECT_FAILED: &str = "the SSH connection was lost and could not be re-established";

impl LoginParams {
    /// `user@host:port`, for messages.
    fn prefix(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    async fn login(&self, id: u64) -> std::result::Result<Conn, LoginError> {
        let stream = super::tcp_connect(&self.host, self.port, CONNECT_TIMEOUT, "an SSH server")
            .await
            .map_err(LoginError::retry)?;
        match tokio::time::timeout(LOGIN_TIMEOUT, ssh_login(stream, self, id)).await {
            Ok(r) => r,
            Err(_) => Err(LoginError::retry(format!(
                "the SSH handshake and login did not finish within {}s",
                LOGIN_TIMEOUT.as_secs()
            ))),
        }
    }
}

async fn ssh_login(
    stream: tokio::net::TcpStream,
    p: &LoginParams,
    id: u64,
) -> std::result::Result<Conn, LoginError> {
    let problem = Arc::new(Mutex::new(None));
    let (alive_tx, alive) = watch::channel(());
    let checker = HostKeyCheck {
        host: p.host.clone(),
        port: p.port,
        known_hosts: p.known_hosts.clone(),
        problem: problem.clone(),
        _alive: alive_tx,
    };
    let config = client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        window_size: 16 << 20,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        nodelay: true,
        ..Default::default()
    };
    let stream = super::tcp_link::TcpLink::new(stream);
    let mut ssh = match client::connect_stream(Arc::new(config), stream, checker).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(p) = problem.lock().unwrap().take() {
                return Err(LoginError::fatal(p));
            }
            return Err(LoginError::retry(format!("SSH handshake failed: {e}")));
        }
    };
    authenticate(&mut ssh, &p.user, p.auths.clone())
        .await
        .map_err(LoginError::fatal)?;

    // Both sessions start together (no round trip more than one): the first must succeed;
    // the second is done without when the server refuses it (a MaxSessions limit, say).
    let (first, second) = tokio::join!(open_session(&ssh), open_session(&ssh));
    let (mut sftp, version) = first?;
    let mut others: Vec<RawSftpSession> = Vec::new();
    match second {
        Ok((s, _)) => others.push(s),
        Err(e) => tracing::debug!(error = %e.msg, "second SFTP session refused; using one"),
    }
    let has = |name: &str| version.extensions.contains_key(name);
    let mut ext = Extensions {
        posix_rename: has(EXT_POSIX_RENAME),
        copy_data: has(EXT_COPY_DATA),
        fsync: has(EXT_FSYNC),
        read_block: IO_BLOCK,
        write_block: IO_BLOCK,
        max_handles: MAX_HANDLES,
    };
    if has(EXT_LIMITS) {
        if let Ok(l) = sftp.limits().await {
            let l: russh_sftp::client::rawsession::Limits = l.into();
            // Room for the request's own fields (type, id, handle, offset, length).
            let packet = l.packet_len.map(|p| p.saturating_sub(1024) as usize);
            let cap = |v: Option<u64>| {
                let v = v.map(|v| v as usize).unwrap_or(IO_BLOCK);
                v.min(packet.unwrap_or(IO_BLOCK)).clamp(512, IO_BLOCK_MAX)
            };
            ext.read_block = cap(l.read_len);
            ext.write_block = cap(l.write_len);
            if let Some(h) = l.open_handles {
                ext.max_handles = (h as usize).saturating_sub(1).clamp(1, MAX_HANDLES);
            }
            sftp.set_limits(l);
            for s in &mut others {
                s.set_limits(l);
            }
        }
    }
    let mut sessions = vec![sftp];
    sessions.extend(others);
    Ok(Conn {
        id,
        ssh,
        sessions,
        next_session: std::sync::atomic::AtomicUsize::new(0),
        handles: Arc::new(Semaphore::new(ext.max_handles)),
        ext,
        alive,
    })
}

/// Open a session channel, start the sftp subsystem on it and say hello (SFTP INIT).
async fn open_session(
    ssh: &client::Handle<HostKeyCheck>,
) -> std::result::Result<(RawSftpSession, russh_sftp::protocol::Version), LoginError> {
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| LoginError::retry(format!("cannot open an SSH session channel: {e}")))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| LoginError::retry(format!("cannot start the sftp subsystem: {e}")))?;
    let cfg = russh_sftp::client::Config {
        request_timeout_secs: REQUEST_TIMEOUT_SECS,
        ..Default::default()
    };
    let sftp = RawSftpSession::new_with_config(super::sftp_pipe::sftp_stream(channel), cfg);
    let version = sftp.init().await.map_err(|e| {
        LoginError::retry(format!(
            "the server did not start SFTP (is the sftp subsystem enabled?): {e}"
        ))
    })?;
    Ok((sftp, version))
}

/// The signature hash an RSA key must use with this server (none for other key types).
async fn rsa_hash(
    ssh: &client::Handle<HostKeyCheck>,
    is_rsa: bool,
) -> std::result::Result<Option<russh::keys::HashAlg>, String> {
    if !is_rsa {
        return Ok(None);
    }
    Ok(ssh
        .best_supported_rsa_hash()
        .await
        .map_err(|e| format!("SSH negotiation failed: {e}"))?
        .flatten())
}

/// Load a private key; an ECDSA key that the parser refuses for its short scalar (see
/// [`super::ecdsa_key`]) is loaded once repaired, after decrypting it when it is encrypted.
fn load_key(
    path: &std::path::Path,
    passphrase: Option<&str>,
) -> std::result::Result<russh::keys::PrivateKey, russh::keys::Error> {
    use super::ecdsa_key::{decrypted, pad_short_scalar};
    russh::keys::load_secret_key(path, passphrase).or_else(|e| {
        std::fs::read_to_string(path)
            .ok()
            // A passphrase given for a key that is not encrypted is not needed.
            .map(|text| passphrase.and_then(|p| decrypted(&text, p)).unwrap_or(text))
            .and_then(|plain| pad_short_scalar(&plain))
            .and_then(|fixed| russh::keys::decode_secret_key(&fixed, None).ok())
            .ok_or(e)
    })
}

async fn authenticate(
    ssh: &mut client::Handle<HostKeyCheck>,
    user: &str,
    auths: Vec<Auth>,
) -> std::result::Result<(), String> {
    let mut refused = Vec::new();
    for auth in auths {
        match auth {
            Auth::Key { path, passphrase } => {
                let key = load_key(&path, passphrase.as_deref()).map_err(|e| match e {
                    russh::keys::Error::KeyIsEncrypted => format!(
                        "private_key {} is encrypted: set private_key_passphrase_env",
                        path.display()
                    ),
                    e => format!("cannot load private_key {}: {e}", path.display()),
                })?;
                let hash = rsa_hash(ssh, key.algorithm().is_rsa()).await?;
                let r = ssh
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                    .await
                    .map_err(|e| format!("authentication failed: {e}"))?;
                if r.success() {
                    return Ok(());
                }
                refused.push(format!("the key {}", path.display()));
            }
            Auth::Password(pw) => {
                let r = ssh
                    .authenticate_password(user, pw)
                    .await
                    .map_err(|e| format!("authentication failed: {e}"))?;
                if r.success() {
                    return Ok(());
                }
                refused.push("the password".to_string());
            }
            Auth::Agent => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|e| {
                        format!(
                            "no private_key or password is configured and no ssh-agent is \
                             reachable (SSH_AUTH_SOCK): {e}"
                        )
                    })?;
                let ids = agent
                    .request_identities()
                    .await
                    .map_err(|e| format!("cannot list the ssh-agent's keys: {e}"))?;
                if ids.is_empty() {
                    return Err(
                        "no private_key or password is configured and the ssh-agent holds no keys"
                            .into(),
                    );
                }
                for id in ids {
                    let key = id.public_key().into_owned();
                    let hash = rsa_hash(ssh, key.algorithm().is_rsa()).await?;
                    let fp = key.fingerprint(HashAlg::Sha256);
                    match ssh
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => refused.push(format!("ssh-agent key {fp}")),
                        Err(e) => refused.push(format!("ssh-agent key {fp} ({e:?})")),
                    }
                }
            }
        }
    }
    Err(format!(
        "authentication failed: the server refused {} for user {user:?}",
        refused.join(" and ")
    ))
}

impl Drop for SftpRemote {
    fn drop(&mut self) {
        let conn = self.conn();
        conn.close_sessions();
        // The timer must be created inside the runtime: hence the async block.
        let _ = self.rth.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                conn.ssh
                    .disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await
        });
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// One READ in flight: its data, or why not.
type ReadTask = JoinHandle<std::result::Result<Vec<u8>, SftpError>>;

/// Reads a remote file sequentially with READ requests pipelined ahead of the consumer.
/// The pipeline starts at 2 requests and doubles on every full block up to [`IN_FLIGHT`], so a
/// small file costs one or two requests and a large one streams.
struct SftpReader {
    rth: tokio::runtime::Handle,
    /// The connection the handle belongs to (not a newer one: handles do not survive).
    conn: Arc<Conn>,
    /// The session of that connection the handle belongs to.
    sid: usize,
    handle: Option<String>,
    permit: Option<OwnedSemaphorePermit>,
    path: String,
    /// Next offset to request.
    next: u64,
    /// Bytes per READ request.
    block: usize,
    window: usize,
    pending: VecDeque<(u64, u32, ReadTask)>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl SftpReader {
    fn fill(&mut self) {
        let sid = self.sid;
        let Some(h) = &self.handle else { return };
        while self.pending.len() < self.window {
            let (c, h, off) = (self.conn.clone(), h.clone(), self.next);
            let len = self.block as u32;
            let task = self
                .rth
                .spawn(async move { c.guard(c.on(sid).read(h, off, len)).await.map(|d| d.data) });
            self.pending.push_back((off, len, task));
            self.next += len as u64;
        }
    }

    fn drop_pending(&mut self) {
        // Replies to these are ignored by russh-sftp; the tasks end on their own.
        self.pending.clear();
    }
}

impl Read for SftpReader {
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
            if self.eof || self.handle.is_none() {
                return Ok(0);
            }
            self.fill();
            let (off, len, task) = self.pending.pop_front().expect("fill queued a request");
            let res = self
                .rth
                .block_on(task)
                .map_err(|e| std::io::Error::other(format!("read task failed: {e}")))?;
            match res {
                Ok(data) if data.is_empty() => {
                    self.eof = true;
                    self.drop_pending();
                }
                Ok(data) => {
                    let n = data.len();
                    self.buf = data;
                    self.pos = 0;
                    if n < len as usize {
                        // A short read: the requests queued after it start at the wrong place.
                        self.drop_pending();
                        self.next = off + n as u64;
                    } else {
                        self.window = (self.window * 2).min(IN_FLIGHT);
                    }
                }
                Err(e) if status_code(&e) == Some(StatusCode::Eof) => {
                    self.eof = true;
                    self.drop_pending();
                }
                Err(e) => {
                    self.drop_pending();
                    return Err(match sftp_err("read", &self.path, e) {
                        RemoteError::Io { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    });
                }
            }
        }
    }
}

impl Drop for SftpReader {
    fn drop(&mut self) {
        let sid = self.sid;
        self.drop_pending();
        if let Some(h) = self.handle.take() {
            let c = self.conn.clone();
            let permit = self.permit.take();
            // Close in the background; the permit is released only once the server closed it.
            self.rth.spawn(async move {
                let _ = c.guard(c.on(sid).close(h)).await;
                drop(permit);
            });
        }
    }
}

/// Writes a remote file sequentially from an offset with WRITE requests pipelined.
struct SftpWriter {
    rth: tokio::runtime::Handle,
    /// The connection the handle belongs to (not a newer one: handles do not survive).
    conn: Arc<Conn>,
    /// The session of that connection the handle belongs to.
    sid: usize,
    handle: Option<String>,
    permit: Option<OwnedSemaphorePermit>,
    path: String,
    offset: u64,
    /// Bytes per WRITE request.
    block: usize,
    fsync: bool,
    /// Replies awaited, oldest first; `true` marks an FSYNC (see `sync_begin`).
    pending: VecDeque<(bool, Reply<()>)>,
    /// An FSYNC sent by `sync_begin` succeeded, and every WRITE before it.
    synced: bool,
    /// The CLOSE sent by [`WriteHandle::set_mtime_and_stat`], whose reply `close` awaits.
    closing: Option<Reply<()>>,
    /// The server path (for the second handle `sync_begin` opens).
    full: String,
    /// A second handle on the same file, on the connection's other session, for FSYNC: the
    /// server process of one session works through its requests in order, so an FSYNC among
    /// the WRITEs holds them all up while the disk flushes; on the other session it does not.
    /// fsync flushes the file, whichever descriptor asks.
    side: Option<SideHandle>,
    /// The other session could not open the file: FSYNC goes among the WRITEs.
    side_failed: bool,
    /// WRITEs to be answered before the side FSYNC may go out (those sent before the sync
    /// began: only answered WRITEs are in the file for fsync to flush).
    sync_after: Option<usize>,
    /// The side FSYNC on the wire.
    side_sync: Option<Reply<()>>,
}

/// See [`SftpWriter::side`].
struct SideHandle {
    sid: usize,
    handle: String,
    permit: OwnedSemaphorePermit,
}

/// A request already on the wire, awaiting its reply (polled by whichever thread waits).
type Reply<T> = Pin<Box<dyn Future<Output = std::result::Result<T, SftpError>> + Send>>;

/// Poll `f` once on this thread, which puts its request on the wire (russh-sftp sends on the
/// first poll), and hand back the rest: the thread that needs the reply polls it to the end
/// (no task per request, no hand-off through the runtime's workers). Requests so go out in
/// program order: a CLOSE can follow the WRITEs without waiting for their replies (the server
/// handles one session's requests in order), which saves a round trip per file.
///
/// The first poll leaves no waker behind ([`poll_quietly`]): the reply is awaited later, by a
/// poll that registers the thread that then waits.
fn send_now<T: Send + 'static>(
    rth: &tokio::runtime::Handle,
    f: impl Future<Output = std::result::Result<T, SftpError>> + Send + 'static,
) -> Reply<T> {
    let mut f: Reply<T> = Box::pin(f);
    match poll_quietly(rth, &mut f) {
        std::task::Poll::Ready(r) => Box::pin(std::future::ready(r)),
        std::task::Poll::Pending => f,
    }
}

/// Poll `f` once, inside the runtime, with a waker that wakes nothing. A poll with the
/// calling thread's waker would leave it in the reply's channel, and each reply arriving
/// later would unpark this thread, whatever it was then waiting for: with 32 WRITEs in flight,
/// a thread woken for every answer instead of for the one it waits on.
fn poll_quietly<T>(
    rth: &tokio::runtime::Handle,
    f: &mut Reply<T>,
) -> std::task::Poll<std::result::Result<T, SftpError>> {
    let _in_runtime = rth.enter();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.as_mut().poll(&mut cx)
}

/// SETSTAT attributes that set the modification time (and the access time to now); never a
/// size, which would truncate.
fn mtime_attrs(mtime_ns: i64) -> FileAttributes {
    let secs = mtime_ns.div_euclid(1_000_000_000).clamp(0, u32::MAX as i64) as u32;
    FileAttributes {
        atime: Some(now_secs()),
        mtime: Some(secs),
        ..FileAttributes::empty()
    }
}

impl SftpWriter {
    #[allow(clippy::too_many_arguments)]
    fn new(
        r: &SftpRemote,
        conn: Arc<Conn>,
        sid: usize,
        handle: String,
        permit: OwnedSemaphorePermit,
        path: &str,
        full: String,
        offset: u64,
    ) -> SftpWriter {
        SftpWriter {
            rth: r.rth.clone(),
            block: conn.ext.write_block,
            fsync: conn.ext.fsync,
            conn,
            sid,
            handle: Some(handle),
            permit: Some(permit),
            path: path.to_string(),
            offset,
            pending: VecDeque::new(),
            synced: false,
            closing: None,
            full,
            side: None,
            side_failed: false,
            sync_after: None,
            side_sync: None,
        }
    }

    /// The reply to a request sent with [`send_now`], as a trait error naming `op`.
    fn reply<T>(&self, op: &'static str, r: Reply<T>) -> Result<T> {
        self.rth
            .block_on(r)
            .map_err(|e| sftp_err(op, &self.path, e))
    }

    fn wait_one(&mut self) -> Result<()> {
        if let Some((fsync, r)) = self.pending.pop_front() {
            let op = if fsync { "fsync" } else { "write" };
            if let Err(e) = self.reply(op, r) {
                self.pending.clear();
                return Err(e);
            }
            self.answered(fsync);
        }
        Ok(())
    }

    /// The oldest request in the pipeline was answered with success.
    fn answered(&mut self, fsync: bool) {
        self.synced |= fsync;
        if let Some(n) = self.sync_after.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.send_side_sync();
    }

    /// Send the side FSYNC once the WRITEs before it were all answered.
    fn send_side_sync(&mut self) {
        if self.sync_after != Some(0) {
            return;
        }
        self.sync_after = None;
        if let Some(side) = &self.side {
            let (c, sid, h) = (self.conn.clone(), side.sid, side.handle.clone());
            self.side_sync = Some(send_now(&self.rth, async move {
                c.guard(c.on(sid).fsync(h)).await.map(|_| ())
            }));
        }
    }

    /// Open [`SftpWriter::side`] unless there is one (or none can be had).
    fn open_side(&mut self) {
        if self.side.is_some() || self.side_failed || self.conn.sessions.len() < 2 {
            return;
        }
        let sid = (self.sid + 1) % self.conn.sessions.len();
        let (c, full) = (self.conn.clone(), self.full.clone());
        let opened = self.rth.block_on(async move {
            let permit = c.permits(1).await?;
            let flags = OpenFlags::WRITE;
            let h = c
                .guard(c.on(sid).open(full, flags, FileAttributes::empty()))
                .await?
                .handle;
            Ok::<_, SftpError>((h, permit))
        });
        match opened {
            Ok((handle, permit)) => {
                self.side = Some(SideHandle {
                    sid,
                    handle,
                    permit,
                })
            }
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "no second handle for fsync");
                self.side_failed = true;
            }
        }
    }

    /// Close the side handle in the background (after its FSYNC, if one is on the wire).
    fn close_side(&mut self) {
        let side_sync = self.side_sync.take();
        if let Some(side) = self.side.take() {
            let c = self.conn.clone();
            self.rth.spawn(async move {
                if let Some(r) = side_sync {
                    let _ = r.await;
                }
                let _ = c.guard(c.on(side.sid).close(side.handle)).await;
                drop(side.permit);
            });
        }
    }

    /// Wait until the oldest `n` requests are answered (at least one, at most all), taking
    /// their replies oldest first: one wake-up of this thread for the `n`, where waiting for
    /// each in turn woke it once per reply, and the requests sent after it go out together.
    fn wait_many(&mut self, n: usize) -> Result<()> {
        let n = n.clamp(1, self.pending.len().max(1));
        if let Some((_, r)) = self.pending.get_mut(n - 1) {
            // Replies come in order: once the n-th is in, so are the ones before it.
            let got = self.rth.block_on(r.as_mut());
            *r = Box::pin(std::future::ready(got));
        }
        for _ in 0..n {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Take the replies that have already arrived, oldest first, without waiting.
    fn take_arrived(&mut self) -> Result<()> {
        while let Some((fsync, r)) = self.pending.front_mut() {
            let fsync = *fsync;
            let polled = poll_quietly(&self.rth, r);
            match polled {
                std::task::Poll::Pending => break,
                std::task::Poll::Ready(res) => {
                    self.pending.pop_front();
                    if let Err(e) = res {
                        self.pending.clear();
                        let op = if fsync { "fsync" } else { "write" };
                        return Err(sftp_err(op, &self.path, e));
                    }
                    self.answered(fsync);
                }
            }
        }
        Ok(())
    }

    fn wait_all(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.wait_one()?;
        }
        Ok(())
    }
}

impl WriteHandle for SftpWriter {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let sid = self.sid;
        let Some(h) = self.handle.clone() else {
            return Err(RemoteError::refused("write", &self.path, "file is closed"));
        };
        for block in data.chunks(self.block) {
            if self.pending.len() >= IN_FLIGHT {
                self.wait_many(REFILL)?;
            }
            let (c, h, off, data) = (self.conn.clone(), h.clone(), self.offset, block.to_vec());
            let sent = send_now(&self.rth, async move {
                c.guard(c.on(sid).write(h, off, data)).await.map(|_| ())
            });
            self.pending.push_back((false, sent));
            self.offset += block.len() as u64;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let sid = self.sid;
        // FSYNC goes out right behind the WRITEs (the server applies them first, in order),
        // so the pipeline is not drained before it; the replies of all are awaited.
        let fsync = match (self.fsync, self.handle.clone()) {
            (true, Some(h)) => {
                let c = self.conn.clone();
                Some(send_now(&self.rth, async move {
                    c.guard(c.on(sid).fsync(h)).await.map(|_| ())
                }))
            }
            _ => None,
        };
        self.wait_all()?;
        if let Some(r) = fsync {
            self.reply("fsync", r)?;
        }
        Ok(())
    }

    /// With a second session, the FSYNC goes out there on a second handle of the file (see
    /// [`SftpWriter::side`]) once the WRITEs sent so far are answered, and this session's
    /// WRITEs go on meanwhile. Otherwise it joins the WRITE pipeline: the client goes on
    /// writing, and its reply, taken in order after theirs, marks them all durable. Without
    /// `fsync@openssh.com` there is nothing to wait for: done at once.
    fn sync_begin(&mut self) -> Result<()> {
        let sid = self.sid;
        if self.fsync && self.handle.is_some() {
            self.open_side();
            if self.side.is_some() && self.side_sync.is_none() && self.sync_after.is_none() {
                self.sync_after = Some(self.pending.len());
                self.send_side_sync();
                return Ok(());
            }
        }
        match (self.fsync, self.handle.clone()) {
            (true, Some(h)) => {
                let c = self.conn.clone();
                let sent = send_now(&self.rth, async move {
                    c.guard(c.on(sid).fsync(h)).await.map(|_| ())
                });
                self.pending.push_back((true, sent));
            }
            _ => {
                self.wait_all()?;
                self.synced = true;
            }
        }
        Ok(())
    }

    fn sync_done(&mut self) -> Result<bool> {
        self.take_arrived()?;
        if let Some(r) = self.side_sync.as_mut() {
            match poll_quietly(&self.rth, r) {
                std::task::Poll::Pending => {}
                std::task::Poll::Ready(res) => {
                    self.side_sync = None;
                    res.map_err(|e| sftp_err("fsync", &self.path, e))?;
                    self.synced = true;
                }
            }
        }
        Ok(std::mem::take(&mut self.synced))
    }

    /// FSETSTAT (the mtime), FSTAT and CLOSE go out right behind the last WRITEs, and one wait
    /// collects every reply: a small file costs one round trip from its OPEN to its CLOSE
    /// instead of three (close, set mtime by path, stat by path).
    fn set_mtime_and_stat(&mut self, mtime_ns: i64) -> Result<Option<Entry>> {
        let sid = self.sid;
        let Some(h) = self.handle.take() else {
            return Err(RemoteError::refused("write", &self.path, "file is closed"));
        };
        let c = self.conn.clone();
        let (c1, h1) = (c.clone(), h.clone());
        let set = send_now(&self.rth, async move {
            c1.guard(c1.on(sid).fsetstat(h1, mtime_attrs(mtime_ns)))
                .await
                .map(|_| ())
        });
        let (c2, h2) = (c.clone(), h.clone());
        let stat = send_now(&self.rth, async move {
            c2.guard(c2.on(sid).fstat(h2)).await.map(|a| a.attrs)
        });
        self.closing = Some(send_now(&self.rth, async move {
            c.guard(c.on(sid).close(h)).await.map(|_| ())
        }));
        self.wait_all()?;
        self.reply("set mtime", set)?;
        let attrs = self.reply("stat", stat)?;
        match entry_from_attrs(&attrs) {
            Some(e) => Ok(Some(e)),
            None => Err(RemoteError::refused(
                "stat",
                &self.path,
                "not a regular file after writing",
            )),
        }
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let sid = self.sid;
        self.close_side();
        // CLOSE goes out right behind the WRITEs (unless set_mtime_and_stat sent it already);
        // then all their replies are awaited.
        let close = self.closing.take().or_else(|| {
            self.handle.take().map(|h| {
                let c = self.conn.clone();
                send_now(&self.rth, async move {
                    c.guard(c.on(sid).close(h)).await.map(|_| ())
                })
            })
        });
        let written = self.wait_all();
        let closed = match close {
            Some(r) => self.reply("close", r),
            None => Ok(()),
        };
        self.permit.take();
        written.and(closed)
    }
}

impl Drop for SftpWriter {
    fn drop(&mut self) {
        let sid = self.sid;
        self.close_side();
        let permit = self.permit.take();
        let pending = std::mem::take(&mut self.pending);
        let closing = self.closing.take();
        let handle = self.handle.take();
        if permit.is_none() && closing.is_none() && handle.is_none() {
            return;
        }
        let c = self.conn.clone();
        // The handle's slot is released only once the server closed it.
        self.rth.spawn(async move {
            for (_, r) in pending {
                let _ = r.await;
            }
            if let Some(r) = closing {
                let _ = r.await;
            }
            if let Some(h) = handle {
                let _ = c.guard(c.on(sid).close(h)).await;
            }
            drop(permit);
        });
    }
}

impl Remote for SftpRemote {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_copy: self.ext().copy_data,
            set_mtime: true,
            content_hash: false,
            resume_write: true,
            case_insensitive: false,
            inodes: false,
            mtime_precision_ns: 1_000_000_000,
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn connection_id(&self) -> u64 {
        self.conn().id
    }

    fn small_file_parallelism(&self) -> usize {
        SMALL_FILES_IN_FLIGHT
    }

    fn reconnect(&self, id: u64) -> Result<bool> {
        let conn = self.conn();
        if conn.id != id {
            return Ok(true);
        }
        if !conn.is_dead() {
            return Ok(false);
        }
        self.reconnect_from(id).map_err(RemoteError::Connection)?;
        Ok(true)
    }

    fn root_status(&self) -> RootStatus {
        let attrs = match self.call(|c| {
            let root = self.root.clone();
            async move { c.sftp().stat(root).await }
        }) {
            Ok(a) => a.attrs,
            Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => {
                return RootStatus::Missing
            }
            Err(e) => return RootStatus::Unreadable(sftp_err("stat", "", e).to_string()),
        };
        if attrs.permissions.map(|p| p & S_IFMT) != Some(S_IFDIR) {
            return RootStatus::NotDir;
        }
        let opened = self.call(|c| {
            let root = self.root.clone();
            async move {
                let permit = c.permits(1).await?;
                let sid = c.pick();
                let h = c.on(sid).opendir(root).await?;
                let _ = c.on(sid).close(h.handle).await;
                drop(permit);
                Ok::<(), SftpError>(())
            }
        });
        match opened {
            Ok(()) => RootStatus::Dir,
            Err(e) => RootStatus::Unreadable(sftp_err("list", "", e).to_string()),
        }
    }

    fn create_root(&self) -> Result<()> {
        let _fresh = self.listings.changing();
        let absolute = self.root.starts_with('/');
        let mut prefix = String::new();
        for part in self.root.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() || absolute {
                prefix.push('/');
            }
            prefix.push_str(part);
            if part == "." {
                continue;
            }
            self.mkdir_one("mkdir", "", &prefix)?;
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Listing> {
        self.check_parents("list", &super::join(dir, "x"))?;
        let full = self.full("list", dir)?;
        if let Some(l) = self.listings.take_tree(dir) {
            self.note_dirs(dir, &l);
            return Ok(l);
        }
        // A walk from the root: try the whole tree in one command first. The shell may see
        // another tree than SFTP does (a server whose SFTP side is a virtual filesystem): the
        // root's listing must be the same both ways, or `find` is not used at all.
        if dir.is_empty() && self.listings.exec.load(Ordering::Relaxed) != 2 {
            // The root's SFTP listing, needed either way, comes in while `find` runs.
            self.list_ahead(full.clone());
            if let Some(mut tree) = self.find_tree(dir, &full) {
                let own = tree.remove(dir).unwrap_or_default();
                let by_sftp = self.list_sftp(dir, &full, false)?;
                if same_listing(&own, &by_sftp) {
                    self.listings.exec.store(1, Ordering::Relaxed);
                    *self.listings.tree.lock().unwrap() = Some((std::time::Instant::now(), tree));
                    return Ok(by_sftp);
                }
            }
            self.listings.exec.store(2, Ordering::Relaxed);
        }
        self.list_sftp(dir, &full, true)
    }

    fn stat(&self, path: &str) -> Result<Option<Entry>> {
        let full = self.full("stat", path)?;
        match self.call(|c| {
            let full = full.clone();
            async move { c.sftp().lstat(full).await }
        }) {
            Ok(a) => Ok(entry_from_attrs(&a.attrs)),
            Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => Ok(None),
            Err(e) => Err(sftp_err("stat", path, e)),
        }
    }

    /// READLINK: the server answers with the link's text, never followed here; refused below
    /// a symlinked folder.
    fn read_link(&self, path: &str) -> Result<String> {
        self.check_parents("readlink", path)?;
        let full = self.full("readlink", path)?;
        match self.lstat_full("readlink", path, &full)? {
            None => {
                return Err(RemoteError::NotFound {
                    op: "readlink",
                    path: path.to_string(),
                })
            }
            Some(e) if e.kind != Kind::Symlink => {
                return Err(RemoteError::refused("readlink", path, "not a symlink"))
            }
            Some(_) => {}
        }
        let name = self
            .call(|c| {
                let full = full.clone();
                async move { c.sftp().readlink(full).await }
            })
            .map_err(|e| sftp_err("readlink", path, e))?;
        match name.files.into_iter().next() {
            Some(f) => Ok(f.filename),
            None => Err(RemoteError::refused(
                "readlink",
                path,
                "the server named no target",
            )),
        }
    }

    fn open_read(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        self.check_parents("read", path)?;
        let full = self.full("read", path)?;
        if let Some(e) = self.lstat_full("read", path, &full)? {
            if e.kind != Kind::File {
                return Err(RemoteError::refused("read", path, "not a regular file"));
            }
        }
        let (conn, sid, handle, permit) =
            self.open_handle("open", path, full, OpenFlags::READ, None)?;
        Ok(Box::new(SftpReader {
            rth: self.rth.clone(),
            sid,
            block: conn.ext.read_block,
            conn,
            handle: Some(handle),
            permit: Some(permit),
            path: path.to_string(),
            next: offset,
            window: 2,
            pending: VecDeque::new(),
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }))
    }

    fn open_write(&self, path: &str, offset: u64) -> Result<Box<dyn WriteHandle>> {
        let _fresh = self.listings.changing();
        self.check_parents("write", path)?;
        let full = self.full("write", path)?;
        if offset == 0 {
            // A new file (the usual case: a fresh partial) is created with O_EXCL, which never
            // follows a symlink and needs no LSTAT first: one round trip saved per file.
            let excl = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
            if let Ok((conn, sid, handle, permit)) =
                self.open_handle("open", path, full.clone(), excl, None)
            {
                return Ok(Box::new(SftpWriter::new(
                    self, conn, sid, handle, permit, path, full, 0,
                )));
            }
            // It exists (or the open failed for another reason, which the path below reports).
        }
        // OPEN follows a final symlink: never write through one.
        if let Some(e) = self.lstat_full("write", path, &full)? {
            if e.kind != Kind::File {
                return Err(RemoteError::refused(
                    "write",
                    path,
                    format!("exists and is a {}", e.kind.as_str()),
                ));
            }
        }
        let flags = if offset == 0 {
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
        } else {
            OpenFlags::WRITE
        };
        // At an offset: keep the first `offset` bytes, drop anything after them.
        let (conn, sid, handle, permit) = self.open_handle(
            "open",
            path,
            full.clone(),
            flags,
            (offset > 0).then_some(offset),
        )?;
        Ok(Box::new(SftpWriter::new(
            self, conn, sid, handle, permit, path, full, offset,
        )))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let _fresh = self.listings.changing();
        self.check_parents("rename", from)?;
        self.check_parents("rename", to)?;
        let (f, t) = (self.full("rename", from)?, self.full("rename", to)?);
        if self.ext().posix_rename {
            let mut data = Vec::with_capacity(f.len() + t.len() + 8);
            put_str(&mut data, &f);
            put_str(&mut data, &t);
            self.call(|c| {
                let data = data.clone();
                async move { expect_ok(c.sftp().extended(EXT_POSIX_RENAME, data).await?) }
            })
            .map_err(|e| sftp_err("rename", from, e))?;
        } else {
            // SFTP v3 RENAME refuses an existing target. Without the extension, replacing is
            // two steps (a reader may briefly see no file), and only for a file.
            let plain_rename = |f: String, t: String| {
                self.call(move |c| {
                    let (f, t) = (f.clone(), t.clone());
                    async move { c.sftp().rename(f, t).await }
                })
            };
            match plain_rename(f.clone(), t.clone()) {
                Ok(_) => {}
                Err(e) => {
                    let target = self.lstat_full("rename", to, &t)?;
                    let src = self.lstat_full("rename", from, &f)?;
                    match (src, target) {
                        (Some(s), Some(d)) if s.is_file() && d.is_file() => {
                            self.remove_full(&t)
                                .map_err(|e| sftp_err("rename", to, e))?;
                            plain_rename(f, t).map_err(|e| sftp_err("rename", from, e))?;
                        }
                        _ => return Err(sftp_err("rename", from, e)),
                    }
                }
            }
        }
        self.forget_dir(from);
        Ok(())
    }

    /// OpenSSH's plain RENAME is link + unlink, which refuses an existing target atomically
    /// (SFTP v3 says RENAME must refuse one). Trusted only where `posix-rename@openssh.com`
    /// says the server is OpenSSH's: other servers' plain RENAME may replace silently.
    fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        if !self.ext().posix_rename {
            if self.stat(to)?.is_some() {
                return Ok(false);
            }
            self.rename(from, to)?;
            return Ok(true);
        }
        let _fresh = self.listings.changing();
        self.check_parents("rename", from)?;
        self.check_parents("rename", to)?;
        let (f, t) = (self.full("rename", from)?, self.full("rename", to)?);
        match self.call(|c| {
            let (f, t) = (f.clone(), t.clone());
            async move { c.sftp().rename(f, t).await }
        }) {
            Ok(_) => {
                self.forget_dir(from);
                Ok(true)
            }
            Err(e) => match self.lstat_full("rename", to, &t)? {
                Some(_) => Ok(false),
                None => Err(sftp_err("rename", from, e)),
            },
        }
    }

    /// Three round trips ([`put_new_on`]), run as one task on the runtime, so the calling
    /// thread waits once per file rather than once per reply: with dozens of small files in
    /// flight, waking threads was most of the client's CPU. Servers whose plain RENAME may
    /// replace (no `posix-rename@openssh.com`) take the steps one by one.
    fn put_new(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<PutNew> {
        if !self.ext().posix_rename {
            return super::put_new_steps(self, path, partial, data, mtime_ns);
        }
        let _fresh = self.listings.changing();
        self.check_parents("write", path)?;
        let (pf, tf) = (self.full("write", partial)?, self.full("write", path)?);
        let data: Arc<[u8]> = data.into();
        let trust_fstat = self.fstat_agrees.load(Ordering::Relaxed);
        let raw = self.call_task(|c| {
            let (pf, tf, data) = (pf.clone(), tf.clone(), data.clone());
            put_new_on(c, pf, tf, data, mtime_ns, trust_fstat)
        });
        self.put_outcome(path, partial, &data, mtime_ns, raw)
    }

    fn put_new_batching(&self) -> Option<Batching> {
        Some(Batching {
            files: PUT_BATCH,
            batches: PUT_BATCHES,
            max_file: PUT_BATCH_MAX_FILE,
        })
    }

    /// The files' [`put_new_on`]s run as tasks of one task on the runtime, so the calling
    /// thread waits once for all of them: with one thread per file in flight, the hand-offs
    /// between those threads and the runtime's workers were a large part of the client's CPU
    /// on many small files. A file whose connection was lost comes back as an error, and
    /// the caller's retry of that one file goes through [`Self::put_new`] (which logs in again).
    fn put_new_many(&self, files: &[NewFile<'_>]) -> Vec<Result<PutNew>> {
        if !self.ext().posix_rename || files.len() < 2 {
            return files
                .iter()
                .map(|f| self.put_new(f.path, f.partial, f.data, f.mtime_ns))
                .collect();
        }
        let _fresh = self.listings.changing();
        let mut out: Vec<Option<Result<PutNew>>> = files.iter().map(|_| None).collect();
        // The files sent (their index and bytes), and what their tasks take.
        let mut batch = Vec::with_capacity(files.len());
        let mut puts = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let paths = self
                .check_parents("write", f.path)
                .and_then(|()| Ok((self.full("write", f.partial)?, self.full("write", f.path)?)));
            match paths {
                Ok((pf, tf)) => {
                    let data = Arc::<[u8]>::from(f.data);
                    puts.push((pf, tf, data.clone(), f.mtime_ns));
                    batch.push((i, data));
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let trust_fstat = self.fstat_agrees.load(Ordering::Relaxed);
        let c = self.conn();
        let all = self.rth.spawn(async move {
            let tasks: Vec<JoinHandle<_>> = puts
                .into_iter()
                .map(|(pf, tf, data, mtime)| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let on = c.clone();
                        on.guard(put_new_on(c, pf, tf, data, mtime, trust_fstat))
                            .await
                    })
                })
                .collect();
            let mut done = Vec::with_capacity(tasks.len());
            for t in tasks {
                done.push(
                    t.await
                        .unwrap_or_else(|e| Err(SftpError::UnexpectedBehavior(e.to_string()))),
                );
            }
            done
        });
        let results = self.run(all).unwrap_or_default();
        let mut results = results.into_iter();
        for (i, data) in batch {
            let f = &files[i];
            let raw = results
                .next()
                .unwrap_or_else(|| Err(SftpError::UnexpectedBehavior("batch cut short".into())));
            out[i] = Some(self.put_outcome(f.path, f.partial, &data, f.mtime_ns, raw));
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RemoteError::refused("write", "", "not sent"))))
            .collect()
    }

    fn write_whole(
        &self,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<Option<Entry>> {
        let _fresh = self.listings.changing();
        self.check_parents("write", partial)?;
        let pf = self.full("write", partial)?;
        let data: Arc<[u8]> = data.into();
        let trust_fstat = self.fstat_agrees.load(Ordering::Relaxed);
        let got = self
            .call_task(|c| write_whole_on(c, pf.clone(), data.clone(), mtime_ns, trust_fstat))
            .map_err(|e| sftp_err("write", partial, e))?;
        self.forget_dir(partial);
        match got {
            Some((kept, agrees)) => {
                if agrees {
                    self.fstat_agrees.store(true, Ordering::Relaxed);
                }
                Ok(kept)
            }
            None => super::write_whole_steps(self, partial, &data, mtime_ns),
        }
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let _fresh = self.listings.changing();
        self.check_parents("remove", path)?;
        let full = self.full("remove", path)?;
        self.remove_full(&full)
            .map_err(|e| sftp_err("remove", path, e))
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        let _fresh = self.listings.changing();
        self.check_parents("rmdir", path)?;
        let full = self.full("rmdir", path)?;
        self.call(|c| {
            let full = full.clone();
            async move { c.sftp().rmdir(full).await }
        })
        .map_err(|e| sftp_err("rmdir", path, e))?;
        self.forget_dir(path);
        Ok(())
    }

    /// The levels not known yet are LSTATed all at once (one round trip); the missing ones
    /// are then made in order, each as [`SftpRemote::mkdir_one`] does.
    fn mkdir_all(&self, dir: &str) -> Result<()> {
        let _fresh = self.listings.changing();
        let todo = self.checked_dirs.unchecked(dir);
        for (prefix, found) in todo.iter().zip(self.lstat_each("mkdir", dir, &todo)?) {
            match found {
                Ok(e) if e.kind == Kind::Dir => {}
                Err(e) if status_code(&e) != Some(StatusCode::NoSuchFile) => {
                    return Err(sftp_err("mkdir", dir, e))
                }
                // Missing, or not a folder (which mkdir_one refuses, naming it).
                _ => {
                    let full = self.full("mkdir", prefix)?;
                    self.mkdir_one("mkdir", dir, &full)?;
                }
            }
            self.checked_dirs.insert(prefix.clone());
        }
        Ok(())
    }

    fn set_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        let _fresh = self.listings.changing();
        self.check_parents("set mtime", path)?;
        let full = self.full("set mtime", path)?;
        let attrs = mtime_attrs(mtime_ns);
        self.call(|c| {
            let (full, attrs) = (full.clone(), attrs.clone());
            async move { c.sftp().setstat(full, attrs).await }
        })
        .map(|_| ())
        .map_err(|e| sftp_err("set mtime", path, e))
    }

    fn copy_file(&self, from: &str, to: &str) -> Result<()> {
        let _fresh = self.listings.changing();
        if !self.ext().copy_data {
            return Err(RemoteError::refused(
                "copy",
                from,
                "the server does not offer server-side copy (copy-data)",
            ));
        }
        self.check_parents("copy", from)?;
        self.check_parents("copy", to)?;
        let (f, t) = (self.full("copy", from)?, self.full("copy", to)?);
        let src = copy_preconditions(
            from,
            self.lstat_full("copy", from, &f)?,
            to,
            self.lstat_full("copy", to, &t)?,
        )?;
        self.call(|c| copy_data(c, f.clone(), t.clone()))
            .map_err(|e| sftp_err("copy", from, e))?;
        // A copy looks like its source: same modification time.
        self.set_mtime(to, src.mtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_find_listing_is_trusted_only_when_it_equals_the_sftp_one() {
        let l = |entries: Vec<(&str, Entry)>, bad: Vec<&str>| Listing {
            entries: entries
                .into_iter()
                .map(|(n, e)| (n.to_string(), e))
                .collect(),
            bad_names: bad.into_iter().map(String::from).collect(),
        };
        let f = |size, mtime| Entry::file(size, mtime);
        let a = l(vec![("x", f(1, 5)), ("d", Entry::dir(7))], vec!["b?"]);
        // Order does not matter.
        let same = l(vec![("d", Entry::dir(7)), ("x", f(1, 5))], vec!["b?"]);
        assert!(same_listing(&a, &same));
        for other in [
            l(vec![("x", f(2, 5)), ("d", Entry::dir(7))], vec!["b?"]),
            l(vec![("x", f(1, 6)), ("d", Entry::dir(7))], vec!["b?"]),
            l(vec![("x", f(1, 5)), ("d", f(0, 7))], vec!["b?"]),
            l(vec![("x", f(1, 5))], vec!["b?"]),
            l(vec![("x", f(1, 5)), ("d", Entry::dir(7))], vec![]),
            l(vec![], vec![]),
        ] {
            assert!(!same_listing(&a, &other), "{other:?}");
        }
    }

    #[test]
    fn roots_are_normalized() {
        assert_eq!(normalize_root("/srv/x/"), "/srv/x");
        assert_eq!(normalize_root("/"), "/");
        assert_eq!(normalize_root("///"), "/");
        assert_eq!(normalize_root("docs"), "docs");
        assert_eq!(normalize_root(""), ".");
    }

    #[test]
    fn attrs_map_to_kinds() {
        let a = |perm: u32, size: u64, mtime: u32| FileAttributes {
            permissions: Some(perm),
            size: Some(size),
            mtime: Some(mtime),
            ..FileAttributes::empty()
        };
        let f = entry_from_attrs(&a(0o100644, 12, 1_700_000_000)).unwrap();
        assert_eq!(
            (f.kind, f.size, f.mtime),
            (Kind::File, 12, 1_700_000_000_000_000_000)
        );
        assert_eq!(
            entry_from_attrs(&a(0o040755, 4096, 1)).unwrap().kind,
            Kind::Dir
        );
        let l = entry_from_attrs(&a(0o120777, 9, 1)).unwrap();
        assert_eq!((l.kind, l.size), (Kind::Symlink, 0));
        assert!(entry_from_attrs(&a(0o140755, 0, 1)).is_none(), "socket");
        assert!(entry_from_attrs(&a(0o010644, 0, 1)).is_none(), "fifo");
    }

    #[test]
    fn known_hosts_names() {
        assert_eq!(known_hosts_name("h", 22), "h");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }
}
