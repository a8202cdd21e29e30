#!/usr/bin/env bash
# tests/e2e/06_malformed_geneve.sh -- e2e test 6: malformed Geneve injected at
# vm1's agent from vm2's underlay IP (a known tunnel endpoint; raw UDP
# datagrams written with bash's /dev/udp): bad version, unknown critical
# option, bad option length, options overrun, truncated, bad protocol, C flag
# missing, bad VMware option, no VMware option at all, unknown VNI, an inner
# frame whose source is no port behind vm2's endpoint (the source guard;
# e2e 46 has the impersonation itself), plus valid packets from an address
# that is no tunnel endpoint. Each reason is injected a given number of
# times and must be counted exactly that often under its own key; a valid
# control packet is not dropped; overlay traffic keeps flowing.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 06 "$@"

topo_new t06 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2
overlay_wait_ping vm2 192.168.100.3 || bail "overlay ping vm2 -> vm1 before injecting"

M1=$(topo_mac vm1)
M2=$(topo_mac vm2)
INNER=$(inner_icmp_frame "$M1" "$M2" 192.168.100.4 192.168.100.3)
OPT=$(vmware_opt 2) # vm2's tep id: the packets claim to come from vm2
NS2=$(topo_ns vm2)

# inject COUNT HEX [NS]: COUNT datagrams to vm1's underlay IP, port 6081.
inject() {
    local count=$1 hex=$2 ns=${3:-$NS2} i
    for ((i = 0; i < count; i++)); do
        udp_send "$ns" 10.99.3.11 6081 "$hex" || not_ok "sending a datagram from $ns"
    done
}

REASONS=(geneve_truncated geneve_bad_version geneve_options_overrun geneve_bad_option_length
    geneve_unknown_critical_option geneve_bad_protocol geneve_missing_critical_flag
    geneve_bad_vmware_option geneve_missing_vmware_option unknown_vni unknown_tunnel
    spoofed_inner_src)
declare -A WANT=(
    [geneve_bad_version]=1 [geneve_unknown_critical_option]=2 [geneve_bad_option_length]=3
    [geneve_truncated]=4 [unknown_vni]=5 [geneve_options_overrun]=2 [geneve_bad_protocol]=1
    [geneve_missing_critical_flag]=2 [geneve_bad_vmware_option]=3 [unknown_tunnel]=2
    [geneve_missing_vmware_option]=4 [spoofed_inner_src]=1
)

counters() { agent_ctl vm1 counters; }
c0=$(counters) || bail "vm1 counters readable"
for r in "${REASONS[@]}"; do
    jq -e --arg r "$r" '.drops | has($r)' <<<"$c0" >/dev/null || not_ok "counter drops.$r exists" "$(jq -c .drops <<<"$c0")"
done

# 0. A valid control packet (echo request vm2 -> vm1): delivered, not dropped;
#    vm1 answers through its tunnel to vm2.
inject 1 "$(geneve_hdr 02 40 6558 0x238c)$OPT$INNER"
# tunnel_tx C: packets sent to vm2's endpoint in counters C.
tunnel_tx() { jq '[.tunnels[] | select(.tep_ip=="10.99.3.12") | .tx_packets] | add // 0' <<<"$1"; }
# Bounded wait for the answer to be counted (counters are published every 200 ms).
counters_wait vm1 "([.tunnels[] | select(.tep_ip==\"10.99.3.12\") | .tx_packets] | add // 0) >= $(($(tunnel_tx "$c0") + 1))" || true
c1=$(counters) || bail "vm1 counters readable"
delta() { jq -n --argjson a "$1" --argjson b "$2" --arg r "$3" '($b.drops[$r] // 0) - ($a.drops[$r] // 0)'; }
sum=0
for r in "${REASONS[@]}"; do sum=$((sum + $(delta "$c0" "$c1" "$r"))); done
check_eq "valid injected packet is not dropped (sum of tunnel drop counters unchanged)" 0 "$sum"
txd=$(jq -n --argjson a "$c0" --argjson b "$c1" \
    '([$b.tunnels[] | select(.tep_ip=="10.99.3.12") | .tx_packets] | add // 0) - ([$a.tunnels[] | select(.tep_ip=="10.99.3.12") | .tx_packets] | add // 0)')
check "valid injected echo request is answered through the tunnel to vm2 (tx_packets +$txd)" [ "$txd" -ge 1 ]

# 1. version 1
inject 1 "$(geneve_hdr 42 40 6558 0x238c)$OPT$INNER"
# 2. an unknown critical option (class 0x0200 type 0x99, no data) after ours
inject 2 "$(geneve_hdr 03 40 6558 0x238c)${OPT}02009900$INNER"
# 3. our option claims 8 data bytes but the options area is 8 bytes in all
inject 3 "$(geneve_hdr 02 40 6558 0x238c)0104800200000002$INNER"
# 4. 5 bytes: shorter than the fixed header
inject 4 "0240655800"
# 5. unknown VNI 0x123456
inject 5 "$(geneve_hdr 02 40 6558 0x123456)$OPT$INNER"
# options length 63 words (252 bytes) in a packet far shorter than that
inject 2 "$(geneve_hdr 3f 40 6558 0x238c)$OPT$INNER"
# protocol type 0x0800 instead of 0x6558
inject 1 "$(geneve_hdr 02 40 0800 0x238c)$OPT$INNER"
# critical option present but the C flag clear
inject 2 "$(geneve_hdr 02 00 6558 0x238c)$OPT$INNER"
# VMware option with 8 data bytes instead of 4
inject 3 "$(geneve_hdr 03 40 6558 0x238c)010480020000000200000000$INNER"
# well-formed Geneve without any option (as a kernel or OVS tunnel sends it):
# the sender's endpoint id cannot be checked
inject 4 "$(geneve_hdr 00 00 6558 0x238c)$INNER"
# valid Geneve from vm2's endpoint, but the inner source is vm2's IP with a
# MAC no port has
inject 1 "$(geneve_hdr 02 40 6558 0x238c)$OPT$(inner_icmp_frame "$M1" 06:17:1e:54:96:ee 192.168.100.4 192.168.100.3)"
# valid packets, but from the underlay router's address (no tunnel endpoint)
inject 2 "$(geneve_hdr 02 40 6558 0x238c)$OPT$INNER" "$TOPO_UL"
# Bounded wait until every injected datagram is counted somewhere.
want_total=0
for r in "${REASONS[@]}"; do want_total=$((want_total + WANT[$r])); done
counters_wait vm1 ".total_drops >= $(($(jq .total_drops <<<"$c1") + want_total))" || true
c2=$(counters) || bail "vm1 counters readable"
for r in "${REASONS[@]}"; do
    check_eq "drops.$r counted exactly ${WANT[$r]}" "${WANT[$r]}" "$(delta "$c1" "$c2" "$r")"
done
diag "drop counters after injection: $(jq -c '.drops | with_entries(select(.value != 0))' <<<"$c2")"

# Traffic keeps flowing.
out=$(overlay_ping vm2 192.168.100.3 -c 3 -i 0.2 -W 2 2>&1) || true
if grep -q ' 3 received' <<<"$out"; then ok "overlay ping vm2 -> vm1 still 3/3"; else not_ok "overlay ping vm2 -> vm1 still 3/3" "$out"; fi
out=$(overlay_ping vm1 192.168.100.4 -c 3 -i 0.2 -W 2 2>&1) || true
if grep -q ' 3 received' <<<"$out"; then ok "overlay ping vm1 -> vm2 still 3/3"; else not_ok "overlay ping vm1 -> vm2 still 3/3" "$out"; fi
check "agent vm1 still running" sandbox_alive "$(agent_pid vm1)"
tap_done
