//! The `omnisync` command line: parse arguments, load the config, call the library, map
//! outcomes to SPEC's exit codes (0 ok, 1 some actions failed, 2 usage/config, 3 connection,
//! 4 safety guard, 5 busy).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use omnisync::config::{self, Config};
use omnisync::engine::{self, human_bytes, RunError, RunOptions, RunSummary};
use omnisync::job::{Job, Trigger};
use omnisync::model::ActionRecord;
use omnisync::remote::{Remote, RootStatus};
use omnisync::state::LogFilter;

#[derive(Parser)]
#[command(
    name = "omnisync",
    version,
    propagate_version = true,
    about = "Keeps local folders in sync with SFTP, FTP/FTPS, SMB servers and plain directories",
    long_about = None
)]
struct Cli {
    /// Config file (default: $OMNISYNC_CONFIG, ~/.config/omnisync/omnisync.toml, /etc/omnisync/omnisync.toml)
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Log level for diagnostics on stderr: error, warn, info, debug, trace (or RUST_LOG)
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs once now (or preview them with --dry-run)
    Run(RunArgs),
    /// List the configured jobs with their trigger, last run, result and next run
    Jobs {
        /// JSON Lines output
        #[arg(long)]
        json: bool,
    },
    /// Show the action log
    Log(LogArgs),
    /// Check a job's connection: remote_path exists and is writable, round-trip time
    Test {
        /// The job to test
        job: String,
    },
    /// Run every enabled job on its trigger until SIGTERM/SIGINT (SIGHUP reloads the config)
    Agent,
    /// What the agent is doing: runs in progress, queued changes, transfers
    Status {
        /// Only this job
        job: Option<String>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// The agent's change journal: events as recorded, their batch, their state
    Journal(JournalArgs),
    /// A read-only FUSE view of a job's remote tree; contents fetched on read and cached
    #[cfg(all(feature = "mount", target_os = "linux"))]
    Mount(MountArgs),
    /// Validate the configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and print the resolved jobs (secrets masked)
    Check,
}

#[cfg(all(feature = "mount", target_os = "linux"))]
#[derive(Args)]
struct MountArgs {
    /// The job whose remote tree to show
    job: String,
    /// An empty folder to mount it on
    dir: PathBuf,
    /// Stay in the foreground (Ctrl-C or SIGTERM unmounts); otherwise detach once mounted
    #[arg(long)]
    foreground: bool,
    /// Where fetched contents are cached, kept for the next mount (default:
    /// STATE_DIR/mount-cache/JOB; one mount at a time per folder)
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The cache's bound on disk (least recently used chunks are dropped first)
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    cache_size: String,
    /// How often the remote tree is listed again
    #[arg(long, value_name = "DUR", default_value = "60s")]
    refresh: String,
    /// A remote read not answered within this fails with EIO (never a hang)
    #[arg(long, value_name = "DUR", default_value = "30s")]
    read_timeout: String,
}

#[derive(Args)]
struct RunArgs {
    /// Jobs to run
    #[arg(
        value_name = "JOB",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    jobs: Vec<String>,
    /// Run every enabled job
    #[arg(long)]
    all: bool,
    /// With --all: one job after the other (the default)
    #[arg(long, conflicts_with = "parallel")]
    sequential: bool,
    /// With --all: up to max_parallel_jobs jobs at once
    #[arg(long)]
    parallel: bool,
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Allow a run that max_delete or the emptied-root guard would stop
    #[arg(long)]
    force_delete: bool,
    /// Wait this long for a job that is running elsewhere (e.g. 30s, 5m)
    #[arg(long, value_name = "DUR", default_value = "0s")]
    wait: String,
    /// JSON Lines on stdout: the action records, then a summary object
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JournalArgs {
    #[command(subcommand)]
    command: Option<JournalCommand>,
    /// Only this job
    #[arg(long, global = true)]
    job: Option<String>,
    /// Only changes not yet applied
    #[arg(long)]
    pending: bool,
    /// Changes since a duration ago (90m, 2h, 3d) or an RFC 3339 time
    #[arg(long, value_name = "DUR|TIME")]
    since: Option<String>,
    /// At most this many changes (the most recent)
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// JSON Lines
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Counts by state, oldest pending change, batches, coalescing ratio
    Stats,
}

#[derive(Args)]
struct LogArgs {
    /// Only this job
    #[arg(long)]
    job: Option<String>,
    /// Only this action (upload, download, delete_local, …)
    #[arg(long)]
    action: Option<String>,
    /// Case-insensitive text in path, destination or message
    #[arg(long)]
    search: Option<String>,
    /// Records since a duration ago (90m, 2h, 3d) or an RFC 3339 time
    #[arg(long, value_name = "DUR|TIME")]
    since: Option<String>,
    /// Only this run
    #[arg(long)]
    run: Option<i64>,
    /// At most this many records (the most recent)
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// JSON Lines
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header row
    #[arg(long)]
    csv: bool,
}

/// Keep large freed buffers in the heap. glibc hands each allocation above a moving threshold
/// (128 KiB to begin with) its own mmap, and gives freed heap tops back to the kernel; a
/// transfer allocates MiB-sized request buffers by the thousand (in the protocol crates too), and
/// every fresh mapping is faulted in and zeroed again: ~6% of an SMB upload's client CPU. With
/// both limits raised, a 1 GiB SMB upload on tmpfs took 1.14-1.18 s against 1.23-1.27 s. The
/// memory kept is what the run's busiest moment used.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

fn main() -> ExitCode {
    keep_freed_buffers();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            });
        }
    };
    let agent = matches!(cli.command, Command::Agent);
    init_logging(
        cli.log_level.as_deref(),
        if agent { "info" } else { "warn" },
    );
    let code = match dispatch(&cli) {
        Ok(code) => code,
        Err(Failure(code, msg)) => {
            eprintln!("omnisync: {msg}");
            code
        }
    };
    ExitCode::from(code as u8)
}

fn init_logging(level: Option<&str>, default: &str) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
    };
    // Under systemd (stderr to the journal, which stamps each line): no colours, no time.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journald);
    if journald {
        let _ = builder.without_time().with_target(false).try_init();
        return;
    }
    let _ = builder.with_target(false).try_init();
}

/// An exit code with its message.
struct Failure(i32, String);

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        Failure(e.exit_code(), e.to_string())
    }
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let path = config::find_config(cli.config.as_deref()).map_err(|e| Failure(2, e.to_string()))?;
    config::load(&path).map_err(|e| Failure(2, e.to_string()))
}

fn dispatch(cli: &Cli) -> Result<i32, Failure> {
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let cfg = load_config(cli)?;
            print!("{}", config::render_check(&cfg));
            Ok(0)
        }
        Command::Run(args) => cmd_run(cli, args),
        Command::Jobs { json } => cmd_jobs(cli, *json),
        Command::Log(args) => cmd_log(cli, args),
        Command::Test { job } => cmd_test(cli, job),
        Command::Agent => cmd_agent(cli),
        Command::Status { job, json } => cmd_status(cli, job.as_deref(), *json),
        Command::Journal(args) => cmd_journal(cli, args),
        #[cfg(all(feature = "mount", target_os = "linux"))]
        Command::Mount(args) => cmd_mount(cli, args),
    }
}

fn cmd_agent(cli: &Cli) -> Result<i32, Failure> {
    // Fail early on a bad config (exit 2); SIGHUP re-reads the same file.
    let path = config::find_config(cli.config.as_deref()).map_err(|e| Failure(2, e.to_string()))?;
    config::load(&path).map_err(|e| Failure(2, e.to_string()))?;
    let load = || config::load(&path).map_err(|e| e.to_string());
    omnisync::agent::run(&load).map_err(|e| Failure(1, e))
}

fn open_store_if_any(cfg: &Config) -> Result<Option<omnisync::state::Store>, Failure> {
    let db = engine::db_path(&cfg.agent);
    if !db.exists() {
        return Ok(None);
    }
    omnisync::state::Store::open(&db)
        .map(Some)
        .map_err(|e| Failure(1, e.to_string()))
}

fn pid_alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn cmd_status(cli: &Cli, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    if let Some(j) = job {
        if cfg.job(j).is_none() {
            return Err(Failure(
                2,
                format!("no job named {j:?} in {}", cfg.path.display()),
            ));
        }
    }
    let Some(store) = open_store_if_any(&cfg)? else {
        if json {
            println!(
                "{}",
                serde_json::json!({"agent": null, "runs": [], "jobs": [], "transfers": []})
            );
        } else {
            println!("agent: not running (no state database yet)");
        }
        return Ok(0);
    };
    let f = |e: omnisync::state::StateError| Failure(1, e.to_string());
    let agent = store.agent_status().map_err(f)?;
    let running = agent.as_ref().is_some_and(|a| pid_alive(a.pid));
    // A run is in progress when its job's lock is held (a crashed run leaves no lock).
    let mut runs = Vec::new();
    for (id, name, started) in store.unfinished_runs().map_err(f)? {
        if job.is_some_and(|j| j != name)
            || runs
                .iter()
                .any(|(_, n, _): &(i64, String, String)| *n == name)
        {
            continue;
        }
        if engine::lock_job(&cfg.agent, &name, std::time::Duration::ZERO).is_err() {
            runs.push((id, name, started));
        }
    }
    let stats = store.journal_stats(job).map_err(f)?;
    // Transfers in flight (reported by a running agent once a second), then the resumable
    // ones (checkpointed, not moving now).
    let mut transfers: Vec<(String, String, String, u64, u64, bool)> = Vec::new();
    if running {
        let live: Vec<serde_json::Value> = agent
            .as_ref()
            .and_then(|a| serde_json::from_str(&a.transfers).ok())
            .unwrap_or_default();
        for t in live {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            transfers.push((
                s("job"),
                s("path"),
                s("direction"),
                n("bytes_done"),
                n("size"),
                true,
            ));
        }
    }
    for t in store.transfers_in_progress().map_err(f)? {
        if !transfers
            .iter()
            .any(|x| x.0 == t.0 && x.1 == t.1 && x.2 == t.2)
        {
            transfers.push((t.0, t.1, t.2, t.3, t.4, false));
        }
    }
    transfers.retain(|t| job.is_none_or(|j| j == t.0));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "agent": agent.as_ref().map(|a| serde_json::json!({
                    "running": running, "pid": a.pid, "started": a.started,
                    "heartbeat": a.heartbeat, "status": a.status,
                })),
                "runs": runs.iter().map(|(id, name, started)| serde_json::json!({"run": id, "job": name, "started": started})).collect::<Vec<_>>(),
                "jobs": stats.iter().map(|s| serde_json::json!({"job": s.job, "queued_changes": s.pending, "oldest_pending": s.oldest_pending})).collect::<Vec<_>>(),
                "transfers": transfers.iter().map(|t| serde_json::json!({"job": t.0, "path": t.1, "direction": t.2, "bytes_done": t.3, "size": t.4, "in_flight": t.5})).collect::<Vec<_>>(),
            })
        );
        return Ok(0);
    }
    match &agent {
        Some(a) if running => println!(
            "agent: running (pid {}, since {}): {}",
            a.pid, a.started, a.status
        ),
        _ => println!("agent: not running"),
    }
    if runs.is_empty() {
        println!("runs in progress: none");
    }
    for (id, name, started) in &runs {
        println!("run {id} of {name}: in progress since {started}");
    }
    for s in &stats {
        if s.pending > 0 {
            println!(
                "{}: {} changes queued (oldest {})",
                s.job,
                s.pending,
                s.oldest_pending.as_deref().unwrap_or("-")
            );
        }
    }
    for t in &transfers {
        println!(
            "{}: {} {} — {} of {} ({})",
            t.0,
            if t.2 == "up" { "upload" } else { "download" },
            t.1,
            human_bytes(t.3),
            human_bytes(t.4),
            if t.5 { "in flight" } else { "resumable" }
        );
    }
    Ok(0)
}

fn cmd_journal(cli: &Cli, args: &JournalArgs) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    if let Some(j) = &args.job {
        if cfg.job(j).is_none() {
            return Err(Failure(
                2,
                format!("no job named {j:?} in {}", cfg.path.display()),
            ));
        }
    }
    let f = |e: omnisync::state::StateError| Failure(1, e.to_string());
    let store = open_store_if_any(&cfg)?;
    if let Some(JournalCommand::Stats) = args.command {
        let stats = match &store {
            Some(s) => s.journal_stats(args.job.as_deref()).map_err(f)?,
            None => Vec::new(),
        };
        for s in &stats {
            if args.json {
                println!("{}", serde_json::to_string(s).unwrap_or_default());
            } else {
                println!(
                    "{}: {} pending (oldest {}), {} applied, {} dropped, {} reconciled; \
                     {} batches ({} paths, {} actions), {} reconciles; coalescing ratio {}",
                    s.job,
                    s.pending,
                    s.oldest_pending.as_deref().unwrap_or("-"),
                    s.applied,
                    s.dropped,
                    s.reconciled,
                    s.batches,
                    s.batch_paths,
                    s.batch_actions,
                    s.reconciles,
                    s.coalescing_ratio
                        .map(|r| format!("{r:.2} changes per action"))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        if stats.is_empty() && !args.json {
            println!("the journal is empty");
        }
        return Ok(0);
    }
    let since_ns = match &args.since {
        None => None,
        Some(s) => {
            let t = parse_since(s).ok_or_else(|| {
                Failure(
                    2,
                    format!("--since {s:?}: expected a duration (90m, 2h, 3d) or an RFC 3339 time"),
                )
            })?;
            let t = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| Failure(2, format!("--since {s:?}: {e}")))?;
            Some(t.unix_timestamp_nanos() as i64)
        }
    };
    let rows = match &store {
        Some(s) => s
            .query_changes(&omnisync::state::JournalFilter {
                job: args.job.clone(),
                pending: args.pending,
                since_ns,
                limit: args.limit,
            })
            .map_err(f)?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    for r in &rows {
        if args.json {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            let path = match &r.to {
                Some(to) => format!("{} -> {to}", r.path),
                None => r.path.clone(),
            };
            let _ = writeln!(
                out,
                "{:>8}  {}  {:<12} {:<11} {:<10} {}{}",
                r.id,
                r.time,
                r.job,
                r.kind,
                match r.batch {
                    Some(b) => format!("{}#{b}", r.state),
                    None => r.state.clone(),
                },
                path,
                if r.dir { "/" } else { "" }
            );
        }
    }
    Ok(0)
}

fn print_record(out: &mut dyn Write, rec: &ActionRecord, json: bool) {
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(rec).unwrap_or_else(|_| "{}".into())
        );
        return;
    }
    let mut line = format!("{:<14}{}", rec.action, rec.path);
    if let Some(to) = &rec.to {
        line.push_str(&format!("  -> {to}"));
    }
    if rec.action == "upload" || rec.action == "download" {
        line.push_str(&format!("  ({})", human_bytes(rec.bytes)));
    }
    if let Some(m) = &rec.message {
        if matches!(rec.action.as_str(), "error" | "skip" | "conflict") || rec.dry_run {
            line.push_str(&format!("  [{m}]"));
        }
    }
    let _ = writeln!(out, "{line}");
}

fn cmd_run(cli: &Cli, args: &RunArgs) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    let wait = config::parse_duration(&args.wait).ok_or_else(|| {
        Failure(
            2,
            format!("--wait: invalid duration {:?} (use 30s, 5m, 1h)", args.wait),
        )
    })?;
    let jobs: Vec<&Job> = if args.all {
        cfg.jobs.iter().filter(|j| j.enabled).collect()
    } else {
        let mut v = Vec::new();
        for name in &args.jobs {
            match cfg.job(name) {
                Some(j) => v.push(j),
                None => {
                    let known: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
                    return Err(Failure(
                        2,
                        format!(
                            "unknown job {name:?} in {} (jobs: {})",
                            cfg.path.display(),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        v
    };
    let opts = RunOptions {
        dry_run: args.dry_run,
        force_delete: args.force_delete,
        wait,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let json = args.json;
    // Piped output is block-buffered (one write per 8 KiB, not per action line); a terminal
    // sees each line as it happens.
    let out: Mutex<Box<dyn Write + Send>> = Mutex::new(if std::io::stdout().is_terminal() {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stdout(),
        ))
    });
    let sink = |r: &ActionRecord| print_record(&mut **out.lock().unwrap(), r, json);

    let results: Mutex<Vec<(String, Result<RunSummary, RunError>)>> = Mutex::new(Vec::new());
    let run_one = |job: &Job| {
        let r = engine::run_job(&cfg.agent, job, &opts, &sink);
        let mut o = out.lock().unwrap();
        let _ = o.flush();
        report(&mut **o, &r, json, &job.name);
        let _ = o.flush();
        results.lock().unwrap().push((job.name.clone(), r));
    };
    if args.parallel && jobs.len() > 1 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..cfg.agent.max_parallel_jobs.max(1).min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { return };
                    run_one(job);
                });
            }
        });
    } else {
        for job in &jobs {
            run_one(job);
        }
    }
    let code = results
        .into_inner()
        .unwrap()
        .iter()
        .map(|(_, r)| match r {
            Ok(s) => s.exit_code(),
            Err(e) => e.exit_code(),
        })
        .max()
        .unwrap_or(0);
    Ok(code)
}

/// The summary line (stderr) or object (stdout, with --json); failures on stderr.
fn report(out: &mut dyn Write, r: &Result<RunSummary, RunError>, json: bool, job: &str) {
    match r {
        Ok(s) => {
            if json {
                let _ = writeln!(out, "{}", s.to_json());
            } else {
                eprintln!("{}", s.to_text());
            }
        }
        Err(e) => {
            eprintln!("omnisync: {e}");
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"summary": {"job": job, "error": e.to_string(), "exit": e.exit_code()}})
                );
            }
        }
    }
}

fn cmd_jobs(cli: &Cli, json: bool) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    let db = engine::db_path(&cfg.agent);
    let store = if db.exists() {
        Some(omnisync::state::Store::open(&db).map_err(|e| Failure(1, e.to_string()))?)
    } else {
        None
    };
    if !json {
        println!(
            "{:<24} {:<9} {:<14} {:<22} {:<21} {:<9} NEXT RUN",
            "JOB", "PROTOCOL", "MODE", "TRIGGER", "LAST RUN", "RESULT"
        );
    }
    for job in &cfg.jobs {
        let last = match &store {
            Some(s) => s
                .last_run(&job.name)
                .map_err(|e| Failure(1, e.to_string()))?,
            None => None,
        };
        let trigger = match job.trigger {
            Trigger::Interval | Trigger::Watch if job.interval.is_some() => format!(
                "{} {}",
                job.trigger.as_str(),
                config::format_duration(job.interval.unwrap())
            ),
            Trigger::Cron | Trigger::Watch if job.cron.is_some() => {
                format!("{} {}", job.trigger.as_str(), job.cron.as_deref().unwrap())
            }
            _ => job.trigger.as_str().to_string(),
        };
        let next = next_run(job, last.as_ref());
        let result = last
            .as_ref()
            .map(|r| r.result.clone().unwrap_or_else(|| "running".into()))
            .unwrap_or_else(|| "-".into());
        let last_started = last
            .as_ref()
            .map(|r| r.started.clone())
            .unwrap_or_else(|| "never".into());
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "job": job.name, "protocol": job.protocol.as_str(), "mode": job.mode.as_str(),
                    "trigger": trigger, "enabled": job.enabled,
                    "last_run": last.as_ref().map(|r| serde_json::json!({
                        "run": r.id, "started": r.started, "finished": r.finished,
                        "result": r.result, "exit_code": r.exit_code, "bytes": r.bytes, "errors": r.errors,
                    })),
                    "next_run": next,
                })
            );
        } else {
            println!(
                "{:<24} {:<9} {:<14} {:<22} {:<21} {:<9} {}",
                job.name,
                job.protocol.as_str(),
                job.mode.as_str(),
                trigger,
                last_started,
                result,
                if job.enabled {
                    next.clone()
                } else {
                    "disabled".into()
                }
            );
        }
    }
    Ok(0)
}

/// When the agent will next run the job, as far as it can be told without the agent.
fn next_run(job: &Job, last: Option<&omnisync::state::RunInfo>) -> String {
    match job.trigger {
        Trigger::Manual => "manual".into(),
        Trigger::Interval => match (job.interval, last) {
            (Some(iv), Some(r)) => {
                let base = r.finished.as_deref().unwrap_or(&r.started);
                match time::OffsetDateTime::parse(
                    base,
                    &time::format_description::well_known::Rfc3339,
                ) {
                    Ok(t) => engine::rfc3339(t + iv),
                    Err(_) => "at agent start".into(),
                }
            }
            _ => "at agent start".into(),
        },
        Trigger::Cron => job
            .cron
            .as_deref()
            .and_then(|c| omnisync::schedule::next_cron(c, std::time::SystemTime::now()))
            .map(|t| engine::rfc3339(t.into()))
            .unwrap_or_else(|| "at agent start".into()),
        Trigger::Watch => {
            let reconcile = match (&job.cron, job.interval, last) {
                (Some(c), _, _) => omnisync::schedule::next_cron(c, std::time::SystemTime::now())
                    .map(|t| engine::rfc3339(t.into())),
                (None, Some(iv), Some(r)) => time::OffsetDateTime::parse(
                    r.finished.as_deref().unwrap_or(&r.started),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(|t| engine::rfc3339(t + iv)),
                _ => None,
            };
            match reconcile {
                Some(t) => format!("on change; reconcile {t}"),
                None => "on change".into(),
            }
        }
    }
}

fn cmd_log(cli: &Cli, args: &LogArgs) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    let since = match &args.since {
        None => None,
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            Failure(
                2,
                format!(
                    "--since: expected a duration like 90m, 2h, 3d or an RFC 3339 time, got {s:?}"
                ),
            )
        })?),
    };
    if let Some(a) = &args.action {
        if omnisync::model::ActionKind::parse(a).is_none() {
            let all: Vec<&str> = omnisync::model::ActionKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect();
            return Err(Failure(
                2,
                format!("--action: unknown action {a:?} (one of {})", all.join(", ")),
            ));
        }
    }
    let f = LogFilter {
        job: args.job.clone(),
        action: args.action.clone(),
        search: args.search.clone(),
        since,
        run: args.run,
        limit: args.limit.max(1),
    };
    let recs = engine::query_log(&cfg.agent, &f)?;
    let mut out = std::io::stdout().lock();
    if args.csv {
        let _ = writeln!(out, "time,job,run,action,path,to,bytes,ms,dry_run,message");
        for r in &recs {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                csv(&r.time),
                csv(&r.job),
                r.run,
                csv(&r.action),
                csv(&r.path),
                csv(r.to.as_deref().unwrap_or("")),
                r.bytes,
                r.ms.map(|m| m.to_string()).unwrap_or_default(),
                r.dry_run,
                csv(r.message.as_deref().unwrap_or(""))
            );
        }
    } else if args.json {
        for r in &recs {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        }
    } else {
        for r in &recs {
            let mut line = format!(
                "{}  {}  #{}  {:<14}{}",
                r.time, r.job, r.run, r.action, r.path
            );
            if let Some(to) = &r.to {
                line.push_str(&format!(" -> {to}"));
            }
            if r.bytes > 0 {
                line.push_str(&format!("  ({})", human_bytes(r.bytes)));
            }
            if r.dry_run {
                line.push_str("  (dry run)");
            }
            if let Some(m) = &r.message {
                line.push_str(&format!("  [{m}]"));
            }
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(0)
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `90m`, `2h`, `3d` ago, or an RFC 3339 time, as the log's UTC text form.
fn parse_since(s: &str) -> Option<String> {
    if let Some(d) = config::parse_duration(s) {
        let t = time::OffsetDateTime::now_utc() - d;
        return Some(engine::rfc3339(t));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(engine::rfc3339)
}

fn cmd_test(cli: &Cli, name: &str) -> Result<i32, Failure> {
    let cfg = load_config(cli)?;
    let job = cfg
        .job(name)
        .ok_or_else(|| Failure(2, format!("unknown job {name:?} in {}", cfg.path.display())))?;
    let t0 = Instant::now();
    let remote: Box<dyn Remote> = engine::open_remote(job)?;
    println!("connected to {} in {:?}", remote.describe(), t0.elapsed());
    match remote.root_status() {
        RootStatus::Dir => {}
        RootStatus::Missing => {
            return Err(Failure(
                3,
                format!("remote_path {} does not exist", job.remote_path),
            ))
        }
        RootStatus::NotDir => {
            return Err(Failure(
                3,
                format!("remote_path {} is not a directory", job.remote_path),
            ))
        }
        RootStatus::Unreadable(e) => {
            return Err(Failure(
                3,
                format!("remote_path {} cannot be read: {e}", job.remote_path),
            ))
        }
    }
    let probe = format!(
        ".omnisync/probe-{}",
        &blake3::hash(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes()).to_hex()
            [..12]
    );
    let t1 = Instant::now();
    let write = || -> Result<(), String> {
        remote.mkdir_all(".omnisync").map_err(|e| e.to_string())?;
        let mut w = remote.open_write(&probe, 0).map_err(|e| e.to_string())?;
        w.write_all(b"omnisync probe\n")
            .map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())?;
        remote.remove_file(&probe).map_err(|e| e.to_string())?;
        Ok(())
    };
    if let Err(e) = write() {
        return Err(Failure(
            3,
            format!("remote_path {} is not writable: {e}", job.remote_path),
        ));
    }
    let rtt = t1.elapsed();
    println!(
        "remote_path {} exists and is writable (probe file created and removed)",
        job.remote_path
    );
    println!(
        "round-trip time: {:.2} ms",
        rtt.as_secs_f64() * 1000.0 / 4.0
    );
    Ok(0)
}

#[cfg(all(feature = "mount", target_os = "linux"))]
fn cmd_mount(cli: &Cli, args: &MountArgs) -> Result<i32, Failure> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let cfg = load_config(cli)?;
    let job = cfg.job(&args.job).ok_or_else(|| {
        Failure(
            2,
            format!("unknown job {:?} in {}", args.job, cfg.path.display()),
        )
    })?;
    let cache_size = config::parse_size(&args.cache_size)
        .ok_or_else(|| Failure(2, format!("--cache-size {:?}: not a size", args.cache_size)))?;
    let refresh = config::parse_duration(&args.refresh)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Failure(2, format!("--refresh {:?}: not a duration", args.refresh)))?;
    let read_timeout = config::parse_duration(&args.read_timeout)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure(
                2,
                format!("--read-timeout {:?}: not a duration", args.read_timeout),
            )
        })?;
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| Failure(2, format!("mount point {}: {e}", args.dir.display())))?;
    if !dir.is_dir() {
        return Err(Failure(
            2,
            format!("mount point {} is not a directory", dir.display()),
        ));
    }
    if omnisync::mount::is_mounted(&dir) {
        return Err(Failure(
            2,
            format!("{} is already a mount point", dir.display()),
        ));
    }
    if !args.foreground {
        return mount_detached(&cfg, job, &dir);
    }
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| cfg.agent.state_dir.join("mount-cache").join(&job.name));
    let o = omnisync::mount::MountOptions {
        dir,
        cache_dir,
        cache_size,
        refresh,
        read_timeout,
        db: engine::db_path(&cfg.agent),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Failure(1, format!("cannot handle signal {sig}: {e}")))?;
    }
    let remote = engine::open_remote(job)?;
    let view = omnisync::mount::View::new(job, remote, &o).map_err(|e| Failure(3, e))?;
    omnisync::mount::serve(view, &o, &stop).map_err(|e| Failure(1, e))?;
    Ok(0)
}

/// Start `omnisync mount … --foreground` in a new session with its output in
/// STATE_DIR/mount-JOB.log, and return once the mount is there (or the child failed).
#[cfg(all(feature = "mount", target_os = "linux"))]
fn mount_detached(cfg: &Config, job: &Job, dir: &std::path::Path) -> Result<i32, Failure> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Failure(1, e.to_string()))?;
    std::fs::create_dir_all(&cfg.agent.state_dir).map_err(|e| {
        Failure(
            2,
            format!("cannot create {}: {e}", cfg.agent.state_dir.display()),
        )
    })?;
    let log = cfg.agent.state_dir.join(format!("mount-{}.log", job.name));
    let out = std::fs::File::create(&log)
        .map_err(|e| Failure(2, format!("cannot create {}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| Failure(1, e.to_string()))?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure(1, format!("cannot start the mount process: {e}")))?;
    let t0 = Instant::now();
    loop {
        if omnisync::mount::is_mounted(dir) {
            println!(
                "mounted job {} on {} (pid {}; unmount with `fusermount3 -u {}`)",
                job.name,
                dir.display(),
                child.id(),
                dir.display()
            );
            return Ok(0);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprint!("{text}");
            return Ok(status.code().unwrap_or(1));
        }
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            return Err(Failure(
                1,
                format!(
                    "the mount did not appear within 120 s (pid {}; see {})",
                    child.id(),
                    log.display()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
