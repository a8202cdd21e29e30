#!/usr/bin/env bash
# tests/lib/tap.sh -- TAP-style reporting for the end-to-end tests.
#
# ok DESC / not_ok DESC [DIAG...] print one line each and count; check DESC
# CMD... runs CMD and reports (check_eq DESC EXPECTED GOT and check_same DESC
# BEFORE AFTER compare); diag prints "# " lines; bail DESC reports a
# fatal failure and exits 1; tap_done prints the plan and exits non-zero if
# anything failed. TAP_PREFIX (e.g. "01") is shown in front of descriptions.
# shellcheck shell=bash

TAP_N=0
TAP_FAILED=0
TAP_PREFIX=${TAP_PREFIX:-}

tap_desc() {
    if [[ -n "$TAP_PREFIX" ]]; then
        printf '%s: %s' "$TAP_PREFIX" "$1"
    else
        printf '%s' "$1"
    fi
}

diag() {
    local line
    for line in "$@"; do
        # ANSI colour codes stripped: agent logs may carry them.
        # shellcheck disable=SC2001 # a regex, not a plain substitution
        sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/#   /' <<<"$line"
    done
}

ok() {
    TAP_N=$((TAP_N + 1))
    printf 'ok %d - %s\n' "$TAP_N" "$(tap_desc "$1")"
}

not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=$((TAP_FAILED + 1))
    printf 'not ok %d - %s\n' "$TAP_N" "$(tap_desc "$1")"
    shift
    [[ $# -gt 0 ]] && diag "$@"
    return 0
}

# check DESC CMD...: ok if CMD succeeds, else not ok with CMD's output.
check() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        ok "$desc"
    else
        not_ok "$desc" "command: $*" "$(tail -n 20 <<<"$out")"
    fi
}

# check_eq DESC EXPECTED GOT
check_eq() {
    if [[ "$2" == "$3" ]]; then
        ok "$1"
    else
        not_ok "$1" "expected: $2" "got:      $3"
    fi
}

# check_same DESC BEFORE AFTER: ok if the two texts are equal, else not ok
# with the start of their diff.
check_same() {
    if [[ "$2" == "$3" ]]; then
        ok "$1"
    else
        not_ok "$1" "$(diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | head -n 40)"
    fi
}

# bail DESC [DIAG...]: fatal failure (setup broke): report and exit 1.
bail() {
    not_ok "$@"
    printf '1..%d\n' "$TAP_N"
    printf '# %s: FAILED (%d of %d checks failed, bailed out)\n' "${TAP_PREFIX:-test}" "$TAP_FAILED" "$TAP_N"
    exit 1
}

tap_done() {
    printf '1..%d\n' "$TAP_N"
    if [[ $TAP_FAILED -gt 0 ]]; then
        printf '# %s: FAILED (%d of %d checks failed)\n' "${TAP_PREFIX:-test}" "$TAP_FAILED" "$TAP_N"
        exit 1
    fi
    printf '# %s: passed (%d checks)\n' "${TAP_PREFIX:-test}" "$TAP_N"
    exit 0
}
