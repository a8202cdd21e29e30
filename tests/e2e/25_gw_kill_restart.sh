#!/usr/bin/env bash
# tests/e2e/25_gw_kill_restart.sh -- e2e test 25 (issue 4, test 5): the
# gateway is SIGKILLed during continuous overlay pings (every 10 ms, bounded
# count), stays down, and is restarted while the pings still run: not one
# echo may be lost (the agents forward headless). After the restart every
# agent reconnects (status ESTABLISHED) at the gateway's current version.
# Then the gateway is killed again, the desired state changed with the CLI
# while it is down, and restarted: the agents resync to the new version.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 25 "$@"

COUNT=1200 # 12 s at 10 ms
gw_setup t25 1500 vm1:web vm2:app vm3:web
for vm in vm1 vm2 vm3; do
    overlay_wait_ping "$vm" "${GW_IP_OF[vm1]}" || true
done
overlay_wait_ping vm1 "${GW_IP_OF[vm2]}" || bail "overlay ping vm1 -> vm2 before the test"
overlay_wait_ping vm3 "${GW_IP_OF[vm1]}" || bail "overlay ping vm3 -> vm1 before the test"

sandbox_bg "$TOPO_DIR/ping-routed.log" ip netns exec "$(topo_root vm1)" \
    ping -n -i 0.01 -c "$COUNT" -w 30 -W 1 "${GW_IP_OF[vm2]}"
p1=$SANDBOX_LAST_PID
sandbox_bg "$TOPO_DIR/ping-switched.log" ip netns exec "$(topo_root vm3)" \
    ping -n -i 0.01 -c "$COUNT" -w 30 -W 1 "${GW_IP_OF[vm1]}"
p2=$SANDBOX_LAST_PID
sleep 2
old=$GW_PID
gw_kill
check "gateway ($old) is gone after SIGKILL" bash -c "! kill -0 $old 2>/dev/null"
for vm in vm1 vm2 vm3; do
    if gw_wait_not_state "$vm" ESTABLISHED 5; then
        ok "$vm notices the lost gateway ($(gw_status "$vm" '"\(.gateway.state): \(.gateway.last_error)"'))"
    else
        not_ok "$vm notices the lost gateway within 5 s" "$(gw_status "$vm" .gateway)"
    fi
done
sleep 2
t0=$(date +%s%N)
if gw_start "$TOPO_DIR/gateway2.log" 2>"$TOPO_DIR/gw-restart.err"; then
    ok "gateway restarts on the same store"
else
    not_ok "gateway restarts on the same store" "$(cat "$TOPO_DIR/gw-restart.err")"
fi
for vm in vm1 vm2 vm3; do
    if gw_wait_state "$vm" ESTABLISHED 40; then
        ok "$vm reconnects after the gateway restart ($(( ($(date +%s%N) - t0) / 1000000 )) ms after the restart)"
    else
        not_ok "$vm reconnects after the gateway restart (bounded 40 s)" "$(gw_status "$vm" .gateway)"
    fi
    v=$(gw_desired_version "$vm" || echo none)
    gw_wait_applied "$vm" "$v" 5 || true
    check_eq "$vm: applied version = the gateway's current version for it" "$v" "$(gw_status "$vm" .gateway.applied_version)"
done
sandbox_wait_exit "$p1" 35 || true
sandbox_wait_exit "$p2" 35 || true
for l in routed:"vm1 -> vm2 (routed)" switched:"vm3 -> vm1 (same switch)"; do
    r=$(ping_report "$TOPO_DIR/ping-${l%%:*}.log" || true)
    if [[ -z "$r" ]]; then
        not_ok "ping ${l#*:} finished" "$(tail -n 5 "$TOPO_DIR/ping-${l%%:*}.log")"
        continue
    fi
    read -r tx rx <<<"$r"
    diag "ping ${l#*:} across gateway kill, 2 s down, restart, reconnect: $tx sent, $rx answered"
    check_eq "ping ${l#*:}: 0 of $COUNT lost across the gateway's SIGKILL and restart" "$COUNT $COUNT" "$tx $rx"
done

# --- a change made while the gateway is down reaches the agents on reconnect.
before1=$(gw_status vm1 .gateway.applied_version)
gw_kill
cat "$TOPO_DIR/state.yaml" >"$TOPO_DIR/state2.yaml"
sed -i 's/^    routes: \[\]$/    routes:\n      - prefix: 10.20.0.0\/16\n        next_hop: 192.168.99.254/' "$TOPO_DIR/state2.yaml"
check "CLI apply while the gateway is down (static route added to t1)" gw_apply "$TOPO_DIR/state2.yaml"
gw_start "$TOPO_DIR/gateway3.log" 2>"$TOPO_DIR/gw-restart2.err" || bail "gateway restarts again" "$(cat "$TOPO_DIR/gw-restart2.err")"
for vm in vm1 vm2 vm3; do
    v=$(gw_desired_version "$vm" || echo none)
    if gw_wait_applied "$vm" "$v" 40; then
        ok "$vm resyncs to the current version $v after the restart"
    else
        not_ok "$vm resyncs to the current version $v after the restart" "$(gw_status "$vm" .gateway)"
    fi
done
after1=$(gw_status vm1 .gateway.applied_version)
check "vm1's version moved with the change ($before1 -> $after1)" test "$after1" -gt "$before1"
has_route() { agent_ctl vm1 config | grep -q '10\.20\.0\.0/16'; }
check "vm1's running config has the new route" has_route
check "overlay ping vm1 -> vm2 still works" overlay_wait_ping vm1 "${GW_IP_OF[vm2]}"
tap_done
