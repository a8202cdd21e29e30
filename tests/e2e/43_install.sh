#!/usr/bin/env bash
# tests/e2e/43_install.sh -- e2e test 43 (issue 7): the install script the
# gateway serves, run for real in fresh instance namespaces.
#   1. vm1 fetches it with wget exactly as the seed types it (the gateway's
#      name resolved through a bind-mounted /etc/hosts), vm3 with curl (and
#      installs piped: curl | sh -s --); both install under a --prefix with
#      --no-systemd, enroll, and ping vm2
#      (started the ordinary way) over the overlay; vm3 joins only after the
#      operator tags it nsx:network=web at the gateway, as in the seed;
#   2. a second run changes nothing; a changed binary is an upgrade that
#      keeps the enrollment; --uninstall gives the NIC back and leaves an
#      empty prefix; re-installing an uninstalled instance is refused by the
#      gateway and rolled back;
#   3. a tampered binary (from a --mirror), a wrong CA fingerprint, an
#      unreachable gateway and a non-root run each fail with their message
#      and install nothing;
#   4. the unit it writes passes `systemd-analyze verify`;
#   5. --image-id reaches the agent's config and the gateway's inventory,
#      and the OS the agent reports is os-release's ID-VERSION_ID.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 43 "$@"
gw_init_bin || bail "nsx-gateway binary"
command -v wget >/dev/null || bail "wget is required (apt-get install wget)"
command -v python3 >/dev/null || bail "python3 is required (the tampering mirror)"

# The installed agents run with the real defaults, so in overlay mode they
# start sshd on <underlay>:8888 and <overlay>:22; its privilege-separation
# directory gets a tmpfs of the sandbox's own (/run is the host's).
mkdir -p /run/sshd
mount -t tmpfs -o mode=0755 nsx-sshd /run/sshd || bail "tmpfs on /run/sshd"
gw_topology t43 1500 vm1 vm2 vm3
topo_wait_underlay || bail "underlay up"
gw_init >/dev/null || bail "nsx-gateway init"
gw_state_sample "$TOPO_DIR/state.yaml"
gw_apply "$TOPO_DIR/state.yaml" >/dev/null || bail "nsx-gateway apply"
gw_start || bail "gateway serves"
check "the gateway serves the installer on $GW_IP:8080" gw_port_open 8080

DISTRO=bookworm_$(case $(uname -m) in aarch64) echo arm64 ;; *) echo amd64 ;; esac)
URL_PATH=/factory_default/$DISTRO/install_nsx_vm_agent.sh
CA_FP=$(openssl x509 -in "$GW_DIR/ca.pem" -outform der | sha256sum | cut -d' ' -f1)

# vm2: an instance on web-ls, started the ordinary way.
gw_agent_config vm2 web
gw_agent_start vm2 2>"$TOPO_DIR/vm2.err" || bail "vm2 agent" "$(cat "$TOPO_DIR/vm2.err")"
agent_wait_overlay vm2 || bail "vm2 overlay up"
VM2_IP=$(gw_instance vm2 .ip)

# on_host vmN CMD...: run CMD as the instance's host would: in its network
# namespace, keeping the sandbox's mount namespace (so the overlay namespace
# the agent registers stays visible) but with the /sys of that namespace.
on_host() {
    local vm=$1
    shift
    nsenter --net="/run/netns/$(topo_ns "$vm")" \
        unshare --mount --propagation unchanged \
        sh -c 'mount -t sysfs sysfs /sys 2>/dev/null; exec "$@"' sh "$@"
}

# install vmN PREFIX LOG ARGS...: the downloaded script of vmN, bounded (120 s).
run_installer() {
    local vm=$1 prefix=$2 log=$3
    shift 3
    on_host "$vm" timeout 120 "$TOPO_DIR/$vm/dl/install_nsx_vm_agent.sh" \
        --prefix "$prefix" --no-systemd --instance-id "$vm" --netns "$(topo_root "$vm")" "$@" >"$log" 2>&1
}

# empty_dir DIR: DIR is missing or holds nothing.
empty_dir() { [[ ! -d "$1" || -z "$(find "$1" -mindepth 1 -print -quit)" ]]; }

# nic_intact vmN: eth0 holds the underlay address and no nsx-* link exists.
nic_intact() {
    local vm=$1
    in_inst "$vm" ip -o -4 addr show dev eth0 | grep -q " $(topo_underlay_ip "$vm")/24" &&
        ! in_inst "$vm" ip -o link show | grep -q 'nsx-'
}

# --- 1. download: wget as the seed types it, curl for vm3 ---------------------
printf '%s %s\n' "$GW_IP" "$GW_NAME" >"$TOPO_DIR/hosts"
mkdir -p "$TOPO_DIR/vm1/dl" "$TOPO_DIR/vm3/dl"
# shellcheck disable=SC2016 # expanded by the inner sh
check "vm1: wget http://$GW_NAME:8080$URL_PATH (the seed's command)" \
    in_inst vm1 unshare --mount sh -c 'mount --bind "$1" /etc/hosts && cd "$2" && timeout 60 wget -q "$3"' \
    sh "$TOPO_DIR/hosts" "$TOPO_DIR/vm1/dl" "http://$GW_NAME:8080$URL_PATH"
chmod +x "$TOPO_DIR/vm1/dl/install_nsx_vm_agent.sh" 2>/dev/null || true
check "vm3: curl -fsSO http://$GW_IP:8080$URL_PATH" \
    in_inst vm3 sh -c 'cd "$1" && timeout 60 curl -fsSO "$2" && chmod +x install_nsx_vm_agent.sh' \
    sh "$TOPO_DIR/vm3/dl" "http://$GW_IP:8080$URL_PATH"
SCRIPT=$TOPO_DIR/vm1/dl/install_nsx_vm_agent.sh
check "the served script has the gateway's address written in" grep -qx "NSX_GW_ADDR=\"$GW_IP\"" "$SCRIPT"
check "... its name" grep -qx "NSX_GW_NAME=\"$GW_NAME\"" "$SCRIPT"
check "... and its CA's SHA-256 (openssl's, computed here)" grep -qx "NSX_CA_SHA256=\"$CA_FP\"" "$SCRIPT"
check "... and no placeholder left" bash -c "! grep -q '@NSX_' '$SCRIPT'"
check "the served script is shellcheck-clean (POSIX sh)" shellcheck -s sh "$SCRIPT"
check "--help documents every option" bash -c "out=\$('$SCRIPT' --help) && for o in --prefix --no-start --no-systemd --uninstall --help --tag --image-id --mirror --ca-sha256 --gateway; do grep -q -- \"\$o\" <<<\"\$out\" || exit 1; done"
code=$(in_inst vm1 curl -s -o "$TOPO_DIR/404.txt" -w '%{http_code}' "http://$GW_IP:8080/factory_default/trusty_amd64/install_nsx_vm_agent.sh" || true)
check_eq "trusty_amd64 (not built for) is a 404" 404 "$code"
check "... listing the supported ones ($(tr -d '\n' <"$TOPO_DIR/404.txt"))" grep -q "$DISTRO" "$TOPO_DIR/404.txt"

# --- 3. refusals: each with its message, nothing installed ----------------------
P=$TOPO_DIR/vm1/prefix
mkdir -p "$P"
refused() { # refused DESC MESSAGE-REGEX ARGS...
    local desc=$1 re=$2 rc=0
    shift 2
    run_installer vm1 "$P" "$TOPO_DIR/refused.log" "$@" || rc=$?
    if [[ $rc -ne 1 ]]; then
        not_ok "$desc: exits 1" "exit $rc" "$(tail -n 5 "$TOPO_DIR/refused.log")"
    elif ! grep -Eq "$re" "$TOPO_DIR/refused.log"; then
        not_ok "$desc: says /$re/" "$(tail -n 5 "$TOPO_DIR/refused.log")"
    elif ! empty_dir "$P"; then
        not_ok "$desc: installs nothing" "$(find "$P" | head)"
    elif ! nic_intact vm1; then
        not_ok "$desc: leaves the NIC alone" "$(in_inst vm1 ip -o addr)"
    else
        ok "$desc: exits 1 with its message, installs nothing"
        diag "$(grep -E "$re" "$TOPO_DIR/refused.log" | head -n 1)"
    fi
}
refused "wrong CA fingerprint" "root CA has SHA-256 .* expected 0{64}: refusing" --ca-sha256 "$(printf '0%.0s' {1..64})"
refused "unreachable gateway" "cannot download http://10\.99\.3\.99:8080/.*ca\.pem" --gateway 10.99.3.99
# A mirror that serves a tampered nsx-agent (the checksums still come from the gateway).
MIRROR=$TOPO_DIR/mirror
mkdir -p "$MIRROR"
cp "$NSX_AGENT" "$MIRROR/nsx-agent"
printf 'tampered' >>"$MIRROR/nsx-agent"
cp "$(dirname "$NSX_AGENT")/nsxcli" "$MIRROR/nsxcli" 2>/dev/null || cp "${NSXCLI:-/nonexistent}" "$MIRROR/nsxcli"
sandbox_bg "$TOPO_DIR/mirror.log" nsenter --net="/run/netns/$GW_NS" python3 -m http.server 8090 --bind "$GW_IP" --directory "$MIRROR"
for ((i = 0; i < 50; i++)); do gw_port_open 8090 && break; sleep 0.1; done
refused "tampered nsx-agent from a mirror" "nsx-agent: SHA-256 [0-9a-f]{64} does not match the gateway's" --mirror "http://$GW_IP:8090"
rc=0
on_host vm1 unshare --user sh "$SCRIPT" --prefix "$P" --no-systemd >"$TOPO_DIR/nonroot.log" 2>&1 || rc=$?
check_eq "non-root run exits 1" 1 "$rc"
check "... saying it must run as root" grep -q "must be run as root" "$TOPO_DIR/nonroot.log"
check "... and installs nothing" empty_dir "$P"
rc=0
run_installer vm1 "$P" "$TOPO_DIR/badtag.log" --tag novalue || rc=$?
check_eq "a malformed --tag is a usage error (exit 2)" 2 "$rc"
rc=0
run_installer vm1 "$P" "$TOPO_DIR/badimage.log" --image-id 'ami "x"' || rc=$?
check_eq "an --image-id that cannot go into the config is a usage error (exit 2)" 2 "$rc"
check "... and installs nothing" empty_dir "$P"
mkdir -p "$P/usr/sbin"
printf '#!/bin/sh\n' >"$P/usr/sbin/nsx-agent"
rc=0
run_installer vm1 "$P" "$TOPO_DIR/foreign.log" || rc=$?
check_eq "an nsx-agent this script did not install is refused (exit 1)" 1 "$rc"
check "... saying so" grep -q "an nsx-agent not installed by this script is already at" "$TOPO_DIR/foreign.log"
check "... and leaves it alone" test "$(cat "$P/usr/sbin/nsx-agent")" = '#!/bin/sh'
rm -rf "${P:?}"/*

# --- --no-start: files only; --uninstall of that ----------------------------------
if run_installer vm1 "$P" "$TOPO_DIR/nostart.log" --no-start; then ok "vm1: --no-start exits 0"; else not_ok "vm1: --no-start exits 0" "$(tail "$TOPO_DIR/nostart.log")"; fi
check "... installs the agent and its config" test -x "$P/usr/sbin/nsx-agent" -a -s "$P/etc/nsx-agent/agent.toml"
check "... starts nothing and does not enroll" test ! -e "$P/var/run/nsx-agent/nsx-agent.pid" -a ! -e "$P/var/lib/nsx-agent/agent.crt"
check "... and leaves the NIC alone" nic_intact vm1
check "... the config passes nsx-agent check" "$P/usr/sbin/nsx-agent" check --config "$P/etc/nsx-agent/agent.toml"
check "--uninstall of a never-started install exits 0" run_installer vm1 "$P" "$TOPO_DIR/nostart-un.log" --uninstall
check "... and leaves an empty prefix" empty_dir "$P"

# --- 1. install vm1 (wget, tagged at install) ------------------------------------
t0=$EPOCHREALTIME
if run_installer vm1 "$P" "$TOPO_DIR/vm1/install.log" --downloader wget --tag nsx:network=web --image-id ami-0e2e43vm1; then
    t1=$EPOCHREALTIME
    ok "vm1: the installer (wget) installs, enrolls and connects"
    diag "install took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s (download, verify, install, enroll, connect)"
else
    bail "vm1: the installer (wget) installs, enrolls and connects" "$(tail -n 20 "$TOPO_DIR/vm1/install.log")"
fi
for f in etc/nsx-agent/agent.toml:600 etc/nsx-agent/bootstrap.key:600 etc/nsx-agent/ca.pem:644 \
    usr/sbin/nsx-agent:755 usr/bin/nsxcli:755 var/lib/nsx-agent/agent.key:600 var/lib/nsx-agent/agent.crt:600 \
    etc/systemd/system/nsx-agent.service:644; do
    check_eq "vm1: ${f%%:*} installed with mode ${f##*:}" "${f##*:}" "$(stat -c %a "$P/${f%%:*}" 2>/dev/null || echo missing)"
done
check "vm1: nsxcli says the gateway connection is ESTABLISHED" \
    bash -c "'$P/usr/bin/nsxcli' --socket '$P/var/run/nsx-agent/nsxagent.sock' -c 'get gateway connection status' | grep -q 'Connection Status : ESTABLISHED'"
for ((i = 0; i < 100; i++)); do [[ "$(gw_instance vm1 .mode 2>/dev/null)" == overlay ]] && break; sleep 0.1; done
check_eq "the gateway lists vm1 in overlay mode on web-ls" "overlay web-ls" "$(gw_instance vm1 .mode) $(gw_instance vm1 .switch)"
check "vm1: --image-id is written to the agent's config" grep -qx 'image_id = "ami-0e2e43vm1"' "$P/etc/nsx-agent/agent.toml"
check_eq "... and the gateway's inventory has it" ami-0e2e43vm1 "$(gw_instance vm1 .image_id)"
# The OS the agent reports: os-release's ID-VERSION_ID (the instances share the host's files).
os_release=/etc/os-release
[[ -e $os_release ]] || os_release=/usr/lib/os-release
# shellcheck source=/dev/null # the host's os-release
WANT_OS=$( (ID=linux VERSION_ID="" && . "$os_release" 2>/dev/null; printf '%s%s' "${ID:-linux}" "${VERSION_ID:+-$VERSION_ID}"))
check_eq "vm1 reports its distribution from $os_release as its OS" "$WANT_OS" "$(gw_instance vm1 .os)"
VM1_IP=$(gw_instance vm1 .ip)
agent_wait_overlay vm1 || true
check "vm1 pings vm2 ($VM2_IP) over the overlay" overlay_wait_ping vm1 "$VM2_IP"
# By default the port's address comes from DHCP, answered by the agent.
check "the installed config asks for the port's address by DHCP" grep -qx 'port_dhcp = true' "$P/etc/nsx-agent/agent.toml"
acks1() {
    local n
    n=$("$P/usr/sbin/nsx-agent" ctl --socket "$P/var/run/nsx-agent/nsxagent.sock" counters 2>/dev/null | jq -r '.dhcp.ack // 0')
    [[ "${n:-0}" -ge 1 ]]
}
check "... vm1's nsx-eth0 got $VM1_IP by DHCP from its agent (an ACK counted)" wait_for 10 acks1
check "... the DNS settings stay in the agent's state dir" test -e "$P/var/lib/nsx-agent/overlay-resolv.conf"
# ssh_banner NS IP PORT: true once an OpenSSH banner answers there (bounded).
ssh_banner() {
    local i line
    for ((i = 0; i < 30; i++)); do
        # shellcheck disable=SC2016 # expanded by the inner bash
        line=$(timeout 3 ip netns exec "$1" bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 2 l <&3 && printf "%s" "$l"' \
            _ "$2" "$3" 2>/dev/null) || line=""
        [[ "$line" == SSH-2.0-OpenSSH* ]] && return 0
        sleep 0.3
    done
    return 1
}
if command -v /usr/sbin/sshd >/dev/null; then
    check "as in the seed: vm1's sshd answers on its underlay address, port 8888" \
        ssh_banner "$(topo_ns vm2)" "$(topo_underlay_ip vm1)" 8888
    check "... and on port 22 of its overlay address ($VM1_IP), through the overlay" \
        ssh_banner "$(topo_root vm2)" "$VM1_IP" 22
else
    not_ok "openssh-server is installed (scripts/test.sh installs it)"
fi

# --- 1. install vm3 (curl, untagged), then the operator tags it ------------------
P3=$TOPO_DIR/vm3/prefix
# As README shows it: curl ... | sudo sh -s -- OPTIONS (no file to run).
# shellcheck disable=SC2016 # expanded by the inner sh
if on_host vm3 timeout 120 sh -c 'curl -fsS "$1" | sh -s -- --prefix "$2" --no-systemd --instance-id vm3 --netns "$3" --downloader curl' \
    sh "http://$GW_IP:8080$URL_PATH" "$P3" "$(topo_root vm3)" >"$TOPO_DIR/vm3/install.log" 2>&1; then
    ok "vm3: curl ... | sh -s -- installs, enrolls and connects without a tag"
else
    not_ok "vm3: curl ... | sh -s -- installs, enrolls and connects without a tag" "$(tail -n 20 "$TOPO_DIR/vm3/install.log")"
fi
check "vm3: the installer says to tag the instance next" grep -q "tag this instance nsx:network" "$TOPO_DIR/vm3/install.log"
check_eq "vm3 is enrolled, in micro-segmentation mode until tagged" micro-segmentation "$(gw_instance vm3 .mode 2>/dev/null)"
check_eq "vm3 (no --image-id): the image is unknown, the OS from os-release" "unknown $WANT_OS" \
    "$(gw_instance vm3 .image_id) $(gw_instance vm3 .os)"
check "... and its config has no image_id line" bash -c "! grep -q '^image_id' '$P3/etc/nsx-agent/agent.toml'"
gw_api PATCH /api/v1/instances/vm3 '{"tags": {"nsx:network": "web"}}' >/dev/null
check_eq "tag vm3 nsx:network=web at the gateway (PATCH)" 200 "$GW_HTTP_CODE"
for ((i = 0; i < 150; i++)); do in_overlay vm3 true 2>/dev/null && agent_wait_overlay vm3 && break; sleep 0.1; done
check "vm3 (tagged) pings vm1 ($VM1_IP) over the overlay" overlay_wait_ping vm3 "$VM1_IP"

# --- 4. the unit file ------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$P3/etc/systemd/system/nsx-agent.service" 2>&1) && rc=0 || rc=$?
    check_eq "systemd-analyze verify nsx-agent.service: exit 0, no complaint" "0 " "$rc $out"
    check "the unit restarts on failure" grep -qx 'Restart=on-failure' "$P3/etc/systemd/system/nsx-agent.service"
    check "... and restores the NIC after a crash" grep -q '^ExecStopPost=.*nsx-agent cleanup' "$P3/etc/systemd/system/nsx-agent.service"
else
    not_ok "systemd-analyze is installed (apt-get install systemd)"
fi

# --- 2. rerun: nothing to do; a changed binary is an upgrade -----------------------
pid1=$(cat "$P/var/run/nsx-agent/nsx-agent.pid")
tree() { find "$P" -type f ! -name '*.log' ! -path '*/var/run/*' -exec sha256sum {} + | sort; }
tree >"$TOPO_DIR/tree.before"
if run_installer vm1 "$P" "$TOPO_DIR/vm1/rerun.log"; then ok "vm1: second run exits 0"; else not_ok "vm1: second run exits 0" "$(tail "$TOPO_DIR/vm1/rerun.log")"; fi
check "... says there is nothing to do" grep -q "up to date .* nothing to do" "$TOPO_DIR/vm1/rerun.log"
check_eq "... the agent keeps running (same pid)" "$pid1" "$(cat "$P/var/run/nsx-agent/nsx-agent.pid")"
check "... and no file changed" diff "$TOPO_DIR/tree.before" <(tree)
printf '\n' >>"$P/usr/bin/nsxcli" # an older nsxcli
crt=$(sha256sum <"$P/var/lib/nsx-agent/agent.crt")
if run_installer vm1 "$P" "$TOPO_DIR/vm1/upgrade.log"; then ok "vm1: run over an older nsxcli exits 0"; else not_ok "vm1: run over an older nsxcli exits 0" "$(tail "$TOPO_DIR/vm1/upgrade.log")"; fi
check "... as an upgrade that keeps the config and enrollment" grep -q "upgrading .* enrollment kept" "$TOPO_DIR/vm1/upgrade.log"
check_eq "... the same certificate (no second enrollment)" "$crt" "$(sha256sum <"$P/var/lib/nsx-agent/agent.crt")"
check "... nsxcli is the gateway's again" cmp -s "$P/usr/bin/nsxcli" "$MIRROR/nsxcli"
check "... no backup left behind" bash -c "! find '$P' -name '*.nsx-old' -o -name '*.nsx-new' | grep -q ."
agent_wait_overlay vm1 || true
check "... and vm1 pings vm2 again" overlay_wait_ping vm1 "$VM2_IP"

# --- 2. uninstall ---------------------------------------------------------------------
pid1=$(cat "$P/var/run/nsx-agent/nsx-agent.pid")
if run_installer vm1 "$P" "$TOPO_DIR/vm1/uninstall.log" --uninstall; then ok "vm1: --uninstall exits 0"; else not_ok "vm1: --uninstall exits 0" "$(tail "$TOPO_DIR/vm1/uninstall.log")"; fi
check "... the agent is gone" bash -c "! kill -0 $pid1 2>/dev/null"
ul1=$(topo_underlay_ip vm1)
# (the [.] keeps pgrep from finding the bash -c that runs it)
check "... and so are the sshds it started" bash -c "! pgrep -f 'ListenAddress=${ul1//./[.]}:8888'"
check "... the NIC has its address back, no nsx-* interface left" nic_intact vm1
check "... the overlay namespace is gone" bash -c "! ip netns list | grep -qw '$(topo_root vm1)'"
check "... nothing is left under the prefix" empty_dir "$P"
check "... and it names the instance to revoke at the gateway" grep -q "revoke it there (nsx-gateway instance revoke vm1)" "$TOPO_DIR/vm1/uninstall.log"
rc=0
run_installer vm1 "$P" "$TOPO_DIR/vm1/uninstall2.log" --uninstall || rc=$?
check_eq "a second --uninstall exits 1 (nothing installed)" 1 "$rc"

# --- 3. enrollment refused after the agent started: rolled back -------------------------
rc=0
run_installer vm1 "$P" "$TOPO_DIR/vm1/reinstall.log" --tag nsx:network=web --timeout 30 || rc=$?
check_eq "re-installing the uninstalled vm1 fails (exit 1)" 1 "$rc"
check "... with the gateway's refusal in the message" grep -q "already enrolled" "$TOPO_DIR/vm1/reinstall.log"
check "... rolled back: nothing installed" empty_dir "$P"
check "... and the NIC untouched" nic_intact vm1

# --- uninstall after a crash: vm3's agent is SIGKILLed first -------------------------------
pid3=$(cat "$P3/var/run/nsx-agent/nsx-agent.pid" 2>/dev/null || echo none)
kill -KILL "$pid3" 2>/dev/null
if [[ "$pid3" =~ ^[0-9]+$ ]] && sandbox_wait_exit "$pid3" 5; then
    ok "vm3's agent ($pid3) is gone after SIGKILL"
else
    not_ok "vm3's agent ($pid3) is gone after SIGKILL"
fi
check "vm3: after SIGKILL the NIC is still the agent's (nsx-vtep0.0 holds the address)" \
    bash -c "ip netns exec $(topo_ns vm3) ip -o -4 addr show dev nsx-vtep0.0 | grep -q ' $(topo_underlay_ip vm3)/'"
check "vm3: --uninstall after the crash exits 0" run_installer vm3 "$P3" "$TOPO_DIR/vm3/uninstall.log" --uninstall
check "... the NIC has its address back (from the agent's saved host state)" nic_intact vm3
ul3=$(topo_underlay_ip vm3)
check "... no sshd of the dead agent left" bash -c "! pgrep -f 'ListenAddress=${ul3//./[.]}:8888'"
check "... and its prefix is empty" empty_dir "$P3"
tap_done
