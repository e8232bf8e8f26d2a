//! TOML configuration → validated [`Job`] values (SPEC "Configuration").
//!
//! Two stages, like ripgrep's low/high args: the file is parsed with span information
//! ([`toml::de::DeTable`]), then every key is checked and turned into plain data. Nothing past
//! this module ever sees an unvalidated value, and every error names the file, the line and
//! column of the offending key, and the key itself:
//!
//! ```text
//! /etc/omnisync/omnisync.toml:12:1: unknown key `intervall` in [[job]] "foo" (did you mean `interval`?)
//! ```
//!
//! Relative paths in the file are resolved against the directory holding the file (the agent
//! runs with `/` as its working directory under systemd, so "relative to the cwd" would be a
//! trap); a leading `~` expands to `$HOME`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::job::{
    AgentSettings, Compare, ConflictPolicy, Job, MaxDelete, Mode, Protocol, Secret, Trigger,
};

/// Every key accepted in `[agent]`. The last two are defaults for the job keys of the same name.
pub const AGENT_KEYS: &[&str] = &[
    "state_dir",
    "max_parallel_jobs",
    "log_retention_days",
    "trash_retention_days",
    "mtime_tolerance",
];

/// Every key accepted in a `[[job]]` table, in SPEC order. This is the one list: unknown-key
/// errors and their "did you mean" suggestions come from it.
pub const JOB_KEYS: &[&str] = &[
    "name",
    "protocol",
    "mode",
    "host",
    "port",
    "username",
    "password",
    "password_env",
    "password_file",
    "private_key",
    "private_key_passphrase_env",
    "known_hosts",
    "share",
    "domain",
    "tls_ca_file",
    "tls_insecure_skip_verify",
    "ftp_active",
    "ftp_encoding",
    "remote_path",
    "local_path",
    "trigger",
    "interval",
    "cron",
    "enabled",
    "dry_run",
    "delete_orphans",
    "conflict",
    "compare",
    "trash",
    "trash_retention_days",
    "mtime_tolerance",
    "max_delete",
    "include",
    "exclude",
    "transfers",
    "chunk_size",
    // Reserved for the watcher's event coalescing window; validated, not stored yet.
    "debounce",
];

/// Top-level sections.
const SECTIONS: &[&str] = &["agent", "job"];

/// Reconcile period of a `watch` job that sets neither `interval` nor `cron` (SPEC "Triggers").
pub const DEFAULT_WATCH_RECONCILE: Duration = Duration::from_secs(60 * 60);

/// Smallest accepted `chunk_size`: below this, per-chunk checkpoints cost more than they save.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;

const FILE_NAME: &str = "omnisync.toml";
const SYSTEM_CONFIG: &str = "/etc/omnisync/omnisync.toml";

/// A loaded, fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub agent: AgentSettings,
    /// In file order.
    pub jobs: Vec<Job>,
}

impl Config {
    /// The job called `name`, if any.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Everything that can go wrong finding, reading or validating the config. Each variant's
/// `Display` is a complete message for the user (they all map to exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named file (`--config`, `$OMNISYNC_CONFIG`) does not exist.
    #[error("config file {} not found", path.display())]
    NotFound { path: PathBuf },

    /// None of the default locations holds a config file.
    #[error(
        "no config file found (looked in {}); create one, set $OMNISYNC_CONFIG or pass --config PATH",
        display_paths(searched)
    )]
    NoConfigFile { searched: Vec<PathBuf> },

    /// The file exists but cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// Valid TOML, but a key is unknown, missing, of the wrong type or has a bad value.
    /// `message` already names the key and its section.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Finding and loading
// ---------------------------------------------------------------------------------------------

/// Config file lookup per SPEC: `explicit` (`--config`), else `$OMNISYNC_CONFIG`, else
/// `$XDG_CONFIG_HOME/omnisync/omnisync.toml` (default `~/.config/omnisync/omnisync.toml`), else
/// `/etc/omnisync/omnisync.toml`.
///
/// An explicit path or `$OMNISYNC_CONFIG` is returned even when missing (then [`load`] fails
/// with [`ConfigError::NotFound`] naming it). Otherwise the first default location that exists
/// wins; when none does, the error lists every place looked.
pub fn find_config(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    find_config_with(explicit, |k| std::env::var_os(k), |p| p.exists())
}

fn find_config_with(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = env("OMNISYNC_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    // XDG Base Directory spec: a relative $XDG_CONFIG_HOME is invalid and ignored.
    let xdg = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let home = env("HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = xdg.or_else(|| home.map(|h| h.join(".config"))) {
        candidates.push(dir.join("omnisync").join(FILE_NAME));
    }
    candidates.push(PathBuf::from(SYSTEM_CONFIG));
    match candidates.iter().find(|p| exists(p)) {
        Some(p) => Ok(p.clone()),
        None => Err(ConfigError::NoConfigFile {
            searched: candidates,
        }),
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    parse(path, &text)
}

/// Validates config `text` as if read from `path` (used in messages and to resolve relative
/// paths). Touches no files; reads `$HOME` / `$XDG_STATE_HOME` for `~` and defaults.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let src = Src {
        path,
        text,
        base_dir: base_dir_of(path),
        home: std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from),
    };
    let doc = DeTable::parse(text).map_err(|e| src.syntax(&e))?;
    let root = doc.get_ref();

    // Top level: only [agent] and [[job]], checked in file order.
    let mut top: Vec<_> = root.iter().collect();
    top.sort_by_key(|(k, _)| k.span().start);
    let mut agent_table = None;
    let mut job_values = None;
    for (key, value) in top {
        match key.get_ref().as_ref() {
            "agent" => match value.get_ref() {
                DeValue::Table(t) => agent_table = Some((t, value.span())),
                DeValue::Array(_) => {
                    return Err(src.invalid(
                        key.span(),
                        "agent",
                        "[agent] is a single table: write [agent], not [[agent]]".into(),
                    ))
                }
                other => {
                    return Err(src.invalid(
                        key.span(),
                        "agent",
                        format!(
                            "`agent` must be the [agent] table, found {}",
                            type_name(other)
                        ),
                    ))
                }
            },
            "job" => match value.get_ref() {
                DeValue::Array(a) => job_values = Some(a),
                DeValue::Table(_) => {
                    return Err(src.invalid(
                        key.span(),
                        "job",
                        "jobs are an array of tables: write [[job]], not [job]".into(),
                    ))
                }
                other => {
                    return Err(src.invalid(
                        key.span(),
                        "job",
                        format!(
                            "`job` must be an array of [[job]] tables, found {}",
                            type_name(other)
                        ),
                    ))
                }
            },
            name => return Err(unknown_top_level(&src, key.span(), name, value.get_ref())),
        }
    }

    let (agent, defaults) = match agent_table {
        Some((table, span)) => {
            let sec = Section {
                src: &src,
                table,
                label: "[agent]".into(),
                span,
            };
            parse_agent(&sec)?
        }
        None => (
            AgentSettings {
                state_dir: default_state_dir(&|k| std::env::var_os(k)),
                max_parallel_jobs: 4,
                log_retention_days: 30,
            },
            JobDefaults::default(),
        ),
    };

    let mut jobs = Vec::new();
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    for (index, value) in job_values.into_iter().flatten().enumerate() {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(src.invalid(
                value.span(),
                "job",
                format!(
                    "job #{} must be a table (written [[job]]), found {}",
                    index + 1,
                    type_name(value.get_ref())
                ),
            ));
        };
        let label = match table.get("name").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => format!("[[job]] {:?}", s.as_ref()),
            _ => format!("[[job]] #{}", index + 1),
        };
        let sec = Section {
            src: &src,
            table,
            label,
            span: value.span(),
        };
        let job = parse_job(&sec, &defaults)?;
        let name_span = sec.key_span("name");
        if let Some(first) = seen.get(&job.name) {
            let (line, _) = src.line_col(first.start);
            return Err(sec.at(
                "name",
                format!(
                    "duplicate job name {:?} (first used on line {line}); job names must be unique",
                    job.name
                ),
            ));
        }
        seen.insert(job.name.clone(), name_span);
        jobs.push(job);
    }

    Ok(Config {
        path: path.to_path_buf(),
        agent,
        jobs,
    })
}

/// Directory that relative paths in the file are resolved against.
fn base_dir_of(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

fn default_state_dir(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(x) = env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return x.join("omnisync");
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/omnisync"),
        // A system service without $HOME (root under systemd): the FHS place for state.
        None => PathBuf::from("/var/lib/omnisync"),
    }
}

fn unknown_top_level(
    src: &Src<'_>,
    span: Range<usize>,
    name: &str,
    value: &DeValue,
) -> ConfigError {
    let mut msg = if matches!(value, DeValue::Table(_) | DeValue::Array(_)) {
        format!("unknown section `{name}`; the sections are [agent] and [[job]]")
    } else {
        format!("unknown top-level key `{name}`")
    };
    if let Some(s) = suggest(name, SECTIONS) {
        let _ = write!(
            msg,
            " (did you mean {}?)",
            if s == "job" { "[[job]]" } else { "[agent]" }
        );
    } else if JOB_KEYS.contains(&name) {
        msg.push_str(" (job keys go below a [[job]] header)");
    } else if AGENT_KEYS.contains(&name) {
        msg.push_str(" (agent keys go below the [agent] header)");
    }
    src.invalid(span, name, msg)
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

/// Job-key defaults settable in `[agent]`.
struct JobDefaults {
    trash_retention_days: u32,
    mtime_tolerance: Duration,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            trash_retention_days: 30,
            mtime_tolerance: Duration::from_secs(1),
        }
    }
}

fn parse_agent(sec: &Section<'_, '_>) -> Result<(AgentSettings, JobDefaults), ConfigError> {
    sec.check_keys(AGENT_KEYS, JOB_KEYS, "a [[job]]")?;
    let state_dir = match sec.path("state_dir")? {
        Some(p) => p,
        None => default_state_dir(&|k| std::env::var_os(k)),
    };
    let max_parallel_jobs = sec.int("max_parallel_jobs", 1, 1024)?.unwrap_or(4) as usize;
    let log_retention_days = sec
        .int("log_retention_days", 0, u32::MAX as i64)?
        .unwrap_or(30) as u32;
    let base = JobDefaults::default();
    let defaults = JobDefaults {
        trash_retention_days: sec
            .int("trash_retention_days", 0, u32::MAX as i64)?
            .map_or(base.trash_retention_days, |v| v as u32),
        mtime_tolerance: sec
            .duration("mtime_tolerance")?
            .unwrap_or(base.mtime_tolerance),
    };
    Ok((
        AgentSettings {
            state_dir,
            max_parallel_jobs,
            log_retention_days,
        },
        defaults,
    ))
}

/// Protocols a protocol-specific key applies to; `None` = every protocol.
fn key_protocols(key: &str) -> Option<&'static [Protocol]> {
    use Protocol::*;
    match key {
        "host" | "port" | "username" | "password" | "password_env" | "password_file" => {
            Some(&[Sftp, Ftp, Ftps, Smb])
        }
        "private_key" | "private_key_passphrase_env" | "known_hosts" => Some(&[Sftp]),
        "share" | "domain" => Some(&[Smb]),
        "tls_ca_file" | "tls_insecure_skip_verify" => Some(&[Ftps]),
        "ftp_active" | "ftp_encoding" => Some(&[Ftp, Ftps]),
        _ => None,
    }
}

fn parse_job(sec: &Section<'_, '_>, defaults: &JobDefaults) -> Result<Job, ConfigError> {
    sec.check_keys(JOB_KEYS, AGENT_KEYS, "[agent]")?;

    // --- identity, protocol, mode
    let name = sec.require("name", sec.nonempty_string("name")?)?;
    if name == "." || name == ".." {
        return Err(sec.at("name", format!("{name:?} is not a valid job name")));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(sec.at(
            "name",
            format!(
                "{name:?} contains {bad:?}; job names may use only letters, digits, '.', '_' and '-'"
            ),
        ));
    }
    let protocol_names: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
    let protocol = sec.require(
        "protocol",
        sec.choice("protocol", Protocol::parse, &protocol_names)?,
    )?;
    let mode_names: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
    let mode = sec.require("mode", sec.choice("mode", Mode::parse, &mode_names)?)?;

    // Keys that do not fit the protocol are errors, like keys that do not fit the mode.
    for key in sec.keys_in_order() {
        if let Some(allowed) = key_protocols(key) {
            // `tls_insecure_skip_verify = false` is the documented default; harmless anywhere.
            if key == "tls_insecure_skip_verify" && sec.bool(key)? == Some(false) {
                continue;
            }
            if !allowed.contains(&protocol) {
                let only: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
                return Err(sec.at(
                    key,
                    format!(
                        "does not apply to protocol {:?} (only {})",
                        protocol.as_str(),
                        only.join(", ")
                    ),
                ));
            }
        }
    }

    // --- connection
    let host = sec.nonempty_string("host")?;
    let host = match protocol {
        Protocol::Local => None,
        _ => Some(sec.require_with(
            "host",
            host,
            format!(" (required for protocol {:?})", protocol.as_str()),
        )?),
    };
    let port = match sec.int("port", 1, 65535)? {
        Some(p) => Some(p as u16),
        None => protocol.default_port(),
    };
    let username = sec.nonempty_string("username")?;
    let secrets: Vec<&str> = ["password", "password_env", "password_file"]
        .into_iter()
        .filter(|k| sec.has(k))
        .collect();
    if secrets.len() > 1 {
        return Err(sec.at(
            secrets[1],
            format!(
                "set only one of `password`, `password_env` and `password_file` (found `{}` and `{}`)",
                secrets[0], secrets[1]
            ),
        ));
    }
    let password = if let Some(p) = sec.string("password")? {
        Secret::Inline(p)
    } else if let Some(var) = sec.env_name("password_env")? {
        Secret::Env(var)
    } else if let Some(p) = sec.path("password_file")? {
        Secret::File(p)
    } else {
        Secret::None
    };
    let private_key = sec.path("private_key")?;
    let private_key_passphrase_env = sec.env_name("private_key_passphrase_env")?;
    let known_hosts = sec.path("known_hosts")?;
    let share = sec.nonempty_string("share")?;
    let share = match protocol {
        Protocol::Smb => {
            Some(sec.require_with("share", share, " (required for protocol \"smb\")".into())?)
        }
        _ => share,
    };
    let domain = sec.nonempty_string("domain")?;
    let tls_ca_file = sec.path("tls_ca_file")?;
    let tls_insecure_skip_verify = sec.bool("tls_insecure_skip_verify")?.unwrap_or(false);
    let ftp_active = sec.bool("ftp_active")?.unwrap_or(false);
    let ftp_encoding = sec.nonempty_string("ftp_encoding")?;
    if let Some(e) = &ftp_encoding {
        if crate::remote::ftp::NameEncoding::parse(e).is_none() {
            return Err(sec.at(
                "ftp_encoding",
                format!("{e:?} is not supported (use \"utf-8\" or \"latin1\")"),
            ));
        }
    }

    // --- paths
    let local_path = sec.require("local_path", sec.path("local_path")?)?;
    let remote_path = match protocol {
        Protocol::Local => {
            let remote = sec.require("remote_path", sec.path("remote_path")?)?;
            if remote.starts_with(&local_path) || local_path.starts_with(&remote) {
                return Err(sec.at(
                    "remote_path",
                    format!(
                        "{} and `local_path` {} overlap; a job cannot sync a folder with itself or its own subfolder",
                        remote.display(),
                        local_path.display()
                    ),
                ));
            }
            match remote.into_os_string().into_string() {
                Ok(s) => s,
                Err(_) => return Err(sec.at("remote_path", "is not valid UTF-8")),
            }
        }
        _ => sec.require("remote_path", sec.nonempty_string("remote_path")?)?,
    };

    // --- trigger
    let trigger = sec
        .choice(
            "trigger",
            Trigger::parse,
            &["manual", "interval", "cron", "watch"],
        )?
        .unwrap_or(Trigger::Manual);
    let mut interval = sec.duration("interval")?;
    if interval == Some(Duration::ZERO) {
        return Err(sec.at("interval", "must be longer than zero"));
    }
    let cron = sec.nonempty_string("cron")?;
    if let Some(expr) = &cron {
        check_cron(expr).map_err(|e| sec.at("cron", format!("{expr:?}: {e}")))?;
    }
    match trigger {
        Trigger::Manual => {
            for key in ["interval", "cron"] {
                if sec.has(key) {
                    return Err(sec.at(
                        key,
                        "does not apply to trigger \"manual\" (set trigger = \"interval\", \"cron\" or \"watch\")",
                    ));
                }
            }
        }
        Trigger::Interval => {
            if sec.has("cron") {
                return Err(sec.at(
                    "cron",
                    "does not apply to trigger \"interval\" (did you mean trigger = \"cron\"?)",
                ));
            }
            if interval.is_none() {
                return Err(sec.at(
                    "trigger",
                    "trigger \"interval\" needs an `interval` key, e.g. interval = \"60m\"",
                ));
            }
        }
        Trigger::Cron => {
            if sec.has("interval") {
                return Err(sec.at(
                    "interval",
                    "does not apply to trigger \"cron\" (did you mean trigger = \"interval\"?)",
                ));
            }
            if cron.is_none() {
                return Err(sec.at(
                    "trigger",
                    "trigger \"cron\" needs a `cron` key, e.g. cron = \"0 2 * * *\"",
                ));
            }
        }
        Trigger::Watch => {
            if sec.has("interval") && sec.has("cron") {
                return Err(sec.at(
                    "cron",
                    "set either `interval` or `cron` as the reconcile schedule of a watch job, not both",
                ));
            }
            if cron.is_none() && interval.is_none() {
                interval = Some(DEFAULT_WATCH_RECONCILE);
            }
        }
    }
    let debounce = sec
        .duration("debounce")?
        .unwrap_or(crate::job::DEFAULT_DEBOUNCE);

    // --- behaviour
    let enabled = sec.bool("enabled")?.unwrap_or(true);
    let dry_run = sec.bool("dry_run")?.unwrap_or(false);
    let delete_orphans = sec.bool("delete_orphans")?.unwrap_or(false);
    if delete_orphans && !mode.is_mirror() {
        return Err(sec.at(
            "delete_orphans",
            format!(
                "applies only to the mirror modes (mirror, mirror-upload), not mode {:?}",
                mode.as_str()
            ),
        ));
    }
    let conflict_names: Vec<&str> = ConflictPolicy::ALL.iter().map(|c| c.as_str()).collect();
    let conflict = sec.choice("conflict", ConflictPolicy::parse, &conflict_names)?;
    if conflict.is_some() && mode != Mode::Bidirectional {
        return Err(sec.at(
            "conflict",
            format!(
                "applies only to mode \"bidirectional\", not {:?} (one-way modes: the source always wins)",
                mode.as_str()
            ),
        ));
    }
    let conflict = conflict.unwrap_or(ConflictPolicy::Newer);
    let compare = sec
        .choice("compare", Compare::parse, &["fast", "secure"])?
        .unwrap_or(Compare::Fast);
    let trash = sec.bool("trash")?.unwrap_or(true);
    let trash_retention_days = sec
        .int("trash_retention_days", 0, u32::MAX as i64)?
        .map_or(defaults.trash_retention_days, |v| v as u32);
    let mtime_tolerance = sec
        .duration("mtime_tolerance")?
        .unwrap_or(defaults.mtime_tolerance);
    let max_delete = sec
        .max_delete("max_delete")?
        .unwrap_or(MaxDelete::Percent(50));

    // --- filters and transfers
    let include = sec.patterns("include")?;
    let exclude = sec.patterns("exclude")?;
    let transfers = sec.int("transfers", 1, 1024)?.unwrap_or(4) as usize;
    let chunk_size = sec.size("chunk_size")?.unwrap_or(4 << 20);
    if chunk_size < MIN_CHUNK_SIZE {
        return Err(sec.at(
            "chunk_size",
            format!("must be at least 64KiB, found {}", format_size(chunk_size)),
        ));
    }

    Ok(Job {
        name,
        protocol,
        mode,
        host,
        port,
        username,
        password,
        private_key,
        private_key_passphrase_env,
        known_hosts,
        share,
        domain,
        tls_ca_file,
        tls_insecure_skip_verify,
        ftp_active,
        ftp_encoding,
        remote_path,
        local_path,
        trigger,
        interval,
        cron,
        enabled,
        dry_run,
        delete_orphans,
        conflict,
        compare,
        trash,
        trash_retention_days,
        mtime_tolerance,
        max_delete,
        include,
        exclude,
        transfers,
        chunk_size,
        debounce,
    })
}

// ---------------------------------------------------------------------------------------------
// Source positions and typed key access
// ---------------------------------------------------------------------------------------------

struct Src<'a> {
    path: &'a Path,
    text: &'a str,
    base_dir: PathBuf,
    home: Option<PathBuf>,
}

impl Src<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let (line, column) = self.line_col(span.start);
        let mut message = e.message().trim().to_string();
        // toml says only "duplicate key"; say which.
        if message == "duplicate key" {
            if let Some(k) = self.text.get(span.clone()).filter(|k| !k.is_empty()) {
                message = format!("duplicate key `{}`", k.trim());
            }
        }
        ConfigError::Syntax {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// `~` expansion, then resolution of a relative path against the config file's directory.
    fn resolve(&self, raw: &str) -> Result<PathBuf, String> {
        let expanded = if raw == "~" || raw.starts_with("~/") {
            let home = self
                .home
                .as_ref()
                .ok_or_else(|| format!("cannot expand {raw:?}: $HOME is not set"))?;
            home.join(raw[1..].trim_start_matches('/'))
        } else if raw.starts_with('~') {
            return Err(format!(
                "{raw:?}: only `~` and `~/…` are expanded (not `~user`)"
            ));
        } else {
            PathBuf::from(raw)
        };
        Ok(if expanded.is_absolute() {
            expanded
        } else {
            self.base_dir.join(expanded)
        })
    }
}

/// One table (`[agent]` or a `[[job]]`) with its label for messages.
struct Section<'s, 'i> {
    src: &'s Src<'s>,
    table: &'s DeTable<'i>,
    label: String,
    /// The table's header.
    span: Range<usize>,
}

impl<'i> Section<'_, 'i> {
    fn entry(
        &self,
        key: &str,
    ) -> Option<(&Spanned<toml::de::DeString<'i>>, &Spanned<DeValue<'i>>)> {
        self.table.get_key_value(key)
    }

    fn has(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    fn value(&self, key: &str) -> Option<&DeValue<'i>> {
        self.entry(key).map(|(_, v)| v.get_ref())
    }

    fn key_span(&self, key: &str) -> Range<usize> {
        self.entry(key)
            .map_or_else(|| self.span.clone(), |(k, _)| k.span())
    }

    fn keys_in_order(&self) -> Vec<&str> {
        let mut keys: Vec<_> = self.table.iter().map(|(k, _)| k).collect();
        keys.sort_by_key(|k| k.span().start);
        keys.into_iter().map(|k| k.get_ref().as_ref()).collect()
    }

    /// An error about `key`, located at the key (or the header when the key is absent).
    fn at(&self, key: &str, msg: impl fmt::Display) -> ConfigError {
        self.src.invalid(
            self.key_span(key),
            key,
            format!("`{key}` in {}: {msg}", self.label),
        )
    }

    fn at_span(&self, span: Range<usize>, key: &str, msg: impl fmt::Display) -> ConfigError {
        self.src
            .invalid(span, key, format!("`{key}` in {}: {msg}", self.label))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &DeValue) -> ConfigError {
        self.at(
            key,
            format!("expected {expected}, found {}", type_name(found)),
        )
    }

    fn require<T>(&self, key: &str, v: Option<T>) -> Result<T, ConfigError> {
        self.require_with(key, v, String::new())
    }

    fn require_with<T>(&self, key: &str, v: Option<T>, why: String) -> Result<T, ConfigError> {
        v.ok_or_else(|| {
            self.src.invalid(
                self.span.clone(),
                key,
                format!("missing required key `{key}` in {}{why}", self.label),
            )
        })
    }

    /// Every key must be in `valid`; a key valid in the other section gets a pointer there.
    fn check_keys(
        &self,
        valid: &[&str],
        other: &[&str],
        other_name: &str,
    ) -> Result<(), ConfigError> {
        for key in self.keys_in_order() {
            if valid.contains(&key) {
                continue;
            }
            let mut msg = format!("unknown key `{key}` in {}", self.label);
            if let Some(s) = suggest(key, valid) {
                let _ = write!(msg, " (did you mean `{s}`?)");
            } else if other.contains(&key) {
                let _ = write!(msg, " (`{key}` belongs in {other_name})");
            }
            return Err(self.src.invalid(self.key_span(key), key, msg));
        }
        Ok(())
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::String(s)) => Ok(Some(s.to_string())),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    fn nonempty_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.at(key, "must not be empty")),
            other => Ok(other),
        }
    }

    /// The name of an environment variable.
    fn env_name(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let v = self.nonempty_string(key)?;
        if let Some(name) = &v {
            if name.contains('=') || name.contains('\0') || name.contains(char::is_whitespace) {
                return Err(self.at(key, format!("{name:?} is not an environment variable name")));
            }
        }
        Ok(v)
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.nonempty_string(key)? {
            None => Ok(None),
            Some(raw) => self
                .src
                .resolve(&raw)
                .map(Some)
                .map_err(|e| self.at(key, e)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "true or false", v)),
        }
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        let expected = if max >= u32::MAX as i64 {
            format!("an integer ≥ {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::Integer(i)) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.at(key, format!("expected {expected}, found {i}"))),
            },
            Some(v) => Err(self.wrong_type(key, &expected, v)),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        const EXPECTED: &str = "a duration such as \"30s\", \"15m\", \"1h\" or \"1d\"";
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::String(s)) => match parse_duration(s) {
                Some(d) => Ok(Some(d)),
                None => Err(self.at(key, format!("expected {EXPECTED}, found {:?}", s.as_ref()))),
            },
            Some(v) => Err(self.wrong_type(key, EXPECTED, v)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        const EXPECTED: &str = "a size such as \"4MiB\", \"512KiB\" or a number of bytes";
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::String(s)) => match parse_size(s) {
                Some(n) => Ok(Some(n)),
                None => Err(self.at(key, format!("expected {EXPECTED}, found {:?}", s.as_ref()))),
            },
            Some(DeValue::Integer(_)) => Ok(self.int(key, 0, i64::MAX)?.map(|n| n as u64)),
            Some(v) => Err(self.wrong_type(key, EXPECTED, v)),
        }
    }

    fn max_delete(&self, key: &str) -> Result<Option<MaxDelete>, ConfigError> {
        const EXPECTED: &str = "a file count (e.g. 100) or a percentage string (e.g. \"50%\")";
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::Integer(i)) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if n >= 0 => Ok(Some(MaxDelete::Count(n as u64))),
                _ => Err(self.at(key, format!("expected {EXPECTED}, found {i}"))),
            },
            Some(DeValue::String(s)) => {
                let t = s.trim();
                let parsed = match t.strip_suffix('%') {
                    Some(p) => match p.trim().parse::<u32>() {
                        Ok(p) if p <= 100 => Some(MaxDelete::Percent(p)),
                        Ok(_) => {
                            return Err(self.at(
                                key,
                                format!("a percentage must be from 0% to 100%, found {t:?}"),
                            ))
                        }
                        Err(_) => None,
                    },
                    None => t.parse::<u64>().ok().map(MaxDelete::Count),
                };
                parsed.map(Some).ok_or_else(|| {
                    self.at(key, format!("expected {EXPECTED}, found {:?}", s.as_ref()))
                })
            }
            Some(v) => Err(self.wrong_type(key, EXPECTED, v)),
        }
    }

    /// One of the `valid` words, via `parse`.
    fn choice<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        valid: &[&str],
    ) -> Result<Option<T>, ConfigError> {
        let expected = format!("one of {}", quote_list(valid));
        match self.value(key) {
            None => Ok(None),
            Some(DeValue::String(s)) => match parse(s) {
                Some(v) => Ok(Some(v)),
                None => {
                    let mut msg = format!("unknown value {:?}; expected {expected}", s.as_ref());
                    if let Some(sug) = suggest(s, valid) {
                        let _ = write!(msg, " (did you mean {sug:?}?)");
                    }
                    Err(self.at(key, msg))
                }
            },
            Some(v) => Err(self.wrong_type(key, &expected, v)),
        }
    }

    /// `include` / `exclude`: an array of non-empty strings; `re:` patterns must compile.
    fn patterns(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        const EXPECTED: &str = "an array of strings, e.g. [\"*.tmp\", \"re:^draft-\"]";
        let items = match self.value(key) {
            None => return Ok(Vec::new()),
            Some(DeValue::Array(a)) => a,
            Some(v) => return Err(self.wrong_type(key, EXPECTED, v)),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let DeValue::String(s) = item.get_ref() else {
                return Err(self.at_span(
                    item.span(),
                    key,
                    format!(
                        "every pattern must be a string, found {}",
                        type_name(item.get_ref())
                    ),
                ));
            };
            if s.is_empty() {
                return Err(self.at_span(item.span(), key, "patterns must not be empty"));
            }
            if let Some(re) = s.strip_prefix("re:") {
                if let Err(e) = regex::Regex::new(re) {
                    return Err(self.at_span(
                        item.span(),
                        key,
                        format!(
                            "invalid regular expression {:?}: {}",
                            s.as_ref(),
                            regex_reason(&e)
                        ),
                    ));
                }
            }
            out.push(s.to_string());
        }
        Ok(out)
    }
}

/// The one-line reason from regex's multi-line error display.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.lines().last().unwrap_or("").trim().to_string(),
            str::to_string,
        )
}

fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn quote_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest candidate to a mistyped word, if any is close enough to be a plausible typo.
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (*c, strsim::jaro_winkler(word, c)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// Loose check of a standard 5-field cron expression (minute hour day-of-month month
/// day-of-week): each field is a comma list of `*`, `N`, `N-M` or names, each with an optional
/// `/STEP`. The scheduler does the real parsing; this catches typos with a location.
fn check_cron(expr: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (field, (what, lo, hi)) in fields.iter().zip(FIELDS) {
        let bad = |why: &str| format!("bad {what} field {field:?}: {why}");
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            if let Some(step) = step {
                if !matches!(step.parse::<u32>(), Ok(n) if n >= 1) {
                    return Err(bad("a step must be a number ≥ 1"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            let parts: Vec<&str> = match range.split_once('-') {
                Some((a, b)) => vec![a, b],
                None => vec![range],
            };
            for part in parts {
                if part.is_empty() {
                    return Err(bad("empty value"));
                }
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    match part.parse::<u32>() {
                        Ok(n) if (lo..=hi).contains(&n) => {}
                        _ => return Err(bad(&format!("{part} is outside {lo}-{hi}"))),
                    }
                } else {
                    let names: &[&str] = match what {
                        "month" => &MONTHS,
                        "day-of-week" => &DAYS,
                        _ => &[],
                    };
                    if !names.contains(&part.to_ascii_lowercase().as_str()) {
                        return Err(bad(&format!("{part:?} is not a number or a name")));
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes
// ---------------------------------------------------------------------------------------------

/// Parses `"30s"`, `"15m"`, `"1h"`, `"1d"`, `"1w"`, `"500ms"` and combinations such as
/// `"1h30m"` (spaces between parts allowed). `"0"` alone is zero; any other number needs a unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it: `60m` → `"1h"`, 90 min → `"1h30m"`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

/// Parses `"4MiB"`, `"512KiB"`, `"1GiB"` (binary), `"4MB"` (decimal, 4 000 000), `"4M"`
/// (binary, as in rclone), `"1024"` or `"1024B"` (bytes). Units are case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn format_size(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

// ---------------------------------------------------------------------------------------------
// `omnisync config check`
// ---------------------------------------------------------------------------------------------

/// Human-readable resolved configuration for `omnisync config check`. Secrets are masked:
/// `password: env NAME` / `file PATH` / `inline ********`, never a value.
pub fn render_check(cfg: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", cfg.path.display());
    let _ = writeln!(out, "[agent]");
    kv(&mut out, "state_dir", cfg.agent.state_dir.display());
    kv(&mut out, "max_parallel_jobs", cfg.agent.max_parallel_jobs);
    kv(&mut out, "log_retention_days", cfg.agent.log_retention_days);

    if cfg.jobs.is_empty() {
        let _ = writeln!(out, "\nno jobs configured");
    }
    for job in &cfg.jobs {
        render_job(&mut out, job);
    }
    let _ = writeln!(
        out,
        "\n{} job{} OK",
        cfg.jobs.len(),
        if cfg.jobs.len() == 1 { "" } else { "s" }
    );
    out
}

fn kv(out: &mut String, key: &str, value: impl fmt::Display) {
    let _ = writeln!(out, "  {key:<26} {value}");
}

fn render_job(out: &mut String, job: &Job) {
    let _ = writeln!(out, "\n[[job]] {}", job.name);
    kv(out, "enabled", job.enabled);
    kv(out, "dry_run", job.dry_run);
    kv(out, "mode", job.mode.as_str());
    kv(out, "protocol", job.protocol.as_str());
    if let Some(host) = &job.host {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        match job.port {
            Some(p) => kv(out, "host", format!("{host}:{p}")),
            None => kv(out, "host", host),
        }
    }
    if job.protocol != Protocol::Local {
        kv(out, "username", job.username.as_deref().unwrap_or("(none)"));
        let password = match &job.password {
            Secret::None => "(none)".to_string(),
            Secret::Env(v) => format!("env {v}"),
            Secret::File(p) => format!("file {}", p.display()),
            Secret::Inline(_) => "inline ********".to_string(),
        };
        kv(out, "password", password);
    }
    if job.protocol == Protocol::Sftp {
        let key = match &job.private_key {
            Some(p) => p.display().to_string(),
            None if job.password == Secret::None => "(none: ssh-agent is tried)".into(),
            None => "(none)".into(),
        };
        kv(out, "private_key", key);
        if let Some(v) = &job.private_key_passphrase_env {
            kv(out, "private_key_passphrase_env", format!("env {v}"));
        }
        kv(
            out,
            "known_hosts",
            job.known_hosts
                .as_ref()
                .map_or_else(|| "(default)".to_string(), |p| p.display().to_string()),
        );
    }
    if let Some(share) = &job.share {
        kv(out, "share", share);
    }
    if let Some(domain) = &job.domain {
        kv(out, "domain", domain);
    }
    if job.protocol == Protocol::Ftps {
        kv(
            out,
            "tls_ca_file",
            job.tls_ca_file
                .as_ref()
                .map_or_else(|| "(system roots)".to_string(), |p| p.display().to_string()),
        );
        kv(
            out,
            "tls_insecure_skip_verify",
            job.tls_insecure_skip_verify,
        );
    }
    kv(out, "remote_path", &job.remote_path);
    kv(out, "local_path", job.local_path.display());
    let trigger = match (&job.trigger, job.interval, &job.cron) {
        (Trigger::Manual, ..) => "manual".to_string(),
        (Trigger::Interval, Some(i), _) => format!("interval, every {}", format_duration(i)),
        (Trigger::Cron, _, Some(c)) => format!("cron \"{c}\""),
        (Trigger::Watch, _, Some(c)) => format!("watch, reconcile on cron \"{c}\""),
        (Trigger::Watch, Some(i), _) => {
            format!("watch, reconcile every {}", format_duration(i))
        }
        (t, ..) => t.as_str().to_string(),
    };
    kv(out, "trigger", trigger);
    if job.trigger == Trigger::Watch {
        kv(out, "debounce", format_duration(job.debounce));
    }
    kv(out, "include", pattern_list(&job.include, "(everything)"));
    kv(out, "exclude", pattern_list(&job.exclude, "(nothing)"));
    kv(out, "compare", job.compare.as_str());
    if job.mode == Mode::Bidirectional {
        kv(out, "conflict", job.conflict.as_str());
    }
    if job.mode.is_mirror() {
        kv(out, "delete_orphans", job.delete_orphans);
    }
    kv(out, "trash", job.trash);
    kv(out, "trash_retention_days", job.trash_retention_days);
    kv(out, "mtime_tolerance", format_duration(job.mtime_tolerance));
    kv(out, "max_delete", job.max_delete);
    kv(out, "transfers", job.transfers);
    kv(out, "chunk_size", format_size(job.chunk_size));
}

fn pattern_list(patterns: &[String], empty: &str) -> String {
    if patterns.is_empty() {
        empty.to_string()
    } else {
        patterns
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/omnisync/test.toml";

    fn cfg(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new(PATH), text)
    }

    fn err(text: &str) -> String {
        match cfg(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// `(line, column, key)` of an `Invalid` error.
    fn loc(text: &str) -> (usize, usize, String) {
        match cfg(text) {
            Err(ConfigError::Invalid {
                line, column, key, ..
            }) => (line, column, key),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// A minimal valid local job, with `extra` lines appended to its table.
    fn local_job(extra: &str) -> String {
        format!(
            "[[job]]\nname = \"j\"\nprotocol = \"local\"\nmode = \"download\"\n\
             remote_path = \"/srv/remote\"\nlocal_path = \"/data/local\"\n{extra}"
        )
    }

    fn sftp_job(extra: &str) -> String {
        format!(
            "[[job]]\nname = \"s\"\nprotocol = \"sftp\"\nmode = \"download\"\nhost = \"example.com\"\n\
             remote_path = \"/outbox\"\nlocal_path = \"/data/in\"\n{extra}"
        )
    }

    fn job(text: &str) -> Job {
        let c = cfg(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.jobs.len(), 1);
        c.jobs.into_iter().next().unwrap()
    }

    const FULL: &str = r#"
[agent]
state_dir = "/var/lib/omnisync"
max_parallel_jobs = 2
log_retention_days = 7
trash_retention_days = 10
mtime_tolerance = "2s"

[[job]]
name = "invoice-download"
protocol = "sftp"
mode = "download"
host = "sftp.supplier.com"
port = 2222
username = "sync_user"
password_env = "SUPPLIER_PW"
private_key = "/keys/id_ed25519"
private_key_passphrase_env = "KEY_PASS"
known_hosts = "/keys/known_hosts"
remote_path = "/outbox/invoices"
local_path = "/data/import/invoices"
trigger = "interval"
interval = "60m"
enabled = true
dry_run = false
compare = "secure"
trash = true
trash_retention_days = 5
mtime_tolerance = "3s"
max_delete = "10%"
include = ["*.pdf", "invoices/**"]
exclude = ["*.tmp", "~$*", "re:^draft-.*\\.docx$"]
transfers = 8
chunk_size = "8MiB"
debounce = "2s"

[[job]]
name = "share.backup_2"
protocol = "smb"
mode = "mirror-upload"
host = "nas.local"
username = "backup"
password = "hunter2-very-secret"
share = "backup"
domain = "WORKGROUP"
remote_path = "docs"
local_path = "/home/me/docs"
trigger = "watch"
cron = "0 2 * * mon-fri"
delete_orphans = true
max_delete = 100

[[job]]
name = "ftps-both"
protocol = "ftps"
mode = "bidirectional"
host = "ftp.example.com"
password_file = "/etc/omnisync/ftp.pw"
tls_ca_file = "/etc/ssl/ca.pem"
tls_insecure_skip_verify = false
remote_path = "/shared"
local_path = "/data/shared"
conflict = "keep-both"
trigger = "cron"
cron = "*/15 * * * *"
"#;

    #[test]
    fn full_config() {
        let c = cfg(FULL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.path, Path::new(PATH));
        assert_eq!(c.agent.state_dir, Path::new("/var/lib/omnisync"));
        assert_eq!(c.agent.max_parallel_jobs, 2);
        assert_eq!(c.agent.log_retention_days, 7);
        assert_eq!(c.jobs.len(), 3);

        let j = c.job("invoice-download").unwrap();
        assert_eq!(j.protocol, Protocol::Sftp);
        assert_eq!(j.mode, Mode::Download);
        assert_eq!(j.host.as_deref(), Some("sftp.supplier.com"));
        assert_eq!(j.port, Some(2222));
        assert_eq!(j.username.as_deref(), Some("sync_user"));
        assert_eq!(j.password, Secret::Env("SUPPLIER_PW".into()));
        assert_eq!(
            j.private_key.as_deref(),
            Some(Path::new("/keys/id_ed25519"))
        );
        assert_eq!(j.private_key_passphrase_env.as_deref(), Some("KEY_PASS"));
        assert_eq!(
            j.known_hosts.as_deref(),
            Some(Path::new("/keys/known_hosts"))
        );
        assert_eq!(j.remote_path, "/outbox/invoices");
        assert_eq!(j.local_path, Path::new("/data/import/invoices"));
        assert_eq!(j.trigger, Trigger::Interval);
        assert_eq!(j.interval, Some(Duration::from_secs(3600)));
        assert_eq!(j.compare, Compare::Secure);
        assert_eq!(j.trash_retention_days, 5);
        assert_eq!(j.mtime_tolerance, Duration::from_secs(3));
        assert_eq!(j.max_delete, MaxDelete::Percent(10));
        assert_eq!(j.include, ["*.pdf", "invoices/**"]);
        assert_eq!(j.exclude, ["*.tmp", "~$*", "re:^draft-.*\\.docx$"]);
        assert_eq!(j.transfers, 8);
        assert_eq!(j.chunk_size, 8 << 20);

        let s = c.job("share.backup_2").unwrap();
        assert_eq!(s.protocol, Protocol::Smb);
        assert_eq!(s.mode, Mode::MirrorUpload);
        assert_eq!(s.port, Some(445));
        assert_eq!(s.password, Secret::Inline("hunter2-very-secret".into()));
        assert_eq!(s.share.as_deref(), Some("backup"));
        assert_eq!(s.domain.as_deref(), Some("WORKGROUP"));
        assert_eq!(s.remote_path, "docs");
        assert_eq!(s.trigger, Trigger::Watch);
        assert_eq!(s.cron.as_deref(), Some("0 2 * * mon-fri"));
        assert_eq!(s.interval, None);
        assert!(s.delete_orphans);
        assert_eq!(s.max_delete, MaxDelete::Count(100));
        // [agent] defaults for job keys
        assert_eq!(s.trash_retention_days, 10);
        assert_eq!(s.mtime_tolerance, Duration::from_secs(2));

        let f = c.job("ftps-both").unwrap();
        assert_eq!(f.port, Some(21));
        assert_eq!(f.password, Secret::File("/etc/omnisync/ftp.pw".into()));
        assert_eq!(f.tls_ca_file.as_deref(), Some(Path::new("/etc/ssl/ca.pem")));
        assert!(!f.tls_insecure_skip_verify);
        assert_eq!(f.conflict, ConflictPolicy::KeepBoth);
        assert_eq!(f.trigger, Trigger::Cron);

        assert!(c.job("nope").is_none());
    }

    #[test]
    fn defaults() {
        let c = cfg(&local_job("")).unwrap();
        assert_eq!(c.agent.max_parallel_jobs, 4);
        assert_eq!(c.agent.log_retention_days, 30);
        assert!(c.agent.state_dir.ends_with("omnisync"));
        let j = &c.jobs[0];
        let d = Job::local("j", "/data/local".into(), "/srv/remote", Mode::Download);
        assert_eq!(j.protocol, Protocol::Local);
        assert_eq!(j.port, None);
        assert_eq!(j.host, None);
        assert_eq!(j.password, Secret::None);
        assert_eq!(j.remote_path, d.remote_path);
        assert_eq!(j.local_path, d.local_path);
        assert_eq!(j.trigger, d.trigger);
        assert_eq!(j.interval, None);
        assert_eq!(j.enabled, d.enabled);
        assert_eq!(j.dry_run, d.dry_run);
        assert_eq!(j.delete_orphans, d.delete_orphans);
        assert_eq!(j.conflict, d.conflict);
        assert_eq!(j.compare, d.compare);
        assert_eq!(j.trash, d.trash);
        assert_eq!(j.trash_retention_days, d.trash_retention_days);
        assert_eq!(j.mtime_tolerance, d.mtime_tolerance);
        assert_eq!(j.max_delete, d.max_delete);
        assert_eq!(j.include, d.include);
        assert_eq!(j.exclude, d.exclude);
        assert_eq!(j.transfers, d.transfers);
        assert_eq!(j.chunk_size, d.chunk_size);
    }

    #[test]
    fn empty_file_is_valid_with_no_jobs() {
        let c = cfg("").unwrap();
        assert!(c.jobs.is_empty());
        assert!(render_check(&c).contains("no jobs configured"));
    }

    #[test]
    fn default_ports_per_protocol() {
        for (proto, port) in [("sftp", 22), ("ftp", 21), ("ftps", 21), ("smb", 445)] {
            let text = format!(
                "[[job]]\nname = \"p\"\nprotocol = \"{proto}\"\nmode = \"upload\"\nhost = \"h\"\n\
                 share = \"s\"\nremote_path = \"/r\"\nlocal_path = \"/l\"\n"
            );
            let text = if proto == "smb" {
                text
            } else {
                text.replace("share = \"s\"\n", "")
            };
            assert_eq!(job(&text).port, Some(port), "{proto}");
        }
    }

    #[test]
    fn unknown_key_with_suggestion_names_file_line_column() {
        let text = local_job("intervall = \"5m\"\n").replace("name = \"j\"", "name = \"foo\"");
        assert_eq!(
            err(&text),
            "/etc/omnisync/test.toml:7:1: unknown key `intervall` in [[job]] \"foo\" (did you mean `interval`?)"
        );
        let e = cfg(&text).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { ref key, .. } if key == "intervall"));
    }

    #[test]
    fn unknown_key_column_counts_indentation() {
        let text = local_job("  pasword = \"x\"\n");
        assert_eq!(loc(&text), (7, 3, "pasword".into()));
        assert!(
            err(&text).contains("did you mean `password`?"),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn unknown_key_without_close_match() {
        let e = err(&local_job("zzzz = 1\n"));
        assert!(e.ends_with("unknown key `zzzz` in [[job]] \"j\""), "{e}");
    }

    #[test]
    fn unknown_agent_key_and_misplaced_keys() {
        let e = err("[agent]\nmax_paralel_jobs = 3\n");
        assert_eq!(
            e,
            "/etc/omnisync/test.toml:2:1: unknown key `max_paralel_jobs` in [agent] (did you mean `max_parallel_jobs`?)"
        );
        let e = err("[agent]\ntransfers = 3\n");
        assert!(e.contains("`transfers` belongs in a [[job]]"), "{e}");
        let e = err(&local_job("state_dir = \"/x\"\n"));
        assert!(e.contains("unknown key `state_dir`"), "{e}");
        assert!(e.contains("belongs in [agent]"), "{e}");
    }

    #[test]
    fn unknown_sections() {
        let e = err("[agnet]\nx = 1\n");
        assert_eq!(
            e,
            "/etc/omnisync/test.toml:1:2: unknown section `agnet`; the sections are [agent] and [[job]] (did you mean [agent]?)"
        );
        let e = err("[[jobs]]\nname = \"x\"\n");
        assert!(e.contains("unknown section `jobs`"), "{e}");
        assert!(e.contains("did you mean [[job]]?"), "{e}");
        let e = err("name = \"x\"\n");
        assert!(e.contains("unknown top-level key `name`"), "{e}");
        assert!(e.contains("below a [[job]] header"), "{e}");
        let e = err("[job]\nname = \"x\"\n");
        assert!(e.contains("write [[job]], not [job]"), "{e}");
        let e = err("[[agent]]\nstate_dir = \"/x\"\n");
        assert!(e.contains("write [agent], not [[agent]]"), "{e}");
        let e = err("job = 3\n");
        assert!(e.contains("found an integer"), "{e}");
    }

    #[test]
    fn malformed_toml_reports_line_and_column() {
        let text = local_job("enabled = yes\n");
        match cfg(&text) {
            Err(ConfigError::Syntax {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (7, 11));
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(err(&text).starts_with("/etc/omnisync/test.toml:7:11: invalid TOML: "));

        let dup = local_job("name = \"again\"\n");
        let e = err(&dup);
        assert!(e.starts_with("/etc/omnisync/test.toml:7:1: "), "{e}");
        assert!(e.contains("duplicate key `name`"), "{e}");
    }

    #[test]
    fn name_required_and_checked() {
        let text = local_job("").replace("name = \"j\"\n", "");
        let e = err(&text);
        assert_eq!(
            e,
            "/etc/omnisync/test.toml:1:1: missing required key `name` in [[job]] #1"
        );
        let e = err(&local_job("").replace("\"j\"", "\"has space\""));
        assert!(e.contains(":2:1: `name` in [[job]] \"has space\""), "{e}");
        assert!(e.contains("letters, digits"), "{e}");
        assert!(err(&local_job("").replace("\"j\"", "\"..\"")).contains("not a valid job name"));
        assert!(err(&local_job("").replace("\"j\"", "\"\"")).contains("must not be empty"));
        let e = err(&local_job("").replace("\"j\"", "42"));
        assert!(
            e.contains("`name` in [[job]] #1: expected a string, found an integer"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let text = format!("{}\n{}", local_job(""), local_job(""));
        let e = err(&text);
        // The second job starts on line 8 (after a blank line); its name is on line 9.
        assert!(e.starts_with("/etc/omnisync/test.toml:9:1: "), "{e}");
        assert!(
            e.contains("duplicate job name \"j\" (first used on line 2)"),
            "{e}"
        );
    }

    #[test]
    fn protocol_and_mode_required_and_valid() {
        let e = err(&local_job("").replace("protocol = \"local\"\n", ""));
        assert!(e.contains("missing required key `protocol`"), "{e}");
        let e = err(&local_job("").replace("mode = \"download\"\n", ""));
        assert!(e.contains("missing required key `mode`"), "{e}");

        let e = err(&local_job("").replace("\"local\"", "\"webdav\""));
        assert!(e.starts_with("/etc/omnisync/test.toml:3:1: `protocol` in [[job]] \"j\": unknown value \"webdav\""), "{e}");
        for p in ["sftp", "ftp", "ftps", "smb", "local"] {
            assert!(e.contains(&format!("\"{p}\"")), "{e}");
        }
        let e = err(&local_job("").replace("\"download\"", "\"mirror_upload\""));
        assert!(e.contains("expected one of \"download\", \"upload\", \"bidirectional\", \"mirror\", \"mirror-upload\""), "{e}");
        assert!(e.contains("did you mean \"mirror-upload\"?"), "{e}");
        let e = err(&local_job("").replace("\"download\"", "1"));
        assert!(
            e.contains("`mode` in [[job]] \"j\": expected one of"),
            "{e}"
        );
        assert!(e.contains("found an integer"), "{e}");
    }

    #[test]
    fn bad_enum_values() {
        let e = err(&local_job("compare = \"slow\"\n"));
        assert!(e.contains(":7:1: `compare`"), "{e}");
        assert!(e.contains("expected one of \"fast\", \"secure\""), "{e}");
        let e = err(&local_job("trigger = \"hourly\"\n"));
        assert!(e.contains("`trigger`") && e.contains("\"watch\""), "{e}");
        let text =
            local_job("conflict = \"newest\"\n").replace("\"download\"", "\"bidirectional\"");
        let e = err(&text);
        assert!(
            e.contains("`conflict`") && e.contains("\"keep-both\""),
            "{e}"
        );
        assert!(e.contains("did you mean \"newer\"?"), "{e}");
    }

    #[test]
    fn paths_and_host_required() {
        let e = err(&local_job("").replace("local_path = \"/data/local\"\n", ""));
        assert!(
            e.contains("missing required key `local_path` in [[job]] \"j\""),
            "{e}"
        );
        let e = err(&local_job("").replace("remote_path = \"/srv/remote\"\n", ""));
        assert!(e.contains("missing required key `remote_path`"), "{e}");
        let e = err(&sftp_job("").replace("host = \"example.com\"\n", ""));
        assert!(
            e.contains(
                "missing required key `host` in [[job]] \"s\" (required for protocol \"sftp\")"
            ),
            "{e}"
        );
        let e = err(&sftp_job("").replace("\"sftp\"", "\"smb\""));
        assert!(e.contains("missing required key `share`"), "{e}");
        let e = err(&sftp_job("host = \"\"\n").replace("host = \"example.com\"\n", ""));
        assert!(
            e.contains("`host`") && e.contains("must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn keys_that_do_not_fit_the_protocol() {
        let e = err(&local_job("host = \"x\"\n"));
        assert!(
            e.contains(":7:1: `host` in [[job]] \"j\": does not apply to protocol \"local\""),
            "{e}"
        );
        let e = err(&sftp_job("share = \"x\"\n"));
        assert!(e.contains("`share`") && e.contains("only smb"), "{e}");
        let e = err(&sftp_job("tls_insecure_skip_verify = true\n"));
        assert!(e.contains("only ftps"), "{e}");
        // The documented default is harmless anywhere.
        job(&sftp_job("tls_insecure_skip_verify = false\n"));
        let e = err(&sftp_job("known_hosts = \"/k\"\n").replace("\"sftp\"", "\"ftp\""));
        assert!(
            e.contains("`known_hosts`") && e.contains("only sftp"),
            "{e}"
        );
    }

    #[test]
    fn ftp_mode_and_name_encoding() {
        let ftp = |extra: &str| sftp_job(extra).replace("\"sftp\"", "\"ftp\"");
        let j = job(&ftp(""));
        assert!(!j.ftp_active);
        assert_eq!(j.ftp_encoding, None);
        let j = job(&ftp("ftp_active = true\nftp_encoding = \"latin1\"\n"));
        assert!(j.ftp_active);
        assert_eq!(j.ftp_encoding.as_deref(), Some("latin1"));
        job(&ftp("ftp_encoding = \"UTF-8\"\n").replace("\"ftp\"", "\"ftps\""));
        let e = err(&ftp("ftp_encoding = \"ebcdic\"\n"));
        assert!(
            e.contains("`ftp_encoding`") && e.contains("\"ebcdic\" is not supported"),
            "{e}"
        );
        let e = err(&sftp_job("ftp_active = true\n"));
        assert!(
            e.contains("`ftp_active`") && e.contains("only ftp, ftps"),
            "{e}"
        );
    }

    #[test]
    fn wrong_value_types() {
        let e = err(&sftp_job("port = \"x\"\n"));
        assert_eq!(
            e,
            "/etc/omnisync/test.toml:8:1: `port` in [[job]] \"s\": expected an integer from 1 to 65535, found a string"
        );
        let e = err(&sftp_job("port = 70000\n"));
        assert!(e.contains("found 70000"), "{e}");
        let e = err(&local_job("enabled = \"yes\"\n"));
        assert!(
            e.contains("`enabled` in [[job]] \"j\": expected true or false, found a string"),
            "{e}"
        );
        let e = err(&local_job("interval = 60\ntrigger = \"interval\"\n"));
        assert!(e.contains("`interval`") && e.contains("a duration"), "{e}");
        let e = err(&local_job("interval = \"soon\"\ntrigger = \"interval\"\n"));
        assert!(e.contains("found \"soon\""), "{e}");
        let e = err(&local_job("local_path = 3\n").replace("local_path = \"/data/local\"\n", ""));
        assert!(
            e.contains("`local_path`") && e.contains("expected a string"),
            "{e}"
        );
        let e = err("[agent]\nmax_parallel_jobs = 0\n");
        assert!(e.contains("`max_parallel_jobs` in [agent]"), "{e}");
        let e = err("[agent]\nlog_retention_days = -1\n");
        assert!(e.contains("`log_retention_days`"), "{e}");
        let e = err(&local_job("trash = 1.5\n"));
        assert!(e.contains("found a float"), "{e}");
    }

    #[test]
    fn conflict_only_for_bidirectional() {
        let e = err(&local_job("conflict = \"newer\"\n"));
        assert!(
            e.contains(":7:1: `conflict` in [[job]] \"j\": applies only to mode \"bidirectional\""),
            "{e}"
        );
        let j =
            job(&local_job("conflict = \"remote\"\n").replace("\"download\"", "\"bidirectional\""));
        assert_eq!(j.conflict, ConflictPolicy::Remote);
    }

    #[test]
    fn delete_orphans_only_for_mirror_modes() {
        let e = err(&local_job("delete_orphans = true\n").replace("\"download\"", "\"upload\""));
        assert!(
            e.contains("`delete_orphans`") && e.contains("mirror modes"),
            "{e}"
        );
        // `false` is the default and fits every mode.
        job(&local_job("delete_orphans = false\n"));
        for mode in ["mirror", "mirror-upload"] {
            let j =
                job(&local_job("delete_orphans = true\n")
                    .replace("\"download\"", &format!("{mode:?}")));
            assert!(j.delete_orphans);
        }
    }

    #[test]
    fn triggers() {
        let e = err(&local_job("trigger = \"interval\"\n"));
        assert!(
            e.contains(":7:1: `trigger`") && e.contains("needs an `interval` key"),
            "{e}"
        );
        let e = err(&local_job("trigger = \"cron\"\n"));
        assert!(e.contains("needs a `cron` key"), "{e}");
        let e = err(&local_job("trigger = \"cron\"\ncron = \"0 2 * *\"\n"));
        assert!(
            e.contains(":8:1: `cron`") && e.contains("expected 5 fields"),
            "{e}"
        );
        let e = err(&local_job("trigger = \"cron\"\ncron = \"61 * * * *\"\n"));
        assert!(e.contains("minute") && e.contains("61"), "{e}");
        let e = err(&local_job(
            "trigger = \"cron\"\ncron = \"0 2 * * funday\"\n",
        ));
        assert!(e.contains("day-of-week"), "{e}");
        for ok in [
            "0 2 * * *",
            "*/5 1-3,7 1 jan-mar MON",
            "0 0 1,15 */2 0-6/2",
            "0 0 * * 7",
        ] {
            let j = job(&local_job(&format!(
                "trigger = \"cron\"\ncron = \"{ok}\"\n"
            )));
            assert_eq!(j.cron.as_deref(), Some(ok));
        }
        let e = err(&local_job("trigger = \"interval\"\ninterval = \"0s\"\n"));
        assert!(e.contains("longer than zero"), "{e}");
        let e = err(&local_job("interval = \"5m\"\n"));
        assert!(
            e.contains("`interval`") && e.contains("trigger \"manual\""),
            "{e}"
        );
        let e = err(&local_job(
            "trigger = \"interval\"\ninterval = \"5m\"\ncron = \"0 2 * * *\"\n",
        ));
        assert!(e.contains("`cron`"), "{e}");

        let j = job(&local_job("trigger = \"watch\"\n"));
        assert_eq!(j.trigger, Trigger::Watch);
        assert_eq!(j.interval, Some(Duration::from_secs(3600)));
        let j = job(&local_job("trigger = \"watch\"\ninterval = \"15m\"\n"));
        assert_eq!(j.interval, Some(Duration::from_secs(900)));
        let j = job(&local_job("trigger = \"watch\"\ncron = \"0 * * * *\"\n"));
        assert_eq!((j.interval, j.cron.as_deref()), (None, Some("0 * * * *")));
        let e = err(&local_job(
            "trigger = \"watch\"\ninterval = \"1h\"\ncron = \"0 * * * *\"\n",
        ));
        assert!(e.contains("not both"), "{e}");
        let j = job(&local_job("trigger = \"interval\"\ninterval = \"1h30m\"\n"));
        assert_eq!(j.interval, Some(Duration::from_secs(5400)));
        let e = err(&local_job("debounce = \"fast\"\n"));
        assert!(e.contains("`debounce`"), "{e}");
    }

    #[test]
    fn at_most_one_password_source() {
        let e = err(&sftp_job("password = \"a\"\npassword_env = \"B\"\n"));
        assert!(e.contains(":9:1: `password_env`"), "{e}");
        assert!(
            e.contains("only one of `password`, `password_env` and `password_file`"),
            "{e}"
        );
        let e = err(&sftp_job("password_env = \"A=B\"\n"));
        assert!(e.contains("not an environment variable name"), "{e}");
    }

    #[test]
    fn transfers_chunk_size_and_max_delete() {
        let e = err(&local_job("transfers = 0\n"));
        assert!(e.contains("`transfers`") && e.contains("from 1 to"), "{e}");
        let e = err(&local_job("chunk_size = \"1KiB\"\n"));
        assert!(
            e.contains("`chunk_size`") && e.contains("at least 64KiB, found 1KiB"),
            "{e}"
        );
        let e = err(&local_job("chunk_size = \"lots\"\n"));
        assert!(
            e.contains("`chunk_size`") && e.contains("found \"lots\""),
            "{e}"
        );
        assert_eq!(
            job(&local_job("chunk_size = 1048576\n")).chunk_size,
            1 << 20
        );
        assert_eq!(
            job(&local_job("chunk_size = \"64KiB\"\n")).chunk_size,
            64 << 10
        );

        assert_eq!(
            job(&local_job("max_delete = 0\n")).max_delete,
            MaxDelete::Count(0)
        );
        assert_eq!(
            job(&local_job("max_delete = \"100%\"\n")).max_delete,
            MaxDelete::Percent(100)
        );
        assert_eq!(
            job(&local_job("max_delete = \"0%\"\n")).max_delete,
            MaxDelete::Percent(0)
        );
        let e = err(&local_job("max_delete = \"150%\"\n"));
        assert!(
            e.contains("`max_delete`") && e.contains("0% to 100%"),
            "{e}"
        );
        let e = err(&local_job("max_delete = -1\n"));
        assert!(e.contains("`max_delete`") && e.contains("found -1"), "{e}");
        let e = err(&local_job("max_delete = 0.5\n"));
        assert!(
            e.contains("`max_delete`") && e.contains("found a float"),
            "{e}"
        );
        let e = err(&local_job("max_delete = \"half\"\n"));
        assert!(e.contains("found \"half\""), "{e}");
    }

    #[test]
    fn filters() {
        let e = err(&local_job("include = \"*.pdf\"\n"));
        assert!(
            e.contains("`include`") && e.contains("an array of strings"),
            "{e}"
        );
        let e = err(&local_job("exclude = [\"*.tmp\", 3]\n"));
        assert!(
            e.contains(":7:21: `exclude`") && e.contains("must be a string, found an integer"),
            "{e}"
        );
        let e = err(&local_job(
            "exclude = [\n  \"*.tmp\",\n  \"re:^draft-(\",\n]\n",
        ));
        assert!(e.starts_with("/etc/omnisync/test.toml:9:3: `exclude` in [[job]] \"j\": invalid regular expression \"re:^draft-(\""), "{e}");
        assert!(e.contains("unclosed group"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err(&local_job("include = [\"\"]\n"));
        assert!(e.contains("must not be empty"), "{e}");
    }

    #[test]
    fn tilde_and_relative_paths() {
        let j = job(&local_job("").replace("\"/data/local\"", "\"sub/dir\""));
        assert_eq!(j.local_path, Path::new("/etc/omnisync/sub/dir"));
        let j = job(&local_job("").replace("\"/srv/remote\"", "\"../remote\""));
        assert_eq!(j.remote_path, "/etc/omnisync/../remote");
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            let j = job(&local_job("").replace("\"/data/local\"", "\"~/docs\""));
            assert_eq!(j.local_path, home.join("docs"));
            let j = job(&sftp_job(
                "private_key = \"~/.ssh/id_ed25519\"\nknown_hosts = \"~/.ssh/known_hosts\"\n",
            ));
            assert_eq!(j.private_key, Some(home.join(".ssh/id_ed25519")));
            assert_eq!(j.known_hosts, Some(home.join(".ssh/known_hosts")));
            let c = cfg("[agent]\nstate_dir = \"~/st\"\n").unwrap();
            assert_eq!(c.agent.state_dir, home.join("st"));
        }
        let e = err(&local_job("").replace("\"/data/local\"", "\"~bob/x\""));
        assert!(e.contains("`local_path`") && e.contains("~user"), "{e}");
    }

    #[test]
    fn local_paths_must_not_overlap() {
        let e = err(&local_job("").replace("\"/srv/remote\"", "\"/data/local/sub\""));
        assert!(e.contains("`remote_path`") && e.contains("overlap"), "{e}");
        let e = err(&local_job("").replace("\"/srv/remote\"", "\"/data\""));
        assert!(e.contains("overlap"), "{e}");
        job(&local_job("").replace("\"/srv/remote\"", "\"/data/local2\""));
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s);
        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(d("1w"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "-1s",
            "1.5h",
            "h1",
            "99999999999999999999s",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4MB"), Some(4_000_000));
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("4 mib"), Some(4 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1024B"), Some(1024));
        for bad in ["", "MiB", "4XB", "-4MiB", "4.5MiB", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn find_config_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        // explicit wins, even when missing
        let got = find_config_with(
            Some(Path::new("/x.toml")),
            env(&[("OMNISYNC_CONFIG", "/y")]),
            none,
        );
        assert_eq!(got.unwrap(), Path::new("/x.toml"));
        // then $OMNISYNC_CONFIG, even when missing
        let got = find_config_with(None, env(&[("OMNISYNC_CONFIG", "/y.toml")]), none);
        assert_eq!(got.unwrap(), Path::new("/y.toml"));
        // then XDG, then ~/.config
        let got = find_config_with(
            None,
            env(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/h")]),
            all,
        );
        assert_eq!(got.unwrap(), Path::new("/xdg/omnisync/omnisync.toml"));
        let got = find_config_with(
            None,
            env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]),
            all,
        );
        assert_eq!(got.unwrap(), Path::new("/h/.config/omnisync/omnisync.toml"));
        // then /etc
        let got = find_config_with(None, env(&[("HOME", "/h")]), |p: &Path| {
            p.starts_with("/etc")
        });
        assert_eq!(got.unwrap(), Path::new(SYSTEM_CONFIG));
        // nothing: every place is named
        let e = find_config_with(None, env(&[("HOME", "/h")]), none).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/h/.config/omnisync/omnisync.toml"), "{msg}");
        assert!(msg.contains(SYSTEM_CONFIG), "{msg}");
        assert!(msg.contains("--config"), "{msg}");
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }));
        assert_eq!(
            e.to_string(),
            format!("config file {} not found", missing.display())
        );

        let file = dir.path().join("omnisync.toml");
        std::fs::write(&file, local_job("").replace("\"/data/local\"", "\"data\"")).unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.path, file);
        assert_eq!(c.jobs[0].local_path, dir.path().join("data"));

        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    }

    #[test]
    fn render_check_lists_everything_and_masks_secrets() {
        let c = cfg(FULL).unwrap();
        let out = render_check(&c);
        assert!(!out.contains("hunter2-very-secret"), "{out}");
        assert!(
            out.contains("password                   inline ********"),
            "{out}"
        );
        assert!(
            out.contains("password                   env SUPPLIER_PW"),
            "{out}"
        );
        assert!(
            out.contains("password                   file /etc/omnisync/ftp.pw"),
            "{out}"
        );
        for want in [
            "config: /etc/omnisync/test.toml",
            "state_dir                  /var/lib/omnisync",
            "max_parallel_jobs          2",
            "log_retention_days         7",
            "[[job]] invoice-download",
            "host                       sftp.supplier.com:2222",
            "host                       nas.local:445",
            "remote_path                /outbox/invoices",
            "local_path                 /data/import/invoices",
            "trigger                    interval, every 1h",
            "trigger                    watch, reconcile on cron \"0 2 * * mon-fri\"",
            "trigger                    cron \"*/15 * * * *\"",
            "include                    \"*.pdf\", \"invoices/**\"",
            "compare                    secure",
            "conflict                   keep-both",
            "delete_orphans             true",
            "max_delete                 10%",
            "max_delete                 100",
            "transfers                  8",
            "chunk_size                 8MiB",
            "chunk_size                 4MiB",
            "mtime_tolerance            3s",
            "trash_retention_days       10",
            "enabled                    true",
            "dry_run                    false",
            "share                      backup",
            "3 jobs OK",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // `conflict` only for bidirectional jobs
        assert_eq!(out.matches("conflict   ").count(), 1, "{out}");
    }
}
