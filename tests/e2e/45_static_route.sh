#!/usr/bin/env bash
# tests/e2e/45_static_route.sh -- e2e test 45: a packet through a tier-1
# static route. Gateway-driven: vm1 on web-ls, vm2 on app-ls; the operator
# adds to router t1 the route 10.20.0.0/16 via vm2's overlay IP, and vm2
# acts as a router for that prefix (ip_forward on in its overlay namespace,
# a host 10.20.0.2 behind it on a veth). vm1 pings 10.20.0.2:
#   * on the underlay (tshark) each request goes from vm1's to vm2's tunnel
#     endpoint in app-ls's VNI, inner MACs router -> vm2's port, inner TTL
#     63 (routed once, by vm1's distributed router);
#   * behind vm2 the host receives every request from vm1's overlay IP with
#     TTL 62 (vm2's kernel forwarded it once more);
#   * the answers come back to vm2 with source 10.20.0.2, which is not vm2's
#     port address, so vm2's SpoofGuard drops them (spoofed_src_ip): the
#     model has no allowed-address setting for a routing instance, so only
#     the way out is checked end to end;
#   * a prefix with no route (10.30.0.2) is dropped at vm1 as no_route.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 45 "$@"

gw_setup t45 1500 vm1:web vm2:app
VM1_IP=${GW_IP_OF[vm1]}
VM2_IP=${GW_IP_OF[vm2]}
[[ -n "$VM1_IP" && -n "$VM2_IP" ]] || bail "both instances placed" "vm1=$VM1_IP vm2=$VM2_IP"
overlay_wait_ping vm1 "$VM2_IP" || bail "routed ping vm1 -> vm2 ($VM2_IP)"

# --- the route, through the gateway's state file.
sed "s/^    routes: \[\]$/    routes:\n      - prefix: 10.20.0.0\/16\n        next_hop: $VM2_IP/" \
    "$TOPO_DIR/state.yaml" >"$TOPO_DIR/state-route.yaml"
gw_apply "$TOPO_DIR/state-route.yaml" >"$TOPO_DIR/gw-apply-route.log" 2>&1 ||
    bail "apply a static route 10.20.0.0/16 via $VM2_IP" "$(cat "$TOPO_DIR/gw-apply-route.log")"
v=$(gw_desired_version vm1 || echo none)
gw_wait_applied vm1 "$v" 15 || bail "vm1 applies version $v" "$(gw_status vm1 .gateway)"
has_route() { agent_ctl vm1 config | grep -q '10\.20\.0\.0/16'; }
check "vm1's running config has the route (version $v)" has_route

# --- vm2 routes 10.20.0.0/24 to a host behind it.
BEHIND=t45-behind
ip netns add "$BEHIND"
sandbox_track_netns "$BEHIND"
ip -n "$BEHIND" link set lo up
ip -n "$(topo_root vm2)" link add rt0 type veth peer name eth0 netns "$BEHIND"
ip -n "$(topo_root vm2)" addr add 10.20.0.1/24 dev rt0
ip -n "$(topo_root vm2)" link set rt0 up
in_overlay vm2 sysctl -qw net.ipv4.ip_forward=1
ip -n "$BEHIND" addr add 10.20.0.2/24 dev eth0
ip -n "$BEHIND" link set eth0 up
ip -n "$BEHIND" route add default via 10.20.0.1
RT0_MAC=$(ip -n "$(topo_root vm2)" -j link show rt0 | jq -r '.[0].address')

spoof0=$(agent_counter vm2 .drops.spoofed_src_ip) || spoof0=0
cap_start u || bail "underlay capture starts"
cap_start_in b "$BEHIND" eth0 icmp || bail "capture behind vm2 starts"
out=$(overlay_ping vm1 10.20.0.2 -c 3 -i 0.2 -W 1 2>&1) || true
under=$(cap_stop u)
behind=$(cap_stop b)
diag "$(tail -n 2 <<<"$out")"

lines=$(cap_fields "$behind" "icmp.type==8 && ip.dst==10.20.0.2" ip.src ip.ttl eth.src)
n=$(grep -c . <<<"$lines" || true)
check_eq "the host behind vm2 receives the 3 echo requests" 3 "$n"
bad=$(grep -v -E "^$VM1_IP	62	$RT0_MAC$" <<<"$lines" || true)
if [[ -n "$lines" && -z "$bad" ]]; then
    ok "behind vm2: source $VM1_IP, TTL 62, forwarded by vm2 ($RT0_MAC)"
else
    not_ok "behind vm2: source $VM1_IP, TTL 62, forwarded by vm2 ($RT0_MAC)" "ip.src ip.ttl eth.src" "$lines"
fi

M2=$(topo_mac vm2)
lines=$(cap_fields "$under" "ip.proto#1==17 && icmp.type==8 && ip.dst==10.20.0.2" \
    ip.src ip.dst geneve.vni ip.ttl eth.src eth.dst)
n=$(grep -c . <<<"$lines" || true)
check_eq "3 requests to 10.20.0.2 on the underlay" 3 "$n"
want="10.99.3.11,$VM1_IP	10.99.3.12,10.20.0.2	0x002388	64,63	[0-9a-f:]*,$ROUTER_MAC	[0-9a-f:]*,$M2"
bad=$(grep -v -E "^$want$" <<<"$lines" || true)
if [[ -n "$lines" && -z "$bad" ]]; then
    ok "on the wire: 10.99.3.11 -> 10.99.3.12 in vni 0x2388 (app-ls), inner $ROUTER_MAC -> $M2 (vm2), TTL 63"
else
    not_ok "on the wire: 10.99.3.11 -> 10.99.3.12 in vni 0x2388 (app-ls), inner $ROUTER_MAC -> $M2 (vm2), TTL 63" \
        "ip.src ip.dst geneve.vni ip.ttl eth.src eth.dst" "$lines"
fi

spoof1=$(counter_at_least vm2 .drops.spoofed_src_ip $((spoof0 + 3)))
spoof1=${spoof1:-0}
check "vm2's SpoofGuard drops the answers from 10.20.0.2 ($((spoof1 - spoof0)) of 3)" \
    test $((spoof1 - spoof0)) -ge 3

nr0=$(agent_counter vm1 .drops.no_route) || nr0=0
overlay_ping vm1 10.30.0.2 -c 1 -W 1 >/dev/null 2>&1 || true
nr1=$(counter_at_least vm1 .drops.no_route $((nr0 + 1)))
nr1=${nr1:-0}
check_eq "10.30.0.2 (no route) is dropped at vm1 as no_route" 1 $((nr1 - nr0))

ip netns del "$BEHIND" 2>/dev/null || true
tap_done
