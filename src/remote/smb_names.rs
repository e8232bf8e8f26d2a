//! SMB names: what Windows forbids in a file name is stored on the share as `%XX`.
//!
//! A Windows (or Samba) share refuses `<>:"\|?*`, control characters, a trailing dot or space,
//! and the reserved device names (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, with
//! or without an extension: `con.txt` is the console too). Linux allows all of them. Each such
//! character becomes `%` and two upper-case hex digits per UTF-8 byte; a reserved device name has
//! its first letter encoded (`CON` → `%43ON`), and `%` itself is always encoded (`%25`), so the
//! mapping is reversible: [`decode_name`] of [`encode_name`] is the identity.
//!
//! The private-use code points U+F001–U+F029 are encoded as well: the `smb2` crate maps the
//! illegal characters onto exactly those (the macOS scheme) and back on every listing, so a local
//! name holding one would otherwise come back as a different name.
//!
//! A name on the share that is not the encoding of anything (a stray `%`, lower-case hex, a raw
//! `:` from another client's mapping) decodes to `None`: it cannot be addressed by its decoded
//! name, so the listing reports it instead of guessing.

/// Characters Windows refuses anywhere in a name (besides control characters).
const FORBIDDEN: &[char] = &['<', '>', ':', '"', '\\', '|', '?', '*', '%'];

/// Device names Windows reserves, compared case-insensitively on the part before the first dot.
const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL"];

fn is_pua_mapped(c: char) -> bool {
    ('\u{F001}'..='\u{F029}').contains(&c)
}

fn must_encode(c: char) -> bool {
    c.is_ascii_control() && c != '\u{7F}' || FORBIDDEN.contains(&c) || is_pua_mapped(c)
}

/// Is the part of `name` before its first dot a reserved device name?
pub fn is_reserved_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name);
    let upper = stem.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) {
        return true;
    }
    let b = upper.as_bytes();
    b.len() == 4 && (upper.starts_with("COM") || upper.starts_with("LPT")) && b[3].is_ascii_digit()
}

fn push_encoded(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for byte in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{byte:02X}"));
    }
}

/// The name a single path component has on the share.
pub fn encode_name(name: &str) -> String {
    // Every trailing dot and space is encoded, not just the last one.
    let keep = name.trim_end_matches(['.', ' ']).len();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, c) in name.char_indices() {
        let first_of_device = i == 0 && is_reserved_device(name);
        if i >= keep || first_of_device || must_encode(c) {
            push_encoded(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The local name of a name on the share; `None` when `name` is not an encoding this module
/// produces (see the module doc).
pub fn decode_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            };
            let hi = bytes.get(i + 1).copied().and_then(hex)?;
            let lo = bytes.get(i + 2).copied().and_then(hex)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    // Only the canonical encoding decodes: `%41` for a plain `A` would make two share names
    // map onto one local name.
    (encode_name(&decoded) == name).then_some(decoded)
}

/// A `/`-separated relative path with each component encoded.
pub fn encode_path(path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    path.split('/')
        .map(encode_name)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        for (local, share) in [
            ("plain.txt", "plain.txt"),
            ("a:b?.txt", "a%3Ab%3F.txt"),
            ("<>:\"\\|?*", "%3C%3E%3A%22%5C%7C%3F%2A"),
            ("100%", "100%25"),
            ("%41", "%2541"),
            ("trail.", "trail%2E"),
            ("trail. .", "trail%2E%20%2E"),
            ("...", "%2E%2E%2E"),
            ("trailing space ", "trailing space%20"),
            (" lead.and.inner ok", " lead.and.inner ok"),
            ("tab\there", "tab%09here"),
            ("\u{1}", "%01"),
            ("CON", "%43ON"),
            ("con", "%63on"),
            ("Con.txt", "%43on.txt"),
            ("NUL.tar.gz", "%4EUL.tar.gz"),
            ("COM1", "%43OM1"),
            ("lpt9.log", "%6Cpt9.log"),
            ("COM", "COM"),
            ("COM10", "COM10"),
            ("CONSOLE", "CONSOLE"),
            ("xCON", "xCON"),
            ("aux.", "%61ux%2E"),
            ("caf\u{e9}", "caf\u{e9}"),
            ("\u{F025}", "%EF%80%A5"),
            ("\u{F030}", "\u{F030}"),
            ("\u{1F600} emoji", "\u{1F600} emoji"),
        ] {
            assert_eq!(encode_name(local), share, "encode {local:?}");
            assert_eq!(
                decode_name(share).as_deref(),
                Some(local),
                "decode {share:?}"
            );
        }
    }

    #[test]
    fn names_that_are_no_encoding_are_refused() {
        for bad in [
            "50%",
            "%zz",
            "%3a",
            "%41",
            "a:b",
            "trail.",
            "CON",
            "%FF",
            "x\u{F022}",
        ] {
            assert_eq!(decode_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_encode_per_component() {
        assert_eq!(encode_path(""), "");
        assert_eq!(encode_path("a?/CON/b."), "a%3F/%43ON/b%2E");
    }

    proptest! {
        #[test]
        fn round_trip(name in "[a-zA-Z0-9 .%:<>\"\\\\|?*\t\u{1}\u{e9}\u{F001}-\u{F02A}]{1,12}") {
            let enc = encode_name(&name);
            prop_assert_eq!(decode_name(&enc), Some(name.clone()));
            // The share name is valid on Windows: nothing forbidden, no trailing dot or space.
            prop_assert!(!enc.chars().any(|c| c != '%' && must_encode(c)));
            prop_assert!(!enc.ends_with('.') && !enc.ends_with(' '));
            prop_assert!(!is_reserved_device(&enc));
        }

        #[test]
        fn reserved_names_in_any_case(dev in "(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])", ext in "(\\.[a-z]{1,3})?") {
            let name = format!("{dev}{ext}");
            let enc = encode_name(&name);
            prop_assert!(enc.starts_with('%'));
            prop_assert!(!is_reserved_device(&enc));
            prop_assert_eq!(decode_name(&enc), Some(name));
        }
    }
}
