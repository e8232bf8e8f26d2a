//! The repair of OpenSSH ECDSA keys whose private scalar is shorter than the curve's size
//! (`src/remote/ecdsa_key.rs`), on keys made by ssh-keygen (openssh-client). A test binary of
//! its own: it forks ssh-keygen hundreds of times, and a forked child briefly shares every
//! descriptor of the process, flock locks included.

use data_encoding::BASE64;
use omnisync::remote::ecdsa_key::{decrypted, pad_short_scalar};
use std::path::Path;
use std::process::Command;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";

/// The length of the private scalar of an unencrypted OpenSSH ECDSA key: the sixth string of
/// the private section, after the checks, type, curve and public point.
fn scalar_len(text: &str) -> usize {
    let body = text.split(BEGIN).nth(1).unwrap().split(END).next().unwrap();
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let blob = BASE64.decode(b64.as_bytes()).unwrap();
    let mut rest = blob.strip_prefix(b"openssh-key-v1\0".as_slice()).unwrap();
    let string = |rest: &mut &[u8]| -> Vec<u8> {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let s = rest[4..4 + n].to_vec();
        *rest = &rest[4 + n..];
        s
    };
    for _ in 0..3 {
        string(&mut rest); // cipher, kdf, kdf options
    }
    rest = &rest[4..]; // number of keys
    string(&mut rest); // public key
    let private = string(&mut rest);
    let mut p = &private[8..]; // the two check words
    for _ in 0..3 {
        string(&mut p); // type, curve, public point
    }
    string(&mut p).len()
}

fn keygen(path: &Path, args: &[&str]) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(args)
        .arg("-f")
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
}

#[test]
fn a_p256_key_with_a_short_scalar_loads_once_padded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    // One key in 256 has a leading zero byte in its scalar: generate until one does.
    let mut found = None;
    for _ in 0..4000 {
        keygen(&path, &["-t", "ecdsa", "-b", "256"]);
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
    let want =
        russh::keys::parse_public_key_base64(public.split_whitespace().nth(1).unwrap()).unwrap();
    assert_eq!(key.public_key().key_data(), want.key_data());
    // And its scalar is the one that goes with that public key: what it signs verifies.
    use russh::keys::signature::{Signer, Verifier};
    let sig: russh::keys::ssh_key::Signature = key.try_sign(b"omnisync").unwrap();
    Verifier::verify(&want, b"omnisync", &sig).expect("the padded scalar signs for the public key");

    // The same key encrypted (ssh-keygen's default aes256-ctr + bcrypt): the parser refuses it
    // with the right passphrase too; decrypted, then padded, it is the same key.
    let st = Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "a-Passphrase", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let enc = std::fs::read_to_string(&path).unwrap();
    assert!(russh::keys::load_secret_key(&path, Some("a-Passphrase")).is_err());
    assert_eq!(decrypted(&enc, "wrong passphrase"), None);
    let plain = decrypted(&enc, "a-Passphrase").expect("decrypts with its passphrase");
    assert_eq!(
        scalar_len(&plain),
        scalar_len(&text),
        "the scalar as OpenSSH wrote it"
    );
    let fixed = pad_short_scalar(&plain).expect("a short scalar is padded");
    let key = russh::keys::decode_secret_key(&fixed, None).expect("decrypted, padded key loads");
    assert_eq!(key.public_key().key_data(), want.key_data());
}

#[test]
fn an_encrypted_key_decrypts_to_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in [("p", ["-t", "ecdsa"]), ("e", ["-t", "ed25519"])] {
        let path = dir.path().join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", "a-Passphrase"])
            .args(kind)
            .arg("-f")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let enc = std::fs::read_to_string(&path).unwrap();
        let want = russh::keys::load_secret_key(&path, Some("a-Passphrase")).unwrap();
        let plain = decrypted(&enc, "a-Passphrase").expect("decrypts");
        let got = russh::keys::decode_secret_key(&plain, None).expect("loads unencrypted");
        assert_eq!(got.public_key().key_data(), want.public_key().key_data());
        assert_eq!(decrypted(&enc, "not it"), None);
        // An unencrypted key has nothing to decrypt.
        assert_eq!(decrypted(&plain, "a-Passphrase"), None);
    }
}

#[test]
fn anything_else_is_left_alone() {
    assert_eq!(pad_short_scalar(""), None);
    assert_eq!(pad_short_scalar("not a key"), None);
    assert_eq!(pad_short_scalar(&format!("{BEGIN}\n!!!\n{END}\n")), None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e");
    keygen(&path, &["-t", "ed25519"]);
    assert_eq!(
        pad_short_scalar(&std::fs::read_to_string(&path).unwrap()),
        None
    );
    // An encrypted ECDSA key is not touched (its private part is read by `decrypted`).
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "a-Passphrase", "-f"])
        .arg(dir.path().join("enc"))
        .status()
        .unwrap();
    assert!(st.success());
    let enc = std::fs::read_to_string(dir.path().join("enc")).unwrap();
    assert_eq!(pad_short_scalar(&enc), None);
}
