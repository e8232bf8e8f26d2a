//! Table tests of the pure coalescer: journal sequences → the batch due now.

use std::collections::HashMap;

use omnisync::coalesce::{coalesce, Batch, Change, ChangeKind};

const MS: i64 = 1_000_000;
const DEBOUNCE: i64 = 200 * MS;

/// `"c a"` create file a, `"C d"` create folder d, `"w a"` write, `"x a"` close after write,
/// `"t a"` attrib, `"r a"` remove, `"R d"` remove folder, `"m a b"` rename, `"o"` overflow,
/// `"W d"` write event on a folder (noise). Each step is 1 ms after the previous one.
fn changes(script: &[&str]) -> Vec<Change> {
    script
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let parts: Vec<&str> = s.split(' ').collect();
            let (kind, dir) = match parts[0] {
                "c" => (ChangeKind::Create, false),
                "C" => (ChangeKind::Create, true),
                "w" => (ChangeKind::Modify, false),
                "W" => (ChangeKind::Modify, true),
                "x" => (ChangeKind::CloseWrite, false),
                "t" => (ChangeKind::Attrib, false),
                "r" => (ChangeKind::Remove, false),
                "R" => (ChangeKind::Remove, true),
                "m" => (ChangeKind::Rename, false),
                "M" => (ChangeKind::Rename, true),
                "o" => (ChangeKind::Overflow, false),
                "i" => (ChangeKind::MovedIn, false),
                "I" => (ChangeKind::MovedIn, true),
                k => panic!("bad step {k}"),
            };
            Change {
                id: i as i64 + 1,
                at_ns: (i as i64 + 1) * MS,
                kind,
                path: parts.get(1).unwrap_or(&"").to_string(),
                to: parts.get(2).map(|s| s.to_string()),
                dir,
            }
        })
        .collect()
}

struct Case {
    name: &'static str,
    script: &'static [&'static str],
    /// Milliseconds after the first change at which the batch is taken.
    at_ms: i64,
    ready: &'static [&'static str],
    /// Change ids left pending (neither consumed nor dropped).
    pending: &'static [i64],
    dropped: &'static [i64],
    wake_ms: Option<i64>,
    reconcile: bool,
    /// Paths a batch synced recently, with the batch's time (ms).
    hot: &'static [(&'static str, i64)],
}

const CASES: &[Case] = &[
    Case {
        name: "closed new file is ready at once",
        script: &["c a", "w a", "x a"],
        at_ms: 4,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "open file waits for the debounce",
        script: &["c a", "w a"],
        at_ms: 3,
        ready: &[],
        pending: &[1, 2],
        dropped: &[],
        wake_ms: Some(202),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "open file is due after the debounce",
        script: &["c a", "w a"],
        at_ms: 202,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "fifty rewrites fold into one",
        script: &[
            "w a", "x a", "w a", "x a", "w a", "x a", "w a", "x a", "w a", "x a",
        ],
        at_ms: 11,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "rewrite after close waits for the next close",
        script: &["w a", "x a", "w a"],
        at_ms: 4,
        ready: &[],
        pending: &[1, 2, 3],
        dropped: &[],
        wake_ms: Some(203),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "create then delete cancels",
        script: &["c a", "w a", "x a", "r a"],
        at_ms: 5,
        ready: &[],
        pending: &[],
        dropped: &[1, 2, 3, 4],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "delete of a synced file waits for the debounce",
        script: &["r a"],
        at_ms: 2,
        ready: &[],
        pending: &[1],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "delete of a synced file is ready once quiet",
        script: &["r a"],
        at_ms: 201,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    // A rename whose halves were recorded apart: the watcher gave up waiting for the partner
    // of the first half (under load) and recorded a remove.
    Case {
        name: "a rename recorded as remove + moved in waits as one",
        script: &["r a", "i b"],
        at_ms: 3,
        ready: &[],
        pending: &[1, 2],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "a rename recorded as remove + moved in goes as one",
        script: &["r a", "i b"],
        at_ms: 201,
        ready: &["a", "b"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "a rename recorded as remove + rename goes at once",
        script: &["r a", "m a b"],
        at_ms: 3,
        ready: &["a", "b"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "a delete makes a later move-in wait till it is quiet",
        script: &["r a", "i b"],
        at_ms: 150,
        ready: &[],
        pending: &[1, 2],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "rename makes both names ready",
        script: &["m a b"],
        at_ms: 2,
        ready: &["a", "b"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "rename chain re-plans every name",
        script: &["m a b", "m b c"],
        at_ms: 3,
        ready: &["a", "b", "c"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "new file renamed: the first name cancels",
        script: &["c a", "w a", "x a", "m a b"],
        at_ms: 5,
        ready: &["b"],
        pending: &[],
        dropped: &[1, 2, 3],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    // `b` may have existed before the rename replaced it: it is re-planned (the planner finds
    // nothing to do when the base has no `b`); the five changes of `a` fold away.
    Case {
        name: "write, rewrite, rename, delete within the window",
        script: &["c a", "w a", "x a", "w a", "x a", "m a b", "r b"],
        at_ms: 207,
        ready: &["b"],
        pending: &[],
        dropped: &[1, 2, 3, 4, 5],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "folder rename swallows its children",
        script: &["M d e", "x e/a", "r e/b"],
        at_ms: 4,
        ready: &["d", "e"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "new folder swallows files written in it",
        script: &["C d", "c d/a", "w d/a", "x d/a", "c d/b", "x d/b"],
        at_ms: 7,
        ready: &["d"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "file still open below a ready folder stays pending",
        script: &["C d", "c d/a", "w d/a"],
        at_ms: 4,
        ready: &["d"],
        pending: &[2, 3],
        dropped: &[],
        wake_ms: Some(203),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "folder created and removed cancels its contents",
        script: &["C d", "c d/a", "x d/a", "r d/a", "R d"],
        at_ms: 6,
        ready: &[],
        pending: &[],
        dropped: &[1, 2, 3, 4, 5],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "new folder renamed: only the new name",
        script: &["C d", "c d/a", "x d/a", "M d e"],
        at_ms: 5,
        ready: &["e"],
        pending: &[],
        dropped: &[1, 2, 3],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "metadata change is ready",
        script: &["t a"],
        at_ms: 2,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "metadata change of an open file waits",
        script: &["w a", "t a"],
        at_ms: 3,
        ready: &[],
        pending: &[1, 2],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "folder write events are noise",
        script: &["W d"],
        at_ms: 2,
        ready: &[],
        pending: &[],
        dropped: &[1],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "overflow asks for a reconcile and consumes all",
        script: &["c a", "o", "w b"],
        at_ms: 4,
        ready: &[],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: true,
        hot: &[],
    },
    Case {
        name: "delete then recreate is a change, not a cancel",
        script: &["r a", "c a", "w a", "x a"],
        at_ms: 5,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "rename over a synced file keeps the target",
        script: &["c t", "w t", "x t", "m t a"],
        at_ms: 5,
        ready: &["a"],
        pending: &[],
        dropped: &[1, 2, 3],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "independent files: one ready, one open",
        script: &["w a", "x a", "w b"],
        at_ms: 4,
        ready: &["a"],
        pending: &[3],
        dropped: &[],
        wake_ms: Some(203),
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "moved in is ready at once",
        script: &["I d"],
        at_ms: 2,
        ready: &["d"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "moved in over a synced file then deleted is not a cancel",
        script: &["i a", "r a"],
        at_ms: 202,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
    Case {
        name: "a hot file waits until quiet",
        script: &["w a", "x a"],
        at_ms: 3,
        ready: &[],
        pending: &[1, 2],
        dropped: &[],
        wake_ms: Some(202),
        reconcile: false,
        hot: &[("a", 0)],
    },
    Case {
        name: "a hot file is sent once quiet",
        script: &["w a", "x a"],
        at_ms: 202,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[("a", 0)],
    },
    Case {
        name: "a file synced long ago is not hot",
        script: &["w a", "x a"],
        at_ms: 3,
        ready: &["a"],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[("a", -1000)],
    },
    Case {
        name: "a rename of a hot file waits with both names",
        script: &["m a b"],
        at_ms: 2,
        ready: &[],
        pending: &[1],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[("a", 0)],
    },
    Case {
        name: "a cold file beside a hot one goes at once",
        script: &["x a", "x b"],
        at_ms: 3,
        ready: &["b"],
        pending: &[1],
        dropped: &[],
        wake_ms: Some(201),
        reconcile: false,
        hot: &[("a", 0)],
    },
    Case {
        name: "root rename event on the root folder covers all",
        script: &["C ", "x a"],
        at_ms: 3,
        ready: &[""],
        pending: &[],
        dropped: &[],
        wake_ms: None,
        reconcile: false,
        hot: &[],
    },
];

#[test]
fn coalescer_table() {
    let mut failures = Vec::new();
    for case in CASES {
        let ch = changes(case.script);
        let recent: HashMap<String, i64> = case
            .hot
            .iter()
            .map(|(p, t)| (p.to_string(), t * MS))
            .collect();
        let b: Batch = coalesce(&ch, case.at_ms * MS, DEBOUNCE, &recent);
        let all: Vec<i64> = ch.iter().map(|c| c.id).collect();
        let pending: Vec<i64> = all
            .iter()
            .copied()
            .filter(|i| !b.consumed.contains(i) && !b.dropped.contains(i))
            .collect();
        let got = (
            b.ready.iter().map(String::as_str).collect::<Vec<_>>(),
            pending,
            b.dropped.clone(),
            b.wake_at_ns.map(|n| n / MS),
            b.reconcile,
        );
        let want = (
            case.ready.to_vec(),
            case.pending.to_vec(),
            case.dropped.to_vec(),
            case.wake_ms,
            case.reconcile,
        );
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
        }
        // Invariants: consumed and dropped are disjoint; no ready path lies below another.
        assert!(
            b.consumed.iter().all(|i| !b.dropped.contains(i)),
            "{}",
            case.name
        );
        for (i, p) in b.ready.iter().enumerate() {
            for q in &b.ready[i + 1..] {
                assert!(
                    !(p.is_empty() || q.starts_with(&format!("{p}/"))),
                    "{}: {p} swallows {q}",
                    case.name
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
