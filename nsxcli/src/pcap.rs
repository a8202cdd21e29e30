//! `capture`: the API's frames to a classic pcap file (nanosecond
//! timestamps; linktype ETHERNET for port and switch frames, RAW (IPv4) for
//! underlay packets) and to tcpdump-like one-line summaries. The decoder is
//! lenient: a snapped or malformed frame gets a shorter line, never a panic.

use std::net::Ipv4Addr;

use crate::error::Error;
use crate::packet::{flags_string, mac_string};
use crate::timefmt::{self, Tz};

/// pcap magic for nanosecond timestamps (written little-endian).
pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: raw IPv4/IPv6, version from the first nibble.
pub const LINKTYPE_RAW: u32 = 101;

/// What a capture's frames start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Ethernet frames (port, switch).
    Ethernet,
    /// Outer IPv4 packets (underlay).
    Ipv4,
}

impl Link {
    /// From a pcap linktype number (1 or 101).
    #[must_use]
    pub fn from_linktype(n: u64) -> Option<Link> {
        match n {
            1 => Some(Link::Ethernet),
            101 | 228 => Some(Link::Ipv4),
            _ => None,
        }
    }

    /// The pcap linktype.
    #[must_use]
    pub fn linktype(self) -> u32 {
        match self {
            Link::Ethernet => LINKTYPE_ETHERNET,
            Link::Ipv4 => LINKTYPE_RAW,
        }
    }
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Unix time in nanoseconds.
    pub ts_ns: u64,
    /// `rx` or `tx`.
    pub dir: String,
    /// Length on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// The bytes as captured (at most the snap length).
    pub data: Vec<u8>,
}

/// The frames of a `capture` reply.
pub fn frames(reply: &agent_api::CaptureReply) -> Result<Vec<Frame>, Error> {
    let bad = |reason: String| Error::BadReply {
        what: "the agent".into(),
        reason,
    };
    reply
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let data =
                agent_api::hex::decode(&f.data_hex).map_err(|e| bad(format!("frame {i}: {e}")))?;
            let captured = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let orig_len = u32::try_from(f.orig_len).unwrap_or(u32::MAX).max(captured);
            Ok(Frame {
                ts_ns: f.ts_ns,
                dir: f.dir.clone(),
                orig_len,
                data,
            })
        })
        .collect()
}

/// The 24-byte pcap file header.
#[must_use]
pub fn file_header(link: Link, snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&link.linktype().to_le_bytes());
    h
}

/// A whole pcap file.
#[must_use]
pub fn file(link: Link, snaplen: u32, frames: &[Frame]) -> Vec<u8> {
    let mut out = file_header(link, snaplen).to_vec();
    for f in frames {
        let len = u32::try_from(f.data.len()).unwrap_or(u32::MAX);
        let secs = u32::try_from(f.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
        let nanos = (f.ts_ns % 1_000_000_000) as u32;
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&nanos.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&f.orig_len.max(len).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    out
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

/// One line for an Ethernet frame: MACs (if `macs`), then the payload.
#[must_use]
pub fn ethernet_summary(f: &[u8], macs: bool) -> String {
    let (Some(dst), Some(src), Some(et)) = (f.get(0..6), f.get(6..12), be16(f, 12)) else {
        return "truncated Ethernet frame".into();
    };
    let mut m = [0u8; 6];
    let mut n = [0u8; 6];
    m.copy_from_slice(src);
    n.copy_from_slice(dst);
    let head = if macs {
        format!("{} > {}, ", mac_string(&m), mac_string(&n))
    } else {
        String::new()
    };
    let payload = f.get(14..).unwrap_or(&[]);
    let body = match et {
        0x0800 => ipv4_summary(payload, false),
        0x0806 => arp_summary(payload),
        0x86dd => "IPv6".to_string(),
        other => format!("ethertype {other:#06x}"),
    };
    head + &body
}

fn arp_summary(a: &[u8]) -> String {
    let (Some(op), Some(sha), Some(spa), Some(tpa)) =
        (be16(a, 6), a.get(8..14), ip_at(a, 14), ip_at(a, 24))
    else {
        return "ARP, truncated".into();
    };
    let mut m = [0u8; 6];
    m.copy_from_slice(sha);
    match op {
        1 => format!("ARP, Request who-has {tpa} tell {spa}"),
        2 => format!("ARP, Reply {spa} is-at {}", mac_string(&m)),
        o => format!("ARP, op {o}"),
    }
}

/// One line for an IPv4 packet; `underlay` decodes Geneve on UDP 6081.
#[must_use]
pub fn ipv4_summary(p: &[u8], underlay: bool) -> String {
    let Some(&vihl) = p.first() else {
        return "truncated IPv4".into();
    };
    if vihl >> 4 != 4 {
        return format!("IP version {}", vihl >> 4);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let (Some(src), Some(dst), Some(&ttl), Some(&proto)) =
        (ip_at(p, 12), ip_at(p, 16), p.get(8), p.get(9))
    else {
        return "truncated IPv4".into();
    };
    let l4 = p.get(ihl..).unwrap_or(&[]);
    let frag = be16(p, 6).unwrap_or(0);
    if frag & 0x1fff != 0 {
        return format!("{src} > {dst}: fragment, proto {proto}, ttl {ttl}");
    }
    match proto {
        1 => {
            let (Some(&t), Some(&c)) = (l4.first(), l4.get(1)) else {
                return format!("{src} > {dst}: ICMP, truncated, ttl {ttl}");
            };
            let what = match (t, c) {
                (8, _) | (0, _) => format!(
                    "echo {}, id {}, seq {}",
                    if t == 8 { "request" } else { "reply" },
                    be16(l4, 4).unwrap_or(0),
                    be16(l4, 6).unwrap_or(0)
                ),
                (3, 3) => "port unreachable".into(),
                (3, 4) => format!("frag needed, mtu {}", be16(l4, 6).unwrap_or(0)),
                (3, 13) => "administratively prohibited".into(),
                (3, c) => format!("unreachable, code {c}"),
                (11, _) => "time exceeded".into(),
                (t, c) => format!("type {t}, code {c}"),
            };
            format!("{src} > {dst}: ICMP {what}, ttl {ttl}")
        }
        6 => {
            let (Some(sp), Some(dp), Some(&fl)) = (be16(l4, 0), be16(l4, 2), l4.get(13)) else {
                return format!("{src} > {dst}: TCP, truncated, ttl {ttl}");
            };
            format!(
                "{src}.{sp} > {dst}.{dp}: TCP flags [{}], ttl {ttl}",
                flags_string(fl)
            )
        }
        17 => {
            let (Some(sp), Some(dp)) = (be16(l4, 0), be16(l4, 2)) else {
                return format!("{src} > {dst}: UDP, truncated, ttl {ttl}");
            };
            if underlay && dp == geneve::GENEVE_PORT {
                let payload = l4.get(8..).unwrap_or(&[]);
                let inner = match geneve::geneve::parse(payload) {
                    Ok(g) => format!(
                        "Geneve vni {:#x}{}, {}",
                        g.vni,
                        g.tep_id.map_or(String::new(), |t| format!(" tep {t}")),
                        ethernet_summary(g.payload, false)
                    ),
                    Err(e) => format!("Geneve, malformed ({e})"),
                };
                format!("{src}.{sp} > {dst}.{dp}: {inner}")
            } else {
                format!("{src}.{sp} > {dst}.{dp}: UDP, ttl {ttl}")
            }
        }
        other => format!("{src} > {dst}: proto {other}, ttl {ttl}"),
    }
}

/// The live view: one line per frame, then a count (and why the capture
/// ended, if it says).
#[must_use]
pub fn lines(frames: &[Frame], link: Link, truncated: u64, ended: Option<&str>, tz: Tz) -> String {
    let mut out = String::new();
    for f in frames {
        let s = match link {
            Link::Ethernet => ethernet_summary(&f.data, true),
            Link::Ipv4 => ipv4_summary(&f.data, true),
        };
        out.push_str(&format!(
            "{} {:<2} {s}, length {}\n",
            timefmt::clock_us(f.ts_ns, tz),
            f.dir,
            f.orig_len
        ));
    }
    out.push_str(&count_line(frames.len(), truncated, ended));
    out.push('\n');
    out
}

/// `N packets captured (M truncated, ended: timeout)`.
#[must_use]
pub fn count_line(n: usize, truncated: u64, ended: Option<&str>) -> String {
    let mut notes: Vec<String> = Vec::new();
    if truncated > 0 {
        notes.push(format!("{truncated} truncated"));
    }
    if let Some(e) = ended {
        notes.push(format!("ended: {e}"));
    }
    format!(
        "{n} packet{} captured{}",
        if n == 1 { "" } else { "s" },
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        }
    )
}

#[cfg(test)]
mod tests;
