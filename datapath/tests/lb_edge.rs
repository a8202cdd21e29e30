//! The load balancer on the edge, in-process: a virtual server on the
//! uplink's address (clients outside) is balanced by the edge, its real
//! server answers through its tier-1 and the transit segment, and the
//! answer leaves the uplink from the virtual address; a full-NAT virtual
//! server gives the real server the uplink's address as its client, and
//! takes the answer back to the instance that asked.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;

use common::edge::*;
use common::*;
use control::lb::{ForwardKind, LbProtocol, LbService, RealServer, Scheduler, VirtualServer};
use datapath::{DropReason, Output, Pipeline, Verdict};
use geneve::{ethernet, ipv4};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn service(port: u16, kind: ForwardKind) -> LbService {
    LbService {
        vs: VirtualServer {
            kind,
            real_servers: vec![RealServer::new(VM3.ip, 8080)],
            ..VirtualServer::new(UPLINK_IP, port, LbProtocol::Tcp, Scheduler::Sh)
        },
        live: vec![],
    }
}

fn balancing_edge() -> Pipeline {
    edge_with(|cfg| {
        cfg.load_balancers = vec![
            service(80, ForwardKind::Nat),
            service(81, ForwardKind::Fnat),
        ];
    })
}

/// A host on the uplink's side (through the uplink's gateway).
fn outside(ip: Ipv4Addr, mac: control::MacAddr) -> Vm {
    Vm {
        name: "outside",
        underlay: Ipv4Addr::UNSPECIFIED,
        tep_id: 0,
        mac,
        ip,
        switch: "",
    }
}

fn ports(ip: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([ip[20], ip[21]]),
        u16::from_be_bytes([ip[22], ip[23]]),
    )
}

/// The inner IPv4 packet of the one Geneve packet `out` holds for `dst`.
fn inner_ip(out: &Output, dst: Ipv4Addr) -> (Ipv4Addr, Vec<u8>) {
    let (pkt, to) = out.underlay.get(0).unwrap();
    assert_eq!(to, dst);
    let (src, payload) = strip_outer(pkt);
    let g = geneve::geneve::parse(payload).unwrap();
    (src, g.payload[ethernet::HEADER_LEN..].to_vec())
}

/// Sends `send`'s packet until it leaves the uplink (the first one waits
/// for the gateway's ARP); returns the IPv4 packet that left.
fn out_of_uplink(
    e: &mut Pipeline,
    mut send: impl FnMut(&mut Pipeline, &mut Output) -> Verdict,
) -> Vec<u8> {
    let mut out = output();
    if send(e, &mut out) == Verdict::Drop(DropReason::ArpPending) {
        out.clear();
        e.from_port(&arp_reply(GW_MAC, UPLINK_GW), 2, &mut out);
        out.clear();
        assert_eq!(send(e, &mut out), Verdict::Forwarded);
    }
    out.port.get(0).unwrap().0[ethernet::HEADER_LEN..].to_vec()
}

#[test]
fn an_uplink_virtual_server_is_balanced_at_the_edge_both_ways() {
    let mut e = balancing_edge();
    let mut vm3 = instance(VM3);
    let client = outside(INTERNET, GW_MAC);
    let vip = outside(UPLINK_IP, UPLINK_MAC);
    // The client's SYN to the uplink's address, port 80.
    let mut out = output();
    let syn = tcp_between(client, vip, 40000, 80, SYN, 1, 0, 0);
    assert_eq!(
        e.from_port(&syn, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (_, ip) = inner_ip(&out, VM3.underlay);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(
        (pkt.src(), pkt.dst()),
        (INTERNET, VM3.ip),
        "NAT: the client's address"
    );
    assert_eq!(ports(&ip), (40000, 8080));

    // vm3 answers the client: its tier-1 sends it to the edge, which gives
    // it the virtual address back and sends it out of the uplink.
    let mut out = output();
    let answer = tcp_between(
        VM3,
        outside(INTERNET, ROUTER_MAC),
        8080,
        40000,
        SYN | ACK,
        9,
        2,
        0,
    );
    assert_eq!(
        vm3.from_port(&answer, 2, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (pkt, _) = out.underlay.get(0).unwrap();
    let (src, payload) = strip_outer(pkt);
    let payload = payload.to_vec();
    let sent = out_of_uplink(&mut e, |e, o| e.from_underlay(src, &payload, 3, o));
    let pkt = ipv4::Packet::new_checked(&sent[..]).unwrap();
    assert_eq!((pkt.src(), pkt.dst()), (UPLINK_IP, INTERNET));
    assert_eq!(ports(&sent), (80, 40000));
    assert!(pkt.verify_checksum());
}

#[test]
fn a_full_nat_virtual_server_gives_the_real_server_the_edges_address() {
    let mut e = balancing_edge();
    let mut vm1 = instance(VM1);
    let vip = outside(UPLINK_IP, ROUTER_MAC);
    // vm1 opens a connection to the full-NAT virtual server (outside the
    // overlay: its tier-1 sends it to the edge).
    let mut out = output();
    let syn = tcp_between(VM1, vip, 40000, 81, SYN, 1, 0, 0);
    assert_eq!(
        vm1.from_port(&syn, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (pkt, _) = out.underlay.get(0).unwrap();
    let (src, payload) = strip_outer(pkt);
    let mut eout = output();
    assert_eq!(
        e.from_underlay(src, payload, 2, &mut eout),
        Verdict::Encapsulated { copies: 1 }
    );
    let (_, ip) = inner_ip(&eout, VM3.underlay);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(
        (pkt.src(), pkt.dst()),
        (UPLINK_IP, VM3.ip),
        "full NAT: the real server sees the edge's address"
    );
    let (snat_port, rport) = ports(&ip);
    assert_eq!(rport, 8080);

    // vm3 answers the edge's address; the edge takes it back to vm1 from
    // the virtual server.
    let mut vm3 = instance(VM3);
    let mut out = output();
    let answer = tcp_between(
        VM3,
        outside(UPLINK_IP, ROUTER_MAC),
        8080,
        snat_port,
        SYN | ACK,
        9,
        2,
        0,
    );
    assert_eq!(
        vm3.from_port(&answer, 3, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (pkt, _) = out.underlay.get(0).unwrap();
    let (src, payload) = strip_outer(pkt);
    let mut eout = output();
    assert_eq!(
        e.from_underlay(src, payload, 4, &mut eout),
        Verdict::Encapsulated { copies: 1 }
    );
    let (_, ip) = inner_ip(&eout, VM1.underlay);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((pkt.src(), pkt.dst()), (UPLINK_IP, VM1.ip));
    assert_eq!(ports(&ip), (81, 40000));
    assert!(pkt.verify_checksum());
}
