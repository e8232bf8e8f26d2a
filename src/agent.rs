//! `omnisync agent`: runs every enabled job on its trigger until SIGTERM/SIGINT.
//!
//! Per job, one runner thread does everything that changes the job's folders, one thing at a
//! time: scheduled runs (`interval`, `cron`), reconciles (every job at start-up, and on the
//! reconcile schedule of `watch` jobs), and the live batches of `watch` jobs. A `watch` job
//! also has a watcher (inotify through notify) and an ingest thread that writes every event to
//! the journal (`changes`) before anything acts on it; the runner folds the journal into
//! batches with the pure coalescer and applies each batch through the same engine as
//! `omnisync run`, restricted to the batch's paths, over a connection it keeps open.
//!
//! At most `max_parallel_jobs` runs or batches are applied at once. A job is never run twice at
//! once: the runner takes the job's lock like `omnisync run` does (a manual run in progress
//! makes the agent wait and retry, never race). SIGTERM/SIGINT stop between chunks (the chunk
//! in flight is checkpointed) and the agent exits 0; SIGHUP reloads the config (removed jobs
//! stop, changed jobs restart, new jobs start). Under systemd it sends READY=1, STATUS= lines,
//! and WATCHDOG=1 pings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::coalesce::{self, Change};
use crate::config::Config;
use crate::engine::{self, RunContext, RunError, RunOptions};
use crate::filter::Filter;
use crate::job::{AgentSettings, Job, Trigger};
use crate::remote::Remote;
use crate::state::{BatchInfo, NewChange, Store};
use crate::watch::{self, Converter, Observed};

/// How long a batch waits before retrying when the job is busy or the remote failed.
const RETRY_BUSY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Paths that failed in a run are retried on their own (a run scoped to them) after
/// `RETRY_FAILED_FIRST`, then after twice as long each time, up to [`RETRY_MAX`]; after
/// `RETRY_FAILED_TRIES` such retries they wait for the next reconcile.
const RETRY_FAILED_FIRST: Duration = Duration::from_secs(1);
const RETRY_FAILED_TRIES: u32 = 10;
/// How often a batch waiting for the rest of a rename chain looks again, and how long it
/// waits at most (or the job's debounce, if longer) before a reconcile takes over.
const CHAIN_WAIT: Duration = Duration::from_millis(5);
const CHAIN_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often an idle agent refreshes its status row (its heartbeat).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(30);
/// Events ingested per journal transaction at most.
const INGEST_BATCH: usize = 20_000;

/// A counting semaphore: `max_parallel_jobs` runs at once.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self, stop: &AtomicBool) -> Option<SlotGuard<'_>> {
        let mut free = self.free.lock().unwrap();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(SlotGuard(self));
            }
            free = self
                .cv
                .wait_timeout(free, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.cv.notify_one();
    }
}

/// What the whole agent shares.
struct Shared {
    settings: AgentSettings,
    slots: Slots,
    /// Per job: what it is doing now (for STATUS= and `omnisync status`).
    doing: Mutex<BTreeMap<String, String>>,
    started: String,
    /// Transfers in flight, for `omnisync status`.
    board: crate::exec::TransferBoard,
    /// Wakes the main loop when a job starts or ends something (fresh status at once).
    poke: Sender<()>,
}

impl Shared {
    fn set_doing(&self, job: &str, what: Option<String>) {
        {
            let mut d = self.doing.lock().unwrap();
            match what {
                Some(w) => {
                    d.insert(job.to_string(), w);
                }
                None => {
                    d.remove(job);
                }
            }
        }
        let _ = self.poke.try_send(());
    }

    /// `[{"job","path","direction","bytes_done","size"}…]` of the transfers in flight.
    fn transfers_json(&self) -> String {
        let b = self.board.lock().unwrap();
        serde_json::Value::Array(
            b.iter()
                .map(|((job, path, dir), (done, size))| {
                    serde_json::json!({"job": job, "path": path, "direction": dir,
                                       "bytes_done": done, "size": size})
                })
                .collect(),
        )
        .to_string()
    }

    fn status_line(&self) -> String {
        let d = self.doing.lock().unwrap();
        if d.is_empty() {
            "idle".to_string()
        } else {
            d.iter()
                .map(|(j, w)| format!("{j}: {w}"))
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

/// A running job: its runner, and for `watch` jobs its watcher and ingest thread.
struct JobHandle {
    job: Job,
    stop: Arc<AtomicBool>,
    wake: Sender<Vec<Change>>,
    runner: JoinHandle<()>,
    ingest: Option<JoinHandle<()>>,
    /// Dropping it stops inotify and closes the ingest channel.
    watcher: Option<notify::RecommendedWatcher>,
}

/// Run the agent until SIGTERM/SIGINT. `load` reads the config (again on SIGHUP).
pub fn run(load: &dyn Fn() -> Result<Config, String>) -> Result<i32, String> {
    let cfg = load()?;
    // Few malloc arenas: an idle agent keeps little memory (each thread's arena would keep the
    // pages of its last reconcile).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded::<i32>();
    let sig_handle = signals.handle();
    let sig_thread = std::thread::spawn(move || {
        let mut signals = signals;
        for s in signals.forever() {
            if sig_tx.send(s).is_err() {
                break;
            }
        }
    });

    let (poke_tx, poke_rx) = crossbeam_channel::bounded::<()>(1);
    let shared = Arc::new(Shared {
        settings: cfg.agent.clone(),
        slots: Slots {
            free: Mutex::new(cfg.agent.max_parallel_jobs.max(1)),
            cv: Condvar::new(),
        },
        doing: Mutex::new(BTreeMap::new()),
        started: engine::now_rfc3339(),
        board: Mutex::new(BTreeMap::new()),
        poke: poke_tx,
    });
    let db = engine::db_path(&cfg.agent);
    let mut status_store = Store::open(&db).map_err(|e| e.to_string())?;
    let pid = std::process::id() as i64;
    let _ = status_store.set_agent_status(pid, &shared.started, "starting");

    let mut jobs: BTreeMap<String, JobHandle> = BTreeMap::new();
    start_jobs(&shared, &cfg, &mut jobs);
    tracing::info!(
        jobs = jobs.len(),
        config = %cfg.path.display(),
        "agent started"
    );
    let watchdog = sd_notify::watchdog_enabled();
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("watching {} jobs", jobs.len())),
    ]);
    // While something runs, once a second (the status row and the bytes done of transfers
    // stay fresh for `omnisync status`); idle, only the watchdog and a heartbeat wake it.
    let busy_tick = Duration::from_secs(1);
    let idle_tick = watchdog
        .map(|w| (w / 2).min(IDLE_HEARTBEAT))
        .unwrap_or(IDLE_HEARTBEAT);
    let mut last_status = String::new();
    let mut last_transfers = String::new();
    let mut last_beat = Instant::now();
    let code = loop {
        let busy =
            !shared.doing.lock().unwrap().is_empty() || !shared.board.lock().unwrap().is_empty();
        let tick = if busy {
            busy_tick.min(idle_tick)
        } else {
            idle_tick
        };
        let got = crossbeam_channel::select! {
            recv(sig_rx) -> s => s.map_err(|_| RecvTimeoutError::Disconnected),
            recv(poke_rx) -> _ => Err(RecvTimeoutError::Timeout),
            default(tick) => Err(RecvTimeoutError::Timeout),
        };
        match got {
            Ok(s) if s == signal_hook::consts::SIGHUP => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match load() {
                    Ok(new) => {
                        tracing::info!("SIGHUP: config reloaded");
                        reload(&shared, &new, &mut jobs);
                    }
                    Err(e) => {
                        tracing::error!("SIGHUP: config not reloaded, keeping the old one: {e}")
                    }
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            Ok(s) => {
                tracing::info!(
                    signal = s,
                    "stopping: finishing or checkpointing transfers in flight"
                );
                let _ = sd_notify::notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("stopping"),
                ]);
                break 0;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break 0,
        }
        let status = shared.status_line();
        if watchdog.is_some() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        let transfers = shared.transfers_json();
        if status != last_status
            || transfers != last_transfers
            || last_beat.elapsed() >= IDLE_HEARTBEAT
        {
            if status != last_status {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            let _ = status_store.set_agent_status(pid, &shared.started, &status);
            let _ = status_store.set_agent_transfers(&transfers);
            last_status = status;
            last_transfers = transfers;
            last_beat = Instant::now();
        }
    };
    for (_, h) in std::mem::take(&mut jobs) {
        stop_job(h);
    }
    let _ = status_store.set_agent_status(0, &shared.started, "stopped");
    sig_handle.close();
    let _ = sig_thread.join();
    tracing::info!("agent stopped");
    Ok(code)
}

fn start_jobs(shared: &Arc<Shared>, cfg: &Config, jobs: &mut BTreeMap<String, JobHandle>) {
    for job in &cfg.jobs {
        if !job.enabled || job.trigger == Trigger::Manual {
            continue;
        }
        match start_job(shared, job.clone()) {
            Ok(h) => {
                jobs.insert(job.name.clone(), h);
            }
            Err(e) => tracing::error!(job = %job.name, "cannot start the job: {e}"),
        }
    }
}

/// SIGHUP: removed or changed jobs stop, changed and new jobs start.
fn reload(shared: &Arc<Shared>, cfg: &Config, jobs: &mut BTreeMap<String, JobHandle>) {
    let wanted: BTreeMap<&str, &Job> = cfg
        .jobs
        .iter()
        .filter(|j| j.enabled && j.trigger != Trigger::Manual)
        .map(|j| (j.name.as_str(), j))
        .collect();
    let names: Vec<String> = jobs.keys().cloned().collect();
    for name in names {
        let keep = wanted
            .get(name.as_str())
            .is_some_and(|j| **j == jobs[&name].job);
        if !keep {
            let h = jobs.remove(&name).expect("listed");
            tracing::info!(job = %name, "stopping the job (removed or changed)");
            stop_job(h);
        }
    }
    for (name, job) in wanted {
        if jobs.contains_key(name) {
            continue;
        }
        match start_job(shared, job.clone()) {
            Ok(h) => {
                tracing::info!(job = %name, "job started");
                jobs.insert(name.to_string(), h);
            }
            Err(e) => tracing::error!(job = %name, "cannot start the job: {e}"),
        }
    }
}

fn stop_job(h: JobHandle) {
    h.stop.store(true, Ordering::Relaxed);
    drop(h.watcher);
    drop(h.wake);
    let _ = h.runner.join();
    if let Some(i) = h.ingest {
        let _ = i.join();
    }
}

/// Does the job follow local changes live? (`download` and `mirror` only poll.)
fn is_live(job: &Job) -> bool {
    job.trigger == Trigger::Watch && job.mode.writes_remote()
}

fn start_job(shared: &Arc<Shared>, job: Job) -> Result<JobHandle, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<Vec<Change>>();
    let mut watcher = None;
    let mut ingest = None;
    let mut start_overflow = false;
    if is_live(&job) {
        let filter = Filter::new(&job.include, &job.exclude).map_err(|e| e.to_string())?;
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<notify::Result<notify::Event>>();
        match watch::watch(&job.local_path, move |e| {
            let _ = ev_tx.send(e);
        }) {
            Ok(w) => watcher = Some(w),
            Err(e) => {
                // No live path: the reconcile schedule still keeps the job in sync.
                if watch::is_watch_limit(&e) {
                    tracing::error!(
                        job = %job.name,
                        "cannot watch {}: the inotify watch limit is reached (raise \
                         fs.inotify.max_user_watches); changes are caught by the reconcile schedule",
                        job.local_path.display()
                    );
                } else {
                    tracing::error!(job = %job.name, "cannot watch {}: {e}; changes are caught by the reconcile schedule", job.local_path.display());
                }
                start_overflow = true;
            }
        }
        if watcher.is_some() {
            let db = engine::db_path(&shared.settings);
            let mut store = Store::open(&db).map_err(|e| e.to_string())?;
            let job_id = store.job_id(&job.name).map_err(|e| e.to_string())?;
            let conv = Converter::new(job.local_path.clone(), filter);
            let name = job.name.clone();
            let tx = wake_tx.clone();
            ingest = Some(
                std::thread::Builder::new()
                    .name(format!("ingest {name}"))
                    .spawn(move || ingest_loop(&name, store, job_id, conv, ev_rx, tx))
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let shared2 = Arc::clone(shared);
    let stop2 = Arc::clone(&stop);
    let job2 = job.clone();
    let runner = std::thread::Builder::new()
        .name(format!("job {}", job.name))
        .spawn(move || Runner::new(shared2, job2, stop2, start_overflow).run(wake_rx))
        .map_err(|e| e.to_string())?;
    Ok(JobHandle {
        job,
        stop,
        wake: wake_tx,
        runner,
        ingest,
        watcher,
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Watcher events → journal rows (one transaction per burst) → the runner.
fn ingest_loop(
    job: &str,
    mut store: Store,
    job_id: i64,
    mut conv: Converter,
    events: Receiver<notify::Result<notify::Event>>,
    wake: Sender<Vec<Change>>,
) {
    let mut observed: Vec<Observed> = Vec::new();
    loop {
        let first = if conv.holding() {
            match events.recv_timeout(watch::PAIR_WAIT) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match events.recv() {
                Ok(e) => Some(e),
                Err(_) => return,
            }
        };
        let now = Instant::now();
        let mut take = |e: notify::Result<notify::Event>, observed: &mut Vec<Observed>| match e {
            Ok(ev) => conv.push(&ev, now, observed),
            Err(err) => {
                tracing::warn!(job, "watcher error: {err}; a full reconcile will follow");
                observed.push(Observed {
                    kind: coalesce::ChangeKind::Overflow,
                    path: String::new(),
                    to: None,
                    dir: true,
                });
            }
        };
        if let Some(e) = first {
            take(e, &mut observed);
            let mut n = 1;
            while n < INGEST_BATCH {
                match events.try_recv() {
                    Ok(e) => take(e, &mut observed),
                    Err(_) => break,
                }
                n += 1;
            }
        }
        conv.flush_stale(Instant::now(), &mut observed);
        if observed.is_empty() {
            continue;
        }
        let at = now_ns();
        let rows: Vec<NewChange> = observed
            .drain(..)
            .map(|o| NewChange {
                job_id,
                at_ns: at,
                kind: o.kind,
                path: o.path,
                to: o.to,
                dir: o.dir,
            })
            .collect();
        if rows
            .iter()
            .any(|r| r.kind == coalesce::ChangeKind::Overflow)
        {
            tracing::warn!(
                job,
                "inotify queue overflow or watcher error: events were lost; reconciling"
            );
        }
        // Durable first: nothing acts on a change before it is in the journal.
        let ids = loop {
            match store.insert_changes(&rows) {
                Ok(ids) => break ids,
                Err(e) => {
                    tracing::error!(job, "cannot write the journal: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let changes: Vec<Change> = rows
            .into_iter()
            .zip(ids)
            .map(|(r, id)| Change {
                id,
                at_ns: r.at_ns,
                kind: r.kind,
                path: r.path,
                to: r.to,
                dir: r.dir,
            })
            .collect();
        if wake.send(changes).is_err() {
            return;
        }
    }
}

/// One job's runner: scheduled runs, reconciles and live batches, one at a time.
struct Runner {
    shared: Arc<Shared>,
    job: Job,
    stop: Arc<AtomicBool>,
    store: Option<Store>,
    job_id: i64,
    remote: Option<Box<dyn Remote>>,
    pending: Vec<Change>,
    /// The next scheduled run or reconcile.
    next_due: Option<SystemTime>,
    /// Changes were lost (overflow, watch failure): reconcile as soon as possible.
    reconcile_now: bool,
    /// The first reconcile of this agent (start-up) is still to come.
    first: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Paths synced by recent batches, with the batch's time (hot paths; see `coalesce`).
    recent: HashMap<String, i64>,
    /// Since when a batch waits for the rest of a rename chain.
    unsettled_since: Option<Instant>,
    /// Paths whose last run failed (a lost connection, a file that could not be read…), to be
    /// retried by a run scoped to them at `failed_at`; `failed_tries` retries so far.
    failed_paths: BTreeSet<String>,
    failed_at: Option<Instant>,
    failed_tries: u32,
}

impl Runner {
    fn new(shared: Arc<Shared>, job: Job, stop: Arc<AtomicBool>, overflow: bool) -> Runner {
        Runner {
            shared,
            job,
            stop,
            store: None,
            job_id: 0,
            remote: None,
            pending: Vec::new(),
            next_due: None,
            reconcile_now: overflow,
            first: true,
            retry_at: None,
            backoff: RETRY_BUSY,
            recent: HashMap::new(),
            unsettled_since: None,
            failed_paths: BTreeSet::new(),
            failed_at: None,
            failed_tries: 0,
        }
    }

    fn store(&mut self) -> Result<&mut Store, String> {
        if self.store.is_none() {
            let db = engine::db_path(&self.shared.settings);
            let mut s = Store::open(&db).map_err(|e| e.to_string())?;
            self.job_id = s.job_id(&self.job.name).map_err(|e| e.to_string())?;
            self.store = Some(s);
        }
        Ok(self.store.as_mut().expect("opened"))
    }

    fn run(mut self, wake: Receiver<Vec<Change>>) {
        // Changes an earlier agent journaled but did not apply: the start-up reconcile covers
        // them (and says so in the journal: state `reconciled`, batch kind `replay`).
        let pending = self.store().map(|_| ()).and_then(|()| {
            let id = self.job_id;
            let s = self.store.as_ref().expect("opened");
            s.pending_changes(id).map_err(|e| e.to_string())
        });
        match pending {
            Ok(p) => {
                if !p.is_empty() {
                    tracing::info!(job = %self.job.name, changes = p.len(), "replaying changes journaled before a restart");
                }
                self.pending = p;
            }
            Err(e) => tracing::error!(job = %self.job.name, "cannot read the journal: {e}"),
        }
        // Every enabled job that is not manual reconciles at start-up.
        self.next_due = Some(SystemTime::now());
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let timeout = self.timeout();
            match wake.recv_timeout(timeout) {
                Ok(mut ch) => {
                    self.pending.append(&mut ch);
                    while let Ok(mut more) = wake.try_recv() {
                        self.pending.append(&mut more);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(timeout);
                    }
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            self.step();
        }
        self.shared.set_doing(&self.job.name, None);
    }

    /// How long to sleep: until the next scheduled run, debounce deadline or retry.
    fn timeout(&self) -> Duration {
        let mut t = Duration::from_secs(3600);
        if let Some(due) = self.next_due {
            t = t.min(
                due.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        if let Some(r) = self.retry_at {
            t = t.min(r.saturating_duration_since(Instant::now()));
        }
        if let Some(r) = self.failed_at {
            t = t.min(r.saturating_duration_since(Instant::now()));
        }
        if self.reconcile_now {
            t = Duration::ZERO;
        }
        if !self.pending.is_empty() && self.retry_at.is_none() {
            let b = coalesce::coalesce(
                &self.pending,
                now_ns(),
                self.job.debounce.as_nanos() as i64,
                &self.recent,
            );
            if b.reconcile || !b.ready.is_empty() || !b.dropped.is_empty() {
                t = Duration::ZERO;
            } else if let Some(w) = b.wake_at_ns {
                t = t.min(Duration::from_nanos((w - now_ns()).max(0) as u64));
            }
        }
        // A stop request closes the wake channel, which ends the wait at once.
        t
    }

    fn step(&mut self) {
        let due = self.next_due.is_some_and(|d| d <= SystemTime::now());
        if self.reconcile_now || due {
            self.reconcile();
            return;
        }
        if self.failed_at.is_some_and(|t| t <= Instant::now()) {
            self.retry_failed();
            return;
        }
        if self.pending.is_empty() {
            return;
        }
        let b = coalesce::coalesce(
            &self.pending,
            now_ns(),
            self.job.debounce.as_nanos() as i64,
            &self.recent,
        );
        if b.reconcile {
            self.reconcile_now = true;
            return;
        }
        if b.ready.is_empty() && b.dropped.is_empty() {
            return;
        }
        // A rename whose new name is already gone again, with nothing journaled yet that says
        // where it went, is part of a chain still being reported (a → b → c): wait for the
        // rest, so the planner sees where the file went and moves it, instead of deleting and
        // re-uploading it. Every change of the tree reaches the journal (a lost event is an
        // overflow), so the wait ends; when it takes longer than CHAIN_WAIT_MAX (a machine
        // under heavy load), a full reconcile finds the moves by inode over the whole tree.
        if self.chain_in_flight(&b) {
            let since = *self.unsettled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < CHAIN_WAIT_MAX.max(self.job.debounce) {
                self.retry_at = Some(Instant::now() + CHAIN_WAIT);
                return;
            }
            tracing::info!(job = %self.job.name, "a rename chain was not fully reported in time; reconciling");
            self.unsettled_since = None;
            self.reconcile_now = true;
            return;
        }
        self.unsettled_since = None;
        self.batch(b);
    }

    /// Does the batch hold a rename (or move in) whose destination no longer exists, with no
    /// later change that says where it went?
    fn chain_in_flight(&self, b: &coalesce::Batch) -> bool {
        unexplained_rename(&self.pending, &b.consumed, &|p| {
            self.job.local_path.join(p).symlink_metadata().is_ok()
        })
    }

    /// One run of the job (a whole reconcile, or a live batch's `scope`) over the kept-open
    /// connection. `Err` when the connection cannot be opened.
    fn run_once(
        &mut self,
        scope: Option<&[String]>,
    ) -> Result<Result<engine::RunSummary, RunError>, RunError> {
        self.ensure_remote()?;
        Ok(engine::run_job_with(
            &self.shared.settings,
            &self.job,
            &RunOptions::default(),
            &|_| {},
            RunContext {
                remote: self.remote.as_deref(),
                scope,
                cancel: Some(&self.stop),
                board: Some(&self.shared.board),
            },
        ))
    }

    fn ensure_remote(&mut self) -> Result<(), RunError> {
        if self.remote.is_none() {
            self.remote = Some(engine::open_remote(&self.job)?);
        }
        Ok(())
    }

    fn failed(&mut self, e: &RunError, what: &str) {
        match e {
            RunError::Busy(_) => {
                tracing::debug!(job = %self.job.name, "{what}: the job is running elsewhere; retrying");
                self.retry_at = Some(Instant::now() + RETRY_BUSY);
            }
            _ => {
                if matches!(e, RunError::Connection(_)) {
                    self.remote = None;
                }
                tracing::error!(job = %self.job.name, "{what} failed: {e}; retrying in {:?}", self.backoff);
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    fn reconcile(&mut self) {
        let shared = Arc::clone(&self.shared);
        let Some(_slot) = shared.slots.acquire(&self.stop) else {
            return;
        };
        let kind = if self.first { "replay" } else { "reconcile" };
        let why = if self.reconcile_now {
            "events were lost"
        } else if self.first {
            "start-up"
        } else {
            "scheduled"
        };
        tracing::info!(job = %self.job.name, reason = why, "reconcile: full scan of both sides");
        self.shared
            .set_doing(&self.job.name, Some(format!("reconcile ({why})")));
        // Everything journaled before the scan starts is covered by it.
        let up_to = match self
            .store()
            .and_then(|s| s.last_change_id().map_err(|e| e.to_string()))
        {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(job = %self.job.name, "{e}");
                0
            }
        };
        let res = self.run_once(None);
        self.shared.set_doing(&self.job.name, None);
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e, "reconcile");
                return;
            }
        };
        match res {
            Ok(sum) => {
                tracing::info!(job = %self.job.name, "{}", sum.to_text());
                let job_id = self.job_id;
                if let Ok(s) = self.store() {
                    if let Err(e) = s.reconcile_changes(job_id, up_to, Some(sum.run), kind) {
                        tracing::error!(job = %self.job.name, "{e}");
                    }
                }
                self.pending.retain(|c| c.id > up_to);
                // A full run looked at everything: what failed in it is all that failed.
                self.failed_paths.clear();
                self.failed_tries = 0;
                self.note_failed(&sum.failed);
                self.reconcile_now = false;
                self.first = false;
                self.retry_at = None;
                self.backoff = RETRY_BUSY;
                let last = SystemTime::now();
                self.next_due = crate::schedule::next_due(&self.job, Some(last), last);
                release_memory();
            }
            Err(RunError::Guard(msg)) => {
                // A guard needs a person: say so, and try again on the schedule.
                tracing::error!(job = %self.job.name, "reconcile stopped by a safety guard: {msg}");
                self.reconcile_now = false;
                self.first = false;
                let last = SystemTime::now();
                self.next_due = crate::schedule::next_due(&self.job, Some(last), last);
            }
            Err(e) => self.failed(&e, "reconcile"),
        }
    }

    fn batch(&mut self, b: coalesce::Batch) {
        let job_id = self.job_id;
        if b.ready.is_empty() {
            // Only changes that cancel out: record them, nothing to sync.
            if let Ok(s) = self.store() {
                let info = BatchInfo {
                    kind: "batch",
                    run: None,
                    paths: 0,
                    actions: 0,
                    result: "nothing to do".into(),
                };
                if let Err(e) = s.finish_batch(job_id, &info, &b.consumed, &b.dropped) {
                    tracing::error!(job = %self.job.name, "{e}");
                }
            }
            self.forget(&b);
            return;
        }
        let shared = Arc::clone(&self.shared);
        let Some(_slot) = shared.slots.acquire(&self.stop) else {
            return;
        };
        self.shared.set_doing(
            &self.job.name,
            Some(format!("live batch of {} paths", b.ready.len())),
        );
        let t = Instant::now();
        let res = self.run_once(Some(&b.ready));
        self.shared.set_doing(&self.job.name, None);
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e, "live batch");
                return;
            }
        };
        match res {
            Ok(sum) => {
                let actions: u64 = sum.counts.values().sum();
                tracing::debug!(
                    job = %self.job.name,
                    paths = b.ready.len(),
                    actions,
                    us = t.elapsed().as_micros() as u64,
                    "live batch applied"
                );
                if actions > 0 {
                    tracing::info!(job = %self.job.name, "{}", sum.to_text());
                }
                let info = BatchInfo {
                    kind: "batch",
                    run: Some(sum.run),
                    paths: b.ready.len() as u64,
                    actions,
                    result: if sum.errors > 0 { "partial" } else { "ok" }.into(),
                };
                if let Ok(s) = self.store() {
                    if let Err(e) = s.finish_batch(job_id, &info, &b.consumed, &b.dropped) {
                        tracing::error!(job = %self.job.name, "{e}");
                    }
                }
                self.forget(&b);
                self.retry_at = None;
                self.backoff = RETRY_BUSY;
                // The batch looked at its paths again: what failed before and did not fail now
                // is done; what failed now is retried soon.
                self.failed_paths
                    .retain(|p| !b.ready.iter().any(|r| coalesce::is_under(p, r)));
                self.note_failed(&sum.failed);
            }
            Err(RunError::Guard(msg)) => {
                tracing::error!(job = %self.job.name, "live batch stopped by a safety guard: {msg}; nothing was changed");
                let info = BatchInfo {
                    kind: "batch",
                    run: None,
                    paths: b.ready.len() as u64,
                    actions: 0,
                    result: format!("guard: {msg}"),
                };
                if let Ok(s) = self.store() {
                    let _ = s.finish_batch(job_id, &info, &b.consumed, &b.dropped);
                }
                self.forget(&b);
            }
            Err(e) => self.failed(&e, "live batch"),
        }
    }

    /// Paths that failed in a run: retry them soon (see [`RETRY_FAILED_FIRST`]).
    fn note_failed(&mut self, failed: &[String]) {
        if failed.is_empty() {
            if self.failed_paths.is_empty() {
                self.failed_at = None;
                self.failed_tries = 0;
            }
            return;
        }
        self.failed_paths.extend(failed.iter().cloned());
        if self.failed_tries >= RETRY_FAILED_TRIES {
            tracing::warn!(
                job = %self.job.name,
                paths = self.failed_paths.len(),
                "paths still fail after {RETRY_FAILED_TRIES} retries; the next reconcile tries them again"
            );
            self.failed_paths.clear();
            self.failed_at = None;
            self.failed_tries = 0;
            return;
        }
        let delay = RETRY_FAILED_FIRST
            .saturating_mul(1 << self.failed_tries.min(16))
            .min(RETRY_MAX);
        if self.failed_at.is_none() {
            tracing::info!(
                job = %self.job.name,
                paths = self.failed_paths.len(),
                "retrying what failed in {delay:?}"
            );
            self.failed_at = Some(Instant::now() + delay);
        }
    }

    /// A run scoped to the paths that failed before (a file whose upload met a dropped
    /// connection is on the remote a second later, not at the next reconcile).
    fn retry_failed(&mut self) {
        let shared = Arc::clone(&self.shared);
        let Some(_slot) = shared.slots.acquire(&self.stop) else {
            return;
        };
        let paths: Vec<String> = self.failed_paths.iter().cloned().collect();
        if paths.is_empty() {
            self.failed_at = None;
            return;
        }
        self.shared.set_doing(
            &self.job.name,
            Some(format!("retry of {} failed paths", paths.len())),
        );
        let res = self.run_once(Some(&paths));
        self.shared.set_doing(&self.job.name, None);
        self.failed_at = None;
        self.failed_tries += 1;
        match res {
            Ok(Ok(sum)) => {
                tracing::info!(job = %self.job.name, "retry: {}", sum.to_text());
                self.failed_paths.clear();
                self.note_failed(&sum.failed);
                if self.failed_paths.is_empty() {
                    self.failed_tries = 0;
                }
            }
            Ok(Err(RunError::Guard(msg))) => {
                tracing::error!(job = %self.job.name, "retry stopped by a safety guard: {msg}; the next reconcile looks again");
                self.failed_paths.clear();
                self.failed_tries = 0;
            }
            // The run could not start (connection, busy): try the same paths again later.
            Ok(Err(e)) | Err(e) => {
                self.failed(&e, "retry of failed paths");
                self.failed_at = self.retry_at;
            }
        }
    }

    fn forget(&mut self, b: &coalesce::Batch) {
        let mut done: Vec<i64> = b.consumed.iter().chain(&b.dropped).copied().collect();
        done.sort_unstable();
        let now = now_ns();
        let debounce = self.job.debounce.as_nanos() as i64;
        self.recent.retain(|_, t| *t + debounce > now);
        for c in &self.pending {
            if b.consumed.binary_search(&c.id).is_ok() {
                self.recent.insert(c.path.clone(), now);
                if let Some(to) = &c.to {
                    self.recent.insert(to.clone(), now);
                }
            }
        }
        self.pending.retain(|c| done.binary_search(&c.id).is_err());
    }
}

/// Among `pending` changes, is there one in `consumed` that put something at a path (a rename
/// or a move in) where nothing `exists` now, and no later change (a rename or removal of the
/// path or a folder above it) that says where it went?
fn unexplained_rename(pending: &[Change], consumed: &[i64], exists: &dyn Fn(&str) -> bool) -> bool {
    // The last rename or removal of each path (a burst can hold thousands of renames).
    let mut left: HashMap<&str, i64> = HashMap::new();
    for e in pending {
        if matches!(
            e.kind,
            coalesce::ChangeKind::Rename | coalesce::ChangeKind::Remove
        ) {
            let id = left.entry(e.path.as_str()).or_insert(e.id);
            *id = (*id).max(e.id);
        }
    }
    let left_after = |path: &str, id: i64| {
        let mut p = path;
        loop {
            if left.get(p).is_some_and(|&l| l > id) {
                return true;
            }
            match p.rsplit_once('/') {
                Some((parent, _)) => p = parent,
                None if !p.is_empty() => p = "",
                None => return false,
            }
        }
    };
    pending.iter().any(|c| {
        let dest = match c.kind {
            coalesce::ChangeKind::Rename => c.to.as_deref(),
            coalesce::ChangeKind::MovedIn => Some(c.path.as_str()),
            _ => None,
        };
        dest.is_some_and(|d| {
            consumed.binary_search(&c.id).is_ok() && !exists(d) && !left_after(d, c.id)
        })
    })
}

/// A reconcile of a large tree briefly holds its trees, base and plan (hundreds of MB for
/// millions of files); give the freed memory back to the system so an idle agent stays small.
fn release_memory() {
    // The maps are freed on a background thread (see `engine`): trim once that is done.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(2));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::unexplained_rename;
    use crate::coalesce::{Change, ChangeKind};

    fn ch(id: i64, kind: ChangeKind, path: &str, to: Option<&str>) -> Change {
        Change {
            id,
            at_ns: id,
            kind,
            path: path.into(),
            to: to.map(str::to_string),
            dir: false,
        }
    }

    #[test]
    fn a_rename_is_unexplained_while_its_destination_is_gone_without_a_word() {
        use ChangeKind::*;
        let exists = |present: &'static [&'static str]| move |p: &str| present.contains(&p);
        // a → b, and b is gone: the rest of the chain is still to come.
        let p = [ch(1, Rename, "a", Some("b"))];
        assert!(unexplained_rename(&p, &[1], &exists(&[])));
        assert!(!unexplained_rename(&p, &[1], &exists(&["b"])));
        // Not in this batch: not this batch's business.
        assert!(!unexplained_rename(&p, &[], &exists(&[])));
        // a → b → c: explained.
        let p = [ch(1, Rename, "a", Some("b")), ch(2, Rename, "b", Some("c"))];
        assert!(!unexplained_rename(&p, &[1, 2], &exists(&["c"])));
        // a → d/b, then d renamed: explained by the folder's rename.
        let p = [
            ch(1, Rename, "a", Some("d/b")),
            ch(2, Rename, "d", Some("e")),
        ];
        assert!(!unexplained_rename(&p, &[1, 2], &exists(&["e", "e/b"])));
        // a → b, then b removed: explained.
        let p = [ch(1, Rename, "a", Some("b")), ch(2, Remove, "b", None)];
        assert!(!unexplained_rename(&p, &[1], &exists(&[])));
        // A removal before the rename says nothing about where b went after it.
        let p = [ch(1, Remove, "b", None), ch(2, Rename, "a", Some("b"))];
        assert!(unexplained_rename(&p, &[1, 2], &exists(&[])));
        // A move-in whose path is gone again.
        let p = [ch(1, MovedIn, "x", None)];
        assert!(unexplained_rename(&p, &[1], &exists(&[])));
    }
}
