//! Filtered micro-segmentation's firewall-only pipeline ([`Microseg`]):
//! frames from the NIC and from the host, behind their virtio-net header,
//! walk the firewall and forward layers. Checks what passes (and that it is
//! left for the caller to send unchanged), what is dropped, which queue a
//! reject's answer leaves on (`underlay` = out of the NIC for a frame the
//! NIC received, `port` = back to the host for one it sent), the gateway
//! exemptions, frames for another MAC, and that a trace decides the same
//! without changing anything.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;

use common::*;
use control::{Action, FirewallConfig};
use datapath::{DropReason, LayerId, Microseg, Output, Tables, Verdict};
use firewall::{Dir, FailurePolicy, Firewall};
use geneve::{ethernet, ipv4};

const SYN: u8 = 0x02;
const RST: u8 = 0x04;

/// VM1's host in micro-segmentation mode: no port, `fw` as its policy.
fn mseg(fw: Option<FirewallConfig>, management: Vec<SocketAddrV4>) -> Microseg {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.port = None;
    cfg.firewall = fw;
    let mut firewall = Firewall::new(1024, FailurePolicy::FailClosed);
    firewall.set_management(management);
    Microseg::new(
        Arc::new(Tables::build(&cfg, host).unwrap()),
        firewall,
        VM1.mac.0,
    )
}

/// `frame` behind an all-zero virtio-net header, as the sockets read it.
fn vnet(frame: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; datapath::offload::VIRTIO_NET_HDR_LEN];
    b.extend_from_slice(frame);
    b
}

fn syn(from: Vm, to: Vm, dport: u16) -> Vec<u8> {
    tcp_between(from, to, 40000, dport, SYN, 1, 0, 0)
}

/// The TCP flags and addresses of an answer frame.
fn tcp_of(f: &[u8]) -> (u8, std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let eth = ethernet::Frame::new_checked(f).unwrap();
    let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
    (ip.payload()[13], ip.src(), ip.dst())
}

fn out() -> Output {
    Microseg::output(64)
}

#[test]
fn allowed_frames_pass_both_ways_without_a_copy() {
    let mut m = mseg(Some(ssh_policy(true, false)), vec![]);
    let mut o = out();
    // vm3 -> this host (vm1) on 22: rule 1006 accepts; the reply goes out.
    let v = m.from_nic(&vnet(&syn(VM3, VM1, 22)), 1, &mut o);
    assert_eq!(v, Verdict::Delivered);
    let reply = tcp_between(VM1, VM3, 22, 40000, SYN | 0x10, 9, 2, 0);
    assert_eq!(m.from_host(&vnet(&reply), 2, &mut o), Verdict::Forwarded);
    assert!(o.port.is_empty() && o.underlay.is_empty(), "nothing copied");
    let c = m.counters();
    let fw = c.layers[LayerId::Firewall as usize];
    assert_eq!((fw.seen, fw.passed), (2, 2));
    let fwd = c.layers[LayerId::Forward as usize];
    assert_eq!((fwd.seen, fwd.handled), (2, 2));
    assert_eq!((c.underlay_rx.packets, c.port_tx.packets), (1, 1));
    assert_eq!((c.port_rx.packets, c.underlay_tx.packets), (1, 1));
    let mc = m.mseg_counters();
    assert_eq!((mc.in_passed, mc.out_passed), (1, 1));
}

#[test]
fn a_drop_rule_drops_and_counts_the_reason() {
    let policy = FirewallConfig {
        default_rule: control::DefaultRule {
            id: 1002,
            action: Action::Drop,
            log: false,
        },
        ..ssh_policy(true, false)
    };
    let mut m = mseg(Some(policy), vec![]);
    let mut o = out();
    let v = m.from_nic(&vnet(&syn(VM2, VM1, 22)), 1, &mut o);
    assert_eq!(v, Verdict::Drop(DropReason::Firewall));
    assert_eq!(
        m.from_host(&vnet(&syn(VM1, VM2, 80)), 1, &mut o),
        Verdict::Drop(DropReason::Firewall)
    );
    assert!(o.port.is_empty() && o.underlay.is_empty(), "no answer");
    let c = m.counters();
    assert_eq!(c.dropped(DropReason::Firewall), 2);
    assert_eq!(c.layers[LayerId::Firewall as usize].dropped, 2);
    assert_eq!(c.layers[LayerId::Forward as usize].seen, 0);
    let mc = m.mseg_counters();
    assert_eq!((mc.in_dropped, mc.out_dropped, mc.in_rejected), (1, 1, 0));
}

#[test]
fn a_reject_is_answered_out_of_the_side_the_frame_came_from() {
    let mut m = mseg(Some(ssh_policy(true, false)), vec![]);
    // From the NIC (vm2 -> host, not allowed): the RST leaves on the NIC.
    let mut o = out();
    let v = m.from_nic(&vnet(&syn(VM2, VM1, 22)), 1, &mut o);
    assert_eq!(v, Verdict::Drop(DropReason::Firewall));
    assert!(o.port.is_empty());
    assert_eq!(o.underlay.len(), 1);
    let (rst, _) = o.underlay.get(0).unwrap();
    assert_eq!(tcp_of(rst), (RST | 0x10, VM1.ip, VM2.ip));
    assert_eq!(&rst[..6], &VM2.mac.0, "to the sender's MAC");
    // From the host (host -> vm2, default reject): the RST goes back up.
    let mut o = out();
    let v = m.from_host(&vnet(&syn(VM1, VM2, 22)), 2, &mut o);
    assert_eq!(v, Verdict::Drop(DropReason::Firewall));
    assert!(o.underlay.is_empty());
    assert_eq!(o.port.len(), 1);
    let (rst, _) = o.port.get(0).unwrap();
    assert_eq!(tcp_of(rst), (RST | 0x10, VM2.ip, VM1.ip));
    let mc = m.mseg_counters();
    assert_eq!(
        (mc.in_rejected, mc.out_rejected, mc.answer_unbuildable),
        (1, 1, 0)
    );
    assert_eq!(m.counters().underlay_tx.packets, 1, "the NIC-side answer");
    assert_eq!(m.counters().port_tx.packets, 1, "the host-side answer");
}

#[test]
fn gateway_endpoints_pass_before_any_policy_and_nothing_else_does() {
    let gw = SocketAddrV4::new(VM2.ip, 5555);
    let mut m = mseg(None, vec![gw]);
    let mut o = out();
    assert_eq!(
        m.from_host(&vnet(&syn(VM1, VM2, 5555)), 1, &mut o),
        Verdict::Forwarded
    );
    let answer = tcp_between(VM2, VM1, 5555, 40000, SYN | 0x10, 9, 2, 0);
    assert_eq!(m.from_nic(&vnet(&answer), 2, &mut o), Verdict::Delivered);
    // Fail closed: everything else is dropped until a policy arrives.
    assert_eq!(
        m.from_host(&vnet(&syn(VM1, VM2, 5556)), 3, &mut o),
        Verdict::Drop(DropReason::Firewall)
    );
    assert_eq!(
        m.from_nic(&vnet(&syn(VM3, VM1, 22)), 4, &mut o),
        Verdict::Drop(DropReason::Firewall)
    );
}

#[test]
fn frames_for_another_mac_and_short_frames_are_not_judged() {
    let mut m = mseg(Some(ssh_policy(true, false)), vec![]);
    let mut o = out();
    let mut f = syn(VM3, VM1, 22);
    f[..6].copy_from_slice(&VM2.mac.0);
    assert_eq!(
        m.from_nic(&vnet(&f), 1, &mut o),
        Verdict::Drop(DropReason::NotForPort)
    );
    assert_eq!(
        m.from_host(&[0u8; 4], 1, &mut o),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(m.counters().layers[LayerId::Firewall as usize].seen, 0);
    let mc = m.mseg_counters();
    assert_eq!((mc.in_not_for_us, mc.short), (1, 1));
    let e = m.trace(Dir::In, &f, 1).unwrap_err();
    assert!(e.to_string().contains("not for this host"), "{e}");
}

#[test]
fn trace_decides_like_the_packet_path_and_changes_nothing() {
    let mut m = mseg(Some(ssh_policy(true, false)), vec![]);
    let refused = syn(VM2, VM1, 22);
    let t = m.trace(Dir::In, &refused, 1).unwrap();
    assert_eq!(t.steps[0].layer, LayerId::Firewall);
    assert!(t.steps[0].detail.contains("1002"), "{:?}", t.steps);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::Firewall));
    assert_eq!(t.outputs.len(), 1, "the answer: {:?}", t.outputs);
    assert_eq!(t.outputs[0].kind, datapath::OutputKind::Underlay);
    assert!(t.outputs[0].summary.contains("[R.]"), "{:?}", t.outputs);
    let allowed = syn(VM3, VM1, 22);
    let t = m.trace(Dir::In, &allowed, 1).unwrap();
    assert_eq!(t.verdict, Verdict::Delivered);
    assert!(t.steps[0].detail.contains("1006"), "{:?}", t.steps);
    assert_eq!(t.steps[1].layer, LayerId::Forward);
    assert_eq!(t.outputs[0].kind, datapath::OutputKind::Port);
    let t = m.trace(Dir::Out, &syn(VM1, VM2, 22), 1).unwrap();
    assert_eq!(
        t.outputs[0].kind,
        datapath::OutputKind::Port,
        "back to the host"
    );
    assert_eq!(
        m.counters(),
        &datapath::Counters::default(),
        "nothing counted"
    );
    assert_eq!(m.firewall().counters().drops.iter().sum::<u64>(), 0);
    let mut o = out();
    assert_eq!(
        m.from_nic(&vnet(&refused), 1, &mut o),
        Verdict::Drop(DropReason::Firewall)
    );
    assert_eq!(m.from_nic(&vnet(&allowed), 1, &mut o), Verdict::Delivered);
}
