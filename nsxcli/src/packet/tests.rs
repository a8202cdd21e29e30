//! Tests of the packet builder: each protocol's frame, its checksums
//! verified with the `geneve` crate's views, parse errors, what can follow.

use super::*;
use geneve::checksum;

fn spec(line: &str) -> PacketSpec {
    let ws: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    parse(&ws).unwrap_or_else(|e| panic!("{line}: {e}"))
}

const SMAC: MacAddr = [0x06, 0x17, 0x1e, 0x54, 0x96, 0x01];
const DMAC: MacAddr = [0x02, 0x50, 0x56, 0x56, 0x44, 0x52];

/// The IPv4 packet of a frame, checked by the geneve crate's view.
fn ip_of(frame: &[u8]) -> ipv4::Packet<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV4);
    let ip = ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    ip
}

#[test]
fn icmp_echo_like_ping() {
    let s = spec("icmp src 192.168.100.3 dst 192.168.99.9 ttl 64");
    let f = s.build(SMAC, DMAC).unwrap();
    assert_eq!(f.len(), 14 + 84, "ping's 84-byte IPv4 packet");
    assert_eq!(&f[0..6], &DMAC);
    assert_eq!(&f[6..12], &SMAC);
    let ip = ip_of(&f);
    assert_eq!(ip.src(), Ipv4Addr::new(192, 168, 100, 3));
    assert_eq!(ip.dst(), Ipv4Addr::new(192, 168, 99, 9));
    assert_eq!(
        (ip.ttl(), ip.protocol(), ip.total_len()),
        (64, ipv4::PROTO_ICMP, 84)
    );
    assert!(!ip.dont_frag());
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    assert_eq!(icmp.msg_type(), icmpv4::TYPE_ECHO_REQUEST);
    assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (ECHO_ID, ECHO_SEQ));
    assert_eq!(
        s.describe(),
        "icmp 192.168.100.3 > 192.168.99.9 echo request ttl 64"
    );
}

#[test]
fn icmp_other_type_size_df_and_macs() {
    let s = spec(
        "icmp src 10.0.0.1 dst 10.0.0.2 type 13 code 0 size 1000 df ttl 1 smac 0a:00:00:00:00:01 dmac 0A-00-00-00-00-02",
    );
    let f = s.build(SMAC, DMAC).unwrap();
    assert_eq!(&f[0..6], &[0x0a, 0, 0, 0, 0, 2]);
    assert_eq!(&f[6..12], &[0x0a, 0, 0, 0, 0, 1]);
    let ip = ip_of(&f);
    assert!(ip.dont_frag());
    assert_eq!((ip.ttl(), ip.total_len()), (1, 20 + 8 + 1000));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.code()), (13, 0));
    assert_eq!(
        s.describe(),
        "icmp 10.0.0.1 > 10.0.0.2 type 13 code 0 ttl 1 df"
    );
}

#[test]
fn tcp_syn_checksum() {
    let s = spec("tcp src 192.168.100.3 dst 192.168.99.9 sport 40000 dport 22 flags S");
    let f = s.build(SMAC, DMAC).unwrap();
    let ip = ip_of(&f);
    assert_eq!(ip.protocol(), ipv4::PROTO_TCP);
    let tcp = ip.payload();
    assert_eq!(tcp.len(), 20);
    assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 40000);
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 22);
    assert_eq!(tcp[12] >> 4, 5);
    assert_eq!(tcp[13], 0x02);
    let sum = checksum::sum(
        tcp,
        checksum::pseudo_header_v4(ip.src(), ip.dst(), ipv4::PROTO_TCP, 20),
    );
    assert_eq!(checksum::fold(sum), 0, "TCP checksum verifies");
    assert_eq!(
        s.describe(),
        "tcp 192.168.100.3:40000 > 192.168.99.9:22 flags S ttl 64"
    );
    // Flags: letters, '.', lower case; ACK sets the ack number.
    let s = spec("tcp src 1.1.1.1 dst 2.2.2.2 dport 80 flags s. size 7");
    assert_eq!(s.flags, 0x12);
    assert_eq!(s.sport, DEFAULT_SPORT);
    let f = s.build(SMAC, DMAC).unwrap();
    let ip = ip_of(&f);
    let tcp = ip.payload();
    assert_eq!(
        u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        TCP_ACK
    );
    let sum = checksum::sum(
        tcp,
        checksum::pseudo_header_v4(ip.src(), ip.dst(), ipv4::PROTO_TCP, 27),
    );
    assert_eq!(checksum::fold(sum), 0, "odd-length TCP checksum verifies");
    assert_eq!(flags_string(0x12), "S.");
    assert_eq!(flags_string(0x19), "FP.");
    assert_eq!(flags_string(0), "none");
}

#[test]
fn udp_checksum() {
    let s = spec("udp src 192.168.100.3 dst 192.168.99.9 dport 53 size 33");
    let f = s.build(SMAC, DMAC).unwrap();
    let ip = ip_of(&f);
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_ne!(u.checksum(), 0);
    assert!(u.verify_checksum_v4(ip.src(), ip.dst()), "UDP checksum");
    assert_eq!((u.src_port(), u.dst_port(), u.len()), (40000, 53, 41));
    assert_eq!(
        s.describe(),
        "udp 192.168.100.3:40000 > 192.168.99.9:53 ttl 64"
    );
}

#[test]
fn arp_request() {
    let s = spec("arp src 192.168.100.3 dst 192.168.100.1");
    let f = s.build(SMAC, ethernet::BROADCAST).unwrap();
    assert_eq!(f.len(), arp::FRAME_LEN);
    let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_ARP);
    assert_eq!(eth.dst(), ethernet::BROADCAST);
    let a = arp::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(a.operation(), arp::OP_REQUEST);
    assert_eq!(a.sender_mac(), SMAC);
    assert_eq!(a.sender_ip(), Ipv4Addr::new(192, 168, 100, 3));
    assert_eq!(a.target_ip(), Ipv4Addr::new(192, 168, 100, 1));
    assert_eq!(s.describe(), "arp who-has 192.168.100.1 tell 192.168.100.3");
}

#[test]
fn too_large_is_an_error_not_a_panic() {
    let s = spec("udp src 1.1.1.1 dst 2.2.2.2 dport 9 size 65508");
    assert!(s.build(SMAC, DMAC).is_err());
    let s = spec("udp src 1.1.1.1 dst 2.2.2.2 dport 9 size 65507");
    assert_eq!(s.build(SMAC, DMAC).map(|f| f.len()), Ok(14 + 65_535));
}

#[test]
fn parse_errors() {
    let e = |l: &str| {
        let ws: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        parse(&ws).unwrap_err()
    };
    assert_eq!(e(""), "Missing packet: arp, icmp, tcp or udp");
    assert_eq!(
        e("sctp src 1.1.1.1"),
        "Unknown protocol \"sctp\": arp, icmp, tcp or udp"
    );
    assert_eq!(
        e("icmp src 1.1.1.1 dst 2.2.2.2 sport 1"),
        "\"sport\" does not apply to icmp"
    );
    assert_eq!(
        e("arp src 1.1.1.1 dst 2.2.2.2 ttl 3"),
        "\"ttl\" does not apply to arp"
    );
    assert_eq!(e("icmp src 1.1.1.1 src 2.2.2.2"), "\"src\" given twice");
    assert_eq!(e("icmp src 1.1.1.1 dst"), "\"dst\" needs a value");
    assert_eq!(
        e("icmp src 1.1.1.1 dst x"),
        "invalid dst \"x\": not an IPv4 address"
    );
    assert_eq!(
        e("icmp src 1.1.1.1 dst 2.2.2.2 ttl 256"),
        "invalid ttl \"256\": 1..=255"
    );
    assert_eq!(e("icmp dst 2.2.2.2"), "Missing \"src <ip>\"");
    assert_eq!(
        e("udp src 1.1.1.1 dst 2.2.2.2 dport 0"),
        "invalid dport \"0\": 1..=65535"
    );
    assert_eq!(
        e("udp src 1.1.1.1 dst 2.2.2.2 dport 1 smac zz"),
        "not a MAC address: \"zz\""
    );
    assert_eq!(
        e("icmp src 1.1.1.1 dst 2.2.2.2 bogus"),
        "Unknown packet field \"bogus\""
    );
}

#[test]
fn next_words() {
    let n = |l: &str| next(&l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    assert_eq!(n("").len(), 4);
    assert_eq!(
        n("tcp src"),
        vec![Next::Value {
            kind: ArgKind::Ip,
            placeholder: "<ip>",
            help: "Source IPv4 address"
        }]
    );
    let after = n("tcp src 1.1.1.1 dst 2.2.2.2");
    assert!(!after.contains(&Next::End), "tcp needs dport");
    assert!(
        after
            .iter()
            .any(|x| matches!(x, Next::Keyword { word: "flags", .. }))
    );
    let after = n("tcp src 1.1.1.1 dst 2.2.2.2 dport 22 df");
    assert!(after.contains(&Next::End));
    assert!(!after.iter().any(|x| matches!(
        x,
        Next::Keyword {
            word: "df" | "src",
            ..
        }
    )));
    assert!(
        n("arp src 1.1.1.1")
            .iter()
            .all(|x| !matches!(x, Next::Keyword { word: "ttl", .. }))
    );
    assert!(n("bogus").is_empty());
    assert!(n("icmp bogus").is_empty());
}

#[test]
fn macs_and_hex() {
    assert_eq!(
        parse_mac("06:17:1e:54:96:3a"),
        Ok([6, 0x17, 0x1e, 0x54, 0x96, 0x3a])
    );
    assert!(parse_mac("06:17:1e:54:96").is_err());
    assert!(parse_mac("06:17:1e:54:96:3a:00").is_err());
    assert!(parse_mac("06:17:1e:54:96:3ag").is_err());
    assert!(parse_mac("06:17:1e:54::3a").is_err());
    assert_eq!(
        mac_string(&[6, 0x17, 0x1e, 0x54, 0x96, 0x3a]),
        "06:17:1e:54:96:3a"
    );
    assert_eq!(agent_api::hex::encode(&[0, 0xab, 0x10]), "00ab10");
    assert_eq!(agent_api::hex::decode("00AB10"), Ok(vec![0, 0xab, 0x10]));
    assert!(agent_api::hex::decode("abc").is_err());
    assert!(agent_api::hex::decode("zz").is_err());
    assert!(agent_api::hex::decode("é1").is_err());
}
