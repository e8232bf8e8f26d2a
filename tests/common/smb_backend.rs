//! `protocol = "smb"`: the remote is a folder inside a share served by a real Samba smbd on
//! 127.0.0.1 (see [`super::smbd`]), one server per backend (it starts in ~0.2 s).
//!
//! Scenarios seed and inspect the served folder directly on this machine. Names Windows
//! forbids are stored `%XX`-encoded on the share, so the fixture reaches a relative path
//! through [`Backend::disk_path`] and reads the folder back through [`Backend::path_of_disk`].

use std::path::{Path, PathBuf};

use omnisync::remote::smb_names::{decode_name, encode_path};

use super::smbd::{self, Smbd};
use super::{toml_str, Backend};

pub struct SmbBackend {
    smbd: Smbd,
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl SmbBackend {
    /// A fresh smbd with an empty remote folder (`remote` in the share) owned by the server's
    /// user.
    pub fn start() -> SmbBackend {
        let smbd = Smbd::start();
        let (uid, gid) = smbd::uid_gid();
        let root = smbd.share_dir.join("remote");
        std::fs::create_dir(&root).unwrap();
        let b = SmbBackend {
            smbd,
            root,
            uid,
            gid,
        };
        b.adopt(&b.root);
        b
    }

    pub fn smbd(&self) -> &Smbd {
        &self.smbd
    }
}

impl Backend for SmbBackend {
    fn name(&self) -> &str {
        "smb"
    }

    fn job_toml(&self, name: &str, mode: &str, extra: &str) -> String {
        format!(
            "[[job]]\nname = {}\nmode = {}\n{}remote_path = \"remote\"\n{extra}",
            toml_str(name),
            toml_str(mode),
            self.smbd.job_keys(),
        )
    }

    fn remote_root(&self) -> PathBuf {
        self.root.clone()
    }

    fn adopt(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    }

    /// FILETIME ticks.
    fn mtime_precision_ns(&self) -> i64 {
        100
    }

    /// Samba shows a Unix symlink as what it points to (SMB2 has no unix extensions).
    fn remote_symlinks(&self) -> bool {
        false
    }

    /// The share is case-insensitive.
    fn byte_exact_names(&self) -> bool {
        false
    }

    fn disk_path(&self, rel: &str) -> String {
        encode_path(rel)
    }

    fn path_of_disk(&self, disk_rel: &str) -> String {
        disk_rel
            .split('/')
            .map(|n| decode_name(n).unwrap_or_else(|| n.to_string()))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The password is in the job itself: any uid can log in.
    fn allow_client_uid(&self, _uid: u32) -> Result<(), String> {
        Ok(())
    }
}
