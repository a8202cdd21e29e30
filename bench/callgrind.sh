#!/bin/bash
# Instructions per call of the functions a criterion bench runs, counted by
# callgrind: deterministic where wall-clock criterion figures on a shared
# 2-vCPU machine swing by +-15 %. Compare two builds of the same bench
# (e.g. the old commit's executable against the new one's):
#
#   cargo bench -p datapath --bench pipeline --no-run   # prints the executable
#   bench/callgrind.sh OLD_EXE NEW_EXE 'pipeline_1400B/decap_deliver_fw$'
#
# prints, for every function called at least as often as the most-called
# entry point, instructions per call in OLD and NEW (inclusive of callees).
# The entry point of a frame (`Pipeline::from_port`, `from_underlay`,
# `Firewall::process`) is the figure to compare; the rest shows where a
# difference comes from. Needs valgrind (scripts/test.sh does not).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 OLD_BENCH_EXE NEW_BENCH_EXE BENCH_FILTER" >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
filter=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # exe name
    timeout 600 valgrind --tool=callgrind --callgrind-out-file="$out/$2" \
        "$1" --bench --profile-time 1 "$filter" >/dev/null 2>&1
}
run "$1" old
run "$2" new
python3 - "$out/old" "$out/new" <<'PY'
import collections, re, sys

def load(path):
    """Calls and inclusive instructions per called function."""
    names, calls, incl = {}, collections.Counter(), collections.Counter()
    lines = open(path).read().split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if not m:
            continue
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "cfn" and lines[i + 1].startswith("calls="):
            name = names.get(m.group(2), "?")
            calls[name] += int(lines[i + 1].split("=")[1].split()[0])
            incl[name] += int(lines[i + 2].split()[1])
    return calls, incl

(oc, oi), (nc, ni) = load(sys.argv[1]), load(sys.argv[2])
def hot(c):
    # Functions called about once per iteration or more (setup runs once).
    top = max(c.values(), default=0)
    return {k for k, v in c.items() if v >= top // 4 and not k.startswith("criterion")}
rows = []
for k in hot(oc) | hot(nc):
    o = oi[k] / oc[k] if oc[k] else 0
    n = ni[k] / nc[k] if nc[k] else 0
    rows.append((max(o, n), k, o, n))
print(f"{'old':>8} {'new':>8}  instructions per call")
for _, k, o, n in sorted(rows, reverse=True)[:25]:
    print(f"{o:8.0f} {n:8.0f}  {k[:100]}")
PY
