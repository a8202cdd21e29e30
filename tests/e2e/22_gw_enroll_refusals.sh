#!/usr/bin/env bash
# tests/e2e/22_gw_enroll_refusals.sh -- e2e test 22 (issue 4, test 2):
# enrollment refusals, each with a clear error.
#  - an enrollment request built with openssl (payload + ECDSA-SHA256 with
#    the bootstrap key, gateway/README.md) is accepted once; the very same
#    bytes posted again are refused (409 replayed);
#  - an enrolled instance that comes back with the bootstrap key (its
#    agent.crt deleted) is refused (409 already enrolled); the agent exits
#    non-zero printing the gateway's message;
#  - a wrong bootstrap key (unknown to the gateway) is refused (403); after
#    `nsx-gateway bootstrap rotate` the old key is refused too (retired) and
#    the new one works;
#  - a modified payload (bad signature) and a stale timestamp are refused.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 22 "$@"

gw_setup t22 1500 vm1:web vm2:- vm3:-
# expect_refusal DESC "CODE BODY" CODE REGEX
expect_refusal() {
    local desc=$1 got=$2 code=$3 re=$4
    if [[ "${got%% *}" == "$code" ]] && grep -qiE "$re" <<<"${got#* }"; then
        ok "$desc: HTTP $code $(jq -c . <<<"${got#* }" 2>/dev/null || echo "${got#* }")"
    else
        not_ok "$desc" "expected: HTTP $code, error matching /$re/" "got:      $got"
    fi
}

# --- replay
enroll_body "$GW_DIR/bootstrap.key" i-replay >"$TOPO_DIR/replay.json" || bail "build an enrollment request with openssl"
got=$(enroll_post "$TOPO_DIR/replay.json")
check_eq "an openssl-built enrollment request is accepted (HTTP 200)" 200 "${got%% *}"
[[ "${got%% *}" == 200 ]] || diag "$got"
check "the answer carries a certificate for i-replay and a tep_id" \
    jq -e '.certificate_pem and .tep_id and .instance_id == "i-replay"' <<<"${got#* }"
got=$(enroll_post "$TOPO_DIR/replay.json")
expect_refusal "the same request replayed is refused" "$got" 409 'replay'

# --- second enrollment of an enrolled instance with the bootstrap key
enroll_body "$GW_DIR/bootstrap.key" vm1 >"$TOPO_DIR/again.json"
got=$(enroll_post "$TOPO_DIR/again.json")
expect_refusal "a fresh request (new nonce) for the enrolled vm1 is refused" "$got" 409 'already enrolled'
agent_stop vm1 || true
rm -f "$TOPO_DIR/vm1/state/agent.crt" "$TOPO_DIR/vm1/state/agent.key"
rc=$(gw_agent_expect_exit vm1 20)
check "vm1's agent without its certificate tries to enroll again and exits non-zero (rc=$rc)" \
    bash -c "[[ '$rc' != running && '$rc' != 0 ]]"
check "vm1's agent prints the gateway's refusal (already enrolled)" \
    grep -qiE 'refused.*already enrolled' "$(agent_log vm1)"
diag "vm1 agent: $(grep -iE 'refused|error' "$(agent_log vm1)" | tail -n 2)"
check "no overlay namespace for vm1 after the refusal" bash -c "! ip netns list | grep -qw $(topo_root vm1)"

# --- wrong bootstrap key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TOPO_DIR/wrong-bootstrap.key" 2>/dev/null
chmod 600 "$TOPO_DIR/wrong-bootstrap.key"
enroll_body "$TOPO_DIR/wrong-bootstrap.key" i-wrongkey >"$TOPO_DIR/wrong.json"
got=$(enroll_post "$TOPO_DIR/wrong.json")
expect_refusal "a request signed with an unknown bootstrap key is refused" "$got" 403 'unknown bootstrap key'
gw_agent_config vm2 web "" "$TOPO_DIR/wrong-bootstrap.key"
rc=$(gw_agent_expect_exit vm2 20)
check "vm2's agent with a wrong bootstrap key exits non-zero (rc=$rc)" bash -c "[[ '$rc' != running && '$rc' != 0 ]]"
check "vm2's agent prints the gateway's refusal (unknown bootstrap key)" \
    grep -qiE 'refused.*unknown bootstrap key' "$(agent_log vm2)"
diag "vm2 agent: $(grep -iE 'refused|error' "$(agent_log vm2)" | tail -n 2)"
not_enrolled() { ! gw_instance vm2 .mode >/dev/null 2>&1; }
check "vm2 is not in the inventory" not_enrolled

# --- bad signature, stale timestamp
jq -c '.payload |= sub("i-badsig"; "i-badsix")' <(enroll_body "$GW_DIR/bootstrap.key" i-badsig) >"$TOPO_DIR/badsig.json"
got=$(enroll_post "$TOPO_DIR/badsig.json")
expect_refusal "a payload modified after signing is refused" "$got" 403 'bad signature'
enroll_body "$GW_DIR/bootstrap.key" i-stale "" $(($(date +%s) - 3600)) >"$TOPO_DIR/stale.json"
got=$(enroll_post "$TOPO_DIR/stale.json")
expect_refusal "a request an hour old is refused" "$got" 403 'stale'

# --- bootstrap rotate: the old key is retired, the new one works
cp "$GW_DIR/bootstrap.key" "$TOPO_DIR/old-bootstrap.key"
check "nsx-gateway bootstrap rotate" gw_cli bootstrap rotate
check "bootstrap.key changed" bash -c "! cmp -s $GW_DIR/bootstrap.key $TOPO_DIR/old-bootstrap.key"
# No wait: the gateway looks the bootstrap key up in its store for every
# enrollment, so the CLI's committed rotation holds for the next one.
gw_agent_config vm3 web "" "$TOPO_DIR/old-bootstrap.key"
rc=$(gw_agent_expect_exit vm3 20)
check "vm3's agent with the rotated-out bootstrap key exits non-zero (rc=$rc)" bash -c "[[ '$rc' != running && '$rc' != 0 ]]"
check "vm3's agent prints the gateway's refusal (bootstrap key retired)" grep -qiE 'refused.*retired' "$(agent_log vm3)"
diag "vm3 agent: $(grep -iE 'refused|error' "$(agent_log vm3)" | tail -n 2)"
gw_agent_config vm3 web
if gw_agent_start vm3 2>"$TOPO_DIR/vm3/start.err"; then
    ok "vm3's agent enrolls with the new bootstrap key"
else
    not_ok "vm3's agent enrolls with the new bootstrap key" "$(cat "$TOPO_DIR/vm3/start.err")"
fi
check "vm3 ESTABLISHED" gw_wait_state vm3 ESTABLISHED 15
diag "gateway log (enrollment refusals):" "$(grep -iE 'enroll' "$GW_LOG" | grep -iE 'refus|replay|reject|retired|unknown|stale|signature' | tail -n 8)"
tap_done
