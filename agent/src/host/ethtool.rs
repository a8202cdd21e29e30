//! Offload switches through the legacy `SIOCETHTOOL` ioctl (no `ethtool`
//! binary needed): turns TX checksum offload, TSO and GSO off on an interface
//! of the *calling thread's* network namespace.
//!
//! Why: the agent reads the VM's frames with AF_PACKET on the veth peer. With
//! TX checksum offload on, veth hands over UDP/TCP frames whose L4 checksum
//! is unfinished (CHECKSUM_PARTIAL), and with TSO/GSO on, super-frames larger
//! than the MTU. Both would be encapsulated as-is and dropped by the receiver.
//!
//! The classic per-offload commands (`ETHTOOL_STXCSUM`, `ETHTOOL_STSO`,
//! `ETHTOOL_SGSO`) do the main work. They do not cover newer segmentation
//! features (kernel 6.18 veth keeps `tx-tcp-accecn-segmentation` on, which
//! `ethtool -k` still reports as "tcp-segmentation-offload: on"), so a second
//! pass clears every `tx-*segmentation`, `tx-gso-*` and `tx-checksum-*`
//! feature by name with `ETHTOOL_SFEATURES`, like `ethtool -K` does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::HostError;

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_SFEATURES: u32 = 0x3b;
/// `ETH_SS_FEATURES`: the string set naming netdev feature bits.
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// Upper bound on feature names accepted from the kernel (sanity limit).
const MAX_FEATURES: usize = 1024;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
#[derive(Debug, Default)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns TX checksum offload, TSO and GSO off on `ifname`.
///
/// Must run on a thread whose network namespace holds `ifname` (the socket
/// used for the ioctl decides which namespace the name is resolved in).
pub fn disable_tx_offloads(ifname: &str) -> Result<(), HostError> {
    let sock = dgram_socket(ifname)?;
    for (cmd, what) in [
        (ETHTOOL_STXCSUM, "disable tx checksum offload"),
        (ETHTOOL_STSO, "disable TSO"),
        (ETHTOOL_SGSO, "disable GSO"),
    ] {
        let mut val = EthtoolValue { cmd, data: 0 };
        ethtool_ioctl(&sock, ifname, (&mut val as *mut EthtoolValue).cast()).map_err(|source| {
            HostError::Io {
                step: what,
                target: ifname.to_string(),
                source,
            }
        })?;
    }
    // Best effort: the classic commands above are what the datapath needs.
    match disable_by_name(&sock, ifname) {
        Ok(n) => tracing::debug!(ifname, features = n, "tx offload features turned off"),
        Err(error) => tracing::warn!(
            ifname, %error,
            "cannot clear the remaining tx segmentation features by name"
        ),
    }
    Ok(())
}

/// Logs a warning if TX checksum offload is still on after
/// [`disable_tx_offloads`] (some drivers ignore the request).
pub fn check_tx_csum_off(ifname: &str) {
    let res = dgram_socket(ifname).and_then(|sock| {
        let mut val = EthtoolValue {
            cmd: ETHTOOL_GTXCSUM,
            data: 0,
        };
        ethtool_ioctl(&sock, ifname, (&mut val as *mut EthtoolValue).cast())
            .map(|()| val.data != 0)
            .map_err(|source| HostError::Io {
                step: "read tx checksum offload",
                target: ifname.to_string(),
                source,
            })
    });
    match res {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            ifname,
            "tx checksum offload is still on; frames read with AF_PACKET may carry unfinished checksums"
        ),
        Err(error) => tracing::warn!(ifname, %error, "cannot read tx checksum offload state"),
    }
}

/// Whether a feature name (from `ETH_SS_FEATURES`) is a TX checksum or
/// segmentation offload that must be off.
fn is_tx_offload(name: &str) -> bool {
    name.starts_with("tx-checksum-")
        || name.starts_with("tx-gso-")
        || (name.starts_with("tx-") && name.ends_with("segmentation"))
}

/// Clears every feature [`is_tx_offload`] selects with `ETHTOOL_SFEATURES`.
/// Features the device cannot change are ignored by the kernel.
fn disable_by_name(sock: &OwnedFd, ifname: &str) -> io::Result<usize> {
    let names = feature_names(sock, ifname)?;
    let blocks = names.len().div_ceil(32);
    // struct ethtool_sfeatures { cmd, size, { valid, requested }[size] }
    let mut buf = vec![0u8; 8 + blocks * 8];
    put_u32(&mut buf, 0, ETHTOOL_SFEATURES);
    put_u32(
        &mut buf,
        4,
        u32::try_from(blocks).map_err(io::Error::other)?,
    );
    let mut n = 0;
    for (i, _) in names.iter().enumerate().filter(|(_, n)| is_tx_offload(n)) {
        let off = 8 + (i / 32) * 8;
        let valid = get_u32(&buf, off) | (1 << (i % 32));
        put_u32(&mut buf, off, valid); // requested bit stays 0 = off
        n += 1;
    }
    if n > 0 {
        ethtool_ioctl(sock, ifname, buf.as_mut_ptr().cast())?;
    }
    Ok(n)
}

/// Names of the netdev feature bits, indexed by bit number.
fn feature_names(sock: &OwnedFd, ifname: &str) -> io::Result<Vec<String>> {
    // struct ethtool_sset_info { cmd, reserved, u64 sset_mask, u32 data[] }
    let mut info = [0u8; 24];
    put_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ethtool_ioctl(sock, ifname, info.as_mut_ptr().cast())?;
    let mut mask = [0u8; 8];
    mask.copy_from_slice(&info[8..16]);
    if u64::from_ne_bytes(mask) & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no feature string set",
        ));
    }
    let count = usize::try_from(get_u32(&info, 16)).map_err(io::Error::other)?;
    if count == 0 || count > MAX_FEATURES {
        return Err(io::Error::other(format!(
            "implausible feature count {count}"
        )));
    }
    // struct ethtool_gstrings { cmd, string_set, len, u8 data[len * 32] }
    let mut buf = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    put_u32(&mut buf, 0, ETHTOOL_GSTRINGS);
    put_u32(&mut buf, 4, ETH_SS_FEATURES);
    put_u32(&mut buf, 8, get_u32(&info, 16));
    ethtool_ioctl(sock, ifname, buf.as_mut_ptr().cast())?;
    let len = usize::try_from(get_u32(&buf, 8))
        .map_err(io::Error::other)?
        .min(count);
    Ok(buf[12..12 + len * ETH_GSTRING_LEN]
        .chunks(ETH_GSTRING_LEN)
        .map(|c| {
            let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(&c[..end]).into_owned()
        })
        .collect())
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn dgram_socket(ifname: &str) -> Result<OwnedFd, HostError> {
    // SAFETY: plain socket(2) call; the returned fd is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(HostError::Io {
            step: "open ethtool ioctl socket",
            target: ifname.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a freshly created, valid descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Issues `SIOCETHTOOL` for `ifname` with `data` pointing at an ethtool
/// command struct. Callers pass a buffer sized for the command they send.
fn ethtool_ioctl(sock: &OwnedFd, ifname: &str, data: *mut libc::c_char) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid interface name",
        ));
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    ifr.ifr_ifru.ifru_data = data;
    // SAFETY: SIOCETHTOOL reads `ifr` and reads/writes the command struct
    // `data` points to; every caller passes a live buffer large enough for
    // the command in its first word (and the lengths it declares).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_tx_offload;

    #[test]
    fn selects_tx_checksum_and_segmentation_features() {
        for on in [
            "tx-checksum-ip-generic",
            "tx-tcp-segmentation",
            "tx-tcp-accecn-segmentation",
            "tx-generic-segmentation",
            "tx-udp-segmentation",
            "tx-gso-list",
        ] {
            assert!(is_tx_offload(on), "{on}");
        }
        for off in [
            "rx-gro",
            "tx-scatter-gather",
            "tx-vlan-hw-insert",
            "highdma",
        ] {
            assert!(!is_tx_offload(off), "{off}");
        }
    }
}
