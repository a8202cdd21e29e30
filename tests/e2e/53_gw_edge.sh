#!/usr/bin/env bash
# tests/e2e/53_gw_edge.sh -- e2e test 53 (issue 14, gateway-driven): the
# gateway host is also the overlay's edge, as the seed's PCG. In the
# gateway's namespace an nsx-agent with `[host] uplink = "eth1"` and a
# `[gateway]` section enrolls as the edge (its downlink NIC is the
# gateway's underlay interface eth0, 10.99.3.2); the desired state has a
# `tier0:` (uplink 203.0.113.2/24, gateway 203.0.113.1, secondary
# 203.0.113.10 and .11). vm1 and vm3 (web-ls) enroll the usual way. Beyond
# the uplink, t53-inet is the cloud's NAT (stage one: elastic IPs
# 198.51.100.2 -> 203.0.113.2 and 198.51.100.10 -> 203.0.113.10) and t53-net
# the internet (hosts 198.51.100.7, .8). Checks:
#   - the edge enrolls: its status mode is edge, the gateway lists it;
#   - test 1: vm1 curls an HTTP server on the internet, which logs the SNAT
#     address (the uplink's elastic IP; on the uplink, 203.0.113.2);
#   - test 3: PATCH vm3 nsx:publicip=203.0.113.10 at the admin API: within
#     1 s of the call's return the internet host reaches vm3 at its elastic
#     IP (vm3 logs the client's own address), vm3's own traffic leaves from
#     it; nsxcli --gateway `get logical-router t0 nat-rules` shows the SNAT
#     and the DNAT+SNAT pair, `get nat sessions` at the edge lists vm1's
#     session; a tag outside the secondaries and one already claimed are
#     refused (422) with their path, and nothing changes;
#   - test 7: a gateway firewall rule rejecting vm1's egress to the internet
#     host makes its curl fail, counted in vm1's firewall; removed, it works;
#   - test 10: invalid tier0 states, by file and by PUT: a tier0 with five
#     problems (each listed with its path), a valid one without vm3's
#     secondary address, none at all (both at vm3's claim): refused, nothing
#     changes (the state, the edge's version, traffic both ways);
#   - the edge keeps forwarding both ways while nsx-gateway is killed;
#   - test 3 (end): removing the tag withdraws the public IP within 1 s of
#     the call's return (the first of 3 refused connects in a row, polled
#     every 20 ms, then none for 3 s, counted as the edge's nat_no_mapping).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 53 "$@"
for t in curl python3 nft; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs it)"
done
NSTOOL=$E2E_LIB_DIR/nstool.py
NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
[[ -x "$NSXCLI" ]] || bail "nsxcli binary ($NSXCLI; build it: cargo build --release -p nsxcli, or set NSXCLI)"

# --- the edge enrolls (gw_edge_setup: ESTABLISHED before vm1 and vm3 start)
gw_edge_setup t53 1500 vm1 vm3
STATE=$TOPO_DIR/state.yaml
NET=t53-net
topo_cloud_nat "$NET" 1500 203.0.113.2=198.51.100.2 203.0.113.10=198.51.100.10
in_net() { ip netns exec "$NET" "$@"; }
check_eq "the edge's status: mode edge" edge "$(gw_status edge .mode)"
check_eq "the gateway lists it: mode edge, no switch" "edge null" "$(gw_instance edge '"\(.mode) \(.switch)"' 2>/dev/null)"
# edge_applied: bounded wait until the edge runs the version the gateway wants.
edge_applied() { gw_wait_applied edge "$(gw_desired_version edge)" 10; }
edge_applied || bail "the edge applies its config with both instances' ports"
wait_for 10 in_overlay vm1 ping -c 1 -W 1 -q 198.51.100.7 >/dev/null 2>&1 ||
    bail "vm1 reaches the internet host" "$(agent_ctl edge counters | jq -c '.drops|with_entries(select(.value>0))')"

# --- test 1: SNAT, curl out.
WWW=$TOPO_DIR/www
mkdir -p "$WWW"
echo hello >"$WWW/index.html"
HLOG=$TOPO_DIR/http.log
sandbox_bg "$HLOG" in_net python3 -m http.server 8080 --bind 0.0.0.0 --directory "$WWW"
wait_for 10 in_net bash -c 'exec 3<>/dev/tcp/198.51.100.7/8080' 2>/dev/null || bail "the internet HTTP server listens"
# http_lines ADDR: the server's log lines of a GET from ADDR.
http_lines() { grep -c "^${1//./\\.} .*\"GET /index.html" "$HLOG" || true; }
cap_start_in up "$TOPO_INET" uplink "tcp port 8080" || bail "uplink capture starts"
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
upl=$(cap_stop up)
check_eq "vm1 curls the internet server" hello "$body"
check "the server logs the SNAT address (the uplink's elastic IP 198.51.100.2)" test "$(http_lines 198.51.100.2)" -ge 1
check_eq "on the uplink the source is the uplink's address 203.0.113.2" 203.0.113.2 \
    "$(cap_fields "$upl" "tcp.dstport==8080" ip.src | sort -u)"

# --- test 3: the public IP, set at the gateway.
V3LOG=$TOPO_DIR/vm3-http.log
sandbox_bg "$V3LOG" in_overlay vm3 python3 -m http.server 8081 --bind 0.0.0.0 --directory "$WWW"
wait_for 10 in_overlay vm3 bash -c "exec 3<>/dev/tcp/${GW_IP_OF[vm3]}/8081" 2>/dev/null || bail "vm3's HTTP server listens"
# tcp_wait open|closed: from the internet host to vm3's elastic IP, port
# 8081 (nstool tcp-wait, at most 5 s): "START END" epoch ms or "never".
tcp_wait() { in_net python3 "$NSTOOL" tcp-wait "$1" 198.51.100.7 198.51.100.10 8081 5; }
check "before the tag the elastic IP leads nowhere" \
    bash -c '! ip netns exec "$1" curl -s --max-time 2 --interface 198.51.100.7 http://198.51.100.10:8081/ >/dev/null' _ "$NET"
PUBLIC=203.0.113.10
gw_api PATCH /api/v1/instances/vm3 "{\"tags\": {\"nsx:publicip\": \"$PUBLIC\"}}" >"$TOPO_DIR/patch.json"
t_api=$(date +%s%3N)
check_eq "PATCH vm3 nsx:publicip=$PUBLIC: HTTP 200" 200 "$GW_HTTP_CODE"
read -r t1 t2 < <(tcp_wait open) || true
ms=""
[[ "${t2:-never}" =~ ^[0-9]+$ ]] && ms=$((t2 - t_api))
check "the internet host connects to vm3's elastic IP within 1 s of the PATCH (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 1000
body=$(in_net curl -s --max-time 10 --interface 198.51.100.7 http://198.51.100.10:8081/index.html || true)
check_eq "the internet host curls vm3 at its elastic IP 198.51.100.10" hello "$body"
check "vm3's server logs the client's own address 198.51.100.7" grep -q '^198\.51\.100\.7 .*"GET /index.html' "$V3LOG"
body=$(in_overlay vm3 curl -s --max-time 10 http://198.51.100.8:8080/index.html || true)
check_eq "vm3 curls out" hello "$body"
check "vm3's own traffic leaves from its public IP (elastic 198.51.100.10)" test "$(http_lines 198.51.100.10)" -ge 1

# --- nsxcli: the NAT rules at the gateway, the sessions at the edge.
# nat_rules: `get logical-router t0 nat-rules` at the gateway (bounded), or its error.
nat_rules() { in_gw timeout 20 "$NSXCLI" --gateway --dir "$GW_DIR" -c "get logical-router t0 nat-rules" 2>&1 || true; }
rules=$(nat_rules)
diag "$rules"
re_ip() { printf '%s' "${1//./\\.}"; }
SNAT_T1_RE='^ +[0-9]+ +SNAT +192\.168\.100\.0/24, 192\.168\.99\.0/24 +any +203\.0\.113\.2 +1024-65535 +- *$'
check "nat-rules: the tier-0 t0 run by the edge" grep -qE '^Edge : edge$' <<<"$rules"
check "nat-rules: DNAT $PUBLIC -> vm3's ${GW_IP_OF[vm3]}" grep -qE \
    "^ +[0-9]+ +DNAT +any +$(re_ip $PUBLIC) +$(re_ip "${GW_IP_OF[vm3]}") +- +vm3 *$" <<<"$rules"
check "nat-rules: SNAT vm3's ${GW_IP_OF[vm3]} -> $PUBLIC" grep -qE \
    "^ +[0-9]+ +SNAT +$(re_ip "${GW_IP_OF[vm3]}") +any +$(re_ip $PUBLIC) +- +vm3 *$" <<<"$rules"
check "nat-rules: SNAT of the tier-1's subnets to the uplink's 203.0.113.2" grep -qE "$SNAT_T1_RE" <<<"$rules"
# A session held open while the edge is asked (bounded: 20 s).
# (Both ends bidirectional: `socat -u` would half-close it at once.)
sandbox_bg "$TOPO_DIR/hold.err" in_net timeout 20 socat TCP-LISTEN:9100,reuseaddr EXEC:cat
wait_for 10 bash -c 'ip netns exec "$1" ss -ltnH "( sport = :9100 )" | grep -q .' _ "$NET" || true
sandbox_bg "$TOPO_DIR/hold-client.err" bash -c \
    'sleep 15 | ip netns exec "$1" timeout 20 socat - TCP:198.51.100.7:9100,sourceport=41000' _ "$(topo_root vm1)"
HOLD=$SANDBOX_LAST_PID
SESS_RE="^tcp +$(re_ip "${GW_IP_OF[vm1]}"):41000 +203\.0\.113\.2:[0-9]+ +198\.51\.100\.7:9100 +ESTABLISHED .* snat *$"
wait_for 10 bash -c '"$1" --socket "$2" -c "get nat sessions" 2>/dev/null | grep -qE "$3"' _ "$NSXCLI" "$(topo_socket edge)" "$SESS_RE" || true
sess=$("$NSXCLI" --socket "$(topo_socket edge)" -c "get nat sessions" 2>&1 || true)
diag "$sess"
check "get nat sessions at the edge: vm1's TCP session, SNAT to 203.0.113.2" grep -qE "$SESS_RE" <<<"$sess"
check "get nat sessions: vm3's public-IP session from the internet host" grep -qE \
    "^tcp +$(re_ip "${GW_IP_OF[vm3]}"):8081 +$(re_ip $PUBLIC):8081 +198\.51\.100\.7:[0-9]+ .* public-ip in *$" <<<"$sess"
kill "$HOLD" 2>/dev/null || true

# --- conflicts: refused with their path, nothing changes.
ev=$(gw_desired_version edge)
# refused TAG WHY: PATCH vm1 nsx:publicip=TAG is a 422 naming the tag's path.
refused() {
    gw_api PATCH /api/v1/instances/vm1 "{\"tags\": {\"nsx:publicip\": \"$1\"}}" >"$TOPO_DIR/conflict.json"
    diag "$(jq -c . "$TOPO_DIR/conflict.json" 2>/dev/null || cat "$TOPO_DIR/conflict.json")"
    check_eq "PATCH vm1 nsx:publicip=$1 ($2): HTTP 422" 422 "$GW_HTTP_CODE"
    check "... the problem is at tags[\"nsx:publicip\"] and names $1" jq -e --arg ip "$1" \
        '[.problems[] | select(.path == "tags[\"nsx:publicip\"]" and (.message | contains($ip)))] | length == 1' \
        "$TOPO_DIR/conflict.json"
}
refused 203.0.113.99 "not a secondary address of the uplink"
refused "$PUBLIC" "already vm3's"
check "... which says whose it is" jq -e '.problems[0].message | contains("vm3")' "$TOPO_DIR/conflict.json"
check_eq "vm1's tags have no nsx:publicip" "object false" \
    "$(gw_instance vm1 '"\(.tags | type) \(.tags | has("nsx:publicip"))"' 2>/dev/null || echo error)"
check_eq "the edge's desired version is unchanged" "$ev" "$(gw_desired_version edge)"
rules2=$(nat_rules)
check_eq "the NAT rules are unchanged" "$rules" "$rules2"
body=$(in_net curl -s --max-time 10 --interface 198.51.100.7 http://198.51.100.10:8081/index.html || true)
check_eq "vm3 keeps its public IP (the internet host still reaches it)" hello "$body"

# --- test 7: the DFW at the instance governs north-south.
# apply_wait FILE: apply it; bounded wait until vm1, vm3 and the edge run
# the versions the gateway wants.
apply_wait() {
    gw_apply "$1" >"$TOPO_DIR/apply.log" 2>&1 || { cat "$TOPO_DIR/apply.log"; return 1; }
    local vm
    for vm in vm1 vm3 edge; do
        gw_wait_applied "$vm" "$(gw_desired_version "$vm")" 10 || return 1
    done
}
cp "$STATE" "$TOPO_DIR/state-fw.yaml"
cat >>"$TOPO_DIR/state-fw.yaml" <<'EOF'
firewall:
  sections:
    - name: north-south
      applied_to: [instance:vm1]
      rules:
        - id: 2001
          direction: out
          destinations: [198.51.100.7]
          services: [{protocol: tcp, port: 8080}]
          action: reject
          log: true
EOF
apply_wait "$TOPO_DIR/state-fw.yaml" || bail "the firewall rule is applied"
rj0=$(agent_ctl vm1 firewall-stats | jq '.rejects')
rc=0
out=$(in_overlay vm1 curl -sS --max-time 5 http://198.51.100.7:8080/index.html 2>&1) || rc=$?
# curl exits 7 when the connect is refused (the agent's RST); a dropped
# SYN would be 28 (timed out) and an answer 0.
check_eq "rule 2001 at vm1: its curl to the internet host is refused at once (${out:-nothing})" 7 "$rc"
# rejects_above N: vm1's firewall counted more than N rejects.
rejects_above() { [[ "$(agent_ctl vm1 firewall-stats | jq '.rejects')" -gt $1 ]]; }
wait_for 5 rejects_above "$rj0" || true
stats=$(agent_ctl vm1 firewall-stats)
check "vm1's firewall counts the reject ($rj0 -> $(jq .rejects <<<"$stats"))" test "$(jq .rejects <<<"$stats")" -gt "$rj0"
check "... on rule 2001 ($(jq -c '.rules[] | select(.id == 2001)' <<<"$stats"))" \
    jq -e '.rules[] | select(.id == 2001) | .packets >= 1' <<<"$stats"
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.8:8080/index.html || true)
check_eq "vm1 still reaches the other internet host 198.51.100.8 (the rule is that narrow)" hello "$body"
body=$(in_overlay vm3 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
check_eq "vm3 (not in the rule's applied_to) still reaches 198.51.100.7" hello "$body"
apply_wait "$STATE" || bail "the firewall rule is removed"
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
check_eq "rule removed: vm1 curls 198.51.100.7 again" hello "$body"

# --- test 10: an invalid tier0 lists every problem with its path, by file
# (nsx-gateway apply) and by PUT /api/v1/state.
# refused_state FILE PATH...: both refuse FILE, listing a problem at each PATH.
refused_state() {
    local f=$1 p rc=0
    shift
    gw_cli apply -f "$f" >"$TOPO_DIR/bad.out" 2>&1 || rc=$?
    diag "$(cat "$TOPO_DIR/bad.out")"
    check "nsx-gateway apply of $(basename "$f") exits non-zero (rc=$rc)" test "$rc" -ne 0
    for p in "$@"; do
        check "apply lists the problem at $p" grep -qF "$p:" "$TOPO_DIR/bad.out"
    done
    gw_api PUT /api/v1/state "$(cat "$f")" >"$TOPO_DIR/put.json"
    check_eq "PUT /api/v1/state with $(basename "$f"): HTTP 422" 422 "$GW_HTTP_CODE"
    for p in "$@"; do
        check "PUT lists the problem at $p" jq -e --arg p "$p" '[.problems[].path] | index($p) != null' "$TOPO_DIR/put.json"
    done
}
snapshot() { gw_api GET /api/v1/state | jq -c .; }
before=$(snapshot)
ev=$(gw_desired_version edge)
ea=$(gw_status edge .gateway.applied_version)
# The tier0 itself: one secondary outside the uplink's subnet, so is the
# default route's gateway; the MTU too small; the SNAT pool address no
# address of the uplink; web-ls's VNI as the transit VNI.
gw_state_sample "$TOPO_DIR/bad-tier0.yaml"
cat >>"$TOPO_DIR/bad-tier0.yaml" <<'EOF'
tier0:
  uplink:
    address: 203.0.113.2/24
    secondary: [203.0.113.10, 198.51.100.99]
    gateway: 198.51.100.1
    mtu: 100
  snat:
    pool: [203.0.113.77]
  transit_vni: 0x238c
EOF
refused_state "$TOPO_DIR/bad-tier0.yaml" 'tier0.uplink.secondary[1]' 'tier0.uplink.gateway' \
    'tier0.uplink.mtu' 'tier0.snat.pool[0]' 'tier0.transit_vni'
# A valid tier0 under which vm3's public IP would not hold (its secondary
# address gone): refused at the claim, and so is a state without a tier0.
gw_state_sample "$TOPO_DIR/bad-claim.yaml"
gw_state_tier0 "$TOPO_DIR/bad-claim.yaml"
sed -i 's/secondary: \[203.0.113.10, 203.0.113.11\]/secondary: [203.0.113.11]/' "$TOPO_DIR/bad-claim.yaml"
refused_state "$TOPO_DIR/bad-claim.yaml" 'instances["vm3"].tags["nsx:publicip"]'
gw_state_sample "$TOPO_DIR/no-tier0.yaml"
refused_state "$TOPO_DIR/no-tier0.yaml" 'instances["vm3"].tags["nsx:publicip"]'
sleep 1
check_eq "GET /api/v1/state unchanged" "$before" "$(snapshot)"
check_eq "the edge's desired version is unchanged" "$ev" "$(gw_desired_version edge)"
check_eq "the edge keeps its applied version" "$ea" "$(gw_status edge .gateway.applied_version)"
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
check_eq "vm1 still curls out" hello "$body"
body=$(in_net curl -s --max-time 10 --interface 198.51.100.7 http://198.51.100.10:8081/index.html || true)
check_eq "the internet host still reaches vm3 at its elastic IP" hello "$body"

# --- build 1: the edge keeps forwarding while nsx-gateway is down (SIGKILL),
# and reconnects once it is back.
gw_kill
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
check_eq "nsx-gateway killed: vm1 still curls out through the edge" hello "$body"
body=$(in_net curl -s --max-time 10 --interface 198.51.100.7 http://198.51.100.10:8081/index.html || true)
check_eq "nsx-gateway killed: the internet host still reaches vm3 at its elastic IP" hello "$body"
gw_start 2>"$TOPO_DIR/gw-restart.err" || bail "the gateway restarts" "$(cat "$TOPO_DIR/gw-restart.err")"
for vm in edge vm1 vm3; do
    gw_wait_state "$vm" ESTABLISHED 30 || bail "$vm reconnects to the restarted gateway" "$(gw_status "$vm" .gateway)"
done

# --- test 3 (end): removing the tag withdraws the public IP within 1 s.
nm0=$(agent_counter edge .drops.nat_no_mapping 2>/dev/null || echo 0)
gw_api PATCH /api/v1/instances/vm3 '{"tags": {"nsx:publicip": null}}' >"$TOPO_DIR/patch.json"
t_api=$(date +%s%3N)
check_eq "PATCH vm3 nsx:publicip=null: HTTP 200" 200 "$GW_HTTP_CODE"
read -r t1 t2 < <(tcp_wait closed) || true
ms=""
[[ "${t1:-never}" =~ ^[0-9]+$ ]] && ms=$((t1 - t_api))
check "the public IP is withdrawn within 1 s of the PATCH: the first of 3 refused connects in a row began ${ms:-never} ms after it" \
    test -n "$ms" -a "${ms:-99999}" -le 1000
n=$(in_net python3 "$NSTOOL" tcp-closed 198.51.100.7 198.51.100.10 8081 3 || true)
check "... and stays withdrawn: none of ${n:-no} connects in 3 s gets through" grep -qE '^[0-9]+$' <<<"$n"
nm=$(counter_at_least edge .drops.nat_no_mapping $((nm0 + 1)))
check "... the edge drops it for want of a mapping (nat_no_mapping $nm0 -> $nm)" test "${nm:-0}" -gt "$nm0"
n2=$(http_lines 198.51.100.2)
body=$(in_overlay vm3 curl -s --max-time 10 http://198.51.100.8:8080/index.html || true)
check_eq "vm3 still curls out" hello "$body"
check "... now from the uplink's address (elastic 198.51.100.2)" test "$(http_lines 198.51.100.2)" -gt "$n2"
rules3=$(nat_rules)
diag "$rules3"
check "nat-rules after the withdrawal: the tier-0 t0 run by the edge" grep -qE '^Edge : edge$' <<<"$rules3"
check "... the SNAT of the tier-1's subnets to 203.0.113.2, the one rule left" \
    bash -c 'grep -qE "$2" <<<"$1" && grep -qx "Rule Count : 1" <<<"$1"' _ "$rules3" "$SNAT_T1_RE"
check "... no DNAT any more, nor vm3's SNAT" bash -c '! grep -qE "DNAT| vm3 *$" <<<"$1"' _ "$rules3"
tap_done
