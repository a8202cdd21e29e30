//! ICMP errors (RFC 5508 REQ-3/REQ-4, RFC 5382 REQ-9): matched by the
//! packet they quote, translated both ways (outer address, quoted
//! addresses, ports and identifiers), every checksum verified from
//! scratch afterwards; a full quote must come out byte-identical to the
//! packet as its sender sent it.

mod common;

use common::*;
use nat::{Dir, DropReason, Nat, NatConfig};

/// Sends `p` out through `nat` and returns it translated.
fn out(nat: &mut Nat, mut p: Vec<u8>) -> Vec<u8> {
    assert!(pass(nat, Dir::Out, &mut p, T0));
    p
}

#[test]
fn inbound_errors_reach_the_inside_sender() {
    let mut nat = nat_with(64, pool_cfg());
    let cases = [
        udp_packet(ip("10.0.0.1"), 41000, ip("8.8.8.8"), 53, 40),
        tcp_packet(ip("10.0.0.1"), 41001, ip("8.8.8.8"), 443, 0x02, 0),
        tcp_packet(ip("10.0.0.1"), 41002, ip("8.8.8.8"), 443, 0x02, 1200),
        icmp_echo(ip("10.0.0.1"), ip("8.8.8.8"), 8, 41003, 56),
    ];
    for orig in cases {
        let sent = out(&mut nat, orig.clone());
        // Frag-needed / TTL exceeded from a router beyond the uplink, with a
        // short quote (header + 8 bytes), a longer one, and the whole packet.
        for quote in [28, 48, sent.len()] {
            for (t, c) in [(3, 4), (11, 0)] {
                let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), t, c, &sent, quote);
                assert!(pass(&mut nat, Dir::In, &mut e, T0 + S), "quote {quote}");
                assert_eq!(dst_of(&e).ip(), &ip("10.0.0.1"));
                assert_eq!(src_of(&e).ip(), &ip("192.0.2.1"));
                assert_eq!(e[20], t, "type unchanged");
                assert_eq!(e[21], c, "code unchanged");
                let q = quote.min(sent.len());
                assert_eq!(&e[28..28 + q], &orig[..q], "the quote is the original");
            }
        }
    }
    assert_eq!(nat.counters().icmp_errors, 24);
    // Errors leave the session alone (RFC 4787 REQ-12): it still translates.
    let mut r = udp_packet(ip("8.8.8.8"), 53, ip(POOL), 41000, 4);
    assert!(pass(&mut nat, Dir::In, &mut r, T0 + 2 * S));
}

#[test]
fn inbound_error_for_a_public_ip_reaches_its_private_host() {
    let cfg = NatConfig {
        statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
        ..pool_cfg()
    };
    let mut nat = nat_with(64, cfg);
    let orig = tcp_packet(ip("10.0.0.10"), 22, ip("8.8.8.8"), 5555, 0x12, 100);
    let sent = out(&mut nat, orig.clone());
    assert_eq!(src_of(&sent), sa("198.51.100.10:22"));
    let mut e = icmp_error(
        ip("192.0.2.1"),
        ip("198.51.100.10"),
        3,
        4,
        &sent,
        sent.len(),
    );
    assert!(pass(&mut nat, Dir::In, &mut e, T0 + S));
    assert_eq!(dst_of(&e).ip(), &ip("10.0.0.10"));
    assert_eq!(&e[28..], &orig[..]);
}

#[test]
fn outbound_errors_look_like_they_came_from_the_external_endpoint() {
    // A UDP flow opened from inside, then a remote's packet the inside host
    // answers with port unreachable; and a public IP's host answering a
    // packet it got from outside.
    let cfg = NatConfig {
        statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
        ..pool_cfg()
    };
    let mut nat = nat_with(64, cfg);
    let _ = out(
        &mut nat,
        udp_packet(ip("10.0.0.1"), 41000, ip("8.8.8.8"), 53, 8),
    );
    for (dst, host) in [
        (sa("203.0.113.1:41000"), "10.0.0.1"),
        (sa("198.51.100.10:80"), "10.0.0.10"),
    ] {
        let as_sent = udp_packet(ip("8.8.8.8"), 53, *dst.ip(), dst.port(), 30);
        let mut got = as_sent.clone();
        assert!(pass(&mut nat, Dir::In, &mut got, T0));
        assert_eq!(dst_of(&got).ip(), &ip(host));
        for quote in [28, got.len()] {
            let mut e = icmp_error(ip(host), ip("8.8.8.8"), 3, 3, &got, quote);
            assert!(pass(&mut nat, Dir::Out, &mut e, T0 + S));
            assert_eq!(src_of(&e).ip(), dst.ip());
            assert_eq!(dst_of(&e).ip(), &ip("8.8.8.8"));
            let q = quote.min(as_sent.len());
            assert_eq!(&e[28..28 + q], &as_sent[..q]);
        }
        // An inside router's error about the same packet: the outer source
        // becomes the external address too (RFC 5508 REQ-4 c).
        let mut e = icmp_error(ip("10.255.0.1"), ip("8.8.8.8"), 11, 0, &got, 28);
        assert!(pass(&mut nat, Dir::Out, &mut e, T0 + S));
        assert_eq!(src_of(&e).ip(), dst.ip());
    }
}

#[test]
fn errors_of_no_session_and_bad_errors_are_dropped() {
    let mut nat = nat_with(64, pool_cfg());
    let sent = out(
        &mut nat,
        udp_packet(ip("10.0.0.1"), 41000, ip("8.8.8.8"), 53, 8),
    );
    // Quoting a packet of no session.
    let other = udp_packet(ip(POOL), 4444, ip("8.8.8.8"), 53, 8);
    let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), 3, 3, &other, 28);
    dropped(&mut nat, Dir::In, &mut e, T0, DropReason::NoMapping);
    // From inside about a packet no session brought in.
    let mut e = icmp_error(ip("10.0.0.1"), ip("8.8.8.8"), 3, 3, &other, 28);
    dropped(&mut nat, Dir::Out, &mut e, T0, DropReason::NoMapping);
    // A bad ICMP checksum, a bad quoted header checksum: malformed (REQ-3).
    let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), 3, 4, &sent, 28);
    e[30] ^= 0xff;
    dropped(&mut nat, Dir::In, &mut e, T0, DropReason::Malformed);
    let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), 3, 4, &sent, 28);
    e[28 + 10] ^= 0x01;
    refill_icmp(&mut e);
    dropped(&mut nat, Dir::In, &mut e, T0, DropReason::Malformed);
    // Quote cut inside the transport header's first 8 bytes.
    let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), 3, 4, &sent, 26);
    dropped(&mut nat, Dir::In, &mut e, T0, DropReason::Malformed);
    // After the session ends, its errors are dropped too.
    assert_eq!(nat.expire(T0 + 301 * S, usize::MAX), 1);
    let mut e = icmp_error(ip("192.0.2.1"), ip(POOL), 3, 4, &sent, 28);
    dropped(
        &mut nat,
        Dir::In,
        &mut e,
        T0 + 301 * S,
        DropReason::NoMapping,
    );
}

#[test]
fn hairpinned_error_reaches_the_inside_sender_as_from_the_public_address() {
    // A (pool) sends to B's public address; B answers with an error, addressed
    // to A's external endpoint: A gets it from B's public address, quoting
    // A's packet as A sent it.
    let cfg = NatConfig {
        statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
        ..pool_cfg()
    };
    let mut nat = nat_with(64, cfg);
    let a_sent = udp_packet(ip("10.0.0.1"), 41000, ip("198.51.100.10"), 161, 24);
    let mut at_b = a_sent.clone();
    assert!(pass(&mut nat, Dir::Out, &mut at_b, T0));
    assert_eq!(src_of(&at_b), sa("203.0.113.1:41000"));
    assert_eq!(dst_of(&at_b), sa("10.0.0.10:161"));
    let mut e = icmp_error(ip("10.0.0.10"), ip("203.0.113.1"), 3, 3, &at_b, at_b.len());
    assert!(pass(&mut nat, Dir::Out, &mut e, T0 + S));
    assert_eq!(src_of(&e).ip(), &ip("198.51.100.10"));
    assert_eq!(dst_of(&e).ip(), &ip("10.0.0.1"));
    assert_eq!(&e[28..], &a_sent[..]);
    let d = nat.judge(
        Dir::Out,
        &icmp_error(ip("10.0.0.10"), ip("203.0.113.1"), 3, 3, &at_b, 28),
        T0,
    );
    assert!(d.is_hairpin() && d.icmp_error, "{d}");
}
