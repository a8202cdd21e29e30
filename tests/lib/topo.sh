#!/usr/bin/env bash
# tests/lib/topo.sh -- namespace topology builder for the end-to-end tests.
#
# One description -> namespaces, links and one nsx-agent config per instance:
#
#   topo_new t02 1500                       # id (prefix of every name), underlay MTU
#   topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
#   topo_switch ls-app 0x2388 192.168.99.0/24 192.168.99.1
#   topo_router t1-router 02:50:56:56:44:52 ls-web ls-app
#   topo_instance vm1 ls-web 192.168.100.3  # vmN: underlay 10.99.3.(10+N), tep_id N,
#   topo_instance vm2 ls-app 192.168.99.9   #      NIC MAC 06:17:1e:54:96:<N in hex>
#   topo_build                              # namespaces + configs
#   agent_start vm1; agent_start vm2        # bounded wait until the API answers
#   in_overlay vm1 ping -c 1 192.168.99.9   # run in vm1's overlay netns (nsx-root)
#   agent_counter vm1 '.drops.unknown_vni'  # jq over `nsx-agent ctl counters`
#   counter_at_least vm1 '.drops.no_route' 3  # bounded wait until it is >= 3
#   cap_start c1; ...; cap_stop c1          # dumpcap on the underlay bridge
#   cap_start_in c2 NETNS IFACE             # ... or on any namespace's interface
#   topo_edge vm9 ...; topo_edge_build      # north-south: an edge, its uplink to <id>-inet
#   topo_cloud_nat NET MTU ADDR=ELASTIC     # <id>-inet as the cloud's NAT, NET the internet
#   topo_destroy
#
# Layout: namespace <id>-ul holds bridge `ulbr0` (10.99.3.1/24); namespace
# <id>-vmN holds `eth0` (10.99.3.(10+N)/24, default route via 10.99.3.1),
# whose peer `ulport-vmN` is on the bridge. Every link has the underlay MTU.
# The agent's overlay namespace is <id>-root-vmN; its API socket and state
# dir live in the topology's private directory. Needs sandbox.sh (sourced
# first) and jq, dumpcap, tshark, ethtool.
# shellcheck shell=bash

TOPO_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOPO_REPO=$(cd "$TOPO_LIB_DIR/../.." && pwd)

# The agent binary: $NSX_AGENT, else the newest of target/{release,debug}/nsx-agent.
topo_find_agent() {
    if [[ -n "${NSX_AGENT:-}" ]]; then
        [[ -x "$NSX_AGENT" ]] || { echo "NSX_AGENT=$NSX_AGENT is not executable" >&2; return 1; }
        printf '%s\n' "$NSX_AGENT"
        return 0
    fi
    local rel=$TOPO_REPO/target/release/nsx-agent dbg=$TOPO_REPO/target/debug/nsx-agent
    if [[ -x "$rel" && -x "$dbg" ]]; then
        if [[ "$rel" -nt "$dbg" ]]; then printf '%s\n' "$rel"; else printf '%s\n' "$dbg"; fi
    elif [[ -x "$rel" ]]; then
        printf '%s\n' "$rel"
    elif [[ -x "$dbg" ]]; then
        printf '%s\n' "$dbg"
    else
        echo "no nsx-agent binary: build it (cargo build --release -p agent) or set NSX_AGENT" >&2
        return 1
    fi
}

topo_new() {
    TOPO_ID=$1
    TOPO_MTU=${2:-1500}
    TOPO_DIR=${SANDBOX_TMP:?source sandbox.sh and enter_sandbox first}/$TOPO_ID
    TOPO_UL=$TOPO_ID-ul
    TOPO_BR=ulbr0
    TOPO_SWITCHES=()
    TOPO_ROUTERS=()
    TOPO_INSTANCES=()
    declare -gA TOPO_SW_VNI=() TOPO_SW_SUBNET=() TOPO_SW_GW=() TOPO_SW_DHCP=() TOPO_HOST_EXTRA=()
    declare -gA TOPO_RT_MAC=() TOPO_RT_SWS=()
    declare -gA TOPO_PORT_SW=() TOPO_PORT_IP=()
    declare -gA TOPO_AGENT_PID=() TOPO_CAP_PID=() TOPO_NS_OF=()
    TOPO_BUILT=0
    mkdir -p "$TOPO_DIR"
}

topo_switch() { TOPO_SWITCHES+=("$1"); TOPO_SW_VNI[$1]=$2; TOPO_SW_SUBNET[$1]=$3; TOPO_SW_GW[$1]=$4; }
# topo_switch_dhcp SWITCH TOML: the switch's `dhcp` table (its body, e.g.
# 'dns_servers = ["10.0.0.53"]').
topo_switch_dhcp() { TOPO_SW_DHCP[$1]=$2; }
# topo_host_option vmN TOML: more lines for vmN's `[host]` table.
topo_host_option() { TOPO_HOST_EXTRA[$1]+="$2"$'\n'; }

topo_router() {
    local name=$1 mac=$2
    shift 2
    TOPO_ROUTERS+=("$name")
    TOPO_RT_MAC[$name]=$mac
    TOPO_RT_SWS[$name]="$*"
}

# topo_instance vmN [SWITCH IP]: an instance, with a port on SWITCH if given.
topo_instance() {
    [[ "$1" =~ ^vm[0-9]+$ ]] || { echo "instance names are vmN" >&2; return 1; }
    TOPO_INSTANCES+=("$1")
    if [[ $# -ge 3 ]]; then
        TOPO_PORT_SW[$1]=$2
        TOPO_PORT_IP[$1]=$3
    fi
}

topo_idx() { printf '%s\n' "${1#vm}"; }
# topo_ns NAME: NAME's main namespace: <id>-NAME, unless TOPO_NS_OF[NAME]
# says otherwise (the edge on the gateway host runs in the gateway's).
topo_ns() { printf '%s\n' "${TOPO_NS_OF[$1]:-$TOPO_ID-$1}"; }
topo_root() { printf '%s\n' "$TOPO_ID-root-$1"; }
topo_underlay_ip() { printf '10.99.3.%d\n' $((10 + ${1#vm})); }
topo_mac() { printf '06:17:1e:54:96:%02x\n' "${1#vm}"; }
topo_tep_id() { printf '%d\n' "${1#vm}"; }
topo_overlay_ip() { printf '%s\n' "${TOPO_PORT_IP[$1]}"; }
topo_socket() { printf '%s\n' "$TOPO_DIR/$1/api.sock"; }
topo_config_path() { printf '%s\n' "$TOPO_DIR/$1/agent.toml"; }
agent_log() { printf '%s\n' "$TOPO_DIR/$1/agent.log"; }
topo_overlay_mtu() { printf '%d\n' $((TOPO_MTU - 58)); }

# in_ul CMD...: run in the underlay namespace.
in_ul() { ip netns exec "$TOPO_UL" "$@"; }
# in_inst vmN CMD...: run in the instance's main namespace (where eth0 is).
in_inst() { local vm=$1; shift; ip netns exec "$(topo_ns "$vm")" "$@"; }
# in_overlay vmN CMD...: run in the instance's overlay namespace (nsx-root).
in_overlay() { local vm=$1; shift; ip netns exec "$(topo_root "$vm")" "$@"; }

# topo_config vmN: print the agent config of vmN (TOML).
topo_config() {
    local vm=$1 sw rt other first s
    cat <<EOF
# generated by tests/lib/topo.sh for $vm of topology $TOPO_ID
version = 1
tep_id = $(topo_tep_id "$vm")

[host]
nic = "eth0"
netns = "$(topo_root "$vm")"
state_dir = "$TOPO_DIR/$vm/state"
api_socket = "$(topo_socket "$vm")"
EOF
    # No sshd from the agent unless the test asks (TOPO_SSH=on): they would
    # use the host's /etc/ssh and /run/sshd (test 44 sets up its own).
    [[ "${TOPO_SSH:-off}" == on ]] || printf 'ssh_underlay_port = 0\nssh_overlay_port = 0\n'
    printf '%s' "${TOPO_HOST_EXTRA[$vm]:-}"
    for sw in "${TOPO_SWITCHES[@]}"; do
        cat <<EOF

[[switches]]
name = "$sw"
vni = ${TOPO_SW_VNI[$sw]}
subnet = "${TOPO_SW_SUBNET[$sw]}"
gateway_ip = "${TOPO_SW_GW[$sw]}"
EOF
        [[ -z "${TOPO_SW_DHCP[$sw]:-}" ]] || printf '\n[switches.dhcp]\n%s\n' "${TOPO_SW_DHCP[$sw]}"
    done
    for rt in "${TOPO_ROUTERS[@]}"; do
        s=""
        first=1
        for sw in ${TOPO_RT_SWS[$rt]}; do
            if [[ $first == 1 ]]; then s="\"$sw\""; first=0; else s="$s, \"$sw\""; fi
        done
        cat <<EOF

[[routers]]
name = "$rt"
mac = "${TOPO_RT_MAC[$rt]}"
switches = [$s]
EOF
    done
    if [[ -n "${TOPO_PORT_SW[$vm]:-}" ]]; then
        cat <<EOF

[port]
switch = "${TOPO_PORT_SW[$vm]}"
ip = "${TOPO_PORT_IP[$vm]}"
EOF
    fi
    for other in "${TOPO_INSTANCES[@]}"; do
        [[ "$other" == "$vm" || -z "${TOPO_PORT_SW[$other]:-}" ]] && continue
        cat <<EOF

[[remote_ports]]
switch = "${TOPO_PORT_SW[$other]}"
ip = "${TOPO_PORT_IP[$other]}"
mac = "$(topo_mac "$other")"
tep_ip = "$(topo_underlay_ip "$other")"
tep_id = $(topo_tep_id "$other")
EOF
    done
}

# topo_build: create the underlay, the instances and their configs.
topo_build() {
    local vm ns
    ip netns add "$TOPO_UL"
    sandbox_track_netns "$TOPO_UL"
    in_ul ip link set lo up
    in_ul ip link add "$TOPO_BR" type bridge stp_state 0 forward_delay 0
    in_ul ip link set "$TOPO_BR" mtu "$TOPO_MTU"
    in_ul ip addr add 10.99.3.1/24 dev "$TOPO_BR"
    in_ul ip link set "$TOPO_BR" up
    for vm in "${TOPO_INSTANCES[@]}"; do
        ns=$(topo_ns "$vm")
        ip netns add "$ns"
        sandbox_track_netns "$ns"
        # Agents create their overlay namespace; make sure it goes at exit too.
        sandbox_track_netns "$(topo_root "$vm")"
        ip netns exec "$ns" ip link set lo up
        # No IPv6 DAD: addresses are never "tentative", so snapshots are stable.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0
        in_ul ip link add "ulport-$vm" type veth peer name eth0 netns "$ns"
        in_ul ip link set "ulport-$vm" mtu "$TOPO_MTU" master "$TOPO_BR" up
        ip netns exec "$ns" ip link set eth0 address "$(topo_mac "$vm")" mtu "$TOPO_MTU"
        # A cloud NIC puts finished checksums on the wire; a veth passes
        # CHECKSUM_PARTIAL to its peer instead. Without tx checksum offload on
        # both ends the underlay behaves like a wire: what tshark sees on the
        # bridge is exactly what a peer receives.
        ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
        in_ul ethtool -K "ulport-$vm" tx off >/dev/null
        ip netns exec "$ns" ip addr add "$(topo_underlay_ip "$vm")/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
        ip netns exec "$ns" ip route add default via 10.99.3.1
        mkdir -p "$TOPO_DIR/$vm/state"
        topo_config "$vm" >"$(topo_config_path "$vm")"
    done
    TOPO_BUILT=1
    sandbox_on_exit topo_destroy
}

# topo_wait_underlay: bounded wait until every instance pings the bridge.
topo_wait_underlay() {
    local vm i
    for vm in "${TOPO_INSTANCES[@]}"; do
        for ((i = 0; i < 20; i++)); do
            in_inst "$vm" ping -c 1 -W 1 -q 10.99.3.1 >/dev/null 2>&1 && break
            sleep 0.2
        done
        [[ $i -lt 20 ]] || { echo "underlay: $vm cannot reach 10.99.3.1" >&2; return 1; }
    done
}

# agent_ctl vmN ARGS...: the local API (status | counters), bounded.
agent_ctl() {
    local vm=$1 bin
    shift
    bin=$(topo_find_agent) || return 1
    timeout 5 "$bin" ctl --socket "$(topo_socket "$vm")" "$@"
}

# agent_api vmN JSON: one request line with arguments (`ctl` takes none) on
# the API socket; prints the reply line. The agent drops a request whose
# client hangs up before the answer, so the write side stays open until the
# reply is in (bounded, 10 s).
# shellcheck disable=SC2094 # the writer only polls the reply file's size
agent_api() {
    local vm=$1 req=$2 out i
    out=$(mktemp)
    {
        printf '%s\n' "$req"
        for ((i = 0; i < 100; i++)); do
            [[ -s "$out" ]] && break
            sleep 0.1
        done
    } | timeout 15 socat -t 2 - "UNIX-CONNECT:$(topo_socket "$vm")" >"$out" || true
    cat "$out"
    rm -f "$out"
}

# The agent publishes its counters every 200 ms (the datapath thread never
# locks per packet): the effect of traffic that just happened shows up a
# publication or two later, later still on a loaded machine. Wait for the
# effect itself (counters_wait, counter_at_least), bounded, never a fixed
# sleep.

# agent_counter vmN JQ: one value from `ctl counters`.
agent_counter() {
    agent_ctl "$1" counters | jq -er "$2"
}

# counters_wait vmN JQ [SECS]: bounded wait (default 10 s) until
# `ctl counters | jq -e JQ` holds; true if it did.
counters_wait() {
    local vm=$1 q=$2 secs=${3:-10} i
    for ((i = 0; i < secs * 10; i++)); do
        agent_ctl "$vm" counters 2>/dev/null | jq -e "$q" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# counter_at_least vmN JQ MIN [SECS]: bounded wait (default 10 s) until the
# number JQ picks out of `ctl counters` is at least MIN; prints the last
# value read (so a check on it shows what was there if it never got there).
counter_at_least() {
    local vm=$1 q=$2 min=$3 secs=${4:-10} i v=""
    for ((i = 0; i < secs * 10; i++)); do
        v=$(agent_counter "$vm" "$q" 2>/dev/null) || v=""
        [[ "$v" =~ ^[0-9]+$ && $v -ge $min ]] && break
        sleep 0.1
    done
    printf '%s\n' "$v"
}

# agent_start vmN [CONFIG]: start the agent of vmN in the background, wait
# (bounded, 30 s) until its API answers `status`. Returns non-zero (and
# prints the log tail on stderr) if the agent exits or never answers. Call it
# in this shell, not in $(...): it records the agent's PID here.
agent_start() {
    local vm=$1 cfg=${2:-} bin pid i
    [[ -n "$cfg" ]] || cfg=$(topo_config_path "$vm")
    bin=$(topo_find_agent) || return 1
    # nsenter --net keeps the sandbox's mount namespace, so the overlay netns
    # the agent registers in /run/netns (a shared mount) is visible to every
    # test process (`ip netns exec` would put the agent in a slave mount
    # namespace and hide it). A private mount namespace with a fresh sysfs
    # gives the agent the /sys of its own network namespace.
    sandbox_bg "$(agent_log "$vm")" \
        nsenter --net="/run/netns/$(topo_ns "$vm")" \
        unshare --mount --propagation unchanged \
        sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
        "$bin" run --config "$cfg"
    pid=$SANDBOX_LAST_PID
    TOPO_AGENT_PID[$vm]=$pid
    for ((i = 0; i < 150; i++)); do
        if ! sandbox_alive "$pid"; then
            wait "$pid" 2>/dev/null
            echo "agent $vm exited during start (rc=$?); log:" >&2
            tail -n 30 "$(agent_log "$vm")" >&2
            return 1
        fi
        if agent_ctl "$vm" status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "agent $vm: API $(topo_socket "$vm") did not answer within 30 s; log:" >&2
    tail -n 30 "$(agent_log "$vm")" >&2
    return 1
}

agent_pid() { printf '%s\n' "${TOPO_AGENT_PID[$1]:-}"; }

# agent_stop vmN [SECS]: SIGTERM, bounded wait; returns the agent's exit
# status (124 if it had to be SIGKILLed after SECS, 126 if none was running).
# Call it in this shell, not in $(...), like agent_start.
agent_stop() {
    local vm=$1 secs=${2:-15} pid rc
    pid=${TOPO_AGENT_PID[$vm]:-}
    [[ -n "$pid" ]] || return 126
    kill -TERM "$pid" 2>/dev/null || true
    if sandbox_wait_exit "$pid" "$secs"; then
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
    else
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rc=124
    fi
    TOPO_AGENT_PID[$vm]=""
    return "$rc"
}

# agent_kill vmN: SIGKILL (no cleanup by the agent).
agent_kill() {
    local vm=$1 pid
    pid=${TOPO_AGENT_PID[$vm]:-}
    [[ -n "$pid" ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    TOPO_AGENT_PID[$vm]=""
}

# agent_wait_overlay vmN: bounded wait until nsx-eth0 is up in the overlay netns.
agent_wait_overlay() {
    local vm=$1 i
    for ((i = 0; i < 50; i++)); do
        in_overlay "$vm" ip -o link show nsx-eth0 up 2>/dev/null | grep -q nsx-eth0 && return 0
        sleep 0.1
    done
    return 1
}

# overlay_ping vmN DST [PING ARGS...]: bounded ping from vmN's overlay netns.
overlay_ping() {
    local vm=$1 dst=$2
    shift 2
    timeout 30 ip netns exec "$(topo_root "$vm")" ping -n "$@" "$dst"
}

# overlay_wait_ping vmN DST: bounded (about 10 s) wait until one ping answers.
overlay_wait_ping() {
    local vm=$1 dst=$2 i
    for ((i = 0; i < 20; i++)); do
        overlay_ping "$vm" "$dst" -c 1 -W 1 -q >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    return 1
}

# cap_start NAME [FILTER]: capture on the underlay bridge into $TOPO_DIR/NAME.pcap.
cap_start() { cap_start_in "$1" "$TOPO_UL" "$TOPO_BR" "${2:-}"; }

# cap_start_in NAME NETNS IFACE [FILTER]: capture on IFACE of namespace
# NETNS into $TOPO_DIR/NAME.pcap (stop it with cap_stop NAME).
cap_start_in() {
    local name=$1 netns=$2 iface=$3 filter=${4:-} file i
    # -P: pcap (not pcapng) output. dumpcap puts the bridge in promiscuous
    # mode, so it also sees the unicast frames it forwards between ports.
    file=$TOPO_DIR/$name.pcap
    local args=(-P -i "$iface" -w "$file")
    [[ -n "$filter" ]] && args+=(-f "$filter")
    sandbox_bg "$TOPO_DIR/$name.dumpcap.log" ip netns exec "$netns" dumpcap "${args[@]}"
    TOPO_CAP_PID[$name]=$SANDBOX_LAST_PID
    for ((i = 0; i < 100; i++)); do
        grep -q "Capturing on" "$TOPO_DIR/$name.dumpcap.log" 2>/dev/null && { sleep 0.2; return 0; }
        sandbox_alive "${TOPO_CAP_PID[$name]}" || break
        sleep 0.1
    done
    echo "dumpcap did not start:" >&2
    cat "$TOPO_DIR/$name.dumpcap.log" >&2
    return 1
}

# cap_stop NAME: stop the capture (bounded); prints the pcap path.
cap_stop() {
    local name=$1 pid
    pid=${TOPO_CAP_PID[$name]:-}
    sleep 0.3
    if [[ -n "$pid" ]]; then
        kill -INT "$pid" 2>/dev/null || true
        sandbox_wait_exit "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    TOPO_CAP_PID[$name]=""
    printf '%s\n' "$TOPO_DIR/$name.pcap"
}

# cap_fields PCAP DISPLAY_FILTER FIELD...: tab-separated fields of matching
# packets (UDP checksums verified; repeated fields joined with ',').
cap_fields() {
    local pcap=$1 filter=$2 f
    shift 2
    local args=()
    for f in "$@"; do args+=(-e "$f"); done
    cap_tshark "$pcap" "$filter" -T fields -E separator=/t -E occurrence=a -E aggregator=, "${args[@]}"
}

# cap_count PCAP DISPLAY_FILTER: number of matching packets.
cap_count() {
    local out
    out=$(cap_tshark "$1" "$2" -T fields -e frame.number) || return 1
    grep -c . <<<"$out" || true
}

# cap_tshark PCAP DISPLAY_FILTER ARGS...: tshark -r with UDP checksums
# verified; fails loudly (never an empty success) if tshark rejects the
# filter or the file.
cap_tshark() {
    local pcap=$1 filter=$2 err
    shift 2
    err=$(mktemp)
    if ! tshark -n -r "$pcap" -o udp.check_checksum:TRUE -Y "$filter" "$@" 2>"$err"; then
        echo "tshark failed (filter: $filter):" >&2
        grep -v 'Running as user' "$err" >&2
        rm -f "$err"
        return 1
    fi
    rm -f "$err"
}

# topo_destroy: stop agents (SIGTERM, bounded), captures, delete namespaces.
topo_destroy() {
    local vm name
    [[ "${TOPO_BUILT:-0}" == 1 ]] || return 0
    for vm in "${!TOPO_AGENT_PID[@]}"; do
        [[ -n "${TOPO_AGENT_PID[$vm]}" ]] && { agent_stop "$vm" 10 || true; }
    done
    for name in "${!TOPO_CAP_PID[@]}"; do
        [[ -n "${TOPO_CAP_PID[$name]}" ]] && sandbox_kill "${TOPO_CAP_PID[$name]}" 2
    done
    for vm in "${TOPO_INSTANCES[@]}"; do
        ip netns del "$(topo_root "$vm")" 2>/dev/null || true
        ip netns del "$(topo_ns "$vm")" 2>/dev/null || true
    done
    ip netns del "$TOPO_UL" 2>/dev/null || true
    TOPO_BUILT=0
}

# --- north-south (issue 14) ---
# topo_edge vmN UPLINK_CIDR UPLINK_GW [SECONDARY...]: vmN (no port) is the
# edge: it takes `eth1`, a veth whose peer `uplink` sits in namespace
# <id>-inet (the "internet" router side, UPLINK_GW there), and runs the
# tier-0 `t0` (MAC 02:50:56:00:0f:00, transit VNI 0xfffff0) over every
# router of the topology. Every instance with a port gets the edge link.
# Call before topo_build; topo_edge_build after it.
topo_edge() {
    TOPO_EDGE=$1
    TOPO_EDGE_UPLINK=$2
    TOPO_EDGE_GW=$3
    shift 3
    TOPO_EDGE_SECONDARY=("$@")
    TOPO_EDGE_TIER0_EXTRA=""
    TOPO_INET=$TOPO_ID-inet
    topo_host_option "$TOPO_EDGE" 'uplink = "eth1"'
}

# topo_edge_tier0 TOML: more for the edge's config after `[tier0.uplink]`
# (whole tables with their headers, e.g. `[tier0.snat]` or
# `[[tier0.public_ips]]`).
topo_edge_tier0() { TOPO_EDGE_TIER0_EXTRA+="$1"$'\n'; }

topo_edge_tier1s() {
    local rt s="" first=1
    for rt in "${TOPO_ROUTERS[@]}"; do
        if [[ $first == 1 ]]; then s="\"$rt\""; first=0; else s="$s, \"$rt\""; fi
    done
    printf '%s\n' "$s"
}

# Appends the edge link / tier-0 to the generated configs.
topo_edge_configs() {
    local vm sec="" a first=1
    for a in "${TOPO_EDGE_SECONDARY[@]}"; do
        if [[ $first == 1 ]]; then sec="\"$a\""; first=0; else sec="$sec, \"$a\""; fi
    done
    for vm in "${TOPO_INSTANCES[@]}"; do
        if [[ "$vm" == "$TOPO_EDGE" ]]; then
            printf '\n[tier0]\nname = "t0"\nmac = "02:50:56:00:0f:00"\ntransit_vni = 0xfffff0\ntier1s = [%s]\n' \
                "$(topo_edge_tier1s)" >>"$(topo_config_path "$vm")"
            printf '\n[tier0.uplink]\naddress = "%s"\ngateway = "%s"\nsecondary = [%s]\n%s' \
                "$TOPO_EDGE_UPLINK" "$TOPO_EDGE_GW" "$sec" "$TOPO_EDGE_TIER0_EXTRA" >>"$(topo_config_path "$vm")"
        elif [[ -n "${TOPO_PORT_SW[$vm]:-}" ]]; then
            printf '\n[edge]\ntep_ip = "%s"\ntep_id = %s\ntransit_vni = 0xfffff0\nmac = "02:50:56:00:0f:00"\ntier1s = [%s]\n' \
                "$(topo_underlay_ip "$TOPO_EDGE")" "$(topo_tep_id "$TOPO_EDGE")" "$(topo_edge_tier1s)" \
                >>"$(topo_config_path "$vm")"
        fi
    done
}

# topo_edge_build: after topo_build: the edge's uplink veth into the
# internet-side namespace <id>-inet (UPLINK_GW on `uplink`), and the configs.
topo_edge_build() {
    topo_inet_uplink "$(topo_ns "$TOPO_EDGE")" "$TOPO_EDGE_GW/${TOPO_EDGE_UPLINK#*/}"
    topo_edge_configs
}

# topo_inet_uplink NETNS GW_CIDR: the internet-side namespace $TOPO_INET
# and an edge's uplink into it: `eth1` (MAC 02:00:00:00:ee:01) in NETNS,
# its veth peer `uplink` in $TOPO_INET with GW_CIDR (the uplink's gateway).
# Shared by topo_edge_build and gw_edge_host (gw.sh).
topo_inet_uplink() {
    local ns=$1 cidr=$2
    ip netns add "$TOPO_INET"
    sandbox_track_netns "$TOPO_INET"
    ip -n "$TOPO_INET" link set lo up
    ip -n "$ns" link add eth1 type veth peer name uplink netns "$TOPO_INET"
    ip -n "$ns" link set eth1 address 02:00:00:00:ee:01 up
    ip -n "$TOPO_INET" addr add "$cidr" dev uplink
    ip -n "$TOPO_INET" link set uplink up
}

# in_inet CMD...: run in the internet-side namespace.
in_inet() { ip netns exec "$TOPO_INET" "$@"; }

# topo_cloud_nat NET WAN_MTU ADDR=ELASTIC...: after the internet-side
# namespace $TOPO_INET exists (topo_edge_build, gw_edge_host): it becomes
# the cloud's router and NAT, stage one of a public IP (nftables): its link
# `wan` (198.51.100.1/24, MTU WAN_MTU) leads to namespace NET, the
# internet, with the hosts 198.51.100.7 and .8; each ADDR=ELASTIC maps the
# elastic IP ELASTIC (an address of `wan`) 1:1 to the uplink address ADDR
# (DNAT in, SNAT out).
topo_cloud_nat() {
    local net=$1 mtu=$2 pair pre="" post=""
    shift 2
    ip netns add "$net"
    sandbox_track_netns "$net"
    ip -n "$net" link set lo up
    ip -n "$TOPO_INET" link add wan type veth peer name eth0 netns "$net"
    ip -n "$TOPO_INET" link set wan mtu "$mtu" up
    ip -n "$net" link set eth0 mtu "$mtu" up
    ip -n "$TOPO_INET" addr add 198.51.100.1/24 dev wan
    ip -n "$net" addr add 198.51.100.7/24 dev eth0
    ip -n "$net" addr add 198.51.100.8/24 dev eth0
    ip -n "$net" route add default via 198.51.100.1
    for pair in "$@"; do
        ip -n "$TOPO_INET" addr add "${pair#*=}/32" dev wan
        pre+="        ip daddr ${pair#*=} dnat to ${pair%%=*}"$'\n'
        post+="        ip saddr ${pair%%=*} snat to ${pair#*=}"$'\n'
    done
    in_inet sysctl -qw net.ipv4.ip_forward=1
    in_inet nft -f - <<EOF
table ip cloudnat {
    chain pre {
        type nat hook prerouting priority -100;
${pre}    }
    chain post {
        type nat hook postrouting priority 100;
${post}    }
}
EOF
}
