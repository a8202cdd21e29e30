#!/usr/bin/env bash
# tests/lib/gw.sh -- gateway-mode helpers for the end-to-end tests and the
# demo (source after tests/lib/e2e.sh, inside the sandbox).
#
#   gw_init_bin                  find nsx-gateway ($NSX_GATEWAY, else next to
#                                $NSX_AGENT, else target/{release,debug})
#   gw_topology ID MTU vmN...    underlay + instances (topo.sh, no ports) + the
#                                gateway namespace $TOPO_ID-gw at 10.99.3.2
#   gw_init [ARGS]               nsx-gateway init in $GW_DIR (name nsx-gw.vmware.local, ip 10.99.3.2)
#   gw_apply FILE                nsx-gateway apply (CLI)
#   gw_state_sample FILE         the seed's switches (web-ls/app-ls, router t1) as YAML
#   gw_state_firewall FILE [RULES]  ... plus the seed's ssh policy (rules 1006, 1002)
#   gw_start / gw_stop / gw_kill serve in the gateway namespace (bounded readiness wait);
#                                SIGTERM (bounded) / SIGKILL
#   gw_cli ARGS...               nsx-gateway ARGS --dir $GW_DIR (bounded)
#   gw_api METHOD PATH [BODY]    admin REST call from inside the gateway netns;
#                                body on stdout, HTTP status in $GW_HTTP_CODE
#                                (call it in this shell, e.g. `gw_api ... >file`)
#   gw_agent_config vmN TAG [CA] [BOOTSTRAP]  write a gateway-mode agent config
#                                (no desired state); TAG "" = no nsx:network tag;
#                                $GW_TAGS_EXTRA (e.g. 'role = "web"') adds tags,
#                                $GW_HOST_EXTRA adds [host] lines; the agent
#                                starts no sshd unless TOPO_SSH=on
#   gw_agent_start vmN [-n]      start the agent with that config; waits for its API
#                                (-n: do not wait: enrollment refusals exit at once)
#   gw_status vmN [JQ]           `ctl status` (or one value of it)
#   gw_wait_state vmN STATE [SECS]      bounded wait for .gateway.state
#   gw_wait_applied vmN VERSION [SECS]  bounded wait for .gateway.applied_version
#   gw_instance ID [JQ]          one instance of `get instances --json`
#   gw_desired_version ID        the version the gateway wants ID to run
#   gw_edge_host / gw_edge_start the gateway host as the edge (instance "edge"
#                                in $GW_NS: downlink eth0, uplink eth1 to <id>-inet)
#   gw_state_tier0 FILE          append a tier0 section (uplink 203.0.113.2/24)
#   gw_setup ID MTU vmN:TAG...   topology, init, sample state, gateway, agents
#                                enrolled and ESTABLISHED in one call (bails on
#                                failure); overlay IPs in GW_IP_OF[vmN]
#   gw_edge_setup ID MTU vmN...  the same with the gateway host as the edge
#                                (tier0 in the state, the edge ESTABLISHED first)
# shellcheck shell=bash

GW_IP=10.99.3.2
GW_NAME=nsx-gw.vmware.local

gw_init_bin() {
    local d c best=""
    if [[ -n "${NSX_GATEWAY:-}" ]]; then
        [[ -x "$NSX_GATEWAY" ]] || { echo "NSX_GATEWAY=$NSX_GATEWAY is not executable" >&2; return 1; }
    elif [[ -n "${NSX_AGENT:-}" && -x "$(dirname "$NSX_AGENT")/nsx-gateway" ]]; then
        NSX_GATEWAY=$(dirname "$NSX_AGENT")/nsx-gateway
    else
        d=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
        for c in "$d/target/release/nsx-gateway" "$d/target/debug/nsx-gateway"; do
            [[ -x "$c" ]] || continue
            if [[ -z "$best" || "$c" -nt "$best" ]]; then best=$c; fi
        done
        [[ -n "$best" ]] || {
            echo "no nsx-gateway binary: build it (cargo build --release -p gateway) or set NSX_GATEWAY" >&2
            return 1
        }
        NSX_GATEWAY=$best
    fi
    export NSX_GATEWAY
    command -v curl >/dev/null && command -v openssl >/dev/null ||
        { echo "curl and openssl are required" >&2; return 1; }
}

# gw_topology ID MTU vmN...: instances without static ports + gateway netns.
gw_topology() {
    local id=$1 mtu=$2 vm
    shift 2
    topo_new "$id" "$mtu"
    for vm in "$@"; do topo_instance "$vm"; done
    topo_build
    GW_NS=$TOPO_ID-gw
    GW_DIR=$TOPO_DIR/gw
    GW_PID=""
    ip netns add "$GW_NS"
    sandbox_track_netns "$GW_NS"
    ip netns exec "$GW_NS" ip link set lo up
    in_ul ip link add ulport-gw type veth peer name eth0 netns "$GW_NS"
    in_ul ip link set ulport-gw mtu "$TOPO_MTU" master "$TOPO_BR" up
    ip netns exec "$GW_NS" ip link set eth0 mtu "$TOPO_MTU"
    ip netns exec "$GW_NS" ip addr add "$GW_IP/24" dev eth0
    ip netns exec "$GW_NS" ip link set eth0 up
    sandbox_on_exit gw_destroy
}

gw_destroy() {
    gw_stop 5 || true
    ip netns del "${GW_NS:-none}" 2>/dev/null || true
}

# in_gw CMD...: run in the gateway's namespace.
in_gw() { ip netns exec "$GW_NS" "$@"; }

gw_cli() { timeout 20 "$NSX_GATEWAY" "$@" --dir "$GW_DIR"; }

# shellcheck disable=SC2120 # callers may pass extra init flags (--force)
gw_init() {
    timeout 30 "$NSX_GATEWAY" init --dir "$GW_DIR" --name "$GW_NAME" --ip "$GW_IP" "$@"
}

gw_apply() { gw_cli apply -f "$1"; }

gw_state_sample() {
    cat >"$1" <<'EOF'
switches:
  - name: web-ls
    tag: web
    vni: 0x238c
    subnet: 192.168.100.0/24
    gateway_ip: 192.168.100.1
  - name: app-ls
    tag: app
    vni: 0x2388
    subnet: 192.168.99.0/24
    gateway_ip: 192.168.99.1
routers:
  - name: t1
    mac: 02:50:56:56:44:52
    switches: [web-ls, app-ls]
    routes: []
EOF
}

# gw_state_firewall FILE [RULES]: the sample switches plus the seed's ssh
# policy (groups admins/servers by tag role, rule 1006 admins -> servers
# tcp/22 accept with log, default 1002 reject with log); RULES (YAML rule
# items, indented 8 spaces) go after rule 1006.
gw_state_firewall() {
    gw_state_sample "$1"
    cat >>"$1" <<EOF
firewall:
  groups:
    - name: admins
      match: {tags: {role: admin}}
    - name: servers
      match: {tags: {role: server}}
  sections:
    - name: domain-c25
      rules:
        - id: 1006
          sources: [group:admins]
          destinations: [group:servers]
          services: [{protocol: tcp, port: 22}]
          action: accept
          log: true
${2:-}
  default_rule: {id: 1002, action: reject, log: true}
EOF
}

# gw_port_open PORT [HOST]: true if something accepts TCP on HOST:PORT (gw netns).
gw_port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    in_gw timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "${2:-$GW_IP}" "$1" 2>/dev/null
}

# gw_start [LOG] [DIR]: serve in the gateway netns; bounded (20 s) wait for
# 8443, 5555 and the admin API. Call it in this shell (records GW_PID).
# shellcheck disable=SC2120 # LOG and DIR are optional
gw_start() {
    local log=${1:-$TOPO_DIR/gateway.log} dir=${2:-$GW_DIR} i
    sandbox_bg "$log" nsenter --net="/run/netns/$GW_NS" "$NSX_GATEWAY" serve --dir "$dir"
    GW_PID=$SANDBOX_LAST_PID
    # shellcheck disable=SC2034 # used by the tests that source this file
    GW_LOG=$log
    for ((i = 0; i < 200; i++)); do
        if ! sandbox_alive "$GW_PID"; then
            echo "gateway exited during start; log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if gw_port_open 8443 && gw_port_open 5555 && gw_port_open 8080 127.0.0.1; then
            return 0
        fi
        sleep 0.1
    done
    echo "gateway did not listen on 8443/5555/8080 within 20 s; log:" >&2
    tail -n 20 "$log" >&2
    return 1
}

# gw_stop [SECS]: SIGTERM, bounded wait, then SIGKILL.
gw_stop() {
    [[ -n "${GW_PID:-}" ]] || return 0
    sandbox_kill "$GW_PID" "${1:-10}"
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
}

gw_kill() {
    [[ -n "${GW_PID:-}" ]] || return 0
    kill -KILL "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
}

# gw_api METHOD PATH [BODY]: admin API; body on stdout, status in GW_HTTP_CODE.
gw_api() {
    local method=$1 path=$2 body=${3-} out code
    out=$(mktemp)
    local args=(-s -m 10 -o "$out" -w '%{http_code}' -X "$method"
        -H "Authorization: Bearer $(cat "$GW_DIR/admin.token")")
    if [[ $# -ge 3 ]]; then
        args+=(-H "Content-Type: application/json" --data-binary "$body")
    fi
    code=$(in_gw curl "${args[@]}" "http://127.0.0.1:8080$path") || code=${code:-000}
    # shellcheck disable=SC2034 # used by the tests that source this file
    GW_HTTP_CODE=$code
    cat "$out"
    rm -f "$out"
}

gw_agent_config_path() { printf '%s\n' "$TOPO_DIR/$1/gw-agent.toml"; }

# gw_agent_config vmN TAG [CA] [BOOTSTRAP_KEY]
gw_agent_config() {
    local vm=$1 tag=$2 ca=${3:-$GW_DIR/ca.pem} bk=${4:-$GW_DIR/bootstrap.key} tags=() t
    [[ -n "$tag" ]] && tags+=("\"nsx:network\" = \"$tag\"")
    [[ -n "${GW_TAGS_EXTRA:-}" ]] && tags+=("$GW_TAGS_EXTRA")
    t=$(IFS=,; echo "${tags[*]}")
    mkdir -p "$TOPO_DIR/$vm/state"
    cat >"$(gw_agent_config_path "$vm")" <<EOF
# generated by tests/lib/gw.sh: gateway mode, no static desired state
[host]
nic = "eth0"
netns = "$(topo_root "$vm")"
state_dir = "$TOPO_DIR/$vm/state"
api_socket = "$(topo_socket "$vm")"
packet_log = "$TOPO_DIR/$vm/dfwpktlogs.log"
${GW_HOST_EXTRA:-}
$([[ "${TOPO_SSH:-off}" == on || "${GW_HOST_EXTRA:-}" == *ssh_* ]] || printf 'ssh_underlay_port = 0\nssh_overlay_port = 0')

[gateway]
control = "$GW_IP:5555"
enroll = "$GW_IP:8443"
ca = "$ca"
bootstrap_key = "$bk"
instance_id = "$vm"
image_id = "ami-nsx-e2e"
tags = { $t }
EOF
}

# gw_agent_start vmN [-n]: start vmN's agent with its gateway-mode config.
# Without -n: bounded wait (30 s) until its API answers (after the first
# config is applied). With -n: only start it (PID in TOPO_AGENT_PID).
gw_agent_start() {
    local vm=$1
    if [[ "${2:-}" == -n ]]; then
        local bin
        bin=$(topo_find_agent) || return 1
        sandbox_bg "$(agent_log "$vm")" \
            nsenter --net="/run/netns/$(topo_ns "$vm")" \
            unshare --mount --propagation unchanged \
            sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh \
            "$bin" run --config "$(gw_agent_config_path "$vm")"
        TOPO_AGENT_PID[$vm]=$SANDBOX_LAST_PID
        return 0
    fi
    agent_start "$vm" "$(gw_agent_config_path "$vm")"
}

# gw_status vmN [JQ]
gw_status() {
    local s
    s=$(agent_ctl "$1" status 2>/dev/null) || return 1
    if [[ $# -ge 2 ]]; then jq -r "$2" <<<"$s"; else printf '%s\n' "$s"; fi
}

# gw_wait_state vmN STATE [SECS]: bounded wait for the gateway connection state.
gw_wait_state() {
    local vm=$1 want=$2 secs=${3:-15} i
    for ((i = 0; i < secs * 10; i++)); do
        [[ "$(gw_status "$vm" '.gateway.state' 2>/dev/null)" == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# gw_wait_not_state vmN STATE [SECS]: bounded wait until the state differs.
gw_wait_not_state() {
    local vm=$1 want=$2 secs=${3:-15} i s
    for ((i = 0; i < secs * 20; i++)); do
        s=$(gw_status "$vm" '.gateway.state' 2>/dev/null) || s=""
        [[ -n "$s" && "$s" != "$want" ]] && return 0
        sleep 0.05
    done
    return 1
}

# gw_wait_applied vmN VERSION [SECS]
gw_wait_applied() {
    local vm=$1 want=$2 secs=${3:-15} i
    for ((i = 0; i < secs * 10; i++)); do
        [[ "$(gw_status "$vm" '.gateway.applied_version' 2>/dev/null)" == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# gw_instance ID [JQ]: from `nsx-gateway get instances --json`.
gw_instance() {
    local id=$1 q=${2:-.}
    gw_cli get instances --json | jq -er --arg id "$id" \
        "(if type == \"array\" then . else (.instances // .) end) | map(select((.id // .instance_id) == \$id)) | .[0] | $q"
}

# gw_desired_version ID: the version the gateway pushes to ID.
gw_desired_version() {
    gw_api GET "/api/v1/instances/$1/config" | jq -er .version
}

# gw_wait_ping_ms vmN DST [SECS]: ping every 10 ms until one answers; print
# milliseconds elapsed; non-zero if nothing answered within SECS.
gw_wait_ping_ms() {
    local vm=$1 dst=$2 secs=${3:-10} t0 t1 out
    t0=$(date +%s%N)
    out=$(timeout $((secs + 2)) ip netns exec "$(topo_root "$vm")" \
        ping -n -i 0.01 -W 1 -w "$secs" -c 1 "$dst" 2>&1) || return 1
    t1=$(date +%s%N)
    grep -q ' 1 received' <<<"$out" || return 1
    echo $(((t1 - t0) / 1000000))
}

# gw_setup ID MTU vmN:TAG...: the whole gateway-driven picture in one call:
# topology, init, the sample state ($TOPO_DIR/state.yaml) applied, gateway
# serving, each agent enrolled with its tag and ESTABLISHED (TAG "-":
# instance built, no agent); bails (TAP) on any failure. The allocated
# overlay IPs land in the associative array GW_IP_OF[vmN].
gw_setup() { gw_setup_with "" "$@"; }

# gw_edge_setup ID MTU vmN...: gw_setup with the gateway host as the edge
# (as the seed's PCG; e2e 53, 55, 56): gw_edge_host (the uplink's gateway
# 203.0.113.1/24 in $TOPO_INET), the state with its tier0
# (gw_state_tier0), the edge started and ESTABLISHED before the
# instances, every vmN on web-ls (tag web). The tests append to
# $TOPO_DIR/state.yaml and apply it again.
gw_edge_setup() {
    local id=$1 mtu=$2 vm specs=()
    shift 2
    for vm in "$@"; do specs+=("$vm:web"); done
    gw_setup_with edge "$id" "$mtu" "${specs[@]}"
}

# gw_setup_with EDGE ID MTU vmN:TAG...: gw_setup's steps; EDGE "edge" adds
# gw_edge_setup's.
gw_setup_with() {
    local edge=$1 id=$2 mtu=$3 spec vm vms=()
    shift 3
    for spec in "$@"; do vms+=("${spec%%:*}"); done
    gw_init_bin || bail "nsx-gateway binary"
    gw_topology "$id" "$mtu" "${vms[@]}"
    [[ -z "$edge" ]] || gw_edge_host 203.0.113.1/24
    topo_wait_underlay || bail "underlay up"
    gw_init >"$TOPO_DIR/gw-init.log" 2>&1 || bail "nsx-gateway init" "$(cat "$TOPO_DIR/gw-init.log")"
    gw_state_sample "$TOPO_DIR/state.yaml"
    [[ -z "$edge" ]] || gw_state_tier0 "$TOPO_DIR/state.yaml"
    gw_apply "$TOPO_DIR/state.yaml" >"$TOPO_DIR/gw-apply.log" 2>&1 ||
        bail "nsx-gateway apply${edge:+ of the state with its tier0}" "$(cat "$TOPO_DIR/gw-apply.log")"
    gw_start 2>"$TOPO_DIR/gw-start.err" || bail "gateway starts" "$(cat "$TOPO_DIR/gw-start.err")"
    if [[ -n "$edge" ]]; then
        gw_edge_start 2>"$TOPO_DIR/$GW_EDGE/start.err" || bail "the edge starts" "$(cat "$TOPO_DIR/$GW_EDGE/start.err")"
        gw_wait_state "$GW_EDGE" ESTABLISHED 15 ||
            bail "the edge: gateway connection ESTABLISHED" "$(gw_status "$GW_EDGE" .gateway)"
    fi
    declare -gA GW_IP_OF=()
    vms=()
    for spec in "$@"; do
        vm=${spec%%:*}
        [[ "${spec#*:}" == - ]] && continue
        vms+=("$vm")
        gw_agent_config "$vm" "${spec#*:}"
        gw_agent_start "$vm" 2>"$TOPO_DIR/$vm/start.err" ||
            bail "agent $vm enrolls and starts" "$(cat "$TOPO_DIR/$vm/start.err")"
    done
    for vm in "${vms[@]}"; do
        gw_wait_state "$vm" ESTABLISHED 15 || bail "agent $vm: gateway connection ESTABLISHED" "$(gw_status "$vm" .gateway)"
        GW_IP_OF[$vm]=$(gw_instance "$vm" '.ip // ""' 2>/dev/null || true)
        if [[ -n "${GW_IP_OF[$vm]}" ]]; then
            agent_wait_overlay "$vm" || bail "agent $vm: nsx-eth0 up"
        elif [[ -n "$edge" ]]; then
            bail "agent $vm: an overlay address on web-ls" "$(gw_instance "$vm" 2>&1)"
        fi
    done
    diag "$(gw_cli get instances)"
}

# ping_report LOG: "SENT RECEIVED" of a finished ping log (empty if none).
ping_report() {
    local tx rx
    tx=$(grep -oE '^[0-9]+ packets transmitted' "$1" | cut -d' ' -f1 || true)
    rx=$(grep -oE '[0-9]+ received' "$1" | cut -d' ' -f1 || true)
    [[ -n "$tx" && -n "$rx" ]] && echo "$tx $rx"
}

# enroll_body KEY_PEM INSTANCE_ID [NONCE] [TIMESTAMP]: an enrollment request
# built with openssl only (fresh P-256 key + CSR, payload JSON, ECDSA-SHA256
# signature with KEY_PEM, key id = SHA-256 of the uncompressed public point),
# as gateway/README.md describes it. The CSR's key lands in $TOPO_DIR/ID.key.
enroll_body() {
    local key=$1 id=$2 nonce=${3:-} ts=${4:-} csr payload sig kid tmp
    [[ -n "$nonce" ]] || nonce=$(openssl rand -hex 16)
    [[ -n "$ts" ]] || ts=$(date +%s)
    tmp=$(mktemp -d)
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$TOPO_DIR/$id.key" -subj "/CN=$id" -out "$tmp/csr.pem" 2>/dev/null || { rm -rf "$tmp"; return 1; }
    csr=$(cat "$tmp/csr.pem")
    payload=$(jq -cn --arg csr "$csr" --arg id "$id" --arg n "$nonce" --argjson ts "$ts" \
        '{csr_pem: $csr, instance: {instance_id: $id, hostname: $id, os: "linux", image_id: "ami-nsx-e2e",
          tags: {"nsx:network": "web"}, underlay_ip: "10.99.3.99", nic_mac: "06:17:1e:54:96:63"},
          timestamp: $ts, nonce: $n}')
    printf '%s' "$payload" >"$tmp/payload"
    sig=$(openssl dgst -sha256 -sign "$key" "$tmp/payload" | base64 -w0) || { rm -rf "$tmp"; return 1; }
    kid=$(openssl pkey -in "$key" -pubout -outform DER 2>/dev/null | tail -c 65 | sha256sum | cut -c1-64)
    rm -rf "$tmp"
    jq -cn --arg p "$payload" --arg s "$sig" --arg k "$kid" '{payload: $p, signature: $s, key_id: $k}'
}

# enroll_post BODY_FILE: POST it to https://GATEWAY:8443/api/v1/enroll from
# the underlay namespace (server verified against $GW_DIR/ca.pem); prints
# "HTTP_CODE BODY".
enroll_post() {
    local out code
    out=$(mktemp)
    code=$(in_ul curl -s -m 10 --cacert "$GW_DIR/ca.pem" --resolve "$GW_NAME:8443:$GW_IP" \
        -H 'Content-Type: application/json' --data-binary "@$1" -o "$out" -w '%{http_code}' \
        "https://$GW_NAME:8443/api/v1/enroll") || true
    printf '%s %s\n' "${code:-000}" "$(cat "$out")"
    rm -f "$out"
}

# gw_agent_expect_exit vmN [SECS]: start vmN's agent (-n) and wait (bounded)
# for it to exit; prints its exit status (or "running" after SECS).
gw_agent_expect_exit() {
    local vm=$1 secs=${2:-20} pid rc=0
    gw_agent_start "$vm" -n
    pid=${TOPO_AGENT_PID[$vm]}
    if sandbox_wait_exit "$pid" "$secs"; then
        wait "$pid" 2>/dev/null || rc=$?
        TOPO_AGENT_PID[$vm]=""
        echo "$rc"
    else
        echo running
    fi
}

# --- the gateway host as the north-south edge (issue 14) ---
# As in the seed's PCG, the gateway host is also the overlay's edge: its
# namespace $GW_NS holds the gateway and the edge's agent, instance
# $GW_EDGE ("edge", role edge: `[host] uplink = "eth1"`), whose downlink NIC
# is the gateway's underlay interface eth0 (10.99.3.2 is the gateway's
# address and the edge's tunnel endpoint). topo_ns edge = $GW_NS, so
# agent_ctl, in_inst, gw_status and gw_wait_* work on it as on vmN.
GW_EDGE=edge

# gw_edge_host [UPLINK_GW_CIDR]: after gw_topology: the edge's uplink
# `eth1` in $GW_NS, a veth whose peer `uplink` sits in namespace
# $TOPO_INET = <id>-inet (the cloud side, UPLINK_GW_CIDR there, default
# 203.0.113.1/24; topo_cloud_nat makes it the cloud's NAT). The gateway's
# eth0 gets no tx checksum offload, as every instance NIC (topo_build).
gw_edge_host() {
    local gwcidr=${1:-203.0.113.1/24}
    # shellcheck disable=SC2034 # read by topo_ns (topo.sh)
    TOPO_NS_OF[$GW_EDGE]=$GW_NS
    sandbox_track_netns "$(topo_root "$GW_EDGE")"
    mkdir -p "$TOPO_DIR/$GW_EDGE"
    in_gw ethtool -K eth0 tx off >/dev/null
    in_ul ethtool -K ulport-gw tx off >/dev/null
    TOPO_INET=$TOPO_ID-inet
    topo_inet_uplink "$GW_NS" "$gwcidr"
    # Runs before gw_destroy (hooks run in reverse): the edge goes while
    # its namespace is still there.
    sandbox_on_exit gw_edge_destroy
}

gw_edge_destroy() {
    [[ -n "${TOPO_AGENT_PID[$GW_EDGE]:-}" ]] && { agent_stop "$GW_EDGE" 10 || true; }
    ip netns del "${TOPO_INET:-none}" 2>/dev/null || true
}

# gw_edge_start: write the edge's gateway-mode config (no tags; uplink
# eth1; $GW_HOST_EXTRA adds [host] lines) and start it (gw_agent_start:
# bounded wait until its API answers). Call it in this shell.
gw_edge_start() {
    GW_HOST_EXTRA="uplink = \"eth1\""$'\n'"${GW_HOST_EXTRA:-}" gw_agent_config "$GW_EDGE" ""
    gw_agent_start "$GW_EDGE"
}

# gw_state_tier0 FILE: append the tier-0 (uplink 203.0.113.2/24, secondary
# 203.0.113.10 and .11, default route via 203.0.113.1; the rest defaults).
gw_state_tier0() {
    cat >>"$1" <<'EOF'
tier0:
  uplink:
    address: 203.0.113.2/24
    secondary: [203.0.113.10, 203.0.113.11]
    gateway: 203.0.113.1
EOF
}
