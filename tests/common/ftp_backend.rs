//! `protocol = "ftp"` / `"ftps"`: the remote is a folder served by a real vsftpd on 127.0.0.1
//! (see [`super::vsftpd`]), one server per backend.
//!
//! Scenarios seed and inspect the served folder directly on this machine; what they put there
//! is given to the server's user with [`Backend::adopt`].

use std::path::{Path, PathBuf};

use super::sshd;
use super::vsftpd::{Options, Vsftpd};
use super::{toml_str, Backend};

pub struct FtpBackend {
    server: Vsftpd,
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl FtpBackend {
    /// A fresh vsftpd (plain FTP, or explicit FTPS with `tls`) and an empty remote folder.
    pub fn start(tls: bool) -> FtpBackend {
        Self::with(Options {
            tls,
            ..Options::default()
        })
    }

    pub fn with(opts: Options) -> FtpBackend {
        let server = Vsftpd::start(opts);
        let (uid, gid) = sshd::uid_gid();
        let root = server.data.join("remote");
        std::fs::create_dir(&root).unwrap();
        let b = FtpBackend {
            server,
            root,
            uid,
            gid,
        };
        b.adopt(&b.root);
        b
    }

    pub fn server(&self) -> &Vsftpd {
        &self.server
    }
}

impl Backend for FtpBackend {
    fn name(&self) -> &str {
        if self.server.opts.tls {
            "ftps"
        } else {
            "ftp"
        }
    }

    fn job_toml(&self, name: &str, mode: &str, extra: &str) -> String {
        format!(
            "[[job]]\nname = {}\nmode = {}\n{}remote_path = {}\n{extra}",
            toml_str(name),
            toml_str(mode),
            self.server.job_keys(),
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

    fn preserves_mtime(&self) -> bool {
        self.server.opts.mdtm_write
    }

    /// The served tree stays the server user's; `uid` only has to read the password file.
    fn allow_client_uid(&self, uid: u32) -> Result<(), String> {
        let p = &self.server.password_file;
        std::os::unix::fs::lchown(p, Some(uid), Some(uid))
            .map_err(|e| format!("cannot give {} to uid {uid}: {e}", p.display()))
    }
}
