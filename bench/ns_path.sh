# shellcheck shell=bash disable=SC2034  # sourced; sets globals read by bench/run.sh
# ns_path.sh - the north-south paths (issue 14): an overlay instance sending
# to an "internet" host beyond an edge. Same path contract as bench/paths.sh;
# needs topo.sh, paths.sh and agent_path.sh sourced first.
#
#   north_south  ours: vm1 runs nsx-agent with a tier-1 and an [edge] link;
#                vm2 runs nsx-agent in the edge role ([host] uplink = "eth1"
#                and a [tier0]); the instance's traffic for 203.0.113.1 goes
#                over Geneve (transit VNI) to the edge, whose tier-0 routes it
#                out of eth1, a veth into ${GVB_PREFIX}inet:
#
#     gvb-root1:nsx-eth0 (192.168.100.11) -> nsx-agent (vm1) -> eth0 -- gvb-ul:br0 --
#       eth0 -> nsx-agent edge (vm2) -> eth1 -- veth -- gvb-inet:uplink (203.0.113.1, iperf3 -s)
#
#   vxlan_masq   the kernel reference, same hop count: the instance side as
#                vxlan_nested's (ov1 veth -> bridge -> vxlan0 in vm1); vm2 is
#                the router namespace: vxlan0 (192.168.100.1, the instance's
#                gateway), IP forwarding, eth1 (203.0.113.2) into gvb-inet,
#                nftables masquerade on eth1 (no return route in gvb-inet: the
#                internet host only ever sees 203.0.113.2).
#
# SNAT in the edge: NS_RETURN_ROUTE=1 (default) adds, in gvb-inet, a route to
# the overlay subnet via the edge's uplink address, so the path works whether
# or not the edge translates (with SNAT the internet host answers the uplink
# address, which is on-link, and the route is never used). NS_RETURN_ROUTE=0
# leaves it out: north_south then only works with SNAT. PATH_DESC records the
# source address the internet host saw (captured on gvb-inet:uplink).

NS_INET_NET=${NS_INET_NET:-203.0.113}   # uplink /24: .1 the internet host, .2 the edge / router
NS_RETURN_ROUTE=${NS_RETURN_ROUTE:-1}
NS_T0_MAC=02:50:56:00:0f:00
NS_T1_MAC=02:50:56:56:44:52
NS_TRANSIT_VNI=0xfffff0

inet_ns() { echo "${GVB_PREFIX}inet"; }

# ns_inet_up I MTU: the internet namespace, joined to vm I by a veth
# (vmI:eth1 <-> inet:uplink, NS_INET_NET.1/24 on uplink), both at MTU.
ns_inet_up() {
    local i=$1 mtu=$2 vm inet
    vm=$(vm_ns "$i"); inet=$(inet_ns)
    _ns_add "$inet" || return 1
    ip -n "$vm" link add eth1 mtu "$mtu" type veth peer name uplink netns "$inet" mtu "$mtu" || return 1
    ip -n "$inet" addr add "$NS_INET_NET.1/24" dev uplink
    ip -n "$inet" link set uplink up
    ip -n "$vm" link set eth1 up
}

# ns_seen_source CLI_NS: the source address of an ICMP echo from CLI_NS as
# the internet host receives it ("?" without dumpcap/tshark or packets).
ns_seen_source() {
    local cns=$1 pcap=$GVB_STATE/uplink.pcap pid src
    { command -v dumpcap && command -v tshark; } >/dev/null || { echo "?"; return; }
    rm -f "$pcap"
    ip netns exec "$(inet_ns)" timeout 8 dumpcap -q -P -i uplink -c 1 -w "$pcap" \
        -f "icmp[icmptype] == icmp-echo" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    timeout 10 ip netns exec "$cns" ping -n -c 3 -i 0.2 -W 1 -q "$NS_INET_NET.1" >/dev/null 2>&1
    wait "$pid" 2>/dev/null
    src=$(tshark -r "$pcap" -T fields -e ip.src 2>/dev/null | head -n 1)
    echo "${src:-?}"
}

# ns_source_note SRC: PATH_DESC's words on what the internet host saw.
ns_source_note() {
    case "$1" in
        "$NS_INET_NET".*) echo "internet host sees $1 (SNAT)" ;;
        "?") echo "internet host's view of the source not captured" ;;
        *) if [ "$NS_RETURN_ROUTE" = 1 ]; then
               echo "internet host sees $1 (no SNAT; return route via $NS_INET_NET.2)"
           else
               echo "internet host sees $1 (no SNAT and NS_RETURN_ROUTE=0: no way back)"
           fi ;;
    esac
}

# ---- north_south: nsx-agent instance -> nsx-agent edge -> uplink ------------
path_north_south_up() {
    local mtu=$1 mac1 src
    PATH_INNER_MTU=$((mtu - AGENT_OVERHEAD))
    AGENT_PIDS=()
    ns_inet_up 2 "$mtu" || return 1
    mac1=$(agent_eth0_mac 1) || return 1
    agent_dir 1; agent_dir 2
    # vm1: a tier-1 over ls-web, its port, the link to the edge.
    {
        agent_config_head 1
        ns_tier1
        agent_port 1
        cat <<EOF

[edge]
tep_ip = "$(ul_ip 2)"
tep_id = 2
transit_vni = $NS_TRANSIT_VNI
mac = "$NS_T0_MAC"
tier1s = ["t1"]
EOF
    } >"$(agent_cfg 1)"
    # vm2: the edge: no port; vm1's port; the tier-0 over t1 on eth1.
    {
        agent_config_head 2 'uplink = "eth1"'
        ns_tier1
        agent_remote_port 1 "$mac1"
        cat <<EOF

[tier0]
name = "t0"
mac = "$NS_T0_MAC"
transit_vni = $NS_TRANSIT_VNI
tier1s = ["t1"]

[tier0.uplink]
address = "$NS_INET_NET.2/24"
gateway = "$NS_INET_NET.1"
mtu = $mtu
EOF
    } >"$(agent_cfg 2)"
    agents_start 1 2 || return 1
    if [ "$NS_RETURN_ROUTE" = 1 ]; then
        ip -n "$(inet_ns)" route add "$AGENT_OV_NET.0/24" via "$NS_INET_NET.2" || return 1
    fi
    CLI_NS=$(agent_root_ns 1); SRV_NS=$(inet_ns); SRV_IP=$NS_INET_NET.1
    src=$(ns_seen_source "$CLI_NS")
    PATH_DESC="nsx-agent $(agent_version) instance (vm1, tier-1 t1, tx_offload=$AGENT_TX_OFFLOAD) -> geneve transit VNI $NS_TRANSIT_VNI -> nsx-agent edge (vm2, tier-0 t0, uplink eth1 MTU $mtu) -> veth -> internet ns; inner MTU $PATH_INNER_MTU; $(ns_source_note "$src")"
    WIRE_PORT=6081
}
path_north_south_down()  { path_agent_down; }
path_north_south_stats() {
    jq -c --argjson up "$(ns_uplink_rx)" '. + {inet_uplink_rx: $up}' <<<"$(path_agent_stats)"
}

# ns_uplink_rx: what the internet host's `uplink` received over the path's
# lifetime, as the kernel counts it (one packet per skb: avg_bytes above the
# MTU means the edge/router handed over GSO super-frames, at or below it
# means one frame per segment, each one crossing the internet host's TCP
# receive path on its own, since a veth does no GRO by default).
ns_uplink_rx() {
    ip -n "$(inet_ns)" -j -s link show uplink 2>/dev/null | jq -c '.[0].stats64.rx
        | {packets, bytes, avg_bytes: (if .packets > 0 then (.bytes / .packets | floor) else null end)}' 2>/dev/null ||
        echo null
}

ns_tier1() {
    cat <<EOF

[[routers]]
name = "t1"
mac = "$NS_T1_MAC"
switches = ["ls-web"]
EOF
}

# ---- vxlan_masq: kernel VXLAN -> router ns (nftables masquerade) -> uplink ---
path_vxlan_masq_up() {
    local mtu=$1 vm1 vm2 ov src
    vm1=$(vm_ns 1); vm2=$(vm_ns 2); ov=$(ov_ns 1)
    PATH_INNER_MTU=$((mtu - 50))
    # The instance: as vxlan_nested's vm1.
    topo_ovns 1 "$PATH_INNER_MTU" || return 1
    ip -n "$vm1" link add vxlan0 type vxlan id "$GVB_VNI" local "$(ul_ip 1)" \
        remote "$(ul_ip 2)" dstport 4789 dev eth0 || return 1
    ip -n "$vm1" link set vxlan0 mtu "$PATH_INNER_MTU" up
    ip -n "$vm1" link add br-ov type bridge stp_state 0 forward_delay 0
    ip -n "$vm1" link set vxlan0 master br-ov
    ip -n "$vm1" link set ovl0 master br-ov
    ip -n "$vm1" link set br-ov up
    ip -n "$ov" addr add "$GVB_OV_NET.11/24" dev eth0
    ip -n "$ov" route add default via "$GVB_OV_NET.1" || return 1
    # The router: the overlay's gateway on vxlan0, the uplink on eth1.
    ip -n "$vm2" link add vxlan0 type vxlan id "$GVB_VNI" local "$(ul_ip 2)" \
        remote "$(ul_ip 1)" dstport 4789 dev eth0 || return 1
    ip -n "$vm2" link set vxlan0 mtu "$PATH_INNER_MTU" up
    ip -n "$vm2" addr add "$GVB_OV_NET.1/24" dev vxlan0
    ns_inet_up 2 "$mtu" || return 1
    ip -n "$vm2" addr add "$NS_INET_NET.2/24" dev eth1
    ip netns exec "$vm2" sysctl -qw net.ipv4.ip_forward=1 || return 1
    ip netns exec "$vm2" nft -f - <<EOF || { echo "vxlan_masq: nft refused the masquerade table" >&2; return 1; }
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth1" counter masquerade
    }
}
EOF
    CLI_NS=$ov; SRV_NS=$(inet_ns); SRV_IP=$NS_INET_NET.1
    src=$(ns_seen_source "$CLI_NS")
    PATH_DESC="ov ns veth -> bridge -> kernel vxlan0 -> underlay -> router ns vxlan0 -> ip_forward -> nftables masquerade on eth1 -> veth -> internet ns (no return route); inner MTU $PATH_INNER_MTU; $(ns_source_note "$src")"
    WIRE_PORT=4789
}

# The masquerade rule's counter (NAT rules see the first packet of each
# connection only) and the router's conntrack entry count.
path_vxlan_masq_stats() {
    local pk ct
    pk=$(ip netns exec "$(vm_ns 2)" nft -j list table ip nat 2>/dev/null |
        jq '[.nftables[] | .rule? // empty | .expr[] | .counter? // empty | .packets] | add // null' 2>/dev/null)
    ct=$(ip netns exec "$(vm_ns 2)" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null)
    echo "{\"router\":{\"masquerade_rule_packets\":${pk:-null},\"conntrack_entries\":${ct:-null}},\"inet_uplink_rx\":$(ns_uplink_rx)}"
}
