#!/usr/bin/env bash
# The chaos soak (benches/soak.rs): records through an application with a
# plain, an idempotent (Redis) and a transactional subscription, a delayed,
# a dead-lettered and an outbox share, while faults are injected (handler
# panics, actors failed, Apache Kafka killed with SIGKILL, members joining
# and leaving, Redis and PostgreSQL restarted). Prints what was lost,
# duplicated or out of order, the lag, memory and time; exits non-zero
# when a figure is off.
#
#   scripts/soak.sh            1,000,000 records over 10,000 keys (minutes)
#   scripts/soak.sh --short    20,000 records over 500 keys (what
#                              scripts/test.sh runs)
#   scripts/soak.sh --records N --keys K --rate R --fault-every S
#
# Starts PostgreSQL (the system cluster, restarted during the run) and
# installs redis-server when missing; the soak starts its own Apache Kafka
# and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
source scripts/kafka.sh
source scripts/services.sh
STARTED="$(now)"

args=("$@")
if [ "${1:-}" = "--short" ]; then
    args=(--records 20000 --keys 500 --rate 800 --fault-every 1)
fi

ensure_kafka >/dev/null
start_postgres
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi
read -r pg_version pg_name _ < <(pg_lsclusters -h | head -1)
if [ "$(id -u)" -eq 0 ]; then
    export KAFKACTOR_SOAK_PG_RESTART="pg_ctlcluster $pg_version $pg_name restart -m fast"
elif command -v sudo >/dev/null 2>&1; then
    export KAFKACTOR_SOAK_PG_RESTART="sudo pg_ctlcluster $pg_version $pg_name restart -m fast"
fi

cargo bench --locked --features kafkactor/redis,kafkactor/postgres --bench soak -- "${args[@]}"
echo "soak took $(took "$STARTED" "$(now)")"
