//! `protocol = "ftp"` and `"ftps"` (explicit TLS, `AUTH TLS`): a folder on an FTP server.
//!
//! The [`Remote`] trait is blocking and called from several threads (the `transfers` workers);
//! suppaftp's API is async. The backend owns a small tokio runtime and bridges with `block_on`,
//! as the sftp backend does. FTP runs one command at a time per control connection, so the
//! backend keeps a small pool of logged-in control connections: a call takes one (a transfer
//! holds it until its data connection is finished), and gives it back when done.
//!
//! Reliability rules, from what breaks in practice:
//! - Binary mode always (`TYPE I`): ASCII mode, the protocol default, rewrites line endings.
//! - Passive mode by default, through `EPSV` where the server lists it (the reply carries only
//!   a port, so a server behind NAT cannot hand out an unreachable private address) and
//!   otherwise `PASV` with the control connection's address; `ftp_active = true` switches to
//!   `PORT`.
//! - A pooled connection idle for [`KEEPALIVE`] gets a `NOOP` before reuse; a dead one is
//!   dropped and replaced. A command that fails because its connection died is retried once on
//!   a fresh connection where that is safe (listings, stats, mkdir…; never a transfer, whose
//!   resume the engine drives from its checkpoints).
//! - Uploads: `STOR` to the partial name; [`WriteHandle::sync`] finishes the data connection and
//!   waits for the server's `226`, so a checkpoint only ever claims bytes the server confirmed
//!   (an upload cut mid-stream leaves the server holding less than was sent). The next chunk
//!   continues with `REST n` + `STOR`, or `APPE` where the server refuses `REST` for uploads.
//!   A new file costs six commands on vsftpd (`EPSV`, `STOR`, `MDTM` set, `SIZE`, `RNFR`,
//!   `RNTO`; `benches/ftp.sh` with `BENCH_COUNT=1` counts them): the `226` plus the time set
//!   describe the file (checked with `SIZE` + `MDTM` on the run's first upload). After that
//!   first upload, on a plain control connection, a small new file ([`Remote::put_new`]) takes
//!   three round trips in one runtime task ([`put_new_wire`]): `EPSV` and `STOR` together,
//!   then the data connection with the data right behind it (`150` and `226` read together);
//!   the time set, the look at the final name (`SIZE`) and `RNFR` back to back; `RNTO` only
//!   once their replies say the time was set and nothing is at the final name
//!   ([`FtpRemote::rename_new`] for a chunked upload). New small files come 16 at a time
//!   ([`Remote::put_new_many`]) and go one after another over one pooled connection in one
//!   task, `transfers` batches at once, so a transfer thread waits once per 16 files. A `SIZE`
//!   refused in a folder whose listing the run knows means "missing" without a `CWD` (see
//!   [`KnownDirs`]). Calls of several round trips run on a runtime thread ([`on_runtime`]).
//! - Listings: `MLSD` where FEAT lists `MLST` (exact types, sizes, second-precision UTC
//!   times), else `LIST -a` (vsftpd hides dotfiles from plain `LIST`) parsed as Unix or DOS
//!   lines by [`super::ftp_list`], with each file's time from `MDTM` (LIST shows minutes, or
//!   only days for old files). Lines that cannot be parsed are errors, never guesses.
//! - Mtimes: `MFMT` where FEAT lists it, else vsftpd's two-argument `MDTM time path`. A server
//!   that refuses both (vsftpd `mdtm_write=NO`) turns [`Capabilities::set_mtime`] off for the
//!   rest of the run: the base then records the time the server reports, so `compare = fast`
//!   sees no change on the next run.
//!
//! Limits: an FTP server resolves symlinks itself, so a write below a symlinked folder that was
//! created on the server after the scan would follow it (the scan sees links as links and never
//! descends them). There is no server-side copy.

use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream, ImplAsyncFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ftp_list::{self, ListLine};
use super::{
    check_rel_path, read_secret, Batching, Capabilities, CheckedDirs, Listing, NewFile, PutNew,
    Remote, RemoteError, Result, RootStatus, WriteHandle,
};
use crate::job::{Job, Protocol};
use crate::model::{Entry, Kind};

type Conn = AsyncRustlsFtpStream;
type Transfer = suppaftp::tokio::TransferStream<suppaftp::tokio::AsyncRustlsStream>;

/// TCP connect, per resolved address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Greeting, TLS handshake and login together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One control command (a server answering nothing for this long is treated as gone).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection idle this long is checked with `NOOP` before reuse. Servers commonly
/// drop idle sessions after 300 s (vsftpd's `idle_session_timeout`); NAT boxes sooner.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long an active-mode data connection may take to arrive.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server listed in FEAT (RFC 2389), read once at connect.
#[derive(Debug, Clone, Copy, Default)]
struct Features {
    mlsd: bool,
    mfmt: bool,
    mdtm: bool,
    size: bool,
    rest_stream: bool,
    utf8: bool,
    epsv: bool,
}

impl Features {
    fn from_feat(f: &suppaftp::types::Features) -> Features {
        let has = |k: &str| f.keys().any(|x| x.eq_ignore_ascii_case(k));
        let value = |k: &str| {
            f.iter()
                .find(|(x, _)| x.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Features {
            mlsd: has("MLST") || has("MLSD"),
            mfmt: has("MFMT"),
            mdtm: has("MDTM"),
            size: has("SIZE"),
            rest_stream: has("REST") && value("REST").to_ascii_uppercase().contains("STREAM"),
            utf8: has("UTF8"),
            epsv: has("EPSV"),
        }
    }
}

/// Names on the wire: UTF-8 (the default and RFC 2640), or Latin-1 for old servers
/// (`ftp_encoding = "latin1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameEncoding {
    Utf8,
    Latin1,
}

impl NameEncoding {
    pub fn parse(s: &str) -> Option<NameEncoding> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Some(NameEncoding::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => Some(NameEncoding::Latin1),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Latin1;

impl suppaftp::Encoding for Latin1 {
    fn decode(&self, bytes: &[u8]) -> String {
        bytes.iter().map(|b| char::from(*b)).collect()
    }

    fn encode(&self, text: &str) -> std::io::Result<Vec<u8>> {
        text.chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{c:?} cannot be written in Latin-1 (ftp_encoding)"),
                    )
                })
            })
            .collect()
    }
}

/// Everything needed to open one more control connection.
struct ConnConfig {
    host: String,
    port: u16,
    user: String,
    password: String,
    tls: Option<TlsConfigs>,
    /// The server refused TLS 1.2: every connection of the run offers TLS 1.3 (see
    /// [`TlsConfigs`]).
    tls13: AtomicBool,
    tls_ca_file: Option<std::path::PathBuf>,
    active: bool,
    encoding: NameEncoding,
    /// Decided from the first connection's FEAT.
    epsv: AtomicBool,
    utf8: AtomicBool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Logged-in control connections: the idle ones, and a cap on those in use.
///
/// Servers commonly limit connections per client address (ProFTPD `MaxClientsPerHost`,
/// pure-ftpd `-C`, hosting panels' "421 too many connections"), so at most `cap` connections
/// (`transfers` + 1) are in use at once and new ones open only when no idle one is left: the
/// server never sees more than `cap` from one run. A caller waits for a slot; after
/// [`SLOT_WAIT`] it goes ahead anyway (a warning), so a caller that holds one connection and
/// needs a second can never deadlock the run.
struct Pool {
    cfg: ConnConfig,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    slots: Arc<tokio::sync::Semaphore>,
    /// Whether a file's size and mtime after `226` + `MFMT`/`MDTM` may be taken from what was
    /// sent and set, without asking `SIZE` and `MDTM` again (see [`FtpWriter`]): checked on the
    /// run's first upload, one of [`TRUST_UNKNOWN`], [`TRUST_YES`], [`TRUST_NO`].
    written_trust: std::sync::atomic::AtomicU8,
    /// Times of uploaded files (server path -> seconds) not sent yet: once the run's first
    /// upload showed that the server stores what it is sent, the time travels with the rename
    /// that puts the file in place (see [`FtpWriter`]), in one flight with it.
    pending_mtime: Mutex<std::collections::HashMap<String, i64>>,
}

const TRUST_UNKNOWN: u8 = 0;
const TRUST_YES: u8 = 1;
const TRUST_NO: u8 = 2;

/// Longest wait for a free connection slot before exceeding the cap (see [`Pool`]).
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// A connection taken from the pool; its slot is freed when it is dropped or given back.
struct Lease {
    conn: Conn,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Pool {
    /// A connection: an idle one (checked with NOOP when it idled long), else a new one.
    /// `fresh` says whether it was just opened (a failure on it is not a stale connection).
    async fn take(&self) -> std::result::Result<(Lease, bool), String> {
        let slot = match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                tracing::warn!(
                    "ftp: every connection stayed busy for {}s; opening one more",
                    SLOT_WAIT.as_secs()
                );
                None
            }
        };
        loop {
            let idle = self.idle.lock().unwrap().pop();
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            if since.elapsed() >= KEEPALIVE {
                match timed(conn.noop()).await {
                    Ok(()) => {}
                    _ => {
                        tracing::debug!("ftp: dropping a pooled connection that failed NOOP");
                        continue;
                    }
                }
            }
            return Ok((Lease { conn, _slot: slot }, false));
        }
        let conn = open_conn(&self.cfg).await?;
        Ok((Lease { conn, _slot: slot }, true))
    }

    fn give(&self, lease: Lease) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn: lease.conn,
                since: Instant::now(),
            });
        }
    }
}

pub struct FtpRemote {
    /// `Some` until drop.
    rt: Option<tokio::runtime::Runtime>,
    rth: tokio::runtime::Handle,
    pool: Arc<Pool>,
    feat: Features,
    /// Modification times can be set (MFMT or vsftpd's MDTM); cleared when the server refuses.
    can_set_mtime: AtomicBool,
    /// Absolute server path of `remote_path`, without a trailing slash (`/` stays `/`).
    root: String,
    label: String,
    checked_dirs: CheckedDirs,
    known: KnownDirs,
    /// `transfers`: batches of new small files in flight at once, one connection each.
    batches: usize,
}

/// New files of at most [`PUT_BATCH_MAX_FILE`] go [`PUT_BATCH`] to a [`Remote::put_new_many`]
/// call, which puts them one after another on one pooled connection in one runtime task: the
/// calling thread waits once per batch instead of once per file (10,000 x 4 KiB: the thread
/// hand-offs were most of the client's CPU).
const PUT_BATCH: usize = 16;
const PUT_BATCH_MAX_FILE: u64 = 64 << 10;

/// One file of a batch on the wire: the commands of [`put_new_wire`] and the data.
type WireJob = ([String; 5], Arc<[u8]>);

/// Folders whose entries this run knows, from a complete listing or because it created them
/// empty: for each, the names that are not plain files (folders, links, others). A `SIZE`
/// refused for a path in such a folder, whose name is none of those, means the path is missing,
/// without a `CWD` to rule out a folder: one round trip less before each new file's upload. A
/// folder made there since by someone else is then taken for missing; what the run would write
/// fails at `RNTO` (a file cannot be renamed onto a folder), and nothing is lost.
#[derive(Debug, Default)]
struct KnownDirs(Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>);

impl KnownDirs {
    fn set(&self, dir: &str, not_files: std::collections::HashSet<String>) {
        self.0.lock().unwrap().insert(dir.to_string(), not_files);
    }

    /// `path` is known to be no folder or link: a plain file, or nothing.
    fn is_missing_if_no_file(&self, path: &str) -> bool {
        if path.is_empty() {
            return false;
        }
        let known = self.0.lock().unwrap();
        known
            .get(super::parent(path))
            .is_some_and(|others| !others.contains(super::file_name(path)))
    }

    /// Something may have appeared in or below `path`: forget it, its parent and what is below.
    fn forget(&self, path: &str) {
        let prefix = format!("{path}/");
        let parent = super::parent(path).to_string();
        self.0
            .lock()
            .unwrap()
            .retain(|d, _| d != path && *d != parent && !d.starts_with(&prefix));
    }
}

fn conn_err(msg: impl Into<String>) -> RemoteError {
    RemoteError::Connection(msg.into())
}

fn reply_text(r: &suppaftp::types::Response) -> String {
    String::from_utf8_lossy(&r.body).trim().to_string()
}

fn reply_code(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

/// The connection itself failed (as opposed to the server refusing a command).
fn is_connection_failure(e: &FtpError) -> bool {
    match e {
        FtpError::ConnectionError(_) | FtpError::BadResponse | FtpError::SecureError(_) => true,
        FtpError::UnexpectedResponse(r) => session_ended(r),
        _ => false,
    }
}

/// A reply after which the server closes the control connection: 421 ("service not available,
/// closing control connection"), or vsftpd's `500 OOPS: …`, its last words before the session
/// process exits (e.g. `vsf_sysutil_bind` when no passive port could be bound, seen once in
/// 10,000 uploads after a few benchmark runs had left many ports in TIME_WAIT). Either way the
/// commands can be run again on a new connection.
fn session_ended(r: &suppaftp::types::Response) -> bool {
    let code = r.status.code();
    code == 421 || (code == 500 && reply_text(r).starts_with("500 OOPS"))
}

/// An FTP failure of `op` on `path` as the trait's error.
fn ftp_err(op: &'static str, path: &str, e: FtpError) -> RemoteError {
    use std::io::ErrorKind;
    let (kind, msg) = match &e {
        FtpError::UnexpectedResponse(r) => {
            let kind = if session_ended(r) {
                ErrorKind::ConnectionAborted
            } else {
                ErrorKind::Other
            };
            (kind, format!("the server replied {}", reply_text(r)))
        }
        FtpError::ConnectionError(io) => (
            ErrorKind::ConnectionAborted,
            format!("connection lost: {io}"),
        ),
        FtpError::SecureError(s) => (ErrorKind::ConnectionAborted, format!("TLS: {s}")),
        FtpError::BadResponse => (
            ErrorKind::InvalidData,
            "the server sent a reply that is not FTP".to_string(),
        ),
        other => (ErrorKind::Other, other.to_string()),
    };
    RemoteError::Io {
        op,
        path: path.to_string(),
        source: std::io::Error::new(kind, msg),
    }
}

fn timeout_err() -> FtpError {
    FtpError::ConnectionError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the server did not answer within {}s",
            COMMAND_TIMEOUT.as_secs()
        ),
    ))
}

/// A command with [`COMMAND_TIMEOUT`].
///
/// The command runs outside tokio's cooperative budget. suppaftp sends a command with
/// `write_all` and no flush; over TLS, tokio-rustls takes the line, and when the socket write
/// is turned away (a task whose budget is spent gets `Pending` from every I/O resource) it
/// keeps the encrypted record buffered and still reports the line written. Nothing sends it
/// then, and the reply never comes: a listing's `MDTM` pass over FTPS stalled for 60 s at its
/// 44th command (128 budget units, three per command) whenever the replies were already
/// waiting each time it read, as on a loaded machine.
async fn timed<T>(f: impl Future<Output = suppaftp::FtpResult<T>>) -> suppaftp::FtpResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, tokio::task::unconstrained(f))
        .await
        .unwrap_or_else(|_| Err(timeout_err()))
}

/// Server times in nanoseconds; a server may claim any year up to 9999, which does not fit.
fn secs_to_ns(secs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// `tls_insecure_skip_verify = true`: accepts any certificate, still checks the handshake's
/// signatures (so the session is encrypted, only not authenticated).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where the system's CA bundle lives on Debian/Ubuntu, Fedora/RHEL, Alpine and openSUSE.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

fn load_pem_certs(
    path: &std::path::Path,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for c in iter {
        certs.push(c.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?);
    }
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client configurations of an `ftps` job, on the ring provider: TLS 1.2 first, and
/// the fallback for a server that refuses it.
///
/// TLS 1.2 (rustls offers only ECDHE suites with AEAD ciphers there), not 1.3: every data
/// connection must resume the control connection's TLS session where the server says so
/// (vsftpd's default `require_ssl_reuse=YES`: "522 SSL connection failed: session reuse
/// required"), and a TLS 1.3 ticket serves one resumption only, while a data connection that
/// is only written to never reads the tickets the server sends on it: the second or third
/// upload of a run failed. A TLS 1.2 session is resumed again and again, which also spares the
/// server a full handshake per file (10,000 x 4 KiB: 1.65 s -> 1.34 s at 1,000 files). A
/// server that refuses TLS 1.2 (alert "protocol version") gets TLS 1.3 ([`open_conn`]).
struct TlsConfigs {
    v12: Arc<rustls::ClientConfig>,
    v13: Arc<rustls::ClientConfig>,
}

fn tls_configs(job: &Job) -> std::result::Result<TlsConfigs, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The trust anchors are read once, for both configurations (`None`: no verification).
    let roots = if job.tls_insecure_skip_verify {
        None
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let certs = match &job.tls_ca_file {
            Some(p) => load_pem_certs(p).map_err(|e| format!("tls_ca_file: {e}"))?,
            None => {
                let bundle = SYSTEM_CA_BUNDLES
                    .iter()
                    .map(std::path::Path::new)
                    .find(|p| p.exists())
                    .ok_or_else(|| {
                        "no system CA bundle found (install ca-certificates, or set tls_ca_file \
                         to the CA that signed the server's certificate)"
                            .to_string()
                    })?;
                load_pem_certs(bundle)?
            }
        };
        for c in certs {
            roots.add(c).map_err(|e| {
                format!("tls_ca_file: a certificate cannot be used as a trust anchor: {e}")
            })?;
        }
        Some(roots)
    };
    let config = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = match &roots {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
                .with_no_client_auth(),
            Some(roots) => builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        };
        Ok::<_, String>(Arc::new(config))
    };
    Ok(TlsConfigs {
        v12: config(&[&rustls::version::TLS12])?,
        v13: config(rustls::DEFAULT_VERSIONS)?,
    })
}

/// A handshake error that says the server does not speak the offered TLS version.
fn refuses_version(err: &str) -> bool {
    err.contains("ProtocolVersion") || err.contains("PeerIncompatible")
}

/// A rustls handshake failure in words a user can act on.
fn explain_tls(err: &str, cfg: &ConnConfig) -> String {
    let host = &cfg.host;
    let trusted = match &cfg.tls_ca_file {
        Some(p) => format!("the CA in tls_ca_file {}", p.display()),
        None => "the system's CA bundle".to_string(),
    };
    let why = if err.contains("UnknownIssuer") {
        format!(
            "the server's certificate is not signed by {trusted} (unknown issuer). Set \
             tls_ca_file to the PEM file of the CA that issued it (for a self-signed server \
             certificate: the certificate itself)"
        )
    } else if err.contains("BadSignature") {
        format!(
            "the server's certificate names an issuer found in {trusted}, but its signature does \
             not verify with it (a different CA of the same name, or a forged certificate)"
        )
    } else if err.contains("NotValidForName") {
        format!(
            "the server's certificate is not valid for {host:?}: connect with a host name the \
             certificate names (its subjectAltName)"
        )
    } else if err.contains("Expired") {
        "the server's certificate has expired".to_string()
    } else if err.contains("NotValidYet") {
        "the server's certificate is not valid yet (check this machine's clock)".to_string()
    } else if err.contains("Revoked") {
        "the server's certificate is revoked".to_string()
    } else if refuses_version(err) {
        format!("the server accepts neither TLS 1.2 nor TLS 1.3 ({err})")
    } else if err.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate (CA:TRUE) as its own; it needs a leaf \
         certificate (CA:FALSE) signed by that CA"
            .to_string()
    } else {
        format!("the TLS handshake failed ({err})")
    };
    format!(
        "TLS certificate check failed: {why}. (tls_insecure_skip_verify = true skips the check, \
         leaving the connection open to interception.)"
    )
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// Open, secure, log in and set binary mode: one ready control connection.
async fn open_conn(cfg: &ConnConfig) -> std::result::Result<Conn, String> {
    loop {
        let stream =
            super::tcp_connect(&cfg.host, cfg.port, CONNECT_TIMEOUT, "an FTP server").await?;
        // Outside the cooperative budget, as every command (see [`timed`]).
        let login = tokio::task::unconstrained(login(cfg, stream));
        match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
            Ok(Err(e)) if e == TLS12_REFUSED => {
                // Once per run: later connections offer TLS 1.3 from the start.
                if !cfg.tls13.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        host = %cfg.host,
                        "ftps: the server refuses TLS 1.2; using TLS 1.3, where a server that \
                         requires data connections to resume the control connection's session \
                         may refuse some uploads (\"522 ... session reuse required\")"
                    );
                }
            }
            Ok(r) => return r,
            Err(_) => {
                return Err(format!(
                    "the FTP greeting, TLS handshake and login did not finish within {}s",
                    LOGIN_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// [`login`]'s error when the server refused the TLS 1.2 handshake ("protocol version"), and
/// TLS 1.3 was not tried yet: [`open_conn`] connects again with it.
const TLS12_REFUSED: &str = "the server refused TLS 1.2";

async fn login(
    cfg: &ConnConfig,
    stream: tokio::net::TcpStream,
) -> std::result::Result<Conn, String> {
    let mut conn = ImplAsyncFtpStream::connect_with_stream(stream)
        .await
        .map_err(|e| match e {
            FtpError::UnexpectedResponse(r) => {
                format!("the server refused the session: {}", reply_text(&r))
            }
            e => format!("no FTP greeting from the server: {e}"),
        })?;
    conn = conn.passive_stream_builder(|addr| Box::pin(data_connect(addr)));
    if let Some(tls) = &cfg.tls {
        let tls13 = cfg.tls13.load(Ordering::Relaxed);
        let config = if tls13 { &tls.v13 } else { &tls.v12 };
        let connector =
            AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config.clone()));
        conn = conn
            .into_secure(connector, &cfg.host)
            .await
            .map_err(|e| match e {
                FtpError::SecureError(s) if !tls13 && refuses_version(&s) => {
                    TLS12_REFUSED.to_string()
                }
                FtpError::ConnectionError(io) if !tls13 && refuses_version(&io.to_string()) => {
                    TLS12_REFUSED.to_string()
                }
                FtpError::UnexpectedResponse(r) => format!(
                    "the server does not offer explicit TLS (AUTH TLS was answered {}); \
                     protocol = \"ftps\" needs a server with TLS enabled",
                    reply_text(&r)
                ),
                FtpError::SecureError(s) => explain_tls(&s, cfg),
                FtpError::ConnectionError(io) => explain_tls(&io.to_string(), cfg),
                e => format!("TLS setup failed: {e}"),
            })?;
    }
    if cfg.active {
        conn = conn.active_mode(ACTIVE_TIMEOUT);
    } else if cfg.epsv.load(Ordering::Relaxed) {
        conn.set_mode(Mode::ExtendedPassive);
    } else {
        conn.set_mode(Mode::Passive);
        conn.set_passive_nat_workaround(true);
    }
    if cfg.encoding == NameEncoding::Latin1 {
        conn.set_encoding(Latin1).await;
    }
    conn.login(cfg.user.as_str(), cfg.password.as_str())
        .await
        .map_err(|e| match e {
            FtpError::UnexpectedResponse(r) if r.status.code() == 530 => format!(
                "authentication failed: the server refused the password for user {:?} ({})",
                cfg.user,
                reply_text(&r)
            ),
            FtpError::UnexpectedResponse(r) => format!("login refused: {}", reply_text(&r)),
            e => format!("login failed: {e}"),
        })?;
    if cfg.utf8.load(Ordering::Relaxed) && cfg.encoding == NameEncoding::Utf8 {
        // RFC 2640; servers that always speak UTF-8 answer 5xx, which is fine.
        let _ = conn
            .custom_command(
                "OPTS UTF8 ON",
                &[Status::CommandOk, Status::CommandNotImplemented],
            )
            .await;
    }
    conn.transfer_type(FileType::Binary)
        .await
        .map_err(|e| format!("the server refused binary mode (TYPE I): {e}"))?;
    Ok(conn)
}

/// A passive-mode data connection: bounded, and with `TCP_NODELAY` like the control connection.
/// Without it every small FTPS upload stalls ~40 ms: the TLS `close_notify` after the file's
/// last record is a small write behind unacknowledged data, which Nagle holds until the
/// server's delayed ACK.
async fn data_connect(addr: std::net::SocketAddr) -> suppaftp::FtpResult<tokio::net::TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            FtpError::ConnectionError(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the data connection to {addr} did not open within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ))
        })?
        .map_err(FtpError::ConnectionError)?;
    s.set_nodelay(true).map_err(FtpError::ConnectionError)?;
    Ok(s)
}

/// `remote_path` without trailing slashes (`/` stays `/`, empty = the login folder).
fn normalize_root(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        if p.starts_with('/') {
            "/".into()
        } else {
            String::new()
        }
    } else {
        t.to_string()
    }
}

fn join_server(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else if root == "/" {
        format!("/{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

impl FtpRemote {
    /// Connect and log in once (the pool's first connection), read FEAT. Every failure is a
    /// [`RemoteError::Connection`] naming the cause, never a secret.
    pub fn connect(job: &Job) -> Result<FtpRemote> {
        let host = job
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| conn_err("no host configured"))?;
        let port = job.port.unwrap_or(21);
        let user = match &job.username {
            Some(u) if !u.is_empty() => u.clone(),
            _ => "anonymous".to_string(),
        };
        let password = read_secret(&job.password)
            .map_err(conn_err)?
            .unwrap_or_default();
        let secure = job.protocol == Protocol::Ftps;
        let scheme = if secure { "ftps" } else { "ftp" };
        let prefix = format!("{scheme}://{user}@{host}:{port}");
        let tls = if secure {
            Some(tls_configs(job).map_err(|m| conn_err(format!("{prefix}: {m}")))?)
        } else {
            None
        };
        let encoding = match job.ftp_encoding.as_deref() {
            None => NameEncoding::Utf8,
            Some(e) => NameEncoding::parse(e)
                .ok_or_else(|| conn_err(format!("ftp_encoding {e:?} is not supported")))?,
        };
        let cfg = ConnConfig {
            host: host.clone(),
            port,
            user: user.clone(),
            password,
            tls,
            tls13: AtomicBool::new(false),
            tls_ca_file: job.tls_ca_file.clone(),
            active: job.ftp_active,
            encoding,
            epsv: AtomicBool::new(false),
            utf8: AtomicBool::new(false),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omnisync-ftp")
            .enable_all()
            .build()
            .map_err(|e| conn_err(format!("cannot start the I/O runtime: {e}")))?;
        let rth = rt.handle().clone();
        let (first, feat, home) = rth
            .block_on(async {
                let mut c = open_conn(&cfg).await?;
                let feat = match timed(c.feat()).await {
                    Ok(f) => Features::from_feat(&f),
                    Err(_) => Features::default(), // FEAT is optional (RFC 2389)
                };
                let home = if job.remote_path.starts_with('/') {
                    String::new()
                } else {
                    timed(c.pwd())
                        .await
                        .map_err(|e| format!("cannot read the login folder (PWD): {e}"))?
                };
                Ok::<_, String>((c, feat, home))
            })
            .map_err(|m| conn_err(format!("{prefix}: {m}")))?;
        cfg.epsv.store(feat.epsv, Ordering::Relaxed);
        cfg.utf8.store(feat.utf8, Ordering::Relaxed);
        let mut first = first;
        if !cfg.active && feat.epsv {
            first.set_mode(Mode::ExtendedPassive);
        } else if !cfg.active {
            first.set_passive_nat_workaround(true);
        }
        // Absolute paths everywhere: listings change the working folder of a connection.
        let mut root = normalize_root(&job.remote_path);
        if !root.starts_with('/') {
            let home = home.trim_end_matches('/');
            root = if root.is_empty() {
                if home.is_empty() {
                    "/".into()
                } else {
                    home.to_string()
                }
            } else {
                format!("{home}/{root}")
            };
        }
        let label = format!("{prefix}{root}");
        let pool = Arc::new(Pool {
            cfg,
            idle: Mutex::new(Vec::new()),
            max_idle: job.transfers.max(1) + 1,
            slots: Arc::new(tokio::sync::Semaphore::new(job.transfers.max(1) + 1)),
            written_trust: std::sync::atomic::AtomicU8::new(TRUST_UNKNOWN),
            pending_mtime: Mutex::default(),
        });
        pool.give(Lease {
            conn: first,
            _slot: None,
        });
        Ok(FtpRemote {
            rt: Some(rt),
            rth,
            pool,
            can_set_mtime: AtomicBool::new(feat.mfmt || feat.mdtm),
            feat,
            root,
            label,
            checked_dirs: CheckedDirs::default(),
            known: KnownDirs::default(),
            batches: job.transfers.max(1),
        })
    }

    /// The server path of a relative path.
    fn full(&self, op: &'static str, path: &str) -> Result<String> {
        check_rel_path(path).map_err(|e| RemoteError::refused(op, path, e))?;
        Ok(join_server(&self.root, path))
    }

    fn take(&self) -> Result<(Lease, bool)> {
        self.rth
            .block_on(self.pool.take())
            .map_err(|m| RemoteError::Io {
                op: "connect",
                path: String::new(),
                source: std::io::Error::new(std::io::ErrorKind::ConnectionAborted, m),
            })
    }

    /// Run commands on a pooled connection. A connection that failed is dropped; when it was
    /// a reused one (it may have died while idle), the commands run once more on a fresh one.
    fn with_conn<T>(
        &self,
        mut f: impl AsyncFnMut(&mut Conn) -> suppaftp::FtpResult<T>,
    ) -> std::result::Result<suppaftp::FtpResult<T>, RemoteError> {
        loop {
            let (mut conn, fresh) = self.take()?;
            let r = self.rth.block_on(f(&mut conn.conn));
            match &r {
                Err(e) if is_connection_failure(e) => {
                    drop(conn);
                    if !fresh {
                        tracing::debug!("ftp: connection lost ({e}); retrying on a new one");
                        continue;
                    }
                }
                _ => self.pool.give(conn),
            }
            return Ok(r);
        }
    }

    /// [`Self::with_conn`] with the commands run on a runtime thread (see [`on_runtime`]): `f`
    /// gets the connection and hands it back with its result.
    fn with_conn_spawned<T, Fut>(
        &self,
        f: impl Fn(Lease) -> Fut,
    ) -> std::result::Result<suppaftp::FtpResult<T>, RemoteError>
    where
        T: Send + 'static,
        Fut: Future<Output = (Lease, suppaftp::FtpResult<T>)> + Send + 'static,
    {
        loop {
            let (conn, fresh) = self.take()?;
            let (conn, r) = match on_runtime(&self.rth, f(conn)) {
                Ok((c, r)) => (Some(c), r),
                Err(e) => (None, Err(e)),
            };
            match &r {
                Err(e) if is_connection_failure(e) => {
                    drop(conn);
                    if !fresh {
                        tracing::debug!("ftp: connection lost ({e}); retrying on a new one");
                        continue;
                    }
                }
                _ => {
                    if let Some(c) = conn {
                        self.pool.give(c);
                    }
                }
            }
            return Ok(r);
        }
    }

    /// [`Self::with_conn`], with the FTP error mapped for `op` on `path`.
    fn cmd<T>(
        &self,
        op: &'static str,
        path: &str,
        f: impl AsyncFnMut(&mut Conn) -> suppaftp::FtpResult<T>,
    ) -> Result<T> {
        self.with_conn(f)?.map_err(|e| ftp_err(op, path, e))
    }

    fn is_dir_full(&self, full: &str) -> Result<bool> {
        let r = self.with_conn(async |c| timed(c.cwd(full)).await)?;
        match r {
            Ok(()) => Ok(true),
            Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => Ok(false),
            Err(e) => Err(ftp_err("stat", full, e)),
        }
    }

    /// SIZE and MDTM of a server path: `Ok(None)` when SIZE refuses it (missing, or a folder).
    fn size_mtime(&self, op: &'static str, path: &str, full: &str) -> Result<Option<(u64, i64)>> {
        let mdtm = self.feat.mdtm;
        if mdtm && self.pool.cfg.can_pipeline() {
            let cmds = [format!("SIZE {full}"), format!("MDTM {full}")];
            let r = self.with_conn(async |c| size_mtime_wire(c, &cmds[0], &cmds[1]).await)?;
            return r.map_err(|e| ftp_err(op, path, e));
        }
        let r = self.with_conn(async |c| {
            let size = match timed(c.size(full)).await {
                Ok(s) => s as u64,
                Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            let mtime = if mdtm {
                match timed(mdtm_secs(c, full)).await {
                    Ok(t) => t,
                    Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => 0,
                    Err(e) => return Err(e),
                }
            } else {
                0
            };
            Ok(Some((size, mtime)))
        })?;
        r.map_err(|e| ftp_err(op, path, e))
    }

    /// Find one entry by listing its parent (servers without SIZE, or MLST).
    fn stat_by_list(&self, path: &str) -> Result<Option<Entry>> {
        let name = super::file_name(path);
        let listing = match self.list_raw(super::parent(path)) {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(listing
            .entries
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e))
    }

    /// The listing of a folder, without the per-file MDTM pass.
    fn list_raw(&self, dir: &str) -> Result<Listing> {
        let full = self.full("list", dir)?;
        let mlsd = self.feat.mlsd;
        let r = self.with_conn(async |c| {
            if mlsd {
                return timed(c.mlsd(Some(&full))).await.map(|l| (l, true));
            }
            // CWD first: LIST's argument is an `ls` pattern on many servers, and a name with
            // spaces or a leading '-' would be taken apart.
            timed(c.cwd(&full)).await?;
            match timed(c.list(Some("-a"))).await {
                Ok(l) => Ok((l, false)),
                Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {
                    timed(c.list(None)).await.map(|l| (l, false))
                }
                Err(e) => Err(e),
            }
        })?;
        let (lines, machine) = match r {
            Ok(x) => x,
            Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {
                // A listing refused: missing (550), or not readable.
                if self.is_dir_full(&full)? {
                    return Err(ftp_err("list", dir, e));
                }
                return Err(RemoteError::NotFound {
                    op: "list",
                    path: dir.to_string(),
                });
            }
            Err(e) => return Err(ftp_err("list", dir, e)),
        };
        let now = now_secs();
        let mut out = Listing::default();
        for line in lines {
            let parsed = if machine {
                ftp_list::parse_mlsd_line(&line)
            } else {
                ftp_list::parse_list_line(&line, now)
            };
            match parsed {
                ListLine::Skip => {}
                ListLine::Bad(l) => {
                    tracing::error!(dir, line = %l, "ftp: listing line not understood; not synced");
                    out.bad_names
                        .push(format!("(unparseable listing line: {l:?})"));
                }
                ListLine::Entry(e) if e.name.contains('\u{FFFD}') => {
                    // Not valid in the name encoding: cannot be addressed again.
                    out.bad_names.push(e.name);
                }
                ListLine::Entry(e) => out.entries.push((
                    e.name,
                    Entry {
                        kind: e.kind,
                        size: e.size,
                        mtime: secs_to_ns(e.mtime.unwrap_or(0)),
                        inode: None,
                        hash: None,
                    },
                )),
            }
        }
        Ok(out)
    }

    /// Make sure the folder exists; `true` when this call created it.
    /// The commands of [`put_new_wire`] for a new small file and its time in seconds, where
    /// that one-task path applies (see [`Remote::put_new`]); `None` where the steps must go
    /// one by one.
    fn put_wire_cmds(
        &self,
        path: &str,
        partial: &str,
        mtime_ns: Option<i64>,
    ) -> Result<Option<([String; 5], i64)>> {
        let (pf, tf) = (self.full("write", partial)?, self.full("write", path)?);
        let fast = mtime_ns.filter(|_| {
            self.pool.cfg.can_pipeline()
                && !self.pool.cfg.active
                && self.feat.size
                && !self.feat.mlsd
                && self.can_set_mtime.load(Ordering::Relaxed)
                && self.pool.written_trust.load(Ordering::Relaxed) == TRUST_YES
                && self.known.is_missing_if_no_file(path)
                && self.known.is_missing_if_no_file(partial)
        });
        let Some(mtime_ns) = fast else {
            return Ok(None);
        };
        self.pool.pending_mtime.lock().unwrap().remove(&pf);
        let secs = mtime_ns.div_euclid(1_000_000_000);
        let cmds = [
            format!("STOR {pf}"),
            set_time_cmd(self.feat.mfmt, secs, &pf),
            format!("SIZE {tf}"),
            format!("RNFR {pf}"),
            format!("RNTO {tf}"),
        ];
        Ok(Some((cmds, secs)))
    }

    /// What a [`put_new_wire`] came to, for the engine; unless the file is in place, its
    /// partial is removed.
    fn put_wire_outcome(
        &self,
        partial: &str,
        len: usize,
        secs: i64,
        r: std::result::Result<suppaftp::FtpResult<RenameNew>, RemoteError>,
    ) -> Result<PutNew> {
        let done = match r {
            Ok(Ok(RenameNew::Renamed)) => {
                self.checked_dirs.forget(partial);
                return Ok(PutNew::Done(Entry::file(len as u64, secs_to_ns(secs))));
            }
            Ok(Ok(RenameNew::Exists)) => Ok(PutNew::Appeared),
            Ok(Ok(RenameNew::MtimeRefused(e))) => Err(ftp_err("set mtime", partial, e)),
            Ok(Ok(RenameNew::Refused(e)) | Err(e)) => Err(ftp_err("write", partial, e)),
            Err(e) => Err(e),
        };
        // Unless the file is in place, no partial stays behind.
        let _ = self.remove_file(partial);
        done
    }

    /// [`put_new_wire`] of each job in turn on one pooled connection, in one runtime task. A
    /// reused connection found dead on the first file (it may have died while idle) is
    /// replaced and the batch starts again; lost later, the files from there on are errors.
    fn put_batch_on_one(
        &self,
        epsv: bool,
        jobs: Arc<Vec<WireJob>>,
    ) -> Vec<std::result::Result<suppaftp::FtpResult<RenameNew>, RemoteError>> {
        loop {
            let (lease, fresh) = match self.take() {
                Ok(l) => l,
                Err(e) => {
                    let msg = e.to_string();
                    return jobs.iter().map(|_| Err(conn_err(msg.clone()))).collect();
                }
            };
            let task = {
                let jobs = jobs.clone();
                async move {
                    let mut lease = lease;
                    let mut done = Vec::with_capacity(jobs.len());
                    for (cmds, data) in jobs.iter() {
                        let r = put_new_wire(&mut lease.conn, epsv, data, cmds).await;
                        let lost = matches!(&r, Err(e) if is_connection_failure(e));
                        done.push(r);
                        if lost {
                            return (None, done);
                        }
                    }
                    (Some(lease), done)
                }
            };
            let (lease, done) = match on_runtime(&self.rth, task) {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    return jobs.iter().map(|_| Err(conn_err(msg.clone()))).collect();
                }
            };
            match lease {
                Some(l) => self.pool.give(l),
                None if !fresh && done.len() == 1 => {
                    tracing::debug!("ftp: connection lost before a batch; retrying on a new one");
                    continue;
                }
                None => {}
            }
            return done.into_iter().map(Ok).collect();
        }
    }

    fn mkdir_one(&self, op: &'static str, rel: &str, full: &str) -> Result<bool> {
        if self.is_dir_full(full)? {
            return Ok(false);
        }
        let r = self.with_conn(async |c| timed(c.mkdir(full)).await)?;
        match r {
            Ok(()) => Ok(true),
            // Created by another transfer thread in between?
            Err(e) => match self.is_dir_full(full)? {
                true => Ok(false),
                false => Err(ftp_err(op, rel, e)),
            },
        }
    }

    fn set_mtime_full(&self, path: &str, full: &str, secs: i64) -> Result<()> {
        let cmd = set_time_cmd(self.feat.mfmt, secs, full);
        let r = self.with_conn(async |c| {
            timed(c.custom_command(cmd.as_str(), &[Status::File, Status::CommandOk])).await
        })?;
        match r {
            Ok(_) => Ok(()),
            Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {
                // Refused: does the file exist? Then the server cannot set times at all.
                if self.size_mtime("set mtime", path, full)?.is_none() {
                    return Err(ftp_err("set mtime", path, e));
                }
                if self.can_set_mtime.swap(false, Ordering::Relaxed) {
                    let why = match &e {
                        FtpError::UnexpectedResponse(r) => reply_text(r),
                        e => e.to_string(),
                    };
                    tracing::info!(
                        remote = %self.label,
                        "the server cannot set modification times ({why}); the state records \
                         the times it reports instead"
                    );
                }
                Ok(())
            }
            Err(e) => Err(ftp_err("set mtime", path, e)),
        }
    }
}

/// MDTM of each `(index, path)`: `None` where the server refuses (gone since the listing).
async fn mdtm_each(
    c: &mut Conn,
    files: &[(usize, String)],
) -> suppaftp::FtpResult<Vec<(usize, Option<i64>)>> {
    let mut times = Vec::with_capacity(files.len());
    for (i, p) in files {
        match timed(mdtm_secs(c, p)).await {
            Ok(t) => times.push((*i, Some(t))),
            Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {
                times.push((*i, None))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(times)
}

/// Files per connection before a listing's MDTM pass spreads over more pooled connections:
/// one MDTM is one round trip, so a folder of 10,000 files costs 10,000 round trips, divided
/// by the connections asking at once.
const MDTM_PER_CONN: usize = 64;

impl FtpRemote {
    fn mdtm_many(
        &self,
        dir: &str,
        files: Vec<(usize, String)>,
    ) -> Result<Vec<(usize, Option<i64>)>> {
        let conns = files
            .len()
            .div_ceil(MDTM_PER_CONN)
            .clamp(1, self.pool.max_idle);
        if conns == 1 {
            return self.cmd("list", dir, async |c| mdtm_each(c, &files).await);
        }
        let per = files.len().div_ceil(conns);
        let r = self.rth.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for chunk in files.chunks(per) {
                let (pool, chunk) = (self.pool.clone(), chunk.to_vec());
                set.spawn(async move {
                    loop {
                        let (mut c, fresh) = pool.take().await.map_err(|m| {
                            FtpError::ConnectionError(std::io::Error::new(
                                std::io::ErrorKind::ConnectionAborted,
                                m,
                            ))
                        })?;
                        let r = mdtm_each(&mut c.conn, &chunk).await;
                        match &r {
                            // A pooled connection the server dropped while it idled: the
                            // chunk again on a new one, as `with_conn` does.
                            Err(e) if is_connection_failure(e) && !fresh => {
                                tracing::debug!(
                                    "ftp: connection lost ({e}); retrying on a new one"
                                );
                                continue;
                            }
                            Err(e) if is_connection_failure(e) => drop(c),
                            _ => pool.give(c),
                        }
                        return r;
                    }
                });
            }
            let mut all = Vec::with_capacity(files.len());
            while let Some(joined) = set.join_next().await {
                let part = joined.map_err(|e| {
                    FtpError::ConnectionError(std::io::Error::other(format!("MDTM task: {e}")))
                })??;
                all.extend(part);
            }
            Ok(all)
        });
        r.map_err(|e| ftp_err("list", dir, e))
    }
}

/// MDTM of a path, in seconds (suppaftp parses the reply as a naive UTC time).
async fn mdtm_secs(c: &mut Conn, full: &str) -> suppaftp::FtpResult<i64> {
    let t = c.mdtm(full).await?;
    Ok(t.and_utc().timestamp())
}

/// The command to set a file's time: `MFMT` where FEAT lists it, else vsftpd's `MDTM time path`.
fn set_time_cmd(mfmt: bool, secs: i64, full: &str) -> String {
    let stamp = ftp_list::format_timeval(secs);
    if mfmt {
        format!("MFMT {stamp} {full}")
    } else {
        format!("MDTM {stamp} {full}")
    }
}

impl ConnConfig {
    /// Whether commands can be sent back to back, their replies read afterwards: only on a
    /// plain control connection (suppaftp gives access to the TCP socket, not to the TLS
    /// stream over it) with UTF-8 names (which never hold the Telnet IAC byte 0xFF that a
    /// command line must escape).
    fn can_pipeline(&self) -> bool {
        self.tls.is_none() && self.encoding == NameEncoding::Utf8
    }
}

/// Send `cmds` on the control connection without waiting for replies; the caller reads one
/// reply per command, in order (RFC 959 servers read and answer commands one after another).
/// Only where [`ConnConfig::can_pipeline`]; never while a transfer's reply is outstanding.
async fn send_pipelined(c: &Conn, cmds: &[&str]) -> suppaftp::FtpResult<()> {
    let mut line = Vec::new();
    for cmd in cmds {
        if cmd.contains(['\r', '\n']) {
            return Err(FtpError::ConnectionError(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a command line cannot hold CR or LF",
            )));
        }
        line.extend_from_slice(cmd.as_bytes());
        line.extend_from_slice(b"\r\n");
    }
    let sock = c.get_ref().await;
    let mut sent = 0;
    while sent < line.len() {
        sock.writable().await.map_err(FtpError::ConnectionError)?;
        match sock.try_write(&line[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(FtpError::ConnectionError(e)),
        }
    }
    Ok(())
}

/// `SIZE` and `MDTM` of one name sent back to back: a stat in one round trip, where asking
/// one after the other took two (a download stats its source before and after reading it).
/// `None` when the server has no such file (`SIZE` refused); a refused `MDTM` gives time 0,
/// as asking alone does.
async fn size_mtime_wire(
    c: &mut Conn,
    size_cmd: &str,
    mdtm_cmd: &str,
) -> suppaftp::FtpResult<Option<(u64, i64)>> {
    timed(send_pipelined(c, &[size_cmd, mdtm_cmd])).await?;
    let size = timed(c.read_response(Status::File)).await;
    let mtime = timed(c.read_response(Status::File)).await;
    for r in [&size, &mtime] {
        if let Err(e) = r {
            if is_connection_failure(e) || reply_code(e).is_none() {
                return Err(clone_failure(e));
            }
        }
    }
    let refused = |e: &FtpError| reply_code(e).is_some_and(|c| (500..600).contains(&c));
    let last_word = |r: &suppaftp::types::Response| {
        reply_text(r)
            .split_whitespace()
            .last()
            .map(str::to_string)
            .unwrap_or_default()
    };
    let size = match size {
        Ok(r) => last_word(&r)
            .parse::<u64>()
            .map_err(|_| FtpError::BadResponse)?,
        Err(e) if refused(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mtime = match mtime {
        Ok(r) => ftp_list::parse_timeval(&last_word(&r)).ok_or(FtpError::BadResponse)?,
        Err(e) if refused(&e) => 0,
        Err(e) => return Err(e),
    };
    Ok(Some((size, mtime)))
}

/// What [`FtpRemote::rename_new`] found on the wire.
enum RenameNew {
    Renamed,
    /// Something is at the target name; nothing was renamed.
    Exists,
    /// The deferred time of the file could not be set; nothing was renamed.
    MtimeRefused(FtpError),
    /// `RNFR` or `RNTO` refused.
    Refused(FtpError),
}

/// The wire part of [`FtpRemote::rename_new`]: the deferred time (when there is one), `SIZE` of
/// the target and `RNFR` sent back to back; `RNTO` only when their replies say the time was set
/// and nothing is at the target. Every reply is read before deciding, so the connection stays
/// in step.
async fn rename_new_wire(
    c: &mut Conn,
    set_time: Option<&str>,
    size_cmd: &str,
    rnfr_cmd: &str,
    rnto_cmd: &str,
) -> suppaftp::FtpResult<RenameNew> {
    let mut cmds = Vec::with_capacity(3);
    cmds.extend(set_time);
    cmds.push(size_cmd);
    cmds.push(rnfr_cmd);
    timed(send_pipelined(c, &cmds)).await?;
    let time_set = match set_time {
        Some(_) => Some(timed(c.read_response_in(&[Status::File, Status::CommandOk])).await),
        None => None,
    };
    let size = timed(c.read_response(Status::File)).await;
    let rnfr = timed(c.read_response(Status::RequestFilePending)).await;
    for r in [&size, &rnfr].into_iter().chain(time_set.as_ref()) {
        if let Err(e) = r {
            if is_connection_failure(e) || reply_code(e).is_none() {
                return Err(clone_failure(e));
            }
        }
    }
    if let Some(Err(e)) = time_set {
        return Ok(RenameNew::MtimeRefused(e));
    }
    if size.is_ok() {
        return Ok(RenameNew::Exists);
    }
    if let Err(e) = rnfr {
        return Ok(RenameNew::Refused(e));
    }
    // Some non-compliant servers (e.g. bftpd) reply 200 instead of 250.
    let ok = [Status::RequestedFileActionOk, Status::CommandOk];
    match timed(c.custom_command(rnto_cmd, &ok)).await {
        Ok(_) => Ok(RenameNew::Renamed),
        Err(e) if is_connection_failure(&e) => Err(e),
        Err(e) => Ok(RenameNew::Refused(e)),
    }
}

/// The data address of a passive-mode reply: the port from `227 … (h1,h2,h3,h4,p1,p2)` or
/// `229 … (|||port|)`, on the control connection's own peer address (as suppaftp's NAT
/// workaround does: a server behind NAT may name an address the client cannot reach).
fn passive_port(reply: &str) -> Option<u16> {
    let inner = reply.rsplit_once('(')?.1.split_once(')')?.0;
    if let Some(p) = inner.strip_prefix("|||") {
        return p.strip_suffix('|')?.parse().ok();
    }
    let nums: Vec<u16> = inner
        .split(',')
        .map(|n| n.trim().parse::<u16>().ok().filter(|&v| v < 256))
        .collect::<Option<_>>()?;
    match nums.as_slice() {
        [_, _, _, _, hi, lo] => Some(hi * 256 + lo),
        _ => None,
    }
}

/// The wire part of [`FtpRemote::put_new`] on a plain control connection, in three round trips
/// where the steps take five, and in one runtime task instead of five handoffs: `EPSV`/`PASV`
/// and `STOR` of the partial together, the data connection with the whole file right behind
/// it (no wait for `150`), then `150` and `226`; then [`rename_new_wire`] with the time.
/// `cmds` are `STOR`, the time set, `SIZE` of the target, `RNFR`, `RNTO`.
async fn put_new_wire(
    c: &mut Conn,
    epsv: bool,
    data: &[u8],
    cmds: &[String; 5],
) -> suppaftp::FtpResult<RenameNew> {
    let [stor_cmd, set_time, size_cmd, rnfr_cmd, rnto_cmd] = cmds;
    let (pasv_cmd, pasv_status) = if epsv {
        ("EPSV", Status::ExtendedPassiveMode)
    } else {
        ("PASV", Status::PassiveMode)
    };
    // The passive request and STOR go out together: the server answers the first with the
    // data port and then waits for the data connection on the second (a passive-mode server
    // accepts it once the transfer command has come). One round trip less per file. Should
    // the first be refused, STOR's own reply would still be on its way: the connection is out
    // of step and is not used again.
    timed(send_pipelined(c, &[pasv_cmd, stor_cmd])).await?;
    let out_of_step = |what: String| {
        FtpError::ConnectionError(std::io::Error::other(format!(
            "{what}; the control connection is out of step and is closed"
        )))
    };
    let pasv = timed(c.read_response(pasv_status))
        .await
        .map_err(|e| out_of_step(format!("{pasv_cmd} before STOR: {e}")))?;
    let port = passive_port(&reply_text(&pasv))
        .ok_or_else(|| out_of_step(format!("no data port in {:?}", reply_text(&pasv))))?;
    let mut addr = c
        .get_ref()
        .await
        .peer_addr()
        .map_err(FtpError::ConnectionError)?;
    addr.set_port(port);
    let mut stream = data_connect(addr).await?;
    // The data goes out while the server's verdict on STOR is awaited; a refusal stops it (the
    // server never takes a data connection for a refused STOR).
    let send = tokio::time::timeout(COMMAND_TIMEOUT, async {
        stream.write_all(data).await?;
        stream.shutdown().await
    });
    let mut send = std::pin::pin!(send);
    let (verdict, sent) = {
        let mut verdict = std::pin::pin!(timed(
            c.read_response_in(&[Status::AlreadyOpen, Status::AboutToSend])
        ));
        tokio::select! {
            v = &mut verdict => (v, None),
            s = &mut send => (verdict.await, Some(s)),
        }
    };
    match verdict {
        Ok(_) => {}
        Err(e) if is_connection_failure(&e) || reply_code(&e).is_none() => return Err(e),
        Err(e) => return Ok(RenameNew::Refused(e)),
    }
    let sent = match sent {
        Some(s) => s,
        None => send.await,
    };
    sent.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the server took no data for 60s",
        ))
    })
    .map_err(FtpError::ConnectionError)?;
    // The data connection is shut down: the server's `226` follows its end of file.
    timed(c.read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]))
        .await?;
    rename_new_wire(c, Some(set_time), size_cmd, rnfr_cmd, rnto_cmd).await
}

impl Drop for FtpRemote {
    fn drop(&mut self) {
        // Times still pending belong to uploads that were never renamed into place (a run
        // cut short): set them anyway, so every upload's time is set as the trait promises.
        let pending: Vec<(String, i64)> =
            std::mem::take(&mut *self.pool.pending_mtime.lock().unwrap())
                .into_iter()
                .collect();
        if !pending.is_empty() {
            let mfmt = self.feat.mfmt;
            let _ = self.with_conn(async |c| {
                for (full, secs) in &pending {
                    let cmd = set_time_cmd(mfmt, *secs, full);
                    let ok = [Status::File, Status::CommandOk];
                    let _ = timed(c.custom_command(cmd.as_str(), &ok)).await;
                }
                Ok(())
            });
        }
        let idle: Vec<Idle> = std::mem::take(&mut *self.pool.idle.lock().unwrap());
        if !idle.is_empty() {
            let _ = self.rth.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), async {
                    for mut i in idle {
                        let _ = i.conn.quit().await;
                    }
                })
                .await
            });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------------------------

/// Run `fut` on one of the runtime's threads and wait for it there. A `block_on` from a
/// transfer thread parks that thread at every reply, and the runtime thread that sees the
/// socket become readable has to wake it: two context switches per round trip. Spawned, the
/// future is polled right where the reactor wakes, and a call of several round trips costs
/// one handoff. (On the 10,000 x 4 KiB bench, context switches were most of the client's CPU.)
fn on_runtime<T: Send + 'static>(
    rth: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> std::result::Result<T, FtpError> {
    rth.block_on(rth.spawn(fut))
        .map_err(|e| FtpError::ConnectionError(std::io::Error::other(format!("FTP task: {e}"))))
}

/// The result of a task that took the connection's lease along ([`on_runtime`]): the lease goes
/// back to `conn` when the task gave it back (a failed task leaves `conn` empty).
fn keep_lease<T>(
    conn: &mut Option<Lease>,
    r: std::result::Result<(Lease, std::result::Result<T, FtpError>), FtpError>,
) -> std::result::Result<T, FtpError> {
    let (lease, r) = r?;
    *conn = Some(lease);
    r
}

/// A download: one control connection and its data connection, from `RETR` (after `REST`).
struct FtpReader {
    rth: tokio::runtime::Handle,
    pool: Arc<Pool>,
    conn: Option<Lease>,
    stream: Option<Transfer>,
    path: String,
}

impl Read for FtpReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        if out.is_empty() {
            return Ok(0);
        }
        let n = self
            .rth
            .block_on(async {
                tokio::time::timeout(COMMAND_TIMEOUT, stream.read(out))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no data from the server for 60s",
                        ))
                    })
            })
            .inspect_err(|_| {
                self.stream = None;
                self.conn = None;
            })?;
        if n == 0 {
            // End of data: the server's 226 says the whole file was sent.
            let stream = self.stream.take().expect("checked above");
            let done = self.rth.block_on(timed(stream.finish()));
            match done {
                Ok(()) => {
                    if let Some(c) = self.conn.take() {
                        self.pool.give(c);
                    }
                }
                Err(e) => {
                    self.conn = None;
                    return Err(std::io::Error::other(
                        ftp_err("read", &self.path, e).to_string(),
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// How long a reader dropped before end of data waits for the server's transfer reply.
const FINISH_ON_DROP: Duration = Duration::from_secs(5);

impl Drop for FtpReader {
    fn drop(&mut self) {
        // The engine stops reading at the size it expects, before the data connection's end:
        // close it and read the transfer reply, so the control connection can be reused. A
        // download abandoned midway gets a 426 instead; then the connection is dropped.
        let (Some(stream), Some(conn)) = (self.stream.take(), self.conn.take()) else {
            return;
        };
        let done = self
            .rth
            .block_on(async { tokio::time::timeout(FINISH_ON_DROP, stream.finish()).await });
        if let Ok(Ok(())) = done {
            self.pool.give(conn);
        }
    }
}

/// An upload from `offset`: `STOR` (after `REST`), or `APPE`; one data connection per chunk
/// between checkpoints.
struct FtpWriter {
    rth: tokio::runtime::Handle,
    pool: Arc<Pool>,
    conn: Option<Lease>,
    stream: Option<Transfer>,
    path: String,
    full: String,
    /// Bytes the server holds or is being sent.
    offset: u64,
    rest_stream: bool,
    /// A data connection was opened at least once (an empty file still needs one STOR).
    opened: bool,
    /// The server's file ends exactly at `offset`, so `APPE` continues at the right byte (false
    /// when resuming into a longer partial, which only `REST` can do).
    appe_ok: bool,
    /// FEAT lists `MFMT` (else vsftpd's `MDTM time path`).
    mfmt: bool,
    /// [`ConnConfig::can_pipeline`]: the time may wait for the rename.
    pipeline: bool,
}

impl FtpWriter {
    fn open_stream(&mut self) -> Result<()> {
        let Some(mut lease) = self.conn.take() else {
            return Err(RemoteError::refused(
                "write",
                &self.path,
                "the connection was lost earlier",
            ));
        };
        let (full, offset, rest, appe_ok) = (
            self.full.clone(),
            self.offset,
            self.rest_stream,
            self.appe_ok,
        );
        let r = on_runtime(&self.rth, async move {
            let conn = &mut lease.conn;
            let full = full.as_str();
            let r = async {
                if offset == 0 {
                    return timed(conn.put_with_stream(full)).await;
                }
                if rest {
                    conn.resume_transfer(offset as usize).await?;
                    match timed(conn.put_with_stream(full)).await {
                        Ok(s) => return Ok(s),
                        Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => {}
                        Err(e) => return Err(e),
                    }
                }
                // APPE continues at the server's end of file, which is `offset` when the caller's
                // SIZE said so, or after this writer's own confirmed chunks.
                if !appe_ok {
                    return Err(FtpError::UnexpectedResponse(suppaftp::types::Response::new(
                    Status::RequestFileActionIgnored,
                    format!("450 the server refused REST {offset}, and APPE would not resume there")
                        .into_bytes(),
                )));
                }
                timed(conn.append_with_stream(full)).await
            }
            .await;
            (lease, r)
        });
        let r = keep_lease(&mut self.conn, r);
        match r {
            Ok(s) => {
                self.stream = Some(s);
                self.opened = true;
                Ok(())
            }
            Err(e) => {
                if is_connection_failure(&e) {
                    self.conn = None;
                }
                Err(ftp_err("write", &self.path, e))
            }
        }
    }

    /// Close the data connection and wait for the server's verdict on it.
    fn finish_stream(&mut self) -> Result<()> {
        if let Some(s) = self.stream.take() {
            if let Err(e) = on_runtime(&self.rth, timed(s.finish())).and_then(|r| r) {
                self.conn = None;
                return Err(ftp_err("write", &self.path, e));
            }
            // The server confirmed every byte: its file ends at `offset` now.
            self.appe_ok = true;
        }
        Ok(())
    }
}

impl WriteHandle for FtpWriter {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.stream.is_none() {
            self.open_stream()?;
        }
        let stream = self.stream.as_mut().expect("opened above");
        let r = self.rth.block_on(async {
            tokio::time::timeout(COMMAND_TIMEOUT, stream.write_all(data))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the server took no data for 60s",
                    ))
                })
        });
        if let Err(e) = r {
            self.stream = None;
            self.conn = None;
            return Err(RemoteError::io("write", &self.path, e));
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.finish_stream()
    }

    /// Finish the upload, set the mtime on the same connection and describe the file without
    /// asking the server again: the `226` after the last byte says the server holds exactly
    /// the bytes sent (when it started from an empty file or one of known length, `appe_ok`),
    /// and the `MFMT`/`MDTM` reply that the time was set. The run's first upload checks this
    /// with `SIZE` and `MDTM`; a server whose answers differ (a time zone applied to the time
    /// set, a size off) is asked after every upload for the rest of the run. `None` (the caller
    /// sets the time and stats by path) when the length is not known or the server refuses
    /// to set times.
    fn set_mtime_and_stat(&mut self, mtime_ns: i64) -> Result<Option<Entry>> {
        if !self.opened && self.offset == 0 {
            self.open_stream()?; // an empty file still needs its STOR
        }
        self.finish_stream()?;
        if !self.appe_ok {
            return Ok(None);
        }
        let secs = mtime_ns.div_euclid(1_000_000_000);
        let trust = self.pool.written_trust.load(Ordering::Relaxed);
        if trust == TRUST_YES && self.pipeline {
            // The time goes out with the rename, in one flight (see [`Pool::pending_mtime`]).
            self.pool
                .pending_mtime
                .lock()
                .unwrap()
                .insert(self.full.clone(), secs);
            return Ok(Some(Entry::file(self.offset, secs_to_ns(secs))));
        }
        let cmd = set_time_cmd(self.mfmt, secs, &self.full);
        let (size, full) = (self.offset, self.full.clone());
        let Some(mut lease) = self.conn.take() else {
            return Ok(None);
        };
        let r = on_runtime(&self.rth, async move {
            let (conn, full) = (&mut lease.conn, full.as_str());
            let r = async {
                let set =
                    timed(conn.custom_command(cmd.as_str(), &[Status::File, Status::CommandOk]))
                        .await;
                match set {
                    Ok(reply) => {
                        // MFMT answers `213 Modify=YYYYMMDDHHMMSS; path`: the time it stored.
                        let set_to = reply_text(&reply)
                            .split_once("Modify=")
                            .and_then(|(_, v)| ftp_list::parse_timeval(v.split(';').next()?.trim()))
                            .unwrap_or(secs);
                        if trust == TRUST_YES {
                            return Ok(Some((size, set_to, true)));
                        }
                        let held = timed(conn.size(full)).await? as u64;
                        let t = timed(mdtm_secs(conn, full)).await?;
                        // A time deferred to the rename is not read back: trusted only where
                        // the server stores exactly the time sent.
                        Ok(Some((
                            held,
                            t,
                            held == size && t == set_to && set_to == secs,
                        )))
                    }
                    Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .await;
            (lease, r)
        });
        let r = keep_lease(&mut self.conn, r);
        match r {
            Ok(None) => Ok(None),
            Ok(Some((held, t, agrees))) => {
                if trust == TRUST_UNKNOWN {
                    let now = if agrees { TRUST_YES } else { TRUST_NO };
                    if self.pool.written_trust.swap(now, Ordering::Relaxed) == TRUST_UNKNOWN
                        && !agrees
                    {
                        tracing::info!(
                            path = %self.path,
                            "ftp: after an upload the server reports {held} bytes and time {t}, \
                             not the {size} bytes sent and the time {secs} set; every upload \
                             is checked with SIZE and MDTM for the rest of the run"
                        );
                    }
                }
                Ok(Some(Entry::file(held, secs_to_ns(t))))
            }
            Err(e) => {
                if is_connection_failure(&e) {
                    self.conn = None;
                }
                Err(ftp_err("set mtime", &self.path, e))
            }
        }
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        if !self.opened && self.offset == 0 {
            self.open_stream()?;
        }
        self.finish_stream()?;
        if let Some(c) = self.conn.take() {
            self.pool.give(c);
        }
        Ok(())
    }
}

impl Drop for FtpWriter {
    fn drop(&mut self) {
        self.stream = None;
        self.conn = None;
    }
}

impl Remote for FtpRemote {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_copy: false,
            set_mtime: self.can_set_mtime.load(Ordering::Relaxed),
            content_hash: false,
            resume_write: true,
            case_insensitive: false,
            inodes: false,
            // MLSD and MDTM give seconds; plain LIST only minutes.
            mtime_precision_ns: if self.feat.mlsd || self.feat.mdtm {
                1_000_000_000
            } else {
                60_000_000_000
            },
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn root_status(&self) -> RootStatus {
        match self.is_dir_full(&self.root) {
            Ok(true) => {}
            Ok(false) => {
                return match self.size_mtime("stat", "", &self.root) {
                    Ok(Some(_)) => RootStatus::NotDir,
                    Ok(None) => RootStatus::Missing,
                    Err(e) => RootStatus::Unreadable(e.to_string()),
                }
            }
            Err(e) => return RootStatus::Unreadable(e.to_string()),
        }
        match self.list_raw("") {
            Ok(_) => RootStatus::Dir,
            Err(e) => RootStatus::Unreadable(e.to_string()),
        }
    }

    fn create_root(&self) -> Result<()> {
        let mut prefix = String::new();
        for part in self.root.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.mkdir_one("mkdir", "", &prefix)?;
            self.known.forget("");
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Listing> {
        let mut out = self.list_raw(dir)?;
        if !self.feat.mlsd && self.feat.mdtm {
            // LIST times are minutes (or days): ask each file's exact time.
            let dir_full = self.full("list", dir)?;
            let files: Vec<(usize, String)> = out
                .entries
                .iter()
                .enumerate()
                // Hostile names are refused by the scan: never send them to the server.
                .filter(|(_, (n, e))| e.kind == Kind::File && super::check_name(n).is_ok())
                .map(|(i, (n, _))| (i, join_server(&dir_full, n)))
                .collect();
            if !files.is_empty() {
                let times = self.mdtm_many(dir, files)?;
                for (i, t) in times {
                    if let Some(t) = t {
                        out.entries[i].1.mtime = secs_to_ns(t);
                    }
                }
            }
        }
        for (name, e) in &out.entries {
            if e.kind == Kind::Dir {
                self.checked_dirs.insert(super::join(dir, name));
            }
        }
        if out.bad_names.is_empty() {
            let not_files = out
                .entries
                .iter()
                .filter(|(_, e)| e.kind != Kind::File)
                .map(|(n, _)| n.clone())
                .collect();
            self.known.set(dir, not_files);
        }
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Option<Entry>> {
        let full = self.full("stat", path)?;
        if path.is_empty() {
            return Ok(self.is_dir_full(&full)?.then_some(Entry {
                kind: Kind::Dir,
                size: 0,
                mtime: 0,
                inode: None,
                hash: None,
            }));
        }
        if self.feat.mlsd {
            let r = self.with_conn(async |c| timed(c.mlst(Some(&full))).await)?;
            return match r {
                Ok(line) => match ftp_list::parse_mlsd_line(&line) {
                    ListLine::Entry(e) => Ok(Some(Entry {
                        kind: e.kind,
                        size: e.size,
                        mtime: secs_to_ns(e.mtime.unwrap_or(0)),
                        inode: None,
                        hash: None,
                    })),
                    _ => Ok(None),
                },
                Err(e) if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) => Ok(None),
                Err(e) => Err(ftp_err("stat", path, e)),
            };
        }
        if !self.feat.size {
            return self.stat_by_list(path);
        }
        if let Some((size, mtime)) = self.size_mtime("stat", path, &full)? {
            return Ok(Some(Entry::file(size, secs_to_ns(mtime))));
        }
        if self.known.is_missing_if_no_file(path) {
            return Ok(None);
        }
        Ok(self.is_dir_full(&full)?.then_some(Entry {
            kind: Kind::Dir,
            size: 0,
            mtime: 0,
            inode: None,
            hash: None,
        }))
    }

    fn open_read(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        let full = self.full("read", path)?;
        let (mut conn, _) = self.take()?;
        let r = self.rth.block_on(async {
            if offset > 0 {
                conn.resume_transfer(offset as usize).await?;
            }
            timed(conn.retr_as_stream(&full)).await
        });
        match r {
            Ok(stream) => Ok(Box::new(FtpReader {
                rth: self.rth.clone(),
                pool: self.pool.clone(),
                conn: Some(conn),
                stream: Some(stream),
                path: path.to_string(),
            })),
            Err(e) => {
                if !is_connection_failure(&e) {
                    self.pool.give(conn);
                }
                if reply_code(&e) == Some(550) && self.stat(path)?.is_none() {
                    return Err(RemoteError::NotFound {
                        op: "read",
                        path: path.to_string(),
                    });
                }
                Err(ftp_err("read", path, e))
            }
        }
    }

    fn open_write(&self, path: &str, offset: u64) -> Result<Box<dyn WriteHandle>> {
        let full = self.full("write", path)?;
        self.pool.pending_mtime.lock().unwrap().remove(&full);
        let mut appe_ok = offset == 0;
        if offset > 0 {
            // Resume from what the server holds, never from what we think we sent.
            let held = self.size_mtime("write", path, &full)?.map(|(s, _)| s);
            appe_ok = held == Some(offset);
            match held {
                Some(h) if h == offset || (h > offset && self.feat.rest_stream) => {}
                Some(h) => {
                    return Err(RemoteError::refused(
                        "write",
                        path,
                        format!("cannot resume at byte {offset}: the server holds {h} bytes"),
                    ))
                }
                None => {
                    return Err(RemoteError::NotFound {
                        op: "write",
                        path: path.to_string(),
                    })
                }
            }
        }
        let (conn, _) = self.take()?;
        Ok(Box::new(FtpWriter {
            rth: self.rth.clone(),
            pool: self.pool.clone(),
            conn: Some(conn),
            stream: None,
            path: path.to_string(),
            full,
            offset,
            rest_stream: self.feat.rest_stream,
            mfmt: self.feat.mfmt,
            pipeline: self.pool.cfg.can_pipeline(),
            opened: false,
            appe_ok,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.full("rename", from)?, self.full("rename", to)?);
        self.flush_mtime(from, &f)?;
        // A file renamed (a partial into place) adds no folder anywhere: what is known stays.
        let plain_file = self.known.is_missing_if_no_file(from);
        let r = self.with_conn(async |c| timed(c.rename(&f, &t)).await)?;
        if let Err(e) = r {
            // Servers that refuse to replace: remove a file target, then rename again.
            match (self.stat(from)?, self.stat(to)?) {
                (Some(s), Some(d)) if s.is_file() && d.is_file() => {
                    self.cmd("rename", to, async |c| timed(c.rm(&t)).await)?;
                    self.cmd("rename", from, async |c| timed(c.rename(&f, &t)).await)?;
                }
                (None, _) => {
                    return Err(RemoteError::NotFound {
                        op: "rename",
                        path: from.to_string(),
                    })
                }
                _ => return Err(ftp_err("rename", from, e)),
            }
        }
        self.checked_dirs.forget(from);
        if !plain_file {
            self.known.forget(from);
            self.known.forget(to);
        }
        Ok(())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let full = self.full("remove", path)?;
        self.pool.pending_mtime.lock().unwrap().remove(&full);
        let r = self.with_conn(async |c| timed(c.rm(&full)).await)?;
        match r {
            Ok(()) => Ok(()),
            Err(e) if reply_code(&e) == Some(550) && self.stat(path)?.is_none() => {
                Err(RemoteError::NotFound {
                    op: "remove",
                    path: path.to_string(),
                })
            }
            Err(e) => Err(ftp_err("remove", path, e)),
        }
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        let full = self.full("rmdir", path)?;
        let r = self.with_conn(async |c| timed(c.rmdir(&full)).await)?;
        match r {
            Ok(()) => {
                self.checked_dirs.forget(path);
                self.known.forget(path);
                Ok(())
            }
            Err(e) if reply_code(&e) == Some(550) && !self.is_dir_full(&full)? => {
                Err(RemoteError::NotFound {
                    op: "rmdir",
                    path: path.to_string(),
                })
            }
            Err(e) => Err(ftp_err("rmdir", path, e)),
        }
    }

    fn mkdir_all(&self, dir: &str) -> Result<()> {
        self.checked_dirs.walk(dir, |prefix| {
            let full = self.full("mkdir", prefix)?;
            if self.mkdir_one("mkdir", dir, &full)? {
                // Made by this call, so empty; its parent holds a folder more now.
                self.known.forget(prefix);
                self.known.set(prefix, Default::default());
            }
            Ok(())
        })
    }

    fn set_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        if !self.can_set_mtime.load(Ordering::Relaxed) {
            return Ok(());
        }
        let full = self.full("set mtime", path)?;
        self.pool.pending_mtime.lock().unwrap().remove(&full);
        self.set_mtime_full(path, &full, mtime_ns.div_euclid(1_000_000_000))
    }

    /// A new small file in one runtime task ([`put_new_wire`]) where [`Self::rename_new`] would
    /// pipeline and the run's first upload showed that the server keeps what it is sent and
    /// the time set (so the `226` and the time's reply describe the file); otherwise the steps.
    fn put_new(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<PutNew> {
        let Some((cmds, secs)) = self.put_wire_cmds(path, partial, mtime_ns)? else {
            return super::put_new_steps(self, path, partial, data, mtime_ns);
        };
        let epsv = self.pool.cfg.epsv.load(Ordering::Relaxed);
        let cmds = Arc::new(cmds);
        let data: Arc<[u8]> = data.into();
        let r = self.with_conn_spawned(|mut lease| {
            let (cmds, data) = (cmds.clone(), data.clone());
            async move {
                let r = put_new_wire(&mut lease.conn, epsv, &data, &cmds).await;
                (lease, r)
            }
        });
        self.put_wire_outcome(partial, data.len(), secs, r)
    }

    fn put_new_batching(&self) -> Option<Batching> {
        let c = &self.pool.cfg;
        (c.can_pipeline() && !c.active && self.feat.size && !self.feat.mlsd).then_some(Batching {
            files: PUT_BATCH,
            batches: self.batches,
            max_file: PUT_BATCH_MAX_FILE,
        })
    }

    /// The files' [`put_new_wire`]s one after another on one pooled connection, in one runtime
    /// task. Files the one-task path does not take (before the run's first upload showed what
    /// the server keeps, say) go through [`Self::put_new`]. When the connection is lost, the
    /// file it was lost on and those after it come back as errors, and the caller puts each
    /// of them again on its own (a new connection, the error in its usual form).
    fn put_new_many(&self, files: &[NewFile<'_>]) -> Vec<Result<PutNew>> {
        let mut out: Vec<Option<Result<PutNew>>> = files.iter().map(|_| None).collect();
        // (index, commands, data, time) of the files on the wire.
        let mut wire = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            match self.put_wire_cmds(f.path, f.partial, f.mtime_ns) {
                Ok(Some((cmds, secs))) => wire.push((i, cmds, Arc::<[u8]>::from(f.data), secs)),
                Ok(None) => out[i] = Some(self.put_new(f.path, f.partial, f.data, f.mtime_ns)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !wire.is_empty() {
            let epsv = self.pool.cfg.epsv.load(Ordering::Relaxed);
            let jobs: Arc<Vec<WireJob>> = Arc::new(
                wire.iter()
                    .map(|(_, cmds, data, _)| (cmds.clone(), data.clone()))
                    .collect(),
            );
            let mut results = self.put_batch_on_one(epsv, jobs).into_iter();
            for (i, _, data, secs) in wire {
                out[i] = Some(match results.next() {
                    Some(r) => self.put_wire_outcome(files[i].partial, data.len(), secs, r),
                    // Never sent: no partial to remove.
                    None => Err(conn_err("the batch's connection was lost before this file")),
                });
            }
        }
        out.into_iter()
            .map(|o| o.expect("every file has an outcome"))
            .collect()
    }
    /// Where the server stores what it is sent and commands can be pipelined, and the target's
    /// folder is known (so a refused `SIZE` means "missing"): the deferred time (`MDTM`), the
    /// look at the target (`SIZE`) and `RNFR` go out in one flight, and `RNTO` follows only
    /// when the time was set and nothing is at the target: two round trips where the default
    /// takes four. Otherwise the default, after setting the deferred time.
    fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        let (f, t) = (self.full("rename", from)?, self.full("rename", to)?);
        if !(self.pool.cfg.can_pipeline()
            && self.feat.size
            && !self.feat.mlsd
            && self.known.is_missing_if_no_file(to)
            && self.known.is_missing_if_no_file(from))
        {
            self.flush_mtime(from, &f)?;
            if self.stat(to)?.is_some() {
                return Ok(false);
            }
            return self.rename(from, to).map(|()| true);
        }
        let set_time = self
            .pool
            .pending_mtime
            .lock()
            .unwrap()
            .remove(&f)
            .map(|secs| set_time_cmd(self.feat.mfmt, secs, &f));
        let (size_cmd, rnfr_cmd) = (format!("SIZE {t}"), format!("RNFR {f}"));
        let r = self.with_conn_spawned(|mut lease| {
            let (set_time, size_cmd, rnfr_cmd) =
                (set_time.clone(), size_cmd.clone(), rnfr_cmd.clone());
            let rnto_cmd = format!("RNTO {t}");
            async move {
                let r = rename_new_wire(
                    &mut lease.conn,
                    set_time.as_deref(),
                    &size_cmd,
                    &rnfr_cmd,
                    &rnto_cmd,
                )
                .await;
                (lease, r)
            }
        })?;
        match r.map_err(|e| ftp_err("rename", from, e))? {
            RenameNew::Renamed => {
                self.checked_dirs.forget(from);
                Ok(true)
            }
            RenameNew::Exists => Ok(false),
            RenameNew::MtimeRefused(e) => Err(ftp_err("set mtime", from, e)),
            RenameNew::Refused(e) => {
                if self.stat(from)?.is_none() {
                    return Err(RemoteError::NotFound {
                        op: "rename",
                        path: from.to_string(),
                    });
                }
                Err(ftp_err("rename", from, e))
            }
        }
    }
}

impl FtpRemote {
    /// Set the time an upload of `path` deferred to its rename (see [`Pool::pending_mtime`]).
    fn flush_mtime(&self, path: &str, full: &str) -> Result<()> {
        let pending = self.pool.pending_mtime.lock().unwrap().remove(full);
        match pending {
            Some(secs) => self.set_mtime_full(path, full, secs),
            None => Ok(()),
        }
    }
}

/// A connection-level failure seen among pipelined replies, to hand on (`FtpError` is not
/// `Clone`).
fn clone_failure(e: &FtpError) -> FtpError {
    match e {
        FtpError::ConnectionError(io) => {
            FtpError::ConnectionError(std::io::Error::new(io.kind(), io.to_string()))
        }
        FtpError::UnexpectedResponse(r) => FtpError::UnexpectedResponse(r.clone()),
        FtpError::SecureError(m) => FtpError::SecureError(m.clone()),
        _ => FtpError::BadResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that spent its cooperative budget (many commands whose replies were already
    /// there) still gets to write and read for the next command: suppaftp's unflushed TLS
    /// write would otherwise stay buffered for good (see [`timed`]).
    #[test]
    fn commands_run_outside_the_cooperative_budget() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (spent, inside) = rt.block_on(async {
            // Each call takes one unit (and would yield only once none is left).
            while tokio::task::coop::has_budget_remaining() {
                tokio::task::consume_budget().await;
            }
            let spent = !tokio::task::coop::has_budget_remaining();
            let inside = timed(async { Ok(tokio::task::coop::has_budget_remaining()) })
                .await
                .unwrap();
            (spent, inside)
        });
        assert!(spent, "the budget was not spent before the command");
        assert!(inside, "the command ran with the spent budget");
    }

    #[test]
    fn replies_that_end_the_session_count_as_a_lost_connection() {
        use suppaftp::types::Response;
        let reply = |code: u32, text: &str| {
            FtpError::UnexpectedResponse(Response::new(Status::from(code), text.into()))
        };
        assert!(is_connection_failure(&reply(
            500,
            "500 OOPS: vsf_sysutil_bind\r\n"
        )));
        assert!(is_connection_failure(&reply(421, "421 Timeout.\r\n")));
        assert!(!is_connection_failure(&reply(
            500,
            "500 Unknown command.\r\n"
        )));
        assert!(!is_connection_failure(&reply(
            550,
            "550 Permission denied.\r\n"
        )));
    }

    #[test]
    fn passive_replies_give_the_data_port() {
        assert_eq!(
            passive_port("227 Entering Passive Mode (127,0,0,1,195,80)."),
            Some(195 * 256 + 80)
        );
        assert_eq!(passive_port("227 =(10, 0, 0, 9, 4, 1)"), Some(1025));
        assert_eq!(
            passive_port("229 Entering Extended Passive Mode (|||40001|)"),
            Some(40001)
        );
        for bad in [
            "227 Entering Passive Mode",
            "227 (127,0,0,1,300,1)",
            "227 (127,0,0,1,80)",
            "229 (|||x|)",
            "229 (|||40001)",
        ] {
            assert_eq!(passive_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn roots_and_paths() {
        assert_eq!(normalize_root("/srv/x/"), "/srv/x");
        assert_eq!(normalize_root("/"), "/");
        assert_eq!(normalize_root(""), "");
        assert_eq!(join_server("/", "a/b"), "/a/b");
        assert_eq!(join_server("/srv", "a"), "/srv/a");
        assert_eq!(join_server("/srv", ""), "/srv");
    }

    #[test]
    fn known_folders_say_missing_only_for_what_cannot_be_a_folder() {
        let k = KnownDirs::default();
        assert!(!k.is_missing_if_no_file("d/new.txt"), "nothing known yet");
        k.set("d", ["sub".to_string(), "link".to_string()].into());
        k.set("d/sub", Default::default());
        assert!(k.is_missing_if_no_file("d/new.txt"));
        assert!(!k.is_missing_if_no_file("d/sub"));
        assert!(!k.is_missing_if_no_file("d/link"));
        assert!(k.is_missing_if_no_file("d/sub/x"));
        assert!(!k.is_missing_if_no_file("e/x"), "e was never listed");
        assert!(!k.is_missing_if_no_file(""), "the root is never missing");
        // A folder renamed or removed: it, its parent and what is below are unknown again.
        k.forget("d/sub");
        assert!(!k.is_missing_if_no_file("d/new.txt"));
        assert!(!k.is_missing_if_no_file("d/sub/x"));
    }

    #[test]
    fn encodings() {
        use suppaftp::Encoding;
        assert_eq!(NameEncoding::parse("UTF-8"), Some(NameEncoding::Utf8));
        assert_eq!(NameEncoding::parse("latin1"), Some(NameEncoding::Latin1));
        assert_eq!(NameEncoding::parse("ebcdic"), None);
        assert_eq!(Latin1.decode(b"caf\xe9"), "café");
        assert_eq!(Latin1.encode("café").unwrap(), b"caf\xe9");
        assert!(Latin1.encode("€").is_err());
    }

    #[test]
    fn tls_problems_are_spelled_out() {
        let cfg = ConnConfig {
            host: "h".into(),
            port: 21,
            user: "u".into(),
            password: String::new(),
            tls: None,
            tls13: AtomicBool::new(false),
            tls_ca_file: Some("/ca.pem".into()),
            active: false,
            encoding: NameEncoding::Utf8,
            epsv: AtomicBool::new(false),
            utf8: AtomicBool::new(false),
        };
        let m = explain_tls("invalid peer certificate: UnknownIssuer", &cfg);
        assert!(
            m.contains("not signed by the CA in tls_ca_file /ca.pem"),
            "{m}"
        );
        let m = explain_tls("invalid peer certificate: NotValidForName", &cfg);
        assert!(m.contains("not valid for \"h\""), "{m}");
    }
}
