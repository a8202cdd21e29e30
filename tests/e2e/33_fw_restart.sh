#!/usr/bin/env bash
# tests/e2e/33_fw_restart.sh -- e2e test 33 (issue 5, test 9): connection
# state follows the instance across a planned agent restart. With "TCP
# strict" on (a TCP connection must start with a SYN, so nothing is picked
# up mid-stream) and a default-reject policy, a TCP stream vm3 -> vm1:5001
# runs; vm1's agent (on_stop = keep) gets SIGTERM, saves its connection
# table, and starts again: the table is restored and the stream goes on
# (same flow id in getflows, counters carried over). A control stream whose
# connection was NOT in the saved table (the file removed) is stalled after
# the restart (its segments dropped as "no connection"), which shows the
# restored entry is what kept the first one alive.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 33 "$@"

gw_init_bin || bail "nsx-gateway binary"
gw_topology t33 1500 vm1 vm3
topo_wait_underlay || bail "underlay up"
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
gw_state_sample "$TOPO_DIR/state.yaml"
cat >>"$TOPO_DIR/state.yaml" <<'EOF'
firewall:
  groups:
    - {name: admins, match: {tags: {role: admin}}}
    - {name: servers, match: {tags: {role: server}}}
  sections:
    - name: domain-c25
      rules:
        - id: 1007
          sources: [group:admins]
          destinations: [group:servers]
          services: [{protocol: tcp, port: "5001-5002"}]
          action: accept
  default_rule: {id: 1002, action: reject}
  tcp_strict: true
EOF
gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1 || bail "apply" "$(cat "$TOPO_DIR/apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
GW_TAGS_EXTRA='role = "server"' GW_HOST_EXTRA='on_stop = "keep"' gw_agent_config vm1 web
GW_TAGS_EXTRA='role = "admin"' gw_agent_config vm3 web
for vm in vm1 vm3; do
    gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" || bail "agent $vm starts" "$(cat "$TOPO_DIR/$vm/start.err")"
    gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm ESTABLISHED"
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
done
ip1=$(gw_instance vm1 .ip)

sandbox_bg "$TOPO_DIR/sink1.log" in_overlay vm1 timeout 90 socat -u TCP-LISTEN:5001,reuseaddr OPEN:/dev/null
sandbox_bg "$TOPO_DIR/sink2.log" in_overlay vm1 timeout 90 socat -u TCP-LISTEN:5002,reuseaddr OPEN:/dev/null
for ((i = 0; i < 50; i++)); do
    in_overlay vm1 ss -ltn | grep -q ':5002 ' && break
    sleep 0.1
done
# Paced streams (pv-free: a shell loop writing 64 KiB every 50 ms), bounded.
stream() {
    sandbox_bg "$TOPO_DIR/stream$1.log" in_overlay vm3 timeout 60 bash -c \
        "exec 3<>/dev/tcp/$ip1/$1; for ((i = 0; i < 1000; i++)); do head -c 65536 /dev/zero >&3 || exit 1; sleep 0.05; done"
    STREAM=$SANDBOX_LAST_PID
}
stream 5001
s1=$STREAM
# flow_packets PORT: the packet count of vm1's flow to PORT (empty if none).
flow_packets() { agent_ctl vm1 getflows 2>/dev/null | awk -v p=":Unknown($1)" 'index($0, p) { print $15; exit }'; }
# Bounded wait (10 s) until vm1 tracks the stream.
for ((i = 0; i < 100; i++)); do
    [[ -n "$(flow_packets 5001)" ]] && break
    sleep 0.1
done
check "stream vm3 -> vm1:5001 runs" sandbox_alive "$s1"
flows=$(agent_ctl vm1 getflows)
id_before=$(awk '/:Unknown\([0-9]+\) [0-9.]+:Unknown\(5001\)/ { print $1 }' <<<"$flows")
pk_before=$(awk '/:Unknown\(5001\)/ { print $15 }' <<<"$flows")
check "getflows on vm1 shows the stream (flow ${id_before:-none}, $pk_before packets)" test -n "$id_before"

# Planned restart of vm1's agent.
agent_stop vm1 || true
check "vm1's agent saved its connection table on SIGTERM" grep -q 'connection table saved' "$(agent_log vm1)"
check "the saved table is on disk (mode 0600)" bash -c "[[ \$(stat -c %a '$TOPO_DIR/vm1/state/conntrack.json') == 600 ]]"
check "on_stop = keep: vm1's overlay interface is still there while the agent is down" agent_wait_overlay vm1
mv "$(agent_log vm1)" "$TOPO_DIR/vm1/agent.log.1"
gw_agent_start vm1 2>"$TOPO_DIR/vm1/restart.err" || bail "agent vm1 restarts" "$(cat "$TOPO_DIR/vm1/restart.err")"
gw_wait_state vm1 ESTABLISHED 15 || true
check "vm1's agent restored the table" grep -q 'connection table restored' "$(agent_log vm1)"
diag "$(grep 'connection table restored' "$(agent_log vm1)" | tail -n 1)"
check "the saved table file was consumed" test ! -e "$TOPO_DIR/vm1/state/conntrack.json"
# Bounded wait (10 s) until the restored flow has carried more packets.
for ((i = 0; i < 100; i++)); do
    pk=$(flow_packets 5001)
    [[ -n "$pk" && "$pk" -gt "${pk_before:-0}" ]] && break
    sleep 0.1
done
check "the stream survived the restart (socat still sending)" sandbox_alive "$s1"
flows=$(agent_ctl vm1 getflows)
diag "$flows"
id_after=$(awk '/:Unknown\(5001\)/ { print $1 }' <<<"$flows")
pk_after=$(awk '/:Unknown\(5001\)/ { print $15 }' <<<"$flows")
check_eq "same flow id after the restart" "$id_before" "$id_after"
check "its counters carried over and kept growing ($pk_before -> $pk_after packets)" \
    bash -c "[[ -n '$pk_after' && '$pk_after' -gt '${pk_before:-0}' ]]"

# Control: a stream whose entry is not restored stalls (TCP strict, no pickup).
stream 5002
s2=$STREAM
for ((i = 0; i < 100; i++)); do
    [[ -n "$(flow_packets 5002)" ]] && break
    sleep 0.1
done
check "vm1 tracks the second stream (vm3 -> vm1:5002) before the restart" test -n "$(flow_packets 5002)"
agent_stop vm1 || true
rm -f "$TOPO_DIR/vm1/state/conntrack.json"
gw_agent_start vm1 2>"$TOPO_DIR/vm1/restart2.err" || bail "agent vm1 restarts again" "$(cat "$TOPO_DIR/vm1/restart2.err")"
# Bounded wait (10 s) for the stalled stream's retransmissions to be dropped.
nc=""
for ((i = 0; i < 100; i++)); do
    nc=$(agent_ctl vm1 firewall-stats 2>/dev/null | jq '[.drops[] | select(.[0] == "fw_no_connection") | .[1]] | add' 2>/dev/null || true)
    [[ "$nc" =~ ^[0-9]+$ && $nc -gt 0 ]] && break
    sleep 0.1
done
check "without its saved entry the other stream's segments are dropped ($nc as no connection)" \
    bash -c "[[ '$nc' -gt 0 ]]"
flows=$(agent_ctl vm1 getflows)
check "and vm1 tracks no connection for it" bash -c "! grep -q 'Unknown(5002)' <<<\"\$1\"" _ "$flows"
kill "$s1" "$s2" 2>/dev/null || true
tap_done
