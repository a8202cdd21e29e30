#!/usr/bin/env bash
# tests/run-e2e.sh -- run the end-to-end tests (tests/e2e/NN_*.sh) inside one
# private sandbox (user + network + mount + PID namespaces; see
# tests/lib/sandbox.sh) and print a summary. Needs root or unprivileged user
# namespaces, the nsx-agent binary ($NSX_AGENT, else the newest of
# target/{release,debug}/nsx-agent) and the tools scripts/test.sh installs.
#
#   tests/run-e2e.sh            # all tests
#   tests/run-e2e.sh 04 06      # only tests whose file name starts with 04 or 06
#
# Each test is bounded by NSX_E2E_TEST_TIMEOUT seconds (default 600).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/sandbox.sh
source "$HERE/lib/sandbox.sh"
# shellcheck source=tests/lib/topo.sh
source "$HERE/lib/topo.sh"
enter_sandbox "$@"

NSX_AGENT=$(topo_find_agent) || exit 1
export NSX_AGENT
LIMIT=${NSX_E2E_TEST_TIMEOUT:-600}

tests=()
for t in "$HERE"/e2e/[0-9][0-9]_*.sh; do
    name=$(basename "$t")
    if [[ $# -eq 0 ]]; then
        tests+=("$t")
    else
        for want in "$@"; do
            [[ "$name" == "$want"* ]] && tests+=("$t")
        done
    fi
done
[[ ${#tests[@]} -gt 0 ]] || { echo "no test matches: $*" >&2; exit 2; }

echo "# nsx e2e: ${#tests[@]} test file(s), agent $NSX_AGENT"
summary=()
failed=0
t_all=$SECONDS
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    echo "# --- $name"
    t0=$SECONDS
    rc=0
    # In the background + wait: a TERM/INT to this script is handled at once.
    timeout --kill-after=10 "$LIMIT" bash "$t" &
    wait $! || rc=$?
    dt=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf 'PASS  %-28s %4ds' "$name" "$dt")")
    else
        [[ $rc -eq 124 ]] && echo "not ok - $name: timed out after ${LIMIT}s"
        summary+=("$(printf 'FAIL  %-28s %4ds  (exit %d)' "$name" "$dt" "$rc")")
        failed=$((failed + 1))
    fi
    # Whatever a test left behind (it should leave nothing) must not leak
    # into the next one.
    for ns in /run/netns/*; do
        [[ -e "$ns" ]] && ip netns del "${ns##*/}" 2>/dev/null
    done
done
echo "# ==== e2e summary"
printf '# %s\n' "${summary[@]}"
echo "# $((${#tests[@]} - failed)) of ${#tests[@]} test files passed in $((SECONDS - t_all))s"
[[ $failed -eq 0 ]]
