//! `Pipeline::trace` on the seed's topology, step by step: what each layer
//! reports for a switched ping, a routed ping, a TTL that runs out, an ARP
//! request to the gateway, spoofing, frames from the underlay (delivered,
//! from an unknown endpoint, on an unknown VNI, with an inner source that is
//! not behind its endpoint), and the firewall (a new
//! connection's rule, the established fast path, a reject answered back
//! through the overlay).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use datapath::trace::geneve_payload;
use datapath::{
    DropReason, LayerId, OutputKind, Pipeline, StepResult, Tables, Trace, TraceFrom, Verdict,
};

fn show(t: &Trace) -> String {
    let mut s = format!("{}\n", t.packet);
    for st in &t.steps {
        s.push_str(&format!(
            "{} {}: {}\n",
            st.layer.name(),
            st.result.name(),
            st.detail
        ));
    }
    s
}

fn details(t: &Trace) -> Vec<(LayerId, StepResult, &str)> {
    t.steps
        .iter()
        .map(|s| (s.layer, s.result, s.detail.as_str()))
        .collect()
}

#[test]
fn switched_ping_names_the_endpoint_and_vni() {
    let p = pipeline_for(VM1);
    let f = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 56, true);
    let t = p.trace(TraceFrom::Port, &f, 1);
    assert_eq!(
        t.verdict,
        Verdict::Encapsulated { copies: 1 },
        "{}",
        show(&t)
    );
    assert_eq!(
        t.packet,
        "06:17:1e:54:96:3a > 06:17:1e:54:96:44, 192.168.100.3 > 192.168.100.4: \
         icmp echo request id 7079 seq 938, ttl 64, 98 bytes"
    );
    use LayerId::*;
    use StepResult::*;
    assert_eq!(
        details(&t),
        vec![
            (
                PortSecurity,
                Next,
                "source MAC 06:17:1e:54:96:3a and IPv4 source 192.168.100.3 are port \
                 192.168.100.3's on ls-web (vni 0x238c): pass"
            ),
            (
                Dhcp,
                Next,
                "not a DHCP client message to the switch's server: pass"
            ),
            (Firewall, Next, "no firewall configured: pass"),
            (Responder, Next, "not for a local responder: pass"),
            (
                Switch,
                Next,
                "ls-web (vni 0x238c): dst MAC 06:17:1e:54:96:44 -> remote port behind \
                 10.99.3.44 (tep 44)"
            ),
            (Router, Next, "not addressed to the router: pass"),
            (Encap, Done, "vni 0x238c to 10.99.3.44 (tep 44)"),
        ]
    );
    assert_eq!(t.outputs.len(), 1);
    let o = &t.outputs[0];
    assert_eq!(o.kind, OutputKind::Underlay);
    assert_eq!(o.dst, "10.99.3.44");
    assert_eq!(o.vni, Some(VNI_WEB));
    assert_eq!(o.len, 142, "outer length as in the seed capture");
    assert_eq!(o.summary, t.packet, "a switched frame is not rewritten");
    assert_eq!(p.counters().port_rx.packets, 0, "nothing counted");
}

#[test]
fn routed_ping_shows_route_ttl_and_rewrite() {
    let p = pipeline_for(VM1);
    let f = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 56, true);
    let t = p.trace(TraceFrom::Port, &f, 1);
    assert_eq!(
        t.verdict,
        Verdict::Encapsulated { copies: 1 },
        "{}",
        show(&t)
    );
    let d = details(&t);
    assert_eq!(
        d[4].2,
        "ls-web (vni 0x238c): dst MAC 02:50:56:56:44:52 is router t1: to the router"
    );
    assert_eq!(
        d[5].2,
        "t1 192.168.99.0/24 connected via ls-app, ttl 64 -> 63, next hop \
         192.168.99.9 is 06:17:1e:54:96:09 behind 10.99.3.251 (tep 251); MAC rewrite \
         02:50:56:56:44:52 -> 06:17:1e:54:96:09"
    );
    assert_eq!(d[6].2, "vni 0x2388 to 10.99.3.251 (tep 251)");
    let o = &t.outputs[0];
    assert_eq!((o.dst.as_str(), o.vni), ("10.99.3.251", Some(VNI_APP)));
    assert_eq!(
        o.summary,
        "02:50:56:56:44:52 > 06:17:1e:54:96:09, 192.168.100.3 > 192.168.99.9: \
         icmp echo request id 7079 seq 938, ttl 63, 98 bytes"
    );
}

#[test]
fn ttl_one_reports_the_icmp_error_sent_back() {
    let p = pipeline_for(VM1);
    let f = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 1, 56, true);
    let t = p.trace(TraceFrom::Port, &f, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::TtlExceeded));
    let last = t.steps.last().unwrap();
    assert_eq!(last.layer, LayerId::Router);
    assert_eq!(
        last.detail,
        "t1 192.168.99.0/24 connected via ls-app, ttl 1: drop \
         (ttl_exceeded); ICMP time exceeded sent to the port"
    );
    assert_eq!(t.outputs.len(), 1);
    assert_eq!(t.outputs[0].kind, OutputKind::Port);
    assert_eq!(t.outputs[0].dst, VM1.mac.to_string());
    assert!(
        t.outputs[0]
            .summary
            .contains("192.168.100.1 > 192.168.100.3: icmp time exceeded code 0"),
        "{}",
        t.outputs[0].summary
    );
}

#[test]
fn arp_for_the_gateway_is_answered_locally() {
    let p = pipeline_for(VM1);
    let f = arp_request(VM1.mac, VM1.ip, gw_web());
    let t = p.trace(TraceFrom::Port, &f, 1);
    assert_eq!(t.verdict, Verdict::Replied);
    assert_eq!(
        t.steps[3].detail,
        "ARP who-has 192.168.100.1 tell 192.168.100.3: gateway of router t1 on ls-web \
         (vni 0x238c), is-at 02:50:56:56:44:52; reply sent to the port"
    );
    assert_eq!(
        t.outputs[0].summary,
        "02:50:56:56:44:52 > 06:17:1e:54:96:3a, ARP reply 192.168.100.1 is-at \
         02:50:56:56:44:52, 42 bytes"
    );
    let unknown = arp_request(VM1.mac, VM1.ip, Ipv4Addr::new(192, 168, 100, 200));
    let t = p.trace(TraceFrom::Port, &unknown, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::ArpUnknownTarget));
    assert!(t.outputs.is_empty());
}

#[test]
fn spoofed_source_is_named() {
    let p = pipeline_for(VM1);
    let f = icmp_echo(
        VM1.mac,
        VM3.mac,
        Ipv4Addr::new(192, 168, 100, 9),
        VM3.ip,
        64,
        8,
        true,
    );
    let t = p.trace(TraceFrom::Port, &f, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::SpoofedSrcIp));
    assert_eq!(
        details(&t),
        vec![(
            LayerId::PortSecurity,
            StepResult::Done,
            "IPv4 source 192.168.100.9 is not the port's 192.168.100.3: drop (spoofed_src_ip)"
        )]
    );
}

#[test]
fn underlay_frames_are_decapsulated_and_delivered_or_refused() {
    let p = pipeline_for(VM1);
    let inner = icmp_echo(VM3.mac, VM1.mac, VM3.ip, VM1.ip, 64, 56, true);
    let payload = geneve_payload(p.tables(), VM3.underlay, VNI_WEB, &inner).unwrap();
    assert_eq!(payload, geneve_from(&VM3, VNI_WEB, VM3.tep_id, &inner));
    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &payload, 1);
    assert_eq!(t.verdict, Verdict::Delivered, "{}", show(&t));
    assert_eq!(
        details(&t),
        vec![
            (
                LayerId::Decap,
                StepResult::Next,
                "Geneve from 10.99.3.44 (tep 44), vni 0x238c -> ls-web; inner 06:17:1e:54:96:44 > \
                 06:17:1e:54:96:3a"
            ),
            (
                LayerId::Firewall,
                StepResult::Next,
                "no firewall configured: pass"
            ),
            (
                LayerId::Deliver,
                StepResult::Done,
                "to the port 192.168.100.3 (06:17:1e:54:96:3a) on ls-web (vni 0x238c)"
            ),
        ]
    );
    assert_eq!(t.outputs[0].kind, OutputKind::Port);
    assert_eq!(t.outputs[0].len, inner.len());

    let stranger = Ipv4Addr::new(10, 99, 3, 77);
    let payload = geneve_payload(p.tables(), stranger, VNI_WEB, &inner).unwrap();
    let t = p.trace(TraceFrom::Underlay(stranger), &payload, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::UnknownTunnel));
    assert_eq!(
        t.steps[0].detail,
        "10.99.3.77 is not a known tunnel endpoint: drop (unknown_tunnel)"
    );

    let payload = geneve_payload(p.tables(), VM3.underlay, 0x1234, &inner).unwrap();
    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &payload, 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::UnknownVni));
    assert_eq!(
        t.steps[0].detail,
        "Geneve from 10.99.3.44 (tep 44): vni 0x1234 is no switch here: drop (unknown_vni)"
    );
    assert!(geneve_payload(p.tables(), VM3.underlay, 1 << 24, &inner).is_err());

    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &[0x40, 0, 0, 0], 1);
    assert_eq!(t.verdict, Verdict::Drop(DropReason::GeneveTruncated));
    assert_eq!(t.packet, "Geneve from 10.99.3.44: geneve packet truncated");
}

#[test]
fn an_inner_source_behind_another_endpoint_is_explained() {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.firewall = Some(ssh_policy(true, false));
    let p = Pipeline::with_flow_capacity(Arc::new(Tables::build(&cfg, host).unwrap()), 64);
    let refused = |from: Vm, inner: &[u8], want: &str| {
        let payload = geneve_payload(p.tables(), from.underlay, VNI_WEB, inner).unwrap();
        let t = p.trace(TraceFrom::Underlay(from.underlay), &payload, 1);
        assert_eq!(
            t.verdict,
            Verdict::Drop(DropReason::SpoofedInnerSrc),
            "{}",
            show(&t)
        );
        assert_eq!(details(&t), vec![(LayerId::Decap, StepResult::Done, want)]);
        assert!(t.outputs.is_empty());
    };
    // vm3's ssh SYN (the firewall accepts it from vm3), sent by vm2's endpoint.
    let syn = tcp_between(VM3, VM1, 40000, 22, 0x02, 1000, 0, 0);
    refused(
        VM2,
        &syn,
        "ls-web (vni 0x238c): inner source 192.168.100.4 (06:17:1e:54:96:44) is not behind \
         endpoint 10.99.3.251 (tep 251), it is behind 10.99.3.44 (tep 44): drop (spoofed_inner_src)",
    );
    // Routed from vm2's address, sent by vm3's endpoint.
    let routed = icmp_echo(ROUTER_MAC, VM1.mac, VM2.ip, VM1.ip, 64, 8, true);
    refused(
        VM3,
        &routed,
        "ls-web (vni 0x238c): routed inner source 192.168.99.9 (router MAC 02:50:56:56:44:52) \
         is not behind endpoint 10.99.3.44 (tep 44), it is behind 10.99.3.251 (tep 251): \
         drop (spoofed_inner_src)",
    );
    // An ARP reply for vm1's own address; an address nobody has.
    let mut arp = arp_request(VM3.mac, VM1.ip, VM1.ip);
    arp[14 + 7] = 2;
    refused(
        VM3,
        &arp,
        "ls-web (vni 0x238c): ARP sender 192.168.100.3 (06:17:1e:54:96:44) is not behind \
         endpoint 10.99.3.44 (tep 44), it is this instance's own port: drop (spoofed_inner_src)",
    );
    let stranger = Ipv4Addr::new(192, 168, 100, 77);
    let f = icmp_echo(VM3.mac, VM1.mac, stranger, VM1.ip, 64, 8, true);
    refused(
        VM3,
        &f,
        "ls-web (vni 0x238c): inner source 192.168.100.77 (06:17:1e:54:96:44) is not behind \
         endpoint 10.99.3.44 (tep 44), no port on ls-web (vni 0x238c) has it: \
         drop (spoofed_inner_src)",
    );
    let outside = Ipv4Addr::new(8, 8, 8, 8);
    let f = icmp_echo(ROUTER_MAC, VM1.mac, outside, VM1.ip, 64, 8, true);
    refused(
        VM3,
        &f,
        "ls-web (vni 0x238c): routed inner source 8.8.8.8 (router MAC 02:50:56:56:44:52) is \
         not behind endpoint 10.99.3.44 (tep 44), no port on router t1's switches has it: \
         drop (spoofed_inner_src)",
    );
    // The same SYN from vm3's endpoint passes on to the firewall.
    let payload = geneve_payload(p.tables(), VM3.underlay, VNI_WEB, &syn).unwrap();
    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &payload, 1);
    assert_eq!(t.verdict, Verdict::Delivered, "{}", show(&t));
    assert_eq!(t.steps[0].result, StepResult::Next);
}

#[test]
fn firewall_steps_name_the_rule_and_the_connection() {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.firewall = Some(ssh_policy(true, false));
    let mut p = Pipeline::with_flow_capacity(Arc::new(Tables::build(&cfg, host).unwrap()), 64);
    let mut out = output();

    // A new connection: rule 1006 accepts; tracing it opens nothing.
    let syn = tcp_between(VM3, VM1, 40000, 22, 0x02, 1000, 0, 0);
    let payload = geneve_payload(p.tables(), VM3.underlay, VNI_WEB, &syn).unwrap();
    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &payload, 1);
    assert_eq!(t.verdict, Verdict::Delivered);
    assert_eq!(
        t.steps[1].detail,
        "new inbound connection tcp 192.168.100.4:40000 -> 192.168.100.3:22, rule 1006 \
         (domain-c25) accept"
    );
    assert_eq!(p.firewall().unwrap().conntrack().len(), 0);

    // Once the SYN went through for real, the SYN-ACK takes the fast path.
    assert_eq!(
        p.from_underlay(VM3.underlay, &payload, 1, &mut out),
        Verdict::Delivered
    );
    let synack = tcp_between(VM1, VM3, 22, 40000, 0x12, 5000, 1001, 0);
    let t = p.trace(TraceFrom::Port, &synack, 2);
    assert_eq!(t.verdict, Verdict::Encapsulated { copies: 1 });
    let id = p.firewall().unwrap().conntrack().iter().next().unwrap().id;
    assert_eq!(
        t.steps[2].detail,
        format!(
            "established connection {id:016x} (rule 1006) fast path, reply \
             direction, state SYN_RECV"
        )
    );

    // Another port: the default rule rejects, and the RST goes back
    // through the overlay to vm3.
    let syn23 = tcp_between(VM3, VM1, 40001, 23, 0x02, 7000, 0, 0);
    let payload = geneve_payload(p.tables(), VM3.underlay, VNI_WEB, &syn23).unwrap();
    let t = p.trace(TraceFrom::Underlay(VM3.underlay), &payload, 3);
    assert_eq!(
        t.verdict,
        Verdict::Drop(DropReason::Firewall),
        "{}",
        show(&t)
    );
    assert_eq!(t.firewall_drop, Some(firewall::FwDrop::Rule));
    assert_eq!(
        t.steps[1].detail,
        "new inbound connection tcp 192.168.100.4:40001 -> 192.168.100.3:23, rule 1002 \
         (domain-c25) reject: answered with a TCP RST, sent back to the sender"
    );
    let answer: Vec<&str> = t.steps[2..].iter().map(|s| s.detail.as_str()).collect();
    assert_eq!(
        answer,
        vec![
            "reject answer: ls-web (vni 0x238c): dst MAC 06:17:1e:54:96:44 -> remote port \
             behind 10.99.3.44 (tep 44)",
            "reject answer: not addressed to the router: pass",
            "reject answer: vni 0x238c to 10.99.3.44 (tep 44)",
        ]
    );
    assert_eq!(t.outputs.len(), 1);
    assert_eq!(t.outputs[0].dst, VM3.underlay.to_string());
    assert!(
        t.outputs[0].summary.contains("tcp 23 > 40001 [R.]"),
        "{}",
        t.outputs[0].summary
    );
}
