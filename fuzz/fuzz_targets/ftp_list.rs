//! The FTP listing parsers never panic, whatever a server sends: MLSD/MLST fact lines, `LIST`
//! lines (Unix, DOS/IIS, anything else) and `MDTM`/`modify` time values.
//!
//! The first 4 bytes pick the clock (`now`, which places Unix dates without a year) anywhere
//! from 1970 to 2106; the rest is split into lines as a listing reply is.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own source files, compiled here as they are in omnisync (see Cargo.toml).
#[path = "../../src/remote/ftp_list.rs"]
mod ftp_list;
#[allow(dead_code)]
#[path = "../../src/model.rs"]
mod model;

use ftp_list::ListLine;

fn check(line: &str, parsed: ListLine) {
    match parsed {
        ListLine::Entry(e) => {
            assert!(!e.name.is_empty(), "an entry without a name from {line:?}");
            assert!(
                e.name != "." && e.name != "..",
                "{:?} listed as an entry from {line:?}",
                e.name
            );
        }
        ListLine::Bad(l) => assert!(!l.is_empty(), "an empty line reported as bad"),
        ListLine::Skip => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (clock, rest) = data.split_at(data.len().min(4));
    let mut now = [0u8; 4];
    now[..clock.len()].copy_from_slice(clock);
    let now = i64::from(u32::from_le_bytes(now));
    let text = String::from_utf8_lossy(rest);
    for line in text.split('\n') {
        check(line, ftp_list::parse_list_line(line, now));
        check(line, ftp_list::parse_mlsd_line(line));
        if let Some(secs) = ftp_list::parse_timeval(line) {
            // A time read back must format to the same 14 digits (what MFMT sends).
            let digits = &line.trim()[..14];
            if secs >= 0 {
                assert_eq!(ftp_list::format_timeval(secs), digits, "from {line:?}");
            }
        }
    }
});
