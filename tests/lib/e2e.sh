#!/usr/bin/env bash
# tests/lib/e2e.sh -- common preamble of the end-to-end tests.
#
# `e2e_init NN "$@"` sources the sandbox, topology and TAP helpers, enters the
# sandbox (re-executing the test if needed) and checks the agent binary.
# `seed_topology ID MTU [N]` declares the seed's picture: switches ls-web
# (VNI 0x238c, 192.168.100.0/24) and ls-app (VNI 0x2388, 192.168.99.0/24)
# joined by router t1-router; vm1 192.168.100.3 (ls-web), vm2 192.168.99.9
# (ls-app), vm3 192.168.100.4 (ls-web) -- the first N of them (default 3).
# Also: wait_for (bounded polling of a command); eth0_snapshot (an
# instance's eth0 addresses and routes of one family, to compare before and
# after, with check_same from tap.sh); raw Geneve packet builders for
# injection (hex strings) and udp_send; log_mark / log_wait / log_ms to time
# bounds between logged events.
# shellcheck shell=bash

E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/sandbox.sh
source "$E2E_LIB_DIR/sandbox.sh"
# shellcheck source=tests/lib/topo.sh
source "$E2E_LIB_DIR/topo.sh"
# shellcheck source=tests/lib/tap.sh
source "$E2E_LIB_DIR/tap.sh"

ROUTER_MAC=02:50:56:56:44:52

e2e_init() {
    TAP_PREFIX=$1
    shift
    enter_sandbox "$@"
    NSX_AGENT=$(topo_find_agent) || bail "nsx-agent binary"
    export NSX_AGENT
    local t
    for t in jq tshark dumpcap ping ethtool socat nsenter; do
        command -v "$t" >/dev/null || bail "required tool $t is missing (scripts/test.sh installs it)"
    done
    diag "agent: $NSX_AGENT"
}

seed_topology() {
    local id=$1 mtu=$2 n=${3:-3}
    topo_new "$id" "$mtu"
    topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
    topo_switch ls-app 0x2388 192.168.99.0/24 192.168.99.1
    topo_router t1-router "$ROUTER_MAC" ls-web ls-app
    topo_instance vm1 ls-web 192.168.100.3
    [[ $n -ge 2 ]] && topo_instance vm2 ls-app 192.168.99.9
    [[ $n -ge 3 ]] && topo_instance vm3 ls-web 192.168.100.4
    return 0
}

# start_agents vmN...: start each agent (bounded); bail on failure.
start_agents() {
    local vm
    for vm in "$@"; do
        # Not in $(...): agent_start records the PID in this shell.
        if ! agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err"; then
            bail "agent $vm starts and answers status" "$(cat "$TOPO_DIR/$vm/start.err")"
        fi
    done
    for vm in "$@"; do
        agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up in $(topo_root "$vm")"
    done
}

# wait_for SECS CMD...: poll CMD every 0.2 s, at most SECS; true as soon
# as CMD succeeds, false if it never did.
wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

# --- DHCP on the underlay (e2e 47, 49) ---

# dhcp_client_private: what the real DHCP clients write (/etc/resolv.conf,
# /var/lib/dhcp, /var/lib/dhcpcd, /run/dhcpcd) goes to private copies under
# PRIV=$SANDBOX_TMP/priv, inside the sandbox's mount namespace.
dhcp_client_private() {
    PRIV=$SANDBOX_TMP/priv
    mkdir -p "$PRIV/lib-dhcp" "$PRIV/lib-dhcpcd" "$PRIV/run-dhcpcd" /run/dhcpcd || return 1
    echo "# e2e $TAP_PREFIX" >"$PRIV/resolv.conf"
    mount --bind "$PRIV/resolv.conf" /etc/resolv.conf &&
        mount --bind "$PRIV/lib-dhcp" /var/lib/dhcp &&
        mount --bind "$PRIV/lib-dhcpcd" /var/lib/dhcpcd &&
        mount --bind "$PRIV/run-dhcpcd" /run/dhcpcd
}

# underlay_dnsmasq MAC IP [DNSMASQ-ARG...]: dnsmasq on the underlay bridge
# leases IP to MAC (2 min, renewal after 10 s, rebinding after 20 s),
# logging to $DMLOG; DNSMASQ is its PID. dhcp_acks / dhcp_renewed count
# its answers to that client.
underlay_dnsmasq() {
    DHCP_MAC=$1 DHCP_IP=$2
    shift 2
    DMLOG=$TOPO_DIR/dnsmasq.log
    sandbox_bg "$TOPO_DIR/dnsmasq.out" ip netns exec "$TOPO_UL" dnsmasq --no-daemon --conf-file=/dev/null \
        --port=0 --interface=ulbr0 --bind-interfaces --log-dhcp --log-facility="$DMLOG" \
        --dhcp-range=10.99.3.100,10.99.3.150,2m --dhcp-host="$DHCP_MAC,$DHCP_IP" \
        --dhcp-option=option:T1,10 --dhcp-option=option:T2,20 \
        --dhcp-leasefile="$TOPO_DIR/dnsmasq.leases" "$@"
    # shellcheck disable=SC2034 # the tests stop it
    DNSMASQ=$SANDBOX_LAST_PID
}
# dhcp_acks: how many ACKs dnsmasq sent for the client's address.
dhcp_acks() { grep -c "DHCPACK(ulbr0) $DHCP_IP $DHCP_MAC" "$DMLOG" 2>/dev/null || true; }
# dhcp_renewed N: dnsmasq answered more than N requests of the client.
dhcp_renewed() { [[ "$(dhcp_acks)" -gt "$1" ]]; }

# eth0_snapshot vmN -4|-6 [KEY...]: vmN's eth0 addresses of the family
# (ip -j addr_info, without lifetimes and the keys KEY) and its routes of
# the family in every table (without expiry), as JSON with sorted keys and
# routes: equal before and after means restored exactly, lifetimes aside.
eth0_snapshot() {
    local vm=$1 fam=$2
    shift 2
    in_inst "$vm" ip -j "$fam" addr show dev eth0 |
        jq -S --args '[.[0].addr_info[] | del(.valid_life_time, .preferred_life_time) | delpaths($ARGS.positional | map([.]))]' "$@"
    in_inst "$vm" ip -j "$fam" route show table all |
        jq -S '[.[] | del(.expires)] | sort_by(tostring)'
}

# --- log lines as events: a time bound is measured between the lines the
# processes log (tracing's RFC 3339 UTC timestamps, one clock), not from
# when a test's poll happened to see an effect ---

# log_mark FILE: FILE's line count now (log_wait looks after it).
log_mark() { if [[ -e "$1" ]]; then wc -l <"$1"; else echo 0; fi; }

# log_wait FILE MARK ERE [SECS]: bounded wait (default 10 s) for a line
# after the first MARK lines of FILE that matches ERE (ANSI colours
# stripped); prints the first such line; non-zero if none came.
log_wait() {
    local file=$1 mark=$2 re=$3 secs=${4:-10} i line
    for ((i = 0; i < secs * 20; i++)); do
        line=$(tail -n +$((mark + 1)) "$file" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -E -m1 -- "$re" || true)
        [[ -n "$line" ]] && { printf '%s\n' "$line"; return 0; }
        sleep 0.05
    done
    return 1
}

# log_ms LINE: the timestamp LINE starts with, in milliseconds since the epoch.
log_ms() { date -d "${1%% *}" +%s%3N; }

# --- raw packet building (hex strings, no spaces) ---

hex_u16() { printf '%04x' "$1"; }
hex_ip() { local IFS=.; read -r a b c d <<<"$1"; printf '%02x%02x%02x%02x' "$a" "$b" "$c" "$d"; }
hex_mac() { printf '%s' "${1//:/}"; }

# ones-complement checksum of a hex string (even length)
hex_csum() {
    local h=$1 sum=0 i
    [[ $(( ${#h} % 4 )) -eq 2 ]] && h="${h}00"
    for ((i = 0; i < ${#h}; i += 4)); do
        sum=$((sum + 16#${h:i:4}))
    done
    while ((sum >> 16)); do sum=$(((sum & 0xffff) + (sum >> 16))); done
    printf '%04x' $((~sum & 0xffff))
}

# inner_icmp_frame DST_MAC SRC_MAC SRC_IP DST_IP: Ethernet + IPv4 + ICMP echo request.
inner_icmp_frame() {
    local icmp ip ipc
    icmp="0800""0000""4e53""0001""6e73782d6532652d696e6a656374"  # "nsx-e2e-inject"
    icmp="0800$(hex_csum "$icmp")${icmp:8}"
    ip="4500$(hex_u16 $((20 + ${#icmp} / 2)))""0000""4000""4001""0000$(hex_ip "$3")$(hex_ip "$4")"
    ipc=$(hex_csum "$ip")
    ip="${ip:0:20}${ipc}${ip:24}"
    printf '%s%s0800%s%s' "$(hex_mac "$1")" "$(hex_mac "$2")" "$ip" "$icmp"
}

# inner_tcp_frame DST_MAC SRC_MAC SRC_IP DST_IP SPORT DPORT [FLAGS]: Ethernet +
# IPv4 + TCP header (no options, no data; FLAGS a hex byte, default 02 = SYN,
# sequence number 1000), checksums filled.
inner_tcp_frame() {
    local tcp ip ipc
    tcp="$(hex_u16 "$5")$(hex_u16 "$6")""000003e8""00000000""50${7:-02}""faf0""0000""0000"
    tcp="${tcp:0:32}$(hex_csum "$(hex_ip "$3")$(hex_ip "$4")00060014$tcp")${tcp:36}"
    ip="4500""0028""0000""4000""4006""0000$(hex_ip "$3")$(hex_ip "$4")"
    ipc=$(hex_csum "$ip")
    ip="${ip:0:20}${ipc}${ip:24}"
    printf '%s%s0800%s%s' "$(hex_mac "$1")" "$(hex_mac "$2")" "$ip" "$tcp"
}

# geneve_hdr VER_OPTLEN_BYTE FLAGS_BYTE PROTO VNI: 8-byte base header (hex).
geneve_hdr() { printf '%s%s%s%06x00' "$1" "$2" "$3" "$(($4))"; }
# vmware_opt TEP_ID: the VMware option (class 0x0104, type 0x80, len 1 word).
vmware_opt() { printf '0104''80''01''%08x' "$1"; }

# udp_send NS DST_IP PORT HEX: one UDP datagram with payload HEX, sent from netns NS.
udp_send() {
    local ns=$1 dst=$2 port=$3 hex=$4 esc="" i
    for ((i = 0; i < ${#hex}; i += 2)); do esc+="\\x${hex:i:2}"; done
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 ip netns exec "$ns" bash -c 'printf "%b" "$1" >"/dev/udp/$2/$3"' _ "$esc" "$dst" "$port"
}
