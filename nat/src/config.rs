//! What the NAT is told to do ([`NatConfig`]): the SNAT pool, the external
//! port range, the filtering behaviour, the per-state idle timeouts and the
//! static 1:1 entries ("public IPs"), with their validation ([`ConfigError`])
//! against each other and against the RFC minimums.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Most addresses a pool may hold (each costs 3 port bitmaps of 8 KiB).
pub const MAX_POOL: usize = 1024;
/// Most static 1:1 entries.
pub const MAX_STATICS: usize = 65_536;

/// Which remote endpoints may send to a mapping (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filtering {
    /// Any remote may send to a live mapping (REQ-8: the transparent choice).
    #[default]
    EndpointIndependent,
    /// Only remote addresses the mapping has sent to (any port of theirs).
    AddressDependent,
}

/// The external ports (and nothing else) mappings of TCP and UDP take.
/// ICMP query identifiers use the whole 16-bit space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 1024,
            last: 65535,
        }
    }
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports it holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last).saturating_sub(u32::from(self.first)) + 1
    }

    /// Never: a valid range holds at least one port.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// Idle timeouts per session state, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP with a SYN seen but not answered, or FIN seen both ways, or a RST
    /// (RFC 5382 REQ-5: at least 240).
    pub tcp_transitory: u32,
    /// Established TCP (RFC 5382 REQ-5: at least 7440, 2 h 4 min).
    pub tcp_established: u32,
    /// UDP (RFC 4787 REQ-5: at least 120; 300 recommended).
    pub udp: u32,
    /// ICMP queries (RFC 5508 REQ-2: at least 60).
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_transitory: 240,
            tcp_established: 7440,
            udp: 300,
            icmp: 60,
        }
    }
}

impl Timeouts {
    /// The RFC minimums (also the smallest values [`NatConfig::validate`] accepts).
    pub const MIN: Timeouts = Timeouts {
        tcp_transitory: 240,
        tcp_established: 7440,
        udp: 120,
        icmp: 60,
    };
}

/// One static 1:1 NAT entry: `private` is seen outside as `public`, every
/// protocol and port, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNat {
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
}

/// The NAT's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// SNAT addresses; an internal address always uses the same one
    /// ("paired" pooling, RFC 4787 REQ-2), chosen by a fixed hash of it.
    pub pool: Vec<Ipv4Addr>,
    #[serde(default)]
    pub port_range: PortRange,
    #[serde(default)]
    pub filtering: Filtering,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Static 1:1 entries; they take precedence over the pool.
    #[serde(default)]
    pub statics: Vec<StaticNat>,
}

impl NatConfig {
    /// A pool-only configuration with the defaults.
    pub fn with_pool(pool: Vec<Ipv4Addr>) -> NatConfig {
        NatConfig {
            pool,
            port_range: PortRange::default(),
            filtering: Filtering::default(),
            timeouts: Timeouts::default(),
            statics: Vec::new(),
        }
    }

    /// Checks the configuration is usable as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pool.is_empty() {
            return Err(ConfigError::EmptyPool);
        }
        if self.pool.len() > MAX_POOL {
            return Err(ConfigError::PoolTooLarge(self.pool.len()));
        }
        let mut pool = HashSet::with_capacity(self.pool.len());
        for &ip in &self.pool {
            if !usable(ip) {
                return Err(ConfigError::BadAddress(ip));
            }
            if !pool.insert(ip) {
                return Err(ConfigError::DuplicatePool(ip));
            }
        }
        let r = self.port_range;
        if r.first == 0 || r.last < r.first {
            return Err(ConfigError::BadPortRange(r.first, r.last));
        }
        let (t, min) = (self.timeouts, Timeouts::MIN);
        for (name, v, m) in [
            ("tcp_transitory", t.tcp_transitory, min.tcp_transitory),
            ("tcp_established", t.tcp_established, min.tcp_established),
            ("udp", t.udp, min.udp),
            ("icmp", t.icmp, min.icmp),
        ] {
            if v < m {
                return Err(ConfigError::TimeoutBelowMinimum {
                    name,
                    secs: v,
                    min: m,
                });
            }
        }
        if self.statics.len() > MAX_STATICS {
            return Err(ConfigError::TooManyStatics(self.statics.len()));
        }
        let mut publics = HashSet::with_capacity(self.statics.len());
        let mut privates = HashSet::with_capacity(self.statics.len());
        for s in &self.statics {
            for ip in [s.public, s.private] {
                if !usable(ip) {
                    return Err(ConfigError::BadAddress(ip));
                }
            }
            if pool.contains(&s.public) {
                return Err(ConfigError::PublicInPool(s.public));
            }
            if !publics.insert(s.public) {
                return Err(ConfigError::DuplicatePublic(s.public));
            }
            if !privates.insert(s.private) {
                return Err(ConfigError::DuplicatePrivate(s.private));
            }
        }
        Ok(())
    }
}

/// A unicast address a NAT can put in a header.
fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the SNAT pool is empty (at least one address is needed)")]
    EmptyPool,
    #[error("the SNAT pool has {0} addresses (at most {MAX_POOL})")]
    PoolTooLarge(usize),
    #[error("{0} is in the SNAT pool twice")]
    DuplicatePool(Ipv4Addr),
    #[error("{0} is not a unicast address")]
    BadAddress(Ipv4Addr),
    #[error("port range {0}..={1} is empty or starts at 0")]
    BadPortRange(u16, u16),
    #[error("timeout {name} of {secs} s is below the RFC minimum of {min} s")]
    TimeoutBelowMinimum {
        name: &'static str,
        secs: u32,
        min: u32,
    },
    #[error("{0} static entries (at most {MAX_STATICS})")]
    TooManyStatics(usize),
    #[error("public address {0} is also in the SNAT pool")]
    PublicInPool(Ipv4Addr),
    #[error("public address {0} is in two static entries")]
    DuplicatePublic(Ipv4Addr),
    #[error("private address {0} is in two static entries")]
    DuplicatePrivate(Ipv4Addr),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_validate() {
        let c = NatConfig::with_pool(vec![ip("203.0.113.1")]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.port_range.len(), 64512);
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.filtering, Filtering::EndpointIndependent);
    }

    #[test]
    fn refusals() {
        let base = NatConfig::with_pool(vec![ip("203.0.113.1")]);
        let mut c = base.clone();
        c.pool.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyPool));
        let mut c = base.clone();
        c.pool.push(ip("203.0.113.1"));
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicatePool(ip("203.0.113.1")))
        );
        let mut c = base.clone();
        c.pool.push(ip("224.0.0.1"));
        assert_eq!(c.validate(), Err(ConfigError::BadAddress(ip("224.0.0.1"))));
        let mut c = base.clone();
        c.port_range = PortRange { first: 0, last: 10 };
        assert_eq!(c.validate(), Err(ConfigError::BadPortRange(0, 10)));
        c.port_range = PortRange {
            first: 11,
            last: 10,
        };
        assert_eq!(c.validate(), Err(ConfigError::BadPortRange(11, 10)));
        let mut c = base.clone();
        c.timeouts.udp = 119;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TimeoutBelowMinimum { name: "udp", .. })
        ));
        let mut c = base.clone();
        c.statics.push(StaticNat {
            public: ip("203.0.113.1"),
            private: ip("10.0.0.1"),
        });
        assert_eq!(
            c.validate(),
            Err(ConfigError::PublicInPool(ip("203.0.113.1")))
        );
        let mut c = base.clone();
        let s = StaticNat {
            public: ip("198.51.100.1"),
            private: ip("10.0.0.1"),
        };
        c.statics = vec![
            s,
            StaticNat {
                public: ip("198.51.100.2"),
                ..s
            },
        ];
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicatePrivate(ip("10.0.0.1")))
        );
        c.statics[1] = StaticNat {
            private: ip("10.0.0.2"),
            ..s
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicatePublic(ip("198.51.100.1")))
        );
    }
}
