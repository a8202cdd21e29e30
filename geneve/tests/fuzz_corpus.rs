//! Runs the cargo-fuzz seed corpus (`fuzz/corpus/geneve_parse/`) through
//! `geneve::fuzz_all` so it is regression-tested by plain `cargo test`, and
//! checks the expected verdict of the named seeds.

use std::path::Path;

use geneve::geneve::parse;

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

#[test]
fn corpus_never_panics_and_seeds_keep_their_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/geneve_parse");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
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
