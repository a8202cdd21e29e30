#!/usr/bin/env bash
# tests/e2e/04_tcp_transfer.sh -- e2e test 4: a 100 MB random file crosses
# the distributed router over TCP (socat, vm1 on ls-web -> vm2 on ls-app) and
# arrives intact (sha256 compared), within a bounded time. Prints the
# throughput and checks the tunnel counters account for the bytes.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 04 "$@"

SIZE_MB=${NSX_E2E_TRANSFER_MB:-100}
LIMIT=${NSX_E2E_TRANSFER_TIMEOUT:-300}

seed_topology t04 1500 2
topo_build
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2
overlay_wait_ping vm1 192.168.99.9 || bail "routed ping vm1 -> vm2 before the transfer"

head -c "${SIZE_MB}M" /dev/urandom >"$TOPO_DIR/in.bin"
want=$(sha256sum <"$TOPO_DIR/in.bin" | cut -d' ' -f1)
tx0=$(agent_counter vm1 '[.tunnels[] | select(.tep_ip=="10.99.3.12") | .tx_bytes] | add // 0') || tx0=0

sandbox_bg "$TOPO_DIR/server.log" ip netns exec "$(topo_root vm2)" \
    timeout "$LIMIT" socat -u TCP-LISTEN:5004,reuseaddr "OPEN:$TOPO_DIR/out.bin,creat,trunc"
srv=$SANDBOX_LAST_PID
start=$(date +%s.%N)
sent=0
for ((i = 0; i < 20; i++)); do
    if in_overlay vm1 timeout "$LIMIT" socat -u "OPEN:$TOPO_DIR/in.bin" TCP:192.168.99.9:5004 2>"$TOPO_DIR/client.log"; then
        sent=1
        break
    fi
    grep -q "Connection refused" "$TOPO_DIR/client.log" || break
    sleep 0.2
done
srv_rc=0
sandbox_wait_exit "$srv" 30 || true
wait "$srv" 2>/dev/null || srv_rc=$?
end=$(date +%s.%N)
check_eq "sender finished (socat exit 0, within ${LIMIT}s)" 1 "$sent"
[[ $sent == 1 ]] || diag "$(cat "$TOPO_DIR/client.log")"
check_eq "receiver finished (socat exit 0)" 0 "$srv_rc"
got=$(sha256sum <"$TOPO_DIR/out.bin" 2>/dev/null | cut -d' ' -f1)
check_eq "${SIZE_MB} MB arrived intact (sha256)" "$want" "$got"
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
diag "$(awk -v s="$secs" -v m="$SIZE_MB" 'BEGIN { printf "%d MB in %s s = %.0f Mbit/s", m, s, m * 8 * 1.048576 / s }')"
tx1=$(counter_at_least vm1 '[.tunnels[] | select(.tep_ip=="10.99.3.12") | .tx_bytes] | add // 0' \
    $((tx0 + SIZE_MB * 1048576)))
tx1=${tx1:-0}
check "vm1's tunnel counter to 10.99.3.12 grew by at least ${SIZE_MB} MB (tx_bytes $tx0 -> $tx1)" \
    [ $((tx1 - tx0)) -ge $((SIZE_MB * 1048576)) ]
rm -f "$TOPO_DIR/in.bin" "$TOPO_DIR/out.bin"
tap_done
