#!/usr/bin/env bash
# tests/e2e/56_lb_edge.sh -- e2e test 56 (issue 15, balanced at the edge):
# virtual servers on the tier-0's uplink (203.0.113.11, behind the cloud
# NAT's elastic IP 198.51.100.11, stage one of two) are balanced by the
# edge, for clients on the internet (198.51.100.7 and .8). The gateway host
# is the edge (as e2e 53); vm1 and vm3 run line-echo servers on 7000 that
# log each connection's source. Checks:
#   - NAT, lc, persistence 30: each internet client holds a connection; lc
#     counts exactly at the edge, so the second lands on the other server;
#     each real server logs the client's own address (NAT rewrites only the
#     destination; the answers go back through the edge, the real servers'
#     way out); the edge's view shows one active connection on each;
#   - full-NAT (FNAT) 7001 -> vm3:7000: the client gets vm3's echo and vm3
#     logs the edge's SNAT address 203.0.113.2, not the client's;
#   - `get load-balancers` at the edge: both virtual servers, Masq and
#     FullNat; `get load-balancer 203.0.113.11:7001` at the edge: vm3's
#     checker (a MISC_CHECK running /bin/true on the edge) up, its last
#     result ok, and when.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 56 "$@"
for t in python3 jq nft; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs it)"
done
NSTOOL=$E2E_LIB_DIR/nstool.py
NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
[[ -x "$NSXCLI" ]] || bail "nsxcli binary ($NSXCLI)"

gw_edge_setup t56 1500 vm1 vm3
STATE=$TOPO_DIR/state.yaml
NET=t56-net
topo_cloud_nat "$NET" 1500 203.0.113.2=198.51.100.2 203.0.113.11=198.51.100.11
in_net() { ip netns exec "$NET" "$@"; }
for vm in vm1 vm3; do
    sandbox_bg /dev/null ip netns exec "$(topo_root "$vm")" python3 "$NSTOOL" tcp-echo "${GW_IP_OF[$vm]}" 7000 "$vm" 120 "$TOPO_DIR/$vm-tcp.log"
done
for vm in vm1 vm3; do
    wait_for 10 in_overlay "$vm" bash -c "exec 3<>/dev/tcp/${GW_IP_OF[$vm]}/7000" 2>/dev/null || bail "$vm's echo server listens"
done
: >"$TOPO_DIR/vm1-tcp.log"
: >"$TOPO_DIR/vm3-tcp.log"
cat >>"$STATE" <<EOF
load_balancers:
  - vip: 203.0.113.11
    port: 7000
    scheduler: lc
    persistence_timeout: 30
    real_servers:
      - {ip: ${GW_IP_OF[vm1]}, port: 7000}
      - {ip: ${GW_IP_OF[vm3]}, port: 7000}
  - vip: 203.0.113.11
    port: 7001
    scheduler: sh
    kind: fnat
    delay_loop: 1
    real_servers:
      - {ip: ${GW_IP_OF[vm3]}, port: 7000, check: {type: misc, path: /bin/true}}
EOF
gw_apply "$STATE" >"$TOPO_DIR/apply2.log" 2>&1 || bail "apply the load balancers" "$(cat "$TOPO_DIR/apply2.log")"
gw_wait_applied edge "$(gw_desired_version edge)" 10 || bail "the edge applies the load balancers"
check_eq "the gateway: both balanced at the edge" "edge edge" \
    "$(gw_api GET /api/v1/load-balancers | jq -r '[.[].balanced_at] | join(" ")')"

# --- NAT, lc: two internet clients, each holding a connection.
hold() { sandbox_bg /dev/null in_net python3 "$NSTOOL" tcp-hold 198.51.100.11 7000 "$2" "$TOPO_DIR/hold-$1.out" "$1"; }
hold 198.51.100.7 6
wait_for 5 bash -c "cat '$TOPO_DIR/vm1-tcp.log' '$TOPO_DIR/vm3-tcp.log' | grep -q ." || bail "the first client reached a real server"
first=vm1
grep -q . "$TOPO_DIR/vm3-tcp.log" && first=vm3
second=vm3
[[ $first == vm3 ]] && second=vm1
hold 198.51.100.8 4
wait_for 5 grep -q . "$TOPO_DIR/$second-tcp.log" || true
check_eq "lc at the edge: the second client goes to the server without a connection ($second)" \
    "198.51.100.8" "$(cut -d: -f1 "$TOPO_DIR/$second-tcp.log" | sort -u | tr -d '\n')"
check_eq "NAT: $first logs the first client's own address" \
    "198.51.100.7" "$(cut -d: -f1 "$TOPO_DIR/$first-tcp.log" | sort -u | tr -d '\n')"
view=$(agent_ctl edge load-balancers 2>/dev/null)
check_eq "the edge's view: one active connection on each real server" "1 1" \
    "$(jq -r '.services[] | select(.port == 7000) | [.real_servers[].active] | map(tostring) | join(" ")' <<<"$view")"
wait_for 10 test -s "$TOPO_DIR/hold-198.51.100.8.out" || true
wait_for 10 test -s "$TOPO_DIR/hold-198.51.100.7.out" || true
check_eq "client 198.51.100.7 held its connection to $first throughout" "$first ok" \
    "$(awk '{print $1, $3}' "$TOPO_DIR/hold-198.51.100.7.out" 2>/dev/null)"
check_eq "client 198.51.100.8 held its connection to $second throughout" "$second ok" \
    "$(awk '{print $1, $3}' "$TOPO_DIR/hold-198.51.100.8.out" 2>/dev/null)"

# --- full-NAT: vm3 sees the edge's SNAT address.
: >"$TOPO_DIR/vm3-tcp.log"
got=$(in_net python3 "$NSTOOL" tcp-hold 198.51.100.11 7001 0.3 /dev/stdout 198.51.100.7 2>/dev/null | awk '{print $1, $3}')
check_eq "full-NAT: the internet client gets vm3's echo" "vm3 ok" "$got"
check_eq "full-NAT: vm3 logs the edge's SNAT address 203.0.113.2, not the client's" \
    "203.0.113.2" "$(cut -d: -f1 "$TOPO_DIR/vm3-tcp.log" | sort -u | tr -d '\n')"
out=$(timeout 10 "$NSXCLI" --socket "$(topo_socket edge)" get load-balancers 2>&1 || true)
diag "$out"
check "get load-balancers at the edge: the NAT virtual server, lc" grep -qE '^TCP  203\.0\.113\.11:7000 lc persistent 30' <<<"$out"
check "get load-balancers at the edge: the full-NAT one forwards FullNat" grep -qE "^  -> ${GW_IP_OF[vm3]//./\\.}:7000 +FullNat " <<<"$out"
# edge_check: the edge's checker row of vm3 under 7001 (Real Server, Check,
# Verdict, Last Result, Checked, ...), once it has checked.
edge_check() {
    timeout 10 "$NSXCLI" --socket "$(topo_socket edge)" get load-balancer 203.0.113.11:7001 2>/dev/null |
        awk -v rs="${GW_IP_OF[vm3]}:7000" '$1 == rs && $2 == "MISC_CHECK"' | head -1 || true
}
# shellcheck disable=SC2317 # called through wait_for
checked_ok() { edge_check | grep -qE ' ok +[0-9]+\.[0-9] s ago '; }
wait_for 10 checked_ok || true
line=$(edge_check)
check "get load-balancer at the edge: vm3's MISC_CHECK up, last result ok, checked s ago ($line)" \
    grep -qE '^[0-9.:]+ +MISC_CHECK +up +ok +[0-9]+\.[0-9] s ago +0 ' <<<"$line"
tap_done
