#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2317  # cleanup runs from a trap
# Adapted from ../shared/bench/baseline.sh (the team's shared bench kit): same
# per-path loop (fresh topology -> path up -> wire check -> measure_pair ->
# tear down), plus the nsx-agent path (bench/agent_path.sh) and a summary that
# compares the agent with OVS userspace Geneve and kernel VXLAN.
#
# bench/run.sh - runs INSIDE the sandbox that scripts/bench.sh sets up (root in
# a private user+net+mount namespace, tmpfs on /run/netns made shared, lo up).
# Use scripts/bench.sh; this file is not meant to be called directly.
#
# Env: NSX_AGENT (binary), OUT_DIR (results), MTUS ("1500 9001"), PATHS
# ("raw vxlan_nested ovs_geneve agent"; also: vxlan, agent_nooff, agent_fw,
# agent_fw10, agent_base, agent_bpN (busy_poll_us = N), raw+nooff,
# ovs_geneve_int, ovs_geneve_afxdp, the north-south north_south and
# vxlan_masq of bench/ns_path.sh, and the load balancer's agent_lb and
# haproxy of bench/agent_path.sh), FW_RULES (10000, the rule count of
# agent_fw), VXLAN_REF (the VXLAN path the agent is compared with:
# vxlan_nested if measured, else vxlan), WIRE_CHECK (1), PROFILE (0; 1 =
# sample per-thread CPU of the agent path during a run, see
# bench/profile.sh), measure.sh's DURATION OMIT PARALLEL REPS PINGS
# PING_INTERVAL LOAD_PING QUIET_WAIT QUIET_CORES IPERF_ARGS, and cps.sh's
# CPS (1: new connections per second on agent, agent_base, agent_bpN,
# agent_lb and haproxy after their throughput; 0 = skip) CPS_DURATION
# CPS_CONCURRENCY CPS_PORT NSX_CONNRATE.
#
# The summary's targets: agent >= 2x ovs_geneve; the agent's ping p50 <=
# 1.5x the VXLAN reference's, idle and under load (p99 beside it: issue
# 16); agent_fw >= 0.9x agent;
# north_south >= 0.8x agent; agent_lb >= 0.95x agent (the direct path to its
# real server), with agent_lb / haproxy beside it, and the same two ratios
# of new connections per second (cps.sh). A path whose iperf3
# client connects elsewhere than the server's address (client_dst:
# agent_lb's virtual server, haproxy's 127.0.0.1) still pings the server
# itself, so its row's ping columns are the direct path's: the rows show
# them as "direct" (null in summary.json, ping_via "direct").
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/topo.sh"
. "$HERE/measure.sh"
. "$HERE/paths.sh"
. "$HERE/agent_path.sh"
. "$HERE/ns_path.sh"
. "$HERE/cps.sh"

MTUS=${MTUS:-1500 9001}
PATHS=${PATHS:-raw vxlan_nested ovs_geneve agent}
WIRE_CHECK=${WIRE_CHECK:-1}
OUT_DIR=${OUT_DIR:?OUT_DIR must be set}
PROFILE=${PROFILE:-0}

[ "$(id -u)" = 0 ] || { echo "bench: needs (namespace) root: run scripts/bench.sh" >&2; exit 1; }
for b in ip ethtool iperf3 ping jq awk timeout nsenter unshare; do
    command -v "$b" >/dev/null || { echo "bench: missing $b" >&2; exit 1; }
done
case " $PATHS " in *" vxlan_masq "*) command -v nft >/dev/null || { echo "bench: missing nft (vxlan_masq)" >&2; exit 1; } ;; esac

mkdir -p "$OUT_DIR"
GVB_STATE=$(mktemp -d "${TMPDIR:-/tmp}/gvb-state.XXXXXX")
RESULTS=$OUT_DIR/results.jsonl
: >"$RESULTS"

cleanup() {
    trap - EXIT INT TERM
    iperf_server_stop
    path_ovs_geneve_down >/dev/null 2>&1
    path_agent_down >/dev/null 2>&1
    topo_down
    wait 2>/dev/null
    rm -rf "$GVB_STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "$(topo_list_ns)" ]; then
    echo "bench: leftover ${GVB_PREFIX}* namespaces found, removing them" >&2
    topo_down
fi

# wire_check NS IP PORT [DECODE] -> JSON describing the first encapsulated
# packet seen on the underlay bridge while pinging IP from NS. (baseline.sh's.)
wire_check() {
    local ns=$1 ip=$2 port=$3 decode=${4:-} pcap=$GVB_STATE/wire.pcap pid
    local -a dec=()
    [ -n "$decode" ] && dec=(-d "$decode")
    { command -v dumpcap && command -v tshark; } >/dev/null || { echo '{"error":"dumpcap/tshark missing"}'; return; }
    rm -f "$pcap"
    # dumpcap, not tcpdump: inside a user-namespace sandbox tcpdump cannot drop privileges and exits.
    ip netns exec "$(ul_ns)" timeout 8 dumpcap -q -P -i br0 -c 4 -w "$pcap" -f "udp dst port $port" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    timeout 10 ip netns exec "$ns" ping -n -c 3 -i 0.2 -W 1 -q "$ip" >/dev/null 2>&1
    wait "$pid" 2>/dev/null
    [ -s "$pcap" ] || { echo '{"error":"no packets captured"}'; return; }
    tshark -r "$pcap" "${dec[@]}" -Y icmp -T fields -E separator=/t \
        -e frame.len -e udp.dstport -e udp.checksum -e vxlan.vni -e geneve.vni \
        -e geneve.option.class -e geneve.option.type -e geneve.option.length \
        -e geneve.option.unknown.data -e geneve.flags.critical 2>/dev/null | head -n 1 |
    awk -F'\t' -v n="$(tshark -r "$pcap" 2>/dev/null | wc -l)" '{
        printf "{\"packets\":%d,\"frame_len\":\"%s\",\"udp_dport\":\"%s\",\"udp_csum\":\"%s\",\"vxlan_vni\":\"%s\",\"geneve_vni\":\"%s\",\"geneve_opt_class\":\"%s\",\"geneve_opt_type\":\"%s\",\"geneve_opt_len_bytes\":\"%s\",\"geneve_opt_data\":\"%s\",\"geneve_critical_flag\":\"%s\"}", n,$1,$2,$3,$4,$5,$6,$7,$8,$9,$10 }
        END { if (NR == 0) printf "{\"packets\":%d,\"error\":\"no ICMP echo found inside the captured packets\"}", n }'
}

run_one() {
    local mtu=$1 spec=$2 base=${2%+nooff} nooff=0 wire="null" offl m cps pstats rc=0
    [ "$spec" != "$base" ] && nooff=1
    # agent_bpN: the agent path with [host] busy_poll_us = N (agent_path.sh).
    AGENT_BUSY_POLL_US=
    case "$base" in agent_bp*) AGENT_BUSY_POLL_US=${base#agent_bp}; base=agent_bp ;; esac
    declare -F "path_${base}_up" >/dev/null || { echo "bench: unknown path $base" >&2; return 1; }
    echo "== mtu=$mtu path=$spec" >&2
    CLI_NS='' SRV_NS='' SRV_IP='' PATH_INNER_MTU='' PATH_DESC='' WIRE_PORT='' WIRE_DECODE='' CLIENT_DST=''
    topo_up 2 "$mtu" || return 1
    if "path_${base}_up" "$mtu"; then
        [ "$nooff" = 1 ] && offloads_off
        topo_wait_ping "$CLI_NS" "$SRV_IP" 40 || rc=1
        offl=$(offload_summary "$CLI_NS" "$SRV_IP")
        if [ "$WIRE_CHECK" = 1 ] && [ -n "$WIRE_PORT" ]; then
            wire=$(wire_check "$CLI_NS" "$SRV_IP" "$WIRE_PORT" "$WIRE_DECODE")
        fi
        m=$(measure_pair "$spec" "$CLI_NS" "$SRV_NS" "$SRV_IP")
        cps=null
        if cps_wanted "$spec"; then
            cps=$(cps_measure "$CLI_NS" "$SRV_NS" "$SRV_IP" "${CLIENT_DST:-$SRV_IP}") || rc=1
        fi
        pstats=null
        declare -F "path_${base}_stats" >/dev/null && pstats=$("path_${base}_stats")
        jq -c --argjson pstats "${pstats:-null}" --argjson mtu "$mtu" --argjson inner "${PATH_INNER_MTU:-null}" --arg desc "$PATH_DESC" \
            --arg offl "$offl" --argjson wire "${wire:-null}" --argjson nooff "$nooff" --argjson cps "${cps:-null}" \
            '. + {mtu:$mtu, inner_mtu:$inner, desc:$desc, offloads_client:$offl, offloads_off:($nooff==1), wire:$wire, cps:$cps, path_stats:$pstats}' \
            <<<"$m" | tee -a "$RESULTS" >&2 || rc=1
        if [ "$PROFILE" = 1 ] && [[ "$base" == agent* || "$base" == north_south ]]; then
            . "$HERE/profile.sh"
            profile_agent_path "$mtu" >"$OUT_DIR/profile-$base-mtu$mtu.txt" 2>&1
            cat "$OUT_DIR/profile-$base-mtu$mtu.txt" >&2
        fi
    else
        echo "bench: path $spec failed to come up at mtu $mtu" >&2
        jq -nc --argjson mtu "$mtu" --arg l "$spec" '{label:$l, mtu:$mtu, error:"setup failed"}' >>"$RESULTS"
        rc=1
    fi
    declare -F "path_${base}_down" >/dev/null && "path_${base}_down"
    topo_down
    return $rc
}

# ---- environment record -----------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) x $(nproc)" \
         "($(lscpu 2>/dev/null | awk -F':[ \t]+' '/^CPU family/{f=$2} /^Model:/{m=$2} /^Hypervisor vendor/{h=$2} END{printf "family %s model %s, hypervisor %s", f, m, (h==""?"none":h)}'))"
    echo "ovs: $(ovs-vswitchd --version 2>/dev/null | awk 'NR==1{print $NF}')  iperf3: $(iperf3 --version | awk 'NR==1{print $2}')"
    echo "agent: $("$NSX_AGENT" --version 2>/dev/null), built from git ${BENCH_GIT:-?} (copy: $NSX_AGENT)"
    [ -z "${NSX_CONNRATE:-}" ] || echo "connrate: $NSX_CONNRATE ($(sha256sum "$NSX_CONNRATE" | cut -c1-12))"
    [ -z "${NSX_AGENT_BASE:-}" ] || echo "agent_base: $NSX_AGENT_BASE ($(sha256sum "$NSX_AGENT_BASE" | cut -c1-12))"
    echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "settings: MTUS=\"$MTUS\" PATHS=\"$PATHS\" DURATION=${DURATION:-5} OMIT=${OMIT:-1} PARALLEL=${PARALLEL:-2} REPS=${REPS:-1} PINGS=${PINGS:-200} PING_INTERVAL=${PING_INTERVAL:-0.01} LOAD_PING=${LOAD_PING:-1} QUIET_WAIT=${QUIET_WAIT:-0} IPERF_ARGS=\"${IPERF_ARGS:-}\" NS_RETURN_ROUTE=${NS_RETURN_ROUTE:-1} CPS=${CPS:-1} CPS_DURATION=${CPS_DURATION:-5} CPS_CONCURRENCY=${CPS_CONCURRENCY:-4} CPS_PORT=$CPS_PORT"
} | tee "$OUT_DIR/env.txt" >&2

fail=0
for mtu in $MTUS; do
    for p in $PATHS; do
        run_one "$mtu" "$p" || fail=1
    done
done
echo "loadavg_at_end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/env.txt" >&2

# ---- summary ------------------------------------------------------------------
# Ratios per MTU: each path / raw, and the agent / each path (so the agent row
# against ovs_geneve and the VXLAN reference gives the two target ratios).
# The firewall line pools every single-stream run of a label at an MTU (median
# over all of them), so PATHS="agent agent_fw agent agent_fw" interleaves the
# two and compares them over the same stretch of (noisy) time.
VXLAN_REF=${VXLAN_REF:-$(jq -rs 'if any(.[]; .label=="vxlan_nested" and .error==null) then "vxlan_nested" else "vxlan" end' "$RESULTS")}
jq -s --arg vref "$VXLAN_REF" '
  def r3: if . == null then null else (. * 1000 | round / 1000) end;
  def ratio($a; $b): if $a != null and $b != null and $b > 0 then ($a / $b | r3) else null end;
  def by_label($l): map(select(.label==$l and .error==null)) | map({key:(.mtu|tostring), value:.}) | from_entries;
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def pooled($all; $l; $m): [$all[] | select(.label==$l and .error==null and (.mtu|tostring)==$m) | .tcp_1.runs[]?.gbps | select(. != null)];
  def pooled_cps($all; $l; $m): [$all[] | select(.label==$l and .error==null and (.mtu|tostring)==$m) | .cps.cps? | select(. != null)];
  . as $all
  | by_label("raw") as $raw | by_label("agent") as $ag | by_label("ovs_geneve") as $ovs | by_label($vref) as $vx
  | by_label("agent_fw") as $fw | by_label("agent_fw10") as $fw10 | by_label("agent_base") as $base
  | by_label("north_south") as $ns | by_label("vxlan_masq") as $mq
  | { vxlan_ref: $vref,
      rows: (map(. as $x | ($raw[$x.mtu|tostring]) as $r | ($ag[$x.mtu|tostring]) as $a
        # The ping went to server_ip, not through client_dst: the direct path.
        | ((.client_dst // .server_ip) != .server_ip) as $direct
        | (if $direct then null else .ping end) as $p
        | (if $direct then null else .tcp_1.ping_load end) as $pl | {
        mtu, path:.label, inner_mtu, error,
        gbps_1: .tcp_1.gbps, range_1: "\(.tcp_1.gbps_min)-\(.tcp_1.gbps_max)",
        gbps_P: .tcp_P.gbps, streams_P: .tcp_P.streams,
        ratio_raw_1: ratio(.tcp_1.gbps; $r.tcp_1.gbps),
        agent_over_this_1: ratio($a.tcp_1.gbps; .tcp_1.gbps),
        retrans_1: .tcp_1.retrans, busy_cores_1: .tcp_1.busy_cores,
        ping_via: (if $direct then "direct" else "path" end),
        rtt_p50_ms: $p.p50_ms, rtt_p99_ms: $p.p99_ms, ping_loss: (if $p then ($p.sent - $p.recv) else null end),
        rtt_ratio_p50: ratio($p.p50_ms; $r.ping.p50_ms),
        rtt_load_p50_ms: $pl.p50_ms, rtt_load_p99_ms: $pl.p99_ms,
        ping_load_loss: (if $pl then ($pl.sent - $pl.recv) else null end),
        cps: .cps.cps?, cps_p50_us: .cps.latency_us.p50?, cps_p99_us: .cps.latency_us.p99?,
        cps_failures: .cps.failures?, cps_busy: .cps.busy_cores?, cps_error: .cps.error?,
        bg: "\(.bg_busy_cores_before)/\(.bg_busy_cores_after)" })),
      targets: ([.[] | .mtu] | unique | map(tostring) | map(. as $m
        | pooled($all; "agent"; $m) as $pa | pooled($all; "agent_fw"; $m) as $pf | pooled($all; "agent_fw10"; $m) as $pf10
        | pooled($all; "agent_base"; $m) as $pb
        | pooled($all; "north_south"; $m) as $pns | pooled($all; "vxlan_masq"; $m) as $pmq
        | pooled($all; "agent_lb"; $m) as $plb | pooled($all; "haproxy"; $m) as $php
        | ($plb | median) as $mlb | ($php | median) as $mhp
        | (pooled_cps($all; "agent"; $m) | median) as $ca | (pooled_cps($all; "agent_lb"; $m) | median) as $clb
        | (pooled_cps($all; "haproxy"; $m) | median) as $chp
        | ($pns | median) as $mns | ($pmq | median) as $mmq
        | ($pa | median) as $ma | ($pf | median) as $mf | ($pf10 | median) as $mf10 | ($pb | median) as $mb | {
        mtu: ($m|tonumber),
        agent_gbps_1: $ag[$m].tcp_1.gbps, ovs_gbps_1: $ovs[$m].tcp_1.gbps, vxlan_gbps_1: $vx[$m].tcp_1.gbps,
        agent_over_ovs: ratio($ag[$m].tcp_1.gbps; $ovs[$m].tcp_1.gbps),
        agent_over_vxlan: ratio($ag[$m].tcp_1.gbps; $vx[$m].tcp_1.gbps),
        agent_over_raw: ratio($ag[$m].tcp_1.gbps; $raw[$m].tcp_1.gbps),
        agent_p50_over_ovs: ratio($ag[$m].ping.p50_ms; $ovs[$m].ping.p50_ms),
        agent_p50_ms: $ag[$m].ping.p50_ms, agent_p99_ms: $ag[$m].ping.p99_ms,
        agent_load_p50_ms: $ag[$m].tcp_1.ping_load.p50_ms, agent_load_p99_ms: $ag[$m].tcp_1.ping_load.p99_ms,
        vxlan_p50_ms: $vx[$m].ping.p50_ms, vxlan_p99_ms: $vx[$m].ping.p99_ms,
        vxlan_load_p50_ms: $vx[$m].tcp_1.ping_load.p50_ms, vxlan_load_p99_ms: $vx[$m].tcp_1.ping_load.p99_ms,
        agent_p50_over_vxlan: ratio($ag[$m].ping.p50_ms; $vx[$m].ping.p50_ms),
        agent_p99_over_vxlan: ratio($ag[$m].ping.p99_ms; $vx[$m].ping.p99_ms),
        agent_load_p50_over_vxlan: ratio($ag[$m].tcp_1.ping_load.p50_ms; $vx[$m].tcp_1.ping_load.p50_ms),
        agent_load_p99_over_vxlan: ratio($ag[$m].tcp_1.ping_load.p99_ms; $vx[$m].tcp_1.ping_load.p99_ms),
        pooled_agent_gbps_1: ($ma | r3), pooled_agent_n: ($pa | length),
        fw_gbps_1: ($mf | r3), fw_n: ($pf | length), fw10_gbps_1: ($mf10 | r3), fw10_n: ($pf10 | length),
        fw_over_agent: ratio($mf; $ma),
        fw10_over_agent: ratio($mf10; $ma),
        fw_over_fw10: ratio($mf; $mf10),
        base_gbps_1: ($mb | r3), base_n: ($pb | length), agent_over_base: ratio($ma; $mb),
        agent_p50_over_base: ratio($ag[$m].ping.p50_ms; $base[$m].ping.p50_ms),
        agent_p99_over_base: ratio($ag[$m].ping.p99_ms; $base[$m].ping.p99_ms),
        agent_load_p50_over_base: ratio($ag[$m].tcp_1.ping_load.p50_ms; $base[$m].tcp_1.ping_load.p50_ms),
        fw_p50_over_agent: ratio($fw[$m].ping.p50_ms; $ag[$m].ping.p50_ms),
        ns_gbps_1: ($mns | r3), ns_n: ($pns | length), masq_gbps_1: ($mmq | r3), masq_n: ($pmq | length),
        ns_over_agent: ratio($mns; $ma), ns_over_masq: ratio($mns; $mmq), masq_over_vxlan: ratio($mmq; $vx[$m].tcp_1.gbps),
        ns_p50_over_agent: ratio($ns[$m].ping.p50_ms; $ag[$m].ping.p50_ms),
        ns_p50_over_masq: ratio($ns[$m].ping.p50_ms; $mq[$m].ping.p50_ms),
        lb_gbps_1: ($mlb | r3), lb_n: ($plb | length), haproxy_gbps_1: ($mhp | r3), haproxy_n: ($php | length),
        lb_over_agent: ratio($mlb; $ma), lb_over_haproxy: ratio($mlb; $mhp),
        agent_cps: $ca, lb_cps: $clb, haproxy_cps: $chp,
        lb_over_agent_cps: ratio($clb; $ca), lb_over_haproxy_cps: ratio($clb; $chp) })) }
' "$RESULTS" >"$OUT_DIR/summary.json"

{
    echo "TCP Gb/s = iperf3 single stream, median over REPS=${REPS:-1} runs of ${DURATION:-5} s [min-max]; xP = -P ${PARALLEL:-2} (0 = not run). ping p50 / p99 = ping RTT median and 99th percentile on the idle path (${PINGS:-200} pings, ${PING_INTERVAL:-0.01} s apart); loaded = the same while the first single-stream run sends (from its warm-up's end to 0.5 s before its end; LOAD_PING=0: not run). agent / this = agent's single-stream Gb/s divided by this row's. busy = cores busy machine-wide during the single-stream run (of $(nproc)); bg = busy cores just before/after the path (> ~0.3: something else competed). Ping \"direct\": the row's iperf3 connected to a virtual server or a proxy while its pings went to the server itself (the direct path), so no RTT of its own is shown."
    echo
    echo "| MTU | path | inner MTU | TCP x1 Gb/s | x1 / raw | agent / this | TCP xP Gb/s | ping p50 / p99 ms | p50 / raw | loaded p50 / p99 ms | retrans x1 | busy x1 | bg |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    jq -r 'def pair($a; $b): if $a == null and $b == null then "-" else "\($a) / \($b)" end;
        .rows[] | if .error != null then "| \(.mtu) | \(.path) | - | \(.error) | | | | | | | | | |" else
        (if .ping_via == "direct" then ["direct", "direct", "direct"]
         else [pair(.rtt_p50_ms; .rtt_p99_ms), .rtt_ratio_p50, pair(.rtt_load_p50_ms; .rtt_load_p99_ms)] end) as [$idle, $p50r, $load] |
        "| \(.mtu) | \(.path) | \(.inner_mtu) | \(.gbps_1) [\(.range_1)] | \(.ratio_raw_1) | \(.agent_over_this_1) | \(.gbps_P) | \($idle) | \($p50r) | \($load) | \(.retrans_1) | \(.busy_cores_1) | \(.bg) |" end' "$OUT_DIR/summary.json"
    echo
    echo "Targets (issue 3: agent single stream >= 2x OVS userspace Geneve at both MTUs):"
    jq -r '.vxlan_ref as $v | .targets[] | "- MTU \(.mtu): agent \(.agent_gbps_1) Gb/s; agent / ovs_geneve = \(.agent_over_ovs) (target >= 2: \(if .agent_over_ovs == null then "n/a" elif .agent_over_ovs >= 2 then "MET" else "NOT MET" end)); agent / \($v) = \(.agent_over_vxlan); agent / raw = \(.agent_over_raw); ping p50 agent / ovs_geneve = \(.agent_p50_over_ovs)"' "$OUT_DIR/summary.json"
    if jq -e 'any(.targets[]; .agent_p50_ms != null and .vxlan_p50_ms != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "Latency (issue 16: ping p50 through the agent at most 1.5x kernel VXLAN's in the same run, idle and under load; p99 reported):"
        jq -r '.vxlan_ref as $v | .targets[] | select(.agent_p50_ms != null and .vxlan_p50_ms != null) |
            def met($r): if $r == null then "n/a" elif $r <= 1.5 then "MET" else "NOT MET" end;
            "- MTU \(.mtu): idle p50 agent \(.agent_p50_ms) / \($v) \(.vxlan_p50_ms) ms = \(.agent_p50_over_vxlan) (target <= 1.5: \(met(.agent_p50_over_vxlan))), p99 \(.agent_p99_ms) / \(.vxlan_p99_ms) = \(.agent_p99_over_vxlan); loaded p50 \(.agent_load_p50_ms) / \(.vxlan_load_p50_ms) ms = \(.agent_load_p50_over_vxlan) (target <= 1.5: \(met(.agent_load_p50_over_vxlan))), p99 \(.agent_load_p99_ms) / \(.vxlan_load_p99_ms) = \(.agent_load_p99_over_vxlan)"' "$OUT_DIR/summary.json"
    fi
    if jq -e 'any(.targets[]; .fw_gbps_1 != null or .fw10_gbps_1 != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "Firewall (issue 5: single stream with 10,000 rules loaded >= 90% of the same path with the firewall off; medians over all runs of each path at the MTU, n = runs):"
        jq -r '.targets[] | "- MTU \(.mtu): agent \(.pooled_agent_gbps_1) Gb/s (n=\(.pooled_agent_n)), agent_fw \(.fw_gbps_1) Gb/s (n=\(.fw_n)), agent_fw10 \(.fw10_gbps_1) Gb/s (n=\(.fw10_n)); agent_fw / agent = \(.fw_over_agent) (target >= 0.9: \(if .fw_over_agent == null then "n/a" elif .fw_over_agent >= 0.9 then "MET" else "NOT MET" end)); agent_fw10 / agent = \(.fw10_over_agent); agent_fw / agent_fw10 = \(.fw_over_fw10); ping p50 agent_fw / agent = \(.fw_p50_over_agent)"' "$OUT_DIR/summary.json"
    fi
    if jq -e 'any(.targets[]; .base_gbps_1 != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "Baseline (agent vs NSX_AGENT_BASE in this run; medians over all single-stream runs of each path at the MTU, n = runs):"
        jq -r '.targets[] | "- MTU \(.mtu): agent \(.pooled_agent_gbps_1) Gb/s (n=\(.pooled_agent_n)), agent_base \(.base_gbps_1) Gb/s (n=\(.base_n)); agent / agent_base = \(.agent_over_base); ping agent / agent_base: p50 \(.agent_p50_over_base), p99 \(.agent_p99_over_base), loaded p50 \(.agent_load_p50_over_base)"' "$OUT_DIR/summary.json"
    fi
    if jq -e 'any(.targets[]; .ns_gbps_1 != null or .masq_gbps_1 != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "North-south (issue 14: instance -> edge -> uplink -> internet host, single stream >= 0.8x east-west agent-to-agent of the same run; kernel reference vxlan_masq = VXLAN to a router namespace doing nftables masquerade; medians over all single-stream runs of each path at the MTU, n = runs):"
        jq -r '.vxlan_ref as $v | .targets[] | "- MTU \(.mtu): north_south \(.ns_gbps_1) Gb/s (n=\(.ns_n)), agent \(.pooled_agent_gbps_1) Gb/s (n=\(.pooled_agent_n)), vxlan_masq \(.masq_gbps_1) Gb/s (n=\(.masq_n)); north_south / agent = \(.ns_over_agent) (target >= 0.8: \(if .ns_over_agent == null then "n/a" elif .ns_over_agent >= 0.8 then "MET" else "NOT MET" end)); north_south / vxlan_masq = \(.ns_over_masq); ping p50 north_south / agent = \(.ns_p50_over_agent), north_south / vxlan_masq = \(.ns_p50_over_masq); vxlan_masq / \($v) = \(.masq_over_vxlan)"' "$OUT_DIR/summary.json"
    fi
    if jq -e 'any(.targets[]; .lb_gbps_1 != null or .haproxy_gbps_1 != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "Load balancer (issue 15: single stream to a virtual server >= 0.95x the direct path to its real server; HAProxy in TCP mode in the client namespace as the peer; medians over all single-stream runs of each path at the MTU, n = runs):"
        jq -r '.targets[] | "- MTU \(.mtu): agent_lb \(.lb_gbps_1) Gb/s (n=\(.lb_n)), agent (direct) \(.pooled_agent_gbps_1) Gb/s (n=\(.pooled_agent_n)), haproxy \(.haproxy_gbps_1) Gb/s (n=\(.haproxy_n)); agent_lb / agent = \(.lb_over_agent) (target >= 0.95: \(if .lb_over_agent == null then "n/a" elif .lb_over_agent >= 0.95 then "MET" else "NOT MET" end)); agent_lb / haproxy = \(.lb_over_haproxy)\(if .lb_cps == null and .agent_cps == null and .haproxy_cps == null then "" else "; new connections/s: agent_lb \(.lb_cps), agent \(.agent_cps), haproxy \(.haproxy_cps); agent_lb / haproxy cps = \(.lb_over_haproxy_cps); agent_lb / agent cps = \(.lb_over_agent_cps)" end)"' "$OUT_DIR/summary.json"
    fi
    if jq -e 'any(.rows[]; .cps != null or .cps_error != null)' "$OUT_DIR/summary.json" >/dev/null; then
        echo
        echo "New connections per second (nsx-connrate to port $CPS_PORT of the row's destination, after its throughput: ${CPS_CONCURRENCY:-4} connections at a time for ${CPS_DURATION:-5} s, each connect / 16-byte request / 16-byte response to EOF / close, the server closing first; p50/p99 = one whole transaction; busy = cores busy machine-wide during the run; failures by kind when any):"
        echo
        echo "| MTU | path | conn/s | p50 us | p99 us | failures | busy |"
        echo "|---|---|---|---|---|---|---|"
        jq -r '.rows[] | select(.cps != null or .cps_error != null) |
            if .cps_error != null then "| \(.mtu) | \(.path) | \(.cps_error) | | | | |" else
            "| \(.mtu) | \(.path) | \(.cps) | \(.cps_p50_us) | \(.cps_p99_us) | \(.cps_failures.total)\(if .cps_failures.total > 0 then " (" + (.cps_failures | del(.total) | with_entries(select(.value != 0)) | to_entries | map("\(.key) \(.value)") | join(", ")) + ")" else "" end) | \(.cps_busy) |" end' "$OUT_DIR/summary.json"
    fi
    echo
    echo "Wire checks (first encapsulated packet on the underlay bridge):"
    jq -r 'select(.wire != null) | "- mtu \(.mtu) \(.label): \(.wire | with_entries(select(.value != "")) | tostring)"' "$RESULTS"
    echo
    echo "Path stats (cumulative over the path's lifetime):"
    jq -r 'select(.path_stats != null) | "- mtu \(.mtu) \(.label): \(.path_stats | tostring)"' "$RESULTS"
} | tee "$OUT_DIR/summary.md"

exit $fail
