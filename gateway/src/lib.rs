//! `nsx-gateway`: the control plane of the overlay (the seed's Public Cloud
//! Gateway, with the trust model of the Avi controller/engine seeds).
//!
//! * [`pki`]: root CA, gateway server certificate, client certificates
//!   issued at enrollment, the bootstrap credential.
//! * [`store`]: SQLite store with migrations; inventory, IPAM, desired state,
//!   versions; [`store::Store::desired_config_for`] is what the control
//!   channel pushes.
//! * [`instance`]: the inventory record of an enrolled instance (below
//!   both the store and the firewall's resolution).
//! * [`state`]: the declarative desired-state file and its validation;
//!   [`bounded_yaml`]: its YAML/JSON parsing with bounded cost (string
//!   length, alias expansion).
//! * [`deliver`]: `apply`'s last check, that every instance's config under
//!   the new state fits the control channel's frame.
//! * [`dfw`]: the distributed firewall's schema in that file and its
//!   validation; [`dfw_resolve`]: its resolution into each instance's
//!   firewall config (group membership from the inventory).
//! * [`tier0`]: the tier-0 router's section of that file (defaults,
//!   validation); [`tier0_resolve`]: the edge's config, each instance's
//!   link to the edge, the public IPs of the `nsx:publicip` tags and the
//!   NAT rules they make.
//! * [`load_balancer`]: the load balancers' section of that file (where
//!   each virtual server is balanced, validation); [`lb_resolve`]: the
//!   services each instance and the edge balance, with the health view's
//!   verdicts; [`health`]: that view, fed by the edge's health checkers'
//!   reports.
//! * [`ops`]: the CLI operations (`init`, `apply`, `get`, `bootstrap rotate`,
//!   `instance revoke`).
//! * [`gateway`]: the shared runtime handle (store + CA + change
//!   notification) that the servers use; [`agent_status`]: each agent's
//!   latest `Status` report, kept in memory.
//! * [`enroll`]: the server side of enrollment (`POST /api/v1/enroll`).
//! * [`install`]: the agent installer tree (`/factory_default/...`): routing,
//!   the install script's templating, `SHA256SUMS`, the dist binaries.
//! * [`server`]: the HTTPS enrollment listener, the loopback admin API,
//!   the installer listeners and the loopback metrics endpoint.
//! * [`conn_limit`]: connection limits (total and per source address)
//!   checked right after `accept` on every listener, and the accept step's
//!   backoff when `accept` fails.
//! * [`metrics`]: the Prometheus endpoint's content (`nsx_gateway_*`) and
//!   the event counters behind it.

#![forbid(unsafe_code)]

pub mod agent_status;
pub mod bounded_yaml;
pub mod conn_limit;
pub mod control_server;
pub mod control_store;
pub mod deliver;
pub mod dfw;
pub mod dfw_resolve;
pub mod enroll;
pub mod fdlimit;
pub mod gateway;
pub mod health;
pub mod install;
pub mod instance;
pub mod lb_resolve;
pub mod load_balancer;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod server;
pub mod state;
pub mod store;
pub mod tier0;
pub mod tier0_resolve;
pub mod util;
