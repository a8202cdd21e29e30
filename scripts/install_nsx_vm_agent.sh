#!/bin/sh
# install_nsx_vm_agent.sh -- installs, enrolls and starts nsx-agent on this
# instance. Served by nsx-gateway at
#   http://GATEWAY:8080/factory_default/<distro>_<arch>/install_nsx_vm_agent.sh
# with the gateway's address and the SHA-256 of its root CA written in
# below, so it trusts nothing it fetches later that does not chain to that CA:
#   1. ca.pem (plain HTTP) must hash to the fingerprint written in here;
#   2. SHA256SUMS, the bootstrap key and the binaries come over HTTPS (8443),
#      the server certificate verified against that ca.pem (binaries may come
#      from a --mirror, but their checksums always come from the gateway);
#   3. every file must match SHA256SUMS before anything is installed.
# Rerunning it upgrades the binaries and keeps the enrollment; --uninstall
# stops the agent (which gives the NIC back) and removes what it installed.
# Any failure leaves the machine as it was. POSIX sh; `--help` for options.
set -u

# ---- written in by the gateway when it serves this file -------------------
NSX_GW_ADDR="@NSX_GW_ADDR@"
NSX_GW_NAME="@NSX_GW_NAME@"
NSX_CA_SHA256="@NSX_CA_SHA256@"
NSX_INSTALL_PORT="@NSX_INSTALL_PORT@"
NSX_ENROLL_PORT="@NSX_ENROLL_PORT@"
NSX_CONTROL_PORT="@NSX_CONTROL_PORT@"
NSX_DISTRO="@NSX_DISTRO@"
NSX_ARCH="@NSX_ARCH@"
NSX_GW_VERSION="@NSX_GW_VERSION@"

PROG=install_nsx_vm_agent.sh
MIN_KERNEL=5.4

usage() {
    cat <<EOF
Usage: sudo ./$PROG [OPTIONS]

Installs nsx-agent and nsxcli, enrolls this instance with its NSX gateway and
starts the agent. Then tag the instance with nsx:network=<switch tag> (or
pass --tag) and it joins that logical switch.

Options:
  --gateway ADDR        the gateway's address (default: $(templated "$NSX_GW_ADDR" || echo "none: required"))
  --gateway-name NAME   the name in the gateway's certificate (default: $(templated "$NSX_GW_NAME" || echo nsx-gw.vmware.local))
  --ca-sha256 HEX       SHA-256 of the gateway's root CA certificate (DER), 64 hex
                        digits, colons allowed (default: the one written in by the gateway)
  --distro NAME_ARCH    the installer directory on the gateway, e.g. bookworm_amd64
                        (default: $(templated "$NSX_DISTRO" || echo "from /etc/os-release")_$(templated "$NSX_ARCH" || echo "<arch>"))
  --prefix DIR          install under DIR instead of / (binaries in DIR/usr/sbin and
                        DIR/usr/bin, config in DIR/etc/nsx-agent, state in
                        DIR/var/lib/nsx-agent, unit in DIR/etc/systemd/system)
  --nic IF              the NIC the agent takes over (default: the one that reaches the gateway)
  --instance-id ID      the instance's id at the gateway (default: hostname)
  --image-id ID         the image the instance was built from, as the cloud names it
                        (e.g. ami-0abc123); reported to the gateway, which can group
                        instances by it (default: unknown)
  --tag KEY=VALUE       an instance tag sent at enrollment, as the cloud would report it,
                        e.g. --tag nsx:network=web (repeatable)
  --netns NAME          the namespace that holds nsx-eth0 (default: nsx-root)
  --static-port-address the agent sets nsx-eth0's address itself instead of running
                        the distribution's DHCP client on it (default: DHCP, answered
                        by the agent)
  --mirror URL          fetch nsx-agent and nsxcli from URL/<file> instead of the gateway;
                        their checksums still come from the gateway over TLS
  --downloader curl|wget  which one to use (default: curl if installed, else wget)
  --timeout SECS        how long to wait for the agent to enroll and connect (default: 60)
  --no-start            install and configure only: no enrollment, nothing started
  --no-systemd          start the agent directly (pid file) instead of as nsx-agent.service,
                        e.g. in containers; also the fallback when systemd is not running
  --uninstall           stop the agent (the NIC gets its address back) and remove
                        everything this script installed
  -h, --help            this text

Exit status: 0 done; 1 failed (the machine is left as it was); 2 bad usage.
EOF
}

# ---- messages ---------------------------------------------------------------
say() { printf '%s\n' "$PROG: $*"; }
warn() { printf '%s\n' "$PROG: warning: $*" >&2; }
die() {
    printf '%s\n' "$PROG: error: $*" >&2
    exit 1
}
usage_error() {
    printf '%s\n' "$PROG: $*" >&2
    printf '%s\n' "Try '$PROG --help'." >&2
    exit 2
}

# templated VALUE: print VALUE if the gateway filled it in (placeholders hold '@').
templated() {
    case $1 in
    *@*) return 1 ;;
    *) printf '%s' "$1" ;;
    esac
}

# ---- options ----------------------------------------------------------------
GW_ADDR=$(templated "$NSX_GW_ADDR") || GW_ADDR=""
GW_NAME=$(templated "$NSX_GW_NAME") || GW_NAME=nsx-gw.vmware.local
CA_SHA256=$(templated "$NSX_CA_SHA256") || CA_SHA256=""
INSTALL_PORT=$(templated "$NSX_INSTALL_PORT") || INSTALL_PORT=8080
ENROLL_PORT=$(templated "$NSX_ENROLL_PORT") || ENROLL_PORT=8443
CONTROL_PORT=$(templated "$NSX_CONTROL_PORT") || CONTROL_PORT=5555
DISTRO_ARCH=""
if DISTRO=$(templated "$NSX_DISTRO") && ARCH=$(templated "$NSX_ARCH"); then
    DISTRO_ARCH=${DISTRO}_$ARCH
fi
PREFIX=""
NIC=""
INSTANCE_ID=""
IMAGE_ID=""
TAGS=""
NETNS=nsx-root
PORT_DHCP=true
MIRROR=""
DOWNLOADER=""
TIMEOUT=60
NO_START=0
NO_SYSTEMD=0
ACTION=install

need_arg() { [ "$2" -ge 2 ] || usage_error "option $1 needs a value"; }

while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --gateway) need_arg "$1" $# && GW_ADDR=$2 && shift ;;
    --gateway-name) need_arg "$1" $# && GW_NAME=$2 && shift ;;
    --ca-sha256) need_arg "$1" $# && CA_SHA256=$2 && shift ;;
    --distro) need_arg "$1" $# && DISTRO_ARCH=$2 && shift ;;
    --prefix) need_arg "$1" $# && PREFIX=$2 && shift ;;
    --nic) need_arg "$1" $# && NIC=$2 && shift ;;
    --instance-id) need_arg "$1" $# && INSTANCE_ID=$2 && shift ;;
    --image-id) need_arg "$1" $# && IMAGE_ID=$2 && shift ;;
    --tag)
        need_arg "$1" $#
        case $2 in
        *=*) ;;
        *) usage_error "--tag wants KEY=VALUE, got '$2'" ;;
        esac
        TAGS="$TAGS$2
"
        shift
        ;;
    --netns) need_arg "$1" $# && NETNS=$2 && shift ;;
    --static-port-address) PORT_DHCP=false ;;
    --mirror) need_arg "$1" $# && MIRROR=${2%/} && shift ;;
    --downloader) need_arg "$1" $# && DOWNLOADER=$2 && shift ;;
    --timeout) need_arg "$1" $# && TIMEOUT=$2 && shift ;;
    --no-start) NO_START=1 ;;
    --no-systemd) NO_SYSTEMD=1 ;;
    --uninstall) ACTION=uninstall ;;
    *) usage_error "unknown option '$1'" ;;
    esac
    shift
done

case $TIMEOUT in
'' | *[!0-9]*) usage_error "--timeout wants whole seconds, got '$TIMEOUT'" ;;
esac
case $DOWNLOADER in
'' | curl | wget) ;;
*) usage_error "--downloader is curl or wget, got '$DOWNLOADER'" ;;
esac
if [ -n "$PREFIX" ]; then
    case $PREFIX in
    /*) PREFIX=${PREFIX%/} ;;
    *) usage_error "--prefix wants an absolute path, got '$PREFIX'" ;;
    esac
fi
# Values that end up in the TOML config: printable, no quotes or backslashes.
check_word() {
    case $2 in
    *[!A-Za-z0-9._:/@+=-]*) usage_error "$1 may hold only letters, digits and . _ : / @ + = -, got '$2'" ;;
    esac
}
for v in "$GW_ADDR" "$GW_NAME" "$NIC" "$INSTANCE_ID" "$IMAGE_ID" "$NETNS"; do check_word "a value" "$v"; done
old_ifs=$IFS
IFS='
'
for t in $TAGS; do check_word "--tag" "$t"; done
IFS=$old_ifs

# ---- layout -----------------------------------------------------------------
SBIN=$PREFIX/usr/sbin
BIN=$PREFIX/usr/bin
ETC=$PREFIX/etc/nsx-agent
STATE=$PREFIX/var/lib/nsx-agent
LOGDIR=$PREFIX/var/log/nsx-agent
RUNDIR=$PREFIX/var/run/nsx-agent
UNITDIR=$PREFIX/etc/systemd/system
AGENT=$SBIN/nsx-agent
CLI=$BIN/nsxcli
CONF=$ETC/agent.toml
CA=$ETC/ca.pem
BOOTSTRAP=$ETC/bootstrap.key
UNIT=$UNITDIR/nsx-agent.service
SOCKET=$RUNDIR/nsxagent.sock
PIDFILE=$RUNDIR/nsx-agent.pid
AGENT_LOG=$LOGDIR/nsx-agent.log
MANIFEST=$STATE/install.manifest

# ---- undo log: every change is recorded so a failure can be rolled back -----
# One line per change: "file PATH" (created), "dir PATH" (created),
# "backup PATH" (PATH.nsx-old holds the previous version), "started"
# (the agent this run started), "stopped" (the agent this run stopped),
# "enabled" (nsx-agent.service enabled by this run).
UNDO=""
STAGE=""
DONE=0
record() {
    UNDO="$1
$UNDO"
}

rollback() {
    [ -n "$UNDO" ] || return 0
    warn "rolling back"
    old_ifs=$IFS
    IFS='
'
    for entry in $UNDO; do
        IFS=$old_ifs
        kind=${entry%% *}
        path=${entry#* }
        case $kind in
        started) stop_agent quiet ;;
        enabled) systemctl disable --quiet nsx-agent.service 2>/dev/null ;;
        stopped) start_agent_quietly ;;
        file) rm -f "$path" ;;
        # Made by this run, so whatever is in it is too (the agent's log, say).
        dir) rm -rf "$path" ;;
        backup) mv -f "$path.nsx-old" "$path" ;;
        esac
        IFS='
'
    done
    IFS=$old_ifs
    UNDO=""
    if use_systemd; then systemctl daemon-reload 2>/dev/null; fi
}

on_exit() {
    status=$?
    if [ "$DONE" -ne 1 ]; then
        rollback
        [ "$status" -ne 0 ] || status=1
    fi
    [ -z "$STAGE" ] || rm -rf "$STAGE"
    exit "$status"
}
trap on_exit EXIT
trap 'exit 1' INT TERM HUP

# mkdirs MODE DIR: create DIR and its missing parents, recording each one.
mkdirs() {
    [ -d "$2" ] && return 0
    mkdirs_parent=$(dirname "$2")
    mkdirs "755" "$mkdirs_parent" || return 1
    mkdir -m "$1" "$2" || die "cannot create $2"
    record "dir $2"
}

# put SRC DEST MODE: install SRC as DEST (atomically), recording how to undo it.
put() {
    mkdirs 755 "$(dirname "$2")"
    if [ -e "$2" ]; then
        cp -p "$2" "$2.nsx-old" || die "cannot back up $2"
        record "backup $2"
    else
        record "file $2"
    fi
    if ! { cp "$1" "$2.nsx-new" && chmod "$3" "$2.nsx-new" && mv -f "$2.nsx-new" "$2"; }; then
        rm -f "$2.nsx-new"
        die "cannot install $2"
    fi
}

# ---- preflight ----------------------------------------------------------------
require_root() {
    [ "$(id -u)" = 0 ] || die "must be run as root (sudo ./$PROG)"
}

machine_arch() {
    case $(uname -m) in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
    esac
}

# version_ge A B: true if dotted version A >= B (numeric, first two parts).
version_ge() {
    va=$(printf '%s' "$1" | sed 's/[^0-9.].*//')
    a1=${va%%.*}
    a2=${va#*.}
    a2=${a2%%.*}
    b1=${2%%.*}
    b2=${2#*.}
    [ "${a1:-0}" -gt "$b1" ] || { [ "${a1:-0}" -eq "$b1" ] && [ "${a2:-0}" -ge "$b2" ]; }
}

check_kernel() {
    kver=$(uname -r)
    version_ge "$kver" "$MIN_KERNEL" || die "kernel $kver is too old: nsx-agent needs Linux $MIN_KERNEL or newer"
    [ -e /proc/self/ns/net ] || die "this kernel has no network namespaces (CONFIG_NET_NS): nsx-agent puts nsx-eth0 in one"
    [ -e /proc/net/packet ] || die "this kernel has no packet sockets (CONFIG_PACKET): the agent's datapath needs them"
    # Evidence of veth: the module loaded or built in, a veth link in use, or
    # the module on disk.
    if [ ! -d /sys/module/veth ] && ! grep -qs '^veth ' /proc/modules &&
        ! ip -o link show type veth 2>/dev/null | grep -q . &&
        ! grep -qs '/veth\.ko' "/lib/modules/$kver/modules.builtin" &&
        [ -z "$(find "/lib/modules/$kver" -name 'veth.ko*' 2>/dev/null | head -n 1)" ]; then
        if [ -d "/lib/modules/$kver" ]; then
            die "this kernel has no veth driver (CONFIG_VETH): nsx-agent needs veth pairs"
        fi
        warn "cannot confirm veth support (no /lib/modules/$kver): continuing"
    fi
}

# default_nic: the interface this instance reaches the gateway through.
default_nic() {
    if command -v ip >/dev/null 2>&1; then
        ip -o route get "$GW_ADDR" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1
    fi
}

pick_downloader() {
    if [ -n "$DOWNLOADER" ]; then
        command -v "$DOWNLOADER" >/dev/null 2>&1 || die "--downloader $DOWNLOADER: not installed"
    elif command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        die "neither curl nor wget is installed: install one (apt-get install curl)"
    fi
}

# fetch URL OUT [CAFILE]: download URL to OUT (HTTPS verified against CAFILE).
fetch() {
    if [ "$DOWNLOADER" = curl ]; then
        if [ -n "${3:-}" ]; then
            # The URL names the gateway as its certificate does; --resolve
            # sends it to the address we reach it by (NAT-proof, like the agent).
            fetch_err=$(curl -fsS --connect-timeout 10 --max-time 600 --cacert "$3" \
                --resolve "$GW_NAME:$ENROLL_PORT:$GW_ADDR" -o "$2" "$1" 2>&1)
        else
            fetch_err=$(curl -fsS --connect-timeout 10 --max-time 600 -o "$2" "$1" 2>&1)
        fi
    else
        if [ -n "${3:-}" ]; then
            fetch_err=$(wget -q --timeout=10 --tries=1 --ca-certificate="$3" -O "$2" "$1" 2>&1)
        else
            fetch_err=$(wget -q --timeout=10 --tries=1 -O "$2" "$1" 2>&1)
        fi
    fi
    fetch_rc=$?
    [ "$fetch_rc" -eq 0 ] && return 0
    rm -f "$2"
    die "cannot download $1 ($DOWNLOADER exit $fetch_rc${fetch_err:+: $fetch_err})"
}

# pem_sha256 FILE: SHA-256 (lower-case hex) of the DER of the first certificate in FILE.
pem_sha256() {
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$1" |
        sed '1d;$d' | tr -d ' \r\n' | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1
}

normalize_fp() {
    printf '%s' "$1" | tr -d ': ' | tr 'A-F' 'a-f'
}

# ---- the agent's process ----------------------------------------------------
use_systemd() {
    [ "$NO_SYSTEMD" -eq 0 ] && [ -z "$PREFIX" ] && [ -d /run/systemd/system ] &&
        command -v systemctl >/dev/null 2>&1
}

agent_pid() {
    [ -s "$PIDFILE" ] || return 1
    agent_pid_v=$(cat "$PIDFILE")
    case $agent_pid_v in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$agent_pid_v" 2>/dev/null || return 1
    grep -qs 'nsx-agent' "/proc/$agent_pid_v/cmdline" || return 1
    echo "$agent_pid_v"
}

agent_running() {
    if use_systemd; then
        systemctl is-active --quiet nsx-agent.service
    else
        agent_pid >/dev/null
    fi
}

start_agent() {
    if use_systemd; then
        systemctl daemon-reload || return 1
        if ! systemctl is-enabled --quiet nsx-agent.service 2>/dev/null; then
            systemctl enable --quiet nsx-agent.service || return 1
            record "enabled"
        fi
        systemctl restart nsx-agent.service || return 1
    else
        mkdirs 755 "$RUNDIR"
        mkdirs 750 "$LOGDIR"
        if command -v setsid >/dev/null 2>&1; then
            setsid "$AGENT" run --config "$CONF" >>"$AGENT_LOG" 2>&1 </dev/null &
        else
            nohup "$AGENT" run --config "$CONF" >>"$AGENT_LOG" 2>&1 </dev/null &
        fi
        started=$!
        echo "$started" >"$PIDFILE"
        # Until it execs, the child is a copy of this shell, whose command
        # line agent_pid does not accept: wait (at most 5 s) for the exec,
        # so a slow start is not taken for an agent that exited.
        i=0
        while [ $i -lt 50 ] && kill -0 "$started" 2>/dev/null &&
            ! grep -qs 'nsx-agent' "/proc/$started/cmdline"; do
            sleep 0.1
            i=$((i + 1))
        done
    fi
}

start_agent_quietly() { start_agent >/dev/null 2>&1 || warn "could not restart the previous agent"; }

# stop_agent [quiet]: SIGTERM (the agent gives the NIC back: its IPv4 and
# IPv6 addresses and routes, and its DHCP client, which ran for
# nsx-vtep0.0 meanwhile), bounded wait, then SIGKILL and `nsx-agent
# cleanup` from its saved host state (which does the same).
stop_agent() {
    if use_systemd; then
        systemctl stop nsx-agent.service 2>/dev/null
        return 0
    fi
    pid=$(agent_pid) || {
        rm -f "$PIDFILE"
        return 0
    }
    [ "${1:-}" = quiet ] || say "stopping nsx-agent (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "nsx-agent did not stop within 30 s: killing it and restoring the NIC"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.2
        "$AGENT" cleanup --config "$CONF" || warn "nsx-agent cleanup failed"
    fi
    rm -f "$PIDFILE"
}

# wait_connected: bounded wait until the agent is enrolled (agent.crt) and its
# control channel is ESTABLISHED. Fails early if the agent exits.
wait_connected() {
    i=0
    while [ $i -lt $((TIMEOUT * 5)) ]; do
        if ! agent_running; then
            say "nsx-agent exited; the last lines of its log:" >&2
            if use_systemd; then
                journalctl -u nsx-agent.service -n 15 --no-pager >&2 2>/dev/null
            else
                tail -n 15 "$AGENT_LOG" >&2 2>/dev/null
            fi
            return 1
        fi
        if [ -s "$STATE/agent.crt" ] &&
            "$CLI" --socket "$SOCKET" -c "get gateway connection status" 2>/dev/null |
            grep -q 'Connection Status : ESTABLISHED'; then
            return 0
        fi
        sleep 0.2
        i=$((i + 1))
    done
    say "nsx-agent did not enroll and connect within $TIMEOUT s; the last lines of its log:" >&2
    tail -n 15 "$AGENT_LOG" >&2 2>/dev/null
    return 1
}

# ---- files written by this script ---------------------------------------------
write_config() {
    {
        echo "# nsx-agent config written by $PROG (gateway $GW_NAME at $GW_ADDR)."
        echo "# The gateway pushes the desired state; see docs/agent.sample.toml for [host]."
        echo "[host]"
        echo "nic = \"$NIC\""
        echo "netns = \"$NETNS\""
        echo "state_dir = \"$STATE\""
        echo "api_socket = \"$SOCKET\""
        echo "packet_log = \"$LOGDIR/dfwpktlogs.log\""
        echo "# nsx-eth0's address by DHCP from the distribution's client, answered by the agent."
        echo "port_dhcp = $PORT_DHCP"
        echo ""
        echo "[gateway]"
        echo "control = \"$GW_ADDR:$CONTROL_PORT\""
        echo "enroll = \"$GW_ADDR:$ENROLL_PORT\""
        echo "server_name = \"$GW_NAME\""
        echo "ca = \"$CA\""
        echo "bootstrap_key = \"$BOOTSTRAP\""
        echo "instance_id = \"$INSTANCE_ID\""
        [ -z "$IMAGE_ID" ] || echo "image_id = \"$IMAGE_ID\""
        printf 'tags = {'
        sep=" "
        old_ifs=$IFS
        IFS='
'
        for t in $TAGS; do
            printf '%s"%s" = "%s"' "$sep" "${t%%=*}" "${t#*=}"
            sep=", "
        done
        IFS=$old_ifs
        echo " }"
    } >"$1"
}

write_unit() {
    cat >"$1" <<EOF
# nsx-agent.service, written by $PROG.
[Unit]
Description=NSX overlay agent (logical switching, routing and firewall for this instance)
Documentation=https://github.com/nsx-open/nsx-open/blob/main/docs/ARCHITECTURE.md
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=$AGENT run --config $CONF
ExecReload=/bin/kill -HUP \$MAINPID
# After a crash the agent's saved host state gives the NIC back.
ExecStopPost=$AGENT cleanup --config $CONF
# Only the agent gets the stop signal: it stops the sshds it started
# (8888 and the overlay's 22) itself, and ssh sessions opened through them,
# an operator's running this script for an upgrade say, survive a restart.
KillMode=process
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
EOF
}

write_manifest() {
    {
        echo "# written by $PROG: what --uninstall removes"
        printf '%s\n' "$AGENT" "$CLI" "$CONF" "$CA" "$BOOTSTRAP" "$UNIT"
    } >"$1"
}

# ---- fetch and verify into the staging directory ------------------------------
stage() {
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/nsx-install.XXXXXX") || die "cannot create a staging directory"
    base="http://$GW_ADDR:$INSTALL_PORT/factory_default/$DISTRO_ARCH"
    # HTTPS is verified against the gateway's name (curl, which can pin the
    # name to the address) or against its address (wget: it must be in the
    # certificate, i.e. `nsx-gateway init --ip`).
    if [ "$DOWNLOADER" = curl ]; then
        tls="https://$GW_NAME:$ENROLL_PORT/factory_default/$DISTRO_ARCH"
    else
        tls="https://$GW_ADDR:$ENROLL_PORT/factory_default/$DISTRO_ARCH"
    fi
    say "fetching the root CA from $base (with $DOWNLOADER)"
    fetch "$base/ca.pem" "$STAGE/ca.pem"
    got=$(pem_sha256 "$STAGE/ca.pem")
    [ "$got" = "$CA_SHA256" ] ||
        die "the gateway's root CA has SHA-256 ${got:-<not a certificate>}, expected $CA_SHA256: refusing to trust it"
    say "root CA verified (SHA-256 $CA_SHA256)"
    fetch "$tls/SHA256SUMS" "$STAGE/SHA256SUMS" "$STAGE/ca.pem"
    fetch "$tls/bootstrap.key" "$STAGE/bootstrap.key" "$STAGE/ca.pem"
    for f in nsx-agent nsxcli; do
        if [ -n "$MIRROR" ]; then
            fetch "$MIRROR/$f" "$STAGE/$f"
        else
            fetch "$tls/$f" "$STAGE/$f" "$STAGE/ca.pem"
        fi
    done
    for f in ca.pem bootstrap.key nsx-agent nsxcli; do
        want=$(awk -v f="$f" '$2 == f || $2 == "*" f { print $1; exit }' "$STAGE/SHA256SUMS")
        [ -n "$want" ] || die "SHA256SUMS from the gateway has no line for $f"
        got=$(sha256sum "$STAGE/$f" | cut -d' ' -f1)
        [ "$got" = "$want" ] || die "$f: SHA-256 $got does not match the gateway's $want (tampered with or corrupted): nothing installed"
    done
    # This script too, if it runs from a file the gateway filled in.
    if templated "$NSX_CA_SHA256" >/dev/null && [ -f "$0" ]; then
        want=$(awk '$2 == "install_nsx_vm_agent.sh" { print $1; exit }' "$STAGE/SHA256SUMS")
        got=$(sha256sum "$0" | cut -d' ' -f1)
        [ -z "$want" ] || [ "$got" = "$want" ] ||
            die "this script differs from the one the gateway serves (SHA-256 $got, gateway $want): download it again"
    fi
    say "checksums verified (SHA256SUMS over TLS)"
    chmod 755 "$STAGE/nsx-agent" "$STAGE/nsxcli"
    ver=$("$STAGE/nsx-agent" --version 2>&1) ||
        die "the downloaded nsx-agent does not run here (it needs glibc 2.34 or newer): $ver"
    "$STAGE/nsxcli" --version >/dev/null 2>&1 || die "the downloaded nsxcli does not run here"
    say "downloaded $ver"
}

# ---- actions --------------------------------------------------------------------
do_uninstall() {
    require_root
    [ -f "$MANIFEST" ] || die "no installation found under ${PREFIX:-/} (no $MANIFEST)"
    id=$(sed -n 's/^instance_id = "\(.*\)"$/\1/p' "$CONF" 2>/dev/null)
    if use_systemd; then
        systemctl disable --now nsx-agent.service 2>/dev/null
    else
        stop_agent
    fi
    # A crashed agent leaves its host state: give the NIC back from it.
    if [ -x "$AGENT" ] && [ -f "$CONF" ]; then
        "$AGENT" cleanup --config "$CONF" >/dev/null 2>&1 || warn "nsx-agent cleanup failed; the NIC may need a reboot to recover"
    fi
    while IFS= read -r f; do
        case $f in '' | '#'*) continue ;; esac
        rm -f "$f" "$f.nsx-old" "$f.nsx-new"
    done <"$MANIFEST"
    rm -rf "$STATE" "$LOGDIR" "$RUNDIR"
    for d in "$ETC" "$UNITDIR" "$SBIN" "$BIN" "$PREFIX/var/lib" "$PREFIX/var/log" "$PREFIX/var/run" \
        "$PREFIX/var" "$PREFIX/usr" "$PREFIX/etc/systemd" "$PREFIX/etc"; do
        # Only directories this script made for a --prefix install, and only if empty.
        [ -n "$PREFIX" ] || [ "$d" = "$ETC" ] || continue
        rmdir "$d" 2>/dev/null
    done
    use_systemd && systemctl daemon-reload 2>/dev/null
    DONE=1
    say "uninstalled nsx-agent${id:+ (instance $id)}; the NIC has its address back"
    [ -z "$id" ] || say "the gateway still lists $id: revoke it there (nsx-gateway instance revoke $id)"
}

do_install() {
    t0=$(date +%s)
    require_root
    gw_version=$(templated "$NSX_GW_VERSION") && say "installer of nsx-gateway $gw_version for ${NSX_DISTRO}_$NSX_ARCH"
    [ -n "$GW_ADDR" ] || usage_error "no gateway address: download this script from the gateway, or pass --gateway"
    CA_SHA256=$(normalize_fp "$CA_SHA256")
    case $CA_SHA256 in
    '') usage_error "no CA fingerprint: download this script from the gateway, or pass --ca-sha256" ;;
    *[!0-9a-f]*) usage_error "--ca-sha256 wants 64 hex digits" ;;
    esac
    [ ${#CA_SHA256} -eq 64 ] || usage_error "--ca-sha256 wants 64 hex digits, got ${#CA_SHA256}"
    arch=$(machine_arch)
    if [ -z "$DISTRO_ARCH" ]; then
        # shellcheck disable=SC1091 # the running system's file
        codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
        [ -n "$codename" ] || usage_error "cannot tell this distribution: pass --distro NAME_ARCH (e.g. bookworm_$arch)"
        DISTRO_ARCH=${codename}_$arch
    fi
    [ "${DISTRO_ARCH##*_}" = "$arch" ] ||
        die "this installer is for ${DISTRO_ARCH##*_} but this machine is $arch: download .../factory_default/<distro>_$arch/$PROG"
    check_kernel
    pick_downloader
    for c in sha256sum base64 awk mktemp; do
        command -v "$c" >/dev/null 2>&1 || die "$c is required (coreutils/mawk)"
    done

    upgrade=0
    if [ -f "$MANIFEST" ] && [ -f "$CONF" ]; then
        upgrade=1
        installed=$(pem_sha256 "$CA")
        [ "$installed" = "$CA_SHA256" ] ||
            die "nsx-agent is installed for another gateway (root CA $installed): run --uninstall first"
    elif [ -e "$AGENT" ] || [ -e "$CONF" ]; then
        die "an nsx-agent not installed by this script is already at ${PREFIX:-/} ($AGENT or $CONF): remove it first"
    fi

    if [ $upgrade -eq 0 ]; then
        [ -n "$NIC" ] || NIC=$(default_nic)
        [ -n "$NIC" ] || NIC=eth0
        [ -e "/sys/class/net/$NIC" ] || die "no network interface '$NIC' (pass --nic)"
        case $NIC in nsx-*) die "$NIC already belongs to an nsx-agent (uninstall it first)" ;; esac
        [ -n "$INSTANCE_ID" ] || INSTANCE_ID=$(hostname)
        check_word "the instance id" "$INSTANCE_ID"
    fi

    stage

    if [ $upgrade -eq 1 ]; then
        if cmp -s "$STAGE/nsx-agent" "$AGENT" && cmp -s "$STAGE/nsxcli" "$CLI" &&
            { [ "$NO_START" -eq 1 ] || agent_running; }; then
            DONE=1
            say "nsx-agent is up to date ($ver) and running; nothing to do"
            return 0
        fi
        say "upgrading the installation under ${PREFIX:-/} (config and enrollment kept)"
        if agent_running; then
            stop_agent
            record "stopped"
        fi
        put "$STAGE/nsx-agent" "$AGENT" 755
        put "$STAGE/nsxcli" "$CLI" 755
        write_unit "$STAGE/unit"
        put "$STAGE/unit" "$UNIT" 644
    else
        write_config "$STAGE/agent.toml"
        "$STAGE/nsx-agent" check --config "$STAGE/agent.toml" >/dev/null ||
            die "the generated config does not validate (see above)"
        write_manifest "$STAGE/manifest"
        write_unit "$STAGE/unit"
        mkdirs 700 "$ETC"
        mkdirs 700 "$STATE"
        put "$STAGE/ca.pem" "$CA" 644
        put "$STAGE/bootstrap.key" "$BOOTSTRAP" 600
        put "$STAGE/agent.toml" "$CONF" 600
        put "$STAGE/nsx-agent" "$AGENT" 755
        put "$STAGE/nsxcli" "$CLI" 755
        put "$STAGE/unit" "$UNIT" 644
        put "$STAGE/manifest" "$MANIFEST" 600
    fi

    if [ "$NO_START" -eq 1 ]; then
        say "installed (not started: run $AGENT run --config $CONF, or start nsx-agent.service)"
    else
        if [ "$NO_SYSTEMD" -eq 0 ] && ! use_systemd; then
            say "systemd is not running here${PREFIX:+ (or --prefix is set)}: starting nsx-agent directly (as --no-systemd)"
            NO_SYSTEMD=1
        fi
        say "starting nsx-agent and enrolling with $GW_NAME ($GW_ADDR:$ENROLL_PORT)"
        start_agent || die "cannot start nsx-agent"
        record "started"
        wait_connected || die "nsx-agent did not come up: nothing installed"
    fi
    # Success: drop the backups.
    for f in "$AGENT" "$CLI" "$UNIT" "$CONF" "$CA" "$BOOTSTRAP" "$MANIFEST"; do rm -f "$f.nsx-old"; done
    DONE=1
    t1=$(date +%s)
    if [ "$NO_START" -eq 0 ]; then
        say "nsx-agent is enrolled and connected to $GW_NAME ($GW_ADDR:$CONTROL_PORT) in $((t1 - t0)) s"
        [ -n "$TAGS" ] || say "next: tag this instance nsx:network=<switch tag> at the gateway to join a logical switch"
        say "check it with: nsxcli${PREFIX:+ --socket $SOCKET} -c 'get gateway connection status'"
    fi
}

case $ACTION in
uninstall) do_uninstall ;;
install) do_install ;;
esac
