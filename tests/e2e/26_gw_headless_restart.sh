#!/usr/bin/env bash
# tests/e2e/26_gw_headless_restart.sh -- e2e test 26 (issue 4, test 6): with
# the gateway down, vm1's agent is stopped (SIGTERM: host restored, overlay
# namespace gone) and started again. It must apply its persisted config
# (state_dir/desired.json) before any gateway answers: the overlay comes back
# with the same IP and pings work while the agent's gateway status is not
# ESTABLISHED. The same after a SIGKILL of the agent. Still headless, a
# DHCP client on vm1's port gets its address from the agent. When the
# gateway returns, vm1 reconnects at the current version.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 26 "$@"

gw_setup t26 1500 vm1:web vm2:app vm3:web
overlay_wait_ping vm2 "${GW_IP_OF[vm1]}" || bail "overlay ping vm2 -> vm1 before the test"
check "vm1 persisted its applied config (desired.json)" test -s "$TOPO_DIR/vm1/state/desired.json"
v1=$(gw_status vm1 .gateway.applied_version)

gwpid=${GW_PID:-}
gw_kill
if [[ -n "$gwpid" ]] && ! sandbox_alive "$gwpid" && ! gw_port_open 8443 && ! gw_port_open 5555; then
    ok "gateway SIGKILLed (pid $gwpid gone, 8443 and 5555 closed)"
else
    bail "gateway SIGKILLed" "pid '${gwpid}' alive: $(sandbox_alive "${gwpid:-0}" && echo yes || echo no)"
fi
gw_wait_not_state vm1 ESTABLISHED 5 || true

# restart_headless HOW: stop vm1's agent (SIGTERM or SIGKILL) and start it again.
restart_headless() {
    local how=$1 rc=0 t0 t1 st ms pid
    if [[ $how == SIGTERM ]]; then
        agent_stop vm1 || rc=$?
        check_eq "vm1's agent exits 0 on SIGTERM" 0 "$rc"
        check "SIGTERM removed vm1's overlay namespace" bash -c "! ip netns list | grep -qw $(topo_root vm1)"
    else
        pid=$(agent_pid vm1)
        agent_kill vm1
        if [[ -n "$pid" ]] && ! sandbox_alive "$pid" && ! agent_ctl vm1 status >/dev/null 2>&1; then
            ok "vm1's agent SIGKILLed (pid $pid gone, its API does not answer)"
        else
            not_ok "vm1's agent SIGKILLed" "pid '$pid' alive: $(sandbox_alive "${pid:-0}" && echo yes || echo no)"
            return
        fi
    fi
    t0=$(date +%s%N)
    if gw_agent_start vm1 2>"$TOPO_DIR/vm1/restart.err"; then
        t1=$(date +%s%N)
        ok "vm1's agent restarts ($how) with the gateway down and answers status ($(((t1 - t0) / 1000000)) ms)"
    else
        not_ok "vm1's agent restarts ($how) with the gateway down and answers status" "$(cat "$TOPO_DIR/vm1/restart.err")"
        return
    fi
    check "log: the persisted config was applied before the gateway answered" \
        grep -q 'persisted config' "$(agent_log vm1)"
    agent_wait_overlay vm1 || true
    got=$(in_overlay vm1 ip -j addr show dev nsx-eth0 2>/dev/null | jq -r '[.[0].addr_info[] | select(.family=="inet") | .local] | join(",")')
    check_eq "vm1's nsx-eth0 has its overlay IP again" "${GW_IP_OF[vm1]}" "$got"
    if ms=$(gw_wait_ping_ms vm2 "${GW_IP_OF[vm1]}" 10); then
        ok "overlay ping vm2 -> vm1 answered again ${ms} ms after the API came up"
    else
        not_ok "overlay ping vm2 -> vm1 after the headless restart"
    fi
    check "overlay ping vm1 -> vm3 (same switch)" overlay_wait_ping vm1 "${GW_IP_OF[vm3]}"
    out=$(overlay_ping vm1 "${GW_IP_OF[vm2]}" -c 5 -i 0.2 -W 2 2>&1 || true)
    check "overlay ping vm1 -> vm2 (routed): 5 of 5" grep -q ' 5 received' <<<"$out"
    st=$(gw_status vm1 '"\(.gateway.state) \(.gateway.applied_version) \(.config_version)"')
    check "vm1's gateway status is not ESTABLISHED meanwhile, version $v1 ($st)" \
        bash -c "[[ '$st' != ESTABLISHED* && '$st' == *' $v1 '* ]]"
    diag "vm1 gateway status: $(gw_status vm1 '.gateway | tojson')"
    # The local API reports the desired state the datapath really runs.
    cfg_ip=$(agent_ctl vm1 config 2>/dev/null | jq -r '.desired.port.ip // "none"')
    check_eq "vm1's 'config' shows the persisted port address" "${GW_IP_OF[vm1]}" "$cfg_ip"
}
restart_headless SIGTERM
restart_headless SIGKILL

# DHCP with the gateway down: vm1's agent still answers its own port
# (busybox udhcpc, Debian's default.script; its resolv.conf stays here).
echo "# e2e 26" >"$SANDBOX_TMP/resolv.conf"
in_overlay vm1 ip -4 addr flush dev nsx-eth0
in_overlay vm1 ip -4 route flush dev nsx-eth0 2>/dev/null || true
# (its own mount namespace: the bind ends with it)
unshare --mount --propagation unchanged sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' \
    sh "$SANDBOX_TMP/resolv.conf" ip netns exec "$(topo_root vm1)" timeout 30 udhcpc -i nsx-eth0 -f -q -n -t 5 -T 2 \
    >"$TOPO_DIR/udhcpc.log" 2>&1 || diag "udhcpc:" "$(tail -n 10 "$TOPO_DIR/udhcpc.log")"
got=$(in_overlay vm1 ip -j -4 addr show dev nsx-eth0 | jq -r '[.[0].addr_info[]?.local] | join(",")')
check_eq "gateway down: udhcpc on vm1's port gets its overlay IP from the agent" "${GW_IP_OF[vm1]}" "$got"
check "gateway down: after DHCP, overlay ping vm1 -> vm2 (routed via the DHCP default route)" \
    overlay_wait_ping vm1 "${GW_IP_OF[vm2]}"

gw_start "$TOPO_DIR/gateway2.log" 2>"$TOPO_DIR/gw-restart.err" || bail "gateway restarts" "$(cat "$TOPO_DIR/gw-restart.err")"
if gw_wait_state vm1 ESTABLISHED 40; then
    ok "vm1 reconnects once the gateway is back"
else
    not_ok "vm1 reconnects once the gateway is back" "$(gw_status vm1 .gateway)"
fi
v=$(gw_desired_version vm1 || echo none)
gw_wait_applied vm1 "$v" 5 || true
check_eq "vm1 runs the gateway's current version" "$v" "$(gw_status vm1 .gateway.applied_version)"
check "overlay ping vm2 -> vm1" overlay_wait_ping vm2 "${GW_IP_OF[vm1]}"
tap_done
