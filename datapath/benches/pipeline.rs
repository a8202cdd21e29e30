//! Per-packet cost of the pipeline: encapsulation of a 1400-byte frame from
//! the port, a routed frame, and decapsulation + delivery (switched and
//! routed), in ns per packet; and the TCP paths: a TSO super-frame cut into
//! segments and encapsulated, and two consecutive TCP segments decapsulated
//! and coalesced for the port.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr, RemotePort};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::{LocalHost, Output, Pipeline, Tables};
use geneve::{checksum, ethernet, ipv4};

const ROUTER: MacAddr = MacAddr([2, 0x50, 0x56, 0, 0, 1]);
const MAC_A: MacAddr = MacAddr([6, 0, 0, 0, 0, 1]);
const MAC_B: MacAddr = MacAddr([6, 0, 0, 0, 0, 2]);
const MAC_C: MacAddr = MacAddr([6, 0, 0, 0, 0, 3]);

fn pipeline(me: u8) -> Pipeline {
    pipeline_with(me, None)
}

/// Instance `me`'s pipeline, with `firewall` as its firewall section.
fn pipeline_with(me: u8, firewall: Option<control::FirewallConfig>) -> Pipeline {
    let ports = [
        (
            "web",
            MAC_A,
            Ipv4Addr::new(192, 168, 100, 3),
            Ipv4Addr::new(10, 99, 3, 1),
            1,
        ),
        (
            "web",
            MAC_B,
            Ipv4Addr::new(192, 168, 100, 4),
            Ipv4Addr::new(10, 99, 3, 2),
            2,
        ),
        (
            "app",
            MAC_C,
            Ipv4Addr::new(192, 168, 99, 9),
            Ipv4Addr::new(10, 99, 3, 3),
            3,
        ),
    ];
    let (sw, mac, ip, ul, id) = ports[usize::from(me)];
    let cfg = InstanceConfig {
        version: 1,
        tep_id: id,
        switches: vec![
            LogicalSwitch {
                name: "web".into(),
                vni: 0x238c,
                subnet: "192.168.100.0/24".parse().unwrap(),
                gateway_ip: "192.168.100.1".parse().unwrap(),
                dhcp: None,
            },
            LogicalSwitch {
                name: "app".into(),
                vni: 0x2388,
                subnet: "192.168.99.0/24".parse().unwrap(),
                gateway_ip: "192.168.99.1".parse().unwrap(),
                dhcp: None,
            },
        ],
        routers: vec![LogicalRouter {
            name: "t1".into(),
            mac: ROUTER,
            switches: vec!["web".into(), "app".into()],
            routes: vec![],
        }],
        port: Some(LocalPort {
            switch: sw.into(),
            ip,
            mac: None,
        }),
        remote_ports: ports
            .iter()
            .filter(|p| p.4 != id)
            .map(|p| RemotePort {
                switch: p.0.into(),
                ip: p.2,
                mac: p.1,
                tep_ip: p.3,
                tep_id: p.4,
            })
            .collect(),
        firewall,
        ..InstanceConfig::default()
    };
    let host = LocalHost {
        underlay_ip: ul,
        port_mac: mac,
        overlay_mtu: 1442,
        kernel_udp: false,
        underlay_prefix_len: 24,
        underlay_mac: mac,
    };
    Pipeline::new(Arc::new(Tables::build(&cfg, host).unwrap()))
}

fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: usize,
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    ethernet::emit_header(&mut f, dst_mac.0, src_mac.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_UDP,
        8 + payload,
        64,
        true,
        1,
    )
    .unwrap();
    let l4 = &mut f[34..];
    l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&5201u16.to_be_bytes());
    let udp_len = u16::try_from(8 + payload).unwrap();
    l4[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let c = checksum::fold(checksum::sum(
        l4,
        checksum::pseudo_header_v4(src, dst, 17, udp_len),
    ));
    l4[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

fn benches(c: &mut Criterion) {
    let a_ip = Ipv4Addr::new(192, 168, 100, 3);
    let mut g = c.benchmark_group("pipeline_1400B");
    g.throughput(Throughput::Elements(1));

    let mut a = pipeline(0);
    let mut out = Output::new(256, 9216);
    let switched = udp_frame(
        MAC_A,
        MAC_B,
        a_ip,
        Ipv4Addr::new(192, 168, 100, 4),
        1400 - 42,
    );
    g.bench_function("encap_switched", |b| {
        b.iter(|| {
            let v = a.from_port(black_box(&switched), 1, &mut out);
            out.clear();
            v
        })
    });
    let routed = udp_frame(
        MAC_A,
        ROUTER,
        a_ip,
        Ipv4Addr::new(192, 168, 99, 9),
        1400 - 42,
    );
    g.bench_function("encap_routed", |b| {
        b.iter(|| {
            let v = a.from_port(black_box(&routed), 1, &mut out);
            out.clear();
            v
        })
    });
    a.from_port(&switched, 1, &mut out);
    let wire = out.underlay.get(0).unwrap().0[28..].to_vec();
    out.clear();
    let mut b_pipe = pipeline(1);
    g.bench_function("decap_deliver", |b| {
        b.iter(|| {
            let v =
                b_pipe.from_underlay(Ipv4Addr::new(10, 99, 3, 1), black_box(&wire), 1, &mut out);
            out.clear();
            v
        })
    });
    // Routed by C's distributed router (app -> web): inner source MAC the
    // router's, IPv4 source C's; B's source guard finds C's port by subnet.
    let mut c_pipe = pipeline(2);
    let routed_c = udp_frame(
        MAC_C,
        ROUTER,
        Ipv4Addr::new(192, 168, 99, 9),
        Ipv4Addr::new(192, 168, 100, 4),
        1400 - 42,
    );
    c_pipe.from_port(&routed_c, 1, &mut out);
    let wire_routed = out.underlay.get(0).unwrap().0[28..].to_vec();
    out.clear();
    g.bench_function("decap_routed_deliver", |b| {
        b.iter(|| {
            let v = b_pipe.from_underlay(
                Ipv4Addr::new(10, 99, 3, 3),
                black_box(&wire_routed),
                1,
                &mut out,
            );
            out.clear();
            v
        })
    });
    g.bench_function("decap_pipeline_encap_roundtrip", |b| {
        b.iter(|| {
            b_pipe.from_underlay(Ipv4Addr::new(10, 99, 3, 1), black_box(&wire), 1, &mut out);
            let v = a.from_port(black_box(&switched), 1, &mut out);
            out.clear();
            v
        })
    });
    // The same frames through an allow-all firewall: established flows on
    // the connection table's fast path (the first packet opened them).
    let allow = Some(control::FirewallConfig::allow_all());
    let mut a_fw = pipeline_with(0, allow.clone());
    let mut b_fw = pipeline_with(1, allow);
    a_fw.from_port(&switched, 1, &mut out);
    b_fw.from_underlay(Ipv4Addr::new(10, 99, 3, 1), &wire, 1, &mut out);
    out.clear();
    g.bench_function("encap_switched_fw", |b| {
        b.iter(|| {
            let v = a_fw.from_port(black_box(&switched), 1, &mut out);
            out.clear();
            v
        })
    });
    g.bench_function("decap_deliver_fw", |b| {
        b.iter(|| {
            let v = b_fw.from_underlay(Ipv4Addr::new(10, 99, 3, 1), black_box(&wire), 1, &mut out);
            out.clear();
            v
        })
    });
    g.finish();
}

/// An Ethernet + IPv4 + TCP (ACK|PSH, no options) frame with `payload`
/// bytes at `seq`; the checksum field holds the pseudo-header sum (partial).
fn tcp_frame(dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, seq: u32, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    ethernet::emit_header(&mut f, dst_mac.0, MAC_A.0, ethernet::ETHERTYPE_IPV4).unwrap();
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_TCP,
        20 + payload,
        64,
        true,
        1,
    )
    .unwrap();
    let tcp = &mut f[34..];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&99u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    let pseudo = checksum::pseudo_header_v4(src, dst, 6, u16::try_from(20 + payload).unwrap());
    tcp[16..18].copy_from_slice(&(!checksum::fold(pseudo)).to_be_bytes());
    f
}

fn tcp_benches(c: &mut Criterion) {
    let (a_ip, b_ip) = (
        Ipv4Addr::new(192, 168, 100, 3),
        Ipv4Addr::new(192, 168, 100, 4),
    );
    let mut g = c.benchmark_group("pipeline_tcp");
    g.throughput(Throughput::Elements(1));

    // A 10000-byte TSO super-frame, MSS 1402: 8 segments encapsulated.
    let mut a = pipeline(0);
    let mut out = Output::new(256, 9216);
    let mss: u16 = 1402;
    let mut vnet = [0u8; 10];
    vnet[0] = 1; // needs csum
    vnet[1] = 1; // TCPv4
    vnet[4..6].copy_from_slice(&mss.to_ne_bytes());
    vnet[6..8].copy_from_slice(&34u16.to_ne_bytes());
    vnet[8..10].copy_from_slice(&16u16.to_ne_bytes());
    let mut tso = vnet.to_vec();
    tso.extend_from_slice(&tcp_frame(MAC_B, a_ip, b_ip, 77, 10_000));
    g.bench_function("tso_10000B_encap", |b| {
        b.iter(|| {
            let v = a.from_port_vnet(black_box(&tso), 1, &mut out);
            out.clear();
            v
        })
    });

    // Two consecutive 1402-byte segments from A, decapsulated at B: the
    // second is merged into the first (receive coalescing).
    let mut wire = Vec::new();
    for i in 0..2u32 {
        let f = tcp_frame(MAC_B, a_ip, b_ip, 77 + i * u32::from(mss), usize::from(mss));
        a.from_port(&f, 1, &mut out);
        wire.push(out.underlay.get(0).unwrap().0[28..].to_vec());
        out.clear();
    }
    let mut b_pipe = pipeline(1);
    let mut out_b = Output::with_coalescing(64, 9216, 4);
    g.bench_function("decap_2_segments_coalesced", |b| {
        b.iter(|| {
            for w in &wire {
                b_pipe.from_underlay(Ipv4Addr::new(10, 99, 3, 1), black_box(w), 1, &mut out_b);
            }
            let merged = out_b.port.len();
            out_b.clear();
            merged
        })
    });
    g.finish();
}

criterion_group!(pipeline_benches, benches, tcp_benches);
criterion_main!(pipeline_benches);
