#!/usr/bin/env bash
# tests/e2e/42_metrics.sh -- e2e test 42 (issue 6, test 6): the Prometheus
# endpoints of the agent ([host] metrics_listen, default 127.0.0.1:9464 in
# the instance's main namespace) and of the gateway (--listen-metrics,
# default 127.0.0.1:9465 in its namespace), in a gateway topology with a
# firewall (rule 2001 rejects tcp/23, the default rule 2002 accepts).
#  - both are scraped with curl and parsed: every line is `# HELP`,
#    `# TYPE`, the final `# EOF`, or `name{labels} value` of an announced
#    family; every TYPE has a HELP; every drop reason is present;
#  - counters move with traffic: pings vm1 -> vm2 grow the tunnel, port and
#    underlay packet counters and the default rule's hits; a refused
#    connection to tcp/23 grows rule 2001's hits and the reject counter;
#  - nsx_agent_gateway_connected 1, the config version is the gateway's;
#    the gateway's instances gauge equals the number of agents, both
#    sessions are established and acked;
#  - the gateway counted control-channel bytes both ways; a 70 KiB
#    enrollment body is refused (413) and counted in
#    nsx_gateway_http_requests_refused_total;
#  - another path is 404, POST is 405; neither endpoint answers on the
#    underlay address (bound to loopback).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 42 "$@"

gw_init_bin || bail "nsx-gateway binary"
gw_topology t42 1500 vm1 vm2
topo_wait_underlay || bail "underlay up"
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
gw_state_sample "$TOPO_DIR/state.yaml"
cat >>"$TOPO_DIR/state.yaml" <<'EOF'
firewall:
  sections:
    - name: metrics-test
      rules:
        - id: 2001
          services: [{protocol: tcp, port: 23}]
          action: reject
  default_rule: {id: 2002, action: accept}
EOF
gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1 || bail "apply the state" "$(cat "$TOPO_DIR/apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
for vm in vm1 vm2; do
    gw_agent_config "$vm" web
    gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" || bail "agent $vm starts" "$(cat "$TOPO_DIR/$vm/start.err")"
done
declare -A IP=()
for vm in vm1 vm2; do
    gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm ESTABLISHED"
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
    IP[$vm]=$(gw_instance "$vm" .ip)
done
overlay_wait_ping vm1 "${IP[vm2]}" || bail "vm1 pings vm2 over the overlay"
for vm in vm1 vm2; do
    gw_wait_applied "$vm" "$(gw_desired_version "$vm")" 10 || bail "agent $vm runs its desired version"
done

AGENT_URL=http://127.0.0.1:9464/metrics
GW_URL=http://127.0.0.1:9465/metrics

# scrape_agent vmN FILE / scrape_gw FILE: GET /metrics from inside the right
# namespace into FILE (non-zero unless HTTP 200).
scrape_agent() {
    local code
    code=$(in_inst "$1" curl -s -m 5 -o "$2" -w '%{http_code}' "$AGENT_URL") || return 1
    [[ "$code" == 200 ]]
}
scrape_gw() {
    local code
    code=$(in_gw curl -s -m 5 -o "$1" -w '%{http_code}' "$GW_URL") || return 1
    [[ "$code" == 200 ]]
}

# metrics_lint FILE PREFIX: the text format, strictly: prints every problem
# (and fails) -- a line that is not a HELP/TYPE comment, the final # EOF, or
# `name{labels} value`; a sample whose family (name, name_total for
# counters, name_info for infos) has no TYPE; a TYPE without HELP; a
# family without PREFIX.
metrics_lint() {
    awk -v prefix="$2" '
        function fail(msg) { print "line " NR ": " msg ": " $0; bad = 1 }
        /^# HELP / { help[$3] = 1; next }
        /^# TYPE / { type[$3] = $4; if (!($3 in help)) fail("TYPE before HELP"); next }
        /^# EOF$/ { eof = NR; next }
        /^#/ { fail("unexpected comment"); next }
        {
            if (eof) fail("after # EOF")
            if ($0 !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*([{]([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*[}])? [-+]?([0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|Inf)$/) {
                fail("not name{labels} value"); next
            }
            name = $0; sub(/[{ ].*/, "", name)
            if (index(name, prefix) != 1) fail("not a " prefix " metric")
            fam = name
            if (!(fam in type)) { fam = name; sub(/_total$/, "", fam); if (type[fam] != "counter") fam = "" }
            if (fam == "") { fam = name; sub(/_info$/, "", fam); if (type[fam] != "info") fam = "" }
            if (fam == "") fail("sample of an unannounced family")
            samples++
        }
        END {
            if (!eof) { print "no # EOF"; bad = 1 }
            if (samples == 0) { print "no samples"; bad = 1 }
            exit bad
        }' "$1"
}

# metric FILE SERIES: the value of one series (`name{labels}` exactly as
# printed, or a bare name); empty if absent.
metric() { grep -F "$2 " "$1" | awk -v s="$2" '$1 == s { print $2; exit }'; }
# metric_sum FILE REGEX: the sum over series matching REGEX (0 if none).
metric_sum() { awk -v re="$2" '$1 ~ re { s += $2 } END { printf "%d\n", s }' "$1"; }
# grew DESC BEFORE AFTER MIN: ok if AFTER - BEFORE >= MIN.
grew() {
    local d=$1 a=${2:-} b=${3:-} min=$4
    if [[ "$a" =~ ^[0-9]+$ && "$b" =~ ^[0-9]+$ && $((b - a)) -ge $min ]]; then
        ok "$d ($a -> $b)"
    else
        not_ok "$d" "before: '$a' after: '$b' (want +$min)"
    fi
}

# --- the agent's endpoint: format
A0=$TOPO_DIR/vm1.metrics.0
scrape_agent vm1 "$A0" || bail "GET $AGENT_URL in vm1's namespace answers 200" "$(cat "$A0" 2>/dev/null)"
ok "GET $AGENT_URL in vm1's namespace answers 200 ($(grep -vc '^#' "$A0") samples)"
check "agent: every line is a HELP/TYPE comment, # EOF or name{labels} value of an announced nsx_agent_ family" \
    metrics_lint "$A0" nsx_agent_
helps=$(grep -c '^# HELP ' "$A0")
types=$(grep -c '^# TYPE ' "$A0")
check_eq "agent: a HELP line for every TYPE line ($types families)" "$types" "$helps"
reasons=$(agent_ctl vm1 counters | jq '.drops | length')
check_eq "agent: nsx_agent_drops_total for every drop reason, zeros included" \
    "$reasons" "$(grep -c '^nsx_agent_drops_total{reason="' "$A0")"
check_eq "agent: counters are typed counter" "counter" "$(awk '$1 == "#" && $2 == "TYPE" && $3 == "nsx_agent_tunnel_packets" { print $4 }' "$A0")"
check_eq "agent: nsx_agent_gateway_connected 1" 1 "$(metric "$A0" nsx_agent_gateway_connected)"
check_eq "agent: gateway state ESTABLISHED" 1 "$(metric "$A0" 'nsx_agent_gateway_state{state="ESTABLISHED"}')"
want=$(gw_desired_version vm1)
check_eq "agent: nsx_agent_config_version is the gateway's desired version" "$want" "$(metric "$A0" nsx_agent_config_version)"
check_eq "agent: nsx_agent_gateway_applied_config_version too" "$want" "$(metric "$A0" nsx_agent_gateway_applied_config_version)"
check "agent: nsx_agent_build_info carries the version" grep -qE '^nsx_agent_build_info\{version="[^"]+"\} 1$' "$A0"
check_eq "agent: conntrack capacity is [host] max_flows (default)" 262144 "$(metric "$A0" nsx_agent_firewall_conntrack_capacity)"
diag "$(grep -E '^nsx_agent_(tunnel|port)_packets_total|^nsx_agent_firewall_rule_packets_total' "$A0")"

# --- counters move with traffic
tep2=$(topo_underlay_ip vm2)
id2=$(gw_instance vm2 .tep_id)
TUN_TX="nsx_agent_tunnel_packets_total{tep_ip=\"$tep2\",tep_id=\"$id2\",direction=\"tx\"}"
TUN_RX="nsx_agent_tunnel_packets_total{tep_ip=\"$tep2\",tep_id=\"$id2\",direction=\"rx\"}"
R2001='nsx_agent_firewall_rule_packets_total{rule_id="2001",ruleset="metrics-test"}'
A1=$TOPO_DIR/vm1.metrics.1
A2=$TOPO_DIR/vm1.metrics.2
scrape_agent vm1 "$A1" || bail "scrape before the traffic"
out=$(overlay_ping vm1 "${IP[vm2]}" -c 5 -i 0.2 -W 2 2>&1 || true)
check "vm1 pings vm2 5 times over the overlay" grep -q ' 5 received' <<<"$out"
refused=$(in_overlay vm1 timeout 5 socat -u /dev/null "TCP:${IP[vm2]}:23,connect-timeout=3" 2>&1 || true)
check "vm1 -> vm2:23 is refused by rule 2001 (reject)" grep -q 'Connection refused' <<<"$refused"
# Bounded wait (10 s) until the last of that traffic (the reject) and the
# pings show in a scrape: counters are published every 200 ms.
# grown_by SERIES MIN: SERIES in A2 is at least MIN above A1 (both numbers).
grown_by() {
    local a b
    a=$(metric "$A1" "$1")
    b=$(metric "$A2" "$1")
    [[ "$a" =~ ^[0-9]+$ && "$b" =~ ^[0-9]+$ && $((b - a)) -ge $2 ]]
}
for ((i = 0; i < 100; i++)); do
    scrape_agent vm1 "$A2" || bail "scrape after the traffic"
    grown_by "$TUN_TX" 5 && grown_by "$TUN_RX" 5 && grown_by "$R2001" 1 && break
    sleep 0.1
done
grew "agent: tunnel packets to vm2's endpoint (tx) grew by the 5 echo requests" \
    "$(metric "$A1" "$TUN_TX")" "$(metric "$A2" "$TUN_TX")" 5
grew "agent: tunnel packets from vm2's endpoint (rx) grew by the 5 replies" \
    "$(metric "$A1" "$TUN_RX")" "$(metric "$A2" "$TUN_RX")" 5
grew "agent: port packets from the instance (rx) grew" \
    "$(metric "$A1" 'nsx_agent_port_packets_total{direction="rx"}')" \
    "$(metric "$A2" 'nsx_agent_port_packets_total{direction="rx"}')" 5
grew "agent: port packets to the instance (tx) grew" \
    "$(metric "$A1" 'nsx_agent_port_packets_total{direction="tx"}')" \
    "$(metric "$A2" 'nsx_agent_port_packets_total{direction="tx"}')" 5
grew "agent: underlay packets sent grew" \
    "$(metric "$A1" 'nsx_agent_underlay_packets_total{direction="tx"}')" \
    "$(metric "$A2" 'nsx_agent_underlay_packets_total{direction="tx"}')" 5
grew "agent: encap layer frames handled grew" \
    "$(metric "$A1" 'nsx_agent_layer_frames_total{layer="encap",result="handled"}')" \
    "$(metric "$A2" 'nsx_agent_layer_frames_total{layer="encap",result="handled"}')" 5
grew "agent: the reject rule 2001's hits grew" "$(metric "$A1" "$R2001")" "$(metric "$A2" "$R2001")" 1
grew "agent: nsx_agent_firewall_rejects_total grew" \
    "$(metric "$A1" nsx_agent_firewall_rejects_total)" "$(metric "$A2" nsx_agent_firewall_rejects_total)" 1
grew "agent: the default rule 2002's hits grew with the pings" \
    "$(metric_sum "$A1" '^nsx_agent_firewall_rule_packets_total[{]rule_id="2002",')" \
    "$(metric_sum "$A2" '^nsx_agent_firewall_rule_packets_total[{]rule_id="2002",')" 1
grew "agent: firewall drops by a rule (reason fw_rule) grew" \
    "$(metric "$A1" 'nsx_agent_firewall_drops_total{reason="fw_rule"}')" \
    "$(metric "$A2" 'nsx_agent_firewall_drops_total{reason="fw_rule"}')" 1
check "agent: a tracked connection shows in nsx_agent_firewall_conntrack_entries" \
    bash -c "[[ \$(awk '\$1 == \"nsx_agent_firewall_conntrack_entries\" { print \$2 }' '$A2') -ge 1 ]]"
diag "$(grep -E "^(nsx_agent_tunnel_packets_total|nsx_agent_firewall_rule_packets_total|nsx_agent_firewall_rejects_total)" "$A2")"

# --- the gateway's endpoint
G0=$TOPO_DIR/gw.metrics
scrape_gw "$G0" || bail "GET $GW_URL in the gateway's namespace answers 200" "$(cat "$G0" 2>/dev/null)"
ok "GET $GW_URL in the gateway's namespace answers 200 ($(grep -vc '^#' "$G0") samples)"
check "gateway: every line is a HELP/TYPE comment, # EOF or name{labels} value of an announced nsx_gateway_ family" \
    metrics_lint "$G0" nsx_gateway_
check_eq "gateway: a HELP line for every TYPE line" "$(grep -c '^# TYPE ' "$G0")" "$(grep -c '^# HELP ' "$G0")"
check_eq "gateway: the instances gauge (not revoked) equals the number of agents" 2 \
    "$(metric_sum "$G0" '^nsx_gateway_instances[{]mode="(overlay|micro-segmentation|pending)"[}]$')"
check_eq "gateway: both are overlay instances" 2 "$(metric "$G0" 'nsx_gateway_instances{mode="overlay"}')"
check_eq "gateway: nsx_gateway_sessions_established 2" 2 "$(metric "$G0" nsx_gateway_sessions_established)"
check_eq "gateway: both sessions recorded ESTABLISHED" 2 "$(metric "$G0" 'nsx_gateway_instance_sessions{state="ESTABLISHED"}')"
check_eq "gateway: 2 enrollments accepted" 2 "$(metric "$G0" nsx_gateway_enrollments_accepted_total)"
check_eq "gateway: no enrollment refused" 0 "$(metric_sum "$G0" '^nsx_gateway_enrollments_refused_total[{]')"
check_eq "gateway: vm1's desired config version" "$want" \
    "$(metric "$G0" 'nsx_gateway_instance_desired_config_version{instance_id="vm1"}')"
check_eq "gateway: vm1 acked it" "$want" "$(metric "$G0" 'nsx_gateway_instance_acked_config_version{instance_id="vm1"}')"
check_eq "gateway: no instance behind its desired config" 0 "$(metric "$G0" nsx_gateway_instances_config_behind)"
check_eq "gateway: vm1's agent reported that version applied (its Status)" "$want" \
    "$(metric "$G0" 'nsx_gateway_instance_applied_config_version{instance_id="vm1"}')"
check_eq "gateway: vm1's agent reports no error" 0 "$(metric "$G0" 'nsx_gateway_instance_agent_error{instance_id="vm1"}')"
check "gateway: vm1's latest status is under 30 s old" \
    bash -c "[[ \$(awk '\$1 == \"nsx_gateway_instance_status_age_seconds{instance_id=\\\"vm1\\\"}\" { print \$2 }' '$G0') -lt 30 ]]"
check_eq "gateway: every agent sent a status" 0 "$(metric "$G0" nsx_gateway_instances_without_status)"
check_eq "gateway: no agent reports an error" 0 "$(metric "$G0" nsx_gateway_instances_agent_error)"
check "gateway: at least 2 Hellos received" \
    bash -c "[[ \$(awk '\$1 == \"nsx_gateway_control_messages_received_total{type=\\\"hello\\\"}\" { print \$2 }' '$G0') -ge 2 ]]"
check_eq "gateway: the store version gauge matches the store" \
    "$(gw_api GET /api/v1/state | jq -r .desired_version)" "$(metric "$G0" nsx_gateway_desired_state_version)"

# --- the control channel's bytes; what the HTTP layer refuses on 8443
check "gateway: control-channel bytes received from the agents > 0" \
    bash -c "[[ \$(awk '\$1 == \"nsx_gateway_control_bytes_received_total\" { print \$2 }' '$G0') -gt 0 ]]"
check "gateway: control-channel bytes sent to the agents > 0" \
    bash -c "[[ \$(awk '\$1 == \"nsx_gateway_control_bytes_sent_total\" { print \$2 }' '$G0') -gt 0 ]]"
R413='nsx_gateway_http_requests_refused_total{listener="enroll",reason="body_too_large"}'
head -c $((70 * 1024)) /dev/zero | tr '\0' 'a' >"$TOPO_DIR/big.body"
code=$(in_ul curl -s -m 15 --cacert "$GW_DIR/ca.pem" -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/json' --data-binary "@$TOPO_DIR/big.body" \
    "https://$GW_IP:8443/api/v1/enroll") || true
check_eq "8443: a 70 KiB enrollment body -> 413" 413 "$code"
G1=$TOPO_DIR/gw.metrics.1
scrape_gw "$G1" || bail "scrape the gateway after the 413"
grew "gateway: $R413 grew by the refused body" "$(metric "$G0" "$R413")" "$(metric "$G1" "$R413")" 1
diag "$(grep -E '^nsx_gateway_(control_bytes|tls_handshake_failures|http_requests_refused_total[{]listener="enroll")' "$G1")"

# --- only GET /metrics, only on loopback
code=$(in_inst vm1 curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/) || true
check_eq "agent: GET / is 404" 404 "$code"
code=$(in_inst vm1 curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:9464/metrics) || true
check_eq "agent: POST /metrics is 405" 405 "$code"
code=$(in_gw curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9465/other) || true
check_eq "gateway: GET /other is 404" 404 "$code"
check "agent: listening on 127.0.0.1:9464 only" bash -c \
    "ip netns exec '$(topo_ns vm1)' ss -Hltn 'sport = :9464' | awk '{print \$4}' | grep -qx '127.0.0.1:9464'"
ul1=$(topo_underlay_ip vm1)
check "agent: not reachable on its underlay address $ul1:9464 (from the underlay)" \
    bash -c "! ip netns exec '$TOPO_UL' curl -s -m 3 -o /dev/null 'http://$ul1:9464/metrics'"
check "agent: not reachable on its underlay address from inside its own namespace either" \
    bash -c "! ip netns exec '$(topo_ns vm1)' curl -s -m 3 -o /dev/null 'http://$ul1:9464/metrics'"
check "gateway: not reachable on $GW_IP:9465 (from the underlay)" \
    bash -c "! ip netns exec '$TOPO_UL' curl -s -m 3 -o /dev/null 'http://$GW_IP:9465/metrics'"

# --- GET /api/v1/certificates (what nsxcli's `get certificates` shows)
gw_api GET /api/v1/certificates >"$TOPO_DIR/certs.json"
certs=$(cat "$TOPO_DIR/certs.json")
check_eq "GET /api/v1/certificates: HTTP 200" 200 "$GW_HTTP_CODE"
check_eq "GET /api/v1/certificates: one certificate per agent, none revoked" "2 0" \
    "$(jq -r '"\(.certificates | length) \(.revocations | length)"' <<<"$certs")"
tap_done
