//! A real OpenSSH sshd on 127.0.0.1 for one test, started and stopped by the test itself.
//!
//! Each [`Sshd`] gets its own temporary folder (config, host key, client key, known_hosts,
//! authorized_keys, log) and a free port, runs `sshd -D` as a child process and kills it by PID
//! on drop. Logins are as the system user `omnitest` (created with `useradd` when missing: the
//! tests run as root, as CI does), by key or by the password [`PASSWORD`]. Files a test puts
//! straight into the server's folder must belong to `omnitest`: use [`Sshd::chown`].
//!
//! Nothing is installed here: without `/usr/sbin/sshd` the harness fails with the command that
//! installs it (`scripts/test.sh` does that from `scripts/apt-packages.txt`).
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const USER: &str = "omnitest";
/// The test user's password; every server harness of this suite uses the same one.
pub const PASSWORD: &str = "omnitest-Pw-4711";
const SSHD: &str = "/usr/sbin/sshd";

/// Serialises `useradd`/`chpasswd` between the tests of one binary.
static USER_SETUP: Mutex<()> = Mutex::new(());

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// A folder owned by `omnitest` for the test's remote tree (absolute server path).
    pub data: PathBuf,
    /// known_hosts holding the server's real key, as `ssh-keyscan` printed it.
    pub known_hosts: PathBuf,
    /// An unencrypted ed25519 key that the server accepts for `omnitest`.
    pub user_key: PathBuf,
    child: Child,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn require_tools() {
    for (bin, pkg) in [
        (SSHD, "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/bin/ssh-keyscan", "openssh-client"),
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the sftp tests need a real OpenSSH server. Install it with \
             `apt-get install openssh-server openssh-client` (scripts/test.sh does this from \
             scripts/apt-packages.txt)"
        );
        let _ = pkg;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the sftp tests start sshd and log in as the system user {USER}: run them as root (CI does)"
    );
}

/// Create `omnitest` when missing and (re)set its password; idempotent and safe to race with
/// other test binaries doing the same.
pub fn ensure_user() {
    let _g = USER_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        let st = Command::new("useradd")
            .args(["-m", "-d", "/home/omnitest", "-s", "/bin/bash", USER])
            .status()
            .expect("cannot run useradd");
        // 9 = the user exists (created by a test running in parallel).
        assert!(
            st.success() || st.code() == Some(9),
            "useradd {USER} failed: {st}"
        );
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot run chpasswd");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{USER}:{PASSWORD}").unwrap();
    }
    assert!(child.wait().unwrap().success(), "chpasswd failed");
}

pub fn uid_gid() -> (u32, u32) {
    let out = run(Command::new("id").args(["-u", USER]));
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = run(Command::new("id").args(["-g", USER]));
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Sshd {
    pub fn start() -> Sshd {
        require_tools();
        ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("omnisync-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        // omnitest must reach the data folder and read authorized_keys below it.
        set_mode(&d, 0o755);
        std::fs::create_dir_all("/run/sshd").unwrap();
        set_mode(Path::new("/run/sshd"), 0o755);

        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
            .arg(d.join("host_ed25519")));
        let user_key = d.join("user_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "user", "-f"])
            .arg(&user_key));
        let authorized = d.join("authorized_keys");
        std::fs::copy(d.join("user_ed25519.pub"), &authorized).unwrap();
        set_mode(&authorized, 0o644);

        let data = d.join("data");
        std::fs::create_dir(&data).unwrap();
        let sshd = Sshd {
            dir,
            port: 0,
            data,
            known_hosts: d.join("known_hosts"),
            user_key,
            child: Command::new("true").spawn().unwrap(),
        };
        sshd.chown(&sshd.data);
        sshd.launch(None)
    }

    /// Stop the server, listener and sessions together (no client can log in again in
    /// between); the port stays free until [`Sshd::restart`]. Returns the sessions' processes
    /// killed.
    pub fn stop(&mut self) -> usize {
        let victims = descendants(self.pid());
        let _ = self.child.kill();
        for pid in &victims {
            // SAFETY: kill(2) on PIDs that were our own sshd's children a moment ago.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        victims.len()
    }

    /// Start the server again on the same port with the same host key (after [`Sshd::stop`]).
    pub fn restart(&mut self) {
        let this = std::mem::replace(self, Sshd::placeholder());
        let port = this.port;
        *self = this.launch(Some(port));
    }

    fn placeholder() -> Sshd {
        Sshd {
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            data: PathBuf::new(),
            known_hosts: PathBuf::new(),
            user_key: PathBuf::new(),
            child: Command::new("true").spawn().unwrap(),
        }
    }

    fn launch(mut self, fixed_port: Option<u16>) -> Sshd {
        let d = self.dir.path().to_path_buf();
        // Another process may take the port between the probe and sshd's bind: retry.
        for _attempt in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let config = d.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_ed25519\n\
                     PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                     StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication yes\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n\
                     AllowUsers {USER}\nMaxStartups 50\nMaxSessions 50\n\
                     Subsystem sftp internal-sftp\n",
                    d = d.display()
                ),
            )
            .unwrap();
            run(Command::new(SSHD).arg("-t").arg("-f").arg(&config));
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start sshd");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // exited: the port was taken, most likely
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if !up {
                continue;
            }
            self.port = port;
            let out = run(Command::new("ssh-keyscan").args([
                "-p",
                &port.to_string(),
                "-t",
                "ed25519",
                "127.0.0.1",
            ]));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("ssh-ed25519"),
                "ssh-keyscan printed no key"
            );
            std::fs::write(&self.known_hosts, &out.stdout).unwrap();
            return self;
        }
        panic!("sshd did not start; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Give a path (not recursively) to omnitest.
    pub fn chown(&self, path: &Path) {
        let (uid, gid) = uid_gid();
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }

    /// Give a tree to omnitest.
    pub fn chown_tree(&self, path: &Path) {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{USER}:{USER}"))
            .arg(path));
    }

    /// A `[[job]]` block for this server (key auth), without name, mode and paths.
    pub fn job_keys(&self) -> String {
        format!(
            "protocol = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{USER}\"\n\
             private_key = {:?}\nknown_hosts = {:?}\n",
            self.port, self.user_key, self.known_hosts
        )
    }

    /// Kill every per-connection session (the `[priv]` child and its unprivileged child that
    /// holds the socket), never the listener. Returns how many processes were killed.
    pub fn kill_sessions(&self) -> usize {
        let victims = descendants(self.pid());
        for pid in &victims {
            // SAFETY: kill(2) on PIDs of our own sshd's children.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        victims.len()
    }
}

/// All descendants of `root`, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let mut stat = String::new();
            if std::fs::File::open(e.path().join("stat"))
                .and_then(|mut f| f.read_to_string(&mut stat))
                .is_err()
            {
                continue;
            }
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Sessions first (they outlive the listener), then the listener, all by PID.
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
