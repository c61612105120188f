"""The service over real sockets: parallel requests to a threaded server, and two gunicorn servers.

The Flask test client runs one request at a time. Here requests race each
other the way a retrying app or several devices make them, and the database
rules must hold: of N verifies with the right code one wins, N refreshes of
one token rotate it once, and a logout through one server (one worker) is
seen at once by another.
"""

import os
import uuid

import jwt
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LoginSession, User
from allmine_auth.rules.audit import Event
from tests.conftest import PHONE, assert_envelope, assert_error, bearer
from tests.parallel import at_once, call
from tests.servers import gunicorn_server

PARALLEL_VERIFIES = 10
PARALLEL_REFRESHES = 8


def log_in(base_url, phone=PHONE):
    """Send a code and verify it through the server at ``base_url``; return the verify data."""
    code = assert_envelope(call("POST", f"{base_url}/api/v1/auth/send-otp", json=phone), 201)["code"]
    return assert_envelope(
        call("POST", f"{base_url}/api/v1/auth/verify-otp", json={**phone, "code": code}), 200
    )


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def count(model, *where):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_of_parallel_verifies_with_the_right_code_exactly_one_logs_in(shared_app, live_url):
    code = assert_envelope(call("POST", f"{live_url}/api/v1/auth/send-otp", json=PHONE), 201)["code"]
    answers = at_once(
        PARALLEL_VERIFIES,
        lambda: call("POST", f"{live_url}/api/v1/auth/verify-otp", json={**PHONE, "code": code}),
    )
    winners = [answer for answer in answers if answer.status_code == 200]
    assert len(winners) == 1, [answer.body for answer in answers]
    for answer in answers:
        if answer is not winners[0]:
            assert_error(answer, 401, "Invalid or expired code")
    login = assert_envelope(winners[0], 200)
    assert (count(User), count(LoginSession)) == (1, 1)
    assert db.session.scalar(sa.select(LoginSession.id)) == uuid.UUID(claims(login["accessToken"])["sid"])


def test_parallel_refreshes_of_one_token_rotate_it_once_and_all_get_the_new_generation(shared_app, live_url):
    login = log_in(live_url)
    presented = claims(login["refreshToken"])["jti"]
    answers = at_once(
        PARALLEL_REFRESHES,
        lambda: call("POST", f"{live_url}/api/v1/auth/refresh", json={"refreshToken": login["refreshToken"]}),
    )
    # Inside the reuse interval a concurrent retry is not a theft: every one of them gets a pair.
    pairs = [assert_envelope(answer, 200) for answer in answers]
    session = db.session.get(
        LoginSession, uuid.UUID(claims(login["accessToken"])["sid"]), populate_existing=True
    )
    assert (session.revoked_at, session.previous_refresh_jti) == (None, presented)
    assert {claims(pair["refreshToken"])["jti"] for pair in pairs} == {session.refresh_jti}
    assert count(AuthEvent, AuthEvent.kind == str(Event.REFRESH)) == 1
    db.session.rollback()
    me = call("GET", f"{live_url}/api/v1/auth/me", headers=bearer(pairs[-1]["accessToken"]))
    assert_envelope(me, 200, data=login["user"])


def test_a_logout_through_one_server_is_seen_by_another(shared_app):
    env = {"TEST_DATABASE_URL": shared_app.config["SQLALCHEMY_DATABASE_URI"]}
    if os.environ.get("TEST_REDIS_URL"):
        env["TEST_REDIS_URL"] = os.environ["TEST_REDIS_URL"]
    with gunicorn_server(env, workers=1) as server_a, gunicorn_server(env, workers=1) as server_b:
        login = log_in(server_a)
        # Server B checks the session (and, with Redis, caches that it is active).
        assert_envelope(call("GET", f"{server_b}/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)
        logout = call("POST", f"{server_a}/api/v1/auth/logout", headers=bearer(login["accessToken"]))
        assert_envelope(logout, 200, data={"revokedSessions": 1})
        me = call("GET", f"{server_b}/api/v1/auth/me", headers=bearer(login["accessToken"]))
        assert_error(me, 401, "Token has been revoked")
        refreshed = call(
            "POST", f"{server_b}/api/v1/auth/refresh", json={"refreshToken": login["refreshToken"]}
        )
        assert_error(refreshed, 401, "Token has been revoked")
