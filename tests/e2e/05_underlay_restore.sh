#!/usr/bin/env bash
# tests/e2e/05_underlay_restore.sh -- e2e test 5: the instances' ordinary
# underlay traffic (ping and TCP between their underlay IPs, and from the
# underlay router) keeps working while the agents run, and after SIGTERM each
# agent exits 0 and leaves the NIC exactly as it found it: `ip -j addr show
# eth0`, `ip -j link`, `ip -j route show table all` and the namespace list are
# equal to what they were before the agent started.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 05 "$@"

seed_topology t05 1500 2
topo_build
topo_wait_underlay || bail "underlay up"

snapshot() {
    local vm=$1
    in_inst "$vm" ip -j addr show dev eth0 | jq -S .
    in_inst "$vm" ip -j link | jq -S 'sort_by(.ifname)'
    in_inst "$vm" ip -j route show table all | jq -S 'sort_by(tostring)'
    in_inst "$vm" ip -j -6 route show table all | jq -S 'sort_by(tostring)'
    ip netns list | sort
}
declare -A BEFORE AFTER
BEFORE[vm1]=$(snapshot vm1)
BEFORE[vm2]=$(snapshot vm2)

# underlay_traffic LABEL: ping both ways, from the underlay router, and TCP.
underlay_traffic() {
    local label=$1 srv out
    check "$label: underlay ping vm1 -> vm2 (10.99.3.12)" in_inst vm1 ping -n -c 3 -i 0.2 -W 2 10.99.3.12
    check "$label: underlay ping vm2 -> vm1 (10.99.3.11)" in_inst vm2 ping -n -c 3 -i 0.2 -W 2 10.99.3.11
    check "$label: ping from the underlay router to vm1's underlay IP" in_ul ping -n -c 2 -i 0.2 -W 2 10.99.3.11
    check "$label: underlay ping of a large DF packet (1472 bytes)" in_inst vm1 ping -n -c 2 -i 0.2 -W 2 -s 1472 -M "do" 10.99.3.12
    head -c 3000000 /dev/urandom >"$TOPO_DIR/u.in"
    rm -f "$TOPO_DIR/u.out"
    sandbox_bg "$TOPO_DIR/u.srv.log" ip netns exec "$(topo_ns vm2)" \
        timeout 20 socat -u TCP-LISTEN:7005,bind=10.99.3.12,reuseaddr "OPEN:$TOPO_DIR/u.out,creat,trunc"
    srv=$SANDBOX_LAST_PID
    for ((i = 0; i < 20; i++)); do
        in_inst vm1 timeout 15 socat -u "OPEN:$TOPO_DIR/u.in" TCP:10.99.3.12:7005 2>/dev/null && break
        sleep 0.2
    done
    sandbox_wait_exit "$srv" 15 || true
    check "$label: 3 MB over TCP between the underlay IPs arrives intact" cmp "$TOPO_DIR/u.in" "$TOPO_DIR/u.out"
}

underlay_traffic "without agents"
start_agents vm1 vm2
underlay_traffic "agents running"
for vm in vm1 vm2; do
    got=$(in_inst "$vm" ip -j addr show dev eth0 | jq -r '[.[0].addr_info[] | select(.family=="inet")] | length')
    check_eq "$vm: eth0 holds no IPv4 address while the agent runs" 0 "$got"
    got=$(in_inst "$vm" ip -j route show default | jq -r '.[0] | "\(.gateway) \(.dev)"')
    check_eq "$vm: default route moved to nsx-vtep0.0" "10.99.3.1 nsx-vtep0.0" "$got"
done
check "overlay works at the same time (ping vm1 -> vm2 routed)" overlay_wait_ping vm1 192.168.99.9

for vm in vm1 vm2; do
    rc=0
    agent_stop "$vm" || rc=$?
    check_eq "$vm: agent exits 0 on SIGTERM" 0 "$rc"
done
AFTER[vm1]=$(snapshot vm1)
AFTER[vm2]=$(snapshot vm2)
for vm in vm1 vm2; do
    if [[ "${BEFORE[$vm]}" == "${AFTER[$vm]}" ]]; then
        ok "$vm: eth0 addresses, links, routes and namespace list restored exactly"
    else
        not_ok "$vm: eth0 addresses, links, routes and namespace list restored exactly" \
            "$(diff <(printf '%s\n' "${BEFORE[$vm]}") <(printf '%s\n' "${AFTER[$vm]}") | head -n 40)"
    fi
done
underlay_traffic "after SIGTERM"
tap_done
