//! The load balancer as the pipeline holds it: the `lb` engine, the
//! virtual servers it was given (swapped in when the tables' list
//! changes), and the way each packet meets it ([`Way`]). The `lb` layer
//! ([`crate::layer::lb`]) calls [`LbState::process`] on the packet path
//! and [`LbState::peek`] in `trace`; the agent asks for [`LbState::view`]
//! and runs [`LbState::tick`] / [`LbState::estimate`] between batches.

use std::fmt;
use std::sync::Arc;

use control::lb::LbService;
use lb::engine::{Balancer, Decision, DropReason as LbDrop, Flow, LbView, PassReason, Verdict};
use nat::Translation;

use crate::layer::Ipv4Meta;
use crate::verdict::DropReason;

/// The source port of an IPv4 packet's TCP or UDP header (`None` for a
/// fragment or a truncated header).
fn src_port(pkt: &[u8]) -> Option<u16> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]) & 0x1fff;
    if frag != 0 {
        return None;
    }
    Some(u16::from_be_bytes([*pkt.get(ihl)?, *pkt.get(ihl + 1)?]))
}

/// Connections a balancer holds (about 100 bytes each: 6.5 MiB).
pub const DEFAULT_LB_CAPACITY: usize = 1 << 16;

/// Which way a packet meets the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Toward a virtual server (a client's packet).
    ToVip,
    /// From a real server (an answer of a balanced connection).
    FromServer,
    /// Either (the edge, from the overlay: answers, and clients inside).
    Either,
}

/// The balancer's outcome for one packet: the translation to apply, or
/// a drop, with the engine's decision for `trace`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Result<Option<Translation>, DropReason>,
    pub decision: Option<Decision>,
}

impl Outcome {
    fn of(d: Decision) -> Outcome {
        let verdict = match d.verdict {
            Verdict::Translate(t) => Ok(Some(t)),
            Verdict::Pass(_) => Ok(None),
            Verdict::Drop(r) => Err(drop_reason(r)),
        };
        Outcome {
            verdict,
            decision: Some(d),
        }
    }

    fn pass() -> Outcome {
        Outcome {
            verdict: Ok(None),
            decision: None,
        }
    }
}

/// The pipeline's drop reason for the engine's.
pub fn drop_reason(r: LbDrop) -> DropReason {
    match r {
        LbDrop::NoServer => DropReason::LbNoServer,
        LbDrop::NoConnection => DropReason::LbNoConnection,
        LbDrop::TableFull | LbDrop::PortsExhausted | LbDrop::Conflict => DropReason::LbExhausted,
        LbDrop::Fragment | LbDrop::Malformed => DropReason::LbUntranslatable,
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.decision {
            Some(d) => {
                write!(f, "{d}")?;
                if let Err(r) = self.verdict {
                    write!(f, ": drop ({})", r.name())?;
                }
                Ok(())
            }
            None => f.write_str("not a virtual server's connection: pass"),
        }
    }
}

/// The pipeline's balancer.
#[derive(Debug)]
pub struct LbState {
    engine: Balancer,
    services: Arc<[LbService]>,
    /// The last time a packet or a tick told (configuration swaps have no
    /// clock of their own).
    now_ns: u64,
    /// When the rates were last estimated.
    estimated_ns: u64,
}

/// How often the rates are estimated (IPVS's estimator runs every 2 s).
const ESTIMATE_NS: u64 = 2_000_000_000;

impl LbState {
    /// A balancer for `services` holding at most `capacity` connections;
    /// full-NAT without its own `snat_ip` uses `default_snat`.
    pub fn new(
        services: &Arc<[LbService]>,
        default_snat: Option<std::net::Ipv4Addr>,
        capacity: usize,
    ) -> LbState {
        let mut s = LbState {
            engine: Balancer::new(capacity),
            services: Arc::from(Vec::new()),
            now_ns: 0,
            estimated_ns: 0,
        };
        s.update(services, default_snat);
        s
    }

    /// Takes `services` if they changed (connections and scheduler state
    /// carry over). The tables checked them with the same default SNAT
    /// address (`TablesError::Lb`), so the swap does not fail; if it ever
    /// did, the previous services would stay.
    pub fn update(
        &mut self,
        services: &Arc<[LbService]>,
        default_snat: Option<std::net::Ipv4Addr>,
    ) {
        self.engine.set_default_snat_ip(default_snat);
        if !Arc::ptr_eq(&self.services, services)
            && self.engine.set_services(services, self.now_ns).is_ok()
        {
            self.services = Arc::clone(services);
        }
    }

    /// True when no connection or template is left (the balancer may go).
    pub fn is_idle(&self) -> bool {
        self.engine.is_empty() && self.engine.templates_len() == 0
    }

    /// Whether a packet meeting the balancer `way` can be one of its
    /// (cheap: address lookups, no parse): to a virtual address; from a
    /// real server's address and port, or an ICMP error; on the edge's
    /// way in from the overlay, either.
    #[inline]
    pub(crate) fn may_be_ours(&self, way: Way, ip: &Ipv4Meta, pkt: &[u8]) -> bool {
        let to_vip = || self.engine.is_vip(ip.dst);
        let from_server = || {
            ip.protocol == geneve::ipv4::PROTO_ICMP
                || src_port(pkt).is_some_and(|p| self.engine.is_real_server(ip.protocol, ip.src, p))
        };
        match way {
            Way::ToVip => to_vip(),
            Way::FromServer => from_server(),
            Way::Either => to_vip() || from_server(),
        }
    }

    /// The packet path: decides and carries the decision out.
    #[inline]
    pub(crate) fn process(&mut self, way: Way, pkt: &[u8], now_ns: u64) -> Outcome {
        self.now_ns = now_ns;
        let e = &mut self.engine;
        let d = match way {
            Way::ToVip => e.forward(pkt, now_ns),
            Way::FromServer => e.reverse(pkt, now_ns),
            // Read once: an answer of a connection, else a client inside.
            Way::Either => match Flow::parse(pkt) {
                Ok(f) => {
                    let d = e.reverse_flow(&f, now_ns);
                    match d.verdict {
                        Verdict::Pass(PassReason::NoConnection) => e.forward_flow(&f, now_ns),
                        _ => d,
                    }
                }
                // Unreadable: the forward path says whether it was to a
                // virtual address (a counted drop) or not the balancer's.
                Err(_) => e.forward(pkt, now_ns),
            },
        };
        match d.verdict {
            Verdict::Pass(_) => Outcome::pass(),
            _ => Outcome::of(d),
        }
    }

    /// `trace`: what [`LbState::process`] would decide, changing nothing.
    pub(crate) fn peek(&self, way: Way, pkt: &[u8], now_ns: u64) -> Outcome {
        let e = &self.engine;
        let d = match way {
            Way::ToVip => e.peek(pkt, now_ns),
            Way::FromServer => e.peek_reverse(pkt, now_ns),
            Way::Either => {
                let d = e.peek_reverse(pkt, now_ns);
                match d.verdict {
                    Verdict::Pass(PassReason::NoConnection) => e.peek(pkt, now_ns),
                    _ => d,
                }
            }
        };
        Outcome::of(d)
    }

    /// Between batches: bounded expiry, and the rates every 2 s.
    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        self.engine.tick(now_ns);
        if now_ns.saturating_sub(self.estimated_ns) >= ESTIMATE_NS {
            self.engine.estimate(now_ns);
            self.estimated_ns = now_ns;
        }
    }

    /// What `get load-balancers` shows (allocates: on request only).
    pub fn view(&self, now_ns: u64) -> LbView {
        self.engine.view(now_ns)
    }

    /// The engine, to read (templates, connections).
    pub fn engine(&self) -> &Balancer {
        &self.engine
    }
}
