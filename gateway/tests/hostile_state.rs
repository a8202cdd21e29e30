//! Hostile desired states (issue 13): what parsing and validating them may
//! cost, counted by a global allocator (bytes this thread asked for, frees
//! not subtracted), not sampled from RSS. A YAML anchor aliased many times
//! is refused before it expands; 1,200 overlapping switches give one
//! problem each (not one per pair) and a capped list.

use control::validate::MAX_PROBLEMS;
use gateway::state::{self, StateError};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

/// Bytes `f` asked the allocator for.
fn cost<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = alloc_count::bytes();
    let out = f();
    (out, alloc_count::bytes() - before)
}

const MIB: u64 = 1 << 20;

/// An IP set whose addresses are `anchor` once and `*a` `aliases` times.
fn aliased_addrs(anchor: &str, aliases: usize) -> String {
    let mut doc = format!("firewall:\n  ip_sets:\n    - name: s\n      addrs: [&a \"{anchor}\"");
    doc.push_str(&", *a".repeat(aliases));
    doc.push_str("]\n");
    doc
}

fn parse_error(r: Result<state::DesiredState, StateError>) -> String {
    match r {
        Err(StateError::Parse(m)) => m,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn a_64k_anchor_aliased_1000_times_is_refused_before_it_expands() {
    // The report's 68 KB PUT: expanded, 64 MB of strings before validation
    // quoted them again (+229 MB RSS in the gateway).
    let doc = aliased_addrs(&"A".repeat(64 * 1024), 1000);
    let (r, bytes) = cost(|| state::parse_and_validate(&doc));
    assert!(bytes < 4 * MIB, "parsing asked for {bytes} bytes");
    let e = parse_error(r);
    assert!(e.contains("longer than the limit of 1024 bytes"), "{e}");
}

#[test]
fn alias_fan_out_is_refused_before_it_expands() {
    // Strings under the length limit: 1 KB aliased 20,000 times is 20 MB
    // from an 80 KB document (and as much again in validation's quotes).
    let doc = aliased_addrs(&"B".repeat(1000), 20_000);
    let (r, bytes) = cost(|| state::parse_and_validate(&doc));
    assert!(bytes < 16 * MIB, "parsing asked for {bytes} bytes");
    let e = parse_error(r);
    assert!(e.contains("the document expands to more than"), "{e}");
}

#[test]
fn overlapping_switches_give_a_bounded_problem_list() {
    // 1,200 switches with one subnet on one router: the pairwise check made
    // 719,400 problems (a 114 MB response); now one per overlapping switch,
    // the first MAX_PROBLEMS listed and the rest counted.
    let n = 1200;
    let mut doc = String::from("switches:\n");
    for i in 0..n {
        doc.push_str(&format!(
            "  - {{name: ls{i}, tag: t{i}, vni: {}, subnet: 10.0.0.0/24, gateway_ip: 10.0.0.1}}\n",
            i + 1
        ));
    }
    doc.push_str("routers:\n  - name: t1\n    mac: 02:50:56:00:00:01\n    switches: [");
    doc.push_str(
        &(0..n)
            .map(|i| format!("ls{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    doc.push_str("]\n");
    let (r, bytes) = cost(|| state::parse_and_validate(&doc));
    assert!(bytes < 32 * MIB, "validation asked for {bytes} bytes");
    let p = match r {
        Err(StateError::Invalid(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    };
    assert_eq!(p.list().len(), MAX_PROBLEMS);
    assert_eq!(p.more(), n - 1 - MAX_PROBLEMS);
    assert!(
        p.list().iter().all(|x| x
            .message
            .contains(" overlaps 10.0.0.0/24 of switches[0] on the same router")),
        "{p}"
    );
    let text = p.to_string();
    assert!(text.starts_with("1199 problem(s) in config:"), "{text}");
    assert!(text.ends_with("... and 1099 more problems"), "{text}");
}
