//! A repair for unencrypted OpenSSH ECDSA private keys whose scalar has a leading zero byte.
//!
//! OpenSSH stores the private scalar `d` as an `mpint`: the shortest big-endian form, so about
//! one P-256 key in 256 has a 31-byte `d`. ssh-key 0.7 (russh's key parser) wants exactly the
//! curve's size there and fails with "length invalid": such a user could not log in, and
//! `tests/sftp.rs` failed on one random key in 256. [`pad_short_scalar`] rewrites the key with
//! `d` left-padded to the curve's size (the same number), which the parser takes. The parser
//! decodes an encrypted key's private part right after decrypting it, so it refuses such a key
//! with its passphrase too: [`decrypted`] decrypts it (ssh-key's own KDF and cipher) into the
//! unencrypted form, which is then padded the same way.

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
    let blob = pem_blob(text)?;
    let mut c = Cursor(blob.strip_prefix(MAGIC)?);
    let (cipher, kdf, _kdf_opts) = (c.string()?, c.string()?, c.string()?);
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
    Some(unencrypted_pem(public, &private))
}

/// The OpenSSH key in `text`, encrypted with `passphrase`, as the same key unencrypted (its
/// private section decrypted, the rest unchanged); `None` for a key that is not encrypted, a
/// wrong passphrase (the section's two check words differ) or anything this does not read.
pub fn decrypted(text: &str, passphrase: &str) -> Option<String> {
    use russh::keys::ssh_key::PrivateKey;
    let blob = pem_blob(text)?;
    let mut c = Cursor(blob.strip_prefix(MAGIC)?);
    let (_cipher, _kdf, _kdf_opts) = (c.string()?, c.string()?, c.string()?);
    if c.u32()? != 1 {
        return None;
    }
    let public = c.string()?;
    let sealed = c.string()?;
    // An AEAD cipher's tag follows the section (aes256-gcm@openssh.com); CTR and CBC have none.
    let tag = (c.0.len() == 16).then(|| c.0.try_into().ok()).flatten();
    let key = PrivateKey::from_openssh(text).ok()?;
    if !key.is_encrypted() {
        return None;
    }
    let (k, iv) = key.kdf().derive_key_and_iv(key.cipher(), passphrase).ok()?;
    let mut private = sealed.to_vec();
    key.cipher().decrypt(&k, &iv, &mut private, tag).ok()?;
    let mut p = Cursor(&private);
    if p.u32()? != p.u32()? {
        return None;
    }
    Some(unencrypted_pem(public, &private))
}

/// The base64 body of an OpenSSH private key file, decoded.
fn pem_blob(text: &str) -> Option<Vec<u8>> {
    let body = text.split(BEGIN).nth(1)?.split(END).next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64.decode(b64.as_bytes()).ok()
}

/// An unencrypted OpenSSH private key file holding one key: its public blob and its private
/// section (check words, key, comment, padding).
fn unencrypted_pem(public: &[u8], private: &[u8]) -> String {
    let mut out = MAGIC.to_vec();
    for s in [&b"none"[..], b"none", b""] {
        put_string(&mut out, s);
    }
    out.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out, public);
    put_string(&mut out, private);
    let encoded = BASE64.encode(&out);
    let mut pem = String::from(BEGIN);
    pem.push('\n');
    for line in encoded.as_bytes().chunks(70) {
        // Base64 is ASCII.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(END);
    pem.push('\n');
    pem
}

// Tests: tests/ecdsa_key.rs, a process of its own: they run ssh-keygen hundreds of times, and
// a forked child briefly holds every descriptor of the process, flock locks included (the
// mount cache's lock test failed next to them).
