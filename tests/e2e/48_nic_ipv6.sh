#!/usr/bin/env bash
# tests/e2e/48_nic_ipv6.sh -- e2e test 48: the instance's underlay IPv6
# moves with the NIC. The underlay router (dnsmasq in the underlay
# namespace) advertises fd00:99:3::/64 for SLAAC and itself as the default
# router (an off-link network fd00:aa::/64 lies behind it); vm1 also has a
# static fd00:99:4::11/64 and a static route fd00:200::/64 via fd00:99:4::254.
# While vm1's agent runs:
#   * the static and the SLAAC address and both the RA default route and the
#     static route live on nsx-vtep0.0 (eth0 keeps only its link-local one);
#     accept_ra and autoconf there are eth0's; the kernel's own RA default
#     route (metric 1024) appears on the bridge, so RAs are processed there,
#     and the SLAAC address's lifetime is refreshed by them;
#   * IPv6 ping and TCP work to both addresses, and off-link through the RA
#     default route;
#   * a TCP stream from vm1's SLAAC address and a ping to its static one run
#     across an agent SIGKILL + restart (adoption) and a SIGTERM + start
#     (restore, then move again) and get through: every line arrives in
#     order, the last 20 echoes are answered.
# After SIGTERM eth0's IPv6 addresses (flags) and the IPv6 routing table are
# as before (lifetimes and expiry times aside), with the kernel's own RA
# default route and no stand-in (metric 1025) left.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 48 "$@"
command -v dnsmasq >/dev/null || bail "dnsmasq is required (scripts/test.sh installs dnsmasq-base)"

topo_new t48 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2
topo_build
topo_wait_underlay || bail "underlay up"

V1S=fd00:99:4::11   # vm1 static
V2S=fd00:99:4::12   # vm2 static
OFFLINK=fd00:aa::1  # behind the underlay router

# --- the underlay router: fd00:99:3::1 on the bridge, an off-link network
# behind it (its default route makes dnsmasq advertise a router lifetime).
in_ul ip -6 addr add fd00:99:3::1/64 dev ulbr0 nodad
in_ul ip -6 addr add fd00:99:4::1/64 dev ulbr0 nodad
in_ul ip link add ulr0 type veth peer name ulr1
in_ul ip link set ulr1 up
in_ul ip link set ulr0 up
in_ul ip -6 addr add "$OFFLINK/64" dev ulr0 nodad
in_ul ip -6 route add default via fd00:aa::2 dev ulr0
in_ul sysctl -qw net.ipv6.conf.all.forwarding=1
in_inst vm1 ip -6 addr add "$V1S/64" dev eth0
in_inst vm1 ip -6 route add fd00:200::/64 via fd00:99:4::254 dev eth0 metric 50
in_inst vm2 ip -6 addr add "$V2S/64" dev eth0
sandbox_bg "$TOPO_DIR/dnsmasq.log" ip netns exec "$TOPO_UL" dnsmasq --no-daemon --conf-file=/dev/null \
    --port=0 --interface=ulbr0 --bind-interfaces --enable-ra \
    --dhcp-range=fd00:99:3::,ra-only,64,10m --ra-param=ulbr0,4,600 \
    --dhcp-leasefile="$TOPO_DIR/dnsmasq.leases" --pid-file="$TOPO_DIR/dnsmasq.pid"

# slaac_addr vmN DEV: the instance's SLAAC address in fd00:99:3::/64 on DEV.
slaac_addr() {
    in_inst "$1" ip -j -6 addr show dev "$2" scope global |
        jq -r '[.[0].addr_info[]? | select((.local // "") | startswith("fd00:99:3:"))][0].local // empty'
}
# ra_default vmN DEV METRIC: the RA default route on DEV at METRIC exists.
ra_default() {
    in_inst "$1" ip -j -6 route show default dev "$2" |
        jq -e --argjson m "$3" 'any(.[]; .protocol == "ra" and .metric == $m)' >/dev/null
}
has_slaac() { [[ -n "$(slaac_addr "$1" "$2")" ]]; }
wait_for 20 has_slaac vm1 eth0 || bail "vm1 gets a SLAAC address from dnsmasq's RA" "$(tail -n 5 "$TOPO_DIR/dnsmasq.log")"
wait_for 20 ra_default vm1 eth0 1024 || bail "vm1 learns the RA default route"
# vm2 reaches vm1's SLAAC prefix through the same RA (on-link prefix or
# default route): wait for it too, or its first ping may find no route.
wait_for 20 has_slaac vm2 eth0 || bail "vm2 gets a SLAAC address from dnsmasq's RA"
V1A=$(slaac_addr vm1 eth0)
diag "vm1: static $V1S, SLAAC $V1A"

BEFORE=$(eth0_snapshot vm1 -6)

ping6_ok() { timeout 15 ip netns exec "$(topo_ns "$1")" ping -6 -n -c 2 -i 0.2 -W 2 "$2" >/dev/null; }
# tcp6_ok FROM_VM TO_VM ADDR PORT: a line over TCP arrives.
tcp6_ok() {
    local from=$1 to=$2 addr=$3 port=$4 out srv i
    out=$TOPO_DIR/tcp6.$port.out
    rm -f "$out"
    sandbox_bg "$TOPO_DIR/tcp6.$port.log" ip netns exec "$(topo_ns "$to")" \
        timeout 10 socat -u "TCP6-LISTEN:$port,bind=[$addr],reuseaddr" "OPEN:$out,creat,trunc"
    srv=$SANDBOX_LAST_PID
    for ((i = 0; i < 25; i++)); do
        echo "hello over $addr" | timeout 5 ip netns exec "$(topo_ns "$from")" \
            socat -u - "TCP6:[$addr]:$port" 2>/dev/null && break
        sleep 0.2
    done
    sandbox_wait_exit "$srv" 10 || true
    [[ "$(cat "$out" 2>/dev/null)" == "hello over $addr" ]]
}
traffic() {
    local label=$1
    check "$label: ping vm2 -> vm1 static $V1S" ping6_ok vm2 "$V1S"
    check "$label: ping vm2 -> vm1 SLAAC $V1A" ping6_ok vm2 "$V1A"
    check "$label: ping vm1 -> off-link $OFFLINK (RA default route)" ping6_ok vm1 "$OFFLINK"
    check "$label: TCP vm2 -> vm1 static" tcp6_ok vm2 vm1 "$V1S" 7481
    check "$label: TCP vm2 -> vm1 SLAAC" tcp6_ok vm2 vm1 "$V1A" 7482
    check "$label: TCP vm1 -> vm2" tcp6_ok vm1 vm2 "$V2S" 7483
}
traffic "no agent"

start_agents vm1
on_bridge() { # on_bridge ADDR: ADDR is on nsx-vtep0.0 (and not on eth0)
    in_inst vm1 ip -j -6 addr show dev nsx-vtep0.0 | jq -e --arg a "$1" 'any(.[0].addr_info[]; .local == $a)' >/dev/null &&
        ! in_inst vm1 ip -j -6 addr show dev eth0 | jq -e --arg a "$1" 'any(.[0].addr_info[]; .local == $a)' >/dev/null
}
check "static $V1S moved to nsx-vtep0.0" on_bridge "$V1S"
check "SLAAC $V1A moved to nsx-vtep0.0" on_bridge "$V1A"
got=$(in_inst vm1 ip -j -6 addr show dev eth0 | jq -r '[.[0].addr_info[] | select(.scope != "link")] | length')
check_eq "eth0 keeps no IPv6 address but its link-local one" 0 "$got"
check "static route fd00:200::/64 via fd00:99:4::254 metric 50 on nsx-vtep0.0" bash -c \
    "ip netns exec $(topo_ns vm1) ip -j -6 route show | jq -e 'any(.[]; .dst == \"fd00:200::/64\" and .dev == \"nsx-vtep0.0\" and .gateway == \"fd00:99:4::254\" and .metric == 50)'"
for key in accept_ra autoconf use_tempaddr addr_gen_mode; do
    check_eq "nsx-vtep0.0 $key = eth0's" \
        "$(in_inst vm1 cat "/proc/sys/net/ipv6/conf/eth0/$key")" \
        "$(in_inst vm1 cat "/proc/sys/net/ipv6/conf/nsx-vtep0.0/$key")"
done
check "the kernel's own RA default route (metric 1024) appears on nsx-vtep0.0" wait_for 15 ra_default vm1 nsx-vtep0.0 1024
check "no RA default route left on eth0" bash -c "! ip netns exec $(topo_ns vm1) ip -j -6 route show default dev eth0 | jq -e 'length > 0'"
check "state file records the IPv6 addresses and routes" \
    jq -e '(.nic.addrs6 | length) == 2 and (.nic.routes6 | length) >= 2' "$TOPO_DIR/vm1/state/host-state.json"
lft() { in_inst vm1 ip -j -6 addr show dev nsx-vtep0.0 | jq -r --arg a "$V1A" '.[0].addr_info[] | select(.local == $a) | .valid_life_time'; }
# Lifetimes count down between RAs and jump back up at each one.
LFT_MIN=$(lft)
refreshed() {
    local now
    now=$(lft)
    [[ "$now" -gt "$LFT_MIN" ]] && return 0
    LFT_MIN=$now
    return 1
}
check "an RA on nsx-vtep0.0 refreshes the SLAAC lifetime (valid ${LFT_MIN}s, counting down)" wait_for 40 refreshed
traffic "agent running"

# --- a stream and a ping across a SIGKILL + restart and a SIGTERM + start.
rm -f "$TOPO_DIR/stream.out"
sandbox_bg "$TOPO_DIR/stream.srv.log" ip netns exec "$(topo_ns vm2)" \
    timeout 90 socat -u "TCP6-LISTEN:7484,bind=[$V2S],reuseaddr" "OPEN:$TOPO_DIR/stream.out,creat,trunc"
srv=$SANDBOX_LAST_PID
LINES=300
listening() { ip netns exec "$(topo_ns vm2)" ss -Hltn 'sport = :7484' | grep -q .; }
wait_for 10 listening || bail "stream receiver listens on [$V2S]:7484"
# got_lines N: at least N lines of the stream arrived.
got_lines() { [[ "$(grep -c '^line-' "$TOPO_DIR/stream.out" 2>/dev/null || true)" -ge "$1" ]]; }
sandbox_bg "$TOPO_DIR/stream.cli.log" ip netns exec "$(topo_ns vm1)" timeout 80 bash -c \
    "for ((i = 1; i <= $LINES; i++)); do echo line-\$i; sleep 0.1; done | socat -u - 'TCP6:[$V2S]:7484,bind=[$V1A]'"
cli=$SANDBOX_LAST_PID
sandbox_bg "$TOPO_DIR/ping.log" ip netns exec "$(topo_ns vm2)" ping -6 -n -i 0.1 -c 350 -w 70 -W 1 "$V1S"
png=$SANDBOX_LAST_PID
wait_for 15 got_lines 20 || bail "the stream flows before the restarts"
agent_kill vm1
if agent_start vm1 2>"$TOPO_DIR/restart1.err"; then ok "agent restarts after SIGKILL"; else not_ok "agent restarts after SIGKILL" "$(cat "$TOPO_DIR/restart1.err")"; fi
check "after SIGKILL + restart: SLAAC address still on nsx-vtep0.0" on_bridge "$V1A"
n=$(grep -c '^line-' "$TOPO_DIR/stream.out" || true)
check "the stream flows after the SIGKILL + restart" wait_for 15 got_lines $((n + 20))
rc=0
agent_stop vm1 || rc=$?
check_eq "agent exits 0 on SIGTERM (mid-stream)" 0 "$rc"
check "after SIGTERM: SLAAC address back on eth0" bash -c \
    "ip netns exec $(topo_ns vm1) ip -j -6 addr show dev eth0 | jq -e --arg a '$V1A' 'any(.[0].addr_info[]; .local == \$a)'"
if agent_start vm1 2>"$TOPO_DIR/restart2.err"; then ok "agent starts again"; else not_ok "agent starts again" "$(cat "$TOPO_DIR/restart2.err")"; fi
check "after the new start: SLAAC address on nsx-vtep0.0 again" on_bridge "$V1A"
sandbox_wait_exit "$cli" 80 || true
sandbox_wait_exit "$srv" 15 || true
sandbox_wait_exit "$png" 80 || true
got=$(grep -c '^line-' "$TOPO_DIR/stream.out" 2>/dev/null || true)
check_eq "TCP stream from vm1's SLAAC address: all $LINES lines arrived" "$LINES" "$got"
check "TCP stream: lines in order" bash -c "diff <(seq -f 'line-%g' 1 $LINES) '$TOPO_DIR/stream.out' >/dev/null"
tx=$(grep -oE '^[0-9]+ packets transmitted' "$TOPO_DIR/ping.log" | cut -d' ' -f1 || true)
rx=$(grep -oE '[0-9]+ received' "$TOPO_DIR/ping.log" | cut -d' ' -f1 || true)
diag "ping to $V1S across the restarts: ${tx:-?} sent, ${rx:-?} answered"
if [[ -n "$tx" ]]; then
    check "ping across the restarts: the last 20 echoes answered" \
        [ "$(grep -cE "icmp_seq=($(seq -s '|' $((tx - 19)) "$tx")) ttl" "$TOPO_DIR/ping.log")" -eq 20 ]
else
    not_ok "ping across the restarts finished" "$(tail -n 5 "$TOPO_DIR/ping.log")"
fi

# --- SIGTERM gives eth0 its IPv6 back.
rc=0
agent_stop vm1 || rc=$?
check_eq "agent exits 0 on SIGTERM" 0 "$rc"
check "eth0 has the kernel's own RA default route (metric 1024) again" wait_for 10 ra_default vm1 eth0 1024
check "no stand-in RA route (metric 1025) left on eth0" bash -c "! ip netns exec $(topo_ns vm1) ip -j -6 route show default | jq -e 'any(.[]; .metric == 1025)'"
check_same "eth0's IPv6 addresses and the IPv6 routes are as before (lifetimes aside)" \
    "$BEFORE" "$(eth0_snapshot vm1 -6)"
traffic "after SIGTERM"
tap_done
