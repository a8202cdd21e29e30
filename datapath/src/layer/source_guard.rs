//! The source guard, decapsulation's last step: the inner frame's source
//! must be a port behind the endpoint that sent it. Decap already knows the
//! sender is a known endpoint with its own tep id; without this step any
//! enrolled instance (root owns its endpoint) could send Geneve whose inner
//! source is another instance's address, and the receiver's firewall would
//! judge it by the rules written for the impersonated instance.
//!
//! What is checked, against the tables the switch and router already use:
//!
//! * switched IPv4: the IPv4 source is a port on the frame's switch, with
//!   the frame's source MAC, behind the sending endpoint (one lookup);
//! * routed IPv4 (source MAC = the switch's router's MAC; the sender's
//!   distributed router rewrote it): the IPv4 source is a port on one of
//!   the router's switches, behind the sending endpoint (the router's
//!   table of its ports' addresses, `Tables::routed_source`);
//! * ARP: the sender hardware address is the frame's source and the sender
//!   protocol address is that MAC's port behind the sending endpoint (an
//!   unspecified sender, a probe, only the MAC); an unreadable ARP body
//!   only the MAC;
//! * anything else: the source MAC is a port behind the sending endpoint.
//!
//! Broadcast and flooded frames are checked the same way: their source is
//! still the sender's. This is what the sender's port security guarantees
//! for frames it sends, so an honest agent never trips it.
//!
//! Cost (callgrind, instructions per frame, datapath pipeline bench): an
//! honest switched frame takes one inline lookup, `decap_deliver` 728 ->
//! 760; a routed one a missed lookup, the router's MAC and one lookup,
//! `decap_routed_deliver` 728 -> 839.
//!
//! Edge hook: an endpoint marked as an edge ([`crate::tables::Tep::edge`],
//! not set by anything yet) may also carry routed frames from *outside*
//! sources (an IPv4 source no port on the router's switches owns); an
//! address a port owns must still come from that port's endpoint.

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::{arp, ethernet};

use super::{Ctx, SwitchName, TepName};
use crate::tables::{Location, Neighbor, SwitchIdx, Tables, TepIdx};

/// A frame whose source is not behind its sending endpoint: what it claims
/// and where the tables put that source instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spoof {
    switch: SwitchIdx,
    claim: Claim,
    owner: Owner,
}

/// The source a frame claims.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// A switched IPv4 frame from `mac` / `ip`.
    Ipv4 { mac: MacAddr, ip: Ipv4Addr },
    /// A routed IPv4 frame (source MAC the router's) from `ip`.
    Routed { router_mac: MacAddr, ip: Ipv4Addr },
    /// ARP with sender `mac` / `ip`.
    Arp { mac: MacAddr, ip: Ipv4Addr },
    /// Any other frame (or an ARP body that cannot be read) from `mac`.
    Mac { mac: MacAddr },
}

/// Where the tables put the claimed source.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// A port behind another endpoint.
    Remote(TepIdx),
    /// This instance's own port.
    Local,
    /// No port owns it.
    Nobody,
    /// The address is a port's behind the sending endpoint, but with `mac`.
    OtherMac(MacAddr),
    /// The router's MAC on a frame that is not IPv4 (the router forwards
    /// only IPv4, and answers ARP locally at the sender).
    Router,
    /// An ARP sender hardware address that is not the frame's source `src`.
    NotEthSource(MacAddr),
}

impl Owner {
    fn of(at: Location) -> Owner {
        match at {
            Location::Local => Owner::Local,
            Location::Remote(t) => Owner::Remote(t),
        }
    }

    /// The owner of an address whose port should be `mac` behind `from`.
    fn of_neighbor(n: Option<Neighbor>, from: Location) -> Owner {
        match n {
            None => Owner::Nobody,
            Some(n) if n.at != from => Owner::of(n.at),
            Some(n) => Owner::OtherMac(n.mac),
        }
    }
}

/// Whether the inner frame decap just read into `ctx` (on `ctx.switch`)
/// comes from a port behind endpoint `tep`. Allocation-free: one table
/// lookup for a switched IPv4 frame, two for a routed one.
#[inline(always)]
pub(crate) fn check(t: &Tables, ctx: &Ctx<'_>, tep: TepIdx) -> Result<(), Spoof> {
    // The common case inline, an honest switched IPv4 frame: one lookup.
    let neighbor = ctx.ipv4.and_then(|ip| t.neighbor(ctx.switch, ip.src));
    if neighbor.is_some_and(|n| n.mac == ctx.src && n.at == Location::Remote(tep)) {
        return Ok(());
    }
    check_other(t, ctx, tep, neighbor)
}

/// [`check`] for everything but an honest switched IPv4 frame: routed
/// frames, ARP, other ethertypes, and the refusals. `neighbor` is the port
/// the tables have for the frame's IPv4 source on its switch.
#[inline(never)]
fn check_other(
    t: &Tables,
    ctx: &Ctx<'_>,
    tep: TepIdx,
    neighbor: Option<Neighbor>,
) -> Result<(), Spoof> {
    let (switch, src) = (ctx.switch, ctx.src);
    let from = Location::Remote(tep);
    let spoof = |claim, owner| {
        Err(Spoof {
            switch,
            claim,
            owner,
        })
    };
    let router = t.router_with_mac(switch, src);
    match (ctx.ipv4, router) {
        (Some(ip), None) => spoof(
            Claim::Ipv4 {
                mac: src,
                ip: ip.src,
            },
            Owner::of_neighbor(neighbor, from),
        ),
        (Some(ip), Some(r)) => match t.routed_source(r, ip.src) {
            Some(n) if n.at == from => Ok(()),
            // The edge hook: an outside source through an edge endpoint.
            None if t.teps.get(usize::from(tep)).is_some_and(|e| e.edge) => Ok(()),
            n => spoof(
                Claim::Routed {
                    router_mac: src,
                    ip: ip.src,
                },
                n.map_or(Owner::Nobody, |n| Owner::of(n.at)),
            ),
        },
        (None, Some(_)) => spoof(Claim::Mac { mac: src }, Owner::Router),
        (None, None) => {
            let body = ctx.frame.get(ethernet::HEADER_LEN..).unwrap_or_default();
            let arp = (ctx.ethertype == ethernet::ETHERTYPE_ARP)
                .then(|| arp::Packet::new_checked(body).ok())
                .flatten();
            match arp {
                Some(a) if !a.sender_ip().is_unspecified() => {
                    let (mac, ip) = (MacAddr(a.sender_mac()), a.sender_ip());
                    let claim = Claim::Arp { mac, ip };
                    if mac != src {
                        return spoof(claim, Owner::NotEthSource(src));
                    }
                    match t.neighbor(switch, ip) {
                        Some(n) if n.mac == src && n.at == from => Ok(()),
                        n => spoof(claim, Owner::of_neighbor(n, from)),
                    }
                }
                Some(a) if a.sender_mac() != src.0 => {
                    let claim = Claim::Arp {
                        mac: MacAddr(a.sender_mac()),
                        ip: a.sender_ip(),
                    };
                    spoof(claim, Owner::NotEthSource(src))
                }
                _ => match t.lookup_mac(switch, src) {
                    Some(at) if at == from => Ok(()),
                    at => spoof(Claim::Mac { mac: src }, at.map_or(Owner::Nobody, Owner::of)),
                },
            }
        }
    }
}

impl Spoof {
    /// `inner source 192.168.100.4 (06:17:1e:54:96:44) is not behind
    /// endpoint 10.99.3.251 (tep 251), it is behind 10.99.3.44 (tep 44)`;
    /// `from` names the sending endpoint.
    pub(crate) fn write(
        &self,
        t: &Tables,
        from: impl fmt::Display,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let sw = SwitchName(t, self.switch);
        match self.claim {
            Claim::Ipv4 { mac, ip } => write!(f, "{sw}: inner source {ip} ({mac})")?,
            Claim::Routed { router_mac, ip } => {
                write!(
                    f,
                    "{sw}: routed inner source {ip} (router MAC {router_mac})"
                )?;
            }
            Claim::Arp { mac, ip } => write!(f, "{sw}: ARP sender {ip} ({mac})")?,
            Claim::Mac { mac } => write!(f, "{sw}: inner source {mac}")?,
        }
        write!(f, " is not behind endpoint {from}, ")?;
        match self.owner {
            Owner::Remote(tep) => write!(f, "it is behind {}", TepName(t, tep))?,
            Owner::Local => f.write_str("it is this instance's own port")?,
            Owner::Nobody => match self.claim {
                Claim::Routed { .. } => {
                    let r = t.router_of(self.switch).map_or("?", |r| r.name.as_str());
                    write!(f, "no port on router {r}'s switches has it")?;
                }
                _ => write!(f, "no port on {sw} has it")?,
            },
            Owner::OtherMac(mac) => write!(f, "the address is bound to {mac}")?,
            Owner::Router => f.write_str("it is the router's MAC, on a frame that is not IPv4")?,
            Owner::NotEthSource(src) => write!(f, "the frame's source MAC is {src}")?,
        }
        f.write_str(": drop (spoofed_inner_src)")
    }
}
