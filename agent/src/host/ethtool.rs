//! Offload switches through the legacy `SIOCETHTOOL` ioctl (no `ethtool`
//! binary needed): turns TX checksum offload, TSO and GSO off on an interface
//! of the *calling thread's* network namespace.
//!
//! Why: the agent reads the VM's frames with AF_PACKET on the veth peer. With
//! TX checksum offload on, veth hands over UDP/TCP frames whose L4 checksum
//! is unfinished (CHECKSUM_PARTIAL), and with TSO/GSO on, super-frames larger
//! than the MTU. Both would be encapsulated as-is and dropped by the receiver.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::HostError;

const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GTXCSUM: u32 = 0x16;

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
        ethtool_ioctl(&sock, ifname, &mut val).map_err(|source| HostError::Io {
            step: what,
            target: ifname.to_string(),
            source,
        })?;
    }
    tracing::debug!(ifname, "tx checksum offload, TSO and GSO turned off");
    Ok(())
}

/// Logs a warning if TX checksum offload is still on after
/// [`disable_tx_offloads`] (some drivers ignore the request).
pub fn check_tx_csum_off(ifname: &str) {
    match tx_csum_enabled(ifname) {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            ifname,
            "tx checksum offload is still on; frames read with AF_PACKET may carry unfinished checksums"
        ),
        Err(error) => tracing::warn!(ifname, %error, "cannot read tx checksum offload state"),
    }
}

/// Reads whether TX checksum offload is on.
fn tx_csum_enabled(ifname: &str) -> Result<bool, HostError> {
    let sock = dgram_socket(ifname)?;
    let mut val = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ethtool_ioctl(&sock, ifname, &mut val).map_err(|source| HostError::Io {
        step: "read tx checksum offload",
        target: ifname.to_string(),
        source,
    })?;
    Ok(val.data != 0)
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

fn ethtool_ioctl(sock: &OwnedFd, ifname: &str, val: &mut EthtoolValue) -> io::Result<()> {
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
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (val as *mut EthtoolValue).cast::<libc::c_char>();
    // SAFETY: SIOCETHTOOL reads `ifr` and reads/writes the `ethtool_value`
    // that `ifru_data` points to; both outlive the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
