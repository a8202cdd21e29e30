#!/usr/bin/env bash
# tests/e2e/55_lb_health.sh -- e2e test 55 (issue 15, health checks): the
# edge runs keepalived's checkers from its health-check namespace
# (tier0.health_check_ip, 100.64.0.1) over the overlay, reports to the
# gateway, and every agent balancing the virtual server follows. The
# gateway host is the edge (as e2e 53); vm1 is the client, vm2 and vm3 the
# real servers (addresses from IPAM); the virtual servers come from a
# keepalived.conf by `nsx-gateway lb import`:
#   10.64.1.2:7000 rr, persistence 1 s: vm2 with TCP_CHECK, vm3 with
#     HTTP_GET /health (connect_port 8080, status_code 200);
#   10.64.1.3:7000 sh: vm2 with MISC_CHECK (a script on the edge host,
#     misc_dynamic);
#   10.64.1.4:7000 rr, persistence 1 s, inhibit_on_failure, quorum 2, sorry_server vm3:7001
#     (an echo answering "sorry"): vm2 and vm3 with TCP_CHECK.
# Every checker: delay_loop 2, connect_timeout 1, retry 1,
# delay_before_retry 1, so a failed server is out within
# 2 + 1 + 2 x 1 = 5 s of failing, plus the 1 s the verdict may take to
# reach an agent: the bound polled here is 8 s (room for a loaded 2-core
# machine), timed from the failure. Checks:
#   - the checks come from 100.64.0.1 (vm2's capture; vm2's echo server
#     logs TCP_CHECK's connects, vm3's HTTP server answers HTTP_GET's
#     /health with 200), the edge and the gateway show the verdicts, rr
#     uses both servers;
#   - TCP_CHECK: vm2's server stopped -> out of vm1's pool within the
#     bound, new connections all go to vm3, a connection held to vm3
#     meanwhile keeps answering; `nsxcli --gateway get load-balancer`
#     shows the failed check's result; restarted -> back in;
#   - inhibit_on_failure and quorum (10.64.1.4, the same event): vm2
#     stays listed at weight 0 (`inhibited`, in the ipvsadm view), the
#     live weight 1 is below quorum 2, so new connections go to the sorry
#     server; vm2 back -> quorum met, the sorry server out of the pool;
#   - HTTP_GET: vm3's /health gone (404, not status_code 200) -> out,
#     and the gateway's view shows the status it got; back -> in;
#   - MISC_CHECK misc_dynamic: exit 5 -> weight 3, exit 1 -> out, exit 0
#     -> the configured weight again.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 55 "$@"
for t in python3 jq tshark; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs it)"
done
NSTOOL=$E2E_LIB_DIR/nstool.py

gw_edge_setup t55 1500 vm1 vm2 vm3

# --- the real servers: a line echo on 7000 each, vm3's /health on 8080.
# serve VM: (re)starts VM's echo server; its pid in $TOPO_DIR/VM-echo.pid.
serve() {
    # Not through a shell function: the pid is the server's own.
    sandbox_bg /dev/null ip netns exec "$(topo_root "$1")" python3 "$NSTOOL" tcp-echo "${GW_IP_OF[$1]}" 7000 "$1" 300 "$TOPO_DIR/$1-tcp.log"
    echo "$SANDBOX_LAST_PID" >"$TOPO_DIR/$1-echo.pid"
    wait_for 10 in_overlay "$1" bash -c "exec 3<>/dev/tcp/${GW_IP_OF[$1]}/7000" 2>/dev/null
}
serve vm2 || bail "vm2's echo server listens"
serve vm3 || bail "vm3's echo server listens"
# The sorry server: an echo on vm3:7001 answering "sorry".
sandbox_bg /dev/null ip netns exec "$(topo_root vm3)" python3 "$NSTOOL" tcp-echo "${GW_IP_OF[vm3]}" 7001 sorry 300 /dev/null
wait_for 10 in_overlay vm3 bash -c "exec 3<>/dev/tcp/${GW_IP_OF[vm3]}/7001" 2>/dev/null || bail "the sorry server listens"
WWW=$TOPO_DIR/www
mkdir -p "$WWW"
echo ok >"$WWW/health"
sandbox_bg "$TOPO_DIR/vm3-http.log" in_overlay vm3 python3 "$NSTOOL" http-serve "${GW_IP_OF[vm3]}" 8080 "$WWW" 300
wait_for 10 in_overlay vm3 bash -c "exec 3<>/dev/tcp/${GW_IP_OF[vm3]}/8080" 2>/dev/null || bail "vm3's HTTP server listens" "$(cat "$TOPO_DIR/vm3-http.log")"
MISC_CODE=$TOPO_DIR/misc.code
echo 0 >"$MISC_CODE"
MISC=$TOPO_DIR/misc.sh
printf '#!/bin/sh\nexit "$(cat %s)"\n' "$MISC_CODE" >"$MISC"
chmod +x "$MISC"

KCONF=$TOPO_DIR/keepalived.conf
cat >"$KCONF" <<KEOF
! e2e 55: three virtual servers, five checkers
virtual_server 10.64.1.2 7000 {
    delay_loop 2
    lb_algo rr
    lb_kind NAT
    persistence_timeout 1
    protocol TCP
    real_server ${GW_IP_OF[vm2]} 7000 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
    real_server ${GW_IP_OF[vm3]} 7000 {
        weight 1
        HTTP_GET {
            url {
                path /health
                status_code 200
            }
            connect_port 8080
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
}
virtual_server 10.64.1.3 7000 {
    delay_loop 2
    lb_algo sh
    lb_kind NAT
    protocol TCP
    real_server ${GW_IP_OF[vm2]} 7000 {
        weight 5
        MISC_CHECK {
            misc_path "$MISC"
            misc_timeout 2
            misc_dynamic
            retry 1
            delay_before_retry 1
        }
    }
}
virtual_server 10.64.1.4 7000 {
    delay_loop 2
    lb_algo rr
    lb_kind NAT
    persistence_timeout 1
    protocol TCP
    inhibit_on_failure
    quorum 2
    sorry_server ${GW_IP_OF[vm3]} 7001
    real_server ${GW_IP_OF[vm2]} 7000 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
    real_server ${GW_IP_OF[vm3]} 7000 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
}
KEOF
cap_start_in hc "$(topo_root vm2)" nsx-eth0 "tcp port 7000" || bail "vm2 capture starts"
gw_cli lb import "$KCONF" >"$TOPO_DIR/import.out" 2>"$TOPO_DIR/import.err" ||
    bail "lb import" "$(cat "$TOPO_DIR/import.err")"
edge_applied() { gw_wait_applied edge "$(gw_desired_version edge)" 10; }
edge_applied || bail "the edge applies the checks"
check_eq "the edge's config lists the three virtual servers to check" 3 \
    "$(agent_ctl edge config | jq '.desired.tier0.health_checks | length')"
VIP=10.64.1.2
MVIP=10.64.1.3
QVIP=10.64.1.4
NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
[[ -x "$NSXCLI" ]] || bail "nsxcli binary ($NSXCLI)"
# gw_check VM_IP [VIP]: nsxcli --gateway's `get load-balancer VIP:7000`
# row of VM_IP:7000 (Real Server, Weight, Check, Health, Since, Reason):
# the last check result, for every virtual server wherever it is balanced.
gw_check() {
    in_gw timeout 20 "$NSXCLI" --gateway --dir "$GW_DIR" -c "get load-balancer ${2:-$VIP}:7000" 2>&1 |
        awk -v rs="$1:7000" '$1 == rs' | head -1 || true
}
# quorum VIP: vm1's view of VIP:7000's quorum (`lost` or `met`).
quorum() {
    agent_ctl vm1 load-balancers 2>/dev/null |
        jq -r --arg vip "$1" '.services[] | select(.vip == $vip) | if .quorum_lost then "lost" else "met" end'
}
# state VM_IP [VIP]: the state of the real server VM_IP:7000 in vm1's view.
state() {
    agent_ctl vm1 load-balancers 2>/dev/null |
        jq -r --arg vip "${2:-$VIP}" --arg ip "$1" \
            '.services[] | select(.vip == $vip) | .real_servers[] | select(.ip == $ip) | "\(.state) \(.weight)"' |
        head -1
}
# gw_health VM_IP [VIP]: the gateway's verdict on VM_IP:7000.
gw_health() {
    gw_api GET /api/v1/load-balancers |
        jq -r --arg vip "${2:-$VIP}" --arg ip "$1" \
            '.[] | select(.vip == $vip) | .real_servers[] | select(.ip == $ip) | .health.state // "none"' |
        head -1
}
# wait_state VM_IP WANT [VIP]: polls vm1's view every 50 ms until 8000 ms
# after its start; prints the milliseconds it took, or fails.
wait_state() {
    local t0 t
    t0=$(date +%s%3N)
    while :; do
        [[ $(state "$1" "${3:-$VIP}") == "$2"* ]] && { echo $(($(date +%s%3N) - t0)); return 0; }
        t=$(date +%s%3N)
        ((t - t0 < 8000)) || return 1
        sleep 0.05
    done
}
# The first checks come within one delay_loop (2 s). The gateway shows a
# server without a verdict as up, and the edge reports only changes, so
# what is awaited (bounded) is the checks themselves, as the real servers
# log them (vm2's echo server each connection's source, vm3's HTTP server
# each request), and then the gateway's view of both.
TCP_CHECKED='^100\.64\.0\.1:[0-9]+$'
HTTP_CHECKED='^100\.64\.0\.1 .*"GET /health HTTP/1\.[01]" 200 '
# shellcheck disable=SC2317 # called through wait_for
checked() {
    grep -qE "$TCP_CHECKED" "$TOPO_DIR/vm2-tcp.log" && grep -qE "$HTTP_CHECKED" "$TOPO_DIR/vm3-http.log"
}
# shellcheck disable=SC2317 # called through wait_for
both_up() { [[ "$(gw_health "${GW_IP_OF[vm2]}") $(gw_health "${GW_IP_OF[vm3]}")" == "up up" ]]; }
wait_for 10 checked || true
wait_for 10 both_up || true
hc=$(cap_stop hc)
check "vm2 sees the checks come from the health-check address 100.64.0.1" \
    grep -q . <<<"$(cap_fields "$hc" "tcp.flags.syn==1 && ip.src==100.64.0.1" ip.src)"
check "vm2's echo server logs TCP_CHECK's connects from 100.64.0.1" grep -qE "$TCP_CHECKED" "$TOPO_DIR/vm2-tcp.log"
check "vm3's HTTP server answers HTTP_GET's /health from 100.64.0.1 with 200" \
    grep -qE "$HTTP_CHECKED" "$TOPO_DIR/vm3-http.log"
check_eq "the gateway: vm2 up (TCP_CHECK)" up "$(gw_health "${GW_IP_OF[vm2]}")"
check_eq "the gateway: vm3 up (HTTP_GET)" up "$(gw_health "${GW_IP_OF[vm3]}")"
check_eq "vm1's view: vm2 up at weight 1" "up 1" "$(state "${GW_IP_OF[vm2]}")"
# who [VIP]: the server answering one short connection to VIP:7000.
who() { in_overlay vm1 python3 "$NSTOOL" tcp-hold "${1:-$VIP}" 7000 0.2 /dev/stdout 2>/dev/null | awk '{print $1}'; }
# answers N [VIP]: who answered N connections 1.3 s apart (persistence is
# 1 s), one line each.
answers() {
    local i
    for ((i = 0; i < $1; i++)); do
        who "${2:-$VIP}"
        sleep 1.3
    done
}
# spread N [VIP]: the servers those N connections reached.
spread() { answers "$@" | sort -u | tr '\n' ' '; }
check_eq "rr with both up: both servers take connections" "vm2 vm3 " "$(spread 4)"
check_eq "quorum 2 met with both up (10.64.1.4)" met "$(quorum "$QVIP")"
check_eq "10.64.1.4: rr over vm2 and vm3, the sorry server unused" "vm2 vm3 " \
    "$(spread 2 "$QVIP")"

# --- TCP_CHECK: vm2's server stops.
HOLD=$TOPO_DIR/hold.out
kill "$(cat "$TOPO_DIR/vm2-echo.pid")" 2>/dev/null || true
ms=$(wait_state "${GW_IP_OF[vm2]}" down) || ms=""
check "TCP_CHECK: vm2 out of vm1's pool within 8 s of its server stopping (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
diag "vm2 down after ${ms:-never} ms (checker bound 5000 ms + propagation)"
sandbox_bg /dev/null in_overlay vm1 python3 "$NSTOOL" tcp-hold "$VIP" 7000 4 "$HOLD"
check_eq "vm2 down: new connections all go to vm3" "vm3 " "$(spread 3)"
line=$(gw_check "${GW_IP_OF[vm2]}")
check "nsxcli --gateway get load-balancer: vm2's TCP_CHECK down, since when, and the failure ($line)" \
    grep -qE '^[0-9.:]+ +1 +TCP_CHECK +down +[0-9-]+ [0-9:]+ +TCP_CHECK failed' <<<"$line"
ms=$(wait_state "${GW_IP_OF[vm2]}" "inhibited 0" "$QVIP") || ms=""
check "inhibit_on_failure: vm2 listed at weight 0 in 10.64.1.4's view (${ms:-never} ms)" test -n "$ms"
ipvs=$(timeout 10 "$NSXCLI" --socket "$(topo_socket vm1)" get load-balancers 2>&1 || true)
check "inhibit_on_failure: ipvsadm's view still lists vm2 under 10.64.1.4, weight 0" \
    grep -qE "^  -> ${GW_IP_OF[vm2]//./\\.}:7000 +Masq +0 " <<<"$(awk '/^TCP  10\.64\.1\.4:7000/{f=1; next} /^[A-Z]/{f=0} f' <<<"$ipvs")"
check_eq "quorum 2 lost (live weight 1)" lost "$(quorum "$QVIP")"
check_eq "quorum lost: new connections to 10.64.1.4 go to the sorry server" "sorry sorry " \
    "$(answers 2 "$QVIP" | tr '\n' ' ')"
serve vm2 || bail "vm2's echo server listens again"
ms=$(wait_state "${GW_IP_OF[vm2]}" up) || ms=""
check "TCP_CHECK: vm2 back in within 8 s of its restart (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
ms=$(wait_state "${GW_IP_OF[vm2]}" "up 1" "$QVIP") || ms=""
check_eq "quorum met again once vm2 is back (${ms:-never} ms)" met "$(quorum "$QVIP")"
check_eq "10.64.1.4: the real servers answer again, not the sorry server" "vm2 vm3 " \
    "$(spread 2 "$QVIP")"
wait_for 6 test -s "$HOLD" || true
check_eq "the connection held to vm3 meanwhile answered every line" "vm3 ok" "$(awk '{print $1, $3}' "$HOLD" 2>/dev/null)"

# --- HTTP_GET: /health gone (404).
rm -f "$WWW/health"
ms=$(wait_state "${GW_IP_OF[vm3]}" down) || ms=""
check "HTTP_GET: status 404 (not 200) puts vm3 out within 8 s (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
check_eq "the gateway says vm3 is down" down "$(gw_health "${GW_IP_OF[vm3]}")"
line=$(gw_check "${GW_IP_OF[vm3]}")
check "nsxcli --gateway get load-balancer: vm3's HTTP_GET down on the status it got ($line)" \
    grep -qE '^[0-9.:]+ +1 +HTTP_GET +down +.*404' <<<"$line"
echo ok >"$WWW/health"
ms=$(wait_state "${GW_IP_OF[vm3]}" up) || ms=""
check "HTTP_GET: /health back, vm3 back in within 8 s (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000

# --- MISC_CHECK misc_dynamic.
check_eq "MISC_CHECK: exit 0, vm2 at its configured weight 5" "up 5" "$(state "${GW_IP_OF[vm2]}" "$MVIP")"
echo 5 >"$MISC_CODE"
ms=$(wait_state "${GW_IP_OF[vm2]}" "up 3" "$MVIP") || ms=""
check "MISC_CHECK misc_dynamic: exit 5 sets the weight to 3 within 8 s (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
echo 1 >"$MISC_CODE"
ms=$(wait_state "${GW_IP_OF[vm2]}" down "$MVIP") || ms=""
check "MISC_CHECK: exit 1 puts vm2 out within 8 s (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
echo 0 >"$MISC_CODE"
ms=$(wait_state "${GW_IP_OF[vm2]}" "up 5" "$MVIP") || ms=""
check "MISC_CHECK: exit 0 again, back at weight 5 within 8 s (${ms:-never} ms)" \
    test -n "$ms" -a "${ms:-99999}" -le 8000
tap_done
