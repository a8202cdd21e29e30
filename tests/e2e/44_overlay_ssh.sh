#!/usr/bin/env bash
# tests/e2e/44_overlay_ssh.sh -- e2e test 44: ssh in overlay mode, as the
# seed describes NSX Cloud: "an sshd used on the underlay subnet starts on
# port 8888, and ssh to port 22 via the underlay is no longer possible".
# Two instances on one switch (static configs). vm1 also runs a "system"
# sshd on 0.0.0.0:22 in its own namespace. While vm1's agent runs: from
# vm2, vm1's underlay IP answers ssh on 8888, its overlay IP answers on 22
# through the overlay, and underlay:22 is refused (TCP reset) -- but not
# from vm1 itself; `ctl status` shows both listeners; a killed sshd is
# restarted; a new overlay IP (reload) moves the overlay sshd. After SIGTERM: no sshd of the agent's left, the nftables table
# gone, underlay:22 answers again. After SIGKILL the sshds keep running
# (the operator keeps 8888) until the restarted agent replaces them, or
# `nsx-agent cleanup` stops them. With
# ssh_underlay_port = 0, or sshd = "/nonexistent", port 22 is left alone
# (status says why). The agent's Prometheus endpoint (127.0.0.1:9464 in
# the instance's namespace) shows the same: nsx_agent_ssh_enabled,
# nsx_agent_sshd_up{listener}, nsx_agent_sshd_restarts_total{listener},
# nsx_agent_ssh_port22_blocked. The checks read the SSH banner only: sshd
# inside the sandbox's user namespace cannot complete a login (privilege
# separation).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 44 "$@"

SSHD=$(command -v sshd || echo /usr/sbin/sshd)
[[ -x "$SSHD" ]] || bail "OpenSSH server at $SSHD (scripts/test.sh installs openssh-server)"
for t in ssh-keygen nft curl; do
    command -v "$t" >/dev/null || bail "required tool $t is missing (scripts/test.sh installs it)"
done

# sshd's privilege-separation directory: /run is the host's here, so a
# tmpfs of the sandbox's own (it goes with the sandbox's mount namespace).
mkdir -p /run/sshd
mount -t tmpfs -o mode=0755 nsx-sshd /run/sshd || bail "tmpfs on /run/sshd"

TOPO_SSH=on # this test's agents start their sshds (tests/lib/topo.sh)
topo_new t44 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"

HOSTKEY=$TOPO_DIR/hostkey
ssh-keygen -q -t ed25519 -N '' -C nsx-e2e -f "$HOSTKEY" || bail "throw-away host key"
UL1=$(topo_underlay_ip vm1)
OV1=$(topo_overlay_ip vm1)
TABLE=nsx-agent-ssh-eth0

# ssh_config vmN NAME LINE...: vmN's config with LINEs added to [host]
# (and sshd_args with the throw-away host key unless a LINE sets it); prints
# the file's path.
ssh_config() {
    local vm=$1 name=$2 file extra
    shift 2
    file=$TOPO_DIR/$vm/$name.toml
    extra=$(printf '%s\n' "$@")
    grep -q '^sshd_args' <<<"$extra" || extra+=$'\n'"sshd_args = [\"-h\", \"$HOSTKEY\"]"
    awk -v extra="$extra" '{ print } /^\[host\]$/ { print extra }' "$(topo_config_path "$vm")" >"$file"
    printf '%s\n' "$file"
}

# banner NS IP PORT: the first line an ssh server there sends (bounded),
# empty if none.
banner() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 ip netns exec "$1" bash -c \
        'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 3 line <&3 && printf "%s\n" "$line"' \
        _ "$2" "$3" 2>/dev/null | tr -d '\r' || true
}

# is_ssh NS IP PORT: an OpenSSH banner answers there (retried, bounded).
is_ssh() {
    local i
    for ((i = 0; i < 10; i++)); do
        [[ "$(banner "$@")" == SSH-2.0-OpenSSH* ]] && return 0
        sleep 0.3
    done
    return 1
}

# refused NS IP PORT: a connection attempt gets "connection refused" (a
# TCP reset) within 2 s.
refused() {
    local out
    # shellcheck disable=SC2016 # expanded by the inner bash
    out=$(timeout 3 ip netns exec "$1" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$2" "$3" 2>&1) && return 1
    grep -qi refused <<<"$out"
}

# status_wait vmN JQ [SECS]: bounded wait until `ctl status | jq -e JQ` holds.
status_wait() {
    local vm=$1 q=$2 secs=${3:-15} i
    for ((i = 0; i < secs * 5; i++)); do
        agent_ctl "$vm" status 2>/dev/null | jq -e "$q" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

ssh_status() { agent_ctl "$1" status | jq -c '.ssh'; }

# agent_procs PATTERN: PIDs of processes whose command line has PATTERN.
agent_procs() { pgrep -f -- "$1" || true; }

# none_left PATTERN...: bounded wait (5 s) until no process matches any.
none_left() {
    local i p left
    for ((i = 0; i < 25; i++)); do
        left=""
        for p in "$@"; do left+=$(agent_procs "$p"); done
        [[ -z "$left" ]] && return 0
        sleep 0.2
    done
    echo "still running: $left" >&2
    ps -o pid,ppid,stat,args -p "$(tr '\n' ',' <<<"$left" | sed 's/,$//')" >&2 || true
    return 1
}

table_exists() { in_inst vm1 nft list table inet "$TABLE" >/dev/null 2>&1; }

# metrics vmN: the agent's GET /metrics ([host] metrics_listen's default,
# in the instance's namespace); empty if it does not answer.
metrics() { in_inst "$1" curl -s -m 5 http://127.0.0.1:9464/metrics 2>/dev/null || true; }
# metric vmN SERIES: the value of one series (`name{labels}` exactly as
# printed, or a bare name); empty if absent.
metric() { metrics "$1" | awk -v s="$2" '$1 == s { print $2; exit }'; }
SSHD_UP_UL='nsx_agent_sshd_up{listener="underlay"}'
SSHD_UP_OV='nsx_agent_sshd_up{listener="overlay"}'
RESTARTS_UL='nsx_agent_sshd_restarts_total{listener="underlay"}'

NS1=$(topo_ns vm1)
NS2=$(topo_ns vm2)
ROOT2=$(topo_root vm2)
UL_MARK="ListenAddress=$UL1:8888"
OV_MARK="ListenAddress=$OV1:22"

# --- the instance's own sshd, as a system would run it ---
sandbox_bg "$TOPO_DIR/system-sshd.log" ip netns exec "$NS1" \
    "$SSHD" -D -e -o ListenAddress=0.0.0.0:22 -o PidFile=none -h "$HOSTKEY"
SYSTEM_SSHD=$SANDBOX_LAST_PID
is_ssh "$NS2" "$UL1" 22 || bail "before the agent: vm1's system sshd answers on $UL1:22" \
    "$(cat "$TOPO_DIR/system-sshd.log")"
ok "before the agent: vm1's system sshd answers on $UL1:22"

# --- 1. the defaults: 8888 on the underlay, 22 on the overlay ---
CFG1=$(ssh_config vm1 ssh-on)
CFG2=$(ssh_config vm2 ssh-on)
agent_start vm1 "$CFG1" 2>"$TOPO_DIR/start1.err" || bail "agent vm1 starts" "$(cat "$TOPO_DIR/start1.err")"
agent_start vm2 "$CFG2" 2>"$TOPO_DIR/start2.err" || bail "agent vm2 starts" "$(cat "$TOPO_DIR/start2.err")"
for vm in vm1 vm2; do
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
done
RUNNING='.ssh.state == "on" and .ssh.underlay.state == "running" and .ssh.overlay.state == "running" and .ssh.port22_blocked_on_underlay == true'
if status_wait vm1 "$RUNNING"; then
    ok "vm1: both sshds listen and port 22 is refused on the underlay (ctl status)"
else
    bail "vm1: both sshds listen and port 22 is refused on the underlay (ctl status)" \
        "$(ssh_status vm1)" "$(tail -n 20 "$(agent_log vm1)")"
fi
got=$(agent_ctl vm1 status | jq -r '.ssh | "\(.underlay.listen) \(.overlay.listen) \(.overlay.netns) \(.underlay.restarts) \(.overlay.restarts)"')
check_eq "vm1 status: listens on $UL1:8888 and $OV1:22 in $(topo_root vm1), no restarts" \
    "$UL1:8888 $OV1:22 $(topo_root vm1) 0 0" "$got"
UL_PID=$(agent_ctl vm1 status | jq -r '.ssh.underlay.pid')
OV_PID=$(agent_ctl vm1 status | jq -r '.ssh.overlay.pid')
check "vm1 status: the underlay pid ($UL_PID) is an sshd listening on $UL1:8888" \
    grep -q "$UL_MARK" "/proc/$UL_PID/cmdline"
check "vm1 status: the overlay pid ($OV_PID) runs in the overlay netns" \
    test "$(stat -L -c %i "/proc/$OV_PID/ns/net")" = "$(stat -L -c %i "/run/netns/$(topo_root vm1)")"
check "vm2 -> vm1 underlay $UL1:8888: an SSH banner" is_ssh "$NS2" "$UL1" 8888
check "vm2 -> vm1 overlay $OV1:22 (through the overlay): an SSH banner" is_ssh "$ROOT2" "$OV1" 22
check "vm2 -> vm1 underlay $UL1:22: refused while the agent runs" refused "$NS2" "$UL1" 22
check "vm1 itself still reaches its system sshd (127.0.0.1:22)" is_ssh "$NS1" 127.0.0.1 22
rules=$(in_inst vm1 nft list table inet "$TABLE" 2>&1 || true)
check "vm1: table inet $TABLE refuses SYNs to 22 on nsx-vtep0.0 with a reset" \
    grep -qE 'iif "nsx-vtep0.0".*tcp dport 22.*reject with tcp reset' <<<"$rules"
check "vm2's agent runs its own: $(topo_underlay_ip vm2):8888 answers" is_ssh "$NS1" "$(topo_underlay_ip vm2)" 8888
check "agent log: sshd's own log is forwarded" grep -q "Server listening on $UL1 port 8888" "$(agent_log vm1)"
M=$(metrics vm1)
check_eq "metrics: nsx_agent_ssh_enabled 1" 1 "$(metric vm1 nsx_agent_ssh_enabled)"
check_eq "metrics: $SSHD_UP_UL 1, $SSHD_UP_OV 1" "1 1" "$(metric vm1 "$SSHD_UP_UL") $(metric vm1 "$SSHD_UP_OV")"
check_eq "metrics: nsx_agent_ssh_port22_blocked 1" 1 "$(metric vm1 nsx_agent_ssh_port22_blocked)"
check_eq "metrics: $RESTARTS_UL 0 (typed counter)" "0 counter" \
    "$(metric vm1 "$RESTARTS_UL") $(awk '$1 == "#" && $2 == "TYPE" && $3 == "nsx_agent_sshd_restarts" { print $4 }' <<<"$M")"

# --- 2. supervision: a killed underlay sshd comes back ---
kill -KILL "$UL_PID"
if status_wait vm1 "$RUNNING and .ssh.underlay.restarts == 1 and .ssh.underlay.pid != $UL_PID" 15; then
    ok "underlay sshd SIGKILLed: restarted (restarts 1, new pid), port 22 refused again"
else
    not_ok "underlay sshd SIGKILLed: restarted (restarts 1, new pid), port 22 refused again" \
        "$(ssh_status vm1)" "$(tail -n 10 "$(agent_log vm1)")"
fi
check "after the restart: $UL1:8888 answers again" is_ssh "$NS2" "$UL1" 8888
check "agent log: the exit was logged" grep -q "sshd exited" "$(agent_log vm1)"
n=$(metric vm1 "$RESTARTS_UL")
if [[ "$n" =~ ^[0-9]+$ && $n -ge 1 ]]; then
    ok "metrics: $RESTARTS_UL >= 1 after the SIGKILL ($n)"
else
    not_ok "metrics: $RESTARTS_UL >= 1 after the SIGKILL" "got: '$n'" "$(metrics vm1 | grep ssh)"
fi
check_eq "metrics: $SSHD_UP_UL 1 again, port 22 blocked again" "1 1" \
    "$(metric vm1 "$SSHD_UP_UL") $(metric vm1 nsx_agent_ssh_port22_blocked)"

# --- 3. a new overlay IP (SIGHUP reload) moves the overlay sshd ---
# overlay_move IP: vm1's config with port IP (in place), SIGHUP, bounded
# wait until the overlay sshd listens there.
overlay_move() {
    sed -i "/^\[port\]\$/,/^\$/ s/^ip = .*/ip = \"$1\"/" "$CFG1"
    kill -HUP "$(agent_pid vm1)"
    status_wait vm1 ".last_reload.ok == true and .ssh.overlay.listen == \"$1:22\" and .ssh.overlay.state == \"running\""
}
if overlay_move 192.168.100.5; then
    ok "reload with port IP 192.168.100.5: the overlay sshd moves there"
else
    not_ok "reload with port IP 192.168.100.5: the overlay sshd moves there" "$(agent_ctl vm1 status | jq -c '{last_reload, ssh}')"
fi
check "the moved overlay sshd answers on 192.168.100.5:22 (from vm1's overlay netns)" \
    is_ssh "$(topo_root vm1)" 192.168.100.5 22
check "... and the old one is gone" none_left "$OV_MARK"
if overlay_move "$OV1"; then
    ok "reload back to $OV1: the overlay sshd follows"
else
    not_ok "reload back to $OV1: the overlay sshd follows" "$(agent_ctl vm1 status | jq -c '{last_reload, ssh}')"
fi
check "vm2 -> vm1 overlay $OV1:22 answers again" is_ssh "$ROOT2" "$OV1" 22
check_eq "the moves were no restarts" 0 "$(agent_ctl vm1 status | jq -r '.ssh.overlay.restarts')"

# --- 4. SIGTERM: nothing of it left, port 22 back ---
rc=0
agent_stop vm1 || rc=$?
check_eq "vm1: agent exits 0 on SIGTERM" 0 "$rc"
check "after SIGTERM: no sshd the agent started is left" none_left "$UL_MARK" "$OV_MARK"
if table_exists; then not_ok "after SIGTERM: table inet $TABLE is gone"; else ok "after SIGTERM: table inet $TABLE is gone"; fi
check "after SIGTERM: $UL1:22 answers again (the system sshd)" is_ssh "$NS2" "$UL1" 22
check "after SIGTERM: $UL1:8888 is refused" refused "$NS2" "$UL1" 8888
check "the system sshd was never touched" sandbox_alive "$SYSTEM_SSHD"

# --- 5. SIGKILL: the sshds outlive the agent; a restarted agent replaces
# them, `nsx-agent cleanup` stops them ---
agent_start vm1 "$CFG1" 2>"$TOPO_DIR/start3.err" || bail "agent vm1 starts again" "$(cat "$TOPO_DIR/start3.err")"
status_wait vm1 "$RUNNING" || bail "vm1 (again): both sshds listen" "$(ssh_status vm1)"
pids=$(agent_ctl vm1 status | jq -r '"\(.ssh.underlay.pid) \(.ssh.overlay.pid)"')
agent_kill vm1
alive=0
for p in $pids; do sandbox_alive "$p" && alive=$((alive + 1)); done
check_eq "after SIGKILL: both sshds ($pids) still run" 2 "$alive"
agent_start vm1 "$CFG1" 2>"$TOPO_DIR/start4.err" || bail "agent vm1 restarts after SIGKILL" "$(cat "$TOPO_DIR/start4.err")"
if status_wait vm1 "$RUNNING"; then
    ok "restart after SIGKILL: both sshds listen again, port 22 refused"
else
    not_ok "restart after SIGKILL: both sshds listen again, port 22 refused" "$(ssh_status vm1)"
fi
gone=1
for p in $pids; do sandbox_alive "$p" && gone=0; done
check_eq "restart after SIGKILL: the killed agent's sshds ($pids) were stopped first" 1 "$gone"
check "restart after SIGKILL: $UL1:8888 answers" is_ssh "$NS2" "$UL1" 8888
pids=$(agent_ctl vm1 status | jq -r '"\(.ssh.underlay.pid) \(.ssh.overlay.pid)"')
agent_kill vm1
check "after SIGKILL: the underlay sshd still answers (the operator keeps 8888)" is_ssh "$NS2" "$UL1" 8888
check "after SIGKILL: the agent's state file records both sshds and the table" \
    jq -e --arg t "$TABLE" '(.ssh.sshds | length) == 2 and .ssh.nft_table == $t' "$TOPO_DIR/vm1/state/host-state.json"
out=$(timeout 60 nsenter --net="/run/netns/$NS1" unshare --mount --propagation unchanged \
    sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
    "$NSX_AGENT" cleanup --config "$CFG1" 2>&1) && rc=0 || rc=$?
check_eq "nsx-agent cleanup after SIGKILL exits 0" 0 "$rc"
[[ $rc -eq 0 ]] || diag "$out"
gone=1
for p in $pids; do sandbox_alive "$p" && gone=0; done
check_eq "cleanup stopped both sshds ($pids)" 1 "$gone"
check "cleanup: no sshd the agent started is left" none_left "$UL_MARK" "$OV_MARK"
if table_exists; then not_ok "cleanup: table inet $TABLE is gone"; else ok "cleanup: table inet $TABLE is gone"; fi
check "cleanup: $UL1:22 answers again" is_ssh "$NS2" "$UL1" 22
got=$(in_inst vm1 ip -j addr show dev eth0 | jq -r '[.[0].addr_info[] | select(.family=="inet") | .local] | join(",")')
check_eq "cleanup: vm1's eth0 has its underlay IP back" "$UL1" "$got"

# --- 6. ssh_underlay_port = 0: no 8888, port 22 left alone ---
CFG=$(ssh_config vm1 ul-off "ssh_underlay_port = 0")
agent_start vm1 "$CFG" 2>"$TOPO_DIR/start5.err" || bail "agent vm1 (underlay ssh off) starts" "$(cat "$TOPO_DIR/start5.err")"
if status_wait vm1 '.ssh.state == "on" and .ssh.underlay.state == "off" and .ssh.overlay.state == "running" and .ssh.port22_blocked_on_underlay == false'; then
    ok "ssh_underlay_port = 0: status shows the underlay sshd off, the overlay one running, 22 not refused"
else
    not_ok "ssh_underlay_port = 0: status shows the underlay sshd off, the overlay one running, 22 not refused" "$(ssh_status vm1)"
fi
check_eq "ssh_underlay_port = 0: status says why" '"ssh_underlay_port = 0"' "$(agent_ctl vm1 status | jq -c '.ssh.underlay.reason')"
check "ssh_underlay_port = 0: $UL1:22 answers (the system sshd)" is_ssh "$NS2" "$UL1" 22
check "ssh_underlay_port = 0: $UL1:8888 is refused" refused "$NS2" "$UL1" 8888
check "ssh_underlay_port = 0: the overlay sshd answers on $OV1:22" is_ssh "$ROOT2" "$OV1" 22
check_eq "ssh_underlay_port = 0 metrics: only the overlay listener, up; port 22 not blocked" \
    'nsx_agent_sshd_up{listener="overlay"} 1|0' \
    "$(metrics vm1 | grep '^nsx_agent_sshd_up{' | paste -sd,)|$(metric vm1 nsx_agent_ssh_port22_blocked)"
if table_exists; then not_ok "ssh_underlay_port = 0: no table inet $TABLE"; else ok "ssh_underlay_port = 0: no table inet $TABLE"; fi
rc=0
agent_stop vm1 || rc=$?
check_eq "ssh_underlay_port = 0: agent exits 0 on SIGTERM" 0 "$rc"
check "ssh_underlay_port = 0: no sshd left after SIGTERM" none_left "$OV_MARK"

# --- 7. no sshd binary: the feature is off, nothing changes ---
CFG=$(ssh_config vm1 no-sshd 'sshd = "/nonexistent"')
agent_start vm1 "$CFG" 2>"$TOPO_DIR/start6.err" || bail "agent vm1 (no sshd) starts" "$(cat "$TOPO_DIR/start6.err")"
if status_wait vm1 '.ssh == {"state": "off", "reason": "no sshd at /nonexistent"}'; then
    ok "sshd = /nonexistent: status ssh is {state: off, reason: no sshd at /nonexistent}"
else
    not_ok "sshd = /nonexistent: status ssh is {state: off, reason: no sshd at /nonexistent}" "$(ssh_status vm1)"
fi
check "sshd = /nonexistent: logged once at info" \
    bash -c "[[ \$(grep -c 'no sshd at /nonexistent: underlay ssh on 8888 is off' '$(agent_log vm1)') -eq 1 ]]"
check "sshd = /nonexistent: $UL1:22 answers (the system sshd)" is_ssh "$NS2" "$UL1" 22
check "sshd = /nonexistent: $UL1:8888 is refused" refused "$NS2" "$UL1" 8888
check "sshd = /nonexistent: $OV1:22 is refused through the overlay" refused "$ROOT2" "$OV1" 22
check_eq "sshd = /nonexistent metrics: ssh_enabled 0, port22_blocked 0, no listener series" "0 0 0" \
    "$(metric vm1 nsx_agent_ssh_enabled) $(metric vm1 nsx_agent_ssh_port22_blocked) $(metrics vm1 | grep -c '^nsx_agent_sshd_' || true)"
if table_exists; then not_ok "sshd = /nonexistent: no table inet $TABLE"; else ok "sshd = /nonexistent: no table inet $TABLE"; fi
for vm in vm1 vm2; do
    rc=0
    agent_stop "$vm" || rc=$?
    check_eq "$vm: agent exits 0 on SIGTERM" 0 "$rc"
done
check "at the end: no sshd either agent started is left" none_left "ListenAddress=10.99.3." "ListenAddress=192.168.100."
sandbox_kill "$SYSTEM_SSHD" 3
tap_done
