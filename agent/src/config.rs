//! The agent's static config file: host-local settings (`[host]`) plus the
//! desired state ([`control::InstanceConfig`]) that the gateway will push
//! later. Loading parses and validates everything before anything on the host
//! is touched; every problem is reported with its path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use control::{InstanceConfig, Problems};
use serde::{Deserialize, Serialize};

/// Host-local settings: names and paths, configurable so several agents can
/// share one kernel (each in its own instance namespace) in tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// The instance NIC the agent takes over.
    pub nic: String,
    /// Network namespace holding the overlay interface.
    pub netns: String,
    /// Overlay interface inside `netns` (the instance's view of the switch port).
    pub overlay_if: String,
    /// The agent's end of the overlay veth, left in the instance's namespace.
    pub overlay_peer: String,
    /// Device that takes over the NIC's underlay address and routes.
    pub vtep_if: String,
    /// Where the agent keeps its state (saved NIC config for restore).
    pub state_dir: PathBuf,
    /// Unix socket of the local API (nsxcli).
    pub api_socket: PathBuf,
    /// Keep TX checksum offload and TSO on the overlay interface: the agent
    /// then receives partial checksums and 64 KiB TCP super-frames and
    /// finishes/segments them itself (much faster). `false` turns them off,
    /// so only complete MTU-sized frames reach the agent.
    pub tx_offload: bool,
    /// How long the datapath thread keeps polling without sleeping after
    /// a round that moved packets, in microseconds (0 = never: it sleeps
    /// whenever a round finds nothing). Spinning spares the next packet a
    /// thread wake-up (the latency of request/response traffic on an idle
    /// link) and costs up to this much CPU per idle gap; the window
    /// adapts between an eighth of it and all of it (`crate::dp::spin`).
    pub busy_poll_us: u32,
    /// Micro-segmentation mode: the bridge port (a veth) through which the
    /// host's underlay traffic reaches the agent's firewall...
    pub fw_if: String,
    /// ...and the agent's end of that veth.
    pub fw_peer: String,
    /// What the firewall does before it has received a first ruleset:
    /// `failClosed` (only management traffic) or `failOpen`.
    pub failure_policy: firewall::FailurePolicy,
    /// Most connections the firewall tracks (global limit; ~80 bytes each).
    pub max_flows: usize,
    /// The packet log of rules `with log` (rotated at 10 MiB, 3 kept).
    pub packet_log: PathBuf,
    /// What SIGTERM does to the host: `restore` gives the NIC back exactly
    /// as found; `keep` leaves the plumbing (netns, interfaces, addresses)
    /// in place so a restarted agent adopts it and the instance's sessions
    /// survive a planned restart or upgrade (`nsx-agent cleanup` restores).
    pub on_stop: OnStop,
    /// The Prometheus endpoint (`GET /metrics`, `host:port`, loopback by
    /// default); `""` turns it off.
    pub metrics_listen: String,
    /// Overlay mode (the seed's "sshd on 8888 on the Downlink subnet"): the
    /// agent starts an sshd on `<underlay IP>:<this port>` in the instance's
    /// namespace and, once it listens, refuses new TCP connections to port
    /// 22 arriving on `vtep_if` (port 22 is reached through the overlay).
    /// 0 = off (no underlay sshd, port 22 left alone). See `crate::host::sshd`.
    pub ssh_underlay_port: u16,
    /// Overlay mode: the port of the sshd the agent starts on the overlay
    /// address inside `netns`; 0 = off.
    pub ssh_overlay_port: u16,
    /// The OpenSSH server binary (absolute path). If it does not exist,
    /// neither sshd is started and port 22 is left alone.
    pub sshd: PathBuf,
    /// Extra arguments for every sshd the agent starts (e.g. `["-h",
    /// "/path/hostkey"]` or `["-f", "/etc/ssh/sshd_nsx_config"]`).
    pub sshd_args: Vec<String>,
    /// Overlay mode: the port's address comes from the distribution's DHCP
    /// client (dhclient or udhcpc), which the agent runs in `netns`,
    /// answered by the agent's own DHCP server, instead of being set by
    /// the agent (see `crate::host::portdhcp`).
    pub port_dhcp: bool,
    /// Edge role: the uplink interface (plain IP toward the cloud's NAT and
    /// the internet) the agent takes for the tier-0 router the gateway
    /// configures; `""` (the default) = an ordinary instance.
    pub uplink: String,
}

/// See [`HostSettings::on_stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    #[default]
    Restore,
    Keep,
}

/// Where the metrics endpoint listens unless configured otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The underlay sshd's port unless configured otherwise (the seed's 8888).
pub const DEFAULT_SSH_UNDERLAY_PORT: u16 = 8888;
/// The TCP port refused on the underlay while the underlay sshd runs.
pub const SSH_PORT: u16 = 22;
/// The datapath's busy-polling budget unless configured otherwise (see
/// [`HostSettings::busy_poll_us`]; docs/ARCHITECTURE.md has the figures).
pub const DEFAULT_BUSY_POLL_US: u32 = 200;
/// Most `busy_poll_us` accepted (one second).
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;
/// Most `sshd_args` accepted.
const MAX_SSHD_ARGS: usize = 64;

impl HostSettings {
    /// The metrics endpoint's address; `None` when turned off (`""`).
    /// Validation has checked it parses.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        let s = self.metrics_listen.trim();
        if s.is_empty() { None } else { s.parse().ok() }
    }

    /// The datapath's busy-polling budget ([`HostSettings::busy_poll_us`]).
    pub fn busy_poll(&self) -> std::time::Duration {
        std::time::Duration::from_micros(u64::from(self.busy_poll_us))
    }

    /// Whether this agent is the edge: it has an uplink (`uplink` not
    /// blank). Every decision on the role asks this.
    pub fn is_edge(&self) -> bool {
        !self.uplink.trim().is_empty()
    }

    /// What this agent enrolls as: the edge ([`HostSettings::is_edge`]),
    /// else an ordinary instance.
    pub fn role(&self) -> control::proto::Role {
        if self.is_edge() {
            control::proto::Role::Edge
        } else {
            control::proto::Role::Instance
        }
    }
}

/// Whether `name` can name a network interface: 1-15 bytes, no '/',
/// space or NUL, not `.` or `..` (it is joined into `/proc` paths).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ' ', '\0'])
        && name != "."
        && name != ".."
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            nic: "eth0".into(),
            netns: "nsx-root".into(),
            overlay_if: "nsx-eth0".into(),
            overlay_peer: "nsx-eth0-peer".into(),
            vtep_if: "nsx-vtep0.0".into(),
            state_dir: PathBuf::from("/var/lib/nsx-agent"),
            api_socket: PathBuf::from("/var/run/nsx-agent/nsxagent.sock"),
            tx_offload: true,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            fw_if: "nsx-fw0".into(),
            fw_peer: "nsx-fw0-peer".into(),
            failure_policy: firewall::FailurePolicy::FailClosed,
            max_flows: 1 << 18,
            packet_log: PathBuf::from("/var/log/nsx-agent/dfwpktlogs.log"),
            on_stop: OnStop::Restore,
            metrics_listen: DEFAULT_METRICS_LISTEN.into(),
            ssh_underlay_port: DEFAULT_SSH_UNDERLAY_PORT,
            ssh_overlay_port: SSH_PORT,
            sshd: PathBuf::from("/usr/sbin/sshd"),
            sshd_args: Vec::new(),
            port_dhcp: false,
            uplink: String::new(),
        }
    }
}

/// How to reach the gateway (`[gateway]`): with it, the desired state comes
/// from the gateway and the file's own desired-state keys are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Control channel, `host:5555`.
    pub control: String,
    /// Enrollment endpoint, `host:8443`.
    pub enroll: String,
    /// Name in the gateway's certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Root CA certificate the installer put on the instance (PEM).
    pub ca: PathBuf,
    /// Bootstrap private key (PEM), used once to enroll.
    pub bootstrap_key: PathBuf,
    /// Inventory sent to the gateway; the instance id defaults to the hostname.
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    /// Instance tags, e.g. `{ "nsx:network" = "web" }`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl GatewaySettings {
    /// The gateway by name with the control port, as `status` shows it
    /// (the seed's `nsx-gw.vmware.local:5555`): the host of `control` when
    /// it is a name, else `server_name`, the name the gateway's
    /// certificate must carry (the installer writes `control` as an IP).
    pub fn control_name(&self) -> String {
        let (host, port) = match self.control.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (self.control.as_str(), None),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = if bare.parse::<std::net::IpAddr>().is_ok() {
            self.server_name.as_str()
        } else {
            host
        };
        match port {
            Some(p) => format!("{name}:{p}"),
            None => name.to_string(),
        }
    }
}

fn default_server_name() -> String {
    "nsx-gw.vmware.local".into()
}

/// Largest connection table accepted (~1.3 GiB at 80 bytes an entry).
pub const MAX_FLOWS: usize = 16 << 20;

/// A parsed, validated config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub host: HostSettings,
    pub gateway: Option<GatewaySettings>,
    /// The file's desired state (required without `[gateway]`).
    pub instance: Option<InstanceConfig>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path}: {problems}")]
    Invalid { path: PathBuf, problems: Problems },
}

impl AgentConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            ParseError::Invalid(problems) => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<AgentConfig, ParseError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        let host = match table.remove("host") {
            None => HostSettings::default(),
            Some(v) => HostSettings::deserialize(v)
                .map_err(|e| ParseError::Syntax(format!("[host]: {e}")))?,
        };
        let gateway = match table.remove("gateway") {
            None => None,
            Some(v) => Some(
                GatewaySettings::deserialize(v)
                    .map_err(|e| ParseError::Syntax(format!("[gateway]: {e}")))?,
            ),
        };
        let instance = if table.is_empty() && gateway.is_some() {
            None
        } else {
            Some(
                InstanceConfig::deserialize(toml::Value::Table(table))
                    .map_err(|e| ParseError::Syntax(e.to_string()))?,
            )
        };
        let mut problems = instance
            .as_ref()
            .map(control::validate::all_problems)
            .unwrap_or_default();
        problems.extend(check_host(&host));
        if let Some(i) = &instance {
            problems.extend(check_role(&host, i));
        }
        if let Some(gw) = &gateway {
            problems.extend(check_gateway(gw));
        }
        if problems.is_empty() {
            Ok(AgentConfig {
                host,
                gateway,
                instance,
            })
        } else {
            Err(ParseError::Invalid(Problems::new(problems)))
        }
    }
}

/// Parse failure without a file name (see [`ConfigError`]).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(Problems),
}

/// `host:port` with a non-empty host and a port in 1..=65535.
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

fn check_gateway(g: &GatewaySettings) -> Vec<control::Problem> {
    let mut out = Vec::new();
    let mut bad = |path: &str, message: String| {
        out.push(control::Problem {
            path: path.into(),
            message,
        })
    };
    for (path, v) in [
        ("gateway.control", &g.control),
        ("gateway.enroll", &g.enroll),
    ] {
        if !is_host_port(v) {
            bad(path, format!("{v:?} is not host:port"));
        }
    }
    if rustls::pki_types::ServerName::try_from(g.server_name.as_str()).is_err() {
        bad(
            "gateway.server_name",
            format!("{:?} is not a DNS name or IP address", g.server_name),
        );
    }
    if g.instance_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        bad("gateway.instance_id", "must not be empty when given".into());
    }
    if g.tags.keys().any(|k| k.trim().is_empty()) {
        bad("gateway.tags", "tag names must not be empty".into());
    }
    out
}

/// A static desired state fits the agent's role: the edge (`[host]
/// uplink`) runs a tier-0 and has no overlay port; an instance runs no
/// tier-0 (else the tier-0 would take frames the port sends for the
/// uplink's, or an edge would start with nothing to route).
fn check_role(h: &HostSettings, i: &InstanceConfig) -> Vec<control::Problem> {
    let problem = |path: &str, message: &str| control::Problem {
        path: path.into(),
        message: message.into(),
    };
    let mut out = Vec::new();
    if !h.is_edge() {
        if i.tier0.is_some() {
            out.push(problem(
                "tier0",
                "a tier-0 runs on the edge: set [host] uplink to the NIC it takes",
            ));
        }
    } else {
        if i.tier0.is_none() {
            out.push(problem(
                "host.uplink",
                "the edge needs a [tier0] section (or a [gateway] that sends one)",
            ));
        }
        if i.port.is_some() {
            out.push(problem("port", "the edge has no overlay port"));
        }
    }
    out
}

fn check_host(h: &HostSettings) -> Vec<control::Problem> {
    let mut out = Vec::new();
    let ifnames = [
        ("host.nic", &h.nic),
        ("host.overlay_if", &h.overlay_if),
        ("host.overlay_peer", &h.overlay_peer),
        ("host.vtep_if", &h.vtep_if),
        ("host.fw_if", &h.fw_if),
        ("host.fw_peer", &h.fw_peer),
    ];
    for (path, name) in ifnames {
        if !valid_ifname(name) {
            out.push(control::Problem {
                path: path.into(),
                message: format!(
                    "{name:?} is not a valid interface name (1-15 chars, no '/' or spaces)"
                ),
            });
        }
    }
    if h.netns.is_empty() || h.netns.contains(['/', '\0']) || h.netns == "." || h.netns == ".." {
        out.push(control::Problem {
            path: "host.netns".into(),
            message: format!("{:?} is not a valid namespace name", h.netns),
        });
    }
    let mut names: Vec<&str> = ifnames.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        out.push(control::Problem {
            path: "host".into(),
            message: "nic, overlay_if, overlay_peer, vtep_if, fw_if and fw_peer must all differ"
                .into(),
        });
    }
    let metrics = h.metrics_listen.trim();
    if !metrics.is_empty() && metrics.parse::<std::net::SocketAddr>().is_err() {
        out.push(control::Problem {
            path: "host.metrics_listen".into(),
            message: format!(
                "{:?} is not a socket address (e.g. \"127.0.0.1:9464\"; \"\" turns metrics off)",
                h.metrics_listen
            ),
        });
    }
    if h.max_flows == 0 || h.max_flows > MAX_FLOWS {
        out.push(control::Problem {
            path: "host.max_flows".into(),
            message: format!("{} is outside 1..={MAX_FLOWS}", h.max_flows),
        });
    }
    if h.busy_poll_us > MAX_BUSY_POLL_US {
        out.push(control::Problem {
            path: "host.busy_poll_us".into(),
            message: format!(
                "{} us is more than {MAX_BUSY_POLL_US} (one second); 0 turns busy-polling off",
                h.busy_poll_us
            ),
        });
    }
    if h.is_edge() {
        let u = h.uplink.as_str();
        if !valid_ifname(u) {
            out.push(control::Problem {
                path: "host.uplink".into(),
                message: format!(
                    "{u:?} is not a valid interface name (1-15 chars, no '/' or spaces)"
                ),
            });
        } else if ifnames.iter().any(|(_, n)| n.as_str() == u) {
            out.push(control::Problem {
                path: "host.uplink".into(),
                message: format!("{u:?} is already the agent's nic, overlay or firewall interface"),
            });
        }
        if h.port_dhcp {
            out.push(control::Problem {
                path: "host.port_dhcp".into(),
                message: "the edge role (uplink set) has no overlay port to run DHCP on".into(),
            });
        }
    }
    out.extend(check_ssh(h));
    out
}

fn check_ssh(h: &HostSettings) -> Vec<control::Problem> {
    let mut out = Vec::new();
    let mut bad = |path: &str, message: String| {
        out.push(control::Problem {
            path: path.into(),
            message,
        })
    };
    if h.ssh_underlay_port == SSH_PORT {
        bad(
            "host.ssh_underlay_port",
            format!(
                "{SSH_PORT} is the port refused on the underlay while the underlay sshd runs; \
                 use another (default {DEFAULT_SSH_UNDERLAY_PORT}) or 0 to turn it off"
            ),
        );
    }
    let sshd = h.sshd.as_os_str().as_encoded_bytes();
    if !h.sshd.is_absolute() || sshd.contains(&0) {
        bad(
            "host.sshd",
            format!(
                "{:?} is not an absolute path (sshd re-executes itself by it)",
                h.sshd
            ),
        );
    }
    if h.sshd_args.len() > MAX_SSHD_ARGS {
        bad(
            "host.sshd_args",
            format!("{} arguments; at most {MAX_SSHD_ARGS}", h.sshd_args.len()),
        );
    }
    if let Some(i) = h.sshd_args.iter().position(|a| a.contains('\0')) {
        bad(
            &format!("host.sshd_args[{i}]"),
            "contains a NUL character".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uplink_makes_the_edge_role() {
        let mut h = HostSettings::default();
        assert_eq!(h.role(), control::proto::Role::Instance);
        assert!(!h.is_edge());
        h.uplink = "eth1".into();
        assert_eq!(h.role(), control::proto::Role::Edge);
        assert!(h.is_edge());
        h.uplink = "  ".into();
        assert_eq!(h.role(), control::proto::Role::Instance);
        assert!(!h.is_edge());
    }

    #[test]
    fn the_gateway_is_shown_by_name() {
        let gw = |control: &str, name: &str| {
            let text = format!(
                "control = \"{control}\"\nenroll = \"x:8443\"\nca = \"/ca.pem\"\n\
                 bootstrap_key = \"/b.key\"\n{name}"
            );
            toml::from_str::<GatewaySettings>(&text)
                .map(|g| g.control_name())
                .map_err(|e| e.to_string())
        };
        // The installer writes the gateway's address; the name is the
        // certificate's (the seed's `nsx-gw.vmware.local:5555`).
        assert_eq!(
            gw("10.99.3.2:5555", ""),
            Ok("nsx-gw.vmware.local:5555".into())
        );
        assert_eq!(
            gw("10.99.3.2:5555", "server_name = \"gw.example\""),
            Ok("gw.example:5555".into())
        );
        assert_eq!(
            gw("gw.internal:5555", "server_name = \"gw.example\""),
            Ok("gw.internal:5555".into())
        );
        assert_eq!(
            gw("[fd00::2]:5555", ""),
            Ok("nsx-gw.vmware.local:5555".into())
        );
    }

    const SAMPLE: &str = include_str!("../../docs/agent.sample.toml");

    #[test]
    fn sample_config_is_valid() {
        let cfg = AgentConfig::parse(SAMPLE).unwrap();
        assert_eq!(cfg.instance.unwrap().switches.len(), 2);
        assert_eq!(cfg.host.nic, "eth0");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{SAMPLE}\nbogus = 1\n");
        let err = AgentConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn a_static_state_fits_the_role() {
        let paths = |text: &str| -> Vec<String> {
            match AgentConfig::parse(text) {
                Ok(_) => Vec::new(),
                Err(ParseError::Invalid(p)) => p.list().iter().map(|p| p.path.clone()).collect(),
                Err(e) => vec![e.to_string()],
            }
        };
        // The sample is an instance with a port: as an edge (uplink set,
        // no tier0) it has two problems.
        let edge = SAMPLE.replace("[host]\n", "[host]\nuplink = \"eth1\"\n");
        assert_eq!(paths(&edge), ["host.uplink", "port"]);
        // A tier0 without the edge role.
        let t0 = format!(
            "{SAMPLE}\n[tier0]\nname = \"t0\"\nmac = \"02:50:56:00:0f:00\"\n\
             transit_vni = 0xfffff0\ntier1s = []\n\n[tier0.uplink]\naddress = \"203.0.113.2/24\"\n"
        );
        assert_eq!(paths(&t0), ["tier0"]);
        assert!(paths(SAMPLE).is_empty());
        // A blank uplink is no edge, for every check as for the role: the
        // instance with a port is valid, a tier0 is refused as without one.
        let blank = SAMPLE.replace("[host]\n", "[host]\nuplink = \"  \"\n");
        assert!(paths(&blank).is_empty());
        let cfg = AgentConfig::parse(&blank).expect("an instance");
        assert!(!cfg.host.is_edge());
        assert_eq!(cfg.host.role(), control::proto::Role::Instance);
        let blank_t0 = t0.replace("[host]\n", "[host]\nuplink = \"  \"\n");
        assert_eq!(paths(&blank_t0), ["tier0"]);
        // A name that is not an interface's is refused.
        let bad = SAMPLE.replace("[host]\n", "[host]\nuplink = \"../eth1\"\n");
        assert_eq!(paths(&bad), ["host.uplink", "host.uplink", "port"]);
    }

    #[test]
    fn problems_carry_paths() {
        let text = SAMPLE.replace("vni = 0x2388", "vni = 0x1000000");
        let err = AgentConfig::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("switches[1].vni: 0x1000000 exceeds 24 bits"),
            "{err}"
        );
    }

    #[test]
    fn metrics_listen_is_a_socket_address_or_off() {
        let cfg = AgentConfig::parse(SAMPLE).unwrap();
        assert_eq!(
            cfg.host.metrics_addr(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let with = |v: &str| {
            SAMPLE.replace(
                "metrics_listen = \"127.0.0.1:9464\"",
                &format!("metrics_listen = {v:?}"),
            )
        };
        let off = AgentConfig::parse(&with("")).unwrap();
        assert_eq!(off.host.metrics_addr(), None);
        let v6 = AgentConfig::parse(&with("[::1]:9500")).unwrap();
        assert_eq!(v6.host.metrics_addr(), Some("[::1]:9500".parse().unwrap()));
        for bad in ["localhost:9464", "127.0.0.1", "127.0.0.1:99999", "9464"] {
            let err = AgentConfig::parse(&with(bad)).unwrap_err().to_string();
            assert!(err.contains("host.metrics_listen:"), "{bad}: {err}");
        }
    }

    #[test]
    fn busy_poll_defaults_and_is_bounded() {
        // The sample documents the default; without the key it applies.
        let cfg = AgentConfig::parse(SAMPLE).unwrap();
        assert_eq!(cfg.host.busy_poll_us, DEFAULT_BUSY_POLL_US);
        let without: HostSettings = toml::from_str("nic = \"eth0\"").unwrap();
        assert_eq!(without.busy_poll_us, DEFAULT_BUSY_POLL_US);
        let line = format!("busy_poll_us = {DEFAULT_BUSY_POLL_US} ");
        assert!(SAMPLE.contains(&line), "the sample sets busy_poll_us");
        let with = |v: &str| SAMPLE.replace(&line, &format!("busy_poll_us = {v} "));
        let off = AgentConfig::parse(&with("0")).unwrap();
        assert!(off.host.busy_poll().is_zero());
        let max = AgentConfig::parse(&with("1000000")).unwrap();
        assert_eq!(max.host.busy_poll(), std::time::Duration::from_secs(1));
        let err = AgentConfig::parse(&with("1000001"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host.busy_poll_us:"), "{err}");
        let err = AgentConfig::parse(&with("-1")).unwrap_err().to_string();
        assert!(err.contains("[host]"), "{err}");
    }

    #[test]
    fn ssh_settings_default_and_are_checked() {
        let cfg = AgentConfig::parse(SAMPLE).unwrap();
        assert_eq!(cfg.host.ssh_underlay_port, 8888);
        assert_eq!(cfg.host.ssh_overlay_port, 22);
        assert_eq!(cfg.host.sshd, PathBuf::from("/usr/sbin/sshd"));
        assert!(cfg.host.sshd_args.is_empty());
        let with = |line: &str| {
            format!(
                "[host]\n{line}\n[gateway]\ncontrol = \"10.99.3.2:5555\"\n\
                 enroll = \"10.99.3.2:8443\"\nca = \"/ca.pem\"\nbootstrap_key = \"/b.key\"\n"
            )
        };
        let off = AgentConfig::parse(&with("ssh_underlay_port = 0\nssh_overlay_port = 0")).unwrap();
        assert_eq!(
            (off.host.ssh_underlay_port, off.host.ssh_overlay_port),
            (0, 0)
        );
        let args = AgentConfig::parse(&with(r#"sshd_args = ["-h", "/tmp/hk"]"#)).unwrap();
        assert_eq!(args.host.sshd_args, ["-h", "/tmp/hk"]);
        for (line, path) in [
            ("ssh_underlay_port = 22", "host.ssh_underlay_port:"),
            ("sshd = \"sshd\"", "host.sshd:"),
            ("sshd = \"\"", "host.sshd:"),
            (r#"sshd_args = ["-o", "a\u0000b"]"#, "host.sshd_args[1]:"),
        ] {
            let err = AgentConfig::parse(&with(line)).unwrap_err().to_string();
            assert!(err.contains(path), "{line}: {err}");
        }
        for line in ["ssh_underlay_port = 70000", "ssh_overlay_port = -1"] {
            let err = AgentConfig::parse(&with(line)).unwrap_err().to_string();
            assert!(err.contains("[host]"), "{line}: {err}");
        }
    }

    #[test]
    fn gateway_mode_needs_no_desired_state() {
        let text = r#"
[host]
nic = "eth0"
[gateway]
control = "10.99.3.2:5555"
enroll = "10.99.3.2:8443"
ca = "/etc/nsx-agent/ca.pem"
bootstrap_key = "/etc/nsx-agent/bootstrap.key"
tags = { "nsx:network" = "web" }
"#;
        let cfg = AgentConfig::parse(text).unwrap();
        assert!(cfg.instance.is_none());
        let gw = cfg.gateway.unwrap();
        assert_eq!(gw.server_name, "nsx-gw.vmware.local");
        assert_eq!(gw.tags["nsx:network"], "web");
        // Bad gateway settings are reported with their paths, all at once.
        let broken = text
            .replace("10.99.3.2:5555", "10.99.3.2")
            .replace("10.99.3.2:8443", ":8443");
        let err = AgentConfig::parse(&format!("{broken}server_name = \"bad name\"\n"))
            .unwrap_err()
            .to_string();
        for path in [
            "gateway.control:",
            "gateway.enroll:",
            "gateway.server_name:",
        ] {
            assert!(err.contains(path), "{path} missing in {err}");
        }
        // Without [gateway], the desired state is required.
        assert!(AgentConfig::parse("[host]\nnic = \"eth0\"\n").is_err());
    }
}
