#!/usr/bin/env bash
# tests/e2e/02_routed_ping.sh -- e2e test 2: ping between instances on two
# switches through the distributed router. On the underlay (tshark) the
# request travels in the destination's VNI, the reply in the other VNI, both
# with inner TTL 63 and inner MACs rewritten (router MAC -> destination NIC),
# exactly like the seed capture (request 192.168.99.9 -> 192.168.100.3 in
# vni 0x238c, reply in vni 0x2388).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 02 "$@"

seed_topology t02 1500 2
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2

overlay_wait_ping vm2 192.168.100.3 || not_ok "first routed ping vm2 -> vm1 within 10 s"
overlay_wait_ping vm1 192.168.99.9 || not_ok "first routed ping vm1 -> vm2 within 10 s"

cap_start c || bail "capture starts"
out2=$(overlay_ping vm2 192.168.100.3 -c 3 -i 0.2 -W 2 2>&1) || true
out1=$(overlay_ping vm1 192.168.99.9 -c 3 -i 0.2 -W 2 2>&1) || true
pcap=$(cap_stop c)

if grep -q ' 3 received' <<<"$out2"; then ok "ping vm2 (ls-app) -> vm1 (ls-web): 3/3"; else not_ok "ping vm2 (ls-app) -> vm1 (ls-web): 3/3" "$out2"; fi
if grep -q ' 3 received' <<<"$out1"; then ok "ping vm1 (ls-web) -> vm2 (ls-app): 3/3"; else not_ok "ping vm1 (ls-web) -> vm2 (ls-app): 3/3" "$out1"; fi
# The reply was routed by the other agent: the pinger sees TTL 63.
check_eq "vm2 sees replies with ttl=63 (routed once)" 3 "$(grep -c 'ttl=63' <<<"$out2" || true)"
check_eq "vm1 sees replies with ttl=63 (routed once)" 3 "$(grep -c 'ttl=63' <<<"$out1" || true)"

fields=(ip.src ip.dst geneve.vni ip.ttl eth.src eth.dst icmp.type)
# expect FILTER DESC OUTER_SRC OUTER_DST VNI DST_MAC
expect() {
    local filter=$1 desc=$2 osrc=$3 odst=$4 vni=$5 dmac=$6 lines n bad
    lines=$(cap_fields "$pcap" "ip.proto#1==17 && $filter" "${fields[@]}")
    n=$(grep -c . <<<"$lines" || true)
    if [[ $n -lt 3 ]]; then
        not_ok "$desc: 3 packets captured" "got $n:" "$lines"
        return
    fi
    want="$osrc,.*	$odst,.*	$vni	64,63	[0-9a-f:]*,$ROUTER_MAC	[0-9a-f:]*,$dmac	"
    bad=$(grep -v -E "^$want" <<<"$lines" || true)
    if [[ -z "$bad" ]]; then
        ok "$desc: outer $osrc -> $odst, vni $vni, inner TTL 63, inner MACs $ROUTER_MAC -> $dmac ($n packets)"
    else
        not_ok "$desc: outer $osrc -> $odst, vni $vni, inner TTL 63, inner MACs $ROUTER_MAC -> $dmac" \
            "fields: ${fields[*]}" "$bad"
    fi
}
m1=$(topo_mac vm1)
m2=$(topo_mac vm2)
expect "ip.src==192.168.99.9 && ip.dst==192.168.100.3 && icmp.type==8" \
    "request vm2 -> vm1 on the wire" 10.99.3.12 10.99.3.11 0x00238c "$m1"
expect "ip.src==192.168.100.3 && ip.dst==192.168.99.9 && icmp.type==0" \
    "reply vm1 -> vm2 on the wire" 10.99.3.11 10.99.3.12 0x002388 "$m2"
expect "ip.src==192.168.100.3 && ip.dst==192.168.99.9 && icmp.type==8" \
    "request vm1 -> vm2 on the wire" 10.99.3.11 10.99.3.12 0x002388 "$m2"
expect "ip.src==192.168.99.9 && ip.dst==192.168.100.3 && icmp.type==0" \
    "reply vm2 -> vm1 on the wire" 10.99.3.12 10.99.3.11 0x00238c "$m1"
n=$(cap_count "$pcap" "icmp && !geneve && ip.addr#1==192.168.0.0/16")
check_eq "no overlay ICMP crosses the underlay unencapsulated" 0 "$n"
diag "$(tshark -n -r "$pcap" 2>/dev/null | head -n 4)"
tap_done
