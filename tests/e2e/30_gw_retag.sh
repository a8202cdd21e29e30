#!/usr/bin/env bash
# tests/e2e/30_gw_retag.sh -- e2e test 30 (issue 4, test 10): retagging
# moves an instance and the overlay follows. PATCH /api/v1/instances/vm1
# {"tags": {"nsx:network": "app"}} moves vm1 from web-ls to app-ls: a new IP
# in 192.168.99.0/24 on its nsx-eth0, pings from vm2 (app) reach it, vm3 (web)
# reaches it through the router. Then "default": micro-segmentation (the
# gateway and the agent's status say so, no overlay address on vm1, the
# underlay still works). Then back to "web": overlay again, pings work.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 30 "$@"

gw_setup t30 1500 vm1:web vm2:app vm3:web
overlay_wait_ping vm2 "${GW_IP_OF[vm1]}" || bail "overlay ping vm2 -> vm1 before the test"
old_ip=${GW_IP_OF[vm1]}

# retag TAG: PATCH vm1's nsx:network tag; wait until vm1 acked its new version.
retag() {
    local tag=$1 v
    gw_api PATCH /api/v1/instances/vm1 "{\"tags\": {\"nsx:network\": \"$tag\"}}" >"$TOPO_DIR/patch.json"
    check_eq "PATCH /api/v1/instances/vm1 nsx:network=$tag: HTTP 200" 200 "$GW_HTTP_CODE"
    v=$(gw_desired_version vm1 || echo none)
    if gw_wait_applied vm1 "$v" 20; then
        ok "vm1 acks its new config (version $v)"
    else
        not_ok "vm1 acks its new config (version $v) within 20 s" "$(gw_status vm1 '.gateway | tojson')" \
            "agent log:" "$(tail -n 15 "$(agent_log vm1)")"
    fi
    diag "$(gw_cli get instances)"
}

# nsx_eth0_ip vmN: the IPv4 address on nsx-eth0 (empty if none / no netns).
nsx_eth0_ip() {
    in_overlay "$1" ip -j addr show dev nsx-eth0 2>/dev/null |
        jq -r '[.[0].addr_info[] | select(.family=="inet") | .local] | join(",")' 2>/dev/null || true
}

# --- web -> app
retag app
new_ip=$(gw_instance vm1 .ip 2>/dev/null || echo none)
check_eq "get instances: vm1 on app-ls in overlay mode" "app-ls overlay" "$(gw_instance vm1 '"\(.switch) \(.mode)"')"
check "vm1's new IP ($new_ip) is in 192.168.99.0/24" grep -qE '^192\.168\.99\.[0-9]+$' <<<"$new_ip"
check_eq "vm1's status: mode overlay, switch app-ls" "overlay app-ls" "$(gw_status vm1 '"\(.mode) \(.overlay.switch)"')"
agent_wait_overlay vm1 || true
check_eq "vm1's nsx-eth0 carries the new IP" "$new_ip" "$(nsx_eth0_ip vm1)"
check "overlay ping vm2 (app) -> vm1's new IP $new_ip (same switch now)" overlay_wait_ping vm2 "$new_ip"
out=$(overlay_ping vm2 "$new_ip" -c 3 -i 0.2 -W 2 2>&1 || true)
check "vm2 -> vm1 is switched now (ttl 64, not routed)" bash -c "grep -q ' 3 received' <<<\"\$1\" && grep -q 'ttl=64' <<<\"\$1\"" _ "$out"
check "overlay ping vm3 (web) -> vm1 $new_ip (routed)" overlay_wait_ping vm3 "$new_ip"
check "overlay ping vm1 -> vm3 (routed)" overlay_wait_ping vm1 "${GW_IP_OF[vm3]}"
check "vm1's old IP $old_ip no longer answers from vm3" bash -c "! timeout 10 ip netns exec $(topo_root vm3) ping -n -c 2 -W 1 -q $old_ip >/dev/null 2>&1"

# --- app -> default (micro-segmentation)
retag default
check_eq "get instances: vm1 in micro-segmentation mode" micro-segmentation "$(gw_instance vm1 .mode 2>/dev/null)"
check_eq "vm1's status: mode micro-segmentation" micro-segmentation "$(gw_status vm1 .mode)"
if ip netns list | grep -qw "$(topo_root vm1)"; then
    check_eq "vm1 has no overlay address (its overlay netns is still there)" "" "$(nsx_eth0_ip vm1)"
else
    ok "vm1 has no overlay namespace any more"
fi
check "vm2 no longer reaches vm1's overlay IP $new_ip" bash -c "! timeout 10 ip netns exec $(topo_root vm2) ping -n -c 2 -W 1 -q $new_ip >/dev/null 2>&1"
check "vm1's underlay still works (ping 10.99.3.12 from vm1's main namespace)" \
    in_inst vm1 timeout 10 ping -n -c 2 -W 1 -q 10.99.3.12
check_eq "vm1's gateway session stays ESTABLISHED" ESTABLISHED "$(gw_status vm1 .gateway.state)"

# --- default -> web
retag web
ip3=$(gw_instance vm1 .ip 2>/dev/null || echo none)
check_eq "get instances: vm1 on web-ls in overlay mode again" "web-ls overlay" "$(gw_instance vm1 '"\(.switch) \(.mode)"')"
agent_wait_overlay vm1 || true
check_eq "vm1's nsx-eth0 carries its web IP $ip3" "$ip3" "$(nsx_eth0_ip vm1)"
check "overlay ping vm3 -> vm1 $ip3 (same switch)" overlay_wait_ping vm3 "$ip3"
check "overlay ping vm1 -> vm2 (routed)" overlay_wait_ping vm1 "${GW_IP_OF[vm2]}"
tap_done
