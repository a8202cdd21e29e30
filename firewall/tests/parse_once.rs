//! The datapath parses each frame once at its entry and hands the firewall
//! the result of [`packet::from_checked`] over the Ethernet and IPv4 views
//! it already validated; this holds that to be exactly what the firewall's
//! own [`packet::parse`] makes of the same bytes, for any bytes.

use firewall::packet::{self, ParseError};
use geneve::ethernet::{self, ETHERTYPE_IPV4};
use geneve::ipv4;
use proptest::prelude::*;

/// What the datapath's entry does: Ethernet, then IPv4 when the ethertype
/// says so (its errors are the datapath's own drops), then the firewall's
/// L4 read over the same views.
fn via_views(frame: &[u8]) -> Option<Result<packet::Packet, ParseError>> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let ip = if eth.ethertype() == ETHERTYPE_IPV4 {
        Some(ipv4::Packet::new_checked(eth.payload()).ok()?)
    } else {
        None
    };
    Some(packet::from_checked(&eth, ip.as_ref()))
}

/// A frame that gets past L2/L3 often: a valid Ethernet + IPv4 header
/// (IHL 5, total length covering the rest) in front of arbitrary L4 bytes.
fn ipv4_frame(proto: u8, l4: &[u8], frag: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(l4);
    f
}

proptest! {
    #[test]
    fn from_checked_is_parse_on_any_bytes(frame in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Some(once) = via_views(&frame) {
            prop_assert_eq!(once, packet::parse(&frame));
        }
    }

    #[test]
    fn from_checked_is_parse_on_ipv4_frames(
        proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
        l4 in proptest::collection::vec(any::<u8>(), 0..80),
        frag in prop_oneof![Just(0u16), Just(0x4000u16), any::<u16>()],
    ) {
        let frame = ipv4_frame(proto, &l4, frag);
        let once = via_views(&frame);
        prop_assert!(once.is_some(), "the IPv4 header is valid");
        prop_assert_eq!(once, Some(packet::parse(&frame)));
    }
}

#[test]
fn an_ipv4_ethertype_without_a_view_is_checked_here() {
    // A caller that did not read the IPv4 header gets parse()'s answer.
    let frame = ipv4_frame(6, &[0; 3], 0);
    let eth = ethernet::Frame::new_checked(&frame[..]).expect("ethernet");
    assert_eq!(packet::from_checked(&eth, None), packet::parse(&frame));
    let mut broken = frame.clone();
    broken[14] = 0x65; // version 6 in an IPv4 ethertype
    let eth = ethernet::Frame::new_checked(&broken[..]).expect("ethernet");
    assert_eq!(packet::from_checked(&eth, None), Err(ParseError::Ipv4));
}
