#!/usr/bin/env bash
# scripts/test.sh -- everything CI checks, in order, stopping at the first
# failure: installs what the tests need (apt, rustup components; skipped when
# present), then rustfmt, clippy (-D warnings), shellcheck, cargo test, the
# release build of nsx-agent, nsx-gateway and nsxcli, tests/host_plumbing.sh
# (if present), the README's first command (scripts/demo.sh --check) and the
# namespace end-to-end tests (tests/run-e2e.sh), both against those release
# binaries (the demo builds nothing when given them).
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

# --- tools ---------------------------------------------------------------------
# shellcheck source=tests/lib/deps.sh
source tests/lib/deps.sh
run "install test tools" nsx_install_tools
step "rust toolchain"
nsx_ensure_rust || fail "rust toolchain"

# --- static checks -----------------------------------------------------------
run "cargo fmt --check" cargo fmt --all -- --check
run "cargo clippy (-D warnings)" cargo clippy --workspace --all-targets -- -D warnings
mapfile -t SHELL_SCRIPTS < <(find scripts tests -name '*.sh' -type f | sort)
# Warnings and errors fail the build; info/style notes are only shown.
run "shellcheck (${#SHELL_SCRIPTS[@]} scripts)" shellcheck -x --severity=warning "${SHELL_SCRIPTS[@]}"

# --- unit, property, pipeline tests --------------------------------------------
run "cargo test" cargo test --workspace

# --- one build profile for everything that runs the binary --------------------
run "cargo build --release -p agent -p gateway -p nsxcli" cargo build --release -p agent -p gateway -p nsxcli
export NSX_AGENT=$ROOT/target/release/nsx-agent NSX_GATEWAY=$ROOT/target/release/nsx-gateway
export NSXCLI=$ROOT/target/release/nsxcli
[[ -x "$NSX_AGENT" && -x "$NSX_GATEWAY" && -x "$NSXCLI" ]] ||
    fail "release build produced no $NSX_AGENT / $NSX_GATEWAY / $NSXCLI"

if [[ -x tests/host_plumbing.sh || -f tests/host_plumbing.sh ]]; then
    run "tests/host_plumbing.sh" bash tests/host_plumbing.sh
fi
run "scripts/demo.sh --check (the README's first command)" scripts/demo.sh --check
run "end-to-end tests (tests/run-e2e.sh)" tests/run-e2e.sh

step "all checks passed"
