//! The steady-state packet loop must not allocate: a counting global
//! allocator wraps the system one, and a warmed-up loop of encapsulations,
//! decapsulations, routed packets, ARP replies and drops (spoofed sources
//! on either side among them) must count zero.

mod common;

use alloc_count::allocs;
use common::*;
use geneve::dhcp::MessageType;
use std::net::Ipv4Addr;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

#[test]
fn steady_state_loop_does_not_allocate() {
    let mut a = pipeline_for(VM1);
    let mut b = pipeline_for(VM2);
    let (mut out_a, mut out_b) = (output(), output());
    let frames = [
        icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 1400, true),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 1400, true),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 1, 56, true),
        arp_request(VM1.mac, VM1.ip, gw_web()),
        // The DHCP server answering the port.
        dhcp_client_frame(
            VM1.mac,
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
            (68, 67),
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            &[],
        ),
        dhcp_client_frame(
            VM1.mac,
            (VM1.ip, gw_web()),
            (68, 67),
            MessageType::Request,
            VM1.ip,
            &[],
        ),
        icmp_echo(
            VM1.mac,
            VM3.mac,
            "192.168.100.66".parse().unwrap(),
            VM3.ip,
            64,
            56,
            true,
        ),
    ];
    // vm3's endpoint claiming vm1's address, routed to vm2: the source guard drops it.
    let spoofed = geneve_from(
        &VM3,
        VNI_APP,
        VM3.tep_id,
        &icmp_echo(ROUTER_MAC, VM2.mac, VM1.ip, VM2.ip, 64, 56, true),
    );
    let mut run = |rounds: u64| {
        for i in 0..rounds {
            for f in &frames {
                a.from_port(f, i, &mut out_a);
            }
            b.from_underlay(VM3.underlay, &spoofed, i, &mut out_b);
            // Carry vm1's packets for vm2 across and let vm2 decapsulate them.
            for (pkt, dst) in out_a.underlay.iter() {
                if dst == VM2.underlay {
                    let (src, payload) = strip_outer(pkt);
                    b.from_underlay(src, payload, i, &mut out_b);
                }
            }
            out_a.clear();
            out_b.clear();
        }
    };
    run(10); // warm-up
    let before = allocs();
    run(1000);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations in the steady-state loop");
    assert!(
        b.counters().port_tx.packets >= 1000,
        "the loop did real work"
    );
    assert!(b.counters().dropped(datapath::DropReason::SpoofedInnerSrc) >= 1000);
    assert!(a.counters().dhcp.ack >= 1000, "the DHCP server answered");
}

/// The paths the agent really runs: TSO super-frames from the port
/// (segmentation, partial checksums) and decapsulated TCP segments merged
/// for the port (coalescing) allocate nothing either.
#[test]
fn offload_and_coalescing_paths_do_not_allocate() {
    let mut a = pipeline_for(VM1);
    let mut b = pipeline_for(VM2);
    let mut out_a = output();
    let mut out_b = datapath::Output::with_coalescing(256, 9216, 16);
    let mut tso = vnet_hdr(1402).to_vec();
    tso.extend_from_slice(&tcp_super_frame(20_000));
    let segments: Vec<Vec<u8>> = (0..8u32)
        .map(|i| {
            geneve_from(
                &VM3,
                VNI_WEB,
                VM3.tep_id,
                &tcp_segment(1000 + i * 1000, 1000, 0x10),
            )
        })
        .collect();
    let mut a1 = pipeline_for(VM1);
    let mut run = |rounds: u64| {
        for i in 0..rounds {
            a.from_port_vnet(&tso, i, &mut out_a);
            for (pkt, dst) in out_a.underlay.iter() {
                if dst == VM2.underlay {
                    let (src, payload) = strip_outer(pkt);
                    b.from_underlay(src, payload, i, &mut out_b);
                }
            }
            for s in &segments {
                a1.from_underlay(VM3.underlay, s, i, &mut out_b);
            }
            out_a.clear();
            out_b.clear();
        }
    };
    run(10); // warm-up
    let before = allocs();
    run(500);
    let after = allocs();
    assert_eq!(
        after - before,
        0,
        "allocations in the offload/coalescing loop"
    );
    assert!(
        a.counters().underlay_tx.packets >= 500 * 14,
        "TSO frames were segmented"
    );
    assert!(
        a1.counters().port_tx.packets >= 500 * 8,
        "segments were delivered"
    );
}

/// The firewall on both sides: established flows on the fast path, new
/// flows classified and inserted, rejects answered (a RST to the local
/// port, an ICMP unreachable sent back through the overlay), idle
/// connections reclaimed by `tick`: no allocation either.
#[test]
fn firewall_paths_do_not_allocate() {
    use control::{
        Action, DefaultRule, FirewallConfig, PortRange, Protocol, Rule, RuleSet, Service,
    };
    let fw = FirewallConfig {
        rulesets: vec![RuleSet {
            name: "s".into(),
            rules: vec![
                Rule {
                    id: 10,
                    direction: control::Direction::InOut,
                    sources: vec![],
                    destinations: vec![],
                    services: vec![Service::any_of(Protocol::Number(1))],
                    action: Action::Accept,
                    log: true,
                },
                Rule {
                    id: 11,
                    direction: control::Direction::In,
                    sources: vec![],
                    destinations: vec![],
                    services: vec![Service {
                        port: Some(PortRange::single(9)),
                        ..Service::any_of(Protocol::Number(17))
                    }],
                    action: Action::Reject,
                    log: true,
                },
            ],
        }],
        default_rule: DefaultRule {
            id: 1,
            action: Action::Reject,
            log: true,
        },
        ..FirewallConfig::allow_all()
    };
    let build = |vm: Vm| {
        let (mut cfg, host) = config_for(vm, 1500);
        cfg.firewall = Some(fw.clone());
        datapath::Pipeline::with_flow_capacity(
            std::sync::Arc::new(datapath::Tables::build(&cfg, host).unwrap()),
            4096,
        )
    };
    let (mut a, mut c) = (build(VM1), build(VM3));
    let (mut out_a, mut out_c) = (output(), output());
    let mut pings: Vec<Vec<u8>> = (0..64u16)
        .map(|i| {
            let mut f = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 100, true);
            f[38..40].copy_from_slice(&i.to_be_bytes()); // one flow per ident
            f
        })
        .collect();
    for f in &mut pings {
        let icmp = &mut f[34..];
        icmp[2..4].fill(0);
        let csum = geneve::checksum::fold(geneve::checksum::sum(icmp, 0));
        icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    }
    let syn = tcp_segment(1, 0, 0x02); // vm3 -> vm1, rejected by vm3's default rule
    let mut run = |rounds: u64| {
        for i in 0..rounds {
            let now = i * 1_000_000;
            for f in &pings {
                a.from_port(f, now, &mut out_a);
            }
            for (pkt, dst) in out_a.underlay.iter() {
                if dst == VM3.underlay {
                    let (src, payload) = strip_outer(pkt);
                    c.from_underlay(src, payload, now, &mut out_c);
                }
            }
            c.from_port(&syn, now, &mut out_c);
            a.tick(now);
            c.tick(now);
            out_a.clear();
            out_c.clear();
        }
    };
    run(10);
    let before = allocs();
    run(500);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the firewall paths");
    let fw_c = c.firewall().unwrap();
    assert!(
        fw_c.counters().fast_path >= 500 * 64,
        "established pings took the fast path"
    );
    assert!(fw_c.counters().rejects >= 500, "the SYNs were rejected");
}

/// Micro-segmentation's pipeline: passes both ways, rejects answered on
/// either side, frames for another MAC; nothing allocates either.
#[test]
fn microseg_path_does_not_allocate() {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.port = None;
    cfg.firewall = Some(ssh_policy(true, false));
    let tables = std::sync::Arc::new(datapath::Tables::build(&cfg, host).unwrap());
    let fw = firewall::Firewall::new(1024, firewall::FailurePolicy::FailClosed);
    let mut m = datapath::Microseg::new(tables, fw, VM1.mac.0);
    let mut out = datapath::Microseg::output(64);
    let vnet = |f: Vec<u8>| {
        let mut b = vec![0u8; datapath::offload::VIRTIO_NET_HDR_LEN];
        b.extend_from_slice(&f);
        b
    };
    let mut other_mac = tcp_between(VM3, VM1, 40000, 22, 0x02, 1, 0, 0);
    other_mac[..6].copy_from_slice(&VM2.mac.0);
    let from_nic = [
        vnet(tcp_between(VM3, VM1, 40000, 22, 0x02, 1, 0, 0)),
        vnet(tcp_between(VM2, VM1, 40001, 22, 0x02, 1, 0, 0)),
        vnet(other_mac),
    ];
    let from_host = [
        vnet(tcp_between(VM1, VM3, 22, 40000, 0x12, 9, 2, 0)),
        vnet(tcp_between(VM1, VM2, 40002, 22, 0x02, 1, 0, 0)),
    ];
    let mut run = |rounds: u64| {
        for i in 0..rounds {
            for f in &from_nic {
                m.from_nic(f, i, &mut out);
            }
            for f in &from_host {
                m.from_host(f, i, &mut out);
            }
            m.tick(i);
            out.clear();
        }
    };
    run(10);
    let before = allocs();
    run(1000);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations in the micro-seg loop");
    let mc = *m.mseg_counters();
    assert!(mc.in_passed >= 1000 && mc.in_rejected >= 1000 && mc.out_rejected >= 1000);
}

/// The edge: SNAT out of the uplink (new sessions and established ones),
/// the answers translated back into the overlay, a public IP in, ARP on
/// the uplink, the next hops' refresh and the NAT's sweep; nothing
/// allocates (the NAT's tables are made for their capacity up front).
#[test]
fn edge_paths_do_not_allocate() {
    use common::edge::*;
    let mut vm1 = instance(VM1);
    let mut e = edge();
    let mut out = datapath::Output::with_coalescing(256, 9216, 16);
    e.from_port(&uplink_arp_reply(GW_MAC, UPLINK_GW), 1, &mut out);
    e.from_port(&uplink_arp_reply(GW_MAC, STATIC_NH), 1, &mut out);
    // What vm1 sends toward the edge, as the edge receives it.
    let mut to_edge = Vec::new();
    for f in [
        tcp_out(1000, 1000),
        tcp_out(2000, 1000),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, INTERNET, 64, 56, false),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, PARTNER, 64, 56, false),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, PUBLIC_IP, 64, 56, false),
    ] {
        to_edge.push(via(&mut vm1, &f));
    }
    let from_uplink = [
        icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PUBLIC_IP, 60, 56, false),
        icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, UPLINK_IP, 60, 56, false),
        icmp_echo(GW_MAC, UPLINK_MAC, INTERNET, PARTNER, 60, 56, false),
        arp_request(GW_MAC, UPLINK_GW, UPLINK_IP),
    ];
    let mut run = |rounds: u64, now: &mut u64| {
        for _ in 0..rounds {
            *now += 1_000_000;
            for (src, p) in &to_edge {
                e.from_underlay(*src, p, *now, &mut out);
            }
            for f in &from_uplink {
                e.from_port(f, *now, &mut out);
            }
            e.tick(*now);
            e.edge_tick(*now, &mut out);
            out.clear();
        }
    };
    let mut now = 10;
    run(10, &mut now);
    let before = allocs();
    run(1000, &mut now);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the edge's paths");
    let c = e.counters();
    assert!(c.port_tx.packets >= 3000, "frames left by the uplink");
    assert!(
        c.underlay_tx.packets >= 2000,
        "frames went into the overlay"
    );
}
