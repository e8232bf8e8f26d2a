//! A real vsftpd on 127.0.0.1 for one test, plain FTP or explicit FTPS, started and stopped by
//! the test itself (see `../shared/TESTING.md`, "vsftpd 3.0.3").
//!
//! Each [`Vsftpd`] gets its own temporary folder (config, log, served data) and a free port, runs
//! in the foreground (`background=NO`) as a child process and is killed by PID on drop, its
//! per-connection session processes first. Logins are as the system user `omnitest` with
//! [`sshd::PASSWORD`] (the user is shared with the sftp harness).
//!
//! FTPS uses a self-signed leaf certificate (CA:FALSE: rustls refuses a CA certificate as a
//! server's own) for 127.0.0.1, made once per test binary with `openssl`; it doubles as the
//! client's `tls_ca_file`. A second, unrelated certificate is the "wrong CA".
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::sshd::{self, PASSWORD, USER};

const VSFTPD: &str = "/usr/sbin/vsftpd";

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub tls: bool,
    /// vsftpd's two-argument `MDTM time path` sets mtimes (`mdtm_write`, default YES).
    pub mdtm_write: bool,
    /// Active mode only: `PORT` allowed, `PASV`/`EPSV` refused; jobs get `ftp_active = true`.
    pub active: bool,
    /// vsftpd `max_per_ip`: connections allowed from one address (0 = no limit).
    pub max_per_ip: u32,
    /// With `tls`: the server refuses every TLS version below 1.3 (OpenSSL's `MinProtocol`,
    /// through `OPENSSL_CONF`), and does not require data connections to resume the control
    /// connection's TLS session (a TLS 1.3 client cannot keep doing that).
    pub tls13_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: false,
            mdtm_write: true,
            active: false,
            max_per_ip: 0,
            tls13_only: false,
        }
    }
}

pub struct Vsftpd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// A folder owned by `omnitest` for the test's remote tree (absolute server path).
    pub data: PathBuf,
    /// A file holding the password (root-owned, 0600).
    pub password_file: PathBuf,
    pub opts: Options,
    child: Child,
}

/// Certificates made once per test binary: (dir, server cert+key, an unrelated cert).
struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    other: PathBuf,
}

fn make_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("cannot run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(&key, 0o600);
    set_mode(&crt, 0o644);
    (crt, key)
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("omnisync-ftpcerts-")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);
        let (cert, key) = make_cert(dir.path(), "server", "127.0.0.1");
        let (other, _) = make_cert(dir.path(), "other", "omnisync wrong CA");
        Certs {
            _dir: dir,
            cert,
            key,
            other,
        }
    })
}

fn require_tools() {
    assert!(
        Path::new(VSFTPD).exists(),
        "{VSFTPD} is missing: the ftp tests need a real vsftpd. Install it with \
         `apt-get install vsftpd` (scripts/test.sh does this from scripts/apt-packages.txt)"
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the ftp tests start vsftpd and log in as the system user {USER}: run them as root (CI does)"
    );
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Vsftpd {
    pub fn start(opts: Options) -> Vsftpd {
        require_tools();
        sshd::ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("omnisync-vsftpd-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        set_mode(&d, 0o755);
        std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
        let data = d.join("data");
        std::fs::create_dir(&data).unwrap();
        let (uid, gid) = sshd::uid_gid();
        std::os::unix::fs::lchown(&data, Some(uid), Some(gid)).unwrap();
        let password_file = d.join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        set_mode(&password_file, 0o600);
        let mut s = Vsftpd {
            dir,
            port: 0,
            data,
            password_file,
            opts,
            child: Command::new("true").spawn().unwrap(),
        };
        s.launch();
        s
    }

    /// The certificate clients should trust (`tls_ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        certs().cert.clone()
    }

    /// A certificate that did not sign the server's.
    pub fn wrong_ca_file(&self) -> PathBuf {
        certs().other.clone()
    }

    fn launch(&mut self) {
        let d = self.dir.path().to_path_buf();
        let tls = if self.opts.tls {
            let c = certs();
            format!(
                "ssl_enable=YES\nallow_anon_ssl=NO\nforce_local_logins_ssl=YES\n\
                 force_local_data_ssl=YES\nrequire_ssl_reuse={}\nssl_ciphers=HIGH\n\
                 rsa_cert_file={}\nrsa_private_key_file={}\n",
                if self.opts.tls13_only { "NO" } else { "YES" },
                c.cert.display(),
                c.key.display()
            )
        } else {
            "ssl_enable=NO\n".to_string()
        };
        for _attempt in 0..5 {
            let port = sshd::free_port();
            let config = d.join("vsftpd.conf");
            std::fs::write(
                &config,
                format!(
                    "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\n\
                     background=NO\nanonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\n\
                     local_umask=022\npam_service_name=vsftpd\n{}\nconnect_from_port_20=NO\n\
                     secure_chroot_dir=/var/run/vsftpd/empty\nseccomp_sandbox=NO\n\
                     use_localtime=NO\nmdtm_write={}\ndelay_failed_login=0\n\
                     max_login_fails=10\nmax_per_ip={}\nxferlog_enable=YES\nxferlog_std_format=NO\n\
                     vsftpd_log_file={}/vsftpd.log\n{tls}",
                    if self.opts.active {
                        "pasv_enable=NO\nport_enable=YES"
                    } else {
                        "pasv_enable=YES\npasv_address=127.0.0.1\nport_enable=NO"
                    },
                    if self.opts.mdtm_write { "YES" } else { "NO" },
                    self.opts.max_per_ip,
                    d.display()
                ),
            )
            .unwrap();
            let _ = self.child.kill();
            let _ = self.child.wait();
            let mut cmd = Command::new(VSFTPD);
            if self.opts.tls13_only {
                let ossl = d.join("openssl-tls13.cnf");
                std::fs::write(
                    &ossl,
                    "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n\
                     [ssl_sect]\nsystem_default = system_default_sect\n\
                     [system_default_sect]\nMinProtocol = TLSv1.3\n",
                )
                .unwrap();
                cmd.env("OPENSSL_CONF", &ossl);
            }
            self.child = cmd
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start vsftpd");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // exited: the port was taken, most likely
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("vsftpd did not start: {err}\nlog:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default()
    }

    /// `[[job]]` keys for this server (password from a file), without name, mode and paths.
    pub fn job_keys(&self) -> String {
        let mut s = format!(
            "protocol = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{USER}\"\n\
             password_file = {:?}\n",
            if self.opts.tls { "ftps" } else { "ftp" },
            self.port,
            self.password_file
        );
        if self.opts.tls {
            s.push_str(&format!("tls_ca_file = {:?}\n", self.ca_file()));
        }
        if self.opts.active {
            s.push_str("ftp_active = true\n");
        }
        s
    }

    /// Kill every per-connection session process, never the listener. Returns how many.
    pub fn kill_sessions(&self) -> usize {
        let victims = sshd::descendants(self.pid());
        for pid in &victims {
            // SAFETY: kill(2) on PIDs of our own vsftpd's children.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        victims.len()
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
