//! Plain data describing a configured job: no I/O here.
//!
//! `config.rs` turns TOML into these values after validating every key; the planner and the
//! executor only ever see validated values.

use std::path::PathBuf;
use std::time::Duration;

/// Which way files travel and what happens to deletions (SPEC "Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Download,
    Upload,
    Bidirectional,
    Mirror,
    MirrorUpload,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Download,
        Mode::Upload,
        Mode::Bidirectional,
        Mode::Mirror,
        Mode::MirrorUpload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Download => "download",
            Mode::Upload => "upload",
            Mode::Bidirectional => "bidirectional",
            Mode::Mirror => "mirror",
            Mode::MirrorUpload => "mirror-upload",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Does this mode ever change the local side?
    pub fn writes_local(self) -> bool {
        matches!(self, Mode::Download | Mode::Mirror | Mode::Bidirectional)
    }

    /// Does this mode ever change the remote side?
    pub fn writes_remote(self) -> bool {
        matches!(
            self,
            Mode::Upload | Mode::MirrorUpload | Mode::Bidirectional
        )
    }

    pub fn is_mirror(self) -> bool {
        matches!(self, Mode::Mirror | Mode::MirrorUpload)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Local,
    Sftp,
    Ftp,
    Ftps,
    Smb,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Sftp,
        Protocol::Ftp,
        Protocol::Ftps,
        Protocol::Smb,
        Protocol::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Local => "local",
            Protocol::Sftp => "sftp",
            Protocol::Ftp => "ftp",
            Protocol::Ftps => "ftps",
            Protocol::Smb => "smb",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Local => None,
            Protocol::Sftp => Some(22),
            Protocol::Ftp | Protocol::Ftps => Some(21),
            Protocol::Smb => Some(445),
        }
    }
}

/// Conflict policy for `bidirectional` (SPEC "Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictPolicy {
    Newer,
    Local,
    Remote,
    KeepBoth,
}

impl ConflictPolicy {
    pub const ALL: [ConflictPolicy; 4] = [
        ConflictPolicy::Newer,
        ConflictPolicy::Local,
        ConflictPolicy::Remote,
        ConflictPolicy::KeepBoth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Newer => "newer",
            ConflictPolicy::Local => "local",
            ConflictPolicy::Remote => "remote",
            ConflictPolicy::KeepBoth => "keep-both",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictPolicy> {
        ConflictPolicy::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compare {
    /// size + mtime
    Fast,
    /// content hash (blake3)
    Secure,
}

impl Compare {
    pub fn as_str(self) -> &'static str {
        match self {
            Compare::Fast => "fast",
            Compare::Secure => "secure",
        }
    }

    pub fn parse(s: &str) -> Option<Compare> {
        match s {
            "fast" => Some(Compare::Fast),
            "secure" => Some(Compare::Secure),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Interval,
    Cron,
    Watch,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Interval => "interval",
            Trigger::Cron => "cron",
            Trigger::Watch => "watch",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        match s {
            "manual" => Some(Trigger::Manual),
            "interval" => Some(Trigger::Interval),
            "cron" => Some(Trigger::Cron),
            "watch" => Some(Trigger::Watch),
            _ => None,
        }
    }
}

/// `max_delete`: an absolute count or a percentage of the files in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    Count(u64),
    Percent(u32),
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Where a password comes from. The secret itself is only read when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    None,
    Env(String),
    File(PathBuf),
    /// Inline in the config (discouraged); never printed.
    Inline(String),
}

/// A validated job.
/// Default `debounce` of `watch` jobs.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub protocol: Protocol,
    pub mode: Mode,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Secret,
    pub private_key: Option<PathBuf>,
    pub private_key_passphrase_env: Option<String>,
    pub known_hosts: Option<PathBuf>,
    pub share: Option<String>,
    pub domain: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    /// FTP/FTPS: active mode (`PORT`) instead of passive.
    pub ftp_active: bool,
    /// FTP/FTPS: the servers's name encoding (`utf-8` when unset, or `latin1`).
    pub ftp_encoding: Option<String>,
    pub remote_path: String,
    pub local_path: PathBuf,
    pub trigger: Trigger,
    pub interval: Option<Duration>,
    pub cron: Option<String>,
    pub enabled: bool,
    pub dry_run: bool,
    pub delete_orphans: bool,
    pub conflict: ConflictPolicy,
    pub compare: Compare,
    pub trash: bool,
    pub trash_retention_days: u32,
    pub mtime_tolerance: Duration,
    pub max_delete: MaxDelete,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub transfers: usize,
    pub chunk_size: u64,
    /// `watch`: how long a file still being written must be quiet before it is sent.
    pub debounce: Duration,
}

impl Job {
    /// A job with every default filled in, for tests and examples.
    pub fn local(name: &str, local_path: PathBuf, remote_path: &str, mode: Mode) -> Job {
        Job {
            name: name.to_string(),
            protocol: Protocol::Local,
            mode,
            host: None,
            port: None,
            username: None,
            password: Secret::None,
            private_key: None,
            private_key_passphrase_env: None,
            known_hosts: None,
            share: None,
            domain: None,
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
            ftp_active: false,
            ftp_encoding: None,
            remote_path: remote_path.to_string(),
            local_path,
            trigger: Trigger::Manual,
            interval: None,
            cron: None,
            enabled: true,
            dry_run: false,
            delete_orphans: false,
            conflict: ConflictPolicy::Newer,
            compare: Compare::Fast,
            trash: true,
            trash_retention_days: 30,
            mtime_tolerance: Duration::from_secs(1),
            max_delete: MaxDelete::Percent(50),
            include: Vec::new(),
            exclude: Vec::new(),
            transfers: 4,
            chunk_size: 4 << 20,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// `[agent]` settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    pub max_parallel_jobs: usize,
    pub log_retention_days: u32,
}
