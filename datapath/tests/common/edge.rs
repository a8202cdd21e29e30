//! The north-south fixtures: an edge (tier-0 `t0` on uplink
//! 203.0.113.2/24, secondary 203.0.113.10 = vm3's public IP, default route
//! via 203.0.113.1, a static route to 192.0.2.0/24) and instances of the
//! seed's picture linked to it, with frames of the uplink's side.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{EdgeLink, MacAddr, Snat, StaticRoute, Tier0, Uplink};
use datapath::{LocalHost, Pipeline, Tables};
use geneve::{ethernet, icmpv4, ipv4};

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

/// An echo reply frame from `src` to `dst` on the uplink, identifier `ident`.
pub fn echo_reply(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, ttl: u8) -> Vec<u8> {
    let mut f = icmp_echo(GW_MAC, UPLINK_MAC, src, dst, ttl, 32, true);
    let icmp = &mut f[34..];
    icmp[0] = icmpv4::TYPE_ECHO_REPLY;
    icmp[4..6].copy_from_slice(&ident.to_be_bytes());
    icmp[2..4].fill(0);
    let csum = geneve::checksum::fold(geneve::checksum::sum(icmp, 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    f
}

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
pub fn arp_reply(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = arp_request(mac, ip, UPLINK_IP);
    f[0..6].copy_from_slice(&UPLINK_MAC.0);
    f[14 + 7] = 2;
    f[14 + 18..14 + 24].copy_from_slice(&UPLINK_MAC.0);
    f
}

/// A TCP data segment (ACK) from vm1 to the internet host through its router.
pub fn tcp_out(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + len];
    ethernet::emit_header(&mut f, ROUTER_MAC.0, VM1.mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        VM1.ip,
        INTERNET,
        ipv4::PROTO_TCP,
        20 + len,
        64,
        true,
        1,
    )
    .unwrap();
    let tcp = &mut f[34..];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&7u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = geneve::tcp::ACK;
    tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
    let pseudo =
        geneve::checksum::pseudo_header_v4(VM1.ip, INTERNET, 6, u16::try_from(20 + len).unwrap());
    let c = geneve::checksum::fold(geneve::checksum::sum(tcp, pseudo));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}
