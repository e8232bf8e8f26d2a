//! `omnisync mount JOB DIR`: a read-only FUSE view of a job's remote tree.
//!
//! The tree (names, sizes, mtimes) comes from a listing of the remote (the job's base stands in
//! for folders whose listing fails) and is re-listed every `refresh`: `ls -lR` never touches the
//! network per file. Remote symlinks are shown as symlinks with the text
//! [`Remote::read_link`] gives (read once per link and listing change, never resolved here);
//! where a backend cannot read links (FTP, SMB) they are left out. File contents are fetched
//! on read in [`CHUNK`]-sized ranges through [`Remote::open_read`] and kept in a bounded
//! on-disk cache (least recently used chunks are dropped first); a cached chunk is keyed by
//! path, size and mtime, so a file that changed on the remote is fetched anew. The cache
//! outlives the mount: a clean unmount writes its index, the next mount of the same cache
//! folder takes the chunks over and drops those of files that changed or went. A virtual `.omnisync/` folder at the root holds `status` and
//! `journal`, regenerated on each read. The mount is read-only (`ro`): the kernel answers every
//! write, create, rename, unlink and chmod with EROFS.
//!
//! The pure parts (inode table, chunk math, LRU accounting) need no FUSE and are unit-tested
//! here; `tests/mount.rs` mounts for real.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::filter::Filter;
use crate::job::Job;
use crate::model::{Base, Kind, Side, Tree};
use crate::remote::{Remote, RemoteError, RootStatus};
use crate::scan::{self, ScanOptions};

/// The unit of fetching and caching: 1 MiB.
pub const CHUNK: u64 = 1 << 20;

pub const ROOT_INO: u64 = 1;
/// The virtual `.omnisync` folder and its two files.
pub const META_DIR_INO: u64 = 2;
pub const STATUS_INO: u64 = 3;
pub const JOURNAL_INO: u64 = 4;
/// The first inode handed to a remote path.
const FIRST_INO: u64 = 16;
pub const META_DIR: &str = ".omnisync";

/// One path of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub parent: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: i64,
    /// Name → inode, for folders.
    pub children: BTreeMap<String, u64>,
    /// The target text, for symlinks.
    pub link: Option<String>,
}

/// The tree of the view by inode. Inode numbers are stable across refreshes: a path keeps its
/// number as long as it exists.
#[derive(Debug, Clone)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
}

impl InodeTable {
    /// Build the table of `tree`, keeping the inode numbers `prev` gave to the same paths.
    /// Symlinks are shown with their target from `links`; a link missing there (the backend
    /// cannot read links, or reading it failed) is left out. Folders a path implies but the
    /// tree lacks are added.
    pub fn build(
        tree: &Tree,
        links: &HashMap<String, String>,
        root_mtime: i64,
        prev: Option<&InodeTable>,
    ) -> InodeTable {
        let mut t = InodeTable {
            nodes: HashMap::with_capacity(tree.len() + 1),
            by_path: HashMap::with_capacity(tree.len() + 1),
            next: prev.map_or(FIRST_INO, |p| p.next),
            files: 0,
            dirs: 0,
            links: 0,
        };
        t.nodes.insert(
            ROOT_INO,
            Node {
                path: String::new(),
                parent: ROOT_INO,
                kind: Kind::Dir,
                size: 0,
                mtime: root_mtime,
                children: BTreeMap::new(),
                link: None,
            },
        );
        t.by_path.insert(String::new(), ROOT_INO);
        for (path, e) in tree {
            if path.is_empty() {
                continue;
            }
            let link = match e.kind {
                Kind::Symlink => match links.get(path) {
                    Some(target) => Some(target.clone()),
                    None => continue,
                },
                _ => None,
            };
            // The view's own folder hides a remote one of the same name.
            if path == META_DIR || path.starts_with(".omnisync/") {
                continue;
            }
            let parent = t.ensure_dir(parent_of(path), e.mtime, prev);
            let ino = t.ino_for(path, prev);
            let existing = t.nodes.get_mut(&ino);
            match existing {
                // An implied folder met again: take its real mtime.
                Some(n) => n.mtime = e.mtime,
                None => {
                    let size = match (&e.kind, &link) {
                        (Kind::File, _) => e.size,
                        (_, Some(target)) => target.len() as u64,
                        _ => 0,
                    };
                    t.nodes.insert(
                        ino,
                        Node {
                            path: path.clone(),
                            parent,
                            kind: e.kind,
                            size,
                            mtime: e.mtime,
                            children: BTreeMap::new(),
                            link,
                        },
                    );
                    match e.kind {
                        Kind::File => t.files += 1,
                        Kind::Dir => t.dirs += 1,
                        Kind::Symlink => t.links += 1,
                    }
                    t.link(parent, path, ino);
                }
            }
        }
        t
    }

    fn ino_for(&mut self, path: &str, prev: Option<&InodeTable>) -> u64 {
        if let Some(&i) = self.by_path.get(path) {
            return i;
        }
        let ino = match prev.and_then(|p| p.by_path.get(path)) {
            Some(&i) => i,
            None => {
                let i = self.next;
                self.next += 1;
                i
            }
        };
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    fn link(&mut self, parent: u64, path: &str, ino: u64) {
        let name = name_of(path).to_string();
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name, ino);
        }
    }

    /// The inode of folder `dir`, creating it (and its parents) when the tree did not list it.
    fn ensure_dir(&mut self, dir: &str, mtime: i64, prev: Option<&InodeTable>) -> u64 {
        if dir.is_empty() {
            return ROOT_INO;
        }
        if let Some(&i) = self.by_path.get(dir) {
            return i;
        }
        let parent = self.ensure_dir(parent_of(dir), mtime, prev);
        let ino = self.ino_for(dir, prev);
        self.nodes.insert(
            ino,
            Node {
                path: dir.to_string(),
                parent,
                kind: Kind::Dir,
                size: 0,
                mtime,
                children: BTreeMap::new(),
                link: None,
            },
        );
        self.dirs += 1;
        self.link(parent, dir, ino);
        ino
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn name_of(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// The remote side of the base as a tree: what the view shows where a listing failed.
pub fn tree_from_base(base: &Base) -> Tree {
    base.iter()
        .filter_map(|(p, row)| row.remote.clone().map(|e| (p.clone(), e)))
        .collect()
}

/// The chunks that hold bytes `offset .. offset + len` of a file of `file_size` bytes.
pub fn chunks_for(offset: u64, len: u64, file_size: u64) -> Range<u64> {
    let end = offset.saturating_add(len).min(file_size);
    if offset >= end {
        return 0..0;
    }
    offset / CHUNK..end.div_ceil(CHUNK)
}

/// The length of chunk `idx` of a file of `file_size` bytes.
pub fn chunk_len(idx: u64, file_size: u64) -> u64 {
    file_size.saturating_sub(idx * CHUNK).min(CHUNK)
}

/// The name of a file's cache: its path, size and mtime hashed, so a changed file misses.
pub fn cache_key(path: &str, size: u64, mtime: i64) -> String {
    let mut h = blake3::Hasher::new();
    h.update(path.as_bytes());
    h.update(&[0]);
    h.update(&size.to_le_bytes());
    h.update(&mtime.to_le_bytes());
    format!("{}.chunks", &h.finalize().to_hex()[..32])
}

/// Accounting of the cached chunks: bytes held, and which to drop first (least recently used).
#[derive(Debug, Default)]
pub struct Lru {
    limit: u64,
    used: u64,
    tick: u64,
    /// (file key, chunk) → (length, last use).
    chunks: HashMap<(String, u64), (u64, u64)>,
    order: BTreeMap<u64, (String, u64)>,
    /// Chunks held per file key.
    per_file: HashMap<String, u64>,
    /// Chunks dropped so far (readers outside the lock check it did not move).
    evictions: u64,
}

impl Lru {
    pub fn new(limit: u64) -> Lru {
        Lru {
            limit,
            ..Lru::default()
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn contains(&self, key: &str, idx: u64) -> bool {
        self.chunks.contains_key(&(key.to_string(), idx))
    }

    /// Mark a chunk as just used; false when it is not cached.
    pub fn touch(&mut self, key: &str, idx: u64) -> bool {
        let k = (key.to_string(), idx);
        let Some((_, last)) = self.chunks.get_mut(&k) else {
            return false;
        };
        self.tick += 1;
        self.order.remove(last);
        *last = self.tick;
        self.order.insert(self.tick, k);
        true
    }

    /// The cached chunks, least recently used first: (file key, chunk, length).
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, u64)> + '_ {
        self.order.values().map(|(k, i)| {
            let len = self.chunks.get(&(k.clone(), *i)).map_or(0, |c| c.0);
            (k.as_str(), *i, len)
        })
    }

    /// The file keys that hold chunks.
    pub fn files(&self) -> impl Iterator<Item = &str> + '_ {
        self.per_file.keys().map(String::as_str)
    }

    /// Forget every chunk of the files for which `stale` says true; returns their keys.
    pub fn drop_files(&mut self, mut stale: impl FnMut(&str) -> bool) -> Vec<String> {
        let gone: HashSet<String> = self.per_file.keys().filter(|k| stale(k)).cloned().collect();
        if gone.is_empty() {
            return Vec::new();
        }
        let used = &mut self.used;
        self.chunks.retain(|(k, _), (len, _)| {
            let keep = !gone.contains(k);
            if !keep {
                *used -= *len;
            }
            keep
        });
        self.order.retain(|_, (k, _)| !gone.contains(k));
        self.per_file.retain(|k, _| !gone.contains(k));
        self.evictions += 1;
        gone.into_iter().collect()
    }

    /// Record a newly cached chunk. Returns the chunks to drop to stay within the limit (never
    /// the one just added), each with whether its file holds no chunk any more.
    pub fn insert(&mut self, key: &str, idx: u64, len: u64) -> Vec<(String, u64, bool)> {
        if self.touch(key, idx) {
            return Vec::new();
        }
        self.tick += 1;
        let k = (key.to_string(), idx);
        self.chunks.insert(k.clone(), (len, self.tick));
        self.order.insert(self.tick, k);
        *self.per_file.entry(key.to_string()).or_default() += 1;
        self.used += len;
        let mut dropped = Vec::new();
        while self.used > self.limit && self.chunks.len() > 1 {
            let Some((_, (fk, fi))) = self.order.pop_first() else {
                break;
            };
            if let Some((l, _)) = self.chunks.remove(&(fk.clone(), fi)) {
                self.used -= l;
            }
            let left = self.per_file.get_mut(&fk).map(|n| {
                *n -= 1;
                *n
            });
            let empty = left == Some(0);
            if empty {
                self.per_file.remove(&fk);
            }
            self.evictions += 1;
            dropped.push((fk, fi, empty));
        }
        dropped
    }
}

/// Counters shown in `.omnisync/status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Ranged reads sent to the remote (one per chunk fetched).
    pub remote_reads: AtomicU64,
    pub remote_bytes: AtomicU64,
    /// Chunks served from the cache.
    pub cache_hits: AtomicU64,
    pub refreshes: AtomicU64,
}

/// What `omnisync mount` was asked for.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub refresh: Duration,
    /// A remote read not answered within this fails with EIO.
    pub read_timeout: Duration,
    /// The agent's state database (may not exist yet).
    pub db: PathBuf,
}

/// The shared state of a mount: the tree, the cache and the counters.
pub struct View {
    job: Job,
    remote: Arc<dyn Remote>,
    filter: Filter,
    db: PathBuf,
    table: RwLock<Arc<InodeTable>>,
    cache: Mutex<Cache>,
    /// Chunks being fetched, by (file key, chunk).
    inflight: Mutex<HashSet<(String, u64)>>,
    inflight_cv: Condvar,
    timeout: Duration,
    pub stats: Stats,
    mounted: String,
    refreshed: Mutex<(String, Option<String>)>,
}

struct Cache {
    dir: PathBuf,
    lru: Lru,
    /// The last cache file opened for reading (sequential reads hit it again and again).
    open: Option<(String, Arc<std::fs::File>)>,
    /// `DIR/lock`, held (flock) while mounted: one mount per cache folder.
    _lock: std::fs::File,
}

/// The cache folder's index of its chunks, written at a clean unmount and read (then removed)
/// by the next mount: one line per chunk, `KEY CHUNK LENGTH`, least recently used first.
const INDEX: &str = "index";
const INDEX_HEADER: &str = "omnisync mount cache v1, chunk 1048576";

/// Errors of a read, as the errno the caller gets.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    NotFound,
    Io,
}

impl View {
    /// List the remote and build the view. Errors are worded for the user.
    pub fn new(job: &Job, remote: Box<dyn Remote>, o: &MountOptions) -> Result<View, String> {
        let filter = Filter::new(&job.include, &job.exclude).map_err(|e| e.to_string())?;
        let cache = Cache::open(&o.cache_dir, o.cache_size, &job.name)?;
        let view = View {
            job: job.clone(),
            remote: Arc::from(remote),
            filter,
            db: o.db.clone(),
            table: RwLock::new(Arc::new(InodeTable::build(
                &Tree::new(),
                &HashMap::new(),
                now_ns(),
                None,
            ))),
            cache: Mutex::new(cache),
            inflight: Mutex::new(HashSet::new()),
            inflight_cv: Condvar::new(),
            timeout: o.read_timeout,
            stats: Stats::default(),
            mounted: crate::engine::now_rfc3339(),
            refreshed: Mutex::new((String::new(), None)),
        };
        match view.remote.root_status() {
            RootStatus::Dir => {}
            RootStatus::Missing => {
                return Err(format!("remote_path {} does not exist", job.remote_path))
            }
            RootStatus::NotDir => {
                return Err(format!(
                    "remote_path {} is not a directory",
                    job.remote_path
                ))
            }
            RootStatus::Unreadable(e) => {
                return Err(format!(
                    "remote_path {} cannot be read: {e}",
                    job.remote_path
                ))
            }
        }
        view.refresh();
        Ok(view)
    }

    pub fn table(&self) -> Arc<InodeTable> {
        self.table.read().unwrap().clone()
    }

    /// Re-list the remote and swap the tree. Folders whose listing failed keep what the base
    /// says of them.
    pub fn refresh(&self) {
        let t0 = Instant::now();
        let empty = Base::new();
        let r = scan::scan(
            self.remote.as_ref(),
            &empty,
            &ScanOptions {
                filter: &self.filter,
                side: Side::Remote,
                hash: false,
                threads: 2,
            },
        );
        let mut tree = r.tree;
        let mut error = None;
        if !r.unknown.is_empty() || !r.errors.is_empty() {
            let msg = r
                .errors
                .first()
                .map(|(p, m)| format!("{p}: {m}"))
                .unwrap_or_else(|| format!("listing {:?} failed", r.unknown[0]));
            tracing::warn!("mount {}: listing the remote: {msg}", self.job.name);
            error = Some(msg);
            let base = self.load_base().unwrap_or_default();
            for dir in &r.unknown {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                for (p, e) in tree_from_base(&base) {
                    if p.starts_with(&prefix) {
                        tree.entry(p).or_insert(e);
                    }
                }
            }
        }
        let prev = self.table();
        let links = self.read_links(&tree, &prev);
        let next = InodeTable::build(&tree, &links, now_ns(), Some(&prev));
        tracing::debug!(
            "mount {}: tree of {} paths listed in {:?}",
            self.job.name,
            next.len(),
            t0.elapsed()
        );
        if error.is_none() {
            self.drop_stale(&next);
        }
        *self.table.write().unwrap() = Arc::new(next);
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        *self.refreshed.lock().unwrap() = (crate::engine::now_rfc3339(), error);
    }

    /// Drop the cached chunks of files that are gone or whose size or mtime changed (a key no
    /// file of a complete listing has), this mount's or a previous one's.
    fn drop_stale(&self, table: &InodeTable) {
        if self.cache.lock().unwrap().lru.used() == 0 {
            return;
        }
        let live: HashSet<String> = table
            .nodes
            .values()
            .filter(|n| n.kind == Kind::File)
            .map(|n| cache_key(&n.path, n.size, n.mtime))
            .collect();
        let mut cache = self.cache.lock().unwrap();
        let gone = cache.lru.drop_files(|k| !live.contains(k));
        for k in &gone {
            cache.forget_file(k);
        }
        if !gone.is_empty() {
            tracing::debug!(
                "mount {}: dropped the cache of {} changed or removed files",
                self.job.name,
                gone.len()
            );
        }
    }

    /// Write the cache's index so that the next mount reuses what is cached (a clean unmount).
    pub fn save_cache(&self) {
        if let Err(e) = self.cache.lock().unwrap().save_index() {
            tracing::warn!(
                "mount {}: cannot save the cache index (the next mount starts empty): {e}",
                self.job.name
            );
        }
    }

    /// The targets of the symlinks in `tree`: a link listed with the same mtime as before keeps
    /// the target read then, others are read (one request each). Links that cannot be read are
    /// left out of the view (logged); a backend that cannot read links at all is asked once.
    fn read_links(&self, tree: &Tree, prev: &InodeTable) -> HashMap<String, String> {
        let mut links = HashMap::new();
        for (path, e) in tree.iter().filter(|(_, e)| e.kind == Kind::Symlink) {
            let known = prev
                .ino_of(path)
                .and_then(|i| prev.get(i))
                .filter(|n| n.kind == Kind::Symlink && n.mtime == e.mtime)
                .and_then(|n| n.link.clone());
            if let Some(target) = known {
                links.insert(path.clone(), target);
                continue;
            }
            match self.remote.read_link(path) {
                Ok(target) => {
                    links.insert(path.clone(), target);
                }
                Err(err) if err.is_read_link_unsupported() => {
                    tracing::debug!("mount {}: symlinks not shown: {err}", self.job.name);
                    break;
                }
                Err(err) => tracing::warn!("mount {}: symlink not shown: {err}", self.job.name),
            }
        }
        links
    }

    fn load_base(&self) -> Option<Base> {
        if !self.db.exists() {
            return None;
        }
        let mut store = crate::state::Store::open(&self.db).ok()?;
        let id = store.job_id(&self.job.name).ok()?;
        store.load_base(id).ok()
    }

    /// Bytes `offset .. offset + size` of file `ino`, through the cache. Requests run on
    /// several threads: a chunk being fetched by one is waited for, not fetched twice.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        let table = self.table();
        let node = table.get(ino).ok_or(ReadError::NotFound)?;
        if node.kind != Kind::File {
            return Err(ReadError::Io);
        }
        let key = cache_key(&node.path, node.size, node.mtime);
        let range = chunks_for(offset, size as u64, node.size);
        let end = (offset + size as u64).min(node.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for idx in range {
            let chunk_start = idx * CHUNK;
            let want_from = offset.max(chunk_start);
            let want_to = end.min(chunk_start + chunk_len(idx, node.size));
            let want = (want_to - want_from) as usize;
            if let Some(buf) = self.cached(&key, idx, want_from, want)? {
                let short = buf.len() < want;
                if out.is_empty() {
                    out = buf; // one chunk (the usual case): no second copy
                } else {
                    out.extend_from_slice(&buf);
                }
                if short {
                    break;
                }
                continue;
            }
            let fetched = self.fetch(&node.path, idx, node.size);
            if let Ok(data) = &fetched {
                self.cache
                    .lock()
                    .unwrap()
                    .store(&key, idx, data, &self.job.name);
            }
            self.inflight.lock().unwrap().remove(&(key.clone(), idx));
            self.inflight_cv.notify_all();
            let data = fetched?;
            let from = (want_from - chunk_start) as usize;
            let to = ((want_to - chunk_start) as usize).min(data.len());
            if from < to {
                out.extend_from_slice(&data[from..to]);
            }
            if to < (want_to - chunk_start) as usize {
                break; // the file is shorter than listed: return what there is
            }
        }
        Ok(out)
    }

    /// `len` bytes at `pos` from the cached chunk `idx`; `None` when it is not cached, and then
    /// the caller owns fetching it (marked in flight) and must clear the mark.
    fn cached(
        &self,
        key: &str,
        idx: u64,
        pos: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let t0 = Instant::now();
        loop {
            // The file is read outside the lock (reads run in parallel); a chunk dropped meanwhile
            // (its space given back: zeros) shows in the eviction count, and is read again
            // under the lock.
            let found = {
                let mut cache = self.cache.lock().unwrap();
                if cache.lru.touch(key, idx) {
                    Some((cache.file(key), cache.lru.evictions()))
                } else {
                    None
                }
            };
            if let Some((file, evictions)) = found {
                let mut r = file.and_then(|f| pread(&f, pos, len));
                if r.is_ok() {
                    let mut cache = self.cache.lock().unwrap();
                    if cache.lru.evictions() != evictions {
                        r = match cache.lru.contains(key, idx) {
                            true => cache.file(key).and_then(|f| pread(&f, pos, len)),
                            false => Err(std::io::Error::other("dropped while read")),
                        };
                    }
                }
                match r {
                    Ok(buf) => {
                        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(buf));
                    }
                    Err(e) => tracing::warn!("mount {}: cache read {key}: {e}", self.job.name),
                }
            }
            let mut inflight = self.inflight.lock().unwrap();
            if inflight.insert((key.to_string(), idx)) {
                return Ok(None);
            }
            if t0.elapsed() > self.timeout {
                tracing::error!(
                    "mount {}: waited {:?} for a chunk another read is fetching",
                    self.job.name,
                    self.timeout
                );
                return Err(ReadError::Io);
            }
            let _ = self
                .inflight_cv
                .wait_timeout(inflight, Duration::from_millis(200))
                .unwrap();
        }
    }

    /// One chunk from the remote, given up (EIO) after the read timeout: a hung connection
    /// never hangs the reader.
    fn fetch(&self, path: &str, idx: u64, size: u64) -> Result<Vec<u8>, ReadError> {
        let want = chunk_len(idx, size) as usize;
        self.stats.remote_reads.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("mount {}: fetch {path:?} chunk {idx}", self.job.name);
        let (tx, rx) = std::sync::mpsc::channel();
        let remote = self.remote.clone();
        let p = path.to_string();
        std::thread::spawn(move || {
            let _ = tx.send(fetch_chunk(remote.as_ref(), &p, idx * CHUNK, want));
        });
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(buf)) => {
                self.stats
                    .remote_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                Ok(buf)
            }
            Ok(Err(e)) if e.is_not_found() => Err(ReadError::NotFound),
            Ok(Err(e)) => {
                tracing::error!("mount {}: reading {path:?}: {e}", self.job.name);
                Err(ReadError::Io)
            }
            Err(_) => {
                tracing::error!(
                    "mount {}: reading {path:?}: no answer from the remote within {:?}",
                    self.job.name,
                    self.timeout
                );
                Err(ReadError::Io)
            }
        }
    }

    /// The text of `.omnisync/status`: `key: value` lines.
    pub fn status_text(&self) -> String {
        use std::fmt::Write;
        let table = self.table();
        let (refreshed, refresh_error) = self.refreshed.lock().unwrap().clone();
        let (cache_used, cache_limit) = {
            let c = self.cache.lock().unwrap();
            (c.lru.used(), c.lru.limit())
        };
        let mut s = String::new();
        let _ = writeln!(s, "job: {}", self.job.name);
        let _ = writeln!(s, "remote: {}", self.remote.describe());
        let _ = writeln!(s, "mounted: {}", self.mounted);
        let _ = writeln!(s, "tree_refreshed: {refreshed}");
        if let Some(e) = refresh_error {
            let _ = writeln!(s, "tree_error: {}", e.replace('\n', " "));
        }
        let _ = writeln!(s, "files: {}", table.files);
        let _ = writeln!(s, "dirs: {}", table.dirs);
        let _ = writeln!(s, "symlinks: {}", table.links);
        let store = if self.db.exists() {
            crate::state::Store::open(&self.db).ok()
        } else {
            None
        };
        match store
            .as_ref()
            .and_then(|st| st.last_run(&self.job.name).ok().flatten())
        {
            Some(r) => {
                let _ = writeln!(s, "last_run: {}", r.id);
                let _ = writeln!(s, "last_run_started: {}", r.started);
                let _ = writeln!(
                    s,
                    "last_run_finished: {}",
                    r.finished.as_deref().unwrap_or("running")
                );
                let _ = writeln!(
                    s,
                    "last_run_result: {}",
                    r.result.as_deref().unwrap_or("running")
                );
                let _ = writeln!(s, "last_run_bytes: {}", r.bytes);
                let _ = writeln!(s, "last_run_errors: {}", r.errors);
            }
            None => {
                let _ = writeln!(s, "last_run: never");
            }
        }
        let stats = store
            .as_ref()
            .and_then(|st| st.journal_stats(Some(&self.job.name)).ok())
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        let _ = writeln!(s, "pending_changes: {}", stats.pending);
        if let Some(t) = stats.oldest_pending {
            let _ = writeln!(s, "oldest_pending: {t}");
        }
        let _ = writeln!(
            s,
            "remote_reads: {}",
            self.stats.remote_reads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "remote_bytes: {}",
            self.stats.remote_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "cache_hits: {}",
            self.stats.cache_hits.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "cache_bytes: {cache_used}");
        let _ = writeln!(s, "cache_limit: {cache_limit}");
        s
    }

    /// The text of `.omnisync/journal`: the job's most recent journal entries, oldest first.
    pub fn journal_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if !self.db.exists() {
            return s;
        }
        let Ok(store) = crate::state::Store::open(&self.db) else {
            return s;
        };
        let rows = store
            .query_changes(&crate::state::JournalFilter {
                job: Some(self.job.name.clone()),
                limit: 1000,
                ..Default::default()
            })
            .unwrap_or_default();
        for r in rows {
            let _ = write!(s, "{} {} {}", r.time, r.kind, r.path);
            if let Some(to) = &r.to {
                let _ = write!(s, " -> {to}");
            }
            let _ = write!(s, " {}", r.state);
            if let Some(b) = r.batch {
                let _ = write!(s, " batch={b}");
            }
            let _ = writeln!(s);
        }
        s
    }
}

/// `want` bytes (fewer at the end of the file) from `offset` of `path`.
fn fetch_chunk(
    remote: &dyn Remote,
    path: &str,
    offset: u64,
    want: usize,
) -> Result<Vec<u8>, RemoteError> {
    let mut r = remote.open_read(path, offset)?;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RemoteError::io("read", path, e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

impl Cache {
    /// Lock the cache folder and take over the chunks a previous mount indexed at its clean
    /// unmount (those that still fit `limit`, most recently used kept); anything else of ours in
    /// the folder (`*.chunks` not indexed: a crash) is removed. The index itself is removed
    /// until the next clean unmount writes it again, so a crash never leaves a stale one.
    fn open(dir: &Path, limit: u64, job: &str) -> Result<Cache, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the cache folder {}: {e}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        // SAFETY: a valid open descriptor; the lock goes with it.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "the cache folder {} is in use by another mount (give this one its own \
                 with --cache-dir)",
                dir.display()
            ));
        }
        let mut cache = Cache {
            dir: dir.to_path_buf(),
            lru: Lru::new(limit),
            open: None,
            _lock: lock,
        };
        let index = dir.join(INDEX);
        let text = std::fs::read_to_string(&index).ok();
        let _ = std::fs::remove_file(&index);
        let mut lens: HashMap<String, Option<u64>> = HashMap::new();
        let mut taken = 0u64;
        if let Some(text) = text {
            let mut lines = text.lines();
            if lines.next() != Some(INDEX_HEADER) {
                tracing::warn!("mount {job}: {} is not ours; ignored", index.display());
            } else {
                for line in lines {
                    let Some((key, idx, len)) = parse_index_line(line) else {
                        tracing::warn!("mount {job}: bad line in the cache index: {line:?}");
                        continue;
                    };
                    // The chunk must still be in its file.
                    let file_len = *lens.entry(key.to_string()).or_insert_with(|| {
                        std::fs::symlink_metadata(dir.join(key))
                            .ok()
                            .filter(|m| m.is_file())
                            .map(|m| m.len())
                    });
                    if file_len.is_some_and(|l| l >= idx * CHUNK + len) {
                        let dropped = cache.lru.insert(key, idx, len);
                        cache.evict(dropped);
                        taken += 1;
                    }
                }
            }
        }
        let kept: HashSet<String> = cache.lru.files().map(str::to_string).collect();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".chunks") && !kept.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if taken > 0 {
            tracing::info!(
                "mount {job}: {} bytes cached by an earlier mount reused",
                cache.lru.used()
            );
        }
        Ok(cache)
    }

    /// Write the index of the cached chunks (see [`Cache::open`]): the chunks' data is made
    /// durable first, then the index is written under a temporary name and renamed.
    fn save_index(&mut self) -> std::io::Result<()> {
        use std::fmt::Write as _;
        use std::io::Write as _;
        use std::os::fd::AsRawFd;
        self.open = None;
        let mut text = String::with_capacity(64 * 1024);
        text.push_str(INDEX_HEADER);
        text.push('\n');
        for (key, idx, len) in self.lru.entries() {
            let _ = writeln!(text, "{key} {idx} {len}");
        }
        let tmp = self.dir.join("index.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        // SAFETY: a valid open descriptor; syncfs flushes the filesystem that holds it.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(INDEX))
    }

    /// Remove a file's cache file.
    fn forget_file(&mut self, key: &str) {
        if self.open.as_ref().map(|(k, _)| k.as_str()) == Some(key) {
            self.open = None;
        }
        let _ = std::fs::remove_file(self.dir.join(key));
    }

    /// Give back the disk space of chunks the LRU dropped.
    fn evict(&mut self, dropped: Vec<(String, u64, bool)>) {
        for (fk, fi, empty) in dropped {
            if empty {
                self.forget_file(&fk);
            } else {
                if self.open.as_ref().map(|(k, _)| k.as_str()) == Some(fk.as_str()) {
                    self.open = None;
                }
                punch_hole(&self.dir.join(&fk), fi * CHUNK, CHUNK);
            }
        }
    }

    /// The open cache file of `key` (the last one is kept open: sequential reads hit it again
    /// and again).
    fn file(&mut self, key: &str) -> std::io::Result<Arc<std::fs::File>> {
        if let Some((k, f)) = &self.open {
            if k == key {
                return Ok(f.clone());
            }
        }
        let f = Arc::new(std::fs::File::open(self.dir.join(key))?);
        self.open = Some((key.to_string(), f.clone()));
        Ok(f)
    }

    #[cfg(test)]
    fn read_at(&mut self, key: &str, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        pread(&*self.file(key)?, pos, len)
    }

    /// Keep a fetched chunk; drop what the limit asks. A failure to cache is logged, not fatal.
    fn store(&mut self, key: &str, idx: u64, data: &[u8], job: &str) {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(key);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(data, idx * CHUNK));
        if let Err(e) = written {
            tracing::warn!("mount {job}: cannot cache {}: {e}", path.display());
            return;
        }
        let dropped = self.lru.insert(key, idx, data.len() as u64);
        self.evict(dropped);
    }
}

/// Up to `len` bytes of `f` at `pos` (fewer at its end), into a buffer that is not zeroed first.
fn pread(f: &std::fs::File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let got = buf.len();
        // SAFETY: the kernel writes at most `len - got` bytes into the vector's spare capacity,
        // and only the bytes it reports written are then counted as initialised.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf.as_mut_ptr().add(got).cast(),
                len - got,
                (pos + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: `n` more bytes were initialised by pread, within the capacity.
        unsafe { buf.set_len(got + n as usize) };
    }
    Ok(buf)
}

/// Give a dropped chunk's disk space back (the file keeps its length).
fn punch_hole(path: &Path, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        // SAFETY: a valid open descriptor; fallocate touches only that file.
        unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            );
        }
    }
}

/// `KEY CHUNK LENGTH` of the cache index; the key must be a name [`cache_key`] makes (so a
/// tampered index cannot point outside the folder).
fn parse_index_line(line: &str) -> Option<(&str, u64, u64)> {
    let mut it = line.split(' ');
    let (key, idx, len) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let hex = key.strip_suffix(".chunks")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (idx, len): (u64, u64) = (idx.parse().ok()?, len.parse().ok()?);
    if len == 0 || len > CHUNK || idx > u64::MAX / CHUNK - 1 {
        return None;
    }
    Some((key, idx, len))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The kernel's read-ahead for a mount, in KiB: FUSE starts every mount at 128 KiB, so a
/// sequential read reaches us in 128-256 KiB requests, one at a time. With 4 MiB it comes in
/// 1 MiB requests (the most FUSE sends), several at once: here a 512 MiB file re-read from the
/// disk cache went from 972 to 1455 MiB/s and a first read from 396 to 580 MiB/s. A random read
/// still starts with a small window.
const READ_AHEAD_KB: u32 = 4 * (CHUNK as u32 >> 10);

/// Raise the mount's read-ahead (its `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`). Needs root;
/// without it the kernel's default stays (logged, not an error).
#[cfg(feature = "mount")]
fn set_read_ahead(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let r = std::fs::metadata(dir).and_then(|m| {
        let dev = m.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        std::fs::write(
            format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
            READ_AHEAD_KB.to_string(),
        )
    });
    if let Err(e) = r {
        tracing::debug!("mount: read-ahead left at the kernel's default: {e}");
    }
}

/// `/proc/mounts` spells a space `\040` (and tab, newline, backslash likewise).
pub fn proc_mounts_escape(path: &str) -> String {
    path.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

/// Is `dir` a mount point now?
pub fn is_mounted(dir: &Path) -> bool {
    let want = proc_mounts_escape(&dir.to_string_lossy());
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

#[cfg(feature = "mount")]
mod fs {
    use super::*;
    use fuser::{
        Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
        InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
        ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
    };
    use std::ffi::OsStr;

    fn ns_to_time(ns: i64) -> SystemTime {
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
        }
    }

    fn file_type(kind: Kind) -> FileType {
        match kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
        }
    }

    /// How long the kernel may keep names and attributes (the tree changes only on refresh).
    const TTL: Duration = Duration::from_secs(1);

    pub struct MountFs {
        pub view: Arc<View>,
        pub uid: u32,
        pub gid: u32,
        /// The cache key of each file when it was last opened: a file opened again unchanged
        /// keeps the kernel's page cache of it.
        pub opened: Mutex<HashMap<u64, String>>,
    }

    impl MountFs {
        fn attr(&self, ino: u64) -> Option<FileAttr> {
            let (kind, size, mtime) = match ino {
                META_DIR_INO => (FileType::Directory, 0, now_ns()),
                STATUS_INO => (
                    FileType::RegularFile,
                    self.view.status_text().len() as u64,
                    now_ns(),
                ),
                JOURNAL_INO => (
                    FileType::RegularFile,
                    self.view.journal_text().len() as u64,
                    now_ns(),
                ),
                _ => {
                    let t = self.view.table();
                    let n = t.get(ino)?;
                    (file_type(n.kind), n.size, n.mtime)
                }
            };
            let t = ns_to_time(mtime);
            let dir = kind == FileType::Directory;
            Some(FileAttr {
                ino: INodeNo(ino),
                size,
                blocks: size.div_ceil(512),
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                kind,
                perm: match kind {
                    FileType::Directory => 0o555,
                    FileType::Symlink => 0o777,
                    _ => 0o444,
                },
                nlink: if dir { 2 } else { 1 },
                uid: self.uid,
                gid: self.gid,
                rdev: 0,
                blksize: CHUNK as u32,
                flags: 0,
            })
        }
    }

    impl Filesystem for MountFs {
        fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
            // Reads of up to a chunk at a time; page cache dropped when a file's mtime changes.
            if let Err(max) = config.set_max_readahead(CHUNK as u32) {
                let _ = config.set_max_readahead(max);
            }
            let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
            let _ = config.add_capabilities(
                InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
            );
            Ok(())
        }

        fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
            let Some(name) = name.to_str() else {
                return reply.error(Errno::ENOENT);
            };
            let ino = match (parent.0, name) {
                (ROOT_INO, META_DIR) => Some(META_DIR_INO),
                (META_DIR_INO, "status") => Some(STATUS_INO),
                (META_DIR_INO, "journal") => Some(JOURNAL_INO),
                (META_DIR_INO, _) => None,
                (p, n) => self.view.table().lookup(p, n),
            };
            match ino.and_then(|i| self.attr(i)) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            }
        }

        fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
            match self.attr(ino.0) {
                Some(a) => reply.attr(&TTL, &a),
                None => reply.error(Errno::ENOENT),
            }
        }

        fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
            if !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) {
                return reply.error(Errno::EROFS);
            }
            match ino.0 {
                // Regenerated on each read, whatever size a stat said.
                STATUS_INO | JOURNAL_INO => {
                    reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
                }
                i => {
                    let t = self.view.table();
                    let Some(n) = t.get(i) else {
                        return reply.error(Errno::ENOENT);
                    };
                    let key = cache_key(&n.path, n.size, n.mtime);
                    let same = self.opened.lock().unwrap().insert(i, key.clone()) == Some(key);
                    let flags = if same {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(0), flags)
                }
            }
        }

        fn read(
            &self,
            _req: &Request,
            ino: INodeNo,
            _fh: FileHandle,
            offset: u64,
            size: u32,
            _flags: OpenFlags,
            _lock_owner: Option<LockOwner>,
            reply: ReplyData,
        ) {
            let text = match ino.0 {
                STATUS_INO => Some(self.view.status_text()),
                JOURNAL_INO => Some(self.view.journal_text()),
                _ => None,
            };
            if let Some(text) = text {
                let b = text.as_bytes();
                let from = (offset as usize).min(b.len());
                let to = (from + size as usize).min(b.len());
                return reply.data(&b[from..to]);
            }
            match self.view.read(ino.0, offset, size) {
                Ok(data) => reply.data(&data),
                Err(ReadError::NotFound) => reply.error(Errno::ENOENT),
                Err(ReadError::Io) => reply.error(Errno::EIO),
            }
        }

        // A remote symlink's text, as listed (never resolved here: the kernel resolves it
        // against this machine's tree, as for any symlink).
        fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
            let t = self.view.table();
            match t.get(ino.0).and_then(|n| n.link.as_ref()) {
                Some(target) => reply.data(target.as_bytes()),
                None if t.get(ino.0).is_some() => reply.error(Errno::EINVAL),
                None => reply.error(Errno::ENOENT),
            }
        }

        fn flush(
            &self,
            _req: &Request,
            _ino: INodeNo,
            _fh: FileHandle,
            _lock_owner: LockOwner,
            reply: ReplyEmpty,
        ) {
            reply.ok();
        }

        // No extended attributes: answered without fuser's "not implemented" warnings.
        fn getxattr(
            &self,
            _req: &Request,
            _ino: INodeNo,
            _name: &OsStr,
            _size: u32,
            reply: ReplyXattr,
        ) {
            reply.error(Errno::ENOSYS);
        }

        fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
            reply.error(Errno::ENOSYS);
        }

        fn readdir(
            &self,
            _req: &Request,
            ino: INodeNo,
            _fh: FileHandle,
            offset: u64,
            mut reply: ReplyDirectory,
        ) {
            match self.entries(ino.0, offset, 1024) {
                Err(e) => reply.error(e),
                Ok(list) => {
                    for (child, pos, kind, name) in list {
                        if reply.add(INodeNo(child), pos, kind, name) {
                            break;
                        }
                    }
                    reply.ok()
                }
            }
        }

        // With attributes: `ls -l` of a folder needs no lookup per entry.
        fn readdirplus(
            &self,
            _req: &Request,
            ino: INodeNo,
            _fh: FileHandle,
            offset: u64,
            mut reply: ReplyDirectoryPlus,
        ) {
            match self.entries(ino.0, offset, 1024) {
                Err(e) => reply.error(e),
                Ok(list) => {
                    for (child, pos, _, name) in list {
                        let Some(attr) = self.attr(child) else {
                            continue;
                        };
                        if reply.add(INodeNo(child), pos, name, &TTL, &attr, Generation(0)) {
                            break;
                        }
                    }
                    reply.ok()
                }
            }
        }
    }

    impl MountFs {
        /// Up to `max` entries of folder `ino` after position `offset`, each with its own
        /// position (1-based): `.`, `..`, the virtual `.omnisync` at the root, then children.
        fn entries(
            &self,
            ino: u64,
            offset: u64,
            max: usize,
        ) -> Result<Vec<(u64, u64, FileType, String)>, Errno> {
            let mut fixed: Vec<(u64, FileType, &str)> = Vec::new();
            let t = self.view.table();
            let mut children = None;
            if ino == META_DIR_INO {
                fixed.push((META_DIR_INO, FileType::Directory, "."));
                fixed.push((ROOT_INO, FileType::Directory, ".."));
                fixed.push((STATUS_INO, FileType::RegularFile, "status"));
                fixed.push((JOURNAL_INO, FileType::RegularFile, "journal"));
            } else {
                let n = t.get(ino).ok_or(Errno::ENOENT)?;
                if n.kind != Kind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                fixed.push((ino, FileType::Directory, "."));
                fixed.push((n.parent, FileType::Directory, ".."));
                if ino == ROOT_INO {
                    fixed.push((META_DIR_INO, FileType::Directory, META_DIR));
                }
                children = Some(&n.children);
            }
            let mut out = Vec::new();
            for (i, (child, kind, name)) in fixed.iter().enumerate().skip(offset as usize) {
                out.push((*child, i as u64 + 1, *kind, name.to_string()));
            }
            let start = (offset as usize).saturating_sub(fixed.len());
            for (j, (name, &child)) in children.into_iter().flatten().enumerate().skip(start) {
                if out.len() >= max {
                    break;
                }
                let kind = t
                    .get(child)
                    .map_or(FileType::RegularFile, |c| file_type(c.kind));
                out.push((child, (fixed.len() + j) as u64 + 1, kind, name.clone()));
            }
            Ok(out)
        }
    }
}

/// Mount `view` at `o.dir` and serve it until `stop` is set or someone unmounts it
/// (`fusermount3 -u`, `umount`). The tree is re-listed every `o.refresh`.
#[cfg(feature = "mount")]
pub fn serve(
    view: View,
    o: &MountOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use fuser::{Config, MountOption};
    let view = Arc::new(view);
    let fsys = fs::MountFs {
        view: view.clone(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        opened: Mutex::new(HashMap::new()),
    };
    let mut config = Config::default();
    // Several request threads: a slow remote read does not stall stat, readdir or cached reads.
    config.n_threads = Some(4);
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("omnisync:{}", view.job.name)),
        MountOption::Subtype("omnisync".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    let session = fuser::spawn_mount(fsys, &o.dir, &config)
        .map_err(|e| format!("cannot mount on {}: {e}", o.dir.display()))?;
    tracing::info!("mounted job {} on {}", view.job.name, o.dir.display());
    set_read_ahead(&o.dir);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let view = view.clone();
        let done = done.clone();
        let every = o.refresh;
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= every {
                    view.refresh();
                    last = Instant::now();
                }
            }
        })
    };
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let unmounted_elsewhere = session.guard.is_finished();
    let r = if unmounted_elsewhere {
        session.join()
    } else {
        session.umount_and_join()
    };
    let _ = refresher.join();
    view.save_cache();
    if is_mounted(&o.dir) {
        // Busy or the session died: detach it rather than leave a dead mount.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&o.dir)
            .status();
    }
    tracing::info!("unmounted {}", o.dir.display());
    r.map_err(|e| format!("unmounting {}: {e}", o.dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;

    fn tree(paths: &[(&str, Option<u64>)]) -> Tree {
        paths
            .iter()
            .map(|(p, s)| {
                let e = match s {
                    Some(n) => Entry::file(*n, 5),
                    None => Entry::dir(7),
                };
                (p.to_string(), e)
            })
            .collect()
    }

    #[test]
    fn table_links_children_and_implies_missing_folders() {
        let t = InodeTable::build(
            &tree(&[("a", None), ("a/x", Some(3)), ("b/c/y", Some(4))]),
            &HashMap::new(),
            0,
            None,
        );
        let a = t.lookup(ROOT_INO, "a").unwrap();
        let x = t.lookup(a, "x").unwrap();
        assert_eq!(t.get(x).unwrap().size, 3);
        assert_eq!(t.get(x).unwrap().parent, a);
        let b = t.lookup(ROOT_INO, "b").unwrap();
        let c = t.lookup(b, "c").unwrap();
        assert_eq!(t.get(c).unwrap().kind, Kind::Dir);
        assert_eq!(t.ino_of("b/c/y"), t.lookup(c, "y"));
        assert_eq!((t.files, t.dirs), (2, 3));
        assert!(t.lookup(ROOT_INO, "zz").is_none());
    }

    #[test]
    fn inodes_survive_a_refresh_and_new_paths_get_new_ones() {
        let t1 = InodeTable::build(
            &tree(&[("a", Some(1)), ("b", Some(2))]),
            &HashMap::new(),
            0,
            None,
        );
        let t2 = InodeTable::build(
            &tree(&[("b", Some(9)), ("c", Some(3))]),
            &HashMap::new(),
            0,
            Some(&t1),
        );
        assert_eq!(t1.ino_of("b"), t2.ino_of("b"));
        assert_eq!(t2.get(t2.ino_of("b").unwrap()).unwrap().size, 9);
        assert!(t2.ino_of("a").is_none());
        let c = t2.ino_of("c").unwrap();
        assert!(c != t1.ino_of("a").unwrap() && c != t1.ino_of("b").unwrap());
    }

    #[test]
    fn remote_omnisync_folder_is_hidden_and_symlinks_need_their_target() {
        let mut tr = tree(&[
            (".omnisync", None),
            (".omnisync/x", Some(1)),
            ("f", Some(1)),
        ]);
        tr.insert(
            "l".into(),
            Entry {
                kind: Kind::Symlink,
                ..Entry::file(0, 0)
            },
        );
        // A link whose target could not be read is left out; one with its target is shown.
        let t = InodeTable::build(&tr, &HashMap::new(), 0, None);
        assert!(t.lookup(ROOT_INO, ".omnisync").is_none());
        assert!(t.lookup(ROOT_INO, "l").is_none());
        assert!(t.lookup(ROOT_INO, "f").is_some());
        let links = HashMap::from([("l".to_string(), "../x/y".to_string())]);
        let t = InodeTable::build(&tr, &links, 0, None);
        let l = t.get(t.lookup(ROOT_INO, "l").unwrap()).unwrap();
        assert_eq!((l.kind, l.size), (Kind::Symlink, 6));
        assert_eq!(l.link.as_deref(), Some("../x/y"));
        assert_eq!((t.files, t.dirs, t.links), (1, 0, 1));
    }

    #[test]
    fn chunk_math() {
        assert_eq!(chunks_for(0, 10, 5), 0..1);
        assert_eq!(chunks_for(0, 0, 5), 0..0);
        assert_eq!(chunks_for(10, 4, 5), 0..0);
        assert_eq!(chunks_for(CHUNK - 1, 2, 10 * CHUNK), 0..2);
        assert_eq!(chunks_for(CHUNK, CHUNK, 10 * CHUNK), 1..2);
        assert_eq!(chunks_for(3 * CHUNK + 5, 128 << 10, 256 * CHUNK), 3..4);
        assert_eq!(chunks_for(9 * CHUNK, 5 * CHUNK, 10 * CHUNK), 9..10);
        assert_eq!(chunk_len(0, 5), 5);
        assert_eq!(chunk_len(1, CHUNK + 7), 7);
        assert_eq!(chunk_len(2, CHUNK + 7), 0);
    }

    #[test]
    fn cache_key_changes_with_size_or_mtime() {
        let k = cache_key("a", 1, 2);
        assert_eq!(k, cache_key("a", 1, 2));
        assert_ne!(k, cache_key("a", 1, 3));
        assert_ne!(k, cache_key("a", 2, 2));
        assert_ne!(k, cache_key("b", 1, 2));
    }

    #[test]
    fn lru_drops_least_recently_used_within_the_limit() {
        let mut l = Lru::new(3 * CHUNK);
        assert!(l.insert("f", 0, CHUNK).is_empty());
        assert!(l.insert("f", 1, CHUNK).is_empty());
        assert!(l.insert("g", 0, CHUNK).is_empty());
        assert!(l.touch("f", 0));
        // Over the limit: f/1 is the least recently used.
        assert_eq!(l.insert("g", 1, CHUNK), vec![("f".to_string(), 1, false)]);
        assert_eq!(l.used(), 3 * CHUNK);
        assert!(!l.contains("f", 1));
        assert_eq!(l.insert("h", 0, CHUNK), vec![("g".to_string(), 0, false)]);
        assert!(!l.touch("g", 0));
        // f's last chunk goes: its file holds none any more.
        assert_eq!(l.insert("i", 0, CHUNK), vec![("f".to_string(), 0, true)]);
        // Re-inserting a cached chunk only touches it.
        assert!(l.insert("h", 0, CHUNK).is_empty());
        assert_eq!(l.used(), 3 * CHUNK);
    }

    #[test]
    fn cache_index_survives_a_remount_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (cache_key("a", 3 * CHUNK, 1), cache_key("b", CHUNK, 1));
        {
            let mut c = Cache::open(dir.path(), 4 * CHUNK, "t").unwrap();
            // One mount per cache folder.
            let e = Cache::open(dir.path(), CHUNK, "t").err().unwrap();
            assert!(e.contains("in use by another mount"), "{e}");
            for idx in 0..3 {
                c.store(&a, idx, &vec![idx as u8 + 1; CHUNK as usize], "t");
            }
            c.store(&b, 0, b"bb", "t");
            assert!(c.lru.touch(&a, 0));
            c.save_index().unwrap();
        }
        std::fs::write(dir.path().join(cache_key("x", 1, 1)), b"left by a crash").unwrap();
        // Reopened with room for 2 MiB: the two most recently used chunks stay (b's and a/0).
        let mut c = Cache::open(dir.path(), 2 * CHUNK, "t").unwrap();
        assert!(!dir.path().join(INDEX).exists(), "index kept while mounted");
        assert!(!dir.path().join(cache_key("x", 1, 1)).exists());
        assert!(c.lru.contains(&a, 0) && c.lru.contains(&b, 0));
        assert!(!c.lru.contains(&a, 1) && !c.lru.contains(&a, 2));
        assert_eq!(c.lru.used(), CHUNK + 2);
        assert_eq!(c.read_at(&a, 5, 3).unwrap(), [1, 1, 1]);
        assert_eq!(c.read_at(&b, 0, 9).unwrap(), b"bb");
        // A stale file's chunks go with its cache file.
        assert_eq!(c.lru.drop_files(|k| k == b), vec![b.clone()]);
        c.forget_file(&b);
        assert!(!dir.path().join(&b).exists());
        assert_eq!(c.lru.used(), CHUNK);
        c.save_index().unwrap();
        drop(c);
        // Not ours, or damaged: ignored, and nothing else is trusted.
        std::fs::write(dir.path().join(INDEX), "something else\n").unwrap();
        let c = Cache::open(dir.path(), 2 * CHUNK, "t").unwrap();
        assert_eq!(c.lru.used(), 0);
        assert!(!dir.path().join(&a).exists());
    }

    #[test]
    fn cache_index_lines_name_only_our_files() {
        let k = cache_key("a", 1, 1);
        assert_eq!(
            parse_index_line(&format!("{k} 3 7")),
            Some((k.as_str(), 3, 7))
        );
        for bad in [
            format!("{k} 3"),
            format!("{k} 3 7 9"),
            format!("{k} 3 0"),
            format!("{k} 3 {}", CHUNK + 1),
            "../../etc/passwd 0 1".to_string(),
            format!("{}.chunks 0 1", "g".repeat(32)),
        ] {
            assert_eq!(parse_index_line(&bad), None, "{bad}");
        }
    }

    #[test]
    fn proc_mounts_spelling() {
        assert_eq!(proc_mounts_escape("/a b\\c"), "/a\\040b\\134c");
    }
}
