#!/usr/bin/env bash
# tests/e2e/10_invalid_config.sh -- e2e test 10: an invalid config file.
# `nsx-agent check` and `nsx-agent run` exit non-zero listing every problem
# as `path: message`, and `run` leaves the host untouched (`ip -j addr`,
# `ip -j link`, routes, namespace list and the state dir unchanged). Then, with
# a running agent, SIGHUP with an invalid file keeps the running config (and
# says why in the log), SIGHUP with a valid file applies it, and a reload
# that changes forwarding takes effect in traffic: without vm2's remote
# port vm1's pings to vm2 are dropped, with it back they answer again.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 10 "$@"

seed_topology t10 1500 2
topo_build
topo_wait_underlay || bail "underlay up"
good=$(topo_config_path vm1)
bad=$TOPO_DIR/vm1/bad.toml
# Three independent problems: VNI over 24 bits, a gateway outside its subnet,
# a tep_id of 0.
sed -e 's/^vni = 0x2388$/vni = 0x1000000/' \
    -e 's/^gateway_ip = "192.168.100.1"$/gateway_ip = "10.0.0.1"/' \
    -e 's/^tep_id = 1$/tep_id = 0/' "$good" >"$bad"
check "the invalid file differs from the good one in 3 lines" \
    [ "$(diff "$good" "$bad" | grep -c '^>')" -eq 3 ]

check "nsx-agent check accepts the generated config" "$NSX_AGENT" check --config "$good"

rc=0
out=$("$NSX_AGENT" check --config "$bad" 2>&1) || rc=$?
check_eq "nsx-agent check exits 1 on the invalid file" 1 "$rc"
for want in 'switches[1].vni: 0x1000000 exceeds 24 bits' 'switches[0].gateway_ip: ' 'tep_id: '; do
    if grep -qF "$want" <<<"$out"; then ok "check names the problem: $want"; else not_ok "check names the problem: $want" "$out"; fi
done

snapshot() {
    in_inst vm1 ip -j addr | jq -S .
    in_inst vm1 ip -j link | jq -S .
    in_inst vm1 ip -j route show table all | jq -S .
    ip netns list | sort
    find "$TOPO_DIR/vm1" | sort
}
before=$(snapshot)
rc=0
out=$(timeout 20 nsenter --net="/run/netns/$(topo_ns vm1)" "$NSX_AGENT" run --config "$bad" 2>&1) || rc=$?
if [[ $rc -ne 0 && $rc -ne 124 ]]; then ok "nsx-agent run exits non-zero on the invalid file (rc=$rc)"; else not_ok "nsx-agent run exits non-zero on the invalid file" "rc=$rc" "$out"; fi
if grep -qF 'switches[1].vni: 0x1000000 exceeds 24 bits' <<<"$out" && grep -qF 'switches[0].gateway_ip' <<<"$out"; then
    ok "run lists the problems with their paths"
else
    not_ok "run lists the problems with their paths" "$out"
fi
after=$(snapshot)
if [[ "$before" == "$after" ]]; then
    ok "host untouched: addresses, links, routes, namespaces, state dir"
else
    not_ok "host untouched: addresses, links, routes, namespaces, state dir" "$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | head -n 30)"
fi
rc=0
out=$(timeout 20 nsenter --net="/run/netns/$(topo_ns vm1)" "$NSX_AGENT" run --config "$TOPO_DIR/missing.toml" 2>&1) || rc=$?
if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'missing.toml' <<<"$out"; then
    ok "run with a missing file exits non-zero naming it"
else
    not_ok "run with a missing file exits non-zero naming it" "rc=$rc" "$out"
fi
check_eq "host untouched after the missing-file run" "$before" "$(snapshot)"

# Reload: invalid file kept out, valid file applied.
start_agents vm1 vm2
overlay_wait_ping vm1 192.168.99.9 || not_ok "routed ping vm1 -> vm2 with the good config"
v0=$(agent_ctl vm1 status | jq -r '.config_version') || v0=""
check_eq "status reports config_version 1" 1 "$v0"
cp "$good" "$TOPO_DIR/vm1/good.toml"
cp "$bad" "$good"
kill -HUP "$(agent_pid vm1)"
found=0
for ((i = 0; i < 30; i++)); do
    grep -qF 'switches[1].vni' "$(agent_log vm1)" && { found=1; break; }
    sleep 0.2
done
check_eq "SIGHUP with an invalid file: the log says why it was refused" 1 "$found"
[[ $found == 1 ]] || diag "$(tail -n 5 "$(agent_log vm1)")"
check "agent still running after the refused reload" sandbox_alive "$(agent_pid vm1)"
check_eq "config_version still 1" 1 "$(agent_ctl vm1 status | jq -r '.config_version')"
check "routed ping still works with the kept config" overlay_wait_ping vm1 192.168.99.9
sed 's/^version = 1$/version = 2/' "$TOPO_DIR/vm1/good.toml" >"$good"
kill -HUP "$(agent_pid vm1)"
v=""
for ((i = 0; i < 30; i++)); do
    v=$(agent_ctl vm1 status 2>/dev/null | jq -r '.config_version' 2>/dev/null || true)
    [[ "$v" == 2 ]] && break
    sleep 0.2
done
check_eq "SIGHUP with a valid file: config_version 2" 2 "$v"
check "routed ping works after the reload" overlay_wait_ping vm1 192.168.99.9

# A reload that changes forwarding must change the datapath's tables, not
# only the version: v3 drops vm2's remote port, v4 brings it back.
# reload_to VERSION FILE: FILE becomes vm1's config, SIGHUP, bounded wait
# until the datapath thread runs VERSION (`ctl counters`, published by it).
reload_to() {
    local want=$1 i
    cp "$2" "$good"
    kill -HUP "$(agent_pid vm1)"
    for ((i = 0; i < 100; i++)); do
        [[ "$(agent_counter vm1 .config_version 2>/dev/null)" == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}
sed -e 's/^version = 1$/version = 3/' -e '/^\[\[remote_ports\]\]$/,/^$/d' "$TOPO_DIR/vm1/good.toml" >"$TOPO_DIR/vm1/v3.toml"
check "v3 differs from the good file only in the version and vm2's remote port" \
    bash -c "! grep -q remote_ports '$TOPO_DIR/vm1/v3.toml' && grep -q '^ip = \"192.168.99.9\"' '$TOPO_DIR/vm1/good.toml'"
nn0=$(agent_counter vm1 '.drops.no_neighbor') || nn0=""
if reload_to 3 "$TOPO_DIR/vm1/v3.toml"; then
    ok "SIGHUP without vm2's remote port: the datapath runs version 3"
else
    not_ok "SIGHUP without vm2's remote port: the datapath runs version 3" "$(tail -n 5 "$(agent_log vm1)")"
fi
out=$(overlay_ping vm1 192.168.99.9 -c 3 -i 0.2 -W 1 2>&1 || true)
check "version 3: vm1's routed pings to vm2 go unanswered (no remote port)" grep -q ' 0 received' <<<"$out"
nn=""
for ((i = 0; i < 30; i++)); do
    nn=$(agent_counter vm1 '.drops.no_neighbor' 2>/dev/null) || nn=""
    [[ -n "$nn0" && -n "$nn" && $nn -ge $((nn0 + 3)) ]] && break
    sleep 0.1
done
check "version 3: vm1 drops them as no_neighbor ($nn0 -> $nn)" \
    bash -c "[[ -n '$nn0' && -n '$nn' && $nn -ge $((${nn0:-0} + 3)) ]]"
sed 's/^version = 1$/version = 4/' "$TOPO_DIR/vm1/good.toml" >"$TOPO_DIR/vm1/v4.toml"
if reload_to 4 "$TOPO_DIR/vm1/v4.toml"; then
    ok "SIGHUP with vm2's remote port back: the datapath runs version 4"
else
    not_ok "SIGHUP with vm2's remote port back: the datapath runs version 4" "$(tail -n 5 "$(agent_log vm1)")"
fi
check "version 4: routed ping vm1 -> vm2 answers again" overlay_wait_ping vm1 192.168.99.9
rc=0
agent_stop vm1 || rc=$?
check_eq "agent exits 0 on SIGTERM" 0 "$rc"
tap_done
