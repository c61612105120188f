"""Worker CPU per request, in-process: the same production app and inputs as ``bench/run.py``, no gunicorn.

    .venv/bin/python bench/cpu.py [--requests 2000] [--scenarios me,refresh,send,verify]
                                   [--profile 30 [--sort tottime]]

For each scenario it sends the requests one after the other through Flask's
test client and prints the process CPU time per request (PostgreSQL, Redis and
the fake Twilio run elsewhere, so only this process's own work is counted),
next to the bare Flask echo app measured the same way. ``--profile N`` also
prints the N functions with the most cumulative time (cProfile) for each.
Repeatable to a few percent, where wrk runs on 2 shared cores vary by +-10%:
use it to see whether a change helps, and ``make bench`` for the figures.
"""

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import in_process_bench  # noqa: E402

USERS = 1000


def cpu_per_request(send, requests):
    """Process CPU milliseconds per call of ``send(index)``, over ``requests`` calls."""
    started = time.process_time()
    for index in range(requests):
        send(index)
    return (time.process_time() - started) * 1000 / requests


def senders(bench, scenarios, requests):
    """``(name, send)`` for each scenario: ``send(i)`` makes request ``i`` and checks it succeeded."""
    client = bench.app.test_client()
    total = requests * 2  # warm-up, measurement (and the profiled run reuses the measurement's share)

    def check(response, status):
        if response.status_code != status:
            raise SystemExit(f"unexpected {response.status_code}: {response.get_data(as_text=True)[:300]}")

    from bench.echo_app import app as echo

    echo_client = echo.test_client()
    body = json.dumps({"refreshToken": "x" * 300})
    yield "ceiling GET", lambda i: check(echo_client.get("/echo"), 200)
    yield (
        "ceiling POST",
        lambda i: check(echo_client.post("/echo", data=body, content_type="application/json"), 200),
    )
    if "me" in scenarios:
        tokens = [pair.access_token for pair in bench.token_pairs(500, USERS)]
        yield (
            "me",
            lambda i: check(
                client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens[i % 500]}"}), 200
            ),
        )
    for name, path, status in (
        ("refresh", "/api/v1/auth/refresh", 200),
        ("send", "/api/v1/auth/send-otp", 201),
        ("verify", "/api/v1/auth/verify-otp", 200),
    ):
        if name in scenarios:
            lines = bench.prepare(name, USERS, total * 2).read_text().splitlines()
            yield (
                name,
                lambda i, lines=lines, path=path, status=status: check(
                    client.post(path, data=lines[i], content_type="application/json"), status
                ),
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--scenarios", default="me,refresh,send,verify")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument("--sort", default="cumulative", help="their order: cumulative or tottime")
    args = parser.parse_args()
    bench = in_process_bench(USERS)
    scenarios = args.scenarios.split(",")
    n = args.requests
    for name, send in senders(bench, scenarios, n):
        cpu_per_request(send, n)  # warm-up: caches, pools, first compilations
        ms = cpu_per_request(lambda i, send=send, n=n: send(n + i), n)
        print(f"{name:14s} {ms:6.3f} ms CPU per request", flush=True)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(n // 2):
                send(2 * n + i)
            profiler.disable()
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile)
    bench.fake.shutdown()


if __name__ == "__main__":
    main()
