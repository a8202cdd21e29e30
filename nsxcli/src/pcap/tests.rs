//! Tests of the pcap writer (header and record bytes) and the one-line
//! decoder (port frames, Geneve on the underlay, truncated input).

use serde_json::{Value, json};

use super::*;
use crate::packet::{PacketSpec, parse};
use agent_api::hex::encode as to_hex;

fn spec(line: &str) -> PacketSpec {
    parse(
        &line
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

const VM: [u8; 6] = [0x06, 0x17, 0x1e, 0x54, 0x96, 0x3a];
const RT: [u8; 6] = [0x02, 0x50, 0x56, 0x56, 0x44, 0x52];

/// The seed's routed echo request, encapsulated as the agent sends it.
fn underlay_packet() -> Vec<u8> {
    let inner = spec("icmp src 192.168.99.9 dst 192.168.100.3 ttl 63")
        .build(RT, VM)
        .unwrap();
    let mut buf = vec![0u8; geneve::outer::OVERHEAD + inner.len()];
    buf[geneve::outer::OVERHEAD..].copy_from_slice(&inner);
    let encap = geneve::outer::Encap {
        src: Ipv4Addr::new(10, 99, 3, 251),
        dst: Ipv4Addr::new(10, 99, 3, 248),
        src_port: 49289,
        vni: 0x238c,
        tep_id: 251,
    };
    let n = geneve::outer::emit(&mut buf, &encap, inner.len()).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn header_bytes() {
    assert_eq!(
        file_header(Link::Ethernet, 65535),
        [
            0x4d, 0x3c, 0xb2, 0xa1, // magic (ns), little-endian
            2, 0, 4, 0, // version 2.4
            0, 0, 0, 0, // thiszone
            0, 0, 0, 0, // sigfigs
            0xff, 0xff, 0, 0, // snaplen 65535
            1, 0, 0, 0, // LINKTYPE_ETHERNET
        ]
    );
    assert_eq!(
        &file_header(Link::Ipv4, 200)[16..24],
        &[200, 0, 0, 0, 101, 0, 0, 0]
    );
}

#[test]
fn records() {
    let frames = vec![
        Frame {
            ts_ns: 1_513_920_138_123_456_789,
            dir: "tx".into(),
            orig_len: 1500,
            data: vec![1, 2, 3],
        },
        Frame {
            ts_ns: 5,
            dir: "rx".into(),
            orig_len: 0,
            data: vec![],
        },
    ];
    let f = file(Link::Ethernet, 65535, &frames);
    assert_eq!(f.len(), 24 + 16 + 3 + 16);
    let r = &f[24..];
    assert_eq!(&r[0..4], &1_513_920_138u32.to_le_bytes());
    assert_eq!(&r[4..8], &123_456_789u32.to_le_bytes());
    assert_eq!(&r[8..12], &3u32.to_le_bytes());
    assert_eq!(&r[12..16], &1500u32.to_le_bytes(), "original length");
    assert_eq!(&r[16..19], &[1, 2, 3]);
    assert_eq!(&r[19..23], &0u32.to_le_bytes());
    assert_eq!(&r[23..27], &5u32.to_le_bytes());
}

/// A capture reply with `frames` (each given `orig_len` 0 unless it has
/// one: at least the captured length counts).
fn cap(frames: Value) -> Result<agent_api::CaptureReply, Error> {
    let mut r = json!({"point": "port", "linktype": 1, "ended": "count", "truncated": 0,
        "frames": frames});
    if let Some(list) = r["frames"].as_array_mut() {
        for f in list.iter_mut().filter(|f| f.get("orig_len").is_none()) {
            f["orig_len"] = json!(0);
        }
    }
    crate::client::decode(&r)
}

#[test]
fn frames_from_a_reply() {
    let r = cap(json!([{"ts_ns": 7, "dir": "rx", "point": "port", "data_hex": "0a0b"}])).unwrap();
    assert_eq!(
        frames(&r).unwrap(),
        vec![Frame {
            ts_ns: 7,
            dir: "rx".into(),
            orig_len: 2,
            data: vec![10, 11]
        }]
    );
    let r = cap(
        json!([{"ts_ns": 7, "dir": "rx", "point": "port", "orig_len": 1514,
        "data_hex": "0a0b"}]),
    )
    .unwrap();
    assert_eq!(frames(&r).unwrap()[0].orig_len, 1514);
    assert!(crate::client::decode::<agent_api::CaptureReply>(&json!({})).is_err());
    let r = cap(json!([{"ts_ns": 7, "dir": "rx", "point": "port", "data_hex": "zz"}])).unwrap();
    assert!(frames(&r).is_err());
    assert!(
        cap(json!([{}])).is_err(),
        "a frame without its fields is refused"
    );
}

#[test]
fn port_summaries() {
    let f = spec("icmp src 192.168.100.3 dst 192.168.99.9")
        .build(VM, RT)
        .unwrap();
    assert_eq!(
        ethernet_summary(&f, true),
        "06:17:1e:54:96:3a > 02:50:56:56:44:52, 192.168.100.3 > 192.168.99.9: ICMP echo request, id 20051, seq 1, ttl 64"
    );
    let f = spec("tcp src 192.168.100.3 dst 192.168.99.9 dport 22 flags S")
        .build(VM, RT)
        .unwrap();
    assert_eq!(
        ethernet_summary(&f, false),
        "192.168.100.3.40000 > 192.168.99.9.22: TCP flags [S], ttl 64"
    );
    let f = spec("udp src 192.168.100.3 dst 192.168.99.9 dport 53")
        .build(VM, RT)
        .unwrap();
    assert_eq!(
        ethernet_summary(&f, false),
        "192.168.100.3.40000 > 192.168.99.9.53: UDP, ttl 64"
    );
    let f = spec("arp src 192.168.100.3 dst 192.168.100.1")
        .build(VM, [0xff; 6])
        .unwrap();
    assert_eq!(
        ethernet_summary(&f, true),
        "06:17:1e:54:96:3a > ff:ff:ff:ff:ff:ff, ARP, Request who-has 192.168.100.1 tell 192.168.100.3"
    );
}

#[test]
fn underlay_summary_decodes_geneve_and_the_inner_packet() {
    let p = underlay_packet();
    assert_eq!(
        ipv4_summary(&p, true),
        "10.99.3.251.49289 > 10.99.3.248.6081: Geneve vni 0x238c tep 251, 192.168.99.9 > 192.168.100.3: ICMP echo request, id 20051, seq 1, ttl 63"
    );
    let frames = vec![Frame {
        ts_ns: 1_513_920_138_123_456_789,
        dir: "rx".into(),
        orig_len: u32::try_from(p.len()).unwrap(),
        data: p.clone(),
    }];
    assert_eq!(
        lines(&frames, Link::Ipv4, 0, None, Tz::UTC),
        format!(
            "05:22:18.123456 rx 10.99.3.251.49289 > 10.99.3.248.6081: Geneve vni 0x238c tep 251, \
             192.168.99.9 > 192.168.100.3: ICMP echo request, id 20051, seq 1, ttl 63, length {}\n\
             1 packet captured\n",
            p.len()
        )
    );
    assert_eq!(
        lines(&[], Link::Ethernet, 3, Some("timeout"), Tz::UTC),
        "0 packets captured (3 truncated, ended: timeout)\n"
    );
    assert_eq!(Link::from_linktype(101), Some(Link::Ipv4));
    assert_eq!(Link::from_linktype(1), Some(Link::Ethernet));
    assert_eq!(Link::from_linktype(7), None);
    // Through the JSON the agent sends.
    let r = cap(json!([{"ts_ns": 1, "dir": "tx", "point": "underlay", "data_hex": to_hex(&p)}]))
        .unwrap();
    assert_eq!(frames_of(&r), vec![p]);
}

fn frames_of(r: &agent_api::CaptureReply) -> Vec<Vec<u8>> {
    frames(r).unwrap().into_iter().map(|f| f.data).collect()
}

#[test]
fn truncated_and_odd_frames_never_panic() {
    let p = underlay_packet();
    for n in 0..p.len() {
        let _ = ipv4_summary(&p[..n], true);
        let _ = ethernet_summary(&p[..n], true);
    }
    assert_eq!(
        ethernet_summary(&[1, 2, 3], true),
        "truncated Ethernet frame"
    );
    assert_eq!(ipv4_summary(&[0x60], true), "IP version 6");
    let mut frag = p.clone();
    frag[6] = 0x00;
    frag[7] = 0x10;
    assert!(ipv4_summary(&frag, true).contains("fragment"));
    let mut bad = p.clone();
    bad[28] = 0x40; // Geneve version 1
    assert!(
        ipv4_summary(&bad, true).contains("Geneve, malformed"),
        "{}",
        ipv4_summary(&bad, true)
    );
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ethernet_summary(&data, true);
            let _ = ipv4_summary(&data, true);
            let _ = ipv4_summary(&data, false);
        }

        #[test]
        fn the_underlay_packet_mutated_decodes_without_panic(at in 0usize..170, byte in any::<u8>()) {
            let mut p = underlay_packet();
            if let Some(b) = p.get_mut(at) {
                *b = byte;
            }
            let _ = ipv4_summary(&p, true);
        }
    }
}
