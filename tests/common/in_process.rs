//! A job run in-process (`engine::run_job`, `run_job_with`) between two folders of a temp
//! folder, for suites that wrap a side or act from the record sink.

use std::path::Path;
use std::time::Duration;

use omnisync::engine::RunOptions;
use omnisync::job::{AgentSettings, Job, Mode};

/// The agent settings (state in `tmp/state`), a `local` job from `local` to the folder
/// `remote`, and the options of a plain run.
pub fn setup(
    tmp: &Path,
    name: &str,
    local: &Path,
    remote: &Path,
    mode: Mode,
) -> (AgentSettings, Job, RunOptions) {
    let agent = AgentSettings {
        state_dir: tmp.join("state"),
        max_parallel_jobs: 1,
        log_retention_days: 30,
    };
    let job = Job::local(name, local.to_path_buf(), remote.to_str().unwrap(), mode);
    let opts = RunOptions {
        dry_run: false,
        force_delete: false,
        wait: Duration::ZERO,
        progress: false,
    };
    (agent, job, opts)
}
