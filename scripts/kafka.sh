#!/usr/bin/env bash
# Apache Kafka for the tests and benchmarks: one KRaft process (broker and
# controller) on free loopback ports, with its data in a fresh temporary
# folder.
#
# Sourced by scripts/test.sh and scripts/bench.sh: `start_kafka` fetches the
# broker when the cache lacks it, starts it, waits until it answers a
# metadata request, exports its address as $KAFKA_BROKERS and stops it (and
# deletes its data) when the calling script exits.
#
# Run as a command, for tests that kill and restart a broker of their own:
#   scripts/kafka.sh format DIR   writes DIR/server.properties on free ports,
#                                 formats DIR/data, prints the broker's address
#   scripts/kafka.sh run DIR      runs that broker in the foreground (exec: the
#                                 caller's child is the JVM itself); run it
#                                 again on the same DIR to restart it
#   scripts/kafka.sh fetch        only fills the cache
#
# The jars (org.apache.kafka:kafka_2.13 and its runtime dependencies) come
# from Maven Central through Maven into $KAFKACTOR_CACHE (default
# ~/.cache/kafkactor), once per machine; Java 17 runs them.

KAFKA_VERSION=4.1.2
# The SLF4J binding Kafka's own distribution ships, so the broker's log says
# why it stops; the version of the log4j-core that kafka_2.13 brings.
KAFKA_LOG4J_VERSION=2.25.3
KAFKA_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_HOME="${KAFKACTOR_CACHE:-$HOME/.cache/kafkactor}/kafka-$KAFKA_VERSION"
# The broker's heap: small, fixed.
KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx512m}"

source "$KAFKA_SCRIPTS/common.sh"

# Fills $KAFKA_HOME/libs with the broker's jars unless it holds them already.
ensure_kafka() {
    if [ -f "$KAFKA_HOME/libs/.complete" ]; then
        return
    fi
    for tool in java mvn; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "Apache Kafka needs $tool, which is not installed" >&2
            return 1
        fi
    done
    local started
    started="$(now)"
    echo "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
    mkdir -p "$KAFKA_HOME"
    cat >"$KAFKA_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafkactor</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$KAFKA_LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
    rm -rf "$KAFKA_HOME/libs.partial"
    if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_HOME/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs.partial"; then
        echo "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION" >&2
        return 1
    fi
    rm -rf "$KAFKA_HOME/libs"
    mv "$KAFKA_HOME/libs.partial" "$KAFKA_HOME/libs"
    touch "$KAFKA_HOME/libs/.complete"
    echo "fetched Apache Kafka $KAFKA_VERSION ($(ls "$KAFKA_HOME/libs" | wc -l) jars) in $(took "$started" "$(now)")"
}

# Runs a Kafka class on the JVM in place of the calling (sub)shell, so the
# pid a caller has is the JVM's: call it in a subshell.
kafka_java() {
    # shellcheck disable=SC2086 # KAFKA_HEAP holds several options
    exec java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$1/log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" "${@:2}"
}

# Writes DIR/server.properties for a broker on free ports and formats its
# storage with a new cluster id; prints the broker's address.
kafka_format() {
    local dir="$1" port cport
    ensure_kafka >&2 || return 1
    mkdir -p "$dir"
    port="$(free_port)"
    cport="$(free_port)"
    while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Groups form as soon as their first member joins.
group.initial.rebalance.delay.ms=0
PROPS
    cat >"$dir/log4j2.properties" <<'LOG'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
LOG
    local cluster
    cluster="$(kafka_java "$dir" kafka.tools.StorageTool random-uuid)" || return 1
    (kafka_java "$dir" kafka.tools.StorageTool format -t "$cluster" \
        -c "$dir/server.properties") >"$dir/format.log" 2>&1 || {
        cat "$dir/format.log" >&2
        return 1
    }
    echo "127.0.0.1:$port"
}

# The broker of DIR in place of this shell (the caller's child is the JVM,
# so its signals reach the broker), its output appended to DIR/server.log.
kafka_run() {
    local dir="$1"
    ensure_kafka >&2 || return 1
    exec >>"$dir/server.log" 2>&1
    kafka_java "$dir" kafka.Kafka "$dir/server.properties"
}

start_kafka() {
    local started fetched dir addr
    started="$(now)"
    ensure_kafka || return 1
    fetched="$(now)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/kafkactor-kafka.XXXXXX")"
    addr="$(kafka_format "$dir")" || return 1
    KAFKA_DATA_DIR="$dir"
    on_exit stop_kafka
    (kafka_java "$dir" kafka.Kafka "$dir/server.properties") >"$dir/server.log" 2>&1 &
    KAFKA_PID=$!
    if ! python3 "$KAFKA_SCRIPTS/kafka_metadata.py" "$addr" 60 >/dev/null; then
        echo "Apache Kafka did not answer a metadata request on $addr within 60 s; its log:" >&2
        tail -50 "$dir/server.log" >&2
        return 1
    fi
    export KAFKA_BROKERS="$addr"
    echo "Apache Kafka $KAFKA_VERSION on $KAFKA_BROKERS (pid $KAFKA_PID, data $dir): fetch $(took "$started" "$fetched"), start $(took "$fetched" "$(now)")"
}

stop_kafka() {
    if [ -n "${KAFKA_PID:-}" ] && kill -0 "$KAFKA_PID" 2>/dev/null; then
        kill -TERM "$KAFKA_PID" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$KAFKA_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        kill -KILL "$KAFKA_PID" 2>/dev/null || true
        wait "$KAFKA_PID" 2>/dev/null || true
    fi
    if [ -n "${KAFKA_DATA_DIR:-}" ]; then
        rm -rf "$KAFKA_DATA_DIR"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        fetch) ensure_kafka ;;
        format) kafka_format "${2:?usage: kafka.sh format DIR}" ;;
        run) kafka_run "${2:?usage: kafka.sh run DIR}" ;;
        *)
            echo "usage: scripts/kafka.sh fetch | format DIR | run DIR (or source it and call start_kafka)" >&2
            exit 2
            ;;
    esac
fi
