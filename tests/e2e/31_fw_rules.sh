#!/usr/bin/env bash
# tests/e2e/31_fw_rules.sh -- e2e test 31 (issue 5, tests 2, 5, 6 and the
# visibility views): the distributed firewall in overlay mode, driven from
# the gateway with groups computed from instance tags.
#  - default rule reject + "allow tcp/22 (and tcp/5001) from group admins to
#    group servers": vm3 (admin) reaches vm1 (server) on 22 and gets its
#    echo back; vm2 (client) is refused at once ("Connection refused", a
#    RST), vm3 -> vm1:23 and vm1 -> vm3:22 are refused too; a UDP datagram
#    gets ICMP port unreachable; a ping gets "administratively prohibited";
#  - getrules / getaddrsets / getflows in the seed's vsipioctl format, rule
#    hit counters, the packet log line (dfwpktlogs.log format);
#  - widening the rules (an extra rule) leaves a live TCP stream alone;
#    narrowing them (tcp/5001 removed) cuts it within 1 s;
#  - retagging vm2 role=client -> role=admin at the gateway lets it in
#    within 1 s.
# Both bounds run from the gateway's log line for the change (it noticed
# the CLI's commit, or took the API's), not from spawning the CLI.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 31 "$@"

gw_init_bin || bail "nsx-gateway binary"
gw_topology t31 1500 vm1 vm2 vm3
topo_wait_underlay || bail "underlay up"
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"

# state_with EXTRA_RULES: the sample switches + the ssh policy + EXTRA_RULES.
state_with() { gw_state_firewall "$TOPO_DIR/state.yaml" "$1"; }
STREAM_RULE='        - id: 1007
          sources: [group:admins]
          destinations: [group:servers]
          services: [{protocol: tcp, port: 5001}]
          action: accept'
EXTRA_RULE='        - id: 1008
          services: [{protocol: udp, port: 53}]
          action: accept'

state_with "$STREAM_RULE"
gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1 || bail "apply the firewall state" "$(cat "$TOPO_DIR/apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
declare -A ROLE=([vm1]=server [vm2]=client [vm3]=admin)
for vm in vm1 vm2 vm3; do
    GW_TAGS_EXTRA="role = \"${ROLE[$vm]}\"" gw_agent_config "$vm" web
    gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" || bail "agent $vm starts" "$(cat "$TOPO_DIR/$vm/start.err")"
done
declare -A IP=()
for vm in vm1 vm2 vm3; do
    gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm ESTABLISHED"
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
    IP[$vm]=$(gw_instance "$vm" .ip)
done
diag "$(gw_cli get instances)"

# The servers: an echo service on 22 and a sink on 5001 in vm1's overlay netns.
sandbox_bg "$TOPO_DIR/echo.log" in_overlay vm1 timeout 120 socat TCP-LISTEN:22,fork,reuseaddr EXEC:cat
sandbox_bg "$TOPO_DIR/sink.log" in_overlay vm1 timeout 120 socat -u TCP-LISTEN:5001,fork,reuseaddr OPEN:/dev/null
for ((i = 0; i < 50; i++)); do
    in_overlay vm1 ss -ltn | grep -q ':5001 ' && break
    sleep 0.1
done

# tcp_echo vmN PORT: send a line to vm1:PORT, print the answer (or the error).
tcp_echo() {
    echo "hello from $1" | in_overlay "$1" timeout 5 socat -t 1 - "TCP:${IP[vm1]}:$2,connect-timeout=3" 2>&1
}
# refused_ms vmN DST PORT: milliseconds until the connect is refused ("" if
# not refused). "Connection refused" is an answer (a RST); a dropped SYN
# gives "Connection timed out" after connect-timeout (3 s) instead, so the
# text alone tells "at once"; the time is shown, not bounded (it includes
# spawning ip and socat, which a loaded machine slows).
refused_ms() {
    local t0 out
    t0=$(date +%s%N)
    out=$(in_overlay "$1" timeout 5 socat -u /dev/null "TCP:$2:$3,connect-timeout=3" 2>&1 || true)
    grep -q 'Connection refused' <<<"$out" && echo $((($(date +%s%N) - t0) / 1000000))
}

# --- test 2: only the allowed service works, in both directions for replies
check_eq "vm3 (admin) -> vm1:22 gets its echo back" "hello from vm3" "$(tcp_echo vm3 22)"
ms=$(refused_ms vm2 "${IP[vm1]}" 22 || true)
check "vm2 (client) -> vm1:22 is refused at once (RST, ${ms:-no} ms)" test -n "$ms"
ms=$(refused_ms vm3 "${IP[vm1]}" 23 || true)
check "vm3 -> vm1:23 is refused at once (${ms:-no} ms)" test -n "$ms"
ms=$(refused_ms vm1 "${IP[vm3]}" 22 || true)
check "vm1 -> vm3:22 (not the allowed direction) is refused (${ms:-no} ms)" test -n "$ms"
# UDP: ICMP port unreachable comes back to vm3 (vm3's own firewall rejects
# it on the way out and answers for vm1), captured on vm3's nsx-eth0.
sandbox_bg "$TOPO_DIR/udp.dumpcap.log" in_overlay vm3 timeout 20 dumpcap -P -i nsx-eth0 -w "$TOPO_DIR/udp.pcap"
cap=$SANDBOX_LAST_PID
for ((i = 0; i < 50; i++)); do
    grep -q "Capturing on" "$TOPO_DIR/udp.dumpcap.log" 2>/dev/null && break
    sleep 0.1
done
# A datagram every 0.3 s until the answer shows in the capture (dumpcap
# writes as it goes), bounded: 20 datagrams.
UNREACH="icmp.type == 3 && icmp.code == 3 && udp.dstport == 9999"
got=""
for ((i = 0; i < 20; i++)); do
    echo ping | in_overlay vm3 timeout 2 socat -u - "UDP:${IP[vm1]}:9999" 2>/dev/null || true
    sleep 0.3
    got=$(cap_fields "$TOPO_DIR/udp.pcap" "$UNREACH" ip.src ip.dst 2>/dev/null | tail -n 1 || true)
    [[ -n "$got" ]] && break
done
kill -INT "$cap" 2>/dev/null || true
sandbox_wait_exit "$cap" 5 || true
got=$(cap_fields "$TOPO_DIR/udp.pcap" "$UNREACH" ip.src ip.dst | tail -n 1)
check "a UDP datagram vm3 -> vm1:9999 is answered with ICMP port unreachable from vm1's address (tshark)" \
    grep -qF "${IP[vm1]}" <<<"$got"
diag "ICMP port unreachable: $got"
out=$(overlay_ping vm3 "${IP[vm1]}" -c 1 -W 2 2>&1 || true)
check "ping vm3 -> vm1 is rejected (ICMP administratively prohibited)" grep -qiE 'filtered|prohibited' <<<"$out"
diag "$(grep -iE 'filtered|prohibited' <<<"$out" | head -n 1)"

# --- visibility (seed formats)
rules=$(agent_ctl vm1 getrules)
diag "$rules"
check "getrules: rule 1006 as the seed prints it" grep -qF \
    "rule 1006 at 1 inout protocol tcp from addrset grp-admins to addrset grp-servers port 22 accept with log;" <<<"$rules"
check "getrules: the default rule is last, reject with log" grep -qE \
    "rule 1002 at [0-9]+ inout protocol any from any to any reject with log;" <<<"$rules"
sets=$(agent_ctl vm1 getaddrsets)
check "getaddrsets: grp-admins holds vm3's overlay address" \
    bash -c "grep -A3 '^addrset grp-admins {' <<<\"\$1\" | grep -qF 'ip ${IP[vm3]},'" _ "$sets"
# a live ssh-like session for getflows
sandbox_bg "$TOPO_DIR/session.log" bash -c "sleep 20 | ip netns exec $(topo_root vm3) timeout 30 socat - TCP:${IP[vm1]}:22"
# Bounded wait (10 s) until vm1's firewall tracks the session as established.
for ((i = 0; i < 100; i++)); do
    agent_ctl vm1 getflows 2>/dev/null | grep -qE 'ssh\(22\) [0-9]+ EST' && break
    sleep 0.1
done
flows=$(agent_ctl vm1 getflows)
diag "$flows"
check "getflows: the header line of the seed" grep -qE \
    '^Count retrieved from kernel active\(L3,L4\)=[0-9]+, active\(L2\)\+inactive\(L3,L4\)=[0-9]+, drop\(L2,L3,L4\)=0$' <<<"$flows"
check "getflows: vm3 -> vm1:ssh(22) established, rule 1006, direction in" grep -qE \
    "^[0-9a-f]{16} Active tcp 0800 1 1006 0 0  ${IP[vm3]//./\\.}:Unknown\([0-9]+\) ${IP[vm1]//./\\.}:ssh\(22\) [0-9]+ EST [0-9]+ [0-9]+ [0-9]+ [0-9]+$" <<<"$flows"
stats=$(agent_ctl vm1 firewall-stats)
check "firewall-stats: rule 1006 counted sessions" \
    jq -e '.rules[] | select(.id == 1006) | .sessions >= 2' <<<"$stats"
check "firewall-stats: rejects counted on vm1" jq -e '.rejects >= 1' <<<"$stats"
# The packet-log writer runs once a second: bounded waits (10 s) for the lines.
check "packet log (vm1): the accepted SYN from vm3, dfwpktlogs format" log_wait "$TOPO_DIR/vm1/dfwpktlogs.log" 0 \
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z INET match PASS domain-c25/1006 IN 60 TCP ${IP[vm3]//./\\.}/[0-9]+->${IP[vm1]//./\\.}/22 S$"
check "packet log (vm2): its own SYN to vm1:22 refused on the way out by the default rule" log_wait "$TOPO_DIR/vm2/dfwpktlogs.log" 0 \
    "INET match REJECT domain-c25/1002 OUT 60 TCP ${IP[vm2]//./\\.}/[0-9]+->${IP[vm1]//./\\.}/22 S$"
diag "$(tail -n 3 "$TOPO_DIR/vm1/dfwpktlogs.log")"

# apply_and_wait: apply state.yaml, wait until vm1 and vm3 acked their new versions.
apply_and_wait() {
    gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1 || { cat "$TOPO_DIR/apply.log"; return 1; }
    local vm v
    for vm in vm1 vm3; do
        v=$(gw_desired_version "$vm") || return 1
        gw_wait_applied "$vm" "$v" 10 || return 1
    done
}
# stream_start: vm3 streams zeros to vm1:5001 (bounded); PID in STREAM;
# bounded wait (10 s) until the connection is established.
stream_start() {
    sandbox_bg "$TOPO_DIR/stream.log" in_overlay vm3 timeout 60 socat -u /dev/zero "TCP:${IP[vm1]}:5001"
    STREAM=$SANDBOX_LAST_PID
    for ((i = 0; i < 100; i++)); do
        in_overlay vm3 ss -tnH state established "( dport = :5001 )" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
}
rx_bytes() { agent_counter vm1 '.port.tx_bytes'; }

# --- test 5: widening leaves a live stream alone
stream_start
check "a TCP stream vm3 -> vm1:5001 is running (established)" \
    bash -c "kill -0 $STREAM && ip netns exec $(topo_root vm3) ss -tnH state established '( dport = :5001 )' | grep -q ."
state_with "$STREAM_RULE
$EXTRA_RULE"
apply_and_wait || bail "the widened rules are applied"
b0=$(rx_bytes)
b1=$(counter_at_least vm1 .port.tx_bytes $((b0 + 1048577)))
flows=0
[[ "$b1" =~ ^[0-9]+$ && $((b1 - b0)) -gt 1048576 ]] && sandbox_alive "$STREAM" && flows=1
check_eq "after widening the stream still runs (vm1 received more than 1 MiB more: $b0 -> $b1)" 1 "$flows"

# --- test 5: narrowing cuts it within 1 s of the gateway seeing the change
# (its log line "store version moved", once its store watch noticed the
# CLI's commit) -- not of spawning the CLI or of the test's polls. The
# stream's end is taken by a watcher polling its process every 20 ms.
sandbox_bg "$TOPO_DIR/stream-end.log" bash -c \
    'for ((i = 0; i < 1500; i++)); do st=""; read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null; [[ -n $st && $st != Z ]] || break; sleep 0.02; done; date +%s%3N' _ "$STREAM"
ENDW=$SANDBOX_LAST_PID
gmark=$(log_mark "$GW_LOG")
state_with "$EXTRA_RULE"
apply_and_wait || bail "the narrowed rules are applied"
sandbox_wait_exit "$STREAM" 10 || true
sandbox_wait_exit "$ENDW" 5 || true
seen=$(log_wait "$GW_LOG" "$gmark" 'store version moved' 5 || true)
end_ms=$(tail -n 1 "$TOPO_DIR/stream-end.log" 2>/dev/null || true)
cut_ms=""
[[ -n "$seen" && "$end_ms" =~ ^[0-9]+$ ]] && cut_ms=$((end_ms - $(log_ms "$seen")))
diag "gateway: $seen"
check "narrowing (tcp/5001 removed) cuts the live stream within 1 s of the gateway seeing it (${cut_ms:-?} ms)" \
    bash -c "! kill -0 $STREAM 2>/dev/null && [[ -n '$cut_ms' && $((${cut_ms:-99999})) -le 1000 ]]"
check "the stream ended with a reset, not a timeout" grep -qiE 'reset|refused' "$TOPO_DIR/stream.log"
diag "stream: $(tail -n 1 "$TOPO_DIR/stream.log")"
stats=$(agent_ctl vm3 firewall-stats)
diag "vm3 firewall: recheck_removed=$(jq .recheck_removed <<<"$stats") rejects=$(jq .rejects <<<"$stats")"

# --- test 6: retagging vm2 to role=admin lets it in within 1 s of the
# gateway seeing the change (its log line), up to the start of the first
# attempt that gets through (attempts follow each other every 50 ms plus
# a refused attempt's own time).
check "before the retag vm2 is refused on 22" bash -c "[[ -n '$(refused_ms vm2 "${IP[vm1]}" 22 || true)' ]]"
gmark=$(log_mark "$GW_LOG")
gw_api PATCH /api/v1/instances/vm2 '{"tags": {"role": "admin"}}' >"$TOPO_DIR/patch.json"
check_eq "PATCH vm2 role=admin: HTTP 200" 200 "$GW_HTTP_CODE"
got=""
for ((i = 0; i < 200; i++)); do
    ta=$(date +%s%3N)
    got=$(tcp_echo vm2 22 || true)
    [[ "$got" == "hello from vm2" ]] && break
    sleep 0.05
done
seen=$(log_wait "$GW_LOG" "$gmark" 'store version moved' 5 || true)
follow_ms=""
[[ -n "$seen" ]] && follow_ms=$((ta - $(log_ms "$seen")))
diag "gateway: $seen"
check "after the retag vm2 reaches vm1:22 within 1 s of the gateway seeing it (${follow_ms:-?} ms)" \
    bash -c "[[ '$got' == 'hello from vm2' && -n '$follow_ms' && ${follow_ms:-99999} -le 1000 ]]"
check "vm1's grp-admins now holds vm2's address" \
    bash -c "agent_ctl() { timeout 5 '$NSX_AGENT' ctl --socket '$(topo_socket vm1)' \"\$@\"; }; agent_ctl getaddrsets | grep -A4 '^addrset grp-admins {' | grep -qF 'ip ${IP[vm2]},'"
tap_done
