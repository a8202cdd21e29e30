#!/usr/bin/env bash
# tests/lib/sandbox.sh -- run a test script inside a private, throw-away sandbox.
#
# `enter_sandbox "$@"` (call it near the top of a script) re-executes the
# calling script under
#   unshare --user --map-root-user --net --mount --propagation private
#           --pid --fork --mount-proc --kill-child
# so nothing it does can touch the host's network, no sudo is needed and
# nothing is left behind: a tmpfs is mounted on /run/netns (made shared, so
# namespaces created by agents are visible to every process of the sandbox),
# loopback is brought up, and an EXIT trap kills every process the script
# started (sandbox_bg) and deletes the namespaces it created. The outermost
# script is PID 1 of the sandbox's PID namespace: when it exits, the kernel
# kills whatever is left. Scripts already inside a sandbox (marker variable
# NSX_IN_SANDBOX=1) do not re-enter; they only install their own cleanup.
#
# Helpers: sandbox_bg LOG CMD... (start + track a background process; its PID
# is left in SANDBOX_LAST_PID), sandbox_kill PID [SECS] (TERM, bounded wait,
# KILL), sandbox_track_netns NAME (delete NAME at exit), SANDBOX_TMP (a
# private tmpfs work directory, removed at exit).
# shellcheck shell=bash

SANDBOX_PIDS=()
SANDBOX_NETNS=()
SANDBOX_TMP=""
SANDBOX_LAST_PID=""
SANDBOX_CLEANUP_HOOKS=()

sandbox_die() {
    echo "sandbox: $*" >&2
    exit 1
}

# enter_sandbox "$@": re-exec the calling script in a fresh sandbox (once).
enter_sandbox() {
    if [[ "${NSX_IN_SANDBOX:-}" != 1 ]]; then
        command -v unshare >/dev/null || sandbox_die "unshare (util-linux) is required"
        if ! unshare --user --map-root-user --net --mount true 2>/dev/null; then
            sandbox_die "unshare --user --map-root-user --net --mount was refused by this kernel.
  The tests need unprivileged user namespaces. Check: sysctl kernel.unprivileged_userns_clone
  (Debian: must be 1), sysctl user.max_user_namespaces (must be > 0),
  sysctl kernel.apparmor_restrict_unprivileged_userns (Ubuntu: must be 0)."
        fi
        local script
        script=$(readlink -f "$0")
        export NSX_IN_SANDBOX=1
        # The unshare process keeps this PID; it lives in the sandbox's user,
        # mount and network namespaces (not its PID namespace): a handle for
        # `nsenter --target $NSX_SANDBOX_HOST_PID ...` from the host.
        export NSX_SANDBOX_HOST_PID=$$
        # NSX_SANDBOX_OWNER=1: tells the re-executed script it sets the sandbox up.
        exec unshare --user --map-root-user --net --mount --propagation private \
            --pid --fork --mount-proc --kill-child \
            env NSX_SANDBOX_OWNER=1 bash "$script" "$@"
    fi
    sandbox_init
}

# sandbox_init: per-script setup inside the sandbox (idempotent for /run/netns).
sandbox_init() {
    if [[ "${NSX_SANDBOX_OWNER:-}" == 1 ]]; then
        # Only the outermost script sets up the sandbox-wide mounts.
        export NSX_SANDBOX_OWNER=0
        export NSX_SANDBOX_PID1_SCRIPT=$$
        if ! mkdir -p /run/netns 2>/dev/null; then
            # Cannot create the mount point on the host's /run: hide /run instead.
            mount -t tmpfs -o mode=0755 nsx-run /run || sandbox_die "cannot mount tmpfs on /run"
            mkdir -p /run/netns
        fi
        mount -t tmpfs -o mode=0755 nsx-netns /run/netns || sandbox_die "cannot mount tmpfs on /run/netns"
        mount --make-shared /run/netns || sandbox_die "cannot make /run/netns shared"
        ip link set lo up
    fi
    SANDBOX_TMP=$(mktemp -d "${TMPDIR:-/tmp}/nsx-e2e.XXXXXX")
    mount -t tmpfs -o mode=0700 nsx-tmp "$SANDBOX_TMP" || sandbox_die "cannot mount tmpfs on $SANDBOX_TMP"
    trap sandbox_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
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

# sandbox_on_exit CMD: run CMD (a function name) first during cleanup.
sandbox_on_exit() {
    SANDBOX_CLEANUP_HOOKS+=("$1")
}

sandbox_cleanup() {
    local rc=$? hook pid ns i p
    set +e
    trap - EXIT INT TERM HUP
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
        ip netns del "$ns" 2>/dev/null
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
    if [[ -n "$SANDBOX_TMP" ]]; then
        umount "$SANDBOX_TMP" 2>/dev/null
        rmdir "$SANDBOX_TMP" 2>/dev/null
    fi
    exit "$rc"
}
