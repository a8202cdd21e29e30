//! In-process pipeline tests: datapaths of the seed's three instances joined
//! by in-memory queues, asserting exact outer headers, VNIs, inner TTLs and
//! counter changes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use datapath::{DropReason, Verdict};
use geneve::{arp, ethernet, geneve as gnv, icmpv4, ipv4, udp};

#[test]
fn same_switch_ping_has_exact_outer_headers() {
    let mut a = pipeline_for(VM1);
    let mut c = pipeline_for(VM3);
    let (mut out_a, mut out_c) = (output(), output());
    // 84-byte inner IPv4 packet, exactly as in the seed capture.
    let frame = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 56, true);
    assert_eq!(frame.len(), 14 + 84);
    let v = a.from_port(&frame, 1, &mut out_a);
    assert_eq!(v, Verdict::Encapsulated { copies: 1 });
    assert_eq!(out_a.underlay.len(), 1);
    let (pkt, dst) = out_a.underlay.get(0).unwrap();
    assert_eq!(dst, VM3.underlay);

    let ip = ipv4::Packet::new_checked(pkt).unwrap();
    assert_eq!(ip.total_len(), 142, "outer length as in the seed capture");
    assert!(ip.dont_frag());
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.protocol(), ipv4::PROTO_UDP);
    assert_eq!(ip.src(), VM1.underlay);
    assert_eq!(ip.dst(), VM3.underlay);
    assert!(ip.verify_checksum());
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(u.dst_port(), 6081);
    assert!(u.src_port() >= 49152);
    assert_ne!(u.checksum(), 0, "UDP checksum is computed");
    assert!(u.verify_checksum_v4(ip.src(), ip.dst()));
    let g = gnv::Header::new_checked(u.payload()).unwrap();
    assert_eq!(g.version(), 0);
    assert!(g.critical());
    assert!(!g.oam());
    assert_eq!(g.protocol(), 0x6558);
    assert_eq!(g.vni(), VNI_WEB);
    // Option: class VMware (0x104) type 0x80(C) len 8, data = our tep id.
    assert_eq!(&u.payload()[8..12], &[0x01, 0x04, 0x80, 0x01]);
    assert_eq!(&u.payload()[12..16], &VM1.tep_id.to_be_bytes());
    assert_eq!(
        &u.payload()[16..],
        &frame[..],
        "inner frame untouched on a switch"
    );

    let n = carry(&mut out_a, &mut c, &mut out_c, VM3.underlay);
    assert_eq!(n, 1);
    assert_eq!(out_c.port.len(), 1);
    assert_eq!(out_c.port.get(0).unwrap().0, &frame[..]);
    let t = &c.counters().tunnels;
    let from_a = t.iter().find(|t| t.tep_ip == VM1.underlay).unwrap();
    assert_eq!(from_a.rx.packets, 1);
    assert_eq!(c.counters().port_tx.packets, 1);
    assert_eq!(c.counters().total_drops(), 0);
}

#[test]
fn source_port_is_stable_per_flow() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let f = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 56, true);
    a.from_port(&f, 1, &mut out);
    a.from_port(&f, 2, &mut out);
    let p0 = udp::Packet::new_checked(&out.underlay.get(0).unwrap().0[20..])
        .unwrap()
        .src_port();
    let p1 = udp::Packet::new_checked(&out.underlay.get(1).unwrap().0[20..])
        .unwrap()
        .src_port();
    assert_eq!(p0, p1);
}

#[test]
fn routed_ping_crosses_in_destination_vni_with_ttl_63() {
    let mut a = pipeline_for(VM1);
    let mut b = pipeline_for(VM2);
    let (mut out_a, mut out_b) = (output(), output());
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 56, true);
    assert_eq!(
        a.from_port(&req, 1, &mut out_a),
        Verdict::Encapsulated { copies: 1 }
    );
    let (pkt, dst) = out_a.underlay.get(0).unwrap();
    assert_eq!(dst, VM2.underlay);
    let g = gnv::parse(&pkt[28..]).unwrap();
    assert_eq!(
        g.vni, VNI_APP,
        "request travels in the destination switch's VNI"
    );
    let inner = ethernet::Frame::new_checked(g.payload).unwrap();
    assert_eq!(inner.dst(), VM2.mac.0);
    assert_eq!(inner.src(), ROUTER_MAC.0);
    let iip = ipv4::Packet::new_checked(inner.payload()).unwrap();
    assert_eq!(iip.ttl(), 63);
    assert!(iip.verify_checksum());

    carry(&mut out_a, &mut b, &mut out_b, VM2.underlay);
    assert_eq!(out_b.port.len(), 1, "{:?}", b.counters().drops);

    // The reply goes back through vm2's own router instance, in the other VNI.
    let rep = icmp_echo(VM2.mac, ROUTER_MAC, VM2.ip, VM1.ip, 64, 56, false);
    assert_eq!(
        b.from_port(&rep, 2, &mut out_b),
        Verdict::Encapsulated { copies: 1 }
    );
    let g = gnv::parse(&out_b.underlay.get(0).unwrap().0[28..]).unwrap();
    assert_eq!(g.vni, VNI_WEB);
    let iip = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
    assert_eq!(iip.ttl(), 63);
    out_a.clear();
    carry(&mut out_b, &mut a, &mut out_a, VM1.underlay);
    assert_eq!(out_a.port.len(), 1);
}

#[test]
fn arp_is_answered_locally_and_never_flooded() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    // The gateway address -> router MAC.
    let v = a.from_port(&arp_request(VM1.mac, VM1.ip, gw_web()), 1, &mut out);
    assert_eq!(v, Verdict::Replied);
    let (reply, _) = out.port.get(0).unwrap();
    let eth = ethernet::Frame::new_checked(reply).unwrap();
    assert_eq!(eth.dst(), VM1.mac.0);
    let r = arp::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(r.operation(), arp::OP_REPLY);
    assert_eq!(r.sender_mac(), ROUTER_MAC.0);
    assert_eq!(r.sender_ip(), gw_web());
    assert_eq!(r.target_ip(), VM1.ip);
    // A remote port on the same switch -> its MAC.
    out.clear();
    a.from_port(&arp_request(VM1.mac, VM1.ip, VM3.ip), 1, &mut out);
    let r = arp::Packet::new_checked(&out.port.get(0).unwrap().0[14..])
        .unwrap()
        .sender_mac();
    assert_eq!(r, VM3.mac.0);
    // Unknown address -> dropped and counted, nothing sent anywhere.
    out.clear();
    let v = a.from_port(
        &arp_request(VM1.mac, VM1.ip, "192.168.100.77".parse().unwrap()),
        1,
        &mut out,
    );
    assert_eq!(v, Verdict::Drop(DropReason::ArpUnknownTarget));
    assert!(out.port.is_empty() && out.underlay.is_empty());
    assert_eq!(a.counters().dropped(DropReason::ArpUnknownTarget), 1);
    // A port on another switch is not resolvable on this one.
    let v = a.from_port(&arp_request(VM1.mac, VM1.ip, VM2.ip), 1, &mut out);
    assert_eq!(v, Verdict::Drop(DropReason::ArpUnknownTarget));
}

#[test]
fn echo_to_gateway_is_answered() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, gw_web(), 64, 56, true);
    assert_eq!(a.from_port(&req, 1, &mut out), Verdict::Replied);
    let (rep, _) = out.port.get(0).unwrap();
    let ip = ipv4::Packet::new_checked(&rep[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (gw_web(), VM1.ip));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv4::TYPE_ECHO_REPLY);
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (7079, 938));
    // The other switch's gateway address belongs to the same router.
    out.clear();
    let req = icmp_echo(
        VM1.mac,
        ROUTER_MAC,
        VM1.ip,
        "192.168.99.1".parse().unwrap(),
        64,
        8,
        true,
    );
    assert_eq!(a.from_port(&req, 1, &mut out), Verdict::Replied);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_router() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 1, 56, true);
    assert_eq!(
        a.from_port(&req, 1, &mut out),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    assert!(out.underlay.is_empty());
    let (err, _) = out.port.get(0).unwrap();
    let ip = ipv4::Packet::new_checked(&err[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (gw_web(), VM1.ip));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.code()),
        (icmpv4::TYPE_TIME_EXCEEDED, 0)
    );
    assert!(icmp.verify_checksum());
    assert_eq!(a.counters().dropped(DropReason::TtlExceeded), 1);
}

#[test]
fn oversize_df_gets_frag_needed_with_overlay_mtu() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    // 1500-byte IPv4 packet, larger than the 1442-byte overlay MTU.
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 1500 - 28, true);
    assert_eq!(
        a.from_port(&req, 1, &mut out),
        Verdict::Drop(DropReason::FragNeeded)
    );
    let (err, _) = out.port.get(0).unwrap();
    let icmp = icmpv4::Packet::new_checked(&err[34..]).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(icmp.rest_of_header() & 0xffff, 1442);
    // Without DF: dropped (no fragmentation), no ICMP.
    out.clear();
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 1500 - 28, false);
    assert_eq!(
        a.from_port(&req, 1, &mut out),
        Verdict::Drop(DropReason::TooBig)
    );
    assert!(out.port.is_empty());
    // The largest that fits goes through.
    let req = icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 1442 - 28, true);
    assert_eq!(
        a.from_port(&req, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    assert_eq!(out.underlay.get(0).unwrap().0.len(), 1500);
}

#[test]
fn spoofed_frames_are_dropped_and_counted() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let evil_mac = control::MacAddr([0x06, 0, 0, 0, 0, 0x66]);
    let f = icmp_echo(evil_mac, VM3.mac, VM1.ip, VM3.ip, 64, 8, true);
    assert_eq!(
        a.from_port(&f, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcMac)
    );
    let f = icmp_echo(
        VM1.mac,
        VM3.mac,
        "192.168.100.66".parse().unwrap(),
        VM3.ip,
        64,
        8,
        true,
    );
    assert_eq!(
        a.from_port(&f, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedSrcIp)
    );
    let f = arp_request(VM1.mac, "192.168.100.66".parse().unwrap(), gw_web());
    assert_eq!(
        a.from_port(&f, 1, &mut out),
        Verdict::Drop(DropReason::SpoofedArp)
    );
    let c = a.counters();
    assert_eq!(c.dropped(DropReason::SpoofedSrcMac), 1);
    assert_eq!(c.dropped(DropReason::SpoofedSrcIp), 1);
    assert_eq!(c.dropped(DropReason::SpoofedArp), 1);
    assert_eq!(
        c.layers[datapath::LayerId::PortSecurity as usize].dropped,
        3
    );
    assert!(out.underlay.is_empty() && out.port.is_empty());
}

#[test]
fn broadcast_is_replicated_to_the_switch_endpoints_only() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let f = icmp_echo(
        VM1.mac,
        control::MacAddr::BROADCAST,
        VM1.ip,
        "192.168.100.255".parse().unwrap(),
        64,
        8,
        false,
    );
    assert_eq!(
        a.from_port(&f, 1, &mut out),
        Verdict::Encapsulated { copies: 1 }
    );
    // ls-web has one remote endpoint (vm3); vm2 is on ls-app.
    assert_eq!(out.underlay.get(0).unwrap().1, VM3.underlay);
}

#[test]
fn malformed_geneve_is_dropped_each_under_its_reason() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let inner = icmp_echo(VM3.mac, VM1.mac, VM3.ip, VM1.ip, 64, 8, true);
    let good = geneve_from(&VM3, VNI_WEB, VM3.tep_id, &inner);
    assert_eq!(
        a.from_underlay(VM3.underlay, &good, 1, &mut out),
        Verdict::Delivered
    );

    let mut bad_version = good.clone();
    bad_version[0] |= 0x40;
    let mut unknown_critical = good.clone();
    unknown_critical[8..11].copy_from_slice(&[0x01, 0x05, 0x81]);
    let mut bad_opt_len = good.clone();
    bad_opt_len[11] = 0x05; // option claims 20 data bytes in an 8-byte area
    let truncated = good[..6].to_vec();
    let unknown_vni = geneve_from(&VM3, 0x999, VM3.tep_id, &inner);
    let wrong_id = geneve_from(&VM3, VNI_WEB, 4242, &inner);
    let cases: [(&[u8], std::net::Ipv4Addr, DropReason); 7] = [
        (&bad_version, VM3.underlay, DropReason::GeneveBadVersion),
        (
            &unknown_critical,
            VM3.underlay,
            DropReason::GeneveUnknownCriticalOption,
        ),
        (
            &bad_opt_len,
            VM3.underlay,
            DropReason::GeneveBadOptionLength,
        ),
        (&truncated, VM3.underlay, DropReason::GeneveTruncated),
        (&unknown_vni, VM3.underlay, DropReason::UnknownVni),
        (&wrong_id, VM3.underlay, DropReason::TepIdMismatch),
        (
            &good,
            "10.99.3.99".parse().unwrap(),
            DropReason::UnknownTunnel,
        ),
    ];
    for (pkt, src, reason) in cases {
        let before = a.counters().dropped(reason);
        assert_eq!(
            a.from_underlay(src, pkt, 1, &mut out),
            Verdict::Drop(reason)
        );
        assert_eq!(a.counters().dropped(reason), before + 1, "{reason:?}");
    }
    assert_eq!(a.counters().total_drops(), 7);
    // Traffic keeps flowing.
    assert_eq!(
        a.from_underlay(VM3.underlay, &good, 2, &mut out),
        Verdict::Delivered
    );
}

#[test]
fn geneve_without_the_vmware_option_is_dropped_under_its_own_reason() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let inner = icmp_echo(VM3.mac, VM1.mac, VM3.ip, VM1.ip, 64, 8, true);
    // From a known endpoint, valid in every other way, but no options at all.
    let r = gnv::Repr {
        vni: VNI_WEB,
        oam: false,
        tep_id: None,
    };
    let mut bare = vec![0u8; r.buffer_len()];
    r.emit(&mut bare).unwrap();
    bare.extend_from_slice(&inner);
    // Only a non-critical option of another class (skipped by receivers).
    let mut other_option = bare[..gnv::HEADER_LEN].to_vec();
    other_option[0] = 1; // one 4-byte word of options
    other_option.extend_from_slice(&[0x02, 0x00, 0x10, 0x00]);
    other_option.extend_from_slice(&inner);
    for pkt in [&bare, &other_option] {
        assert_eq!(gnv::parse(pkt).unwrap().tep_id, None);
        let total = a.counters().total_drops();
        assert_eq!(
            a.from_underlay(VM3.underlay, pkt, 1, &mut out),
            Verdict::Drop(DropReason::GeneveMissingVmwareOption)
        );
        assert_eq!(a.counters().total_drops(), total + 1);
        assert!(out.port.is_empty(), "nothing delivered");
    }
    assert_eq!(
        a.counters().dropped(DropReason::GeneveMissingVmwareOption),
        2
    );
    assert_eq!(
        DropReason::GeneveMissingVmwareOption.name(),
        "geneve_missing_vmware_option"
    );
    // An unknown sender is still refused first, for what it is.
    assert_eq!(
        a.from_underlay("10.99.3.99".parse().unwrap(), &bare, 1, &mut out),
        Verdict::Drop(DropReason::UnknownTunnel)
    );
    // The same frame with the option is delivered.
    let good = geneve_from(&VM3, VNI_WEB, VM3.tep_id, &inner);
    assert_eq!(
        a.from_underlay(VM3.underlay, &good, 2, &mut out),
        Verdict::Delivered
    );
}

#[test]
fn frames_for_other_macs_are_not_delivered() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let inner = icmp_echo(
        VM3.mac,
        control::MacAddr([6, 1, 2, 3, 4, 5]),
        VM3.ip,
        VM1.ip,
        64,
        8,
        true,
    );
    let pkt = geneve_from(&VM3, VNI_WEB, VM3.tep_id, &inner);
    assert_eq!(
        a.from_underlay(VM3.underlay, &pkt, 1, &mut out),
        Verdict::Drop(DropReason::NotForPort)
    );
    // A known VNI that is not the port's switch (from vm2, whose port is
    // on it).
    let pkt = geneve_from(
        &VM2,
        VNI_APP,
        VM2.tep_id,
        &icmp_echo(VM2.mac, VM1.mac, VM2.ip, VM1.ip, 64, 8, true),
    );
    assert_eq!(
        a.from_underlay(VM2.underlay, &pkt, 1, &mut out),
        Verdict::Drop(DropReason::NotForPort)
    );
    assert!(out.port.is_empty());
}

#[test]
fn config_swap_keeps_tunnel_counters() {
    let mut a = pipeline_for(VM1);
    let mut out = output();
    let f = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 8, true);
    a.from_port(&f, 1, &mut out);
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.version = 8;
    cfg.remote_ports.reverse();
    a.set_tables(std::sync::Arc::new(
        datapath::Tables::build(&cfg, host).unwrap(),
    ));
    assert_eq!(a.tables().version, 8);
    let t = a
        .counters()
        .tunnels
        .iter()
        .find(|t| t.tep_ip == VM3.underlay)
        .unwrap();
    assert_eq!(t.tx.packets, 1);
}

#[test]
fn micro_segmentation_mode_has_no_port() {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.port = None;
    let mut a = datapath::Pipeline::new(std::sync::Arc::new(
        datapath::Tables::build(&cfg, host).unwrap(),
    ));
    let mut out = output();
    let f = icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 8, true);
    assert_eq!(
        a.from_port(&f, 1, &mut out),
        Verdict::Drop(DropReason::NoPort)
    );
}

#[test]
fn tso_super_frame_is_routed_as_valid_segments() {
    let mut a = pipeline_for(VM1);
    let mut b = pipeline_for(VM2);
    let (mut out_a, mut out_b) = (output(), output());
    let payload = 10_000;
    let mss = 1402; // 20 + 20 + 1402 = the 1442-byte overlay MTU
    let mut buf = vnet_hdr(mss).to_vec();
    buf.extend_from_slice(&tcp_super_frame(payload));
    let v = a.from_port_vnet(&buf, 1, &mut out_a);
    let segments = payload.div_ceil(usize::from(mss));
    assert_eq!(
        v,
        Verdict::Encapsulated {
            copies: u16::try_from(segments).unwrap()
        }
    );
    let mut seqs = Vec::new();
    for (pkt, _) in out_a.underlay.iter() {
        assert!(pkt.len() <= 1500, "outer packet {} bytes", pkt.len());
        let g = gnv::parse(&pkt[28..]).unwrap();
        assert_eq!(g.vni, VNI_APP);
        let ip = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());
        let tcp = ip.payload();
        let pseudo = geneve::checksum::pseudo_header_v4(
            ip.src(),
            ip.dst(),
            6,
            u16::try_from(tcp.len()).unwrap(),
        );
        assert_eq!(
            geneve::checksum::fold(geneve::checksum::sum(tcp, pseudo)),
            0
        );
        seqs.push(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
    }
    let want: Vec<u32> = (0..u32::try_from(segments).unwrap())
        .map(|i| 77 + i * u32::from(mss))
        .collect();
    assert_eq!(seqs, want);
    carry(&mut out_a, &mut b, &mut out_b, VM2.underlay);
    assert_eq!(out_b.port.len(), segments);

    // A partial checksum without segmentation is finished too.
    let mut small = vnet_hdr(mss);
    small[1] = 0;
    let mut buf = small.to_vec();
    buf.extend_from_slice(&tcp_super_frame(100));
    assert_eq!(
        a.from_port_vnet(&buf, 1, &mut out_a),
        Verdict::Encapsulated { copies: 1 }
    );
    let g = gnv::parse(&out_a.underlay.get(0).unwrap().0[28..]).unwrap();
    let ip = ipv4::Packet::new_checked(&g.payload[14..]).unwrap();
    let pseudo = geneve::checksum::pseudo_header_v4(ip.src(), ip.dst(), 6, 120);
    assert_eq!(
        geneve::checksum::fold(geneve::checksum::sum(ip.payload(), pseudo)),
        0
    );

    // Segments larger than the overlay MTU get frag-needed, not a silent drop.
    out_a.clear();
    let mut buf = vnet_hdr(1460).to_vec();
    buf.extend_from_slice(&tcp_super_frame(5000));
    assert_eq!(
        a.from_port_vnet(&buf, 1, &mut out_a),
        Verdict::Drop(DropReason::FragNeeded)
    );
    // Garbage offload metadata is a counted drop.
    let mut bad = vnet_hdr(1400);
    bad[1] = 3; // UFO, not supported
    let mut buf = bad.to_vec();
    buf.extend_from_slice(&tcp_super_frame(100));
    assert_eq!(
        a.from_port_vnet(&buf, 1, &mut out_a),
        Verdict::Drop(DropReason::BadOffload)
    );
}

#[test]
fn consecutive_tcp_segments_are_merged_for_the_port() {
    let mut a = pipeline_for(VM1);
    let mut out = datapath::Output::with_coalescing(64, 9216, 8);
    let mss = 1000;
    let segs = [
        tcp_segment(1000, mss, 0x10),
        tcp_segment(2000, mss, 0x10),
        tcp_segment(3000, 500, 0x18), // short + PSH: ends the run
        tcp_segment(3500, mss, 0x10), // starts a new frame
        tcp_segment(9999, mss, 0x10), // not consecutive: its own frame
    ];
    for s in &segs {
        let pkt = geneve_from(&VM3, VNI_WEB, VM3.tep_id, s);
        assert_eq!(
            a.from_underlay(VM3.underlay, &pkt, 1, &mut out),
            Verdict::Delivered
        );
    }
    let items: Vec<_> = out.port.items().map(|(b, i)| (b.to_vec(), *i)).collect();
    assert_eq!(items.len(), 3);
    let (merged, item) = &items[0];
    let gso = item.gso.expect("merged");
    assert_eq!(
        (gso.mss, gso.segments, gso.l4_off, gso.hdr_len),
        (1000, 3, 34, 54)
    );
    assert!(gso.closed);
    let ip = ipv4::Packet::new_checked(&merged[14..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), 40 + 2500);
    assert!(ip.verify_checksum());
    let tcp = ip.payload();
    assert_eq!(tcp[13], 0x18, "PSH carried to the merged frame");
    let mut want = segs[0][54..].to_vec();
    want.extend_from_slice(&segs[1][54..]);
    want.extend_from_slice(&segs[2][54..]);
    assert_eq!(&tcp[20..], &want[..]);
    // The checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL).
    let pseudo =
        geneve::checksum::pseudo_header_v4(VM3.ip, VM1.ip, 6, u16::try_from(tcp.len()).unwrap());
    let partial = !geneve::checksum::fold(pseudo);
    assert_eq!(u16::from_be_bytes([tcp[16], tcp[17]]), partial);
    let hdr = gso.virtio_net_hdr();
    assert_eq!((hdr[0], hdr[1]), (1, 1));
    assert!(items[1].1.gso.is_none() && items[2].1.gso.is_none());
    assert_eq!(a.counters().port_tx.packets, 5);
}
