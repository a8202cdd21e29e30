#!/usr/bin/env bash
# scripts/bench-control.sh - control-plane benchmark (issue 4, "Performance
# (benchmark)"). Not part of CI: a tool (about 40 s plus the build).
#
# For each N in $AGENTS (default "100 1000"), against a FRESH gateway:
#   nsx-gateway init (temp dir) + a desired state with two switches (tags
#   bench-a / bench-b, /16 subnets) and a router t1 on bench-a's switch,
#   nsx-gateway serve on free loopback ports, then the cargo example
#   gateway/examples/bench_control.rs, which
#     - enrolls N instances through the real HTTPS enrollment endpoint
#       (own key + CSR each, tags alternating, distinct underlay IP and MAC),
#     - opens N concurrent control sessions (mutual TLS 1.3, control::AgentSession,
#       every Apply acked at once) and measures converge = start -> every
#       agent acked its snapshot (and checks the gateway's inventory agrees),
#     - gateway RSS (VmRSS) before/after the sessions: per agent = delta / N,
#     - fan-out: $ROUNDS times one switch change (PUT /api/v1/state adding /
#       removing a static route on t1, which changes the config of every
#       instance on switch bench-a, i.e. N/2 agents) -> per affected agent the
#       time from the PUT until it acked the new version: p50 / p99 / max.
# Prints a markdown table with the targets (at N=1000: converge <= 10 s,
# fan-out p99 <= 500 ms, <= 50 KB per agent) and PASS/FAIL.
#
# Usage: scripts/bench-control.sh
# Env knobs: AGENTS="100 1000"  ROUNDS=3  ENROLL_CONCURRENCY=8  TIMEOUT_S=120
#   (per phase)  BENCH_THREADS=2 (client runtime threads)  RUST_LOG=info
#   (gateway log level)  BUILD=1 (0 = use the built binaries as they are)
#   KEEP=0 (1 = keep the temp dir with the gateway logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "bench-control: unknown argument $1 (configure with env knobs; see --help)" >&2; exit 2 ;;
esac

AGENTS=${AGENTS:-"100 1000"}
ROUNDS=${ROUNDS:-3}
ENROLL_CONCURRENCY=${ENROLL_CONCURRENCY:-8}
TIMEOUT_S=${TIMEOUT_S:-120}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
export RUST_LOG=${RUST_LOG:-info}
export BENCH_THREADS=${BENCH_THREADS:-2}

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GW=$TARGET_DIR/release/nsx-gateway
BENCH=$TARGET_DIR/release/examples/bench_control

if [ "$BUILD" = 1 ]; then
    echo "== building (release): nsx-gateway, example bench_control" >&2
    cargo build --release -q -p gateway --bin nsx-gateway --example bench_control
fi
if [ ! -x "$GW" ] || [ ! -x "$BENCH" ]; then echo "bench-control: $GW or $BENCH missing (BUILD=1)" >&2; exit 1; fi

# Every agent is one socket in the bench and one in the gateway.
want=65536
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want" 2>/dev/null || true
echo "== open files limit: $(ulimit -n)" >&2

WORK=$(mktemp -d /tmp/bench-control.XXXXXX)
GW_PID=
cleanup() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$GW_PID" 2>/dev/null || true
    fi
    GW_PID=
}
finish() {
    cleanup
    if [ "$KEEP" = 1 ]; then echo "== kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 (asks the kernel; tiny race accepted).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port: until something listens (10 s)
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$GW_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

STATE='switches:
  - name: bench-a-ls
    tag: bench-a
    vni: 5001
    subnet: 172.16.0.0/16
    gateway_ip: 172.16.0.1
  - name: bench-b-ls
    tag: bench-b
    vni: 5002
    subnet: 172.17.0.0/16
    gateway_ip: 172.17.0.1
routers:
  - name: t1
    mac: 02:50:56:56:44:52
    switches: [bench-a-ls]
    routes: []
'

RESULTS=()
for n in $AGENTS; do
    cleanup
    D=$WORK/gw-$n
    echo "== N=$n: gateway in $D" >&2
    "$GW" init --dir "$D" --name nsx-gw.test --ip 127.0.0.1 >/dev/null 2>"$WORK/init-$n.log"
    printf '%s' "$STATE" >"$WORK/state.yaml"
    "$GW" apply -f "$WORK/state.yaml" --dir "$D" >/dev/null 2>>"$WORK/init-$n.log"
    P1=$(free_port); P2=$(free_port); P3=$(free_port)
    # Every simulated agent dials from 127.0.0.1: lift the per-peer caps
    # (an agent holds one session; the default allows 8 per address), and
    # the totals with them (serve refuses a per-peer cap above its total).
    "$GW" serve --dir "$D" --listen-enroll "127.0.0.1:$P1" --listen-api "127.0.0.1:$P2" \
        --listen-control "127.0.0.1:$P3" --listen-metrics off \
        --control-max-connections "$((n + 4096))" --control-max-connections-per-peer "$((n + 64))" \
        --max-connections "$((n + 512))" --max-connections-per-peer "$((n + 64))" \
        2>"$WORK/gateway-$n.log" &
    GW_PID=$!
    # (the control port is not probed: a bare TCP connect would log a TLS warning)
    for p in "$P1" "$P2"; do
        wait_port "$p" || { echo "bench-control: gateway did not start:" >&2; tail -20 "$WORK/gateway-$n.log" >&2; exit 1; }
    done
    for _ in $(seq 100); do grep -q 'control channel listening' "$WORK/gateway-$n.log" && break; sleep 0.1; done
    set +e
    out=$(timeout $((TIMEOUT_S * (ROUNDS + 3) + 300)) "$BENCH" --dir "$D" --gw-pid "$GW_PID" --agents "$n" \
        --enroll "127.0.0.1:$P1" --api "127.0.0.1:$P2" --control "127.0.0.1:$P3" \
        --name nsx-gw.test --rounds "$ROUNDS" --enroll-concurrency "$ENROLL_CONCURRENCY" \
        --timeout-s "$TIMEOUT_S")
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        echo "bench-control: N=$n failed (exit $rc); gateway log tail:" >&2
        tail -20 "$WORK/gateway-$n.log" >&2
        RESULTS+=("RESULT agents=$n failed=1")
        continue
    fi
    warns=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/gateway-$n.log" | grep -c -E ' (WARN|ERROR) ' || true)
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -1)
    # Where the per-change time goes: the control server's per-session store
    # calls, timed on a copy of this gateway's populated store.
    cleanup
    cp "$D/gateway.db" "$WORK/probe-$n.db"
    store=$(timeout 300 "$BENCH" --probe-store "$WORK/probe-$n.db" 2>/dev/null | grep '^STORE ' | sed 's/^STORE //' || true)
    RESULTS+=("$line gw_warnings=$warns $store")
    echo "$line gw_warnings=$warns $store" >&2
done
cleanup

# key=value from a RESULT line
kv() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
verdict() { # value op limit
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        if (v == "" || v == "nan") { print "n/a"; exit }
        ok = (op == "<=") ? (v + 0 <= l + 0) : 0; print ok ? "PASS" : "FAIL" }'
}

echo
echo "| agents | converge (all acked) | fan-out p50 | fan-out p99 | fan-out max | affected | gateway RSS / agent | reconnects | gw warnings | gateway CPU / change | desired_config_for |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${RESULTS[@]}"; do
    if [ -n "$(kv "$r" failed)" ]; then
        echo "| $(kv "$r" agents) | FAILED (see log above) | | | | | | | | | |"
        continue
    fi
    echo "| $(kv "$r" agents) | $(kv "$r" converge_ms) ms | $(kv "$r" fanout_p50_ms) ms | $(kv "$r" fanout_p99_ms) ms | $(kv "$r" fanout_max_ms) ms | $(kv "$r" affected) × $(kv "$r" rounds) | $(kv "$r" rss_per_agent_kb) KB | $(kv "$r" reconnects) | $(kv "$r" gw_warnings) | $(kv "$r" gw_cpu_per_change_ms) ms | $(kv "$r" desired_ms) ms |"
done

echo
echo "| target (at 1,000 agents, 2 cores) | measured | verdict |"
echo "|---|---:|---|"
big=""
for r in "${RESULTS[@]}"; do [ "$(kv "$r" agents)" = 1000 ] && big=$r; done
if [ -z "$big" ] || [ -n "$(kv "$big" failed)" ]; then
    echo "| converge <= 10 s | no N=1000 result | FAIL |"
    echo "| fan-out p99 <= 500 ms | no N=1000 result | FAIL |"
    echo "| gateway RSS <= 50 KB per agent | no N=1000 result | FAIL |"
else
    c=$(kv "$big" converge_ms); p=$(kv "$big" fanout_p99_ms); m=$(kv "$big" rss_per_agent_kb)
    echo "| converge <= 10 s | $c ms | $(verdict "$c" '<=' 10000) |"
    echo "| fan-out p99 <= 500 ms | $p ms | $(verdict "$p" '<=' 500) |"
    echo "| gateway RSS <= 50 KB per agent | $m KB | $(verdict "$m" '<=' 50) |"
fi
echo
echo "Raw:"
for r in "${RESULTS[@]}"; do echo "    $r"; done
