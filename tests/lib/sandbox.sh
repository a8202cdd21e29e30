#!/usr/bin/env bash
# tests/lib/sandbox.sh -- run a test script inside a private, throw-away sandbox.
#
# `enter_sandbox "$@"` (call it near the top of a script) re-runs the calling
# script under
#   unshare --user --map-root-user --net --mount --propagation private
#           --pid --fork --mount-proc --kill-child
# so nothing it does can touch the host's network, no sudo is needed and
# nothing is left behind: tmpfs on /run/netns (made shared, so namespaces
# that agents create are visible to every process of the sandbox) and on
# /run/nsx-e2e (the work area, SANDBOX_TMP) and over the host's /run/systemd,
# /run/dbus and /run/udev, loopback up, and an EXIT trap
# that kills every process the script started (sandbox_bg) and deletes the
# namespaces it created. The re-run script is PID 1 of the sandbox's PID
# namespace: when it exits, the kernel kills whatever is left. The original
# process stays outside and forwards INT/TERM/HUP to it (unshare itself
# ignores them), so `timeout` and Ctrl-C both end the sandbox cleanly.
# Scripts already inside a sandbox (NSX_IN_SANDBOX=1) do not re-enter; they
# only install their own cleanup.
#
# Helpers: sandbox_bg LOG CMD... (start + track a background process; its PID
# is left in SANDBOX_LAST_PID), sandbox_kill PID [SECS] (TERM, bounded wait,
# KILL), sandbox_alive PID, sandbox_wait_exit PID SECS, sandbox_track_netns
# NAME (delete NAME at exit), sandbox_on_exit FUNC (run FUNC at exit).
# NSX_SANDBOX_HOST_PID: a host PID inside the sandbox's user, mount and
# network namespaces (for `nsenter --target PID --user --mount --net`).
# shellcheck shell=bash

SANDBOX_PIDS=()
SANDBOX_NETNS=()
SANDBOX_TMP=""
SANDBOX_LAST_PID=""
SANDBOX_CLEANUP_HOOKS=()
SANDBOX_WORK=/run/nsx-e2e

sandbox_die() {
    echo "sandbox: $*" >&2
    exit 1
}

# sandbox_children PID: PIDs whose parent is PID (host view).
sandbox_children() {
    local f
    for f in /proc/[0-9]*/stat; do
        awk -v p="$1" '$4 == p { print $1 }' "$f" 2>/dev/null
    done
}

# enter_sandbox "$@": run the calling script again in a fresh sandbox (once)
# and exit with its status.
enter_sandbox() {
    if [[ "${NSX_IN_SANDBOX:-}" == 1 ]]; then
        sandbox_init
        return 0
    fi
    command -v unshare >/dev/null || sandbox_die "unshare (util-linux) is required"
    if ! unshare --user --map-root-user --net --mount true 2>/dev/null; then
        sandbox_die "unshare --user --map-root-user --net --mount was refused by this kernel.
  The tests need user namespaces. Check: sysctl kernel.unprivileged_userns_clone
  (Debian: must be 1), sysctl user.max_user_namespaces (must be > 0),
  sysctl kernel.apparmor_restrict_unprivileged_userns (Ubuntu: must be 0)."
    fi
    local script upid rc child i
    script=$(readlink -f "$0")
    # Mount points for the sandbox's tmpfs (empty directories on the host;
    # without permission to create them the sandbox hides /run instead).
    mkdir -p /run/netns "$SANDBOX_WORK" 2>/dev/null || true
    # exec keeps the subshell's PID ($BASHPID): the unshare process, which
    # is in the sandbox's user, mount and network namespaces.
    (exec env NSX_IN_SANDBOX=1 NSX_SANDBOX_OWNER=1 NSX_SANDBOX_HOST_PID="$BASHPID" \
        unshare --user --map-root-user --net --mount --propagation private \
        --pid --fork --mount-proc --kill-child \
        bash "$script" "$@") &
    upid=$!
    # Forward INT/TERM/HUP to the sandbox's PID 1 (a child of unshare): it
    # cleans up and exits; after 20 s, SIGKILL unshare (--kill-child then
    # kills the whole sandbox).
    # shellcheck disable=SC2317,SC2329 # invoked by the traps below
    sandbox_forward() {
        local sig=$1
        for child in $(sandbox_children "$upid"); do
            kill "-$sig" "$child" 2>/dev/null || true
        done
        for ((i = 0; i < 200; i++)); do
            kill -0 "$upid" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -KILL "$upid" 2>/dev/null || true
    }
    trap 'sandbox_forward INT' INT
    trap 'sandbox_forward TERM' TERM
    trap 'sandbox_forward HUP' HUP
    rc=0
    while true; do
        wait "$upid" && rc=0 || rc=$?
        kill -0 "$upid" 2>/dev/null || break
    done
    exit "$rc"
}

# sandbox_init: per-script setup inside the sandbox.
sandbox_init() {
    if [[ "${NSX_SANDBOX_OWNER:-}" == 1 ]]; then
        # Only the outermost script (PID 1) sets up the sandbox-wide mounts.
        export NSX_SANDBOX_OWNER=0
        export NSX_SANDBOX_PID1_SCRIPT=$$
        if [[ ! -d /run/netns || ! -d "$SANDBOX_WORK" ]]; then
            mount -t tmpfs -o mode=0755 nsx-run /run || sandbox_die "cannot mount tmpfs on /run"
            mkdir -p /run/netns "$SANDBOX_WORK"
        fi
        mount -t tmpfs -o mode=0755 nsx-netns /run/netns || sandbox_die "cannot mount tmpfs on /run/netns"
        mount --make-shared /run/netns || sandbox_die "cannot make /run/netns shared"
        mount -t tmpfs -o mode=0700 nsx-e2e "$SANDBOX_WORK" || sandbox_die "cannot mount tmpfs on $SANDBOX_WORK"
        # The host's systemd-networkd, D-Bus and udev state stay out of
        # sight: nothing in here reads or changes them (a test runs its own
        # networkd and bus there).
        local d
        for d in /run/systemd /run/dbus /run/udev; do
            [[ -d "$d" ]] || continue
            mount -t tmpfs -o mode=0755 nsx-hide "$d" || sandbox_die "cannot mount tmpfs on $d"
        done
        ip link set lo up
    fi
    SANDBOX_TMP=$(mktemp -d "$SANDBOX_WORK/XXXXXX")
    trap sandbox_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# sandbox_bg LOG CMD...: start CMD in the background (stdout+stderr to LOG), track it.
sandbox_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 </dev/null &
    SANDBOX_LAST_PID=$!
    SANDBOX_PIDS+=("$SANDBOX_LAST_PID")
}

# sandbox_alive PID: true while PID runs (and is not a zombie).
sandbox_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# sandbox_wait_exit PID SECS: wait (bounded) for PID to exit; true if it did.
sandbox_wait_exit() {
    local pid=$1 secs=${2:-5} i
    for ((i = 0; i < secs * 10; i++)); do
        sandbox_alive "$pid" || return 0
        sleep 0.1
    done
    ! sandbox_alive "$pid"
}

# sandbox_kill PID [SECS]: SIGTERM, wait up to SECS, then SIGKILL.
sandbox_kill() {
    local pid=$1 secs=${2:-5}
    sandbox_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    sandbox_wait_exit "$pid" "$secs" && return 0
    kill -KILL "$pid" 2>/dev/null || true
    sandbox_wait_exit "$pid" 2 || true
}

sandbox_track_netns() {
    SANDBOX_NETNS+=("$1")
}

# sandbox_on_exit FUNC: run FUNC (output discarded) first during cleanup.
sandbox_on_exit() {
    SANDBOX_CLEANUP_HOOKS+=("$1")
}

sandbox_cleanup() {
    local rc=$? hook pid ns i p
    set +e
    # A second Ctrl-C must not cut the cleanup short; bash's "Killed" notes
    # about the processes swept below are noise.
    trap '' INT TERM HUP
    trap - EXIT
    exec 2>/dev/null
    for ((i = ${#SANDBOX_CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
        hook=${SANDBOX_CLEANUP_HOOKS[i]}
        "$hook" >/dev/null 2>&1
    done
    for pid in "${SANDBOX_PIDS[@]}"; do
        sandbox_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${SANDBOX_PIDS[@]}"; do
        sandbox_wait_exit "$pid" 3 || kill -KILL "$pid" 2>/dev/null
    done
    for ns in "${SANDBOX_NETNS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && ip netns del "$ns" 2>/dev/null
    done
    if [[ "${NSX_SANDBOX_PID1_SCRIPT:-}" == "$$" ]]; then
        # Outermost script (PID 1 of the sandbox): sweep every other process.
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            [[ "$pid" == "$$" || "$pid" == 1 ]] && continue
            kill -KILL "$pid" 2>/dev/null
        done
        for ns in /run/netns/*; do
            [[ -e "$ns" ]] && ip netns del "${ns##*/}" 2>/dev/null
        done
    fi
    [[ -n "$SANDBOX_TMP" ]] && rm -rf "$SANDBOX_TMP"
    exit "$rc"
}
