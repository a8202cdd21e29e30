#!/usr/bin/env bash
# scripts/bench.sh - end-to-end benchmark of the overlay data paths (issue 3,
# "Performance"). Not part of CI (it takes minutes): a tool.
#
# In ONE run, for each underlay MTU (1500 and 9001), between two "instances"
# (network namespaces on a Linux bridge, bench/topo.sh), it measures iperf3
# single-stream TCP (and -P 2) and ping RTT (p50, p99; idle, and under
# load: during the single-stream run) over:
#   raw           veth -> bridge -> veth, no encapsulation (the physical limit)
#   vxlan_nested  kernel VXLAN behind a veth + bridge: the same hop count as an
#                 agent sitting between an instance's NIC and the underlay
#                 (PATHS=... vxlan adds the overlay-IP-on-vxlan0 variant)
#   ovs_geneve    Open vSwitch userspace (netdev) Geneve with the VMware option
#                 (class 0x0104, type 0x80) mapped through tun_metadata0
#   agent         our nsx-agent, one per instance (bench/agent_path.sh)
#   agent_nooff   the same with [host] tx_offload = false (offloads off on
#                 nsx-eth0: every MTU-sized segment crosses userspace)
#   agent_fw      (issue 5, not in the default PATHS) the agent with a
#                 distributed firewall of FW_RULES = 10,000 rules on BOTH
#                 agents (bench/fw_rules.sh: deterministic, realistic shapes -
#                 host -> host over address sets on one port, subnet -> group
#                 port ranges, udp services, icmp - none matching the bench
#                 traffic, then the ping rule and, LAST, the accept rule for
#                 the iperf3 port; default rule reject). `agent` is the same
#                 path with no [firewall] section
#   agent_fw10    the same with 10 rules (rule count vs having a firewall)
#   north_south   (issue 14, not in the default PATHS) vm1's nsx-agent (a
#                 tier-1 with an [edge] link) -> Geneve -> vm2's nsx-agent in
#                 the edge role (tier-0, [host] uplink = "eth1") -> veth ->
#                 an "internet" namespace running the iperf3 server
#                 (bench/ns_path.sh; NS_RETURN_ROUTE=1 adds the internet
#                 side's route back to the overlay subnet, needed while the
#                 edge does not SNAT, unused once it does)
#   vxlan_masq    the same topology on Linux: kernel VXLAN from the instance
#                 to a router namespace that forwards to the internet
#                 namespace with nftables masquerade on its uplink
#   agent_lb      (issue 15, not in the default PATHS) the agent path with
#                 a virtual server 10.64.1.2 (sh, NAT) in vm1's agent whose
#                 one real server is vm2: iperf3 connects to the virtual
#                 address, vm1's agent rewrites both ways
#   haproxy       the agent path with HAProxy (mode tcp) in vm1's namespace
#                 relaying to vm2: the user-space L4 balancer operators
#                 would otherwise pick
#                 (both ping vm2 itself: their rows' ping columns are the
#                 direct path's, shown as "direct")
#                 agent (also agent_base, agent_bpN), agent_lb and haproxy
#                 also measure new connections per second (CPS=1,
#                 bench/cps.sh): after the throughput,
#                 nsx-connrate (crate conn-rate, netperf TCP_CRR in spirit)
#                 serves on vm2:CPS_PORT and its client loops connect /
#                 request / response / close against vm2, the virtual
#                 server (a second one, on CPS_PORT) or HAProxy (a second
#                 frontend); the summary adds a table of conn/s and
#                 p50/p99 per row, and the load balancer line agent_lb /
#                 haproxy and agent_lb / agent of conn/s
#   agent_base    (not in the default PATHS) the agent path with the binary
#                 NSX_AGENT_BASE, e.g. a build of the previous commit: a
#                 refactor measured against its predecessor in one run
#                 (PATHS="agent agent_base agent agent_base" interleaves them)
#   agent_bpN     (not in the default PATHS) the agent path with [host]
#                 busy_poll_us = N on both agents (agent_bp0 agent_bp50
#                 agent_bp200: busy-polling budgets compared in one run);
#                 `agent` and `agent_base` run their binary's default
# and prints one markdown table with the ratios (each / raw, agent / each),
# plus the target checks (agent >= 2x ovs_geneve; with a VXLAN reference
# measured, the agent's ping p50 <= 1.5x its, idle and loaded, p99 beside
# it; with agent_fw measured,
# agent_fw >= 0.9x agent; with north_south measured, north_south >= 0.8x
# agent, and north_south / vxlan_masq; with agent_lb measured, agent_lb >=
# 0.95x agent, and agent_lb / haproxy, in Gb/s and in new connections per
# second). The table, the raw JSON lines and
# the environment are saved under bench/results/<date>-*.
#
# Firewall run (issue 5; each path listed twice = interleaved, and the
# summary's Firewall line takes the median over all runs of each path):
#   PATHS="agent agent_fw agent agent_fw" MTUS="1500 9001" REPS=3 PARALLEL=0 scripts/bench.sh
#
# North-south run (issue 14):
#   PATHS="agent north_south vxlan_masq" MTUS="1500 9001" REPS=3 scripts/bench.sh
#
# Load balancer run (issue 15: the virtual server against the direct path
# and HAProxy, interleaved):
#   PATHS="agent agent_lb haproxy agent agent_lb haproxy" MTUS="1500 9001" PARALLEL=0 scripts/bench.sh
#
# Usage: scripts/bench.sh            (as root or not: it runs in a private sandbox)
# Env knobs:
#   MTUS="1500 9001"  PATHS="raw vxlan_nested ovs_geneve agent agent_nooff"
#   (also: agent_fw agent_fw10 agent_base north_south vxlan_masq agent_lb
#   haproxy vxlan raw+nooff ovs_geneve_int ovs_geneve_afxdp)
#   FW_RULES=10000 (rules loaded by agent_fw)
#   DURATION=5 (s per iperf3 run)  OMIT=1  REPS=1 (median reported; 3-5 on a noisy box)
#   PARALLEL=2 (second iperf3 run with -P N; 0 = skip)  PINGS=200  PING_INTERVAL=0.01
#   LOAD_PING=1 (0 = no ping during the first single-stream run)
#   QUIET_WAIT=20 (wait up to N s for an idle machine before each measurement)
#   IPERF_ARGS="" (e.g. "-A 0,1" to pin iperf3)   WIRE_CHECK=1 (tshark decode of
#   one tunnel packet per path)   PROFILE=0 (1 = per-thread CPU breakdown of the
#   agent path, bench/profile.sh; PROFILE_AGENT=2 perf-samples the receiving
#   agent instead of the sending one)   BUILD=1 (0 = use NSX_AGENT and
#   NSX_CONNRATE as they are)
#   NSX_AGENT=target/release/nsx-agent   SAVE=1 (0 = do not write bench/results)
#   CPS=1 (0 = no new-connections measurement on agent / agent_lb / haproxy)
#   CPS_DURATION=5 (s)  CPS_CONCURRENCY=4 (connections at a time)  CPS_PORT=5301
#   NSX_CONNRATE=target/release/nsx-connrate (needed when CPS=1 and PATHS has
#   one of those three)
#   NS_RETURN_ROUTE=1 (0 = north_south without the internet side's return
#   route: works only if the edge does SNAT)
#   INSTALL=1 (apt-get install missing iperf3 / openvswitch-switch / nftables /
#   jq when root)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "bench: unknown argument $1 (configure with env knobs; see --help)" >&2; exit 2 ;;
esac

export MTUS=${MTUS:-1500 9001}
export PATHS=${PATHS:-raw vxlan_nested ovs_geneve agent agent_nooff}
export DURATION=${DURATION:-5} OMIT=${OMIT:-1} REPS=${REPS:-1} PARALLEL=${PARALLEL:-2}
export PINGS=${PINGS:-200} PING_INTERVAL=${PING_INTERVAL:-0.01} QUIET_WAIT=${QUIET_WAIT:-20} LOAD_PING=${LOAD_PING:-1}
export IPERF_ARGS=${IPERF_ARGS:-} WIRE_CHECK=${WIRE_CHECK:-1} PROFILE=${PROFILE:-0}
export FW_RULES=${FW_RULES:-10000} PROFILE_AGENT=${PROFILE_AGENT:-1} NS_RETURN_ROUTE=${NS_RETURN_ROUTE:-1}
export CPS=${CPS:-1} CPS_DURATION=${CPS_DURATION:-5} CPS_CONCURRENCY=${CPS_CONCURRENCY:-4} CPS_PORT=${CPS_PORT:-5301}
BUILD=${BUILD:-1}
SAVE=${SAVE:-1}
INSTALL=${INSTALL:-1}

# ---- tools ---------------------------------------------------------------------
need_pkgs=()
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v jq >/dev/null || need_pkgs+=(jq)
case " $PATHS " in *" ovs_geneve"*) command -v ovs-vswitchd >/dev/null || need_pkgs+=(openvswitch-switch) ;; esac
case " $PATHS " in *" vxlan_masq "*) command -v nft >/dev/null || need_pkgs+=(nftables) ;; esac
case " $PATHS " in *" haproxy "*) command -v haproxy >/dev/null || need_pkgs+=(haproxy) ;; esac
command -v ethtool >/dev/null || need_pkgs+=(ethtool)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench: installing ${need_pkgs[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "bench: missing ${need_pkgs[*]} (apt-get install them, or run as root)" >&2
        exit 1
    fi
fi
command -v tshark >/dev/null && command -v dumpcap >/dev/null ||
    echo "bench: tshark/dumpcap not found: wire checks skipped (apt-get install tshark)" >&2

# ---- build (outside the sandbox) ---------------------------------------------
export NSX_AGENT=${NSX_AGENT:-$ROOT/target/release/nsx-agent}
# nsx-connrate: only when some path measures new connections (bench/cps.sh).
want_cps=0
if [ "$CPS" = 1 ]; then
    for p in $PATHS; do case "$p" in agent|agent_base|agent_bp[0-9]*|agent_lb|haproxy) want_cps=1 ;; esac; done
fi
NSX_CONNRATE=${NSX_CONNRATE:-$ROOT/target/release/nsx-connrate}
if [ "$BUILD" = 1 ]; then
    pkgs=(-p agent)
    [ "$want_cps" = 1 ] && pkgs+=(-p conn-rate)
    echo "bench: cargo build --release ${pkgs[*]}" >&2
    cargo build --release "${pkgs[@]}" >&2
fi
[ -x "$NSX_AGENT" ] || { echo "bench: $NSX_AGENT not found (BUILD=1 builds it)" >&2; exit 1; }
if [ "$want_cps" = 1 ]; then
    [ -x "$NSX_CONNRATE" ] || { echo "bench: $NSX_CONNRATE not found (BUILD=1 builds it; CPS=0 skips it)" >&2; exit 1; }
fi
export BENCH_GIT
BENCH_GIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
# Uncommitted changes to the code the binary is built from (provenance).
BENCH_GIT="$BENCH_GIT; uncommitted code: $(git -C "$ROOT" status --porcelain -- agent datapath firewall geneve control lb nat conn-rate Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ' | sed 's/ $//')"
BENCH_GIT=${BENCH_GIT%; uncommitted code: }

# ---- run inside a private sandbox ---------------------------------------------
# User + network + mount (+ PID) namespaces: nothing touches the host's network,
# no sudo needed, and when the run ends the kernel kills whatever is left.
# /run/netns is a tmpfs made *shared*, so the overlay namespaces the agents
# register there are visible to iperf3/ping (see bench/agent_path.sh).
export OUT_DIR
OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nsx-bench.XXXXXX")
# Run a private copy: a concurrent `cargo build` must not swap the binary mid-run.
cp "$NSX_AGENT" "$OUT_DIR/nsx-agent"
NSX_AGENT=$OUT_DIR/nsx-agent
export NSX_CONNRATE
if [ "$want_cps" = 1 ]; then
    cp "$NSX_CONNRATE" "$OUT_DIR/nsx-connrate"
    NSX_CONNRATE=$OUT_DIR/nsx-connrate
else
    NSX_CONNRATE=
fi
if [ -n "${NSX_AGENT_BASE:-}" ]; then
    [ -x "$NSX_AGENT_BASE" ] || { echo "bench: NSX_AGENT_BASE=$NSX_AGENT_BASE is not executable" >&2; exit 1; }
    cp "$NSX_AGENT_BASE" "$OUT_DIR/nsx-agent-base"
    export NSX_AGENT_BASE=$OUT_DIR/nsx-agent-base
fi
unshare --user --map-root-user --net --mount true 2>/dev/null || {
    echo "bench: unprivileged user namespaces are refused by this kernel (see tests/lib/sandbox.sh)" >&2
    exit 1
}
rc=0
# shellcheck disable=SC2016  # $1 is expanded by the inner bash
unshare --user --map-root-user --net --mount --propagation private \
    --pid --fork --mount-proc --kill-child \
    bash -c '
        set -e
        if ! mkdir -p /run/netns 2>/dev/null; then
            mount -t tmpfs -o mode=0755 nsx-bench-run /run; mkdir -p /run/netns
        fi
        mount -t tmpfs -o mode=0755 nsx-bench-netns /run/netns
        mount --make-shared /run/netns
        ip link set lo up
        exec bash "$1"
    ' bench "$ROOT/bench/run.sh" || rc=$?

# ---- save ----------------------------------------------------------------------
if [ "$SAVE" = 1 ] && [ -s "$OUT_DIR/summary.md" ]; then
    mkdir -p "$ROOT/bench/results"
    stem=$ROOT/bench/results/$(date +%Y-%m-%d)
    n=1
    while [ -e "$stem-run$n-summary.md" ]; do n=$((n + 1)); done
    stem=$stem-run$n
    cp "$OUT_DIR/summary.md" "$stem-summary.md"
    cp "$OUT_DIR/results.jsonl" "$stem-results.jsonl"
    cp "$OUT_DIR/env.txt" "$stem-env.txt"
    for f in "$OUT_DIR"/profile-*.txt; do [ -e "$f" ] && cp "$f" "$stem-${f##*/}"; done
    echo "bench: saved ${stem#"$ROOT"/}-{summary.md,results.jsonl,env.txt}" >&2
fi
rm -f "$OUT_DIR/nsx-agent" "$OUT_DIR/nsx-connrate"
echo "bench: raw output in $OUT_DIR" >&2
exit "$rc"
