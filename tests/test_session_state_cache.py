"""Sessions and the Redis cache of their state: ends that move, revocations that stay, bad TTLs."""

import os
import time

import pytest

from allmine_auth import create_app
from allmine_auth.config import ConfigError
from tests.conftest import AuthActions, assert_envelope, make_config
from tests.test_tokens import me, refresh

REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="the session-state cache needs TEST_REDIS_URL")


@needs_redis
def test_a_refresh_moves_the_cached_end_of_its_session(make_app):
    """A session refreshed after its state was cached is not refused at its old end.

    The cache holds the session's end as it was when a request read it; a
    refresh moves the end in the database. An operator's short refresh life
    (here 4 s) makes the old end come while the cached entry still lives.
    """
    app = make_app(fresh=True, REDIS_URL=REDIS_URL, JWT_REFRESH_TOKEN_EXPIRES=4, SESSION_CACHE_TTL=300)
    with app.app_context():
        client = app.test_client()
        login = AuthActions(client).login()
        started = time.monotonic()
        assert me(client, login["accessToken"]).status_code == 200  # caches the end: login + 4 s
        time.sleep(2)
        renewed = refresh(client, login["refreshToken"])
        assert renewed.status_code == 200
        pair = renewed.get_json()["data"]
        time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))  # past the old end, before the new one
        response = me(client, pair["accessToken"])
        assert response.status_code == 200, response.get_json()
        assert_envelope(response, 200, data=response.get_json()["data"])


@needs_redis
def test_flask_revoke_that_redis_refused_fails_so_a_script_retries(make_app, redis_proxy):
    """``flask revoke`` promises tokens refused on every worker: if Redis refused it, the exit status says so.

    The revocation is in the database and the outbox either way; a second run, once Redis answers,
    announces it again and succeeds.
    """
    app = make_app(fresh=True, REDIS_URL=redis_proxy.route(REDIS_URL), CACHE_OUTBOX_INTERVAL=3600)
    with app.app_context():
        login = AuthActions(app.test_client()).login()
        user_id = login["user"]["id"]
        redis_proxy.cut()
        result = app.test_cli_runner().invoke(args=["revoke", "--user", user_id])
        assert result.exit_code == 1, result.output
        assert f"Ended 1 sessions of user {user_id}." in result.stdout
        assert "Redis did not answer" in result.stderr
        redis_proxy.restore()
        time.sleep(1.1)  # this process reads around Redis for a moment after a failure
        again = app.test_cli_runner().invoke(args=["revoke", "--user", user_id])
        assert (again.exit_code, again.output) == (0, f"Ended 0 sessions of user {user_id}.\n")


@pytest.mark.parametrize("name", ["SESSION_CACHE_TTL", "PROFILE_CACHE_TTL"])
@pytest.mark.parametrize("seconds", [0, -1])
def test_a_cache_life_under_a_second_is_refused_at_start(app, name, seconds):
    """Redis refuses ``SET ... EX 0``: with a cache TTL of 0 every logout would answer 503 for ever.

    (``app``: a valid app beside the refused one, whose spec the suite's conformance check reads.)
    """
    with pytest.raises(ConfigError) as raised:
        create_app(make_config(**{name: seconds}))
    assert str(raised.value) == f"{name} must be at least 1 (seconds), got {seconds}"
