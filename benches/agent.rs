//! The live agent's benchmark (not a test): `cargo bench --bench agent`.
//!
//! Prints, in one run:
//! 1. propagation latency from close() of a new 4 KiB file to the complete file on the remote
//!    (its final name appearing there), over `BENCH_FILES` (200) files, one at a time:
//!    omnisync's agent vs lsyncd (`delay = 0`) on the local backend, and over SFTP to a
//!    loopback sshd (omnisync on its kept-open connection vs lsyncd's rsync over ssh through a
//!    ControlMaster connection); p50, p90, p99 and the p50 ratio;
//! 2. journal ingest: 100,000 changes written by `Store::insert_changes` in the agent's batch
//!    size, in events/s; and a burst of `BENCH_BURST` (100,000) new files applied end to end
//!    by a running agent, with the time;
//! 3. an idle agent watching `BENCH_TREE` (100,000) files in 10,000 folders: CPU used over
//!    `BENCH_IDLE_SECS` (60) s and resident memory.
//!
//! lsyncd is compared when installed (`apt install lsyncd`); the sftp part needs the sshd of the
//! test suite (run as root). `BENCH_SKIP_SFTP=1` skips it; `BENCH_PARTS=latency,ingest,idle`
//! picks parts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

#[path = "../tests/common/sshd.rs"]
mod sshd;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the agent on `config`; returns once its start-up reconcile is recorded.
fn start_agent(config: &Path, log: &Path) -> Proc {
    let child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(["agent", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_for(
        Duration::from_secs(600),
        "the agent's start-up reconcile",
        || {
            let out = Command::new(bin())
                .arg("--config")
                .arg(config)
                .args(["journal", "stats", "--json"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("\"reconciles\":1")
        },
    );
    p
}

/// Latencies from close() of each new file in `src` to its final name appearing in `dst`.
fn measure(src: &Path, dst: &Path, n: usize, tag: &str) -> Vec<Duration> {
    let (tx, rx) = crossbeam_channel::unbounded::<(String, Instant)>();
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        let now = Instant::now();
        if let Ok(ev) = e {
            let done = matches!(
                ev.kind,
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                    | EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    ))
            );
            if done {
                if let Some(p) = ev.paths.last() {
                    if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                        let _ = tx.send((name.to_string(), now));
                    }
                }
            }
        }
    })
    .unwrap();
    w.watch(dst, RecursiveMode::NonRecursive).unwrap();
    let data = vec![b'x'; 4096];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{tag}-{i:04}.txt");
        let mut f = std::fs::File::create(src.join(&name)).unwrap();
        f.write_all(&data).unwrap();
        drop(f);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((got, t1)) if got == name => {
                    // Only the final name counts, complete.
                    if std::fs::metadata(dst.join(&name))
                        .map(|m| m.len())
                        .unwrap_or(0)
                        == 4096
                    {
                        out.push(t1.saturating_duration_since(t0));
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("{tag}: {name} did not arrive within 30 s"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        while rx.try_recv().is_ok() {}
    }
    out
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i]
}

fn row(name: &str, v: &[Duration]) -> String {
    format!(
        "{name:<34} p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   ({} files)",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        v.len()
    )
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn lsyncd(config: &str, dir: &Path) -> Proc {
    let path = dir.join("lsyncd.lua");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("lsyncd")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("lsyncd.log")).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

fn job_config(dir: &Path, local: &Path, remote_keys: &str) -> PathBuf {
    let config = dir.join("omnisync.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n\n[[job]]\nname = \"bench\"\nmode = \"upload\"\n\
             local_path = {local:?}\ntrigger = \"watch\"\n{remote_keys}",
            dir.join("state")
        ),
    )
    .unwrap();
    config
}

fn latency(n: usize, out: &mut Vec<String>) {
    // --- local backend
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let config = job_config(
        dir.path(),
        &src,
        &format!("protocol = \"local\"\nremote_path = {dst:?}\n"),
    );
    let ours = {
        let _agent = start_agent(&config, &dir.path().join("agent.log"));
        measure(&src, &dst, n, "omni")
    };
    out.push(row("local: omnisync agent", &ours));
    if have("lsyncd") && have("rsync") {
        let (src2, dst2) = (dir.path().join("src2"), dir.path().join("dst2"));
        std::fs::create_dir_all(&src2).unwrap();
        std::fs::create_dir_all(&dst2).unwrap();
        let _l = lsyncd(
            &format!(
                "settings {{ nodaemon = true }}\nsync {{ default.rsync, source = {:?}, target = {:?}, delay = 0 }}\n",
                src2, dst2
            ),
            dir.path(),
        );
        std::thread::sleep(Duration::from_secs(2));
        let theirs = measure(&src2, &dst2, n, "lsyncd");
        out.push(row("local: lsyncd (rsync, delay = 0)", &theirs));
        out.push(format!(
            "local: p50 ratio omnisync / lsyncd = {:.2}  (target <= 0.75)",
            pct(&ours, 0.5) / pct(&theirs, 0.5)
        ));
    } else {
        out.push("local: lsyncd not installed (apt install lsyncd): no peer".into());
    }

    // --- sftp over a loopback sshd
    if std::env::var_os("BENCH_SKIP_SFTP").is_some() {
        return;
    }
    let s = sshd::Sshd::start();
    let dst = s.data.join("omni");
    std::fs::create_dir_all(&dst).unwrap();
    s.chown(&dst);
    let config = job_config(
        dir.path(),
        &src,
        &format!("{}remote_path = {:?}\n", s.job_keys(), dst),
    );
    let ours = {
        std::fs::remove_dir_all(dir.path().join("state")).ok();
        let _agent = start_agent(&config, &dir.path().join("agent-sftp.log"));
        measure(&src, &dst, n, "omni-sftp")
    };
    out.push(row("sftp: omnisync agent", &ours));
    if have("lsyncd") && have("rsync") {
        let dst2 = s.data.join("lsyncd");
        std::fs::create_dir_all(&dst2).unwrap();
        s.chown(&dst2);
        let src2 = dir.path().join("src-sftp2");
        std::fs::create_dir_all(&src2).unwrap();
        let control = dir.path().join("cm-%r@%h:%p");
        let ssh = format!(
            "ssh -p {} -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes \
             -o ControlMaster=auto -o ControlPath={} -o ControlPersist=120",
            s.port,
            s.user_key.display(),
            s.known_hosts.display(),
            control.display()
        );
        // Open the master connection first, as a long-running lsyncd would have it.
        let _ = Command::new("sh")
            .args(["-c", &format!("{ssh} {}@127.0.0.1 true", sshd::USER)])
            .status();
        let _l = lsyncd(
            &format!(
                "settings {{ nodaemon = true }}\nsync {{ default.rsync, source = {:?}, \
                 target = \"{}@127.0.0.1:{}\", delay = 0, rsync = {{ rsh = {:?} }} }}\n",
                src2,
                sshd::USER,
                dst2.display(),
                ssh
            ),
            dir.path(),
        );
        std::thread::sleep(Duration::from_secs(3));
        let theirs = measure(&src2, &dst2, n, "lsyncd-sftp");
        out.push(row("sftp: lsyncd (rsync over ssh, CM)", &theirs));
        out.push(format!(
            "sftp: p50 ratio omnisync / lsyncd = {:.2}  (target <= 0.75)",
            pct(&ours, 0.5) / pct(&theirs, 0.5)
        ));
    }
}

fn ingest(burst: usize, out: &mut Vec<String>) {
    use omnisync::coalesce::ChangeKind;
    use omnisync::state::{NewChange, Store};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("omnisync.db")).unwrap();
    let job = store.job_id("bench").unwrap();
    let rows: Vec<NewChange> = (0..100_000)
        .map(|i| NewChange {
            job_id: job,
            at_ns: i,
            kind: ChangeKind::CloseWrite,
            path: format!("dir{}/file{i}.txt", i % 100),
            to: None,
            dir: false,
        })
        .collect();
    let t = Instant::now();
    for chunk in rows.chunks(20_000) {
        store.insert_changes(chunk).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    out.push(format!(
        "journal ingest: 100,000 changes in {:.3} s = {:.0} events/s  (target >= 100,000)",
        secs,
        100_000.0 / secs
    ));

    // A burst of new files through a running agent, end to end.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let config = job_config(
        dir.path(),
        &src,
        &format!("protocol = \"local\"\nremote_path = {dst:?}\n"),
    );
    let log = dir.path().join("agent.log");
    let _agent = start_agent(&config, &log);
    for d in 0..100 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for i in 0..burst {
        std::fs::write(src.join(format!("d{}/f{i}", i % 100)), b"x").unwrap();
    }
    let written = t.elapsed();
    let count = |root: &Path| -> usize {
        (0..100)
            .map(|d| {
                std::fs::read_dir(root.join(format!("d{d}")))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    };
    wait_for(Duration::from_secs(1200), "the burst on the remote", || {
        count(&dst) >= burst
    });
    let applied = t.elapsed();
    let overflow = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("overflow");
    out.push(format!(
        "burst: {burst} new files written in {:.2} s, all on the remote after {:.2} s{}",
        written.as_secs_f64(),
        applied.as_secs_f64(),
        if overflow {
            " (the inotify queue overflowed: finished by a reconcile)"
        } else {
            ""
        }
    ));
}

fn ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn idle(files: usize, secs: u64, out: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    let dirs = (files / 10).max(1);
    for d in 0..dirs {
        let p = src.join(format!("a{}/b{d}", d % 100));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..10 {
            std::fs::write(p.join(format!("f{f}")), b"").unwrap();
        }
    }
    let config = job_config(
        dir.path(),
        &src,
        &format!("protocol = \"local\"\nremote_path = {dst:?}\n"),
    );
    let agent = start_agent(&config, &dir.path().join("agent.log"));
    let pid = agent.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let (t0, r0) = (ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, el) = (ticks(pid), r0.elapsed());
    let hz = 100.0; // USER_HZ
    let cpu = (t1 - t0) as f64 / hz / el.as_secs_f64() * 100.0;
    out.push(format!(
        "idle agent watching {files} files in {dirs} folders: CPU {:.2}% over {} s (target 0%), \
         resident memory {:.1} MiB (target < 64 MiB)",
        cpu,
        secs,
        rss_kib(pid) as f64 / 1024.0
    ));
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let n = env_num("BENCH_FILES", 200);
    let burst = env_num("BENCH_BURST", 100_000);
    let tree = env_num("BENCH_TREE", 100_000);
    let idle_secs = env_num("BENCH_IDLE_SECS", 60) as u64;
    // BENCH_PARTS=latency,ingest,idle (default: all).
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "latency,ingest,idle".into());
    let want = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let mut out = Vec::new();
    if want("latency") {
        latency(n, &mut out);
    }
    for l in &out {
        println!("{l}");
    }
    let mut more = Vec::new();
    if want("ingest") {
        ingest(burst, &mut more);
    }
    if want("idle") {
        idle(tree, idle_secs, &mut more);
    }
    for l in &more {
        println!("{l}");
    }
    println!("\n== omnisync agent benchmark ==");
    for l in out.iter().chain(&more) {
        println!("{l}");
    }
}
