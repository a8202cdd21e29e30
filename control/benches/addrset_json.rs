//! Cost of serializing a firewall config with big address sets to JSON, as
//! the gateway does for every config it pushes (`serde_json::to_vec` of an
//! `InstanceConfig` whose `firewall` holds the resolved groups).
//!
//! * `v4_2x500`: a `FirewallConfig` with two address sets of 500 IPv4 `/32`
//!   members (two groups of 500 VMs) and a ruleset of four rules naming them.
//! * `v6_2x500`: the same with IPv6 `/128` members.
//! * `v4_2x500_addrsets_only`: only the two IPv4 address sets of `v4_2x500`.
//! * `v4_2x500_addrsets_only_ipnet_reference`: the same address sets through
//!   a local struct with a plain derived `Serialize`, i.e. `ipnet::IpNet`'s
//!   own (`Display` + `collect_str`) serializer: what `AddrSet` cost before
//!   it formatted addresses itself (same JSON, byte for byte).
//!
//! Run: `cargo bench -p control --bench addrset_json`.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use control::firewall::{
    Action, AddrRef, AddrSet, Direction, FirewallConfig, PortRange, Protocol, Rule, RuleSet,
    Service,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::IpNet;
use serde::Serialize;

const MEMBERS: usize = 500;

fn v4_member(set: usize, i: usize) -> IpNet {
    // 172.16.x.y / 172.17.x.y: octets of one to three digits, like real VMs.
    let octet = |v: usize| u8::try_from(v).unwrap();
    let ip = Ipv4Addr::new(172, 16 + octet(set), octet(i / 250), octet(i % 250 + 1));
    IpNet::from(IpAddr::V4(ip))
}

fn v6_member(set: usize, i: usize) -> IpNet {
    let word = |v: usize| u16::try_from(v).unwrap();
    let ip = Ipv6Addr::new(
        0x2001,
        0xdb8,
        word(set),
        0,
        0,
        0,
        word(i / 250),
        word(i + 1),
    );
    IpNet::from(IpAddr::V6(ip))
}

fn config(member: fn(usize, usize) -> IpNet) -> FirewallConfig {
    let addrsets = (0..2)
        .map(|set| AddrSet {
            name: format!("group-{set}"),
            addrs: (0..MEMBERS).map(|i| member(set, i)).collect(),
        })
        .collect();
    let rule = |id: u32, proto: u8, port: u16, action: Action| Rule {
        id,
        direction: Direction::InOut,
        sources: vec![AddrRef::AddrSet("group-0".into())],
        destinations: vec![AddrRef::AddrSet("group-1".into())],
        services: vec![Service {
            port: Some(PortRange::single(port)),
            ..Service::any_of(Protocol::Number(proto))
        }],
        action,
        log: id.is_multiple_of(2),
    };
    FirewallConfig {
        addrsets,
        rulesets: vec![RuleSet {
            name: "app".into(),
            rules: vec![
                rule(2001, Protocol::TCP, 22, Action::Accept),
                rule(2002, Protocol::TCP, 443, Action::Accept),
                rule(2003, Protocol::UDP, 53, Action::Accept),
                rule(2004, Protocol::TCP, 3306, Action::Reject),
            ],
        }],
        ..FirewallConfig::allow_all()
    }
}

/// `AddrSet` with the derived serializer of a plain `Vec<IpNet>`.
#[derive(Serialize)]
struct ReferenceAddrSet<'a> {
    name: &'a str,
    addrs: &'a Vec<IpNet>,
}

fn bench(c: &mut Criterion) {
    let v4 = config(v4_member);
    let v6 = config(v6_member);
    let reference: Vec<ReferenceAddrSet<'_>> = v4
        .addrsets
        .iter()
        .map(|s| ReferenceAddrSet {
            name: &s.name,
            addrs: &s.addrs,
        })
        .collect();

    let mut g = c.benchmark_group("addrset_json");
    for (name, fw) in [("v4_2x500", &v4), ("v6_2x500", &v6)] {
        let len = serde_json::to_vec(fw).unwrap().len();
        eprintln!("addrset_json/{name}: {len} bytes of JSON");
        g.throughput(Throughput::Bytes(u64::try_from(len).unwrap()));
        g.bench_function(name, |b| {
            b.iter(|| serde_json::to_vec(black_box(fw)).unwrap())
        });
    }
    // Only the address sets, old path vs. the real `AddrSet` serializer.
    let len = serde_json::to_vec(&reference).unwrap().len();
    g.throughput(Throughput::Bytes(u64::try_from(len).unwrap()));
    g.bench_function("v4_2x500_addrsets_only", |b| {
        b.iter(|| serde_json::to_vec(black_box(&v4.addrsets)).unwrap())
    });
    g.bench_function("v4_2x500_addrsets_only_ipnet_reference", |b| {
        b.iter(|| serde_json::to_vec(black_box(&reference)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
