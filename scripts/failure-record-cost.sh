#!/usr/bin/env bash
# What one recorded failure costs the Redis server: redis-breaker (examples/failure_record.rs,
# a failure recorded by `execute`, FCALL and EVALSHA) against nopanic-redis 0.1.0 (a Python
# Lua-based breaker: its `before` and `record` EVALSHA), on one redis-server of their own on a
# loopback port: three rounds of 10,000 failures per side without a trip, the sides taking turns
# 1,000 failures at a time. The server time is INFO commandstats' usec of the script commands
# around each turn (scripts/failure-record-cost.py).
#
#   bash scripts/failure-record-cost.sh [--count 10000] [--rounds 3] [--chunk 1000] [--baseline BINARY]
#
# --baseline: another build of the example (e.g. of an earlier commit), measured alike.
#
# Needs redis-server, redis-cli, python3 (with venv) and PyPI for `pip install
# nopanic-redis==0.1.0` (once, into target/failure-record-venv). Builds the example with cargo
# (under `flock $BUILD_LOCK` when BUILD_LOCK is set); the client's build mode does not change
# what the server spends. The figures are in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-22379}
VENV=target/failure-record-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet nopanic-redis==0.1.0
fi
build=(cargo build --quiet --example failure_record)
if [ -n "${BUILD_LOCK:-}" ]; then build=(flock "$BUILD_LOCK" "${build[@]}"); fi
"${build[@]}"
EXAMPLE=${CARGO_TARGET_DIR:-target}/debug/examples/failure_record

DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no --daemonize no \
    >"$DIR/redis.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
"$VENV/bin/python" scripts/failure-record-cost.py "redis://127.0.0.1:$PORT" "$EXAMPLE" "$@"
