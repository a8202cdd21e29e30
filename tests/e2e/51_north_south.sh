#!/usr/bin/env bash
# tests/e2e/51_north_south.sh -- e2e test 51: the edge's tier-0 and NAT,
# north-south. vm1 (ls-web), vm2 (ls-app) and vm3 (ls-web) send what their
# tier-1 has no route for to the edge vm9, which takes `eth1` as its
# uplink 203.0.113.2/24 (secondary 203.0.113.10, vm3's public IP). Beyond
# the uplink, namespace t51-inet is the cloud's NAT (stage one, nftables):
# the elastic IPs 198.51.100.2 (the uplink's) and 198.51.100.10 (vm3's)
# map 1:1 to the uplink's addresses, and its "internet" link to t51-net
# (hosts 198.51.100.7 and .8) has MTU 1280. Checks:
#   1. curl from vm1 to an HTTP server on the internet: the server logs
#      the SNAT address (the uplink's elastic IP); on the uplink the
#      source is the uplink's address;
#   3. public IP: the internet host curls 198.51.100.10 and reaches vm3's
#      server, which logs the client's own address; vm3's own traffic
#      leaves from its public IP; vm1 reaches vm3 at 203.0.113.10
#      (hairpin); removed (SIGHUP reload), inbound fails within 1 s (3
#      failed connects in a row from then) and for 3 s more;
#   4. endpoint-independent mapping: one UDP socket of vm1 to two internet
#      hosts: both see the same external port;
#   5. ICMP echo with the same identifier from vm1 and vm2 at once: both
#      answered, two distinct identifiers outside; traceroute from vm1
#      shows the tier-1, the tier-0 and the cloud router; an upload from
#      vm1 through the 1280-MTU link completes (frag-needed translated back
#      to vm1: PMTU through the NAT), and so does a download;
#   6. 20,000 UDP flows from vm1 and vm2 to one internet port, all
#      translated without collision; then, with a 100-port pool, exhaustion
#      is counted (drop and metric) and ICMP still passes;
#   9. SIGTERM of the edge during a TCP stream: the stream survives (NAT
#      table saved and restored); SIGKILL: new connections work again.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 51 "$@"
for t in curl python3 nft traceroute; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs it)"
done
NSTOOL=$E2E_LIB_DIR/nstool.py

seed_topology t51 1500 3
topo_instance vm9
topo_edge vm9 203.0.113.2/24 203.0.113.1 203.0.113.10
# A planned restart keeps the plumbing (and the NAT table goes to a file).
topo_host_option vm9 'on_stop = "keep"'
topo_host_option vm9 'metrics_listen = "127.0.0.1:9464"'
topo_edge_tier0 '[[tier0.public_ips]]
public_ip = "203.0.113.10"
private_ip = "192.168.100.4"
instance = "vm3"'
topo_build
topo_edge_build
NET=t51-net
topo_cloud_nat "$NET" 1280 203.0.113.2=198.51.100.2 203.0.113.10=198.51.100.10

start_agents vm1 vm2 vm3
agent_start vm9 2>"$TOPO_DIR/vm9/start.err" || bail "the edge starts" "$(cat "$TOPO_DIR/vm9/start.err")"
check_eq "vm9 runs as the edge" edge "$(agent_ctl vm9 status | jq -r .mode)"
wait_for 10 in_overlay vm1 ping -c 1 -W 1 -q 198.51.100.7 >/dev/null 2>&1 ||
    bail "vm1 reaches the internet host" "$(agent_ctl vm9 counters | jq -c '.drops|with_entries(select(.value>0))')"

# --- 1. SNAT: curl out.
WWW=$TOPO_DIR/www
mkdir -p "$WWW"
head -c 400000 /dev/urandom >"$WWW/big"
echo hello >"$WWW/index.html"
sandbox_bg "$TOPO_DIR/http.log" ip netns exec "$NET" python3 -m http.server 8080 --bind 0.0.0.0 --directory "$WWW"
wait_for 10 ip netns exec "$NET" bash -c 'exec 3<>/dev/tcp/198.51.100.7/8080' || bail "the internet HTTP server listens"
cap_start_in up "$TOPO_INET" uplink "tcp port 8080" || bail "uplink capture starts"
body=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/index.html || true)
upl=$(cap_stop up)
check_eq "vm1 curls the internet server" hello "$body"
check "the server logs the SNAT address (the uplink's elastic IP 198.51.100.2)" \
    grep -q '^198\.51\.100\.2 .*"GET /index.html' "$TOPO_DIR/http.log"
srcs=$(cap_fields "$upl" "tcp.dstport==8080" ip.src | sort -u)
check_eq "on the uplink the source is the uplink's address" 203.0.113.2 "$srcs"

# --- 3. public IP (vm3: 192.168.100.4 <-> 203.0.113.10 <-> 198.51.100.10).
V3LOG=$TOPO_DIR/vm3-http.log
sandbox_bg "$V3LOG" ip netns exec "$(topo_root vm3)" python3 -m http.server 8081 --bind 0.0.0.0 --directory "$WWW"
wait_for 10 in_overlay vm3 bash -c 'exec 3<>/dev/tcp/192.168.100.4/8081' || bail "vm3's HTTP server listens"
body=$(ip netns exec "$NET" curl -s --max-time 10 --interface 198.51.100.7 http://198.51.100.10:8081/index.html || true)
check_eq "the internet host reaches vm3 at its elastic IP" hello "$body"
check "vm3's server logs the client's own address 198.51.100.7" grep -q '^198\.51\.100\.7 .*"GET /index.html' "$V3LOG"
body=$(in_overlay vm3 curl -s --max-time 10 http://198.51.100.8:8080/index.html || true)
check_eq "vm3 curls out" hello "$body"
check "vm3's own traffic leaves from its public IP (198.51.100.10)" grep -q '^198\.51\.100\.10 .*"GET /index.html' "$TOPO_DIR/http.log"
body=$(in_overlay vm1 curl -s --max-time 10 http://203.0.113.10:8081/index.html || true)
check_eq "hairpin: vm1 reaches vm3 at its public IP 203.0.113.10" hello "$body"
check "hairpin: vm3 sees vm1 by vm1's external address 203.0.113.2" grep -q '^203\.0\.113\.2 .*"GET /index.html' "$V3LOG"

# --- 4. endpoint-independent mapping.
EIM=$TOPO_DIR/eim.log
sandbox_bg "$TOPO_DIR/eim7.err" ip netns exec "$NET" python3 "$NSTOOL" udp-serve 198.51.100.7 5000 20 "$EIM"
sandbox_bg "$TOPO_DIR/eim8.err" ip netns exec "$NET" python3 "$NSTOOL" udp-serve 198.51.100.8 5000 20 "$EIM"
sleep 0.5
got=$(in_overlay vm1 python3 "$NSTOOL" udp-from 40000 5 198.51.100.7:5000 198.51.100.8:5000 || echo 0)
check_eq "vm1's socket hears from both internet hosts" 2 "$got"
ports=$(cut -d: -f2 "$EIM" | sort -u)
n=$(grep -c . "$EIM" || true)
check_eq "both hosts were reached" 2 "$n"
check_eq "both see one external port (endpoint-independent mapping)" 1 "$(grep -c . <<<"$ports")"
check_eq "from the uplink's elastic IP" 198.51.100.2 "$(cut -d: -f1 "$EIM" | sort -u)"

# --- 5. ICMP ids, traceroute, PMTU.
cap_start_in ic "$NET" eth0 "icmp" || bail "internet capture starts"
in_overlay vm1 python3 "$NSTOOL" echo-id 198.51.100.7 4242 5 5 >"$TOPO_DIR/echo1" &
e1=$!
in_overlay vm2 python3 "$NSTOOL" echo-id 198.51.100.7 4242 5 5 >"$TOPO_DIR/echo2" &
e2=$!
wait "$e1" "$e2" || true
icl=$(cap_stop ic)
check_eq "vm1's echoes with id 4242 are answered" 5 "$(cat "$TOPO_DIR/echo1")"
check_eq "vm2's echoes with id 4242 are answered" 5 "$(cat "$TOPO_DIR/echo2")"
ids=$(cap_fields "$icl" "icmp.type==8" icmp.ident | sort -u)
check_eq "outside, two distinct identifiers (RFC 5508 id mapping)" 2 "$(grep -c . <<<"$ids")"
tr=$(in_overlay vm1 traceroute -n -q 1 -w 2 -m 6 198.51.100.7 2>&1 || true)
hops=$(awk 'NR>1 {print $2}' <<<"$tr" | tr '\n' ' ')
check_eq "traceroute: tier-1, tier-0, the cloud router, the host" \
    "192.168.100.1 203.0.113.2 203.0.113.1 198.51.100.7 " "$hops"
sum=$(sha256sum <"$WWW/big" | cut -d' ' -f1)
got=$(in_overlay vm1 sh -c 'curl -s --max-time 20 http://198.51.100.7:8080/big | sha256sum' | cut -d' ' -f1 || true)
check_eq "a download through the 1280-MTU link completes" "$sum" "$got"
sandbox_bg "$TOPO_DIR/sink.err" ip netns exec "$NET" timeout 30 socat -u TCP-LISTEN:9000,reuseaddr OPEN:"$TOPO_DIR/upload",creat,trunc
sleep 0.3
in_overlay vm1 sh -c "timeout 20 socat -u OPEN:$WWW/big TCP:198.51.100.7:9000" || true
wait_for 10 test "$(stat -c %s "$TOPO_DIR/upload" 2>/dev/null || echo 0)" -eq 400000 || true
check_eq "an upload through the 1280-MTU link completes (PMTU through the NAT)" "$sum" \
    "$(sha256sum <"$TOPO_DIR/upload" | cut -d' ' -f1)"

# --- 6. 20,000 flows, then exhaustion.
COUNT=$TOPO_DIR/count
sandbox_bg "$TOPO_DIR/count.err" ip netns exec "$NET" python3 "$NSTOOL" udp-count 198.51.100.7 6000 25 "$COUNT"
sleep 0.3
in_overlay vm1 python3 "$NSTOOL" udp-flows 10000 20000 198.51.100.7 6000 >/dev/null &
f1=$!
in_overlay vm2 python3 "$NSTOOL" udp-flows 10000 20000 198.51.100.7 6000 >/dev/null &
f2=$!
wait "$f1" "$f2" || true
wait_for 10 sh -c "[ \"\$(cut -d' ' -f1 $COUNT 2>/dev/null)\" = 20000 ]" || true
check_eq "20,000 flows reach the host as 20,000 distinct sources" "20000 198.51.100.2" "$(cat "$COUNT" 2>/dev/null)"
s=$(counter_at_least vm9 .nat.sessions 20000)
check "the edge holds at least 20,000 NAT sessions ($s)" test "${s:-0}" -ge 20000

for vm in vm1 vm2 vm9; do
    d=$(agent_ctl "$vm" counters | jq -c '[(.drops | with_entries(select(.value > 0))), (.io | with_entries(select(.value > 0)))]' 2>/dev/null || true)
    diag "$vm drops, io after the flows: $d"
done
diag "receiver UDP: $(ip netns exec "$NET" awk '/^Udp:/ {print}' /proc/net/snmp | tail -1)"

# --- 9. a planned restart during a TCP stream; then SIGKILL.
STREAM=$TOPO_DIR/stream
sandbox_bg "$TOPO_DIR/stream.err" ip netns exec "$NET" timeout 60 socat -u TCP-LISTEN:9100,reuseaddr OPEN:"$STREAM",creat,trunc
sleep 0.3
in_overlay vm1 bash -c 'for i in $(seq 1 80); do echo "line $i"; sleep 0.1; done | timeout 50 socat -u - TCP:198.51.100.7:9100' &
streamer=$!
wait_for 10 sh -c "[ \$(cat $STREAM 2>/dev/null | wc -l) -ge 10 ]" || true
agent_stop vm9 || diag "edge stop rc=$?"
check "the planned stop saved the NAT sessions" test -s "$TOPO_DIR/vm9/state/nat-sessions.json"
agent_start vm9 2>"$TOPO_DIR/vm9/restart.err" || bail "the edge restarts" "$(cat "$TOPO_DIR/vm9/restart.err")"
r=$(counter_at_least vm9 .nat.restored 1)
check "the restarted edge restored the NAT sessions ($r)" test "${r:-0}" -ge 1
wait "$streamer" && rc=0 || rc=$?
wait_for 15 sh -c "[ \$(cat $STREAM 2>/dev/null | wc -l) -ge 80 ]" || true
check_eq "the TCP stream survives the planned restart (80 lines, sender rc $rc)" 80 "$(wc -l <"$STREAM")"
agent_kill vm9
agent_start vm9 2>"$TOPO_DIR/vm9/restart2.err" || bail "the edge starts after SIGKILL" "$(cat "$TOPO_DIR/vm9/restart2.err")"
body=""
for ((i = 0; i < 20; i++)); do
    body=$(in_overlay vm1 curl -s --max-time 3 http://198.51.100.7:8080/index.html || true)
    [[ "$body" == hello ]] && break
    sleep 0.5
done
check_eq "after SIGKILL, new connections work once the edge is back" hello "$body"

# --- 6 (end). A 100-port pool: exhaustion is counted, ICMP still passes.
cfg=$(topo_config_path vm9)
printf '\n[tier0.snat]\nport_min = 61000\nport_max = 61099\n' >>"$cfg"
kill -HUP "$(agent_pid vm9)"
wait_for 10 sh -c "grep -q 'config version .* applied\|reload.*ok' '$(agent_log vm9)'" || true
sleep 0.5
in_overlay vm1 python3 "$NSTOOL" udp-flows 300 50000 198.51.100.7 6001 >/dev/null || true
x=$(counter_at_least vm9 '.drops.nat_exhausted' 1)
check "exhaustion is a counted drop (nat_exhausted $x)" test "${x:-0}" -ge 1
m=$(in_inst vm9 curl -s --max-time 5 http://127.0.0.1:9464/metrics || true)
fails=$(grep -E '^nsx_agent_nat_allocation_failures_total\{snat_ip="203.0.113.2",protocol="udp"\}' <<<"$m" | awk '{print $2}')
check "the metric shows the allocation failures (${fails:-none})" test "${fails:-0}" -ge 1
check "ICMP still passes with the UDP pool exhausted" in_overlay vm1 ping -c 2 -W 2 -q 198.51.100.7

# --- 3 (end). Withdrawing the public IP closes it within 1 s of the reload
# (as e2e 53 times it: the first of 3 failed connects in a row, polled every
# 20 ms), and it stays closed.
sed -i '/^\[\[tier0.public_ips\]\]$/,/^instance = "vm3"$/d' "$cfg"
grep -q '^\[\[tier0.public_ips\]\]$' "$cfg" && bail "the public IP is gone from the edge's config"
kill -HUP "$(agent_pid vm9)"
t_hup=$(date +%s%3N)
read -r t1 _ < <(ip netns exec "$NET" python3 "$NSTOOL" tcp-wait closed 198.51.100.7 198.51.100.10 8081 5) || true
ms=""
[[ "${t1:-never}" =~ ^[0-9]+$ ]] && ms=$((t1 - t_hup))
check "the public IP is withdrawn within 1 s of the reload: the first of 3 failed connects in a row began ${ms:-never} ms after the SIGHUP" \
    test -n "$ms" -a "${ms:-99999}" -le 1000
n=$(ip netns exec "$NET" python3 "$NSTOOL" tcp-closed 198.51.100.7 198.51.100.10 8081 3 || true)
check "... and stays withdrawn: none of ${n:-no} connects in 3 s gets through" grep -qE '^[0-9]+$' <<<"$n"

tap_done
