#!/usr/bin/env bash
# tests/e2e/46_ingress_source.sh -- e2e test 46: the ingress source guard.
# Seed topology: B = vm1 (ls-web 192.168.100.3) whose firewall accepts tcp/22
# only from A = vm3 (ls-web 192.168.100.4) (ICMP from anyone, default drop);
# C = vm2 (ls-app 192.168.99.9), an enrolled instance whose root owns its
# endpoint. From C's underlay namespace, raw Geneve (bash /dev/udp) with C's
# own tep id, so decap's endpoint checks pass:
#   * an inner SYN from A's MAC/IP to B:22 (switched) and one from A's IP
#     through the router's MAC (routed) are dropped on B before its
#     firewall, counted exactly under drops.spoofed_inner_src, never reach
#     B's nsx-eth0, and open no connection (rule 1006 counts no session);
#   * the live agent's trace names the endpoint A's address is behind;
#   * C's own routed SYN passes the guard and B's firewall drops it;
#   * the very same switched SYN, sent by A's endpoint, is delivered.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 46 "$@"

seed_topology t46 1500
topo_build
cat >>"$(topo_config_path vm1)" <<'EOF'

[firewall]
default_rule = { id = 1002, action = "drop" }

[[firewall.rulesets]]
name = "t46"

[[firewall.rulesets.rules]]
id = 1006
sources = ["192.168.100.4"]
destinations = ["192.168.100.3"]
services = [{ protocol = "tcp", port = 22 }]
action = "accept"

[[firewall.rulesets.rules]]
id = 1005
services = [{ protocol = "icmp" }]
action = "accept"
EOF
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2 vm3
overlay_wait_ping vm3 192.168.100.3 || bail "overlay ping A (vm3) -> B (vm1)"
overlay_wait_ping vm2 192.168.100.3 || bail "routed overlay ping C (vm2) -> B (vm1)"

MB=$(topo_mac vm1)
MA=$(topo_mac vm3)
IP_A=192.168.100.4
IP_B=192.168.100.3
IP_C=192.168.99.9
NS_A=$(topo_ns vm3)
NS_C=$(topo_ns vm2)
GENEVE_A="$(geneve_hdr 02 40 6558 0x238c)$(vmware_opt "$(topo_tep_id vm3)")"
GENEVE_C="$(geneve_hdr 02 40 6558 0x238c)$(vmware_opt "$(topo_tep_id vm2)")"
# A's SYN to B:22, switched (A's MAC) and routed (the router's MAC); C's own.
SYN_A=$(inner_tcp_frame "$MB" "$MA" "$IP_A" "$IP_B" 40001 22)
SYN_A_ROUTED=$(inner_tcp_frame "$MB" "$ROUTER_MAC" "$IP_A" "$IP_B" 40002 22)
SYN_C_ROUTED=$(inner_tcp_frame "$MB" "$ROUTER_MAC" "$IP_C" "$IP_B" 40004 22)

# inject NS COUNT HEX: COUNT datagrams to B's underlay IP, port 6081.
inject() {
    local ns=$1 count=$2 hex=$3 i
    for ((i = 0; i < count; i++)); do
        udp_send "$ns" "$(topo_underlay_ip vm1)" 6081 "$hex" || not_ok "sending a datagram from $ns"
    done
}
counters() { agent_ctl vm1 counters; }
drops() { jq -n --argjson a "$1" --argjson b "$2" --arg r "$3" '($b.drops[$r] // 0) - ($a.drops[$r] // 0)'; }
sessions_1006() { agent_ctl vm1 firewall-stats | jq '[.rules[] | select(.id == 1006) | .sessions] | add // 0'; }
# settled_after C JQ_NUM N: bounded wait (10 s) until the number JQ_NUM picks
# out of B's counters is N more than in C (counters are published every
# 200 ms, later on a loaded machine).
settled_after() { counters_wait vm1 "($2) >= $(($(jq "$2" <<<"$1") + $3))" || true; }
RX_A='[.tunnels[] | select(.tep_ip == "10.99.3.13") | .rx_packets] | add // 0'

c0=$(counters) || bail "B's counters readable"
jq -e '.drops | has("spoofed_inner_src")' <<<"$c0" >/dev/null ||
    not_ok "counter drops.spoofed_inner_src exists" "$(jq -c .drops <<<"$c0")"
s0=$(sessions_1006) || bail "B's firewall-stats readable"
cap_start_in b "$(topo_root vm1)" nsx-eth0 "tcp dst port 22" || bail "capture on B's nsx-eth0 starts"

# 1. C impersonates A: 3 switched SYNs, 2 routed ones.
inject "$NS_C" 3 "$GENEVE_C$SYN_A"
inject "$NS_C" 2 "$GENEVE_C$SYN_A_ROUTED"
settled_after "$c0" '.drops.spoofed_inner_src // 0' 5
c1=$(counters) || bail "B's counters readable"
check_eq "C's SYNs with A's source: drops.spoofed_inner_src counted exactly 5" 5 "$(drops "$c0" "$c1" spoofed_inner_src)"
check_eq "... and none reached B's firewall (drops.firewall unchanged)" 0 "$(drops "$c0" "$c1" firewall)"
check_eq "... no connection opened by rule 1006 (tcp/22 from A)" "$s0" "$(sessions_1006)"

# 2. The live trace explains it.
req=$(jq -cn --arg f "$SYN_A" --arg t "$(topo_underlay_ip vm2)" \
    '{api_version: 1, cmd: "trace", from: "underlay", frame_hex: $f, src_tep: $t, vni: "0x238c"}')
tr=$(agent_api vm1 "$req")
jq -e . <<<"${tr:-null}" >/dev/null 2>&1 || diag "trace reply: $tr"
check_eq "trace of C's SYN: dropped as spoofed_inner_src" "dropped spoofed_inner_src" \
    "$(jq -r '"\(.verdict) \(.drop_reason)"' <<<"$tr")"
want="ls-web (vni 0x238c): inner source $IP_A ($MA) is not behind endpoint $(topo_underlay_ip vm2) (tep 2), it is behind $(topo_underlay_ip vm3) (tep 3): drop (spoofed_inner_src)"
check_eq "trace names the endpoint A's address is behind" "decap $want" \
    "$(jq -r '.steps[0] | "\(.layer) \(.detail)"' <<<"$tr")"

# 3. C's own address passes the guard; B's firewall judges it (default drop).
inject "$NS_C" 1 "$GENEVE_C$SYN_C_ROUTED"
settled_after "$c1" '.drops.firewall // 0' 1
c2=$(counters) || bail "B's counters readable"
check_eq "C's own routed SYN: not a spoofed source" 0 "$(drops "$c1" "$c2" spoofed_inner_src)"
check_eq "C's own routed SYN: dropped by B's firewall" 1 "$(drops "$c1" "$c2" firewall)"

# 4. The same switched SYN from A's endpoint is accepted and delivered.
inject "$NS_A" 1 "$GENEVE_A$SYN_A"
settled_after "$c2" "$RX_A" 1
c3=$(counters) || bail "B's counters readable"
check_eq "A's SYN: not a spoofed source" 0 "$(drops "$c2" "$c3" spoofed_inner_src)"
check_eq "A's SYN: one connection opened by rule 1006" $((s0 + 1)) "$(sessions_1006)"

pcap=$(cap_stop b)
check_eq "B's nsx-eth0 sees A's SYN (sport 40001) exactly once: the one A sent" 1 \
    "$(cap_count "$pcap" "tcp.flags.syn==1 && tcp.srcport==40001 && ip.src==$IP_A")"
check_eq "B's nsx-eth0 sees no routed SYN with A's source (sport 40002)" 0 \
    "$(cap_count "$pcap" "tcp.srcport==40002")"
check_eq "B's nsx-eth0 sees no SYN from C (sport 40004)" 0 "$(cap_count "$pcap" "tcp.srcport==40004")"
diag "drop counters on B: $(jq -c '.drops | with_entries(select(.value != 0))' <<<"$c3")"

# Traffic keeps flowing.
out=$(overlay_ping vm3 "$IP_B" -c 3 -i 0.2 -W 2 2>&1) || true
if grep -q ' 3 received' <<<"$out"; then ok "overlay ping A -> B still 3/3"; else not_ok "overlay ping A -> B still 3/3" "$out"; fi
check "agent B still running" sandbox_alive "$(agent_pid vm1)"
tap_done
