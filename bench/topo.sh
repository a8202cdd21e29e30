#!/usr/bin/env bash
# Copied from ../shared/bench/topo.sh (the team's shared bench kit, 2026-11-22 baselines); adapted for scripts/bench.sh.
# topo.sh - build / tear down the bench topology (source it, or run it as a CLI).
#
#   ${GVB_PREFIX}ul   "underlay" namespace: Linux bridge br0, one veth leg per vm
#   ${GVB_PREFIX}vmN  "vm" namespaces:      eth0 on br0, 10.99.3.(10+N)/24
#   ${GVB_PREFIX}ovN  optional overlay namespaces (made by the path setups via
#                     topo_ovns), joined to vmN by a veth pair (vmN:ovl0 <-> ovN:eth0)
#   ${GVB_PREFIX}rootN overlay namespaces created by nsx-agent (bench/agent_path.sh);
#                     listed here so that topo_down also sweeps the leftovers of
#                     an agent that did not exit cleanly.
#   ${GVB_PREFIX}inet  the "internet" beyond an edge's uplink (bench/ns_path.sh)
#
# Nothing is created in the init namespace: every link is created directly
# inside a namespace that this script owns, so names cannot collide with the
# host's. Everything owned is recognisable by the prefix (default "gvb-").
#
# CLI:  topo.sh up [N] [MTU]    (defaults 2, 9001)
#       topo.sh down
#       topo.sh status
# Env:  GVB_PREFIX (default gvb-), GVB_UL_NET (default 10.99.3)

GVB_PREFIX=${GVB_PREFIX:-gvb-}
GVB_UL_NET=${GVB_UL_NET:-10.99.3}

ul_ns()   { echo "${GVB_PREFIX}ul"; }
vm_ns()   { echo "${GVB_PREFIX}vm$1"; }
ov_ns()   { echo "${GVB_PREFIX}ov$1"; }
ul_ip()   { echo "${GVB_UL_NET}.$((10 + $1))"; }   # underlay address of vm N

# New namespace with lo up and IPv6 off (keeps ND/MLD chatter out of the
# captures and the measurements).
_ns_add() {
    ip netns add "$1" || return 1
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
}

# All namespaces that carry our prefix.
topo_list_ns() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${GVB_PREFIX}(ul|vm[0-9]+|ov[0-9]+|root[0-9]+|inet)$" || true
}

# Kill every process running inside one of OUR namespaces (only we start
# processes there), by PID, then delete the namespace. Deleting a namespace
# destroys the veths/bridges/vxlan/tap devices that live in it.
topo_kill_ns_procs() {
    local ns=$1 pids pid i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -z "$pids" ] && return 0
        for pid in $pids; do
            if [ "$i" -lt 6 ]; then kill -TERM "$pid" 2>/dev/null; else kill -KILL "$pid" 2>/dev/null; fi
        done
        sleep 0.3
    done
}

topo_down() {
    local ns
    for ns in $(topo_list_ns); do topo_kill_ns_procs "$ns"; done
    for ns in $(topo_list_ns); do ip netns del "$ns" 2>/dev/null || true; done
}

# topo_up N MTU : underlay bridge + N vm namespaces with eth0 at MTU.
topo_up() {
    local n=${1:-2} mtu=${2:-9001} i ul vm
    ul=$(ul_ns)
    if [ -n "$(topo_list_ns)" ]; then
        echo "topo: namespaces with prefix ${GVB_PREFIX} already exist; run 'topo.sh down' first" >&2
        return 1
    fi
    _ns_add "$ul" || return 1
    ip -n "$ul" link add br0 type bridge stp_state 0 forward_delay 0
    ip -n "$ul" link set br0 mtu "$mtu" up
    for i in $(seq 1 "$n"); do
        vm=$(vm_ns "$i")
        _ns_add "$vm" || return 1
        # veth created inside the underlay ns, peer placed straight into the vm ns.
        ip -n "$ul" link add "p-vm$i" mtu "$mtu" type veth peer name eth0 netns "$vm" mtu "$mtu" || return 1
        ip -n "$ul" link set "p-vm$i" master br0 up
        ip -n "$vm" addr add "$(ul_ip "$i")/24" dev eth0
        ip -n "$vm" link set eth0 up
    done
    # Make sure the bridge is forwarding (no STP/learning delays) before use.
    topo_wait_ping "$(vm_ns 1)" "$(ul_ip 2)" 2>/dev/null || true
}

# topo_ovns I MTU : overlay namespace ovI joined to vmI by veth (vmI:ovl0 <-> ovI:eth0).
# The caller decides what ovl0 is attached to (OVS port, bridge, agent, ...).
topo_ovns() {
    local i=$1 mtu=$2 vm ov
    vm=$(vm_ns "$i"); ov=$(ov_ns "$i")
    _ns_add "$ov" || return 1
    ip -n "$vm" link add ovl0 mtu "$mtu" type veth peer name eth0 netns "$ov" mtu "$mtu" || return 1
    ip -n "$vm" link set ovl0 up
    ip -n "$ov" link set eth0 up
}

# topo_wait_ping NS IP [tries] : wait until IP answers from NS (bounded).
topo_wait_ping() {
    local ns=$1 ip=$2 tries=${3:-20} i
    for i in $(seq 1 "$tries"); do
        ip netns exec "$ns" ping -c1 -W1 -q "$ip" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    echo "topo: $ip not reachable from $ns" >&2
    return 1
}

topo_status() {
    local ns
    for ns in $(topo_list_ns); do
        echo "== $ns"; ip -n "$ns" -br addr; ip netns pids "$ns" | sed 's/^/  pid /'
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    case "${1:-}" in
        up)     topo_up "${2:-2}" "${3:-9001}" ;;
        down)   topo_down ;;
        status) topo_status ;;
        *)      echo "usage: $0 up [N] [MTU] | down | status" >&2; exit 2 ;;
    esac
fi
