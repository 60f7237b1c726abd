#!/usr/bin/env bash
# Runs the side-by-side benchmarks (benches/compare.rs) with a tansu broker
# for the Kafka scenarios. Usage: scripts/bench.sh [--quick|--full]
# Results: a table on stdout, target/bench/compare.json and compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tansu.sh
start_tansu
export KAFKACTOR_BENCH_BROKERS="$TANSU_BROKERS"
cargo bench --locked --bench compare -- "${@:---quick}"
