//! The tier-0 router in the desired state (`tier0:`): its schema, the
//! defaults that make everything but the uplink optional (as the seed's
//! tier-0 is created automatically), and its validation. Validation reuses
//! [`control::validate::all_problems`] on the edge's config as the state
//! gives it (every switch and router, no ports), so the paths are the
//! state file's own (`tier0.uplink.gateway`, `tier0.snat.pool[0]`), and
//! adds what only the gateway sees (the transit VNI against every switch,
//! the MAC against the routers). Public IPs come from instance tags and
//! are checked where the tags are set ([`crate::tier0_resolve`]).

use control::model::{InstanceConfig, MacAddr, Snat, StaticRoute, Tier0, Uplink};
use control::validate::Problem;
use serde::{Deserialize, Serialize};

use crate::state::{DesiredState, RouterSpec, SwitchSpec, valid_name};

/// The tier-0's name when the section does not give one.
pub const DEFAULT_NAME: &str = "t0";
/// The tier-0's MAC when the section does not give one (locally
/// administered, VMware's OUI second byte as the routers' MACs).
pub const DEFAULT_MAC: MacAddr = MacAddr([0x02, 0x50, 0x56, 0x00, 0x0f, 0x00]);
/// The transit VNI when the section does not give one; if a switch uses
/// it, the next lower VNI no switch uses.
pub const DEFAULT_TRANSIT_VNI: u32 = 0x00ff_fff0;

fn default_name() -> String {
    DEFAULT_NAME.to_string()
}

/// The `tier0:` section: the tier-0 router the edge runs. Only `uplink` is
/// required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier0Spec {
    #[serde(default = "default_name")]
    pub name: String,
    /// Address (with its subnet), secondary addresses (public IPs and SNAT
    /// pool addresses come from them), default gateway, MTU.
    pub uplink: Uplink,
    /// Static routes; next hops on the uplink's subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
    /// SNAT of overlay traffic leaving by the uplink; every field has a
    /// default (the uplink's address, RFC 4787/5382/5508 timeouts).
    #[serde(default)]
    pub snat: Snat,
    /// The tier-1 routers attached; absent = every router of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier1s: Option<Vec<String>>,
    /// VNI of the transit segment; absent = [`DEFAULT_TRANSIT_VNI`] (or
    /// the next lower VNI no switch uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit_vni: Option<u32>,
    /// The tier-0's MAC; absent = [`DEFAULT_MAC`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Whether overlay traffic to hosts on the underlay subnet (the edge's
    /// downlink) is source-NATed to the edge's underlay address
    /// ([`control::model::Tier0::underlay_snat`]); default on.
    #[serde(default = "default_underlay_snat", skip_serializing_if = "is_true")]
    pub underlay_snat: bool,
    /// The source address of the edge's health checks; absent =
    /// [`Tier0::DEFAULT_HEALTH_CHECK_IP`] ([`Tier0::health_check_ip`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_ip: Option<std::net::Ipv4Addr>,
}

fn default_underlay_snat() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Tier0Spec {
    /// The attached tier-1s: as given, else every router in `st`'s order.
    pub fn tier1s(&self, st: &DesiredState) -> Vec<String> {
        match &self.tier1s {
            Some(t) => t.clone(),
            None => st.routers.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// The transit VNI: as given, else the highest VNI at or below
    /// [`DEFAULT_TRANSIT_VNI`] that no switch of `st` uses.
    pub fn transit_vni(&self, st: &DesiredState) -> u32 {
        if let Some(v) = self.transit_vni {
            return v;
        }
        // At most one VNI per switch is skipped.
        let mut v = DEFAULT_TRANSIT_VNI;
        while v > 1 && st.switches.iter().any(|s| s.vni == v) {
            v -= 1;
        }
        v
    }

    pub fn mac(&self) -> MacAddr {
        self.mac.unwrap_or(DEFAULT_MAC)
    }

    /// The source address of the edge's health checks: as given, else
    /// [`Tier0::DEFAULT_HEALTH_CHECK_IP`].
    pub fn health_check_ip(&self) -> std::net::Ipv4Addr {
        self.health_check_ip
            .unwrap_or(Tier0::DEFAULT_HEALTH_CHECK_IP)
    }

    /// The addresses the uplink's SNAT takes: the pool, or the uplink's
    /// primary address when it is empty ([`Snat::pool_or`]).
    pub fn snat_pool(&self) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
        self.snat.pool_or(self.uplink.address.addr())
    }

    /// The tier-0 as the edge's config carries it, defaults filled in,
    /// without public IPs (those come from the instances' tags) and
    /// health checks (from the load balancers: [`crate::tier0_resolve`]).
    pub fn to_model(&self, st: &DesiredState) -> Tier0 {
        Tier0 {
            name: self.name.clone(),
            mac: self.mac(),
            transit_vni: self.transit_vni(st),
            tier1s: self.tier1s(st),
            uplink: self.uplink.clone(),
            routes: self.routes.clone(),
            snat: self.snat.clone(),
            public_ips: Vec::new(),
            underlay_snat: self.underlay_snat,
            health_check_ip: self.health_check_ip(),
            health_checks: Vec::new(),
        }
    }
}

/// Checks `st.tier0` (if any), adding every problem to `out` with the state
/// file's paths.
pub fn validate(st: &DesiredState, out: &mut Vec<Problem>) {
    let Some(spec) = &st.tier0 else {
        return;
    };
    let mut add = |path: &str, message: String| {
        out.push(Problem {
            path: path.to_string(),
            message,
        });
    };
    if !spec.name.trim().is_empty() && !valid_name(&spec.name) {
        add(
            "tier0.name",
            format!("{:?} must be 1-64 characters of [A-Za-z0-9-_.:]", spec.name),
        );
    }
    if let Some(i) = st.routers.iter().position(|r| r.mac == spec.mac()) {
        add(
            "tier0.mac",
            format!("{} is already the MAC of routers[{i}]", spec.mac()),
        );
    }
    if spec.transit_vni == Some(0) {
        add(
            "tier0.transit_vni",
            "0 is reserved; use 1..=0xffffff".into(),
        );
    }
    // Everything an edge would check, on the edge's config as this state
    // gives it. Every switch and router of the state is in it (so indices
    // are the state's, and the transit VNI is checked against every
    // switch, which every instance's edge link is); its problems outside
    // `tier0` are the state's own, already reported.
    let as_edge = InstanceConfig {
        tep_id: 1,
        switches: st.switches.iter().map(SwitchSpec::to_model).collect(),
        routers: st.routers.iter().map(RouterSpec::to_model).collect(),
        tier0: Some(Box::new(spec.to_model(st))),
        ..InstanceConfig::default()
    };
    out.extend(
        control::validate::all_problems(&as_edge)
            .into_iter()
            .filter(|p| p.path.starts_with("tier0")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{parse, validate as validate_state};

    const BASE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0xfffff0, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls, app-ls]}
"#;

    #[test]
    fn everything_but_the_uplink_has_a_default() {
        let st = parse(&format!(
            "{BASE}tier0:\n  uplink: {{address: 203.0.113.2/24, gateway: 203.0.113.1}}\n"
        ))
        .expect("parses");
        validate_state(&st).expect("valid");
        let t0 = st.tier0.as_ref().expect("tier0").to_model(&st);
        assert_eq!(t0.name, "t0");
        assert_eq!(t0.mac.to_string(), "02:50:56:00:0f:00");
        // 0xfffff0 is app-ls's VNI: the next one down.
        assert_eq!(t0.transit_vni, 0xffffef);
        assert_eq!(t0.tier1s, ["t1"]);
        assert_eq!(t0.snat, Snat::default());
        assert!(t0.underlay_snat, "SNAT toward the underlay by default");
        let st = parse(&format!(
            "{BASE}tier0:\n  uplink: {{address: 203.0.113.2/24}}\n  underlay_snat: false\n"
        ))
        .expect("parses");
        assert!(
            !st.tier0
                .as_ref()
                .expect("tier0")
                .to_model(&st)
                .underlay_snat
        );
        assert!(t0.routes.is_empty() && t0.public_ips.is_empty());
        let e = parse(&format!("{BASE}tier0: {{name: t0}}\n")).expect_err("no uplink");
        assert!(e.to_string().contains("missing field `uplink`"), "{e}");
    }

    #[test]
    fn every_tier0_problem_has_the_state_files_path() {
        let st = parse(&format!(
            r#"{BASE}tier0:
  name: "bad name"
  mac: "02:50:56:56:44:52"
  transit_vni: 0x238c
  tier1s: [t1, t9]
  uplink:
    address: 203.0.113.2/24
    secondary: [198.51.100.7]
    gateway: 203.0.113.2
    mtu: 100
  routes: [{{prefix: 198.51.100.0/24, next_hop: 10.0.0.1}}]
  snat: {{pool: [203.0.113.99], port_min: 0, timeouts: {{udp: 5}}}}
"#
        ))
        .expect("parses");
        let got: Vec<String> = validate_state(&st)
            .expect_err("invalid")
            .into_list()
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        let paths: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "tier0.name",
                "tier0.mac",
                "tier0.transit_vni",
                "tier0.tier1s[1]",
                "tier0.uplink.secondary[0]",
                "tier0.uplink.gateway",
                "tier0.uplink.mtu",
                "tier0.routes[0].next_hop",
                "tier0.snat.pool[0]",
                "tier0.snat.port_min",
                "tier0.snat.timeouts.udp",
            ],
            "{got:#?}"
        );
        assert!(got[2].contains("already used by switches[0]"), "{got:#?}");
        assert!(got[1].contains("routers[0]"), "{got:#?}");
    }
}
