//! [`Balancer::set_services`]: the configuration swap. The new virtual
//! servers are checked first (nothing changes on error); then each real
//! server finds its place in the server arena, by (virtual server, address,
//! port): the same server keeps its slot, counts and counters, a new one
//! takes a free slot (or a new one: the arena grows here, never per
//! packet), and a server no longer configured (or down without
//! `inhibit_on_failure`: keepalived removes it) is detached: weight 0, in
//! no virtual server, kept while connections or templates name it, freed
//! at a later swap once nothing does. Each virtual server's scheduler is
//! rebuilt from its previous state (see [`super::sched::Sched::new`]), its
//! quorum state moves by keepalived's rule.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use control::lb::{ForwardKind, LbService, Liveness, MAX_WEIGHT, RealServer};
use nat::index::ConfigMap;

use super::sched::{Member, NONE, Sched};
use super::{Balancer, Dest, Error, MAX_SERVERS, Service, key_parts, svc_key, ticks_of_secs};

/// A server's identity across configurations.
type DestId = (u64, u32, u16, bool);

/// The effective weight of real server `rs` given its liveness; `None`:
/// not listed (down, not inhibited).
fn effective_weight(rs: &RealServer, live: Liveness, inhibit: bool) -> Option<u32> {
    match live {
        Liveness::Up => Some(rs.weight.min(MAX_WEIGHT)),
        Liveness::Weight(w) => Some(w.min(MAX_WEIGHT)),
        Liveness::Down => inhibit.then_some(0),
    }
}

/// keepalived's quorum rule: down below `quorum - hysteresis` or with no
/// live weight, up again at `quorum + hysteresis`; a new virtual server
/// starts up.
fn quorum_state(was_up: Option<bool>, weight: u64, quorum: u32, hysteresis: u32) -> bool {
    let (q, h) = (u64::from(quorum), u64::from(hysteresis));
    let down = weight == 0 || weight + h < q;
    match was_up {
        None | Some(true) => !down,
        Some(false) => weight > 0 && weight >= q + h,
    }
}

/// Whether [`Balancer::set_services`] takes `services` with full NAT's
/// default source `default_snat`: a datapath builds its tables with this,
/// so the swap itself never fails.
pub fn check_services(services: &[LbService], default_snat: Option<Ipv4Addr>) -> Result<(), Error> {
    snat_addresses(services, default_snat).map(|_| ())
}

/// Checks `services` (everything [`Balancer::set_services`] refuses,
/// before it changes anything) and gives each its full-NAT source (0 for
/// NAT).
fn snat_addresses(
    services: &[LbService],
    default_snat: Option<Ipv4Addr>,
) -> Result<Vec<u32>, Error> {
    let mut seen = HashSet::new();
    let mut snats = Vec::with_capacity(services.len());
    for s in services {
        let vs = &s.vs;
        let service = vs.key();
        if !seen.insert(svc_key(vs.protocol.number(), u32::from(vs.vip), vs.port)) {
            return Err(Error::Duplicate { service });
        }
        if !s.live.is_empty() && s.live.len() != vs.real_servers.len() {
            return Err(Error::Liveness {
                service,
                verdicts: s.live.len(),
                servers: vs.real_servers.len(),
            });
        }
        if !(1..=32).contains(&vs.persistence_granularity) {
            return Err(Error::Granularity {
                service,
                granularity: vs.persistence_granularity,
            });
        }
        if vs.real_servers.len() > MAX_SERVERS {
            return Err(Error::TooManyServers {
                service,
                servers: vs.real_servers.len(),
                max: MAX_SERVERS,
            });
        }
        // One server listed twice would take two member positions (or two
        // arena slots) under one identity.
        let mut servers = HashSet::with_capacity(vs.real_servers.len());
        if let Some(rs) = vs
            .real_servers
            .iter()
            .find(|r| !servers.insert((r.ip, r.port)))
        {
            return Err(Error::DuplicateServer {
                service,
                server: format!("{}:{}", rs.ip, rs.port),
            });
        }
        if let Some(rs) = vs.real_servers.iter().find(|r| r.weight > MAX_WEIGHT) {
            return Err(Error::Weight {
                service,
                server: format!("{}:{}", rs.ip, rs.port),
                weight: rs.weight,
                max: MAX_WEIGHT,
            });
        }
        let snat = match vs.kind {
            ForwardKind::Nat => 0,
            ForwardKind::Fnat => match vs.snat_ip.or(default_snat) {
                Some(ip) if !ip.is_unspecified() => u32::from(ip),
                _ => return Err(Error::NoSnatIp { service }),
            },
        };
        snats.push(snat);
    }
    Ok(snats)
}

impl Balancer {
    /// Replaces the virtual servers (configuration and liveness) at
    /// `now_ns`. See the module docs of [`super`] for what carries over.
    pub fn set_services(&mut self, services: &[LbService], now_ns: u64) -> Result<(), Error> {
        // Nothing here depends on the time yet; the parameter keeps the
        // signature stable for what may (health transition stamps).
        let _ = now_ns;
        let snats = snat_addresses(services, self.default_snat)?;
        let mut by_id: HashMap<DestId, u32> = HashMap::with_capacity(self.dests.len());
        let mut free: Vec<u32> = Vec::new();
        for (i, d) in self.dests.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(NONE);
            if d.free {
                free.push(i);
            } else {
                by_id.insert((d.svc_key, d.ip, d.port, d.sorry), i);
            }
        }
        free.reverse();
        let mut old: ConfigMap<u64, Service> = std::mem::take(&mut self.services)
            .into_iter()
            .map(|s| (s.key, s))
            .collect();
        let mut touched = vec![false; self.dests.len()];
        let mut new_services = Vec::with_capacity(services.len());
        for (si, (s, snat)) in services.iter().zip(snats).enumerate() {
            let vs = &s.vs;
            let key = svc_key(vs.protocol.number(), u32::from(vs.vip), vs.port);
            let si = u32::try_from(si).unwrap_or(NONE);
            let mut members = Vec::with_capacity(vs.real_servers.len());
            let mut addrs = Vec::with_capacity(vs.real_servers.len());
            // The same server keeps its slot, counts and counters; a new
            // one takes a free slot, else a new one.
            let mut place = |b: &mut Balancer, ip: Ipv4Addr, port: u16, sorry: bool| -> u32 {
                let ip = u32::from(ip);
                let placed = Dest::placed(key, sorry, ip, port, vs.kind, si);
                let i = if let Some(&i) = by_id.get(&(key, ip, port, sorry)) {
                    if let Some(d) = b.dests.get_mut(i as usize) {
                        d.kind = vs.kind;
                        d.svc = si;
                    }
                    i
                } else if let Some(i) = free.pop() {
                    if let Some(d) = b.dests.get_mut(i as usize) {
                        *d = placed;
                    }
                    i
                } else {
                    b.dests.push(placed);
                    touched.push(false);
                    u32::try_from(b.dests.len() - 1).unwrap_or(NONE)
                };
                if let Some(t) = touched.get_mut(i as usize) {
                    *t = true;
                }
                i
            };
            for (j, rs) in vs.real_servers.iter().enumerate() {
                let live = s.live.get(j).copied().unwrap_or(Liveness::Up);
                let inhibit = rs.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure);
                let Some(weight) = effective_weight(rs, live, inhibit) else {
                    continue;
                };
                let d = place(self, rs.ip, rs.port, false);
                let pos = u32::try_from(members.len()).unwrap_or(NONE);
                if let Some(x) = self.dests.get_mut(d as usize) {
                    x.pos = pos;
                    x.conf_weight = rs.weight;
                    x.weight = weight;
                    members.push(Member {
                        dest: d,
                        weight,
                        active: x.active,
                        inactive: x.inactive,
                    });
                    addrs.push((x.ip, x.port));
                }
            }
            let sorry = vs.sorry_server.map(|ep| {
                let d = place(self, ep.ip, ep.port, true);
                if let Some(x) = self.dests.get_mut(d as usize) {
                    x.pos = NONE;
                    x.conf_weight = 1;
                    x.weight = 1;
                }
                d
            });
            let prev = old.remove(&key);
            let sched = Sched::new(
                vs.scheduler,
                &members,
                &addrs,
                prev.as_ref().map(|p| (&p.sched, &p.members[..])),
            );
            let live_weight: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
            let quorum_up = quorum_state(
                prev.as_ref().map(|p| p.quorum_up),
                live_weight,
                vs.quorum,
                vs.hysteresis,
            );
            let underloaded = u32::try_from(members.iter().filter(|m| m.underloaded()).count())
                .unwrap_or(u32::MAX);
            let (stats, est) = prev
                .as_ref()
                .map_or_else(Default::default, |p| (p.stats, p.est));
            new_services.push(Service {
                key,
                vs: vs.clone(),
                snat,
                mask: control::lb::client_mask(vs.persistence_granularity),
                persist_ticks: vs.persistence_timeout.map(ticks_of_secs),
                members,
                sorry,
                quorum_up,
                live_weight,
                underloaded,
                sched,
                stats,
                est,
            });
        }
        // Servers no longer configured: detached, or freed if nothing names them.
        for (d, t) in self.dests.iter_mut().zip(&touched) {
            if *t || d.free {
                continue;
            }
            d.svc = NONE;
            d.pos = NONE;
            d.weight = 0;
            if d.holds_nothing() {
                d.free = true;
            }
        }
        self.services = new_services;
        self.by_key = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, u32::try_from(i).unwrap_or(NONE)))
            .collect();
        // Virtual addresses: the services', and those of servers that
        // still hold connections of a service no longer configured (their
        // clients' packets still find their connections).
        self.vips = self
            .services
            .iter()
            .map(|s| u32::from(s.vs.vip))
            .chain(
                self.dests
                    .iter()
                    .filter(|d| !d.free)
                    .map(|d| key_parts(d.svc_key).1),
            )
            .map(|ip| (ip, ()))
            .collect();
        self.reals = self
            .dests
            .iter()
            .filter(|d| !d.free)
            .map(|d| (svc_key(key_parts(d.svc_key).0, d.ip, d.port), ()))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_with_hysteresis() {
        // quorum 4, hysteresis 1: down below 3, up again at 5.
        let mut up = quorum_state(None, 4, 4, 1);
        assert!(up);
        for (w, want) in [
            (3, true),
            (2, false),
            (3, false),
            (4, false),
            (5, true),
            (3, true),
        ] {
            up = quorum_state(Some(up), w, 4, 1);
            assert_eq!(up, want, "weight {w}");
        }
        assert!(!quorum_state(None, 0, 0, 0));
        assert!(!quorum_state(None, 2, 4, 1));
        assert!(quorum_state(None, 3, 4, 1));
    }
}
