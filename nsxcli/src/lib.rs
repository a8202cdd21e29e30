//! nsxcli: the operator's shell of the overlay, like the seed's `nsxcli`
//! on an NSX Cloud instance. It talks only to the local nsx-agent's API
//! (unix socket, versioned JSON; agent/API.md) or, with `--gateway`, to the
//! gateway's admin REST API.
//!
//! A pure core and a thin I/O shell:
//! * [`grammar`]: the command table -> parsed commands, `?` help, Tab
//!   completion, suggestions;
//! * [`format`], [`table`], [`timefmt`], [`pcap`]: replies -> text (and
//!   pcap bytes), golden-tested from canned JSON;
//! * [`packet`]: packets described on the command line -> Ethernet frames;
//! * [`exec`]: one command = the API calls it needs + its formatter, over
//!   the [`client::Api`] / [`http::GwApi`] seams;
//! * [`client`], [`http`], [`shell`]: the socket, HTTP and line-editor I/O.

#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod exec;
pub mod format;
pub mod grammar;
pub mod http;
pub mod packet;
pub mod pcap;
pub mod shell;
pub mod table;
pub mod timefmt;
