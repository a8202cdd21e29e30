//! Zero-copy wire formats of the overlay: Ethernet, ARP, IPv4, UDP, TCP (and
//! its options), ICMPv4, DHCPv4 (the switch's server side) and Geneve (RFC 8926, UDP 6081) with the VMware
//! tunnel-endpoint option, plus the outer-header emitter used by the datapath
//! and the one definition of the encapsulation overhead.
//!
//! Modelled on smoltcp's `wire` module: `Packet<T: AsRef<[u8]>>` views with
//! `new_unchecked` / `new_checked`, accessors, setters for
//! `T: AsMut<[u8]>`, and builders that write into caller-provided buffers.
//! `no_std`, no allocation, no `unsafe`; `new_checked`, `parse` and all
//! builders return errors instead of panicking on any input.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod arp;
pub mod checksum;
pub mod dhcp;
pub mod ethernet;
pub mod geneve;
pub mod icmpv4;
pub mod ipv4;
pub mod outer;
pub mod tcp;
pub mod udp;

mod fuzz;

#[doc(hidden)]
pub use fuzz::{fuzz_all, fuzz_tcp};
pub use geneve::{
    Error as GeneveError, GENEVE_PORT, Parsed as GeneveParsed, VMWARE_OPT_CLASS, VMWARE_OPT_TYPE,
};

/// A 48-bit Ethernet MAC address.
pub type MacAddr = [u8; 6];
