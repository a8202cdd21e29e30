//! Whether every instance's config can be delivered. The control channel
//! carries an instance's config whole, in one frame of at most
//! [`control::MAX_FRAME`] bytes of JSON ([`control::framing`]); a desired
//! state that makes some config larger can never reach that instance (every
//! session would die at its first Snapshot), so `apply` refuses it.
//!
//! [`Check`] encodes each config as the control session would send it at
//! worst ([`GatewaySession::worst_case_frame`]: the real codec and limit,
//! so the check cannot drift from them). A config that does not fit is
//! explained by its largest parts, each traced back to the path of the
//! desired state it comes from (`firewall.ip_sets[0]` for the address set
//! `ipset-big`), and reported as a [`Problem`] like every other refusal of
//! `apply` (HTTP 422 on the admin API).

use std::io;

use control::GatewaySession;
use control::framing::FrameError;
use control::model::InstanceConfig;
use control::validate::{Problem, Problems};
use serde::Serialize;

use crate::state::DesiredState;

/// Oversized configs explained before the check stops: past this, the
/// refusal says so instead of encoding every remaining instance's config
/// (each of them possibly megabytes).
pub const MAX_EXPLAINED: usize = 8;

/// Parts of an oversized config named in its problem.
const PARTS_NAMED: usize = 3;

/// The checks of one desired state: feed it every instance's config with
/// [`Check::config`], then [`Check::finish`].
#[derive(Debug)]
pub struct Check<'a> {
    state: &'a DesiredState,
    offenders: Vec<Offender>,
}

/// A config that cannot be framed.
#[derive(Debug)]
struct Offender {
    /// Whose config: `instance "i-1"`, or every instance.
    whose: String,
    why: FrameError,
    /// Largest first.
    parts: Vec<Part>,
}

/// One part of a config, where it comes from, and its encoded size.
#[derive(Debug)]
struct Part {
    /// Path in the desired state (`firewall.ip_sets[0]`).
    path: String,
    /// What it is in the config (`address set "ipset-big" (300000 addresses)`).
    what: String,
    bytes: usize,
}

impl<'a> Check<'a> {
    pub fn new(state: &'a DesiredState) -> Check<'a> {
        Check {
            state,
            offenders: Vec::new(),
        }
    }

    /// Checks the config of `instance`. False once [`MAX_EXPLAINED`]
    /// oversized configs were found: the caller may stop feeding.
    pub fn config(&mut self, instance: &str, config: InstanceConfig) -> bool {
        self.check(format!("instance {instance:?}"), config);
        self.offenders.len() < MAX_EXPLAINED
    }

    /// Checks the config every instance gets at least (the firewall rules
    /// that apply to all; see [`crate::dfw_resolve::Resolved::common_firewall`]).
    /// False if it does not fit: then no instance's does.
    pub fn common_config(&mut self, config: InstanceConfig) -> bool {
        self.check(
            "every instance (the rules without applied_to)".into(),
            config,
        )
    }

    /// True if `config` fits; otherwise records why not.
    fn check(&mut self, whose: String, config: InstanceConfig) -> bool {
        let (config, framed) = GatewaySession::worst_case_frame(Some(config));
        match (framed, config) {
            (Err(why), Some(config)) => {
                let parts = self.parts(&config);
                self.offenders.push(Offender { whose, why, parts });
                false
            }
            _ => true,
        }
    }

    /// Every config fits, or one problem per offending part of the state
    /// (the largest part of each oversized config), naming the instances.
    pub fn finish(self) -> Result<(), Problems> {
        if self.offenders.is_empty() {
            return Ok(());
        }
        // Group the instances by the part that is to blame, in first-seen order.
        let mut by_path: Vec<(String, Vec<&Offender>)> = Vec::new();
        for o in &self.offenders {
            let path = o.parts.first().map_or("", |p| p.path.as_str());
            match by_path.iter_mut().find(|(p, _)| p == path) {
                Some((_, list)) => list.push(o),
                None => by_path.push((path.to_string(), vec![o])),
            }
        }
        let stopped = self.offenders.len() >= MAX_EXPLAINED;
        let problems = by_path
            .into_iter()
            .map(|(path, list)| Problem {
                path,
                message: explain(&list, stopped),
            })
            .collect();
        Err(Problems::new(problems))
    }

    /// The parts of `config`, largest first (at most [`PARTS_NAMED`]).
    fn parts(&self, config: &InstanceConfig) -> Vec<Part> {
        let st = self.state;
        let mut parts = Vec::new();
        if let Some(fw) = &config.firewall {
            for set in &fw.addrsets {
                let (path, origin) = addrset_origin(st, &set.name);
                parts.push(Part {
                    path,
                    what: format!(
                        "address set {:?}{origin} ({} addresses)",
                        set.name,
                        set.addrs.len()
                    ),
                    bytes: json_len(set),
                });
            }
            for rs in &fw.rulesets {
                let pos = st
                    .firewall
                    .as_ref()
                    .and_then(|f| f.sections.iter().position(|s| s.name == rs.name));
                parts.push(Part {
                    path: pos.map_or("firewall.sections".into(), |i| {
                        format!("firewall.sections[{i}]")
                    }),
                    what: format!("ruleset {:?} ({} rules)", rs.name, rs.rules.len()),
                    bytes: json_len(rs),
                });
            }
            for rs in &fw.l2_rulesets {
                let pos = st
                    .firewall
                    .as_ref()
                    .and_then(|f| f.l2_sections.iter().position(|s| s.name == rs.name));
                parts.push(Part {
                    path: pos.map_or("firewall.l2_sections".into(), |i| {
                        format!("firewall.l2_sections[{i}]")
                    }),
                    what: format!("L2 ruleset {:?} ({} rules)", rs.name, rs.rules.len()),
                    bytes: json_len(rs),
                });
            }
        }
        if !config.remote_ports.is_empty() {
            // The ports of every instance on the switches this one reaches.
            let own = config.port.as_ref().map(|p| p.switch.as_str());
            let pos = own.and_then(|sw| st.switches.iter().position(|s| s.name == sw));
            parts.push(Part {
                path: pos.map_or("switches".into(), |i| format!("switches[{i}]")),
                what: format!(
                    "{} remote ports (the instances on the switches it reaches)",
                    config.remote_ports.len()
                ),
                bytes: json_len(&config.remote_ports),
            });
        }
        if !config.switches.is_empty() {
            parts.push(Part {
                path: "switches".into(),
                what: format!("{} switches", config.switches.len()),
                bytes: json_len(&config.switches),
            });
        }
        if !config.routers.is_empty() {
            parts.push(Part {
                path: "routers".into(),
                what: format!("{} routers", config.routers.len()),
                bytes: json_len(&config.routers),
            });
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        parts.truncate(PARTS_NAMED);
        parts
    }
}

/// The path in the desired state an address set of a config comes from,
/// and what to add to its name (`" of group \"web\""`).
fn addrset_origin(st: &DesiredState, set: &str) -> (String, String) {
    let fw = st.firewall.as_ref();
    if let Some(name) = set.strip_prefix("ipset-")
        && let Some(i) = fw.and_then(|f| f.ip_sets.iter().position(|s| s.name == name))
    {
        return (
            format!("firewall.ip_sets[{i}]"),
            format!(" of ip set {name:?}"),
        );
    }
    if let Some(name) = set.strip_prefix("grp-")
        && let Some((i, g)) =
            fw.and_then(|f| f.groups.iter().enumerate().find(|(_, g)| g.name == name))
    {
        let sets = &g.criteria.ip_sets;
        let origin = if sets.is_empty() {
            format!(" of group {name:?}")
        } else {
            format!(" of group {name:?}, with its ip_sets {}", sets.join(", "))
        };
        return (format!("firewall.groups[{i}]"), origin);
    }
    if let Some(name) = set.strip_prefix("ls-")
        && let Some(i) = st.switches.iter().position(|s| s.name == name)
    {
        return (format!("switches[{i}]"), format!(" of switch {name:?}"));
    }
    ("firewall".into(), String::new())
}

/// The problem text for the offenders blamed on one part.
fn explain(list: &[&Offender], stopped: bool) -> String {
    let Some(first) = list.first() else {
        return String::new();
    };
    let size = match &first.why {
        FrameError::TooLarge { len, max } => {
            format!("a control message of {len} bytes, over the frame limit of {max} bytes")
        }
        other => format!("a control message that cannot be encoded ({other})"),
    };
    let mut parts = first.parts.iter();
    let Some(top) = parts.next() else {
        return format!("the config of {} would be {size}", first.whose);
    };
    let mut text = format!(
        "{} is {} bytes and makes the config of {} {size}",
        top.what, top.bytes, first.whose
    );
    // Other parts worth naming: those that weigh next to the largest.
    let rest: Vec<String> = parts
        .filter(|p| p.bytes.saturating_mul(10) >= top.bytes)
        .map(|p| format!("{} at {}, {} bytes", p.what, p.path, p.bytes))
        .collect();
    if !rest.is_empty() {
        text.push_str(&format!("; its next largest parts: {}", rest.join("; ")));
    }
    let others: Vec<&str> = list.iter().skip(1).map(|o| o.whose.as_str()).collect();
    if !others.is_empty() {
        text.push_str(&format!("; the same for {}", others.join(", ")));
    }
    if stopped {
        text.push_str(&format!(
            " (checking stopped after {MAX_EXPLAINED} oversized configs; there may be more)"
        ));
    }
    text
}

/// The size of `v` as JSON, without keeping the text.
fn json_len<T: Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Our types always serialize; a failure would only undercount.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
