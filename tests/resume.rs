//! Kill -9 in the middle of a 512 MiB transfer, run again: the transfer resumes from its
//! checkpoint (the second run sends less than the file), the result is byte-identical, no
//! partial file is left, and the final name never held a partial file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
#[path = "common/checkpoint.rs"]
mod checkpoint;

const SIZE: u64 = 512 << 20;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnisync"))
}

/// Deterministic, incompressible-enough content without reading /dev/urandom.
fn write_big_file(path: &Path) -> [u8; 32] {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..(SIZE >> 20) {
        for chunk in block.chunks_mut(8) {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        hasher.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    *hasher.finalize().as_bytes()
}

fn hash_of(path: &Path) -> [u8; 32] {
    omnisync::remote::local::hash_file(std::fs::File::open(path).unwrap()).unwrap()
}

/// A job uploading one 512 MiB file from `DIR/local` to `DIR/remote`: (config, remote
/// folder, the file's hash).
fn big_upload_job(dir: &Path) -> (PathBuf, PathBuf, [u8; 32]) {
    let local = dir.join("local");
    let remote = dir.join("remote");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(&remote).unwrap();
    let want = write_big_file(&local.join("big.bin"));
    let config = dir.join("omnisync.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n\n[[job]]\nname = \"big\"\nprotocol = \"local\"\n\
             mode = \"upload\"\nlocal_path = {:?}\nremote_path = {:?}\nchunk_size = \"1MiB\"\n",
            dir.join("state"),
            local,
            remote
        ),
    )
    .unwrap();
    (config, remote, want)
}

/// Start a run and kill it (SIGKILL) past its first checkpoint: at 64 MiB, recorded once its
/// fsync finished, or at once where the disk keeps unsynced writes over a crash of the process.
/// Runs `before_kill` just before the kill.
fn kill_past_first_checkpoint(config: &Path, before_kill: impl FnOnce()) {
    let mut child = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "run", "big", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = config.parent().unwrap().join("state/omnisync.db");
    checkpoint::wait_for_checkpoint(&mut child, &db, 64 << 20);
    before_kill();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Run the job again: (its `--json` output, its upload record).
fn run_again(config: &Path) -> (String, serde_json::Value) {
    let out = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "run", "big", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let upload = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["action"] == "upload")
        .unwrap_or_else(|| panic!("no upload record in {stdout}"));
    (stdout, upload)
}

#[test]
fn kill_9_mid_transfer_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (config, remote, want) = big_upload_job(dir.path());
    let final_path = remote.join("big.bin");
    let partial = remote.join("big.bin.omnisync-partial");
    kill_past_first_checkpoint(&config, || {
        assert!(
            !final_path.exists(),
            "the final name appeared before the transfer was complete"
        )
    });
    let killed_at = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(killed_at < SIZE, "killed after the whole file was written");
    assert!(!final_path.exists(), "a partial file took the final name");
    assert!(
        partial.exists(),
        "the partial file should be kept for resuming"
    );

    let (stdout, upload) = run_again(&config);
    let sent = upload["bytes"].as_u64().unwrap();
    assert!(
        sent < SIZE,
        "the second run sent {sent} bytes: it did not resume"
    );
    assert!(
        sent <= SIZE - (64 << 20),
        "resumed too early: sent {sent} of {SIZE}"
    );
    assert!(
        upload["message"].as_str().unwrap_or("").contains("resumed"),
        "{upload}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["bytes"].as_u64(), Some(sent));

    assert_eq!(hash_of(&final_path), want, "resumed file differs");
    assert!(!partial.exists(), "partial file left after a completed run");
    let leftovers: Vec<_> = walk(&remote)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".omnisync-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // And the third run has nothing to do.
    let out = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "run", "big", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["upload"].as_u64(), Some(0), "{stdout}");
}

/// A checkpoint written without a sync (a local disk keeps unsynced writes when the process
/// is killed, not when the machine restarts) is trusted only in the boot that wrote it: after
/// a restart the transfer resumes from what a sync made durable. The restart is simulated: the
/// checkpoint's boot is changed in the state database and the partial file's unsynced bytes
/// are overwritten, as lost writes would leave them.
#[test]
fn unsynced_checkpoint_is_not_trusted_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (config, remote, want) = big_upload_job(dir.path());
    let db = dir.path().join("state/omnisync.db");
    let partial = remote.join("big.bin.omnisync-partial");
    kill_past_first_checkpoint(&config, || {});

    let c = rusqlite::Connection::open(&db).unwrap();
    let (offset, durable, boot): (i64, i64, Option<String>) = c
        .query_row("SELECT \"offset\", durable, boot FROM transfers", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert!(offset >= 64 << 20, "{offset}");
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string();
    match &boot {
        // ext4, XFS, btrfs, tmpfs: checkpoints 64 MiB apart, a sync only every 1 GiB, so
        // nothing of this 512 MiB file was synced yet.
        Some(b) => {
            assert_eq!(b, &this_boot);
            assert_eq!(durable, 0, "no sync was due before 1 GiB");
        }
        // Another filesystem under the test's temp folder: every checkpoint was synced.
        None => {
            assert_eq!(durable, offset);
            eprintln!("the temp folder's filesystem syncs every checkpoint; nothing unsynced");
        }
    }
    // "Restart": another boot, and the unsynced part of the partial file lost (zeros where the
    // data was; ext4 would rather show a shorter file, which resuming refuses as well).
    c.execute(
        "UPDATE transfers SET boot = 'another-boot' WHERE boot IS NOT NULL",
        [],
    )
    .unwrap();
    drop(c);
    if boot.is_some() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .unwrap();
        let len = f.metadata().unwrap().len();
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; 1 << 20];
        let mut at = durable as u64;
        while at < len {
            f.write_all_at(&zeros[..(len - at).min(1 << 20) as usize], at)
                .unwrap();
            at += 1 << 20;
        }
    }

    let (_, upload) = run_again(&config);
    assert_eq!(
        upload["bytes"].as_u64(),
        Some(SIZE - durable as u64),
        "resumed from what a sync made durable: {upload}"
    );
    assert_eq!(
        hash_of(&remote.join("big.bin")),
        want,
        "resumed file differs"
    );
    assert!(!partial.exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
