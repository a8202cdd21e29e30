#!/usr/bin/env bash
# tests/lib/deps.sh -- install what the tests and the demo need, on Debian or
# Ubuntu, non-interactively, only when something is missing:
#   nsx_install_tools   apt packages (iproute2, iputils-ping, tshark, jq, ...)
#   nsx_ensure_rust     cargo (rustup, minimal profile) + rustfmt and clippy
# Both print what they do and return non-zero with a reason on failure.
# shellcheck shell=bash

# command -> Debian package that provides it
declare -gA NSX_TOOL_PKG=(
    [ip]=iproute2 [ping]=iputils-ping [tshark]=tshark [dumpcap]=wireshark-common
    [iperf3]=iperf3 [jq]=jq [ethtool]=ethtool [socat]=socat [shellcheck]=shellcheck
    [unshare]=util-linux [nsenter]=util-linux [timeout]=coreutils [cc]=gcc
    [sha256sum]=coreutils [curl]=curl [openssl]=openssl [python3]=python3
    [wget]=wget [systemd-analyze]=systemd
    [sshd]=openssh-server [ssh-keygen]=openssh-client [nft]=nftables
    [dnsmasq]=dnsmasq-base [dhclient]=isc-dhcp-client [dhcpcd]=dhcpcd-base
    [networkctl]=systemd [dbus-daemon]=dbus-daemon [udhcpc]=udhcpc [traceroute]=traceroute
)

# nsx_install_tools [CMD...]: make sure CMDs (default: all above) exist.
nsx_install_tools() {
    local cmds=("$@") missing=() cmd
    [[ ${#cmds[@]} -gt 0 ]] || cmds=("${!NSX_TOOL_PKG[@]}")
    for cmd in "${cmds[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${NSX_TOOL_PKG[$cmd]:-$cmd}")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all tools present"
        return 0
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing: ${missing[*]} (and no apt-get to install them)" >&2
        return 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing: ${missing[*]}; run as root so apt-get can install them" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    # Don't ask whether non-root users may capture (wireshark-common).
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    # Debian 13 ships systemd-networkd (and networkctl) in its own package.
    if [[ " ${missing[*]} " == *" systemd "* ]] && ! command -v networkctl >/dev/null 2>&1 &&
        [[ -n "$(apt-cache policy systemd-networkd 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"')" ]]; then
        missing+=(systemd-networkd)
    fi
    # No service may start during the install: openssh-server's postinst
    # would start a system sshd (and fails where none can start, e.g. in a
    # container without an init). A policy-rc.d forbids it for the install,
    # unless the system has its own.
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# tests/lib/deps.sh: no service starts during the install\nexit 101\n' \
            >"$policy" && chmod 0755 "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates "${missing[@]}" >/dev/null || rc=1
    [[ $own_policy -eq 1 ]] && rm -f "$policy"
    return "$rc"
}

# nsx_ensure_rust: cargo on PATH (installing rustup if needed), rustfmt, clippy.
nsx_ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "installing rustup (stable, minimal profile)"
        nsx_install_tools curl cc || return 1
        curl -sSf --proto '=https' --tlsv1.2 https://sh.rustup.rs |
            sh -s -- -y --profile minimal --component rustfmt,clippy || return 1
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    if command -v rustup >/dev/null 2>&1; then
        local comp
        for comp in rustfmt clippy; do
            rustup component list --installed 2>/dev/null | grep -q "^$comp" ||
                rustup component add "$comp" || return 1
        done
    fi
    cargo --version
}
