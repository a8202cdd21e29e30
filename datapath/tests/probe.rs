//! The edge's health-check port in-process: the checkers' namespace asks
//! ARP for a real server and gets the tier-0's MAC, its connection goes
//! into the overlay untranslated from the health-check address, and the
//! real server's answer comes back through its tier-1 and the tier-0 to
//! the port. Nothing else is routed to or from it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;

use common::edge::*;
use common::*;
use control::MacAddr;
use datapath::{DropReason, Verdict};
use geneve::ipv4;

const HC_IP: Ipv4Addr = control::Tier0::DEFAULT_HEALTH_CHECK_IP;
const HC_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x0c, 0x01]);

#[test]
fn a_check_reaches_a_real_server_in_the_overlay_and_its_answer_comes_back() {
    let mut e = edge();
    let mut vm1 = instance(VM1);
    let mut out = output();
    // The checkers' kernel asks for the real server itself (no gateway).
    let arp = arp_request(HC_MAC, HC_IP, VM1.ip);
    assert_eq!(e.from_probe(&arp, 1, &mut out), Verdict::Replied);
    let (reply, _) = out.probe.get(0).unwrap();
    assert_eq!(macs(reply), (HC_MAC, T0_MAC));
    assert_eq!(&reply[14 + 14..14 + 18], &VM1.ip.octets(), "proxy ARP");
    assert_eq!(out.port.len(), 0, "nothing on the uplink");
    // ARP for the checkers' own address is not answered (duplicate detection).
    out.clear();
    let dad = arp_request(HC_MAC, HC_IP, HC_IP);
    assert_eq!(e.from_probe(&dad, 1, &mut out), Verdict::Absorbed);
    assert_eq!(out.probe.len(), 0);

    // The check: into the overlay to vm1, untranslated.
    let ping = icmp_echo(HC_MAC, T0_MAC, HC_IP, VM1.ip, 64, 8, false);
    let trace = e.trace(datapath::TraceFrom::Probe, &ping, 2);
    assert_eq!(
        e.from_probe(&ping, 2, &mut out),
        Verdict::Encapsulated { copies: 1 },
        "{trace:#?}"
    );
    let (src, payload) = into_overlay(&out, VM1);
    let g = geneve::geneve::parse(&payload).unwrap();
    assert_eq!(g.vni, VNI_WEB);
    let inner = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
    assert_eq!((inner.src(), inner.dst()), (HC_IP, VM1.ip));
    assert_eq!(inner.ttl(), 62, "the tier-0 and the tier-1");
    assert!(inner.verify_checksum());
    let delivered = g.payload.to_vec();
    let mut vout = output();
    assert_eq!(
        vm1.from_underlay(src, &payload, 3, &mut vout),
        Verdict::Delivered,
        "the real server takes it: the edge may carry outside sources"
    );

    // The answer: vm1's tier-1 sends it to the tier-0, which routes it to
    // the port, to the MAC it learned.
    let answer = echo_reply_of(&delivered, (VM1.mac, ROUTER_MAC), 64);
    let (src, payload) = via(&mut vm1, &answer);
    out.clear();
    assert_eq!(
        e.from_underlay(src, &payload, 5, &mut out),
        Verdict::Forwarded
    );
    let (back, _) = out.probe.get(0).unwrap();
    assert_eq!(macs(back), (HC_MAC, T0_MAC));
    let ip = ipv4::Packet::new_checked(&back[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (VM1.ip, HC_IP), "not translated");
    assert_eq!(ip.ttl(), 62, "the tier-1 and the tier-0");
    assert!(ip.verify_checksum());
    assert_eq!(out.port.len(), 0);
    let c = e.counters();
    assert_eq!((c.probe_rx.packets, c.probe_tx.packets), (3, 2));
}

#[test]
fn only_the_checkers_and_only_the_overlay() {
    let mut e = edge();
    let mut out = output();
    // Another source on the port.
    let spoofed = icmp_echo(
        HC_MAC,
        T0_MAC,
        Ipv4Addr::new(100, 64, 0, 2),
        VM1.ip,
        64,
        8,
        false,
    );
    assert_eq!(
        e.from_probe(&spoofed, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    let arp = arp_request(HC_MAC, Ipv4Addr::new(100, 64, 0, 2), VM1.ip);
    assert_eq!(
        e.from_probe(&arp, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    // The port reaches the overlay only: not the internet.
    let out_there = icmp_echo(HC_MAC, T0_MAC, HC_IP, INTERNET, 64, 8, false);
    assert_eq!(
        e.from_probe(&out_there, 1, &mut out),
        Verdict::Drop(DropReason::NoRoute)
    );
    // Nor does the internet reach it (the NAT has no mapping for it, and
    // the tier-0 would not route it from the uplink).
    e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 1, &mut out);
    let in_here = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, HC_IP, 64, 8, false);
    assert_eq!(
        e.from_port(&in_here, 1, &mut out),
        Verdict::Drop(DropReason::NatNoMapping)
    );
    assert_eq!(out.probe.len(), 0);
    // An instance is no edge: it has no health-check port.
    let mut vm1 = instance(VM1);
    let ping = icmp_echo(HC_MAC, T0_MAC, HC_IP, VM1.ip, 64, 8, false);
    assert_eq!(
        vm1.from_probe(&ping, 1, &mut out),
        Verdict::Drop(DropReason::NotForEdge)
    );
}
