//! inotify (through notify) → journal changes of one job.
//!
//! notify reports an in-tree rename three times (`Name(From)`, `Name(To)`, `Name(Both)`, one
//! shared tracker); the journal records it once, as a `rename` with both paths. A `From` with no
//! matching `To` is a move out of the tree (a `remove`), a `To` with no `From` a move in
//! (`moved_in`, whose folder is scanned). Queue overflows and watcher errors become `overflow`,
//! which makes the agent reconcile. Reserved paths (`.omnisync/`, partial files) and what the
//! job's filters exclude are not recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::coalesce::ChangeKind;
use crate::filter::Filter;

/// How long an unpaired rename half waits for its other half.
pub const PAIR_WAIT: Duration = Duration::from_millis(2);

/// One change as observed (the journal adds the job and time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub kind: ChangeKind,
    pub path: String,
    pub to: Option<String>,
    pub dir: bool,
}

/// Start a recursive watch of `root`; events go to `handler`.
pub fn watch<F>(root: &Path, handler: F) -> notify::Result<notify::RecommendedWatcher>
where
    F: notify::EventHandler,
{
    let mut w = notify::recommended_watcher(handler)?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok(w)
}

/// Is this error the inotify watch limit (`fs.inotify.max_user_watches`)?
pub fn is_watch_limit(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC))
}

/// Turns notify events of one job into journal changes.
pub struct Converter {
    root: PathBuf,
    filter: Filter,
    /// A rename half waiting for its other half: (tracker, change, since).
    held: Option<(usize, Observed, Instant)>,
}

impl Converter {
    pub fn new(root: PathBuf, filter: Filter) -> Converter {
        Converter {
            root,
            filter,
            held: None,
        }
    }

    /// The path relative to the root, or None when it is outside, not UTF-8, reserved or
    /// excluded.
    fn rel(&self, p: &Path, dir: bool) -> Option<String> {
        let rel = p.strip_prefix(&self.root).ok()?;
        let rel = rel.to_str()?.to_string();
        if rel.is_empty() {
            return Some(rel);
        }
        if Filter::is_reserved(&rel) {
            return None;
        }
        // Anything below an excluded folder is invisible to the job.
        let mut acc = String::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if self.filter.excludes_dir(&acc) {
                return None;
            }
        }
        if dir {
            (!self.filter.excludes_dir(&rel)).then_some(rel)
        } else if self.filter.is_empty() || self.filter.includes_file(&rel) {
            Some(rel)
        } else {
            // Could still be a folder the event did not say was one.
            (is_dir(p) && !self.filter.excludes_dir(&rel)).then_some(rel)
        }
    }

    /// Feed one event; changes ready to record are appended to `out`.
    pub fn push(&mut self, ev: &Event, now: Instant, out: &mut Vec<Observed>) {
        if ev.need_rescan() {
            self.flush(out);
            out.push(Observed {
                kind: ChangeKind::Overflow,
                path: String::new(),
                to: None,
                dir: true,
            });
            return;
        }
        let tracker = ev.attrs.tracker();
        // The other half of a held rename?
        if let Some((t, held, _)) = &self.held {
            let pairs = Some(*t) == tracker
                && matches!(
                    ev.kind,
                    EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
            if !pairs {
                self.flush(out);
            } else if matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To)))
                && held.kind == ChangeKind::Remove
            {
                // From then To: Both follows; keep waiting for it.
                return;
            }
        }
        let first = ev.paths.first();
        match ev.kind {
            EventKind::Create(k) => {
                let Some(p) = first else { return };
                let dir = k == CreateKind::Folder || (k != CreateKind::File && is_dir(p));
                if let Some(rel) = self.rel(p, dir) {
                    out.push(obs(ChangeKind::Create, rel, dir));
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                let Some(p) = first else { return };
                let Some(rel) = self.rel(p, false) else {
                    return;
                };
                match tracker {
                    Some(t) => {
                        self.held = Some((t, obs(ChangeKind::Remove, rel, false), now));
                    }
                    None => out.push(obs(ChangeKind::Remove, rel, false)),
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                let Some(p) = first else { return };
                let dir = is_dir(p);
                let Some(rel) = self.rel(p, dir) else { return };
                let o = obs(ChangeKind::MovedIn, rel, dir);
                match tracker {
                    Some(t) => self.held = Some((t, o, now)),
                    None => out.push(o),
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                self.held = None;
                let (Some(from), Some(to)) = (ev.paths.first(), ev.paths.get(1)) else {
                    return;
                };
                let dir = is_dir(to);
                match (self.rel(from, dir), self.rel(to, dir)) {
                    (Some(f), Some(t)) => out.push(Observed {
                        kind: ChangeKind::Rename,
                        path: f,
                        to: Some(t),
                        dir,
                    }),
                    // Renamed into an excluded name: gone for the job.
                    (Some(f), None) => out.push(obs(ChangeKind::Remove, f, dir)),
                    // Renamed from an excluded name: appears for the job.
                    (None, Some(t)) => out.push(obs(ChangeKind::MovedIn, t, dir)),
                    (None, None) => {}
                }
            }
            EventKind::Modify(ModifyKind::Name(_)) => {
                // A rename notify could not pair or classify: look at what is there now.
                for p in &ev.paths {
                    let dir = is_dir(p);
                    if let Some(rel) = self.rel(p, dir) {
                        let kind = if p.symlink_metadata().is_ok() {
                            ChangeKind::MovedIn
                        } else {
                            ChangeKind::Remove
                        };
                        out.push(obs(kind, rel, dir));
                    }
                }
            }
            EventKind::Modify(ModifyKind::Metadata(_)) => {
                let Some(p) = first else { return };
                let dir = is_dir(p);
                if let Some(rel) = self.rel(p, dir) {
                    out.push(obs(ChangeKind::Attrib, rel, dir));
                }
            }
            EventKind::Modify(_) => {
                let Some(p) = first else { return };
                if let Some(rel) = self.rel(p, false) {
                    out.push(obs(ChangeKind::Modify, rel, false));
                }
            }
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => {
                let Some(p) = first else { return };
                if let Some(rel) = self.rel(p, false) {
                    out.push(obs(ChangeKind::CloseWrite, rel, false));
                }
            }
            EventKind::Remove(k) => {
                let Some(p) = first else { return };
                let dir = k == notify::event::RemoveKind::Folder;
                if let Some(rel) = self.rel(p, dir) {
                    out.push(obs(ChangeKind::Remove, rel, dir));
                }
            }
            EventKind::Access(_) | EventKind::Any | EventKind::Other => {}
        }
    }

    /// Release a held rename half that waited long enough: it had no partner.
    pub fn flush_stale(&mut self, now: Instant, out: &mut Vec<Observed>) {
        if self
            .held
            .as_ref()
            .is_some_and(|(_, _, since)| now.duration_since(*since) >= PAIR_WAIT)
        {
            self.flush(out);
        }
    }

    /// Is a rename half waiting?
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    fn flush(&mut self, out: &mut Vec<Observed>) {
        if let Some((_, o, _)) = self.held.take() {
            out.push(o);
        }
    }
}

fn obs(kind: ChangeKind, path: String, dir: bool) -> Observed {
    Observed {
        kind,
        path,
        to: None,
        dir,
    }
}

fn is_dir(p: &Path) -> bool {
    p.symlink_metadata().is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, DataChange, RemoveKind};

    fn conv() -> Converter {
        Converter::new(
            PathBuf::from("/nonexistent-root"),
            Filter::new(&[], &["*.tmp".to_string()]).unwrap(),
        )
    }

    fn ev(kind: EventKind, paths: &[&str], tracker: Option<usize>) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(format!("/nonexistent-root/{p}")));
        }
        if let Some(t) = tracker {
            e = e.set_tracker(t);
        }
        e
    }

    #[test]
    fn rename_is_one_change() {
        let mut c = conv();
        let mut out = Vec::new();
        let now = Instant::now();
        let name = |m| EventKind::Modify(ModifyKind::Name(m));
        c.push(&ev(name(RenameMode::From), &["a"], Some(7)), now, &mut out);
        c.push(&ev(name(RenameMode::To), &["b"], Some(7)), now, &mut out);
        c.push(
            &ev(name(RenameMode::Both), &["a", "b"], Some(7)),
            now,
            &mut out,
        );
        assert_eq!(
            out,
            vec![Observed {
                kind: ChangeKind::Rename,
                path: "a".into(),
                to: Some("b".into()),
                dir: false
            }]
        );
    }

    #[test]
    fn unpaired_halves_are_remove_and_moved_in() {
        let mut c = conv();
        let mut out = Vec::new();
        let now = Instant::now();
        let name = |m| EventKind::Modify(ModifyKind::Name(m));
        c.push(
            &ev(name(RenameMode::From), &["gone"], Some(1)),
            now,
            &mut out,
        );
        assert!(out.is_empty() && c.holding());
        c.flush_stale(now + PAIR_WAIT, &mut out);
        assert_eq!(out[0].kind, ChangeKind::Remove);
        out.clear();
        c.push(&ev(name(RenameMode::To), &["came"], Some(2)), now, &mut out);
        // Another event releases it.
        c.push(
            &ev(EventKind::Remove(RemoveKind::File), &["x"], None),
            now,
            &mut out,
        );
        assert_eq!(out[0].kind, ChangeKind::MovedIn);
        assert_eq!(out[0].path, "came");
        assert_eq!(out[1].kind, ChangeKind::Remove);
    }

    #[test]
    fn filters_and_reserved_paths_are_not_recorded() {
        let mut c = conv();
        let mut out = Vec::new();
        let now = Instant::now();
        for p in [
            "a.tmp",
            ".omnisync/trash/2026-01-01/x",
            "d/f.omnisync-partial",
        ] {
            c.push(
                &ev(EventKind::Create(CreateKind::File), &[p], None),
                now,
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        c.push(
            &ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["d/f"],
                None,
            ),
            now,
            &mut out,
        );
        c.push(
            &ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["d/f"],
                None,
            ),
            now,
            &mut out,
        );
        let kinds: Vec<_> = out.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, vec![ChangeKind::Modify, ChangeKind::CloseWrite]);
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        out.clear();
        c.push(&overflow, now, &mut out);
        assert_eq!(out[0].kind, ChangeKind::Overflow);
    }
}
