"""Instructions per request, counted by valgrind (callgrind): the same on a busy machine as on a quiet one.

    .venv/bin/python bench/instructions.py [--requests 200] [--scenarios me,refresh,verify]

Same production app and inputs as ``bench/run.py`` (PostgreSQL, Redis), no
gunicorn: each scenario's requests go straight to the WSGI app in a child
process run under ``valgrind --tool=callgrind --instr-atstart=no``, which
counts only between the warm-up and the end of the requests. The bare Flask
app (the ceiling) is counted the same way. Where CPU times of the same code
vary by tens of percent on a shared machine (``bench/cpu.py``), these counts
repeat to a fraction of a percent: the tool for "did this change help".
They leave out the waits on PostgreSQL and Redis and the kernel's work (the
sockets, the context switches), which ``make bench`` includes. Needs valgrind
(``apt-get install valgrind``); a scenario takes about a minute. ``--floor`` counts the floor's
(``bench/floor_app.py``) requests next to each scenario's, on inputs of the same kind.
"""

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import in_process_bench  # noqa: E402

USERS = 1000
WARM_UP = 100
PATHS = {
    "ceiling GET": ("GET", "/echo"),
    "ceiling POST": ("POST", "/echo"),
    "me": ("GET", "/api/v1/auth/me"),
    "refresh": ("POST", "/api/v1/auth/refresh"),
    "verify": ("POST", "/api/v1/auth/verify-otp"),
    "login": ("POST", "/api/v1/auth/verify-otp"),
    "send": ("POST", "/api/v1/auth/send-otp"),
}
COLLECTED = re.compile(r"Collected : (\d+)")


def environ(method, path, line):
    """The WSGI environ of one request; ``line`` is the bearer token (GET) or the JSON body (POST)."""
    body = line.encode() if method == "POST" else b""
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if method == "POST":
        env.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
    elif line:
        env["HTTP_AUTHORIZATION"] = f"Bearer {line}"
    return env


def child(scenario, input_file, requests):
    """Under valgrind: build the app, warm up, count ``requests`` requests (instrumentation on only then)."""
    if scenario.startswith("ceiling"):
        from bench.echo_app import app
    elif scenario.startswith("floor "):
        from bench.floor_app import app
    else:
        from allmine_auth import create_app

        app = create_app("production")
    method, path = PATHS[scenario.removeprefix("floor ")]
    lines = (
        Path(input_file).read_text().splitlines() if input_file else [json.dumps({"refreshToken": "x" * 300})]
    )
    if scenario.startswith("ceiling") or scenario.endswith("me"):
        # Reused inputs (an app keeps its access token): the warm-up sends each once, as wrk's does.
        warm_up = [environ(method, path, line) for line in lines]
        measured = [environ(method, path, lines[i % len(lines)]) for i in range(requests)]
    else:
        # Inputs used once (a refresh token, a code): warm up on the first ones, count the next.
        warm_up = [environ(method, path, line) for line in lines[:WARM_UP]]
        measured = [environ(method, path, line) for line in lines[WARM_UP : WARM_UP + requests]]

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200") and not status.startswith("201"):
            raise SystemExit(f"{scenario}: unexpected {status}")

    def call(env):
        body = app.wsgi_app(env, start_response)
        b"".join(body)
        body.close()

    for env in warm_up:
        call(env)
    toggle = ["callgrind_control", "--instr"]
    subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
    for env in measured:
        call(env)
    subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)


def count(bench, scenario, input_file, requests):
    """Instructions per request of ``scenario``, from a child process under callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        scenario,
        str(input_file or ""),
        str(requests),
    ]
    done = subprocess.run(
        command, env={**os.environ, **bench.env}, capture_output=True, text=True, check=False
    )
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{scenario}: valgrind failed\n{done.stderr[-2000:]}")
    return int(found.group(1)) / requests


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        scenario, input_file, requests = sys.argv[2], sys.argv[3], int(sys.argv[4])
        return child(scenario, input_file, requests)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--scenarios", default="me,refresh,verify")
    parser.add_argument("--floor", action="store_true", help="count the floor's requests next to each")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    bench = in_process_bench(USERS)
    scenarios = args.scenarios.split(",")
    ceilings = ["ceiling GET"] * ("me" in scenarios) + ["ceiling POST"] * bool(
        {"refresh", "verify", "login", "send"} & set(scenarios)
    )
    if args.floor:
        scenarios = [each for scenario in scenarios for each in (scenario, f"floor {scenario}")]
    for scenario in [*ceilings, *scenarios]:
        if scenario.removeprefix("floor ") not in PATHS:
            raise SystemExit(f"unknown scenario {scenario!r}: one of {', '.join(PATHS)}")
        input_file = (
            None
            if scenario.startswith("ceiling")
            else bench.prepare(scenario.removeprefix("floor "), USERS, WARM_UP + args.requests)
        )
        per_request = count(bench, scenario, input_file, args.requests)
        print(f"{scenario:16s} {per_request / 1e6:7.3f} M instructions per request", flush=True)
    bench.fake.shutdown()


if __name__ == "__main__":
    main()
