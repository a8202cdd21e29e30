//! The load balancers as the agents get them, once per store snapshot
//! ([`LbPlan::compile`]): the distributed virtual servers every instance
//! with an overlay port balances, and those the edge balances (its
//! uplink's addresses, and full-NAT with its SNAT address filled in:
//! the uplink's primary address unless given).
//!
//! Each [`LbService`] carries the health verdicts of its real servers
//! ([`LbService::live`]), made by one function ([`service`]) from a
//! [`HealthView`]: the standing of each (virtual server, real server)
//! pair as the edge's health checkers last found it ([`crate::health`]
//! keeps it). Only a real server with a `check` takes a verdict (one
//! without is always at its weight, whatever the view holds), and a
//! service none of whose servers has a verdict has no `live` (every real
//! server at its configured weight). A change of a verdict changes only
//! the configs that carry that virtual server, and only those get a new
//! version ([`crate::store::Store::config_snapshot_with`]).

use std::collections::HashMap;

use control::lb::{ForwardKind, LbService, Liveness, VirtualServer};

use crate::load_balancer::{self, Balanced};
use crate::state::DesiredState;

pub use control::lb::HealthKey;

/// The health checkers' verdicts; a pair absent is up at its configured
/// weight.
pub type HealthView = HashMap<HealthKey, Liveness>;

/// The services of one snapshot, by where they are balanced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbPlan {
    instances: Vec<LbService>,
    edge: Vec<LbService>,
}

impl LbPlan {
    /// `st`'s load balancers with the verdicts of `health`.
    pub fn compile(st: &DesiredState, health: &HealthView) -> LbPlan {
        let uplink = load_balancer::uplink_addrs(st);
        let mut plan = LbPlan::default();
        for vs in &st.load_balancers {
            match load_balancer::balanced_at(vs, &uplink) {
                Balanced::Instances => plan.instances.push(service(vs, health)),
                Balanced::Edge => {
                    let mut vs = vs.clone();
                    if vs.kind == ForwardKind::Fnat && vs.snat_ip.is_none() {
                        vs.snat_ip = uplink.first().copied();
                    }
                    plan.edge.push(service(&vs, health));
                }
            }
        }
        plan
    }

    /// What every instance with an overlay port balances.
    pub fn for_instances(&self) -> &[LbService] {
        &self.instances
    }

    /// What the edge balances.
    pub fn for_edge(&self) -> &[LbService] {
        &self.edge
    }
}

/// `vs` as an agent gets it: with one verdict per real server when
/// `health` has any for one of its checked servers, none otherwise (all
/// at their weights).
pub fn service(vs: &VirtualServer, health: &HealthView) -> LbService {
    let verdict = |rs: &control::lb::RealServer| health.get(&vs.check_key(rs)?).copied();
    let live = if vs.real_servers.iter().any(|rs| verdict(rs).is_some()) {
        vs.real_servers
            .iter()
            .map(|rs| verdict(rs).unwrap_or(Liveness::Up))
            .collect()
    } else {
        Vec::new()
    };
    LbService {
        vs: vs.clone(),
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse;
    use control::lb::LbProtocol;
    use std::net::Ipv4Addr;

    #[test]
    fn split_by_where_balanced_with_snat_and_verdicts() {
        let st = parse(
            r#"
tier0:
  uplink: {address: 203.0.113.2/24, secondary: [203.0.113.10]}
load_balancers:
  - {vip: 10.99.0.1, port: 80, scheduler: sh, real_servers: [{ip: 10.0.0.1, port: 80}, {ip: 10.0.0.2, port: 80, check: {type: tcp}}]}
  - {vip: 203.0.113.10, port: 443, scheduler: sh, real_servers: [{ip: 10.0.0.3, port: 443}]}
  - {vip: 10.99.0.2, port: 80, scheduler: sh, kind: fnat, real_servers: [{ip: 10.0.0.4, port: 80}]}
  - {vip: 10.99.0.3, port: 80, scheduler: sh, kind: fnat, snat_ip: 203.0.113.10, real_servers: [{ip: 10.0.0.5, port: 80}]}
"#,
        )
        .expect("parses");
        let plan = LbPlan::compile(&st, &HealthView::new());
        let vips = |s: &[LbService]| s.iter().map(|s| s.vs.key()).collect::<Vec<_>>();
        assert_eq!(vips(plan.for_instances()), ["TCP 10.99.0.1:80"]);
        assert_eq!(
            vips(plan.for_edge()),
            [
                "TCP 203.0.113.10:443",
                "TCP 10.99.0.2:80",
                "TCP 10.99.0.3:80"
            ]
        );
        let snat: Vec<Option<Ipv4Addr>> = plan.for_edge().iter().map(|s| s.vs.snat_ip).collect();
        let ip = |s: &str| s.parse::<Ipv4Addr>().ok();
        assert_eq!(snat, [None, ip("203.0.113.2"), ip("203.0.113.10")]);
        assert!(plan.for_instances()[0].live.is_empty());

        // A verdict on a real server without a checker is not one.
        let key = |real: &str| HealthKey {
            vip: "10.99.0.1".parse().expect("ip"),
            port: 80,
            protocol: LbProtocol::Tcp,
            real_ip: real.parse().expect("ip"),
            real_port: 80,
        };
        let mut health = HealthView::from([(key("10.0.0.1"), Liveness::Down)]);
        assert_eq!(LbPlan::compile(&st, &health), plan);

        // A verdict on a checked one: that service lists every server's.
        health.insert(key("10.0.0.2"), Liveness::Down);
        let plan2 = LbPlan::compile(&st, &health);
        assert_eq!(
            plan2.for_instances()[0].live,
            [Liveness::Up, Liveness::Down],
            "the unchecked one is up whatever the view says"
        );
        assert_eq!(
            plan2.for_edge(),
            plan.for_edge(),
            "the edge's are untouched"
        );
    }
}
