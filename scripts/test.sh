#!/usr/bin/env bash
# Runs every check and test of the workspace. Usage: scripts/test.sh [nextest filters...]
#
# Checks the crate's import graph (scripts/layers.py: no cycle between
# modules, no module naming one of a higher layer).
# Installs what it needs when missing (cargo-nextest, rustfmt and clippy,
# valgrind, the Python Kafka client of the interop test, Apache Kafka's jars,
# PostgreSQL and Redis), starts Apache Kafka, PostgreSQL and Redis on
# loopback, then runs format, lint, the nextest suite (embedded broker,
# Apache Kafka, librdkafka's mock cluster), the per-record instruction and
# allocation counts against their baseline (scripts/instructions.sh --check),
# the doctests, the examples and a short chaos soak (scripts/soak.sh --short).
# The suite fuzzes every decoder of broker bytes with 20,000 inputs each
# (tests/fuzz_decoders.rs; scripts/fuzz.sh runs 10,000,000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
RUN_STARTED="$(now)"

step() { printf '\n==> %s (at %s)\n' "$*" "$(took "$RUN_STARTED" "$(now)")"; }

# The version of kafka-python the interop test runs (a Kafka client with its
# own protocol implementation, not librdkafka).
KAFKA_PYTHON_VERSION=2.2.15

step "tools"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "installing rustfmt and clippy"
    rustup component add rustfmt clippy || loud "rustfmt/clippy could not be installed: the format and lint steps will fail"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest"
    cargo install cargo-nextest --locked ||
        loud "cargo-nextest could not be installed from crates.io: the tests run with cargo test instead"
fi
if ! command -v valgrind >/dev/null 2>&1; then
    apt_install valgrind || loud "valgrind could not be installed: instruction counts cannot be measured"
fi
if ! python3 -c 'import kafka' >/dev/null 2>&1; then
    echo "installing kafka-python $KAFKA_PYTHON_VERSION"
    python3 -m pip install --quiet "kafka-python==$KAFKA_PYTHON_VERSION" ||
        python3 -m pip install --quiet --user --break-system-packages "kafka-python==$KAFKA_PYTHON_VERSION" ||
        loud "kafka-python could not be installed from PyPI: the Python interop tests will fail"
fi

# The tests build with every optional feature (one build for the suite);
# the library is linted without them too.
FEATURES=(--features kafkactor/otel,kafkactor/redis,kafkactor/postgres,kafkactor/cli,kafkactor/testing)

step "format"
cargo fmt --all --check

step "import graph (dependencies flow one way, no cycle: scripts/layers.py)"
python3 scripts/layers.py --self-test
python3 scripts/layers.py

step "lint"
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings
cargo clippy --workspace --lib --locked -- -D warnings

step "brokers and services"
# Apache Kafka for the Kafka half of the suite (its jars fetched once per
# machine); librdkafka's mock cluster runs in-process.
source scripts/kafka.sh
start_kafka
export KAFKACTOR_TEST_BROKERS="$KAFKA_BROKERS"
source scripts/services.sh
start_services
# A test whose service variable is unset skips elsewhere (`cargo test` on a
# machine with no services); here nothing may be skipped.
export KAFKACTOR_TEST_REQUIRE_SERVICES=1

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --locked --no-fail-fast "${FEATURES[@]}" "$@"
else
    cargo test --workspace --all-targets --locked --no-fail-fast "${FEATURES[@]}" "$@"
fi

step "the README's quickstart test again, unchanged, on Apache Kafka (the harness's switch)"
if cargo nextest --version >/dev/null 2>&1; then
    KAFKACTOR_TEST_KAFKA="$KAFKA_BROKERS" cargo nextest run --locked "${FEATURES[@]}" --test quickstart
else
    KAFKACTOR_TEST_KAFKA="$KAFKA_BROKERS" cargo test --locked "${FEATURES[@]}" --test quickstart
fi

step "instructions and allocations per record (callgrind, against benches/instructions.baseline)"
if command -v valgrind >/dev/null 2>&1; then
    scripts/instructions.sh --check
else
    loud "valgrind is missing: the per-record instruction counts were not checked"
fi

step "doc tests (README and API docs)"
cargo test --workspace --doc --locked "${FEATURES[@]}"

step "examples run"
cargo run --release --locked --example quickstart >/dev/null
cargo run --locked --example supervision >/dev/null
cargo run --locked --example delayed >/dev/null
cargo run --locked --example idempotent >/dev/null
cargo run --locked --example exactly_once >/dev/null
cargo run --locked --example retries >/dev/null
cargo run --locked --example request_reply >/dev/null
cargo run --locked --example batch >/dev/null
cargo run --locked --example declared >/dev/null
cargo run --locked --example asyncapi -- target/quickstart.asyncapi.json
cargo run --locked "${FEATURES[@]}" --example idempotent -- "$KAFKACTOR_TEST_REDIS" >/dev/null
cargo run --locked "${FEATURES[@]}" --example outbox -- "$KAFKACTOR_TEST_POSTGRES" >/dev/null

step "chaos soak, short (scripts/soak.sh --short: every kind of fault, nothing lost)"
# Its figures; the whole output when it fails.
mkdir -p target
if scripts/soak.sh --short >target/soak-short.log 2>&1; then
    sed -n '/soak figures/,/^soak passed/p' target/soak-short.log
else
    tail -80 target/soak-short.log
    echo "the short soak failed (whole output: target/soak-short.log)" >&2
    exit 1
fi
echo "all checks passed in $(took "$RUN_STARTED" "$(now)")"
