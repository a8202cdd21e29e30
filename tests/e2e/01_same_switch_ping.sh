#!/usr/bin/env bash
# tests/e2e/01_same_switch_ping.sh -- e2e test 1: ping both ways between two
# instances on one logical switch at sizes 56, 1400 and the largest that fits
# the overlay MTU (DF set), at underlay MTU 1500 and 9001. Also checks what the
# agent built: nsx-eth0 (MTU = underlay - 58, NIC MAC, overlay IP, default
# route via the switch gateway) and nsx-vtep0.0 (NIC MAC, underlay IP).
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
e2e_init 01 "$@"

one_mtu() {
    local mtu=$1 omtu vm other got size max
    topo_new "t01m$mtu" "$mtu"
    topo_switch ls-web 0x238c 192.168.100.0/24 192.168.100.1
    topo_instance vm1 ls-web 192.168.100.3
    topo_instance vm2 ls-web 192.168.100.4
    topo_build
    topo_wait_underlay || bail "underlay up at MTU $mtu"
    start_agents vm1 vm2
    omtu=$(topo_overlay_mtu)
    for vm in vm1 vm2; do
        got=$(in_overlay "$vm" ip -j addr show dev nsx-eth0 |
            jq -r '.[0] | "\(.mtu) \(.address) \(.addr_info[] | select(.family=="inet") | "\(.local)/\(.prefixlen)")"')
        check_eq "mtu $mtu: $vm nsx-eth0 has MTU $omtu, the NIC MAC and the overlay IP" \
            "$omtu $(topo_mac "$vm") $(topo_overlay_ip "$vm")/24" "$got"
        got=$(in_overlay "$vm" ip -j route show default | jq -r '.[0].gateway // "none"')
        check_eq "mtu $mtu: $vm overlay default route via 192.168.100.1" 192.168.100.1 "$got"
        got=$(in_inst "$vm" ip -j addr show dev nsx-vtep0.0 |
            jq -r '.[0] | "\(.mtu) \(.address) \(.addr_info[] | select(.family=="inet") | "\(.local)/\(.prefixlen)")"')
        check_eq "mtu $mtu: $vm nsx-vtep0.0 holds the NIC MAC and underlay IP" \
            "$mtu $(topo_mac "$vm") $(topo_underlay_ip "$vm")/24" "$got"
    done
    overlay_wait_ping vm1 192.168.100.4 || not_ok "mtu $mtu: first overlay ping vm1 -> vm2 within 10 s"
    max=$((omtu - 28))
    for size in 56 1400 "$max"; do
        for vm in vm1 vm2; do
            if [[ $vm == vm1 ]]; then other=vm2; else other=vm1; fi
            if out=$(overlay_ping "$vm" "$(topo_overlay_ip "$other")" -c 3 -i 0.2 -W 2 -s "$size" -M "do" 2>&1) &&
                grep -q ' 3 received' <<<"$out"; then
                ok "mtu $mtu: ping $vm -> $other, $size bytes, DF: 3/3 answered"
            else
                not_ok "mtu $mtu: ping $vm -> $other, $size bytes, DF: 3/3 answered" "$out" \
                    "agent log $vm: $(tail -n 5 "$(agent_log "$vm")")"
            fi
        done
    done
    # One byte more than fits must not leave nsx-eth0 (the kernel refuses it).
    if out=$(overlay_ping vm1 192.168.100.4 -c 1 -W 1 -s $((max + 1)) -M "do" 2>&1); then
        not_ok "mtu $mtu: $((max + 1)) bytes with DF do not fit the overlay MTU" "$out"
    else
        ok "mtu $mtu: $((max + 1)) bytes with DF do not fit the overlay MTU"
    fi
    for vm in vm1 vm2; do
        rc=0
        agent_stop "$vm" || rc=$?
        check_eq "mtu $mtu: agent $vm exits 0 on SIGTERM" 0 "$rc"
    done
    topo_destroy
}

one_mtu 1500
one_mtu 9001
tap_done
