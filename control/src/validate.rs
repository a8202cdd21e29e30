//! Validation of an [`InstanceConfig`]: every problem is reported, each with
//! the path of the offending field (`switches[1].vni: 0x1000000 exceeds 24 bits`),
//! so an operator can fix a file in one pass. A config that passes is safe
//! to compile into datapath tables.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{InstanceConfig, MacAddr};

/// Largest 24-bit VNI.
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Largest 31-bit tunnel-endpoint id (the top bit of the option is reserved).
pub const MAX_TEP_ID: u32 = 0x7fff_ffff;

/// One problem in a config, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one config (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in config:", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Collector(Vec<Problem>);

impl Collector {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Checks `cfg` and returns every problem found.
pub fn validate(cfg: &InstanceConfig) -> Result<(), Problems> {
    let mut c = Collector::default();

    if cfg.tep_id == 0 || cfg.tep_id > MAX_TEP_ID {
        c.add(
            "tep_id",
            format!("{} is outside 1..={MAX_TEP_ID} (31 bits)", cfg.tep_id),
        );
    }

    // Switches: unique names and VNIs, sane subnets.
    let mut switch_by_name: HashMap<&str, (usize, Ipv4Net, Ipv4Addr)> = HashMap::new();
    let mut vnis: HashMap<u32, usize> = HashMap::new();
    for (i, s) in cfg.switches.iter().enumerate() {
        let p = format!("switches[{i}]");
        if s.name.trim().is_empty() {
            c.add(format!("{p}.name"), "must not be empty");
        } else if switch_by_name
            .insert(&s.name, (i, s.subnet, s.gateway_ip))
            .is_some()
        {
            c.add(
                format!("{p}.name"),
                format!("duplicate switch name {:?}", s.name),
            );
        }
        if s.vni > MAX_VNI {
            c.add(format!("{p}.vni"), format!("{:#x} exceeds 24 bits", s.vni));
        } else if let Some(j) = vnis.insert(s.vni, i) {
            c.add(
                format!("{p}.vni"),
                format!("{:#x} is already used by switches[{j}]", s.vni),
            );
        }
        if s.subnet.prefix_len() > 30 {
            c.add(
                format!("{p}.subnet"),
                format!(
                    "{} leaves no room for hosts (prefix longer than /30)",
                    s.subnet
                ),
            );
        }
        if s.subnet.network() != s.subnet.addr() {
            c.add(
                format!("{p}.subnet"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    s.subnet,
                    s.subnet.trunc()
                ),
            );
        }
        check_host_ip(&mut c, &format!("{p}.gateway_ip"), s.gateway_ip, &s.subnet);
    }

    // Routers.
    let mut router_of_switch: HashMap<&str, usize> = HashMap::new();
    let mut router_names = HashSet::new();
    for (i, r) in cfg.routers.iter().enumerate() {
        let p = format!("routers[{i}]");
        if r.name.trim().is_empty() {
            c.add(format!("{p}.name"), "must not be empty");
        } else if !router_names.insert(r.name.as_str()) {
            c.add(
                format!("{p}.name"),
                format!("duplicate router name {:?}", r.name),
            );
        }
        check_unicast_mac(&mut c, &format!("{p}.mac"), r.mac);
        let mut attached: Vec<(usize, Ipv4Net)> = Vec::new();
        for (j, sw) in r.switches.iter().enumerate() {
            let sp = format!("{p}.switches[{j}]");
            match switch_by_name.get(sw.as_str()) {
                None => c.add(sp, format!("unknown switch {sw:?}")),
                Some(&(si, net, _)) => {
                    if let Some(other) = router_of_switch.insert(sw.as_str(), i) {
                        if other != i {
                            c.add(
                                sp,
                                format!("switch {sw:?} is already attached to routers[{other}]"),
                            );
                        } else {
                            c.add(sp, format!("switch {sw:?} is listed twice"));
                        }
                        continue;
                    }
                    for &(sj, other_net) in &attached {
                        if net.contains(&other_net.network()) || other_net.contains(&net.network())
                        {
                            c.add(
                                sp.clone(),
                                format!(
                                    "subnet {net} of switches[{si}] overlaps {other_net} of switches[{sj}] on the same router"
                                ),
                            );
                        }
                    }
                    attached.push((si, net));
                }
            }
        }
        for (j, route) in r.routes.iter().enumerate() {
            let rp = format!("{p}.routes[{j}]");
            if route.prefix.network() != route.prefix.addr() {
                c.add(
                    format!("{rp}.prefix"),
                    format!("{} has host bits set", route.prefix),
                );
            }
            if !attached
                .iter()
                .any(|(_, net)| net.contains(&route.next_hop))
            {
                c.add(
                    format!("{rp}.next_hop"),
                    format!(
                        "{} is not on any switch attached to this router",
                        route.next_hop
                    ),
                );
            }
        }
    }

    // Addresses in use per switch: (switch, ip) and (switch, mac) must be unique.
    let mut ips: HashMap<(&str, Ipv4Addr), String> = HashMap::new();
    let mut macs: HashMap<(&str, MacAddr), String> = HashMap::new();

    if let Some(port) = &cfg.port {
        match switch_by_name.get(port.switch.as_str()) {
            None => c.add("port.switch", format!("unknown switch {:?}", port.switch)),
            Some(&(_, net, gw)) => {
                check_host_ip(&mut c, "port.ip", port.ip, &net);
                if port.ip == gw {
                    c.add("port.ip", format!("{} is the switch's gateway_ip", port.ip));
                }
                ips.insert((port.switch.as_str(), port.ip), "port".into());
                if let Some(mac) = port.mac {
                    macs.insert((port.switch.as_str(), mac), "port".into());
                }
            }
        }
        if let Some(mac) = port.mac {
            check_unicast_mac(&mut c, "port.mac", mac);
        }
    }

    for (i, rp) in cfg.remote_ports.iter().enumerate() {
        let p = format!("remote_ports[{i}]");
        match switch_by_name.get(rp.switch.as_str()) {
            None => c.add(
                format!("{p}.switch"),
                format!("unknown switch {:?}", rp.switch),
            ),
            Some(&(_, net, gw)) => {
                check_host_ip(&mut c, &format!("{p}.ip"), rp.ip, &net);
                if rp.ip == gw {
                    c.add(
                        format!("{p}.ip"),
                        format!("{} is the switch's gateway_ip", rp.ip),
                    );
                }
                if let Some(prev) = ips.insert((rp.switch.as_str(), rp.ip), p.clone()) {
                    c.add(
                        format!("{p}.ip"),
                        format!(
                            "{} on switch {:?} is already used by {prev}",
                            rp.ip, rp.switch
                        ),
                    );
                }
                if let Some(prev) = macs.insert((rp.switch.as_str(), rp.mac), p.clone()) {
                    c.add(
                        format!("{p}.mac"),
                        format!(
                            "{} on switch {:?} is already used by {prev}",
                            rp.mac, rp.switch
                        ),
                    );
                }
            }
        }
        check_unicast_mac(&mut c, &format!("{p}.mac"), rp.mac);
        if rp.tep_id == 0 || rp.tep_id > MAX_TEP_ID {
            c.add(
                format!("{p}.tep_id"),
                format!("{} is outside 1..={MAX_TEP_ID} (31 bits)", rp.tep_id),
            );
        } else if rp.tep_id == cfg.tep_id {
            c.add(
                format!("{p}.tep_id"),
                format!("{} is this instance's own tep_id", rp.tep_id),
            );
        }
        let t = rp.tep_ip;
        if t.is_unspecified() || t.is_multicast() || t.is_broadcast() || t.is_loopback() {
            c.add(
                format!("{p}.tep_ip"),
                format!("{t} is not a unicast underlay address"),
            );
        }
    }

    if let Some(fw) = &cfg.firewall {
        crate::firewall::validate_firewall(fw, "firewall", &mut c.0);
    }

    if c.0.is_empty() {
        Ok(())
    } else {
        Err(Problems(c.0))
    }
}

fn check_host_ip(c: &mut Collector, path: &str, ip: Ipv4Addr, net: &Ipv4Net) {
    if !net.contains(&ip) {
        c.add(path, format!("{ip} is outside the switch subnet {net}"));
    } else if net.prefix_len() <= 30 && (ip == net.network() || ip == net.broadcast()) {
        c.add(
            path,
            format!("{ip} is the network or broadcast address of {net}"),
        );
    }
}

fn check_unicast_mac(c: &mut Collector, path: &str, mac: MacAddr) {
    if mac.is_multicast() || mac.is_zero() {
        c.add(path, format!("{mac} is not a unicast MAC address"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn good() -> InstanceConfig {
        InstanceConfig {
            version: 1,
            tep_id: 1,
            switches: vec![
                LogicalSwitch {
                    name: "web".into(),
                    vni: 0x238c,
                    subnet: "192.168.100.0/24".parse().unwrap(),
                    gateway_ip: "192.168.100.1".parse().unwrap(),
                },
                LogicalSwitch {
                    name: "app".into(),
                    vni: 0x2388,
                    subnet: "192.168.99.0/24".parse().unwrap(),
                    gateway_ip: "192.168.99.1".parse().unwrap(),
                },
            ],
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: "02:50:56:00:00:01".parse().unwrap(),
                switches: vec!["web".into(), "app".into()],
                routes: vec![StaticRoute {
                    prefix: "10.0.0.0/8".parse().unwrap(),
                    next_hop: "192.168.99.254".parse().unwrap(),
                }],
            }],
            port: Some(LocalPort {
                switch: "web".into(),
                ip: "192.168.100.3".parse().unwrap(),
                mac: None,
            }),
            remote_ports: vec![RemotePort {
                switch: "app".into(),
                ip: "192.168.99.9".parse().unwrap(),
                mac: "06:00:00:00:00:09".parse().unwrap(),
                tep_ip: "10.99.3.251".parse().unwrap(),
                tep_id: 2,
            }],
            firewall: None,
        }
    }

    fn paths(cfg: &InstanceConfig) -> Vec<String> {
        match validate(cfg) {
            Ok(()) => vec![],
            Err(p) => p.0.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn good_config_passes() {
        assert_eq!(paths(&good()), Vec::<String>::new());
    }

    #[test]
    fn vni_too_large_reports_path() {
        let mut cfg = good();
        cfg.switches[1].vni = 0x100_0000;
        assert_eq!(
            paths(&cfg),
            vec!["switches[1].vni: 0x1000000 exceeds 24 bits"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let mut cfg = good();
        cfg.tep_id = 0;
        cfg.switches[0].gateway_ip = "10.0.0.1".parse().unwrap();
        cfg.switches[1].vni = 0x238c;
        cfg.routers[0].switches.push("nope".into());
        cfg.routers[0].routes[0].next_hop = "172.16.0.1".parse().unwrap();
        cfg.port.as_mut().unwrap().ip = "192.168.100.0".parse().unwrap();
        cfg.remote_ports[0].mac = MacAddr::BROADCAST;
        cfg.remote_ports[0].tep_id = 0x8000_0000;
        let got = paths(&cfg);
        let want_prefixes = [
            "tep_id:",
            "switches[0].gateway_ip:",
            "switches[1].vni:",
            "routers[0].switches[2]:",
            "routers[0].routes[0].next_hop:",
            "port.ip:",
            "remote_ports[0].mac:",
            "remote_ports[0].tep_id:",
        ];
        for w in want_prefixes {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want_prefixes.len(), "{got:#?}");
    }

    #[test]
    fn duplicate_addresses_are_reported() {
        let mut cfg = good();
        let mut dup = cfg.remote_ports[0].clone();
        dup.tep_id = 3;
        cfg.remote_ports.push(dup);
        let got = paths(&cfg);
        assert!(
            got.iter().any(|g| g.starts_with("remote_ports[1].ip:")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|g| g.starts_with("remote_ports[1].mac:")),
            "{got:?}"
        );
    }

    #[test]
    fn switch_on_two_routers_is_rejected() {
        let mut cfg = good();
        let mut r2 = cfg.routers[0].clone();
        r2.name = "t1b".into();
        r2.routes.clear();
        r2.switches = vec!["web".into()];
        cfg.routers.push(r2);
        let got = paths(&cfg);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("routers[1].switches[0]:"), "{got:?}");
    }
}
