#!/usr/bin/env bash
# Fuzzes every decoder of bytes from a broker (tests/fuzz_decoders.rs):
# record headers on the consume path, payloads through the MessagePack and
# JSON codecs, content types, traceparent and tracestate, the delay headers
# of bucket records, outbox rows' headers. Usage:
#   scripts/fuzz.sh [INPUTS_PER_DECODER] [SEED]     (default 10,000,000)
# Built in release; prints, per decoder, the inputs taken and the time.
# A panic fails the run and prints the input. The test suite (and so CI)
# runs the same harness with 20,000 inputs per decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
STARTED="$(now)"
export KAFKACTOR_FUZZ_INPUTS="${1:-10000000}"
export KAFKACTOR_FUZZ_SEED="${2:-1801675118}"
echo "fuzzing with $KAFKACTOR_FUZZ_INPUTS inputs per decoder, seed $KAFKACTOR_FUZZ_SEED"
log=target/fuzz.log
mkdir -p target
set +e
cargo test --release --locked --features kafkactor/otel,kafkactor/postgres \
    --test fuzz_decoders -- --nocapture --test-threads 2 >"$log" 2>&1
status=$?
set -e
grep -E "inputs in|panicked|^test result|^error" "$log" || true
echo "fuzzing took $(took "$STARTED" "$(now)") (whole output: $log)"
exit "$status"
