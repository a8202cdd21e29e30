#!/usr/bin/env bash
# Copied from ../shared/bench/measure.sh (the team's shared bench kit, 2026-11-22 baselines); adapted for scripts/bench.sh.
# measure.sh - the measurement HOOK: iperf3 (1 and P TCP streams) + ping RTT
# between two network namespaces, printed as ONE JSON object on stdout.
#
# This is the piece to reuse against the team's own agent: bring the agent up
# however you like, then
#     measure.sh CLIENT_NS SERVER_NS SERVER_IP [LABEL]
# or, from bash,  source measure.sh; measure_pair LABEL CLIENT_NS SERVER_NS SERVER_IP
#
# Env knobs (all optional):
#   DURATION=5      iperf3 seconds per run (plus OMIT warm-up seconds, not counted)
#   OMIT=1          iperf3 -O
#   PARALLEL=2      second iperf3 run uses -P $PARALLEL (0 disables it)
#   REPS=1          iperf3 repetitions per mode; the median Gbps is reported
#   PINGS=200       ping count;  PING_INTERVAL=0.01 (s);  PING_SIZE=56
#   LOAD_PING=1     also ping (every PING_INTERVAL) during the first
#                   single-stream run, from OMIT s in until 0.5 s before its
#                   end: tcp_1.ping_load, the RTT under load (0 = skip)
#   IPERF_PORT=5201;  IPERF_ARGS   extra iperf3 client args (e.g. "-A 0,1")
#   QUIET_WAIT=0    wait up to this many seconds for the machine to be idle
#                   (< QUIET_CORES busy cores, default 0.3) before measuring
# Every load is bounded: iperf3/ping run under `timeout`.

# ---- small helpers -------------------------------------------------------

# CPU counters "busy total" summed over all cores, from /proc/stat.
_cpu_sample() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t; exit}' /proc/stat; }

# _cpu_busy_cores "b0 t0" "b1 t1" -> average busy cores over the interval.
_cpu_busy_cores() {
    local nc; nc=$(nproc)
    awk -v a="$1" -v b="$2" -v nc="$nc" 'BEGIN{split(a,x," "); split(b,y," ");
        dt=y[2]-x[2]; if (dt<=0) {print "null"; exit} printf "%.2f", (y[1]-x[1])/dt*nc}'
}

# Busy cores over the next second (whole machine: anything else running here
# competes with the benchmark on a 2-core box, so it is recorded).
cpu_busy_1s() { local a b; a=$(_cpu_sample); sleep 1; b=$(_cpu_sample); _cpu_busy_cores "$a" "$b"; }

# Bounded wait for an idle machine; prints the last background sample.
wait_quiet() {
    local max=${QUIET_WAIT:-0} lim=${QUIET_CORES:-0.3} t0=$SECONDS bg
    while :; do
        bg=$(cpu_busy_1s)
        if awk -v b="$bg" -v l="$lim" 'BEGIN{exit !(b<l)}' || [ $((SECONDS - t0)) -ge "$max" ]; then
            echo "$bg"; return 0
        fi
    done
}

_median() { sort -g | awk '{v[NR]=$1} END{if(NR==0){print "null"; exit} if(NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# ping_stats NS IP -> JSON {sent,recv,avg,p50,p99,max} in ms (nearest-rank percentiles).
ping_stats() {
    local ns=$1 ip=$2 n=${PINGS:-200} iv=${PING_INTERVAL:-0.01} sz=${PING_SIZE:-56} out bound
    bound=$(awk -v n="$n" -v i="$iv" 'BEGIN{printf "%d", n*i*3 + 10}')
    out=$(timeout "$bound" ip netns exec "$ns" ping -n -c "$n" -i "$iv" -W 1 -s "$sz" "$ip" 2>&1)
    printf '%s\n' "$out" | awk -v sent="$n" '
        / time=/ { for(i=1;i<=NF;i++) if ($i ~ /^time=/) { sub("time=","",$i); v[++k]=$i+0 } }
        END {
            if (k == 0) { printf "{\"sent\":%d,\"recv\":0,\"avg_ms\":null,\"p50_ms\":null,\"p99_ms\":null,\"max_ms\":null}", sent; exit }
            # insertion sort is fine for a few hundred samples
            for (i=2;i<=k;i++) { x=v[i]; j=i-1; while (j>0 && v[j]>x) { v[j+1]=v[j]; j-- } v[j+1]=x }
            s=0; for (i=1;i<=k;i++) s+=v[i]
            p50=int(0.50*k); if (p50<0.50*k) p50++; p99=int(0.99*k); if (p99<0.99*k) p99++
            printf "{\"sent\":%d,\"recv\":%d,\"avg_ms\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}", sent, k, s/k, v[p50], v[p99], v[k]
        }'
}

# iperf_server_start NS IP -> starts iperf3 -s bound to IP inside NS; sets IPERF_SRV_PID.
iperf_server_start() {
    local ns=$1 ip=$2 port=${IPERF_PORT:-5201}
    ip netns exec "$ns" iperf3 -s -B "$ip" -p "$port" >/dev/null 2>&1 &
    IPERF_SRV_PID=$!
    for _ in $(seq 1 40); do   # bounded wait for the listen socket
        ip netns exec "$ns" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "measure: iperf3 server did not start in $ns" >&2; return 1
}

iperf_server_stop() {
    [ -n "${IPERF_SRV_PID:-}" ] || return 0
    kill "$IPERF_SRV_PID" 2>/dev/null; wait "$IPERF_SRV_PID" 2>/dev/null
    IPERF_SRV_PID=
}

# iperf_run NS IP STREAMS [PING_IP] -> JSON {gbps (median), gbps_min,
# gbps_max, retrans, busy_cores, runs:[...]} over REPS runs. With QUIET_WAIT>0
# every run first waits (bounded) for an idle machine and records what it saw
# (bg_cores). With PING_IP (and LOAD_PING=1), the first run also pings PING_IP
# from NS while iperf3 sends (ping_load_start): ping_load, ping_stats' JSON.
iperf_run() {
    local ns=$1 ip=$2 P=$3 ping_ip=${4:-} dur=${DURATION:-5} omit=${OMIT:-1} reps=${REPS:-1} port=${IPERF_PORT:-5201}
    local js gb rt c0 c1 bc bgr runs="" gbs="" rts="" bcs="" pl="null" plf="" plpid=""
    [ "${LOAD_PING:-1}" = 1 ] || ping_ip=
    for _ in $(seq 1 "$reps"); do
        bgr=null
        [ "${QUIET_WAIT:-0}" -gt 0 ] 2>/dev/null && bgr=$(QUIET_WAIT=$(( QUIET_WAIT < 30 ? QUIET_WAIT : 30 )) wait_quiet)
        if [ -n "$ping_ip" ]; then
            plf=$(mktemp "${TMPDIR:-/tmp}/ping-load.XXXXXX")
            ping_load_start "$ns" "$ping_ip" "$plf"
            plpid=$!
        fi
        c0=$(_cpu_sample)
        js=$(timeout $((dur + omit + 15)) ip netns exec "$ns" iperf3 -J -c "$ip" -p "$port" -t "$dur" -O "$omit" -P "$P" ${IPERF_ARGS:-} 2>/dev/null)
        c1=$(_cpu_sample)
        if [ -n "$ping_ip" ]; then
            wait "$plpid" 2>/dev/null
            pl=$(cat "$plf"); rm -f "$plf"
            [ -n "$pl" ] || pl=null
            ping_ip=
        fi
        bc=$(_cpu_busy_cores "$c0" "$c1")
        gb=$(printf '%s' "$js" | jq -r '(.end.sum_received.bits_per_second // empty) / 1e9 | . * 1000 | round / 1000' 2>/dev/null)
        rt=$(printf '%s' "$js" | jq -r '.end.sum_sent.retransmits // empty' 2>/dev/null)
        [ -n "$gb" ] || gb=null; [ -n "$rt" ] || rt=null
        runs="$runs${runs:+,}{\"gbps\":$gb,\"retrans\":$rt,\"busy_cores\":$bc,\"bg_cores\":$bgr}"
        [ "$gb" != null ] && gbs="$gbs$gb"$'\n'
        [ "$rt" != null ] && rts="$rts$rt"$'\n'
        bcs="$bcs$bc"$'\n'
        sleep 0.5
    done
    printf '{"streams":%d,"gbps":%s,"gbps_min":%s,"gbps_max":%s,"retrans":%s,"busy_cores":%s,"ping_load":%s,"runs":[%s]}' "$P" \
        "$(printf '%s' "$gbs" | _median)" "$(printf '%s' "$gbs" | sort -g | head -n1 | grep . || echo null)" \
        "$(printf '%s' "$gbs" | sort -g | tail -n1 | grep . || echo null)" \
        "$(printf '%s' "$rts" | _median)" "$(printf '%s' "$bcs" | _median)" "$pl" "$runs"
}

# ping_load_start NS IP FILE: in the background ($! = its PID), waits OMIT s
# (iperf3's warm-up, so the stream is up) and pings IP from NS every
# PING_INTERVAL until 0.5 s before the run ends (at least 10 pings), writing
# ping_stats' JSON to FILE.
ping_load_start() {
    local n
    n=$(awk -v d="${DURATION:-5}" -v i="${PING_INTERVAL:-0.01}" 'BEGIN{n=int((d-0.5)/i); print (n<10?10:n)}')
    { sleep "${OMIT:-1}"; PINGS=$n ping_stats "$1" "$2" >"$3"; } &
}

# ---- the hook --------------------------------------------------------------

# measure_pair LABEL CLIENT_NS SERVER_NS SERVER_IP
#   Prints one JSON object: label, background CPU (busy cores in the second
#   before and after; a 2-core box shared with anything else is noisy), ping,
#   tcp_1, tcp_P. The iperf3 client connects to CLIENT_DST when a path sets
#   it (a virtual server, a proxy), else to SERVER_IP; ping always goes to
#   SERVER_IP (a virtual server balances TCP and UDP, not ICMP).
measure_pair() {
    local label=$1 cns=$2 sns=$3 sip=$4 bg bga p1 pp="null" ping dst=${CLIENT_DST:-$4}
    # Connectivity first (bounded); ARP/flow setup happens here, not in the timings.
    timeout 15 ip netns exec "$cns" ping -n -c 3 -i 0.2 -W 1 -q "$sip" >/dev/null 2>&1 || \
        echo "measure: warning: $sip not answering ping from $cns" >&2
    bg=$(wait_quiet)
    ping=$(ping_stats "$cns" "$sip")
    iperf_server_start "$sns" "$sip" || { printf '{"label":"%s","error":"iperf3 server failed"}\n' "$label"; return 1; }
    p1=$(iperf_run "$cns" "$dst" 1 "$sip")
    if [ "${PARALLEL:-2}" -gt 0 ] 2>/dev/null; then pp=$(iperf_run "$cns" "$dst" "${PARALLEL:-2}"); fi
    iperf_server_stop
    bga=$(cpu_busy_1s)   # anything still busy afterwards was competing with us
    printf '{"label":"%s","client_ns":"%s","server_ns":"%s","server_ip":"%s","client_dst":"%s","bg_busy_cores_before":%s,"bg_busy_cores_after":%s,"ping":%s,"tcp_1":%s,"tcp_P":%s}\n' \
        "$label" "$cns" "$sns" "$sip" "$dst" "$bg" "$bga" "$ping" "$p1" "$pp"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    if [ $# -lt 3 ]; then
        echo "usage: $0 CLIENT_NS SERVER_NS SERVER_IP [LABEL]" >&2; exit 2
    fi
    trap iperf_server_stop EXIT
    measure_pair "${4:-custom}" "$1" "$2" "$3"
fi
