//! The edge's mutable state beside the compiled tables: the neighbour
//! (ARP) caches of its two interfaces, the uplink and the downlink
//! ([`Iface`]), and the NAT. Owned by the pipeline like the firewall; layers
//! read it through the recorder (`trace` too) and only the packet path
//! writes it. Fixed capacity, allocated once: learning never allocates on
//! the packet path, and a full cache refuses new neighbours (counted).

use std::net::Ipv4Addr;

use control::MacAddr;

use crate::tables::FxMap;

/// Most uplink neighbours remembered (next hops and connected hosts).
pub const MAX_NEIGHBORS: usize = 1024;
/// How long a learned MAC is used without being heard again.
pub const NEIGHBOR_TTL_NS: u64 = 300 * 1_000_000_000;
/// Least time between two ARP requests for one address.
pub const ARP_RETRY_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// `None` until an answer is heard.
    mac: Option<MacAddr>,
    /// When the MAC was last heard.
    heard_ns: u64,
    /// When a request was last sent (`None`: never).
    asked_ns: Option<u64>,
}

/// The uplink's ARP cache.
#[derive(Debug)]
pub struct Neighbors {
    map: FxMap<Ipv4Addr, Entry>,
    /// Neighbours refused because the cache was full.
    pub refused: u64,
    /// When a full cache may be swept for stale entries again.
    next_sweep_ns: u64,
}

impl Default for Neighbors {
    fn default() -> Self {
        let mut map = FxMap::default();
        map.reserve(MAX_NEIGHBORS);
        Neighbors {
            map,
            refused: 0,
            next_sweep_ns: 0,
        }
    }
}

impl Entry {
    /// Whether the entry may make room for another at `now_ns`.
    fn is_stale(&self, now_ns: u64) -> bool {
        let asked = self.asked_ns.unwrap_or(0);
        let unanswered = self.mac.is_none() && now_ns.saturating_sub(asked) >= 3 * ARP_RETRY_NS;
        unanswered || now_ns.saturating_sub(self.heard_ns.max(asked)) >= NEIGHBOR_TTL_NS
    }
}

impl Neighbors {
    /// The MAC of `ip`, if heard within [`NEIGHBOR_TTL_NS`].
    pub fn lookup(&self, ip: Ipv4Addr, now_ns: u64) -> Option<MacAddr> {
        let e = self.map.get(&ip)?;
        (now_ns.saturating_sub(e.heard_ns) < NEIGHBOR_TTL_NS)
            .then_some(e.mac)
            .flatten()
    }

    /// `ip` is at `mac` (from an ARP request or reply).
    pub fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr, now_ns: u64) {
        let asked_ns = self.map.get(&ip).and_then(|e| e.asked_ns);
        self.put(
            ip,
            Entry {
                mac: Some(mac),
                heard_ns: now_ns,
                asked_ns,
            },
        );
    }

    /// Whether [`Neighbors::may_request`] would say yes, recording nothing.
    pub fn would_request(&self, ip: Ipv4Addr, now_ns: u64) -> bool {
        self.map.get(&ip).is_none_or(|e| {
            e.asked_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= ARP_RETRY_NS)
        })
    }

    /// Whether an ARP request for `ip` may go out now (none sent within
    /// [`ARP_RETRY_NS`]); if so, the request is recorded as sent.
    pub fn may_request(&mut self, ip: Ipv4Addr, now_ns: u64) -> bool {
        match self.map.get_mut(&ip) {
            Some(e) => {
                if e.asked_ns
                    .is_some_and(|t| now_ns.saturating_sub(t) < ARP_RETRY_NS)
                {
                    return false;
                }
                e.asked_ns = Some(now_ns);
                true
            }
            None => self.put(
                ip,
                Entry {
                    mac: None,
                    heard_ns: 0,
                    asked_ns: Some(now_ns),
                },
            ),
        }
    }

    /// Whether `ip` should be asked for again: unknown, or heard more than
    /// half [`NEIGHBOR_TTL_NS`] ago (so a next hop in use never expires).
    pub fn needs_refresh(&self, ip: Ipv4Addr, now_ns: u64) -> bool {
        self.lookup(ip, now_ns.saturating_add(NEIGHBOR_TTL_NS / 2))
            .is_none()
    }

    fn put(&mut self, ip: Ipv4Addr, e: Entry) -> bool {
        if self.map.len() >= MAX_NEIGHBORS && !self.map.contains_key(&ip) {
            // Make room from what has gone stale before refusing: heard
            // longer ago than the TTL, or asked for and never answered
            // (3 tries' worth). At most one sweep per retry interval, so a
            // full cache of live neighbours costs no scan per packet.
            let now = e.heard_ns.max(e.asked_ns.unwrap_or(0));
            if now >= self.next_sweep_ns {
                self.next_sweep_ns = now.saturating_add(ARP_RETRY_NS);
                self.map.retain(|_, old| !old.is_stale(now));
            }
            if self.map.len() >= MAX_NEIGHBORS {
                self.refused += 1;
                return false;
            }
        }
        self.map.insert(ip, e);
        true
    }

    /// Known neighbours: (address, MAC, nanoseconds since heard), for the API.
    pub fn entries(&self, now_ns: u64) -> impl Iterator<Item = (Ipv4Addr, MacAddr, u64)> + '_ {
        self.map
            .iter()
            .filter_map(move |(&ip, e)| Some((ip, e.mac?, now_ns.saturating_sub(e.heard_ns))))
    }
}

/// The tier-0's interfaces besides the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface {
    /// Plain IP toward the cloud's NAT and the internet (the agent's
    /// `[host] uplink`).
    Uplink,
    /// The underlay subnet, where the instances' tunnel endpoints live and
    /// hosts without an agent too (the bridge that took `[host] nic`).
    Downlink,
    /// The health-check port: a veth into the namespace where the edge's
    /// health checkers open their connections, from the tier-0's
    /// `health_check_ip`. Only the overlay is routed to and from it.
    Probe,
}

impl Iface {
    pub const fn name(self) -> &'static str {
        match self {
            Iface::Uplink => "uplink",
            Iface::Downlink => "downlink",
            Iface::Probe => "health-check port",
        }
    }
}

/// What the edge keeps between packets.
#[derive(Debug)]
pub struct EdgeState {
    /// The uplink's ARP cache.
    pub neighbors: Neighbors,
    /// The downlink's ARP cache.
    pub downlink: Neighbors,
    /// The health-check port's (one neighbour: the checkers' namespace).
    pub probe: Neighbors,
    /// The NAT, its tables allocated for the tier-0's `max_sessions`.
    pub nat: nat::Nat,
    /// The downlink's NAT, while the tier-0 has `underlay_snat`.
    pub downlink_nat: Option<nat::Nat>,
}

impl EdgeState {
    /// The state for `t0`'s NAT (validated when the tables were built).
    pub fn new(t0: &crate::tables::Tier0) -> Result<EdgeState, nat::ConfigError> {
        Ok(EdgeState {
            neighbors: Neighbors::default(),
            downlink: Neighbors::default(),
            probe: Neighbors::default(),
            nat: nat::Nat::new(t0.nat_capacity, t0.nat.clone())?,
            downlink_nat: match &t0.downlink_nat {
                Some(c) => Some(nat::Nat::new(t0.downlink_nat_capacity, c.clone())?),
                None => None,
            },
        })
    }

    /// The NAT of traffic leaving by (or answering through) `iface`: the
    /// downlink's only while the tier-0 has `underlay_snat`.
    pub fn nat_of(&self, iface: Iface) -> Option<&nat::Nat> {
        match iface {
            Iface::Uplink => Some(&self.nat),
            Iface::Downlink => self.downlink_nat.as_ref(),
            Iface::Probe => None,
        }
    }

    pub fn nat_of_mut(&mut self, iface: Iface) -> Option<&mut nat::Nat> {
        match iface {
            Iface::Uplink => Some(&mut self.nat),
            Iface::Downlink => self.downlink_nat.as_mut(),
            Iface::Probe => None,
        }
    }

    /// Idle sessions of both NATs reclaimed (a bounded sweep each).
    pub fn tick(&mut self, now_ns: u64) {
        self.nat.tick(now_ns);
        if let Some(n) = &mut self.downlink_nat {
            n.tick(now_ns);
        }
    }

    /// Follows a new tier-0: the NAT takes the new configuration (its
    /// sessions the new one no longer produces go), or is made anew when
    /// its capacity changed. Returns the sessions removed.
    pub fn update(&mut self, t0: &crate::tables::Tier0) -> Result<usize, nat::ConfigError> {
        let downlink = match (&t0.downlink_nat, &mut self.downlink_nat) {
            (None, old) => old.take().map_or(0, |n| n.len()),
            (Some(c), Some(n)) if n.capacity() == t0.downlink_nat_capacity => {
                if n.config() == c {
                    0
                } else {
                    n.set_config(c.clone())?
                }
            }
            (Some(c), old) => {
                let dropped = old.as_ref().map_or(0, |n| n.len());
                *old = Some(nat::Nat::new(t0.downlink_nat_capacity, c.clone())?);
                dropped
            }
        };
        self.update_uplink(t0).map(|n| n + downlink)
    }

    fn update_uplink(&mut self, t0: &crate::tables::Tier0) -> Result<usize, nat::ConfigError> {
        if self.nat.capacity() != t0.nat_capacity {
            let dropped = self.nat.len();
            self.nat = nat::Nat::new(t0.nat_capacity, t0.nat.clone())?;
            return Ok(dropped);
        }
        if self.nat.config() == &t0.nat {
            return Ok(0);
        }
        self.nat.set_config(t0.nat.clone())
    }

    /// The ARP cache of `iface`.
    pub fn neighbors_of(&self, iface: Iface) -> &Neighbors {
        match iface {
            Iface::Uplink => &self.neighbors,
            Iface::Downlink => &self.downlink,
            Iface::Probe => &self.probe,
        }
    }

    pub fn neighbors_of_mut(&mut self, iface: Iface) -> &mut Neighbors {
        match iface {
            Iface::Uplink => &mut self.neighbors,
            Iface::Downlink => &mut self.downlink,
            Iface::Probe => &mut self.probe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_expires_and_paces_requests() {
        let mut n = Neighbors::default();
        let ip: Ipv4Addr = "203.0.113.1".parse().unwrap();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let t = ARP_RETRY_NS;
        assert!(n.needs_refresh(ip, 0));
        assert!(n.may_request(ip, t));
        assert!(!n.may_request(ip, t + t / 2));
        assert!(n.may_request(ip, 2 * t));
        assert_eq!(n.lookup(ip, 2 * t), None);
        n.learn(ip, mac, 3 * t);
        assert_eq!(n.lookup(ip, 3 * t + 1), Some(mac));
        assert!(!n.needs_refresh(ip, 3 * t + 1));
        assert!(n.needs_refresh(ip, 3 * t + NEIGHBOR_TTL_NS / 2));
        assert_eq!(n.lookup(ip, 3 * t + NEIGHBOR_TTL_NS), None);
    }

    #[test]
    fn a_full_cache_refuses_and_counts() {
        let mut n = Neighbors::default();
        for i in 0..u32::try_from(MAX_NEIGHBORS).unwrap() {
            n.learn(Ipv4Addr::from(i + 1), MacAddr([2, 0, 0, 0, 0, 1]), 1);
        }
        n.learn(Ipv4Addr::from(u32::MAX - 1), MacAddr([2, 0, 0, 0, 0, 2]), 2);
        assert_eq!(n.refused, 1);
        // Stale entries make room.
        n.learn(
            Ipv4Addr::from(u32::MAX - 1),
            MacAddr([2, 0, 0, 0, 0, 2]),
            2 + NEIGHBOR_TTL_NS,
        );
        assert_eq!(n.refused, 1);
        assert!(
            n.lookup(Ipv4Addr::from(u32::MAX - 1), 3 + NEIGHBOR_TTL_NS)
                .is_some()
        );
    }

    #[test]
    fn unanswered_requests_make_room_and_a_full_cache_is_not_swept_per_packet() {
        let mut n = Neighbors::default();
        let t = ARP_RETRY_NS;
        for i in 0..u32::try_from(MAX_NEIGHBORS).unwrap() {
            assert!(n.may_request(Ipv4Addr::from(i + 1), 1));
        }
        let newcomer = Ipv4Addr::from(u32::MAX - 1);
        let mac = MacAddr([2, 0, 0, 0, 0, 3]);
        // Unanswered for less than 3 tries: still there, the newcomer refused.
        n.learn(newcomer, mac, 2 * t);
        assert_eq!(n.refused, 1);
        // Within the same retry interval no new sweep: refused again.
        n.learn(newcomer, mac, 2 * t + 1);
        assert_eq!(n.refused, 2);
        // 3 intervals unanswered: they make room, long before the TTL.
        n.learn(newcomer, mac, 3 * t + 2);
        assert_eq!(n.refused, 2);
        assert_eq!(n.lookup(newcomer, 3 * t + 3), Some(mac));
    }
}
