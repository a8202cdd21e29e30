//! The edge's guards found in review: the tier-0 takes from the overlay
//! only the transit segment (decap refuses the rest before the balancer
//! or the NAT can keep state for it), the edge's tier-1 answers a TTL
//! that runs out there through the tier-0, and the NAT spends no session
//! on a packet the tier-0 has no route for.

#![allow(clippy::unwrap_used)]

mod common;

use common::edge::*;
use common::*;
use datapath::{DropReason, Verdict};
use geneve::{icmpv4, ipv4};

#[test]
fn from_the_overlay_only_the_transit_segment_reaches_the_tier0() {
    let mut e = edge();
    let mut out = output();
    // vm1's endpoint sends on its switch's VNI, not the transit one.
    let ping = icmp_echo(VM1.mac, T0_MAC, VM1.ip, INTERNET, 64, 8, false);
    let pkt = geneve_from(&VM1, VNI_WEB, VM1.tep_id, &ping);
    let trace = e.trace(datapath::TraceFrom::Underlay(VM1.underlay), &pkt, 1);
    assert_eq!(
        e.from_underlay(VM1.underlay, &pkt, 1, &mut out),
        Verdict::Drop(DropReason::NotForEdge),
        "{trace:#?}"
    );
    assert!(
        trace.steps[0].detail.contains("not the transit segment"),
        "{trace:#?}"
    );
    assert_eq!(e.edge().unwrap().nat.len(), 0, "no session kept");
    assert_eq!(out.port.len() + out.underlay.len(), 0);
}

#[test]
fn a_ttl_running_out_at_the_edges_tier1_is_answered_out_of_the_uplink() {
    let mut e = edge();
    let mut out = output();
    e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 1, &mut out);
    out.clear();
    // TTL 2 from the internet to vm3's public IP: the tier-0 passes it
    // (TTL 1 left), the tier-1 on the edge cannot.
    let ping = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PUBLIC_IP, 2, 8, false);
    assert_eq!(
        e.from_port(&ping, 2, &mut out),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    let (err, _) = out.port.get(0).expect("an ICMP error out of the uplink");
    let ip = ipv4::Packet::new_checked(&err[14..]).unwrap();
    assert_eq!(ip.dst(), INTERNET, "back to the sender");
    assert!(ip.verify_checksum());
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv4::TYPE_TIME_EXCEEDED);
    assert!(icmp.verify_checksum());
    assert_eq!(out.underlay.len(), 0, "nothing into the overlay");
}

#[test]
fn no_session_is_spent_on_a_packet_the_tier0_cannot_route() {
    // No default route, no static route: the internet is unreachable.
    let mut e = edge_with(|c| {
        let t0 = c.tier0.as_mut().unwrap();
        t0.uplink.gateway = None;
        t0.routes.clear();
    });
    let mut vm1 = instance(VM1);
    let mut vout = output();
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 64, 8, false);
    assert_eq!(
        vm1.from_port(&ping, 1, &mut vout),
        Verdict::Encapsulated { copies: 1 }
    );
    let (src, payload) = strip_outer(vout.underlay.get(0).unwrap().0);
    let mut out = output();
    assert_eq!(
        e.from_underlay(src, payload, 2, &mut out),
        Verdict::Drop(DropReason::NoRoute)
    );
    assert_eq!(e.edge().unwrap().nat.len(), 0, "no session for it");
}

#[test]
fn trace_says_what_the_downlink_learns() {
    let mut e = edge();
    let host = std::net::Ipv4Addr::new(10, 99, 3, 77);
    let arp = arp_request(control::MacAddr([2, 0, 0, 0, 0x77, 1]), host, EDGE_UNDERLAY);
    let trace = e.trace(datapath::TraceFrom::Downlink, &arp, 1);
    assert!(
        trace.steps[0].detail.contains("learned on the downlink"),
        "{trace:#?}"
    );
    let mut out = output();
    assert_eq!(e.from_downlink(&arp, 1, &mut out), Verdict::Absorbed);
    let edge = e.edge().unwrap();
    assert!(
        edge.downlink.lookup(host, 2).is_some(),
        "and the packet path did"
    );
}
