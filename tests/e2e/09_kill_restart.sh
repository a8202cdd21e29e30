#!/usr/bin/env bash
# tests/e2e/09_kill_restart.sh -- e2e test 9: vm1's agent is SIGKILLed and
# restarted while two pings run (every 0.05 s, bounded): one inside vm1's own
# overlay namespace toward vm2, one from vm2 toward vm1. The restart must
# clean up or adopt the leftovers, and both pings must get answers again
# (their last 20 echoes answered). Prints the gap (lost pings * interval).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 09 "$@"

COUNT=300  # 15 s at 0.05 s
INTERVAL=0.05

topo_new t09 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2
overlay_wait_ping vm1 192.168.100.4 || bail "overlay ping vm1 -> vm2"
overlay_wait_ping vm2 192.168.100.3 || bail "overlay ping vm2 -> vm1"

sandbox_bg "$TOPO_DIR/ping1.log" ip netns exec "$(topo_root vm1)" \
    ping -n -i "$INTERVAL" -c "$COUNT" -w 25 -W 1 192.168.100.4
p1=$SANDBOX_LAST_PID
sandbox_bg "$TOPO_DIR/ping2.log" ip netns exec "$(topo_root vm2)" \
    ping -n -i "$INTERVAL" -c "$COUNT" -w 25 -W 1 192.168.100.3
p2=$SANDBOX_LAST_PID
# Bounded wait (10 s) until both pings are answered steadily (20 replies).
for ((i = 0; i < 100; i++)); do
    [[ $(grep -c 'bytes from' "$TOPO_DIR/ping1.log" 2>/dev/null) -ge 20 &&
        $(grep -c 'bytes from' "$TOPO_DIR/ping2.log" 2>/dev/null) -ge 20 ]] && break
    sleep 0.1
done
ns_before=$(stat -L -c %i "/run/netns/$(topo_root vm1)")
old=$(agent_pid vm1)
agent_kill vm1
check "vm1 agent ($old) is gone after SIGKILL" bash -c "! kill -0 $old 2>/dev/null"
t0=$(date +%s.%N)
if agent_start vm1 2>"$TOPO_DIR/restart.err"; then
    ok "agent vm1 restarts after SIGKILL and answers status"
else
    not_ok "agent vm1 restarts after SIGKILL and answers status" "$(cat "$TOPO_DIR/restart.err")"
fi
t1=$(date +%s.%N)
diag "restart took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s until the API answered"
ns_after=$(stat -L -c %i "/run/netns/$(topo_root vm1)" 2>/dev/null || echo none)
ns_ping=$(stat -L -c %i "/proc/$p1/ns/net" 2>/dev/null || echo none)
check_eq "the restarted agent keeps vm1's overlay netns (the running ping's netns is still $(topo_root vm1))" \
    "$ns_before $ns_before" "$ns_after $ns_ping"
sandbox_wait_exit "$p1" 30 || true
sandbox_wait_exit "$p2" 30 || true

# report LOG NAME: parse a ping log.
report() {
    local log=$1 name=$2 tx rx last lost
    tx=$(grep -oE '^[0-9]+ packets transmitted' "$log" | cut -d' ' -f1 || true)
    rx=$(grep -oE '[0-9]+ received' "$log" | cut -d' ' -f1 || true)
    last=$(grep -oE 'icmp_seq=[0-9]+ ttl' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
    if [[ -z "$tx" || -z "$rx" ]]; then
        not_ok "$name: ping finished" "$(tail -n 5 "$log")"
        return
    fi
    lost=$((tx - rx))
    diag "$name: $tx sent, $rx answered, $lost lost: gap $(awk -v l="$lost" -v i="$INTERVAL" 'BEGIN { printf "%.2f", l * i }') s"
    check "$name: all of the last 20 echoes answered (last answered seq ${last:-none} of $tx)" \
        [ "$(grep -cE "icmp_seq=($(seq -s '|' $((tx - 19)) "$tx")) ttl" "$log")" -eq 20 ]
}
report "$TOPO_DIR/ping1.log" "ping inside vm1 (restarted agent) -> vm2"
report "$TOPO_DIR/ping2.log" "ping vm2 -> vm1"
log=$(agent_log vm1)
diag "restarted agent's first log lines:" "$(head -n 8 "$log")"
rc=0
agent_stop vm1 || rc=$?
check_eq "restarted agent exits 0 on SIGTERM" 0 "$rc"
check "no leftover overlay namespace of vm1 after SIGTERM" bash -c "! ip netns list | grep -qw $(topo_root vm1)"
got=$(in_inst vm1 ip -j addr show dev eth0 | jq -r '[.[0].addr_info[] | select(.family=="inet") | .local] | join(",")')
check_eq "vm1's eth0 has its underlay IP back" 10.99.3.11 "$got"
tap_done
