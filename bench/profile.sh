# shellcheck shell=bash disable=SC2086  # $pids and $IPERF_ARGS are word lists
# profile.sh - where the CPU goes on the agent path during a single-stream
# iperf3 run (PROFILE=1 scripts/bench.sh). Sourced by bench/run.sh while the
# agent path is up (CLI_NS, SRV_NS, SRV_IP, AGENT_PIDS set; the client
# connects to CLIENT_DST when the path sets it: agent_lb, haproxy).
#
# Prints (1) machine-wide CPU split (user / system / softirq / idle, in cores)
# from /proc/stat, (2) per-thread CPU (in % of one core, user+sys) of both
# agents and both iperf3 processes from /proc/PID/task/*/stat, and (3) if perf
# can sample here, the top symbols of the sending agent (perf record -e
# cpu-clock; hardware counters are usually missing in VMs), or of the
# receiving one with PROFILE_AGENT=2. Works without perf.

_prof_threads() {   # pids... -> "pid/tid comm utime stime" per thread
    local p t
    for p in "$@"; do
        for t in /proc/"$p"/task/*; do
            [ -r "$t/stat" ] || continue
            # comm may contain spaces: take the fields after the last ')'.
            awk -v id="$p/${t##*/}" -v comm="$(tr ' ' _ <"$t/comm" 2>/dev/null)" \
                '{ s=$0; sub(/^.*\) /, "", s); split(s, f, " "); print id, comm, f[12], f[13] }' "$t/stat"
        done
    done
}

_prof_cpu() { awk '/^cpu /{print $2+$3, $4, $7+$8, $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

profile_agent_path() {
    local mtu=$1 secs=${PROFILE_SECS:-4} hz pids srv cli t0 t1 c0 c1 perf_ok=0 perf_pid="" port=${IPERF_PORT:-5201}
    local pa=${PROFILE_AGENT:-1} role
    if [ "$pa" = 2 ]; then role="receiving agent vm2"; else pa=1; role="sending agent vm1"; fi
    hz=$(getconf CLK_TCK)
    echo "## profile: agent path, MTU $mtu, iperf3 single stream, ${secs} s sample"
    iperf_server_start "$SRV_NS" "$SRV_IP" || return 1
    timeout $((secs + 10)) ip netns exec "$CLI_NS" iperf3 -c "${CLIENT_DST:-$SRV_IP}" -p "$port" -t $((secs + 3)) ${IPERF_ARGS:-} >"$GVB_STATE/prof-iperf.txt" 2>&1 &
    cli=$!
    sleep 1.5
    srv=$(ip netns pids "$SRV_NS" 2>/dev/null | tr '\n' ' ')
    pids="${AGENT_PIDS[*]} $(ip netns pids "$CLI_NS" 2>/dev/null | tr '\n' ' ') $srv"
    if command -v perf >/dev/null && perf record -q -e cpu-clock -o "$GVB_STATE/perf-probe.data" -- true >/dev/null 2>&1; then
        perf_ok=1
        perf record -q -e cpu-clock -F 999 -p "${AGENT_PIDS[$((pa - 1))]}" -o "$GVB_STATE/perf.data" -- sleep "$secs" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    _prof_threads $pids >"$GVB_STATE/prof-a.txt"; c0=$(_prof_cpu); t0=$(date +%s.%N)
    sleep "$secs"
    _prof_threads $pids >"$GVB_STATE/prof-b.txt"; c1=$(_prof_cpu); t1=$(date +%s.%N)
    wait "$cli" 2>/dev/null
    iperf_server_stop
    grep -E 'sender|receiver' "$GVB_STATE/prof-iperf.txt" | sed 's/^/    iperf3: /'
    echo "machine ($(nproc) cores), in cores busy: "
    awk -v a="$c0" -v b="$c1" -v n="$(nproc)" 'BEGIN{split(a,x," "); split(b,y," "); dt=y[5]-x[5];
        printf "    user %.2f  system %.2f  softirq+irq %.2f  idle %.2f\n", (y[1]-x[1])/dt*n, (y[2]-x[2])/dt*n, (y[3]-x[3])/dt*n, (y[4]-x[4])/dt*n}'
    echo "threads (% of one core over the sample; user / sys):"
    awk -v hz="$hz" -v dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" '
        NR==FNR { u[$1]=$3; s[$1]=$4; next }
        ($1 in u) { du=($3-u[$1])/hz/dt*100; ds=($4-s[$1])/hz/dt*100;
                    if (du+ds >= 1) printf "    %-14s %-16s %5.1f%%  (%5.1f / %5.1f)\n", $1, $2, du+ds, du, ds }' \
        "$GVB_STATE/prof-a.txt" "$GVB_STATE/prof-b.txt" | sort -k3 -rn
    echo "    (agent pids: vm1=${AGENT_PIDS[0]} vm2=${AGENT_PIDS[1]}; the iperf3 client runs in $CLI_NS, the server in $SRV_NS: $srv)"
    if [ "$perf_ok" = 1 ]; then
        wait "$perf_pid" 2>/dev/null
        echo "perf (cpu-clock, $role, self time; USER-SPACE samples only: inside the user namespace perf cannot sample the kernel, whose share is the sys column above):"
        perf report -i "$GVB_STATE/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null | sed 's/ *- *- *$//' |
            grep -E '^ +[0-9.]+%' | head -n 30 | sed 's/^/    /'
    else
        echo "perf: cannot sample in this sandbox (skipped)"
    fi
}
