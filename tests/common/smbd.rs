//! A real Samba smbd on 127.0.0.1 for one test, started and stopped by the test itself.
//!
//! Each [`Smbd`] gets its own temporary folder (smb.conf, passdb, lock/state/cache/pid dirs,
//! logs and the served `share/` folder) and a free port, runs `smbd --foreground` as a child
//! and kills it by PID on drop (its per-connection children go with it). Nothing under
//! `/var/lib/samba` is touched, and no nmbd runs. Logins are as the system user `omnitest`
//! (see [`super::sshd::ensure_user`]) with the password [`PASSWORD`], through the share `share`.
//!
//! Nothing is installed here: without `/usr/sbin/smbd` the harness fails with the command that
//! installs it (`scripts/test.sh` does that from `scripts/apt-packages.txt`).
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::sshd::{ensure_user, free_port, uid_gid, PASSWORD, USER};

const SMBD: &str = "/usr/sbin/smbd";
pub const SHARE: &str = "share";

pub struct Smbd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The folder served as [`SHARE`], owned by `omnitest`.
    pub share_dir: PathBuf,
    child: Child,
}

fn require_tools() {
    for bin in [SMBD, "/usr/bin/smbpasswd", "/usr/bin/testparm"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the smb tests need a real Samba server. Install it with \
             `apt-get install samba` (scripts/test.sh does this from scripts/apt-packages.txt)"
        );
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the smb tests start smbd and log in as the system user {USER}: run them as root (CI does)"
    );
}

impl Smbd {
    pub fn start() -> Smbd {
        Smbd::start_with("", "")
    }

    /// A server whose `[global]` and `[share]` sections also hold `global_extra` and
    /// `share_extra` (e.g. `server signing = mandatory`, `smb encrypt = required`).
    pub fn start_with(global_extra: &str, share_extra: &str) -> Smbd {
        require_tools();
        ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("omnisync-smbd-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        set_mode(&d, 0o755);
        for sub in [
            "share", "private", "lock", "state", "cache", "pid", "log", "ncalrpc", "bind-dns",
        ] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let share_dir = d.join("share");
        let (uid, gid) = uid_gid();
        std::os::unix::fs::lchown(&share_dir, Some(uid), Some(gid)).unwrap();
        let mut s = Smbd {
            dir,
            port: 0,
            share_dir,
            child: Command::new("true").spawn().unwrap(),
        };
        s.launch(&format!("{global_extra}\n[{SHARE}]\n{share_extra}"));
        s
    }

    /// `sections` goes after the `[global]` keys: more global keys, then the share's header and
    /// its extra keys.
    fn config(&self, port: u16, sections: &str) -> PathBuf {
        let d = self.dir.path().display();
        let conf = self.dir.path().join("smb.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n  server role = standalone server\n  workgroup = WORKGROUP\n\
                 interfaces = 127.0.0.1\n  bind interfaces only = yes\n  smb ports = {port}\n\
                 disable netbios = yes\n  server min protocol = SMB2_02\n\
                 server max protocol = SMB3_11\n  security = user\n  map to guest = never\n\
                 passdb backend = tdbsam:{d}/private/passdb.tdb\n  private dir = {d}/private\n\
                 lock directory = {d}/lock\n  state directory = {d}/state\n\
                 cache directory = {d}/cache\n  pid directory = {d}/pid\n\
                 ncalrpc dir = {d}/ncalrpc\n  binddns dir = {d}/bind-dns\n\
                 log file = {d}/log/log.%m\n  load printers = no\n  printing = bsd\n\
                 printcap name = /dev/null\n  disable spoolss = yes\n  server services = -nbt\n\
                 {sections}\n  path = {d}/share\n  read only = no\n  valid users = {USER}\n"
            ),
        )
        .unwrap();
        conf
    }

    fn launch(&mut self, sections: &str) {
        let mut passdb_ready = false;
        // Another process may take the port between the probe and smbd's bind: retry.
        for _attempt in 0..5 {
            let port = free_port();
            let conf = self.config(port, sections);
            if !passdb_ready {
                let out = Command::new("testparm")
                    .arg("-s")
                    .arg(&conf)
                    .output()
                    .expect("cannot run testparm");
                assert!(
                    out.status.success(),
                    "testparm refused smb.conf: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let mut child = Command::new("smbpasswd")
                    .arg("-c")
                    .arg(&conf)
                    .args(["-s", "-a", USER])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("cannot run smbpasswd");
                write!(child.stdin.take().unwrap(), "{PASSWORD}\n{PASSWORD}\n").unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "smbpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                passdb_ready = true;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            let log = std::fs::File::create(self.dir.path().join("smbd.out")).unwrap();
            self.child = Command::new(SMBD)
                .arg("-s")
                .arg(&conf)
                .args(["--foreground", "--no-process-group", "--debug-stdout"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start smbd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // exited: the port was taken, most likely
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("smbd did not start; output:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smbd.out")).unwrap_or_default()
    }

    /// The `[[job]]` keys that reach this server's share (password inline), without name,
    /// mode and paths.
    pub fn job_keys(&self) -> String {
        format!(
            "protocol = \"smb\"\nhost = \"127.0.0.1\"\nport = {}\nshare = \"{SHARE}\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            self.port
        )
    }

    /// Kill every per-connection smbd (the children named `smbd`; the helpers are
    /// `smbd-notifyd` and `cleanupd`), never the listener. Returns how many were killed.
    pub fn kill_sessions(&self) -> usize {
        let victims: Vec<u32> = super::sshd::descendants(self.pid())
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "smbd")
            })
            .collect();
        for pid in &victims {
            // SAFETY: kill(2) on PIDs of our own smbd's children.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        victims.len()
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for Smbd {
    fn drop(&mut self) {
        for pid in super::sshd::descendants(self.pid()) {
            // SAFETY: kill(2) on PIDs of our own smbd's children.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
