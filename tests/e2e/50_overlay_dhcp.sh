#!/usr/bin/env bash
# tests/e2e/50_overlay_dhcp.sh -- e2e test 50: DHCP on the overlay switch.
# vm1's agent answers the DHCP client on its own port (nsx-eth0 in its
# overlay namespace), with ls-web's dhcp options (DNS, domain, lease
# 60 s, a classless route). Three real clients, one after the other, on a
# port whose address, routes and MTU were taken away first: ISC dhclient,
# busybox udhcpc and dhcpcd. Each must get 192.168.100.3/24, the default
# route via the switch's gateway, MTU 1442 (the overlay MTU at underlay
# 1500), the DNS server and domain; the overlay then works (ping vm2), a
# renewal is answered and a release is counted. A foreign address asked
# for gets a NAK. Then a rogue DHCP server (dnsmasq on vm2's port)
# answers a DISCOVER sent straight to it: vm2's agent drops the answer and
# counts it as rogue_dhcp_server, and vm1 never sees it.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 50 "$@"
# The clients' scripts may set the host name: a UTS namespace of our own;
# and a mount namespace, so the private files' binds end with this test.
if [[ -z "${NSX_E2E50_UTS:-}" ]]; then
    exec env NSX_E2E50_UTS=1 unshare --uts --mount --propagation unchanged bash "$(readlink -f "${BASH_SOURCE[0]}")" "$@"
fi
for t in dhclient udhcpc dhcpcd dnsmasq busybox; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs isc-dhcp-client, udhcpc, dhcpcd-base, dnsmasq-base)"
done

dhcp_client_private || bail "private files for the DHCP clients"

topo_new t50 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_switch_dhcp ls-web 'dns_servers = ["10.0.0.53", "10.0.1.53"]
domain_name = "corp.example"
lease_time = 60
routes = [{ prefix = "10.20.0.0/16", next_hop = "192.168.100.254" }]'
topo_router t1 02:50:56:56:44:52 ls-web
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
# vm3's agent runs the distribution's DHCP client on its port itself.
topo_instance vm3 ls-web 192.168.100.5
topo_host_option vm3 'port_dhcp = true'
topo_build
start_agents vm1 vm2

ip4() { in_overlay vm1 ip -j -4 addr show dev nsx-eth0 | jq -r '[.[0].addr_info[]? | "\(.local)/\(.prefixlen)"] | join(" ")'; }
has_addr() { [[ "$(ip4)" == "192.168.100.3/24" ]]; }
no_addr() { [[ -z "$(ip4)" ]]; }
mtu() { in_overlay vm1 cat /sys/class/net/nsx-eth0/mtu; }
has_default() { in_overlay vm1 ip -4 route show default | grep -q "via 192.168.100.1 dev nsx-eth0"; }
has_route121() { in_overlay vm1 ip -4 route show 10.20.0.0/16 | grep -q "via 192.168.100.254"; }
dhcp_count() { agent_ctl "$1" counters | jq -r --arg t "$2" '.dhcp[$t] // 0'; }
count_above() { [[ "$(dhcp_count "$1" "$2")" -gt "$3" ]]; }
# bare: the port without its address, routes and with MTU 1500, so what
# the client sets is seen.
bare() {
    in_overlay vm1 ip -4 addr flush dev nsx-eth0
    in_overlay vm1 ip -4 route flush dev nsx-eth0 2>/dev/null || true
    in_overlay vm1 ip link set dev nsx-eth0 mtu 1500
    echo "# e2e 50" >"$PRIV/resolv.conf"
}

# got KIND [ROUTE121]: what every client must have set.
got() {
    local kind=$1
    check "$kind: nsx-eth0 has 192.168.100.3/24" wait_for 20 has_addr
    check "$kind: default route via the switch's gateway" wait_for 5 has_default
    if [[ "$kind" == dhcpcd ]]; then
        # dhcpcd puts option 26 on the routes it adds, not on the link.
        check "$kind: MTU from option 26 (the overlay MTU) on its routes" bash -c \
            "ip netns exec $(topo_root vm1) ip -4 route show default | grep -q 'mtu 1442'"
    else
        check_eq "$kind: MTU from option 26 (the overlay MTU)" 1442 "$(mtu)"
    fi
    check "$kind: resolv.conf has the DNS servers" grep -q "^nameserver 10.0.0.53" "$PRIV/resolv.conf"
    check "$kind: resolv.conf has the domain" grep -qE "^(search|domain) .*corp\.example" "$PRIV/resolv.conf"
    [[ "${2:-}" == route121 ]] && check "$kind: the classless route 10.20.0.0/16 via .254" has_route121
    check "$kind: overlay ping vm1 -> vm2" in_overlay vm1 ping -n -c 2 -i 0.2 -W 2 192.168.100.4
}

# --- ISC dhclient (with Debian's dhclient.conf and dhclient-script)
bare
d0=$(dhcp_count vm1 discover)
a0=$(dhcp_count vm1 ack)
in_overlay vm1 timeout 30 dhclient -4 -v -1 -pf "$PRIV/dhclient.pid" -lf "$PRIV/lib-dhcp/e2e50.leases" nsx-eth0 \
    >"$TOPO_DIR/dhclient.log" 2>&1 || diag "dhclient:" "$(tail -n 15 "$TOPO_DIR/dhclient.log")"
got dhclient route121
check "dhclient: a DISCOVER was counted" count_above vm1 discover "$d0"
check "dhclient: an ACK was sent" count_above vm1 ack "$a0"
# nsxcli shows the server and the bound lease.
NSXCLI=$(dirname "$NSX_AGENT")/nsxcli
if [[ -x "$NSXCLI" ]]; then
    cli() { NSXCLI_HISTORY='' NSXCLI_SOCKET="$(topo_socket vm1)" timeout 30 "$NSXCLI" "$@"; }
    out=$(cli get dhcp server ls-web 2>&1 || true)
    check "nsxcli get dhcp server ls-web: the DNS servers" \
        grep -qE "^DNS Servers +: 10.0.0.53, 10.0.1.53$" <<<"$out"
    check "nsxcli get dhcp server ls-web: lease time and MTU" \
        bash -c 'grep -qE "^Lease Time +: 60 s$" <<<"$1" && grep -qE "^Interface MTU +: 1442$" <<<"$1"' _ "$out"
    bound() { cli get dhcp leases 2>/dev/null | grep -qE "^ls-web +192\.168\.100\.3 .* bound "; }
    check "nsxcli get dhcp leases: 192.168.100.3 bound" wait_for 5 bound
else
    not_ok "nsxcli binary next to the agent ($NSXCLI)"
fi
r0=$(dhcp_count vm1 release)
in_overlay vm1 timeout 15 dhclient -4 -r -pf "$PRIV/dhclient.pid" -lf "$PRIV/lib-dhcp/e2e50.leases" nsx-eth0 \
    >>"$TOPO_DIR/dhclient.log" 2>&1 || true
check "dhclient -r: the release is counted" wait_for 5 count_above vm1 release "$r0"
check "dhclient -r: the address is gone" wait_for 5 no_addr
if [[ -x "$NSXCLI" ]]; then
    free() { cli get dhcp leases 2>/dev/null | grep -qE "^ls-web +192\.168\.100\.3 .* free "; }
    check "nsxcli get dhcp leases: free after the release" wait_for 5 free
fi

# --- busybox udhcpc (Debian's default.script)
bare
in_overlay vm1 timeout 30 udhcpc -i nsx-eth0 -f -q -n -t 5 -T 2 >"$TOPO_DIR/udhcpc.log" 2>&1 ||
    diag "udhcpc:" "$(tail -n 15 "$TOPO_DIR/udhcpc.log")"
got udhcpc
# Renewal: a unicast REQUEST from the bound client (udhcpc renews on SIGUSR1).
rq=$(dhcp_count vm1 request)
a0=$(dhcp_count vm1 ack)
sandbox_bg "$TOPO_DIR/udhcpc2.log" ip netns exec "$(topo_root vm1)" udhcpc -i nsx-eth0 -f -R -t 5 -T 2
UDHCPC=$SANDBOX_LAST_PID
check "udhcpc: bound again (REQUEST answered)" wait_for 15 count_above vm1 ack "$a0"
a1=$(dhcp_count vm1 ack)
kill -USR1 "$UDHCPC" 2>/dev/null || true
check "udhcpc: the renewal (SIGUSR1) is answered with an ACK" wait_for 15 count_above vm1 ack "$a1"
check "udhcpc: the renewals are REQUESTs" count_above vm1 request "$((rq + 1))"
r0=$(dhcp_count vm1 release)
sandbox_kill "$UDHCPC" 5
check "udhcpc -R: the release on exit is counted" wait_for 5 count_above vm1 release "$r0"

# --- dhcpcd (Debian's dhcpcd.conf and hooks)
bare
in_overlay vm1 timeout 40 dhcpcd -4 -1 -w -t 20 nsx-eth0 >"$TOPO_DIR/dhcpcd.log" 2>&1 ||
    diag "dhcpcd:" "$(tail -n 15 "$TOPO_DIR/dhcpcd.log")"
got dhcpcd route121
a0=$(dhcp_count vm1 ack)
in_overlay vm1 timeout 15 dhcpcd -4 -N nsx-eth0 >>"$TOPO_DIR/dhcpcd.log" 2>&1 || true
check "dhcpcd -N: the renewal is answered with an ACK" wait_for 15 count_above vm1 ack "$a0"
r0=$(dhcp_count vm1 release)
in_overlay vm1 timeout 15 dhcpcd -4 -k nsx-eth0 >>"$TOPO_DIR/dhcpcd.log" 2>&1 || true
check "dhcpcd -k: the release is counted" wait_for 10 count_above vm1 release "$r0"
in_overlay vm1 timeout 15 dhcpcd -4 -x nsx-eth0 >/dev/null 2>&1 || true

# --- a foreign address asked for: NAK (INIT-REBOOT with a stale lease).
bare
n0=$(dhcp_count vm1 nak)
cat >"$PRIV/lib-dhcp/stale.leases" <<'EOF'
lease {
  interface "nsx-eth0";
  fixed-address 192.168.100.77;
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 192.168.100.1;
  renew 4 2037/01/01 00:00:00;
  rebind 4 2037/01/01 00:00:00;
  expire 4 2037/01/01 00:00:00;
}
EOF
in_overlay vm1 timeout 30 dhclient -4 -v -1 -pf "$PRIV/dhclient.pid" -lf "$PRIV/lib-dhcp/stale.leases" nsx-eth0 \
    >"$TOPO_DIR/dhclient-nak.log" 2>&1 || true
check "a REQUEST for 192.168.100.77 gets a NAK" wait_for 5 count_above vm1 nak "$n0"
check "after the NAK the client still ends with 192.168.100.3/24" wait_for 20 has_addr
in_overlay vm1 timeout 15 dhclient -4 -x -pf "$PRIV/dhclient.pid" nsx-eth0 >/dev/null 2>&1 || true

# --- a rogue DHCP server on vm2's port.
rogue0=$(agent_ctl vm2 counters | jq -r '.drops.rogue_dhcp_server')
sandbox_bg "$TOPO_DIR/rogue.log" ip netns exec "$(topo_root vm2)" dnsmasq --no-daemon --conf-file=/dev/null \
    --port=0 --interface=nsx-eth0 --bind-interfaces --log-dhcp \
    --dhcp-range=192.168.100.100,192.168.100.150,5m --dhcp-leasefile="$TOPO_DIR/rogue.leases"
wait_for 10 grep -qs 'DHCP, IP range' "$TOPO_DIR/rogue.log" || bail "rogue dnsmasq starts" "$(cat "$TOPO_DIR/rogue.log")"
# A DISCOVER sent straight to it from vm1's address (a client message to
# another server than the switch's is switched like any unicast).
discover_to() {
    in_overlay vm1 python3 - "$1" <<'PY'
import socket, struct, sys
mac = bytes.fromhex(open("/sys/class/net/nsx-eth0/address").read().strip().replace(":", ""))
msg = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, 0x50e2e050, 0, 0, bytes(4), bytes(4), bytes(4), bytes(4))
msg += mac + bytes(10) + bytes(192) + bytes([99, 130, 83, 99, 53, 1, 1, 255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.100.3", 68))
for _ in range(3):
    s.sendto(msg, (sys.argv[1], 67))
PY
}
# What reaches vm1's port from the rogue server (port 67), while it answers.
ROGUE_PCAP=$TOPO_DIR/rogue-at-vm1.pcap
sandbox_bg "$TOPO_DIR/rogue-cap.log" ip netns exec "$(topo_root vm1)" \
    tshark -n -i nsx-eth0 -f "udp src port 67" -a duration:8 -w "$ROGUE_PCAP"
ROGUE_CAP=$SANDBOX_LAST_PID
wait_for 10 grep -qs "Capturing on" "$TOPO_DIR/rogue-cap.log" || bail "tshark captures on vm1's port" "$(cat "$TOPO_DIR/rogue-cap.log")"
discover_to 192.168.100.4 || bail "send a DISCOVER to vm2"
wait_for 5 grep -qs "DHCPOFFER(nsx-eth0)" "$TOPO_DIR/rogue.log" || true
check "the rogue server saw the DISCOVER and answered it" grep -q "DHCPOFFER(nsx-eth0)" "$TOPO_DIR/rogue.log"
rogue_above() { [[ "$(agent_ctl vm2 counters | jq -r '.drops.rogue_dhcp_server')" -gt "$rogue0" ]]; }
check "vm2's agent dropped the rogue OFFER (rogue_dhcp_server)" wait_for 5 rogue_above
sandbox_wait_exit "$ROGUE_CAP" 12 || sandbox_kill "$ROGUE_CAP" 2
rogue_at_vm1=$(tshark -n -r "$ROGUE_PCAP" 2>/dev/null | grep -c . || true)
check_eq "nothing from the rogue server reached vm1's port (tshark on nsx-eth0)" 0 "$rogue_at_vm1"

# --- port_dhcp: vm3's agent sets no address; the DHCP client it runs in
# the overlay namespace gets it from the agent's server.
STATE3=$TOPO_DIR/vm3/state
echo "# e2e 50" >"$PRIV/resolv.conf"
start_agents vm3
addr3() { [[ "$(in_overlay vm3 ip -j -4 addr show dev nsx-eth0 | jq -r '[.[0].addr_info[]?.local] | join(" ")')" == 192.168.100.5 ]]; }
check "port_dhcp: vm3's nsx-eth0 gets 192.168.100.5 from its agent's DHCP server" wait_for 30 addr3
check "port_dhcp: default route via the switch's gateway" \
    bash -c "ip netns exec $(topo_root vm3) ip -4 route show default | grep -q 'via 192.168.100.1'"
check "port_dhcp: the DNS servers went to the agent's overlay-resolv.conf" \
    grep -q "^nameserver 10.0.0.53" "$STATE3/overlay-resolv.conf"
check "port_dhcp: not to the instance's /etc/resolv.conf" bash -c "! grep -q 10.0.0.53 /etc/resolv.conf"
check "port_dhcp: overlay ping vm3 -> vm2" overlay_wait_ping vm3 192.168.100.4
ns3=$(stat -L -c %i "/run/netns/$(topo_root vm3)")
clients3() {
    local p
    for p in $(pgrep -x dhclient; pgrep -x udhcpc); do
        [[ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" == "$ns3" ]] && echo "$p"
    done
    return 0
}
has_clients3() { [[ -n "$(clients3)" ]]; }
no_clients3() { [[ -z "$(clients3)" ]]; }
check "port_dhcp: the client runs in vm3's overlay namespace" has_clients3
# A reload that gives vm3's port another address: the agent restarts the
# client, which is NAKed for the old one and leased the new one (the
# other agents' static configs still know .5, so no ping from .6).
CFG3=$(topo_config_path vm3)
sed -i "/^\[port\]\$/,/^\$/ s/^ip = .*/ip = \"192.168.100.6\"/" "$CFG3"
kill -HUP "$(agent_pid vm3)"
addr3new() { [[ "$(in_overlay vm3 ip -j -4 addr show dev nsx-eth0 | jq -r '[.[0].addr_info[]?.local] | join(" ")')" == 192.168.100.6 ]]; }
check "port_dhcp: after a reload with port IP 192.168.100.6, the client holds exactly that" wait_for 10 addr3new
rc=0
agent_stop vm3 || rc=$?
check_eq "port_dhcp: vm3's agent exits 0 on SIGTERM" 0 "$rc"
check "port_dhcp: SIGTERM stopped the port's DHCP client" wait_for 5 no_clients3

if [[ $TAP_FAILED -gt 0 ]]; then
    diag "vm1 counters:" "$(agent_ctl vm1 counters | jq -c '{dhcp, drops: (.drops | with_entries(select(.value > 0)))}')"
    diag "vm1 overlay:" "$(in_overlay vm1 ip -br addr; in_overlay vm1 ip route)"
    diag "dhclient:" "$(tail -n 20 "$TOPO_DIR/dhclient.log")"
    diag "udhcpc:" "$(tail -n 20 "$TOPO_DIR/udhcpc.log")"
    diag "dhcpcd:" "$(tail -n 20 "$TOPO_DIR/dhcpcd.log")"
    diag "dhclient -s (rogue):" "$(tail -n 20 "$TOPO_DIR/dhclient-rogue.log")"
    diag "rogue dnsmasq:" "$(tail -n 20 "$TOPO_DIR/rogue.log")"
    diag "vm2 counters:" "$(agent_ctl vm2 counters | jq -c '{dhcp, drops: (.drops | with_entries(select(.value > 0)))}')"
fi
tap_done
