//! Validation of the north-south parts of an [`InstanceConfig`]: the
//! instance's link to the edge ([`EdgeLink`]) and, on the edge, its tier-0
//! router ([`Tier0`]: uplink, routes, SNAT, public IPs). Like the rest of
//! [`crate::validate`], every problem is reported with its path.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{EdgeLink, InstanceConfig, Snat, Tier0, Uplink};
use crate::validate::{Collector, MAX_VNI};

/// Largest uplink MTU accepted (jumbo frames).
pub const MAX_UPLINK_MTU: u16 = 9216;
/// Longest idle timeout accepted (a week).
const MAX_TIMEOUT_SECS: u32 = 7 * 86_400;

/// The checks of the edge link and the tier-0 alike (the rest of a
/// config's shared checks are [`Collector`]'s, in [`crate::validate`]).
impl Collector {
    fn transit_vni(&mut self, path: &str, vni: u32, cfg: &InstanceConfig) {
        if vni > MAX_VNI {
            self.add(path, format!("{vni:#x} exceeds 24 bits"));
        } else if let Some(i) = cfg.switches.iter().position(|s| s.vni == vni) {
            self.add(path, format!("{vni:#x} is already used by switches[{i}]"));
        }
    }

    fn tier1s(&mut self, path: &str, tier1s: &[String], cfg: &InstanceConfig) {
        let routers: HashSet<&str> = cfg.routers.iter().map(|r| r.name.as_str()).collect();
        let mut seen = HashSet::new();
        for (i, name) in tier1s.iter().enumerate() {
            if !routers.contains(name.as_str()) {
                self.add(format!("{path}[{i}]"), format!("unknown router {name:?}"));
            } else if !seen.insert(name.as_str()) {
                self.add(
                    format!("{path}[{i}]"),
                    format!("router {name:?} is listed twice"),
                );
            }
        }
    }
}

/// Checks `cfg.edge` and `cfg.tier0`, adding what is wrong to `out`.
pub(crate) fn check(cfg: &InstanceConfig, o: &mut Collector) {
    if let Some(e) = &cfg.edge {
        if cfg.tier0.is_some() {
            o.add(
                "edge",
                "the edge itself runs the tier-0; it has no edge link",
            );
        }
        check_link(o, e, cfg);
    }
    if let Some(t0) = &cfg.tier0 {
        check_tier0(o, t0, cfg);
    }
}

fn check_link(o: &mut Collector, e: &EdgeLink, cfg: &InstanceConfig) {
    o.peer_tep_id("edge.tep_id", e.tep_id, cfg.tep_id);
    o.tep_ip("edge.tep_ip", e.tep_ip);
    o.transit_vni("edge.transit_vni", e.transit_vni, cfg);
    o.unicast_mac("edge.mac", e.mac);
    o.tier1s("edge.tier1s", &e.tier1s, cfg);
}

/// The overlay subnets behind the tier-0: the switches of its tier-1s.
fn overlay_subnets<'a>(t0: &'a Tier0, cfg: &'a InstanceConfig) -> Vec<(&'a str, Ipv4Net)> {
    let tier1s: HashSet<&str> = t0.tier1s.iter().map(String::as_str).collect();
    let subnets: HashMap<&str, Ipv4Net> = cfg
        .switches
        .iter()
        .map(|s| (s.name.as_str(), s.subnet))
        .collect();
    cfg.routers
        .iter()
        .filter(|r| tier1s.contains(r.name.as_str()))
        .flat_map(|r| r.switches.iter())
        .filter_map(|name| Some((name.as_str(), *subnets.get(name.as_str())?)))
        .collect()
}

/// The uplink's own addresses, each with its place: 0 the primary, `j + 1`
/// `secondary[j]`.
type Own = HashMap<Ipv4Addr, usize>;

fn check_tier0(o: &mut Collector, t0: &Tier0, cfg: &InstanceConfig) {
    if t0.name.trim().is_empty() {
        o.add("tier0.name", "must not be empty");
    }
    o.unicast_mac("tier0.mac", t0.mac);
    o.transit_vni("tier0.transit_vni", t0.transit_vni, cfg);
    o.tier1s("tier0.tier1s", &t0.tier1s, cfg);
    let overlay = overlay_subnets(t0, cfg);
    let own = check_uplink(o, &t0.uplink, &overlay);
    let net = t0.uplink.address.trunc();
    for (i, r) in t0.routes.iter().enumerate() {
        let p = format!("tier0.routes[{i}]");
        if r.prefix.network() != r.prefix.addr() {
            o.add(
                format!("{p}.prefix"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    r.prefix,
                    r.prefix.trunc()
                ),
            );
        }
        if !net.contains(&r.next_hop) {
            o.add(
                format!("{p}.next_hop"),
                format!("{} is not on the uplink's subnet {net}", r.next_hop),
            );
        } else if own.contains_key(&r.next_hop) {
            o.add(
                format!("{p}.next_hop"),
                format!("{} is an address of the uplink itself", r.next_hop),
            );
        }
    }
    let pool = check_snat(o, &t0.snat, t0.uplink.address.addr(), &own);
    check_public_ips(o, t0, cfg, &own, &pool, &overlay);
    check_health_ip(o, t0, &overlay);
    crate::lb::check(&t0.health_checks, "tier0.health_checks", &mut o.0);
}

/// The health checks' source address: a unicast address no subnet the
/// tier-0 routes to holds (answers to it must come to the tier-0).
fn check_health_ip(o: &mut Collector, t0: &Tier0, overlay: &[(&str, Ipv4Net)]) {
    let ip = t0.health_check_ip;
    let p = "tier0.health_check_ip";
    if ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_loopback()
        || ip.is_link_local()
    {
        o.add(p, format!("{ip} is not a unicast address"));
    } else if t0.uplink.address.trunc().contains(&ip) {
        o.add(
            p,
            format!(
                "{ip} is on the uplink's subnet {}",
                t0.uplink.address.trunc()
            ),
        );
    } else if let Some((name, net)) = overlay.iter().find(|(_, n)| n.contains(&ip)) {
        o.add(p, format!("{ip} is in the subnet {net} of switch {name:?}"));
    }
}

/// The uplink's own addresses, checked.
fn check_uplink(o: &mut Collector, u: &Uplink, overlay: &[(&str, Ipv4Net)]) -> Own {
    let net = u.address.trunc();
    let primary = u.address.addr();
    let host = |ip: Ipv4Addr| {
        net.contains(&ip)
            && !(net.prefix_len() <= 30 && (ip == net.network() || ip == net.broadcast()))
    };
    if net.prefix_len() > 30 {
        o.add(
            "tier0.uplink.address",
            format!(
                "{} leaves no room for a gateway (prefix longer than /30)",
                u.address
            ),
        );
    } else if !host(primary) {
        o.add(
            "tier0.uplink.address",
            format!("{primary} is the network or broadcast address of {net}"),
        );
    }
    for (name, sn) in overlay {
        if sn.contains(&net.network()) || net.contains(&sn.network()) {
            o.add(
                "tier0.uplink.address",
                format!("{net} overlaps the subnet {sn} of switch {name:?}"),
            );
        }
    }
    let mut own = Own::from([(primary, 0)]);
    for (i, &a) in u.secondary.iter().enumerate() {
        let p = format!("tier0.uplink.secondary[{i}]");
        if !host(a) {
            o.add(
                p,
                format!("{a} is not a host address of the uplink's subnet {net}"),
            );
        } else if let Some(&j) = own.get(&a) {
            let what = if j == 0 {
                "the primary address".to_string()
            } else {
                format!("secondary[{}]", j - 1)
            };
            o.add(p, format!("{a} is already the uplink's {what}"));
        } else {
            own.insert(a, i + 1);
        }
    }
    if let Some(gw) = u.gateway {
        if !host(gw) {
            o.add(
                "tier0.uplink.gateway",
                format!("{gw} is not a host address of the uplink's subnet {net}"),
            );
        } else if own.contains_key(&gw) {
            o.add(
                "tier0.uplink.gateway",
                format!("{gw} is an address of the uplink itself"),
            );
        }
    }
    if let Some(mtu) = u.mtu
        && !(Uplink::MIN_MTU..=MAX_UPLINK_MTU).contains(&mtu)
    {
        o.add(
            "tier0.uplink.mtu",
            format!("{mtu} is outside {}..={MAX_UPLINK_MTU}", Uplink::MIN_MTU),
        );
    }
    own
}

/// The SNAT pool as it will be used (the primary address when empty), checked.
fn check_snat(o: &mut Collector, s: &Snat, primary: Ipv4Addr, own: &Own) -> HashSet<Ipv4Addr> {
    let mut pool = HashSet::new();
    for (i, a) in s.pool_or(primary).enumerate() {
        let p = format!("tier0.snat.pool[{i}]");
        if !own.contains_key(&a) {
            o.add(
                p,
                format!("{a} is not an address of the uplink (primary or secondary)"),
            );
        } else if !pool.insert(a) {
            o.add(p, format!("{a} is listed twice"));
        }
    }
    if s.port_min == 0 || s.port_min > s.port_max {
        o.add(
            "tier0.snat.port_min",
            format!(
                "ports {}..={} are not a range of non-zero ports",
                s.port_min, s.port_max
            ),
        );
    }
    if s.max_sessions == 0 || s.max_sessions > Snat::MAX_SESSIONS {
        o.add(
            "tier0.snat.max_sessions",
            format!("{} is outside 1..={}", s.max_sessions, Snat::MAX_SESSIONS),
        );
    }
    let t = &s.timeouts;
    for (name, v, min, rfc) in [
        ("tcp_established", t.tcp_established, 7440, "RFC 5382 REQ-5"),
        ("tcp_transitory", t.tcp_transitory, 240, "RFC 5382 REQ-5"),
        ("udp", t.udp, 120, "RFC 4787 REQ-5"),
        ("icmp", t.icmp, 60, "RFC 5508 REQ-1"),
    ] {
        if v < min || v > MAX_TIMEOUT_SECS {
            o.add(
                format!("tier0.snat.timeouts.{name}"),
                format!("{v} s is outside {min}..={MAX_TIMEOUT_SECS} s ({rfc} sets the minimum)"),
            );
        }
    }
    pool
}

fn check_public_ips(
    o: &mut Collector,
    t0: &Tier0,
    cfg: &InstanceConfig,
    own: &Own,
    pool: &HashSet<Ipv4Addr>,
    overlay: &[(&str, Ipv4Net)],
) {
    let mut by_public: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut by_private: HashMap<Ipv4Addr, usize> = HashMap::new();
    // The ports on a switch behind the tier-0.
    let switches: HashSet<&str> = overlay.iter().map(|(name, _)| *name).collect();
    let ports: HashSet<Ipv4Addr> = cfg
        .remote_ports
        .iter()
        .map(|p| (p.switch.as_str(), p.ip))
        .chain(cfg.port.as_ref().map(|p| (p.switch.as_str(), p.ip)))
        .filter(|(sw, _)| switches.contains(sw))
        .map(|(_, ip)| ip)
        .collect();
    for (i, pip) in t0.public_ips.iter().enumerate() {
        let p = format!("tier0.public_ips[{i}]");
        let whose = |j: usize| {
            let inst = t0.public_ips.get(j).map_or("", |x| x.instance.as_str());
            if inst.is_empty() {
                format!("public_ips[{j}]")
            } else {
                format!("public_ips[{j}] (instance {inst:?})")
            }
        };
        if own.get(&pip.public_ip).is_none_or(|&j| j == 0) {
            o.add(
                format!("{p}.public_ip"),
                format!(
                    "{} is not a secondary address of the uplink ({})",
                    pip.public_ip, t0.uplink.address
                ),
            );
        } else if pool.contains(&pip.public_ip) {
            o.add(
                format!("{p}.public_ip"),
                format!("{} is also a SNAT pool address", pip.public_ip),
            );
        }
        if let Some(j) = by_public.insert(pip.public_ip, i) {
            o.add(
                format!("{p}.public_ip"),
                format!("{} is already claimed by {}", pip.public_ip, whose(j)),
            );
        }
        if !ports.contains(&pip.private_ip) {
            o.add(
                format!("{p}.private_ip"),
                format!(
                    "{} is not a port on a switch behind the tier-0",
                    pip.private_ip
                ),
            );
        } else if let Some(j) = by_private.insert(pip.private_ip, i) {
            o.add(
                format!("{p}.private_ip"),
                format!("{} already has a public IP in {}", pip.private_ip, whose(j)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::validate::validate;

    fn edge() -> InstanceConfig {
        InstanceConfig {
            version: 1,
            tep_id: 100,
            switches: vec![LogicalSwitch {
                name: "web".into(),
                vni: 0x238c,
                subnet: "192.168.100.0/24".parse().unwrap(),
                gateway_ip: "192.168.100.1".parse().unwrap(),
                dhcp: None,
            }],
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: "02:50:56:00:00:01".parse().unwrap(),
                switches: vec!["web".into()],
                routes: vec![],
            }],
            remote_ports: vec![RemotePort {
                switch: "web".into(),
                ip: "192.168.100.3".parse().unwrap(),
                mac: "06:00:00:00:00:03".parse().unwrap(),
                tep_ip: "10.99.3.11".parse().unwrap(),
                tep_id: 3,
            }],
            tier0: Some(Box::new(Tier0 {
                name: "t0".into(),
                mac: "02:50:56:00:00:f0".parse().unwrap(),
                transit_vni: 0xffff00,
                tier1s: vec!["t1".into()],
                uplink: Uplink {
                    address: "203.0.113.2/24".parse().unwrap(),
                    secondary: vec!["203.0.113.10".parse().unwrap()],
                    gateway: Some("203.0.113.1".parse().unwrap()),
                    mtu: None,
                },
                routes: vec![StaticRoute {
                    prefix: "198.51.100.0/24".parse().unwrap(),
                    next_hop: "203.0.113.254".parse().unwrap(),
                }],
                snat: Snat::default(),
                public_ips: vec![PublicIp {
                    public_ip: "203.0.113.10".parse().unwrap(),
                    private_ip: "192.168.100.3".parse().unwrap(),
                    instance: "vm3".into(),
                }],
                underlay_snat: true,
                health_check_ip: Tier0::DEFAULT_HEALTH_CHECK_IP,
                health_checks: Vec::new(),
            })),
            ..InstanceConfig::default()
        }
    }

    fn problems(cfg: &InstanceConfig) -> Vec<String> {
        match validate(cfg) {
            Ok(()) => vec![],
            Err(p) => p.into_list().into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn underlay_snat_is_on_unless_switched_off() {
        let cfg = edge();
        let json = serde_json::to_value(&cfg).unwrap();
        assert!(
            json["tier0"].get("underlay_snat").is_none(),
            "the default is not written"
        );
        let back: InstanceConfig = serde_json::from_value(json.clone()).unwrap();
        assert!(back.tier0.unwrap().underlay_snat, "absent means on");
        let mut off = json;
        off["tier0"]["underlay_snat"] = false.into();
        let back: InstanceConfig = serde_json::from_value(off).unwrap();
        assert!(!back.tier0.as_ref().unwrap().underlay_snat);
        let again = serde_json::to_value(&back).unwrap();
        assert_eq!(again["tier0"]["underlay_snat"], false, "off is written");
        assert_eq!(Tier0::DOWNLINK_NAT_PORTS, (61000, 65535));
    }

    #[test]
    fn a_good_tier0_passes() {
        assert_eq!(problems(&edge()), Vec::<String>::new());
    }

    #[test]
    fn every_tier0_problem_has_its_path() {
        let mut cfg = edge();
        let t0 = cfg.tier0.as_mut().unwrap();
        t0.transit_vni = 0x238c;
        t0.tier1s.push("nope".into());
        t0.uplink.secondary.push("198.51.100.7".parse().unwrap());
        t0.uplink.gateway = Some("203.0.113.2".parse().unwrap());
        t0.routes[0].next_hop = "10.0.0.1".parse().unwrap();
        t0.snat.pool = vec!["203.0.113.99".parse().unwrap()];
        t0.snat.timeouts.udp = 30;
        t0.public_ips.push(PublicIp {
            public_ip: "203.0.113.10".parse().unwrap(),
            private_ip: "192.168.100.77".parse().unwrap(),
            instance: "vm9".into(),
        });
        t0.public_ips.push(PublicIp {
            public_ip: "203.0.113.50".parse().unwrap(),
            private_ip: "192.168.100.3".parse().unwrap(),
            instance: String::new(),
        });
        let got = problems(&cfg);
        let paths: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "tier0.transit_vni",
                "tier0.tier1s[1]",
                "tier0.uplink.secondary[1]",
                "tier0.uplink.gateway",
                "tier0.routes[0].next_hop",
                "tier0.snat.pool[0]",
                "tier0.snat.timeouts.udp",
                "tier0.public_ips[1].public_ip",
                "tier0.public_ips[1].private_ip",
                "tier0.public_ips[2].public_ip",
                "tier0.public_ips[2].private_ip",
            ],
            "{got:#?}"
        );
        assert!(
            got[7].contains("already claimed by public_ips[0] (instance \"vm3\")"),
            "{got:#?}"
        );
        assert!(
            got[9].contains("not a secondary address of the uplink"),
            "{got:#?}"
        );
    }

    #[test]
    fn the_health_check_address_is_outside_every_routed_subnet() {
        let with = |ip: &str| {
            let mut cfg = edge();
            cfg.tier0.as_mut().unwrap().health_check_ip = ip.parse().unwrap();
            problems(&cfg)
        };
        assert!(with("100.64.0.1").is_empty());
        let overlay = cfg_switch_ip(&edge());
        for (ip, says) in [
            (overlay.as_str(), "in the subnet"),
            ("203.0.113.200", "on the uplink's subnet"),
            ("169.254.0.1", "not a unicast address"),
            ("0.0.0.0", "not a unicast address"),
        ] {
            let got = with(ip);
            assert_eq!(got.len(), 1, "{ip}: {got:?}");
            assert!(
                got[0].starts_with("tier0.health_check_ip:") && got[0].contains(says),
                "{ip}: {got:?}"
            );
        }
    }

    /// An address inside the edge config's first switch.
    fn cfg_switch_ip(cfg: &InstanceConfig) -> String {
        let net = cfg.switches[0].subnet;
        std::net::Ipv4Addr::from(u32::from(net.network()) + 9).to_string()
    }

    #[test]
    fn the_edge_link_is_checked() {
        let mut cfg = edge();
        cfg.tier0 = None;
        cfg.edge = Some(EdgeLink {
            tep_ip: "0.0.0.0".parse().unwrap(),
            tep_id: 100,
            transit_vni: 0x1_000_000,
            mac: MacAddr::BROADCAST,
            tier1s: vec!["t9".into()],
        });
        let got = problems(&cfg);
        let paths: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "edge.tep_id",
                "edge.tep_ip",
                "edge.transit_vni",
                "edge.mac",
                "edge.tier1s[0]"
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn the_health_checks_are_checked_as_virtual_servers() {
        let mut cfg = edge();
        let vs: crate::lb::VirtualServer = serde_json::from_str(
            r#"{"vip":"192.168.100.50","port":80,"scheduler":"sh",
                "real_servers":[{"ip":"192.168.100.3","port":8080,
                                 "check":{"type":"tcp","connect_timeout":3}}]}"#,
        )
        .unwrap();
        cfg.tier0.as_mut().unwrap().health_checks = vec![vs.clone()];
        assert_eq!(problems(&cfg), Vec::<String>::new());
        let mut bad = vs.clone();
        bad.real_servers[0].check = Some(crate::lb::HealthCheck::Tcp {
            timing: crate::lb::CheckTiming {
                connect_timeout: Some(0),
                ..Default::default()
            },
        });
        cfg.tier0.as_mut().unwrap().health_checks = vec![vs, bad];
        assert_eq!(
            problems(&cfg),
            [
                "tier0.health_checks[1]: virtual server TCP 192.168.100.50:80 is declared twice",
                "tier0.health_checks[1].real_servers[0].check.connect_timeout: must be at least 1 second",
            ]
        );
    }
}
