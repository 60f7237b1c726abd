#!/usr/bin/env bash
# Runs every check and test of the workspace. Usage: scripts/test.sh [nextest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "brokers"
# A real Kafka-protocol broker for the Kafka half of the suite (installed
# once per machine when missing); librdkafka's mock cluster runs in-process.
source scripts/tansu.sh
start_tansu
export KAFKACTOR_TEST_BROKERS="$TANSU_BROKERS"

step "tests"
cargo nextest run --workspace --all-targets --locked --no-fail-fast "$@"

step "doc tests (README and API docs)"
cargo test --workspace --doc --locked

step "examples run"
cargo run --release --locked --example quickstart >/dev/null
cargo run --locked --example supervision >/dev/null
cargo run --locked --example delayed >/dev/null
echo "all checks passed"
