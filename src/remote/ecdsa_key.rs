//! A repair for unencrypted OpenSSH ECDSA private keys whose scalar has a leading zero byte.
//!
//! OpenSSH stores the private scalar `d` as an `mpint`: the shortest big-endian form, so about
//! one P-256 key in 256 has a 31-byte `d`. ssh-key 0.7 (russh's key parser) wants exactly the
//! curve's size there and fails with "length invalid": such a user could not log in, and
//! `tests/sftp.rs` failed on one random key in 256. [`pad_short_scalar`] rewrites the key with
//! `d` left-padded to the curve's size (the same number), which the parser takes. Encrypted keys
//! are left alone: their private part cannot be read without the passphrase's decryption, which
//! is the parser's own.

use data_encoding::BASE64;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

/// Reads the SSH wire format: big-endian `u32`s and length-prefixed strings.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The key in `text` with its ECDSA scalar padded to the curve's size, when it is an
/// unencrypted OpenSSH ECDSA key whose scalar is shorter; `None` for anything else (nothing to
/// repair, or not a key this understands).
pub fn pad_short_scalar(text: &str) -> Option<String> {
    let body = text.split(BEGIN).nth(1)?.split(END).next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let blob = BASE64.decode(b64.as_bytes()).ok()?;
    let mut c = Cursor(blob.strip_prefix(MAGIC)?);
    let (cipher, kdf, kdf_opts) = (c.string()?, c.string()?, c.string()?);
    if cipher != b"none" || kdf != b"none" || c.u32()? != 1 {
        return None;
    }
    let public = c.string()?;
    let mut p = Cursor(c.string()?);
    let (check1, check2) = (p.u32()?, p.u32()?);
    let kind = p.string()?;
    let curve = p.string()?;
    let size = match curve {
        b"nistp256" => 32,
        b"nistp384" => 48,
        b"nistp521" => 66,
        _ => return None,
    };
    if !kind.starts_with(b"ecdsa-sha2-") {
        return None;
    }
    let (point, d, comment) = (p.string()?, p.string()?, p.string()?);
    if d.is_empty() || d.len() >= size {
        return None;
    }
    let mut private = Vec::new();
    private.extend_from_slice(&check1.to_be_bytes());
    private.extend_from_slice(&check2.to_be_bytes());
    put_string(&mut private, kind);
    put_string(&mut private, curve);
    put_string(&mut private, point);
    let mut padded = vec![0u8; size - d.len()];
    padded.extend_from_slice(d);
    put_string(&mut private, &padded);
    put_string(&mut private, comment);
    // Padding 1, 2, 3, … to the cipher's block size (8 for "none").
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut out = MAGIC.to_vec();
    for s in [cipher, kdf, kdf_opts] {
        put_string(&mut out, s);
    }
    out.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out, public);
    put_string(&mut out, &private);
    let encoded = BASE64.encode(&out);
    let mut pem = String::from(BEGIN);
    pem.push('\n');
    for line in encoded.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str(END);
    pem.push('\n');
    Some(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The scalar's length in an unencrypted OpenSSH ECDSA key.
    fn scalar_len(text: &str) -> usize {
        let body = text.split(BEGIN).nth(1).unwrap().split(END).next().unwrap();
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let blob = BASE64.decode(b64.as_bytes()).unwrap();
        let mut c = Cursor(blob.strip_prefix(MAGIC).unwrap());
        for _ in 0..3 {
            c.string().unwrap();
        }
        c.u32().unwrap();
        c.string().unwrap();
        let mut p = Cursor(c.string().unwrap());
        p.u32().unwrap();
        p.u32().unwrap();
        for _ in 0..3 {
            p.string().unwrap();
        }
        p.string().unwrap().len()
    }

    #[test]
    fn a_p256_key_with_a_short_scalar_loads_once_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // One key in 256 has a leading zero byte in its scalar: generate until one does.
        let mut found = None;
        for _ in 0..4000 {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("pub"));
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen (openssh-client) is needed");
            assert!(st.success());
            let text = std::fs::read_to_string(&path).unwrap();
            let n = scalar_len(&text);
            if n < 32 {
                found = Some(text);
                break;
            }
            // A full-length scalar is left alone.
            assert_eq!(pad_short_scalar(&text), None, "scalar of {n} bytes");
        }
        let text = found.expect("no short scalar in 4,000 keys");
        // The parser refuses the key as OpenSSH wrote it...
        assert!(russh::keys::decode_secret_key(&text, None).is_err());
        // ...and takes the padded one, which is the same key.
        let fixed = pad_short_scalar(&text).expect("a short scalar is padded");
        assert_eq!(scalar_len(&fixed), 32);
        let key = russh::keys::decode_secret_key(&fixed, None).expect("padded key loads");
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        let want = russh::keys::parse_public_key_base64(public.split_whitespace().nth(1).unwrap())
            .unwrap();
        assert_eq!(key.public_key().key_data(), want.key_data());
        // And its scalar is the one that goes with that public key: what it signs verifies.
        use russh::keys::signature::{Signer, Verifier};
        let sig: russh::keys::ssh_key::Signature = key.try_sign(b"omnisync").unwrap();
        Verifier::verify(&want, b"omnisync", &sig)
            .expect("the padded scalar signs for the public key");
    }

    #[test]
    fn anything_else_is_left_alone() {
        assert_eq!(pad_short_scalar(""), None);
        assert_eq!(pad_short_scalar("not a key"), None);
        assert_eq!(pad_short_scalar(&format!("{BEGIN}\n!!!\n{END}\n")), None);
        // An ed25519 key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            pad_short_scalar(&std::fs::read_to_string(&path).unwrap()),
            None
        );
    }
}
