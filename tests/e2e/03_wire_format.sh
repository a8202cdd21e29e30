#!/usr/bin/env bash
# tests/e2e/03_wire_format.sh -- e2e test 3: tshark decodes every captured
# tunnel packet as Geneve version 0 with the C flag, protocol 0x6558 and
# exactly one option, class 0x0104 (VMware) type 0x80 (critical) carrying the
# sender's tunnel-endpoint id; outer IPv4 DF set, TTL 64, UDP destination
# 6081, source port in 49152-65535 and stable per inner flow, UDP checksum
# correct (verified by tshark), outer MACs of the underlay NICs, outer length
# = inner + 58 (142 for an 84-byte ICMP packet, like the seed). No ARP for
# overlay addresses and no overlay packet leaks onto the underlay unencapsulated.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 03 "$@"

seed_topology t03 1500 3
topo_build
topo_wait_underlay || bail "underlay up"
cap_start c || bail "capture starts"
start_agents vm1 vm2 vm3

# Traffic: same switch, routed, large, and a TCP exchange across switches.
overlay_wait_ping vm1 192.168.100.4 || not_ok "ping vm1 -> vm3 (same switch) within 10 s"
overlay_wait_ping vm1 192.168.99.9 || not_ok "ping vm1 -> vm2 (routed) within 10 s"
overlay_ping vm3 192.168.99.9 -c 3 -i 0.2 -W 2 -q >/dev/null 2>&1 || not_ok "ping vm3 -> vm2 3/3"
overlay_ping vm2 192.168.100.4 -c 2 -i 0.2 -W 2 -s 1400 -q >/dev/null 2>&1 || not_ok "ping vm2 -> vm3 1400 bytes"
overlay_ping vm3 192.168.100.3 -c 5 -i 0.2 -W 2 -q >/dev/null 2>&1 || not_ok "ping vm3 -> vm1 5/5"
sandbox_bg "$TOPO_DIR/socat-srv.log" ip netns exec "$(topo_root vm2)" \
    timeout 20 socat -u TCP-LISTEN:5003,reuseaddr "OPEN:$TOPO_DIR/tcp.out,creat,trunc"
srv=$SANDBOX_LAST_PID
head -c 200000 /dev/urandom >"$TOPO_DIR/tcp.in"
for ((i = 0; i < 20; i++)); do
    in_overlay vm1 timeout 10 socat -u "OPEN:$TOPO_DIR/tcp.in" TCP:192.168.99.9:5003 2>/dev/null && break
    sleep 0.3
done
sandbox_wait_exit "$srv" 15 || true
check "TCP 200 kB vm1 -> vm2 across switches arrives intact" cmp "$TOPO_DIR/tcp.in" "$TOPO_DIR/tcp.out"
pcap=$(cap_stop c)

# Tunnel packets: outer IPv4 carrying UDP to 6081 (not ICMP errors quoting one).
TUN="udp.dstport==6081 && ip.proto#1==17"
total=$(cap_count "$pcap" "$TUN")
diag "captured $total tunnel packets"
check "at least 20 tunnel packets captured (got $total)" [ "$total" -ge 20 ]

# Every packet to UDP 6081 must satisfy all of this:
good='geneve && geneve.version==0 && geneve.flags.critical==1 && geneve.flags.oam==0
 && geneve.proto_type==0x6558 && count(geneve.option.class)==1
 && geneve.option.class==0x0104 && geneve.option.type==0x80
 && udp.checksum.status#1==1 && ip.flags.df#1==1 && ip.ttl#1==64 && udp.srcport#1>=49152'
good=${good//$'\n'/}
bad=$(cap_count "$pcap" "$TUN && !($good)")
if [[ $bad -eq 0 ]]; then
    ok "all $total: Geneve v0, C flag, proto 0x6558, one option class 0x0104 type 0x80, UDP checksum good, DF, TTL 64, sport >= 49152"
else
    not_ok "all $total: Geneve v0, C flag, proto 0x6558, one option class 0x0104 type 0x80, UDP checksum good, DF, TTL 64, sport >= 49152" \
        "$bad packets fail; first ones:" \
        "$(cap_fields "$pcap" "$TUN && !($good)" frame.number ip.src ip.dst ip.flags.df ip.ttl udp.srcport udp.checksum.status geneve.version geneve.flags.critical geneve.option.class geneve.option.type | head -n 5)"
fi

# Option data = the sender's tep id; outer MACs = the NICs of sender and receiver.
for vm in vm1 vm2 vm3; do
    n=$(cap_count "$pcap" "$TUN && ip.src#1==$(topo_underlay_ip "$vm")")
    want=$(printf '%08x' "$(topo_tep_id "$vm")")
    badn=$(cap_count "$pcap" "$TUN && ip.src#1==$(topo_underlay_ip "$vm") && !(geneve.option.unknown.data==$want && eth.src#1==$(topo_mac "$vm"))")
    if [[ $n -gt 0 && $badn -eq 0 ]]; then
        ok "$vm's $n packets carry tep id $((16#$want)) and its NIC MAC as outer source"
    else
        not_ok "$vm's packets carry tep id $((16#$want)) and its NIC MAC as outer source" "$n packets, $badn wrong"
    fi
done
bad=0
while IFS=$'\t' read -r dst emac; do
    [[ -z "$dst" ]] && continue
    for vm in vm1 vm2 vm3; do
        if [[ "$dst" == "$(topo_underlay_ip "$vm")" && "${emac%%,*}" != "$(topo_mac "$vm")" ]]; then
            bad=$((bad + 1))
        fi
    done
done < <(cap_fields "$pcap" "$TUN" ip.dst eth.dst | awk -F'\t' '{split($1, a, ","); print a[1] "\t" $2}')
check_eq "outer destination MAC is the receiving NIC's MAC" 0 "$bad"

# Stable source port per inner flow: one ICMP echo flow (vm3 -> vm1 requests).
ports=$(cap_fields "$pcap" "$TUN && ip.src==192.168.100.4 && ip.dst==192.168.100.3 && icmp.type==8" udp.srcport | sort -u)
check_eq "one UDP source port for the vm3 -> vm1 echo flow (5 packets)" 1 "$(grep -c . <<<"$ports" || true)"
# Per TCP connection to :5003 (a retried connect is a new flow with its own
# source port): exactly one outer source port each.
pairs=$(cap_fields "$pcap" "$TUN && tcp.dstport==5003" tcp.srcport udp.srcport | sort -u)
conns=$(cut -f1 <<<"$pairs" | sort -u | grep -c . || true)
check "TCP flow vm1 -> vm2:5003 seen" [ "$conns" -ge 1 ]
check_eq "one UDP source port per TCP connection vm1 -> vm2:5003 ($conns connection(s))" "$conns" "$(grep -c . <<<"$pairs" || true)"

# Seed golden: 84-byte inner ICMP packet -> outer IP total length 142.
bad=$(cap_count "$pcap" "$TUN && icmp && ip.len#2==84 && ip.len#1!=142")
n=$(cap_count "$pcap" "$TUN && icmp && ip.len#2==84")
check "outer IP length 142 for each 84-byte inner ICMP packet ($n packets, $bad wrong)" [ "$n" -gt 0 -a "$bad" -eq 0 ]
bad=$(cap_count "$pcap" "$TUN && ip.len#1 != ip.len#2 + 58")
check_eq "outer IP length = inner IP length + 58 on every packet" 0 "$bad"

# Nothing of the overlay outside the tunnel; no ARP for overlay addresses.
check_eq "no ARP for overlay addresses on the underlay" 0 \
    "$(cap_count "$pcap" "arp && arp.dst.proto_ipv4 == 192.168.0.0/16")"
check_eq "no unencapsulated overlay IPv4 on the underlay" 0 \
    "$(cap_count "$pcap" "!geneve && ip.addr#1==192.168.0.0/16")"
diag "one decoded packet:" "$(tshark -n -r "$pcap" -Y "$TUN && icmp" -O geneve 2>/dev/null |
    awk '/^Frame /{n++} n==1' | sed -n '/Generic Network/,/Unknown Option Data/p')"
tap_done
