//! Runs the cargo-fuzz seed corpora (`fuzz/corpus/geneve_parse/`,
//! `fuzz/corpus/tcp_parse/`) through `geneve::fuzz_all` and
//! `geneve::fuzz_tcp` so they are regression-tested by plain `cargo test`,
//! and checks the expected verdict of the named seeds.

use std::path::{Path, PathBuf};

use geneve::geneve::parse;
use geneve::tcp;

/// Expected `parse` verdict per seed file name: `Ok` or a reason name.
const EXPECTED: &[(&str, &str)] = &[
    ("seed-golden-geneve", "ok"),
    ("seed-two-options", "ok"),
    ("seed-truncated-header", "truncated"),
    ("seed-truncated-inner", "truncated"),
    ("seed-bad-version", "bad_version"),
    ("seed-options-overrun", "options_overrun"),
    ("seed-bad-option-length", "bad_option_length"),
    ("seed-unknown-critical-option", "unknown_critical_option"),
    ("seed-bad-protocol", "bad_protocol"),
    ("seed-missing-critical-flag", "missing_critical_flag"),
    ("seed-bad-vmware-option", "bad_vmware_option"),
];

/// Expected TCP verdict per seed of `tcp_parse`: `ok` when the header and
/// every option read, else the first error's variant.
const EXPECTED_TCP: &[(&str, &str)] = &[
    ("seed-linux-syn", "ok"),
    ("seed-sack-ack", "ok"),
    ("seed-unknown-option", "ok"),
    ("seed-bad-option-length", "bad_option_length"),
    ("seed-option-overrun", "option_overrun"),
    ("seed-bad-header-length", "bad_header_length"),
    ("seed-header-overrun", "header_overrun"),
    ("seed-truncated", "truncated"),
];

fn corpus(name: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    (dir, entries)
}

fn tcp_verdict(data: &[u8]) -> &'static str {
    let err = match tcp::Packet::new_checked(data) {
        Ok(p) => match p.options().find_map(Result::err) {
            None => return "ok",
            Some(e) => e,
        },
        Err(e) => e,
    };
    match err {
        tcp::Error::Truncated => "truncated",
        tcp::Error::BadHeaderLength(_) => "bad_header_length",
        tcp::Error::HeaderOverrun { .. } => "header_overrun",
        tcp::Error::OptionTruncated { .. } => "option_truncated",
        tcp::Error::BadOptionLength { .. } => "bad_option_length",
        tcp::Error::OptionOverrun { .. } => "option_overrun",
        tcp::Error::OptionsTooLong(_) | tcp::Error::BufferTooShort { .. } => "emit_only",
    }
}

#[test]
fn tcp_corpus_never_panics_and_seeds_keep_their_verdicts() {
    let (dir, entries) = corpus("tcp_parse");
    let mut checked = 0;
    for path in &entries {
        let data = std::fs::read(path).expect("read corpus file");
        geneve::fuzz_tcp(&data);
        geneve::fuzz_all(&data);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some((_, want)) = EXPECTED_TCP.iter().find(|(n, _)| *n == name) {
            assert_eq!(tcp_verdict(&data), *want, "{name}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        EXPECTED_TCP.len(),
        "every named seed is present in {}",
        dir.display()
    );
}

#[test]
fn corpus_never_panics_and_seeds_keep_their_verdicts() {
    let (dir, entries) = corpus("geneve_parse");
    assert!(
        entries.len() >= EXPECTED.len(),
        "seed corpus missing from {}",
        dir.display()
    );
    let mut checked = 0;
    for path in &entries {
        let data = std::fs::read(path).expect("read corpus file");
        geneve::fuzz_all(&data);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some((_, want)) = EXPECTED.iter().find(|(n, _)| *n == name) {
            let got = match parse(&data) {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            };
            assert_eq!(got, *want, "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, EXPECTED.len(), "every named seed is present");
}
