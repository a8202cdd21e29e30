//! The agent's side of the gateway: enrollment over HTTPS 8443
//! ([`enroll`]), the mTLS control session on 5555 ([`gwclient`]) and the
//! last applied desired state kept on disk ([`persist`]), and what the
//! instance reports about its OS ([`inventory`]). The gateway's
//! tests and benchmarks use these same clients.

pub mod enroll;
pub mod gwclient;
pub mod inventory;
pub mod persist;
