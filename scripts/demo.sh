#!/usr/bin/env bash
# scripts/demo.sh -- the seed's picture, live and gateway-driven: builds
# nsx-agent and nsx-gateway (release), then inside a private sandbox (user +
# network + mount + PID namespaces; the host's network is never touched)
# creates an underlay 10.99.3.0/24 with a gateway namespace (10.99.3.2) and
# three instances. The gateway gets a root CA and a bootstrap key (init) and
# the desired state from a file (apply: switches web-ls, VNI 0x238c,
# 192.168.100.0/24, and app-ls, VNI 0x2388, 192.168.99.0/24, joined by the
# distributed router t1); each agent starts with only the gateway address,
# the CA and the bootstrap key, enrolls and is placed by its nsx:network tag.
# Shows: get instances, the agents' gateway connection status, the interfaces
# the agent built, pings on one switch and across switches, TCP transfers
# across the switches, one decoded Geneve packet from the underlay, and the
# agents' counters. North-south: the gateway host is also the edge (an agent
# with an uplink in the gateway's namespace, enrolled as the edge; the
# state's tier0), beyond its uplink a cloud-NAT namespace (elastic IPs) and
# an internet host: vm1 curls out and the server logs the SNAT address; vm3,
# tagged nsx:publicip at the gateway, is reached from the internet host at
# its elastic IP; nsxcli shows the NAT rules and the edge's NAT sessions.
# The load balancer: the seed's keepalived.conf imported at the gateway,
# the virtual server answering vm1 from both real servers (vm2, vm3), and
# the ipvsadm -Ln view. Then the firewall and nsxcli. Then it waits for Ctrl-C, printing how to
# get a shell in an instance.
#
#   scripts/demo.sh              # show, then wait for Ctrl-C
#   scripts/demo.sh --check      # show, exit 0 only if everything worked
#   scripts/demo.sh --mtu 9001   # underlay MTU 9001 (default 1500)
#   NSX_DEMO_PCAP=/tmp/demo.pcap scripts/demo.sh --check   # keep the capture
#   NSX_AGENT=... NSX_GATEWAY=... [NSXCLI=...] scripts/demo.sh --check
#                                # these binaries, no build (scripts/test.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib/e2e.sh
source "$ROOT/tests/lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$ROOT/tests/lib/gw.sh"

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
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
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
    nsx_install_tools ip ping tshark dumpcap jq ethtool socat unshare nsenter timeout sha256sum cc curl openssl wget nft python3
    if [[ -n "${NSX_AGENT:-}" && -n "${NSX_GATEWAY:-}" ]]; then
        # Binaries given (scripts/test.sh passes the release build it made).
        for b in "$NSX_AGENT" "$NSX_GATEWAY"; do
            [[ -x "$b" ]] || { echo "$b is not executable" >&2; exit 2; }
        done
        echo "== using $NSX_AGENT and $NSX_GATEWAY (no build)"
    else
        nsx_ensure_rust >/dev/null
        echo "== building (cargo build --release -p agent -p gateway -p nsxcli)"
        (cd "$ROOT" && cargo build --release -p agent -p gateway -p nsxcli)
        export NSX_AGENT=$ROOT/target/release/nsx-agent
        export NSX_GATEWAY=$ROOT/target/release/nsx-gateway
    fi
    export NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
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
gw_init_bin || exit 1
# sshd's privilege-separation directory, for the sshds an overlay agent
# starts: a tmpfs of the sandbox's own (/run is the host's).
mkdir -p /run/sshd && mount -t tmpfs -o mode=0755 nsx-sshd /run/sshd
gw_topology nsx "$MTU" vm1 vm2 vm3
# The gateway host is the edge too: its uplink eth1 leads to the cloud's NAT
# (nsx-inet: elastic IPs 198.51.100.2 -> the uplink's 203.0.113.2 and
# 198.51.100.10 -> its secondary 203.0.113.10), and beyond it the internet
# (nsx-internet: the host 198.51.100.7).
gw_edge_host 203.0.113.1/24
INTERNET=nsx-internet
topo_cloud_nat "$INTERNET" 1500 203.0.113.2=198.51.100.2 203.0.113.10=198.51.100.10
in_internet() { ip netns exec "$INTERNET" "$@"; }
topo_wait_underlay || {
    bad "underlay"
    exit 1
}
PCAP=${NSX_DEMO_PCAP:-$TOPO_DIR/underlay.pcap}
# Headers are enough (-s 256): the TCP transfers would make a big file.
sandbox_bg "$TOPO_DIR/dumpcap.log" ip netns exec "$TOPO_UL" dumpcap -q -P -i "$TOPO_BR" -s 256 -w "$PCAP"
CAP_PID=$SANDBOX_LAST_PID

say "Underlay (MTU $MTU, overlay MTU $(topo_overlay_mtu))"
cat <<EOF
  underlay 10.99.3.0/24: bridge $TOPO_BR (10.99.3.1) in namespace $TOPO_UL
  gateway   $GW_IP     namespace $GW_NS: enrollment HTTPS 8443, control mTLS 5555, admin API 127.0.0.1:8080
  instance  underlay IP   NIC MAC            tag nsx:network
  vm1       10.99.3.11    $(topo_mac vm1)  web
  vm2       10.99.3.12    $(topo_mac vm2)  app
  vm3       10.99.3.13    $(topo_mac vm3)  web
  edge      $GW_IP     the gateway host's agent: downlink eth0, uplink eth1 203.0.113.2/24
                          (secondary 203.0.113.10) to the cloud's NAT $TOPO_INET (203.0.113.1)
  internet  198.51.100.7  namespace $INTERNET, behind the cloud's NAT; elastic IPs
                          198.51.100.2 -> 203.0.113.2, 198.51.100.10 -> 203.0.113.10
EOF

say "Gateway: root CA, server certificate, bootstrap key (nsx-gateway init)"
printf '$ nsx-gateway init --dir %s --name %s --ip %s\n' "$GW_DIR" "$GW_NAME" "$GW_IP"
if gw_init >"$TOPO_DIR/gw-init.log" 2>&1; then
    indent <"$TOPO_DIR/gw-init.log"
    good "gateway initialised"
else
    indent <"$TOPO_DIR/gw-init.log"
    bad "nsx-gateway init"
    exit 1
fi

say "Desired state: one file, applied through the gateway (nsx-gateway apply)"
gw_state_sample "$TOPO_DIR/state.yaml"
gw_state_tier0 "$TOPO_DIR/state.yaml"
indent <"$TOPO_DIR/state.yaml"
printf '$ nsx-gateway apply -f state.yaml --dir %s\n' "$GW_DIR"
if gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/gw-apply.log" 2>&1; then
    indent <"$TOPO_DIR/gw-apply.log"
    good "state applied"
else
    indent <"$TOPO_DIR/gw-apply.log"
    bad "nsx-gateway apply"
    exit 1
fi
show "$NSX_GATEWAY" get switches --dir "$GW_DIR"
show "$NSX_GATEWAY" get routers --dir "$GW_DIR"
if gw_start 2>"$TOPO_DIR/gw-start.err"; then
    good "nsx-gateway serve running in namespace $GW_NS"
else
    indent <"$TOPO_DIR/gw-start.err"
    bad "nsx-gateway serve"
    exit 1
fi

say "The gateway host is also the edge: an agent with an uplink, enrolled as the edge"
printf '$ grep -E "^\\[|^nic|^uplink|^tags" %s    # the rest as vm1'"'"'s below\n' "$(gw_agent_config_path edge)"
GW_HOST_EXTRA="uplink = \"eth1\"" gw_agent_config edge ""
grep -E '^\[|^nic|^uplink|^tags' "$(gw_agent_config_path edge)" | indent
if gw_edge_start 2>"$TOPO_DIR/edge/start.err" && gw_wait_state edge ESTABLISHED 15; then
    m=$(gw_status edge .mode 2>/dev/null || true)
    printf '  status: mode %s, gateway connection %s\n' "${m:-?}" "$(gw_status edge .gateway.state 2>/dev/null || echo '?')"
    if [[ "$m" == edge ]]; then good "the edge enrolled with role edge; the gateway pushes it the tier-0"; else bad "the edge's mode is ${m:-unknown}"; fi
else
    indent <"$TOPO_DIR/edge/start.err"
    bad "the edge does not start"
    exit 1
fi

say "Agents: only the gateway address, its CA and the bootstrap key"
for vm in vm1 vm2; do
    case $vm in vm2) tag=app ;; *) tag=web ;; esac
    gw_agent_config "$vm" "$tag"
done
printf '$ cat %s\n' "$(gw_agent_config_path vm1)"
indent <"$(gw_agent_config_path vm1)"
for vm in vm1 vm2; do
    if gw_agent_start "$vm"; then
        good "agent $vm enrolled, got its config from the gateway and runs"
    else
        bad "agent $vm does not start"
        exit 1
    fi
done

say "vm3 joins the seed's way: the install script the gateway serves on 8080"
# In vm3's network namespace, with the /sys of that namespace; the gateway's
# name resolves through a bind-mounted /etc/hosts, as Route53 does in the seed.
VM3_DL=$TOPO_DIR/vm3/dl VM3_PREFIX=$TOPO_DIR/vm3/prefix
mkdir -p "$VM3_DL"
printf '%s %s\n' "$GW_IP" "$GW_NAME" >"$TOPO_DIR/hosts"
url="http://$GW_NAME:8080/factory_default/bookworm_$(case $(uname -m) in aarch64) echo arm64 ;; *) echo amd64 ;; esac)/install_nsx_vm_agent.sh"
printf '$ wget %s; chmod +x install_nsx_vm_agent.sh\n' "$url"
# shellcheck disable=SC2016 # expanded by the inner sh
if in_inst vm3 unshare --mount sh -c 'mount --bind "$1" /etc/hosts && cd "$2" && timeout 60 wget -q "$3" && chmod +x install_nsx_vm_agent.sh' \
    sh "$TOPO_DIR/hosts" "$VM3_DL" "$url"; then
    good "vm3 downloaded install_nsx_vm_agent.sh ($(grep -c '' "$VM3_DL/install_nsx_vm_agent.sh") lines, gateway address and CA fingerprint written in)"
else
    bad "wget of the install script"
    exit 1
fi
printf '$ sudo ./install_nsx_vm_agent.sh --tag nsx:network=web --instance-id vm3 --prefix %s --no-systemd --netns %s\n' "$VM3_PREFIX" "$(topo_root vm3)"
if nsenter --net="/run/netns/$(topo_ns vm3)" unshare --mount --propagation unchanged \
    sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
    timeout 120 "$VM3_DL/install_nsx_vm_agent.sh" --tag nsx:network=web --instance-id vm3 \
    --prefix "$VM3_PREFIX" --no-systemd --netns "$(topo_root vm3)" >"$TOPO_DIR/vm3-install.log" 2>&1; then
    indent <"$TOPO_DIR/vm3-install.log"
    good "vm3 installed, enrolled and connected by the install script"
else
    indent <"$TOPO_DIR/vm3-install.log"
    bad "install_nsx_vm_agent.sh on vm3"
    exit 1
fi
# The rest of the demo reaches vm3's agent where it reaches the others'.
ln -sf "$VM3_PREFIX/var/run/nsx-agent/nsxagent.sock" "$(topo_socket vm3)"
if [[ -x /usr/sbin/sshd ]]; then
    # As in the seed: with the defaults the script installs, an overlay
    # instance's sshd answers on the underlay at 8888 (22 is through the overlay).
    for ((i = 0; i < 30; i++)); do
        # shellcheck disable=SC2016 # expanded by the inner bash
        banner=$(timeout 3 ip netns exec "$(topo_ns vm1)" bash -c 'exec 3<>"/dev/tcp/$1/8888" && IFS= read -r -t 2 l <&3 && printf "%s" "$l"' \
            _ "$(topo_underlay_ip vm3)" 2>/dev/null | tr -d '\r') || banner=""
        [[ "$banner" == SSH-* ]] && break
        sleep 0.3
    done
    printf '$ nc %s 8888    # from vm1, on the underlay\n  %s\n' "$(topo_underlay_ip vm3)" "${banner:-no answer}"
    if [[ "$banner" == SSH-2.0-OpenSSH* ]]; then good "vm3's sshd answers on its underlay address at port 8888"; else bad "vm3: sshd on 8888"; fi
fi
declare -A OIP
for vm in vm1 vm2 vm3; do
    gw_wait_state "$vm" ESTABLISHED 15 || bad "$vm: gateway connection ESTABLISHED"
    agent_wait_overlay "$vm" || bad "$vm: nsx-eth0 up"
    OIP[$vm]=$(gw_instance "$vm" .ip 2>/dev/null || echo none)
done
show "$NSX_GATEWAY" get instances --dir "$GW_DIR"
say "Gateway connection status of the agents (nsx-agent ctl --socket ... status | jq .gateway)"
for vm in vm1 vm2 vm3; do
    g=$(gw_status "$vm" '.gateway | "state \(.state), peer \(.peer), since \(.since_unix | todate), applied version \(.applied_version), last error \(.last_error // "none")"' 2>/dev/null) || g=""
    printf '  %s: %s\n' "$vm" "${g:-no status}"
    if [[ "$g" == "state ESTABLISHED"* ]]; then good "$vm connected to the gateway"; else bad "$vm gateway connection status"; fi
done
# placed VM PREFIX SWITCH
placed() {
    if [[ "${OIP[$1]}" == "$2"* ]]; then good "$1 placed on $3 by its tag: ${OIP[$1]}"; else bad "$1 placement (${OIP[$1]})"; fi
}
placed vm1 192.168.100. web-ls
placed vm2 192.168.99. app-ls
placed vm3 192.168.100. web-ls

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
demo_ping vm1 "${OIP[vm3]}" "vm1 -> vm3, same switch web-ls"
demo_ping vm2 "${OIP[vm1]}" "vm2 (app-ls) -> vm1 (web-ls), routed: the replies show ttl=63"
demo_ping vm3 "${OIP[vm2]}" "vm3 (web-ls) -> vm2 (app-ls), routed"

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
demo_tcp vm1 vm2 "${OIP[vm2]}" 20
demo_tcp vm2 vm3 "${OIP[vm3]}" 20

say "On the wire: one routed echo request (vm2 -> vm1), decoded by tshark"
sleep 0.5
kill -INT "$CAP_PID" 2>/dev/null || true
sandbox_wait_exit "$CAP_PID" 5 || true
routed="ip.proto#1==17 && geneve && icmp && ip.addr#2==${OIP[vm2]} && ip.addr#2==${OIP[vm1]}"
decoded=$(tshark -n -r "$PCAP" -Y "$routed && icmp.type==8" -O geneve 2>/dev/null | awk '/^Frame /{n++} n==1')
# Every routed request vm2 -> vm1 in 0x238c, every reply in 0x2388, inner TTL 63.
wrong=$(tshark -n -r "$PCAP" -o udp.check_checksum:TRUE 2>/dev/null -Y "$routed && !(
    (icmp.type==8 && ip.src#2==${OIP[vm2]} && geneve.vni==0x238c && ip.ttl#2==63) ||
    (icmp.type==0 && ip.src#2==${OIP[vm1]} && geneve.vni==0x2388 && ip.ttl#2==63))
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
    good "Geneve with the C flag and the VMware option (class 0x0104, type 0x80): the request travels in web-ls's VNI 0x238c, the reply in app-ls's 0x2388, inner TTL 63"
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

NSXCLI=${NSXCLI:-$(dirname "$NSX_AGENT")/nsxcli}
# nsxcli_show CMD REGEX LABEL [vmN]: run CMD against vmN's agent (vm1 by
# default) as the seed shows it, check REGEX.
nsxcli_show() {
    local out vm=${4:-vm1}
    printf '%s> %s\n' "$(hostname)${4:+ ($vm)}" "$1"
    out=$("$NSXCLI" --socket "$(topo_socket "$vm")" -c "$1" 2>&1) || true
    indent <<<"$out"
    if grep -qE "$2" <<<"$out"; then good "$3"; else bad "$3"; fi
}
# nsxcli_gw_show CMD REGEX LABEL: the same against the gateway's admin API
# (nsxcli --gateway, in the gateway's namespace).
nsxcli_gw_show() {
    local out
    printf '%s(gateway)> %s\n' "$(hostname)" "$1"
    out=$(in_gw timeout 20 "$NSXCLI" --gateway --dir "$GW_DIR" -c "$1" 2>&1) || true
    indent <<<"$out"
    if grep -qE "$2" <<<"$out"; then good "$3"; else bad "$3"; fi
}
[[ -x "$NSXCLI" ]] || bad "no nsxcli binary at $NSXCLI"

say "North-south: the edge routes and NATs between the overlay and the internet"
WWW=$TOPO_DIR/www
mkdir -p "$WWW"
echo "hello from the internet" >"$WWW/index.html"
HLOG=$TOPO_DIR/internet-http.log
sandbox_bg "$HLOG" in_internet python3 -m http.server 8080 --bind 198.51.100.7 --directory "$WWW"
for ((i = 0; i < 50; i++)); do in_internet ss -ltnH '( sport = :8080 )' | grep -q . && break; sleep 0.1; done
# last_get LOG: the last GET line of a python http.server log.
last_get() { grep '"GET ' "$1" 2>/dev/null | tail -n 1 || true; }
printf '$ ip netns exec %s curl -s http://198.51.100.7:8080/    # vm1 (%s) -> the internet host\n' "$(topo_root vm1)" "${OIP[vm1]}"
out=$(in_overlay vm1 curl -s --max-time 10 http://198.51.100.7:8080/ 2>&1 || true)
indent <<<"$out"
line=$(last_get "$HLOG")
printf '  the server logs: %s\n' "${line:-nothing}"
if [[ "$out" == "hello from the internet" && "$line" == "198.51.100.2 "* ]]; then
    good "vm1 reached the internet; the server saw the SNAT address: the uplink's 203.0.113.2, as the cloud NAT's elastic IP 198.51.100.2"
else
    bad "vm1 -> the internet host, SNATed (server log: ${line:-none})"
fi
V3LOG=$TOPO_DIR/vm3-http.log
echo "hello from vm3" >"$WWW/vm3.html"
sandbox_bg "$V3LOG" in_overlay vm3 python3 -m http.server 8080 --bind "${OIP[vm3]}" --directory "$WWW"
printf '$ curl -X PATCH -H "Authorization: Bearer ..." http://127.0.0.1:8080/api/v1/instances/vm3 -d '"'"'{"tags": {"nsx:publicip": "203.0.113.10"}}'"'"'\n'
gw_api PATCH /api/v1/instances/vm3 '{"tags": {"nsx:publicip": "203.0.113.10"}}' >"$TOPO_DIR/patch.json"
printf '  HTTP %s; vm3 tags: %s\n' "$GW_HTTP_CODE" "$(gw_instance vm3 '.tags | to_entries | map("\(.key)=\(.value)") | join(" ")' 2>/dev/null || echo '?')"
if [[ "$GW_HTTP_CODE" == 200 ]] && gw_wait_applied edge "$(gw_desired_version edge)" 10; then
    good "vm3 tagged nsx:publicip=203.0.113.10 at the gateway; the edge applied its new config"
else
    bad "tagging vm3 nsx:publicip=203.0.113.10 (HTTP $GW_HTTP_CODE: $(cat "$TOPO_DIR/patch.json"))"
fi
printf '$ ip netns exec %s curl -s http://198.51.100.10:8080/vm3.html    # the internet host -> vm3'"'"'s elastic IP\n' "$INTERNET"
out=""
for ((i = 0; i < 10; i++)); do
    out=$(in_internet curl -s --max-time 3 --interface 198.51.100.7 http://198.51.100.10:8080/vm3.html 2>&1) && break
    sleep 0.2
done
indent <<<"$out"
line=$(last_get "$V3LOG")
printf '  vm3'"'"'s server logs: %s\n' "${line:-nothing}"
if [[ "$out" == "hello from vm3" && "$line" == "198.51.100.7 "* ]]; then
    good "the internet host reached vm3 at 198.51.100.10 (cloud NAT -> 203.0.113.10 -> edge -> ${OIP[vm3]}); vm3 sees the client's own address"
else
    bad "the internet host -> vm3's elastic IP (vm3's log: ${line:-none})"
fi
nsxcli_gw_show "get logical-router t0 nat-rules" "DNAT +any +203\.0\.113\.10 +${OIP[vm3]//./\\.} " \
    "the tier-0's NAT rules: vm3's DNAT+SNAT pair, then the overlay's SNAT to 203.0.113.2"
printf '%s (edge)> get nat sessions\n' "$(hostname)"
out=$("$NSXCLI" --socket "$(topo_socket edge)" -c "get nat sessions" 2>&1) || true
indent <<<"$out"
if grep -qE "^tcp +${OIP[vm1]//./\\.}:[0-9]+ +203\.0\.113\.2:[0-9]+ +198\.51\.100\.7:8080 .* snat *$" <<<"$out"; then
    good "the edge's NAT sessions: vm1's curl out, translated to 203.0.113.2"
else
    bad "get nat sessions at the edge: vm1's session"
fi
if grep -qE "^tcp +${OIP[vm3]//./\\.}:8080 +203\.0\.113\.10:8080 +198\.51\.100\.7:[0-9]+ .* public-ip in *$" <<<"$out"; then
    good "... and the internet host's connection to vm3's public IP"
else
    bad "get nat sessions at the edge: the connection to vm3's public IP"
fi

say "L4 load balancer: the seed's keepalived.conf, imported at the gateway, balanced at the client's agent"
# The seed's example as written (one line), its real servers
# 192.168.1.100:8089 and .101:18089 being vm2 and vm3 here.
NSTOOL=$ROOT/tests/lib/nstool.py
for rs in vm2:8089 vm3:18089; do
    vm=${rs%%:*}
    mkdir -p "$TOPO_DIR/lb-$vm"
    echo "hello from $vm" >"$TOPO_DIR/lb-$vm/index.html"
    sandbox_bg "$TOPO_DIR/lb-$vm.log" in_overlay "$vm" python3 "$NSTOOL" http-serve "${OIP[$vm]}" "${rs#*:}" "$TOPO_DIR/lb-$vm" 600
done
for rs in vm2:8089 vm3:18089; do
    vm=${rs%%:*}
    wait_for 10 in_overlay "$vm" bash -c "exec 3<>/dev/tcp/${OIP[$vm]}/${rs#*:}" 2>/dev/null ||
        bad "$vm's web server on port ${rs#*:} does not listen"
done
KCONF=$TOPO_DIR/keepalived.conf
echo "virtual_server 10.64.1.2 10000 { delay_loop 20 lb_algo rr lb_kind NAT persistent_timeout 10 protocol TCP real_server ${OIP[vm2]} 8089 { weight 1 } real_server ${OIP[vm3]} 18089 { weight 1 } }" >"$KCONF"
printf '$ cat keepalived.conf\n'
indent <"$KCONF"
printf '$ nsx-gateway lb import keepalived.conf --dir %s\n' "$GW_DIR"
if in_gw timeout 20 "$NSX_GATEWAY" lb import "$KCONF" --dir "$GW_DIR" >"$TOPO_DIR/lb-import.out" 2>&1 &&
    gw_wait_applied vm1 "$(gw_desired_version vm1)" 10; then
    indent <"$TOPO_DIR/lb-import.out"
    good "the seed's virtual server imported as written, applied by vm1's agent"
else
    indent <"$TOPO_DIR/lb-import.out"
    bad "lb import of the seed's keepalived.conf"
fi
# vip_get: vm1's GET of the virtual server (what answered).
vip_get() { in_overlay vm1 curl -s --max-time 5 http://10.64.1.2:10000/ 2>&1 || true; }
printf '$ ip netns exec %s curl -s http://10.64.1.2:10000/    # twice, then again after 11 s\n' "$(topo_root vm1)"
first=$(vip_get)
again=$(vip_get)
sleep 11
later=$(vip_get)
printf '  %s\n  %s\n  (11 s later) %s\n' "${first:-nothing}" "${again:-nothing}" "${later:-nothing}"
if [[ "$first" == "hello from vm"* && "$again" == "$first" && "$later" == "hello from vm"* && "$later" != "$first" ]]; then
    good "persistent 10: vm1 stays on one real server, then rr moves it to the other: both answer"
else
    bad "the seed's virtual server answering from both real servers"
fi
nsxcli_show "get load-balancers" "^TCP  10\.64\.1\.2:10000 rr persistent 10" \
    "the ipvsadm -Ln view at vm1's agent, which balanced its own connections"

say "Distributed firewall: a rule added at the gateway, enforced at every instance"
sandbox_bg "$TOPO_DIR/echo22.log" in_overlay vm1 timeout 120 socat TCP-LISTEN:22,fork,reuseaddr EXEC:cat
for ((i = 0; i < 50; i++)); do in_overlay vm1 ss -ltn | grep -q ':22 ' && break; sleep 0.1; done
# try_ssh FROM: one line to vm1:22 (an echo service), prints the answer or the error.
try_ssh() {
    echo "hello from $1" | in_overlay "$1" timeout 5 socat -t 1 - "TCP:${OIP[vm1]}:22,connect-timeout=3" 2>&1 |
        sed 's/^.*socat\[[0-9]*\] E //' || true
}
printf '  before: vm2 -> vm1:22 answers "%s"\n' "$(try_ssh vm2)"
cat >"$TOPO_DIR/fw.yaml" <<'EOF'
firewall:
  groups:
    - name: web-tier
      match: {switch: [web-ls]}
  sections:
    - name: domain-c25
      rules:
        - id: 1006
          sources: [group:web-tier]
          destinations: [group:web-tier]
          services: [{protocol: tcp, port: 22}]
          action: accept
          log: true
        - id: 1005
          services: [{protocol: icmp}]
          action: accept
  default_rule: {id: 1002, action: reject, log: true}
EOF
cat "$TOPO_DIR/state.yaml" "$TOPO_DIR/fw.yaml" >"$TOPO_DIR/state-fw.yaml"
printf '$ cat >> state.yaml   # ssh only inside the web tier, everything else rejected\n'
indent <"$TOPO_DIR/fw.yaml"
printf '$ nsx-gateway apply -f state.yaml --dir %s\n' "$GW_DIR"
if gw_apply "$TOPO_DIR/state-fw.yaml" >"$TOPO_DIR/gw-apply-fw.log" 2>&1; then
    indent <"$TOPO_DIR/gw-apply-fw.log"
    for vm in vm1 vm2 vm3; do gw_wait_applied "$vm" "$(gw_desired_version "$vm")" 10 || bad "$vm applies the rules"; done
    good "rules applied; every agent acked its new version"
else
    indent <"$TOPO_DIR/gw-apply-fw.log"
    bad "nsx-gateway apply (firewall)"
fi
a3=$(try_ssh vm3)
a2=$(try_ssh vm2)
printf '  vm3 (web-ls) -> vm1:22: %s\n  vm2 (app-ls) -> vm1:22: %s\n' "$a3" "$a2"
if [[ "$a3" == "hello from vm3" ]]; then good "vm3, in the web tier, still reaches vm1:22"; else bad "vm3 -> vm1:22 after the rule"; fi
if grep -q "Connection refused" <<<"$a2"; then good "vm2 is refused at once (a RST from its own agent's firewall)"; else bad "vm2 -> vm1:22 should be refused"; fi
# An ssh-like session vm3 -> vm1:22 held open (bounded) for getflows.
sandbox_bg "$TOPO_DIR/session.log" bash -c "sleep 30 | ip netns exec $(topo_root vm3) timeout 40 socat - TCP:${OIP[vm1]}:22"
# Bounded wait (10 s) until vm1's firewall tracks it.
for ((i = 0; i < 100; i++)); do
    "$NSX_AGENT" ctl --socket "$(topo_socket vm1)" getflows 2>/dev/null | grep -q 'ssh(22)' && break
    sleep 0.1
done
show "$NSX_AGENT" ctl --socket "$(topo_socket vm1)" getrules
show "$NSX_AGENT" ctl --socket "$(topo_socket vm1)" getaddrsets
show "$NSX_AGENT" ctl --socket "$(topo_socket vm1)" getflows
# The packet-log writer runs once a second: bounded wait (10 s) for the line.
for ((i = 0; i < 100; i++)); do
    grep -q "INET match REJECT domain-c25/1002 OUT" "$TOPO_DIR/vm2/dfwpktlogs.log" 2>/dev/null && break
    sleep 0.1
done
printf '$ tail -n 3 %s   # dfwpktlogs.log of vm2\n' "$TOPO_DIR/vm2/dfwpktlogs.log"
tail -n 3 "$TOPO_DIR/vm2/dfwpktlogs.log" 2>/dev/null | indent
if grep -q "INET match REJECT domain-c25/1002 OUT" "$TOPO_DIR/vm2/dfwpktlogs.log" 2>/dev/null; then
    good "the refused connection is in vm2's packet log"
else
    bad "vm2's packet log"
fi

say "nsxcli on vm1: the operator's shell (nsxcli -c ..., or interactive)"
if [[ -x "$NSXCLI" ]]; then
    nsxcli_show "get gateway connection status" "^Connection Status : ESTABLISHED" "gateway connection status as in the seed"
    nsxcli_show "get vm-network-mode" "^VM-Network-Mode : overlay" "vm-network-mode"
    nsxcli_show "trace port tcp src ${OIP[vm1]} dst ${OIP[vm2]} sport 40000 dport 22 flags S" \
        "rule 1002|reject" "trace: vm1 -> vm2:22 is rejected by rule 1002 (vm2 is not in the web tier)"
    nsxcli_show "trace port icmp src ${OIP[vm1]} dst ${OIP[vm2]} ttl 64" \
        "vni 0x2388" "trace: a ping vm1 -> vm2 is routed and encapsulated in app-ls's VNI"
    nsxcli_show "get firewall flows" "ssh\\(22\\)" "firewall flows of vm1"
    # vm3 was installed with the defaults: its nsx-eth0 got its address by
    # DHCP, from the DHCP client its agent runs, answered by that agent.
    nsxcli_show "get dhcp leases" "^web-ls +${OIP[vm3]//./\\.} .* bound " \
        "vm3 (installed with the defaults) got ${OIP[vm3]} by DHCP from its own agent" vm3
    nsxcli_show "get dhcp server web-ls" "^Server Identifier : " "the switch's DHCP server, as vm3's agent answers it" vm3
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
  The gateway's inventory and admin API (token in $GW_DIR/admin.token):
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net $NSX_GATEWAY get instances --dir $GW_DIR
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net ip netns exec $GW_NS \\
      curl -s -H "Authorization: Bearer \$(cat $GW_DIR/admin.token)" http://127.0.0.1:8080/api/v1/instances
  The internet host (198.51.100.7; vm3 is at http://198.51.100.10:8080/vm3.html):
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net ip netns exec $INTERNET bash
  The edge's NAT sessions (its agent runs in the gateway's namespace $GW_NS):
    nsenter --target $NSX_SANDBOX_HOST_PID --user --mount --net $NSXCLI --socket $(topo_socket edge) -c "get nat sessions"
  Agent logs (inside the sandbox's mount namespace): $TOPO_DIR/vmN/agent.log, $TOPO_DIR/edge/agent.log; gateway: $TOPO_DIR/gateway.log
EOF
# In the background so that INT/TERM are handled at once (bash runs traps
# only between commands; `wait` is interruptible).
while true; do
    sleep 3600 &
    wait $! || true
done
