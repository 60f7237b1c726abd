# Sourced by scripts/test.sh and scripts/bench.sh: makes a Kafka-protocol
# broker (tansu) available on a free loopback port, exports its address as
# $TANSU_BROKERS, and stops it when the calling script exits.

TANSU_VERSION=0.6.0

ensure_tansu() {
    if command -v tansu >/dev/null 2>&1; then
        return
    fi
    echo "tansu not found: installing tansu $TANSU_VERSION (takes ~15 minutes once per machine)"
    cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_tansu() {
    ensure_tansu
    local port log
    port="$(free_port)"
    log="${TANSU_LOG:-target/tansu.log}"
    mkdir -p "$(dirname "$log")"
    tansu broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" >"$log" 2>&1 &
    TANSU_PID=$!
    trap stop_tansu EXIT
    local deadline=$((SECONDS + 30))
    until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
        if ! kill -0 "$TANSU_PID" 2>/dev/null; then
            echo "tansu exited at start; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "tansu did not listen on 127.0.0.1:$port within 30 s" >&2
            return 1
        fi
        sleep 0.2
    done
    export TANSU_BROKERS="127.0.0.1:$port"
    echo "tansu $TANSU_VERSION listening on $TANSU_BROKERS (pid $TANSU_PID, log $log)"
}

stop_tansu() {
    if [ -n "${TANSU_PID:-}" ] && kill -0 "$TANSU_PID" 2>/dev/null; then
        kill "$TANSU_PID" 2>/dev/null || true
        wait "$TANSU_PID" 2>/dev/null || true
    fi
}
