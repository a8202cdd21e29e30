#!/usr/bin/env bash
# tests/e2e/52_edge_underlay.sh -- e2e test 52: the edge's downlink. vm1
# (ls-web, 192.168.100.3) and the edge vm9 (underlay 10.99.3.19, uplink
# eth1) run agents; a plain host 10.99.3.50 on the underlay bridge runs
# none (a namespace with a veth on ulbr0) and serves HTTP (socat) that
# answers with the address it sees, as vm1 does on 192.168.100.3:8081.
#   * underlay_snat = false: vm1 pings and curls the host, which sees
#     192.168.100.3 (its requests: from the bridge's MAC, TTL 62: tier-1 and
#     tier-0); with a route to 192.168.100.0/24 via 10.99.3.19 the host
#     pings and curls vm1, which sees 10.99.3.50;
#   * the downlink's BPF filter: the host pinging the edge's own address
#     (the kernel answers) and vm1's Geneve to the edge never reach the
#     datapath's socket;
#   * reloaded with underlay_snat on (the default; the filter follows the
#     tables): the host's connection to vm1's overlay address does not get
#     through and is counted (downlink_policy); the kernel keeps out of
#     the downlink NAT's ports (nftables): TCP to 10.99.3.19:62000 gets no
#     reset, to :60999 it does; the table goes with the agent (SIGTERM);
#   * with underlay_snat on, vm1's pings and curl reach the host from
#     10.99.3.19 (the downlink's NAT, ports 61000-65535), and the answers
#     come back (the kernel, which would reset the TCP ones, keeps out).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 52 "$@"
command -v curl >/dev/null || bail "curl is required"
command -v nft >/dev/null || bail "nft is required"

seed_topology t52 1500 1
topo_instance vm9
topo_edge vm9 203.0.113.2/24 203.0.113.1
topo_build
topo_edge_build
EDGE_CFG=$(topo_config_path vm9)
EDGE_UL=$(topo_underlay_ip vm9)
EDGE_MAC=$(topo_mac vm9)
VM1_IP=$(topo_overlay_ip vm1)
HOST=10.99.3.50
HOST_NS=t52-host
TABLE=nsx-agent-edge-eth1
# SNAT to the underlay off to start with (a key of [tier0]).
sed -i '/^transit_vni = 0xfffff0$/a underlay_snat = false' "$EDGE_CFG"
grep -q '^underlay_snat = false$' "$EDGE_CFG" || bail "edge config has underlay_snat = false"

# The plain host: on the underlay bridge, no agent, a route to the overlay
# via the edge's underlay address.
ip netns add "$HOST_NS"
sandbox_track_netns "$HOST_NS"
in_host() { ip netns exec "$HOST_NS" "$@"; }
in_host ip link set lo up
in_ul ip link add ulport-host type veth peer name eth0 netns "$HOST_NS"
in_ul ip link set ulport-host mtu 1500 master ulbr0 up
in_ul ethtool -K ulport-host tx off >/dev/null
in_host ip link set eth0 address 02:00:00:00:03:50 mtu 1500 up
in_host ethtool -K eth0 tx off >/dev/null
in_host ip addr add "$HOST/24" dev eth0
in_host ip route add 192.168.100.0/24 via "$EDGE_UL"

# peer.sh: a one-shot HTTP answer with the client's address as the body
# (socat EXEC's it per connection), logged.
PEER=$TOPO_DIR/peer.sh
cat >"$PEER" <<'EOF'
#!/usr/bin/env bash
while IFS= read -r l && [[ "$l" != $'\r' && -n "$l" ]]; do :; done
printf '%s %s\n' "$SOCAT_PEERADDR" "$SOCAT_PEERPORT" >>"$PEER_LOG"
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s\n' "$SOCAT_PEERADDR"
EOF
chmod +x "$PEER"
# serve NAME NETNS ADDR PORT: that server in NETNS, peers in $TOPO_DIR/NAME.peers.
serve() {
    sandbox_bg "$TOPO_DIR/$1.out" env PEER_LOG="$TOPO_DIR/$1.peers" \
        ip netns exec "$2" socat "TCP-LISTEN:$4,bind=$3,reuseaddr,fork" "EXEC:$PEER"
}
serve host "$HOST_NS" "$HOST" 8080

start_agents vm1
agent_start vm9 2>"$TOPO_DIR/vm9.start" || bail "the edge starts" "$(cat "$TOPO_DIR/vm9.start")"
serve vm1 "$(topo_root vm1)" "$VM1_IP" 8081

# edge_dl JQ: a number from the edge's downlink counters.
edge_dl() { agent_counter vm9 "$1"; }
# settled JQ: the edge's counter JQ once two reads more than a publication
# period (200 ms) apart agree (bounded, 10 s): everything sent before has
# been counted.
settled() {
    local a b i
    a=$(edge_dl "$1") || a=""
    for ((i = 0; i < 30; i++)); do
        sleep 0.3
        b=$(edge_dl "$1") || b=""
        [[ -n "$b" && "$a" == "$b" ]] && break
        a=$b
    done
    printf '%s\n' "$b"
}

# --- underlay_snat = false: the host sees the instance, and reaches it.
overlay_wait_ping vm1 "$HOST" || bail "vm1 pings the underlay host $HOST"
cap_start_in h "$HOST_NS" eth0 icmp || bail "capture on the host starts"
out=$(overlay_ping vm1 "$HOST" -c 3 -i 0.2 -W 2 2>&1) || true
pcap=$(cap_stop h)
check "vm1's 3 pings to $HOST are answered" grep -q ' 0% packet loss' <<<"$out"
lines=$(cap_fields "$pcap" "icmp.type==8" ip.src ip.ttl eth.src)
n=$(grep -c . <<<"$lines" || true)
bad=$(grep -v -E "^$VM1_IP	62	$EDGE_MAC$" <<<"$lines" || true)
if [[ $n -ge 3 && -z "$bad" ]]; then
    ok "the host receives the requests from $VM1_IP, TTL 62, from the edge's bridge ($EDGE_MAC)"
else
    not_ok "the host receives the requests from $VM1_IP, TTL 62, from the edge's bridge ($EDGE_MAC)" \
        "ip.src ip.ttl eth.src" "$lines"
fi
seen=$(in_overlay vm1 curl -s -m 5 "http://$HOST:8080/off" 2>&1) || seen="curl failed: $seen"
check_eq "vm1 curls the host, which sees the instance's overlay address" "$VM1_IP" "$seen"
tx=$(edge_dl .downlink.tx_packets) || tx=0
if [[ $tx -ge 4 ]]; then
    ok "the edge counts its downlink frames ($tx sent)"
else
    not_ok "the edge counts its downlink frames" "downlink.tx_packets = $tx"
fi
check "the host pings vm1's overlay address via the edge" \
    wait_for 10 in_host ping -c 1 -W 1 -q "$VM1_IP"
seen=$(in_host curl -s -m 5 "http://$VM1_IP:8081/off" 2>&1) || seen="curl failed: $seen"
check_eq "the host curls vm1, which sees the host's address" "$HOST" "$seen"

# growth BEFORE AFTER: AFTER - BEFORE if both are counter values, else nothing.
growth() { if [[ "$1" =~ ^[0-9]+$ && "$2" =~ ^[0-9]+$ ]]; then echo $(($2 - $1)); fi; }

# --- the filter: the host's own traffic and Geneve never reach the socket.
rx0=$(settled .downlink.rx_packets)
layers0=$(agent_ctl vm9 counters | jq -c '[.layers[] | select(.name == "downlink-in")], (.drops | with_entries(select(.value > 0)))')
check "the host pings the edge's underlay address 20 times (its kernel answers)" \
    in_host ping -c 20 -i 0.05 -W 1 -q "$EDGE_UL"
check "vm1 pings the uplink's gateway 20 times (Geneve with the edge)" \
    overlay_ping vm1 203.0.113.1 -c 20 -i 0.05 -W 1 -q
# udp_to_nat_ports: 5 datagrams from the host to the edge's underlay
# address, to a port of the downlink's NAT.
udp_to_nat_ports() {
    local i
    for ((i = 0; i < 5; i++)); do
        in_host socat -u - "UDP:$EDGE_UL:$((62000 + i))" <<<"x" || true
    done
}
udp_to_nat_ports
rx1=$(settled .downlink.rx_packets)
d=$(growth "$rx0" "$rx1")
if [[ -z "$d" ]]; then
    not_ok "the host's own traffic and Geneve are filtered out of the downlink socket" \
        "downlink.rx_packets not read: before '$rx0', after '$rx1'"
elif [[ $d -lt 5 ]]; then
    ok "the host's pings to the edge, vm1's Geneve and UDP to the NAT's ports (SNAT off): $d frame(s) on the downlink socket"
else
    not_ok "the host's own traffic and Geneve are filtered out of the downlink socket" \
        "downlink.rx_packets grew by $d (before $rx0, after $rx1)" "before: $layers0" \
        "after: $(agent_ctl vm9 counters | jq -c '[.layers[] | select(.name == "downlink-in")], (.drops | with_entries(select(.value > 0)))')"
fi

# --- underlay_snat on (the default): reload, the filter follows.
sed -i -e '/^underlay_snat = false$/d' -e 's/^version = 1$/version = 2/' "$EDGE_CFG"
kill -HUP "$(agent_pid vm9)"
counters_wait vm9 '.config_version == 2' 10 || bail "the edge's datapath runs version 2"
rx0=$(settled .downlink.rx_packets)
udp_to_nat_ports
rx1=$(settled .downlink.rx_packets)
d=$(growth "$rx0" "$rx1")
if [[ -n "$d" && $d -ge 5 ]]; then
    ok "the filter follows the tables: with underlay_snat UDP to the NAT's ports reaches the socket ($d frames)"
else
    not_ok "the filter follows the tables: with underlay_snat UDP to the NAT's ports reaches the socket" \
        "downlink.rx_packets grew by ${d:-?} (before '$rx0', after '$rx1')"
fi
cap_start_in h2 "$HOST_NS" eth0 icmp || bail "capture on the host starts"
check "with underlay_snat vm1 pings the host" overlay_wait_ping vm1 "$HOST"
pcap=$(cap_stop h2)
lines=$(cap_fields "$pcap" "icmp.type==8" ip.src | sort -u)
check_eq "the host sees the pings from the edge's underlay address" "$EDGE_UL" "$lines"
seen=$(in_overlay vm1 curl -s -m 5 "http://$HOST:8080/on" 2>&1) || seen="curl failed: $seen"
check_eq "vm1 curls the host, which sees the edge's underlay address" "$EDGE_UL" "$seen"
port=$(tail -n 1 "$TOPO_DIR/host.peers" | cut -d ' ' -f 2)
if [[ "$port" =~ ^[0-9]+$ && $port -ge 61000 && $port -le 65535 ]]; then
    ok "from a port of the downlink NAT's range 61000-65535 ($port)"
else
    not_ok "from a port of the downlink NAT's range 61000-65535" "host.peers: $(cat "$TOPO_DIR/host.peers")"
fi
pol0=$(edge_dl .drops.downlink_policy) || pol0=""
seen=$(in_host curl -s -m 3 "http://$VM1_IP:8081/on" 2>&1) && st=0 || st=$?
if [[ $st -ne 0 ]]; then
    ok "with underlay_snat the host cannot open a connection to vm1 (curl: exit $st)"
else
    not_ok "with underlay_snat the host cannot open a connection to vm1" "curl answered: $seen"
fi
pol=$(counter_at_least vm9 .drops.downlink_policy $((${pol0:-0} + 1)))
d=$(growth "$pol0" "$pol")
if [[ -n "$d" && $d -gt 0 ]]; then
    ok "its SYNs are counted as downlink_policy ($pol0 -> $pol)"
else
    not_ok "its SYNs are counted as downlink_policy" "before $pol0, now $pol"
fi
check_eq "vm1's server saw one connection, the host's while underlay_snat was off" \
    "$HOST" "$(cut -d ' ' -f 1 "$TOPO_DIR/vm1.peers" 2>&1)"

# The kernel keeps out of the NAT's ports on the underlay address.
check "nft table inet $TABLE is there with its chains" \
    bash -c "ip netns exec $(topo_ns vm9) nft list table inet $TABLE | grep -q 'chain nat-udp'"
# socat's error line (1.7.4) when its connect-timeout expires: no answer at
# all; a reset gives the second form.
err=$(in_host socat -T 3 /dev/null "TCP:$EDGE_UL:62000,connect-timeout=3" 2>&1) || true
check "TCP to $EDGE_UL:62000 (a downlink NAT port) gets no reset from the kernel: the connect times out" \
    grep -qE " E connecting to AF=2 ${EDGE_UL//./\\.}:62000: Connection timed out\$" <<<"$err"
err=$(in_host socat -T 3 /dev/null "TCP:$EDGE_UL:60999,connect-timeout=3" 2>&1) || true
check "TCP to $EDGE_UL:60999 (the kernel's range) is refused by the kernel" \
    grep -qE " E connect\([0-9]+, AF=2 ${EDGE_UL//./\\.}:60999, [0-9]+\): Connection refused\$" <<<"$err"


# The table goes with the agent.
agent_stop vm9 || not_ok "the edge stops cleanly"
if ip netns exec "$(topo_ns vm9)" nft list table inet "$TABLE" >/dev/null 2>&1; then
    not_ok "after SIGTERM the nft table $TABLE is gone"
else
    ok "after SIGTERM the nft table $TABLE is gone"
fi

tap_done
