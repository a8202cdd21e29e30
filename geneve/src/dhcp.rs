//! DHCPv4 for a server on the logical switch (RFC 2131; options RFC 2132,
//! classless static routes RFC 3442): a view over a client's BOOTP message
//! (the UDP payload) with its options, and the builder of the server's
//! reply frame (Ethernet + IPv4 + UDP + BOOTP).
//!
//! [`Packet::new_checked`] validates the fixed part, the magic cookie and
//! every option's length once, so the accessors and the option iterator
//! cannot fail afterwards. Option overload (52) is not followed: the
//! options a server needs from a client are in the options field.

use core::net::Ipv4Addr;

use crate::{MacAddr, ethernet, ipv4, udp};

/// The server's UDP port.
pub const SERVER_PORT: u16 = 67;
/// The client's UDP port.
pub const CLIENT_PORT: u16 = 68;
/// BOOTREQUEST.
pub const OP_REQUEST: u8 = 1;
/// BOOTREPLY.
pub const OP_REPLY: u8 = 2;
/// The `flags` bit asking for a broadcast reply.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// Fixed BOOTP fields (236 bytes) and the magic cookie.
pub const MIN_LEN: usize = OPTIONS;
/// Replies are padded to the 300 bytes of a BOOTP message (RFC 1542).
pub const MIN_REPLY_LEN: usize = 300;
/// The magic cookie that starts the options (RFC 2131 3).
pub const COOKIE: [u8; 4] = [99, 130, 83, 99];

const OPTIONS: usize = 240;

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const XID: Range<usize> = 4..8;
    pub const SECS: Range<usize> = 8..10;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const SIADDR: Range<usize> = 20..24;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..34;
    pub const COOKIE: Range<usize> = 236..240;
}

/// Option codes used here.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMS: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL_T1: u8 = 58;
    pub const REBINDING_T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// DHCP message type (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
        }
    }

    /// `DHCPDISCOVER` etc.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Offer => "DHCPOFFER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Ack => "DHCPACK",
            MessageType::Nak => "DHCPNAK",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
        }
    }
}

/// Errors of the view and the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("BOOTP message shorter than {MIN_LEN} bytes")]
    Truncated,
    #[error("not an Ethernet BOOTP message (htype {htype}, hlen {hlen})")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie")]
    BadCookie,
    #[error("DHCP option {code} runs past the message")]
    OptionOverrun { code: u8 },
    #[error("DHCP option {code} has a bad length {len}")]
    BadOptionLength { code: u8, len: u8 },
    #[error("a reply option does not fit in 255 bytes (option {code})")]
    OptionTooLong { code: u8 },
    #[error("output buffer too short: need {need}, have {have}")]
    BufferTooShort { need: usize, have: usize },
    #[error(transparent)]
    Ipv4(#[from] ipv4::Error),
    #[error(transparent)]
    Udp(#[from] udp::Error),
}

/// A read-only view over a BOOTP message with DHCP options.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the fixed part, the cookie and that every option lies within
    /// the message.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < MIN_LEN {
            return Err(Error::Truncated);
        }
        let (htype, hlen) = (b[field::HTYPE], b[field::HLEN]);
        if htype != 1 || hlen != 6 {
            return Err(Error::NotEthernet { htype, hlen });
        }
        if b[field::COOKIE] != COOKIE {
            return Err(Error::BadCookie);
        }
        let mut i = OPTIONS;
        while let Some(&code) = b.get(i) {
            match code {
                opt::PAD => i += 1,
                opt::END => break,
                _ => {
                    let Some(&len) = b.get(i + 1) else {
                        return Err(Error::OptionOverrun { code });
                    };
                    let end = i + 2 + usize::from(len);
                    if end > b.len() {
                        return Err(Error::OptionOverrun { code });
                    }
                    i = end;
                }
            }
        }
        Ok(Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn addr(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.b()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn op(&self) -> u8 {
        self.b()[field::OP]
    }

    pub fn xid(&self) -> u32 {
        let b = &self.b()[field::XID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn secs(&self) -> u16 {
        let b = &self.b()[field::SECS];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn flags(&self) -> u16 {
        let b = &self.b()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn ciaddr(&self) -> Ipv4Addr {
        self.addr(field::CIADDR)
    }

    pub fn yiaddr(&self) -> Ipv4Addr {
        self.addr(field::YIADDR)
    }

    pub fn siaddr(&self) -> Ipv4Addr {
        self.addr(field::SIADDR)
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.addr(field::GIADDR)
    }

    pub fn chaddr(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.b()[field::CHADDR]);
        m
    }

    /// The options, in order (pads and the end left out).
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.b()[OPTIONS..],
        }
    }

    /// The first option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options().find(|(c, _)| *c == code).map(|(_, d)| d)
    }

    /// The message type (option 53), if present and known.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(opt::MESSAGE_TYPE) {
            Some([t]) => MessageType::from_u8(*t),
            _ => None,
        }
    }

    /// An option holding one address (50 requested IP, 54 server id).
    pub fn addr_option(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code) {
            Some(&[a, b, c, d]) => Some(Ipv4Addr::new(a, b, c, d)),
            _ => None,
        }
    }
}

/// The options of a checked [`Packet`]: `(code, data)`.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                opt::PAD => self.rest = tail,
                opt::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let (&len, tail) = tail.split_first()?;
                    let len = usize::from(len);
                    let data = tail.get(..len)?;
                    self.rest = tail.get(len..).unwrap_or(&[]);
                    return Some((code, data));
                }
            }
        }
    }
}

/// A server's reply, as [`emit_reply`] writes it.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub msg: MessageType,
    /// The client's transaction id, flags, ciaddr, giaddr and chaddr.
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    /// The address given (0.0.0.0 for an ACK to an INFORM, and for a NAK).
    pub yiaddr: Ipv4Addr,
    /// Option 54, always present.
    pub server_id: Ipv4Addr,
    /// Option 51, with T1 (58) = 1/2 and T2 (59) = 7/8 of it.
    pub lease_secs: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: &'a [Ipv4Addr],
    pub domain: Option<&'a str>,
    /// Option 26 (interface MTU).
    pub mtu: Option<u16>,
    /// Option 121 routes `(destination, prefix length, next hop)`; when
    /// present, the default route via `router` is added to them (a client
    /// that takes 121 ignores option 3, RFC 3442).
    pub routes: &'a [(Ipv4Addr, u8, Ipv4Addr)],
    /// Option 56 (a NAK's reason).
    pub message: Option<&'a str>,
}

impl Reply<'_> {
    /// Where the reply goes (RFC 2131 4.1, no relay agents): a NAK and a
    /// reply asking for broadcast to 255.255.255.255; a client that has an
    /// address (`ciaddr`) to it; otherwise to the address given, at the
    /// client's hardware address.
    pub fn destination(&self) -> (MacAddr, Ipv4Addr) {
        if self.msg == MessageType::Nak || self.flags & FLAG_BROADCAST != 0 {
            ([0xff; 6], Ipv4Addr::BROADCAST)
        } else if !self.ciaddr.is_unspecified() {
            (self.chaddr, self.ciaddr)
        } else {
            (self.chaddr, self.yiaddr)
        }
    }
}

/// Writes `r` as a BOOTP message into `buf`; returns its length (at least
/// [`MIN_REPLY_LEN`]).
pub fn emit_reply(buf: &mut [u8], r: &Reply<'_>) -> Result<usize, Error> {
    let mut w = Writer { buf, at: 0 };
    w.zeros(MIN_LEN)?;
    let b = &mut w.buf[..MIN_LEN];
    b[field::OP] = OP_REPLY;
    b[field::HTYPE] = 1;
    b[field::HLEN] = 6;
    b[field::XID].copy_from_slice(&r.xid.to_be_bytes());
    b[field::FLAGS].copy_from_slice(&r.flags.to_be_bytes());
    b[field::CIADDR].copy_from_slice(&r.ciaddr.octets());
    b[field::YIADDR].copy_from_slice(&r.yiaddr.octets());
    b[field::GIADDR].copy_from_slice(&r.giaddr.octets());
    b[field::CHADDR].copy_from_slice(&r.chaddr);
    b[field::COOKIE].copy_from_slice(&COOKIE);
    w.option(opt::MESSAGE_TYPE, &[r.msg.code()])?;
    w.option(opt::SERVER_ID, &r.server_id.octets())?;
    if let Some(l) = r.lease_secs {
        w.option(opt::LEASE_TIME, &l.to_be_bytes())?;
        w.option(opt::RENEWAL_T1, &(l / 2).to_be_bytes())?;
        let t2 = u32::try_from(u64::from(l) * 7 / 8).unwrap_or(u32::MAX);
        w.option(opt::REBINDING_T2, &t2.to_be_bytes())?;
    }
    if let Some(m) = r.subnet_mask {
        w.option(opt::SUBNET_MASK, &m.octets())?;
    }
    if let Some(gw) = r.router {
        w.option(opt::ROUTER, &gw.octets())?;
    }
    if !r.dns.is_empty() {
        w.option_with(opt::DNS, r.dns.len().saturating_mul(4), |o| {
            for (chunk, a) in o.chunks_exact_mut(4).zip(r.dns) {
                chunk.copy_from_slice(&a.octets());
            }
        })?;
    }
    if let Some(d) = r.domain {
        w.option(opt::DOMAIN, d.as_bytes())?;
    }
    if let Some(mtu) = r.mtu {
        w.option(opt::MTU, &mtu.to_be_bytes())?;
    }
    if !r.routes.is_empty() {
        let default = r.router.map(|gw| (Ipv4Addr::UNSPECIFIED, 0u8, gw));
        let all = || r.routes.iter().copied().chain(default);
        let len = all()
            .map(|(_, p, _)| 1 + usize::from(p.min(32)).div_ceil(8) + 4)
            .sum();
        w.option_with(opt::CLASSLESS_ROUTES, len, |o| {
            let mut at = 0;
            for (dst, prefix, via) in all() {
                let prefix = prefix.min(32);
                let n = usize::from(prefix).div_ceil(8);
                o[at] = prefix;
                o[at + 1..at + 1 + n].copy_from_slice(&dst.octets()[..n]);
                o[at + 1 + n..at + 5 + n].copy_from_slice(&via.octets());
                at += 5 + n;
            }
        })?;
    }
    if let Some(m) = r.message {
        w.option(opt::MESSAGE, m.as_bytes())?;
    }
    w.bytes(&[opt::END])?;
    if w.at < MIN_REPLY_LEN {
        w.zeros(MIN_REPLY_LEN - w.at)?;
    }
    Ok(w.at)
}

/// Bytes of the reply frame [`emit_reply_frame`] writes for `r`, at most.
pub const MAX_REPLY_FRAME: usize = 1024;

/// Writes the whole reply frame: Ethernet from `server_mac` to the
/// destination's MAC, IPv4 from `server_id`, UDP 67 -> 68 with its
/// checksum. Returns the frame's length.
pub fn emit_reply_frame(
    buf: &mut [u8],
    server_mac: MacAddr,
    r: &Reply<'_>,
) -> Result<usize, Error> {
    let l4 = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    let payload_at = l4 + udp::HEADER_LEN;
    let have = buf.len();
    let Some(payload) = buf.get_mut(payload_at..) else {
        return Err(Error::BufferTooShort {
            need: payload_at,
            have,
        });
    };
    let len = emit_reply(payload, r)?;
    let (dst_mac, dst_ip) = r.destination();
    ethernet::emit_header(buf, dst_mac, server_mac, ethernet::ETHERTYPE_IPV4).map_err(|_| {
        Error::BufferTooShort {
            need: ethernet::HEADER_LEN,
            have,
        }
    })?;
    ipv4::emit_header(
        &mut buf[ethernet::HEADER_LEN..],
        r.server_id,
        dst_ip,
        ipv4::PROTO_UDP,
        udp::HEADER_LEN + len,
        64,
        false,
        0,
    )?;
    let seg = &mut buf[l4..payload_at + len];
    udp::emit_header(seg, SERVER_PORT, CLIENT_PORT, len)?;
    let mut u = udp::Packet::new_unchecked(seg);
    u.fill_checksum_v4(r.server_id, dst_ip);
    Ok(payload_at + len)
}

/// Appends to a buffer, failing instead of panicking when it is full.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn take(&mut self, n: usize) -> Result<&mut [u8], Error> {
        let have = self.buf.len();
        let end = self.at.saturating_add(n);
        let Some(out) = self.buf.get_mut(self.at..end) else {
            return Err(Error::BufferTooShort { need: end, have });
        };
        self.at = end;
        Ok(out)
    }

    fn zeros(&mut self, n: usize) -> Result<(), Error> {
        self.take(n)?.fill(0);
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        self.take(b.len())?.copy_from_slice(b);
        Ok(())
    }

    fn option(&mut self, code: u8, data: &[u8]) -> Result<(), Error> {
        self.option_with(code, data.len(), |o| o.copy_from_slice(data))
    }

    fn option_with(
        &mut self,
        code: u8,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Error> {
        let Ok(len8) = u8::try_from(len) else {
            return Err(Error::OptionTooLong { code });
        };
        let o = self.take(2 + len)?;
        o[0] = code;
        o[1] = len8;
        fill(&mut o[2..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const CLIENT: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];

    /// A client message as a client writes it.
    fn client_msg(t: MessageType, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; MIN_LEN];
        b[field::OP] = OP_REQUEST;
        b[field::HTYPE] = 1;
        b[field::HLEN] = 6;
        b[field::XID].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[field::FLAGS].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
        b[field::CHADDR].copy_from_slice(&CLIENT);
        b[field::COOKIE].copy_from_slice(&COOKIE);
        b.extend_from_slice(&[opt::MESSAGE_TYPE, 1, t.code(), opt::PAD]);
        for (code, data) in options {
            b.push(*code);
            b.push(u8::try_from(data.len()).expect("short"));
            b.extend_from_slice(data);
        }
        b.push(opt::END);
        b
    }

    #[test]
    fn a_client_message_reads_back() {
        let b = client_msg(
            MessageType::Request,
            &[
                (opt::REQUESTED_IP, &[10, 0, 0, 5]),
                (opt::SERVER_ID, &[10, 0, 0, 1]),
            ],
        );
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.op(), OP_REQUEST);
        assert_eq!(p.xid(), 0x1234_5678);
        assert_eq!(p.flags(), FLAG_BROADCAST);
        assert_eq!(p.chaddr(), CLIENT);
        assert_eq!(p.message_type(), Some(MessageType::Request));
        assert_eq!(
            p.addr_option(opt::REQUESTED_IP),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(
            p.addr_option(opt::SERVER_ID),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(p.addr_option(opt::ROUTER), None);
    }

    #[test]
    fn bad_messages_are_errors() {
        let good = client_msg(MessageType::Discover, &[]);
        assert_eq!(
            Packet::new_checked(&good[..100]).err(),
            Some(Error::Truncated)
        );
        let mut b = good.clone();
        b[field::COOKIE.start] = 0;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::BadCookie));
        let mut b = good.clone();
        b[field::HLEN] = 16;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::NotEthernet { .. })
        ));
        // An option whose length runs past the end.
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[opt::HOSTNAME, 40, b'a']);
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(Error::OptionOverrun {
                code: opt::HOSTNAME
            })
        );
        // No END: the options run to the end of the message, which is fine.
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[opt::MESSAGE_TYPE, 1, 1]);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.message_type(), Some(MessageType::Discover));
    }

    fn offer<'a>(dns: &'a [Ipv4Addr], routes: &'a [(Ipv4Addr, u8, Ipv4Addr)]) -> Reply<'a> {
        Reply {
            msg: MessageType::Offer,
            xid: 7,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: CLIENT,
            yiaddr: Ipv4Addr::new(192, 168, 100, 3),
            server_id: Ipv4Addr::new(192, 168, 100, 1),
            lease_secs: Some(3600),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            router: Some(Ipv4Addr::new(192, 168, 100, 1)),
            dns,
            domain: Some("corp.example"),
            mtu: Some(1442),
            routes,
            message: None,
        }
    }

    #[test]
    fn a_reply_frame_carries_every_option() {
        let dns = [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 1, 53)];
        let routes = [(
            Ipv4Addr::new(10, 20, 0, 0),
            16,
            Ipv4Addr::new(192, 168, 100, 254),
        )];
        let r = offer(&dns, &routes);
        let mut buf = [0u8; MAX_REPLY_FRAME];
        let n = emit_reply_frame(&mut buf, [2, 0x50, 0x56, 0x56, 0x44, 0x52], &r).expect("fits");
        let eth = ethernet::Frame::new_checked(&buf[..n]).expect("eth");
        assert_eq!(eth.dst(), CLIENT);
        let ip = ipv4::Packet::new_checked(eth.payload()).expect("ip");
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst(), Ipv4Addr::new(192, 168, 100, 3));
        let u = udp::Packet::new_checked(ip.payload()).expect("udp");
        assert!(u.verify_checksum_v4(ip.src(), ip.dst()));
        assert_eq!((u.src_port(), u.dst_port()), (SERVER_PORT, CLIENT_PORT));
        assert!(u.payload().len() >= MIN_REPLY_LEN);
        let p = Packet::new_checked(u.payload()).expect("bootp");
        assert_eq!(p.op(), OP_REPLY);
        assert_eq!(p.xid(), 7);
        assert_eq!(p.yiaddr(), Ipv4Addr::new(192, 168, 100, 3));
        assert_eq!(p.message_type(), Some(MessageType::Offer));
        assert_eq!(p.addr_option(opt::SERVER_ID), Some(r.server_id));
        assert_eq!(p.option(opt::LEASE_TIME), Some(&3600u32.to_be_bytes()[..]));
        assert_eq!(p.option(opt::RENEWAL_T1), Some(&1800u32.to_be_bytes()[..]));
        assert_eq!(
            p.option(opt::REBINDING_T2),
            Some(&3150u32.to_be_bytes()[..])
        );
        assert_eq!(p.option(opt::MTU), Some(&1442u16.to_be_bytes()[..]));
        assert_eq!(p.option(opt::DOMAIN), Some(&b"corp.example"[..]));
        assert_eq!(p.option(opt::DNS), Some(&[10, 0, 0, 53, 10, 0, 1, 53][..]));
        // 10.20/16 via .254, then the default route via the router.
        assert_eq!(
            p.option(opt::CLASSLESS_ROUTES),
            Some(&[16, 10, 20, 192, 168, 100, 254, 0, 192, 168, 100, 1][..])
        );
    }

    #[test]
    fn replies_go_where_rfc_2131_says() {
        let mut r = offer(&[], &[]);
        assert_eq!(r.destination(), (CLIENT, r.yiaddr));
        r.flags = FLAG_BROADCAST;
        assert_eq!(r.destination(), ([0xff; 6], Ipv4Addr::BROADCAST));
        r.flags = 0;
        r.ciaddr = Ipv4Addr::new(192, 168, 100, 3);
        r.msg = MessageType::Ack;
        assert_eq!(r.destination(), (CLIENT, r.ciaddr));
        r.msg = MessageType::Nak;
        assert_eq!(r.destination(), ([0xff; 6], Ipv4Addr::BROADCAST));
    }

    #[test]
    fn too_long_options_and_small_buffers_are_errors() {
        let long = "x".repeat(300);
        let mut r = offer(&[], &[]);
        r.domain = Some(&long);
        let mut buf = [0u8; MAX_REPLY_FRAME];
        assert_eq!(
            emit_reply(&mut buf, &r).err(),
            Some(Error::OptionTooLong { code: opt::DOMAIN })
        );
        let r = offer(&[], &[]);
        assert!(matches!(
            emit_reply_frame(&mut buf[..100], [0; 6], &r),
            Err(Error::BufferTooShort { .. })
        ));
    }

    #[test]
    fn any_bytes_are_read_without_panic() {
        // Every prefix and a walk of corrupted option bytes.
        let good = client_msg(
            MessageType::Request,
            &[
                (opt::CLIENT_ID, &[1, 2, 0, 0, 0, 0, 10]),
                (opt::PARAMS, &[1, 3, 6, 15, 26, 121]),
            ],
        );
        for n in 0..=good.len() {
            if let Ok(p) = Packet::new_checked(&good[..n]) {
                let _ = p.options().count();
                let _ = p.message_type();
            }
        }
        for i in MIN_LEN..good.len() {
            for v in [0u8, 1, 2, 53, 254, 255] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(p) = Packet::new_checked(&b[..]) {
                    let _ = p.options().count();
                    let _ = p.addr_option(opt::REQUESTED_IP);
                }
            }
        }
    }
}
