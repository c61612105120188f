"""PostgreSQL unreachable: every request that needs it answers 503 with Retry-After, never 500 or a hang.

The app reaches PostgreSQL through a cuttable proxy (tests/faults.py) in front of TEST_DATABASE_URL's
server, without Redis (so GET /me and the session checks need the database). Skipped on SQLite.
"""

import logging
import os
import time

import pytest
import requests
import sqlalchemy as sa

from allmine_auth.extensions import db
from tests import faults
from tests.conftest import PHONE, AuthActions, assert_envelope, assert_error, bearer
from tests.servers import gunicorn_server
from tests.test_registration import PROFILE

pg_proxy = faults.pg_proxy
RETRY_AFTER = 7
OUTAGE_SETTINGS = {
    "REDIS_URL": None,
    "RATELIMIT_STORAGE_URI": "memory://",
    "DATABASE_RETRY_AFTER": RETRY_AFTER,
    "DATABASE_CONNECT_TIMEOUT": 2,
}
OTHER = {"countryCode": "90", "phoneNumber": "5329876543"}


@pytest.fixture
def direct_engine():
    """An engine straight to the test database (not through the proxy), to look at what was written."""
    engine = sa.create_engine(os.environ["TEST_DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture
def app(pg_proxy, make_app):
    """The app on the test database through the proxy, without Redis."""
    app = make_app(
        fresh=True, SQLALCHEMY_DATABASE_URI=pg_proxy.route(os.environ["TEST_DATABASE_URL"]), **OUTAGE_SETTINGS
    )
    with app.app_context():
        yield app


@pytest.fixture
def service_log(caplog):
    """``caplog`` at INFO for the service's loggers."""
    caplog.set_level(logging.INFO, "allmine_auth")
    return caplog


def calls(client, login, code):
    """Every kind of request that needs the database, as ``name -> zero-argument call``."""
    access = bearer(login["accessToken"])
    return {
        "send-otp": lambda: client.post("/api/v1/auth/send-otp", json=OTHER),
        "verify-otp": lambda: client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": code}),
        "refresh": lambda: client.post("/api/v1/auth/refresh", json={"refreshToken": login["refreshToken"]}),
        "me": lambda: client.get("/api/v1/auth/me", headers=access),
        "sessions": lambda: client.get("/api/v1/auth/sessions", headers=access),
        "complete-registration": lambda: client.post(
            "/api/v1/auth/complete-registration", json=PROFILE, headers=access
        ),
        "logout": lambda: client.post("/api/v1/auth/logout?scope=local", headers=access),
    }


def assert_unavailable(response):
    """The whole 503 envelope, with Retry-After."""
    assert_error(response, 503, "Service unavailable")
    assert response.headers["Retry-After"] == str(RETRY_AFTER)


def outage_lines(service_log):
    """The ERROR lines and the recovery lines logged so far."""
    errors = [r.getMessage() for r in service_log.records if r.levelno >= logging.ERROR]
    back = [r.getMessage() for r in service_log.records if r.getMessage() == "database reachable again"]
    return errors, back


def test_every_call_answers_503_while_cut_logs_once_and_works_again_when_restored(
    app, client, auth, pg_proxy, service_log
):
    login = auth.login()
    code = auth.send().get_json()["data"]["code"]
    service_log.clear()
    pg_proxy.cut()
    for call in calls(client, login, code).values():
        assert_unavailable(call())
        assert_unavailable(call())  # the second time too: no stale connection, no 500
    readiness = client.get("/readyz")
    assert_error(readiness, 503, "Service unavailable", "database: not answering")
    assert readiness.headers["Retry-After"] == str(RETRY_AFTER)
    errors, back = outage_lines(service_log)
    assert len(errors) == 1, errors
    assert errors[0].startswith("database unreachable, answering 503 until it is back: OperationalError")
    assert back == []

    pg_proxy.restore()
    answers = {name: call() for name, call in calls(client, login, code).items()}
    assert_envelope(answers["send-otp"], 201)
    assert assert_envelope(answers["verify-otp"], 200)["user"]["id"] == login["user"]["id"]
    assert_envelope(answers["refresh"], 200)
    assert assert_envelope(answers["me"], 200)["id"] == login["user"]["id"]
    assert len(assert_envelope(answers["sessions"], 200)) == 2
    assert assert_envelope(answers["complete-registration"], 200)["isRegistrationComplete"] is True
    assert_envelope(answers["logout"], 200)
    errors, back = outage_lines(service_log)
    assert (len(errors), back) == (1, ["database reachable again"])


def test_a_dead_pooled_connection_costs_one_503_at_most(app, client, auth, pg_proxy):
    login = auth.login()
    # The pool holds a connection; the database goes away and comes back before the next request.
    pg_proxy.cut()
    pg_proxy.restore()
    first = client.get("/api/v1/auth/sessions", headers=bearer(login["accessToken"]))
    if first.status_code != 200:
        assert_unavailable(first)
    for _ in range(3):
        assert_envelope(client.get("/api/v1/auth/sessions", headers=bearer(login["accessToken"])), 200)


def assert_nothing_written(direct_engine):
    """No account, no session, and the code still stored."""
    with direct_engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM users")) == 0
        assert connection.scalar(sa.text("SELECT count(*) FROM sessions")) == 0
        assert connection.scalar(sa.text("SELECT count(*) FROM one_time_codes")) == 1


def test_a_cut_in_the_middle_of_a_login_writes_nothing(app, client, pg_proxy, direct_engine):
    # An email login is several statements in one transaction (an SMS login is one statement: below).
    email = {"email": "cut@example.com"}
    code = client.post("/api/v1/auth/send-otp-email", json=email).get_json()["data"]["code"]
    statements = []

    def cut_after_the_first(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
        if len(statements) == 1:
            pg_proxy.cut()

    def verify():
        return client.post("/api/v1/auth/verify-otp-email", json={**email, "code": code})

    sa.event.listen(db.engine, "after_cursor_execute", cut_after_the_first)
    try:
        assert_unavailable(verify())
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", cut_after_the_first)
        pg_proxy.restore()
    assert "one_time_codes" in statements[0], statements  # the code's use went through, then the cut
    assert_nothing_written(direct_engine)
    # Nothing half-done: the same code still logs in, once.
    assert assert_envelope(verify(), 200)["user"]["isRegistrationComplete"] is False


def test_a_cut_as_an_sms_login_is_sent_writes_nothing(app, client, auth, pg_proxy, direct_engine):
    # The SMS login (the code's use, the account, the session and its audit row) is one statement.
    code = auth.send().get_json()["data"]["code"]
    statements = []

    def cut_before_it(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
        pg_proxy.cut()

    sa.event.listen(db.engine, "before_cursor_execute", cut_before_it)
    try:
        assert_unavailable(auth.verify(code))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", cut_before_it)
        pg_proxy.restore()
    assert len(statements) == 1 and statements[0].startswith("WITH used AS"), statements
    assert_nothing_written(direct_engine)
    assert assert_envelope(auth.verify(code), 200)["user"]["isRegistrationComplete"] is False


def test_a_blackholed_database_answers_503_within_the_connect_timeout(app, client, auth, pg_proxy):
    login = auth.login()
    db.engine.dispose()  # no pooled connection: the next request must connect through the hung network
    pg_proxy.cut(blackhole=True)
    started = time.monotonic()
    assert_unavailable(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])))
    elapsed = time.monotonic() - started
    assert elapsed < OUTAGE_SETTINGS["DATABASE_CONNECT_TIMEOUT"] + 2, elapsed
    pg_proxy.restore()
    assert_envelope(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)


def test_gunicorn_answers_503_through_a_cut_and_recovers_without_a_restart(app, auth, pg_proxy):
    login = auth.login()
    started = []
    env = {"TEST_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "TEST_REDIS_URL": ""}
    env.update(DATABASE_RETRY_AFTER=RETRY_AFTER, DATABASE_CONNECT_TIMEOUT=2, LOG_JSON="false")
    with gunicorn_server(env, workers=1, on_start=lambda process, logs: started.append(logs)) as base_url:
        me = f"{base_url}/api/v1/auth/me"
        headers = bearer(login["accessToken"])
        assert requests.get(me, headers=headers, timeout=10).status_code == 200
        pg_proxy.cut()
        for _ in range(5):
            response = requests.get(me, headers=headers, timeout=10)
            assert response.status_code == 503, response.text
            body = response.json()
            assert (body["isSuccess"], body["statusCode"], body["data"]) == (False, 503, None)
            assert body["errors"] == ["Service unavailable"]
            assert response.headers["Retry-After"] == str(RETRY_AFTER)
        pg_proxy.restore()
        response = requests.get(me, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["id"] == login["user"]["id"]
        stderr = started[0].read_stderr()
    assert stderr.count("database unreachable") == 1, stderr
    assert stderr.count("database reachable again") == 1, stderr
    assert "Traceback" not in stderr, stderr


def test_a_database_that_cannot_be_opened_is_a_503_on_sqlite_too(make_app, tmp_path, service_log):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing/dir/x.db", **OUTAGE_SETTINGS)
    client = app.test_client()
    for _ in range(3):
        assert_unavailable(client.post("/api/v1/auth/send-otp", json=PHONE))
    errors, _ = outage_lines(service_log)
    assert len(errors) == 1, errors


def test_a_statement_refused_on_a_live_connection_is_a_503_but_no_outage(
    pg_proxy, make_app, direct_engine, service_log
):
    # lock_timeout: a logout waiting on a row another transaction holds fails (55P03) on a fine connection.
    url = pg_proxy.route(os.environ["TEST_DATABASE_URL"])
    options = {"connect_args": {"options": "-c lock_timeout=300"}, "pool_pre_ping": False}
    app = make_app(
        fresh=True, SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_ENGINE_OPTIONS=options, **OUTAGE_SETTINGS
    )
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
    service_log.clear()
    with direct_engine.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM sessions FOR UPDATE"))
        for _ in range(2):
            assert_unavailable(
                client.post("/api/v1/auth/logout?scope=local", headers=bearer(login["accessToken"]))
            )
        holder.rollback()
    errors, _ = outage_lines(service_log)
    assert len(errors) == 2 and all(line.startswith("database error, answering 503") for line in errors), (
        errors
    )
    # It did not open an outage: the next real one is logged.
    pg_proxy.cut()
    assert_unavailable(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])))
    errors, _ = outage_lines(service_log)
    assert len(errors) == 3 and errors[2].startswith("database unreachable"), errors
    pg_proxy.restore()
    assert_envelope(client.post("/api/v1/auth/logout?scope=local", headers=bearer(login["accessToken"])), 200)


def test_a_connection_that_dies_before_the_request_ends_is_no_error(app, auth, pg_proxy, service_log):
    # A request answered, then the database went away before its teardown rolled its transaction back:
    # raised there, the rollback's error reached gunicorn as an HTML 500 (seen in the soak).
    login = auth.login()
    with app.app_context():  # a context of its own, as every request has: its end runs the teardown
        db.session.execute(sa.text("SELECT 1"))  # the request's transaction is open on a pooled connection
        pg_proxy.cut()
    # Popping the context ran the teardown: no exception, one line that says what happened.
    assert "a request's connection died as it ended: OperationalError" in service_log.text
    pg_proxy.restore()
    assert_envelope(app.test_client().get("/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)
