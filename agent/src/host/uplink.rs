//! The edge role's uplink (`[host] uplink`): the NIC toward the cloud's NAT
//! and the internet, taken whole by the datapath's tier-0, which answers
//! ARP for the uplink's addresses itself. Taking it records what the kernel
//! had (IPv4 addresses, up, and the interface's sysctls changed) in
//! `state_dir/uplink-state.json` before changing anything, then: the IPv4
//! addresses go (the kernel would otherwise answer for them: ARP, TCP RSTs),
//! IPv6 off, no kernel forwarding of what arrives on it, the kernel's ARP
//! replies off (`arp_ignore` 8), link up. Giving it back restores the
//! record, also from a later process after a crash or a change of role or
//! uplink, and deletes the recorded uplink's edge nftables table
//! (`nft::edge_table_name`: the downlink NAT's ports kept from the kernel,
//! written when the datapath starts), which is ours by name. A record
//! whose name is no interface name or whose sysctls are not those the
//! take changes is refused (its fields become `/proc` paths).

use std::path::{Path, PathBuf};

use rtnetlink::LinkUnspec;
use serde::{Deserialize, Serialize};

use super::netlink::{AddrRec, Nl};
use super::{HostError, netns};
use crate::config::HostSettings;

const STATE_FILE: &str = "uplink-state.json";
/// Largest record read back.
const MAX_STATE: u64 = 1 << 20;
/// The IPv4 sysctls of the interface the take changes, with the value it sets.
const SYSCTLS: [(&str, &str); 2] = [("forwarding", "0"), ("arp_ignore", "8")];

/// What the uplink was before the take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkRec {
    pub name: String,
    pub up: bool,
    pub addrs: Vec<AddrRec<std::net::Ipv4Addr>>,
    /// (key, value before) of [`SYSCTLS`].
    pub sysctls: Vec<(String, String)>,
    /// `disable_ipv6` before (absent: no IPv6).
    pub disable_ipv6: Option<String>,
}

/// The uplink, taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn v4_sysctl(ifname: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf").join(ifname).join(key)
}

fn v6_disable(ifname: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv6/conf")
        .join(ifname)
        .join("disable_ipv6")
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn write(step: &'static str, p: &Path, value: &str) -> Result<(), HostError> {
    std::fs::write(p, value).map_err(|source| HostError::Io {
        step,
        target: p.display().to_string(),
        source,
    })
}

/// The record at `path`, checked ([`UplinkRec::check`]); `None`: there
/// is none.
fn read_record(path: &Path) -> Result<Option<UplinkRec>, HostError> {
    let unusable = |reason: String| HostError::Unusable {
        step: "read the uplink record",
        target: path.display().to_string(),
        reason,
    };
    let io = |source| HostError::Io {
        step: "read the uplink record",
        target: path.display().to_string(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
        Ok(m) if m.len() > MAX_STATE || !m.is_file() => {
            return Err(unusable(
                "not a record the agent wrote (not a file, or too big)".into(),
            ));
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let rec: UplinkRec = serde_json::from_slice(&bytes).map_err(|e| unusable(e.to_string()))?;
    rec.check().map_err(unusable)?;
    Ok(Some(rec))
}

impl UplinkRec {
    /// Refuses a record whose fields cannot be what [`take`] wrote: the
    /// name and the sysctl keys are joined into `/proc` paths.
    fn check(&self) -> Result<(), String> {
        if !crate::config::valid_ifname(&self.name) {
            return Err(format!(
                "the uplink {:?} is not an interface name; not restored",
                self.name
            ));
        }
        if let Some((k, _)) = self
            .sysctls
            .iter()
            .find(|(k, _)| !SYSCTLS.iter().any(|(known, _)| known == k))
        {
            return Err(format!(
                "the sysctl {k:?} is not one the take changes; not restored"
            ));
        }
        Ok(())
    }
}

/// Takes the uplink named in `settings` (restoring a previous run's
/// record first, so what is recorded is the kernel's own state).
pub async fn take(settings: &HostSettings) -> Result<Uplink, HostError> {
    let name = settings.uplink.as_str();
    let nl = Nl::connect("main")?;
    give_back_with(&nl, settings).await?;
    let link = nl.must_link("take the uplink", name).await?;
    if let Some(m) = link.master {
        return Err(HostError::Unusable {
            step: "take the uplink",
            target: name.into(),
            reason: format!("already enslaved to ifindex {m}"),
        });
    }
    let mac: [u8; 6] = link
        .mac
        .as_slice()
        .try_into()
        .map_err(|_| HostError::Unusable {
            step: "take the uplink",
            target: name.into(),
            reason: "has no Ethernet MAC address".into(),
        })?;
    let addrs = nl.addrs::<std::net::Ipv4Addr>(name, link.index).await?;
    let rec = UplinkRec {
        name: name.into(),
        up: link.up,
        addrs,
        sysctls: SYSCTLS
            .iter()
            .filter_map(|(k, _)| Some((k.to_string(), read_trimmed(&v4_sysctl(name, k))?)))
            .collect(),
        disable_ipv6: read_trimmed(&v6_disable(name)),
    };
    let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| HostError::Unusable {
        step: "record the uplink",
        target: name.into(),
        reason: e.to_string(),
    })?;
    let path = state_path(&settings.state_dir);
    crate::fsutil::write_private_atomic(&path, &bytes).map_err(|source| HostError::Io {
        step: "record the uplink",
        target: path.display().to_string(),
        source,
    })?;
    for a in &rec.addrs {
        nl.del_addr(name, link.index, a).await?;
    }
    netns::disable_ipv6(name)?;
    for (k, v) in SYSCTLS {
        write("configure the uplink", &v4_sysctl(name, k), v)?;
    }
    let msg = LinkUnspec::new_with_index(link.index).up().build();
    nl.set_link("bring the uplink up", name, msg).await?;
    tracing::info!(
        uplink = name,
        addresses = rec.addrs.len(),
        "uplink taken for the tier-0"
    );
    Ok(Uplink {
        ifindex: link.index,
        mac,
    })
}

/// Gives the uplink back as recorded (nothing to do without a record).
pub async fn give_back(settings: &HostSettings) -> Result<(), HostError> {
    let nl = Nl::connect("main")?;
    give_back_with(&nl, settings).await
}

async fn give_back_with(nl: &Nl, settings: &HostSettings) -> Result<(), HostError> {
    super::probe::teardown(nl).await?;
    let path = state_path(&settings.state_dir);
    let Some(rec) = read_record(&path)? else {
        return Ok(());
    };
    // The table is the taken uplink's (written after the record), whatever
    // `settings.uplink` says now.
    super::nft::delete_edge_table(&super::nft::edge_table_name(&rec.name))?;
    let name = rec.name.as_str();
    if let Some(link) = nl.link(name).await? {
        for (k, v) in &rec.sysctls {
            write("restore the uplink", &v4_sysctl(name, k), v)?;
        }
        if let Some(v) = &rec.disable_ipv6 {
            write("restore the uplink", &v6_disable(name), v)?;
        }
        for a in &rec.addrs {
            nl.add_addr(name, link.index, a, None).await?;
        }
        if !rec.up {
            let msg = LinkUnspec::new_with_index(link.index).down().build();
            nl.set_link("restore the uplink", name, msg).await?;
        }
        tracing::info!(uplink = name, "uplink given back");
    } else {
        tracing::warn!(uplink = name, "the uplink is gone; dropping its record");
    }
    std::fs::remove_file(&path).map_err(|source| HostError::Io {
        step: "remove the uplink record",
        target: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for `tag`, empty.
    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nsx-uplink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn rec() -> UplinkRec {
        UplinkRec {
            name: "eth1".into(),
            up: true,
            addrs: Vec::new(),
            sysctls: vec![
                ("forwarding".into(), "1".into()),
                ("arp_ignore".into(), "0".into()),
            ],
            disable_ipv6: Some("0".into()),
        }
    }

    fn write_rec(d: &Path, rec: &UplinkRec) -> PathBuf {
        let path = state_path(d);
        std::fs::write(&path, serde_json::to_vec(rec).expect("json")).expect("write");
        path
    }

    #[test]
    fn a_record_is_read_back_as_written() {
        let d = dir("ok");
        assert_eq!(read_record(&state_path(&d)).expect("none"), None);
        let path = write_rec(&d, &rec());
        assert_eq!(read_record(&path).expect("read"), Some(rec()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_record_naming_paths_is_refused() {
        let d = dir("bad");
        let bad_names = [
            "",
            "../../../etc",
            "a/b",
            "has space",
            "..",
            "sixteen-chars-xx",
        ];
        for name in bad_names {
            let path = write_rec(
                &d,
                &UplinkRec {
                    name: name.into(),
                    ..rec()
                },
            );
            let e = read_record(&path).expect_err(name).to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("is not an interface name"), "{e}");
        }
        for key in [
            "../../../../kernel/core_pattern",
            "rp_filter",
            "forwarding/x",
        ] {
            let mut r = rec();
            r.sysctls.push((key.into(), "1".into()));
            let path = write_rec(&d, &r);
            let e = read_record(&path).expect_err(key).to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("is not one the take changes"), "{e}");
        }
        std::fs::write(state_path(&d), b"{not json").expect("write");
        assert!(read_record(&state_path(&d)).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
