//! Resolution of the north-south edge, once per store snapshot
//! ([`EdgePlan::compile`]): the tier-0 of the desired state with its
//! defaults filled in, the public IPs the instances' `nsx:publicip` tags
//! claim, the virtual servers whose real servers the edge health-checks
//! (`health_checks`), and the enrolled edge's tunnel endpoint. From it the store builds
//! the edge's config and gives each instance behind a tier-1 of the tier-0
//! its [`EdgeLink`] ([`EdgePlan::link_for`]).
//!
//! A public IP claim (`nsx:publicip=<ip>` on an instance) is valid when the
//! address is a secondary address of the uplink and neither a SNAT pool
//! address nor a load balancer's virtual address, no other instance
//! claims it, and the instance has an overlay
//! port on a switch of one of the tier-0's tier-1s; it becomes
//! `PublicIp { public_ip, private_ip: <its port's address>, instance: <its
//! id> }`. The calls that set tags refuse an invalid claim
//! ([`check_claim_of`]) and `apply` refuses a state under which a claim
//! would be invalid ([`resolve_claims`]'s problems), so the store holds
//! none; one that gets in all the same (an older store) is left out of the
//! edge's config with a warning, the first claimant of an address (in
//! enrollment order) keeping it, so the edge's config always validates.
//!
//! [`nat_rules`] lists the NAT rules a tier-0 gives (what `nsxcli --gateway
//! get logical-router <t0> nat-rules` shows).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use control::lb::VirtualServer;
use control::model::{EdgeLink, LogicalRouter, PublicIp, Tier0};
use control::validate::Problem;
use serde::Serialize;

use crate::instance::InstanceRecord;
use crate::state::DesiredState;

/// The instance tag that gives an instance a public IP (seed 002): the
/// uplink's secondary address the cloud maps the elastic IP to.
pub const PUBLICIP_TAG: &str = "nsx:publicip";

/// The enrolled edge's tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeEnd {
    pub id: String,
    pub tep_ip: Ipv4Addr,
    pub tep_id: u32,
}

/// The edge as one snapshot of the desired state and the inventory gives
/// it.
#[derive(Debug, Clone, Default)]
pub struct EdgePlan {
    /// The tier-0 with defaults and the valid public IPs; `None` without a
    /// `tier0` section.
    t0: Option<Tier0>,
    /// The enrolled (not revoked) edge.
    edge: Option<EdgeEnd>,
}

impl EdgePlan {
    /// Resolves `st`'s tier-0 against `all` (the inventory).
    pub fn compile(st: &DesiredState, all: &[InstanceRecord]) -> EdgePlan {
        let edge = all.iter().find(|r| r.is_edge()).map(|r| EdgeEnd {
            id: r.id.clone(),
            tep_ip: r.underlay_ip,
            tep_id: r.tep_id,
        });
        let t0 = st.tier0.as_ref().map(|spec| {
            let mut t0 = spec.to_model(st);
            let (public_ips, problems) = resolve_claims(Some(&t0), st, all);
            for p in problems {
                tracing::warn!(path = %p.path, "public IP left out of the edge's config: {}", p.message);
            }
            t0.public_ips = public_ips;
            t0.health_checks = health_checks(st);
            t0
        });
        EdgePlan { t0, edge }
    }

    /// The resolved tier-0 (`None` without a `tier0` section).
    pub fn tier0(&self) -> Option<&Tier0> {
        self.t0.as_ref()
    }

    /// The enrolled edge, if any.
    pub fn edge(&self) -> Option<&EdgeEnd> {
        self.edge.as_ref()
    }

    /// The edge link of an instance whose config has `routers`: while an
    /// edge is enrolled and the state has a tier-0, those of its routers
    /// that are tier-1s of the tier-0 send non-overlay traffic to the edge.
    pub fn link_for(&self, routers: &[LogicalRouter]) -> Option<EdgeLink> {
        let (t0, edge) = (self.t0.as_ref()?, self.edge.as_ref()?);
        let tier1s: Vec<String> = routers
            .iter()
            .filter(|r| t0.tier1s.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        if tier1s.is_empty() {
            return None;
        }
        Some(EdgeLink {
            tep_ip: edge.tep_ip,
            tep_id: edge.tep_id,
            transit_vni: t0.transit_vni,
            mac: t0.mac,
            tier1s,
        })
    }
}

/// What the edge's health checkers check: every virtual server of `st`
/// with a checker on some real server, wherever it is balanced, as the
/// state gives it.
fn health_checks(st: &DesiredState) -> Vec<VirtualServer> {
    st.load_balancers
        .iter()
        .filter(|vs| crate::load_balancer::has_checks(vs))
        .cloned()
        .collect()
}

/// The path of an instance's public IP tag under `prefix`
/// (`instances["vm3"].`, `instance.` or nothing).
pub fn tag_path(prefix: &str) -> String {
    format!("{prefix}tags[{PUBLICIP_TAG:?}]")
}

/// Most addresses a problem lists (the rest are counted).
const LISTED: usize = 8;

/// What a claim is checked against, built once per check: O(1) look-ups,
/// so checking every claim is linear in the claims and the tier-0.
struct Claims<'a> {
    t0: Option<&'a Tier0>,
    secondary: HashSet<Ipv4Addr>,
    pool: HashSet<Ipv4Addr>,
    /// The load balancers' virtual addresses, by position.
    vips: HashMap<Ipv4Addr, usize>,
    /// The switches of the tier-0's tier-1s.
    behind: HashSet<&'a str>,
}

impl<'a> Claims<'a> {
    fn new(t0: Option<&'a Tier0>, st: &'a DesiredState) -> Claims<'a> {
        let Some(t) = t0 else {
            return Claims {
                t0,
                secondary: HashSet::new(),
                pool: HashSet::new(),
                vips: HashMap::new(),
                behind: HashSet::new(),
            };
        };
        let tier1s: HashSet<&str> = t.tier1s.iter().map(String::as_str).collect();
        Claims {
            t0,
            secondary: t.uplink.secondary.iter().copied().collect(),
            pool: t.snat.pool.iter().copied().collect(),
            vips: st
                .load_balancers
                .iter()
                .enumerate()
                .map(|(i, v)| (v.vip, i))
                .collect(),
            behind: st
                .routers
                .iter()
                .filter(|r| tier1s.contains(r.name.as_str()))
                .flat_map(|r| r.switches.iter().map(String::as_str))
                .collect(),
        }
    }

    /// What is wrong with `rec` claiming `value` as its public IP,
    /// duplicates aside; the public and private addresses when nothing is.
    fn check(
        &self,
        rec: &InstanceRecord,
        value: &str,
    ) -> Result<(Ipv4Addr, Ipv4Addr), Vec<String>> {
        let Ok(public) = value.trim().parse::<Ipv4Addr>() else {
            return Err(vec![format!(
                "{value:?} is not an IPv4 address (a public IP is a secondary address of the tier-0's uplink)"
            )]);
        };
        let Some(t0) = self.t0 else {
            return Err(vec![format!(
                "{public}: the desired state has no tier0 section, so there is no uplink to take public IPs from"
            )]);
        };
        let mut out = Vec::new();
        if !self.secondary.contains(&public) {
            out.push(format!(
                "{public} is not a secondary address of the tier-0's uplink (tier0.uplink.secondary: {})",
                listed(&t0.uplink.secondary)
            ));
        } else if self.pool.contains(&public) {
            out.push(format!(
                "{public} is a SNAT pool address (tier0.snat.pool), not free for a public IP"
            ));
        } else if let Some(i) = self.vips.get(&public) {
            out.push(format!(
                "{public} is the virtual address of load_balancers[{i}], not free for a public IP"
            ));
        }
        let private = match (&rec.switch, rec.ip) {
            (Some(sw), Some(ip)) => {
                if !self.behind.contains(sw.as_str()) {
                    out.push(format!(
                        "instance {:?} is on switch {sw:?}, which no tier-1 of the tier-0 {:?} attaches (tier1s: {})",
                        rec.id,
                        t0.name,
                        listed(&t0.tier1s)
                    ));
                }
                Some(ip)
            }
            _ => {
                out.push(format!(
                    "instance {:?} has no overlay port (mode {}): a public IP is translated to an overlay address",
                    rec.id,
                    rec.mode()
                ));
                None
            }
        };
        match private {
            Some(private) if out.is_empty() => Ok((public, private)),
            _ => Err(out),
        }
    }
}

/// `a, b, c` (at most [`LISTED`], then how many in all); `none` when empty.
fn listed<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = items.iter().take(LISTED).map(ToString::to_string).collect();
    if items.len() > LISTED {
        format!("{}, ... ({} in all)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

/// The instances that claim a public IP (not revoked, with the tag), in
/// enrollment order.
fn claimants(all: &[InstanceRecord]) -> impl Iterator<Item = (&InstanceRecord, &str)> {
    all.iter()
        .filter(|r| r.revoked_at.is_none())
        .filter_map(|r| r.tags.get(PUBLICIP_TAG).map(|v| (r, v.as_str())))
}

/// Every claim of the inventory under the tier-0 `t0` (defaults resolved;
/// `None`: the state has none): the public IPs of the valid claims (the
/// first claimant of an address, in enrollment order, keeps it), and the
/// problems of the others, each at `instances["ID"].tags["nsx:publicip"]`.
pub fn resolve_claims(
    t0: Option<&Tier0>,
    st: &DesiredState,
    all: &[InstanceRecord],
) -> (Vec<PublicIp>, Vec<Problem>) {
    let mut ips: Vec<PublicIp> = Vec::new();
    let mut by_public: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut problems = Vec::new();
    let claims = Claims::new(t0, st);
    for (rec, value) in claimants(all) {
        let path = tag_path(&format!("instances[{:?}].", rec.id));
        match claims.check(rec, value) {
            Ok((public, private)) => {
                if let Some(first) = by_public.get(&public) {
                    problems.push(Problem {
                        path,
                        message: format!("{public} is already the public IP of instance {first:?}"),
                    });
                } else {
                    by_public.insert(public, &rec.id);
                    ips.push(PublicIp {
                        public_ip: public,
                        private_ip: private,
                        instance: rec.id.clone(),
                    });
                }
            }
            Err(messages) => problems.extend(messages.into_iter().map(|message| Problem {
                path: path.clone(),
                message,
            })),
        }
    }
    (ips, problems)
}

/// The problems of instance `id`'s claim (if it has one) after a change to
/// its tags, reported at `path`: its own, and an address another instance
/// (not revoked) claims already, whichever enrolled first.
pub fn check_claim_of(
    id: &str,
    path: &str,
    t0: Option<&Tier0>,
    st: &DesiredState,
    all: &[InstanceRecord],
) -> Vec<Problem> {
    let Some((rec, value)) = claimants(all).find(|(r, _)| r.id == id) else {
        return Vec::new();
    };
    let mut messages = match Claims::new(t0, st).check(rec, value) {
        Ok(_) => Vec::new(),
        Err(m) => m,
    };
    if let Ok(public) = value.trim().parse::<Ipv4Addr>()
        && let Some((other, _)) = claimants(all)
            .find(|(r, v)| r.id != id && v.trim().parse::<Ipv4Addr>().is_ok_and(|a| a == public))
    {
        messages.push(format!(
            "{public} is already the public IP of instance {:?}",
            other.id
        ));
    }
    messages
        .into_iter()
        .map(|message| Problem {
            path: path.to_string(),
            message,
        })
        .collect()
}

/// One NAT rule of a tier-0, in the order the edge applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRule {
    /// 1-based position: a public IP's pair comes before the SNAT of
    /// everything else.
    pub id: u32,
    /// `SNAT` or `DNAT`.
    pub action: &'static str,
    /// Sources matched (`any`: every source).
    pub match_sources: Vec<String>,
    /// Destinations matched (`any`: every destination).
    pub match_destinations: Vec<String>,
    /// What the matched address becomes (a pool: one of them).
    pub translated: Vec<String>,
    /// Translated ports (SNAT from a pool), `None` for 1:1 rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translated_ports: Option<String>,
    /// The instance whose public IP this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The NAT rules of `t0` (resolved, public IPs included) under `st`: per
/// public IP a DNAT (public to private) and a SNAT (private to public),
/// then the SNAT of the overlay subnets behind the tier-0 (its tier-1s'
/// switches) to the SNAT pool (the uplink's address when empty).
pub fn nat_rules(t0: &Tier0, st: &DesiredState) -> Vec<NatRule> {
    let any = || vec!["any".to_string()];
    let mut rules = Vec::new();
    let mut next = 1u32;
    let mut push = |rules: &mut Vec<NatRule>, mut r: NatRule| {
        r.id = next;
        next = next.saturating_add(1);
        rules.push(r);
    };
    for p in &t0.public_ips {
        let instance = Some(p.instance.clone()).filter(|i| !i.is_empty());
        push(
            &mut rules,
            NatRule {
                id: 0,
                action: "DNAT",
                match_sources: any(),
                match_destinations: vec![p.public_ip.to_string()],
                translated: vec![p.private_ip.to_string()],
                translated_ports: None,
                instance: instance.clone(),
            },
        );
        push(
            &mut rules,
            NatRule {
                id: 0,
                action: "SNAT",
                match_sources: vec![p.private_ip.to_string()],
                match_destinations: any(),
                translated: vec![p.public_ip.to_string()],
                translated_ports: None,
                instance,
            },
        );
    }
    let sources: Vec<String> = st
        .routers
        .iter()
        .filter(|r| t0.tier1s.contains(&r.name))
        .flat_map(|r| r.switches.iter())
        .filter_map(|name| st.switches.iter().find(|s| &s.name == name))
        .map(|s| s.subnet.to_string())
        .collect();
    if !sources.is_empty() {
        let pool: Vec<String> = t0.snat_pool().map(|a| a.to_string()).collect();
        push(
            &mut rules,
            NatRule {
                id: 0,
                action: "SNAT",
                match_sources: sources,
                match_destinations: any(),
                translated: pool,
                translated_ports: Some(format!("{}-{}", t0.snat.port_min, t0.snat.port_max)),
                instance: None,
            },
        );
    }
    rules
}
