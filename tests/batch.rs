//! New small files handed to the destination several at a time (`Remote::put_new_many`, which
//! sftp overrides; `Executor::apply_many` and the worker loop of `engine::execute`). The
//! destination here is a local folder behind a wrapper that takes files in batches of 4 and
//! fails some of them as a lost connection would, or finds that one appeared meanwhile, which
//! a real server produces only by chance: the fault cases of the batch path, not a stand-in
//! for the sftp suite (which runs the same scenarios against a real sshd).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use omnisync::engine::{run_job_with, RunContext};
use omnisync::job::Mode;
use omnisync::model::{ActionRecord, Entry};
use omnisync::remote::local::LocalFs;
use omnisync::remote::{
    Batching, Capabilities, Listing, NewFile, PutNew, Remote, RemoteError, Result, RootStatus,
    WriteHandle,
};

#[path = "common/in_process.rs"]
mod in_process;

/// A local folder that takes new small files 4 at a time, 2 batches at once. A file named `lost*` fails in its
/// batch as on a dropped connection (the first time only: a retry on its own succeeds); before
/// `appears*` is put, a file of another writer shows up at its name.
struct Batcher {
    fs: LocalFs,
    root: std::path::PathBuf,
    batches: Mutex<Vec<usize>>,
    /// Calls of put_new_many running now, and the most at once.
    running: AtomicUsize,
    most_running: AtomicUsize,
    lost_once: AtomicBool,
    singles: AtomicUsize,
}

impl Remote for Batcher {
    fn capabilities(&self) -> Capabilities {
        self.fs.capabilities()
    }
    fn describe(&self) -> String {
        self.fs.describe()
    }
    fn root_status(&self) -> RootStatus {
        self.fs.root_status()
    }
    fn create_root(&self) -> Result<()> {
        self.fs.create_root()
    }
    fn list(&self, dir: &str) -> Result<Listing> {
        self.fs.list(dir)
    }
    fn stat(&self, path: &str) -> Result<Option<Entry>> {
        self.fs.stat(path)
    }
    fn open_read(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        self.fs.open_read(path, offset)
    }
    fn open_write(&self, path: &str, offset: u64) -> Result<Box<dyn WriteHandle>> {
        self.fs.open_write(path, offset)
    }
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.fs.rename(from, to)
    }
    fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        self.fs.rename_new(from, to)
    }
    fn put_new(
        &self,
        path: &str,
        partial: &str,
        data: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<PutNew> {
        self.singles.fetch_add(1, Ordering::Relaxed);
        self.fs.put_new(path, partial, data, mtime_ns)
    }
    fn put_new_batching(&self) -> Option<Batching> {
        Some(Batching {
            files: 4,
            batches: 2,
            max_file: 1 << 20,
        })
    }
    fn put_new_many(&self, files: &[NewFile<'_>]) -> Vec<Result<PutNew>> {
        self.batches.lock().unwrap().push(files.len());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        // Long enough for the other workers to call in meanwhile.
        std::thread::sleep(Duration::from_millis(20));
        self.running.fetch_sub(1, Ordering::SeqCst);
        files
            .iter()
            .map(|f| {
                let name = f.path.rsplit('/').next().unwrap_or(f.path);
                if name.starts_with("lost") && !self.lost_once.swap(true, Ordering::Relaxed) {
                    return Err(RemoteError::refused(
                        "write",
                        f.path,
                        "connection lost (injected)",
                    ));
                }
                if name.starts_with("appears") {
                    std::fs::write(self.root.join(f.path), b"another writer's file").unwrap();
                }
                self.fs.put_new(f.path, f.partial, f.data, f.mtime_ns)
            })
            .collect()
    }
    fn remove_file(&self, path: &str) -> Result<()> {
        self.fs.remove_file(path)
    }
    fn remove_dir(&self, path: &str) -> Result<()> {
        self.fs.remove_dir(path)
    }
    fn mkdir_all(&self, dir: &str) -> Result<()> {
        self.fs.mkdir_all(dir)
    }
    fn set_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        self.fs.set_mtime(path, mtime_ns)
    }
}

fn files_below(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                if p.file_name().unwrap() != ".omnisync" {
                    stack.push(p);
                }
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn new_small_files_go_in_batches_and_a_failed_one_is_retried_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let mut expected = Vec::new();
    for d in 0..3 {
        let dir = local.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..7 {
            let name = format!("d{d}/f{f}.txt");
            std::fs::write(local.join(&name), format!("content of {name}")).unwrap();
            expected.push(name);
        }
    }
    std::fs::write(local.join("d1/lost.txt"), b"cut off in its batch").unwrap();
    std::fs::write(local.join("d2/appears.txt"), b"ours").unwrap();
    std::fs::create_dir_all(&remote).unwrap();

    let dest = Batcher {
        fs: LocalFs::new(remote.clone()),
        root: remote.clone(),
        batches: Mutex::new(Vec::new()),
        running: AtomicUsize::new(0),
        most_running: AtomicUsize::new(0),
        lost_once: AtomicBool::new(false),
        singles: AtomicUsize::new(0),
    };
    let (agent, job, opts) =
        in_process::setup(tmp.path(), "batch", &local, &remote, Mode::MirrorUpload);
    let records: Mutex<Vec<ActionRecord>> = Mutex::new(Vec::new());
    let sink = |r: &ActionRecord| records.lock().unwrap().push(r.clone());
    let ctx = RunContext {
        remote: Some(&dest),
        ..Default::default()
    };
    let summary = run_job_with(&agent, &job, &opts, &sink, ctx).unwrap();

    // Went in batches: no call took more than 4, some took more than 1.
    let batches = dest.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| (2..=4).contains(&n)), "{batches:?}");
    assert!(batches.iter().sum::<usize>() >= 20, "{batches:?}");
    // Never more batches at once than the side said (2), whatever `transfers` (4) says.
    let most = dest.most_running.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} batches at once");
    // The lost one was sent again on its own and arrived.
    assert!(dest.singles.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        std::fs::read(remote.join("d1/lost.txt")).unwrap(),
        b"cut off in its batch"
    );
    // The file that appeared was left alone, its upload is an error for the next run.
    assert_eq!(
        std::fs::read(remote.join("d2/appears.txt")).unwrap(),
        b"another writer's file"
    );
    let recs = records.lock().unwrap();
    let err: Vec<_> = recs.iter().filter(|r| r.action == "error").collect();
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0].path, "d2/appears.txt");
    assert!(err[0]
        .message
        .as_deref()
        .unwrap_or("")
        .contains("destination appeared"));
    assert_eq!(summary.errors, 1);
    // Every other file arrived with its content and time, and no partial is left.
    for name in &expected {
        assert_eq!(
            std::fs::read(remote.join(name)).unwrap(),
            std::fs::read(local.join(name)).unwrap(),
            "{name}"
        );
        let (a, b) = (
            std::fs::metadata(local.join(name)).unwrap(),
            std::fs::metadata(remote.join(name)).unwrap(),
        );
        assert_eq!(a.modified().unwrap(), b.modified().unwrap(), "{name}");
    }
    let mut want = expected.clone();
    want.push("d1/lost.txt".into());
    want.push("d2/appears.txt".into());
    want.sort();
    assert_eq!(files_below(&remote), want);
    let uploads = recs.iter().filter(|r| r.action == "upload").count();
    assert_eq!(uploads, expected.len() + 1);
}
