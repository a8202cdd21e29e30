//! The edge downlink's socket filter: a classic BPF program (what
//! `SO_ATTACH_FILTER` takes) built from the tier-0, so that the AF_PACKET
//! socket on the underlay bridge is handed only the frames the edge routes,
//! not the host's own traffic and the Geneve it receives (which the kernel
//! delivers to the Geneve UDP socket anyway). It accepts:
//!
//! * ARP whose target address is the downlink's (replies to the edge's
//!   requests, and requests the kernel answers, both learned);
//! * IPv4 to an overlay subnet behind the tier-0 (its tier-1s' switches);
//! * with `underlay_snat`, IPv4 to the downlink's address that can be an
//!   answer to the downlink's SNAT: TCP or UDP (first fragments) to a
//!   destination port in [`control::Tier0::DOWNLINK_NAT_PORTS`], and ICMP
//!   echo replies and errors (types 0, 3, 11).
//!
//! Everything else is refused in the kernel and never copied. The layers
//! check the same again (`downlink-in`): the filter is the cheap
//! pre-selection, not the policy. [`run`] interprets the subset of classic
//! BPF the program uses, so it can be tested with real frames.
//!
//! Offsets are from the Ethernet header (an AF_PACKET `SOCK_RAW` socket
//! filters on the whole frame); VLAN-tagged frames are refused.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::tables::Tier0;

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LD_B_IND: u16 = 0x50;
const LDX_B_MSH: u16 = 0xb1;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const TAX: u16 = 0x07;
const TXA: u16 = 0x87;

/// What an accepting `ret` returns: the whole frame, however large (a
/// GRO super-frame too).
pub const ACCEPT: u32 = u32::MAX;
/// Longest program the kernel takes (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Most overlay subnets checked one by one (4 instructions each); with
/// more, after aggregation, every unicast IPv4 frame is accepted and the
/// layers sort them out.
pub const MAX_SUBNETS: usize = 900;

const ETH_DST_IP: u32 = 30;
const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_ARP: u32 = 0x0806;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(k: u32) -> Insn {
    insn(RET_K, 0, 0, k)
}

/// A program that refuses every frame (the downlink socket before the
/// tables have a tier-0).
pub fn refuse_all() -> Vec<Insn> {
    vec![ret(0)]
}

/// The downlink's filter for `t0` (see the module docs).
pub fn downlink_filter(t0: &Tier0) -> Vec<Insn> {
    let me = u32::from(t0.downlink_ip());
    let mut p = vec![
        // 0: ethertype
        insn(LD_H_ABS, 0, 0, 12),
        // 1: IPv4: on to 7
        insn(JEQ_K, 5, 0, ETHERTYPE_IPV4),
        // 2: ARP, else refuse (6)
        insn(JEQ_K, 0, 3, ETHERTYPE_ARP),
        // 3: the target protocol address (14 + 24)
        insn(LD_W_ABS, 0, 0, 38),
        // 4: ours: accept (5), else refuse (6)
        insn(JEQ_K, 0, 1, me),
        ret(ACCEPT),
        ret(0),
        // 7: the IPv4 destination, kept in X
        insn(LD_W_ABS, 0, 0, ETH_DST_IP),
        insn(TAX, 0, 0, 0),
    ];
    let subnets = Ipv4Net::aggregate(&t0.overlay_subnets().collect::<Vec<_>>());
    if subnets.len() > MAX_SUBNETS {
        // Too many to check one by one: every unicast IPv4 destination.
        p.push(insn(JGE_K, 1, 0, u32::from(Ipv4Addr::new(224, 0, 0, 0))));
        p.push(ret(ACCEPT));
    } else {
        for net in &subnets {
            p.extend([
                insn(TXA, 0, 0, 0),
                insn(ALU_AND_K, 0, 0, u32::from(net.netmask())),
                insn(JEQ_K, 0, 1, u32::from(net.network())),
                ret(ACCEPT),
            ]);
        }
    }
    if t0.underlay_snat {
        let (lo, hi) = control::Tier0::DOWNLINK_NAT_PORTS;
        p.extend([
            // s0: to the downlink's address, else refuse (s18)
            insn(TXA, 0, 0, 0),
            insn(JEQ_K, 0, 16, me),
            // s2: a non-first fragment carries no ports: refuse
            insn(LD_H_ABS, 0, 0, 20),
            insn(JSET_K, 14, 0, 0x1fff),
            // s4: protocol: TCP or UDP to s13, ICMP on, else refuse
            insn(LD_B_ABS, 0, 0, 23),
            insn(JEQ_K, 7, 0, 6),
            insn(JEQ_K, 6, 0, 17),
            insn(JEQ_K, 0, 10, 1),
            // s8: ICMP type: echo reply, unreachable, time exceeded
            insn(LDX_B_MSH, 0, 0, 14),
            insn(LD_B_IND, 0, 0, 14),
            insn(JEQ_K, 6, 0, 0),
            insn(JEQ_K, 5, 0, 3),
            insn(JEQ_K, 4, 5, 11),
            // s13: the destination port in the NAT's range
            insn(LDX_B_MSH, 0, 0, 14),
            insn(LD_H_IND, 0, 0, 16),
            insn(JGE_K, 0, 2, u32::from(lo)),
            // s16: not above the top (the range may end below 65535);
            // s17 accepts, s18 refuses
            insn(JGT_K, 1, 0, u32::from(hi)),
            ret(ACCEPT),
            ret(0),
        ]);
    } else {
        p.push(ret(0));
    }
    p
}

/// Runs `prog` over `frame` as the kernel would: the length to keep (0:
/// refused). A load beyond the frame refuses it; a jump out of the program
/// or an unknown opcode refuses it too (the kernel would not have taken
/// such a program).
pub fn run(prog: &[Insn], frame: &[u8]) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    let load = |off: u32, size: usize| -> Option<u32> {
        let at = usize::try_from(off).ok()?;
        let b = frame.get(at..at.checked_add(size)?)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    while let Some(&i) = prog.get(pc) {
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match i.code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                let Some(v) = load(i.k, size) else { return 0 };
                a = v;
            }
            LD_H_IND | LD_B_IND => {
                let size = if i.code == LD_H_IND { 2 } else { 1 };
                let Some(v) = x.checked_add(i.k).and_then(|off| load(off, size)) else {
                    return 0;
                };
                a = v;
            }
            LDX_B_MSH => {
                let Some(v) = load(i.k, 1) else { return 0 };
                x = (v & 0xf) * 4;
            }
            ALU_AND_K => a &= i.k,
            TAX => x = a,
            TXA => a = x,
            JEQ_K => pc += jump(a == i.k),
            JGE_K => pc += jump(a >= i.k),
            JGT_K => pc += jump(a > i.k),
            JSET_K => pc += jump(a & i.k != 0),
            RET_K => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tables::{T0Hop, T0Origin, T0Route};

    fn tier0(snat: bool, subnets: usize) -> Tier0 {
        let routes = (0..subnets)
            .map(|i| T0Route {
                prefix: Ipv4Net::new(
                    Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap() * 512),
                    24,
                )
                .unwrap(),
                hop: T0Hop::Tier1(0),
                origin: T0Origin::Tier1,
            })
            .collect();
        Tier0 {
            name: "t0".into(),
            mac: control::MacAddr([2, 0, 0, 0, 0, 1]),
            uplink_mac: control::MacAddr([2, 0, 0, 0, 0, 2]),
            transit_vni: 1,
            uplink: "203.0.113.2/24".parse().unwrap(),
            addresses: vec!["203.0.113.2".parse().unwrap()],
            uplink_mtu: 1500,
            downlink: "10.99.3.19/24".parse().unwrap(),
            downlink_mac: control::MacAddr([2, 0, 0, 0, 0, 3]),
            downlink_mtu: 1500,
            underlay_snat: snat,
            routes,
            tier1s: vec![0],
            nat: nat::NatConfig::with_pool(vec!["203.0.113.2".parse().unwrap()]),
            nat_capacity: 16,
            downlink_nat: None,
            downlink_nat_capacity: 0,
            health_check_ip: control::Tier0::DEFAULT_HEALTH_CHECK_IP,
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_ret() {
        for (snat, n) in [
            (false, 2),
            (true, 2),
            (true, MAX_SUBNETS),
            (true, MAX_SUBNETS + 1),
        ] {
            let t0 = tier0(snat, n);
            let p = downlink_filter(&t0);
            assert!(p.len() <= MAX_INSNS);
            for (pc, i) in p.iter().enumerate() {
                if matches!(i.code, JEQ_K | JGE_K | JGT_K | JSET_K) {
                    for off in [i.jt, i.jf] {
                        assert!(pc + 1 + usize::from(off) < p.len(), "{pc}: {i:?}");
                    }
                }
            }
            assert_eq!(p.last().map(|i| i.code), Some(RET_K));
        }
    }

    #[test]
    fn the_interpreter_refuses_short_frames_and_unknown_opcodes() {
        let p = vec![insn(LD_W_ABS, 0, 0, 38), ret(ACCEPT)];
        assert_eq!(run(&p, &[0; 41]), 0);
        assert_eq!(run(&p, &[0; 42]), ACCEPT);
        assert_eq!(run(&[insn(0xffff, 0, 0, 0)], &[0; 64]), 0);
        assert_eq!(run(&[], &[0; 64]), 0);
    }
}
