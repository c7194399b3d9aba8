"""Server time per recorded failure: redis-breaker against nopanic-redis, one server, one run.

Run by scripts/failure-record-cost.sh, which makes the venv, builds the Rust example and starts
the server. Each side records COUNT failures without a trip, one side after the other, for
ROUNDS rounds, the sides taking turns CHUNK failures at a time; around each turn this reads INFO
commandstats and takes the usec and calls of the top-level script commands (EVAL*, EVALSHA*,
FCALL*), so what a side costs is what the server spent running its scripts. Every side warms up
first (scripts loaded, connections made), outside the measurement.

    python failure-record-cost.py REDIS_URL EXAMPLE_BINARY [--count 10000] [--rounds 3] [--chunk 1000]
        [--baseline OTHER_EXAMPLE_BINARY]
"""

import argparse
import os
import subprocess
import sys
import time

import redis
from nopanic_redis import redis_circuit_breaker

# nopanic-redis's default window: 30 s in 10 buckets.
NOPANIC_WINDOW_S, NOPANIC_BUCKET_S = 30, 3

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


class Nopanic:
    """nopanic-redis: a breaker that never trips (min_calls above any count), whose wrapped
    function always fails. Each failure is its `before` and its `record` EVALSHA."""

    def __init__(self, r):
        breaker = redis_circuit_breaker(r, name="failure-record", min_calls=10**9)

        @breaker
        def call():
            raise Downstream()

        self.breaker, self.call = breaker, call
        self.run(1)

    def run(self, n):
        for _ in range(n):
            try:
                self.call()
            except Downstream:
                pass

    def close(self):
        state = self.breaker.get_state()
        if state != "closed":
            sys.exit(f"nopanic-redis breaker is {state}, expected closed")


class Ours:
    """redis-breaker: examples/failure_record.rs records failures through `execute`, a chunk at a
    time when told; its metrics hash must count every one."""

    def __init__(self, r, url, example, count, evalsha):
        name = f"failure-record-{'evalsha' if evalsha else 'fcall'}-{time.monotonic_ns()}"
        self.r, self.metrics, self.count = r, f"breaker:{{{name}}}:metrics", count
        args = [example, "--count", str(count), "--name", name] + (["--evalsha"] if evalsha else [])
        env = dict(os.environ, REDIS_URL=url)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            sys.exit("the example did not get ready")
        self.counted_before = int(r.hget(self.metrics, "failures") or 0)

    def run(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        done = self.proc.stdout.readline().split()
        if done != ["done", str(n), "closed"]:
            sys.exit(f"the example answered {done}")

    def close(self):
        self.proc.stdin.close()
        if self.proc.wait(timeout=30) != 0:
            sys.exit(f"the example exited with {self.proc.returncode}")
        counted = int(self.r.hget(self.metrics, "failures") or 0) - self.counted_before
        if counted != self.count:
            sys.exit(f"{counted} failures counted in {self.metrics}, expected {self.count}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("example")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--baseline", help="another build of examples/failure_record.rs to measure alike")
    a = p.parse_args()
    r = redis.Redis.from_url(a.url, decode_responses=True)
    server = r.info("server")
    print(f"server: redis {server['redis_version']}; {a.count} failures per side per round, no trip")
    sides = [
        ("nopanic-redis 0.1.0 (2 x EVALSHA)", lambda: Nopanic(r)),
        ("redis-breaker (FCALL)", lambda: Ours(r, a.url, a.example, a.count, False)),
        ("redis-breaker (EVALSHA)", lambda: Ours(r, a.url, a.example, a.count, True)),
    ]
    if a.baseline:
        # Another build of the example (another version of the scripts), measured alike.
        sides.append(("baseline build (FCALL)", lambda: Ours(r, a.url, a.baseline, a.count, False)))
    results = {label: [] for label, _ in sides}
    # nopanic-redis's record reads its window (10 buckets of 3 s, HGETALL) and its breaker keeps
    # one name across rounds: until the window is full, a record reads fewer buckets than in
    # steady use. Filled first, one failure per bucket, so every round measures steady use.
    print(f"filling nopanic-redis's {NOPANIC_WINDOW_S} s window first ({NOPANIC_WINDOW_S + NOPANIC_BUCKET_S} s)",
          flush=True)
    warm = Nopanic(r)
    for _ in range(NOPANIC_WINDOW_S // NOPANIC_BUCKET_S + 1):
        warm.run(1)
        time.sleep(NOPANIC_BUCKET_S)
    for round_no in range(1, a.rounds + 1):
        # Every side warmed up, then the sides take turns a chunk at a time, so that what else
        # the machine does weighs on each alike.
        runners = [(label, make()) for label, make in sides]
        spent = {label: [0, 0] for label, _ in sides}
        left = a.count
        while left > 0:
            n = min(a.chunk, left)
            for label, runner in runners:
                before = script_stats(r)
                runner.run(n)
                after = script_stats(r)
                spent[label][0] += after[0] - before[0]
                spent[label][1] += after[1] - before[1]
            left -= n
        for label, runner in runners:
            runner.close()
            calls, usec = spent[label]
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
