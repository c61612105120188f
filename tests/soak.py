"""The soak: two gunicorn instances on PostgreSQL and Redis that keep going away, checked for correctness.

    .venv/bin/python -m tests.soak --seconds 600      # make soak; .ci/run runs --seconds 60

Two instances (``APP_ENV=testing``: codes are echoed; 2 workers each) share one PostgreSQL database
of the soak's own (``SOAK_DATABASE_URL``, created and emptied here; never the suite's) and one Redis
db of its own (``SOAK_REDIS_URL``, flushed here), each reached through a cuttable proxy
(tests/faults.py). Every 30 s PostgreSQL or Redis (in turn) is cut for 10 s; every 60 s one
gunicorn worker is SIGKILLed (gunicorn starts another). Meanwhile a few client threads log in
(send-otp, sometimes a wrong code first, then the echoed code, on many numbers, some of them again),
refresh, read /me, log out, and try the tokens of ended sessions again, each call against either
instance. Every answer is recorded; at the end the soak checks:

- no 5xx other than 503, and a 503 only while PostgreSQL was cut (or within ``GRACE`` after), or
  for a logout while Redis was cut (a logout answers 200 only once every worker will refuse its
  tokens: one Redis could not record is a 503, README "Decisions");
- no token accepted (/me or refresh 200) after a logout of its session answered 200;
- no duplicate user per phone, no 200 login whose session row is missing, no code with more than
  ``OTP_MAX_ATTEMPTS`` attempts,

prints a report and exits 1 on any violation. Everything is on loopback and stops by itself.
Throughput is not the point: the clients pause between calls to leave the machine to others.
"""

import argparse
import base64
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
import sqlalchemy as sa

from tests.faults import proxy_for
from tests.servers import gunicorn_server

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/soak"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
CUT_EVERY, CUT_FOR, KILL_EVERY = 30.0, 10.0, 60.0
# After PostgreSQL comes back, a request may still fail on a connection the cut broke.
GRACE = 5.0
CLIENTS = 6
PAUSE = 0.05
MAX_ATTEMPTS = 3
REQUEST_TIMEOUT = 20
API = "/api/v1/auth"


@dataclass
class Answer:
    """One call and what came back (``status`` None: no HTTP answer, e.g. the worker was killed)."""

    action: str
    instance: int
    started: float
    ended: float
    status: int | None
    sid: str | None = None
    body: str = ""


@dataclass
class Timeline:
    """When what was cut and which workers were killed (monotonic seconds)."""

    cuts: list = field(default_factory=list)  # (target, start, end)
    kills: list = field(default_factory=list)  # (time, instance, pid)

    def was_cut(self, target, moment):
        """Whether ``target`` was cut at ``moment``."""
        return any(name == target and start <= moment <= end for name, start, end in self.cuts)

    def overlaps_cut(self, target, started, ended):
        """Whether [started, ended] overlaps a cut of ``target`` (extended by ``GRACE``)."""
        return any(
            name == target and started <= end + GRACE and ended >= start for name, start, end in self.cuts
        )

    def postgresql_was_cut(self, started, ended):
        """Whether [started, ended] overlaps a PostgreSQL cut (extended by ``GRACE``)."""
        return self.overlaps_cut("postgresql", started, ended)


def claims(token):
    """A JWT's claims, unverified (the soak only needs its ``sid``)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def with_database(url, name):
    """``url`` naming database ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def prepare_storage(database_url, redis_url):
    """Create (if needed) and empty the soak's database and Redis db, and create the schema."""
    name = urlsplit(database_url).path.lstrip("/")
    if name in ("", "test", "postgres"):
        sys.exit(f"soak: refusing to use database {name!r}; give it one of its own (SOAK_DATABASE_URL)")
    server = sa.create_engine(with_database(database_url, "postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        exists = connection.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    server.dispose()

    from allmine_auth import create_app
    from allmine_auth.extensions import db
    from tests.conftest import make_config

    app = create_app(make_config(SQLALCHEMY_DATABASE_URI=database_url, REDIS_URL=None), migrations=False)
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.engine.dispose()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


class Recorder:
    """Every answer, thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = []

    def add(self, answer):
        """Keep ``answer``."""
        with self.lock:
            self.answers.append(answer)


class Client(threading.Thread):
    """One app user after another: log in, refresh, /me, log out, and poke ended sessions."""

    def __init__(self, number, base_urls, recorder, deadline, seed):
        super().__init__(daemon=True, name=f"soak-client-{number}")
        self.number, self.base_urls, self.recorder, self.deadline = number, base_urls, recorder, deadline
        self.random = random.Random(seed)
        self.http = [requests.Session() for _ in base_urls]
        self.sessions = []  # live: {"access", "refresh", "sid"}
        self.ended = []  # logged out (200): tokens that must never work again
        self.phones = {}  # phone number -> send times
        self.next_phone = 0

    def call(self, action, method, path, sid=None, **kwargs):
        """Send one request to a random instance; record and return ``(status, data)``."""
        instance = self.random.randrange(len(self.base_urls))
        started = time.monotonic()
        try:
            response = self.http[instance].request(
                method, self.base_urls[instance] + path, timeout=REQUEST_TIMEOUT, **kwargs
            )
            status, text = response.status_code, response.text
        except requests.RequestException as exc:
            status, text = None, f"{type(exc).__name__}: {exc}"
        answer = Answer(action, instance, started, time.monotonic(), status, sid, text[:300])
        self.recorder.add(answer)
        data = None
        if status is not None and status < 300:
            with contextlib.suppress(ValueError):
                data = json.loads(text)["data"]
        return status, data

    def phone(self):
        """A number to log in with: a new one, or (sometimes) one used before when its limits allow."""
        now = time.monotonic()
        if self.random.random() < 0.3:
            for number, sent in self.phones.items():
                recent = [moment for moment in sent if now - moment < 600]
                if len(recent) < 3 and (not recent or now - recent[-1] > 65):
                    return number
        self.next_phone += 1
        return f"53{self.number:02d}{self.next_phone:06d}"

    def login(self):
        """send-otp, maybe a wrong code or two, then the echoed code."""
        number = self.phone()
        self.phones.setdefault(number, []).append(time.monotonic())
        body = {"countryCode": "90", "phoneNumber": number}
        status, data = self.call("send-otp", "POST", f"{API}/send-otp", json=body)
        if status != 201 or not data:
            return
        code = data["code"]
        for _ in range(self.random.choice((0, 0, 0, 1, 2))):
            wrong = f"{(int(code) + self.random.randint(1, 9999)) % 10000:04d}"
            self.call("verify-otp-wrong", "POST", f"{API}/verify-otp", json={**body, "code": wrong})
        status, data = self.call("verify-otp", "POST", f"{API}/verify-otp", json={**body, "code": code})
        if status == 200 and data:
            sid = claims(data["accessToken"])["sid"]
            self.recorder.add(Answer("login-sid", -1, time.monotonic(), time.monotonic(), 200, sid))
            self.sessions.append({"access": data["accessToken"], "refresh": data["refreshToken"], "sid": sid})

    def me(self, session):
        """GET /me with the session's access token."""
        headers = {"Authorization": f"Bearer {session['access']}"}
        status, _ = self.call("me", "GET", f"{API}/me", sid=session["sid"], headers=headers)
        if status == 401 and session in self.sessions:
            self.sessions.remove(session)

    def refresh(self, session):
        """Rotate the session's refresh token."""
        body = {"refreshToken": session["refresh"]}
        status, data = self.call("refresh", "POST", f"{API}/refresh", sid=session["sid"], json=body)
        if status == 200 and data and session in self.sessions:
            session["access"], session["refresh"] = data["accessToken"], data["refreshToken"]
        elif status == 401 and session in self.sessions:
            self.sessions.remove(session)

    def logout(self, session):
        """Log the session out; once that answered 200 its tokens must never work again."""
        headers = {"Authorization": f"Bearer {session['access']}"}
        status, _ = self.call(
            "logout", "POST", f"{API}/logout?scope=local", sid=session["sid"], headers=headers
        )
        if status in (200, 401):
            self.sessions.remove(session)
        if status == 200:
            self.ended.append(session)

    def poke_ended(self):
        """Use an ended session's tokens again (they must be refused)."""
        session = self.random.choice(self.ended)
        if self.random.random() < 0.5:
            headers = {"Authorization": f"Bearer {session['access']}"}
            self.call("me-after-logout", "GET", f"{API}/me", sid=session["sid"], headers=headers)
        else:
            body = {"refreshToken": session["refresh"]}
            self.call("refresh-after-logout", "POST", f"{API}/refresh", sid=session["sid"], json=body)

    def run(self):
        """Act until the deadline."""
        while time.monotonic() < self.deadline:
            roll = self.random.random()
            if not self.sessions or roll < 0.2:
                self.login()
            elif self.ended and roll < 0.35:
                self.poke_ended()
            else:
                session = self.random.choice(self.sessions)
                action = self.random.choices((self.me, self.refresh, self.logout), (5, 2, 1))[0]
                action(session)
            time.sleep(PAUSE)
        for http in self.http:
            http.close()


def worker_pids(master_pid):
    """The gunicorn workers (children) of ``master_pid``."""
    path = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    with contextlib.suppress(OSError):
        return [int(pid) for pid in path.read_text().split()]
    return []


def chaos(proxies, masters, timeline, started, deadline, stop):
    """Cut PostgreSQL or Redis (in turn) every ``CUT_EVERY`` s for ``CUT_FOR`` s; kill a worker a minute."""
    targets = ["postgresql", "redis"]
    events = []
    moment = started + CUT_EVERY / 2
    turn = 0
    while moment + CUT_FOR < deadline:
        events.append((moment, "cut", targets[turn % 2]))
        events.append((moment + CUT_FOR, "restore", targets[turn % 2]))
        turn += 1
        moment += CUT_EVERY
    moment = started + KILL_EVERY - 5
    while moment < deadline:
        events.append((moment, "kill", None))
        moment += KILL_EVERY
    cut_started = {}
    for moment, what, target in sorted(events, key=lambda event: event[0]):
        if stop.wait(max(0.0, moment - time.monotonic())):
            break
        if what == "cut":
            # The cut starts counting before it takes effect: a request it breaks may end while it runs.
            cut_started[target] = time.monotonic()
            proxies[target].cut()
        elif what == "restore":
            proxies[target].restore()
            timeline.cuts.append((target, cut_started.pop(target), time.monotonic()))
        else:
            instance = random.randrange(len(masters))
            workers = worker_pids(masters[instance])
            if workers:
                victim = random.choice(workers)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                timeline.kills.append((time.monotonic(), instance, victim))
    for target, start in cut_started.items():
        proxies[target].restore()
        timeline.cuts.append((target, start, time.monotonic()))


def check(answers, timeline, database_url, started):
    """Every violation found, as ``(rule, evidence lines)``."""
    violations = defaultdict(list)

    def at(moment):
        return f"t={moment - started:6.2f}s"

    for answer in answers:
        if answer.status is None or answer.status < 500:
            continue
        if answer.status != 503:
            violations["a 5xx other than 503"].append(answer)
        elif not (
            timeline.postgresql_was_cut(answer.started, answer.ended)
            or (answer.action == "logout" and timeline.overlaps_cut("redis", answer.started, answer.ended))
        ):
            violations["a 503 while PostgreSQL was not cut (nor Redis, for a logout)"].append(answer)

    logged_out = {}
    for answer in answers:
        if answer.action == "logout" and answer.status == 200:
            logged_out[answer.sid] = min(answer.ended, logged_out.get(answer.sid, answer.ended))
    for answer in answers:
        ended = logged_out.get(answer.sid)
        if (
            ended is not None
            and answer.started > ended
            and answer.action in ("me", "refresh", "me-after-logout", "refresh-after-logout")
            and answer.status == 200
        ):
            violations["a token accepted after its logout answered 200"].append(answer)
            if timeline.was_cut("redis", ended):
                violations["(of those: the logout answered while Redis was cut)"].append(answer)

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        duplicates = connection.execute(
            sa.text(
                "SELECT phone_e164, count(*) FROM users WHERE phone_e164 IS NOT NULL"
                " GROUP BY 1 HAVING count(*) > 1"
            )
        ).all()
        sessions = {str(row[0]) for row in connection.execute(sa.text("SELECT id FROM sessions"))}
        over = connection.execute(
            sa.text("SELECT destination, attempts FROM one_time_codes WHERE attempts > :max"),
            {"max": MAX_ATTEMPTS},
        ).all()
        counts = {
            table: connection.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("users", "sessions", "one_time_codes")
        }
    engine.dispose()
    violations["a duplicate user"].extend(f"{phone}: {count} users" for phone, count in duplicates)
    violations["a login without its session row"].extend(
        answer for answer in answers if answer.action == "login-sid" and answer.sid not in sessions
    )
    violations["a code with more than 3 attempts"].extend(f"{dest}: {n} attempts" for dest, n in over)

    def describe(item):
        if isinstance(item, Answer):
            return (
                f"{at(item.started)}..{at(item.ended)} instance {item.instance}"
                f" {item.action} -> {item.status}"
                f" sid={item.sid} ended={at(logged_out[item.sid]) if item.sid in logged_out else '-'}"
                f" {item.body[:160]!r}"
            )
        return str(item)

    return {rule: [describe(item) for item in items] for rule, items in violations.items() if items}, counts


def report(answers, timeline, violations, counts, started):
    """Print what happened and what was wrong."""
    print("== soak report")
    for target, start, end in timeline.cuts:
        print(f"cut {target:10} t={start - started:6.1f}s .. {end - started:6.1f}s")
    for moment, instance, pid in timeline.kills:
        print(f"killed worker {pid} of instance {instance} at t={moment - started:6.1f}s")
    tally = Counter((answer.action, answer.status) for answer in answers if answer.action != "login-sid")
    for (action, status), count in sorted(tally.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        print(f"{action:22} {status if status is not None else 'no answer':>9} x {count}")
    print(f"rows: {counts}")
    if not violations:
        print("no violations")
        return
    for rule, evidence in violations.items():
        print(f"VIOLATION: {rule}: {len(evidence)}")
        for line in evidence[:10]:
            print(f"    {line}")
        if len(evidence) > 10:
            print(f"    ... {len(evidence) - 10} more")


def report_server_errors(log_dir):
    """The servers' unexpected errors (the cause of a 500), the first traceback of each instance in full."""
    for stderr in sorted(log_dir.glob("instance-*/gunicorn.stderr.log")):
        lines = stderr.read_text(errors="replace").splitlines()
        unhandled = [number for number, line in enumerate(lines) if " unhandled " in line]
        outages = sum("database unreachable" in line for line in lines)
        print(f"{stderr.parent.name}: {len(unhandled)} unhandled errors, {outages} database outages logged")
        if unhandled:
            first = unhandled[0]
            end = next((n for n in range(first + 1, len(lines)) if lines[n][:4].isdigit()), len(lines))
            print("\n".join(f"    {line}" for line in lines[first:end][:60]))


def main(argv=None):
    """Run the soak; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--database-url", default=os.environ.get("SOAK_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("SOAK_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-dir", help="keep the servers' logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, seed {seed}, database {args.database_url}")
    random.seed(seed)
    prepare_storage(args.database_url, args.redis_url)
    timeline, recorder, masters = Timeline(), Recorder(), []
    with contextlib.ExitStack() as stack:
        proxies = {
            "postgresql": stack.enter_context(proxy_for(args.database_url)),
            "redis": stack.enter_context(proxy_for(args.redis_url)),
        }
        env = {
            "APP_ENV": "testing",
            "TEST_DATABASE_URL": proxies["postgresql"].route(args.database_url),
            "TEST_REDIS_URL": proxies["redis"].route(args.redis_url),
            "DATABASE_CONNECT_TIMEOUT": "2",
            # The soak sends hundreds of codes a minute to +90: the SMS budgets would close the prefix
            # within the first minute and leave nothing but 429s to check.
            "SMS_GLOBAL_HOURLY_BUDGET": "1000000",
            "SMS_PREFIX_HOURLY_BUDGET": "1000000",
            "LOG_JSON": "false",
        }
        log_dir = Path(
            args.log_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="allmine-soak-"))
        )
        base_urls = [
            stack.enter_context(
                gunicorn_server(
                    env,
                    workers=2,
                    log_dir=log_dir / f"instance-{number}",
                    on_start=lambda process, logs: masters.append(process.pid),
                )
            )
            for number in range(2)
        ]
        started = time.monotonic()
        deadline = started + args.seconds
        stop = threading.Event()
        chaos_thread = threading.Thread(
            target=chaos, args=(proxies, masters, timeline, started, deadline, stop), daemon=True
        )
        chaos_thread.start()
        clients = [
            Client(number, base_urls, recorder, deadline, seed + number) for number in range(args.clients)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT + 5)
        stop.set()
        chaos_thread.join(timeout=10)
        violations, counts = check(recorder.answers, timeline, args.database_url, started)
        report(recorder.answers, timeline, violations, counts, started)
        report_server_errors(log_dir)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
