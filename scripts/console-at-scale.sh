#!/usr/bin/env bash
# The console watching 1,000 breakers (100 forced open, 900 closed after a call), on a
# redis-server of its own on a loopback port: the shared read's duration, the time and size of
# a scrape and of the list, the series count, and what the console costs Redis (commands per
# second as INFO commandstats counts them, the commands the scripts run inside included, and
# Redis's CPU) with no viewer and with 8 clients scraping in a loop.
#
#   cargo build -p redis-breaker-cli && bash scripts/console-at-scale.sh [BINARY] [--read-every 1s]
#
# Needs redis-server, redis-cli, curl and bc. The figures are in docs/performance.md.
set -euo pipefail
BIN=${1:-target/debug/redis-breaker}
shift || true
PORT=${PORT:-7311}
WEB=${WEB:-19300}
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
SERVE=
cleanup() {
    [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$PORT" REDIS_BREAKER_TOKEN=console-at-scale-token-0123
for i in $(seq 1 100); do "$BIN" open "svc-open-$i" --for 1h --note "scale" >/dev/null; done
for i in $(seq 1 900); do "$BIN" exec "svc-$i" -- true; done

commands() { redis-cli -p "$PORT" info commandstats | awk -F'[:=,]' '/^cmdstat_/{s+=$3} END{print s}'; }
cpu() { redis-cli -p "$PORT" info cpu | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{printf "%.3f", s}'; }
window() { # $1: what; measures commands and CPU over 10 s
    local c0 u0 c1 u1
    c0=$(commands); u0=$(cpu); sleep 10; c1=$(commands); u1=$(cpu)
    printf '%s: %d commands/s, Redis CPU %.1f%% of a core\n' "$1" $(((c1 - c0) / 10)) "$(echo "($u1-$u0)*10" | bc -l)"
}

window "redis alone"
"$BIN" serve --listen "127.0.0.1:$WEB" "$@" 2>/dev/null &
SERVE=$!
until curl -sf "http://127.0.0.1:$WEB/readyz" >/dev/null; do sleep 0.2; done
sleep 2
window "console, no viewer"
for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w 'scrape %{time_total}s, %{size_download} bytes\n' "http://127.0.0.1:$WEB/metrics"
done
for _ in 1 2 3; do
    curl -s -o /dev/null -w 'list %{time_total}s, %{size_download} bytes\n' "http://127.0.0.1:$WEB/api/breakers"
done
curl -s "http://127.0.0.1:$WEB/metrics" | grep -E '^redis_breaker_console_(read_duration_seconds|breakers) '
echo "series: $(curl -s "http://127.0.0.1:$WEB/metrics" | grep -c '^redis_breaker_')"
scrapers=()
for _ in 1 2 3 4 5 6 7 8; do
    (end=$((SECONDS + 12)); while [ $SECONDS -lt $end ]; do curl -s -o /dev/null "http://127.0.0.1:$WEB/metrics"; done) &
    scrapers+=($!)
done
sleep 1
window "console, 8 clients scraping in a loop"
wait "${scrapers[@]}"
