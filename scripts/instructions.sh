#!/usr/bin/env bash
# Counts the hot path's cost per record: CPU instructions under callgrind and
# heap allocations, for each scenario of benches/instructions.rs, as
# (count at 2N records - count at N) / N so start-up cancels.
#
# Usage: scripts/instructions.sh [--check | --update]
#   (no flag)  print one line per scenario
#   --check    also fail when a count is more than 5 % over the committed
#              baseline (benches/instructions.baseline); run by scripts/test.sh
#   --update   write the counts as the new baseline
# KAFKACTOR_INSTRUCTIONS_RECORDS sets N (default 4000).
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
if ! cargo bench --locked --bench instructions --no-run --message-format=json >"$OUT/build.json" 2>"$build_log"; then
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

# Runs one scenario with $2 records under callgrind; prints "<instructions> <allocations>".
measure() {
    local scenario=$1 records=$2 file="$OUT/$1.$2.callgrind"
    local allocations
    allocations=$(valgrind --tool=callgrind --toggle-collect=kafkactor_measured_phase \
        --callgrind-out-file="$file" "$bin" "$scenario" "$records" 2>"$OUT/$scenario.$records.log" |
        sed -n 's/^allocations=//p')
    [ -n "$allocations" ] || { cat "$OUT/$scenario.$records.log" >&2; exit 1; }
    local instructions
    instructions=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$file" | head -1)
    echo "$instructions $allocations"
}

results="$OUT/results.txt"
: >"$results"
for scenario in consume publish publish_batch; do
    read -r i1 a1 < <(measure "$scenario" "$N")
    read -r i2 a2 < <(measure "$scenario" $((2 * N)))
    python3 - "$scenario" "$N" "$i1" "$i2" "$a1" "$a2" >>"$results" <<'EOF'
import sys
scenario, n, i1, i2, a1, a2 = sys.argv[1], *map(int, sys.argv[2:])
print(f"embedded_{scenario} {(i2 - i1) / n:.0f} {(a2 - a1) / n:.2f}")
EOF
done

while read -r name instructions allocations; do
    echo "$name: $instructions instructions/record, $allocations allocations/record"
done <"$results"
echo "measured with N = $N and 2N records in $(took "$started" "$(now)")"

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
sys.exit(1 if failed else 0)
EOF
    echo "within 5 % of $BASELINE"
    ;;
esac
