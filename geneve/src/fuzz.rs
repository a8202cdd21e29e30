//! Shared fuzz/regression driver: runs every view, parser and builder of the
//! crate on arbitrary bytes. Used by the cargo-fuzz target and by the
//! corpus regression test; it must never panic.

use core::hint::black_box;
use core::net::Ipv4Addr;

use crate::{arp, dhcp, ethernet, geneve, icmpv4, ipv4, outer, tcp, udp};

const SCRATCH_LEN: usize = 2048;
const MAC: crate::MacAddr = [0x02, 0, 0, 0, 0, 1];
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Runs every `new_checked` view (and its accessors), [`geneve::parse`], the
/// builders and [`outer::flow_src_port`] on `data`, interpreted at each
/// layer it could be (UDP payload, Ethernet frame, IPv4 packet, ...).
#[doc(hidden)]
pub fn fuzz_all(data: &[u8]) {
    // As a Geneve UDP payload.
    if let Ok(p) = geneve::parse(data) {
        black_box((p.vni, p.oam, p.tep_id));
        frame(p.payload);
    }
    if let Ok(h) = geneve::Header::new_checked(data) {
        black_box((
            h.version(),
            h.opt_len_bytes(),
            h.oam(),
            h.critical(),
            h.protocol(),
            h.vni(),
        ));
        black_box((h.reserved_flags(), h.reserved(), h.payload().len()));
        for o in h.options().flatten() {
            black_box((
                o.class,
                o.typ,
                o.critical,
                o.data.len(),
                o.vmware_tep_id().ok(),
            ));
        }
    }
    // As a full Ethernet frame, and as each inner layer directly.
    frame(data);
    ip(data);
    black_box(arp_view(data));
    udp_view(data, IP, IP);
    fuzz_tcp(data);
    icmp_view(data);
    fuzz_dhcp(data);

    // Mutating operations on a scratch copy.
    let mut scratch = [0u8; SCRATCH_LEN];
    let n = data.len().min(SCRATCH_LEN);
    scratch[..n].copy_from_slice(&data[..n]);
    if let Ok(mut p) = ipv4::Packet::new_checked(&mut scratch[..n]) {
        let before = p.verify_checksum();
        p.decrement_ttl();
        if before && p.ttl() != 0 {
            // Hold the invariant in debug fuzzing builds.
            debug_assert!(p.verify_checksum());
        }
        p.fill_checksum();
        black_box(p.payload_mut().len());
    }

    // Builders fed with the input.
    let mut out = [0u8; SCRATCH_LEN];
    black_box(icmpv4::emit_echo_reply_frame(&mut out, data, MAC).ok());
    black_box(icmpv4::emit_echo_reply_frame(&mut out[..64], data, MAC).ok());
    let rest = data
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    black_box(
        icmpv4::emit_error_frame(
            &mut out,
            data,
            MAC,
            IP,
            icmpv4::TYPE_DEST_UNREACH,
            icmpv4::CODE_FRAG_NEEDED,
            rest,
        )
        .ok(),
    );
    black_box(icmpv4::emit_error_frame(&mut out[..60], data, MAC, IP, 11, 0, 0).ok());
    if let Ok(a) = arp::Packet::new_checked(data) {
        black_box(arp::emit_reply_frame(&mut out, MAC, IP, a.sender_mac(), a.sender_ip()).ok());
    }
    black_box(outer::flow_src_port(data));
    let vni = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let tep_id = data
        .get(8..12)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    black_box(geneve::emit_vmware(&mut out[..data.len().min(32)], vni, tep_id).ok());
    let encap = outer::Encap {
        src: IP,
        dst: IP,
        src_port: outer::flow_src_port(data),
        vni,
        tep_id,
    };
    let inner_len = n.saturating_sub(outer::OVERHEAD);
    if let Ok(len) = outer::emit(&mut scratch[..n], &encap, inner_len) {
        // Whatever was emitted must parse back.
        let udp_start = ipv4::MIN_HEADER_LEN;
        let ok = udp::Packet::new_checked(&scratch[udp_start..len])
            .is_ok_and(|u| u.verify_checksum_v4(IP, IP) && u.dst_port() == geneve::GENEVE_PORT);
        debug_assert!(ok);
        black_box(ok);
    }
}

fn frame(data: &[u8]) {
    let Ok(f) = ethernet::Frame::new_checked(data) else {
        return;
    };
    black_box((f.dst(), f.src(), ethernet::is_multicast(&f.dst())));
    black_box(outer::flow_src_port(data));
    match f.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            black_box(arp_view(f.payload()));
        }
        ethernet::ETHERTYPE_IPV4 => ip(f.payload()),
        _ => {}
    }
}

fn arp_view(data: &[u8]) -> Option<(u16, Ipv4Addr, Ipv4Addr)> {
    let a = arp::Packet::new_checked(data).ok()?;
    black_box((a.sender_mac(), a.target_mac()));
    Some((a.operation(), a.sender_ip(), a.target_ip()))
}

fn ip(data: &[u8]) {
    let Ok(p) = ipv4::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.version(),
        p.header_len(),
        p.tos(),
        p.total_len(),
        p.ident(),
    ));
    black_box((
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
        p.ttl(),
        p.checksum(),
    ));
    black_box(p.verify_checksum());
    match p.protocol() {
        ipv4::PROTO_UDP => udp_view(p.payload(), p.src(), p.dst()),
        ipv4::PROTO_TCP => tcp_view(p.payload(), p.src(), p.dst()),
        ipv4::PROTO_ICMP => icmp_view(p.payload()),
        _ => {}
    }
}

fn udp_view(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(u) = udp::Packet::new_checked(data) else {
        return;
    };
    black_box((u.src_port(), u.dst_port(), u.len(), u.checksum()));
    black_box(u.verify_checksum_v4(src, dst));
    if let Ok(p) = geneve::parse(u.payload()) {
        black_box(p.payload.len());
    }
}

/// Runs the TCP view, its options iterator and the option and header
/// emitters on `data` taken as a TCP segment. Every option read is emitted
/// again and must parse back to itself.
#[doc(hidden)]
pub fn fuzz_tcp(data: &[u8]) {
    tcp_view(data, IP, IP);
    // The options iterator on its own, as if `data` were an options area.
    options(tcp::Options::new(data));
}

fn tcp_view(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(t) = tcp::Packet::new_checked(data) else {
        return;
    };
    black_box((t.src_port(), t.dst_port(), t.seq_number(), t.ack_number()));
    black_box((t.header_len(), t.reserved(), t.flags(), t.window()));
    black_box((t.checksum(), t.urgent(), t.payload().len()));
    black_box(t.verify_checksum_v4(src, dst));
    options(t.options());
    let mut scratch = [0u8; SCRATCH_LEN];
    let n = data.len().min(SCRATCH_LEN);
    scratch[..n].copy_from_slice(&data[..n]);
    if let Ok(mut m) = tcp::Packet::new_checked(&mut scratch[..n]) {
        m.fill_checksum_v4(src, dst);
        debug_assert!(m.verify_checksum_v4(src, dst));
    }
    let repr = tcp::Repr {
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        seq_number: t.seq_number(),
        ack_number: t.ack_number(),
        flags: t.flags(),
        window: t.window(),
        urgent: t.urgent(),
        options: &[],
    };
    black_box(
        repr.emit(&mut scratch[..data.len().min(tcp::HEADER_LEN)])
            .ok(),
    );
}

fn options(opts: tcp::Options<'_>) {
    let mut out = [0u8; tcp::MAX_HEADER_LEN];
    for o in opts {
        let Ok(o) = o else {
            black_box(o.err());
            continue;
        };
        black_box((o.kind(), o.buffer_len()));
        if let Ok(n) = o.emit(&mut out) {
            let back = tcp::Options::new(&out[..n]).next();
            debug_assert_eq!(back, Some(Ok(o)));
            black_box(back);
        }
    }
}

fn icmp_view(data: &[u8]) {
    let Ok(i) = icmpv4::Packet::new_checked(data) else {
        return;
    };
    black_box((i.msg_type(), i.code(), i.checksum(), i.verify_checksum()));
    black_box((
        i.echo_ident(),
        i.echo_seq(),
        i.rest_of_header(),
        i.data().len(),
    ));
}

/// The DHCP view (as a UDP payload) and a reply built from what it read.
fn fuzz_dhcp(data: &[u8]) {
    let Ok(p) = dhcp::Packet::new_checked(data) else {
        return;
    };
    black_box((p.op(), p.xid(), p.secs(), p.flags(), p.ciaddr(), p.siaddr()));
    black_box(p.options().count());
    let requested = p.addr_option(dhcp::opt::REQUESTED_IP);
    let reply = dhcp::Reply {
        msg: p.message_type().unwrap_or(dhcp::MessageType::Nak),
        xid: p.xid(),
        flags: p.flags(),
        ciaddr: p.ciaddr(),
        giaddr: p.giaddr(),
        chaddr: p.chaddr(),
        yiaddr: requested.unwrap_or(IP),
        server_id: p.addr_option(dhcp::opt::SERVER_ID).unwrap_or(IP),
        lease_secs: Some(p.xid()),
        subnet_mask: Some(p.yiaddr()),
        router: Some(IP),
        dns: &[IP, IP],
        domain: core::str::from_utf8(p.option(dhcp::opt::HOSTNAME).unwrap_or(&[])).ok(),
        mtu: Some(p.secs()),
        routes: &[(IP, 33, IP), (IP, 0, IP)],
        message: None,
    };
    let mut out = [0u8; dhcp::MAX_REPLY_FRAME];
    black_box(dhcp::emit_reply_frame(&mut out, MAC, &reply).ok());
    black_box(dhcp::emit_reply_frame(&mut out[..300], MAC, &reply).ok());
}
