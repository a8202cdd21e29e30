#!/usr/bin/env bash
# tests/e2e/07_spoofing.sh -- e2e test 7: port security. Frames sent from
# vm1's nsx-eth0 with a source IP that is not the port's (ping -I a second
# address) or a source MAC that is not the port's (nsx-eth0's MAC changed)
# are dropped and counted exactly under spoofed_src_ip / spoofed_src_mac,
# and never reach the underlay; after undoing the spoofing, traffic flows.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 07 "$@"

topo_new t07 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2
# No IPv6 chatter (router solicitations, MLD) from the port during the test:
# the counters must move only by what the test sends.
in_overlay vm1 sysctl -qw net.ipv6.conf.all.disable_ipv6=1
in_overlay vm1 sysctl -qw net.ipv6.conf.nsx-eth0.disable_ipv6=1
overlay_wait_ping vm1 192.168.100.4 || bail "overlay ping vm1 -> vm2 before spoofing"
# A static neighbour: no ARP is sent during the spoofed pings.
in_overlay vm1 ip neigh replace 192.168.100.4 lladdr "$(topo_mac vm2)" dev nsx-eth0 nud permanent
sleep 0.5

N=4
ctr() { agent_counter vm1 ".drops.$1"; }

# Spoofed source IP.
cap_start ip || bail "capture starts"
in_overlay vm1 ip addr add 192.168.100.77/32 dev nsx-eth0
ip0=$(ctr spoofed_src_ip) || bail "counter drops.spoofed_src_ip readable"
out=$(overlay_ping vm1 192.168.100.4 -c "$N" -i 0.2 -W 1 -I 192.168.100.77 2>&1) || true
ip1=$(counter_at_least vm1 .drops.spoofed_src_ip $((ip0 + N)))
check_eq "ping from spoofed source IP 192.168.100.77 gets no answer" 1 "$(grep -c ' 0 received' <<<"$out" || true)"
check_eq "drops.spoofed_src_ip counted exactly $N" "$N" $((ip1 - ip0))
in_overlay vm1 ip addr del 192.168.100.77/32 dev nsx-eth0
pcap=$(cap_stop ip)
check_eq "no packet from 192.168.100.77 on the underlay" 0 "$(cap_count "$pcap" "ip.addr==192.168.100.77")"

# Spoofed source MAC (the port's IP, another MAC).
cap_start mac || bail "capture starts"
mac0=$(ctr spoofed_src_mac) || bail "counter drops.spoofed_src_mac readable"
in_overlay vm1 ip link set nsx-eth0 address 06:17:1e:54:96:ee
# A MAC change flushes the neighbour table (even permanent entries): re-add
# the entry so that only the $N echo requests leave nsx-eth0 (no ARP).
in_overlay vm1 ip neigh replace 192.168.100.4 lladdr "$(topo_mac vm2)" dev nsx-eth0 nud permanent
out=$(overlay_ping vm1 192.168.100.4 -c "$N" -i 0.2 -W 1 2>&1) || true
in_overlay vm1 ip link set nsx-eth0 address "$(topo_mac vm1)"
mac1=$(counter_at_least vm1 .drops.spoofed_src_mac $((mac0 + N)))
check_eq "ping from spoofed source MAC 06:17:1e:54:96:ee gets no answer" 1 "$(grep -c ' 0 received' <<<"$out" || true)"
check_eq "drops.spoofed_src_mac counted exactly $N" "$N" $((mac1 - mac0))
pcap=$(cap_stop mac)
check_eq "no frame from 06:17:1e:54:96:ee on the underlay (outer or inner)" 0 \
    "$(cap_count "$pcap" "eth.addr==06:17:1e:54:96:ee")"

# Back to normal.
out=$(overlay_ping vm1 192.168.100.4 -c 3 -i 0.2 -W 2 2>&1) || true
if grep -q ' 3 received' <<<"$out"; then ok "legitimate ping vm1 -> vm2 works again 3/3"; else not_ok "legitimate ping vm1 -> vm2 works again 3/3" "$out"; fi
tap_done
