//! `protocol = "sftp"`: the remote is a folder served by a real OpenSSH sshd on 127.0.0.1
//! (see [`super::sshd`]), one server per backend (it starts in ~0.1 s and dies with it).
//!
//! Scenarios seed and inspect the served folder directly on this machine; everything they put
//! there is handed to the server's user with [`Backend::adopt`], as the server could not
//! touch it otherwise.

use std::path::{Path, PathBuf};

use super::sshd::{self, Sshd};
use super::{toml_str, Backend};

pub struct SftpBackend {
    sshd: Sshd,
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl SftpBackend {
    /// A fresh sshd with an empty remote folder owned by the server's user.
    pub fn start() -> SftpBackend {
        let sshd = Sshd::start();
        let (uid, gid) = sshd::uid_gid();
        let root = sshd.data.join("remote");
        std::fs::create_dir(&root).unwrap();
        let b = SftpBackend {
            sshd,
            root,
            uid,
            gid,
        };
        b.adopt(&b.root);
        b
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }
}

impl Backend for SftpBackend {
    fn name(&self) -> &str {
        "sftp"
    }

    fn job_toml(&self, name: &str, mode: &str, extra: &str) -> String {
        let s = &self.sshd;
        format!(
            "[[job]]\nname = {}\nmode = {}\nprotocol = \"sftp\"\nhost = \"127.0.0.1\"\n\
             port = {}\nusername = {}\nprivate_key = {}\nknown_hosts = {}\nremote_path = {}\n\
             {extra}",
            toml_str(name),
            toml_str(mode),
            s.port,
            toml_str(sshd::USER),
            toml_str(s.user_key.to_str().unwrap()),
            toml_str(s.known_hosts.to_str().unwrap()),
            toml_str(self.root.to_str().unwrap()),
        )
    }

    fn remote_root(&self) -> PathBuf {
        self.root.clone()
    }

    fn adopt(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    }

    fn mtime_precision_ns(&self) -> i64 {
        1_000_000_000
    }

    /// The served tree stays the server user's; `uid` only has to read the client key and
    /// known_hosts (the harness folder is world-traversable).
    fn allow_client_uid(&self, uid: u32) -> Result<(), String> {
        for p in [&self.sshd.user_key, &self.sshd.known_hosts] {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid))
                .map_err(|e| format!("cannot give {} to uid {uid}: {e}", p.display()))?;
        }
        Ok(())
    }
}
