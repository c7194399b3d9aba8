"""Server time per recorded failure: redis-breaker against nopanic-redis, one server, one run.

Run by scripts/failure-record-cost.sh, which makes the venv, builds the Rust example and starts
the server. Each side records COUNT failures without a trip, one side after the other, for
ROUNDS rounds; around each run this reads INFO commandstats and takes the usec and calls of the
top-level script commands (EVAL*, EVALSHA*, FCALL*), so what a side costs is what the server
spent running its scripts. Both sides warm up first (scripts loaded, connections made), outside
the measurement.

    python failure-record-cost.py REDIS_URL EXAMPLE_BINARY [--count 10000] [--rounds 3]
"""

import argparse
import os
import subprocess
import sys

import redis
from nopanic_redis import redis_circuit_breaker

SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def script_stats(r):
    """(calls, usec) of the script commands, summed."""
    stats = r.info("commandstats")
    calls = usec = 0
    for name in SCRIPT_COMMANDS:
        row = stats.get(f"cmdstat_{name}")
        if row:
            calls += int(row["calls"])
            usec += int(row["usec"])
    return calls, usec


class Downstream(Exception):
    pass


def nopanic_side(r, count):
    """nopanic-redis: a breaker that never trips (min_calls above any count), whose wrapped
    function always fails. Each failure is its `before` and its `record` EVALSHA."""
    breaker = redis_circuit_breaker(r, name="failure-record", min_calls=10**9)

    @breaker
    def call():
        raise Downstream()

    def run(n):
        for _ in range(n):
            try:
                call()
            except Downstream:
                pass

    run(1)
    before = script_stats(r)
    run(count)
    after = script_stats(r)
    state = breaker.get_state()
    if state != "closed":
        sys.exit(f"nopanic-redis breaker is {state}, expected closed")
    return after[0] - before[0], after[1] - before[1]


def ours_side(r, url, example, count, evalsha):
    """redis-breaker: examples/failure_record.rs records `count` failures through `execute`
    once this says go; its metrics hash must count every one."""
    name = "failure-record-evalsha" if evalsha else "failure-record"
    metrics = f"breaker:{{{name}}}:metrics"
    args = [example, "--count", str(count), "--name", name] + (["--evalsha"] if evalsha else [])
    env = dict(os.environ, REDIS_URL=url)
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        if proc.stdout.readline().strip() != "ready":
            sys.exit("the example did not get ready")
        counted_before = int(r.hget(metrics, "failures") or 0)
        before = script_stats(r)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = proc.stdout.readline().split()
        after = script_stats(r)
        if done != ["done", str(count), "closed"]:
            sys.exit(f"the example answered {done}")
        counted = int(r.hget(metrics, "failures") or 0) - counted_before
        if counted != count:
            sys.exit(f"{counted} failures counted in {metrics}, expected {count}")
    finally:
        proc.stdin.close()
        if proc.wait(timeout=30) != 0:
            sys.exit(f"the example exited with {proc.returncode}")
    return after[0] - before[0], after[1] - before[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("example")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    r = redis.Redis.from_url(a.url, decode_responses=True)
    server = r.info("server")
    print(f"server: redis {server['redis_version']}; {a.count} failures per side per round, no trip")
    sides = [
        ("nopanic-redis 0.1.0 (2 x EVALSHA)", lambda: nopanic_side(r, a.count)),
        ("redis-breaker (FCALL)", lambda: ours_side(r, a.url, a.example, a.count, False)),
        ("redis-breaker (EVALSHA)", lambda: ours_side(r, a.url, a.example, a.count, True)),
    ]
    results = {label: [] for label, _ in sides}
    for round_no in range(1, a.rounds + 1):
        for label, run in sides:
            calls, usec = run()
            per = usec / a.count
            results[label].append(per)
            print(f"round {round_no}  {label:<34} {calls / a.count:4.2f} script calls, {per:6.2f} us per failure")
    nopanic = results[sides[0][0]]
    print()
    print(f"{'side':<34} {'us per failure (rounds)':<26} {'ratio to nopanic-redis':>22}")
    for label, _ in sides:
        ours = results[label]
        ratios = [o / n for o, n in zip(ours, nopanic)]
        per = " ".join(f"{v:6.2f}" for v in ours)
        ratio = " ".join(f"{v:4.2f}" for v in ratios)
        print(f"{label:<34} {per:<26} {ratio:>22}")


if __name__ == "__main__":
    main()
