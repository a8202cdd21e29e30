//! The agent's datapath threads and what they need: the overlay loop
//! around [`datapath::Pipeline`] ([`dataloop`]), the filtered
//! micro-segmentation loop around [`datapath::Microseg`] ([`msegloop`]),
//! the loop machinery they share ([`driver`], its busy-polling policy
//! [`spin`]), what they exchange with the
//! control side ([`ctl`]), batched socket I/O ([`io`],
//! [`underlay`]), firewall requests answered between batches ([`fwctl`])
//! and the packet-log writer ([`pktlog`]).

pub mod ctl;
pub mod dataloop;
pub mod driver;
pub mod fwctl;
pub mod io;
pub mod lbctl;
pub mod msegloop;
pub mod natctl;
pub mod pktlog;
pub mod spin;
pub mod underlay;
