#!/usr/bin/env bash
# tests/e2e/47_nic_dhcp.sh -- e2e test 47: the NIC's DHCP client follows its
# address. dnsmasq on the underlay serves vm1's NIC (its MAC -> 10.99.3.11,
# lease 2 min, renewal after 10 s, rebinding after 20 s); vm1's eth0 gets its
# address from the real client, once dhclient (isc-dhcp-client), once
# dhcpcd. For each:
#   * while the agent runs, the client runs for nsx-vtep0.0 (none for
#     eth0), recorded in the host state file; its renewals are answered
#     (dnsmasq's ACKs go on) and keep the address and the default route on
#     nsx-vtep0.0, the address with the lease's finite lifetime; underlay
#     and overlay pings work;
#   * after SIGTERM the client runs for eth0 again (none for the bridge),
#     renews there, and eth0's addresses (lifetimes aside) and the routes
#     are as before;
#   * after SIGKILL, `nsx-agent cleanup` does the same from the state file.
# Then dhcpcd in manager mode (`dhcpcd -b -4 --nodev`, one process for
# every interface), which the agent tells through its control socket: while
# the agent runs its renewals come from nsx-vtep0.0 (the address there gets
# the lease's lifetime) and eth0 has no IPv4 address; after SIGTERM, and
# after SIGKILL + cleanup, eth0 has the lease again, renews, and its
# addresses and routes are as before; the manager is the same process
# throughout.
# Last, in gateway mode, dnsmasq leases vm1 a new address: the agent
# follows (status, state file), the gateway records it and gives vm2 the
# new tunnel endpoint, the overlay pings both ways, and SIGTERM gives eth0
# the new address with dhclient for it.
# The clients run with their real scripts and configuration; the sandbox
# gets its own /etc/resolv.conf, lease and run directories and host name.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 47 "$@"
# The clients' scripts may set the host name: a UTS namespace of our own;
# and a mount namespace, so the private files' binds end with this test.
if [[ -z "${NSX_E2E47_UTS:-}" ]]; then
    exec env NSX_E2E47_UTS=1 unshare --uts --mount --propagation unchanged bash "$(readlink -f "${BASH_SOURCE[0]}")" "$@"
fi
for t in dnsmasq dhclient dhcpcd; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs dnsmasq-base, isc-dhcp-client, dhcpcd-base)"
done

dhcp_client_private || bail "private files for the DHCP clients"

topo_new t47 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"
NS1=$(topo_ns vm1)
MAC1=$(topo_mac vm1)
IP1=$(topo_underlay_ip vm1)
CFG1=$(topo_config_path vm1)
STATE1=$TOPO_DIR/vm1/state/host-state.json

underlay_dnsmasq "$MAC1" "$IP1"

# clients KIND IF: pids of the KIND clients in vm1's namespace managing IF.
clients() {
    local kind=$1 ifname=$2 ns p
    ns=$(stat -L -c %i "/run/netns/$NS1")
    for p in $(pgrep -x "$kind" || true); do
        [[ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" == "$ns" ]] || continue
        # An argument (or a word of dhcpcd's title) that is the name.
        tr '\0 ' '\n\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qx -- "$ifname" && echo "$p"
    done
    return 0
}
runs_for() { [[ -n "$(clients "$1" "$2")" ]]; }
none_for() { [[ -z "$(clients "$1" "$2")" ]]; }
# addr_on DEV: vm1's lease address on DEV, and its valid lifetime.
addr_lft() {
    in_inst vm1 ip -j -4 addr show dev "$1" |
        jq -r --arg a "$IP1" '[.[0].addr_info[]? | select(.local == $a)][0].valid_life_time // empty'
}
has_addr() { [[ -n "$(addr_lft "$1")" ]]; }
# leased DEV: the address is on DEV with a finite lifetime at most the lease's.
leased() { local l; l=$(addr_lft "$1"); [[ -n "$l" && "$l" -le 120 ]]; }
has_default() {
    in_inst vm1 ip -j -4 route show default | jq -e --arg d "$1" 'any(.[]; .dev == $d and .gateway == "10.99.3.1")' >/dev/null
}
stop_clients() {
    local p
    for p in $(clients "$1" eth0) $(clients "$1" nsx-vtep0.0); do kill -TERM "$p" 2>/dev/null || true; done
    wait_for 5 none_for "$1" eth0 && wait_for 5 none_for "$1" nsx-vtep0.0
}
cleanup_cmd() {
    timeout 60 nsenter --net="/run/netns/$NS1" unshare --mount --propagation unchanged \
        sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
        "$NSX_AGENT" cleanup --config "$CFG1"
}

# vm1's eth0 comes from DHCP: no static address.
in_inst vm1 ip addr flush dev eth0
in_inst vm1 ip route flush dev eth0 2>/dev/null || true
start_agents vm2

round() {
    local kind=$1 n rc out
    shift
    diag "--- $kind: $*"
    in_inst vm1 "$@" >"$TOPO_DIR/$kind.start.log" 2>&1 || true
    wait_for 30 has_addr eth0 || bail "$kind: eth0 gets $IP1 from dnsmasq" "$(tail -n 5 "$TOPO_DIR/$kind.start.log")"
    wait_for 10 has_default eth0 || bail "$kind: default route via 10.99.3.1 on eth0"
    wait_for 10 runs_for "$kind" eth0 || bail "$kind runs for eth0"
    local before
    before=$(eth0_snapshot vm1 -4 dynamic)

    start_agents vm1
    check "$kind: the agent runs it for nsx-vtep0.0" wait_for 15 runs_for "$kind" nsx-vtep0.0
    check "$kind: none runs for eth0" none_for "$kind" eth0
    check "$kind: the state file records it" \
        jq -e --arg k "$kind" '.dhcp | length == 1 and .[0].client == $k and (.[0].bridge_args | index("nsx-vtep0.0"))' "$STATE1"
    n=$(dhcp_acks)
    check "$kind: a renewal from nsx-vtep0.0 is answered" wait_for 30 dhcp_renewed "$n"
    n=$(dhcp_acks)
    check "$kind: and another" wait_for 30 dhcp_renewed "$n"
    check "$kind: after the renewals $IP1 is on nsx-vtep0.0 with the lease's lifetime" leased nsx-vtep0.0
    check "$kind: no IPv4 address on eth0" bash -c "[ -z \"\$(ip netns exec $NS1 ip -4 -o addr show dev eth0)\" ]"
    check "$kind: the default route stays on nsx-vtep0.0" has_default nsx-vtep0.0
    check "$kind: underlay ping vm2 -> vm1" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"
    check "$kind: overlay ping vm1 -> vm2" overlay_wait_ping vm1 192.168.100.4

    rc=0
    agent_stop vm1 || rc=$?
    check_eq "$kind: agent exits 0 on SIGTERM" 0 "$rc"
    check "$kind: after SIGTERM it runs for eth0 again" wait_for 15 runs_for "$kind" eth0
    check "$kind: after SIGTERM none runs for nsx-vtep0.0" none_for "$kind" nsx-vtep0.0
    n=$(dhcp_acks)
    check "$kind: after SIGTERM a renewal from eth0 is answered" wait_for 30 dhcp_renewed "$n"
    check "$kind: after SIGTERM $IP1 is on eth0 with the lease's lifetime" wait_for 5 leased eth0
    check_same "$kind: eth0's addresses (lifetimes aside) and the routes are as before" \
        "$before" "$(eth0_snapshot vm1 -4 dynamic)"
    check "$kind: underlay ping vm2 -> vm1 after SIGTERM" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"

    # SIGKILL: the state file alone gives the client back.
    start_agents vm1
    check "$kind: (again) it runs for nsx-vtep0.0" wait_for 15 runs_for "$kind" nsx-vtep0.0
    agent_kill vm1
    out=$(cleanup_cmd 2>&1) && rc=0 || rc=$?
    check_eq "$kind: nsx-agent cleanup after SIGKILL exits 0" 0 "$rc"
    [[ $rc -eq 0 ]] || diag "$out"
    check "$kind: after cleanup it runs for eth0" wait_for 15 runs_for "$kind" eth0
    check "$kind: after cleanup none runs for nsx-vtep0.0" none_for "$kind" nsx-vtep0.0
    check "$kind: after cleanup $IP1 is on eth0" has_addr eth0
    n=$(dhcp_acks)
    check "$kind: after cleanup a renewal from eth0 is answered" wait_for 30 dhcp_renewed "$n"

    stop_clients "$kind" || bail "$kind stops"
    in_inst vm1 ip addr flush dev eth0
}

round dhclient dhclient -4 -v -pf "$PRIV/dhclient.eth0.pid" -lf "$PRIV/lib-dhcp/dhclient.eth0.leases" eth0
round dhcpcd dhcpcd -4 eth0

# --- dhcpcd in manager mode (Debian's and Ubuntu's dhcpcd.service run
# `dhcpcd -b -q`): one process for every interface, which the agent tells
# through its control socket and never stops. `--nodev`: no udevd runs in
# the sandbox, and dhcpcd's udev module would wait for it to initialise
# every interface. The bridge is ignored by a manager unless told.
# manager_pid: the dhcpcd manager in vm1's namespace.
manager_pid() {
    local ns p
    ns=$(stat -L -c %i "/run/netns/$NS1")
    for p in $(pgrep -x dhcpcd || true); do
        [[ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" == "$ns" ]] || continue
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '\[manager\]' && echo "$p"
    done
    return 0
}
peer_v4() { [[ -n "$(ip netns exec "$NS1" ip -4 -o addr show dev nsx-eth0-peer)" ]]; }
no_peer_v4_for() { ! wait_for "$1" peer_v4; }
no_addr_eth0() { [[ -z "$(ip netns exec "$NS1" ip -4 -o addr show dev eth0)" ]]; }
round_manager() {
    local kind=dhcpcd-manager n rc out mgr before
    diag "--- $kind: dhcpcd -b -4 --nodev"
    in_inst vm1 dhcpcd -b -4 --nodev >"$TOPO_DIR/$kind.start.log" 2>&1 || true
    wait_for 30 leased eth0 || bail "$kind: eth0 gets $IP1 from dnsmasq" "$(tail -n 5 "$TOPO_DIR/$kind.start.log")"
    wait_for 10 has_default eth0 || bail "$kind: default route via 10.99.3.1 on eth0"
    mgr=$(manager_pid)
    [[ "$mgr" =~ ^[0-9]+$ ]] || bail "$kind: one dhcpcd manager runs" "$mgr"
    before=$(eth0_snapshot vm1 -4 dynamic)

    start_agents vm1
    check "$kind: the state file records the manager" \
        jq -e '.dhcpcd_manager.socket == "/run/dhcpcd/sock" and .dhcpcd_manager.family == "-4" and ((.dhcp // []) | length == 0)' "$STATE1"
    n=$(dhcp_acks)
    check "$kind: a renewal from nsx-vtep0.0 is answered" wait_for 30 dhcp_renewed "$n"
    n=$(dhcp_acks)
    check "$kind: and another" wait_for 30 dhcp_renewed "$n"
    # The moved address lives forever until dhcpcd binds it on the bridge.
    check "$kind: after the renewals $IP1 is on nsx-vtep0.0 with the lease's lifetime" leased nsx-vtep0.0
    check "$kind: no IPv4 address on eth0" no_addr_eth0
    check "$kind: the default route stays on nsx-vtep0.0" has_default nsx-vtep0.0
    # Nor does the manager run DHCP, then IPv4LL, on the agent's veth
    # (untold, its address came 12 s after the agent started).
    check "$kind: no IPv4 address on nsx-eth0-peer (watched for 15 s)" no_peer_v4_for 15
    check "$kind: no 169.254.0.0/16 route" \
        bash -c "! ip netns exec $NS1 ip -4 route show table all | grep -q '^169\.254\.'"
    check "$kind: underlay ping vm2 -> vm1" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"
    check "$kind: overlay ping vm1 -> vm2" overlay_wait_ping vm1 192.168.100.4
    check_eq "$kind: the manager is the same process" "$mgr" "$(manager_pid)"

    rc=0
    agent_stop vm1 || rc=$?
    check_eq "$kind: agent exits 0 on SIGTERM" 0 "$rc"
    # Restored without lifetime: dhcpcd's bind on eth0 sets the lease's.
    check "$kind: after SIGTERM $IP1 is on eth0 with the lease's lifetime" wait_for 30 leased eth0
    n=$(dhcp_acks)
    check "$kind: after SIGTERM a renewal from eth0 is answered" wait_for 30 dhcp_renewed "$n"
    check "$kind: after SIGTERM $IP1 is still on eth0 with the lease's lifetime" leased eth0
    check_same "$kind: eth0's addresses (lifetimes aside) and the routes are as before" \
        "$before" "$(eth0_snapshot vm1 -4 dynamic)"
    check "$kind: underlay ping vm2 -> vm1 after SIGTERM" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"
    check_eq "$kind: after SIGTERM the manager is the same process" "$mgr" "$(manager_pid)"

    # SIGKILL: the state file alone gives the NIC back to the manager.
    start_agents vm1
    check "$kind: (again) the state file records the manager" jq -e '.dhcpcd_manager != null' "$STATE1"
    check "$kind: (again) the manager binds $IP1 on nsx-vtep0.0" wait_for 30 leased nsx-vtep0.0
    agent_kill vm1
    out=$(cleanup_cmd 2>&1) && rc=0 || rc=$?
    check_eq "$kind: nsx-agent cleanup after SIGKILL exits 0" 0 "$rc"
    [[ $rc -eq 0 ]] || diag "$out"
    check "$kind: after cleanup $IP1 is on eth0 with the lease's lifetime" wait_for 30 leased eth0
    n=$(dhcp_acks)
    check "$kind: after cleanup a renewal from eth0 is answered" wait_for 30 dhcp_renewed "$n"
    check "$kind: after cleanup $IP1 is still on eth0 with the lease's lifetime" leased eth0
    check_same "$kind: after cleanup eth0's addresses (lifetimes aside) and the routes are as before" \
        "$before" "$(eth0_snapshot vm1 -4 dynamic)"
    check_eq "$kind: after cleanup the manager is the same process" "$mgr" "$(manager_pid)"
    if [[ $TAP_FAILED -gt 0 ]]; then
        diag "vm1:" "$(in_inst vm1 ip -br addr; in_inst vm1 ip route)"
        diag "vm1's agent log:" "$(grep -i dhcp "$(agent_log vm1)" | tail -n 20)"
    fi

    kill -TERM "$mgr" 2>/dev/null || true
    wait_for 10 bash -c "! kill -0 $mgr 2>/dev/null" || bail "$kind: the manager stops"
    in_inst vm1 ip addr flush dev eth0
}
round_manager

# --- a lease that changes the address, in gateway mode: the agent follows
# (its status, the state file), tells the gateway (a new Hello), which gives
# vm2 the new tunnel endpoint; the overlay works both ways again.
agent_stop vm2 || true
sandbox_kill "$DNSMASQ" 5
topo_destroy
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
gw_init_bin || bail "nsx-gateway binary"
gw_topology t47g 1500 vm1 vm2
topo_wait_underlay || bail "underlay up (gateway topology)"
NS1=$(topo_ns vm1)
STATE1=$TOPO_DIR/vm1/state/host-state.json
NEW1=10.99.3.21
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
gw_state_sample "$TOPO_DIR/state.yaml"
gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/gw-apply.log" 2>&1 || bail "nsx-gateway apply" "$(cat "$TOPO_DIR/gw-apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
# dnsmasq_for ADDR: (re)start dnsmasq leasing ADDR to vm1, forgetting old leases.
dnsmasq_for() {
    [[ -n "${DNSMASQ:-}" ]] && sandbox_kill "$DNSMASQ" 5
    rm -f "$TOPO_DIR/dnsmasq.leases"
    underlay_dnsmasq "$MAC1" "$1" --dhcp-authoritative
    wait_for 10 grep -qs 'DHCP, IP range' "$DMLOG"
}
DNSMASQ=""
dnsmasq_for "$IP1" || bail "dnsmasq starts"
in_inst vm1 ip addr flush dev eth0
in_inst vm1 ip route flush dev eth0 2>/dev/null || true
in_inst vm1 dhclient -4 -v -pf "$PRIV/dhclient.eth0.pid" -lf "$PRIV/lib-dhcp/dhclient.eth0.leases" eth0 \
    >"$TOPO_DIR/dhclient.start.log" 2>&1 || true
wait_for 30 has_addr eth0 || bail "gateway mode: eth0 gets $IP1" "$(tail -n 5 "$TOPO_DIR/dhclient.start.log")"
for vm in vm1 vm2; do
    gw_agent_config "$vm" web
    gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" || bail "agent $vm enrolls and starts" "$(cat "$TOPO_DIR/$vm/start.err")"
done
for vm in vm1 vm2; do
    gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm: gateway connection ESTABLISHED"
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
done
OV1=$(gw_instance vm1 '.ip // ""')
OV2=$(gw_instance vm2 '.ip // ""')
[[ -n "$OV1" && -n "$OV2" ]] || bail "both instances placed" "vm1=$OV1 vm2=$OV2"
check "gateway mode: dhclient runs for nsx-vtep0.0" wait_for 15 runs_for dhclient nsx-vtep0.0
check "gateway mode: overlay ping vm2 -> vm1 ($OV1)" overlay_wait_ping vm2 "$OV1"

rm -f "$DMLOG"
dnsmasq_for "$NEW1" || bail "dnsmasq restarts with $NEW1 for vm1"
status_ip() { [[ "$(gw_status vm1 .underlay_ip)" == "$NEW1" ]]; }
check "after the next renewal (NAK, new lease) the agent's underlay address is $NEW1" wait_for 60 status_ip
check "the old address is gone from nsx-vtep0.0, the new one there" bash -c \
    "ip netns exec $NS1 ip -j -4 addr show dev nsx-vtep0.0 | jq -e '[.[0].addr_info[].local] == [\"$NEW1\"]'"
check "the state file records $NEW1 for the NIC" jq -e --arg a "$NEW1" '.nic.addrs[0].ip == $a' "$STATE1"
gw_ip() { [[ "$(gw_instance vm1 '.underlay_ip')" == "$NEW1" ]]; }
check "the gateway records vm1's new underlay address" wait_for 15 gw_ip
peer_tep() { agent_ctl vm2 config | grep -q "\"$NEW1\""; }
check "vm2's running config has vm1's new tunnel endpoint" wait_for 15 peer_tep
check "gateway connection of vm1 ESTABLISHED again" gw_wait_state vm1 ESTABLISHED 15
check "overlay ping vm2 -> vm1 after the move" overlay_wait_ping vm2 "$OV1"
check "overlay ping vm1 -> vm2 after the move" overlay_wait_ping vm1 "$OV2"
if [[ $TAP_FAILED -gt 0 ]]; then
    diag "vm1:" "$(in_inst vm1 ip -br addr; in_inst vm1 ip route; in_inst vm1 ip neigh; in_inst vm1 ip -d link show eth0; in_inst vm1 bridge fdb show br nsx-vtep0.0)"
    diag "dnsmasq:" "$(tail -n 30 "$DMLOG")"
    diag "vm1's agent log:" "$(tail -n 25 "$(agent_log vm1)")"
    diag "vm1 counters:" "$(agent_ctl vm1 counters 2>&1 | head -c 3000)"
    diag "vm2 counters:" "$(agent_ctl vm2 counters 2>&1 | head -c 3000)"
fi
check "underlay ping vm2 -> $NEW1" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$NEW1"
rc=0
agent_stop vm1 || rc=$?
check_eq "agent exits 0 on SIGTERM after the move" 0 "$rc"
new_on_eth0() {
    in_inst vm1 ip -j -4 addr show dev eth0 | jq -e --arg a "$NEW1" 'any(.[0].addr_info[]; .local == $a)' >/dev/null
}
# (dhclient for eth0 may first ask for the stale eth0 lease in its lease
# file, get a NAK and flush, then bind the new address again.)
check "eth0 gets $NEW1 back" wait_for 30 new_on_eth0
check "dhclient runs for eth0 again" wait_for 15 runs_for dhclient eth0
stop_clients dhclient || true
tap_done
