"""A revocation is never undone by the cache: Redis cut, broken connections, lost announcements, CLI.

The session-state cache (Redis) answers "is this session still on?" for every
request. A logout that answered 200 must hold on every worker whatever Redis
did meanwhile. These tests cut Redis with a proxy (its data survives, as in a
network partition) and use a second app that reaches Redis directly: a worker
the cut did not touch.
"""

import os
import time
import uuid

import pytest
import redis
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import CacheOutbox, LoginSession, User, utcnow
from allmine_auth.rules import sessions
from tests.conftest import AuthActions, assert_envelope, assert_error
from tests.test_tokens import REVOKED, assert_dead, claims, logout, me, refresh, sid

UNAVAILABLE = "Service unavailable"
REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="the session-state cache needs TEST_REDIS_URL")
# A worker delivers the outbox at this interval at the latest; the tests wait at most a few of them.
OUTBOX_INTERVAL = 1


def cut_app(make_app, redis_proxy):
    """An app whose Redis is reached through ``redis_proxy`` (fresh storage)."""
    return make_app(
        fresh=True,
        REDIS_URL=redis_proxy.route(REDIS_URL),
        CACHE_OUTBOX_INTERVAL=OUTBOX_INTERVAL,
        REFRESH_TOKEN_REUSE_INTERVAL=0,
    )


def direct_app(make_app):
    """Another worker on the same database and Redis, reached directly (the cut does not touch it)."""
    return make_app(CACHE_OUTBOX_INTERVAL=OUTBOX_INTERVAL)


def redis_value(key):
    """What Redis holds under ``key``, read directly (not through the proxy)."""
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as direct:
        return direct.get(key)


def session_key(pair):
    return sessions.SESSION_CACHE_PREFIX + sid(pair)


def until(check, seconds=4 * OUTBOX_INTERVAL + 2):
    """Poll ``check()`` until it is true or ``seconds`` pass; return its last value."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@needs_redis
def test_a_logout_that_cannot_reach_redis_is_a_503_and_still_reaches_every_worker(make_app, redis_proxy):
    app = cut_app(make_app, redis_proxy)
    other = direct_app(make_app)
    client, other_client = app.test_client(), other.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        assert_envelope(me(client, login["accessToken"]), 200)  # cached: active
    with other.app_context():
        assert_envelope(me(other_client, login["accessToken"]), 200)
    assert float(redis_value(session_key(login))) > time.time()

    redis_proxy.cut()
    with app.app_context():
        response = logout(client, login["accessToken"])
        # No 200 for a revocation a worker may not see yet: the app is told to try again.
        assert_error(response, 503, UNAVAILABLE)
        assert int(response.headers["Retry-After"]) >= 1
        # The database has it, and so does every worker reading it.
        assert (
            db.session.get(LoginSession, uuid.UUID(sid(login)), populate_existing=True).revoked_at is not None
        )
        assert_error(me(client, login["accessToken"]), 401, REVOKED)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(CacheOutbox)) == 1
    # The worker the cut did not touch delivers the outbox within its interval: then it refuses too.
    with other.app_context():
        assert until(lambda: me(other_client, login["accessToken"]).status_code == 401)
        assert_dead(other_client, login)
    assert redis_value(session_key(login)) == sessions.REVOKED

    redis_proxy.restore()
    with app.app_context():
        time.sleep(1)  # the cut worker reads the database for a moment after a failure
        assert_dead(client, login)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(CacheOutbox)) == 0


@needs_redis
def test_after_a_cut_the_worker_delivers_the_outbox_before_it_trusts_redis_again(make_app, redis_proxy):
    # Every worker lost Redis (one proxy for all): the stale "active" entry is still in Redis when it
    # comes back, and no other worker has delivered the outbox yet.
    app = make_app(fresh=True, REDIS_URL=redis_proxy.route(REDIS_URL), CACHE_OUTBOX_INTERVAL=3600)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        assert_envelope(me(client, login["accessToken"]), 200)
        redis_proxy.cut()
        assert_error(logout(client, login["accessToken"]), 503, UNAVAILABLE)
        redis_proxy.restore()
        assert float(redis_value(session_key(login))) > time.time()  # stale, as the cut left it
        time.sleep(1)
        assert_dead(client, login)
        assert redis_value(session_key(login)) == sessions.REVOKED
        # The app retries the logout: its token is dead, which is what it asked for.
        assert_error(logout(client, login["accessToken"]), 401, REVOKED)


@needs_redis
def test_a_revocation_on_a_connection_an_outage_broke_still_reaches_redis(make_app, redis_proxy):
    app = make_app(fresh=True, REDIS_URL=redis_proxy.route(REDIS_URL))
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        assert_envelope(me(client, login["accessToken"]), 200)  # this thread's connection is open
        redis_proxy.cut()
        redis_proxy.restore()  # Redis is back; the thread's pooled connection was reset under it
        time.sleep(0.1)
        assert_envelope(logout(client, login["accessToken"]), 200, data={"revokedSessions": 1})
        assert redis_value(session_key(login)) == sessions.REVOKED
        assert_dead(client, login)


@needs_redis
def test_reuse_detection_during_a_cut_ends_the_session_on_every_worker(make_app, redis_proxy):
    app = cut_app(make_app, redis_proxy)
    other = direct_app(make_app)
    client, other_client = app.test_client(), other.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        rotated = assert_envelope(refresh(client, login["refreshToken"]), 200)
    with other.app_context():
        assert_envelope(me(other_client, rotated["accessToken"]), 200)  # cached: active
    redis_proxy.cut()
    with app.app_context():
        time.sleep(1.1)  # past the reuse interval (0 s): the old refresh token is now a theft
        assert_error(refresh(client, login["refreshToken"]), 401, REVOKED)
    with other.app_context():
        assert until(lambda: me(other_client, rotated["accessToken"]).status_code == 401)
        assert_dead(other_client, rotated)
    redis_proxy.restore()


@needs_redis
def test_a_later_logout_announces_again_what_an_earlier_one_could_not(app, client, auth):
    first, second = auth.login(), auth.login()
    assert_envelope(me(client, first["accessToken"]), 200)
    # The first session was ended (say by reuse detection) but Redis never heard: it says "active".
    db.session.execute(
        sa.update(LoginSession).where(LoginSession.id == uuid.UUID(sid(first))).values(revoked_at=utcnow())
    )
    db.session.commit()
    assert float(redis_value(session_key(first))) > time.time()
    assert_envelope(logout(client, second["accessToken"]), 200, data={"revokedSessions": 1})
    assert redis_value(session_key(first)) == sessions.REVOKED
    assert_dead(client, first)
    assert_dead(client, second)


@pytest.mark.parametrize("reference", ["id", "phone", "email"])
def test_flask_revoke_ends_every_session_of_a_user_at_once(app, client, auth, runner, reference):
    pairs = [auth.login(), auth.login()]
    for pair in pairs:
        assert_envelope(me(client, pair["accessToken"]), 200)  # cached: active
    user = db.session.get(User, uuid.UUID(claims(pairs[0]["accessToken"])["sub"]))
    user.email = "owner@example.com"
    db.session.commit()
    argument = {"id": str(user.id), "phone": user.phone_e164, "email": "Owner@Example.com"}[reference]
    result = runner.invoke(args=["revoke", "--user", argument])
    assert result.exit_code == 0, result.output
    assert result.output == f"Ended 2 sessions of user {user.id}.\n"
    for pair in pairs:
        assert_dead(client, pair)


def test_flask_revoke_names_an_unknown_user(runner):
    result = runner.invoke(args=["revoke", "--user", "+905320000000"])
    assert result.exit_code == 1
    assert "no user '+905320000000'" in result.output


def test_purged_sessions_stay_dead(app, client, auth, runner):
    login = auth.login()
    assert_envelope(me(client, login["accessToken"]), 200)
    assert_envelope(logout(client, login["accessToken"]), 200, data={"revokedSessions": 1})
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert db.session.get(LoginSession, uuid.UUID(sid(login)), populate_existing=True) is None
    assert_dead(client, login)
