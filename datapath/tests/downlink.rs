//! The edge's downlink in-process: the tier-0 routes between the overlay
//! and hosts on the underlay subnet that run no agent, out of and in from
//! the underlay bridge (its own ARP cache, learned, never answering: the
//! kernel owns the address); uplink and downlink are not routed to each
//! other; with `underlay_snat` the overlay's traffic reaches the host from
//! the underlay address and NAT ports 61000-65535 (its own NAT, not the
//! uplink's), the answers come back, and a host on the underlay cannot
//! open connections into the overlay. And the downlink socket's BPF
//! filter, run over real frames, lets through exactly what the edge
//! routes.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::edge::{
    BRIDGE_MAC, EDGE_UNDERLAY, GW_MAC, INTERNET, UPLINK_MAC, edge_with, inner_to, instance,
    into_overlay, via,
};
use common::*;
use control::{MacAddr, Tier0};
use datapath::bpf::{self, ACCEPT};
use datapath::{DropReason, Output, Pipeline, Tables, TraceFrom, Verdict};
use geneve::{checksum, ethernet, icmpv4, ipv4};

/// A host on the underlay subnet without an agent.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 50);
const HOST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x03, 0x50]);

/// The common edge (`common::edge`), with or without `underlay_snat`.
fn edge(underlay_snat: bool) -> Pipeline {
    edge_with(|cfg| {
        if let Some(t0) = cfg.tier0.as_mut() {
            t0.underlay_snat = underlay_snat;
        }
    })
}

fn ip_of(frame: &[u8]) -> ipv4::Packet<&[u8]> {
    ipv4::Packet::new_checked(&frame[14..]).unwrap()
}

/// An ARP reply from the underlay host to the edge's bridge.
fn host_arp_reply() -> Vec<u8> {
    arp_reply((HOST_MAC, HOST), (BRIDGE_MAC, EDGE_UNDERLAY))
}

/// An IPv4 frame with an L4 header of `proto` (ports for TCP/UDP, type for
/// ICMP), `ihl` 32-bit words of IPv4 header, and `frag` (the flags and
/// fragment offset field).
#[allow(clippy::too_many_arguments)]
fn l4(
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    ihl: u8,
    frag: u16,
) -> Vec<u8> {
    let hl = usize::from(ihl) * 4;
    let mut f = vec![0u8; 14 + hl + 20];
    ethernet::emit_header(&mut f, dst_mac.0, HOST_MAC.0, ethernet::ETHERTYPE_IPV4).unwrap();
    let ip = &mut f[14..];
    ip[0] = 0x40 | ihl;
    let total = u16::try_from(hl + 20).unwrap();
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = checksum::fold(checksum::sum(&ip[..hl], 0));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let l4 = &mut ip[hl..];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == ipv4::PROTO_TCP {
        l4[12] = 5 << 4;
        l4[13] = 0x02;
    }
    f
}

#[test]
fn overlay_reaches_an_underlay_host_and_the_host_answers_without_snat() {
    let mut e = edge(false);
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, HOST, 64, 32, true);
    let (src, payload) = via(&mut instance(VM1), &ping);
    let trace = format!("{:?}", e.trace(TraceFrom::Underlay(src), &payload, 1).steps);
    assert!(
        trace.contains("connected on the downlink (10.99.3.50)"),
        "{trace}"
    );
    // Unknown neighbour: an ARP request out of the downlink, from the
    // bridge's MAC and the underlay address.
    let mut out = output();
    assert_eq!(
        e.from_underlay(src, &payload, 2, &mut out),
        Verdict::Drop(DropReason::ArpPending)
    );
    assert!(out.port.is_empty(), "nothing on the uplink");
    let (req, _) = out.downlink.get(0).expect("an ARP request on the downlink");
    assert_eq!(macs(req), (MacAddr::BROADCAST, BRIDGE_MAC));
    assert_eq!(&req[14 + 14..14 + 18], &EDGE_UNDERLAY.octets(), "sender");
    assert_eq!(&req[14 + 24..14 + 28], &HOST.octets(), "target");
    // The host answers; the next packet goes out to it.
    out.clear();
    assert_eq!(
        e.from_downlink(&host_arp_reply(), 3, &mut out),
        Verdict::Absorbed
    );
    assert!(out.downlink.is_empty(), "ARP is never answered");
    assert_eq!(
        e.from_underlay(src, &payload, 4, &mut out),
        Verdict::Forwarded
    );
    let (sent, _) = out.downlink.get(0).unwrap();
    assert_eq!(macs(sent), (HOST_MAC, BRIDGE_MAC));
    let ip = ip_of(sent);
    assert_eq!(
        (ip.src(), ip.dst()),
        (VM1.ip, HOST),
        "not translated: the host sees the instance"
    );
    assert_eq!(ip.ttl(), 62, "tier-1 and tier-0");
    assert!(ip.verify_checksum());
    assert_eq!(
        e.counters().downlink_tx.packets,
        2,
        "the ARP request and the ping"
    );

    // The host's answer (or its own ping: the same) comes in on the
    // downlink and goes through the tier-0 and the tier-1 to vm1.
    let reply = echo_reply_of(&ping, (HOST_MAC, BRIDGE_MAC), 64);
    let mut out = output();
    assert_eq!(
        e.from_downlink(&reply, 5, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (src, payload) = into_overlay(&out, VM1);
    let g = geneve::geneve::parse(&payload).unwrap();
    assert_eq!(g.vni, VNI_WEB);
    assert_eq!(macs(g.payload), (VM1.mac, ROUTER_MAC));
    assert_eq!(ip_of(g.payload).ttl(), 62);
    let mut vm1 = instance(VM1);
    let mut out = output();
    assert_eq!(
        vm1.from_underlay(src, &payload, 6, &mut out),
        Verdict::Delivered,
        "vm1 takes it from the edge"
    );
}

#[test]
fn with_underlay_snat_the_host_sees_the_underlay_address_and_answers_come_back() {
    let mut e = edge(true);
    let mut out = output();
    assert_eq!(
        e.from_downlink(&host_arp_reply(), 1, &mut out),
        Verdict::Absorbed
    );
    // vm1 opens a TCP connection to the host's port 80.
    let syn = tcp_between(VM1, endpoint(ROUTER_MAC, HOST), 40000, 80, 0x02, 1, 0, 0);
    let (src, payload) = via(&mut instance(VM1), &syn);
    let trace = format!("{:?}", e.trace(TraceFrom::Underlay(src), &payload, 2).steps);
    assert_eq!(
        e.from_underlay(src, &payload, 2, &mut out),
        Verdict::Forwarded
    );
    let (sent, _) = out.downlink.get(0).unwrap();
    let ip = ip_of(sent);
    assert_eq!(
        (ip.src(), ip.dst()),
        (EDGE_UNDERLAY, HOST),
        "the host sees the underlay address: {trace}"
    );
    let (sport, dport) = ports(&sent[ethernet::HEADER_LEN..]);
    let (lo, hi) = Tier0::DOWNLINK_NAT_PORTS;
    assert!(
        (lo..=hi).contains(&sport),
        "port {sport} from the NAT's range"
    );
    assert_eq!(dport, 80);
    assert!(
        checksums_ok(&sent[ethernet::HEADER_LEN..]),
        "checksums updated"
    );
    assert!(out.port.is_empty(), "nothing on the uplink");
    let ext = e.edge().unwrap().downlink_nat.as_ref().unwrap();
    assert_eq!(ext.len(), 1, "one session, in the downlink's NAT");
    assert_eq!(e.edge().unwrap().nat.len(), 0, "none in the uplink's");

    // The host's answer to that address and port goes back to vm1.
    let synack = tcp_between(
        endpoint(HOST_MAC, HOST),
        endpoint(BRIDGE_MAC, EDGE_UNDERLAY),
        80,
        sport,
        0x12,
        7,
        2,
        0,
    );
    let mut out = output();
    assert_eq!(
        e.from_downlink(&synack, 3, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let inner = inner_to(&out, VM1);
    let ip = ipv4::Packet::new_checked(&inner[..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (HOST, VM1.ip));
    assert_eq!(ports(&inner), (80, 40000));
    assert!(checksums_ok(&inner), "checksums updated");

    // A port no mapping holds, and the same SYN-ACK from elsewhere with
    // address-dependent filtering aside: no mapping, dropped.
    let stray = tcp_between(
        endpoint(HOST_MAC, HOST),
        endpoint(BRIDGE_MAC, EDGE_UNDERLAY),
        80,
        if sport == hi { lo } else { sport + 1 },
        0x12,
        7,
        2,
        0,
    );
    assert_eq!(
        e.from_downlink(&stray, 4, &mut out),
        Verdict::Drop(DropReason::NatNoMapping)
    );
    // The overlay's ping of the edge's underlay address is the tier-0's,
    // not translated.
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, EDGE_UNDERLAY, 64, 8, false);
    let (src, payload) = via(&mut instance(VM1), &ping);
    assert_eq!(
        e.from_underlay(src, &payload, 5, &mut out),
        Verdict::Replied
    );
    // Switched off by a new config, the NAT goes with it.
    e.set_tables(Arc::clone(edge(false).tables()));
    assert!(e.edge().unwrap().downlink_nat.is_none());
}

#[test]
fn with_underlay_snat_the_host_cannot_open_connections_into_the_overlay() {
    let mut e = edge(true);
    let syn = l4(BRIDGE_MAC, HOST, VM1.ip, ipv4::PROTO_TCP, 40000, 80, 5, 0);
    let mut out = output();
    assert_eq!(
        e.from_downlink(&syn, 1, &mut out),
        Verdict::Drop(DropReason::DownlinkPolicy)
    );
    assert_eq!(e.counters().dropped(DropReason::DownlinkPolicy), 1);
    assert!(out.underlay.is_empty());
    let trace = format!("{:?}", e.trace(TraceFrom::Downlink, &syn, 2).steps);
    assert!(trace.contains("drop (downlink_policy)"), "{trace}");
    // Without it, the same SYN goes in.
    let mut open = edge(false);
    assert_eq!(
        open.from_downlink(&syn, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
}

#[test]
fn the_downlink_learns_arp_for_its_address_and_never_answers() {
    let mut e = edge(false);
    let mut out = output();
    // The host asks for the edge's underlay address (the kernel answers):
    // the edge learns the host from it.
    assert_eq!(
        e.from_downlink(&arp_request(HOST_MAC, HOST, EDGE_UNDERLAY), 1, &mut out),
        Verdict::Absorbed
    );
    // A request for someone else teaches nothing.
    let other = Ipv4Addr::new(10, 99, 3, 60);
    let other_mac = MacAddr([2, 0, 0, 0, 3, 0x60]);
    assert_eq!(
        e.from_downlink(&arp_request(other_mac, other, HOST), 1, &mut out),
        Verdict::Absorbed
    );
    assert!(out.downlink.is_empty() && out.port.is_empty(), "no answers");
    let learned: Vec<Ipv4Addr> = e
        .edge()
        .unwrap()
        .downlink
        .entries(2)
        .map(|(ip, _, _)| ip)
        .collect();
    assert_eq!(learned, [HOST]);
    assert_eq!(
        e.edge().unwrap().neighbors.entries(2).count(),
        0,
        "the uplink's cache is another"
    );
    // So the first packet to the host goes out at once.
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, HOST, 64, 8, false);
    let (src, payload) = via(&mut instance(VM1), &ping);
    assert_eq!(
        e.from_underlay(src, &payload, 3, &mut out),
        Verdict::Forwarded
    );
    // While to the other host it has to ask.
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, other, 64, 8, false);
    let (src, payload) = via(&mut instance(VM1), &ping);
    assert_eq!(
        e.from_underlay(src, &payload, 3, &mut out),
        Verdict::Drop(DropReason::ArpPending)
    );
}

#[test]
fn uplink_and_downlink_are_not_routed_to_each_other() {
    let mut e = edge(false);
    let mut out = output();
    // From the internet to the underlay subnet: no NAT mapping lets it
    // in (and the tier-0 would not route it out of the downlink).
    let ping = icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, HOST, 64, 8, false);
    assert_eq!(
        e.from_port(&ping, 1, &mut out),
        Verdict::Drop(DropReason::NatNoMapping)
    );
    assert!(out.downlink.is_empty());
    // From the underlay host toward the internet: not the edge's at all.
    let ping = icmp_echo(HOST_MAC, BRIDGE_MAC, HOST, INTERNET, 64, 8, false);
    assert_eq!(
        e.from_downlink(&ping, 2, &mut out),
        Verdict::Drop(DropReason::NotForEdge)
    );
    // To the edge's underlay address: the host's own traffic, the kernel's
    // (the filter lets no echo request through; were one to come, it is
    // dropped: not ours, or no NAT mapping); from the overlay it is the
    // tier-0's.
    for (snat, want) in [
        (false, DropReason::NotForEdge),
        (true, DropReason::NatNoMapping),
    ] {
        let mut e = edge(snat);
        let ping = icmp_echo(HOST_MAC, BRIDGE_MAC, HOST, EDGE_UNDERLAY, 64, 8, false);
        assert_eq!(
            e.from_downlink(&ping, 2, &mut out),
            Verdict::Drop(want),
            "snat {snat}"
        );
    }
    let ping = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, EDGE_UNDERLAY, 64, 8, false);
    let (src, payload) = via(&mut instance(VM1), &ping);
    out.clear();
    assert_eq!(
        e.from_underlay(src, &payload, 3, &mut out),
        Verdict::Replied
    );
    assert!(out.downlink.is_empty());
    assert_eq!(out.underlay.len(), 1, "the echo reply, into the overlay");
    // Unicast to another MAC (a promiscuous bridge) is not for the edge.
    let stray = icmp_echo(
        HOST_MAC,
        MacAddr([2, 9, 9, 9, 9, 9]),
        HOST,
        VM1.ip,
        64,
        8,
        false,
    );
    assert_eq!(
        e.from_downlink(&stray, 4, &mut out),
        Verdict::Drop(DropReason::NotForEdge)
    );
}

#[test]
fn too_big_from_the_downlink_is_answered_from_the_underlay_address() {
    let mut e = edge(false);
    let big = icmp_echo(HOST_MAC, BRIDGE_MAC, HOST, VM1.ip, 64, 1460, true);
    let mut out: Output = output();
    assert_eq!(
        e.from_downlink(&big, 1, &mut out),
        Verdict::Drop(DropReason::FragNeeded)
    );
    let (f, _) = out
        .downlink
        .get(0)
        .expect("frag needed, out of the downlink");
    assert_eq!(macs(f), (HOST_MAC, BRIDGE_MAC));
    let ip = ip_of(f);
    assert_eq!((ip.src(), ip.dst()), (EDGE_UNDERLAY, HOST));
    let icmp = ip.payload();
    assert_eq!(
        (icmp[0], icmp[1]),
        (icmpv4::TYPE_DEST_UNREACH, icmpv4::CODE_FRAG_NEEDED)
    );
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1442);
    // The other way, the underlay's MTU (1500) is the limit.
    let big = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, HOST, 64, 1400, true);
    let (src, payload) = via(&mut instance(VM1), &big);
    assert_eq!(
        e.from_downlink(&host_arp_reply(), 2, &mut out),
        Verdict::Absorbed
    );
    out.clear();
    assert_eq!(
        e.from_underlay(src, &payload, 3, &mut out),
        Verdict::Forwarded
    );
}

/// The filter over real frames, with and without the downlink's SNAT.
#[test]
fn the_filter_passes_what_the_edge_routes_and_nothing_of_the_hosts() {
    let (lo, hi) = Tier0::DOWNLINK_NAT_PORTS;
    let me = EDGE_UNDERLAY;
    let tcp = ipv4::PROTO_TCP;
    let udp = ipv4::PROTO_UDP;
    let icmp_to_me = |t: u8| {
        let mut f = l4(BRIDGE_MAC, HOST, me, ipv4::PROTO_ICMP, 0, 0, 5, 0);
        f[34] = t;
        f
    };
    let mut arp_other = arp_request(HOST_MAC, HOST, Ipv4Addr::new(10, 99, 3, 1));
    arp_other[0..6].copy_from_slice(&BRIDGE_MAC.0);
    let mut ipv6 = l4(BRIDGE_MAC, HOST, VM1.ip, udp, 1, 2, 5, 0);
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let geneve = l4(BRIDGE_MAC, VM3.underlay, me, udp, 50000, 6081, 5, 0);
    // (what, frame, passes without SNAT, passes with SNAT)
    let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
        ("ARP reply to us", host_arp_reply(), true, true),
        (
            "ARP request for us",
            arp_request(HOST_MAC, HOST, me),
            true,
            true,
        ),
        ("ARP for another host", arp_other, false, false),
        (
            "ping to the overlay",
            icmp_echo(HOST_MAC, BRIDGE_MAC, HOST, VM1.ip, 64, 8, false),
            true,
            true,
        ),
        (
            "TCP to the other switch",
            l4(BRIDGE_MAC, HOST, VM2.ip, tcp, 1, 80, 5, 0),
            true,
            true,
        ),
        (
            "ping to the underlay router",
            icmp_echo(
                HOST_MAC,
                BRIDGE_MAC,
                HOST,
                Ipv4Addr::new(10, 99, 3, 1),
                64,
                8,
                false,
            ),
            false,
            false,
        ),
        ("Geneve to us", geneve, false, false),
        (
            "ssh to us",
            l4(BRIDGE_MAC, HOST, me, tcp, 40000, 22, 5, 0),
            false,
            false,
        ),
        (
            "TCP to us, bottom NAT port",
            l4(BRIDGE_MAC, HOST, me, tcp, 80, lo, 5, 0),
            false,
            true,
        ),
        (
            "TCP to us, below the NAT ports",
            l4(BRIDGE_MAC, HOST, me, tcp, 80, lo - 1, 5, 0),
            false,
            false,
        ),
        (
            "UDP to us, top NAT port",
            l4(BRIDGE_MAC, HOST, me, udp, 53, hi, 5, 0),
            false,
            true,
        ),
        (
            "UDP to us, kernel ephemeral port",
            l4(BRIDGE_MAC, HOST, me, udp, 53, 60999, 5, 0),
            false,
            false,
        ),
        (
            "TCP to a NAT port behind IP options",
            l4(BRIDGE_MAC, HOST, me, tcp, 80, 62000, 6, 0),
            false,
            true,
        ),
        (
            "IP options put port 22 where a NAT port would be",
            {
                let mut f = l4(BRIDGE_MAC, HOST, me, tcp, 80, 22, 6, 0);
                f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&62000u16.to_be_bytes());
                f
            },
            false,
            false,
        ),
        (
            "UDP non-first fragment to us",
            l4(BRIDGE_MAC, HOST, me, udp, 53, 62000, 5, 0x0010),
            false,
            false,
        ),
        (
            "UDP first fragment to us",
            l4(BRIDGE_MAC, HOST, me, udp, 53, 62000, 5, 0x2000),
            false,
            true,
        ),
        (
            "echo reply to us",
            icmp_to_me(icmpv4::TYPE_ECHO_REPLY),
            false,
            true,
        ),
        (
            "unreachable to us",
            icmp_to_me(icmpv4::TYPE_DEST_UNREACH),
            false,
            true,
        ),
        (
            "time exceeded to us",
            icmp_to_me(icmpv4::TYPE_TIME_EXCEEDED),
            false,
            true,
        ),
        (
            "echo request to us (the kernel answers)",
            icmp_to_me(icmpv4::TYPE_ECHO_REQUEST),
            false,
            false,
        ),
        ("IPv6", ipv6, false, false),
        ("a runt", vec![0xff; 20], false, false),
    ];
    for snat in [false, true] {
        let e = edge(snat);
        let prog = e.downlink_filter();
        for (what, frame, plain, with_snat) in &cases {
            let want = if snat { *with_snat } else { *plain };
            let got = bpf::run(&prog, frame);
            assert_eq!(got == ACCEPT, want, "{what} (snat {snat})");
            assert!(got == 0 || got == ACCEPT, "{what}: {got}");
        }
    }
    // The tables change, the filter follows: no overlay behind a tier-0
    // without tier-1s.
    let ping = icmp_echo(HOST_MAC, BRIDGE_MAC, HOST, VM1.ip, 64, 8, false);
    let mut e = edge(false);
    assert_eq!(bpf::run(&e.downlink_filter(), &ping), ACCEPT, "an overlay");
    let alone = edge_with(|cfg| {
        if let Some(t0) = cfg.tier0.as_mut() {
            t0.tier1s.clear();
            t0.public_ips.clear(); // vm3's: behind no tier-1 now
        }
    });
    e.set_tables(Arc::clone(alone.tables()));
    assert_eq!(bpf::run(&e.downlink_filter(), &ping), 0, "no overlay");
    // Nor any behind what is no edge at all.
    let (mut cfg, _) = config_for(VM1, 1500);
    cfg.port = None;
    let t = Tables::build(&cfg, config_for(VM1, 1500).1).unwrap();
    let plain = Pipeline::new(Arc::new(t));
    assert_eq!(bpf::run(&plain.downlink_filter(), &ping), 0, "not an edge");
}
