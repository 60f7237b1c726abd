#!/usr/bin/env python3
"""Asks a Kafka broker for its cluster metadata (Metadata v4, no topics) and
prints the brokers it lists; exits 0 once it answers with at least one
broker, 1 when it does not within the timeout.

Usage: kafka_metadata.py HOST:PORT [TIMEOUT_SECONDS]
Standard library only: scripts/kafka.sh runs it before any client exists.
"""

import socket
import struct
import sys
import time


def metadata(host, port):
    """The (node_id, host, port) of every broker the cluster lists."""
    client = b"kafkactor-scripts"
    body = struct.pack(">i", -1) + b"\x00"  # all topics (none exist yet), no auto-creation
    request = struct.pack(">hhih", 3, 4, 1, len(client)) + client + body
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", read(s, 4))[0]
        data = read(s, size)
    pos = 4 + 4  # correlation id, throttle time
    (count,) = struct.unpack_from(">i", data, pos)
    pos += 4
    brokers = []
    for _ in range(count):
        node, hlen = struct.unpack_from(">ih", data, pos)
        pos += 6
        name = data[pos : pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", data, pos)
        pos += 6 + max(rlen, 0)
        brokers.append((node, name, bport))
    return brokers


def read(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            brokers = metadata(host, int(port))
            if brokers:
                print(" ".join(f"{n}@{h}:{p}" for n, h, p in brokers))
                return 0
            last = "no brokers listed yet"
        except (OSError, struct.error) as e:
            last = e
        time.sleep(0.2)
    print(f"no metadata from {host}:{port} within {timeout:.0f} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
