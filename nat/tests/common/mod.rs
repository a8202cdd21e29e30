//! Shared fixtures of the integration tests: small NAT set-ups; the
//! packets are the workspace's test packets (`test_packets`).

#![allow(dead_code, clippy::unwrap_used)]

pub use test_packets::*;

use std::net::Ipv4Addr;

use nat::{Dir, DropReason, Nat, NatConfig, StaticNat, Translation, Verdict};

/// One second in `now_ns` units.
pub const S: u64 = 1_000_000_000;
/// A start time well away from 0.
pub const T0: u64 = 1_000 * S;

pub const POOL: &str = "203.0.113.1";

/// A NAT with a one-address pool and room for `cap` sessions.
pub fn nat_with(cap: usize, cfg: NatConfig) -> Nat {
    Nat::with_seed(cap, cfg, 0x5eed).unwrap()
}

pub fn pool_cfg() -> NatConfig {
    NatConfig::with_pool(vec![ip(POOL)])
}

pub fn static_entry(public: &str, private: &str) -> StaticNat {
    StaticNat {
        public: ip(public),
        private: ip(private),
    }
}

/// Processes `p` and says whether it was translated (checksums verified
/// from scratch when it was).
pub fn pass(nat: &mut Nat, dir: Dir, p: &mut [u8], now: u64) -> bool {
    match nat.process(dir, p, now) {
        Verdict::Translate(_) => {
            assert!(all_checksums_ok(p), "bad checksum after translation");
            true
        }
        Verdict::Drop(_) => false,
    }
}

/// Processes `p`, expecting a drop for `r`; the packet is unchanged.
pub fn dropped(nat: &mut Nat, dir: Dir, p: &mut [u8], now: u64, r: DropReason) {
    let before = p.to_vec();
    let v = nat.process(dir, p, now);
    assert_eq!(v, Verdict::Drop(r), "{}", nat.judge(dir, &before, now));
    assert_eq!(p, &before[..]);
}

/// The `n`th inside address of 10.0.0.0/8.
pub fn inside(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + n)
}

pub fn is_icmp_error(t: &Verdict) -> bool {
    matches!(t, Verdict::Translate(Translation::IcmpError(_)))
}
