#!/usr/bin/env bash
# tests/e2e/28_gw_invalid_state.sh -- e2e test 28 (issue 4, test 8): an
# invalid desired state, by file (`nsx-gateway apply`) and by the admin API
# (PUT /api/v1/state): every problem is listed with its path, nothing is
# stored (`get switches` / `get routers` unchanged, desired version
# unchanged), the agents keep their version. Also: malformed JSON and a
# missing token are refused. A valid PUT afterwards goes through (control).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 28 "$@"

gw_setup t28 1500 vm1:web vm2:app

# Seven independent problems, each with the path it must be reported under.
cat >"$TOPO_DIR/bad.yaml" <<'YAML'
switches:
  - name: "web ls!"
    tag: default
    vni: 0x238c
    subnet: 192.168.100.0/24
    gateway_ip: 192.168.100.1
  - name: app-ls
    tag: app
    vni: 0
    subnet: 127.0.0.0/24
    gateway_ip: 127.0.0.1
  - name: db-ls
    tag: app
    vni: 0x2390
    subnet: 192.168.98.0/24
    gateway_ip: 192.168.98.1
routers:
  - name: t1
    mac: 02:50:56:56:44:52
    switches: [db-ls, nope]
    routes:
      - prefix: 10.20.0.0/16
        next_hop: 192.168.98.1
YAML
PATHS=("switches[0].name" "switches[0].tag" "switches[1].vni" "switches[1].subnet" "switches[2].tag"
    "routers[0].switches[1]" "routers[0].routes[0].next_hop")

snapshot() {
    gw_cli get switches
    gw_cli get routers
    gw_api GET /api/v1/state | jq -c .
}
before=$(snapshot)
v1=$(gw_status vm1 .gateway.applied_version)
v2=$(gw_status vm2 .gateway.applied_version)
dv=$(gw_api GET /api/v1/state | jq -r .desired_version)

# --- CLI
rc=0
gw_cli apply -f "$TOPO_DIR/bad.yaml" >"$TOPO_DIR/apply.out" 2>&1 || rc=$?
check "nsx-gateway apply of the invalid file exits non-zero (rc=$rc)" test "$rc" -ne 0
diag "$(cat "$TOPO_DIR/apply.out")"
for p in "${PATHS[@]}"; do
    check "apply lists the problem at $p" grep -qF "$p" "$TOPO_DIR/apply.out"
done
check "apply names the unknown switch 'nope'" grep -q nope "$TOPO_DIR/apply.out"

# --- REST
# The same document as JSON.
body='{"switches": [
  {"name": "web ls!", "tag": "default", "vni": 9100, "subnet": "192.168.100.0/24", "gateway_ip": "192.168.100.1"},
  {"name": "app-ls", "tag": "app", "vni": 0, "subnet": "127.0.0.0/24", "gateway_ip": "127.0.0.1"},
  {"name": "db-ls", "tag": "app", "vni": 9104, "subnet": "192.168.98.0/24", "gateway_ip": "192.168.98.1"}],
 "routers": [{"name": "t1", "mac": "02:50:56:56:44:52", "switches": ["db-ls", "nope"],
   "routes": [{"prefix": "10.20.0.0/16", "next_hop": "192.168.98.1"}]}]}'
gw_api PUT /api/v1/state "$body" >"$TOPO_DIR/put.json"
check_eq "PUT /api/v1/state with the invalid document: HTTP 422" 422 "$GW_HTTP_CODE"
diag "$(jq -c . "$TOPO_DIR/put.json" 2>/dev/null || cat "$TOPO_DIR/put.json")"
for p in "${PATHS[@]}"; do
    check "PUT lists the problem at $p" jq -e --arg p "$p" '[.problems[].path] | index($p) != null' "$TOPO_DIR/put.json"
done
gw_api PUT /api/v1/state '{"switches": [ {"name": ' >"$TOPO_DIR/put-malformed.json"
check "PUT with malformed JSON is refused with 4xx and an error ($GW_HTTP_CODE)" \
    bash -c "[[ '$GW_HTTP_CODE' == 4* ]] && jq -e .error '$TOPO_DIR/put-malformed.json' >/dev/null"
code=$(in_gw curl -s -m 5 -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$TOPO_DIR/bad.yaml" \
    http://127.0.0.1:8080/api/v1/state || true)
check_eq "PUT without the admin token: HTTP 401" 401 "$code"
code=$(in_gw curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' \
    http://127.0.0.1:8080/api/v1/state || true)
check_eq "GET with a wrong admin token: HTTP 401" 401 "$code"

# --- nothing changed
sleep 1.5
check_eq "get switches / get routers / GET state unchanged" "$before" "$(snapshot)"
check_eq "desired version unchanged" "$dv" "$(gw_api GET /api/v1/state | jq -r .desired_version)"
check_eq "vm1 keeps its version" "$v1" "$(gw_status vm1 .gateway.applied_version)"
check_eq "vm2 keeps its version" "$v2" "$(gw_status vm2 .gateway.applied_version)"
check "overlay ping vm1 -> vm2 still works" overlay_wait_ping vm1 "${GW_IP_OF[vm2]}"

# --- control: a valid PUT goes through and reaches the agents
good=$(gw_api GET /api/v1/state | jq -c '.state | .routers[0].routes = [{"prefix": "10.20.0.0/16", "next_hop": "192.168.99.254"}]')
gw_api PUT /api/v1/state "$good" >"$TOPO_DIR/put-good.json"
check_eq "a valid PUT (static route added): HTTP 200" 200 "$GW_HTTP_CODE"
nv=$(gw_desired_version vm1 || echo none)
check "vm1 acks the new version $nv" gw_wait_applied vm1 "$nv" 15
check "vm1's version moved ($v1 -> $nv)" test "$nv" -gt "$v1"
tap_done
