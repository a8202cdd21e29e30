//! Shared fixtures of the engine's integration tests: virtual servers and
//! helpers that drive a [`Balancer`]; the packets and checksum checks are
//! the workspace's test packets (`test_packets`), with the in-place edits
//! only these tests make.

#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::{Ipv4Addr, SocketAddrV4};

use control::lb::{
    Endpoint, ForwardKind, LbProtocol, LbService, Liveness, RealServer, Scheduler, VirtualServer,
};
use geneve::{ipv4, tcp};
use lb::engine::{Balancer, Decision, L4Csum, Verdict, apply};
pub use test_packets::*;

/// One second in `now_ns` units, and a start time well away from 0.
pub const S: u64 = 1_000_000_000;
pub const T0: u64 = 1_000 * S;

pub const SYN: u8 = tcp::SYN;
pub const ACK: u8 = tcp::ACK;
pub const FIN: u8 = tcp::FIN;
pub const RST: u8 = tcp::RST;

/// `n` real servers 192.168.1.(1..) port 8080, weights from `w`.
pub fn reals(n: u32, w: impl Fn(u32) -> u32) -> Vec<RealServer> {
    (0..n)
        .map(|i| RealServer {
            weight: w(i),
            ..RealServer::new(
                Ipv4Addr::from(0xc0a8_0000 + 256 + i + 1 + (i / 250) * 6),
                8080,
            )
        })
        .collect()
}

/// Real server `i` of [`reals`] (port 8080).
pub fn server(i: u32) -> SocketAddrV4 {
    let r = reals(i + 1, |_| 1);
    SocketAddrV4::new(r[i as usize].ip, 8080)
}

/// A virtual server 10.64.1.2:port.
pub fn vs(port: u16, sched: Scheduler, kind: ForwardKind, rs: Vec<RealServer>) -> VirtualServer {
    VirtualServer {
        kind,
        snat_ip: (kind == ForwardKind::Fnat).then(|| ip(SNAT)),
        real_servers: rs,
        ..VirtualServer::new(ip(VIP), port, LbProtocol::Tcp, sched)
    }
}

pub const VIP: &str = "10.64.1.2";
pub const SNAT: &str = "10.64.1.250";

pub fn svc(v: VirtualServer) -> LbService {
    LbService {
        vs: v,
        live: vec![],
    }
}

pub fn with_live(v: VirtualServer, live: Vec<Liveness>) -> LbService {
    LbService { vs: v, live }
}

pub fn endpoint(s: &str) -> Endpoint {
    let a = sa(s);
    Endpoint {
        ip: *a.ip(),
        port: a.port(),
    }
}

/// A balancer for `cap` connections with these services.
pub fn balancer(cap: usize, services: &[LbService]) -> Balancer {
    let mut b = Balancer::with_seed(cap, 0x5eed);
    b.set_services(services, T0).unwrap();
    b
}

/// Client address number `i` (10.1.x.y).
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000 + i)
}

/// Sends `p` forward and applies the decision; returns it (checksums
/// checked when translated).
pub fn fwd(b: &mut Balancer, p: &mut [u8], now: u64) -> Decision {
    let d = b.forward(p, now);
    if let Verdict::Translate(t) = &d.verdict {
        apply(p, t, L4Csum::Complete).unwrap();
        assert!(all_checksums_ok(p), "bad checksum after translation");
    }
    d
}

/// Sends `p` back from a real server and applies the decision.
pub fn rev(b: &mut Balancer, p: &mut [u8], now: u64) -> Decision {
    let d = b.reverse(p, now);
    if let Verdict::Translate(t) = &d.verdict {
        apply(p, t, L4Csum::Complete).unwrap();
        assert!(all_checksums_ok(p), "bad checksum after translation");
    }
    d
}

/// The client `c:port`'s segment with `flags` and `payload` bytes to the
/// virtual server `vport`, sent forward; it must be translated. Returns it
/// as the real server receives it.
pub fn client_sends(
    b: &mut Balancer,
    c: Ipv4Addr,
    port: u16,
    vport: u16,
    flags: u8,
    payload: usize,
    now: u64,
) -> Vec<u8> {
    let mut p = tcp_packet(c, port, ip(VIP), vport, flags, payload);
    let d = fwd(b, &mut p, now);
    assert!(matches!(d.verdict, Verdict::Translate(_)), "{d}");
    p
}

/// Real server `real`'s segment with `flags` to `to` (the source it saw:
/// the client, or full NAT's SNAT endpoint), sent back; it must be
/// translated. Returns it as the client receives it.
pub fn server_sends(
    b: &mut Balancer,
    real: SocketAddrV4,
    to: SocketAddrV4,
    flags: u8,
    now: u64,
) -> Vec<u8> {
    let mut p = tcp_packet(*real.ip(), real.port(), *to.ip(), to.port(), flags, 0);
    let d = rev(b, &mut p, now);
    assert!(matches!(d.verdict, Verdict::Translate(_)), "{d}");
    p
}

/// Opens a TCP connection from `c:port` to the virtual server `vport`
/// (SYN forward, SYN-ACK back, ACK forward: ESTABLISHED). Returns the real
/// server it went to (None if not balanced).
pub fn open_tcp(
    b: &mut Balancer,
    c: Ipv4Addr,
    port: u16,
    vport: u16,
    now: u64,
) -> Option<SocketAddrV4> {
    let mut syn = tcp_packet(c, port, ip(VIP), vport, SYN, 0);
    let d = fwd(b, &mut syn, now);
    if !matches!(d.verdict, Verdict::Translate(_)) {
        return None;
    }
    let real = dst_of(&syn);
    let synack = server_sends(b, real, src_of(&syn), SYN | ACK, now);
    assert_eq!(src_of(&synack), SocketAddrV4::new(ip(VIP), vport));
    assert_eq!(dst_of(&synack), SocketAddrV4::new(c, port));
    client_sends(b, c, port, vport, ACK, 10, now);
    Some(real)
}

/// Closes it: FIN each way and the last ACK.
pub fn close_tcp(
    b: &mut Balancer,
    c: Ipv4Addr,
    port: u16,
    vport: u16,
    real: SocketAddrV4,
    now: u64,
) {
    let fin = client_sends(b, c, port, vport, FIN | ACK, 0, now);
    server_sends(b, real, src_of(&fin), FIN | ACK, now);
    client_sends(b, c, port, vport, ACK, 0, now);
}

/// A SYN's real server (None if not balanced), without the rest.
pub fn syn_to(
    b: &mut Balancer,
    c: Ipv4Addr,
    port: u16,
    vport: u16,
    now: u64,
) -> Option<SocketAddrV4> {
    let mut syn = tcp_packet(c, port, ip(VIP), vport, SYN, 0);
    match fwd(b, &mut syn, now).verdict {
        Verdict::Translate(_) => Some(dst_of(&syn)),
        _ => None,
    }
}

/// Counts per real server address.
pub fn tally(
    v: impl IntoIterator<Item = SocketAddrV4>,
) -> std::collections::BTreeMap<SocketAddrV4, usize> {
    let mut m = std::collections::BTreeMap::new();
    for a in v {
        *m.entry(a).or_insert(0) += 1;
    }
    m
}

/// Turns the packet in `b` around in place (source and destination
/// swapped, checksums updated) and, for TCP, sets its flags (the TCP
/// checksum is then stale: the balancer does not verify it).
pub fn turn_around(b: &mut [u8], tcp_flags: u8) {
    let (s, sp, d, dp) = tuple(b);
    let rw = nat::Rewrite {
        src: Some(SocketAddrV4::new(d, dp)),
        dst: Some(SocketAddrV4::new(s, sp)),
    };
    nat::rewrite::rewrite(b, &rw, nat::L4Csum::Complete).unwrap();
    if b[9] == ipv4::PROTO_TCP {
        b[33] = tcp_flags;
    }
}

/// Sets the source port and TCP flags of the packet in `b` in place (the
/// transport checksum is then stale: the balancer does not verify it).
pub fn set_sport_flags(b: &mut [u8], sport: u16, tcp_flags: u8) {
    b[20..22].copy_from_slice(&sport.to_be_bytes());
    if b[9] == ipv4::PROTO_TCP {
        b[33] = tcp_flags;
    }
}
