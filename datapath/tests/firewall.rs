//! The firewall layer inside the pipeline: two instances of the seed's
//! topology with a default-reject policy and one allow rule, frames carried
//! between their pipelines in memory. Checks what reaches each port, the
//! answers a reject produces (a RST to the local instance, or one sent back
//! through the overlay to a remote sender), related ICMP errors, and rule
//! changes cutting an established connection.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use control::{Action, FirewallConfig, Protocol, Rule, Service};
use datapath::{DropReason, Output, Pipeline, Tables, Verdict};
use geneve::{checksum, ethernet, icmpv4, ipv4};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

fn pipeline(me: Vm, fw: Option<FirewallConfig>) -> Pipeline {
    let (mut cfg, host) = config_for(me, 1500);
    cfg.firewall = fw;
    Pipeline::with_flow_capacity(Arc::new(Tables::build(&cfg, host).unwrap()), 1024)
}

fn retable(p: &mut Pipeline, me: Vm, fw: Option<FirewallConfig>) {
    let (mut cfg, host) = config_for(me, 1500);
    cfg.firewall = fw;
    p.set_tables(Arc::new(Tables::build(&cfg, host).unwrap()));
}

fn udp(from: Vm, to: Vm, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    ethernet::emit_header(&mut f, to.mac.0, from.mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        from.ip,
        to.ip,
        ipv4::PROTO_UDP,
        12,
        64,
        true,
        2,
    )
    .unwrap();
    let u = &mut f[34..];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    f
}

/// The TCP flags and seq/ack of the frame in `out.port` slot `i`.
fn port_tcp(out: &Output, i: usize) -> (u8, u32, u32, Ipv4Addr, Ipv4Addr) {
    let (f, _) = out.port.get(i).unwrap();
    let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    let t = ip.payload();
    let sum = checksum::sum(
        t,
        checksum::pseudo_header_v4(ip.src(), ip.dst(), 6, u16::try_from(t.len()).unwrap()),
    );
    assert_eq!(checksum::fold(sum), 0, "TCP checksum of the answer");
    (
        t[13],
        u32::from_be_bytes(t[4..8].try_into().unwrap()),
        u32::from_be_bytes(t[8..12].try_into().unwrap()),
        ip.src(),
        ip.dst(),
    )
}

#[test]
fn allowed_connection_flows_both_ways_and_others_are_refused() {
    let mut a = pipeline(VM1, Some(ssh_policy(true, true)));
    let mut c = pipeline(VM3, Some(ssh_policy(true, true)));
    let (mut out_a, mut out_c) = (output(), output());

    // vm3 -> vm1:22 SYN: allowed out of vm3, allowed into vm1.
    let syn = tcp_between(VM3, VM1, 40000, 22, SYN, 1000, 0, 0);
    assert_eq!(
        c.from_port(&syn, 1, &mut out_c),
        Verdict::Encapsulated { copies: 1 }
    );
    assert_eq!(carry(&mut out_c, &mut a, &mut out_a, VM1.underlay), 1);
    assert_eq!(out_a.port.len(), 1, "SYN delivered to vm1");
    out_a.port.clear();
    // The reply needs no rule: it matches the connection.
    let synack = tcp_between(VM1, VM3, 22, 40000, SYN | ACK, 5000, 1001, 0);
    assert_eq!(
        a.from_port(&synack, 2, &mut out_a),
        Verdict::Encapsulated { copies: 1 }
    );
    assert_eq!(carry(&mut out_a, &mut c, &mut out_c, VM3.underlay), 1);
    assert_eq!(out_c.port.len(), 1, "SYN-ACK delivered to vm3");
    out_c.port.clear();
    let ack = tcp_between(VM3, VM1, 40000, 22, ACK | PSH, 1001, 5001, 100);
    assert!(!c.from_port(&ack, 3, &mut out_c).is_drop());
    carry(&mut out_c, &mut a, &mut out_a, VM1.underlay);
    assert_eq!(out_a.port.len(), 1);
    out_a.port.clear();
    let fw = a.firewall().unwrap();
    assert_eq!(fw.conntrack().len(), 1);
    assert!(fw.counters().fast_path >= 2);

    // vm3 -> vm1:23: rejected by vm3's own firewall, a RST comes straight back.
    let syn23 = tcp_between(VM3, VM1, 40001, 23, SYN, 7000, 0, 0);
    assert_eq!(
        c.from_port(&syn23, 4, &mut out_c),
        Verdict::Drop(DropReason::Firewall)
    );
    assert!(out_c.underlay.is_empty(), "nothing leaves vm3");
    let (flags, seq, ackn, src, dst) = port_tcp(&out_c, 0);
    assert_eq!((flags, seq, ackn), (RST | ACK, 0, 7001));
    assert_eq!(
        (src, dst),
        (VM1.ip, VM3.ip),
        "the RST seems to come from vm1"
    );
    out_c.port.clear();

    // vm1 -> vm3:22 is not the allowed direction.
    let rev = tcp_between(VM1, VM3, 40002, 22, SYN, 1, 0, 0);
    assert_eq!(
        a.from_port(&rev, 5, &mut out_a),
        Verdict::Drop(DropReason::Firewall)
    );
    assert_eq!(out_a.port.len(), 1, "RST to vm1");
}

#[test]
fn ingress_reject_is_answered_through_the_overlay() {
    // vm3 has no firewall; vm1 rejects everything but ssh.
    let mut a = pipeline(VM1, Some(ssh_policy(true, true)));
    let mut c = pipeline(VM3, None);
    let (mut out_a, mut out_c) = (output(), output());
    let syn = tcp_between(VM3, VM1, 40000, 80, SYN, 42, 0, 0);
    assert!(!c.from_port(&syn, 1, &mut out_c).is_drop());
    carry(&mut out_c, &mut a, &mut out_a, VM1.underlay);
    assert!(out_a.port.is_empty(), "not delivered to vm1");
    assert_eq!(out_a.underlay.len(), 1, "RST encapsulated back to vm3");
    assert_eq!(carry(&mut out_a, &mut c, &mut out_c, VM3.underlay), 1);
    let (flags, _, ackn, src, dst) = port_tcp(&out_c, 0);
    assert_eq!((flags, ackn, src, dst), (RST | ACK, 43, VM1.ip, VM3.ip));
    out_c.port.clear();

    // A rejected UDP datagram gets ICMP port unreachable, quoting it.
    let dgram = udp(VM3, VM1, 5353, 9999);
    c.from_port(&dgram, 2, &mut out_c);
    carry(&mut out_c, &mut a, &mut out_a, VM1.underlay);
    carry(&mut out_a, &mut c, &mut out_c, VM3.underlay);
    let (f, _) = out_c.port.get(0).unwrap();
    let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
    assert_eq!(ip.protocol(), ipv4::PROTO_ICMP);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 3));
    assert!(icmp.verify_checksum());
    assert_eq!(&icmp.data()[..28], &dgram[14..42], "quotes the datagram");
}

#[test]
fn icmp_errors_pass_only_when_related() {
    let mut a = pipeline(VM1, Some(ssh_policy(true, true)));
    let mut out = output();
    // vm1 has a connection to vm3:22? No: make one from vm3 -> vm1:22 arrive.
    let syn = tcp_between(VM3, VM1, 40000, 22, SYN, 1000, 0, 0);
    a.from_underlay(
        VM3.underlay,
        &geneve_from(&VM3, VNI_WEB, VM3.tep_id, &syn),
        1,
        &mut out,
    );
    assert_eq!(out.port.len(), 1);
    out.port.clear();
    // An ICMP unreachable from vm3 about vm1's reply (vm1:22 -> vm3:40000) is related.
    let reply = tcp_between(VM1, VM3, 22, 40000, SYN | ACK, 9, 1001, 0);
    let err = icmp_error_about(VM3, VM1, &reply);
    a.from_underlay(
        VM3.underlay,
        &geneve_from(&VM3, VNI_WEB, VM3.tep_id, &err),
        2,
        &mut out,
    );
    assert_eq!(out.port.len(), 1, "related ICMP error delivered");
    out.port.clear();
    // The same error about a connection that does not exist is dropped.
    let other = tcp_between(VM1, VM3, 22, 41000, SYN | ACK, 9, 1001, 0);
    let err = icmp_error_about(VM3, VM1, &other);
    let v = a.from_underlay(
        VM3.underlay,
        &geneve_from(&VM3, VNI_WEB, VM3.tep_id, &err),
        3,
        &mut out,
    );
    assert_eq!(v, Verdict::Drop(DropReason::Firewall));
    assert_eq!(
        a.firewall().unwrap().counters().drops[firewall::FwDrop::UnsolicitedIcmpError as usize],
        1
    );
}

/// An ICMP port unreachable from `from` to `to` quoting `offending` (sent by `to`).
fn icmp_error_about(from: Vm, to: Vm, offending: &[u8]) -> Vec<u8> {
    let quote = &offending[14..14 + 28];
    let mut f = vec![0u8; 14 + 20 + 8 + quote.len()];
    ethernet::emit_header(&mut f, to.mac.0, from.mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        from.ip,
        to.ip,
        ipv4::PROTO_ICMP,
        8 + quote.len(),
        64,
        false,
        3,
    )
    .unwrap();
    let icmp = &mut f[34..];
    icmp[0] = 3;
    icmp[1] = 3;
    icmp[8..].copy_from_slice(quote);
    let csum = checksum::fold(checksum::sum(icmp, 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    f
}

#[test]
fn narrowing_a_rule_cuts_a_live_connection_and_widening_does_not() {
    let mut a = pipeline(VM1, Some(ssh_policy(true, true)));
    let mut out = output();
    let deliver = |a: &mut Pipeline, out: &mut Output, f: &[u8], now: u64| {
        a.from_underlay(
            VM3.underlay,
            &geneve_from(&VM3, VNI_WEB, VM3.tep_id, f),
            now,
            out,
        )
    };
    deliver(
        &mut a,
        &mut out,
        &tcp_between(VM3, VM1, 40000, 22, SYN, 1000, 0, 0),
        1,
    );
    assert!(
        !a.from_port(
            &tcp_between(VM1, VM3, 22, 40000, SYN | ACK, 5000, 1001, 0),
            2,
            &mut out
        )
        .is_drop()
    );
    deliver(
        &mut a,
        &mut out,
        &tcp_between(VM3, VM1, 40000, 22, ACK, 1001, 5001, 0),
        3,
    );
    out.clear();

    // Widening (an extra rule) keeps the connection.
    let mut wide = ssh_policy(true, true);
    wide.rulesets[0].rules.push(Rule {
        id: 1007,
        direction: control::Direction::InOut,
        sources: vec![],
        destinations: vec![],
        services: vec![Service::any_of(Protocol::Number(17))],
        action: Action::Accept,
        log: false,
    });
    retable(&mut a, VM1, Some(wide));
    assert_eq!(a.firewall().unwrap().conntrack().len(), 1);
    let v = deliver(
        &mut a,
        &mut out,
        &tcp_between(VM3, VM1, 40000, 22, ACK | PSH, 1001, 5001, 10),
        4,
    );
    assert_eq!(v, Verdict::Delivered);

    // Narrowing (ssh no longer allowed) removes it: the next segment is
    // answered with a RST sent back toward vm3.
    retable(&mut a, VM1, Some(ssh_policy(false, true)));
    assert_eq!(a.firewall().unwrap().conntrack().len(), 0);
    out.clear();
    let v = deliver(
        &mut a,
        &mut out,
        &tcp_between(VM3, VM1, 40000, 22, ACK | PSH, 1011, 5001, 10),
        5,
    );
    assert_eq!(v, Verdict::Drop(DropReason::Firewall));
    assert_eq!(out.underlay.len(), 1, "RST on its way back to vm3");
    // Turning the firewall off passes everything again.
    retable(&mut a, VM1, None);
    assert!(a.firewall().is_none());
}

#[test]
fn arp_is_never_filtered() {
    let mut a = pipeline(VM1, Some(ssh_policy(false, true)));
    let mut out = output();
    let req = arp_request(VM1.mac, VM1.ip, gw_web());
    assert_eq!(a.from_port(&req, 1, &mut out), Verdict::Replied);
}

#[test]
fn a_port_that_changes_takes_its_connections_along() {
    let mut a = pipeline(VM1, Some(ssh_policy(true, true)));
    let mut out = output();
    let syn = tcp_between(VM3, VM1, 40000, 22, SYN, 1000, 0, 0);
    a.from_underlay(
        VM3.underlay,
        &geneve_from(&VM3, VNI_WEB, VM3.tep_id, &syn),
        1,
        &mut out,
    );
    assert_eq!(a.firewall().unwrap().conntrack().len(), 1);
    // Same port: a rule-only change keeps the connection.
    retable(&mut a, VM1, Some(ssh_policy(true, true)));
    assert_eq!(a.firewall().unwrap().conntrack().len(), 1);
    // The port moves to another address: its connections go.
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.firewall = Some(ssh_policy(true, true));
    if let Some(p) = cfg.port.as_mut() {
        p.ip = "192.168.100.30".parse().unwrap();
    }
    a.set_tables(Arc::new(Tables::build(&cfg, host).unwrap()));
    assert_eq!(a.firewall().unwrap().conntrack().len(), 0);
}
