#!/usr/bin/env bash
# tests/e2e/54_lb_distributed.sh -- e2e test 54 (issue 15): the L4 load
# balancer at the sending agent, with the seed's virtual server built as
# overlay switches: ls-client 10.64.1.0/24 (clients vm1 10.64.1.5, vm2
# 10.64.1.6) and ls-svc 192.168.1.0/24 (real servers vm3 192.168.1.100,
# vm4 192.168.1.101), joined by t1-router. Every agent's config carries
# the virtual servers, as the gateway pushes them to every instance:
#   A  TCP 10.64.1.2:10000 rr NAT persistence 10 -> 192.168.1.100:8089,
#      192.168.1.101:18089 (the seed's example; HTTP servers that log
#      their clients);
#   B  UDP 10.64.1.2:53 sh -> both on 5353 (a DNS-like echo);
#   C  TCP 10.64.1.2:7000 sh -> both on 7000 (line echo servers).
# Checks:
#   - the clients reach the VIP (ARP answered with the router's MAC), each
#     request answered by a real server, which logs the client's own
#     address (NAT mode), the answer from the VIP (curl connects to it);
#   - persistence: every connection of vm1 within 10 s lands on one
#     server, the same for vm2; 10 s after vm1's last connection ended the
#     next one rotates to the other server (rr moved on);
#   - UDP: answers come back from 10.64.1.2:53, from one server (sh);
#   - views: `nsxcli get load-balancers` is ipvsadm -Ln's layout with the
#     seed's line; --stats counts the connections; the metrics grow;
#   - draining and reload: a held connection to C keeps answering while
#     its server goes to weight 0 (SIGHUP) and then is removed from the
#     config (SIGHUP); new connections go to the other server meanwhile.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 54 "$@"
for t in curl python3; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs it)"
done
NSTOOL=$E2E_LIB_DIR/nstool.py
NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
[[ -x "$NSXCLI" ]] || bail "nsxcli binary ($NSXCLI; build it: cargo build --release -p nsxcli, or set NSXCLI)"

VIP=10.64.1.2
RS1=192.168.1.100
RS2=192.168.1.101
topo_new t54 1500
topo_switch ls-client 0x1000 10.64.1.0/24 10.64.1.1
topo_switch ls-svc 0x1001 192.168.1.0/24 192.168.1.1
topo_router t1-router "$ROUTER_MAC" ls-client ls-svc
topo_instance vm1 ls-client 10.64.1.5
topo_instance vm2 ls-client 10.64.1.6
topo_instance vm3 ls-svc "$RS1"
topo_instance vm4 ls-svc "$RS2"
topo_build

# lb_toml C_SERVERS: the virtual servers; C's real servers as a TOML list
# of inline tables (the rest never changes).
lb_toml() {
    cat <<EOT

[[load_balancers]]
vip = "$VIP"
port = 10000
protocol = "tcp"
scheduler = "rr"
kind = "nat"
persistence_timeout = 10
real_servers = [
    { ip = "$RS1", port = 8089, weight = 1 },
    { ip = "$RS2", port = 18089, weight = 1 },
]

[[load_balancers]]
vip = "$VIP"
port = 53
protocol = "udp"
scheduler = "sh"
real_servers = [
    { ip = "$RS1", port = 5353 },
    { ip = "$RS2", port = 5353 },
]

[[load_balancers]]
vip = "$VIP"
port = 7000
protocol = "tcp"
scheduler = "sh"
EOT
    printf 'real_servers = [ %s ]\n' "$1"
}
# c_servers IP=WEIGHT...: C's real servers.
c_servers() {
    local e out=""
    for e in "$@"; do
        out+="${out:+, }{ ip = \"${e%=*}\", port = 7000, weight = ${e#*=} }"
    done
    printf '%s\n' "$out"
}
for vm in vm1 vm2 vm3 vm4; do
    cp "$(topo_config_path "$vm")" "$TOPO_DIR/$vm/base.toml"
    { cat "$TOPO_DIR/$vm/base.toml"; lb_toml "$(c_servers "$RS1=1" "$RS2=1")"; } >"$(topo_config_path "$vm")"
done
topo_wait_underlay || bail "underlay up"
start_agents vm1 vm2 vm3 vm4

# --- the real servers
WWW=$TOPO_DIR/www
for vm in vm3 vm4; do
    mkdir -p "$WWW/$vm"
    printf '%s\n' "$vm" >"$WWW/$vm/index.html"
done
sandbox_bg "$TOPO_DIR/vm3-http.log" in_overlay vm3 python3 -m http.server 8089 --bind "$RS1" --directory "$WWW/vm3"
sandbox_bg "$TOPO_DIR/vm4-http.log" in_overlay vm4 python3 -m http.server 18089 --bind "$RS2" --directory "$WWW/vm4"
sandbox_bg /dev/null in_overlay vm3 python3 "$NSTOOL" udp-echo "$RS1" 5353 vm3 120 "$TOPO_DIR/vm3-udp.log"
sandbox_bg /dev/null in_overlay vm4 python3 "$NSTOOL" udp-echo "$RS2" 5353 vm4 120 "$TOPO_DIR/vm4-udp.log"
sandbox_bg /dev/null in_overlay vm3 python3 "$NSTOOL" tcp-echo "$RS1" 7000 vm3 120 "$TOPO_DIR/vm3-tcp.log"
sandbox_bg /dev/null in_overlay vm4 python3 "$NSTOOL" tcp-echo "$RS2" 7000 vm4 120 "$TOPO_DIR/vm4-tcp.log"
wait_for 10 in_overlay vm3 curl -s --max-time 1 "http://$RS1:8089/" -o /dev/null || bail "vm3's HTTP server answers"
wait_for 10 in_overlay vm4 curl -s --max-time 1 "http://$RS2:18089/" -o /dev/null || bail "vm4's HTTP server answers"

# get VM: one request to the VIP from VM; prints the server that answered
# and the address curl connected to ("vm3 10.64.1.2").
get() {
    in_overlay "$1" curl -s --max-time 5 -w ' %{remote_ip}' "http://$VIP:10000/index.html" 2>/dev/null | tr -d '\n' || true
}

# --- the seed's virtual server: persistence, then rotation
first1=$(get vm1)
case "$first1" in
"vm3 $VIP" | "vm4 $VIP") ok "vm1 reaches the seed's virtual server $VIP:10000 (answered by ${first1% *}, from the VIP)" ;;
*) not_ok "vm1 reaches the seed's virtual server $VIP:10000" "got: '$first1'" ;;
esac
srv1=${first1%% *}
same=1
for _ in 1 2 3 4; do
    [[ "$(get vm1)" == "$srv1 $VIP" ]] || same=0
done
check_eq "persistence: vm1's next 4 connections within 10 s land on $srv1 too" 1 "$same"
first2=$(get vm2)
srv2=${first2%% *}
same=1
for _ in 1 2 3; do
    [[ "$(get vm2)" == "$srv2 $VIP" ]] || same=0
done
check "vm2 reaches it too, and stays on one server (${srv2:-none})" test -n "$srv2" -a "$same" = 1
lines=$(grep -c "^10\.64\.1\.5 .*GET /index.html" "$TOPO_DIR/$srv1-http.log" || true)
check "NAT mode: the real server ($srv1) logs the client's own address 10.64.1.5 (5 requests)" test "$lines" -ge 5
# 10 s after the last connection ended the template expires: the next
# connection is scheduled again, and rr moved on to the other server.
sleep 11
next=$(get vm1)
check "after 10 s without connections vm1 rotates to the other server (was $srv1, now ${next% *})" \
    test -n "$next" -a "${next%% *}" != "$srv1"

# --- UDP: a DNS-like echo through the VIP
out=$(in_overlay vm1 python3 "$NSTOOL" udp-ask "$VIP" 53 3 2>&1 || true)
if grep -Eq "^$VIP:53 vm[34] " <<<"$out"; then
    ok "UDP virtual server: the answer comes from $VIP:53 ($(awk '{print $2}' <<<"$out" | head -1))"
else
    not_ok "UDP virtual server: the answer comes from $VIP:53" "$out"
fi

# --- views
view=$(timeout 10 "$NSXCLI" --socket "$(topo_socket vm1)" get load-balancers 2>&1 || true)
check "get load-balancers: ipvsadm's header" grep -q '^Prot LocalAddress:Port Scheduler Flags$' <<<"$view"
check "get load-balancers: the seed's line 'TCP  $VIP:10000 rr persistent 10'" \
    grep -q "^TCP  $VIP:10000 rr persistent 10\$" <<<"$view"
check "get load-balancers: both real servers, Masq, weight 1" \
    test "$(grep -cE "^  -> 192\.168\.1\.10[01]:1?8089 +Masq +1 " <<<"$view")" = 2
stats=$(timeout 10 "$NSXCLI" --socket "$(topo_socket vm1)" get load-balancers --stats 2>&1 || true)
conns=$(awk -v k="$VIP:10000" '$1 == "TCP" && $2 == k {print $3}' <<<"$stats")
check "get load-balancers --stats: vm1's 6 connections to the seed's VS counted (${conns:-none})" test "${conns:-0}" -ge 6
metrics=$(in_inst vm1 curl -s -m 5 http://127.0.0.1:9464/metrics 2>/dev/null || true)
check "metrics: nsx_agent_lb_connections_total for the seed's VS" \
    grep -q "nsx_agent_lb_connections_total{.*vip=\"$VIP:10000\".*} [1-9]" <<<"$metrics"

# --- draining and reload: a held connection survives both
HOLD=$TOPO_DIR/hold.out
sandbox_bg /dev/null in_overlay vm1 python3 "$NSTOOL" tcp-hold "$VIP" 7000 6 "$HOLD"
wait_for 5 bash -c "grep -q . '$TOPO_DIR/vm3-tcp.log' '$TOPO_DIR/vm4-tcp.log' 2>/dev/null" ||
    not_ok "the held connection reached a server"
held=vm3
grep -q . "$TOPO_DIR/vm4-tcp.log" 2>/dev/null && held=vm4
held_ip=$RS1
[[ $held == vm4 ]] && held_ip=$RS2
# weight 0 on the held server: existing continues, none added.
other_ip=$RS2
[[ $held == vm4 ]] && other_ip=$RS1
{ cat "$TOPO_DIR/vm1/base.toml"; lb_toml "$(c_servers "$held_ip=0" "$other_ip=1")"; } >"$(topo_config_path vm1)"
kill -HUP "$(agent_pid vm1)"
wait_for 5 bash -c "timeout 5 '$NSXCLI' --socket '$(topo_socket vm1)' get load-balancers | grep -qE '^  -> ${held_ip//./\\.}:7000 +Masq +0 '" ||
    not_ok "the reload with weight 0 is in force"
n_before=$(grep -c . "$TOPO_DIR/$held-tcp.log" || true)
fresh=$(in_overlay vm1 python3 "$NSTOOL" tcp-hold "$VIP" 7000 0.3 /dev/stdout 2>/dev/null | awk '{print $1}')
check "weight 0 drains: a new connection goes to the other server (got ${fresh:-none}, drained $held)" \
    test -n "$fresh" -a "$fresh" != "$held"
check_eq "weight 0 drains: no new connection reached $held" "$n_before" "$(grep -c . "$TOPO_DIR/$held-tcp.log" || true)"
# then the held server is removed from the config altogether.
{ cat "$TOPO_DIR/vm1/base.toml"; lb_toml "$(c_servers "$other_ip=1")"; } >"$(topo_config_path vm1)"
kill -HUP "$(agent_pid vm1)"
# held_removed: vm1's view lists C's other server and not the held one
# (an empty or failed answer is not that).
# shellcheck disable=SC2317 # called through wait_for
held_removed() {
    local v
    v=$(timeout 5 "$NSXCLI" --socket "$(topo_socket vm1)" get load-balancers 2>/dev/null) || return 1
    grep -qE "^  -> ${other_ip//./\\.}:7000 +Masq +1 " <<<"$v" && ! grep -qE "^  -> ${held_ip//./\\.}:7000 " <<<"$v"
}
wait_for 5 held_removed || not_ok "the reload without $held is in force"
wait_for 10 test -s "$HOLD" || true
hold=$(cat "$HOLD" 2>/dev/null || echo "none")
check "the held connection to $held kept answering through the drain and the reload ($hold)" \
    grep -Eq "^$held [0-9]+ ok\$" <<<"$hold"

tap_done
