//! The whole remote tree in one command, where the SSH server lets us run one: GNU `find`
//! prints every entry below a folder with the fields an SFTP `READDIR` gives (type, size, mtime
//! in seconds, symlinks not followed), so one exec channel replaces an OPENDIR/READDIR/CLOSE
//! exchange per folder (rsync runs itself on the server for the same reason). Anything but
//! a complete, well-formed answer (no shell, `ForceCommand internal-sftp`, a `find` without
//! `-printf`, an unreadable folder, a truncated stream) makes the caller fall back to SFTP.
//!
//! Pure: builds the command and parses its output into per-folder listings.

use std::collections::HashMap;

use super::{join, Listing};
use crate::model::{Entry, Kind};

const HEAD: &[u8] = b"omnisync-find-1\n";
const TAIL: &[u8] = b"omnisync-find-end\n";

/// `'…'` for a POSIX shell (and csh): a single quote inside becomes `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command that lists everything below `dir` (a path as the SFTP server takes it). `-H`
/// follows `dir` itself when it is a symlink to a folder, as SFTP's OPENDIR does (and nothing
/// below it, as READDIR's lstat attributes do not). The
/// head and tail markers tell a complete answer from the output of anything else; `&&` drops
/// the tail when `find` fails anywhere (exit status 1 for an unreadable folder).
pub fn command(dir: &str) -> String {
    // A relative path beginning with `-` would be read as an option.
    let dir = if dir.starts_with('-') {
        format!("./{dir}")
    } else {
        dir.to_string()
    };
    format!(
        "printf 'omnisync-find-1\\n' && env LC_ALL=C find -H {} -mindepth 1 \
         -printf '%P\\0%y\\0%s\\0%T@\\0' && printf 'omnisync-find-end\\n'",
        shell_quote(&dir)
    )
}

/// Parse the output of [`command`] run for the folder `rel` (relative to the job's root):
/// a listing for `rel` and for every folder below it, by relative path. `None` for anything
/// that is not a complete answer: the caller lists by SFTP instead.
pub fn parse(rel: &str, out: &[u8]) -> Option<HashMap<String, Listing>> {
    let mut p = FindParser::new(rel);
    p.feed(out);
    p.finish()
}

/// [`parse`] as the output arrives: each complete record is taken as soon as it is in, so
/// parsing overlaps the server's walk instead of following it.
pub struct FindParser {
    rel: String,
    /// Bytes not taken yet: the head marker, a record cut by the transport, or the tail.
    rest: Vec<u8>,
    head_seen: bool,
    /// Not a well-formed answer: nothing more is parsed and [`FindParser::finish`] says `None`.
    failed: bool,
    dirs: HashMap<String, Listing>,
    /// The last record's parent as `find` printed it, and its key in `dirs`: the records of
    /// a folder mostly come together, so most need no new key.
    last_parent: Option<(Vec<u8>, String)>,
}

impl FindParser {
    pub fn new(rel: &str) -> FindParser {
        let mut dirs = HashMap::new();
        dirs.insert(rel.to_string(), Listing::default());
        FindParser {
            rel: rel.to_string(),
            rest: Vec::new(),
            head_seen: false,
            failed: false,
            dirs,
            last_parent: None,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.rest.extend_from_slice(data);
        let mut at = 0;
        if !self.head_seen {
            if self.rest.len() < HEAD.len() {
                self.failed = !HEAD.starts_with(&self.rest);
                return;
            }
            if !self.rest.starts_with(HEAD) {
                self.failed = true;
                return;
            }
            self.head_seen = true;
            at = HEAD.len();
        }
        // A record is four fields, each ending with a NUL.
        loop {
            let mut ends = [0usize; 4];
            let mut from = at;
            for end in &mut ends {
                match self.rest[from..].iter().position(|&b| b == 0) {
                    Some(i) => {
                        *end = from + i;
                        from = *end + 1;
                    }
                    None => {
                        self.rest.drain(..at);
                        return;
                    }
                }
            }
            let rest = std::mem::take(&mut self.rest);
            let ok = self.record(
                &rest[at..ends[0]],
                &rest[ends[0] + 1..ends[1]],
                &rest[ends[1] + 1..ends[2]],
                &rest[ends[2] + 1..ends[3]],
            );
            self.rest = rest;
            if !ok {
                self.failed = true;
                self.rest.clear();
                return;
            }
            at = from;
        }
    }

    /// The listings, when the output was complete: every record well formed, then the tail.
    pub fn finish(self) -> Option<HashMap<String, Listing>> {
        (!self.failed && self.head_seen && self.rest == TAIL).then_some(self.dirs)
    }

    /// Take one record; `false` when it cannot come from [`command`].
    fn record(&mut self, path: &[u8], kind: &[u8], size: &[u8], mtime: &[u8]) -> bool {
        // `find -mindepth 1` never prints an empty path.
        if path.is_empty() {
            return false;
        }
        let kind = match kind {
            b"d" => Some(Kind::Dir),
            b"f" => Some(Kind::File),
            b"l" => Some(Kind::Symlink),
            // Sockets, fifos, devices: not listed, as `READDIR` entries of those are not.
            [_] => None,
            _ => return false,
        };
        let Some(size) = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return false;
        };
        let Some(mtime) = mtime_secs(mtime) else {
            return false;
        };
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let key = match &self.last_parent {
            Some((raw, key)) if raw.as_slice() == parent => key.clone(),
            _ => {
                // Below a folder whose name is not UTF-8: that folder is a bad name, never
                // entered.
                let Ok(p) = std::str::from_utf8(parent) else {
                    return true;
                };
                let key = if p.is_empty() {
                    self.rel.clone()
                } else {
                    join(&self.rel, p)
                };
                self.last_parent = Some((parent.to_vec(), key.clone()));
                key
            }
        };
        let Some(listing) = self.dirs.get_mut(&key) else {
            // `find` prints a folder before what it holds; a parent not seen is below a
            // folder left out (a bad name), or the output is not what it seems.
            return std::str::from_utf8(path).is_err();
        };
        let name = match std::str::from_utf8(name) {
            Ok(n) if !n.is_empty() => n.to_string(),
            Ok(_) => return false,
            Err(_) => {
                listing
                    .bad_names
                    .push(String::from_utf8_lossy(name).into_owned());
                return true;
            }
        };
        let Some(kind) = kind else { return true };
        if kind == Kind::Dir {
            self.dirs.insert(join(&key, &name), Listing::default());
        }
        let Some(listing) = self.dirs.get_mut(&key) else {
            return false;
        };
        listing.entries.push((
            name,
            Entry {
                kind,
                size: if kind == Kind::File { size } else { 0 },
                mtime: mtime * 1_000_000_000,
                inode: None,
                hash: None,
            },
        ));
        true
    }
}

/// `%T@` (`1700000000.1234567890`) as whole seconds, as SFTP v3 gives them: only what fits its
/// unsigned 32-bit field (anything else, and SFTP's answer would differ: no fast listing).
fn mtime_secs(field: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(field).ok()?;
    let whole = s.split('.').next()?;
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = whole.parse().ok()?;
    (v <= u32::MAX as i64).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(records: &[(&[u8], &str, u64, &str)]) -> Vec<u8> {
        let mut v = HEAD.to_vec();
        for (p, k, s, m) in records {
            v.extend_from_slice(p);
            v.push(0);
            v.extend_from_slice(format!("{k}\0{s}\0{m}\0").as_bytes());
        }
        v.extend_from_slice(TAIL);
        v
    }

    #[test]
    fn quoting_survives_hostile_paths() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf ~)`x`;\n"), "'$(rm -rf ~)`x`;\n'");
        assert!(command("-rf").contains("'./-rf'"));
        assert!(command("/srv/a'b").contains(r"'/srv/a'\''b'"));
    }

    #[test]
    fn a_tree_becomes_one_listing_per_folder() {
        let o = out(&[
            (b"d", "d", 4096, "1700000001.5"),
            (b"d/f", "f", 12, "1700000002.9999999990"),
            (b"d/e", "d", 4096, "1700000003.0"),
            (b"l", "l", 7, "1700000004.0"),
            (b"fifo", "p", 0, "1700000005.0"),
            (b"top", "f", 3, "1700000006"),
        ]);
        let m = parse("", &o).unwrap();
        assert_eq!(m.len(), 3);
        let root: Vec<_> = m[""]
            .entries
            .iter()
            .map(|(n, e)| (n.as_str(), e.kind))
            .collect();
        assert_eq!(
            root,
            [("d", Kind::Dir), ("l", Kind::Symlink), ("top", Kind::File)]
        );
        let (name, f) = &m["d"].entries[0];
        assert_eq!(
            (name.as_str(), f.size, f.mtime),
            ("f", 12, 1_700_000_002_000_000_000)
        );
        assert_eq!(m["d"].entries[1].1.size, 0, "a folder's size is not kept");
        assert!(
            m["d/e"].entries.is_empty(),
            "an empty folder has an empty listing"
        );
    }

    #[test]
    fn listings_of_a_subfolder_are_keyed_below_it() {
        let o = out(&[(b"x", "d", 0, "1.0"), (b"x/y", "f", 1, "2.0")]);
        let m = parse("a/b", &o).unwrap();
        assert_eq!(m["a/b"].entries[0].0, "x");
        assert_eq!(m["a/b/x"].entries[0].0, "y");
    }

    /// A folder, its names with kind and size, its bad names.
    type Summary = (String, Vec<(String, Kind, u64)>, Vec<String>);

    /// Every listing as a [`Summary`], sorted by folder.
    fn summary(m: &HashMap<String, Listing>) -> Vec<Summary> {
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, l)| {
                let e = l
                    .entries
                    .iter()
                    .map(|(n, e)| (n.clone(), e.kind, e.size))
                    .collect();
                (k.clone(), e, l.bad_names.clone())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn output_fed_in_pieces_parses_as_when_whole() {
        let o = out(&[
            (b"d", "d", 4096, "1700000001.5"),
            (b"d/f", "f", 12, "1700000002.9999999990"),
            (b"d/e", "d", 4096, "1700000003.0"),
            (b"d/e/g", "f", 5, "1700000003.0"),
            (b"d/h", "f", 6, "1700000003.0"),
            (b"bad\xff", "f", 1, "1.0"),
            (b"top", "f", 3, "1700000006"),
        ]);
        let whole = summary(&parse("", &o).unwrap());
        assert_eq!(whole.len(), 3);
        for step in [1, 2, 3, 5, 7, 16, 17, 64] {
            let mut p = FindParser::new("");
            for piece in o.chunks(step) {
                p.feed(piece);
            }
            assert_eq!(
                summary(&p.finish().unwrap()),
                whole,
                "pieces of {step} bytes"
            );
        }
        for cut in [
            1,
            3,
            HEAD.len(),
            HEAD.len() + 4,
            o.len() - TAIL.len(),
            o.len() - 1,
        ] {
            let mut p = FindParser::new("");
            p.feed(&o[..cut]);
            assert!(
                p.finish().is_none(),
                "output cut at byte {cut} is not complete"
            );
        }
    }

    #[test]
    fn names_that_are_not_utf8_are_bad_names_and_not_entered() {
        let o = out(&[
            (b"ok", "f", 1, "1.0"),
            (b"bad\xff", "d", 0, "1.0"),
            (b"bad\xff/inner", "f", 1, "1.0"),
        ]);
        let m = parse("", &o).unwrap();
        assert_eq!(m[""].entries.len(), 1);
        assert_eq!(m[""].bad_names.len(), 1);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn anything_incomplete_or_odd_is_refused() {
        let good = out(&[(b"f", "f", 1, "1.0")]);
        assert!(parse("", &good).is_some());
        // No head (a ForceCommand's silence, another program's output), no tail (find failed).
        assert!(parse("", b"").is_none());
        assert!(parse("", &good[HEAD.len()..]).is_none());
        assert!(parse("", &good[..good.len() - TAIL.len()]).is_none());
        // A record cut short.
        let mut cut = HEAD.to_vec();
        cut.extend_from_slice(b"f\0f\x001\0");
        cut.extend_from_slice(TAIL);
        assert!(parse("", &cut).is_none());
        // Times SFTP v3 cannot carry, odd types, sizes that are not numbers.
        assert!(parse("", &out(&[(b"f", "f", 1, "-5.0")])).is_none());
        assert!(parse("", &out(&[(b"f", "f", 1, "4294967296.0")])).is_none());
        assert!(parse("", &out(&[(b"f", "file", 1, "1.0")])).is_none());
        // A parent never listed (the order find guarantees was not kept).
        assert!(parse("", &out(&[(b"a/b", "f", 1, "1.0")])).is_none());
        // An empty tree is a complete answer.
        assert!(parse("", &out(&[])).unwrap()[""].entries.is_empty());
    }
}
