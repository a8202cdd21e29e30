//! The north-south path in-process: an instance's tier-1 sends what no
//! overlay route covers to the tier-0 on the edge over the transit
//! segment; the edge routes it out of the uplink (ARP for the next hop
//! first) and routes the answer back through the tier-1 to the instance,
//! whose source guard lets the edge carry outside sources. TTL goes down
//! once per router; the tier-0's own ICMP goes back the way the packet came.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;

use common::edge::*;
use common::*;
use control::MacAddr;
use datapath::{DropReason, Output, Verdict};
use geneve::{icmpv4, ipv4};

fn ttl_of(frame: &[u8]) -> u8 {
    ipv4::Packet::new_checked(&frame[14..]).unwrap().ttl()
}

#[test]
fn south_north_and_back_through_tier1_and_tier0() {
    let mut vm1 = instance(VM1);
    let mut e = edge();
    // vm1 pings the internet host: its tier-1 sends it to the edge.
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 64, 32, true);
    let (src, payload) = via(&mut vm1, &ping);
    let g = geneve::geneve::parse(&payload).unwrap();
    assert_eq!(g.vni, TRANSIT, "on the transit segment");
    assert_eq!(macs(g.payload), (T0_MAC, ROUTER_MAC));
    assert_eq!(ttl_of(g.payload), 63, "tier-1: one hop");
    // The edge routes it out of the uplink via the default route.
    let sent = out_of_uplink(&mut e, UPLINK_GW, |e, o| {
        e.from_underlay(src, &payload, 3, o)
    });
    assert_eq!(macs(&sent), (GW_MAC, UPLINK_MAC));
    assert_eq!(ttl_of(&sent), 62, "tier-0: a second hop");
    let out_ip = ipv4::Packet::new_checked(&sent[14..]).unwrap();
    assert!(out_ip.verify_checksum());
    assert_eq!(out_ip.src(), UPLINK_IP, "SNAT to the uplink's address");
    let icmp = icmpv4::Packet::new_checked(out_ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let ident = icmp.echo_ident();
    // The identifier on the uplink is the one the NAT's mapping holds for
    // vm1's own.
    let sessions: Vec<_> = e.edge().unwrap().nat.sessions(3).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let s = sessions[0];
    assert_eq!(s.proto, ipv4::PROTO_ICMP);
    assert_eq!(s.inside, SocketAddrV4::new(VM1.ip, ECHO_IDENT));
    assert_eq!(s.outside, SocketAddrV4::new(UPLINK_IP, ident));
    assert_eq!(s.remote, SocketAddrV4::new(INTERNET, 0));

    // The answer from outside, to the SNAT address, goes through the NAT,
    // the tier-0 and the tier-1 to vm1's endpoint on its switch.
    let reply = echo_reply_of(&sent, (GW_MAC, UPLINK_MAC), 50);
    let mut out = output();
    let trace = e.trace(datapath::TraceFrom::Port, &reply, 4);
    assert_eq!(
        e.from_port(&reply, 4, &mut out),
        Verdict::Encapsulated { copies: 1 },
        "{trace:#?}"
    );
    let (src, payload) = into_overlay(&out, VM1);
    let g = geneve::geneve::parse(&payload).unwrap();
    assert_eq!(g.vni, VNI_WEB);
    assert_eq!(macs(g.payload), (VM1.mac, ROUTER_MAC));
    assert_eq!(ttl_of(g.payload), 48, "tier-0 and tier-1");
    let in_ip = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
    assert_eq!(
        (in_ip.src(), in_ip.dst()),
        (INTERNET, VM1.ip),
        "translated back"
    );
    assert!(in_ip.verify_checksum());
    let icmp = icmpv4::Packet::new_checked(in_ip.payload()).unwrap();
    assert_eq!(
        icmp.echo_ident(),
        ECHO_IDENT,
        "the instance's own identifier"
    );
    assert!(icmp.verify_checksum());
    // vm1 takes it: the edge may carry an outside source.
    let mut out = output();
    assert_eq!(
        vm1.from_underlay(src, &payload, 5, &mut out),
        Verdict::Delivered
    );
}

#[test]
fn a_tier0_static_route_is_used() {
    let mut vm3 = instance(VM3);
    let mut e = edge();
    let ping = icmp_echo(VM3.mac, ROUTER_MAC, VM3.ip, PARTNER, 64, 8, false);
    let (src, payload) = via(&mut vm3, &ping);
    let sent = out_of_uplink(&mut e, STATIC_NH, |e, o| {
        e.from_underlay(src, &payload, 3, o)
    });
    assert_eq!(macs(&sent).0, GW_MAC);
    let trace = e.trace(datapath::TraceFrom::Underlay(src), &payload, 4);
    let text = format!("{trace:?}");
    assert!(
        text.contains("192.0.2.0/24 via 203.0.113.254 on the uplink (static)"),
        "{text}"
    );
}

#[test]
fn ttl_runs_out_at_the_tier0_and_its_error_goes_back_into_the_overlay() {
    let mut vm1 = instance(VM1);
    let mut e = edge();
    // TTL 2: the tier-1 takes it to 1, the tier-0 cannot forward it.
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 2, 8, false);
    let (src, payload) = via(&mut vm1, &ping);
    let mut eout = output();
    assert_eq!(
        e.from_underlay(src, &payload, 2, &mut eout),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    assert!(!eout.underlay.is_empty(), "the time exceeded");
    let (src, payload) = into_overlay(&eout, VM1);
    let g = geneve::geneve::parse(&payload).unwrap();
    assert_eq!(g.vni, VNI_WEB);
    let ip = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
    assert_eq!(ip.src(), UPLINK_IP, "from the tier-0");
    assert_eq!(ip.payload()[0], icmpv4::TYPE_TIME_EXCEEDED);
    let mut out = output();
    assert_eq!(
        vm1.from_underlay(src, &payload, 3, &mut out),
        Verdict::Delivered
    );
}

#[test]
fn too_big_for_the_overlay_from_outside_is_answered_out_of_the_uplink() {
    let mut e = edge();
    // To vm3's public IP, so the NAT lets it in.
    let big = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PUBLIC_IP, 60, 1460, true);
    let mut out = output();
    assert_eq!(
        e.from_port(&big, 1, &mut out),
        Verdict::Drop(DropReason::FragNeeded)
    );
    let (f, _) = out.port.get(0).expect("frag needed");
    assert_eq!(macs(f), (GW_MAC, UPLINK_MAC));
    let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (UPLINK_IP, INTERNET));
    let icmp = ip.payload();
    assert_eq!(
        (icmp[0], icmp[1]),
        (icmpv4::TYPE_DEST_UNREACH, icmpv4::CODE_FRAG_NEEDED)
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1442,
        "the overlay MTU"
    );
}

#[test]
fn the_uplink_answers_arp_for_its_addresses_only_and_echo_to_them() {
    let mut e = edge();
    let mut out = output();
    for (target, answered) in [
        (UPLINK_IP, true),
        ("203.0.113.10".parse().unwrap(), true),
        ("203.0.113.77".parse().unwrap(), false),
    ] {
        out.clear();
        let v = e.from_port(&arp_request(GW_MAC, UPLINK_GW, target), 1, &mut out);
        assert_eq!(v == Verdict::Replied, answered, "{target}");
        assert_eq!(out.port.len(), usize::from(answered));
    }
    out.clear();
    let ping = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, UPLINK_IP, 64, 8, false);
    assert_eq!(e.from_port(&ping, 2, &mut out), Verdict::Replied);
    // Another MAC's unicast is not for the edge; nor is routing back out.
    let other = icmp_echo(
        GW_MAC,
        MacAddr([2, 9, 9, 9, 9, 9]),
        INTERNET,
        VM1.ip,
        64,
        8,
        false,
    );
    assert_eq!(
        e.from_port(&other, 3, &mut out),
        Verdict::Drop(DropReason::NotForEdge)
    );
    // Nothing from outside gets in to an address the NAT does not hold.
    let back = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PARTNER, 64, 8, false);
    assert_eq!(
        e.from_port(&back, 4, &mut out),
        Verdict::Drop(DropReason::NatNoMapping)
    );
}

#[test]
fn the_transit_segment_is_guarded() {
    let mut e = edge();
    let mut out = output();
    // vm2's endpoint claims vm1's address on the transit segment.
    let ping = icmp_echo(ROUTER_MAC, T0_MAC, VM1.ip, INTERNET, 64, 8, false);
    let pkt = geneve_from(&VM2, TRANSIT, VM2.tep_id, &ping);
    assert_eq!(
        e.from_underlay(VM2.underlay, &pkt, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedInnerSrc)
    );
    // Without an edge link, a tier-1 has no way out.
    let mut plain = pipeline_for(VM1);
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 64, 8, false);
    assert_eq!(
        plain.from_port(&ping, 1, &mut out),
        Verdict::Drop(DropReason::NoRoute)
    );
}

#[test]
fn the_edge_asks_for_its_next_hops_before_traffic_needs_them() {
    let mut e = edge();
    let mut out = output();
    e.edge_tick(1, &mut out);
    let asked: Vec<Vec<u8>> = out
        .port
        .iter()
        .map(|(f, _)| f[14 + 24..14 + 28].to_vec())
        .collect();
    assert_eq!(
        asked.len(),
        2,
        "the default gateway and the static next hop"
    );
    assert!(asked.contains(&UPLINK_GW.octets().to_vec()));
    assert!(asked.contains(&STATIC_NH.octets().to_vec()));
    // Paced: not again within a second; answered, not again at all.
    out.clear();
    e.edge_tick(2, &mut out);
    assert!(out.port.is_empty());
    assert_eq!(
        e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 3, &mut out),
        Verdict::Absorbed
    );
    out.clear();
    e.edge_tick(2_000_000_000, &mut out);
    assert_eq!(out.port.len(), 1, "only the unanswered static next hop");
    // With the gateway known, the first packet out goes at once.
    let mut vm1 = instance(VM1);
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 64, 8, false);
    let (src, payload) = via(&mut vm1, &ping);
    out.clear();
    assert_eq!(
        e.from_underlay(src, &payload, 2_000_000_001, &mut out),
        Verdict::Forwarded
    );
}

#[test]
fn a_public_ip_is_reached_from_outside_used_inside_and_hairpinned() {
    let mut e = edge();
    let mut out = output();
    e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 1, &mut out);
    // In: the internet host pings vm3's public IP; vm3 sees the client.
    let ping = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PUBLIC_IP, 60, 8, false);
    out.clear();
    assert_eq!(
        e.from_port(&ping, 2, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let ip = inner_to(&out, VM3);
    let p = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((p.src(), p.dst()), (INTERNET, VM3.ip));
    assert!(p.verify_checksum());
    let trace = format!("{:?}", e.trace(datapath::TraceFrom::Port, &ping, 3));
    assert!(trace.contains("dnat icmp 203.0.113.10"), "{trace}");
    assert!(
        trace.contains("static 1:1") || trace.contains("session"),
        "{trace}"
    );

    // Out: vm3's own traffic leaves from its public IP.
    let mut vm3 = instance(VM3);
    let own = icmp_echo(VM3.mac, ROUTER_MAC, VM3.ip, PARTNER, 64, 8, false);
    let (src, payload) = via(&mut vm3, &own);
    let sent = out_of_uplink(&mut e, STATIC_NH, |e, o| {
        e.from_underlay(src, &payload, 5, o)
    });
    let p = ipv4::Packet::new_checked(&sent[14..]).unwrap();
    assert_eq!(p.src(), PUBLIC_IP, "vm3 leaves from its public IP");

    // Hairpin: vm1 reaches vm3 at its public IP, seen from vm1's external address.
    let mut vm1 = instance(VM1);
    let hp = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, PUBLIC_IP, 64, 8, false);
    let (src, payload) = via(&mut vm1, &hp);
    out.clear();
    assert_eq!(
        e.from_underlay(src, &payload, 7, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let ip = inner_to(&out, VM3);
    let p = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((p.src(), p.dst()), (UPLINK_IP, VM3.ip));
    let icmp = icmpv4::Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
}

#[test]
fn withdrawing_a_public_ip_closes_it_at_once() {
    let mut e = edge();
    let mut out = output();
    let ping = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PUBLIC_IP, 60, 8, false);
    assert_eq!(
        e.from_port(&ping, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let mut t = (**e.tables()).clone();
    if let Some(t0) = t.tier0.as_mut() {
        t0.nat.statics.clear();
    }
    e.set_tables(Arc::new(t));
    out.clear();
    // The address stays the uplink's: the tier-0 answers the ping itself,
    // nothing reaches vm3.
    assert_eq!(e.from_port(&ping, 2, &mut out), Verdict::Replied);
    assert!(out.underlay.is_empty());
}

#[test]
fn a_tcp_run_leaves_the_uplink_as_one_super_frame() {
    let mut vm1 = instance(VM1);
    let mut e = edge();
    let mut out = Output::with_coalescing(256, 9216, 16);
    e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 1, &mut out);
    out.clear();
    for i in 0..4u32 {
        let (src, payload) = via(&mut vm1, &tcp_out(1000 + i * 1000, 1000));
        assert_eq!(
            e.from_underlay(src, &payload, 3, &mut out),
            Verdict::Forwarded
        );
    }
    let items: Vec<_> = out.port.items().collect();
    assert_eq!(items.len(), 1, "four segments, one frame");
    let (frame, item) = items[0];
    let gso = item.gso.expect("a TSO super-frame");
    assert_eq!((gso.segments, gso.mss), (4, 1000));
    let ip = ipv4::Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (UPLINK_IP, INTERNET), "translated");
    assert_eq!(usize::from(ip.total_len()), 20 + 20 + 4000);
}

#[test]
fn an_instance_pings_the_tier0s_uplink_address() {
    let mut vm1 = instance(VM1);
    let mut e = edge();
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, UPLINK_IP, 64, 8, false);
    let (src, payload) = via(&mut vm1, &ping);
    let mut out = output();
    assert_eq!(
        e.from_underlay(src, &payload, 2, &mut out),
        Verdict::Replied
    );
    let ip = inner_to(&out, VM1);
    let p = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((p.src(), p.dst()), (UPLINK_IP, VM1.ip));
    assert_eq!(p.payload()[0], icmpv4::TYPE_ECHO_REPLY);
}
