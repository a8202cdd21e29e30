#!/usr/bin/env bash
# tests/e2e/08_icmp_errors.sh -- e2e test 8: the distributed router's ICMP
# errors. `ping -t 1` from vm1 (ls-web) toward vm2 (ls-app) gets "Time to live
# exceeded" from the router's gateway IP on vm1's switch (192.168.100.1). A DF
# packet larger than the overlay MTU (nsx-eth0's MTU raised to the underlay
# MTU so the kernel lets it out) gets "Frag needed" carrying mtu = overlay MTU
# (1442 at underlay 1500), and the kernel then caches that path MTU.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 08 "$@"

seed_topology t08 1500 2
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2
overlay_wait_ping vm1 192.168.99.9 || bail "routed ping vm1 -> vm2"
OMTU=$(topo_overlay_mtu)

ttl0=$(agent_counter vm1 .drops.ttl_exceeded) || ttl0=0
out=$(overlay_ping vm1 192.168.99.9 -c 2 -i 0.3 -W 2 -t 1 2>&1) || true
if grep -q 'From 192.168.100.1 icmp_seq=1 Time to live exceeded' <<<"$out"; then
    ok "ping -t 1 across switches: Time to live exceeded from 192.168.100.1"
else
    not_ok "ping -t 1 across switches: Time to live exceeded from 192.168.100.1" "$out"
fi
ttl1=$(counter_at_least vm1 .drops.ttl_exceeded $((ttl0 + 2)))
ttl1=${ttl1:-0}
check_eq "drops.ttl_exceeded counted 2" 2 $((ttl1 - ttl0))
out=$(overlay_ping vm1 192.168.99.9 -c 1 -W 2 -t 2 2>&1) || true
if grep -q ' 1 received' <<<"$out"; then ok "ping -t 2 across switches is answered"; else not_ok "ping -t 2 across switches is answered" "$out"; fi

# Oversize DF packet: let the kernel send it by raising nsx-eth0's MTU.
in_overlay vm1 ip link set nsx-eth0 mtu "$TOPO_MTU"
fn0=$(agent_counter vm1 .drops.frag_needed) || fn0=0
big=$((TOPO_MTU - 28))
out=$(overlay_ping vm1 192.168.99.9 -c 1 -W 2 -s "$big" -M "do" 2>&1) || true
if grep -q "From 192.168.100.1 icmp_seq=1 Frag needed and DF set (mtu = $OMTU)" <<<"$out"; then
    ok "ping -M do -s $big: Frag needed (mtu = $OMTU) from 192.168.100.1"
else
    not_ok "ping -M do -s $big: Frag needed (mtu = $OMTU) from 192.168.100.1" "$out"
fi
fn1=$(counter_at_least vm1 .drops.frag_needed $((fn0 + 1)))
fn1=${fn1:-0}
check_eq "drops.frag_needed counted 1" 1 $((fn1 - fn0))
got=$(in_overlay vm1 ip route get 192.168.99.9 | grep -o 'mtu [0-9]*' | cut -d' ' -f2 || true)
check_eq "kernel caches path MTU $OMTU toward 192.168.99.9" "$OMTU" "$got"
out=$(overlay_ping vm1 192.168.99.9 -c 1 -W 2 -s "$big" -M "do" 2>&1) || true
if grep -q "mtu=$OMTU\|mtu = $OMTU" <<<"$out"; then
    ok "next oversize ping is refused locally with mtu=$OMTU"
else
    not_ok "next oversize ping is refused locally with mtu=$OMTU" "$out"
fi
out=$(overlay_ping vm1 192.168.99.9 -c 2 -i 0.2 -W 2 -s $((OMTU - 28)) -M "do" 2>&1) || true
if grep -q ' 2 received' <<<"$out"; then ok "largest fitting DF ping ($((OMTU - 28)) bytes) still passes"; else not_ok "largest fitting DF ping ($((OMTU - 28)) bytes) still passes" "$out"; fi
in_overlay vm1 ip link set nsx-eth0 mtu "$OMTU"
tap_done
