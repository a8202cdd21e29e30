//! A minimal nf_tables client (raw nfnetlink, no `nft` binary) for the one
//! thing filtered micro-segmentation needs from it: keeping the bridge and
//! the NIC (one of its ports) apart. A `bridge` family table with two base
//! chains, the equivalent of
//!
//! ```text
//! table bridge nsx-agent-eth0 {
//!   chain nic-in  { type filter hook prerouting  priority -500; meta iif eth0 drop; }
//!   chain nic-out { type filter hook postrouting priority -500; meta oif eth0 drop; }
//! }
//! ```
//!
//! `nic-in`: nothing the NIC receives enters the bridge (the agent's
//! AF_PACKET tap on the NIC still sees it: taps run before the bridge's
//! rx handler). `nic-out`: nothing the bridge sends leaves on the NIC —
//! needed because the bridge floods broadcasts and multicasts the host
//! itself sends to every port, whatever the ports' flood flags say. The
//! agent's own sends on the NIC (AF_PACKET) do not pass the bridge.
//!
//! The table is named after the NIC (`nsx-agent-<nic>`), so it is ours by
//! name: restore and leftover cleanup delete it without guessing. It is
//! (re)written in one transaction, so re-applying it never opens a gap.
//! Requests are synchronous (a few per setup/teardown), with a receive
//! timeout.
//!
//! Overlay mode's underlay ssh (see `crate::host::sshd`) adds an `inet` table,
//! also ours by name (`nsx-agent-ssh-<nic>`), refusing new TCP connections
//! to port 22 that arrive on the underlay bridge with a TCP reset:
//!
//! ```text
//! table inet nsx-agent-ssh-eth0 {
//!   chain ssh-in {
//!     type filter hook input priority 0;
//!     meta iif nsx-vtep0.0 meta l4proto tcp th dport 22 tcp flags & (syn|ack) == syn reject with tcp reset;
//!   }
//! }
//! ```
//!
//! Only connection attempts (SYN without ACK) match: established sessions
//! (e.g. the one that installed the agent) keep running. The rule names the
//! bridge by ifindex, so a table left behind once the bridge is gone
//! matches nothing (fail open: never a lock-out).
//!
//! The edge role adds a third, `inet` table (`nsx-agent-edge-<uplink>`)
//! keeping the kernel out of the downlink SNAT's ports: the datapath's
//! AF_PACKET socket on the underlay bridge gets the answers to its SNAT
//! before netfilter runs, and without this the kernel would answer them
//! too (a TCP reset, a port unreachable), as nothing of its own listens
//! there:
//!
//! ```text
//! table inet nsx-agent-edge-eth1 {
//!   chain nat-tcp { type filter hook input priority 0;
//!     meta iif nsx-vtep0.0 meta nfproto ipv4 ip daddr 10.99.3.19 meta l4proto tcp th dport 61000-65535 drop; }
//!   chain nat-udp { ... meta l4proto udp ... }
//! }
//! ```

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::HostError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_REJECT_TYPE: u16 = 1;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_L4PROTO: u32 = 16;
const NFT_META_NFPROTO: u32 = 15;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFPROTO_IPV4: u8 = 2;
const IPPROTO_UDP: u8 = 17;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_REJECT_TCP_RST: u32 = 1;
const NF_INET_LOCAL_IN: u32 = 1;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NF_BR_PRE_ROUTING: u32 = 0;
const NF_BR_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR_LEN: usize = 16;
/// Runs before any other bridge chain a host might have.
const HOOK_PRIORITY: i32 = -500;
/// What the NIC receives, dropped before the bridge looks at it.
pub const CHAIN_IN: &str = "nic-in";
/// What the bridge would send out of the NIC, dropped.
pub const CHAIN_OUT: &str = "nic-out";

/// The chain of the underlay ssh table.
pub const SSH_CHAIN: &str = "ssh-in";

/// The chains of the edge's table (one rule each).
pub const EDGE_CHAINS: [&str; 2] = ["nat-tcp", "nat-udp"];

/// Name of the edge's `inet` table (the edge role's uplink names it).
pub fn edge_table_name(uplink: &str) -> String {
    format!("nsx-agent-edge-{uplink}")
}

/// Name of the table that separates `nic` from its bridge.
pub fn table_name(nic: &str) -> String {
    format!("nsx-agent-{nic}")
}

/// Name of the `inet` table that refuses TCP 22 on the underlay bridge
/// that took `nic` over.
pub fn ssh_table_name(nic: &str) -> String {
    format!("nsx-agent-ssh-{nic}")
}

/// One nfnetlink message being built.
struct Msg {
    buf: Vec<u8>,
    start: usize,
    nests: Vec<usize>,
}

impl Msg {
    fn begin(buf: Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = buf;
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `end`
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        // struct nfgenmsg
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            start,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    fn attr_be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// One expression of a rule: `{NFTA_LIST_ELEM: {NAME, DATA: {...}}}`.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Msg)) {
        self.nest_begin(NFTA_LIST_ELEM);
        self.attr_str(NFTA_EXPR_NAME, name);
        self.nest_begin(NFTA_EXPR_DATA);
        data(self);
        self.nest_end();
        self.nest_end();
    }

    fn nest_begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn nest_end(&mut self) {
        if let Some(at) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn end(mut self) -> Vec<u8> {
        self.pad();
        let len = u32::try_from(self.buf.len() - self.start).unwrap_or(u32::MAX);
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn err(step: &'static str, table: &str, source: io::Error) -> HostError {
    err_in(NFPROTO_BRIDGE, step, table, source)
}

fn err_in(family: u8, step: &'static str, table: &str, source: io::Error) -> HostError {
    let family = if family == NFPROTO_INET {
        "inet"
    } else {
        "bridge"
    };
    HostError::Io {
        step,
        target: format!("nftables table {family} {table}"),
        source,
    }
}

/// An nfnetlink socket in the calling thread's network namespace.
struct Nfnl {
    sock: Socket,
    seq: u32,
}

impl Nfnl {
    fn open() -> io::Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `tv` outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                crate::sys::socklen_of::<libc::timeval>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Nfnl { sock, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.sock.send_to(buf, &SocketAddr::new(0, 0), 0).map(drop)
    }

    /// Sends `msgs` (each built with `NLM_F_ACK`, sequence numbers `seqs`)
    /// as one transaction and waits for every acknowledgement. The first
    /// error the kernel reports is returned (the transaction is then void).
    fn batch(
        &mut self,
        build: impl FnOnce(&mut Nfnl, Vec<u8>) -> (Vec<u8>, Vec<u32>),
    ) -> io::Result<()> {
        let seq = self.next_seq();
        let buf = Msg::begin(
            Vec::with_capacity(512),
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .end();
        let (buf, seqs) = build(self, buf);
        let seq = self.next_seq();
        let buf = Msg::begin(
            buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .end();
        self.send(&buf)?;
        let mut pending = seqs;
        while !pending.is_empty() {
            let (data, _) = self.sock.recv_from_full()?;
            for (hdr, payload) in messages(&data) {
                if hdr.ty == NLMSG_ERROR {
                    // Any error voids the whole transaction (whichever
                    // message it names, batch markers included).
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(code));
                    }
                    pending.retain(|s| *s != hdr.seq);
                }
            }
        }
        Ok(())
    }

    /// Sends one GET request; `Ok(true)` if the object exists.
    fn exists(
        &mut self,
        family: u8,
        msg_type: u16,
        attrs: impl FnOnce(&mut Msg),
    ) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut m = Msg::begin(
            Vec::with_capacity(128),
            nft_type(msg_type),
            NLM_F_REQUEST,
            seq,
            family,
            0,
        );
        attrs(&mut m);
        self.send(&m.end())?;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            for (hdr, payload) in messages(&data) {
                if hdr.seq != seq {
                    continue;
                }
                return match hdr.ty {
                    NLMSG_ERROR => match error_code(payload) {
                        0 => Ok(true),
                        libc::ENOENT => Ok(false),
                        code => Err(io::Error::from_raw_os_error(code)),
                    },
                    NLMSG_DONE => Ok(false),
                    _ => Ok(true),
                };
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Hdr {
    ty: u16,
    seq: u32,
}

/// The netlink messages in one datagram, as (header, payload).
fn messages(data: &[u8]) -> Vec<(Hdr, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > rest.len() {
            break;
        }
        let hdr = Hdr {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
        };
        out.push((hdr, &rest[NLMSG_HDR_LEN..len]));
        let aligned = len.next_multiple_of(4).min(rest.len());
        rest = &rest[aligned..];
    }
    out
}

/// Positive errno of an `NLMSG_ERROR` payload (0 = acknowledgement).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).saturating_abs())
        .unwrap_or(libc::EPROTO)
}

/// One base chain of a table we write, holding exactly one rule.
struct BaseChain<'a> {
    name: &'a str,
    hook: u32,
    priority: i32,
    /// Writes the rule's expressions (inside `NFTA_RULE_EXPRESSIONS`).
    rule: &'a dyn Fn(&mut Msg),
}

/// Writes table `table` of family `fam` with `chains` in one transaction:
/// table and chains created if missing, each chain flushed (a rule from an
/// earlier run) and given its one rule. Idempotent.
fn write_table(nl: &mut Nfnl, fam: u8, table: &str, chains: &[BaseChain<'_>]) -> io::Result<()> {
    nl.batch(|nl, mut buf| {
        let mut seqs = Vec::new();
        let create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
        let s = nl.next_seq();
        let mut m = Msg::begin(buf, nft_type(NFT_MSG_NEWTABLE), create, s, fam, 0);
        m.attr_str(NFTA_TABLE_NAME, table);
        buf = m.end();
        seqs.push(s);
        for chain in chains {
            let s = nl.next_seq();
            let mut m = Msg::begin(buf, nft_type(NFT_MSG_NEWCHAIN), create, s, fam, 0);
            m.attr_str(NFTA_CHAIN_TABLE, table);
            m.attr_str(NFTA_CHAIN_NAME, chain.name);
            m.nest_begin(NFTA_CHAIN_HOOK);
            m.attr_be32(NFTA_HOOK_HOOKNUM, chain.hook);
            // A signed priority goes on the wire as its two's-complement bits.
            m.attr_be32(NFTA_HOOK_PRIORITY, chain.priority.cast_unsigned());
            m.nest_end();
            m.attr_str(NFTA_CHAIN_TYPE, "filter");
            buf = m.end();
            seqs.push(s);
            let s = nl.next_seq();
            let flags = NLM_F_REQUEST | NLM_F_ACK;
            let mut m = Msg::begin(buf, nft_type(NFT_MSG_DELRULE), flags, s, fam, 0);
            m.attr_str(NFTA_RULE_TABLE, table);
            m.attr_str(NFTA_RULE_CHAIN, chain.name);
            buf = m.end();
            seqs.push(s);
            let s = nl.next_seq();
            let mut m = Msg::begin(buf, nft_type(NFT_MSG_NEWRULE), create, s, fam, 0);
            m.attr_str(NFTA_RULE_TABLE, table);
            m.attr_str(NFTA_RULE_CHAIN, chain.name);
            m.nest_begin(NFTA_RULE_EXPRESSIONS);
            (chain.rule)(&mut m);
            m.nest_end();
            buf = m.end();
            seqs.push(s);
        }
        (buf, seqs)
    })
}

/// Writes table `table` (bridge family) so that nothing passes between the
/// bridge and the NIC `ifindex`, in one transaction: table and chains are
/// created if missing, their rules replaced. Idempotent.
pub fn ensure_nic_block(table: &str, ifindex: u32) -> Result<(), HostError> {
    let mut nl = Nfnl::open().map_err(|e| err("open nfnetlink socket", table, e))?;
    let drop_if = |key: u32| move |m: &mut Msg| nic_block_exprs(m, key, ifindex);
    let (rule_in, rule_out) = (drop_if(NFT_META_IIF), drop_if(NFT_META_OIF));
    let chains = [
        BaseChain {
            name: CHAIN_IN,
            hook: NF_BR_PRE_ROUTING,
            priority: HOOK_PRIORITY,
            rule: &rule_in,
        },
        BaseChain {
            name: CHAIN_OUT,
            hook: NF_BR_POST_ROUTING,
            priority: HOOK_PRIORITY,
            rule: &rule_out,
        },
    ];
    write_table(&mut nl, NFPROTO_BRIDGE, table, &chains)
        .map_err(|e| err("write NIC block", table, e))
}

/// The expressions of a NIC block rule: what comes in or goes out
/// (`key`: `NFT_META_IIF` or `NFT_META_OIF`) by `ifindex` is dropped.
fn nic_block_exprs(m: &mut Msg, key: u32, ifindex: u32) {
    // meta load iif/oif => reg 1
    load_meta(m, key);
    // cmp eq reg 1 <ifindex> (host byte order, as the kernel stores it)
    cmp(m, NFT_CMP_EQ, &ifindex.to_ne_bytes());
    drop_verdict(m);
}

/// Deletes table `table` (chains and rules with it); a missing table (or no
/// nf_tables at all) is fine.
pub fn delete_table(table: &str) -> Result<(), HostError> {
    delete_table_in(NFPROTO_BRIDGE, table)
}

fn delete_table_in(family: u8, table: &str) -> Result<(), HostError> {
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(()),
        Err(e) => return Err(err_in(family, "open nfnetlink socket", table, e)),
    };
    let res = nl.batch(|nl, buf| {
        let s = nl.next_seq();
        let mut m = Msg::begin(
            buf,
            nft_type(NFT_MSG_DELTABLE),
            NLM_F_REQUEST | NLM_F_ACK,
            s,
            family,
            0,
        );
        m.attr_str(NFTA_TABLE_NAME, table);
        (m.end(), vec![s])
    });
    match res {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EAFNOSUPPORT)) => Ok(()),
        Err(e) => Err(err_in(family, "delete table", table, e)),
    }
}

/// Whether table `table` exists with both chains.
pub fn nic_block_exists(table: &str) -> Result<bool, HostError> {
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(false),
        Err(e) => return Err(err("open nfnetlink socket", table, e)),
    };
    for chain in [CHAIN_IN, CHAIN_OUT] {
        let found = nl
            .exists(NFPROTO_BRIDGE, NFT_MSG_GETCHAIN, |m| {
                m.attr_str(NFTA_CHAIN_TABLE, table);
                m.attr_str(NFTA_CHAIN_NAME, chain);
            })
            .map_err(|e| err("read chain", table, e))?;
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether table `table` exists (with or without its chains).
pub fn table_exists(table: &str) -> Result<bool, HostError> {
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(false),
        Err(e) => return Err(err("open nfnetlink socket", table, e)),
    };
    nl.exists(NFPROTO_BRIDGE, NFT_MSG_GETTABLE, |m| {
        m.attr_str(NFTA_TABLE_NAME, table)
    })
    .map_err(|e| err("read table", table, e))
}

/// Writes table `table` (inet family) so that new TCP connections to
/// `port` arriving on interface `ifindex` (the underlay bridge) are
/// refused with a TCP reset, in one transaction: table and chain created
/// if missing, the chain's rule replaced. Idempotent.
pub fn ensure_ssh_block(table: &str, ifindex: u32, port: u16) -> Result<(), HostError> {
    let fam = NFPROTO_INET;
    let mut nl = Nfnl::open().map_err(|e| err_in(fam, "open nfnetlink socket", table, e))?;
    let rule = |m: &mut Msg| ssh_block_exprs(m, ifindex, port);
    let chain = BaseChain {
        name: SSH_CHAIN,
        hook: NF_INET_LOCAL_IN,
        priority: 0,
        rule: &rule,
    };
    write_table(&mut nl, fam, table, &[chain])
        .map_err(|e| err_in(fam, "write underlay ssh block", table, e))
}

/// The expressions of the underlay ssh rule (see the module docs).
fn ssh_block_exprs(m: &mut Msg, ifindex: u32, port: u16) {
    // meta iif == the bridge (host byte order, as the kernel stores it)
    load_meta(m, NFT_META_IIF);
    cmp(m, NFT_CMP_EQ, &ifindex.to_ne_bytes());
    // meta l4proto == tcp
    load_meta(m, NFT_META_L4PROTO);
    cmp(m, NFT_CMP_EQ, &[IPPROTO_TCP]);
    // th dport == port (network byte order)
    load_payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    cmp(m, NFT_CMP_EQ, &port.to_be_bytes());
    // tcp flags & (syn|ack) == syn: connection attempts only
    load_payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1);
    m.expr("bitwise", |m| {
        m.attr_be32(NFTA_BITWISE_SREG, NFT_REG_1);
        m.attr_be32(NFTA_BITWISE_DREG, NFT_REG_1);
        m.attr_be32(NFTA_BITWISE_LEN, 1);
        m.nest_begin(NFTA_BITWISE_MASK);
        m.attr(NFTA_DATA_VALUE, &[TCP_FLAG_SYN | TCP_FLAG_ACK]);
        m.nest_end();
        m.nest_begin(NFTA_BITWISE_XOR);
        m.attr(NFTA_DATA_VALUE, &[0]);
        m.nest_end();
    });
    cmp(m, NFT_CMP_EQ, &[TCP_FLAG_SYN]);
    // reject with tcp reset
    m.expr("reject", |m| {
        m.attr_be32(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST)
    });
}

/// Writes the edge's table `table` (inet family): TCP and UDP to `ip`
/// arriving on interface `ifindex` (the underlay bridge) with a
/// destination port in `ports` (inclusive) are dropped in the kernel's
/// input path, in one transaction. Idempotent.
pub fn ensure_edge_nat_ports(
    table: &str,
    ifindex: u32,
    ip: std::net::Ipv4Addr,
    ports: (u16, u16),
) -> Result<(), HostError> {
    let fam = NFPROTO_INET;
    let mut nl = Nfnl::open().map_err(|e| err_in(fam, "open nfnetlink socket", table, e))?;
    let tcp = |m: &mut Msg| edge_nat_exprs(m, ifindex, ip, IPPROTO_TCP, ports);
    let udp = |m: &mut Msg| edge_nat_exprs(m, ifindex, ip, IPPROTO_UDP, ports);
    let chains = [
        BaseChain {
            name: EDGE_CHAINS[0],
            hook: NF_INET_LOCAL_IN,
            priority: 0,
            rule: &tcp,
        },
        BaseChain {
            name: EDGE_CHAINS[1],
            hook: NF_INET_LOCAL_IN,
            priority: 0,
            rule: &udp,
        },
    ];
    write_table(&mut nl, fam, table, &chains)
        .map_err(|e| err_in(fam, "write the downlink NAT ports' drop", table, e))
}

/// The expressions of one of the edge's rules (see the module docs).
fn edge_nat_exprs(m: &mut Msg, ifindex: u32, ip: std::net::Ipv4Addr, proto: u8, ports: (u16, u16)) {
    // meta iif == the bridge (host byte order, as the kernel stores it)
    load_meta(m, NFT_META_IIF);
    cmp(m, NFT_CMP_EQ, &ifindex.to_ne_bytes());
    // meta nfproto ipv4, ip daddr == ip
    load_meta(m, NFT_META_NFPROTO);
    cmp(m, NFT_CMP_EQ, &[NFPROTO_IPV4]);
    load_payload(m, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
    cmp(m, NFT_CMP_EQ, &ip.octets());
    // meta l4proto == proto
    load_meta(m, NFT_META_L4PROTO);
    cmp(m, NFT_CMP_EQ, &[proto]);
    // th dport in lo..=hi (network byte order compares as numbers)
    load_payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    cmp(m, NFT_CMP_GTE, &ports.0.to_be_bytes());
    cmp(m, NFT_CMP_LTE, &ports.1.to_be_bytes());
    drop_verdict(m);
}

/// `meta load key => reg 1`.
fn load_meta(m: &mut Msg, key: u32) {
    m.expr("meta", |m| {
        m.attr_be32(NFTA_META_DREG, NFT_REG_1);
        m.attr_be32(NFTA_META_KEY, key);
    });
}

/// `payload load len bytes at base + offset => reg 1`.
fn load_payload(m: &mut Msg, base: u32, offset: u32, len: u32) {
    m.expr("payload", |m| {
        m.attr_be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
        m.attr_be32(NFTA_PAYLOAD_BASE, base);
        m.attr_be32(NFTA_PAYLOAD_OFFSET, offset);
        m.attr_be32(NFTA_PAYLOAD_LEN, len);
    });
}

/// `cmp op reg 1 value`.
fn cmp(m: &mut Msg, op: u32, value: &[u8]) {
    m.expr("cmp", |m| {
        m.attr_be32(NFTA_CMP_SREG, NFT_REG_1);
        m.attr_be32(NFTA_CMP_OP, op);
        m.nest_begin(NFTA_CMP_DATA);
        m.attr(NFTA_DATA_VALUE, value);
        m.nest_end();
    });
}

/// `immediate reg 0 drop`: the rule's verdict.
fn drop_verdict(m: &mut Msg) {
    m.expr("immediate", |m| {
        m.attr_be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        m.nest_begin(NFTA_IMMEDIATE_DATA);
        m.nest_begin(NFTA_DATA_VERDICT);
        m.attr_be32(NFTA_VERDICT_CODE, NF_DROP);
        m.nest_end();
        m.nest_end();
    });
}

/// Deletes the edge's table `table`; missing is fine.
pub fn delete_edge_table(table: &str) -> Result<(), HostError> {
    delete_table_in(NFPROTO_INET, table)
}

/// Deletes the underlay ssh table `table`; missing is fine.
pub fn delete_ssh_table(table: &str) -> Result<(), HostError> {
    delete_table_in(NFPROTO_INET, table)
}

/// Whether the underlay ssh table `table` exists with its chain.
pub fn ssh_block_exists(table: &str) -> Result<bool, HostError> {
    let fam = NFPROTO_INET;
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(false),
        Err(e) => return Err(err_in(fam, "open nfnetlink socket", table, e)),
    };
    nl.exists(fam, NFT_MSG_GETCHAIN, |m| {
        m.attr_str(NFTA_CHAIN_TABLE, table);
        m.attr_str(NFTA_CHAIN_NAME, SSH_CHAIN);
    })
    .map_err(|e| err_in(fam, "read chain", table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_padded_and_nested() {
        let mut m = Msg::begin(
            Vec::new(),
            nft_type(NFT_MSG_NEWCHAIN),
            NLM_F_REQUEST,
            7,
            NFPROTO_BRIDGE,
            0,
        );
        m.attr_str(NFTA_CHAIN_TABLE, "t");
        m.nest_begin(NFTA_CHAIN_HOOK);
        m.attr_be32(NFTA_HOOK_HOOKNUM, NF_BR_POST_ROUTING);
        m.attr_be32(NFTA_HOOK_PRIORITY, HOOK_PRIORITY.cast_unsigned());
        m.nest_end();
        let buf = m.end();
        // header 16 + nfgenmsg 4 + "t\0" attr 8 + nest (4 + 8 + 8) = 48
        assert_eq!(buf.len(), 48);
        assert_eq!(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]), 48);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x0a03);
        assert_eq!(buf[16], NFPROTO_BRIDGE);
        // nested attribute: length 20, type 4 | NLA_F_NESTED, values big-endian
        assert_eq!(u16::from_ne_bytes([buf[28], buf[29]]), 20);
        assert_eq!(&buf[36..40], &NF_BR_POST_ROUTING.to_be_bytes());
        assert_eq!(&buf[44..48], &(-500i32).to_be_bytes());
        assert_eq!(u16::from_ne_bytes([buf[30], buf[31]]), 4 | NLA_F_NESTED);
        let parsed = messages(&buf);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0.seq, 7);
    }

    #[test]
    fn error_payloads() {
        assert_eq!(error_code(&(-2i32).to_ne_bytes()), 2);
        assert_eq!(error_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(error_code(&[1]), libc::EPROTO);
        assert_eq!(table_name("eth0"), "nsx-agent-eth0");
        assert_eq!(ssh_table_name("eth0"), "nsx-agent-ssh-eth0");
    }

    /// (type without NLA_F_NESTED, payload) of netlink attributes.
    type Attrs<'a> = Vec<(u16, &'a [u8])>;

    /// A NEWRULE message whose expressions `build` writes.
    fn rule(build: impl FnOnce(&mut Msg)) -> Vec<u8> {
        let mut m = Msg::begin(Vec::new(), nft_type(NFT_MSG_NEWRULE), 0, 1, NFPROTO_INET, 0);
        m.nest_begin(NFTA_RULE_EXPRESSIONS);
        build(&mut m);
        m.nest_end();
        m.end()
    }

    /// The (name, attributes) of every expression of a [`rule`] message,
    /// whose only attribute must be the expression list.
    fn rule_exprs(buf: &[u8]) -> Vec<(String, Attrs<'_>)> {
        let top = attrs(&buf[NLMSG_HDR_LEN + 4..]);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, NFTA_RULE_EXPRESSIONS);
        attrs(top[0].1)
            .into_iter()
            .map(|(_, elem)| {
                let a = attrs(elem);
                let name = String::from_utf8_lossy(a[0].1)
                    .trim_end_matches('\0')
                    .to_string();
                (name, attrs(a[1].1))
            })
            .collect()
    }

    fn attrs(mut b: &[u8]) -> Attrs<'_> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
            let ty = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
            if len < 4 || len > b.len() {
                break;
            }
            out.push((ty, &b[4..len]));
            b = &b[len.next_multiple_of(4).min(b.len())..];
        }
        out
    }

    #[test]
    fn nic_rule_drops_what_the_nic_carries() {
        for key in [NFT_META_IIF, NFT_META_OIF] {
            let buf = rule(|m| nic_block_exprs(m, key, 7));
            let exprs = rule_exprs(&buf);
            let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["meta", "cmp", "immediate"]);
            let be32 = |v: &[u8]| u32::from_be_bytes(v.try_into().unwrap());
            // meta: dreg 1, the key.
            let meta: Vec<u32> = exprs[0].1.iter().map(|(_, v)| be32(v)).collect();
            assert_eq!(meta, [NFT_REG_1, key]);
            // cmp: sreg 1, eq, the ifindex in host order.
            let cmp = &exprs[1].1;
            assert_eq!(be32(cmp[0].1), NFT_REG_1);
            assert_eq!(be32(cmp[1].1), NFT_CMP_EQ);
            assert_eq!(attrs(cmp[2].1)[0].1, 7u32.to_ne_bytes());
            // immediate: the verdict register, drop.
            let imm = &exprs[2].1;
            assert_eq!(be32(imm[0].1), NFT_REG_VERDICT);
            let verdict = attrs(attrs(imm[1].1)[0].1);
            assert_eq!(verdict[0].0, NFTA_VERDICT_CODE);
            assert_eq!(be32(verdict[0].1), NF_DROP);
        }
    }

    #[test]
    fn edge_rule_drops_the_nat_ports_to_the_underlay_address_on_the_bridge() {
        let ip = "10.99.3.19".parse().unwrap();
        let buf = rule(|m| edge_nat_exprs(m, 9, ip, IPPROTO_UDP, (61000, 65535)));
        let exprs = rule_exprs(&buf);
        let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "cmp",
                "immediate"
            ]
        );
        // (op, value) of every comparison: bridge 9, IPv4, the address,
        // UDP, 61000 <= dport <= 65535 (network order).
        let cmps: Vec<(u32, &[u8])> = exprs
            .iter()
            .filter(|(n, _)| n == "cmp")
            .map(|(_, a)| {
                let op = u32::from_be_bytes(a[1].1.try_into().unwrap());
                (op, attrs(a[2].1)[0].1)
            })
            .collect();
        let want: [(u32, &[u8]); 6] = [
            (NFT_CMP_EQ, &9u32.to_ne_bytes()),
            (NFT_CMP_EQ, &[NFPROTO_IPV4]),
            (NFT_CMP_EQ, &[10, 99, 3, 19]),
            (NFT_CMP_EQ, &[IPPROTO_UDP]),
            (NFT_CMP_GTE, &61000u16.to_be_bytes()),
            (NFT_CMP_LTE, &65535u16.to_be_bytes()),
        ];
        assert_eq!(cmps, want);
        // The payload loads: the IPv4 destination, the destination port.
        let loads: Vec<Vec<u32>> = exprs
            .iter()
            .filter(|(n, _)| n == "payload")
            .map(|(_, a)| {
                a[1..]
                    .iter()
                    .map(|(_, v)| u32::from_be_bytes((*v).try_into().unwrap()))
                    .collect()
            })
            .collect();
        assert_eq!(
            loads,
            [
                vec![NFT_PAYLOAD_NETWORK_HEADER, 16, 4],
                vec![NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2]
            ]
        );
        assert_eq!(edge_table_name("eth1"), "nsx-agent-edge-eth1");
    }

    #[test]
    fn ssh_rule_matches_syn_to_port_on_the_bridge() {
        let buf = rule(|m| ssh_block_exprs(m, 7, 22));
        assert_eq!(buf[16], NFPROTO_INET);
        let exprs = rule_exprs(&buf);
        let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "meta", "cmp", "meta", "cmp", "payload", "cmp", "payload", "bitwise", "cmp",
                "reject"
            ]
        );
        // The compared values: ifindex 7, tcp, port 22 (network order), SYN.
        let values: Vec<&[u8]> = exprs
            .iter()
            .filter(|(n, _)| n == "cmp")
            .map(|(_, a)| attrs(a[2].1)[0].1)
            .collect();
        assert_eq!(
            values,
            [
                &7u32.to_ne_bytes()[..],
                &[IPPROTO_TCP],
                &[0, 22],
                &[TCP_FLAG_SYN]
            ]
        );
        // The reject is a TCP reset.
        assert_eq!(exprs[9].1[0].1, NFT_REJECT_TCP_RST.to_be_bytes());
    }
}
