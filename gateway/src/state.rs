//! The declarative desired state an operator applies (`nsx-gateway apply -f
//! state.yaml`, or `PUT /api/v1/state`): the full set of logical switches and
//! routers, the distributed firewall ([`crate::dfw`]), the tier-0 router
//! on the edge ([`crate::tier0`]) and the load balancers
//! ([`crate::load_balancer`]). Parsing (YAML or
//! JSON) and validation; validation reuses [`control::validate()`] for
//! everything an agent would also check and adds the gateway-level rules
//! (switch tags, VNI 0, route sanity, firewall references), reporting every
//! problem with its path.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use control::lb::VirtualServer;
use control::model::{
    DhcpOptions, InstanceConfig, LogicalRouter, LogicalSwitch, MacAddr, StaticRoute,
};
use control::validate::{Problem, Problems};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::dfw::FirewallSpec;
use crate::tier0::Tier0Spec;

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
    /// The distributed firewall; absent = every instance gets
    /// [`control::FirewallConfig::allow_all`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallSpec>,
    /// The tier-0 router the edge runs (north-south routing, SNAT, public
    /// IPs); absent = no north-south edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier0: Option<Tier0Spec>,
    /// L4 virtual servers (seed 004; `nsx-gateway lb import` writes this
    /// section from a keepalived.conf): balanced at the sending agents, or
    /// at the edge for the tier-0 uplink's addresses and full-NAT
    /// ([`crate::load_balancer`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<VirtualServer>,
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
    /// DNS servers, domain, lease time and routes the switch's DHCP server
    /// hands out (every agent answers DHCP on its own port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpOptions>,
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
            dhcp: self.dhcp.clone(),
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

/// Parses YAML (JSON is valid YAML, so this reads both), within the limits
/// of [`crate::bounded_yaml`] (string length, alias expansion).
pub fn parse(text: &str) -> Result<DesiredState, StateError> {
    crate::bounded_yaml::from_str::<Option<DesiredState>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| StateError::Parse(e.to_string()))
}

/// Parses and validates.
pub fn parse_and_validate(text: &str) -> Result<DesiredState, StateError> {
    let s = parse(text)?;
    validate(&s)?;
    Ok(s)
}

/// 1-64 characters of `[A-Za-z0-9-_.:]`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Checks `s`: every problem found, the first [`control::validate::MAX_PROBLEMS`]
/// listed and the rest counted.
pub fn validate(s: &DesiredState) -> Result<(), Problems> {
    let mut problems = Vec::new();
    let mut add = |path: String, message: String| problems.push(Problem { path, message });

    // Everything an agent checks: names, VNIs, subnets, gateway IPs, router
    // attachments, overlapping subnets on one router, route next hops.
    let as_config = InstanceConfig {
        tep_id: 1,
        switches: s.switches.iter().map(SwitchSpec::to_model).collect(),
        routers: s.routers.iter().map(RouterSpec::to_model).collect(),
        ..InstanceConfig::default()
    };
    for p in control::validate::all_problems(&as_config) {
        add(p.path, p.message);
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

    if let Some(fw) = &s.firewall {
        crate::dfw::validate(fw, &s.switches, &mut problems);
    }
    crate::tier0::validate(s, &mut problems);
    crate::load_balancer::validate(s, &mut problems);
    Problems::result(problems)
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

    /// The sample with its commented example of `section` switched on:
    /// the lines from `# section:` to the next blank one (or the end)
    /// uncommented.
    fn sample_with(section: &str) -> String {
        sample_with_all(&[section])
    }

    /// [`sample_with`] several sections.
    fn sample_with_all(sections: &[&str]) -> String {
        let starts: Vec<String> = sections.iter().map(|s| format!("# {s}:")).collect();
        let mut out = String::new();
        let mut on = false;
        for line in SAMPLE.lines() {
            on = (on || starts.iter().any(|s| line == s)) && !line.is_empty();
            let line = if on {
                line.strip_prefix("# ")
                    .or_else(|| line.strip_prefix('#'))
                    .unwrap_or(line)
            } else {
                line
            };
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    #[test]
    fn sample_load_balancers_example_is_valid() {
        // Its health checker runs on the edge: it needs the tier0 too.
        let alone = parse_and_validate(&sample_with("load_balancers"))
            .expect_err("a checker without a tier0")
            .to_string();
        assert!(alone.contains("needs a tier0 section"), "{alone}");
        let s = parse_and_validate(&sample_with_all(&["tier0", "load_balancers"]))
            .expect("lb example validates");
        let [vs] = s.load_balancers.as_slice() else {
            panic!("one virtual server: {:?}", s.load_balancers);
        };
        assert_eq!(vs.key(), "TCP 10.64.1.2:10000");
        assert_eq!(vs.scheduler, control::lb::Scheduler::Rr);
        assert_eq!(vs.persistence_timeout, Some(10));
        assert_eq!(vs.real_servers[0].weight, 1);
        assert!(matches!(
            vs.real_servers[1].check,
            Some(control::lb::HealthCheck::Tcp { .. })
        ));
    }

    #[test]
    fn sample_tier0_example_is_valid_and_shows_the_defaults() {
        let text = sample_with("tier0");
        let s = parse_and_validate(&text).expect("tier0 example validates");
        let spec = s.tier0.as_ref().expect("tier0 section");
        let t0 = spec.to_model(&s);
        assert_eq!(t0.uplink.secondary.len(), 2);
        // What the sample writes out is what an uplink-only section gets.
        let mut minimal = spec.clone();
        minimal.name = crate::tier0::DEFAULT_NAME.into();
        minimal.routes.clear();
        minimal.snat = control::model::Snat::default();
        minimal.tier1s = None;
        minimal.transit_vni = None;
        minimal.mac = None;
        minimal.health_check_ip = None;
        minimal.uplink.mtu = None;
        let mut t0_min = minimal.to_model(&s);
        t0_min.uplink.mtu = t0.uplink.mtu;
        assert_eq!(t0_min, t0);
    }

    #[test]
    fn sample_firewall_example_is_valid() {
        let s = parse_and_validate(&sample_with("firewall")).expect("firewall example validates");
        let fw = s.firewall.expect("firewall section");
        assert_eq!(fw.groups.len(), 2);
        assert_eq!(fw.groups[0].criteria.os, ["ubuntu*", "debian*"]);
        assert_eq!(fw.groups[0].criteria.name, ["web-*"]);
        assert_eq!(fw.sections[0].rules.len(), 3);
        assert_eq!(fw.default_rule.id, 1002);
        assert_eq!(fw.timeouts.tcp_established, 3600);
        assert_eq!(fw.timeouts.tcp_closed, 20, "omitted timeouts keep defaults");
        assert_eq!(fw.max_flows, Some(100_000));
    }

    #[test]
    fn firewall_round_trips_through_json_and_yaml() {
        let s = parse_and_validate(&sample_with("firewall")).expect("valid");
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(parse(&json).expect("json parses"), s);
        let yaml = serde_yaml_ng::to_string(&s).expect("yaml");
        assert_eq!(parse(&yaml).expect("yaml parses"), s);
        // No firewall section: nothing is serialized for it.
        let plain = parse(SAMPLE).expect("sample");
        assert!(
            !serde_json::to_string(&plain)
                .expect("json")
                .contains("firewall")
        );
    }

    #[test]
    fn every_firewall_problem_is_listed() {
        let text = r#"
switches:
  - {name: web-ls, tag: web, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
firewall:
  ip_sets:
    - {name: s1, addrs: [10.0.0.1/24, not-an-ip, 10.1.0.0/16, "2001:db8::/32"]}
    - {name: s1}
  groups:
    - {name: web, match: {tags: {role: web}, colour: blue}}
    - {name: db, match: {name: "db-[12]", switch: [nope-ls], ip_sets: [s9]}}
    - {name: empty}
    - {name: "bad name!", match: {os: "ubuntu*"}}
  sections:
    - name: s
      applied_to: [web, dbz, "switch:nope", "vm:x", "instance:i-1", "switch:web-ls"]
      rules:
        - {id: 1, sources: [group:web], destinations: [group:dbz], services: [{protocol: tcp, port: 22}], action: accept}
        - id: 2
          sources: [any, 10.0.0.0/8]
          destinations: [10.1.2.3/16, "ipset:nope", "switch:x", bogus, "ipset:s1", "switch:web-ls"]
          services: [{protocol: tcp, port: "100-10"}, {protocol: icmp, port: 5}, {protocol: udp, icmp_type: 3}]
          action: drop
        - {id: 1, action: accept, applied_to: []}
  l2_sections:
    - name: s
      rules: [{id: 3, ethertype: 0x0100, action: reject}]
  default_rule: {id: 3, action: reject}
  timeouts: {tcp_established: 0, udp_single: 999999999}
  max_flows: 0
"#;
        let s = parse(text).expect("parses");
        let ps = validate(&s).expect_err("invalid").into_list();
        let mut got: Vec<String> = ps.iter().map(ToString::to_string).collect();
        got.sort();
        let want = [
            "firewall.default_rule.id: rule id 3 is already used by firewall.l2_sections[0].rules[0]",
            "firewall.groups[0].match.colour: unknown criterion \"colour\" (expected one of tags, name, os, image_id, switch, ip_sets)",
            "firewall.groups[1].match.ip_sets[0]: unknown ip set \"s9\"",
            "firewall.groups[1].match.name[0]: bad glob: \"db-[12]\": unsupported character '[' (only * and ? are wildcards)",
            "firewall.groups[1].match.switch[0]: unknown switch \"nope-ls\"",
            "firewall.groups[2].match: a group needs at least one criterion (tags, name, os, image_id, switch, ip_sets)",
            "firewall.groups[3].name: \"bad name!\" must be 1-64 characters of [A-Za-z0-9-_.:]",
            "firewall.ip_sets[0].addrs[0]: 10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)",
            "firewall.ip_sets[0].addrs[1]: \"not-an-ip\" is not an IP address or a CIDR like 10.20.0.0/16",
            "firewall.ip_sets[1].name: duplicate ip set \"s1\" (also ip_sets[0])",
            "firewall.l2_sections[0].rules[0].action: L2 rules can only accept or drop",
            "firewall.l2_sections[0].rules[0].ethertype: 0x0100 is a frame length, not an EtherType (>= 0x0600)",
            "firewall.max_flows: must be at least 1 (omit it for no per-instance limit)",
            "firewall.sections[0].applied_to[1]: unknown group \"dbz\"",
            "firewall.sections[0].applied_to[2]: unknown switch \"nope\"",
            "firewall.sections[0].applied_to[3]: unknown group \"vm:x\"",
            "firewall.sections[0].name: duplicate ruleset name \"s\"",
            "firewall.sections[0].rules[0].destinations[0]: unknown group \"dbz\"",
            "firewall.sections[0].rules[1].destinations[0]: 10.1.2.3/16 has host bits set (did you mean 10.1.0.0/16?)",
            "firewall.sections[0].rules[1].destinations[1]: unknown ip set \"nope\"",
            "firewall.sections[0].rules[1].destinations[2]: unknown switch \"x\"",
            "firewall.sections[0].rules[1].destinations[3]: \"bogus\" is not any, an IP address, a CIDR, group:NAME, ipset:NAME or switch:NAME",
            "firewall.sections[0].rules[1].services[0].port: range 100-10 is reversed",
            "firewall.sections[0].rules[1].services[1].port: protocol icmp has no ports (use tcp or udp)",
            "firewall.sections[0].rules[1].services[2].icmp_type: protocol udp has no ICMP type (use icmp or ipv6-icmp)",
            "firewall.sections[0].rules[1].sources[0]: \"any\" must be alone (an empty list also means any)",
            "firewall.sections[0].rules[2].applied_to: must not be empty (omit it to use the section's applied_to)",
            "firewall.sections[0].rules[2].id: rule id 1 is already used by firewall.sections[0].rules[0]",
            "firewall.timeouts.tcp_established: 0 s is outside 1..=604800",
            "firewall.timeouts.udp_single: 999999999 s is outside 1..=604800",
        ];
        assert_eq!(got, want, "{got:#?}");
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
        let ps = validate(&s).expect_err("invalid").into_list();
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
