//! New-flow classification cost at 10, 1,000 and 10,000 rules (the target:
//! 10,000 rules cost at most twice 10), and the cost of compiling 10,000.
//!
//! Rulesets are generated deterministically in the shapes real policies
//! have: host -> host through per-VM address sets on one service port,
//! subnet CIDR -> security-group address set on a port range, any -> VM,
//! group -> any on UDP services, subnet -> VM for ICMP echo. Each packet
//! batch holds 512 packets that hit rules spread over the whole list and
//! 512 that miss every rule and fall to the default rule; times are per
//! batch of 1,024 packets.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use control::{
    Action, AddrRef, AddrSet, DefaultRule, Direction, FirewallConfig, PortRange, Protocol, Rule,
    RuleSet, Service,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firewall::{Dir, Policy, Tuple};

/// A fixture number as the narrower type it is used as (each fits by
/// construction; a bench that outgrows one stops at once).
fn fit<T: TryFrom<U>, U>(v: U) -> T {
    T::try_from(v).ok().unwrap()
}

const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// VMs per /24 subnet, VMs per security group.
const PER_SUBNET: usize = 250;
const PER_GROUP: usize = 8;
const TCP_PORTS: [u16; 8] = [22, 80, 443, 3306, 5432, 6379, 8080, 9200];
const UDP_PORTS: [u16; 4] = [53, 123, 161, 514];

/// Direction, tuple and ICMP (type, code) of a first packet.
type Packet = (Dir, Tuple, Option<(u8, u8)>);

/// A deterministic ruleset of `n` rules over `vms(n)` VMs.
struct Shape {
    n: usize,
    vms: usize,
}

impl Shape {
    fn new(n: usize) -> Shape {
        Shape {
            n,
            vms: (n / 2).max(16),
        }
    }

    fn groups(&self) -> usize {
        self.vms / PER_GROUP
    }

    fn subnets(&self) -> usize {
        self.vms.div_ceil(PER_SUBNET)
    }

    fn vm_ip(&self, k: usize) -> Ipv4Addr {
        let k = k % self.vms;
        let s = k / PER_SUBNET;
        let [_, _, hi, lo] = fit::<u32, _>(s).to_be_bytes();
        Ipv4Addr::new(10, hi, lo, fit(k % PER_SUBNET + 1))
    }

    fn subnet(&self, s: usize) -> AddrRef {
        let s = s % self.subnets();
        AddrRef::Net(format!("10.{}.{}.0/24", s >> 8, s & 255).parse().unwrap())
    }

    fn vm(&self, k: usize) -> AddrRef {
        AddrRef::AddrSet(format!("ip-vm-{}", k % self.vms))
    }

    fn group(&self, g: usize) -> AddrRef {
        AddrRef::AddrSet(format!("ip-sg-{}", g % self.groups()))
    }

    fn config(&self) -> FirewallConfig {
        let mut addrsets: Vec<AddrSet> = (0..self.vms)
            .map(|k| AddrSet {
                name: format!("ip-vm-{k}"),
                addrs: vec![IpAddr::V4(self.vm_ip(k)).into()],
            })
            .collect();
        addrsets.extend((0..self.groups()).map(|g| {
            AddrSet {
                name: format!("ip-sg-{g}"),
                addrs: (0..PER_GROUP)
                    .map(|m| IpAddr::V4(self.vm_ip(g * PER_GROUP + m)).into())
                    .collect(),
            }
        }));
        let rules: Vec<Rule> = (0..self.n).map(|i| self.rule(i)).collect();
        FirewallConfig {
            addrsets,
            l2_rulesets: vec![],
            rulesets: rules
                .chunks(500)
                .enumerate()
                .map(|(i, r)| RuleSet {
                    name: format!("section-{i}"),
                    rules: r.to_vec(),
                })
                .collect(),
            default_rule: DefaultRule {
                id: 2,
                action: Action::Drop,
                log: true,
            },
            ..FirewallConfig::allow_all()
        }
    }

    fn rule(&self, i: usize) -> Rule {
        let j = i / 5;
        let tcp = |port: PortRange| Service {
            protocol: Protocol::Number(Protocol::TCP),
            port: Some(port),
            ..Service::any()
        };
        let (sources, destinations, services) = match i % 5 {
            0 => (
                vec![self.vm(2 * j)],
                vec![self.vm(2 * j + 1)],
                vec![tcp(PortRange::single(TCP_PORTS[j % TCP_PORTS.len()]))],
            ),
            1 => {
                let first = 8000 + fit::<u16, _>(j % 100) * 10;
                (
                    vec![self.subnet(j)],
                    vec![self.group(j)],
                    vec![tcp(PortRange {
                        first,
                        last: first + 9,
                    })],
                )
            }
            2 => (
                vec![],
                vec![self.vm(7 * j)],
                vec![tcp(PortRange::single(443))],
            ),
            3 => (
                vec![self.group(j)],
                vec![],
                vec![Service {
                    protocol: Protocol::Number(Protocol::UDP),
                    port: Some(PortRange::single(UDP_PORTS[j % UDP_PORTS.len()])),
                    ..Service::any()
                }],
            ),
            _ => (
                vec![self.subnet(j)],
                vec![self.vm(3 * j)],
                vec![Service {
                    protocol: Protocol::Number(Protocol::ICMP),
                    icmp_type: Some(8),
                    ..Service::any()
                }],
            ),
        };
        Rule {
            id: 10_000 + fit::<u32, _>(i),
            direction: if i.is_multiple_of(7) {
                Direction::In
            } else {
                Direction::InOut
            },
            sources,
            destinations,
            services,
            action: [Action::Accept, Action::Accept, Action::Drop, Action::Reject][i % 4],
            log: i.is_multiple_of(10),
        }
    }

    /// A packet the shape of rule `i` accepts.
    fn hit(&self, i: usize) -> Packet {
        let j = i / 5;
        let t = |proto, src, dst, dport| Tuple {
            proto,
            src,
            dst,
            sport: 40_000 + fit::<u16, _>(i % 20_000),
            dport,
        };
        let (t, icmp) = match i % 5 {
            0 => (
                t(
                    6,
                    self.vm_ip(2 * j),
                    self.vm_ip(2 * j + 1),
                    TCP_PORTS[j % TCP_PORTS.len()],
                ),
                None,
            ),
            1 => {
                let s = j % self.subnets();
                let g = j % self.groups();
                let src = self.vm_ip(s * PER_SUBNET + i % PER_SUBNET);
                let dst = self.vm_ip(g * PER_GROUP + i % PER_GROUP);
                (t(6, src, dst, 8000 + fit::<u16, _>(j % 100) * 10 + 5), None)
            }
            2 => (
                t(6, Ipv4Addr::new(172, 16, 0, 9), self.vm_ip(7 * j), 443),
                None,
            ),
            3 => {
                let src = self.vm_ip((j % self.groups()) * PER_GROUP + i % PER_GROUP);
                let port = UDP_PORTS[j % UDP_PORTS.len()];
                (t(17, src, Ipv4Addr::new(192, 168, 0, 53), port), None)
            }
            _ => {
                let src = self.vm_ip((j % self.subnets()) * PER_SUBNET + 3);
                (t(1, src, self.vm_ip(3 * j), 77), Some((8, 0)))
            }
        };
        (Dir::In, t, icmp)
    }

    /// A packet between the same VMs no rule accepts (default rule).
    fn miss(&self, k: usize) -> Packet {
        let t = Tuple {
            proto: if k.is_multiple_of(2) { 6 } else { 17 },
            src: self.vm_ip(k * 13),
            dst: self.vm_ip(k * 29 + 1),
            sport: 50_000,
            dport: 9_999,
        };
        (
            if k.is_multiple_of(3) {
                Dir::Out
            } else {
                Dir::In
            },
            t,
            None,
        )
    }

    fn packets(&self) -> Vec<Packet> {
        let mut v = Vec::with_capacity(1024);
        for k in 0..512 {
            v.push(self.hit(k * self.n / 512));
            v.push(self.miss(k));
        }
        v
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify_new_flow");
    for n in SIZES {
        let shape = Shape::new(n);
        let cfg = shape.config();
        let policy = Policy::compile(&cfg).unwrap();
        let packets = shape.packets();
        let default = policy.default_match().rule;
        let hits = packets
            .iter()
            .filter(|(d, t, i)| policy.classify(*d, t, *i).rule != default)
            .count();
        eprintln!(
            "{n} rules: {hits}/{} packets hit a rule; {:?}",
            packets.len(),
            policy.index_stats()
        );
        g.throughput(Throughput::Elements(fit(packets.len())));
        g.bench_function(format!("{n}_rules"), |b| {
            b.iter(|| {
                for (dir, t, icmp) in &packets {
                    black_box(policy.classify(*dir, black_box(t), *icmp));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("classify_compile");
    g.sample_size(10);
    let cfg = Shape::new(10_000).config();
    g.bench_function("10000_rules", |b| {
        b.iter(|| Policy::compile(black_box(&cfg)).unwrap())
    });
    g.finish();
}

criterion_group!(classify_benches, benches);
criterion_main!(classify_benches);
