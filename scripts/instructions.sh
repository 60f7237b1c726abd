#!/usr/bin/env bash
# Counts the hot path's cost per record: CPU instructions under callgrind and
# heap allocations, for each scenario of benches/instructions.rs, as
# (count at 2N records - count at N) / N so start-up cancels.
#
# Each scenario is measured with kafkactor's metrics on (the default) and
# off (AppBuilder::metrics(false)); what metrics cost a record is the
# difference, reported as a percentage (the target is at most 5 %).
#
# Usage: scripts/instructions.sh [--check | --update | --peers]
#   (no flag)  print one line per scenario
#   --check    also fail when a count is more than 5 % over the committed
#              baseline (benches/instructions.baseline), or metrics cost
#              more than 5 % (and 75 instructions); run by scripts/test.sh
#   --update   write the counts as the new baseline
#   --peers    also count RustStream's same scenarios (benches/peers, its
#              own workspace) by the same method, and print both side by
#              side with the targets of issue 26
# Both are built with fat LTO and one code unit per crate (the
# `instructions` profile; RustStream's benchmarks are built so).
# KAFKACTOR_INSTRUCTIONS_RECORDS sets N (default 4000).
# KAFKACTOR_INSTRUCTIONS_FEATURES adds cargo features to the build, e.g.
# tracing/max_level_off to count what tracing costs with no subscriber.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

MODE="${1:-}"
N="${KAFKACTOR_INSTRUCTIONS_RECORDS:-4000}"
BASELINE=benches/instructions.baseline
OUT=target/bench/instructions
mkdir -p "$OUT"

if ! command -v valgrind >/dev/null 2>&1; then
    loud "valgrind is not installed: instruction counts cannot be measured"
    exit 1
fi

started=$(now)
# The build's messages go to a log, shown when it fails (a CI log then says why).
build_log="$OUT/build.log"
FEATURES=()
[ -n "${KAFKACTOR_INSTRUCTIONS_FEATURES:-}" ] && FEATURES=(--features "$KAFKACTOR_INSTRUCTIONS_FEATURES")
if ! cargo bench --locked --profile instructions --bench instructions "${FEATURES[@]}" --no-run --message-format=json >"$OUT/build.json" 2>"$build_log"; then
    cat "$build_log" >&2
    echo "could not build benches/instructions.rs (messages above)" >&2
    exit 1
fi
bin=$(<"$OUT/build.json" python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "instructions" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "could not build benches/instructions.rs" >&2; exit 1; }

# Runs one scenario with $2 records under callgrind, metrics $3 (on or
# off), binary $4 (kafkactor's by default) whose measured function is $5;
# prints "<instructions> <allocations>".
measure() {
    local scenario=$1 records=$2 metrics=$3 binary=${4:-$bin} phase=${5:-kafkactor_measured_phase}
    local file="$OUT/$(basename "$binary").$scenario.$records.metrics-$metrics.callgrind"
    local log="${file%.callgrind}.log"
    local allocations
    allocations=$(KAFKACTOR_METRICS=$metrics valgrind --tool=callgrind --toggle-collect="$phase" \
        --callgrind-out-file="$file" "$binary" "$scenario" "$records" 2>"$log" |
        sed -n 's/^allocations=//p')
    [ -n "$allocations" ] || { cat "$log" >&2; exit 1; }
    local instructions
    instructions=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$file" | head -1)
    echo "$instructions $allocations"
}

# Measures scenario $2 at N and 2N records (the rest as `measure` takes
# them) and prints "$1 <instructions/record> <allocations/record>".
per_record() {
    local name=$1
    shift
    local i1 a1 i2 a2
    read -r i1 a1 < <(measure "$1" "$N" "${@:2}")
    read -r i2 a2 < <(measure "$1" $((2 * N)) "${@:2}")
    python3 -c 'import sys; n, i1, i2, a1, a2 = map(int, sys.argv[2:]); print(f"{sys.argv[1]} {(i2 - i1) / n:.0f} {(a2 - a1) / n:.2f}")' \
        "$name" "$N" "$i1" "$i2" "$a1" "$a2"
}

results="$OUT/results.txt" bare="$OUT/results.metrics-off.txt"
: >"$results"
: >"$bare"
SCENARIOS="consume_json consume_raw consume_batch publish publish_inflight publish_batch consume_publish consume_fn consume_macro"
for scenario in $SCENARIOS; do
    per_record "embedded_$scenario" "$scenario" on >>"$results"
    per_record "embedded_$scenario" "$scenario" off >>"$bare"
done

overheads="$OUT/metrics-overhead.txt"
python3 - "$results" "$bare" >"$overheads" <<'EOF'
import sys
on = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1])}
off = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[2])}
for name in on:
    print(f"{name} {off[name]:.0f} {on[name]:.0f} {100 * (on[name] / off[name] - 1):.1f}")
EOF
while read -r name instructions allocations; do
    echo "$name: $instructions instructions/record, $allocations allocations/record"
done <"$results"
while read -r name off on percent; do
    echo "$name: metrics cost $percent % ($off instructions/record with them off, $on on)"
done <"$overheads"
echo "measured with N = $N and 2N records in $(took "$started" "$(now)")"

if [ "$MODE" = --peers ]; then
    peers_started=$(now)
    peers_log="$OUT/peers-build.log"
    if ! cargo build --locked --release --manifest-path benches/peers/Cargo.toml \
        --target-dir target/peers >"$peers_log" 2>&1; then
        cat "$peers_log" >&2
        echo "could not build benches/peers (messages above)" >&2
        exit 1
    fi
    peers_bin=target/peers/release/peers
    peers="$OUT/peers.txt"
    : >"$peers"
    # kafkactor's scenario, RustStream's name for it.
    for pair in consume_json:consume_json consume_raw:consume_bytes publish:publish \
        publish_inflight:publish_inflight consume_publish:consume_publish; do
        ours=${pair%%:*} theirs=${pair#*:}
        per_record "embedded_$ours" "$theirs" on "$peers_bin" peers_measured_phase >>"$peers"
    done
    version=$(sed -n 's/^ruststream = .*"=\([0-9.]*\)".*/\1/p' benches/peers/Cargo.toml)
    python3 - "$results" "$peers" "$version" <<'EOF2' | tee "$OUT/peers.md"
import sys
ours = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
theirs = {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
# Issue 26's targets: instructions, allocations per record (None: none set).
targets = {
    "embedded_consume_json": (1500, None),
    "embedded_consume_raw": (700, None),
    "embedded_publish": (3500, 5),
    "embedded_publish_inflight": (3000, 4),
    "embedded_consume_publish": (4000, None),
}
print(f"| scenario (per record) | RustStream {sys.argv[3]} | kafkactor | ratio | target | met |")
print("|---|---|---|---|---|---|")
for name, (ti, ta) in targets.items():
    oi, oa = ours[name]
    pi, pa = theirs.get(name, ["-", "-"])
    ratio = f"{float(oi) / float(pi):.2f}" if pi != "-" else "-"
    target = f"<= {ti:,}" + (f", <= {ta} allocs" if ta is not None else "")
    met = float(oi) <= ti and (ta is None or float(oa) <= ta)
    peer = f"{int(pi):,}, {pa} allocs" if pi != "-" else "-"
    print(f"| {name.removeprefix('embedded_')} | {peer} | {int(oi):,}, {oa} allocs | {ratio} | {target} | {'yes' if met else 'no'} |")
EOF2
    echo "RustStream measured in $(took "$peers_started" "$(now)")"
fi

case "$MODE" in
--update)
    {
        echo "# scenario instructions/record allocations/record (scripts/instructions.sh --update, N = $N)"
        cat "$results"
    } >"$BASELINE"
    echo "wrote $BASELINE"
    ;;
--check)
    python3 - "$BASELINE" "$results" <<'EOF'
import sys
def load(path):
    rows = {}
    for line in open(path):
        if line.strip() and not line.startswith("#"):
            name, instructions, allocations = line.split()
            rows[name] = (float(instructions), float(allocations))
    return rows
baseline, now = load(sys.argv[1]), load(sys.argv[2])
failed = False
for name, (instructions, allocations) in now.items():
    if name not in baseline:
        print(f"{name}: no baseline (scripts/instructions.sh --update writes one)")
        failed = True
        continue
    base_i, base_a = baseline[name]
    for what, value, base in (("instructions", instructions, base_i), ("allocations", allocations, base_a)):
        if value > base * 1.05 + (0.05 if what == "allocations" else 0):
            print(f"{name}: {value:g} {what}/record is more than 5 % over the baseline {base:g}")
            failed = True
# The batch path costs a record less than the single-record path (issue 28).
batch, single = now.get("embedded_consume_batch"), now.get("embedded_consume_json")
if batch and single and batch[0] >= single[0]:
    print(f"embedded_consume_batch: {batch[0]:g} instructions/record, not under consume_json's {single[0]:g}")
    failed = True
# A handler declared with #[kafkactor::handler] costs what the same
# function subscribed by hand does (issue 29): within 1 %.
by_macro, by_hand = now.get("embedded_consume_macro"), now.get("embedded_consume_fn")
if by_macro and by_hand and abs(by_macro[0] - by_hand[0]) > by_hand[0] * 0.01:
    print(f"embedded_consume_macro: {by_macro[0]:g} instructions/record, not consume_fn's {by_hand[0]:g}")
    failed = True
sys.exit(1 if failed else 0)
EOF
    python3 - "$overheads" <<'EOF'
import sys
# At most 5 % of a record's cost, or 75 instructions (5 % of the 1,500 a
# decoded record may cost): what timing a handler call costs (a clock
# reading, a histogram count) is a larger share of a record that is not
# decoded (consume_raw) than of one that is.
bad = [f"{name}: metrics cost {percent} % ({float(on) - float(off):.0f} instructions), over the 5 % target"
       for name, off, on, percent in (l.split() for l in open(sys.argv[1]))
       if float(percent) > 5 and float(on) - float(off) > 75]
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
EOF
    echo "within 5 % of $BASELINE, and metrics within 5 % (or 75 instructions)"
    ;;
esac
