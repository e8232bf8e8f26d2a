//! The command line around the engine: config errors, exit codes, `log`, `jobs`, `test`, job
//! locks and the output streams, through the real binary.

mod common;

use std::fs::File;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A hand-written config for exact line numbers: `[agent]` (lines 1-2), a blank line, then
/// `[[job]]` at line 4, `name` 5, `protocol` 6, `local_path` 7, `remote_path` 8, `mode` 9 and
/// `extra` from line 10.
fn job_text(fx: &Fixture<'_>, name: &str, mode: &str, extra: &str) -> String {
    format!(
        "[[job]]\nname = {}\nprotocol = \"local\"\nlocal_path = {}\nremote_path = {}\nmode = {}\n{extra}",
        toml_str(name),
        toml_str(fx.local.to_str().unwrap()),
        toml_str(fx.root(Remote).to_str().unwrap()),
        toml_str(mode),
    )
}

fn config_text(fx: &Fixture<'_>, jobs: &str) -> String {
    format!("{}\n{jobs}", fx.agent_toml())
}

#[test]
fn config_errors_exit_2_name_file_line_key_and_touch_nothing() {
    let b = LocalBackend::new();
    let fx = Fixture::new(&b);
    fx.write(Local, "a.txt", "A", T0);
    fx.write(Remote, "r.txt", "R", T0);
    let before = fx.snap_both();
    let cfg = fx.config.to_str().unwrap().to_string();

    let dl = job_text(&fx, "j", "download", "");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed TOML",
            job_text(&fx, "j", "download", "exclude = [\"*.tmp\"\n"),
            vec![":10:", "invalid TOML"],
        ),
        (
            "unknown key",
            job_text(&fx, "j", "download", "intervall = \"5m\"\n"),
            vec![":10:1:", "`intervall`", "did you mean `interval`"],
        ),
        (
            "bad enum value",
            job_text(&fx, "j", "downlaod", ""),
            vec![":9:", "`mode`", "\"downlaod\"", "download"],
        ),
        (
            "bad conflict policy",
            job_text(&fx, "j", "bidirectional", "conflict = \"newest\"\n"),
            vec![":10:", "`conflict`", "\"newest\""],
        ),
        (
            "delete_orphans outside the mirror modes",
            job_text(&fx, "j", "bidirectional", "delete_orphans = true\n"),
            vec![":10:", "`delete_orphans`", "mirror"],
        ),
        (
            "delete_orphans in upload",
            job_text(&fx, "j", "upload", "delete_orphans = true\n"),
            vec![":10:", "`delete_orphans`"],
        ),
        (
            "conflict on a one-way job",
            job_text(&fx, "j", "download", "conflict = \"newer\"\n"),
            vec![":10:", "`conflict`", "bidirectional"],
        ),
        (
            "missing local_path",
            job_text(&fx, "j", "download", "").replace(
                &format!("local_path = {}\n", toml_str(fx.local.to_str().unwrap())),
                "",
            ),
            vec![":4:", "`local_path`", "missing"],
        ),
        (
            "missing remote_path",
            job_text(&fx, "j", "download", "").replace(
                &format!(
                    "remote_path = {}\n",
                    toml_str(fx.root(Remote).to_str().unwrap())
                ),
                "",
            ),
            vec![":4:", "`remote_path`", "missing"],
        ),
        (
            "duplicate job name",
            // a blank line 10, the second job on line 11, its name on line 12
            format!("{dl}\n{}", job_text(&fx, "j", "upload", "")),
            vec![":12:", "`name`", "duplicate", "\"j\"", "line 5"],
        ),
        (
            "bad job name",
            job_text(&fx, "bad name/x", "download", ""),
            vec![":5:", "`name`"],
        ),
        (
            "bad max_delete",
            job_text(&fx, "j", "download", "max_delete = \"150%\"\n"),
            vec![":10:", "`max_delete`"],
        ),
    ];
    for (what, jobs, wants) in cases {
        fx.set_config(&config_text(&fx, &jobs));
        for args in [
            &["run", "j", "--json"][..],
            &["run", "--all"][..],
            &["config", "check"][..],
            &["jobs"][..],
            &["log"][..],
        ] {
            let r = fx.run(args);
            assert_eq!(r.code, 2, "{what}: {args:?}: {}", r.dump());
            assert!(
                r.stderr.contains(&format!("{cfg}:")),
                "{what}: the file is named: {}",
                r.dump()
            );
            for w in &wants {
                assert!(r.stderr.contains(w), "{what}: {w:?} missing: {}", r.dump());
            }
            assert!(r.stdout.is_empty(), "{what}: {args:?}: {}", r.dump());
            assert!(!fx.state.exists(), "{what}: the state folder was created");
            assert_eq!(fx.snap_both(), before, "{what}: something changed");
        }
    }
}

#[test]
fn unknown_job_and_missing_config_exit_2() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    fx.write(Local, "a.txt", "A", T0);
    let before = fx.snap_both();
    for args in [
        &["run", "nope"][..],
        &["run", "j", "nope", "--json"],
        &["test", "nope"],
    ] {
        let r = fx.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.dump());
        assert!(r.stderr.contains("\"nope\""), "{}", r.dump());
        assert!(r.stdout.is_empty(), "{}", r.dump());
        assert_eq!(fx.snap_both(), before);
        assert!(!fx.state.exists());
    }
    std::fs::remove_file(&fx.config).unwrap();
    let r = fx.run(&["run", "j"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(
        r.stderr.contains(fx.config.to_str().unwrap()),
        "{}",
        r.dump()
    );
    assert_eq!(fx.snap_both(), before);
}

#[test]
fn usage_errors_exit_2_and_version_help_exit_0() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    for args in [
        &["run"][..],
        &["run", "--bogus"],
        &["run", "j", "--wait", "soon"],
        &["nope"],
    ] {
        let r = fx.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.dump());
    }
    for args in [
        &["--version"][..],
        &["--help"],
        &["run", "--help"],
        &["log", "--help"],
    ] {
        let r = fx.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.dump());
        assert!(!r.stdout.is_empty());
    }
    assert!(!fx.state.exists());
}

#[test]
fn config_check_prints_resolved_jobs_and_relative_paths_follow_the_file() {
    let b = LocalBackend::new();
    let fx = Fixture::new(&b);
    // Everything relative: resolved against the config file's folder, not the cwd (`/`).
    fx.set_config(
        "[agent]\nstate_dir = \"st\"\n\n[[job]]\nname = \"rel\"\nprotocol = \"local\"\n\
         mode = \"upload\"\nlocal_path = \"here\"\nremote_path = \"there\"\n",
    );
    let r = fx.run(&["config", "check"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let d = fx.dir.path().to_str().unwrap();
    assert!(r.stdout.contains("rel"), "{}", r.dump());
    assert!(r.stdout.contains(&format!("{d}/here")), "{}", r.dump());
    assert!(r.stdout.contains(&format!("{d}/there")), "{}", r.dump());
    assert!(r.stdout.contains(&format!("{d}/st")), "{}", r.dump());
    assert!(r.stdout.contains("1 job OK"), "{}", r.dump());

    std::fs::create_dir_all(fx.dir.path().join("here")).unwrap();
    std::fs::write(fx.dir.path().join("here/x.txt"), "X").unwrap();
    let r = fx.run(&["run", "rel", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        std::fs::read_to_string(fx.dir.path().join("there/x.txt")).unwrap(),
        "X",
        "upload-type first run creates remote_path"
    );
    assert!(fx.dir.path().join("st").is_dir());
}

#[test]
fn text_and_json_output_streams() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    fx.write(Local, "dir/a.txt", "hello world", T0);
    let r = fx.run(&["run", "j"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    // Text: one line per action on stdout, the summary line on stderr.
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("dir/a.txt"))
        .unwrap_or_else(|| panic!("{}", r.dump()));
    assert!(line.starts_with("upload"), "{line}");
    assert!(line.contains("11 B"), "{line}");
    assert!(
        r.stderr.contains('j') && r.stderr.contains("sent"),
        "{}",
        r.dump()
    );
    assert!(!r.stdout.contains("sent"), "{}", r.dump());

    // JSON: only JSON Lines on stdout (checked by the fixture), records then the summary.
    fx.write(Local, "b.txt", "bb", T0);
    let r = fx.run(&["run", "j", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let last: Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert!(last.get("summary").is_some(), "{}", r.dump());
    let rec = r.record("upload", "b.txt");
    for k in [
        "time", "job", "run", "action", "path", "to", "bytes", "ms", "dry_run", "message",
    ] {
        assert!(rec.get(k).is_some(), "record lacks {k}: {rec}");
    }
    assert_eq!(rec["bytes"], 2);
    assert_eq!(rec["to"], Value::Null);
    let t = rec["time"].as_str().unwrap();
    assert!(
        t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
        "{t}"
    );
    let s = r.summary.as_ref().unwrap();
    for k in ACTIONS.iter().copied().chain(["bytes", "errors", "ms"]) {
        assert!(s.get(k).is_some(), "summary lacks {k}: {s}");
    }
    assert_eq!(r.count("upload"), 1);
    assert_eq!(r.count("bytes"), 2);
    assert_eq!(s["run"], rec["run"]);
}

#[test]
fn exit_codes_for_missing_remote_path() {
    let b = LocalBackend::new();
    let mut fx = Fixture::with_job(&b, "dl", "download", "");
    fx.add_job("up", "upload", "");
    std::fs::remove_dir_all(fx.root(Remote)).unwrap();
    let r = fx.run(&["run", "dl", "--json"]);
    assert_eq!(
        r.code,
        3,
        "download-type: a missing remote_path is exit 3: {}",
        r.dump()
    );
    assert!(r.stderr.contains("does not exist"), "{}", r.dump());
    let r = fx.run(&["test", "dl"]);
    assert_eq!(r.code, 3, "{}", r.dump());
    fx.write(Local, "a.txt", "A", T0);
    let r = fx.run(&["run", "up", "--json", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.paths("upload"), vec!["a.txt".to_string()], "{}", r.dump());
    assert!(
        !fx.root(Remote).exists(),
        "a dry run creates no remote_path"
    );
    let r = fx.run(&["run", "up", "--json"]);
    assert_eq!(
        r.code,
        0,
        "upload-type: created on the first run: {}",
        r.dump()
    );
    assert_eq!(fx.read(Remote, "a.txt"), "A");
}

#[test]
fn test_command_probes_and_cleans_up() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "bidirectional", "");
    fx.write(Remote, "r.txt", "R", T0);
    let r = fx.run(&["test", "j"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(r.stdout.contains("writable"), "{}", r.dump());
    assert!(
        r.stdout.to_lowercase().contains("round-trip"),
        "{}",
        r.dump()
    );
    let left: Vec<String> = fx
        .snap(Remote)
        .into_keys()
        .filter(|p| p.contains("probe"))
        .collect();
    assert!(left.is_empty(), "probe left behind: {left:?}");
    assert_eq!(fx.read(Remote, "r.txt"), "R");
}

#[test]
fn run_all_skips_disabled_jobs_but_a_named_disabled_job_runs() {
    let b = LocalBackend::new();
    let mut fx = Fixture::new(&b);
    fx.add_job("off", "upload", "enabled = false");
    fx.write(Local, "a.txt", "A", T0);
    let r = fx.run(&["run", "--all", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(r.records.is_empty(), "{}", r.dump());
    assert!(!fx.exists(Remote, "a.txt"));
    let r = fx.run(&["run", "off", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.paths("upload"), vec!["a.txt".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// log and jobs
// ---------------------------------------------------------------------------------------------

/// Two jobs with their own folders: `alpha` (mirror-upload) and `beta` (download).
fn two_jobs(b: &LocalBackend) -> Fixture<'_> {
    let fx = Fixture::new(b);
    let d = fx.dir.path();
    let r = b.remote_root();
    let jobs = format!(
        "[[job]]\nname = \"alpha\"\nprotocol = \"local\"\nmode = \"mirror-upload\"\n\
         delete_orphans = true\nmax_delete = \"100%\"\nlocal_path = {}\nremote_path = {}\n\n\
         [[job]]\nname = \"beta\"\nprotocol = \"local\"\nmode = \"download\"\n\
         local_path = {}\nremote_path = {}\n",
        toml_str(d.join("la").to_str().unwrap()),
        toml_str(r.join("ra").to_str().unwrap()),
        toml_str(d.join("lb").to_str().unwrap()),
        toml_str(r.join("rb").to_str().unwrap()),
    );
    fx.set_config(&config_text(&fx, &jobs));
    std::fs::create_dir_all(d.join("la")).unwrap();
    std::fs::create_dir_all(r.join("rb")).unwrap();
    fx
}

fn log_records(fx: &Fixture<'_>, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["log", "--json"];
    args.extend_from_slice(extra);
    let r = fx.run(&args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.dump());
    r.records
}

#[test]
fn log_filters() {
    let b = LocalBackend::new();
    let fx = two_jobs(&b);
    let la = fx.dir.path().join("la");
    let rb = b.remote_root().join("rb");
    for i in 0..3 {
        std::fs::write(la.join(format!("plain{i}.txt")), "p").unwrap();
    }
    std::fs::write(la.join("Report-One.txt"), "report").unwrap();
    std::fs::create_dir_all(la.join("orig")).unwrap();
    std::fs::write(la.join("orig/inside.txt"), "in").unwrap();
    std::fs::write(rb.join("b1.txt"), "b1").unwrap();

    let a1 = fx.run(&["run", "alpha", "--json"]);
    assert_eq!(a1.code, 0, "{}", a1.dump());
    let b1 = fx.run(&["run", "beta", "--json"]);
    assert_eq!(b1.code, 0, "{}", b1.dump());
    std::fs::remove_file(la.join("plain0.txt")).unwrap();
    std::fs::rename(la.join("orig"), la.join("renamed")).unwrap();
    let dry = fx.run(&["run", "alpha", "--json", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.dump());
    assert!(!dry.records.is_empty());
    let a2 = fx.run(&["run", "alpha", "--json"]);
    assert_eq!(a2.code, 0, "{}", a2.dump());
    assert_eq!(
        a2.paths("delete_remote"),
        vec!["plain0.txt".to_string()],
        "{}",
        a2.dump()
    );
    assert_eq!(a2.record("move_remote", "orig")["to"], "renamed");

    let n = a1.records.len() + b1.records.len() + dry.records.len() + a2.records.len();
    let all = log_records(&fx, &[]);
    assert_eq!(all.len(), n, "{all:#?}");
    // time order
    let runs: Vec<i64> = all.iter().map(|r| r["run"].as_i64().unwrap()).collect();
    assert!(runs.windows(2).all(|w| w[0] <= w[1]), "{runs:?}");
    let times: Vec<&str> = all.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // dry runs are logged as such
    let dry_run_id = dry.summary.as_ref().unwrap()["run"].as_i64().unwrap();
    let logged_dry = log_records(&fx, &["--run", &dry_run_id.to_string()]);
    assert_eq!(logged_dry.len(), dry.records.len());
    assert!(
        logged_dry.iter().all(|r| r["dry_run"] == true),
        "{logged_dry:#?}"
    );

    let alpha = log_records(&fx, &["--job", "alpha"]);
    assert_eq!(alpha.len(), n - b1.records.len());
    assert!(alpha.iter().all(|r| r["job"] == "alpha"));
    let beta = log_records(&fx, &["--job", "beta"]);
    assert_eq!(beta.len(), b1.records.len());
    assert_eq!(beta[0]["path"], "b1.txt");

    let uploads = log_records(&fx, &["--action", "upload"]);
    assert!(uploads.iter().all(|r| r["action"] == "upload"));
    assert_eq!(
        uploads.len(),
        a1.of("upload").len() + dry.of("upload").len() + a2.of("upload").len()
    );
    let downloads = log_records(&fx, &["--action", "download", "--job", "alpha"]);
    assert!(downloads.is_empty(), "{downloads:#?}");

    // --search: case-insensitive, in path, to and message
    let s = log_records(&fx, &["--search", "rEpOrT-oNe"]);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["path"], "Report-One.txt");
    let s = log_records(&fx, &["--search", "RENAMED", "--job", "alpha"]);
    assert!(
        !s.is_empty() && s.iter().all(|r| r["action"] == "move_remote"),
        "{s:#?}"
    );
    let s = log_records(
        &fx,
        &[
            "--search",
            ".OMNISYNC/TRASH",
            "--run",
            &a2.summary.as_ref().unwrap()["run"].to_string(),
        ],
    );
    assert_eq!(
        s.len(),
        1,
        "the trash note of the delete is searched: {s:#?}"
    );
    assert_eq!(s[0]["action"], "delete_remote");

    // --since
    assert_eq!(log_records(&fx, &["--since", "1h"]).len(), n);
    assert_eq!(log_records(&fx, &["--since", "90m"]).len(), n);
    assert_eq!(
        log_records(&fx, &["--since", "2000-01-01T00:00:00Z"]).len(),
        n
    );
    assert!(log_records(&fx, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let r = fx.run(&["log", "--since", "yesterday-ish"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    let r = fx.run(&["log", "--action", "teleport"]);
    assert_eq!(r.code, 2, "{}", r.dump());

    // --run
    let b_run = b1.summary.as_ref().unwrap()["run"].as_i64().unwrap();
    let by_run = log_records(&fx, &["--run", &b_run.to_string()]);
    assert_eq!(by_run.len(), b1.records.len());
    assert!(by_run.iter().all(|r| r["run"] == b_run));

    // --csv: a header row with the JSON field names, then one row per record
    let r = fx.run(&["log", "--csv"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "time,job,run,action,path,to,bytes,ms,dry_run,message"
    );
    assert_eq!(lines.len(), n + 1, "{}", r.stdout);
    let r = fx.run(&["log", "--csv", "--job", "beta"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[1].contains(",beta,") && lines[1].contains(",download,b1.txt,"),
        "{}",
        lines[1]
    );

    // text: one line per record
    let r = fx.run(&["log", "--job", "beta"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert!(r.stdout.contains("b1.txt") && r.stdout.contains("download"));
}

#[test]
fn log_prints_at_most_100_records_unless_limit() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    for i in 0..105 {
        fx.write(Local, &format!("f{i:03}.txt"), "x", T0);
    }
    let r = fx.sync("j");
    assert_eq!(r.records.len(), 105);
    let mut last: Vec<String> = r.paths("upload");
    last.sort();
    let recs = log_records(&fx, &[]);
    assert_eq!(recs.len(), 100);
    let all = log_records(&fx, &["--limit", "1000"]);
    assert_eq!(all.len(), 105);
    // the last 100, in time order
    assert_eq!(recs[..], all[5..]);
    let filtered = log_records(&fx, &["--action", "upload"]);
    assert_eq!(filtered.len(), 100);
    let r = fx.run(&["log", "--csv"]);
    assert_eq!(r.stdout.lines().count(), 101);
}

#[test]
fn jobs_json_shows_the_last_run() {
    let b = LocalBackend::new();
    let fx = two_jobs(&b);
    let jobs = |fx: &Fixture<'_>| -> Vec<Value> {
        let r = fx.run(&["jobs", "--json"]);
        assert_eq!(r.code, 0, "{}", r.dump());
        assert_eq!(r.records.len(), 2, "{}", r.dump());
        r.records
    };
    let j = jobs(&fx);
    assert_eq!(j[0]["job"], "alpha");
    assert_eq!(j[1]["job"], "beta");
    assert_eq!(j[0]["mode"], "mirror-upload");
    assert_eq!(j[1]["protocol"], "local");
    assert_eq!(j[0]["last_run"], Value::Null);

    std::fs::write(fx.dir.path().join("la/a.txt"), "abc").unwrap();
    let a = fx.run(&["run", "alpha", "--json"]);
    assert_eq!(a.code, 0);
    let j = jobs(&fx);
    let last = &j[0]["last_run"];
    assert_eq!(last["run"], a.summary.as_ref().unwrap()["run"], "{last}");
    assert_eq!(last["result"], "ok");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["bytes"], 3);
    assert_eq!(j[1]["last_run"], Value::Null, "beta never ran");

    // An aborted run shows as such.
    std::fs::remove_file(fx.dir.path().join("la/a.txt")).unwrap();
    std::fs::write(fx.dir.path().join("la/keep.txt"), "k").unwrap();
    std::fs::write(fx.dir.path().join("la/keep2.txt"), "k").unwrap();
    let fx_cfg = std::fs::read_to_string(&fx.config).unwrap();
    fx.set_config(&fx_cfg.replace("max_delete = \"100%\"", "max_delete = 0"));
    let a = fx.run(&["run", "alpha", "--json"]);
    assert_eq!(a.code, 4, "{}", a.dump());
    let j = jobs(&fx);
    assert_eq!(j[0]["last_run"]["result"], "aborted");
    assert_eq!(j[0]["last_run"]["exit_code"], 4);

    // The text table names every job.
    let r = fx.run(&["jobs"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("alpha") && r.stdout.contains("beta"),
        "{}",
        r.dump()
    );
    assert!(r.stdout.contains("aborted"), "{}", r.dump());
}

// ---------------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------------

fn hold_lock(fx: &Fixture<'_>, job: &str) -> File {
    let dir = fx.state.join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{job}.lock")))
        .unwrap();
    f.try_lock().expect("the test takes the lock");
    f
}

#[test]
fn a_running_job_makes_a_second_run_exit_5() {
    let b = LocalBackend::new();
    let mut fx = Fixture::with_job(&b, "j", "upload", "");
    fx.write(Local, "a.txt", "A", T0);
    // A first run creates the state; then "another run" holds the lock.
    fx.sync("j");
    fx.write(Local, "b.txt", "B", T0);
    let before = fx.snap_both();
    let lock = hold_lock(&fx, "j");

    let r = fx.run(&["run", "j", "--json"]);
    assert_eq!(r.code, 5, "{}", r.dump());
    assert!(r.stderr.contains("already running"), "{}", r.dump());
    assert!(
        r.elapsed < Duration::from_millis(900),
        "no wait by default: {:?}",
        r.elapsed
    );
    assert_eq!(fx.snap_both(), before, "nothing done");

    let r = fx.run(&["run", "j", "--json", "--wait", "1s"]);
    assert_eq!(r.code, 5, "{}", r.dump());
    assert!(
        r.elapsed >= Duration::from_millis(950),
        "waited {:?}",
        r.elapsed
    );
    assert!(
        r.elapsed < Duration::from_secs(10),
        "waited {:?}",
        r.elapsed
    );
    assert_eq!(fx.snap_both(), before, "nothing done");

    // Another job is not blocked.
    fx.add_job("other", "download", "");
    let r = fx.run(&["run", "other", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());

    // The holder finishes while the second run waits: it proceeds.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(lock);
    });
    let r = fx.run(&["run", "j", "--json", "--wait", "20s"]);
    t.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(
        r.elapsed >= Duration::from_millis(300),
        "did not wait: {:?}",
        r.elapsed
    );
    assert_eq!(r.paths("upload"), vec!["b.txt".to_string()]);
}

#[test]
fn config_from_env_and_global_options_after_the_subcommand() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    fx.write(Local, "a.txt", "A", T0);
    let bin = env!("CARGO_BIN_EXE_omnisync");
    // $OMNISYNC_CONFIG when there is no --config.
    let out = assert_cmd::Command::new(bin)
        .args(["jobs", "--json"])
        .env("OMNISYNC_CONFIG", &fx.config)
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"job\":\"j\""));
    // --config wins over $OMNISYNC_CONFIG; global options after the subcommand.
    let out = assert_cmd::Command::new(bin)
        .args(["run", "j", "--json", "--config"])
        .arg(&fx.config)
        .args(["--log-level", "error"])
        .env("OMNISYNC_CONFIG", "/nonexistent/omnisync.toml")
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fx.read(Remote, "a.txt"), "A");
    // $OMNISYNC_CONFIG naming a missing file: exit 2, the file named.
    let out = assert_cmd::Command::new(bin)
        .args(["jobs"])
        .env("OMNISYNC_CONFIG", "/nonexistent/omnisync.toml")
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/omnisync.toml"));
}

/// SPEC "Commands": `--version` and `--help` work everywhere.
#[test]
fn version_works_after_a_subcommand() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "j", "upload", "");
    for args in [
        &["run", "--version"][..],
        &["log", "--version"],
        &["config", "check", "--version"],
    ] {
        let r = fx.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.dump());
        assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", r.dump());
    }
}

/// `run --all`: a job stopped by a guard does not stop the others; the exit code is the worst.
#[test]
fn run_all_exit_code_is_the_worst_and_other_jobs_still_run() {
    let b = LocalBackend::new();
    let fx = two_jobs(&b);
    let la = fx.dir.path().join("la");
    let rb = b.remote_root().join("rb");
    std::fs::write(la.join("a.txt"), "A").unwrap();
    std::fs::write(la.join("b.txt"), "B").unwrap();
    std::fs::write(rb.join("x.txt"), "X").unwrap();
    let r = fx.run(&["run", "--all", "--json"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    // alpha's folder is now empty: its guards (emptied root, max_delete = 1) stop it.
    let cfg = std::fs::read_to_string(&fx.config).unwrap();
    fx.set_config(&cfg.replace("max_delete = \"100%\"", "max_delete = 1"));
    std::fs::remove_file(la.join("a.txt")).unwrap();
    std::fs::remove_file(la.join("b.txt")).unwrap();
    std::fs::write(rb.join("y.txt"), "Y").unwrap();
    for extra in [None, Some("--parallel")] {
        let mut args = vec!["run", "--all", "--json"];
        args.extend(extra);
        let r = fx.run(&args);
        assert_eq!(r.code, 4, "{}", r.dump());
        assert!(
            b.remote_root().join("ra/a.txt").exists(),
            "alpha deleted nothing"
        );
        assert_eq!(
            std::fs::read_to_string(fx.dir.path().join("lb/y.txt")).unwrap(),
            "Y",
            "beta ran"
        );
        // Deleted locally and changed remotely: downloaded again by the next round.
        std::fs::remove_file(fx.dir.path().join("lb/y.txt")).unwrap();
        std::fs::write(rb.join("y.txt"), "Y").unwrap();
        filetime::set_file_mtime(rb.join("y.txt"), filetime::FileTime::from_unix_time(T0, 0))
            .unwrap();
    }
}

/// SPEC "Details": `--search` is a case-insensitive substring; names are often not ASCII.
#[test]

fn log_search_is_case_insensitive_beyond_ascii() {
    let b = LocalBackend::new();
    let fx = Fixture::with_job(&b, "up", "upload", "");
    fx.write(Local, "caf\u{e9}.txt", "x", T0);
    fx.write(Local, "\u{c9}COLE.txt", "x", T0);
    fx.write(Local, "other.txt", "x", T0);
    fx.sync("up");
    let s = log_records(&fx, &["--search", "CAF\u{c9}"]);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["path"], "caf\u{e9}.txt");
    let s = log_records(&fx, &["--search", "\u{e9}cole"]);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["path"], "\u{c9}COLE.txt");
}
