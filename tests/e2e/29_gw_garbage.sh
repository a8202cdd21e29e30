#!/usr/bin/env bash
# tests/e2e/29_gw_garbage.sh -- e2e test 29 (issue 4, test 9): hostile input
# on 5555 and 8443. Each connection is closed by the gateway (well before
# our client would give up) and the gateway logs a reason; meanwhile the
# enrolled agents stay ESTABLISHED, overlay pings work and a new instance can
# still enroll.
#  5555: plain-text garbage (no TLS); inside mTLS (a certificate enrolled with
#        openssl for i-probe): a length prefix of 4 GiB - 1 (> MAX_FRAME),
#        a frame that is not JSON, a Hello offering only protocol version 99.
#  8443: plain-text garbage; HTTPS with a non-JSON body, a body > 64 KiB,
#        a chunked body.
set -euo pipefail
# shellcheck source=tests/lib/e2e.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/e2e.sh"
# shellcheck source=tests/lib/gw.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/gw.sh"
e2e_init 29 "$@"

HOLD=8 # our clients keep their side open this long; the gateway must close first
gw_setup t29 1500 vm1:web vm2:app vm3:-
nlog() { sed 's/\x1b\[[0-9;]*m//g' "$GW_LOG"; }

# A client certificate for the mTLS probes, enrolled with openssl + curl.
enroll_body "$GW_DIR/bootstrap.key" i-probe >"$TOPO_DIR/probe.json" || bail "enrollment request for i-probe"
got=$(enroll_post "$TOPO_DIR/probe.json")
[[ "${got%% *}" == 200 ]] || bail "enroll i-probe" "$got"
jq -r .certificate_pem <<<"${got#* }" >"$TOPO_DIR/i-probe.crt"

# hex_bytes HEX: the bytes.
hex_bytes() { local h=$1 i esc=""; for ((i = 0; i < ${#h}; i += 2)); do esc+="\\x${h:i:2}"; done; printf '%b' "$esc"; }
# frame TEXT: 4-byte big-endian length + TEXT.
frame() { hex_bytes "$(printf '%08x' "${#1}")"; printf '%s' "$1"; }

# since N: the gateway's log lines after the first N (ANSI stripped).
since() { nlog | tail -n +$(($1 + 1)); }
# probe NAME DESC LOGRE CLIENT...: feed $TOPO_DIR/NAME.in (then hold stdin
# open for HOLD s) to CLIENT; the gateway must close within HOLD - 2 s, and
# log a line matching LOGRE (from the underlay peer 10.99.3.1) -- a line
# logged since this probe began, not one of an earlier probe.
probe() {
    local name=$1 desc=$2 re=$3 t0 t1 ms i n0 line=""
    shift 3
    n0=$(nlog | wc -l)
    t0=$(date +%s%N)
    # The time is taken when the client exits (the pipeline itself also
    # waits for the sleeping writer).
    rm -f "$TOPO_DIR/$name.t1"
    {
        cat "$TOPO_DIR/$name.in"
        for ((i = 0; i < HOLD * 10; i++)); do
            [[ -e "$TOPO_DIR/$name.t1" ]] && break
            sleep 0.1
        done
    } |
        { in_ul timeout $((HOLD + 5)) "$@" >"$TOPO_DIR/$name.out" 2>&1 || true; date +%s%N >"$TOPO_DIR/$name.t1"; }
    t1=$(cat "$TOPO_DIR/$name.t1")
    ms=$(((t1 - t0) / 1000000))
    check "$desc: the gateway closes the connection (after $ms ms)" test "$ms" -lt $(((HOLD - 2) * 1000))
    # The reason may be logged just after the close: bounded wait (5 s).
    for ((i = 0; i < 50; i++)); do
        line=$(since "$n0" | grep -E '10\.99\.3\.1:' | grep -iE "$re" | tail -n 1 || true)
        [[ -n "$line" ]] && break
        sleep 0.1
    done
    if [[ -n "$line" ]]; then
        ok "$desc: logged with a reason ($(sed -E 's/^[^ ]+ +[A-Z]+ +[^ ]+ //' <<<"$line" | head -c 160))"
    else
        not_ok "$desc: the gateway logs a reason matching /$re/ since the probe began" \
            "gateway log lines since then:" "$(since "$n0" | tail -n 6)"
    fi
}
TLS=(openssl s_client -quiet -connect "$GW_IP:5555" -servername "$GW_NAME" -CAfile "$GW_DIR/ca.pem"
    -cert "$TOPO_DIR/i-probe.crt" -key "$TOPO_DIR/i-probe.key")
PLAIN5555=(socat -t 1 - "TCP:$GW_IP:5555")
PLAIN8443=(socat -t 1 - "TCP:$GW_IP:8443")

# --- 5555
head -c 3000 /dev/urandom >"$TOPO_DIR/g1.in"
probe g1 "5555: 3000 random bytes, no TLS" 'refused|tls|handshake' "${PLAIN5555[@]}"
hex_bytes ffffffff >"$TOPO_DIR/g2.in"
probe g2 "5555 (mTLS): length prefix 0xffffffff" 'too large|toolarge|frame|max' "${TLS[@]}"
frame 'hello, not json' >"$TOPO_DIR/g3.in"
probe g3 "5555 (mTLS): a frame that is not JSON" 'json|frame|invalid|malformed' "${TLS[@]}"
meta='{"instance_id":"i-probe","hostname":"i-probe","os":"linux","image_id":"ami-nsx-e2e","tags":{"nsx:network":"web"},"underlay_ip":"10.99.3.99","nic_mac":"06:17:1e:54:96:63"}'
frame "{\"type\":\"Hello\",\"versions\":[99],\"agent_version\":\"9.9.9\",\"instance\":$meta,\"applied_version\":null}" >"$TOPO_DIR/g4.in"
probe g4 "5555 (mTLS): Hello offering only protocol version 99" 'protocol version|common' "${TLS[@]}"
check "the gateway answered version 99 with Reject 'no common protocol version'" \
    grep -aq 'no common protocol version' "$TOPO_DIR/g4.out"
diag "reply: $(grep -ao '{.*}' "$TOPO_DIR/g4.out" | head -n 1)"
# The version-1 Hello on the same certificate works (control of the probe).
frame "{\"type\":\"Hello\",\"versions\":[1],\"agent_version\":\"9.9.9\",\"instance\":$meta,\"applied_version\":null}" >"$TOPO_DIR/g5.in"
{ cat "$TOPO_DIR/g5.in"; sleep 2; } | in_ul timeout 4 "${TLS[@]}" >"$TOPO_DIR/g5.out" 2>&1 || true
check "control: the same Hello with version 1 gets Welcome and Snapshot" \
    bash -c "grep -aq '\"Welcome\"' '$TOPO_DIR/g5.out' && grep -aq '\"Snapshot\"' '$TOPO_DIR/g5.out'"

# --- 8443
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n%s' "$(head -c 2000 /dev/urandom | base64 -w0)" >"$TOPO_DIR/e1.in"
probe e1 "8443: plain HTTP and garbage, no TLS" 'tls|handshake|refused' "${PLAIN8443[@]}"
https() {
    in_ul curl -s -m 15 --cacert "$GW_DIR/ca.pem" --resolve "$GW_NAME:8443:$GW_IP" -o "$TOPO_DIR/https.out" \
        -w '%{http_code}' "$@" "https://$GW_NAME:8443/api/v1/enroll" || true
}
code=$(https -H 'Content-Type: application/json' --data-binary 'garbage {{{')
check_eq "8443: a non-JSON enrollment body -> 400" 400 "$code"
diag "$(cat "$TOPO_DIR/https.out")"
head -c 70000 /dev/zero | tr '\0' 'a' >"$TOPO_DIR/big.body"
code=$(https -H 'Content-Type: application/json' --data-binary "@$TOPO_DIR/big.body")
check_eq "8443: a 70,000-byte body -> 413" 413 "$code"
code=$(https -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary '{"payload":"x"}')
check_eq "8443: a chunked body -> 411" 411 "$code"

# --- everyone else is still served
check "the gateway process is still running" sandbox_alive "$GW_PID"
for vm in vm1 vm2; do
    check_eq "$vm is still ESTABLISHED" ESTABLISHED "$(gw_status "$vm" .gateway.state)"
done
check "overlay ping vm1 -> vm2" overlay_wait_ping vm1 "${GW_IP_OF[vm2]}"
gw_agent_config vm3 web
if gw_agent_start vm3 2>"$TOPO_DIR/vm3/start.err" && gw_wait_state vm3 ESTABLISHED 15; then
    ok "a new instance (vm3) still enrolls and connects"
else
    not_ok "a new instance (vm3) still enrolls and connects" "$(cat "$TOPO_DIR/vm3/start.err")"
fi
check "overlay ping vm3 -> vm1" overlay_wait_ping vm3 "${GW_IP_OF[vm1]}"
tap_done
