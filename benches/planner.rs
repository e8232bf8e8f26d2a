//! Criterion benchmarks for the pure planner and for scan + hash (issue 2, "Performance").
//!
//! `cargo bench --bench planner` (about two minutes). Targets: the planner over 100,000
//! entries under 100 ms; secure-mode hashing at least 2.5 GB/s on one core.
//!
//! Groups:
//! - `planner/*`: `plan::plan` over 100,000 entries (1,000 folders × 99 files), with local,
//!   remote and base all equal (the no-op re-run), and with 1% of the files changed locally
//!   plus one renamed folder.
//! - `scan/*`: `scan::scan` of a temp tree of 10,000 × 4 KiB files in 100 folders, listing
//!   only and with content hashes (compare = secure, nothing cached in the base).
//! - `hash/*`: `hash_file` of a 256 MiB file (page-cached), bytes throughput.
//! - `state/*`: loading the base of 100,000 entries from a SQLite file (page-cached), as
//!   every full run does before planning.

use std::cell::OnceCell;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use omnisync::filter::Filter;
use omnisync::job::Mode;
use omnisync::model::{ActionKind, Base, BaseRow, Entry, Side, Tree};
use omnisync::plan::{self, PlanInput, PlanOptions, RootState, SideView};
use omnisync::remote::local::{hash_file, LocalFs};
use omnisync::scan::{self, ScanOptions};

const DIRS: usize = 1_000;
const FILES_PER_DIR: usize = 99;
const MTIME: i64 = 1_700_000_000_123_456_789;

/// Three equal sides of 1,000 folders × 99 files = 100,000 entries each. Local entries carry
/// inodes (as a real local scan does), remote entries do not.
fn equal_trees() -> (Tree, Tree, Base) {
    let mut local = Tree::new();
    let mut remote = Tree::new();
    let mut base = Base::new();
    let mut ino = 1u64;
    for d in 0..DIRS {
        let dir = format!("dir{d:04}");
        let mut ld = Entry::dir(MTIME);
        ld.inode = Some(ino);
        ino += 1;
        let rd = Entry::dir(MTIME);
        base.insert(
            dir.clone(),
            BaseRow {
                local: Some(ld.clone()),
                remote: Some(rd.clone()),
            },
        );
        local.insert(dir.clone(), ld);
        remote.insert(dir.clone(), rd);
        for f in 0..FILES_PER_DIR {
            let path = format!("{dir}/file{f:03}.dat");
            let size = 4096 + (d * FILES_PER_DIR + f) as u64 % 1000;
            let mtime = MTIME + (f as i64) * 1_000_000_007;
            let mut le = Entry::file(size, mtime);
            le.inode = Some(ino);
            ino += 1;
            let re = Entry::file(size, mtime);
            base.insert(
                path.clone(),
                BaseRow {
                    local: Some(le.clone()),
                    remote: Some(re.clone()),
                },
            );
            local.insert(path.clone(), le);
            remote.insert(path, re);
        }
    }
    (local, remote, base)
}

/// From equal trees: 1% of the files changed locally (new size and mtime), and the local folder
/// `dir0500` renamed to `renamed/dir0500` (same inodes), as a user would do between runs.
fn changed_trees() -> (Tree, Tree, Base) {
    let (mut local, remote, base) = equal_trees();
    let mut n = 0;
    for e in local.values_mut() {
        if e.is_file() {
            n += 1;
            if n % 100 == 0 {
                e.size += 1;
                e.mtime += 60_000_000_000;
            }
        }
    }
    let moved: Vec<(String, Entry)> = local
        .iter()
        .filter(|(k, _)| *k == "dir0500" || k.starts_with("dir0500/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in moved {
        local.remove(&k);
        local.insert(format!("renamed/{k}"), v);
    }
    let mut r = Entry::dir(MTIME);
    r.inode = Some(u64::MAX);
    local.insert("renamed".into(), r);
    (local, remote, base)
}

fn run_plan(local: &Tree, remote: &Tree, base: &Base, o: &PlanOptions) -> plan::Plan {
    let ok = RootState::Ok;
    plan::plan(
        &PlanInput {
            local: SideView {
                tree: local,
                unknown: &[],
                root: &ok,
            },
            remote: SideView {
                tree: remote,
                unknown: &[],
                root: &ok,
            },
            base,
            copy_sources: &plan::NO_COPIES,
        },
        o,
    )
}

fn count(p: &plan::Plan, k: ActionKind) -> usize {
    p.actions.iter().filter(|a| a.kind == k).count()
}

fn bench_planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("planner");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let (local, remote, base) = equal_trees();
    let entries = local.len();
    assert_eq!(entries, DIRS * (FILES_PER_DIR + 1));
    g.throughput(Throughput::Elements(entries as u64));
    for mode in [Mode::MirrorUpload, Mode::Bidirectional] {
        let mut o = PlanOptions::new(mode);
        o.delete_orphans = true;
        let p = run_plan(&local, &remote, &base, &o);
        assert!(p.actions.is_empty(), "no-op plan has actions");
        assert!(p.guard.is_none());
        g.bench_function(format!("noop-100k/{}", mode.as_str()), |b| {
            b.iter(|| black_box(run_plan(&local, &remote, &base, &o)))
        });
    }

    let (local, remote, base) = changed_trees();
    for mode in [Mode::MirrorUpload, Mode::Bidirectional] {
        let mut o = PlanOptions::new(mode);
        o.delete_orphans = true;
        let p = run_plan(&local, &remote, &base, &o);
        assert_eq!(count(&p, ActionKind::MoveRemote), 1, "one folder move");
        let uploads = count(&p, ActionKind::Upload);
        assert!((900..=1000).contains(&uploads), "{uploads} uploads");
        assert!(p.guard.is_none());
        g.bench_function(
            format!("1pct-changed+renamed-folder-100k/{}", mode.as_str()),
            |b| b.iter(|| black_box(run_plan(&local, &remote, &base, &o))),
        );
    }
    g.finish();
}

/// 10,000 × 4 KiB files in 100 folders.
fn make_small_tree(root: &Path) {
    let mut data = vec![0x5au8; 4096];
    for d in 0..100u32 {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            data[..4].copy_from_slice(&(d * 100 + f).to_le_bytes());
            std::fs::write(dir.join(format!("f{f:03}")), &data).unwrap();
        }
    }
}

fn bench_scan(c: &mut Criterion) {
    // Built on first use, so that `cargo bench --bench planner planner/` skips the file I/O.
    let tmp: OnceCell<tempfile::TempDir> = OnceCell::new();
    let tree = || {
        tmp.get_or_init(|| {
            let t = tempfile::tempdir().unwrap();
            make_small_tree(t.path());
            t
        })
        .path()
    };
    let filter = Filter::new(&[], &[]).unwrap();
    let base = Base::new();

    let mut g = c.benchmark_group("scan");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(10_000));
    for (name, hash, threads) in [
        ("10k-files/list/2-threads", false, 2),
        ("10k-files/list+hash/2-threads", true, 2),
        ("10k-files/list+hash/1-thread", true, 1),
    ] {
        let o = ScanOptions {
            filter: &filter,
            side: Side::Local,
            hash,
            threads,
        };
        g.bench_function(name, |b| {
            let fs = LocalFs::new(tree());
            let r = scan::scan(&fs, &base, &o);
            assert_eq!(r.tree.len(), 10_100);
            assert!(r.errors.is_empty());
            b.iter(|| black_box(scan::scan(&fs, &base, &o)))
        });
    }
    g.finish();
}

/// A 256 MiB file of pseudo-random bytes, page-cached.
fn make_big_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("big.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut block = [0u8; 1 << 16];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..BIG / block.len() {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    // Read once: this measures hashing, not the disk.
    let _ = hash_file(std::fs::File::open(&path).unwrap()).unwrap();
    path
}

const BIG: usize = 256 << 20;

fn bench_hash(c: &mut Criterion) {
    let tmp: OnceCell<(tempfile::TempDir, std::path::PathBuf)> = OnceCell::new();
    let big = || {
        &tmp.get_or_init(|| {
            let t = tempfile::tempdir().unwrap();
            let p = make_big_file(t.path());
            (t, p)
        })
        .1
    };

    let mut g = c.benchmark_group("hash");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(BIG as u64));
    g.bench_function("hash_file/256MiB/1-core", |b| {
        let path = big();
        b.iter_batched(
            || std::fs::File::open(path).unwrap(),
            |f| black_box(hash_file(f).unwrap()),
            BatchSize::PerIteration,
        )
    });
    // The same bytes already in memory, in one call: blake3 alone, no read(2) copies.
    g.bench_function("blake3-in-memory/256MiB/1-core", |b| {
        let mem = std::fs::read(big()).unwrap();
        b.iter(|| black_box(blake3::hash(&mem)))
    });
    g.finish();
}

/// `Store::load_base` of the 101,000-row base of [`equal_trees`] from a state file in a temp
/// folder (warm in the page cache): what every full run reads before it plans.
fn bench_state(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omnisync.db");
    let (_, _, base) = equal_trees();
    let job = {
        let mut store = omnisync::state::Store::open(&path).unwrap();
        let job = store.job_id("bench").unwrap();
        store.replace_base(job, &base).unwrap();
        job
    };
    let store = omnisync::state::Store::open(&path).unwrap();
    assert_eq!(store.load_base(job).unwrap().len(), base.len());
    let mut g = c.benchmark_group("state");
    g.sample_size(20);
    g.bench_function("load_base-100k", |b| {
        b.iter(|| black_box(store.load_base(job).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_planner, bench_scan, bench_hash, bench_state);
criterion_main!(benches);
