//! The switch's DHCP server on the local port (`layer::dhcp`): what a
//! client gets, when it is refused, and that no DHCP server can run behind
//! a port.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use control::{DhcpOptions, StaticRoute};
use datapath::{DropReason, LayerId, Pipeline, StepResult, Tables, TraceFrom, Verdict};
use geneve::dhcp::{self, MessageType, opt};
use geneve::{ethernet, ipv4, udp};

fn from_client(t: MessageType, options: &[(u8, &[u8])]) -> Vec<u8> {
    dhcp_client_frame(
        VM1.mac,
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
        (dhcp::CLIENT_PORT, dhcp::SERVER_PORT),
        t,
        Ipv4Addr::UNSPECIFIED,
        options,
    )
}

/// The one reply on the port, checked down to the BOOTP message.
fn reply(out: &datapath::Output) -> (Ipv4Addr, Vec<u8>) {
    assert_eq!(out.port.len(), 1, "one reply on the port");
    let (frame, _) = out.port.get(0).unwrap();
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!(eth.src(), ROUTER_MAC.0);
    let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src(), gw_web());
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum_v4(ip.src(), ip.dst()));
    assert_eq!((u.src_port(), u.dst_port()), (67, 68));
    (ip.dst(), u.payload().to_vec())
}

fn with_options(o: DhcpOptions) -> Pipeline {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.switches[0].dhcp = Some(o);
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

#[test]
fn discover_gets_an_offer_of_the_ports_address_with_every_option() {
    let mut p = with_options(DhcpOptions {
        dns_servers: vec![Ipv4Addr::new(10, 0, 0, 53)],
        domain_name: Some("corp.example".into()),
        lease_time: Some(600),
        routes: vec![StaticRoute {
            prefix: "10.20.0.0/16".parse().unwrap(),
            next_hop: Ipv4Addr::new(192, 168, 100, 254),
        }],
    });
    let mut out = output();
    let v = p.from_port(&from_client(MessageType::Discover, &[]), 1, &mut out);
    assert_eq!(v, Verdict::Replied);
    let (dst, m) = reply(&out);
    assert_eq!(dst, VM1.ip, "unicast to the address offered");
    let m = dhcp::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::Offer));
    assert_eq!(m.xid(), DHCP_XID);
    assert_eq!(m.yiaddr(), VM1.ip);
    assert_eq!(m.chaddr(), VM1.mac.0);
    assert_eq!(m.addr_option(opt::SERVER_ID), Some(gw_web()));
    assert_eq!(m.addr_option(opt::ROUTER), Some(gw_web()));
    assert_eq!(
        m.addr_option(opt::SUBNET_MASK),
        Some(Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(m.option(opt::LEASE_TIME), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(m.option(opt::MTU), Some(&1442u16.to_be_bytes()[..]));
    assert_eq!(m.addr_option(opt::DNS), Some(Ipv4Addr::new(10, 0, 0, 53)));
    assert_eq!(m.option(opt::DOMAIN), Some(&b"corp.example"[..]));
    assert!(m.option(opt::CLASSLESS_ROUTES).is_some());
    assert_eq!(p.counters().dhcp.discover, 1);
    assert_eq!(p.counters().dhcp.offer, 1);
}

#[test]
fn requests_for_the_ports_address_are_acked_others_naked() {
    let mut p = pipeline_for(VM1);
    let mut out = output();
    // SELECTING: requested address and our server id -> ACK, same options.
    let f = from_client(
        MessageType::Request,
        &[
            (opt::REQUESTED_IP, &VM1.ip.octets()),
            (opt::SERVER_ID, &gw_web().octets()),
        ],
    );
    assert_eq!(p.from_port(&f, 1, &mut out), Verdict::Replied);
    let (_, m) = reply(&out);
    let m = dhcp::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), VM1.ip);
    assert_eq!(
        m.option(opt::LEASE_TIME),
        Some(&DhcpOptions::DEFAULT_LEASE_SECS.to_be_bytes()[..])
    );
    assert_eq!(m.option(opt::MTU), Some(&1442u16.to_be_bytes()[..]));
    // RENEWING: unicast from the address, only ciaddr -> ACK to ciaddr.
    out.clear();
    let f = dhcp_client_frame(
        VM1.mac,
        (VM1.ip, gw_web()),
        (68, 67),
        MessageType::Request,
        VM1.ip,
        &[],
    );
    assert_eq!(p.from_port(&f, 1, &mut out), Verdict::Replied);
    let (dst, m) = reply(&out);
    assert_eq!(dst, VM1.ip);
    let m = dhcp::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::Ack));
    // INIT-REBOOT for a foreign address -> NAK, broadcast, no address.
    out.clear();
    let f = from_client(
        MessageType::Request,
        &[(opt::REQUESTED_IP, &[192, 168, 100, 77])],
    );
    assert_eq!(p.from_port(&f, 1, &mut out), Verdict::Replied);
    let (dst, m) = reply(&out);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    let m = dhcp::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.addr_option(opt::SERVER_ID), Some(gw_web()));
    assert!(m.option(opt::LEASE_TIME).is_none());
    // A request choosing another server: absorbed, nothing sent.
    out.clear();
    let f = from_client(
        MessageType::Request,
        &[
            (opt::REQUESTED_IP, &VM1.ip.octets()),
            (opt::SERVER_ID, &[192, 168, 100, 9]),
        ],
    );
    assert_eq!(p.from_port(&f, 1, &mut out), Verdict::Absorbed);
    assert!(out.port.is_empty());
    let c = p.counters().dhcp;
    assert_eq!((c.request, c.ack, c.nak), (4, 2, 1));
}

#[test]
fn inform_release_and_decline() {
    let mut p = pipeline_for(VM1);
    let mut out = output();
    let f = dhcp_client_frame(
        VM1.mac,
        (VM1.ip, Ipv4Addr::BROADCAST),
        (68, 67),
        MessageType::Inform,
        VM1.ip,
        &[],
    );
    assert_eq!(p.from_port(&f, 1, &mut out), Verdict::Replied);
    let (_, m) = reply(&out);
    let m = dhcp::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(
        m.option(opt::LEASE_TIME).is_none(),
        "no lease for an INFORM"
    );
    for t in [MessageType::Release, MessageType::Decline] {
        out.clear();
        assert_eq!(
            p.from_port(&from_client(t, &[]), 1, &mut out),
            Verdict::Absorbed
        );
        assert!(out.port.is_empty());
    }
}

#[test]
fn a_dhcp_server_behind_a_port_is_dropped_and_counted() {
    let mut p = pipeline_for(VM1);
    let mut out = output();
    let mut offer = dhcp_client_frame(
        VM1.mac,
        (VM1.ip, Ipv4Addr::BROADCAST),
        (dhcp::SERVER_PORT, dhcp::CLIENT_PORT),
        MessageType::Offer,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    offer[42] = dhcp::OP_REPLY;
    let v = p.from_port(&offer, 1, &mut out);
    assert_eq!(v, Verdict::Drop(DropReason::RogueDhcpServer));
    assert_eq!(p.counters().dropped(DropReason::RogueDhcpServer), 1);
    assert!(
        out.port.is_empty() && out.underlay.is_empty(),
        "never flooded"
    );
}

#[test]
fn only_dhcp_may_come_from_the_unspecified_address() {
    let mut p = pipeline_for(VM1);
    let mut out = output();
    // Another client's hardware address in the message: dropped.
    let f = dhcp_client_frame(
        VM1.mac,
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
        (68, 67),
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    let mut other = f.clone();
    other[42 + 28] ^= 0x01;
    assert_eq!(
        p.from_port(&other, 1, &mut out),
        Verdict::Drop(DropReason::Malformed)
    );
    // From 0.0.0.0 to another server than the switch's: it may not leave.
    let unicast = dhcp_client_frame(
        VM1.mac,
        (Ipv4Addr::UNSPECIFIED, VM3.ip),
        (68, 67),
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    assert_eq!(
        p.from_port(&unicast, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    assert!(out.underlay.is_empty());
    // TCP from 0.0.0.0 whose ports read 68 -> 67: not a DHCP client either.
    let mut tcp = f.clone();
    tcp[23] = ipv4::PROTO_TCP;
    tcp[24..26].copy_from_slice(&[0, 0]);
    let csum = geneve::checksum::fold(geneve::checksum::sum(&tcp[14..34], 0));
    tcp[24..26].copy_from_slice(&csum.to_be_bytes());
    assert_eq!(
        p.from_port(&tcp, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    // Not DHCP from 0.0.0.0 (UDP 68 -> 53): SpoofGuard drops it.
    let mut not_dhcp = f.clone();
    not_dhcp[36..38].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(
        p.from_port(&not_dhcp, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    // A truncated BOOTP message: counted as malformed, no reply.
    let mut short = f[..42 + 100].to_vec();
    let udp_len = u16::try_from(short.len() - 34).unwrap();
    short[38..40].copy_from_slice(&udp_len.to_be_bytes());
    let ip_len = u16::try_from(short.len() - 14).unwrap();
    short[16..18].copy_from_slice(&ip_len.to_be_bytes());
    short[24..26].copy_from_slice(&[0, 0]);
    let csum = geneve::checksum::fold(geneve::checksum::sum(&short[14..34], 0));
    short[24..26].copy_from_slice(&csum.to_be_bytes());
    assert_eq!(
        p.from_port(&short, 1, &mut out),
        Verdict::Drop(DropReason::Malformed)
    );
    assert!(out.port.is_empty());
}

#[test]
fn trace_explains_the_answer_and_the_rogue_drop() {
    let p = pipeline_for(VM1);
    let t = p.trace(TraceFrom::Port, &from_client(MessageType::Discover, &[]), 1);
    assert_eq!(t.verdict, Verdict::Replied);
    let step = &t.steps[1];
    assert_eq!((step.layer, step.result), (LayerId::Dhcp, StepResult::Done));
    assert_eq!(
        step.detail,
        "DHCPDISCOVER on ls-web (vni 0x238c): DHCPOFFER 192.168.100.3 sent to the port"
    );
    assert_eq!(t.outputs.len(), 1, "the OFFER, shown, not sent");
    assert_eq!(p.counters().dhcp.discover, 0, "tracing counts nothing");
    let mut offer = dhcp_client_frame(
        VM1.mac,
        (VM1.ip, Ipv4Addr::BROADCAST),
        (dhcp::SERVER_PORT, dhcp::CLIENT_PORT),
        MessageType::Offer,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    offer[42] = dhcp::OP_REPLY;
    let t = p.trace(TraceFrom::Port, &offer, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::RogueDhcpServer));
    assert_eq!(
        t.steps[1].detail,
        "DHCP server message (UDP 67 -> 68) from the port (192.168.100.3): drop (rogue_dhcp_server)"
    );
}
