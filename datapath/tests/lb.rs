//! The load balancer in the pipeline, at the sending agent: a client's
//! ARP for a virtual address is answered with the router's MAC, its SYN
//! leaves for the real server with the destination rewritten (checksums
//! valid), the real server's answer comes back with the virtual server's
//! address, persistence keeps the client on its server, a segment that
//! opens nothing is a counted drop, and `trace` names the decision.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use control::lb::{LbProtocol, LbService, RealServer, Scheduler, VirtualServer};
use datapath::trace::TraceFrom;
use datapath::{DropReason, LayerId, Pipeline, Tables, Verdict};
use geneve::{ethernet, ipv4};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 50);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn service() -> LbService {
    let rs = |vm: Vm| RealServer::new(vm.ip, 8080);
    LbService {
        vs: VirtualServer {
            persistence_timeout: Some(10),
            real_servers: vec![rs(VM2), rs(VM3)],
            ..VirtualServer::new(VIP, 80, LbProtocol::Tcp, Scheduler::Rr)
        },
        live: vec![],
    }
}

fn balancing(me: Vm) -> Pipeline {
    let (mut cfg, host) = config_for(me, 1500);
    cfg.load_balancers = vec![service()];
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

/// The virtual server as a frame's peer: behind the router's MAC.
const VIP_PEER: Vm = endpoint(ROUTER_MAC, VIP);

/// vm1 opens a connection from `sport`; returns the real server it went
/// to (the inner packet, as it left).
fn syn(p: &mut Pipeline, sport: u16, now: u64) -> (Vm, Vec<u8>) {
    let mut out = output();
    let f = tcp_between(VM1, VIP_PEER, sport, 80, SYN, 1, 0, 0);
    let v = p.from_port(&f, now, &mut out);
    assert_eq!(v, Verdict::Encapsulated { copies: 1 });
    let (pkt, dst) = out.underlay.iter().next().unwrap();
    let to = [VM2, VM3]
        .into_iter()
        .find(|vm| vm.underlay == dst)
        .unwrap();
    let inner = &strip_outer(pkt).1[geneve::outer::OVERHEAD - 28..];
    let ip = inner[ethernet::HEADER_LEN..].to_vec();
    (to, ip)
}

#[test]
fn arp_for_the_virtual_address_is_answered_with_the_routers_mac() {
    let mut p = balancing(VM1);
    let mut out = output();
    let v = p.from_port(&arp_request(VM1.mac, VM1.ip, VIP), 1, &mut out);
    assert_eq!(v, Verdict::Replied);
    let (reply, _) = out.port.iter().next().unwrap();
    assert_eq!(&reply[22..28], &ROUTER_MAC.0, "sender MAC: the router's");
    // Without the virtual server nobody owns it.
    let mut plain = pipeline_for(VM1);
    let v = plain.from_port(&arp_request(VM1.mac, VM1.ip, VIP), 1, &mut out);
    assert_eq!(v, Verdict::Drop(DropReason::ArpUnknownTarget));
}

#[test]
fn a_connection_goes_to_a_real_server_and_its_answers_come_back_from_the_vip() {
    let mut p = balancing(VM1);
    let (to, ip) = syn(&mut p, 40000, 1);
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(pkt.dst(), to.ip, "destination: the real server");
    assert_eq!(pkt.src(), VM1.ip, "NAT mode: the client's own address");
    assert_eq!(ports(&ip), (40000, 8080));
    assert_eq!(pkt.ttl(), 63, "routed once");
    assert!(checksums_ok(&ip), "checksums updated");

    // The real server answers vm1 directly; vm1's agent gives the answer
    // the virtual server's address back.
    let ip = answer(&mut p, to, 40000, SYN | ACK, 2).expect("delivered");
    let pkt = ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!(pkt.src(), VIP);
    assert_eq!(ports(&ip), (80, 40000));
    assert!(checksums_ok(&ip));
    assert_eq!(p.counters().layers[LayerId::Lb as usize].seen, 2);
}

#[test]
fn persistence_keeps_the_client_on_its_server_and_rr_moves_on_after_it() {
    let mut p = balancing(VM1);
    let (first, _) = syn(&mut p, 40000, 1);
    for sport in 40001..40005 {
        assert_eq!(syn(&mut p, sport, 2).0.name, first.name, "persistent");
    }
    // A minute later (the connections idle out of SYN_RECV, the template
    // 10 s after them), the scheduler picks again: rr's next server.
    let later = 200_000_000_000;
    p.tick(later);
    p.tick(later + 1);
    let (next, _) = syn(&mut p, 41000, later + 2);
    assert_ne!(next.name, first.name, "rotated");
}

#[test]
fn a_segment_that_opens_nothing_is_a_counted_drop() {
    let mut p = balancing(VM1);
    let mut out = output();
    let f = tcp_between(VM1, VIP_PEER, 40000, 80, ACK, 1, 1, 0);
    let v = p.from_port(&f, 1, &mut out);
    assert_eq!(v, Verdict::Drop(DropReason::LbNoConnection));
    assert_eq!(p.counters().drops[DropReason::LbNoConnection as usize], 1);
    // Traffic not to the virtual address is not the balancer's.
    let f = tcp_between(VM1, VM3, 40000, 80, ACK, 1, 1, 0);
    assert_eq!(
        p.from_port(&f, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
}

#[test]
fn trace_names_the_scheduling_decision() {
    let p = balancing(VM1);
    let f = tcp_between(VM1, VIP_PEER, 40000, 80, SYN, 1, 0, 0);
    let t = p.trace(TraceFrom::Port, &f, 1);
    let lb = t
        .steps
        .iter()
        .find(|s| s.layer == LayerId::Lb)
        .expect("an lb step");
    assert!(lb.detail.contains("rr"), "{}", lb.detail);
    assert!(lb.detail.contains("192.168.100.50:80"), "{}", lb.detail);
    assert_eq!(t.verdict, Verdict::Encapsulated { copies: 1 });
    // The trace changed nothing.
    assert_eq!(p.lb().unwrap().engine().len(), 0);
}

/// The real server's answer (TCP `flags`) to vm1's connection from
/// `sport`, as vm1's agent receives it: the IPv4 packet delivered to the
/// port, if it was.
fn answer(p: &mut Pipeline, to: Vm, sport: u16, flags: u8, now: u64) -> Option<Vec<u8>> {
    // Routed by its agent when it is on the other switch: from the router's MAC.
    let sender = if to.switch == VM1.switch {
        to
    } else {
        Vm {
            mac: ROUTER_MAC,
            ..to
        }
    };
    let mut out = output();
    let f = tcp_between(sender, VM1, 8080, sport, flags, 9, 2, 0);
    let from = geneve_from(&to, VNI_WEB, to.tep_id, &f);
    if p.from_underlay(to.underlay, &from, now, &mut out) != Verdict::Delivered {
        return None;
    }
    let (frame, _) = out.port.iter().next()?;
    Some(frame[ethernet::HEADER_LEN..].to_vec())
}

#[test]
fn removing_the_virtual_server_keeps_its_connections_until_they_end() {
    let mut p = balancing(VM1);
    let (to, _) = syn(&mut p, 40000, 1);
    // The whole virtual server goes away in a reload.
    let (cfg, host) = config_for(VM1, 1500);
    p.set_tables(Arc::new(Tables::build(&cfg, host).unwrap()));
    // The connection's packets still find it, both ways.
    let mut out = output();
    let f = tcp_between(VM1, VIP_PEER, 40000, 80, ACK, 2, 10, 0);
    assert_eq!(
        p.from_port(&f, 2, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    let (pkt, _) = out.underlay.iter().next().unwrap();
    let inner = &strip_outer(pkt).1[geneve::outer::OVERHEAD - 28 + ethernet::HEADER_LEN..];
    assert_eq!(ipv4::Packet::new_checked(inner).unwrap().dst(), to.ip);
    let ip = answer(&mut p, to, 40000, ACK, 3).expect("delivered");
    assert_eq!(ipv4::Packet::new_checked(&ip[..]).unwrap().src(), VIP);
    assert_eq!(ports(&ip).0, 80);
    // A new connection to the old address is not balanced any more.
    let f = tcp_between(VM1, VIP_PEER, 40001, 80, SYN, 1, 0, 0);
    let v = p.from_port(&f, 4, &mut out);
    assert_ne!(v, Verdict::Encapsulated { copies: 1 }, "{v:?}");
    // Once the connection has timed out, the balancer goes with it.
    let later = 2_000_000_000_000;
    for i in 0..64 {
        p.tick(later + i);
    }
    assert!(
        p.lb().is_none(),
        "the balancer is gone with its last connection"
    );
}
