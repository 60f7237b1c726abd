# Sourced by scripts/test.sh: PostgreSQL and Redis listening on loopback for
# the tests that need them, each installed from Debian's packages when its
# server is missing and started when nothing listens on its port. Idempotent:
# a second run finds both listening and only checks them. They are left
# running, as system services would be.
#
# Exports KAFKACTOR_TEST_POSTGRES (a database the tests own, by URL) and
# KAFKACTOR_TEST_REDIS.

SERVICES_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$SERVICES_SCRIPTS/common.sh"

POSTGRES_PORT="${KAFKACTOR_POSTGRES_PORT:-5432}"
POSTGRES_DB=kafkactor_test
POSTGRES_USER=kafkactor
POSTGRES_PASSWORD=kafkactor
REDIS_PORT="${KAFKACTOR_REDIS_PORT:-6379}"
SERVICES_STATE="${KAFKACTOR_CACHE:-$HOME/.cache/kafkactor}/services"

# Runs SQL as the cluster's superuser (the local `postgres` account).
as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        psql -X -q -v ON_ERROR_STOP=1 -p "$POSTGRES_PORT" "$@"
    else
        as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$POSTGRES_PORT" "$@"
    fi
}

postgres_url() {
    echo "postgres://$POSTGRES_USER:$POSTGRES_PASSWORD@127.0.0.1:$POSTGRES_PORT/$POSTGRES_DB"
}

start_postgres() {
    local started
    started="$(now)"
    if ! listening "$POSTGRES_PORT"; then
        if ! command -v pg_ctlcluster >/dev/null 2>&1; then
            apt_install postgresql
        fi
        if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
            local version
            version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
            as_root pg_createcluster -p "$POSTGRES_PORT" "$version" main
        fi
        local version name
        read -r version name _ < <(pg_lsclusters -h | head -1)
        as_root pg_ctlcluster "$version" "$name" start
        local deadline=$((SECONDS + 30))
        until listening "$POSTGRES_PORT"; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "PostgreSQL did not listen on 127.0.0.1:$POSTGRES_PORT within 30 s" >&2
                return 1
            fi
            sleep 0.2
        done
    fi
    # The tests' role and database, when missing.
    if ! PGPASSWORD="$POSTGRES_PASSWORD" psql -X -q -h 127.0.0.1 -p "$POSTGRES_PORT" \
        -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c 'select 1' >/dev/null 2>&1; then
        as_postgres -c "do \$\$ begin
            if not exists (select from pg_roles where rolname = '$POSTGRES_USER') then
                create role $POSTGRES_USER login password '$POSTGRES_PASSWORD';
            end if; end \$\$;"
        if [ -z "$(as_postgres -tAc "select 1 from pg_database where datname = '$POSTGRES_DB'")" ]; then
            as_postgres -c "create database $POSTGRES_DB owner $POSTGRES_USER"
        fi
        PGPASSWORD="$POSTGRES_PASSWORD" psql -X -q -h 127.0.0.1 -p "$POSTGRES_PORT" \
            -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c 'select 1' >/dev/null
    fi
    export KAFKACTOR_TEST_POSTGRES
    KAFKACTOR_TEST_POSTGRES="$(postgres_url)"
    echo "PostgreSQL on 127.0.0.1:$POSTGRES_PORT, database $POSTGRES_DB ($(took "$started" "$(now)"))"
}

# Whether Redis on $REDIS_PORT answers PING.
redis_answers() {
    python3 - "$REDIS_PORT" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
s.sendall(b"*1\r\n$4\r\nPING\r\n")
sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
}

start_redis() {
    local started
    started="$(now)"
    if ! listening "$REDIS_PORT"; then
        if ! command -v redis-server >/dev/null 2>&1; then
            apt_install redis-server
        fi
        mkdir -p "$SERVICES_STATE"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
            --save '' --appendonly no --dir "$SERVICES_STATE" \
            --logfile "$SERVICES_STATE/redis.log" --pidfile "$SERVICES_STATE/redis.pid"
    fi
    local deadline=$((SECONDS + 30))
    until redis_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within 30 s" >&2
            return 1
        fi
        sleep 0.2
    done
    export KAFKACTOR_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT"
    echo "Redis on 127.0.0.1:$REDIS_PORT ($(took "$started" "$(now)"))"
}

start_services() {
    start_postgres
    start_redis
}
