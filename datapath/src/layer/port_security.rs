//! SpoofGuard: a frame from the local port must carry the port's MAC as its
//! source, and its IPv4 source or ARP sender must be the port's address.
//! Only IPv4 and ARP are switched; anything else is dropped and counted.
//! Default action: drop.

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::{arp, dhcp, ethernet};

use super::{Ctx, DropReason, Recorder, Step, SwitchName, Verdict, Why as LayerWhy};
use crate::offload::{MAX_SEGMENTS, Plan};
use crate::tables::{Port, Tables};

/// Why port security decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    NoPort,
    Malformed,
    BadOffload,
    /// IPv4 from the port's MAC and address (`ip`), or ARP (`ip: None`)
    /// with the port's MAC as sender.
    Pass {
        src: MacAddr,
        ip: Option<Ipv4Addr>,
        port: Port,
    },
    SpoofedSrcMac {
        src: MacAddr,
        port: Port,
    },
    SpoofedSrcIp {
        src: Option<Ipv4Addr>,
        port: Port,
    },
    SpoofedArp {
        mac: MacAddr,
        ip: Ipv4Addr,
        port: Port,
    },
    UnsupportedEthertype(u16),
}

pub(crate) fn process<R: Recorder>(t: &Tables, ctx: &mut Ctx<'_>, rec: &mut R) -> Step {
    let mut drop = |r, why: Why| {
        rec.note(|| LayerWhy::PortSecurity(why));
        Step::Done(Verdict::Drop(r))
    };
    let Some(port) = t.port else {
        return drop(DropReason::NoPort, Why::NoPort);
    };
    if let Err(r) = ctx.parse_l2_l3() {
        return drop(r, Why::Malformed);
    }
    ctx.switch = port.switch;
    if let Some(gso) = ctx.offload.gso {
        match Plan::new(ctx.frame, gso) {
            Some(plan) if plan.count <= MAX_SEGMENTS => ctx.segments = Some(plan),
            _ => return drop(DropReason::BadOffload, Why::BadOffload),
        }
    }
    let src = ctx.src;
    if src != port.mac {
        return drop(DropReason::SpoofedSrcMac, Why::SpoofedSrcMac { src, port });
    }
    match ctx.ethertype {
        ethernet::ETHERTYPE_IPV4 => match ctx.ipv4 {
            Some(ip)
                if ip.src == port.ip || (ip.src.is_unspecified() && dhcp_client(ctx.frame)) =>
            {
                let ip = Some(ip.src);
                rec.note(|| LayerWhy::PortSecurity(Why::Pass { src, ip, port }));
                Step::Next
            }
            ip => {
                let src = ip.map(|ip| ip.src);
                drop(DropReason::SpoofedSrcIp, Why::SpoofedSrcIp { src, port })
            }
        },
        ethernet::ETHERTYPE_ARP => {
            let Ok(a) = arp::Packet::new_checked(&ctx.frame[ethernet::HEADER_LEN..]) else {
                return drop(DropReason::Malformed, Why::Malformed);
            };
            let sender_ok = a.sender_ip() == port.ip || a.sender_ip().is_unspecified();
            if a.sender_mac() != port.mac.0 || !sender_ok {
                let (mac, ip) = (MacAddr(a.sender_mac()), a.sender_ip());
                return drop(DropReason::SpoofedArp, Why::SpoofedArp { mac, ip, port });
            }
            rec.note(|| {
                LayerWhy::PortSecurity(Why::Pass {
                    src,
                    ip: None,
                    port,
                })
            });
            Step::Next
        }
        other => drop(
            DropReason::UnsupportedEthertype,
            Why::UnsupportedEthertype(other),
        ),
    }
}

/// A DHCP client's message before it has an address: from 0.0.0.0, UDP
/// 68 -> 67 (the DHCP layer answers it).
fn dhcp_client(frame: &[u8]) -> bool {
    super::dhcp::udp_of(frame)
        .is_some_and(|(src, dst, _)| (src, dst) == (dhcp::CLIENT_PORT, dhcp::SERVER_PORT))
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::NoPort => {
                f.write_str("no local port (micro-segmentation mode, or no config yet): drop")
            }
            Why::Malformed => f.write_str("malformed Ethernet, IPv4 or ARP header: drop"),
            Why::BadOffload => f.write_str("offload metadata cannot be honoured: drop"),
            Why::Pass {
                src,
                ip: Some(ip),
                port,
            } => write!(
                f,
                "source MAC {src} and IPv4 source {ip} are port {}'s on {}: pass",
                port.ip,
                SwitchName(t, port.switch)
            ),
            Why::Pass {
                src,
                ip: None,
                port,
            } => write!(
                f,
                "ARP sender {src} is port {}'s on {}: pass",
                port.ip,
                SwitchName(t, port.switch)
            ),
            Why::SpoofedSrcMac { src, port } => write!(
                f,
                "source MAC {src} is not the port's {}: drop (spoofed_src_mac)",
                port.mac
            ),
            Why::SpoofedSrcIp { src, port } => write!(
                f,
                "IPv4 source {} is not the port's {}: drop (spoofed_src_ip)",
                src.unwrap_or(Ipv4Addr::UNSPECIFIED),
                port.ip
            ),
            Why::SpoofedArp { mac, ip, port } => write!(
                f,
                "ARP sender {mac} / {ip} is not the port's {} / {}: drop (spoofed_arp)",
                port.mac, port.ip
            ),
            Why::UnsupportedEthertype(et) => {
                write!(f, "ethertype {et:#06x} is neither IPv4 nor ARP: drop")
            }
        }
    }
}
