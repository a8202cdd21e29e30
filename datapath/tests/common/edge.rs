//! The north-south fixtures: an edge (tier-0 `t0` on uplink
//! 203.0.113.2/24, secondary 203.0.113.10 = vm3's public IP, default route
//! via 203.0.113.1, a static route to 192.0.2.0/24) and instances of the
//! seed's picture linked to it, with frames of the uplink's side, and the
//! legs of a trip through the edge: an instance's frame to the edge
//! ([`via`]), the edge's packet into the overlay ([`into_overlay`],
//! [`inner_to`]) and out of the uplink ([`out_of_uplink`]).

#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{EdgeLink, MacAddr, Snat, StaticRoute, Tier0, Uplink};
use datapath::{DropReason, LocalHost, Output, Pipeline, Tables, Verdict};

use super::*;

pub const EDGE_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 2);
pub const EDGE_TEP: u32 = 100;
pub const T0_MAC: MacAddr = MacAddr([0x02, 0x50, 0x56, 0x00, 0x0f, 0x00]);
pub const UPLINK_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0xee, 0x01]);
pub const GW_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0xee, 0xfe]);
pub const TRANSIT: u32 = 0xfffff0;
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const UPLINK_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const STATIC_NH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const PARTNER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub fn edge_link() -> EdgeLink {
    EdgeLink {
        tep_ip: EDGE_UNDERLAY,
        tep_id: EDGE_TEP,
        transit_vni: TRANSIT,
        mac: T0_MAC,
        tier1s: vec!["t1".into()],
    }
}

pub fn instance(me: Vm) -> Pipeline {
    let (mut cfg, host) = config_for(me, 1500);
    cfg.edge = Some(edge_link());
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

/// The edge's underlay bridge MAC (its downlink's source).
pub const BRIDGE_MAC: MacAddr = MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x64]);

/// The edge of the module comment.
pub fn edge() -> Pipeline {
    edge_with(|_| {})
}

/// The edge, its config changed by `change` first (e.g. without
/// `underlay_snat`).
pub fn edge_with(change: impl FnOnce(&mut control::InstanceConfig)) -> Pipeline {
    let (mut cfg, _) = config_for(VM1, 1500);
    cfg.tep_id = EDGE_TEP;
    cfg.port = None;
    cfg.remote_ports = ALL
        .iter()
        .map(|v| control::RemotePort {
            switch: v.switch.into(),
            ip: v.ip,
            mac: v.mac,
            tep_ip: v.underlay,
            tep_id: v.tep_id,
        })
        .collect();
    cfg.tier0 = Some(Box::new(Tier0 {
        name: "t0".into(),
        mac: T0_MAC,
        transit_vni: TRANSIT,
        tier1s: vec!["t1".into()],
        uplink: Uplink {
            address: "203.0.113.2/24".parse().unwrap(),
            secondary: vec![PUBLIC_IP],
            gateway: Some(UPLINK_GW),
            mtu: None,
        },
        routes: vec![StaticRoute {
            prefix: "192.0.2.0/24".parse().unwrap(),
            next_hop: STATIC_NH,
        }],
        snat: Snat::default(),
        public_ips: vec![control::PublicIp {
            public_ip: PUBLIC_IP,
            private_ip: VM3.ip,
            instance: "vm3".into(),
        }],
        underlay_snat: true,
        health_check_ip: Tier0::DEFAULT_HEALTH_CHECK_IP,
        health_checks: Vec::new(),
    }));
    change(&mut cfg);
    let host = LocalHost {
        underlay_ip: EDGE_UNDERLAY,
        port_mac: UPLINK_MAC,
        overlay_mtu: 1442,
        kernel_udp: false,
        underlay_prefix_len: 24,
        underlay_mac: BRIDGE_MAC,
    };
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

/// An ARP reply from `mac`/`ip` to the uplink.
pub fn uplink_arp_reply(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    arp_reply((mac, ip), (UPLINK_MAC, UPLINK_IP))
}

/// A TCP data segment (ACK) from vm1 to the internet host through its router.
pub fn tcp_out(seq: u32, len: usize) -> Vec<u8> {
    let seg = Seg {
        ports: (40000, 80),
        seq,
        ack: 7,
        flags: geneve::tcp::ACK,
        window: 512,
        len,
    };
    tcp_frame(VM1, endpoint(ROUTER_MAC, INTERNET), seg)
}

/// What `vm` (an instance's pipeline, linked to the edge) sends to the edge
/// when its port sends `frame`: asserts one Geneve packet, to the edge's
/// underlay address; returns its (source, UDP payload) for the edge's
/// `from_underlay`.
pub fn via(vm: &mut Pipeline, frame: &[u8]) -> (Ipv4Addr, Vec<u8>) {
    let mut out = output();
    assert_eq!(
        vm.from_port(frame, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    assert_eq!(out.underlay.len(), 1);
    let (pkt, dst) = out.underlay.get(0).unwrap();
    assert_eq!(dst, EDGE_UNDERLAY, "the tier-1 sends it to the edge");
    let (src, payload) = strip_outer(pkt);
    (src, payload.to_vec())
}

/// The one Geneve packet `out` holds, into the overlay to `vm`: asserts it
/// goes to `vm`'s underlay address on its switch's VNI, the inner frame to
/// `vm`'s MAC; returns its (source, UDP payload) for `vm`'s
/// `from_underlay`.
pub fn into_overlay(out: &Output, vm: Vm) -> (Ipv4Addr, Vec<u8>) {
    assert_eq!(out.underlay.len(), 1, "one packet into the overlay");
    let (pkt, dst) = out.underlay.get(0).unwrap();
    assert_eq!(dst, vm.underlay);
    let (src, payload) = strip_outer(pkt);
    let g = geneve::geneve::parse(payload).unwrap();
    assert_eq!(g.vni, vni_of(vm));
    assert_eq!(macs(g.payload).0, vm.mac);
    (src, payload.to_vec())
}

/// The inner IPv4 packet of [`into_overlay`]'s packet to `vm`.
pub fn inner_to(out: &Output, vm: Vm) -> Vec<u8> {
    let (_, payload) = into_overlay(out, vm);
    let g = geneve::geneve::parse(&payload).unwrap();
    g.payload[geneve::ethernet::HEADER_LEN..].to_vec()
}

/// The edge's first uplink frame after resolving `nh`: `send` waits for
/// the ARP (asked of `nh`, broadcast), the answer is learned, and what
/// `send` puts on the uplink the second time is returned.
pub fn out_of_uplink(
    edge: &mut Pipeline,
    nh: Ipv4Addr,
    mut send: impl FnMut(&mut Pipeline, &mut Output) -> Verdict,
) -> Vec<u8> {
    let mut out = output();
    assert_eq!(send(edge, &mut out), Verdict::Drop(DropReason::ArpPending));
    let (req, _) = out.port.get(0).expect("an ARP request");
    assert_eq!(macs(req).0, MacAddr::BROADCAST);
    assert_eq!(
        &req[14 + 24..14 + 28],
        &nh.octets(),
        "asks for the next hop"
    );
    out.clear();
    assert_eq!(
        edge.from_port(&uplink_arp_reply(GW_MAC, nh), 2, &mut out),
        Verdict::Absorbed
    );
    assert_eq!(send(edge, &mut out), Verdict::Forwarded);
    out.port.get(0).unwrap().0.to_vec()
}
