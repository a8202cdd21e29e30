#!/usr/bin/env bash
# tests/e2e/21_gw_enroll_overlay.sh -- e2e test 21 (issue 4, test 1): a
# gateway in its own namespace, two agents with only the gateway address, the
# root CA and the bootstrap key (no static desired state). They enroll, the
# gateway's state file (web-ls, app-ls, router t1) places vm1 on web and vm2
# on app; overlay pings work on one switch and across the router, and
# `nsx-gateway get instances` lists both with their IPs and modes.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 21 "$@"
gw_init_bin || bail "nsx-gateway binary"

gw_topology t21 1500 vm1 vm2 vm3
topo_wait_underlay || bail "underlay up"
check "nsx-gateway init" gw_init
for f in ca.pem ca.key gateway.pem gateway.key bootstrap.key admin.token gateway.db; do
    mode=$(stat -c %a "$GW_DIR/$f" 2>/dev/null || echo missing)
    check_eq "init wrote $f with mode 0600" 600 "$mode"
done
gw_state_sample "$TOPO_DIR/state.yaml"
check "nsx-gateway apply -f state.yaml" gw_apply "$TOPO_DIR/state.yaml"
gw_start || bail "gateway serves 8443, 5555 and the admin API"
ok "gateway serves 8443, 5555 and the admin API"

gw_agent_config vm1 web
gw_agent_config vm2 app
gw_agent_config vm3 web
check "the agent configs hold no desired state" \
    bash -c "! grep -qE '^\[(port|\[switches\]\]|\[routers\]\]|\[remote_ports\]\])' $TOPO_DIR/vm*/gw-agent.toml"
for vm in vm1 vm2 vm3; do
    if gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err"; then
        ok "agent $vm enrolls, gets its config and answers status"
    else
        bail "agent $vm enrolls, gets its config and answers status" "$(cat "$TOPO_DIR/$vm/start.err")"
    fi
done
for vm in vm1 vm2 vm3; do
    check "$vm: agent.crt and agent.key written" test -s "$TOPO_DIR/$vm/state/agent.crt" -a -s "$TOPO_DIR/$vm/state/agent.key"
    gw_wait_state "$vm" ESTABLISHED 10 || true
    check_eq "$vm: gateway connection ESTABLISHED to $GW_IP:5555" "ESTABLISHED $GW_IP:5555" \
        "$(gw_status "$vm" '"\(.gateway.state) \(.gateway.peer)"')"
    agent_wait_overlay "$vm" || not_ok "$vm: nsx-eth0 up"
done

declare -A IP
for vm in vm1 vm2 vm3; do IP[$vm]=$(gw_instance "$vm" .ip 2>/dev/null || echo none); done
diag "$(gw_cli get instances)"
gw_cli get instances --json >"$TOPO_DIR/instances.json" || true
check "vm1's IP (${IP[vm1]}) is in web-ls 192.168.100.0/24" grep -qE '^192\.168\.100\.([2-9]|[1-9][0-9]+)$' <<<"${IP[vm1]}"
check "vm3's IP (${IP[vm3]}) is in web-ls 192.168.100.0/24" grep -qE '^192\.168\.100\.([2-9]|[1-9][0-9]+)$' <<<"${IP[vm3]}"
check "vm2's IP (${IP[vm2]}) is in app-ls 192.168.99.0/24" grep -qE '^192\.168\.99\.([2-9]|[1-9][0-9]+)$' <<<"${IP[vm2]}"
check_eq "IPs are distinct" 3 "$(printf '%s\n' "${IP[@]}" | sort -u | wc -l)"
for vm in vm1 vm2 vm3; do
    check_eq "get instances: $vm mode overlay" overlay "$(gw_instance "$vm" .mode 2>/dev/null)"
    got=$(in_overlay "$vm" ip -j addr show dev nsx-eth0 | jq -r '[.[0].addr_info[] | select(.family=="inet") | .local] | join(",")')
    check_eq "$vm: nsx-eth0 carries the IP the gateway allocated" "${IP[$vm]}" "$got"
done
check_eq "get instances: vm1 on web-ls, vm2 on app-ls" "web-ls app-ls" \
    "$(gw_instance vm1 .switch) $(gw_instance vm2 .switch)"
tbl=$(gw_cli get instances)
for vm in vm1 vm2; do
    check "get instances (table) shows $vm with ${IP[$vm]} and mode overlay" \
        grep -qE "^$vm .*overlay.*${IP[$vm]//./\\.}" <<<"$tbl"
done

check "overlay ping vm1 -> vm3 (same switch)" overlay_wait_ping vm1 "${IP[vm3]}"
check "overlay ping vm1 -> vm2 (routed, web -> app)" overlay_wait_ping vm1 "${IP[vm2]}"
out=$(overlay_ping vm2 "${IP[vm1]}" -c 3 -i 0.2 -W 2 2>&1 || true)
check "overlay ping vm2 -> vm1: 3 of 3 answered, ttl 63 (routed)" \
    bash -c "grep -q ' 3 received' <<<\"\$1\" && grep -q 'ttl=63' <<<\"\$1\"" _ "$out"
v=$(gw_desired_version vm1 || echo none)
check_eq "vm1 runs the version the gateway pushes (GET /instances/vm1/config)" "$v" "$(gw_status vm1 .gateway.applied_version)"
check_eq "vm1 status: mode overlay" overlay "$(gw_status vm1 .mode)"
tap_done
