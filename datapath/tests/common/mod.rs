//! Shared fixtures for the in-process pipeline tests: the seed's topology
//! (two switches joined by a distributed router, three instances) and
//! stand-ins for other endpoints, frame builders (ICMP echo and its reply,
//! ARP, one TCP builder with thin wrappers, DHCP), readers of what came out
//! (MACs, ports, checksums), and a way to carry an encapsulated packet from
//! one pipeline's underlay queue into another's input.

#![allow(dead_code, clippy::unwrap_used)]

pub mod edge;

use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr, RemotePort};
use datapath::{LocalHost, Output, Pipeline, Tables};
use geneve::dhcp::{self, MessageType, opt};
use geneve::{checksum, ethernet, icmpv4, ipv4, udp};

pub const ROUTER_MAC: MacAddr = MacAddr([0x02, 0x50, 0x56, 0x56, 0x44, 0x52]);
pub const VNI_WEB: u32 = 0x238c;
pub const VNI_APP: u32 = 0x2388;

/// One instance of the seed's picture.
#[derive(Debug, Clone, Copy)]
pub struct Vm {
    pub name: &'static str,
    pub underlay: Ipv4Addr,
    pub tep_id: u32,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub switch: &'static str,
}

pub const VM1: Vm = Vm {
    name: "vm1",
    underlay: Ipv4Addr::new(10, 99, 3, 248),
    tep_id: 248,
    mac: MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x3a]),
    ip: Ipv4Addr::new(192, 168, 100, 3),
    switch: "ls-web",
};
pub const VM2: Vm = Vm {
    name: "vm2",
    underlay: Ipv4Addr::new(10, 99, 3, 251),
    tep_id: 251,
    mac: MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x09]),
    ip: Ipv4Addr::new(192, 168, 99, 9),
    switch: "ls-app",
};
pub const VM3: Vm = Vm {
    name: "vm3",
    underlay: Ipv4Addr::new(10, 99, 3, 44),
    tep_id: 44,
    mac: MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x44]),
    ip: Ipv4Addr::new(192, 168, 100, 4),
    switch: "ls-web",
};
pub const ALL: [Vm; 3] = [VM1, VM2, VM3];

/// A frame's far end that is no instance of the seed: address `ip` behind
/// `mac` (the router's for a virtual server or anything routed, a host's
/// on the uplink or the underlay). Only its MAC and address mean anything.
pub const fn endpoint(mac: MacAddr, ip: Ipv4Addr) -> Vm {
    Vm {
        name: "endpoint",
        underlay: Ipv4Addr::UNSPECIFIED,
        tep_id: 0,
        mac,
        ip,
        switch: "",
    }
}

/// The VNI of `vm`'s switch.
pub fn vni_of(vm: Vm) -> u32 {
    match vm.switch {
        "ls-web" => VNI_WEB,
        "ls-app" => VNI_APP,
        other => panic!("{}: no switch of the seed ({other:?})", vm.name),
    }
}

pub fn gw_web() -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, 1)
}

pub fn config_for(me: Vm, underlay_mtu: u16) -> (InstanceConfig, LocalHost) {
    let cfg = InstanceConfig {
        version: 7,
        tep_id: me.tep_id,
        switches: vec![
            LogicalSwitch {
                name: "ls-web".into(),
                vni: VNI_WEB,
                subnet: "192.168.100.0/24".parse().unwrap(),
                gateway_ip: gw_web(),
                dhcp: None,
            },
            LogicalSwitch {
                name: "ls-app".into(),
                vni: VNI_APP,
                subnet: "192.168.99.0/24".parse().unwrap(),
                gateway_ip: "192.168.99.1".parse().unwrap(),
                dhcp: None,
            },
        ],
        routers: vec![LogicalRouter {
            name: "t1".into(),
            mac: ROUTER_MAC,
            switches: vec!["ls-web".into(), "ls-app".into()],
            routes: vec![],
        }],
        port: Some(LocalPort {
            switch: me.switch.into(),
            ip: me.ip,
            mac: None,
        }),
        remote_ports: ALL
            .iter()
            .filter(|v| v.name != me.name)
            .map(|v| RemotePort {
                switch: v.switch.into(),
                ip: v.ip,
                mac: v.mac,
                tep_ip: v.underlay,
                tep_id: v.tep_id,
            })
            .collect(),
        ..InstanceConfig::default()
    };
    let host = LocalHost {
        underlay_ip: me.underlay,
        port_mac: me.mac,
        overlay_mtu: underlay_mtu - u16::try_from(geneve::outer::MTU_OVERHEAD).unwrap(),
        kernel_udp: false,
        underlay_prefix_len: 24,
        underlay_mac: me.mac,
    };
    (cfg, host)
}

pub fn pipeline_for(me: Vm) -> Pipeline {
    let (cfg, host) = config_for(me, 1500);
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

pub fn output() -> Output {
    Output::new(256, 9216)
}

/// The identifier of every [`icmp_echo`] request.
pub const ECHO_IDENT: u16 = 7079;

/// An Ethernet + IPv4 + ICMP echo request frame with `payload` data bytes,
/// identifier [`ECHO_IDENT`].
pub fn icmp_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload: usize,
    df: bool,
) -> Vec<u8> {
    let icmp_len = 8 + payload;
    let mut f = vec![0u8; 14 + 20 + icmp_len];
    ethernet::emit_header(&mut f, dst_mac.0, src_mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_ICMP,
        icmp_len,
        ttl,
        df,
        0x1234,
    )
    .unwrap();
    let icmp = &mut f[34..];
    icmp[0] = icmpv4::TYPE_ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&ECHO_IDENT.to_be_bytes());
    icmp[6..8].copy_from_slice(&938u16.to_be_bytes());
    for (i, b) in icmp[8..].iter_mut().enumerate() {
        *b = low_byte(i);
    }
    let csum = checksum::fold(checksum::sum(icmp, 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    f
}

/// The echo reply to `request` (an Ethernet + IPv4 + ICMP echo request
/// frame) from `src_mac` to `dst_mac`: addresses swapped, TTL `ttl`,
/// identifier, sequence number and data kept, checksums computed.
pub fn echo_reply_of(request: &[u8], (src_mac, dst_mac): (MacAddr, MacAddr), ttl: u8) -> Vec<u8> {
    let mut f = request.to_vec();
    ethernet::emit_header(&mut f, dst_mac.0, src_mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    let mut ip = ipv4::Packet::new_checked(&mut f[ethernet::HEADER_LEN..]).unwrap();
    assert_eq!(ip.protocol(), ipv4::PROTO_ICMP, "not ICMP");
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(ttl);
    ip.fill_checksum();
    let icmp = ip.payload_mut();
    assert_eq!(icmp[0], icmpv4::TYPE_ECHO_REQUEST, "not an echo request");
    icmp[0] = icmpv4::TYPE_ECHO_REPLY;
    icmp[2..4].fill(0);
    let csum = checksum::fold(checksum::sum(icmp, 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    f
}

/// An ARP request frame.
pub fn arp_request(src_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    ethernet::emit_header(&mut f, [0xff; 6], src_mac.0, ethernet::ETHERTYPE_ARP).unwrap();
    let a = &mut f[14..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&1u16.to_be_bytes());
    a[8..14].copy_from_slice(&src_mac.0);
    a[14..18].copy_from_slice(&sender_ip.octets());
    a[24..28].copy_from_slice(&target_ip.octets());
    f
}

/// An ARP reply from `sender` (MAC, address) to `target`, unicast.
pub fn arp_reply(sender: (MacAddr, Ipv4Addr), target: (MacAddr, Ipv4Addr)) -> Vec<u8> {
    let mut f = arp_request(sender.0, sender.1, target.1);
    f[0..6].copy_from_slice(&target.0.0);
    f[14 + 7] = 2;
    f[14 + 18..14 + 24].copy_from_slice(&target.0.0);
    f
}

/// An Ethernet frame's (destination, source) MACs.
pub fn macs(frame: &[u8]) -> (MacAddr, MacAddr) {
    let e = ethernet::Frame::new_checked(frame).unwrap();
    (MacAddr(e.dst()), MacAddr(e.src()))
}

/// An IPv4 packet's TCP or UDP (source, destination) ports.
pub fn ports(ip_pkt: &[u8]) -> (u16, u16) {
    let ip = ipv4::Packet::new_checked(ip_pkt).unwrap();
    let l4 = ip.payload();
    (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

/// Whether an IPv4 packet's header checksum and its TCP or UDP checksum
/// (over the pseudo header) hold; a UDP checksum of zero is none sent.
pub fn checksums_ok(ip_pkt: &[u8]) -> bool {
    let ip = ipv4::Packet::new_checked(ip_pkt).unwrap();
    let proto = ip.protocol();
    assert!(
        proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP,
        "protocol {proto}: not TCP or UDP"
    );
    let l4 = ip.payload();
    if proto == ipv4::PROTO_UDP && l4[6..8] == [0, 0] {
        return ip.verify_checksum();
    }
    let pseudo =
        checksum::pseudo_header_v4(ip.src(), ip.dst(), proto, u16::try_from(l4.len()).unwrap());
    ip.verify_checksum() && checksum::fold(checksum::sum(l4, pseudo)) == 0
}

/// Splits an outer IPv4/UDP packet from an underlay queue into (source, UDP payload).
pub fn strip_outer(pkt: &[u8]) -> (Ipv4Addr, &[u8]) {
    let ip = ipv4::Packet::new_checked(pkt).unwrap();
    (ip.src(), &pkt[28..])
}

/// Moves everything `from` queued for the underlay into `to`, as if over the wire.
pub fn carry(from: &mut Output, to: &mut Pipeline, to_out: &mut Output, dst: Ipv4Addr) -> usize {
    let mut n = 0;
    for (pkt, d) in from.underlay.iter() {
        if d == dst {
            let (src, payload) = strip_outer(pkt);
            to.from_underlay(src, payload, 1, to_out);
            n += 1;
        }
    }
    from.underlay.clear();
    n
}

/// A Geneve UDP payload (as the receiving socket sees it) from `src` to vm1.
pub fn geneve_from(src: &Vm, vni: u32, tep_id: u32, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; geneve::outer::OVERHEAD + inner.len()];
    buf[geneve::outer::OVERHEAD..].copy_from_slice(inner);
    let e = geneve::outer::Encap {
        src: src.underlay,
        dst: VM1.underlay,
        src_port: 50000,
        vni,
        tep_id,
    };
    geneve::outer::emit(&mut buf, &e, inner.len()).unwrap();
    buf[28..].to_vec()
}

/// A TCP super-frame as TSO hands it over: one header, `payload` bytes
/// from vm1 to vm2 (through the router), the TCP checksum left partial
/// (pseudo-header sum only).
pub fn tcp_super_frame(payload: usize) -> Vec<u8> {
    let seg = Seg {
        ports: (40000, 5201),
        seq: 77,
        ack: 0,
        flags: 0x18,
        window: 512,
        len: payload,
    };
    let mut f = tcp_frame(VM1, endpoint(ROUTER_MAC, VM2.ip), seg);
    let pseudo =
        checksum::pseudo_header_v4(VM1.ip, VM2.ip, 6, u16::try_from(20 + payload).unwrap());
    let partial = !checksum::fold(pseudo);
    f[34 + 16..34 + 18].copy_from_slice(&partial.to_be_bytes());
    f
}

pub fn vnet_hdr(gso_size: u16) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = 1; // needs csum
    h[1] = 1; // TCPv4
    h[4..6].copy_from_slice(&gso_size.to_ne_bytes());
    h[6..8].copy_from_slice(&34u16.to_ne_bytes());
    h[8..10].copy_from_slice(&16u16.to_ne_bytes());
    h
}

/// A TCP segment from vm3 to vm1 with `len` payload bytes at `seq`.
pub fn tcp_segment(seq: u32, len: usize, flags: u8) -> Vec<u8> {
    let seg = Seg {
        ports: (5201, 40000),
        seq,
        ack: 99,
        flags,
        window: 512,
        len,
    };
    tcp_frame(VM3, VM1, seg)
}

/// Default reject (rule 1002); with `allow_ssh`, rule 1006 accepts tcp/22
/// from vm3 to vm1. `log` sets both rules' log flag.
pub fn ssh_policy(allow_ssh: bool, log: bool) -> control::FirewallConfig {
    use control::{
        Action, AddrRef, DefaultRule, FirewallConfig, PortRange, Protocol, Rule, RuleSet, Service,
    };
    let mut rules = Vec::new();
    if allow_ssh {
        rules.push(Rule {
            id: 1006,
            direction: control::Direction::InOut,
            sources: vec![AddrRef::Net(ipnet::IpNet::from(std::net::IpAddr::V4(
                VM3.ip,
            )))],
            destinations: vec![AddrRef::Net(ipnet::IpNet::from(std::net::IpAddr::V4(
                VM1.ip,
            )))],
            services: vec![Service {
                port: Some(PortRange::single(22)),
                ..Service::any_of(Protocol::Number(6))
            }],
            action: Action::Accept,
            log,
        });
    }
    FirewallConfig {
        rulesets: vec![RuleSet {
            name: "domain-c25".into(),
            rules,
        }],
        default_rule: DefaultRule {
            id: 1002,
            action: Action::Reject,
            log,
        },
        ..FirewallConfig::allow_all()
    }
}

/// A TCP segment from `from` to `to` (window 65535).
#[allow(clippy::too_many_arguments)]
pub fn tcp_between(
    from: Vm,
    to: Vm,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    len: usize,
) -> Vec<u8> {
    let seg = Seg {
        ports: (sport, dport),
        seq,
        ack,
        flags,
        window: 65535,
        len,
    };
    tcp_frame(from, to, seg)
}

/// The TCP header fields and data length of [`tcp_frame`]'s segment.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    /// (source, destination).
    pub ports: (u16, u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Data bytes, `low_byte(seq + i)` each: a byte's value follows its
    /// place in the stream.
    pub len: usize,
}

/// An Ethernet + IPv4 + TCP frame from `from` to `to` (their MACs and
/// addresses; DF, TTL 64) carrying `seg`, its checksums complete.
pub fn tcp_frame(from: Vm, to: Vm, seg: Seg) -> Vec<u8> {
    let l4_len = 20 + seg.len;
    let mut f = vec![0u8; 14 + 20 + l4_len];
    ethernet::emit_header(&mut f, to.mac.0, from.mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        from.ip,
        to.ip,
        ipv4::PROTO_TCP,
        l4_len,
        64,
        true,
        1,
    )
    .unwrap();
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&seg.ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&seg.ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    t[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = seg.flags;
    t[14..16].copy_from_slice(&seg.window.to_be_bytes());
    let seq = usize::try_from(seg.seq).unwrap();
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = low_byte(seq + i);
    }
    let pseudo = checksum::pseudo_header_v4(
        from.ip,
        to.ip,
        ipv4::PROTO_TCP,
        u16::try_from(l4_len).unwrap(),
    );
    let csum = checksum::fold(checksum::sum(t, pseudo));
    t[16..18].copy_from_slice(&csum.to_be_bytes());
    f
}

/// The low byte of `n`: payload patterns that wrap every 256 bytes.
pub fn low_byte(n: usize) -> u8 {
    n.to_le_bytes()[0]
}

/// The transaction id of [`dhcp_client_frame`].
pub const DHCP_XID: u32 = 0x5eed_1234;

/// A client's DHCP message as an Ethernet frame from `mac`, from `src` to
/// `dst` (UDP `ports`), with `options` after the message type.
pub fn dhcp_client_frame(
    mac: control::MacAddr,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ports: (u16, u16),
    t: MessageType,
    ciaddr: Ipv4Addr,
    options: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut m = vec![0u8; dhcp::MIN_LEN];
    m[0] = dhcp::OP_REQUEST;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&DHCP_XID.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&mac.0);
    m[236..240].copy_from_slice(&dhcp::COOKIE);
    m.extend_from_slice(&[opt::MESSAGE_TYPE, 1, t.code()]);
    for (code, data) in options {
        m.push(*code);
        m.push(u8::try_from(data.len()).unwrap());
        m.extend_from_slice(data);
    }
    m.push(opt::END);
    let mut f = vec![0u8; 14 + 20 + 8 + m.len()];
    let dst_mac = if dst == Ipv4Addr::BROADCAST {
        [0xff; 6]
    } else {
        ROUTER_MAC.0
    };
    ethernet::emit_header(&mut f, dst_mac, mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_UDP,
        8 + m.len(),
        64,
        false,
        1,
    )
    .unwrap();
    udp::emit_header(&mut f[34..], ports.0, ports.1, m.len()).unwrap();
    f[42..].copy_from_slice(&m);
    f
}
