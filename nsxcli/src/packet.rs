//! Packets described on the command line (`icmp src 192.168.100.3 dst
//! 192.168.99.9 ttl 64`, `tcp ... dport 22 flags S`) and the Ethernet
//! frames built from them for `trace`, with correct IPv4, ICMP, UDP and TCP
//! checksums (the `geneve` crate's emitters and checksum helpers).

use std::net::Ipv4Addr;

use geneve::{MacAddr, arp, ethernet, icmpv4, ipv4, tcp, udp};

use crate::grammar::{ArgKind, Next};

/// The protocol of a described packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// ARP request: who has `dst`, tell `src`.
    Arp,
    /// ICMP (echo request unless `type`/`code` say otherwise).
    Icmp,
    /// TCP segment.
    Tcp,
    /// UDP datagram.
    Udp,
}

impl Proto {
    /// Lower-case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A packet as described on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSpec {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Source port (tcp/udp; default 40000).
    pub sport: u16,
    /// Destination port (tcp/udp; required for them).
    pub dport: u16,
    /// TCP flags byte (default SYN).
    pub flags: u8,
    /// ICMP type (default 8, echo request).
    pub icmp_type: u8,
    /// ICMP code (default 0).
    pub icmp_code: u8,
    /// IPv4 TTL (default 64).
    pub ttl: u8,
    /// Payload bytes after the L4 header (default 56 for ICMP, 0 otherwise).
    pub size: Option<usize>,
    /// Don't-fragment flag.
    pub df: bool,
    /// Source MAC (default: decided by the caller, e.g. the port's MAC).
    pub smac: Option<MacAddr>,
    /// Destination MAC (default: decided by the caller).
    pub dmac: Option<MacAddr>,
}

/// Default TCP/UDP source port.
pub const DEFAULT_SPORT: u16 = 40_000;
/// Default ICMP payload (like ping: 56 bytes, IP length 84).
pub const DEFAULT_ICMP_SIZE: usize = 56;
/// The IPv4 identification used for built packets.
const IDENT: u16 = 0x4e53;
/// ICMP echo identifier and sequence of built echo requests.
const ECHO_ID: u16 = 0x4e53;
const ECHO_SEQ: u16 = 1;
/// TCP sequence number of built segments (and ack number when ACK is set).
const TCP_SEQ: u32 = 1_000;
const TCP_ACK: u32 = 1;
const TCP_WINDOW: u16 = 64_240;

/// TCP flag letters (tcpdump's, `.` = ACK too).
const TCP_FLAGS: [(char, u8); 8] = [
    ('F', 0x01),
    ('S', 0x02),
    ('R', 0x04),
    ('P', 0x08),
    ('A', 0x10),
    ('U', 0x20),
    ('E', 0x40),
    ('C', 0x80),
];

/// The protocols: keyword and help.
pub const PROTOS: [(&str, &str); 4] = [
    ("arp", "ARP request: who has <dst>, tell <src>"),
    ("icmp", "ICMP echo request (or another type/code)"),
    ("tcp", "TCP segment (SYN unless flags say otherwise)"),
    ("udp", "UDP datagram"),
];

/// A packet keyword: word, value kind and placeholder (None = flag), help,
/// protocols it applies to.
struct Key {
    word: &'static str,
    value: Option<(ArgKind, &'static str)>,
    help: &'static str,
    protos: &'static [Proto],
}

const ALL: &[Proto] = &[Proto::Arp, Proto::Icmp, Proto::Tcp, Proto::Udp];
const IP: &[Proto] = &[Proto::Icmp, Proto::Tcp, Proto::Udp];
const L4: &[Proto] = &[Proto::Tcp, Proto::Udp];

const KEYS: &[Key] = &[
    Key {
        word: "src",
        value: Some((ArgKind::Ip, "<ip>")),
        help: "Source IPv4 address",
        protos: ALL,
    },
    Key {
        word: "dst",
        value: Some((ArgKind::Ip, "<ip>")),
        help: "Destination IPv4 address",
        protos: ALL,
    },
    Key {
        word: "sport",
        value: Some((ArgKind::Number, "<port>")),
        help: "Source port (default 40000)",
        protos: L4,
    },
    Key {
        word: "dport",
        value: Some((ArgKind::Number, "<port>")),
        help: "Destination port",
        protos: L4,
    },
    Key {
        word: "flags",
        value: Some((ArgKind::Word, "<SAFRPU>")),
        help: "TCP flags, tcpdump letters (default S)",
        protos: &[Proto::Tcp],
    },
    Key {
        word: "type",
        value: Some((ArgKind::Number, "<0-255>")),
        help: "ICMP type (default 8, echo request)",
        protos: &[Proto::Icmp],
    },
    Key {
        word: "code",
        value: Some((ArgKind::Number, "<0-255>")),
        help: "ICMP code (default 0)",
        protos: &[Proto::Icmp],
    },
    Key {
        word: "ttl",
        value: Some((ArgKind::Number, "<1-255>")),
        help: "IPv4 TTL (default 64)",
        protos: IP,
    },
    Key {
        word: "size",
        value: Some((ArgKind::Number, "<bytes>")),
        help: "Payload bytes (default 56 for icmp, 0 otherwise)",
        protos: IP,
    },
    Key {
        word: "df",
        value: None,
        help: "Set the don't-fragment flag",
        protos: IP,
    },
    Key {
        word: "smac",
        value: Some((ArgKind::Mac, "<mac>")),
        help: "Source MAC (default: the sender's)",
        protos: ALL,
    },
    Key {
        word: "dmac",
        value: Some((ArgKind::Mac, "<mac>")),
        help: "Destination MAC (default: router or ARP table)",
        protos: ALL,
    },
];

fn proto_of(word: &str) -> Option<Proto> {
    match word {
        "arp" => Some(Proto::Arp),
        "icmp" => Some(Proto::Icmp),
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        _ => None,
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || format!("not a MAC address: {s:?}");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn mac_string(m: &MacAddr) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn parse_flags(s: &str) -> Result<u8, String> {
    let mut f = 0u8;
    for c in s.chars() {
        let c = if c == '.' {
            'A'
        } else {
            c.to_ascii_uppercase()
        };
        let Some((_, bit)) = TCP_FLAGS.iter().find(|(l, _)| *l == c) else {
            return Err(format!(
                "bad TCP flag {c:?} in {s:?} (letters F S R P A U E C, . = A)"
            ));
        };
        f |= bit;
    }
    Ok(f)
}

/// tcpdump-style flag letters (`S`, `S.`, `FP.`).
#[must_use]
pub fn flags_string(f: u8) -> String {
    let mut s: String = TCP_FLAGS
        .iter()
        .filter(|(l, bit)| *l != 'A' && f & bit != 0)
        .map(|(l, _)| *l)
        .collect();
    if f & 0x10 != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

fn num<T: TryFrom<u32>>(key: &str, v: &str, min: u32, max: u32) -> Result<T, String> {
    let bad = || format!("invalid {key} {v:?}: {min}..={max}");
    let n = crate::grammar::parse_u32(v).map_err(|_| bad())?;
    if !(min..=max).contains(&n) {
        return Err(bad());
    }
    T::try_from(n).map_err(|_| bad())
}

/// Parses a packet description (the words after `trace port`). The error
/// is one line for the usage message.
pub fn parse(words: &[String]) -> Result<PacketSpec, String> {
    let Some((first, rest)) = words.split_first() else {
        return Err("Missing packet: arp, icmp, tcp or udp".into());
    };
    let Some(proto) = proto_of(first) else {
        return Err(format!(
            "Unknown protocol \"{first}\": arp, icmp, tcp or udp"
        ));
    };
    let mut p = PacketSpec {
        proto,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        sport: DEFAULT_SPORT,
        dport: 0,
        flags: 0x02,
        icmp_type: icmpv4::TYPE_ECHO_REQUEST,
        icmp_code: 0,
        ttl: 64,
        size: None,
        df: false,
        smac: None,
        dmac: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let w = rest[i].as_str();
        let Some(key) = KEYS.iter().find(|k| k.word == w) else {
            return Err(format!("Unknown packet field \"{w}\""));
        };
        if !key.protos.contains(&proto) {
            return Err(format!("\"{w}\" does not apply to {}", proto.name()));
        }
        if seen.contains(&key.word) {
            return Err(format!("\"{w}\" given twice"));
        }
        seen.push(key.word);
        if key.value.is_none() {
            p.df = true;
            i += 1;
            continue;
        }
        let Some(v) = rest.get(i + 1).map(String::as_str) else {
            return Err(format!("\"{w}\" needs a value"));
        };
        let ip = || {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("invalid {w} {v:?}: not an IPv4 address"))
        };
        match key.word {
            "src" => p.src = ip()?,
            "dst" => p.dst = ip()?,
            "sport" => p.sport = num(w, v, 1, 65_535)?,
            "dport" => p.dport = num(w, v, 1, 65_535)?,
            "flags" => p.flags = parse_flags(v)?,
            "type" => p.icmp_type = num(w, v, 0, 255)?,
            "code" => p.icmp_code = num(w, v, 0, 255)?,
            "ttl" => p.ttl = num(w, v, 1, 255)?,
            "size" => p.size = Some(num(w, v, 0, 65_535)?),
            "smac" => p.smac = Some(parse_mac(v)?),
            _ => p.dmac = Some(parse_mac(v)?),
        }
        i += 2;
    }
    for needed in ["src", "dst"] {
        if !seen.contains(&needed) {
            return Err(format!("Missing \"{needed} <ip>\""));
        }
    }
    if matches!(proto, Proto::Tcp | Proto::Udp) && !seen.contains(&"dport") {
        return Err(format!("Missing \"dport <port>\" for {}", proto.name()));
    }
    Ok(p)
}

/// What can follow the packet words `words` (for `?` and Tab).
#[must_use]
pub fn next(words: &[String]) -> Vec<Next> {
    let Some((first, rest)) = words.split_first() else {
        return PROTOS
            .iter()
            .map(|(word, help)| Next::Keyword { word, help })
            .collect();
    };
    let Some(proto) = proto_of(first) else {
        return Vec::new();
    };
    // Walk the pairs to find out whether the last word awaits a value.
    let mut i = 0;
    let mut used: Vec<&str> = Vec::new();
    while i < rest.len() {
        let Some(key) = KEYS.iter().find(|k| k.word == rest[i]) else {
            return Vec::new();
        };
        used.push(key.word);
        match key.value {
            None => i += 1,
            Some((kind, placeholder)) if i + 1 == rest.len() => {
                return vec![Next::Value {
                    kind,
                    placeholder,
                    help: key.help,
                }];
            }
            Some(_) => i += 2,
        }
    }
    let mut out: Vec<Next> = KEYS
        .iter()
        .filter(|k| k.protos.contains(&proto) && !used.contains(&k.word))
        .map(|k| Next::Keyword {
            word: k.word,
            help: k.help,
        })
        .collect();
    let complete = used.contains(&"src")
        && used.contains(&"dst")
        && (!matches!(proto, Proto::Tcp | Proto::Udp) || used.contains(&"dport"));
    if complete {
        out.push(Next::End);
    }
    out
}

impl PacketSpec {
    /// Payload bytes after the L4 header.
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.size.unwrap_or(match self.proto {
            Proto::Icmp => DEFAULT_ICMP_SIZE,
            _ => 0,
        })
    }

    /// One line: `icmp 192.168.100.3 > 192.168.99.9 ttl 64`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self.proto {
            Proto::Arp => format!("arp who-has {} tell {}", self.dst, self.src),
            Proto::Icmp => {
                let what = match (self.icmp_type, self.icmp_code) {
                    (8, 0) => "echo request".to_string(),
                    (0, 0) => "echo reply".to_string(),
                    (t, c) => format!("type {t} code {c}"),
                };
                format!(
                    "icmp {} > {} {what} ttl {}{}",
                    self.src,
                    self.dst,
                    self.ttl,
                    if self.df { " df" } else { "" }
                )
            }
            Proto::Tcp => format!(
                "tcp {}:{} > {}:{} flags {} ttl {}{}",
                self.src,
                self.sport,
                self.dst,
                self.dport,
                flags_string(self.flags),
                self.ttl,
                if self.df { " df" } else { "" }
            ),
            Proto::Udp => format!(
                "udp {}:{} > {}:{} ttl {}{}",
                self.src,
                self.sport,
                self.dst,
                self.dport,
                self.ttl,
                if self.df { " df" } else { "" }
            ),
        }
    }

    /// Builds the Ethernet frame with MACs `smac` > `dmac` (the spec's own
    /// `smac`/`dmac` win when given).
    pub fn build(&self, smac: MacAddr, dmac: MacAddr) -> Result<Vec<u8>, String> {
        let smac = self.smac.unwrap_or(smac);
        let dmac = self.dmac.unwrap_or(dmac);
        let e = |what: &str, err: &dyn std::fmt::Display| format!("cannot build the {what}: {err}");
        if self.proto == Proto::Arp {
            let mut f = vec![0u8; arp::FRAME_LEN];
            ethernet::emit_header(&mut f, dmac, smac, ethernet::ETHERTYPE_ARP)
                .map_err(|x| e("frame", &x))?;
            let mut a = arp::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]);
            a.set_ethernet_ipv4();
            a.set_operation(arp::OP_REQUEST);
            a.set_sender_mac(smac);
            a.set_sender_ip(self.src);
            a.set_target_mac([0; 6]);
            a.set_target_ip(self.dst);
            return Ok(f);
        }
        let payload = self.payload_len();
        let (proto, l4_len) = match self.proto {
            Proto::Icmp => (ipv4::PROTO_ICMP, icmpv4::HEADER_LEN + payload),
            Proto::Udp => (ipv4::PROTO_UDP, udp::HEADER_LEN + payload),
            _ => (ipv4::PROTO_TCP, tcp::HEADER_LEN + payload),
        };
        let ip_len = ipv4::MIN_HEADER_LEN + l4_len;
        if ip_len > ipv4::MAX_TOTAL_LEN {
            return Err(format!(
                "packet too large: {ip_len} bytes of IPv4 (at most {})",
                ipv4::MAX_TOTAL_LEN
            ));
        }
        let mut f = vec![0u8; ethernet::HEADER_LEN + ip_len];
        ethernet::emit_header(&mut f, dmac, smac, ethernet::ETHERTYPE_IPV4)
            .map_err(|x| e("frame", &x))?;
        let ip = &mut f[ethernet::HEADER_LEN..];
        ipv4::emit_header(
            ip, self.src, self.dst, proto, l4_len, self.ttl, self.df, IDENT,
        )
        .map_err(|x| e("IPv4 header", &x))?;
        let l4 = &mut ip[ipv4::MIN_HEADER_LEN..];
        let hdr = match self.proto {
            Proto::Icmp => icmpv4::HEADER_LEN,
            Proto::Udp => udp::HEADER_LEN,
            _ => tcp::HEADER_LEN,
        };
        for (b, v) in l4[hdr..].iter_mut().zip((0..=u8::MAX).cycle()) {
            // A recognisable payload, like ping's incrementing bytes.
            *b = v;
        }
        match self.proto {
            Proto::Icmp => {
                let mut p = icmpv4::Packet::new_unchecked(l4);
                p.set_msg_type(self.icmp_type);
                p.set_code(self.icmp_code);
                if self.icmp_type == icmpv4::TYPE_ECHO_REQUEST
                    || self.icmp_type == icmpv4::TYPE_ECHO_REPLY
                {
                    p.set_echo_ident(ECHO_ID);
                    p.set_echo_seq(ECHO_SEQ);
                } else {
                    p.set_rest_of_header(0);
                }
                p.fill_checksum();
            }
            Proto::Udp => {
                udp::emit_header(l4, self.sport, self.dport, payload)
                    .map_err(|x| e("UDP header", &x))?;
                udp::Packet::new_unchecked(l4).fill_checksum_v4(self.src, self.dst);
            }
            _ => {
                let ack = if self.flags & tcp::ACK != 0 {
                    TCP_ACK
                } else {
                    0
                };
                let seg = tcp::Repr {
                    src_port: self.sport,
                    dst_port: self.dport,
                    seq_number: TCP_SEQ,
                    ack_number: ack,
                    flags: self.flags,
                    window: TCP_WINDOW,
                    urgent: 0,
                    options: &[],
                };
                seg.emit(l4).map_err(|x| e("TCP header", &x))?;
                // The IPv4 length check above keeps the segment within 65535 bytes.
                tcp::Packet::new_unchecked(l4).fill_checksum_v4(self.src, self.dst);
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests;
