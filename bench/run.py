"""``make bench``: the service under gunicorn against a bare Flask app, driven by wrk at 16 connections.

What runs (see bench/README.md for the why and the figures):

1. The service in production mode (``APP_ENV=production``) on PostgreSQL and
   Redis, throwaway random secrets, SMS through the Twilio sender pointed at a
   fake Twilio on 127.0.0.1 (nothing leaves the machine), the per-IP rate
   limits and SMS budgets raised so high they never trip (they still run:
   their Redis and database reads are part of what is measured).
2. The ceiling: ``bench/echo_app.py`` under the same ``gunicorn.conf.py``.
3. wrk (one thread, 16 connections) for each scenario; every request carries
   fresh valid input: access tokens for GET /me, never-used refresh tokens for
   /refresh, never-seen phone numbers for /send-otp, seeded codes for
   /verify-otp (new users: the sign-up path).
4. All of it at 1,000 and then 1,000,000 users (``allmine_auth/store/bulk.py``, as ``flask seed --users N``).

Needs PostgreSQL on ``BENCH_DATABASE_URL`` (default: database ``allmine_bench``
on 127.0.0.1, created when missing, emptied on each run), Redis on
``BENCH_REDIS_URL`` (default db 15, flushed on each run) and ``wrk``
(``apt-get install wrk``). Results: a table on stdout, ``bench/results/``.
"""

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/allmine_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
NEVER = "1000000000/hour"
CONNECTIONS = 16
# Access tokens for GET /me, reused in turn: like apps calling with the same token for a while, so the
# session-state cache in Redis is warm (the 2 s warm-up goes through all of them).
ME_TOKENS = 500
# Every figure is the better of this many runs, the ceiling's and each scenario's alike: on a shared
# 2-core machine other load only ever slows a run down (runs of the same code differ by +-10%).
TRIES = 2
GOALS = {"me": 0.50, "refresh": 0.35, "verify": 0.30}
SCENARIOS = (
    # name, path, wrk mode, ceiling it is compared with
    ("me", "/api/v1/auth/me", "bearer", "get"),
    ("refresh", "/api/v1/auth/refresh", "json", "post"),
    ("send", "/api/v1/auth/send-otp", "json", "post"),
    ("verify", "/api/v1/auth/verify-otp", "json", "post"),
)
SEND_PREFIX, VERIFY_PREFIX = "534", "535"
VERIFY_CODE = "1234"


class FakeTwilio(BaseHTTPRequestHandler):
    """Answers every POST like Twilio's Messages resource accepting a message."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the client's
    # delayed ACK (40 ms and more), a stall real providers don't have.
    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"sid": "SM" + uuid.uuid4().hex, "status": "queued"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def service_env(fake_sms_port):
    """Production settings: safe throwaway secrets, local fakes, limits out of reach."""
    return {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "OTP_SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "LOG_JSON": "true",
        "SMS_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": "ACbench00000000000000000000000000",
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_FROM": "+15005550006",
        "TWILIO_API_URL": f"http://127.0.0.1:{fake_sms_port}",
        "EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "1",
        "RATELIMIT_SEND": NEVER,
        "RATELIMIT_VERIFY": NEVER,
        "RATELIMIT_REFRESH": NEVER,
        "RATELIMIT_SEND_NETWORK": NEVER,
        "SMS_GLOBAL_HOURLY_BUDGET": "1000000000",
        "SMS_BASELINE_FLOOR": "1000000000",
        "SMS_NETWORK_MIN_SENDS": "1000000000",
    }


def ensure_database(url):
    """Create the benchmark database when it is missing (PostgreSQL)."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        )
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    engine.dispose()


def run_wrk(base_url, path, mode, duration, input_file=None):
    """One wrk run; return its JSON summary plus requests/s."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "5s"]
    command += ["-s", str(ROOT / "bench" / "wrk.lua"), base_url, "--", path, mode]
    if input_file is not None:
        command += [str(input_file), "1"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = json.loads(output.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    return summary


def worker_pids(master_pid):
    """The gunicorn workers: children of any of the arbiter's threads (gunicorn 27 forks from several)."""
    pids = set()
    for task in Path(f"/proc/{master_pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update((task / "children").read_text().split())
    return pids


def cpu_ticks(master_pid):
    """``{pid: (component, CPU clock ticks so far)}`` for the workers, PostgreSQL, Redis and this process."""
    workers = worker_pids(master_pid)
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if entry.name in workers:
            component = "workers"
        elif name.startswith(("postgres", "redis")):
            component = name.split("-")[0].split(":")[0]
        elif int(entry.name) == os.getpid():
            component = "bench"
        else:
            continue
        ticks[entry.name] = (component, int(fields[11]) + int(fields[12]))
    return ticks


def measured(master_pid, *wrk_args):
    """``run_wrk(*wrk_args)``, with the CPU (in cores) each component used meanwhile added to its summary.

    Per process: a worker recycled meanwhile loses its last ticks, one started meanwhile counts whole.
    wrk's own CPU comes from this process's reaped children.
    """
    before, started = cpu_ticks(master_pid), time.perf_counter()
    wrk_before = child_ticks()
    summary = run_wrk(*wrk_args)
    elapsed = time.perf_counter() - started
    after = cpu_ticks(master_pid)
    used = dict.fromkeys(("workers", "postgres", "redis", "wrk", "bench"), 0)
    per_worker = []
    for pid, (component, total) in after.items():
        ticks = total - before.get(pid, (component, 0))[1]
        used[component] += ticks
        if component == "workers":
            per_worker.append(ticks)
    used["wrk"] = child_ticks() - wrk_before
    hz = os.sysconf("SC_CLK_TCK")
    summary["cpu_cores"] = {name: round(value / hz / elapsed, 2) for name, value in used.items()}
    # How the load spread over the workers: one worker near 1.0 and the others idle is a GIL-bound run.
    summary["worker_cores"] = sorted((round(ticks / hz / elapsed, 2) for ticks in per_worker), reverse=True)
    return summary


def child_ticks():
    """CPU ticks of this process's finished children (wrk runs are reaped before we can read /proc)."""
    times = os.times()
    return int((times.children_user + times.children_system) * os.sysconf("SC_CLK_TCK"))


def worker_memory(master_pid):
    """RSS, peak RSS and PSS of each gunicorn worker, in MB, read from /proc."""
    workers = []
    for pid in sorted(worker_pids(master_pid)):
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        pss = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        workers.append(
            {
                "pid": int(pid),
                "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
                "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                "pss_mb": pss / 1024,
            }
        )
    return workers


class Bench:
    """The benchmark's state: the in-process app (to seed and mint), the fake SMS gateway, the results."""

    def __init__(self, args):
        self.args = args
        self.fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeTwilio)
        threading.Thread(target=self.fake.serve_forever, daemon=True).start()
        self.env = service_env(self.fake.server_address[1])
        # config.py reads the environment when imported: set it first, then build the same app in-process.
        os.environ.update(self.env)
        from allmine_auth import create_app

        self.app = create_app("production")
        self.results = {"machine": {"cores": os.cpu_count()}, "scales": {}}
        self.inputs = RESULTS / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.seeded = 0
        self.counter = 0

    def reset_storage(self):
        """Fresh schema and an empty Redis database."""
        from allmine_auth.extensions import db

        with self.app.app_context():
            db.drop_all()
            db.create_all()
            self.app.extensions["allmine_redis"].flushdb()

    def clear_activity(self):
        """Between scales: empty sessions (and their Live Activities), codes, events, locks and the cache
        outbox; drop verify-made users; keep the seeded.

        TRUNCATE, not DELETE: this PostgreSQL may run without autovacuum, and
        dead rows plus stale statistics would make the next scale slower for
        reasons no production database has.
        """
        import sqlalchemy as sa

        from allmine_auth.extensions import db
        from allmine_auth.models import (
            AuthEvent,
            CacheOutbox,
            DestinationLock,
            LiveActivity,
            LoginSession,
            OneTimeCode,
            User,
        )
        from allmine_auth.store.bulk import vacuum_analyze

        with self.app.app_context():
            activity = (LiveActivity, LoginSession, OneTimeCode, AuthEvent, DestinationLock, CacheOutbox)
            tables = [model.__table__.name for model in activity]
            db.session.execute(sa.text(f"TRUNCATE {', '.join(tables)}"))
            db.session.execute(sa.delete(User).where(User.phone_e164.like(f"+90{VERIFY_PREFIX}%")))
            db.session.commit()
            vacuum_analyze(User.__table__.name)
            db.session.remove()
            self.app.extensions["allmine_redis"].flushdb()

    def seed_to(self, users):
        """Seed users until there are ``users``; return the seconds it took."""
        from allmine_auth.extensions import db
        from allmine_auth.store.bulk import seed_users

        started = time.perf_counter()
        with self.app.app_context():
            seed_users(users - self.seeded, start=self.seeded)
            db.session.remove()
        self.seeded = users
        seconds = time.perf_counter() - started
        self.settle()
        return seconds

    def settle(self):
        """Let the writes of seeding reach the disk before measuring (a checkpoint, then the page cache)."""
        import sqlalchemy as sa

        from allmine_auth.extensions import db

        # CHECKPOINT needs a superuser or pg_checkpoint; without it the page cache flush still helps.
        with (
            self.app.app_context(),
            db.engine.connect() as connection,
            contextlib.suppress(sa.exc.SQLAlchemyError),
        ):
            connection.execute(sa.text("CHECKPOINT"))
        os.sync()
        time.sleep(3)

    def write_lines(self, name, lines):
        """Write one request input per line; return the file."""
        path = self.inputs / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    def token_pairs(self, count, scale):
        """Open ``count`` sessions for random seeded users; mint their tokens with ``mint_tokens``."""
        import sqlalchemy as sa

        from allmine_auth.extensions import db
        from allmine_auth.models import LoginSession, User, utcnow
        from allmine_auth.rules.sessions import mint_tokens
        from allmine_auth.store.bulk import phone_for, vacuum_analyze

        with self.app.app_context():
            phones = [phone_for(random.randrange(scale)) for _ in range(min(count, 5000))]
            ids = db.session.scalars(sa.select(User.id).where(User.phone_e164.in_(phones))).all()
            now = utcnow()
            expires = now + timedelta(seconds=self.app.config["SESSION_MAX_AGE"])
            rows, pairs = [], []
            for index in range(count):
                user_id = ids[index % len(ids)]
                session = SimpleNamespace(id=uuid.uuid4(), expires_at=expires)
                jti = str(uuid.uuid4())
                rows.append(
                    {
                        "id": session.id,
                        "user_id": user_id,
                        "refresh_jti": jti,
                        "created_at": now,
                        "last_used_at": now,
                        "expires_at": expires,
                    }
                )
                pairs.append(mint_tokens(user_id, False, session, jti, now))
            for first in range(0, len(rows), 10_000):
                db.session.execute(sa.insert(LoginSession), rows[first : first + 10_000])
            db.session.commit()
            # Current statistics, as autovacuum keeps them: planned against an "empty" table, the
            # rotation's UPDATE would range-scan ix_sessions_expires_at instead of using the key.
            vacuum_analyze(LoginSession.__table__.name)
            db.session.remove()
        return pairs

    def fresh_numbers(self, prefix, count):
        """``count`` phone numbers never used before in this run: ``prefix`` then 7 digits."""
        first = self.counter
        self.counter += count
        return [f"{prefix}{index:07d}" for index in range(first, first + count)]

    def seed_codes(self, numbers):
        """Store the code ``1234`` for each number, as ``issue_code`` stores it (an HMAC, 0 attempts)."""
        import sqlalchemy as sa

        from allmine_auth.extensions import db
        from allmine_auth.models import OneTimeCode, utcnow
        from allmine_auth.rules.codes import code_hmac
        from allmine_auth.rules.destinations import SMS, Destination
        from allmine_auth.store.bulk import vacuum_analyze

        with self.app.app_context():
            now = utcnow()
            # The codes must outlive the run, so they expire in an hour rather than OTP_TTL_SMS.
            rows = []
            for number in numbers:
                destination = Destination(channel=SMS, address=f"+90{number}", country_code="90")
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "channel": SMS,
                        "destination": destination.address,
                        "code_hash": code_hmac(destination, VERIFY_CODE),
                        "attempts": 0,
                        "created_at": now,
                        "expires_at": now + timedelta(hours=1),
                    }
                )
            for first in range(0, len(rows), 10_000):
                db.session.execute(sa.insert(OneTimeCode), rows[first : first + 10_000])
            db.session.commit()
            vacuum_analyze(OneTimeCode.__table__.name)
            db.session.remove()

    def prepare(self, scenario, scale, pool):
        """The input file for ``scenario``: every line valid and used once (``me`` tokens are reused)."""
        if scenario == "me":
            return self.write_lines("me", [pair.access_token for pair in self.token_pairs(ME_TOKENS, scale)])
        if scenario == "refresh":
            pairs = self.token_pairs(pool, scale)
            return self.write_lines("refresh", [json.dumps({"refreshToken": p.refresh_token}) for p in pairs])
        if scenario == "send":
            numbers = self.fresh_numbers(SEND_PREFIX, pool)
            return self.write_lines(
                "send", [json.dumps({"countryCode": "90", "phoneNumber": n}) for n in numbers]
            )
        numbers = self.fresh_numbers(VERIFY_PREFIX, pool)
        self.seed_codes(numbers)
        bodies = [json.dumps({"countryCode": "90", "phoneNumber": n, "code": VERIFY_CODE}) for n in numbers]
        return self.write_lines("verify", bodies)

    @contextlib.contextmanager
    def server(self, label, app, env, ready_path="/healthz"):
        """gunicorn with ``gunicorn.conf.py``'s own worker count; yield ``(base URL, master pid)``."""
        from tests.servers import gunicorn_server

        log_dir = RESULTS / label
        shutil.rmtree(log_dir, ignore_errors=True)
        started = {}
        with gunicorn_server(
            env,
            workers=None,
            app=app,
            log_dir=log_dir,
            ready_path=ready_path,
            on_start=lambda process, logs: started.update(pid=process.pid),
            startup_timeout=60,
        ) as base_url:
            yield base_url, started["pid"]

    def measure_ceiling(self, scale, duration):
        """The bare Flask app under the same gunicorn settings: GET and POST, and its workers' memory."""
        with self.server(f"ceiling-{scale}", "bench.echo_app:app", {}, "/echo") as (url, pid):
            run_wrk(url, "/echo", "get", 2)
            ceiling = {"get": measured(pid, url, "/echo", "get", duration)}
            post = self.write_lines("echo", [json.dumps({"refreshToken": "x" * 300})] * 100)
            ceiling["post"] = measured(pid, url, "/echo", "json", duration, post)
            ceiling["post"]["input_wraps"] = 0  # the same bodies on purpose
            ceiling["memory"] = worker_memory(pid)
        for kind in ("get", "post"):
            report_line(f"ceiling {kind.upper()}", ceiling[kind])
        return ceiling

    def run_scale(self, scale):
        """Seed to ``scale`` users, then measure the ceiling and every scenario."""
        result = {"users": scale}
        print(f"\n== {scale:,} users", flush=True)
        if scale > self.seeded:
            result["seed_seconds"] = round(self.seed_to(scale), 1)
            print(f"seeded to {scale:,} users in {result['seed_seconds']} s", flush=True)
        duration = self.args.duration
        ceiling = self.measure_ceiling(scale, duration)
        # Every POST input is used once: enough for the ceiling's rate for the whole run, and some.
        pool = int(ceiling["post"]["rps"] * duration * 1.3) + 1000
        with self.server(f"service-{scale}", "wsgi:app", self.env) as (url, pid):
            me_file = self.prepare("me", scale, pool)
            run_wrk(url, "/api/v1/auth/me", "bearer", 2, me_file)
            for name, path, mode, _ in SCENARIOS:
                tries = []
                for _ in range(TRIES):
                    input_file = me_file if name == "me" else self.prepare(name, scale, pool)
                    tries.append(measured(pid, url, path, mode, duration, input_file))
                    report_line(name, tries[-1])
                result[name] = max(tries, key=lambda summary: summary["rps"])
                result[name]["tries_rps"] = [round(summary["rps"]) for summary in tries]
            result["memory"] = worker_memory(pid)
        # The ceiling again after the service: the better of its two runs counts, as for each scenario.
        again = self.measure_ceiling(scale, duration)
        for kind in ("get", "post"):
            if again[kind]["rps"] > ceiling[kind]["rps"]:
                ceiling[kind] = again[kind]
            for name, _, _, against in SCENARIOS:
                if against == kind:
                    result[name]["ratio"] = result[name]["rps"] / ceiling[kind]["rps"]
                    result[name]["p99_ratio"] = result[name]["p99_us"] / ceiling[kind]["p99_us"]
        result["ceiling"] = ceiling
        peak = max(worker["peak_rss_mb"] for worker in result["memory"])
        print(f"workers: {len(result['memory'])}, peak RSS {peak:.1f} MB", flush=True)
        self.results["scales"][str(scale)] = result
        self.clear_activity()


def in_process_bench(users):
    """The ``Bench`` of the in-process tools (cpu.py, instructions.py): fresh storage, ``users`` seeded."""
    ensure_database(DATABASE_URL)
    bench = Bench(argparse.Namespace(users=str(users), duration=1))
    bench.reset_storage()
    bench.seed_to(users)
    return bench


def report_line(name, summary):
    """One scenario's figures on stdout."""
    ratio = f"  {summary['ratio']:5.0%} of ceiling" if "ratio" in summary else ""
    problems = summary["non_2xx"] + summary["connect_errors"] + summary["read_errors"] + summary["timeouts"]
    flag = (
        f"  !! {problems} errors, {summary['input_wraps']} input wraps"
        if problems or summary["input_wraps"]
        else ""
    )
    cpu = " ".join(f"{name} {cores:.2f}" for name, cores in summary["cpu_cores"].items() if cores >= 0.01)
    print(
        f"{name:>12}: {summary['rps']:8.0f} req/s  p50 {summary['p50_us'] / 1000:6.2f} ms"
        f"  p99 {summary['p99_us'] / 1000:6.2f} ms{ratio}  cores: {cpu}"
        f" (per worker {'/'.join(f'{cores:.1f}' for cores in summary['worker_cores'])}){flag}",
        flush=True,
    )


def table(results):
    """The figures as a Markdown table (what bench/README.md shows)."""
    rows = [
        "| users | endpoint | req/s | p50 ms | p99 ms | req/s vs ceiling | p99 vs ceiling |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key, result in results["scales"].items():
        for kind in ("get", "post"):
            summary = result["ceiling"][kind]
            figures = (
                f"{summary['rps']:.0f} | {summary['p50_us'] / 1000:.1f} | {summary['p99_us'] / 1000:.1f}"
            )
            rows.append(f"| {int(key):,} | ceiling {kind.upper()} /echo | {figures} | | |")
        for name, path, *_ in SCENARIOS:
            summary = result[name]
            figures = (
                f"{summary['rps']:.0f} | {summary['p50_us'] / 1000:.1f} | {summary['p99_us'] / 1000:.1f}"
            )
            versus = f"{summary['ratio']:.0%} | {summary['p99_ratio']:.1f}x"
            rows.append(f"| {int(key):,} | {path} | {figures} | {versus} |")
    return "\n".join(rows)


def verdicts(results):
    """Each goal of bench/README.md: met or not, with the figures."""
    scales = results["scales"]
    lines = []
    for key, result in scales.items():
        for name, goal in GOALS.items():
            ratio = result[name]["ratio"]
            lines.append(
                (
                    f"{name} >= {goal:.0%} of ceiling req/s at {int(key):,} users",
                    ratio >= goal,
                    f"{ratio:.0%}",
                )
            )
        for name, *_ in SCENARIOS:
            p99 = result[name]["p99_ratio"]
            lines.append((f"{name} p99 <= 3x ceiling p99 at {int(key):,} users", p99 <= 3, f"{p99:.1f}x"))
        peak = max(worker["peak_rss_mb"] for worker in result["memory"])
        lines.append((f"peak RSS per worker < 100 MB at {int(key):,} users", peak < 100, f"{peak:.1f} MB"))
    if len(scales) >= 2:
        small, large = (scales[key] for key in sorted(scales, key=int)[:: len(scales) - 1])
        for name, *_ in SCENARIOS:
            slower = small[name]["rps"] / large[name]["rps"]
            p99 = large[name]["p99_us"] / small[name]["p99_us"]
            met = slower <= 1.2 and p99 <= 1.2
            lines.append(
                (f"{name} at 1M users within 1.2x of 1k", met, f"req/s {slower:.2f}x, p99 {p99:.2f}x")
            )
    return lines


def main():
    """Parse the options, run every scale, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1000,1000000", help="comma-separated user counts (ascending)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    ensure_database(DATABASE_URL)
    started = time.perf_counter()
    bench = Bench(args)
    bench.reset_storage()
    for scale in sorted(int(users) for users in args.users.split(",")):
        bench.run_scale(scale)
    bench.results["verdicts"] = [
        {"goal": goal, "met": met, "measured": measured} for goal, met, measured in verdicts(bench.results)
    ]
    print(
        "\n== figures (16 connections; ratio = share of the ceiling's req/s, p99 x = over the ceiling's p99)"
    )
    print(table(bench.results))
    print("\n== goals")
    for goal, met, measured in verdicts(bench.results):
        print(f"  [{'x' if met else ' '}] {goal}: {measured}")
    bench.results["seconds"] = round(time.perf_counter() - started)
    (RESULTS / "results.json").write_text(json.dumps(bench.results, indent=2))
    print(f"\nwhole run: {bench.results['seconds']} s; results in {RESULTS / 'results.json'}")
    bench.fake.shutdown()


if __name__ == "__main__":
    main()
