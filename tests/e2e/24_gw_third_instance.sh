#!/usr/bin/env bash
# tests/e2e/24_gw_third_instance.sh -- e2e test 24 (issue 4, test 4): vm1
# (web) and vm2 (app) ping each other continuously (10 ms, bounded) while a
# third instance, vm3 (tag web), enrolls. As soon as the gateway has placed
# vm3, vm1 and vm2 ping its new IP every 10 ms; the first answers must come
# within 1 s of vm3's ack (its first config applied, polled every 10 ms on
# its local API). Prints the times. The running vm1 <-> vm2 ping loses nothing.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 24 "$@"

COUNT=800 # 8 s at 10 ms
gw_setup t24 1500 vm1:web vm2:app vm3:-
overlay_wait_ping vm1 "${GW_IP_OF[vm2]}" || bail "overlay ping vm1 -> vm2 before the test"
sandbox_bg "$TOPO_DIR/ping-12.log" ip netns exec "$(topo_root vm1)" \
    ping -n -i 0.01 -c "$COUNT" -w 20 -W 1 "${GW_IP_OF[vm2]}"
p12=$SANDBOX_LAST_PID
sleep 1

now_ms() { echo $(($(date +%s%N) / 1000000)); }
gw_agent_config vm3 web
t_start=$(now_ms)
gw_agent_start vm3 -n
ip3=""
for ((i = 0; i < 1000; i++)); do
    ip3=$(gw_api GET /api/v1/instances/vm3 2>/dev/null | jq -r '.ip // empty' 2>/dev/null || true)
    [[ -n "$ip3" ]] && break
    sandbox_alive "${TOPO_AGENT_PID[vm3]}" || break
    sleep 0.01
done
[[ -n "$ip3" ]] || bail "vm3 enrolled and placed (GET /api/v1/instances/vm3 has an ip)" "$(tail -n 10 "$(agent_log vm3)")"
t_placed=$(now_ms)
ok "vm3 enrolled and placed at $ip3 ($((t_placed - t_start)) ms after its agent started)"
for vm in vm1 vm2; do
    sandbox_bg "$TOPO_DIR/ping-${vm}-3.log" ip netns exec "$(topo_root "$vm")" \
        ping -D -n -i 0.01 -c 1 -w 10 -W 1 "$ip3"
done
t_ack=""
for ((i = 0; i < 1500; i++)); do
    v=$(timeout 2 "$NSX_AGENT" ctl --socket "$(topo_socket vm3)" status 2>/dev/null | jq -r '.gateway.applied_version // empty' 2>/dev/null || true)
    if [[ -n "$v" ]]; then
        t_ack=$(now_ms)
        break
    fi
    sleep 0.01
done
[[ -n "$t_ack" ]] && ok "vm3 acked its first config (version $v) $((t_ack - t_start)) ms after its agent started" ||
    not_ok "vm3 acked its first config within 15 s" "$(tail -n 10 "$(agent_log vm3)")"
for vm in vm1 vm2; do
    log=$TOPO_DIR/ping-${vm}-3.log
    for ((i = 0; i < 150; i++)); do grep -q 'packets transmitted' "$log" && break; sleep 0.1; done
    ts=$(grep -m1 -oE '^\[[0-9]+\.[0-9]+\] [0-9]+ bytes from' "$log" | grep -oE '[0-9]+\.[0-9]+' || true)
    if [[ -z "$ts" || -z "$t_ack" ]]; then
        not_ok "$vm reaches vm3 ($ip3)" "$(tail -n 4 "$log")"
        continue
    fi
    frac=${ts#*.}000
    reply_ms=$((${ts%.*} * 1000 + 10#${frac:0:3}))
    d=$((reply_ms - t_ack))
    diag "$vm -> vm3: first echo answered $d ms after vm3's ack ($((reply_ms - t_placed)) ms after placement)"
    [[ $d -lt 0 ]] && diag "(negative: answered before the 10 ms status poll saw the ack)"
    check "$vm reaches vm3 within 1 s of its ack (measured: $d ms)" test "$d" -le 1000
done
sandbox_wait_exit "$p12" 25 || true
r=$(ping_report "$TOPO_DIR/ping-12.log" || true)
check_eq "vm1 -> vm2 ping during vm3's enrollment: 0 of $COUNT lost" "$COUNT $COUNT" "${r:-none}"
check_eq "vm3 ESTABLISHED" ESTABLISHED "$(gw_status vm3 .gateway.state)"
diag "$(gw_cli get instances)"
tap_done
