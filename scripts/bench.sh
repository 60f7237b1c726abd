#!/usr/bin/env bash
# Runs the side-by-side benchmarks (benches/compare/, one file per scenario) with Apache Kafka
# started for the Kafka scenarios. Usage: scripts/bench.sh [--quick|--full]
# scripts/bench.sh --instructions [--check|--update] counts instructions and
# allocations per record under callgrind instead (scripts/instructions.sh).
# Results: a table on stdout, target/bench/compare.json and compare.md.
# KAFKACTOR_BENCH_BROKERS=mock uses librdkafka's mock cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --instructions ]; then
    exec scripts/instructions.sh "${@:2}"
fi
if [ "${KAFKACTOR_BENCH_BROKERS:-}" != mock ]; then
    source scripts/kafka.sh
    KAFKA_HEAP="${KAFKA_HEAP:--Xms1g -Xmx1g}"
    start_kafka
    export KAFKACTOR_BENCH_BROKERS="$KAFKA_BROKERS"
fi
# Redis for the idempotency scenario (the redis feature), PostgreSQL for
# the outbox relay's (the postgres feature).
source scripts/services.sh
start_redis
start_postgres
export KAFKACTOR_BENCH_REDIS="$KAFKACTOR_TEST_REDIS"
export KAFKACTOR_BENCH_POSTGRES="$KAFKACTOR_TEST_POSTGRES"
cargo bench --locked --features redis,postgres --bench compare -- "${@:---quick}"
