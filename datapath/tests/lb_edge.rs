//! The load balancer on the edge, in-process: a virtual server on the
//! uplink's address (clients outside) is balanced by the edge, its real
//! server answers through its tier-1 and the transit segment, and the
//! answer leaves the uplink from the virtual address; a full-NAT virtual
//! server gives the real server the uplink's address as its client, and
//! takes the answer back to the instance that asked.

#![allow(clippy::unwrap_used)]

mod common;

use common::edge::*;
use common::*;
use control::lb::{ForwardKind, LbProtocol, LbService, RealServer, Scheduler, VirtualServer};
use datapath::{Pipeline, Verdict};
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

#[test]
fn an_uplink_virtual_server_is_balanced_at_the_edge_both_ways() {
    let mut e = balancing_edge();
    let mut vm3 = instance(VM3);
    let client = endpoint(GW_MAC, INTERNET);
    let vip = endpoint(UPLINK_MAC, UPLINK_IP);
    // The client's SYN to the uplink's address, port 80.
    let mut out = output();
    let syn = tcp_between(client, vip, 40000, 80, SYN, 1, 0, 0);
    assert_eq!(
        e.from_port(&syn, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let ip = inner_to(&out, VM3);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(
        (pkt.src(), pkt.dst()),
        (INTERNET, VM3.ip),
        "NAT: the client's address"
    );
    assert_eq!(ports(&ip), (40000, 8080));
    assert!(checksums_ok(&ip), "checksums updated");

    // vm3 answers the client: its tier-1 sends it to the edge, which gives
    // it the virtual address back and sends it out of the uplink.
    let answer = tcp_between(
        VM3,
        endpoint(ROUTER_MAC, INTERNET),
        8080,
        40000,
        SYN | ACK,
        9,
        2,
        0,
    );
    let (src, payload) = via(&mut vm3, &answer);
    let frame = out_of_uplink(&mut e, UPLINK_GW, |e, o| {
        e.from_underlay(src, &payload, 3, o)
    });
    assert_eq!(macs(&frame), (GW_MAC, UPLINK_MAC));
    let sent = &frame[ethernet::HEADER_LEN..];
    let pkt = ipv4::Packet::new_checked(sent).unwrap();
    assert_eq!((pkt.src(), pkt.dst()), (UPLINK_IP, INTERNET));
    assert_eq!(ports(sent), (80, 40000));
    assert!(pkt.verify_checksum());
    assert!(checksums_ok(sent), "checksums updated");
}

#[test]
fn a_full_nat_virtual_server_gives_the_real_server_the_edges_address() {
    let mut e = balancing_edge();
    let mut vm1 = instance(VM1);
    let vip = endpoint(ROUTER_MAC, UPLINK_IP);
    // vm1 opens a connection to the full-NAT virtual server (outside the
    // overlay: its tier-1 sends it to the edge).
    let syn = tcp_between(VM1, vip, 40000, 81, SYN, 1, 0, 0);
    let (src, payload) = via(&mut vm1, &syn);
    let mut eout = output();
    assert_eq!(
        e.from_underlay(src, &payload, 2, &mut eout),
        Verdict::Encapsulated { copies: 1 }
    );
    let ip = inner_to(&eout, VM3);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(
        (pkt.src(), pkt.dst()),
        (UPLINK_IP, VM3.ip),
        "full NAT: the real server sees the edge's address"
    );
    let (snat_port, rport) = ports(&ip);
    assert_eq!(rport, 8080);
    assert!(checksums_ok(&ip), "checksums updated");

    // vm3 answers the edge's address; the edge takes it back to vm1 from
    // the virtual server.
    let mut vm3 = instance(VM3);
    let answer = tcp_between(
        VM3,
        endpoint(ROUTER_MAC, UPLINK_IP),
        8080,
        snat_port,
        SYN | ACK,
        9,
        2,
        0,
    );
    let (src, payload) = via(&mut vm3, &answer);
    let mut eout = output();
    assert_eq!(
        e.from_underlay(src, &payload, 4, &mut eout),
        Verdict::Encapsulated { copies: 1 }
    );
    let ip = inner_to(&eout, VM1);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((pkt.src(), pkt.dst()), (UPLINK_IP, VM1.ip));
    assert_eq!(ports(&ip), (81, 40000));
    assert!(pkt.verify_checksum());
    assert!(checksums_ok(&ip), "checksums updated");
}
