#!/usr/bin/env bash
# Copied from ../shared/bench/paths.sh (the team's shared bench kit, 2026-11-22 baselines); adapted for scripts/bench.sh.
# paths.sh - the data paths measured by baseline.sh (sourced, needs topo.sh).
#
# Contract for every path NAME (the agent hook uses the same one):
#   path_NAME_up MTU     build the path on top of a fresh `topo_up 2 MTU`.
#                        Must set: CLI_NS SRV_NS SRV_IP (client ns, server ns,
#                        server address) and PATH_INNER_MTU, PATH_DESC.
#                        May set WIRE_PORT (UDP port to check on the underlay)
#                        and WIRE_DECODE (tshark -d argument, if not standard).
#   path_NAME_down       optional; topo_down afterwards kills every process
#                        left in our namespaces and deletes them anyway.
# shellcheck disable=SC2034  # CLI_NS, SRV_NS, ... are read by baseline.sh
# A "+nooff" suffix on a path name (e.g. raw+nooff) additionally switches off
# tx checksum/TSO/GSO/GRO on every veth in the vm/ov namespaces.

GVB_VNI=${GVB_VNI:-100}
GVB_OV_NET=${GVB_OV_NET:-192.168.100}
# Geneve option carried by the OVS path: class 0x0104, type 0x80, 4 data bytes.
GENEVE_OPT_CLASS=${GENEVE_OPT_CLASS:-0x0104}
GENEVE_OPT_TYPE=${GENEVE_OPT_TYPE:-0x80}
GENEVE_OPT_VALUE_BASE=${GENEVE_OPT_VALUE_BASE:-0x0a0b0c0}   # + vm index

_peer() { echo $((3 - $1)); }   # the other vm of the pair (1 <-> 2)

# Switch off offloads on every veth in our vm/ov namespaces (the "+nooff" variant).
offloads_off() {
    local ns dev
    for ns in $(topo_list_ns); do
        case "$ns" in "$(ul_ns)") continue ;; esac
        for dev in $(ip -n "$ns" -o link show type veth | awk -F': ' '{sub(/@.*/,"",$2); print $2}'); do
            ip netns exec "$ns" ethtool -K "$dev" tx off gso off gro off >/dev/null 2>&1
        done
    done
}

# offload_summary NS IP -> "dev=eth0 tx-csum=on tso=on gso=on gro=off" for the
# interface that NS uses to reach IP.
offload_summary() {
    local ns=$1 ip=$2 dev
    dev=$(ip -n "$ns" route get "$ip" 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
    [ -n "$dev" ] || { echo "dev=?"; return; }
    ip netns exec "$ns" ethtool -k "$dev" 2>/dev/null | awk -v d="$dev" '
        /^tx-checksumming:/ {c=$2} /^[ \t]+tx-tcp-segmentation:/ {t=$2}
        /^generic-segmentation-offload:/ {g=$2} /^generic-receive-offload:/ {r=$2}
        END {printf "dev=%s tx-csum=%s tso=%s gso=%s gro=%s", d, c, t, g, r}'
}

# ---- (a) raw underlay: vm1 eth0 -> br0 -> vm2 eth0 --------------------------
path_raw_up() {
    CLI_NS=$(vm_ns 1); SRV_NS=$(vm_ns 2); SRV_IP=$(ul_ip 2)
    PATH_INNER_MTU=$1; PATH_DESC="veth -> bridge -> veth, no encapsulation"
}

# ---- (b) kernel VXLAN, overlay address on vxlan0 in the vm namespaces -------
path_vxlan_up() {
    local mtu=$1 i vm
    PATH_INNER_MTU=$((mtu - 50))
    for i in 1 2; do
        vm=$(vm_ns "$i")
        ip -n "$vm" link add vxlan0 type vxlan id "$GVB_VNI" local "$(ul_ip "$i")" \
            remote "$(ul_ip "$(_peer "$i")")" dstport 4789 dev eth0 || return 1
        ip -n "$vm" link set vxlan0 mtu "$PATH_INNER_MTU" up
        ip -n "$vm" addr add "$GVB_OV_NET.$i/24" dev vxlan0
    done
    CLI_NS=$(vm_ns 1); SRV_NS=$(vm_ns 2); SRV_IP=$GVB_OV_NET.2
    PATH_DESC="kernel vxlan0 (VNI $GVB_VNI, udp 4789) in the vm ns; inner MTU $PATH_INNER_MTU"
    WIRE_PORT=4789
}

# ---- (b') kernel VXLAN behind a veth, as a VM NIC would be -------------------
# ovN:eth0 -> veth -> vmN:ovl0 -> Linux bridge -> vxlan0 -> vmN:eth0 (underlay).
# Same hop count as the OVS path and as an agent that sits between a VM's NIC
# and the underlay.
path_vxlan_nested_up() {
    local mtu=$1 i vm ov
    PATH_INNER_MTU=$((mtu - 50))
    for i in 1 2; do
        vm=$(vm_ns "$i"); ov=$(ov_ns "$i")
        topo_ovns "$i" "$PATH_INNER_MTU" || return 1
        ip -n "$vm" link add vxlan0 type vxlan id "$GVB_VNI" local "$(ul_ip "$i")" \
            remote "$(ul_ip "$(_peer "$i")")" dstport 4789 dev eth0 || return 1
        ip -n "$vm" link set vxlan0 mtu "$PATH_INNER_MTU" up
        ip -n "$vm" link add br-ov type bridge stp_state 0 forward_delay 0
        ip -n "$vm" link set vxlan0 master br-ov
        ip -n "$vm" link set ovl0 master br-ov
        ip -n "$vm" link set br-ov up
        ip -n "$ov" addr add "$GVB_OV_NET.$i/24" dev eth0
    done
    CLI_NS=$(ov_ns 1); SRV_NS=$(ov_ns 2); SRV_IP=$GVB_OV_NET.2
    PATH_DESC="ov ns veth -> bridge -> kernel vxlan0 -> underlay; inner MTU $PATH_INNER_MTU"
    WIRE_PORT=4789
}

# ---- (c) OVS userspace datapath (netdev) with a Geneve tunnel port ---------
# One ovsdb-server + ovs-vswitchd per vm namespace, each with its own run dir,
# db file, db socket and unixctl socket under $GVB_STATE/ovs-vmN.
#   br-phy (netdev): eth0 (underlay veth, via AF_PACKET) + internal port br-phy
#                    that holds the underlay IP (OVS native tunnelling routes
#                    and ARPs through it).
#   br-int (netdev): gnv0 (geneve, remote = peer) + overlay port, with two
#                    OpenFlow rules that set / match the Geneve option
#                    {class 0x0104, type 0x80, 4 bytes} via tun_metadata0.
# OVS_OVERLAY=veth (default): overlay port is vmN:ovl0, a veth into ovN.
# OVS_OVERLAY=internal:       overlay port is an OVS internal (tap) port
#                              "ovl0" holding the overlay IP in vmN itself.
OVS_OVERLAY=${OVS_OVERLAY:-veth}
OVS_SCHEMA=${OVS_SCHEMA:-}
OVS_PIDS=()

_ovs_dir()    { echo "$GVB_STATE/ovs-vm$1"; }
_ovs_vsctl()  { local i=$1; shift; ovs-vsctl --db="unix:$(_ovs_dir "$i")/db.sock" --timeout=10 "$@"; }
_ovs_ofctl()  { local i=$1 cmd=$2 br=$3; shift 3; ovs-ofctl "$cmd" "unix:$(_ovs_dir "$i")/$br.mgmt" "$@"; }
_ovs_appctl() { local i=$1; shift; ovs-appctl -t "$(_ovs_dir "$i")/ovs-vswitchd.ctl" "$@"; }

_ovs_find_schema() {
    local f
    [ -n "$OVS_SCHEMA" ] && { echo "$OVS_SCHEMA"; return; }
    for f in /usr/share/openvswitch/vswitch.ovsschema /usr/local/share/openvswitch/vswitch.ovsschema; do
        [ -r "$f" ] && { echo "$f"; return; }
    done
    echo "paths: vswitch.ovsschema not found (set OVS_SCHEMA)" >&2; return 1
}

_wait_file() { local f=$1 i; for i in $(seq 1 100); do [ -e "$f" ] && return 0; sleep 0.1; done; echo "paths: timeout waiting for $f" >&2; return 1; }

# Start ovsdb-server + ovs-vswitchd for vm I (as children of this shell, not
# daemonised, so they are reaped by path_ovs_geneve_down).
_ovs_start() {
    local i=$1 d vm schema
    d=$(_ovs_dir "$i"); vm=$(vm_ns "$i"); schema=$(_ovs_find_schema) || return 1
    rm -rf "$d"; mkdir -p "$d"
    ovsdb-tool create "$d/conf.db" "$schema" || return 1
    OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d ip netns exec "$vm" ovsdb-server "$d/conf.db" \
        --remote="punix:$d/db.sock" --unixctl="$d/ovsdb-server.ctl" \
        --log-file="$d/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
    OVS_PIDS+=($!)
    _wait_file "$d/db.sock" || return 1
    _ovs_vsctl "$i" --no-wait init || return 1
    OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d ip netns exec "$vm" ovs-vswitchd "unix:$d/db.sock" \
        --unixctl="$d/ovs-vswitchd.ctl" --log-file="$d/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 &
    OVS_PIDS+=($!)
    _wait_file "$d/ovs-vswitchd.ctl"
}

path_ovs_geneve_up() {
    local mtu=$1 i j vm ov
    PATH_INNER_MTU=$((mtu - 58))   # 20 IP + 8 UDP + 8 Geneve + 8 option + 14 inner Ethernet
    for i in 1 2; do
        j=$(_peer "$i"); vm=$(vm_ns "$i"); ov=$(ov_ns "$i")
        _ovs_start "$i" || return 1
        # Underlay bridge: move the underlay IP from eth0 to the br-phy internal port.
        _ovs_vsctl "$i" add-br br-phy -- set bridge br-phy datapath_type=netdev \
            -- set interface br-phy mtu_request="$mtu" -- add-port br-phy eth0 || return 1
        ip -n "$vm" addr flush dev eth0
        ip -n "$vm" addr add "$(ul_ip "$i")/24" dev br-phy
        ip -n "$vm" link set br-phy up
        # Overlay bridge: geneve port + overlay port, only our two flows.
        _ovs_vsctl "$i" add-br br-int -- set bridge br-int datapath_type=netdev fail_mode=secure \
            -- add-port br-int gnv0 -- set interface gnv0 type=geneve \
               options:remote_ip="$(ul_ip "$j")" options:key="$GVB_VNI" || return 1
        if [ "$OVS_OVERLAY" = internal ]; then
            _ovs_vsctl "$i" add-port br-int ovl0 -- set interface ovl0 type=internal \
                mtu_request="$PATH_INNER_MTU" || return 1
            ip -n "$vm" addr add "$GVB_OV_NET.$i/24" dev ovl0
            ip -n "$vm" link set ovl0 up
        else
            topo_ovns "$i" "$PATH_INNER_MTU" || return 1
            ip -n "$ov" addr add "$GVB_OV_NET.$i/24" dev eth0
            # Required: OVS 3.1 reads the veth through AF_PACKET without a vnet
            # header, so TSO/GSO super-frames and CHECKSUM_PARTIAL packets from
            # the overlay stack would be truncated/dropped. Segment + checksum
            # in the overlay stack instead (what a plain userspace agent needs too).
            ip netns exec "$ov" ethtool -K eth0 tx off >/dev/null
            _ovs_vsctl "$i" add-port br-int ovl0 || return 1
        fi
        _ovs_ofctl "$i" add-tlv-map br-int \
            "{class=$GENEVE_OPT_CLASS,type=$GENEVE_OPT_TYPE,len=4}->tun_metadata0" || return 1
        _ovs_ofctl "$i" del-flows br-int
        _ovs_ofctl "$i" add-flow br-int \
            "priority=10,in_port=ovl0,actions=set_field:${GENEVE_OPT_VALUE_BASE}${i}->tun_metadata0,output:gnv0" || return 1
        # Only accept packets that carry the peer's option value.
        _ovs_ofctl "$i" add-flow br-int \
            "priority=10,in_port=gnv0,tun_metadata0=${GENEVE_OPT_VALUE_BASE}${j},actions=output:ovl0" || return 1
    done
    if [ "$OVS_OVERLAY" = internal ]; then
        CLI_NS=$(vm_ns 1); SRV_NS=$(vm_ns 2)
    else
        CLI_NS=$(ov_ns 1); SRV_NS=$(ov_ns 2)
    fi
    SRV_IP=$GVB_OV_NET.2
    PATH_DESC="OVS $(ovs-vswitchd --version | awk 'NR==1{print $NF}') netdev datapath, geneve (udp 6081, VNI $GVB_VNI, opt $GENEVE_OPT_CLASS/$GENEVE_OPT_TYPE len 4), overlay port=$OVS_OVERLAY; inner MTU $PATH_INNER_MTU"
    WIRE_PORT=6081
}

# Extra numbers merged into the result: AF_PACKET socket drops of each
# ovs-vswitchd (ss skmem "d" counter) and its CPU seconds since start.
path_ovs_geneve_stats() {
    local i pid drops cpu out=""
    for i in 1 2; do
        pid=$(ip netns pids "$(vm_ns "$i")" | while read -r p; do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ovs-vswitchd ] && echo "$p"; done | head -1)
        drops=$(ip netns exec "$(vm_ns "$i")" ss -0 -a -m -p 2>/dev/null | grep -A1 'ovs-vswitchd' |
            grep -o 'd[0-9][0-9]*)' | tr -dc '0-9\n' | awk '{s+=$1} END{print s+0}')
        cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$pid/stat" 2>/dev/null)
        out="$out${out:+,}\"vm$i\":{\"af_packet_drops\":${drops:-null},\"vswitchd_cpu_s\":${cpu:-null}}"
    done
    echo "{$out}"
}
path_ovs_geneve_int_stats() { path_ovs_geneve_stats; }

path_ovs_geneve_down() {
    local i pid
    for i in 1 2; do
        [ -S "$(_ovs_dir "$i")/ovs-vswitchd.ctl" ] || continue
        # Keep a copy of what the datapath did, then stop gracefully.
        { _ovs_appctl "$i" dpctl/show -s; _ovs_appctl "$i" coverage/show; } \
            >"$(_ovs_dir "$i")/stats.txt" 2>&1
        timeout 5 ovs-appctl -t "$(_ovs_dir "$i")/ovs-vswitchd.ctl" exit >/dev/null 2>&1
        timeout 5 ovs-appctl -t "$(_ovs_dir "$i")/ovsdb-server.ctl" exit >/dev/null 2>&1
    done
    for pid in "${OVS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    done
    OVS_PIDS=()
}

# Same OVS path with an internal (tap) port as the overlay interface.
path_ovs_geneve_int_up()   { OVS_OVERLAY=internal path_ovs_geneve_up "$@"; }
path_ovs_geneve_int_down() { path_ovs_geneve_down; }

# Same OVS path with eth0 and ovl0 opened through AF_XDP (generic/skb mode,
# polled by the main thread: afxdp-nonpmd) instead of AF_PACKET. OVS's UMEM
# frames are 4 KiB, so jumbo frames cannot pass: expect ~0 Gbps at MTU 9001.
path_ovs_geneve_afxdp_up() {
    local i
    path_ovs_geneve_up "$@" || return 1
    for i in 1 2; do
        _ovs_vsctl "$i" set interface eth0 type=afxdp-nonpmd options:xdp-mode=generic \
            -- set interface ovl0 type=afxdp-nonpmd options:xdp-mode=generic || return 1
    done
    PATH_DESC="${PATH_DESC/overlay port=veth/overlay port=veth, eth0+ovl0 via AF_XDP generic (afxdp-nonpmd)}"
}
path_ovs_geneve_afxdp_down()  { path_ovs_geneve_down; }
path_ovs_geneve_afxdp_stats() { path_ovs_geneve_stats; }
