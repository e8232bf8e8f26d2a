//! The values every layer shares: entries of a tree, base rows, actions and action records.

use std::collections::BTreeMap;

/// What a path is on one side. Symlinks are reported, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "file" => Some(Kind::File),
            "dir" => Some(Kind::Dir),
            "symlink" => Some(Kind::Symlink),
            _ => None,
        }
    }
}

/// One path on one side, as listed. `mtime` is nanoseconds since the Unix epoch (UTC); a side
/// whose protocol has whole seconds reports multiples of 1e9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    pub mtime: i64,
    /// Local filesystems only: the inode, used to recognise moves.
    pub inode: Option<u64>,
    /// blake3 of the content, when `compare = secure` (or a server offers it).
    pub hash: Option<Box<[u8; 32]>>,
}

impl Entry {
    pub fn file(size: u64, mtime: i64) -> Entry {
        Entry {
            kind: Kind::File,
            size,
            mtime,
            inode: None,
            hash: None,
        }
    }

    pub fn dir(mtime: i64) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            mtime,
            inode: None,
            hash: None,
        }
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// A listed tree: relative `/`-separated path → entry. BTreeMap order keeps a directory's
/// descendants in the contiguous key range `dir/` .. `dir0`.
pub type Tree = BTreeMap<String, Entry>;

/// The base: each side's entry as it was after the last sync of that path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseRow {
    pub local: Option<Entry>,
    pub remote: Option<Entry>,
}

pub type Base = BTreeMap<String, BaseRow>;

/// Which side of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

/// The action names of the action log (SPEC "Outputs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    Download,
    Upload,
    DeleteLocal,
    DeleteRemote,
    MoveLocal,
    MoveRemote,
    CopyRemote,
    MkdirLocal,
    MkdirRemote,
    Conflict,
    Skip,
    Error,
}

impl ActionKind {
    pub const ALL: [ActionKind; 12] = [
        ActionKind::Download,
        ActionKind::Upload,
        ActionKind::DeleteLocal,
        ActionKind::DeleteRemote,
        ActionKind::MoveLocal,
        ActionKind::MoveRemote,
        ActionKind::CopyRemote,
        ActionKind::MkdirLocal,
        ActionKind::MkdirRemote,
        ActionKind::Conflict,
        ActionKind::Skip,
        ActionKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Download => "download",
            ActionKind::Upload => "upload",
            ActionKind::DeleteLocal => "delete_local",
            ActionKind::DeleteRemote => "delete_remote",
            ActionKind::MoveLocal => "move_local",
            ActionKind::MoveRemote => "move_remote",
            ActionKind::CopyRemote => "copy_remote",
            ActionKind::MkdirLocal => "mkdir_local",
            ActionKind::MkdirRemote => "mkdir_remote",
            ActionKind::Conflict => "conflict",
            ActionKind::Skip => "skip",
            ActionKind::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One row of the action log, exactly the JSON shape of SPEC "Outputs".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionRecord {
    /// RFC 3339 UTC, second precision: `2026-11-22T02:00:00Z`.
    pub time: String,
    pub job: String,
    pub run: i64,
    pub action: String,
    pub path: String,
    pub to: Option<String>,
    pub bytes: u64,
    pub ms: Option<u64>,
    pub dry_run: bool,
    pub message: Option<String>,
}
