# shellcheck shell=bash
# cps.sh - new connections per second (issue 15), sourced by bench/run.sh
# after measure.sh: nsx-connrate (the conn-rate crate, netperf TCP_CRR in
# spirit) serves in the server's namespace on SRV_IP:CPS_PORT while its
# client, in the client's namespace, loops connect / request / response
# to EOF / close against the path's destination (the server itself, a
# virtual server, a proxy) with CPS_CONCURRENCY connections at a time for
# CPS_DURATION seconds. The server closes first, so TIME_WAIT stays on its
# side and the client never runs out of ports.
#
# Env: NSX_CONNRATE (the binary), GVB_STATE (scratch dir), CPS_PORT (5301),
# CPS_DURATION (5 s), CPS_CONCURRENCY (4), QUIET_WAIT (measure.sh's).

CPS_PORT=${CPS_PORT:-5301}

# cps_wanted PATH: new connections are measured on PATH (CPS=1, the
# default, and PATH one of the direct path, its variants with another
# binary or busy-polling budget, and the two balancers it is compared
# with; agent_fw's firewall would refuse CPS_PORT).
cps_wanted() {
    [ "${CPS:-1}" = 1 ] || return 1
    case "$1" in agent|agent_base|agent_bp[0-9]*|agent_lb|haproxy) return 0 ;; *) return 1 ;; esac
}

# cps_measure CLIENT_NS SERVER_NS SERVER_IP DST -> one JSON object: the
# client's line (connections, cps, failures by kind, latency_us p50/p99/
# max of a whole transaction) plus port, busy_cores (machine-wide, during
# the run) and bg_cores (before it, with QUIET_WAIT > 0); {"error": ...}
# when it could not run. Every step is bounded.
cps_measure() {
    local cns=$1 sns=$2 sip=$3 dst=$4 port=$CPS_PORT dur=${CPS_DURATION:-5} conc=${CPS_CONCURRENCY:-4}
    local log=$GVB_STATE/connrate.log bound pid out bgr=null c0 c1 k
    [ -x "${NSX_CONNRATE:-}" ] || { jq -nc '{error:"NSX_CONNRATE is not an executable"}'; return 1; }
    bound=$(awk -v d="$dur" 'BEGIN{printf "%d", d + 30}')
    ip netns exec "$sns" "$NSX_CONNRATE" serve "$sip:$port" --duration "$bound" >"$log" 2>&1 &
    pid=$!
    for k in $(seq 1 40); do   # bounded wait for the listen socket
        ip netns exec "$sns" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    if [ "$k" -ge 40 ]; then
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
        jq -nc --arg log "$(tail -n 3 "$log")" '{error:"nsx-connrate server did not listen", log:$log}'
        return 1
    fi
    [ "${QUIET_WAIT:-0}" -gt 0 ] 2>/dev/null && bgr=$(QUIET_WAIT=$(( QUIET_WAIT < 30 ? QUIET_WAIT : 30 )) wait_quiet)
    c0=$(_cpu_sample)
    out=$(timeout "$bound" ip netns exec "$cns" "$NSX_CONNRATE" run "$dst:$port" \
        --duration "$dur" --concurrency "$conc" 2>>"$log")
    c1=$(_cpu_sample)
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    if ! jq -e '.cps' <<<"$out" >/dev/null 2>&1; then
        jq -nc --arg log "$(tail -n 3 "$log")" '{error:"nsx-connrate run printed no report", log:$log}'
        return 1
    fi
    jq -c --argjson port "$port" --argjson busy "$(_cpu_busy_cores "$c0" "$c1")" --argjson bg "$bgr" \
        '. + {port:$port, busy_cores:$busy, bg_cores:$bg}' <<<"$out"
}
