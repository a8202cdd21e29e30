#!/usr/bin/env bash
# tests/e2e/49_nic_networkd.sh -- e2e test 49: systemd-networkd (netplan's
# and cloud-init's back end) follows the NIC's address. The real
# systemd-networkd runs in vm1's namespace (with its own D-Bus system bus,
# so `networkctl` works) and gets vm1's eth0 by DHCP from dnsmasq on the
# underlay (lease 2 min, renewal after 10 s), from a netplan-style
# `10-netplan-eth0.network`. Then:
#   * while the agent runs, networkd manages nsx-vtep0.0 with the NIC's
#     settings and eth0 is unmanaged (the agent's two files, recorded in the
#     host state file); the bridge is the same DHCP client to the server
#     (same client identifier) and asked for its address without a new
#     DISCOVER; its renewals are answered and keep the address and the
#     default route on nsx-vtep0.0; underlay and overlay pings work;
#   * after SIGTERM networkd manages eth0 with its own file again, keeps
#     the address the agent gave back (no DISCOVER), renews it there, and
#     eth0's addresses (lifetimes aside) and the routes are as before;
#   * after SIGKILL, `nsx-agent cleanup` does the same from the state file.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 49 "$@"
NETWORKD=""
for f in /lib/systemd/systemd-networkd /usr/lib/systemd/systemd-networkd; do
    [[ -x "$f" ]] && NETWORKD=$f && break
done
[[ -n "$NETWORKD" ]] || bail "systemd-networkd is required (scripts/test.sh installs systemd / systemd-networkd)"
for t in dnsmasq networkctl dbus-daemon; do
    command -v "$t" >/dev/null || bail "$t is required (scripts/test.sh installs dnsmasq-base, systemd, dbus-daemon)"
done
# The sandbox hides the host's /run/systemd and /run/dbus behind tmpfs.
mountpoint -q /run/systemd && mountpoint -q /run/dbus || bail "the sandbox hides /run/systemd and /run/dbus"

# networkd drops privileges to systemd-network: here that user is root
# (the only one mapped), in networkd's own mount namespace.
PRIV=$SANDBOX_TMP/priv
mkdir -p "$PRIV" /run/systemd/network
sed 's/^systemd-network:x:[0-9]*:[0-9]*:/systemd-network:x:0:0:/' /etc/passwd >"$PRIV/passwd"
sed 's/^systemd-network:x:[0-9]*:/systemd-network:x:0:/' /etc/group >"$PRIV/group"
grep -q '^systemd-network:x:0:0:' "$PRIV/passwd" || bail "no systemd-network user in /etc/passwd"
cat >"$PRIV/bus.conf" <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow send_type="signal"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
EOF

topo_new t49 1500
topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
topo_instance vm1 ls-web 192.168.100.3
topo_instance vm2 ls-web 192.168.100.4
topo_build
topo_wait_underlay || bail "underlay up"
NS1=$(topo_ns vm1)
MAC1=$(topo_mac vm1)
IP1=$(topo_underlay_ip vm1)
CFG1=$(topo_config_path vm1)
STATE1=$TOPO_DIR/vm1/state/host-state.json

underlay_dnsmasq "$MAC1" "$IP1"

discovers() { grep -c "DHCPDISCOVER(ulbr0) $MAC1" "$DMLOG" 2>/dev/null || true; }
addr_lft() {
    in_inst vm1 ip -j -4 addr show dev "$1" |
        jq -r --arg a "$IP1" '[.[0].addr_info[]? | select(.local == $a)][0].valid_life_time // empty'
}
has_addr() { [[ -n "$(addr_lft "$1")" ]]; }
has_default() {
    in_inst vm1 ip -j -4 route show default | jq -e --arg d "$1" 'any(.[]; .dev == $d and .gateway == "10.99.3.1")' >/dev/null
}
ifindex() { in_inst vm1 cat "/sys/class/net/$1/ifindex" 2>/dev/null; }
# link_var IF KEY: networkd's state for IF (its link state file).
link_var() {
    local i
    i=$(ifindex "$1") || return 1
    sed -n "s/^$2=//p" "/run/systemd/netif/links/$i" 2>/dev/null | tr -d '"'
}
# managed_by IF FILE: networkd configured IF with FILE (a path's base name).
managed_by() {
    [[ "$(link_var "$1" ADMIN_STATE)" == configured && "$(basename "$(link_var "$1" NETWORK_FILE)")" == "$2" ]]
}
unmanaged() { [[ "$(link_var "$1" ADMIN_STATE)" == unmanaged ]]; }
client_id() {
    local i
    i=$(ifindex "$1") || return 1
    sed -n 's/^CLIENTID=//p' "/run/systemd/netif/leases/$i" 2>/dev/null
}
# snapshot: eth0's addresses and the routes. networkd (v252) re-adds a
# DHCP address it keeps (KeepConfiguration=) without lifetime and without
# its prefix route metric: those are left out.
snapshot() {
    in_inst vm1 ip -j -4 addr show dev eth0 |
        jq -S '[.[0].addr_info[] | del(.valid_life_time, .preferred_life_time, .dynamic, .metric)]'
    in_inst vm1 ip -j -4 route show table all |
        jq -S 'map(if .protocol == "kernel" then del(.metric) else . end) | unique | sort_by(tostring)'
}
cleanup_cmd() {
    timeout 60 nsenter --net="/run/netns/$NS1" unshare --mount --propagation unchanged \
        sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
        "$NSX_AGENT" cleanup --config "$CFG1"
}

sandbox_bg "$TOPO_DIR/dbus.log" dbus-daemon --nofork --nopidfile --config-file="$PRIV/bus.conf"
wait_for 10 test -S /run/dbus/system_bus_socket || bail "dbus-daemon listens" "$(cat "$TOPO_DIR/dbus.log")"

# vm1's eth0 comes from networkd's DHCP: no static address.
in_inst vm1 ip addr flush dev eth0
in_inst vm1 ip route flush dev eth0 2>/dev/null || true
cat >/run/systemd/network/10-netplan-eth0.network <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no

[DHCP]
RouteMetric=100
EOF
# networkd, in vm1's namespace: a read-only /sys tells it there is no udev
# to wait for.
sandbox_bg "$TOPO_DIR/networkd.log" ip netns exec "$NS1" unshare --mount --propagation private sh -c '
    mount -o remount,bind,ro /sys && mount --bind "$1/passwd" /etc/passwd &&
        mount --bind "$1/group" /etc/group && exec env SYSTEMD_LOG_LEVEL=debug "$2"' sh "$PRIV" "$NETWORKD"
NETWORKD_PID=$SANDBOX_LAST_PID
start_agents vm2
wait_for 30 has_addr eth0 || bail "networkd gives eth0 $IP1 from dnsmasq" "$(tail -n 15 "$TOPO_DIR/networkd.log")"
wait_for 10 has_default eth0 || bail "default route via 10.99.3.1 on eth0"
wait_for 10 managed_by eth0 10-netplan-eth0.network || bail "networkd manages eth0"
CLIENTID=$(client_id eth0)
[[ -n "$CLIENTID" ]] || bail "eth0's lease records its client identifier"
BEFORE=$(snapshot)

# take KIND: start the agent (KIND: how it last stopped) and check the hand-over.
take() {
    local kind=$1 d n
    d=$(discovers)
    start_agents vm1
    check "$kind: networkd manages nsx-vtep0.0 with the agent's file" \
        wait_for 15 managed_by nsx-vtep0.0 00-nsx-agent-nsx-vtep0.0.network
    check "$kind: eth0 is unmanaged" unmanaged eth0
    check "$kind: the state file records both files" \
        jq -e '.networkd.files | length == 2 and all(.[]; startswith("/run/systemd/network/00-nsx-agent-"))' "$STATE1"
    check "$kind: nsx-vtep0.0 leases with eth0's client identifier" wait_for 15 bash -c "[ \"\$(sed -n 's/^CLIENTID=//p' /run/systemd/netif/leases/$(ifindex nsx-vtep0.0) 2>/dev/null)\" = $CLIENTID ]"
    check_eq "$kind: no DISCOVER (it asked for the address it had)" "$d" "$(discovers)"
    n=$(dhcp_acks)
    check "$kind: a renewal from nsx-vtep0.0 is answered" wait_for 30 dhcp_renewed "$n"
    check "$kind: $IP1 stays on nsx-vtep0.0" has_addr nsx-vtep0.0
    check "$kind: no IPv4 address on eth0" bash -c "[ -z \"\$(ip netns exec $NS1 ip -4 -o addr show dev eth0)\" ]"
    check "$kind: the default route stays on nsx-vtep0.0" has_default nsx-vtep0.0
    check "$kind: underlay ping vm2 -> vm1" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"
    check "$kind: overlay ping vm1 -> vm2" overlay_wait_ping vm1 192.168.100.4
}
# given_back WHAT: networkd has eth0 again, as before.
given_back() {
    local what=$1 d=$2 n out
    check "after $what networkd manages eth0 with its own file" wait_for 15 managed_by eth0 10-netplan-eth0.network
    check "after $what the agent's files are gone" bash -c '! ls /run/systemd/network/00-nsx-agent-* 2>/dev/null'
    check "after $what $IP1 is on eth0" has_addr eth0
    n=$(dhcp_acks)
    check "after $what a renewal from eth0 is answered" wait_for 30 dhcp_renewed "$n"
    check_eq "after $what no DISCOVER (networkd kept the address and renewed it)" "$d" "$(discovers)"
    check_eq "after $what eth0 keeps its client identifier" "$CLIENTID" "$(client_id eth0)"
    out=$(snapshot)
    if [[ "$out" == "$BEFORE" ]]; then
        ok "after $what eth0's addresses (lifetimes aside) and the routes are as before"
    else
        not_ok "after $what eth0's addresses (lifetimes aside) and the routes are as before" \
            "$(diff <(printf '%s\n' "$BEFORE") <(printf '%s\n' "$out") | head -n 30)"
    fi
    check "after $what underlay ping vm2 -> vm1" in_inst vm2 ping -n -c 2 -i 0.2 -W 2 "$IP1"
}

take start
d=$(discovers)
rc=0
agent_stop vm1 || rc=$?
check_eq "agent exits 0 on SIGTERM" 0 "$rc"
given_back SIGTERM "$d"

take "after SIGTERM"
d=$(discovers)
agent_kill vm1
out=$(cleanup_cmd 2>&1) && rc=0 || rc=$?
check_eq "nsx-agent cleanup after SIGKILL exits 0" 0 "$rc"
[[ $rc -eq 0 ]] || diag "$out"
given_back "SIGKILL + cleanup" "$d"
check "networkd still runs" sandbox_alive "$NETWORKD_PID"

if [[ $TAP_FAILED -gt 0 ]]; then
    diag "vm1:" "$(in_inst vm1 ip -br addr; in_inst vm1 ip route)"
    diag "networkd:" "$(grep -E 'eth0|nsx-vtep|DHCP|rror' "$TOPO_DIR/networkd.log" | tail -n 40)"
    diag "dnsmasq:" "$(tail -n 20 "$DMLOG")"
    diag "vm1's agent log:" "$(tail -n 25 "$(agent_log vm1)")"
fi
tap_done
