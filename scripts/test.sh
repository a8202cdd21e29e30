#!/usr/bin/env bash
# scripts/test.sh -- everything CI checks, in order, stopping at the first
# failure: installs what the tests need (apt, rustup components; skipped when
# present), then rustfmt, clippy (-D warnings), shellcheck, cargo test, the
# release build of nsx-agent, tests/host_plumbing.sh (if present) and the
# namespace end-to-end tests (tests/run-e2e.sh) against that release binary.
# Run as root on Debian/Ubuntu (or with unprivileged user namespaces and the
# packages already installed). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
run() {
    local what=$1
    shift
    step "$what"
    local t0=$SECONDS
    "$@" || fail "$what (command: $*)"
    printf -- '---- %s: ok (%ds)\n' "$what" $((SECONDS - t0))
}

# --- tools -------------------------------------------------------------------
# command -> Debian package
declare -A PKG=(
    [ip]=iproute2 [ping]=iputils-ping [tshark]=tshark [dumpcap]=wireshark-common
    [iperf3]=iperf3 [jq]=jq [ethtool]=ethtool [socat]=socat [shellcheck]=shellcheck
    [unshare]=util-linux [nsenter]=util-linux [timeout]=coreutils [cc]=gcc
)
install_tools() {
    local missing=() cmd
    for cmd in "${!PKG[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all tools present"
        return 0
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null || fail "missing tools (${missing[*]}) and no apt-get to install them"
    [[ $(id -u) -eq 0 ]] || fail "missing tools (${missing[*]}): run as root so apt-get can install them"
    echo "installing: ${missing[*]}"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
}
install_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [[ -x "$HOME/.cargo/bin/cargo" ]] || {
            command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null; }
            curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        }
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    if command -v rustup >/dev/null 2>&1; then
        local comp
        for comp in rustfmt clippy; do
            rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
        done
    fi
    cargo --version
}

run "install test tools" install_tools
run "rust toolchain" install_rust

# --- static checks -----------------------------------------------------------
run "cargo fmt --check" cargo fmt --all -- --check
run "cargo clippy (-D warnings)" cargo clippy --workspace --all-targets -- -D warnings
mapfile -t SHELL_SCRIPTS < <(find scripts tests -name '*.sh' -type f | sort)
run "shellcheck (${#SHELL_SCRIPTS[@]} scripts)" shellcheck -x "${SHELL_SCRIPTS[@]}"

# --- unit, property, pipeline tests --------------------------------------------
run "cargo test" cargo test --workspace

# --- one build profile for everything that runs the binary --------------------
run "cargo build --release -p agent" cargo build --release -p agent
export NSX_AGENT=$ROOT/target/release/nsx-agent
[[ -x "$NSX_AGENT" ]] || fail "release build produced no $NSX_AGENT"

if [[ -x tests/host_plumbing.sh || -f tests/host_plumbing.sh ]]; then
    run "tests/host_plumbing.sh" bash tests/host_plumbing.sh
fi
run "end-to-end tests (tests/run-e2e.sh)" tests/run-e2e.sh

step "all checks passed"
