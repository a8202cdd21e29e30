#!/usr/bin/env bash
# tests/e2e/32_fw_microseg.sh -- e2e test 32 (issue 5, tests 7 and 8): the
# distributed firewall in micro-segmentation mode (nsx:network=default)
# filters the instance's underlay traffic, and management is never cut.
#  - failClosed: vm1's agent, enrolled but with no config on disk and the
#    gateway down, filters the NIC at once: vm1 and vm2 cannot ping each
#    other over the underlay, yet the agent's dials to the gateway pass (its
#    status says the connection was refused, i.e. the SYN went out and the
#    RST came back); once the gateway is up the agent connects through the
#    filter, gets its rules and the underlay works;
#  - a deny-all ruleset (default drop, no rule) cuts vm1's underlay traffic
#    both ways but not its gateway session: a later rule change still
#    arrives and is acked; that change (ICMP from vm2 + reject as default)
#    lets vm2's pings in, and a TCP connect to a closed-by-policy port is
#    refused at once (a RST from vm1's agent, sent out of the NIC);
#  - SIGTERM restores vm1's NIC (no bridge, no veth left).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 32 "$@"

gw_init_bin || bail "nsx-gateway binary"
gw_topology t32 1500 vm1 vm2
topo_wait_underlay || bail "underlay up"
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
U1=$(topo_underlay_ip vm1)
U2=$(topo_underlay_ip vm2)

# state FIREWALL_YAML: the sample switches plus a firewall section.
state() {
    gw_state_sample "$TOPO_DIR/state.yaml"
    printf '%s\n' "$1" >>"$TOPO_DIR/state.yaml"
    gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1
}
wait_acked() {
    local v
    v=$(gw_desired_version vm1) || return 1
    gw_wait_applied vm1 "$v" 15
}
ping_u() { timeout 10 ip netns exec "$(topo_ns "$1")" ping -n -c 2 -i 0.3 -W 1 -q "$2" >/dev/null 2>&1; }
no_ping_u() { ! ping_u "$@"; }

state "" || bail "apply" "$(cat "$TOPO_DIR/apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
GW_TAGS_EXTRA='role = "mseg"' gw_agent_config vm1 default
gw_agent_start vm1 2>"$TOPO_DIR/vm1/start.err" || bail "agent vm1 enrolls and starts" "$(cat "$TOPO_DIR/vm1/start.err")"
gw_wait_state vm1 ESTABLISHED 15 || bail "vm1 ESTABLISHED"
check_eq "vm1 runs in micro-segmentation mode" micro-segmentation "$(gw_status vm1 .mode)"
check "allow-all (no firewall section): vm1 <-> vm2 underlay ping works through the filter" ping_u vm1 "$U2"
check "filtered plumbing: the firewall veth nsx-fw0 is a port of nsx-vtep0.0" \
    bash -c "ip netns exec $(topo_ns vm1) ip -o link show master nsx-vtep0.0 | grep -q nsx-fw0"

# --- test 8: failClosed before any ruleset
agent_stop vm1 || true
rm -f "$TOPO_DIR/vm1/state/desired.json"
gw_stop
mv "$(agent_log vm1)" "$TOPO_DIR/vm1/agent.log.1"
gw_agent_start vm1 2>"$TOPO_DIR/vm1/start2.err" || bail "agent vm1 starts without config" "$(cat "$TOPO_DIR/vm1/start2.err")"
check "failClosed: the agent says it filters management only" grep -q 'fail-closed' "$(agent_log vm1)"
check "failClosed: vm1 -> vm2 underlay ping is dropped" no_ping_u vm1 "$U2"
check "failClosed: vm2 -> vm1 underlay ping is dropped" no_ping_u vm2 "$U1"
err=""
for ((i = 0; i < 50; i++)); do
    err=$(gw_status vm1 '.gateway.last_error // ""' 2>/dev/null || true)
    grep -qi refused <<<"$err" && break
    sleep 0.2
done
check "failClosed: the agent's dials to the gateway pass the filter (last error: ${err:-none})" grep -qi refused <<<"$err"
drops=$(agent_ctl vm1 firewall-stats | jq '[.drops[] | select(.[0] == "fw_fail_closed") | .[1]] | add')
check "failClosed drops are counted ($drops)" bash -c "[[ '$drops' -gt 0 ]]"
gw_start 2>"$TOPO_DIR/gw-start2.err" || bail "gateway starts again" "$(cat "$TOPO_DIR/gw-start2.err")"
check "the agent connects through the filter once the gateway is up" gw_wait_state vm1 ESTABLISHED 20
wait_acked || true
check "with its rules (allow-all) the underlay works again" ping_u vm1 "$U2"

# --- test 7: deny-all never cuts management
state "firewall:
  groups:
    - {name: mseg, match: {tags: {role: mseg}}}
  default_rule: {id: 1002, action: drop, log: true}" || bail "apply deny-all" "$(cat "$TOPO_DIR/apply.log")"
check "vm1 acks the deny-all ruleset" wait_acked
check "deny-all: vm1 -> vm2 underlay ping is dropped" no_ping_u vm1 "$U2"
check "deny-all: vm2 -> vm1 underlay ping is dropped" no_ping_u vm2 "$U1"
sleep 1
check_eq "deny-all: vm1's gateway session stays ESTABLISHED" ESTABLISHED "$(gw_status vm1 .gateway.state)"
state "firewall:
  groups:
    - {name: mseg, match: {tags: {role: mseg}}}
  sections:
    - name: mseg-rules
      applied_to: [mseg]
      rules:
        - id: 1010
          direction: in
          sources: [$U2]
          destinations: [group:mseg]
          services: [{protocol: icmp}]
          action: accept
  default_rule: {id: 1002, action: reject, log: true}" || bail "apply the icmp rule" "$(cat "$TOPO_DIR/apply.log")"
check "a rule change still reaches vm1 under deny-all (acked)" wait_acked
check "vm2 -> vm1 underlay ping is allowed by rule 1010" ping_u vm2 "$U1"
check "vm1 -> vm2 underlay ping is still refused (rule 1010 is inbound only)" no_ping_u vm1 "$U2"
sandbox_bg "$TOPO_DIR/listen.log" ip netns exec "$(topo_ns vm1)" timeout 30 socat -u TCP-LISTEN:5000,reuseaddr OPEN:/dev/null
# Bounded wait (5 s) for the listener: a refusal must be the firewall's,
# not the kernel's for a port nobody listens on yet.
for ((i = 0; i < 50; i++)); do
    in_inst vm1 ss -ltnH '( sport = :5000 )' | grep -q . && break
    sleep 0.1
done
check "vm1 listens on 5000 (in its main namespace)" bash -c "ip netns exec $(topo_ns vm1) ss -ltnH '( sport = :5000 )' | grep -q ."
out=$(ip netns exec "$(topo_ns vm2)" timeout 5 socat -u /dev/null "TCP:$U1:5000,connect-timeout=3" 2>&1 || true)
check "vm2 -> vm1:5000 (no rule, default reject) is refused at once by vm1's firewall" grep -q 'Connection refused' <<<"$out"
rules=$(agent_ctl vm1 getrules)
check "getrules on vm1 shows rule 1010" grep -qF "rule 1010 at 1 in protocol icmp from $U2 to addrset grp-mseg accept;" <<<"$rules"
diag "$rules"

# --- SIGTERM gives the NIC back
agent_stop vm1 || true
check "after SIGTERM vm1's NIC is no bridge port any more" \
    bash -c "! ip netns exec $(topo_ns vm1) ip -o link show eth0 | grep -q master"
check "after SIGTERM the firewall veth is gone" bash -c "! ip netns exec $(topo_ns vm1) ip link show nsx-fw0 >/dev/null 2>&1"
check "after SIGTERM vm1's underlay works unfiltered" ping_u vm1 "$U2"
tap_done
