//! Waiting for a run's resume checkpoint, for the kill-mid-transfer tests.

use std::path::Path;
use std::time::{Duration, Instant};

/// Wait until a run (`child`, with its state database at `db`) has recorded a resume checkpoint
/// of at least `at` bytes. A checkpoint that waits for a sync is recorded when the sync has
/// finished, while writing goes on, so the partial file's size alone does not say that one
/// exists yet.
pub fn wait_for_checkpoint(child: &mut std::process::Child, db: &Path, at: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let recorded =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM transfers WHERE \"offset\" >= ?1",
                        [at as i64],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap_or(0);
        if recorded > 0 {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended before a checkpoint was recorded ({st})");
        }
        assert!(Instant::now() < deadline, "no checkpoint was recorded");
        std::thread::sleep(Duration::from_millis(2));
    }
}
