#!/usr/bin/env bash
# tests/e2e/41_nsxcli.sh -- e2e test 41 (issue 6, tests 1, 2, 4, 5): nsxcli,
# the operator's shell, against live agents and a live gateway: three
# instances enrolled by the gateway like the demo (vm1 web-ls role=server,
# vm2 app-ls role=client, vm3 web-ls role=admin), a firewall section (ssh
# from admins to servers, ICMP, default reject with log) and traffic.
#  - every command's text against the expected lines (exact where the seed
#    or the API fixes them, regex where values vary), each `--json` parsed
#    by jq; vsipioctl views identical to `nsx-agent ctl`;
#  - trace: routed ICMP (router, ttl 64 -> 63, encapsulated in the
#    destination's VNI), ssh allowed by rule 1006, refused by rule 1002,
#    a spoofed source dropped, a packet from the underlay delivered; on a
#    micro-segmentation instance (vm4, untagged) the firewall both ways;
#  - capture: the underlay to a pcap decoded by tshark (Geneve VNI, the
#    VMware option, inner addresses), the port to a pcap (inner Ethernet
#    frames), the live one-line view of a switch;
#  - the interactive shell through a real pseudo-terminal (python3 pty):
#    the prompt `ip-10-99-3-248> ` (a UTS namespace with the seed's host
#    name), Tab completion of commands and live switch names, `get ?`, an
#    unknown command's suggestion, history recall (in the session and from
#    the file in the next one), exit; the gateway shell's prompt;
#  - errors: agent not running -> the message and exit 3; bad argument ->
#    usage and exit 2; API error -> exit 1;
#  - gateway mode (`--gateway --dir`): get instances, logical-switches,
#    certificates.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 41 "$@"

# The nsxcli binary: $NSXCLI, else next to the agent, else the newest build.
find_nsxcli() {
    local c best=""
    if [[ -n "${NSXCLI:-}" ]]; then
        printf '%s\n' "$NSXCLI"
        return 0
    fi
    if [[ -x "$(dirname "$NSX_AGENT")/nsxcli" ]]; then
        printf '%s/nsxcli\n' "$(dirname "$NSX_AGENT")"
        return 0
    fi
    for c in "$TOPO_REPO/target/release/nsxcli" "$TOPO_REPO/target/debug/nsxcli"; do
        [[ -x "$c" ]] || continue
        if [[ -z "$best" || "$c" -nt "$best" ]]; then best=$c; fi
    done
    [[ -n "$best" ]] || return 1
    printf '%s\n' "$best"
}
NSXCLI=$(find_nsxcli) || bail "nsxcli binary (cargo build --release -p nsxcli, or set NSXCLI)"
[[ -x "$NSXCLI" ]] || bail "nsxcli binary $NSXCLI is executable"
command -v python3 >/dev/null || bail "python3 is required (the pseudo-terminal driver)"
diag "nsxcli: $NSXCLI"

gw_init_bin || bail "nsx-gateway binary"
gw_topology t41 1500 vm1 vm2 vm3 vm4
topo_wait_underlay || bail "underlay up"
gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
gw_state_firewall "$TOPO_DIR/state.yaml" '        - id: 1007
          services: [{protocol: icmp}]
          action: accept'
gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/apply.log" 2>&1 || bail "apply the state" "$(cat "$TOPO_DIR/apply.log")"
gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
declare -A TAG=([vm1]=web [vm2]=app [vm3]=web [vm4]="") ROLE=([vm1]=server [vm2]=client [vm3]=admin [vm4]=client)
for vm in vm1 vm2 vm3 vm4; do
    GW_TAGS_EXTRA="role = \"${ROLE[$vm]}\"" gw_agent_config "$vm" "${TAG[$vm]}"
    gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" || bail "agent $vm starts" "$(cat "$TOPO_DIR/$vm/start.err")"
done
declare -A IP=() MAC=()
for vm in vm1 vm2 vm3; do
    gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm ESTABLISHED"
    agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
    IP[$vm]=$(gw_instance "$vm" .ip)
done
gw_wait_state vm4 ESTABLISHED 15 || bail "agent vm4 (micro-segmentation) ESTABLISHED"
for vm in vm1 vm2 vm3 vm4; do
    gw_wait_applied "$vm" "$(gw_desired_version "$vm")" 10 || bail "agent $vm runs its desired version"
    MAC[$vm]=$(gw_status "$vm" '.overlay.mac // ""')
done
overlay_wait_ping vm1 "${IP[vm3]}" || bail "vm1 pings vm3 (web-ls)"
overlay_wait_ping vm1 "${IP[vm2]}" || bail "vm1 pings vm2 (routed to app-ls)"
diag "vm1 ${IP[vm1]} ${MAC[vm1]}, vm2 ${IP[vm2]}, vm3 ${IP[vm3]} ${MAC[vm3]}"

# An ssh-like session vm3 -> vm1:22 for getflows.
sandbox_bg "$TOPO_DIR/echo.log" in_overlay vm1 timeout 120 socat TCP-LISTEN:22,fork,reuseaddr EXEC:cat
for ((i = 0; i < 50; i++)); do
    in_overlay vm1 ss -ltn | grep -q ':22 ' && break
    sleep 0.1
done
sandbox_bg "$TOPO_DIR/session.log" bash -c \
    "sleep 60 | ip netns exec $(topo_root vm3) timeout 70 socat - TCP:${IP[vm1]}:22"
SESSION=$SANDBOX_LAST_PID
# Bounded waits (10 s each) for what the views below show: the session
# established in vm1's firewall, and the tunnel to vm3 counted both ways
# (counters are published every 200 ms).
for ((i = 0; i < 100; i++)); do
    agent_ctl vm1 getflows 2>/dev/null | grep -qE 'ssh\(22\) [0-9]+ EST' && break
    sleep 0.1
done
counters_wait vm1 '[.tunnels[] | select(.tep_ip == "10.99.3.13") | .rx_packets > 0 and .tx_packets > 0] | any' ||
    diag "vm1's tunnel to 10.99.3.13 not counted both ways within 10 s"

# cli vmN ARGS...: nsxcli against vmN's agent (UTC times, no history);
# stdout in OUT, stderr in ERR, exit status in RC.
cli() {
    local vm=$1
    shift
    RC=0
    OUT=$(TZ=UTC NSXCLI_HISTORY='' NSXCLI_SOCKET="$(topo_socket "$vm")" \
        timeout 60 "$NSXCLI" "$@" 2>"$TOPO_DIR/cli.err") || RC=$?
    ERR=$(cat "$TOPO_DIR/cli.err")
}
# has DESC REGEX: the last output has a line matching REGEX (ERE).
has() {
    if grep -qE -- "$2" <<<"$OUT"; then ok "$1"; else not_ok "$1" "no line matches: $2" "$OUT" "$ERR"; fi
}
# json_ok DESC VM COMMAND [JQ]: `COMMAND --json` is JSON (and JQ holds).
json_ok() {
    local desc=$1 vm=$2 cmd=$3 q=${4:-.}
    cli "$vm" -c "$cmd --json"
    if [[ $RC -eq 0 ]] && jq -e "$q" >/dev/null 2>&1 <<<"$OUT"; then
        ok "$desc"
    else
        not_ok "$desc" "rc=$RC jq: $q" "$(head -c 2000 <<<"$OUT")" "$ERR"
    fi
}
# re TEXT: TEXT with the ERE metacharacters escaped.
# shellcheck disable=SC2001,SC2016 # a sed character class, not an expansion
re() { sed 's/[.[\*^$()+?{|]/\\&/g' <<<"$1"; }

# --- test 1: every command, as the seed prints it where the seed shows it
cli vm1 -c "get gateway connection status"
since=$(gw_status vm1 .gateway.since_unix)
check_eq "get gateway connection status: the seed's three lines (the name dialed, then the address reached), real values (rc $RC)" \
    "Public Cloud Gateway : $GW_NAME:5555 ($GW_IP:5555)
Connection Status : ESTABLISHED
Connection Time : $(TZ=UTC date -d "@$since" '+%a %b %e %H:%M:%S %Y')" "$OUT"
json_ok "get gateway connection status --json" vm1 "get gateway connection status" \
    '.gateway.state == "ESTABLISHED" and .gateway.peer == "10.99.3.2:5555" and .gateway.name == "nsx-gw.vmware.local:5555" and .gateway.address == "10.99.3.2:5555"'

cli vm1 get vm-network-mode
check_eq "get vm-network-mode (as arguments): the seed's lines" \
    "VM-Network-Mode : overlay
Interface : eth0" "$OUT"
json_ok "get vm-network-mode --json" vm1 "get vm-network-mode" '.mode == "overlay" and .nic == "eth0"'

cli vm1 -c "get interfaces"
diag "$OUT"
has "get interfaces: the header" '^Interface +Role +Netns +MAC +MTU +State +IPv4 +RX Packets +RX Bytes +TX Packets +TX Bytes$'
has "get interfaces: nsx-vtep0.0 holds the underlay address" '^nsx-vtep0\.0 +vtep +- +[0-9a-f:]{17} +1500 +up +10\.99\.3\.11/24 '
has "get interfaces: nsx-eth0 in the overlay netns, MTU 1442, the overlay address" \
    "^nsx-eth0 +overlay +$(topo_root vm1) +$(re "${MAC[vm1]}") +1442 +up +$(re "${IP[vm1]}")/24( |$)"
json_ok "get interfaces --json" vm1 "get interfaces" '[.interfaces[].role] | index("overlay") != null'

cli vm1 -c "get logical-switches"
diag "$OUT"
has "get logical-switches: header" '^Name +VNI +Subnet +Gateway +Router +Local Port +Local MAC +Remote Endpoints$'
has "get logical-switches: web-ls with vm1's port and vm3's endpoint" \
    "^web-ls +0x238c +192\.168\.100\.0/24 +192\.168\.100\.1 +t1 +$(re "${IP[vm1]}") +$(re "${MAC[vm1]}") +.*10\.99\.3\.13"
has "get logical-switches: app-ls, no local port, vm2's endpoint" \
    '^app-ls +0x2388 +192\.168\.99\.0/24 +192\.168\.99\.1 +t1 +- +- +10\.99\.3\.12$'
json_ok "get logical-switches --json" vm1 "get logical-switches" '.switches | length == 2'

cli vm1 -c "get logical-switch web-ls mac-table"
diag "$OUT"
check_eq "get logical-switch web-ls mac-table: title" "Logical Switch : web-ls (VNI 0x238c)" "$(head -n 1 <<<"$OUT")"
has "mac-table: vm1's MAC is local" "^$(re "${MAC[vm1]}") +local +-$"
has "mac-table: vm3's MAC is behind 10.99.3.13" "^$(re "${MAC[vm3]}") +remote +10\.99\.3\.13$"
json_ok "get logical-switch web-ls mac-table --json" vm1 "get logical-switch web-ls mac-table" \
    '.switch == "web-ls" and (.entries | all(.switch == "web-ls"))'

cli vm1 -c "get logical-switch 0x238c arp-table"
diag "$OUT"
check_eq "get logical-switch 0x238c arp-table: by VNI, title" "Logical Switch : web-ls (VNI 0x238c)" "$(head -n 1 <<<"$OUT")"
has "arp-table: the router's gateway address" '^192\.168\.100\.1 +02:50:56:56:44:52 +router +-$'
has "arp-table: vm3 remote" "^$(re "${IP[vm3]}") +$(re "${MAC[vm3]}") +remote +10\.99\.3\.13$"
json_ok "get logical-switch 0x238c arp-table --json" vm1 "get logical-switch 0x238c arp-table" '.entries | length >= 3'

cli vm1 -c "get logical-routers"
has "get logical-routers: t1, its MAC and switches" '^t1 +02:50:56:56:44:52 +web-ls, app-ls +[0-9]+$'
json_ok "get logical-routers --json" vm1 "get logical-routers" '.routers[0].name == "t1"'

cli vm1 -c "get logical-router t1 forwarding"
diag "$OUT"
check_eq "get logical-router t1 forwarding: title" "Logical Router : t1 (MAC 02:50:56:56:44:52)" "$(head -n 1 <<<"$OUT")"
has "forwarding: web-ls connected" '^192\.168\.100\.0/24 +connected +web-ls +-$'
has "forwarding: app-ls connected" '^192\.168\.99\.0/24 +connected +app-ls +-$'
json_ok "get logical-router t1 forwarding --json" vm1 "get logical-router t1 forwarding" '.routes | length == 2'

cli vm1 -c "get tunnels"
diag "$OUT"
has "get tunnels: the local endpoint" "^Local Endpoint : 10\.99\.3\.11 \(tep id $(gw_status vm1 .tep_id)\)$"
has "get tunnels: vm3's endpoint with packets both ways, seen recently" \
    '^10\.99\.3\.13 +[0-9]+ +[1-9][0-9]* +[1-9][0-9]* +[1-9][0-9]* +[1-9][0-9]* +[0-9.]+ s ago$'
has "get tunnels: vm2's endpoint" '^10\.99\.3\.12 +[0-9]+ +[1-9][0-9]* '
json_ok "get tunnels --json" vm1 "get tunnels" '.tunnels | length >= 2'

cli vm1 -c "get firewall rules"
check_eq "get firewall rules: verbatim nsx-agent ctl getrules (vsipioctl format)" "$(agent_ctl vm1 getrules)" "$OUT"
has "get firewall rules: rule 1006 as the seed prints it" \
    '^  rule 1006 at 1 inout protocol tcp from addrset grp-admins to addrset grp-servers port 22 accept with log;$'
json_ok "get firewall rules --json" vm1 "get firewall rules" '.text | test("ruleset domain-c25")'
cli vm1 -c "get firewall addrsets"
check_eq "get firewall addrsets: verbatim nsx-agent ctl getaddrsets" "$(agent_ctl vm1 getaddrsets)" "$OUT"
has "get firewall addrsets: grp-admins holds vm3" "^ip $(re "${IP[vm3]}"),$"
json_ok "get firewall addrsets --json" vm1 "get firewall addrsets" '.text | test("addrset grp-admins")'
cli vm1 -c "get firewall flows"
diag "$OUT"
has "get firewall flows: the seed's header line" \
    '^Count retrieved from kernel active\(L3,L4\)=[0-9]+, active\(L2\)\+inactive\(L3,L4\)=[0-9]+, drop\(L2,L3,L4\)=0$'
has "get firewall flows: vm3 -> vm1:ssh(22) established by rule 1006" \
    "^[0-9a-f]{16} Active tcp 0800 1 1006 0 0  $(re "${IP[vm3]}"):Unknown\([0-9]+\) $(re "${IP[vm1]}"):ssh\(22\) [0-9]+ EST [0-9]+ [0-9]+ [0-9]+ [0-9]+$"
json_ok "get firewall flows --json" vm1 "get firewall flows" '.text | test("Count retrieved")'
cli vm1 -c "get firewall stats"
diag "$OUT"
has "get firewall stats: policy loaded" '^Policy Loaded : yes$'
has "get firewall stats: rule 1006 row with sessions" '^ *1006 +domain-c25 +accept +[1-9][0-9]* +[1-9][0-9]* +[1-9][0-9]*$'
json_ok "get firewall stats --json" vm1 "get firewall stats" '.policy_loaded == true'
cli vm1 -c "get firewall rule 1006"
check_eq "get firewall rule 1006: its getrules line first" \
    "rule 1006 at 1 inout protocol tcp from addrset grp-admins to addrset grp-servers port 22 accept with log;" \
    "$(head -n 1 <<<"$OUT")"
has "get firewall rule 1006: its sessions" '^Sessions : [1-9][0-9]*$'
json_ok "get firewall rule 1006 --json" vm1 "get firewall rule 1006" '.id == 1006 and .stats.sessions >= 1'

cli vm1 -c "get statistics"
missing=""
reasons=$(agent_ctl vm1 counters | jq -er '.drops | keys[]') || reasons=""
for r in $reasons; do
    grep -qE "^$r +[0-9]+$" <<<"$OUT" || missing+=" $r"
done
# `ctl counters` failing (or listing nothing) must not pass as "none missing".
check "get statistics: the agent's drop reasons are known ($(wc -w <<<"$reasons") of them)" \
    test "$(wc -w <<<"$reasons")" -gt 20
check_eq "get statistics: every drop reason of the agent has its line" "" "$missing"
has "get statistics: port traffic" '^port +[1-9][0-9]* +[1-9][0-9]* +[1-9][0-9]* +[1-9][0-9]*$'
has "get statistics: the firewall layer" '^firewall +[1-9][0-9]* +[0-9]+ +[0-9]+ +[0-9]+$'
has "get statistics: the tunnel to vm3" '^10\.99\.3\.13 +[0-9]+ +[1-9]'
json_ok "get statistics --json" vm1 "get statistics" '.drops | length > 20'

cli vm1 -c "get version"
check_eq "get version" "nsxcli : 0.1.0
nsx-agent : 0.1.0
API Version : 1" "$OUT"
json_ok "get version --json" vm1 "get version" '.api_version == 1'
cli vm1 -c "get config version"
cv=$(gw_status vm1 .config_version)
check_eq "get config version: the version in force, from the gateway" "Config Version : $cv
Config Source : gateway 10.99.3.2:5555 (applied version $(gw_status vm1 .gateway.applied_version))" "$OUT"
json_ok "get config version --json" vm1 "get config version" ".config_version == $cv"

# --- trace
cli vm1 -c "trace port icmp src ${IP[vm1]} dst ${IP[vm2]} ttl 64"
diag "$OUT"
has "trace (routed ping): the frame goes to the router's MAC" "^Frame : $(re "${MAC[vm1]}") > 02:50:56:56:44:52, 98 bytes$"
has "trace: step 1 is port security" '^ 1\. port-security: '
has "trace: the firewall's rule 1007" '^ [0-9]\. firewall: .*1007'
has "trace: the router t1, ttl 64 -> 63" '^ [0-9]\. router[ :].*t1.*ttl 64 -> 63'
has "trace: encapsulated in app-ls's VNI to vm2" '^ [0-9]\. encap: vni 0x2388 to 10\.99\.3\.12'
has "trace: verdict" '^Verdict : encapsulated$'
has "trace: output" '^Output : underlay 10\.99\.3\.12 vni 0x2388, [0-9]+ bytes'
json_ok "trace --json" vm1 "trace port icmp src ${IP[vm1]} dst ${IP[vm2]}" '.verdict == "encapsulated"'
cli vm3 -c "trace port tcp src ${IP[vm3]} dst ${IP[vm1]} sport 40000 dport 22 flags S"
diag "$OUT"
has "trace ssh vm3 (admin) -> vm1: rule 1006 accepts" '^ [0-9]\. firewall: .*rule 1006.*accept'
has "trace ssh vm3 -> vm1: encapsulated to vm1 in web-ls" '^Output : underlay 10\.99\.3\.11 vni 0x238c'
cli vm2 -c "trace port tcp src ${IP[vm2]} dst ${IP[vm1]} dport 22"
diag "$OUT"
has "trace ssh vm2 (client) -> vm1: the default rule 1002 rejects" '^ [0-9]\. firewall: .*1002.*reject'
check "trace ssh vm2 -> vm1: not encapsulated" bash -c "! grep -q '^Verdict : encapsulated' <<<\"\$1\"" _ "$OUT"
cli vm1 -c "trace port icmp src 192.168.100.99 dst ${IP[vm3]}"
has "trace a spoofed source: dropped by port security" '^Verdict : dropped \(spoofed_src_ip'
cli vm1 -c "trace underlay from 10.99.3.13 vni 0x238c icmp src ${IP[vm3]} dst ${IP[vm1]}"
diag "$OUT"
has "trace from the underlay (vm3's endpoint): decap first" '^ 1\. decap: '
has "trace from the underlay: delivered to the port" '^Verdict : delivered$'

# --- micro-segmentation (vm4, no nsx:network tag): the other network mode
cli vm4 -c "get vm-network-mode"
check_eq "vm4: get vm-network-mode: micro-segmentation" "VM-Network-Mode : micro-segmentation
Interface : eth0" "$OUT"
cli vm4 -c "get interfaces"
diag "$OUT"
has "vm4: get interfaces: the firewall's veth pair" '^[^ ]+ +fw-peer +'
cli vm4 -c "trace port tcp src 10.99.3.14 dst 10.99.3.11 dport 22"
diag "$OUT"
has "vm4: trace out of the host: from the NIC's MAC" "^From : this host, out of eth0 \(micro-segmentation\)$"
has "vm4: trace ssh to vm1's underlay address: the default rule 1002 rejects" '^ 1\. firewall: .*1002.*reject'
cli vm4 -c "trace underlay icmp src 10.99.3.11 dst 10.99.3.14"
diag "$OUT"
has "vm4: trace a ping as the NIC receives it: rule 1007 accepts" '^ 1\. firewall: .*1007.*accept'
has "vm4: ... delivered to the host" '^Verdict : delivered$'
cli vm4 -c "trace underlay from 10.99.3.11 vni 0x238c icmp src 10.99.3.11 dst 10.99.3.14"
check_eq "vm4: a tunnel in micro-segmentation mode is a usage error (exit 2)" 2 "$RC"

# --- test 4: capture to pcap files, decoded by tshark
# ping_bg vmN DST: pings in the background (PID in PING), one every 0.2 s
# until cap_done stops them (at most 50): whenever the capture started
# (nothing tells when it is armed), the pings that follow fill its count.
# (`ip netns exec` execs ping: PING is ping itself, so cap_done's kill
# stops it and it cannot spill into the next capture.)
ping_bg() {
    sandbox_bg "$TOPO_DIR/ping-$1.log" ip netns exec "$(topo_root "$1")" ping -n -c 50 -i 0.2 "$2"
    PING=$SANDBOX_LAST_PID
}
# cap_done: the capture (PID in cap) is over (bounded); the pings stop.
cap_done() {
    sandbox_wait_exit "$cap" 20 || true
    kill "$PING" 2>/dev/null || true
    sandbox_wait_exit "$PING" 5 || true
}
cli_bg() { # cli_bg vmN LOG ARGS...: nsxcli in the background (PID in SANDBOX_LAST_PID)
    local vm=$1 log=$2
    shift 2
    sandbox_bg "$log" env TZ=UTC NSXCLI_HISTORY='' NSXCLI_SOCKET="$(topo_socket "$vm")" timeout 60 "$NSXCLI" "$@"
}
cli_bg vm1 "$TOPO_DIR/cap-u.log" -c "capture underlay count 6 timeout 8 file $TOPO_DIR/u.pcap"
cap=$SANDBOX_LAST_PID
ping_bg vm1 "${IP[vm2]}"
cap_done
diag "$(cat "$TOPO_DIR/cap-u.log")"
check "capture underlay: count line" grep -qE "^6 packets captured to $(re "$TOPO_DIR")/u\.pcap \(pcap, linktype RAW \(IPv4\)\)" "$TOPO_DIR/cap-u.log"
got=$(tshark -n -r "$TOPO_DIR/u.pcap" -Y 'geneve && icmp.type == 8' -T fields -E separator=/s \
    -e ip.src -e ip.dst -e geneve.vni -e geneve.option.class -e geneve.option.type 2>/dev/null | head -n 1)
diag "tshark (request): $got"
check "tshark: the request vm1 -> vm2 in app-ls's VNI 0x2388 with the VMware option, inner addresses" \
    grep -qE "^10\.99\.3\.11,$(re "${IP[vm1]}") 10\.99\.3\.12,$(re "${IP[vm2]}") 0x0*2388 0x0*104 0x80$" <<<"$got"
got=$(tshark -n -r "$TOPO_DIR/u.pcap" -Y 'geneve && icmp.type == 0' -T fields -E separator=/s \
    -e ip.src -e ip.dst -e geneve.vni -e ip.ttl 2>/dev/null | head -n 1)
diag "tshark (reply): $got"
check "tshark: the reply vm2 -> vm1 in web-ls's VNI 0x238c, inner TTL 63" \
    grep -qE "^10\.99\.3\.12,$(re "${IP[vm2]}") 10\.99\.3\.11,$(re "${IP[vm1]}") 0x0*238c 64,63$" <<<"$got"

cli_bg vm1 "$TOPO_DIR/cap-p.log" -c "capture port count 4 timeout 8 file $TOPO_DIR/p.pcap"
cap=$SANDBOX_LAST_PID
ping_bg vm1 "${IP[vm3]}"
cap_done
diag "$(cat "$TOPO_DIR/cap-p.log")"
got=$(tshark -n -r "$TOPO_DIR/p.pcap" -Y 'icmp' -T fields -E separator=/s \
    -e eth.src -e eth.dst -e ip.src -e ip.dst -e icmp.type 2>/dev/null)
diag "tshark (port): $(head -n 2 <<<"$got")"
check "tshark: the port's frames are inner Ethernet: vm1 -> vm3 echo request" \
    grep -qE "^$(re "${MAC[vm1]}") $(re "${MAC[vm3]}") $(re "${IP[vm1]}") $(re "${IP[vm3]}") 8$" <<<"$got"
check "tshark: ... and vm3's echo reply" \
    grep -qE "^$(re "${MAC[vm3]}") $(re "${MAC[vm1]}") $(re "${IP[vm3]}") $(re "${IP[vm1]}") 0$" <<<"$got"

cli_bg vm1 "$TOPO_DIR/cap-s.log" -c "capture switch web-ls count 2 timeout 8"
cap=$SANDBOX_LAST_PID
ping_bg vm1 "${IP[vm3]}"
cap_done
diag "$(cat "$TOPO_DIR/cap-s.log")"
check "capture switch web-ls (live view): one line per packet, time, direction, MACs, addresses" \
    grep -qE "^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} (rx|tx) +$(re "${MAC[vm1]}") > $(re "${MAC[vm3]}"), $(re "${IP[vm1]}") > $(re "${IP[vm3]}"): ICMP echo request, id [0-9]+, seq [0-9]+, ttl 64, length 98$" \
    "$TOPO_DIR/cap-s.log"
check "capture switch: the count line" grep -qE '^2 packets captured' "$TOPO_DIR/cap-s.log"
cli_bg vm1 "$TOPO_DIR/cap-l.log" -c "capture underlay count 4 timeout 8"
cap=$SANDBOX_LAST_PID
ping_bg vm1 "${IP[vm2]}"
cap_done
diag "$(cat "$TOPO_DIR/cap-l.log")"
check "capture underlay (live view): outer addresses, VNI and inner addresses" \
    grep -qE "^[0-9:.]{15} tx +10\.99\.3\.11\.[0-9]+ > 10\.99\.3\.12\.6081: Geneve vni 0x2388( tep [0-9]+)?, $(re "${IP[vm1]}") > $(re "${IP[vm2]}"): ICMP echo request" \
    "$TOPO_DIR/cap-l.log"

# Ctrl-C: nsxcli interrupted mid-capture; the agent ends that capture, so
# the next one runs at once instead of "a capture is already running".
cli_bg vm1 "$TOPO_DIR/cap-int.log" -c "capture port count 1000 timeout 60"
cap=$SANDBOX_LAST_PID
# Bounded wait (10 s) until nsxcli is connected to vm1's API (its only
# socket: the capture request is out), so that the interrupt lands
# mid-capture.
for ((i = 0; i < 100; i++)); do
    ss -xpH state connected 2>/dev/null | grep -q '"nsxcli"' && break
    sleep 0.1
done
check "nsxcli's capture is connected to vm1's API before the interrupt" \
    bash -c "ss -xpH state connected | grep -q '\"nsxcli\"'"
kill -INT "$cap" 2>/dev/null || true
sandbox_wait_exit "$cap" 10 || true
# The agent ends the interrupted capture at its next loop round: retry
# (bounded, 5 s; the capture would run 60 s if it were not cancelled).
for ((i = 0; i < 25; i++)); do
    cli vm1 -c "capture port count 1 timeout 1"
    grep -q 'already running' <<<"$ERR" || break
    sleep 0.2
done
check_eq "after Ctrl-C in a capture, the next capture runs (exit 0, not 'already running'; attempt $((i + 1)))" "0 " \
    "$RC $(grep -o 'already running' <<<"$ERR" || true)"

# --- test 2: the interactive shell through a real pseudo-terminal
cat >"$TOPO_DIR/pty_drive.py" <<'EOF'
# Drives a program on a pseudo-terminal: steps are [name, keys, regex]; the
# keys are written, then the output (ANSI sequences stripped) must match the
# regex within 10 s -- or, for a regex of null, the program must close the
# terminal (exit) within 10 s. Prints "ok NAME" / "not ok NAME" and, last,
# "exit N".
import json, os, pty, re, select, sys, time

argv, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
ansi = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|[\x07\r]")
seen = b""

def read(timeout):
    global seen
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return False
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    if not data:
        return None
    if b"\x1b[6n" in data:  # cursor position request: answer "row 1, column 1"
        os.write(fd, b"\x1b[1;1R")
    seen += data
    return True

for name, keys, want in steps:
    seen = b""
    for ch in keys:
        os.write(fd, ch.encode())
        time.sleep(0.02)
    deadline, ok = time.time() + 10, False
    while time.time() < deadline:
        if want is not None and re.search(want, ansi.sub(b"", seen).decode("utf-8", "replace"), re.M):
            ok = True
            break
        if read(0.2) is None:
            ok = want is None  # the terminal closed: the program is gone
            break
    text = ansi.sub(b"", seen).decode("utf-8", "replace")
    print(("ok " if ok else "not ok ") + name + ("" if ok else "\n# " + repr(text[-600:])), flush=True)
deadline = time.time() + 10
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("exit %d" % os.waitstatus_to_exitcode(status), flush=True)
        break
    read(0.1)
else:
    os.kill(pid, 9)
    print("exit timeout", flush=True)
EOF
# pty_run LOG PROGRAM_JSON STEPS_JSON: run the driver; one check per step.
pty_run() {
    local log=$1 line name transcript
    timeout 120 python3 "$TOPO_DIR/pty_drive.py" "$2" "$3" >"$log" 2>&1 || true
    transcript=$(cat "$log")
    while IFS= read -r line; do
        case "$line" in
            "ok "*) ok "pty: ${line#ok }" ;;
            "not ok "*)
                name=${line#not ok }
                not_ok "pty: $name" "$(grep -A1 -F "not ok $name" <<<"$transcript" | tail -n 1)"
                ;;
            "exit "*) check_eq "pty: the shell exits 0" "exit 0" "$line" ;;
        esac
    done <<<"$transcript"
    grep -q '^exit ' <<<"$transcript" || not_ok "pty: the driver finished" "$(tail -n 5 <<<"$transcript")"
}
HIST=$TOPO_DIR/nsxcli_history
prog=$(jq -cn --arg cli "$NSXCLI" --arg sock "$(topo_socket vm1)" --arg hist "$HIST" \
    '["env", "TERM=xterm", "TZ=UTC", "NSXCLI_SOCKET=" + $sock, "NSXCLI_HISTORY=" + $hist,
      "unshare", "--uts", "sh", "-c", "hostname ip-10-99-3-248 && exec \"$0\"", $cli]')
steps=$(jq -cn '[
  ["the prompt is the seed'"'"'s", "", "^ip-10-99-3-248> $"],
  ["Tab completes get logical-sw to get logical-switch", "get logical-sw\t", "get logical-switch$"],
  ["a second Tab lists both candidates", "\t", "logical-switches +logical-switch|logical-switch +logical-switches"],
  ["Tab completes a live switch name", "\u0015get logical-switch w\t", "get logical-switch web-ls $"],
  ["... and the completed command runs", "mac-table\r", "Logical Switch : web-ls \\(VNI 0x238c\\)"],
  ["get ? lists what can follow, then the next line starts with get again", "get ?\r", "vm-network-mode +Overlay or micro-segmentation(.|\n)*logical-switches +Logical switches(.|\n)*ip-10-99-3-248> get $"],
  ["an unknown command gets the closest suggestion", "\u0015get logical-swtich web-ls mac-table\r", "Unknown command \"get logical-swtich\": did you mean \"get logical-switch\"\\?"],
  ["get gateway connection status in the shell", "get gateway connection status\r", "Connection Status : ESTABLISHED"],
  ["get vm-network-mode", "get vm-network-mode\r", "VM-Network-Mode : overlay\nInterface : eth0"],
  ["get version", "get version\r", "API Version : 1"],
  ["Up Up recalls get vm-network-mode from history", "\u001b[A\u001b[A", "get vm-network-mode$"],
  ["... and runs it again", "\r", "VM-Network-Mode : overlay"],
  ["exit leaves the shell (the terminal closes)", "exit\r", null]
]')
pty_run "$TOPO_DIR/pty1.log" "$prog" "$steps"
check "the history file holds the session's commands" grep -qx 'get vm-network-mode' "$HIST"
steps=$(jq -cn '[
  ["a new shell shows the prompt", "", "^ip-10-99-3-248> $"],
  ["Up recalls the last command of the previous session (from the history file)", "\u001b[A", "ip-10-99-3-248> exit$"],
  ["Up again: the one before", "\u001b[A", "ip-10-99-3-248> get vm-network-mode$"],
  ["Ctrl-D leaves the shell (the terminal closes)", "\u0015\u0004", null]
]')
pty_run "$TOPO_DIR/pty2.log" "$prog" "$steps"
gprog=$(jq -cn --arg cli "$NSXCLI" --arg ns "$GW_NS" --arg dir "$GW_DIR" \
    '["env", "TERM=xterm", "NSXCLI_HISTORY=", "ip", "netns", "exec", $ns, $cli, "--gateway", "--dir", $dir]')
steps=$(jq -cn '[
  ["gateway shell: the prompt <hostname>(gateway)> ", "", "\\(gateway\\)> $"],
  ["gateway shell: get instances", "get instances\r", "vm1 +[^ ]+ +overlay +web-ls"],
  ["gateway shell: Tab completes get c to get certificates", "get c\t", "get certificates $"],
  ["gateway shell: exit leaves it (the terminal closes)", "\u0015exit\r", null]
]')
pty_run "$TOPO_DIR/pty3.log" "$gprog" "$steps"

# --- test 5: errors and exit codes
cli vm1 -c "get logical-switch web-ls"
check_eq "bad argument (incomplete): exit 2" 2 "$RC"
check_eq "bad argument: the usage of that command" "% Incomplete command \"get logical-switch web-ls\"
Usage: get logical-switch <name|vni> mac-table
       get logical-switch <name|vni> arp-table" "$ERR"
cli vm1 -c "capture port count 0"
check_eq "bad argument (count 0): exit 2" 2 "$RC"
check "bad argument (count 0): usage" grep -qF "Usage: capture port [count <n>] [file <path>] [timeout <seconds>] [snaplen <bytes>]" <<<"$ERR"
cli vm1 -c "trace port tcp src ${IP[vm1]} dst ${IP[vm2]}"
check_eq "bad argument (tcp without dport): exit 2" 2 "$RC"
check "bad argument (tcp without dport): the packet usage" grep -qF 'Usage: trace port <arp|icmp|tcp|udp> src <ip> dst <ip>' <<<"$ERR"
cli vm1 -c "get logical-swtich web-ls mac-table"
check_eq "unknown command: exit 2 and the suggestion" \
    "2 % Unknown command \"get logical-swtich\": did you mean \"get logical-switch\"?" "$RC $ERR"
cli vm1 -c "get logical-switch db-ls mac-table"
check_eq "unknown switch: exit 1" "1 % Unknown logical switch \"db-ls\" (known: web-ls, app-ls)" "$RC $ERR"
cli vm1 -c "get ?"
check "get ? with -c: exit 0, the list" bash -c "[[ $RC == 0 ]] && grep -q '^  statistics ' <<<\"\$1\"" _ "$OUT"
NOSOCK=$TOPO_DIR/no-agent.sock
RC=0
ERR=$(NSXCLI_SOCKET=$NOSOCK timeout 10 "$NSXCLI" -c "get gateway connection status" 2>&1 >/dev/null) || RC=$?
check_eq "agent not running (no socket): exit 3" 3 "$RC"
check_eq "agent not running: the message names the socket" \
    "% Cannot reach the NSX agent at $NOSOCK: No such file or directory (is nsx-agent running?)" "$ERR"
agent_stop vm2 || true
cli vm2 -c "get vm-network-mode"
check_eq "agent stopped: exit 3" 3 "$RC"
check "agent stopped: the message" grep -qE "^% Cannot reach the NSX agent at $(re "$(topo_socket vm2)"): .+ \(is nsx-agent running\?\)$" <<<"$ERR"
RC=0
ERR=$(NSXCLI_SOCKET=$(topo_socket vm2) NSXCLI_HISTORY='' timeout 10 "$NSXCLI" </dev/null 2>&1 >/dev/null) || RC=$?
check_eq "interactive nsxcli without an agent: exit 3" 3 "$RC"

# --- gateway mode
gcli() {
    RC=0
    OUT=$(in_gw timeout 30 "$NSXCLI" --gateway --dir "$GW_DIR" "$@" 2>"$TOPO_DIR/cli.err") || RC=$?
    ERR=$(cat "$TOPO_DIR/cli.err")
}
gcli -c "get instances"
diag "$OUT"
has "gateway: get instances header" '^ID +Name +Mode +Switch +IP +Connection +Version Acked +Version Applied +Last Status +Agent Error$'
has "gateway: vm1 overlay on web-ls, ESTABLISHED, version acked, its agent's status: that version applied, no error" \
    "^vm1 +[^ ]+ +overlay +web-ls +$(re "${IP[vm1]}") +ESTABLISHED +([0-9]+) +\\1 +[0-9]+ (s|min) ago +-$"
has "gateway: vm2 on app-ls (its agent stopped)" "^vm2 +[^ ]+ +overlay +app-ls +$(re "${IP[vm2]}") +[A-Z]+ +[0-9]+ .*$"
gcli -c "get instances" --json
check "gateway: get instances --json" jq -e 'length == 4' <<<"$OUT"
check "gateway: get instances --json: vm1's agent_status (applied = acked, counters, no error)" jq -e \
    '.[] | select(.id == "vm1") | .acked_version as $a | .agent_status | .applied_version == $a and .last_error == null and (.counters | has("port_rx_packets")) and .age_seconds >= 0' <<<"$OUT"
gcli -c "get logical-switches"
diag "$OUT"
has "gateway: get logical-switches: web-ls with 2 ports" '^web-ls +web +0x238c +192\.168\.100\.0/24 +192\.168\.100\.1 +2$'
has "gateway: get logical-switches: app-ls with 1 port" '^app-ls +app +0x2388 +192\.168\.99\.0/24 +192\.168\.99\.1 +1$'
gcli -c "get certificates"
diag "$OUT"
if [[ $RC -eq 0 ]]; then
    fp=$(gw_instance vm1 .cert_fingerprint)
    has "gateway: get certificates: vm1's certificate, not revoked, its fingerprint" \
        "^vm1 +[0-9a-f]+ +[0-9-]{10} [0-9:]{8} +no +$fp$"
    has "gateway: get certificates: no revocations yet" '^Revocations : none$'
    gcli -c "get certificates --json"
    check "gateway: get certificates --json" jq -e '.certificates | length == 4' <<<"$OUT"
else
    not_ok "gateway: get certificates (GET /api/v1/certificates)" "rc=$RC" "$ERR"
fi
RC=0
ERR=$(in_gw timeout 10 "$NSXCLI" --gateway --dir "$GW_DIR" --url http://127.0.0.1:1 -c "get instances" 2>&1 >/dev/null) || RC=$?
check_eq "gateway not reachable: exit 3" 3 "$RC"
check "gateway not reachable: the message" grep -qF "% Cannot reach the NSX gateway admin API at http://127.0.0.1:1: Connection refused (is nsx-gateway serve running?)" <<<"$ERR"

kill "$SESSION" 2>/dev/null || true
tap_done
