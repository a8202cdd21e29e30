#!/usr/bin/env bash
# scripts/demo.sh -- the seed's picture, live: builds nsx-agent (release),
# then inside a private sandbox (user + network + mount + PID namespaces; the
# host's network is never touched) creates an underlay 10.99.3.0/24, three
# instances with an agent each, logical switches ls-web (VNI 0x238c,
# 192.168.100.0/24) and ls-app (VNI 0x2388, 192.168.99.0/24) joined by the
# distributed router t1-router, and shows: the interfaces the agent built,
# pings on one switch and across switches, TCP transfers across the switches,
# one decoded Geneve packet from the underlay, and the agents' counters.
# Then it waits for Ctrl-C, printing how to get a shell in an instance.
#
#   scripts/demo.sh              # show, then wait for Ctrl-C
#   scripts/demo.sh --check      # show, exit 0 only if everything worked
#   scripts/demo.sh --mtu 9001   # underlay MTU 9001 (default 1500)
#   NSX_DEMO_PCAP=/tmp/demo.pcap scripts/demo.sh --check   # keep the capture
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib/e2e.sh
source "$ROOT/tests/lib/e2e.sh"

CHECK=0
MTU=1500
args=("$@")
while [[ $# -gt 0 ]]; do
    case $1 in
        --check) CHECK=1 ;;
        --mtu)
            MTU=${2:?--mtu needs a value}
            shift
            ;;
        --mtu=*) MTU=${1#--mtu=} ;;
        -h | --help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $1 (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done
if ! [[ "$MTU" =~ ^[0-9]+$ ]] || [[ $MTU -lt 1280 || $MTU -gt 9216 ]]; then
    echo "--mtu: a number in 1280..9216" >&2
    exit 2
fi

if [[ "${NSX_IN_SANDBOX:-}" != 1 ]]; then
    # Outside the sandbox: tools, build, absolute pcap path.
    # shellcheck source=tests/lib/deps.sh
    source "$ROOT/tests/lib/deps.sh"
    nsx_install_tools ip ping tshark dumpcap jq ethtool socat unshare nsenter timeout sha256sum cc
    nsx_ensure_rust >/dev/null
    echo "== building (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    export NSX_AGENT=$ROOT/target/release/nsx-agent
    if [[ -n "${NSX_DEMO_PCAP:-}" ]]; then
        mkdir -p "$(dirname "$NSX_DEMO_PCAP")"
        NSX_DEMO_PCAP=$(cd "$(dirname "$NSX_DEMO_PCAP")" && pwd)/$(basename "$NSX_DEMO_PCAP")
        : >"$NSX_DEMO_PCAP"
        export NSX_DEMO_PCAP
    fi
fi
enter_sandbox "${args[@]}"

# --- inside the sandbox ----------------------------------------------------------
FAILS=0
if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B="" G="" R="" N=""; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
show() {
    printf '$ %s\n' "$*"
    "$@" 2>&1 | sed 's/^/  /'
}
indent() { sed 's/^/  /'; }
good() { printf '  %sOK%s %s\n' "$G" "$N" "$*"; }
bad() {
    printf '  %sFAILED%s %s\n' "$R" "$N" "$*"
    FAILS=$((FAILS + 1))
}

NSX_AGENT=$(topo_find_agent) || exit 1
seed_topology nsx "$MTU" 3
topo_build
topo_wait_underlay || {
    bad "underlay"
    exit 1
}
PCAP=${NSX_DEMO_PCAP:-$TOPO_DIR/underlay.pcap}
# Headers are enough (-s 256): the TCP transfers would make a big file.
sandbox_bg "$TOPO_DIR/dumpcap.log" ip netns exec "$TOPO_UL" dumpcap -q -P -i "$TOPO_BR" -s 256 -w "$PCAP"
CAP_PID=$SANDBOX_LAST_PID

say "Topology (underlay MTU $MTU, overlay MTU $(topo_overlay_mtu))"
cat <<EOF
  underlay 10.99.3.0/24: bridge $TOPO_BR (10.99.3.1) in namespace $TOPO_UL
  instance  underlay IP   NIC MAC            tep_id  overlay port
  vm1       10.99.3.11    $(topo_mac vm1)  1       ls-web 192.168.100.3
  vm2       10.99.3.12    $(topo_mac vm2)  2       ls-app 192.168.99.9
  vm3       10.99.3.13    $(topo_mac vm3)  3       ls-web 192.168.100.4
  ls-web: VNI 0x238c, 192.168.100.0/24    ls-app: VNI 0x2388, 192.168.99.0/24
  joined by distributed router t1-router ($ROUTER_MAC, the same on every agent)
EOF
for vm in vm1 vm2 vm3; do
    if agent_start "$vm"; then
        good "agent $vm running"
    else
        bad "agent $vm does not start"
        exit 1
    fi
done
for vm in vm1 vm2 vm3; do agent_wait_overlay "$vm" || bad "$vm: nsx-eth0 up"; done

say "What the agent built on vm1 (as in the seed)"
show ip netns exec "$(topo_ns vm1)" ip -br addr show dev nsx-vtep0.0
show ip netns exec "$(topo_ns vm1)" ip -br link show dev eth0
show ip netns exec "$(topo_root vm1)" ip -br addr show dev nsx-eth0
show ip netns exec "$(topo_root vm1)" ip route

# demo_ping FROM DST LABEL
demo_ping() {
    local out
    overlay_wait_ping "$1" "$2" || true
    printf '$ ip netns exec %s ping -c 3 %s    # %s\n' "$(topo_root "$1")" "$2" "$3"
    out=$(overlay_ping "$1" "$2" -c 3 -i 0.2 -W 2 2>&1) || true
    indent <<<"$out"
    if grep -q ' 3 received' <<<"$out"; then good "$3"; else bad "$3"; fi
}
say "Pings"
demo_ping vm1 192.168.100.4 "vm1 -> vm3, same switch ls-web"
demo_ping vm2 192.168.100.3 "vm2 (ls-app) -> vm1 (ls-web), routed: the replies show ttl=63"
demo_ping vm3 192.168.99.9 "vm3 (ls-web) -> vm2 (ls-app), routed"

# demo_tcp FROM TO_VM TO_IP MB
demo_tcp() {
    local from=$1 to=$2 ip=$3 mb=$4 srv t0 t1 i sum rate
    head -c "${mb}M" /dev/urandom >"$TOPO_DIR/tcp.in"
    rm -f "$TOPO_DIR/tcp.out"
    sandbox_bg "$TOPO_DIR/tcp.srv.log" ip netns exec "$(topo_root "$to")" \
        timeout 60 socat -u TCP-LISTEN:5555,reuseaddr "OPEN:$TOPO_DIR/tcp.out,creat,trunc"
    srv=$SANDBOX_LAST_PID
    t0=$(date +%s.%N)
    for ((i = 0; i < 20; i++)); do
        in_overlay "$from" timeout 60 socat -u "OPEN:$TOPO_DIR/tcp.in" "TCP:$ip:5555" 2>/dev/null && break
        sleep 0.2
    done
    sandbox_wait_exit "$srv" 30 || true
    t1=$(date +%s.%N)
    printf '$ socat %s MB: %s -> %s:5555 (in %s)\n' "$mb" "$from" "$ip" "$(topo_root "$to")"
    if cmp -s "$TOPO_DIR/tcp.in" "$TOPO_DIR/tcp.out"; then
        sum=$(sha256sum <"$TOPO_DIR/tcp.out" | cut -c1-16)
        rate=$(awk -v a="$t0" -v b="$t1" -v m="$mb" 'BEGIN { printf "%.0f", m * 8 * 1.048576 / (b - a) }')
        good "$mb MB $from -> $to intact (sha256 $sum... on both ends), about $rate Mbit/s"
    else
        bad "$mb MB $from -> $to ($ip) did not arrive intact"
    fi
    rm -f "$TOPO_DIR/tcp.in" "$TOPO_DIR/tcp.out"
}
say "TCP across the distributed router (socat, sha256 compared)"
demo_tcp vm1 vm2 192.168.99.9 20
demo_tcp vm2 vm3 192.168.100.4 20

say "On the wire: one routed echo request (vm2 -> vm1), decoded by tshark"
sleep 0.5
kill -INT "$CAP_PID" 2>/dev/null || true
sandbox_wait_exit "$CAP_PID" 5 || true
routed='ip.proto#1==17 && geneve && icmp && ip.addr#2==192.168.99.9 && ip.addr#2==192.168.100.3'
decoded=$(tshark -n -r "$PCAP" -Y "$routed && icmp.type==8" -O geneve 2>/dev/null | awk '/^Frame /{n++} n==1')
# Every routed request vm2 -> vm1 in 0x238c, every reply in 0x2388, inner TTL 63.
wrong=$(tshark -n -r "$PCAP" -o udp.check_checksum:TRUE 2>/dev/null -Y "$routed && !(
    (icmp.type==8 && ip.src#2==192.168.99.9 && geneve.vni==0x238c && ip.ttl#2==63) ||
    (icmp.type==0 && ip.src#2==192.168.100.3 && geneve.vni==0x2388 && ip.ttl#2==63))
    || ($routed && !(geneve.flags.critical==1 && geneve.option.class==0x0104 && geneve.option.type==0x80
        && ip.flags.df#1==1 && udp.checksum.status#1==1))" | wc -l)
if [[ -n "$decoded" && $wrong -eq 0 ]]; then
    grep -v '^[[:space:]]*$' <<<"$decoded" | sed 's/^/  /'
    printf '  ...\n  summary of a request and its reply:\n'
    tshark -n -r "$PCAP" -Y "$routed" -T fields -E separator=' ' \
        -e ip.src -e ip.dst -e geneve.vni -e ip.ttl -e icmp.type 2>/dev/null | head -n 2 |
        awk '{ split($1, s, ","); split($2, d, ","); split($4, t, ",");
               printf "  outer %s > %s  vni %s  inner %s > %s ttl %s  icmp %s\n",
                      s[1], d[1], $3, s[2], d[2], t[2], ($5 ~ /8/ ? "echo request" : "echo reply") }'
    good "Geneve with the C flag and the VMware option (class 0x0104, type 0x80): the request travels in ls-web's VNI 0x238c, the reply in ls-app's 0x2388, inner TTL 63"
else
    bad "routed Geneve packets in the capture: ${decoded:+$wrong with wrong VNI, TTL, option, DF or checksum}${decoded:-none}"
fi
if [[ -n "${NSX_DEMO_PCAP:-}" ]]; then
    n=$(tshark -n -r "$PCAP" -Y geneve 2>/dev/null | wc -l)
    if [[ $n -gt 0 ]]; then
        good "pcap of the underlay written to $NSX_DEMO_PCAP ($n Geneve packets, 256-byte snaplen)"
    else
        bad "pcap $NSX_DEMO_PCAP holds no Geneve packet"
    fi
fi

say "Counters of vm1 (nsx-agent ctl --socket ... counters; non-zero drop reasons only)"
if c=$(agent_ctl vm1 counters); then
    jq '{config_version, port, tunnels, drops: (.drops | with_entries(select(.value != 0)))}' <<<"$c" | sed 's/^/  /'
    good "counters"
else
    bad "counters of vm1"
fi

if [[ $FAILS -gt 0 ]]; then
    say "demo: $FAILS step(s) FAILED"
    [[ $CHECK == 1 ]] && exit 1
else
    say "demo: everything worked"
    [[ $CHECK == 1 ]] && exit 0
fi

say "The sandbox stays up until Ctrl-C"
cat <<EOF
  A shell in vm1's overlay namespace (its nsx-root), from another terminal on this host:
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net ip netns exec $(topo_root vm1) bash
  (vm2, vm3: $(topo_root vm2), $(topo_root vm3); an instance's main namespace, where
  eth0 and nsx-vtep0.0 are: $(topo_ns vm1); the underlay bridge: $TOPO_UL)
  Counters of vm1:
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net $NSX_AGENT ctl --socket $(topo_socket vm1) counters
  Agent logs (inside the sandbox's mount namespace): $TOPO_DIR/vmN/agent.log
EOF
# In the background so that INT/TERM are handled at once (bash runs traps
# only between commands; `wait` is interruptible).
while true; do
    sleep 3600 &
    wait $! || true
done
