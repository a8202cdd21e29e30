//! Requests: `{"api_version": 1, "cmd": "<command>", ...arguments}`.
//! [`Request`] is the typed form (serde, tagged by `cmd`, unknown fields
//! refused); [`parse_request`] reads a line the way the agent always has,
//! with one message per fault that names the argument and why.

use std::net::Ipv4Addr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::API_VERSION;
use crate::hex;

/// Every command and the arguments it takes (besides `api_version` and
/// `cmd`), in the order `unknown command` lists them.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("status", &[]),
    ("counters", &[]),
    ("config", &[]),
    ("version", &[]),
    ("interfaces", &[]),
    ("switches", &[]),
    ("mac-table", &[]),
    ("arp-table", &["switch"]),
    ("routers", &[]),
    ("dhcp", &["switch"]),
    ("nat-sessions", &["limit"]),
    ("load-balancers", &["vip"]),
    ("getrules", &[]),
    ("getaddrsets", &[]),
    ("getflows", &[]),
    ("firewall-stats", &[]),
    ("trace", &["from", "frame_hex", "src_tep", "vni"]),
    ("capture", &["point", "count", "timeout_ms", "snaplen"]),
];

/// `capture` defaults and bounds.
pub mod capture {
    use std::ops::RangeInclusive;
    pub const COUNT: RangeInclusive<u64> = 1..=10_000;
    pub const COUNT_DEFAULT: u32 = 100;
    pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
    pub const TIMEOUT_MS_DEFAULT: u32 = 10_000;
    pub const SNAPLEN: RangeInclusive<u64> = 1..=65_535;
    pub const SNAPLEN_DEFAULT: u32 = 65_535;
}

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// One command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Agent facts, the gateway connection, the sshds.
    Status,
    /// Datapath counters.
    Counters,
    /// The config in force.
    Config,
    /// Agent and API versions.
    Version,
    /// The agent's interfaces.
    Interfaces,
    /// The logical switches.
    Switches,
    /// Known MACs per switch.
    MacTable,
    /// Known addresses per switch, all switches or one.
    ArpTable {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        switch: Option<SwitchRef>,
    },
    /// The logical routers and their routes.
    Routers,
    /// The switches' DHCP servers (all, or one) and the port's lease.
    Dhcp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        switch: Option<SwitchRef>,
    },
    /// The edge's NAT sessions (at most `limit`, default 100, at most 10,000).
    #[serde(rename = "nat-sessions")]
    NatSessions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The virtual servers this datapath balances (`ipvsadm -Ln`); with
    /// `vip` (`10.64.1.2:10000`, or `udp/10.64.1.2:53`) that one alone,
    /// with its persistence templates.
    #[serde(rename = "load-balancers")]
    LoadBalancers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vip: Option<String>,
    },
    /// The firewall rules, `vsipioctl getrules` format.
    #[serde(rename = "getrules")]
    GetRules,
    /// The firewall's address sets, `vsipioctl getaddrsets` format.
    #[serde(rename = "getaddrsets")]
    GetAddrSets,
    /// The tracked connections, `vsipioctl getflows` format.
    #[serde(rename = "getflows")]
    GetFlows,
    /// Rule hits and firewall counters.
    FirewallStats,
    /// A frame through the live decisions, nothing sent or changed.
    Trace {
        from: TraceFrom,
        frame_hex: Frame,
        /// The sending endpoint (overlay, `from: underlay` only).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "src_tep"
        )]
        src_tep: Option<Ipv4Addr>,
        /// The Geneve VNI (overlay, `from: underlay` only).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "vni"
        )]
        vni: Option<u32>,
    },
    /// A bounded capture in the datapath thread.
    Capture {
        point: CapturePoint,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "count"
        )]
        count: Option<u32>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "timeout_ms"
        )]
        timeout_ms: Option<u32>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "snaplen"
        )]
        snaplen: Option<u32>,
    },
}

impl Request {
    /// The command's name (`cmd`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Counters => "counters",
            Request::Config => "config",
            Request::Version => "version",
            Request::Interfaces => "interfaces",
            Request::Switches => "switches",
            Request::MacTable => "mac-table",
            Request::ArpTable { .. } => "arp-table",
            Request::Routers => "routers",
            Request::Dhcp { .. } => "dhcp",
            Request::NatSessions { .. } => "nat-sessions",
            Request::LoadBalancers { .. } => "load-balancers",
            Request::GetRules => "getrules",
            Request::GetAddrSets => "getaddrsets",
            Request::GetFlows => "getflows",
            Request::FirewallStats => "firewall-stats",
            Request::Trace { .. } => "trace",
            Request::Capture { .. } => "capture",
        }
    }
}

/// A virtual server as operators name it (`load-balancers`' `vip`, nsxcli's
/// `get load-balancer`): `10.64.1.2:10000`, or with its protocol,
/// `udp/10.64.1.3:53` (default TCP; the protocol in either case).
pub fn parse_virtual_server(
    s: &str,
) -> Result<(control::lb::LbProtocol, std::net::SocketAddrV4), String> {
    use control::lb::LbProtocol;
    let (proto, rest) = match s.split_once('/') {
        Some((p, r)) if p.eq_ignore_ascii_case("tcp") => (LbProtocol::Tcp, r),
        Some((p, r)) if p.eq_ignore_ascii_case("udp") => (LbProtocol::Udp, r),
        Some((p, _)) => return Err(format!("{p:?} is not tcp or udp")),
        None => (LbProtocol::Tcp, s),
    };
    let ep: std::net::SocketAddrV4 = rest
        .parse()
        .map_err(|_| format!("{rest:?} is not a virtual server (ip:port, or udp/ip:port)"))?;
    if ep.port() == 0 {
        return Err("port 0 is not a port".into());
    }
    Ok((proto, ep))
}

/// Why a request line was refused (the reply's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(msg.into()))
}

/// Reads one request line: a JSON object with `api_version` (at most
/// [`API_VERSION`]), a known `cmd` and only that command's arguments, each
/// well-formed.
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let mut req: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return refuse("bad request: expected a JSON object"),
        Err(e) => return refuse(format!("bad request: {e}")),
    };
    let version = match req.remove("api_version") {
        None => return refuse("bad request: missing field `api_version`"),
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => return refuse("bad request: `api_version` must be a non-negative integer"),
        },
    };
    if version > u64::from(API_VERSION) {
        return refuse(format!(
            "api_version {version} not supported (this agent speaks {API_VERSION})"
        ));
    }
    let cmd = match req.get("cmd") {
        Some(Value::String(c)) => c.clone(),
        Some(_) => return refuse("bad request: `cmd` must be a string"),
        None => return refuse("bad request: missing field `cmd`"),
    };
    let Some((_, known)) = COMMANDS.iter().find(|(c, _)| *c == cmd) else {
        let names: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        return refuse(format!(
            "unknown command {cmd:?} (known: {})",
            names.join(", ")
        ));
    };
    if let Some(arg) = req
        .keys()
        .find(|k| *k != "cmd" && !known.contains(&k.as_str()))
    {
        let takes = if known.is_empty() {
            "it takes none".to_string()
        } else {
            format!("known: {}", known.join(", "))
        };
        return refuse(format!("unknown argument {arg:?} for {cmd} ({takes})"));
    }
    serde_json::from_value(Value::Object(req)).map_err(|e| RequestError(e.to_string()))
}

/// A non-negative integer in decimal or `0x` hex.
#[must_use]
pub fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A present argument's value, or `None` when it is absent or null.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Option::<Value>::deserialize(d)
}

/// An integer argument (a JSON number, or a string in decimal or `0x`
/// hex) in `range`.
fn int_arg<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u32>, D::Error> {
    let Some(v) = present(d)? else {
        return Ok(None);
    };
    let n = match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_number(s),
        _ => None,
    };
    match n
        .filter(|n| range.contains(n))
        .and_then(|n| u32::try_from(n).ok())
    {
        Some(n) => Ok(Some(n)),
        None => Err(D::Error::custom(format!(
            "{key} must be an integer from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    int_arg(d, "count", capture::COUNT)
}

fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    int_arg(d, "timeout_ms", capture::TIMEOUT_MS)
}

fn snaplen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    int_arg(d, "snaplen", capture::SNAPLEN)
}

fn vni<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    int_arg(d, "vni", 0..=u64::from(MAX_VNI))
}

fn src_tep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    match present(d)? {
        None => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("src_tep {s:?} is not an IPv4 address"))),
        Some(_) => Err(D::Error::custom("src_tep must be a string")),
    }
}

/// A required string argument: absent or null is `missing`, another type
/// is `"{key} must be a string"`.
fn required_str<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    missing: &str,
) -> Result<String, D::Error> {
    match present(d)? {
        None => Err(D::Error::custom(missing)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(D::Error::custom(format!("{key} must be a string"))),
    }
}

/// Where a traced frame enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFrom {
    /// From the instance's port (micro-segmentation: a frame the host sends).
    Port,
    /// From the underlay: in Geneve (overlay), or as the NIC receives it
    /// (micro-segmentation).
    Underlay,
}

impl TraceFrom {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TraceFrom::Port => "port",
            TraceFrom::Underlay => "underlay",
        }
    }
}

impl Serialize for TraceFrom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TraceFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = required_str(d, "from", "from is required: \"port\" or \"underlay\"")?;
        match s.as_str() {
            "port" => Ok(TraceFrom::Port),
            "underlay" => Ok(TraceFrom::Underlay),
            other => Err(D::Error::custom(format!(
                "from {other:?} must be \"port\" or \"underlay\""
            ))),
        }
    }
}

/// A frame as hex on the wire (`frame_hex`), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(pub Vec<u8>);

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = required_str(d, "frame_hex", "frame_hex is required")?;
        let bytes = hex::decode(&s).map_err(|e| D::Error::custom(format!("frame_hex: {e}")))?;
        if bytes.is_empty() {
            return Err(D::Error::custom("frame_hex is empty"));
        }
        Ok(Frame(bytes))
    }
}

/// A switch named by its name or its VNI: a JSON number, or a string
/// that is a name or else a number in decimal or `0x` hex. The agent
/// resolves it against its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchRef {
    /// A string: a switch name, else a VNI in decimal or `0x` hex.
    Name(String),
    /// A JSON number: a VNI (kept as sent, for the error message).
    Vni(Number),
}

impl SwitchRef {
    /// The VNI this names when it is not a switch name.
    #[must_use]
    pub fn vni(&self) -> Option<u32> {
        match self {
            SwitchRef::Name(s) => parse_number(s),
            SwitchRef::Vni(n) => n.as_u64(),
        }
        .and_then(|n| u32::try_from(n).ok())
    }
}

impl std::fmt::Display for SwitchRef {
    /// As an error message shows it: a name quoted, a number bare.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchRef::Name(s) => write!(f, "{s:?}"),
            SwitchRef::Vni(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for SwitchRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SwitchRef::Name(n) => s.serialize_str(n),
            SwitchRef::Vni(n) => n.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SwitchRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match present(d)? {
            Some(Value::String(s)) => Ok(SwitchRef::Name(s)),
            Some(Value::Number(n)) => Ok(SwitchRef::Vni(n)),
            _ => Err(D::Error::custom("switch must be a switch name or a VNI")),
        }
    }
}

/// Where a capture looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapturePoint {
    /// Ethernet frames from and to the instance.
    Port,
    /// Outer IPv4 packets, Geneve included.
    Underlay,
    /// One switch's inner frames (`switch:<name or vni>`).
    Switch(String),
}

impl std::fmt::Display for CapturePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapturePoint::Port => f.write_str("port"),
            CapturePoint::Underlay => f.write_str("underlay"),
            CapturePoint::Switch(s) => write!(f, "switch:{s}"),
        }
    }
}

impl Serialize for CapturePoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CapturePoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NEEDED: &str = "\"port\", \"underlay\" or \"switch:<name or vni>\"";
        let s = required_str(d, "point", &format!("point is required: {NEEDED}"))?;
        match s.as_str() {
            "port" => Ok(CapturePoint::Port),
            "underlay" => Ok(CapturePoint::Underlay),
            p => match p.strip_prefix("switch:") {
                Some(sw) => Ok(CapturePoint::Switch(sw.to_string())),
                None => Err(D::Error::custom(format!("point {p:?} must be {NEEDED}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    /// One request of every command, every argument set.
    pub(crate) fn samples() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Counters,
            Request::Config,
            Request::Version,
            Request::Interfaces,
            Request::Switches,
            Request::MacTable,
            Request::ArpTable {
                switch: Some(SwitchRef::Name("web-ls".into())),
            },
            Request::Routers,
            Request::Dhcp {
                switch: Some(SwitchRef::Name("web-ls".into())),
            },
            Request::NatSessions { limit: Some(10) },
            Request::LoadBalancers {
                vip: Some("10.64.1.2:10000".into()),
            },
            Request::GetRules,
            Request::GetAddrSets,
            Request::GetFlows,
            Request::FirewallStats,
            Request::Trace {
                from: TraceFrom::Underlay,
                frame_hex: Frame(vec![1, 2, 3]),
                src_tep: Some(Ipv4Addr::new(10, 99, 3, 12)),
                vni: Some(0x238c),
            },
            Request::Capture {
                point: CapturePoint::Switch("web-ls".into()),
                count: Some(5),
                timeout_ms: Some(1000),
                snaplen: Some(96),
            },
        ]
    }

    #[test]
    fn the_command_table_is_the_enum() {
        let samples = samples();
        let names: Vec<&str> = samples.iter().map(Request::name).collect();
        let table: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, table, "one sample per command, in table order");
        for r in &samples {
            let line = crate::encode_request(r);
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["cmd"], r.name(), "{line}");
            let mut args: Vec<&str> = v
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "cmd" && *k != "api_version")
                .collect();
            args.sort_unstable();
            let mut known: Vec<&str> = COMMANDS
                .iter()
                .find(|(c, _)| *c == r.name())
                .unwrap()
                .1
                .to_vec();
            known.sort_unstable();
            assert_eq!(args, known, "{line}");
            assert_eq!(parse_request(&line).as_ref(), Ok(r), "{line}");
        }
    }

    #[test]
    fn serde_refuses_unknown_fields_too() {
        // Behind parse_request's own check, the type itself refuses them.
        let v = json!({"cmd": "arp-table", "vni": 1});
        assert!(serde_json::from_value::<Request>(v).is_err());
        let v = json!({"cmd": "trace", "from": "port", "frame_hex": "00", "x": 1});
        assert!(serde_json::from_value::<Request>(v).is_err());
        let v = json!({"cmd": "frobnicate"});
        assert!(serde_json::from_value::<Request>(v).is_err());
    }

    #[test]
    fn requests_are_checked_strictly() {
        let e = |line: Value| parse_request(&line.to_string()).unwrap_err().0;
        assert!(
            parse_request("{\"api_version\":1")
                .unwrap_err()
                .0
                .starts_with("bad request:")
        );
        assert_eq!(
            parse_request("[1]").unwrap_err().0,
            "bad request: expected a JSON object"
        );
        assert_eq!(
            e(json!({"cmd": "status"})),
            "bad request: missing field `api_version`"
        );
        assert_eq!(
            e(json!({"api_version": 2, "cmd": "status"})),
            "api_version 2 not supported (this agent speaks 1)"
        );
        assert_eq!(
            e(json!({"api_version": 1, "cmd": 7})),
            "bad request: `cmd` must be a string"
        );
        assert!(
            e(json!({"api_version": 1, "cmd": "frobnicate"}))
                .starts_with("unknown command \"frobnicate\" (known: status, counters,")
        );
        assert_eq!(
            e(json!({"api_version": 1, "cmd": "switches", "verbose": true})),
            "unknown argument \"verbose\" for switches (it takes none)"
        );
        assert_eq!(
            e(json!({"api_version": 1, "cmd": "arp-table", "vni": 1})),
            "unknown argument \"vni\" for arp-table (known: switch)"
        );
        assert_eq!(
            e(json!({"api_version": 1, "cmd": "arp-table", "switch": [1]})),
            "switch must be a switch name or a VNI"
        );
        // An older client (api_version 0) is still served.
        assert_eq!(
            parse_request("{\"api_version\":0,\"cmd\":\"status\"}"),
            Ok(Request::Status)
        );
    }

    #[test]
    fn arguments_take_numbers_as_strings_and_names() {
        let p = |v: Value| parse_request(&v.to_string());
        assert_eq!(
            p(json!({"api_version": 1, "cmd": "capture", "point": "port", "count": "0x10"})),
            Ok(Request::Capture {
                point: CapturePoint::Port,
                count: Some(16),
                timeout_ms: None,
                snaplen: None
            })
        );
        let Ok(Request::ArpTable { switch: Some(s) }) =
            p(json!({"api_version": 1, "cmd": "arp-table", "switch": 9100}))
        else {
            panic!("arp-table with a number");
        };
        assert_eq!((s.vni(), s.to_string()), (Some(9100), "9100".into()));
        let s = SwitchRef::Name("0x238c".into());
        assert_eq!(
            (s.vni(), s.to_string()),
            (Some(0x238c), "\"0x238c\"".into())
        );
    }

    #[test]
    fn virtual_servers_read_as_operators_write_them() {
        use control::lb::LbProtocol;
        assert_eq!(
            parse_virtual_server("10.64.1.2:10000").unwrap(),
            (LbProtocol::Tcp, "10.64.1.2:10000".parse().unwrap())
        );
        assert_eq!(
            parse_virtual_server("UDP/10.64.1.3:53").unwrap().0,
            LbProtocol::Udp
        );
        assert!(parse_virtual_server("sctp/10.0.0.1:1").is_err());
        assert!(parse_virtual_server("10.0.0.1").is_err());
        assert!(parse_virtual_server("10.0.0.1:0").is_err());
    }
}
