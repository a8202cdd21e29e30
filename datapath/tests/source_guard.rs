//! The ingress source guard on the seed's topology, seen from vm1
//! (ls-web): vm3 is a port on ls-web behind 10.99.3.44 (tep 44), vm2 a port
//! on ls-app behind 10.99.3.251 (tep 251). A frame whose inner source is
//! another endpoint's port (switched, routed, ARP, broadcast, any
//! ethertype) is dropped as `spoofed_inner_src` before the firewall sees
//! it; the same frame from the right endpoint passes.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use control::MacAddr;
use datapath::{DropReason, LayerId, Pipeline, Tables, Verdict};

const SPOOF: DropReason = DropReason::SpoofedInnerSrc;

/// `inner` on `vni`, sent by `from`'s endpoint (its own tep id) to vm1.
fn send(p: &mut Pipeline, from: Vm, vni: u32, inner: &[u8]) -> Verdict {
    let mut out = output();
    let pkt = geneve_from(&from, vni, from.tep_id, inner);
    let v = p.from_underlay(from.underlay, &pkt, 1, &mut out);
    if v.is_drop() {
        assert!(out.port.is_empty(), "nothing delivered on {v:?}");
        assert!(out.underlay.is_empty(), "nothing answered on {v:?}");
    }
    v
}

fn ping(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    icmp_echo(src_mac, dst_mac, src, dst, 64, 8, true)
}

/// An ARP frame from `eth_src` to `eth_dst` with sender `sha` / `spa`.
fn arp(eth_src: MacAddr, eth_dst: MacAddr, sha: MacAddr, spa: Ipv4Addr, op: u16) -> Vec<u8> {
    let mut f = arp_request(eth_src, spa, VM1.ip);
    f[0..6].copy_from_slice(&eth_dst.0);
    f[14 + 6..14 + 8].copy_from_slice(&op.to_be_bytes());
    f[14 + 8..14 + 14].copy_from_slice(&sha.0);
    f
}

#[test]
fn switched_frame_with_another_endpoints_source_is_dropped() {
    let mut p = pipeline_for(VM1);
    // vm3's MAC and IP, sent by vm2's endpoint.
    let f = ping(VM3.mac, VM1.mac, VM3.ip, VM1.ip);
    assert_eq!(send(&mut p, VM2, VNI_WEB, &f), Verdict::Drop(SPOOF));
    assert_eq!(p.counters().dropped(SPOOF), 1);
    let decap = p.counters().layers[LayerId::Decap as usize];
    assert_eq!((decap.seen, decap.dropped), (1, 1));
    assert_eq!(
        p.counters().layers[LayerId::Firewall as usize].seen,
        0,
        "the firewall never sees it"
    );
    // The same frame from vm3's endpoint.
    assert_eq!(send(&mut p, VM3, VNI_WEB, &f), Verdict::Delivered);

    // vm2's own MAC with vm3's IP; vm3's MAC with vm2's IP; the receiver's
    // own addresses; an address no port has; a MAC no port has.
    let unknown = MacAddr([0x06, 0, 0, 0, 0, 0x66]);
    let cases = [
        (VM2, ping(VM2.mac, VM1.mac, VM3.ip, VM1.ip)),
        (VM2, ping(VM3.mac, VM1.mac, VM2.ip, VM1.ip)),
        (VM3, ping(VM1.mac, VM1.mac, VM1.ip, VM1.ip)),
        (
            VM3,
            ping(VM3.mac, VM1.mac, Ipv4Addr::new(192, 168, 100, 77), VM1.ip),
        ),
        (VM3, ping(unknown, VM1.mac, VM3.ip, VM1.ip)),
        (VM3, ping(VM3.mac, VM1.mac, Ipv4Addr::UNSPECIFIED, VM1.ip)),
    ];
    for (i, (from, f)) in cases.iter().enumerate() {
        assert_eq!(
            send(&mut p, *from, VNI_WEB, f),
            Verdict::Drop(SPOOF),
            "case {i}"
        );
    }
    assert_eq!(p.counters().dropped(SPOOF), 1 + 6);
    assert_eq!(p.counters().total_drops(), 1 + 6);
}

#[test]
fn broadcast_and_other_ethertypes_are_checked_too() {
    let mut p = pipeline_for(VM1);
    let bcast = ping(
        VM3.mac,
        MacAddr::BROADCAST,
        VM3.ip,
        Ipv4Addr::new(192, 168, 100, 255),
    );
    assert_eq!(send(&mut p, VM2, VNI_WEB, &bcast), Verdict::Drop(SPOOF));
    assert_eq!(send(&mut p, VM3, VNI_WEB, &bcast), Verdict::Delivered);

    // Neither IPv4 nor ARP (LLDP): only the source MAC can be checked.
    let mut lldp = ping(VM3.mac, VM1.mac, VM3.ip, VM1.ip);
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(send(&mut p, VM2, VNI_WEB, &lldp), Verdict::Drop(SPOOF));
    assert_eq!(send(&mut p, VM3, VNI_WEB, &lldp), Verdict::Delivered);
    // The router's MAC on a frame that is not IPv4.
    let mut lldp = ping(ROUTER_MAC, VM1.mac, VM3.ip, VM1.ip);
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(send(&mut p, VM3, VNI_WEB, &lldp), Verdict::Drop(SPOOF));
    assert_eq!(p.counters().dropped(SPOOF), 3);
}

#[test]
fn routed_frame_must_come_from_the_endpoint_of_its_ip() {
    let mut p = pipeline_for(VM1);
    // Routed by vm2's distributed router: source MAC the router's, IPv4
    // source vm2's (ls-app), arriving in ls-web's VNI.
    let routed = ping(ROUTER_MAC, VM1.mac, VM2.ip, VM1.ip);
    assert_eq!(send(&mut p, VM2, VNI_WEB, &routed), Verdict::Delivered);
    // The same frame from vm3's endpoint.
    assert_eq!(send(&mut p, VM3, VNI_WEB, &routed), Verdict::Drop(SPOOF));
    // vm2's endpoint claiming vm3's IP (on ls-web) through the router; an
    // outside address; the receiver's own.
    for src in [VM3.ip, Ipv4Addr::new(8, 8, 8, 8), VM1.ip] {
        let f = ping(ROUTER_MAC, VM1.mac, src, VM1.ip);
        assert_eq!(
            send(&mut p, VM2, VNI_WEB, &f),
            Verdict::Drop(SPOOF),
            "{src}"
        );
    }
    // vm3 hairpin-routed within ls-web is its own.
    let f = ping(ROUTER_MAC, VM1.mac, VM3.ip, VM1.ip);
    assert_eq!(send(&mut p, VM3, VNI_WEB, &f), Verdict::Delivered);
    assert_eq!(p.counters().dropped(SPOOF), 4);
}

#[test]
fn honest_traffic_through_the_senders_pipelines_passes() {
    let mut vm1 = pipeline_for(VM1);
    let mut out1 = output();
    for (from, f) in [
        (VM3, ping(VM3.mac, VM1.mac, VM3.ip, VM1.ip)),
        (VM2, ping(VM2.mac, ROUTER_MAC, VM2.ip, VM1.ip)),
    ] {
        let mut sender = pipeline_for(from);
        let mut out = output();
        assert!(matches!(
            sender.from_port(&f, 1, &mut out),
            Verdict::Encapsulated { .. }
        ));
        assert_eq!(carry(&mut out, &mut vm1, &mut out1, VM1.underlay), 1);
    }
    assert_eq!(out1.port.len(), 2, "both delivered");
    assert_eq!(vm1.counters().total_drops(), 0);
}

#[test]
fn arp_sender_must_be_behind_the_endpoint() {
    let mut p = pipeline_for(VM1);
    let bc = MacAddr::BROADCAST;
    // A request and a reply from vm3's port, sent by vm3's endpoint.
    let request = arp(VM3.mac, bc, VM3.mac, VM3.ip, 1);
    let reply = arp(VM3.mac, VM1.mac, VM3.mac, VM3.ip, 2);
    for f in [&request, &reply] {
        assert_eq!(send(&mut p, VM3, VNI_WEB, f), Verdict::Delivered);
        // ... and by vm2's.
        assert_eq!(send(&mut p, VM2, VNI_WEB, f), Verdict::Drop(SPOOF));
    }
    // vm2's endpoint with its own MAC as the frame's source, announcing
    // vm3's address; a sender MAC that is not the frame's source; a probe
    // (no sender address) with vm3's MAC.
    let probe = arp(VM3.mac, bc, VM3.mac, Ipv4Addr::UNSPECIFIED, 1);
    let cases = [
        (VM2, arp(VM2.mac, bc, VM2.mac, VM3.ip, 2)),
        (VM3, arp(VM3.mac, bc, VM2.mac, VM3.ip, 2)),
        (VM3, arp(VM3.mac, bc, VM2.mac, Ipv4Addr::UNSPECIFIED, 1)),
        (VM2, probe.clone()),
        (VM3, arp(ROUTER_MAC, bc, ROUTER_MAC, gw_web(), 2)),
    ];
    for (i, (from, f)) in cases.iter().enumerate() {
        assert_eq!(
            send(&mut p, *from, VNI_WEB, f),
            Verdict::Drop(SPOOF),
            "case {i}"
        );
    }
    assert_eq!(send(&mut p, VM3, VNI_WEB, &probe), Verdict::Delivered);
    assert_eq!(p.counters().dropped(SPOOF), 2 + 5);
}

#[test]
fn a_spoofed_segment_neither_opens_nor_borrows_a_connection() {
    // vm1 accepts tcp/22 from vm3 only (default reject).
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.firewall = Some(ssh_policy(true, false));
    let mut p = Pipeline::with_flow_capacity(Arc::new(Tables::build(&cfg, host).unwrap()), 64);
    let syn = tcp_between(VM3, VM1, 40000, 22, 0x02, 1000, 0, 0);
    // From vm2's endpoint: dropped before the firewall, no entry, no RST
    // toward vm3.
    assert_eq!(send(&mut p, VM2, VNI_WEB, &syn), Verdict::Drop(SPOOF));
    assert_eq!(p.firewall().unwrap().conntrack().len(), 0);
    // From vm3's: the rule accepts it.
    assert_eq!(send(&mut p, VM3, VNI_WEB, &syn), Verdict::Delivered);
    assert_eq!(p.firewall().unwrap().conntrack().len(), 1);
    // The established connection cannot be used from vm2's endpoint: a
    // RST in its 4-tuple does not reach the firewall.
    let flow = |p: &Pipeline| {
        let f = p.firewall().unwrap().conntrack().iter().next().unwrap();
        (f.id, f.state, f.packets_orig, f.packets_reply)
    };
    let before = flow(&p);
    let rst = tcp_between(VM3, VM1, 40000, 22, 0x04, 1001, 0, 0);
    assert_eq!(send(&mut p, VM2, VNI_WEB, &rst), Verdict::Drop(SPOOF));
    assert_eq!(flow(&p), before, "the connection did not move");
    assert_eq!(p.firewall().unwrap().conntrack().len(), 1);
}

#[test]
fn an_edge_endpoint_may_carry_outside_sources_only() {
    let (cfg, host) = config_for(VM1, 1500);
    let mut t = Tables::build(&cfg, host).unwrap();
    let vm2 = t.tep_by_ip(VM2.underlay).unwrap();
    let outside = ping(ROUTER_MAC, VM1.mac, Ipv4Addr::new(8, 8, 8, 8), VM1.ip);
    let vm3s = ping(ROUTER_MAC, VM1.mac, VM3.ip, VM1.ip);
    let mut p = Pipeline::new(Arc::new(t.clone()));
    assert_eq!(send(&mut p, VM2, VNI_WEB, &outside), Verdict::Drop(SPOOF));
    t.teps[usize::from(vm2)].edge = true;
    let mut p = Pipeline::new(Arc::new(t));
    assert_eq!(send(&mut p, VM2, VNI_WEB, &outside), Verdict::Delivered);
    // An address a port owns still comes only from that port's endpoint.
    assert_eq!(send(&mut p, VM2, VNI_WEB, &vm3s), Verdict::Drop(SPOOF));
    // Switched frames are not widened.
    let f = ping(VM2.mac, VM1.mac, Ipv4Addr::new(8, 8, 8, 8), VM1.ip);
    assert_eq!(send(&mut p, VM2, VNI_WEB, &f), Verdict::Drop(SPOOF));
}

#[test]
fn the_reason_has_a_stable_name() {
    assert_eq!(SPOOF.name(), "spoofed_inner_src");
    assert!(DropReason::ALL.contains(&SPOOF));
}
