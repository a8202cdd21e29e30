//! One hand-built bad packet per `geneve::Error` variant reachable from
//! `geneve::parse`, plus option handling (skipping, multiple options).

mod common;

use common::{geneve_packet, inner_frame, opt};
use geneve::geneve::{self as gnv, ALL_REASONS, Error, PROTO_ETHERNET, parse};
use geneve::{VMWARE_OPT_CLASS, VMWARE_OPT_TYPE};

const C: u8 = 0x40;
const O: u8 = 0x80;

fn vmware(tep: u32) -> Vec<u8> {
    opt(VMWARE_OPT_CLASS, VMWARE_OPT_TYPE, &tep.to_be_bytes())
}

fn good() -> Vec<u8> {
    geneve_packet(0, C, PROTO_ETHERNET, 0x238c, &vmware(42), &inner_frame())
}

fn check(pkt: &[u8], want: Error, reason: &str) {
    let got = parse(pkt).expect_err("must be rejected");
    assert_eq!(got, want);
    assert_eq!(got.reason(), reason);
    assert_eq!(ALL_REASONS[got.index()], reason);
}

#[test]
fn good_packet_parses() {
    let pkt = good();
    let p = parse(&pkt).expect("valid");
    assert_eq!((p.vni, p.oam, p.tep_id), (0x238c, false, Some(42)));
    assert_eq!(p.payload, &inner_frame()[..]);
}

#[test]
fn truncated_header() {
    check(&good()[..7], Error::Truncated, "truncated");
    check(&[], Error::Truncated, "truncated");
}

#[test]
fn truncated_inner_frame() {
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &vmware(1), &[0u8; 13]);
    check(&pkt, Error::Truncated, "truncated");
    // Exactly an Ethernet header is enough.
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &vmware(1), &[0u8; 14]);
    assert!(parse(&pkt).is_ok());
}

#[test]
fn bad_version() {
    let mut pkt = good();
    pkt[0] |= 1 << 6;
    check(&pkt, Error::BadVersion(1), "bad_version");
    pkt[0] |= 3 << 6;
    check(&pkt, Error::BadVersion(3), "bad_version");
}

#[test]
fn options_overrun() {
    // Opt Len says 8 words (32 bytes), but only 20 bytes follow the header.
    let mut pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &[], &[0u8; 20]);
    pkt[0] = 8;
    check(
        &pkt,
        Error::OptionsOverrun {
            opt_len: 32,
            available: 20,
        },
        "options_overrun",
    );
}

#[test]
fn bad_option_length_tlv_overruns_area() {
    // Option claims 2 data words but the area only holds 1.
    let mut o = vmware(1);
    o[3] = 2;
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &o, &inner_frame());
    check(&pkt, Error::BadOptionLength, "bad_option_length");
}

#[test]
fn bad_option_length_area_ends_inside_option_header() {
    // 8-byte area: a complete 4-byte option (no data), then 4 bytes which
    // are an option header announcing 1 data word that is not there.
    let mut area = opt(0x0200, 0x01, &[]);
    area.extend_from_slice(&[0x02, 0x00, 0x01, 0x01]);
    let pkt = geneve_packet(0, 0, PROTO_ETHERNET, 1, &area, &inner_frame());
    check(&pkt, Error::BadOptionLength, "bad_option_length");
    // And the iterator reports it once, then stops.
    let h = gnv::Header::new_checked(&pkt[..]).expect("header");
    let items: Vec<_> = h.options().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert_eq!(items[1], Err(Error::BadOptionLength));
}

#[test]
fn bad_option_length_partial_option_header() {
    // Iterator over an area whose length is not a multiple of 4 (only
    // reachable through Options::new directly).
    let items: Vec<_> = gnv::Options::new(&[0x01, 0x04]).collect();
    assert_eq!(items, vec![Err(Error::BadOptionLength)]);
}

#[test]
fn unknown_critical_option() {
    let o = opt(0x0999, 0x85, &[0, 0, 0, 0]);
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &o, &inner_frame());
    check(
        &pkt,
        Error::UnknownCriticalOption {
            class: 0x0999,
            typ: 0x85,
        },
        "unknown_critical_option",
    );
    // VMware class but another critical type is unknown too.
    let o = opt(VMWARE_OPT_CLASS, 0x81, &[0, 0, 0, 0]);
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &o, &inner_frame());
    check(
        &pkt,
        Error::UnknownCriticalOption {
            class: VMWARE_OPT_CLASS,
            typ: 0x81,
        },
        "unknown_critical_option",
    );
}

#[test]
fn bad_protocol() {
    let pkt = geneve_packet(0, C, 0x0800, 1, &vmware(1), &inner_frame());
    check(&pkt, Error::BadProtocol(0x0800), "bad_protocol");
}

#[test]
fn missing_critical_flag() {
    let pkt = geneve_packet(0, 0, PROTO_ETHERNET, 1, &vmware(1), &inner_frame());
    check(&pkt, Error::MissingCriticalFlag, "missing_critical_flag");
}

#[test]
fn bad_vmware_option_length() {
    let o = opt(VMWARE_OPT_CLASS, VMWARE_OPT_TYPE, &[0, 0, 0, 1, 0, 0, 0, 0]);
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &o, &inner_frame());
    check(&pkt, Error::BadVmwareOption, "bad_vmware_option");
    let o = opt(VMWARE_OPT_CLASS, VMWARE_OPT_TYPE, &[]);
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &o, &inner_frame());
    check(&pkt, Error::BadVmwareOption, "bad_vmware_option");
}

#[test]
fn bad_vmware_option_top_bit() {
    let pkt = geneve_packet(
        0,
        C,
        PROTO_ETHERNET,
        1,
        &vmware(0x8000_0000),
        &inner_frame(),
    );
    check(&pkt, Error::BadVmwareOption, "bad_vmware_option");
    let pkt = geneve_packet(
        0,
        C,
        PROTO_ETHERNET,
        1,
        &vmware(0x7fff_ffff),
        &inner_frame(),
    );
    assert_eq!(parse(&pkt).expect("max tep id").tep_id, Some(0x7fff_ffff));
}

#[test]
fn bad_vmware_option_duplicate() {
    let mut area = vmware(1);
    area.extend(vmware(2));
    let pkt = geneve_packet(0, C, PROTO_ETHERNET, 1, &area, &inner_frame());
    check(&pkt, Error::BadVmwareOption, "bad_vmware_option");
}

#[test]
fn vni_too_large_on_emit() {
    let mut b = [0u8; 16];
    let e = gnv::emit_vmware(&mut b, 0x0100_0000, 1).expect_err("vni too large");
    assert_eq!(e, Error::VniTooLarge(0x0100_0000));
    assert_eq!(e.reason(), "vni_too_large");
}

#[test]
fn every_reason_is_covered() {
    let names = [
        "truncated",
        "bad_version",
        "options_overrun",
        "bad_option_length",
        "unknown_critical_option",
        "bad_protocol",
        "missing_critical_flag",
        "bad_vmware_option",
        "vni_too_large",
    ];
    assert_eq!(ALL_REASONS, names);
}

#[test]
fn unknown_non_critical_option_skipped() {
    let o = opt(0x0200, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let pkt = geneve_packet(0, 0, PROTO_ETHERNET, 0x00ab_cdef, &o, &inner_frame());
    let p = parse(&pkt).expect("valid");
    assert_eq!((p.vni, p.tep_id), (0x00ab_cdef, None));
    assert_eq!(p.payload, &inner_frame()[..]);
}

#[test]
fn two_options_unknown_non_critical_and_vmware() {
    for vmware_first in [false, true] {
        let unknown = opt(0x0300, 0x7f, &[9, 9, 9, 9]);
        let mut area = Vec::new();
        if vmware_first {
            area.extend(vmware(0x1234_5678));
            area.extend(&unknown);
        } else {
            area.extend(&unknown);
            area.extend(vmware(0x1234_5678));
        }
        let pkt = geneve_packet(0, C | O, PROTO_ETHERNET, 7, &area, &inner_frame());
        let p = parse(&pkt).expect("valid");
        assert_eq!((p.vni, p.oam, p.tep_id), (7, true, Some(0x1234_5678)));
        assert_eq!(p.payload, &inner_frame()[..]);
        let h = gnv::Header::new_checked(&pkt[..]).expect("header");
        assert_eq!(h.options().count(), 2);
    }
}

#[test]
fn reserved_bits_ignored() {
    let mut pkt = good();
    pkt[1] |= 0x3f; // reserved flag bits
    pkt[7] = 0xff; // reserved byte after VNI
    pkt[11] |= 0xe0; // option R bits
    let p = parse(&pkt).expect("reserved bits are ignored on receipt");
    assert_eq!((p.vni, p.tep_id), (0x238c, Some(42)));
}

#[test]
fn header_setters_round_trip() {
    let mut b = [0u8; 16 + 14];
    let mut h = gnv::Header::new_unchecked(&mut b[..]);
    h.set_version(0);
    h.set_opt_len_bytes(8);
    h.set_oam(true);
    h.set_critical(true);
    h.set_oam(false);
    h.set_protocol(PROTO_ETHERNET);
    h.set_vni(0xff_abcdef); // masked to 24 bits
    h.options_area_mut().copy_from_slice(&vmware(5));
    h.payload_mut().fill(0xee);
    let h = gnv::Header::new_checked(&b[..]).expect("header");
    assert_eq!(
        (h.version(), h.opt_len_bytes(), h.oam(), h.critical()),
        (0, 8, false, true)
    );
    assert_eq!((h.protocol(), h.vni()), (PROTO_ETHERNET, 0xabcdef));
    let p = parse(&b).expect("valid");
    assert_eq!(p.tep_id, Some(5));
}
