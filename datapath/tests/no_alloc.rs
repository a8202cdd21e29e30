//! The steady-state packet loop must not allocate: a counting global
//! allocator wraps the system one, and a warmed-up loop of encapsulations,
//! decapsulations, routed packets, ARP replies and drops must count zero.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_loop_does_not_allocate() {
    let mut a = pipeline_for(VM1);
    let mut b = pipeline_for(VM2);
    let (mut out_a, mut out_b) = (output(), output());
    let frames = [
        icmp_echo(VM1.mac, VM3.mac, VM1.ip, VM3.ip, 64, 1400, true),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 64, 1400, true),
        icmp_echo(VM1.mac, ROUTER_MAC, VM1.ip, VM2.ip, 1, 56, true),
        arp_request(VM1.mac, VM1.ip, gw_web()),
        icmp_echo(
            VM1.mac,
            VM3.mac,
            "192.168.100.66".parse().unwrap(),
            VM3.ip,
            64,
            56,
            true,
        ),
    ];
    let mut run = |rounds: u64| {
        for i in 0..rounds {
            for f in &frames {
                a.from_port(f, i, &mut out_a);
            }
            // Carry vm1's packets for vm2 across and let vm2 decapsulate them.
            for (pkt, dst) in out_a.underlay.iter() {
                if dst == VM2.underlay {
                    let (src, payload) = strip_outer(pkt);
                    b.from_underlay(src, payload, i, &mut out_b);
                }
            }
            out_a.clear();
            out_b.clear();
        }
    };
    run(10); // warm-up
    let before = ALLOCS.load(Ordering::Relaxed);
    run(1000);
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations in the steady-state loop");
    assert!(
        b.counters().port_tx.packets >= 1000,
        "the loop did real work"
    );
}
