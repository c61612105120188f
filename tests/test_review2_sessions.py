"""Sessions and the Redis cache of their state, as an attacker and an operator find them (review 2)."""

import os
import time

import pytest

from tests.conftest import AuthActions, assert_envelope
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
