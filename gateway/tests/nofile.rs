//! `serve` raises its soft descriptor limit toward what the connection
//! caps need, never past the hard limit and never down. Its own test
//! binary: it changes the process's limit.

use gateway::fdlimit::{CEILING, HEADROOM, raise_nofile};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[test]
fn the_soft_limit_is_raised_to_the_caps_but_never_past_hard_or_down() {
    let (soft0, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < 600 {
        eprintln!("SKIP: hard descriptor limit {hard} is too low to test");
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, 300, hard).expect("lower soft");

    // Raised to what the caps need.
    let l = raise_nofile(100).expect("raise");
    assert_eq!(
        (l.before, l.now, l.wanted),
        (300, 100 + HEADROOM, 100 + HEADROOM)
    );
    assert!(l.enough());
    assert_eq!(
        getrlimit(Resource::RLIMIT_NOFILE).expect("get").0,
        100 + HEADROOM
    );

    // Never lowered.
    let l = raise_nofile(1).expect("raise");
    assert_eq!(l.now, 100 + HEADROOM);
    assert_eq!(
        getrlimit(Resource::RLIMIT_NOFILE).expect("get").0,
        100 + HEADROOM
    );

    // Capped at the hard limit, and says it is not enough.
    let l = raise_nofile(u64::MAX).expect("raise");
    assert_eq!(l.now, hard.min(CEILING));
    assert!(!l.enough());
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("get").0, l.now);

    setrlimit(Resource::RLIMIT_NOFILE, soft0, hard).expect("restore");
}
