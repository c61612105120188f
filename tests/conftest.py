"""Fixtures: an app per test on a fresh database (SQLite, or PostgreSQL/Redis when configured)."""

import logging
import os
import re
import shutil
import subprocess
import time

import pytest
import redis
import sqlalchemy as sa

from allmine_auth import create_app
from allmine_auth.config import TestingConfig
from allmine_auth.extensions import db
from allmine_auth.observability import SERVICE_LOGGERS
from tests.fakes import free_port
from tests.faults import pg_proxy, redis_proxy  # noqa: F401  (fixtures for every module)
from tests.parallel import threaded_server
from tests.spec_conformance import conforms_to_spec  # noqa: F401  (every answer checked against the spec)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PHONE = {"countryCode": "90", "phoneNumber": "5321234567"}
E164 = "+905321234567"


def pytest_sessionstart(session):
    """With ``TEST_REQUIRE_SERVICES`` (CI), PostgreSQL and Redis must answer: fail, never skip."""
    database_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    if os.environ.get("TEST_REQUIRE_SERVICES") and not (database_url and redis_url):
        pytest.exit(
            "TEST_REQUIRE_SERVICES is set but TEST_DATABASE_URL or TEST_REDIS_URL is not", returncode=1
        )
    try:
        if database_url:
            engine = sa.create_engine(database_url)
            engine.connect().close()
            engine.dispose()
        if redis_url:
            redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001  (any failure to reach them ends the run)
        pytest.exit(f"configured test services do not answer: {exc}", returncode=1)


def make_config(**overrides):
    """A ``TestingConfig`` subclass with ``overrides`` applied."""
    return type("TestConfig", (TestingConfig,), overrides)


def reset_storage(app):
    """Give the test a fresh, empty database and Redis."""
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            db.drop_all()
        db.create_all()
        client = app.extensions.get("allmine_redis")
        if client is not None:
            client.flushdb()


@pytest.fixture
def caplog(caplog):
    """pytest's ``caplog``, seeing the service's own loggers too.

    ``configure_logging`` gives them a handler of their own and stops them
    propagating to the root logger, where pytest listens: without this, what a
    test sees depended on which app an earlier test had built.
    """
    loggers = [logging.getLogger(name) for name in SERVICE_LOGGERS]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def config_overrides():
    """Settings a test module or test changes (override this fixture or use ``make_app``)."""
    return {}


def close_app(app):
    """Close an app's database connections and Redis client (no leaked sockets between tests)."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
        client = app.extensions.get("allmine_redis")
        if client is not None:
            client.close()


def file_database(directory):
    """A SQLite file in ``directory`` with the schema made, for servers in other processes; its URL."""
    url = f"sqlite:///{directory / 'auth.db'}"
    schema_app = create_app(make_config(SQLALCHEMY_DATABASE_URI=url))
    with schema_app.app_context():
        db.create_all()
    close_app(schema_app)
    return url


@pytest.fixture
def make_app():
    """Build apps with other settings, on the same storage as ``app`` (not reset); closed after the test."""
    built = []

    def build(fresh=False, **overrides):
        """``fresh=True`` empties the database and Redis first (and creates the SQLite schema)."""
        built.append(create_app(make_config(**overrides)))
        if fresh:
            reset_storage(built[-1])
        return built[-1]

    yield build
    for each in built:
        close_app(each)


@pytest.fixture
def app(config_overrides, make_app):
    """The app under test, on a fresh database."""
    app = make_app(fresh=True, **config_overrides)
    with app.app_context():
        yield app


@pytest.fixture
def shared_app(request, config_overrides, make_app, tmp_path):
    """The app on a database that threads and processes share: PostgreSQL when set, else a SQLite file."""
    if os.environ.get("TEST_DATABASE_URL"):
        # The app fixture's database is fresh and already on the shared server.
        yield request.getfixturevalue("app")
        return
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/shared.db", **config_overrides)
    with app.app_context():
        db.create_all()
        yield app


@pytest.fixture
def live_url(shared_app):
    """``shared_app`` served by a threaded server (``tests.parallel``); its base URL."""
    with threaded_server(shared_app) as base_url:
        yield base_url


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the ``flask`` CLI commands."""
    return app.test_cli_runner()


def assert_envelope(response, status, data=None, errors=None):
    """Assert the whole envelope: status, flags, data (when given) and errors; return the data."""
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"isSuccess", "statusCode", "data", "errors", "timestamp"}
    assert body["isSuccess"] is (status < 400)
    assert body["statusCode"] == status
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    if status < 400:
        assert body["errors"] == []
        if data is not None:
            assert body["data"] == data
    else:
        assert body["data"] is None
        assert body["errors"] == errors
    return body["data"]


def assert_error(response, status, *errors):
    """Assert an error envelope with exactly ``errors``."""
    return assert_envelope(response, status, errors=list(errors))


class AuthActions:
    """Log in through the real endpoints, as an app would."""

    def __init__(self, client):
        self.client = client

    def send(self, phone=PHONE, **kwargs):
        """POST send-otp and return the response."""
        return self.client.post("/api/v1/auth/send-otp", json=phone, **kwargs)

    def verify(self, code, phone=PHONE, headers=None, **fields):
        """POST verify-otp (with any extra body ``fields``) and return the response."""
        return self.client.post(
            "/api/v1/auth/verify-otp", json={**phone, "code": code, **fields}, headers=headers
        )

    def login(self, phone=PHONE, **extra):
        """Send and verify a code; return the verify data (tokens and user)."""
        code = self.send(phone).get_json()["data"]["code"]
        response = self.client.post("/api/v1/auth/verify-otp", json={**phone, "code": code, **extra})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    def login_email(self, email="user@example.com"):
        """Send and verify an email code; return the verify data."""
        code = self.client.post("/api/v1/auth/send-otp-email", json={"email": email}).get_json()["data"][
            "code"
        ]
        response = self.client.post("/api/v1/auth/verify-otp-email", json={"email": email, "code": code})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]


def bearer(token):
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(client):
    """Login helper bound to ``client``."""
    return AuthActions(client)


@pytest.fixture
def unique_phone():
    """A different valid Turkish mobile number each call."""
    counter = iter(range(10_000, 100_000))

    def build():
        return {"countryCode": "90", "phoneNumber": f"53212{next(counter):05d}"}

    return build


class RedisServer:
    """A Redis server of a test's own, which the test may stop and start again on the same port."""

    def __init__(self, binary, port):
        self.binary, self.port = binary, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis():
    """A ``RedisServer`` of this test's own, started."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, free_port())
    server.start()
    yield server
    server.stop()
