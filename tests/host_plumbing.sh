#!/usr/bin/env bash
# Sandboxed test of the agent's host plumbing (agent/src/host, driven by the
# example agent/examples/host_plumb.rs).
#
# Everything runs inside a private user+net+mount namespace (re-exec under
# `unshare`), with a tmpfs on /run/netns: the host's network is never touched.
#
# Topology (all namespaces private to the sandbox):
#   hp-ul   bridge br0 (10.99.3.1/24, the "underlay gateway")
#   hp-vm1  eth0 06:00:00:00:00:01 10.99.3.11/24, default via 10.99.3.1
#           metric 100, 10.200.0.0/16 via 10.99.3.254   <- the agent runs here
#   hp-vm2  eth0 06:00:00:00:00:02 10.99.3.12/24
# The agent runs with `nsenter --net` (not `ip netns exec`: that gives the
# process a slave mount namespace, so the /run/netns/NAME bind mount it
# creates would die with it).
#
# Modes covered: overlay (port), plain micro-segmentation, and filtered
# micro-segmentation (`--filtered on`: firewall veth, NIC cut off from the
# bridge by port flags, a locked port and an nftables bridge table),
# each with setup, adoption, kill -9 recovery and exact restore.
#
# Usage: tests/host_plumbing.sh        (as root; builds the example first)
#        HP_BIN=/path/to/host_plumb tests/host_plumbing.sh   (skip the build)
# Prints PASS/FAIL per check; exits non-zero if any check failed.

set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -z "${HP_IN_SANDBOX:-}" ]; then
    for tool in unshare nsenter ip jq ethtool ping timeout; do
        command -v "$tool" >/dev/null || { echo "FAIL: required tool '$tool' not found"; exit 1; }
    done
    if [ -z "${HP_BIN:-}" ]; then
        echo "building agent example host_plumb..."
        (cd "$ROOT" && timeout 900 cargo build -q -p agent --example host_plumb) || {
            echo "FAIL: cargo build of the host_plumb example"; exit 1; }
        HP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/host_plumb"
    fi
    [ -x "$HP_BIN" ] || { echo "FAIL: $HP_BIN is not executable"; exit 1; }
    export HP_BIN HP_IN_SANDBOX=1
    exec timeout 600 unshare --user --map-root-user --net --mount --propagation private \
        bash "${BASH_SOURCE[0]}" "$@"
fi

# ---------------------------------------------------------------- sandbox --
T=5   # seconds allowed for each ip/ethtool command
FAILS=0
PASSES=0
SKIPS=0
WORK="$(mktemp -d /tmp/host_plumbing.XXXXXX)"
SD="$WORK/state"
trap 'rm -rf "$WORK"' EXIT

pass() { PASSES=$((PASSES + 1)); echo "PASS: $*"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }
skip() { SKIPS=$((SKIPS + 1)); echo "SKIP: $*"; }
check() { # check DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
die() { echo "FAIL: $*"; exit 1; }

vm1() { timeout "$T" ip netns exec hp-vm1 "$@"; }
r1() { timeout "$T" ip netns exec hp-root1 "$@"; }
agent() { # agent SUBCOMMAND ARGS... (runs in hp-vm1, output in $WORK/out, $WORK/err)
    timeout 30 nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" "$@" --state-dir "$SD" \
        --netns hp-root1 >"$WORK/out" 2>"$WORK/err"
}
show_err() { sed 's/^/    | /' "$WORK/err"; }

{ mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns; } || die "mount tmpfs on /run/netns"
timeout "$T" ip link set lo up || die "lo up"

# --------------------------------------------------------------- topology --
# Each step checked on its own: `set -e` is ignored inside a function
# called on the left of `||`, so it cannot stand in for these checks.
topo_step() { "$@" || { echo "FAIL: topology step failed: $*" >&2; return 1; }; }
build_topology() {
    topo_step ip netns add hp-ul || return 1
    topo_step ip netns add hp-vm1 || return 1
    topo_step ip netns add hp-vm2 || return 1
    topo_step ip -n hp-ul link set lo up || return 1
    topo_step ip -n hp-ul link add br0 type bridge stp_state 0 forward_delay 0 || return 1
    topo_step ip -n hp-ul addr add 10.99.3.1/24 dev br0 || return 1
    topo_step ip -n hp-ul link set br0 up || return 1
    local i
    for i in 1 2; do
        topo_step ip link add eth0 netns "hp-vm$i" type veth peer name "vm$i" netns hp-ul || return 1
        topo_step ip -n hp-ul link set "vm$i" master br0 up || return 1
        topo_step ip -n "hp-vm$i" link set lo up || return 1
        topo_step ip -n "hp-vm$i" link set eth0 address "06:00:00:00:00:0$i" up || return 1
        topo_step ip -n "hp-vm$i" addr add "10.99.3.1$i/24" brd + dev eth0 || return 1
        topo_step ip -n "hp-vm$i" route add default via 10.99.3.1 metric 100 || return 1
    done
    topo_step ip -n hp-vm1 route add 10.200.0.0/16 via 10.99.3.254
}
build_topology || die "building the sandbox topology"
# Let IPv6 DAD finish so the "before" snapshot is stable.
for _ in $(seq 50); do
    [ -z "$(ip -n hp-vm1 -6 addr show tentative)" ] && break
    sleep 0.1
done

# Snapshot of everything setup/teardown may touch in hp-vm1, normalized.
snapshot() {
    {
        vm1 ip -j -d link show dev eth0 | jq -S 'map(del(.ifindex_peer?))'
        vm1 ip -j addr show dev eth0 | jq -S .
        vm1 ip -j -d addr show dev eth0 | jq -S .
        vm1 ip -4 -j route show | jq -S .
        vm1 ip -4 -j -d route show table all | jq -S .
        vm1 ip -6 -j route show table all | jq -S .
        vm1 ip -j link show | jq -S 'map({ifname, mtu, flags, address})'
        ls /run/netns
    } 2>&1
}
check_same() { # check_same DESCRIPTION FILE: current snapshot equals FILE
    snapshot >"$WORK/now"
    if diff -u "$2" "$WORK/now" >"$WORK/diff"; then
        pass "$1"
    else
        fail "$1"
        sed 's/^/    | /' "$WORK/diff" | head -60
    fi
}

eth0_mac() { vm1 ip -j link show dev eth0 | jq -r '.[0].address'; }
link_json() { vm1 ip -j -d link show dev "$1"; }
has_route() { # has_route JQ-FILTER (over `ip -4 -j route show` in hp-vm1)
    vm1 ip -4 -j route show | jq -e "any(.[]; $1)"
}

# Checks after a setup with a port. $1 = expected overlay MTU, $2 = NIC MTU.
check_plumbed() {
    local omtu="$1" nmtu="$2" mac
    mac="$(eth0_mac)"
    check "bridge nsx-vtep0.0 exists in hp-vm1" vm1 ip link show dev nsx-vtep0.0
    check "bridge has eth0's MAC ($mac)" \
        bash -c "ip netns exec hp-vm1 ip -j link show dev nsx-vtep0.0 | jq -e '.[0].address == \"$mac\"'"
    check "bridge MTU $nmtu, up" \
        bash -c "ip netns exec hp-vm1 ip -j link show dev nsx-vtep0.0 | jq -e '.[0].mtu == $nmtu and (.[0].flags | index(\"UP\"))'"
    check "bridge stp off, forward_delay 0" \
        bash -c "ip netns exec hp-vm1 ip -j -d link show dev nsx-vtep0.0 | jq -e '.[0].linkinfo.info_data | .stp_state == 0 and .forward_delay == 0'"
    check "bridge has 10.99.3.11/24" \
        bash -c "ip netns exec hp-vm1 ip -j addr show dev nsx-vtep0.0 | jq -e 'any(.[0].addr_info[]; .local == \"10.99.3.11\" and .prefixlen == 24)'"
    check "default via 10.99.3.1 metric 100 on the bridge" \
        has_route '.dst == "default" and .gateway == "10.99.3.1" and .metric == 100 and .dev == "nsx-vtep0.0"'
    check "10.200.0.0/16 via 10.99.3.254 on the bridge" \
        has_route '.dst == "10.200.0.0/16" and .gateway == "10.99.3.254" and .dev == "nsx-vtep0.0"'
    check "connected 10.99.3.0/24 on the bridge" \
        has_route '.dst == "10.99.3.0/24" and .dev == "nsx-vtep0.0" and .protocol == "kernel"'
    check "no route left on eth0" \
        bash -c "! ip netns exec hp-vm1 ip -4 -j route show | jq -e 'any(.[]; .dev == \"eth0\")'"
    check "eth0 is a port of nsx-vtep0.0" \
        bash -c "ip netns exec hp-vm1 ip -j link show dev eth0 | jq -e '.[0].master == \"nsx-vtep0.0\"'"
    check "eth0 has no IPv4 address" \
        bash -c "ip netns exec hp-vm1 ip -4 -j addr show dev eth0 | jq -e 'all(.[]; (.addr_info | length) == 0)'"
    check "netns hp-root1 exists" r1 true
    check "nsx-eth0 in hp-root1 has 192.168.50.10/24" \
        bash -c "ip netns exec hp-root1 ip -j addr show dev nsx-eth0 | jq -e 'any(.[0].addr_info[]; .local == \"192.168.50.10\" and .prefixlen == 24)'"
    check "nsx-eth0 MTU $omtu" \
        bash -c "ip netns exec hp-root1 ip -j link show dev nsx-eth0 | jq -e '.[0].mtu == $omtu'"
    check "nsx-eth0 MAC = eth0 MAC" \
        bash -c "ip netns exec hp-root1 ip -j link show dev nsx-eth0 | jq -e '.[0].address == \"$mac\"'"
    check "nsx-eth0 up" \
        bash -c "ip netns exec hp-root1 ip -j link show dev nsx-eth0 | jq -e '.[0].flags | index(\"UP\")'"
    check "lo up in hp-root1" \
        bash -c "ip netns exec hp-root1 ip -j link show dev lo | jq -e '.[0].flags | index(\"UP\")'"
    check "default via 192.168.50.1 in hp-root1" \
        bash -c "ip netns exec hp-root1 ip -4 -j route show | jq -e 'any(.[]; .dst == \"default\" and .gateway == \"192.168.50.1\" and .dev == \"nsx-eth0\")'"
    check "IPv6 disabled on nsx-eth0" \
        bash -c "[ \"\$(ip netns exec hp-root1 cat /proc/sys/net/ipv6/conf/nsx-eth0/disable_ipv6)\" = 1 ]"
    check "nsx-eth0 has no IPv6 address" \
        bash -c "ip netns exec hp-root1 ip -6 -j addr show dev nsx-eth0 | jq -e 'all(.[]; (.addr_info | length) == 0)'"
    for feat in tx-checksumming tcp-segmentation-offload generic-segmentation-offload; do
        check "ethtool -k nsx-eth0: $feat off" \
            bash -c "ip netns exec hp-root1 ethtool -k nsx-eth0 | grep -qx '$feat: off'"
        check "ethtool -k nsx-eth0-peer: $feat off" \
            bash -c "ip netns exec hp-vm1 ethtool -k nsx-eth0-peer | grep -qx '$feat: off'"
    done
    # The agent's end takes any size (65535) so oversize frames reach the router.
    check "peer nsx-eth0-peer up, MTU 65535, no addresses" \
        bash -c "ip netns exec hp-vm1 ip -j addr show dev nsx-eth0-peer | jq -e '.[0].mtu == 65535 and (.[0].flags | index(\"UP\")) and (.[0].addr_info | length) == 0'"
    check "IPv6 disabled on nsx-eth0-peer" \
        bash -c "[ \"\$(ip netns exec hp-vm1 cat /proc/sys/net/ipv6/conf/nsx-eth0-peer/disable_ipv6)\" = 1 ]"
    check "state file saved" test -s "$SD/host-state.json"
    check "ping 10.99.3.12 from hp-vm1 while set up" vm1 timeout 10 ping -c 3 -W 1 10.99.3.12
    check "ping gateway 10.99.3.1 from hp-vm1 while set up" vm1 timeout 10 ping -c 2 -W 1 10.99.3.1
}

check_restored() { # check_restored BEFORE-SNAPSHOT LABEL
    check_same "$2: hp-vm1 eth0 addresses/routes/link equal the pre-setup state" "$1"
    check "$2: no nsx-vtep0.0 left" bash -c "! ip netns exec hp-vm1 ip link show dev nsx-vtep0.0"
    check "$2: no nsx-eth0-peer left" bash -c "! ip netns exec hp-vm1 ip link show dev nsx-eth0-peer"
    check "$2: no nsx-fw0 / nsx-fw0-peer left" \
        bash -c "! ip netns exec hp-vm1 ip link show dev nsx-fw0 && ! ip netns exec hp-vm1 ip link show dev nsx-fw0-peer"
    check "$2: no nftables NIC block left" nft_chain false
    check "$2: netns hp-root1 gone" test ! -e /run/netns/hp-root1
    check "$2: state file removed" test ! -e "$SD/host-state.json"
    check "$2: ping 10.99.3.12 after teardown" vm1 timeout 10 ping -c 2 -W 1 10.99.3.12
}

# nft_chain true|false: whether the NIC's nftables block (bridge table, both chains) exists.
nft_chain() {
    timeout 30 nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" nft --nic eth0 2>/dev/null \
        | grep -qx "table=nsx-agent-eth0 chain=$1"
}
# slave_data JQ-FILTER: over eth0's bridge-port settings in hp-vm1.
slave_data() {
    vm1 ip -j -d link show dev eth0 | jq -e ".[0].linkinfo.info_slave_data | $1"
}
# The kernel reports (and so supports) locked bridge ports (Linux 5.18+).
locked_supported() { slave_data 'has("locked")' >/dev/null 2>&1; }
# rx_packets IF: RX packet counter of IF in hp-vm1.
rx_packets() { vm1 ip -j -s link show dev "$1" | jq '.[0].stats64.rx.packets'; }
# Nothing received on the NIC may reach the bridge: vm2 cannot ping vm1.
nic_cut_off() { ! timeout 10 ip netns exec hp-vm2 ping -c 2 -W 1 10.99.3.11; }

# Checks after a filtered micro-segmentation setup (no agent loop running:
# the NIC must be cut off from the host in both directions).
check_filtered() {
    local mac
    mac="$(eth0_mac)"
    check "filtered: bridge nsx-vtep0.0 has eth0's MAC and 10.99.3.11/24" \
        bash -c "ip netns exec hp-vm1 ip -j addr show dev nsx-vtep0.0 | jq -e '.[0].address == \"$mac\" and any(.[0].addr_info[]; .local == \"10.99.3.11\")'"
    check "filtered: default via 10.99.3.1 on the bridge" \
        has_route '.dst == "default" and .gateway == "10.99.3.1" and .dev == "nsx-vtep0.0"'
    check "filtered: eth0 is still a port of nsx-vtep0.0" \
        bash -c "ip netns exec hp-vm1 ip -j link show dev eth0 | jq -e '.[0].master == \"nsx-vtep0.0\"'"
    check "filtered: eth0 port learning, flood, mcast_flood, bcast_flood off" \
        slave_data '.learning == false and .flood == false and .mcast_flood == false and .bcast_flood == false'
    if locked_supported; then
        check "filtered: eth0 port locked" slave_data '.locked == true'
    else
        skip "filtered: eth0 port locked (this kernel has no locked bridge ports)"
    fi
    check "filtered: nftables NIC block (bridge table, in + out chains) present" nft_chain true
    check "filtered: nsx-fw0 is a veth, port of nsx-vtep0.0, up, MTU $1, learning on" \
        bash -c "ip netns exec hp-vm1 ip -j -d link show dev nsx-fw0 | jq -e '.[0].linkinfo.info_kind == \"veth\" and .[0].master == \"nsx-vtep0.0\" and .[0].mtu == $1 and (.[0].flags | index(\"UP\")) and .[0].linkinfo.info_slave_data.learning == true'"
    check "filtered: nsx-fw0-peer is a veth, up, MTU $1, no master, no addresses" \
        bash -c "ip netns exec hp-vm1 ip -j -d addr show dev nsx-fw0-peer | jq -e '.[0].linkinfo.info_kind == \"veth\" and (.[0].master == null) and .[0].mtu == $1 and (.[0].flags | index(\"UP\")) and (.[0].addr_info | length) == 0'"
    check "filtered: bridge MTU stays $1" \
        bash -c "ip netns exec hp-vm1 ip -j link show dev nsx-vtep0.0 | jq -e '.[0].mtu == $1'"
    check "filtered: IPv6 disabled on nsx-fw0 and nsx-fw0-peer" \
        bash -c "[ \"\$(ip netns exec hp-vm1 cat /proc/sys/net/ipv6/conf/nsx-fw0/disable_ipv6)\" = 1 ] && [ \"\$(ip netns exec hp-vm1 cat /proc/sys/net/ipv6/conf/nsx-fw0-peer/disable_ipv6)\" = 1 ]"
    check "filtered: no netns" test ! -e /run/netns/hp-root1
    check "filtered: state file is version 2 with the firewall record" \
        jq -e '.version == 2 and .fw.fw_if == "nsx-fw0" and .fw.fw_peer == "nsx-fw0-peer" and .fw.nft_table == "nsx-agent-eth0"' "$SD/host-state.json"
    # The host's traffic goes to the firewall veth, never to the NIC: its
    # ARP requests (broadcasts, which the bridge floods to every port
    # whatever the port flags say) must not reach hp-vm2, which would learn
    # 10.99.3.11 from them. (eth0 itself may still send its own IPv6
    # link-local chatter, so its TX counter proves nothing.)
    local rx0 br0
    rx0="$(rx_packets nsx-fw0-peer)"
    timeout "$T" ip -n hp-vm2 neigh flush all
    check "filtered: without the agent loop hp-vm1 cannot reach 10.99.3.12" \
        bash -c "! ip netns exec hp-vm1 timeout 10 ping -c 2 -W 1 10.99.3.12"
    check "filtered: the host's frames arrive on nsx-fw0-peer" \
        test "$(rx_packets nsx-fw0-peer)" -gt "$rx0"
    check "filtered: the host's ARP broadcasts do not leave on eth0" \
        bash -c "[ -z \"\$(ip -n hp-vm2 neigh show 10.99.3.11)\" ]"
    # Frames received on eth0 reach neither the host nor the bridge.
    br0="$(rx_packets nsx-vtep0.0)"
    check "filtered: frames received on eth0 do not reach the host" nic_cut_off
    check "filtered: nothing from eth0 was delivered to nsx-vtep0.0" \
        test "$(rx_packets nsx-vtep0.0)" -eq "$br0"
}

PORT=192.168.50.10/24,192.168.50.1

# ---------------------------------------------------- 1. MTU 1500 round trip
echo "== setup/teardown, NIC MTU 1500"
snapshot >"$WORK/before"
check "ping 10.99.3.12 before setup" vm1 timeout 10 ping -c 2 -W 1 10.99.3.12
check "inspect eth0 reads MAC, MTU, addrs, routes" \
    bash -c "timeout 30 nsenter --net=/run/netns/hp-vm1 -- '$HP_BIN' inspect --nic eth0 | jq -e '.mac == [6,0,0,0,0,1] and .mtu == 1500 and .was_up and (.addrs | length) == 1 and (.routes | length) == 3'"
if agent setup --port "$PORT"; then
    pass "setup (MTU 1500)"
    check "setup reports overlay_mtu=1442 underlay_ip=10.99.3.11" grep -q 'underlay_ip=10.99.3.11 overlay_mtu=1442' "$WORK/out"
    check_plumbed 1442 1500
else
    fail "setup (MTU 1500)"; show_err
fi
if agent teardown; then pass "teardown (MTU 1500)"; else fail "teardown (MTU 1500)"; show_err; fi
check_restored "$WORK/before" "MTU 1500"

# ---------------------------------------------------- 2. MTU 9001 round trip
echo "== setup/teardown, NIC MTU 9001"
timeout "$T" ip -n hp-ul link set vm1 mtu 9001
vm1 ip link set eth0 mtu 9001
snapshot >"$WORK/before9001"
if agent setup --port "$PORT"; then
    pass "setup (MTU 9001)"
    check_plumbed 8943 9001
else
    fail "setup (MTU 9001)"; show_err
fi
if agent teardown; then pass "teardown (MTU 9001)"; else fail "teardown (MTU 9001)"; show_err; fi
check_restored "$WORK/before9001" "MTU 9001"
vm1 ip link set eth0 mtu 1500
timeout "$T" ip -n hp-ul link set vm1 mtu 1500
check_same "MTU back to 1500 equals the first snapshot" "$WORK/before"

# ------------------------------------------ 3. crash (kill -9) and recovery
echo "== setup, no teardown (as after kill -9), setup again"
if agent setup --port "$PORT"; then pass "first setup"; else fail "first setup"; show_err; fi
if agent setup --port "$PORT"; then
    pass "second setup takes over the intact plumbing"
    check "adoption was logged" grep -q 'adopted the previous run' "$WORK/err"
    check_plumbed 1442 1500
else
    fail "second setup recovers from the saved state"; show_err
fi
if agent teardown; then pass "teardown after recovery"; else fail "teardown after recovery"; show_err; fi
check_restored "$WORK/before" "after recovery"

echo "== real kill -9 at various points of setup, then setup + teardown"
# setup takes ~10-20 ms here; the delays aim at different steps of it.
for delay in 0.002 0.004 0.006 0.008 0.010 0.012 0.015 0.2; do
    nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" setup --state-dir "$SD" --netns hp-root1 \
        --port "$PORT" >/dev/null 2>&1 &
    victim=$!
    sleep "$delay"
    kill -9 "$victim" 2>/dev/null
    wait "$victim" 2>/dev/null
    if agent setup --port "$PORT"; then
        pass "kill -9 after ${delay}s: next setup succeeds"
        check "kill -9 after ${delay}s: overlay address in place" \
            bash -c "ip netns exec hp-root1 ip -j addr show dev nsx-eth0 | jq -e 'any(.[0].addr_info[]; .local == \"192.168.50.10\")'"
        check "kill -9 after ${delay}s: underlay works" vm1 timeout 10 ping -c 1 -W 1 10.99.3.12
    else
        fail "kill -9 after ${delay}s: next setup succeeds"; show_err
    fi
    if agent teardown; then pass "kill -9 after ${delay}s: teardown"; else fail "kill -9 after ${delay}s: teardown"; show_err; fi
    check_same "kill -9 after ${delay}s: host restored" "$WORK/before"
done

echo "== leftovers without a state file are adopted"
if agent setup --port "$PORT"; then pass "setup"; else fail "setup"; show_err; fi
rm -f "$SD/host-state.json"
if agent setup --port "$PORT"; then
    pass "setup adopts leftovers without a state file"
    check "adoption was logged" grep -q 'leftovers of a previous run' "$WORK/err"
    check_plumbed 1442 1500
else
    fail "setup adopts leftovers without a state file"; show_err
fi
if agent teardown; then pass "teardown after adoption"; else fail "teardown after adoption"; show_err; fi
check_restored "$WORK/before" "after adoption"

echo "== teardown is idempotent"
if agent teardown; then pass "teardown on a clean host"; else fail "teardown on a clean host"; show_err; fi
check_same "clean-host teardown changed nothing" "$WORK/before"

# --------------------------------------------------- 4. micro-segmentation
echo "== micro-segmentation mode (no port)"
if agent setup; then
    pass "setup without port"
    check "bridge exists" vm1 ip link show dev nsx-vtep0.0
    check "no netns in micro-segmentation mode" test ! -e /run/netns/hp-root1
    check "no veth peer in micro-segmentation mode" bash -c "! ip netns exec hp-vm1 ip link show dev nsx-eth0-peer"
    check "ping 10.99.3.12 via the bridge" vm1 timeout 10 ping -c 2 -W 1 10.99.3.12
else
    fail "setup without port"; show_err
fi
if agent teardown; then pass "teardown (micro-seg)"; else fail "teardown (micro-seg)"; show_err; fi
check_restored "$WORK/before" "micro-seg"

# ------------------------------------ 4a. filtered micro-segmentation
echo "== filtered micro-segmentation mode"
if agent setup --filtered on; then
    pass "setup filtered micro-seg"
    check "setup reports the firewall peer ifindex" grep -Eq 'fw_peer_ifindex=[1-9]' "$WORK/out"
    check_filtered 1500
    # Each ingress block alone keeps the NIC's frames out of the bridge
    # (nsx-vtep0.0 counts every frame delivered to the host).
    # Both need locked bridge ports (Linux 5.18+); without them, say so.
    if ! locked_supported; then
        skip "filtered: NIC cut off by nftables alone (needs locked bridge ports to unlock)"
        skip "filtered: NIC cut off by the locked port alone (this kernel has no locked bridge ports)"
    else
        if vm1 ip link set dev eth0 type bridge_slave locked off; then
            br0="$(rx_packets nsx-vtep0.0)"
            check "filtered: NIC still cut off with the port unlocked (nftables alone)" nic_cut_off
            check "filtered: unlocked port, still nothing delivered to nsx-vtep0.0" \
                test "$(rx_packets nsx-vtep0.0)" -eq "$br0"
            check "filtered: port locked again" vm1 ip link set dev eth0 type bridge_slave locked on
        else
            fail "filtered: unlock eth0's port for the nftables-alone check"
        fi
        if timeout 30 nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" nft-del --nic eth0; then
            check "filtered: nftables block deleted for the test" nft_chain false
            br0="$(rx_packets nsx-vtep0.0)"
            check "filtered: NIC still cut off without nftables (locked port alone)" nic_cut_off
            check "filtered: locked port alone, nothing delivered to nsx-vtep0.0" \
                test "$(rx_packets nsx-vtep0.0)" -eq "$br0"
        else
            fail "filtered: delete the nftables block for the locked-port-alone check"
        fi
    fi
    if agent setup --filtered on; then
        pass "filtered: second setup adopts the plumbing"
        check "filtered: adoption was logged" grep -q 'adopted the previous run' "$WORK/err"
        check "filtered: adoption puts the nftables block back" nft_chain true
        check_filtered 1500
    else
        fail "filtered: second setup adopts the plumbing"; show_err
    fi
else
    fail "setup filtered micro-seg"; show_err
fi
if agent teardown; then pass "teardown (filtered)"; else fail "teardown (filtered)"; show_err; fi
check_restored "$WORK/before" "filtered"

echo "== filtered micro-segmentation at NIC MTU 9001"
timeout "$T" ip -n hp-ul link set vm1 mtu 9001
vm1 ip link set eth0 mtu 9001
if agent setup --filtered on; then
    pass "setup filtered (MTU 9001)"
    check_filtered 9001
else
    fail "setup filtered (MTU 9001)"; show_err
fi
if agent teardown; then pass "teardown filtered (MTU 9001)"; else fail "teardown filtered (MTU 9001)"; show_err; fi
check_restored "$WORK/before9001" "filtered MTU 9001"
vm1 ip link set eth0 mtu 1500
timeout "$T" ip -n hp-ul link set vm1 mtu 1500

echo "== filtered: switching modes rebuilds (filtered -> overlay -> filtered -> plain)"
if agent setup --filtered on && agent setup --port "$PORT"; then
    pass "filtered -> overlay without teardown"
    check "overlay after filtered: no firewall veth" bash -c "! ip netns exec hp-vm1 ip link show dev nsx-fw0-peer"
    check "overlay after filtered: no nftables block" nft_chain false
    check "overlay after filtered: eth0 port floods and learns again" \
        slave_data '.learning == true and .flood == true and .bcast_flood == true'
    check "overlay after filtered: underlay works" vm1 timeout 10 ping -c 2 -W 1 10.99.3.12
else
    fail "filtered -> overlay without teardown"; show_err
fi
if agent setup --filtered on && agent setup; then
    pass "overlay -> filtered -> plain micro-seg without teardown"
    check "plain after filtered: no firewall veth, no chain" \
        bash -c "! ip netns exec hp-vm1 ip link show dev nsx-fw0 && timeout 30 nsenter --net=/run/netns/hp-vm1 -- '$HP_BIN' nft --nic eth0 | grep -q chain=false"
    check "plain after filtered: ping 10.99.3.12 via the bridge" vm1 timeout 10 ping -c 2 -W 1 10.99.3.12
else
    fail "overlay -> filtered -> plain micro-seg without teardown"; show_err
fi
if agent teardown; then pass "teardown after mode switches"; else fail "teardown after mode switches"; show_err; fi
check_restored "$WORK/before" "after mode switches"

echo "== filtered: real kill -9 at various points of setup, then setup + teardown"
for delay in 0.002 0.004 0.006 0.008 0.010 0.012 0.015 0.02 0.2; do
    nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" setup --state-dir "$SD" --netns hp-root1 \
        --filtered on >/dev/null 2>&1 &
    victim=$!
    sleep "$delay"
    kill -9 "$victim" 2>/dev/null
    wait "$victim" 2>/dev/null
    if agent setup --filtered on; then
        pass "filtered kill -9 after ${delay}s: next setup succeeds"
        check "filtered kill -9 after ${delay}s: NIC blocked, chain present" \
            bash -c "timeout 30 nsenter --net=/run/netns/hp-vm1 -- '$HP_BIN' nft --nic eth0 | grep -q chain=true"
        check "filtered kill -9 after ${delay}s: firewall veth on the bridge" \
            bash -c "ip netns exec hp-vm1 ip -j link show dev nsx-fw0 | jq -e '.[0].master == \"nsx-vtep0.0\"'"
        check "filtered kill -9 after ${delay}s: eth0 port does not learn or flood" \
            slave_data '.learning == false and .flood == false and .bcast_flood == false'
    else
        fail "filtered kill -9 after ${delay}s: next setup succeeds"; show_err
    fi
    if agent teardown; then pass "filtered kill -9 after ${delay}s: teardown"; else fail "filtered kill -9 after ${delay}s: teardown"; show_err; fi
    check_same "filtered kill -9 after ${delay}s: host restored" "$WORK/before"
    check "filtered kill -9 after ${delay}s: no chain left" nft_chain false
done

echo "== filtered: kill -9 during setup, then cleanup only (teardown from the state file)"
for delay in 0.006 0.012; do
    nsenter --net=/run/netns/hp-vm1 -- "$HP_BIN" setup --state-dir "$SD" --netns hp-root1 \
        --filtered on >/dev/null 2>&1 &
    victim=$!
    sleep "$delay"
    kill -9 "$victim" 2>/dev/null
    wait "$victim" 2>/dev/null
    if agent teardown; then pass "filtered kill -9 after ${delay}s: teardown alone"; else fail "filtered kill -9 after ${delay}s: teardown alone"; show_err; fi
    check_restored "$WORK/before" "filtered kill -9 after ${delay}s, teardown alone"
done

echo "== filtered: leftovers without a state file are adopted"
if agent setup --filtered on; then pass "setup (filtered)"; else fail "setup (filtered)"; show_err; fi
rm -f "$SD/host-state.json"
if agent setup --filtered on; then
    pass "filtered: setup adopts leftovers without a state file"
    check "filtered: leftover adoption was logged" grep -q 'leftovers of a previous run' "$WORK/err"
    check_filtered 1500
else
    fail "filtered: setup adopts leftovers without a state file"; show_err
fi
rm -f "$SD/host-state.json"
if agent teardown; then pass "filtered: teardown of leftovers without a state file"; else fail "filtered: teardown of leftovers without a state file"; show_err; fi
check_restored "$WORK/before" "filtered leftovers"

vm1 ip link add nsx-fw0-peer type dummy 2>/dev/null || vm1 ip link add nsx-fw0-peer type bridge
if agent setup --filtered on; then
    fail "filtered: setup with a foreign interface named like the firewall peer must fail"
    agent teardown
else
    pass "filtered: setup refuses a foreign interface named like the firewall peer"
    check "filtered: error says it is not ours" grep -Eq 'not ours|not a veth' "$WORK/err"
fi
vm1 ip link del nsx-fw0-peer
check_same "filtered: foreign name clash: nothing changed" "$WORK/before"

# ------------------------------------------------- 4b. offloads kept on
echo "== tx offload kept on (HostSettings::tx_offload = true)"
if agent setup --port "$PORT" --tx-offload on; then
    pass "setup with tx offload on"
    check "ethtool -k nsx-eth0: tx-checksumming stays on" \
        bash -c "ip netns exec hp-root1 ethtool -k nsx-eth0 | grep -qx 'tx-checksumming: on'"
    check "nsx-eth0 still has its address and MTU 1442" \
        bash -c "ip netns exec hp-root1 ip -j addr show dev nsx-eth0 | jq -e '.[0].mtu == 1442 and any(.[0].addr_info[]; .local == \"192.168.50.10\")'"
else
    fail "setup with tx offload on"; show_err
fi
if agent teardown; then pass "teardown (tx offload on)"; else fail "teardown (tx offload on)"; show_err; fi
check_restored "$WORK/before" "tx offload on"

# ------------------------------------------------------------ 5. update_port
echo "== update_port"
if agent setup --port "$PORT"; then
    pass "setup for update"
    if agent update --old-port "$PORT" --port 192.168.60.20/25,192.168.60.1; then
        pass "update_port"
        check "new overlay address 192.168.60.20/25" \
            bash -c "ip netns exec hp-root1 ip -j addr show dev nsx-eth0 | jq -e '[.[0].addr_info[] | select(.family == \"inet\")] | length == 1 and .[0].local == \"192.168.60.20\" and .[0].prefixlen == 25'"
        check "new default via 192.168.60.1" \
            bash -c "ip netns exec hp-root1 ip -4 -j route show | jq -e '[.[] | select(.dst == \"default\")] | length == 1 and .[0].gateway == \"192.168.60.1\"'"
    else
        fail "update_port"; show_err
    fi
    if agent update --old-port 192.168.60.20/25,192.168.60.1 --port 192.168.60.20/25,192.168.60.1; then
        pass "update_port with equal plans is a no-op"
    else
        fail "update_port with equal plans is a no-op"; show_err
    fi
else
    fail "setup for update"; show_err
fi
if agent teardown; then pass "teardown after update"; else fail "teardown after update"; show_err; fi
check_restored "$WORK/before" "after update"

# ------------------------------------------------------------ 6. failures
echo "== failures change nothing"
if agent setup --nic nope0 --port "$PORT"; then
    fail "setup with a nonexistent NIC must fail"
else
    pass "setup with a nonexistent NIC fails"
    check "error names the NIC" grep -q 'NIC "nope0" not found' "$WORK/err"
fi
sed 's/^/    | /' "$WORK/err" | tail -1
check_same "nonexistent NIC: nothing changed" "$WORK/before"
check "nonexistent NIC: no state file" test ! -e "$SD/host-state.json"

# A gateway outside the port subnet makes the very last step (default
# route in the netns) fail: everything before it must be rolled back.
if agent setup --port 192.168.50.10/24,172.31.0.1; then
    fail "setup with an unreachable port gateway must fail"
else
    pass "setup with an unreachable port gateway fails"
    check "error names the step" grep -q 'add route' "$WORK/err"
    check "rollback was logged" grep -q 'rolling back' "$WORK/err"
fi
sed 's/^/    | /' "$WORK/err" | grep -i error | tail -1
check_restored "$WORK/before" "after rollback"

vm1 ip link add nsx-eth0-peer type dummy 2>/dev/null || vm1 ip link add nsx-eth0-peer type bridge
if agent setup --port "$PORT"; then
    fail "setup with a foreign interface named like the peer must fail"
else
    pass "setup refuses a foreign interface named like the peer"
    check "error says it is not ours" grep -Eq 'not ours|not a veth' "$WORK/err"
    sed 's/^/    | /' "$WORK/err" | grep -i error | tail -1
fi
vm1 ip link del nsx-eth0-peer
check_same "foreign name clash: nothing changed" "$WORK/before"

# Another live agent (simulated by holding its lock) must not be torn down.
if ! command -v flock >/dev/null; then
    skip "setup refuses while another agent holds the lock (no flock(1) here)"
else
    mkdir -p "$SD"
    # Blocking (bounded) take: the probes below must not make it give up.
    timeout 20 flock -w 10 "$SD/host.lock" sleep 10 &
    HOLDER=$!
    # Bounded wait until the holder has the lock (a second flock -n fails).
    for _ in $(seq 50); do
        flock -n "$SD/host.lock" true || break
        sleep 0.1
    done
    check "the lock holder has the lock" bash -c "! flock -n '$SD/host.lock' true"
    if agent setup --port "$PORT"; then
        fail "setup while another agent holds the lock must fail"
        agent teardown
    else
        pass "setup refuses while another agent holds the lock"
        check "error says it is locked" grep -q 'locked by another running agent' "$WORK/err"
    fi
    kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null
    check_same "locked: nothing changed" "$WORK/before"
fi

echo
echo "host_plumbing: $PASSES passed, $FAILS failed, $SKIPS skipped"
[ "$FAILS" -eq 0 ]
