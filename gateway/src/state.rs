//! The declarative desired state an operator applies (`nsx-gateway apply -f
//! state.yaml`, or `PUT /api/v1/state`): the full set of logical switches and
//! routers. Parsing (YAML or JSON) and validation; validation reuses
//! [`control::validate`] for everything an agent would also check and adds
//! the gateway-level rules (switch tags, VNI 0, route sanity), reporting
//! every problem with its path.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use control::model::{InstanceConfig, LogicalRouter, LogicalSwitch, MacAddr, StaticRoute};
use control::validate::{Problem, Problems};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The instance tag that places an instance (seed 002).
pub const NETWORK_TAG: &str = "nsx:network";
/// Tag value meaning micro-segmentation mode (no overlay port).
pub const DEFAULT_NETWORK: &str = "default";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot parse desired state: {0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(#[from] Problems),
}

/// The whole desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    #[serde(default)]
    pub switches: Vec<SwitchSpec>,
    #[serde(default)]
    pub routers: Vec<RouterSpec>,
}

/// A logical switch as the operator declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    pub name: String,
    /// The value of the instance tag `nsx:network` that places instances here.
    pub tag: String,
    /// 24-bit Geneve VNI (1..=0xffffff).
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
}

/// A distributed logical router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: String,
    /// The router's virtual MAC, the same on every agent.
    pub mac: MacAddr,
    /// Names of the attached switches.
    #[serde(default)]
    pub switches: Vec<String>,
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
}

impl SwitchSpec {
    pub fn to_model(&self) -> LogicalSwitch {
        LogicalSwitch {
            name: self.name.clone(),
            vni: self.vni,
            subnet: self.subnet,
            gateway_ip: self.gateway_ip,
        }
    }

    /// True when `ip` may be handed to an instance on this switch.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
            && ip != self.gateway_ip
    }
}

impl RouterSpec {
    pub fn to_model(&self) -> LogicalRouter {
        LogicalRouter {
            name: self.name.clone(),
            mac: self.mac,
            switches: self.switches.clone(),
            routes: self.routes.clone(),
        }
    }
}

/// Parses YAML (JSON is valid YAML, so this reads both).
pub fn parse(text: &str) -> Result<DesiredState, StateError> {
    serde_yaml_ng::from_str::<Option<DesiredState>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| StateError::Parse(e.to_string()))
}

/// Parses and validates.
pub fn parse_and_validate(text: &str) -> Result<DesiredState, StateError> {
    let s = parse(text)?;
    validate(&s)?;
    Ok(s)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Checks `s` and returns every problem found.
pub fn validate(s: &DesiredState) -> Result<(), Problems> {
    let mut problems = Vec::new();
    let mut add = |path: String, message: String| problems.push(Problem { path, message });

    // Everything an agent checks: names, VNIs, subnets, gateway IPs, router
    // attachments, overlapping subnets on one router, route next hops.
    let as_config = InstanceConfig {
        version: 0,
        tep_id: 1,
        switches: s.switches.iter().map(SwitchSpec::to_model).collect(),
        routers: s.routers.iter().map(RouterSpec::to_model).collect(),
        port: None,
        remote_ports: Vec::new(),
        firewall: None,
    };
    if let Err(Problems(ps)) = control::validate(&as_config) {
        for p in ps {
            add(p.path, p.message);
        }
    }

    // Gateway-level rules.
    let mut tags: HashMap<&str, usize> = HashMap::new();
    for (i, sw) in s.switches.iter().enumerate() {
        let p = format!("switches[{i}]");
        if !sw.name.trim().is_empty() && !valid_name(&sw.name) {
            add(
                format!("{p}.name"),
                format!("{:?} must be 1-64 characters of [A-Za-z0-9-_.:]", sw.name),
            );
        }
        if sw.tag.is_empty() {
            add(format!("{p}.tag"), "must not be empty".into());
        } else if sw.tag == DEFAULT_NETWORK {
            add(
                format!("{p}.tag"),
                format!("{DEFAULT_NETWORK:?} is reserved for micro-segmentation mode"),
            );
        } else if !valid_name(&sw.tag) {
            add(
                format!("{p}.tag"),
                format!("{:?} must be 1-64 characters of [A-Za-z0-9-_.:]", sw.tag),
            );
        } else if let Some(j) = tags.insert(sw.tag.as_str(), i) {
            add(
                format!("{p}.tag"),
                format!("{:?} is already used by switches[{j}]", sw.tag),
            );
        }
        if sw.vni == 0 {
            add(format!("{p}.vni"), "0 is reserved; use 1..=0xffffff".into());
        }
        if sw.subnet.prefix_len() < 8 {
            add(
                format!("{p}.subnet"),
                format!(
                    "{} is too large for IPAM (prefix shorter than /8)",
                    sw.subnet
                ),
            );
        }
        let first = sw.subnet.network().octets()[0];
        if sw.subnet.network().is_loopback()
            || sw.subnet.network().is_multicast()
            || first >= 240
            || first == 0
        {
            add(
                format!("{p}.subnet"),
                format!("{} is not a unicast range usable for instances", sw.subnet),
            );
        }
    }
    let switch_gw: HashSet<Ipv4Addr> = s.switches.iter().map(|x| x.gateway_ip).collect();
    for (i, r) in s.routers.iter().enumerate() {
        let p = format!("routers[{i}]");
        if !r.name.trim().is_empty() && !valid_name(&r.name) {
            add(
                format!("{p}.name"),
                format!("{:?} must be 1-64 characters of [A-Za-z0-9-_.:]", r.name),
            );
        }
        if r.switches.is_empty() {
            add(
                format!("{p}.switches"),
                "a router needs at least one switch".into(),
            );
        }
        let mut prefixes: HashMap<Ipv4Net, usize> = HashMap::new();
        for (j, route) in r.routes.iter().enumerate() {
            let rp = format!("{p}.routes[{j}]");
            if let Some(k) = prefixes.insert(route.prefix.trunc(), j) {
                add(
                    format!("{rp}.prefix"),
                    format!("{} is already routed by routes[{k}]", route.prefix),
                );
            }
            if switch_gw.contains(&route.next_hop) {
                add(
                    format!("{rp}.next_hop"),
                    format!(
                        "{} is a router port (a switch gateway_ip), not a next hop",
                        route.next_hop
                    ),
                );
            }
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../state.sample.yaml");

    #[test]
    fn sample_file_is_valid() {
        let s = parse_and_validate(SAMPLE).expect("sample must validate");
        assert_eq!(s.switches.len(), 2);
        assert_eq!(s.switches[0].vni, 0x238c);
        assert_eq!(s.routers.len(), 1);
    }

    #[test]
    fn empty_document_is_empty_state() {
        assert_eq!(parse("").expect("empty"), DesiredState::default());
        assert_eq!(parse("{}").expect("empty"), DesiredState::default());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse("switches: []\nbogus: 1\n").expect_err("unknown field");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = r#"
switches:
  - {name: web, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app, tag: web, vni: 0, subnet: 192.168.100.0/25, gateway_ip: 10.0.0.1}
  - {name: db, tag: default, vni: 0x1000000, subnet: 10.1.0.0/24, gateway_ip: 10.1.0.1}
routers:
  - name: t1
    mac: 01:00:5e:00:00:01
    switches: [web, app, nope]
    routes:
      - {prefix: 0.0.0.0/0, next_hop: 192.168.100.1}
      - {prefix: 0.0.0.0/0, next_hop: 172.16.0.1}
"#;
        let s = parse(text).expect("parses");
        let Problems(ps) = validate(&s).expect_err("invalid");
        let paths: Vec<&str> = ps.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "switches[1].tag",
            "switches[1].vni",
            "switches[1].gateway_ip",
            "switches[2].tag",
            "switches[2].vni",
            "routers[0].mac",
            "routers[0].switches[1]",
            "routers[0].switches[2]",
            "routers[0].routes[0].next_hop",
            "routers[0].routes[1].prefix",
            "routers[0].routes[1].next_hop",
        ] {
            assert!(paths.contains(&want), "missing {want} in {ps:#?}");
        }
    }
}
