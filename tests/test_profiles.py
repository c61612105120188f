"""GET /me's profile cache in Redis: served from Redis, and never staler than the last commit."""

import os
import uuid

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User
from allmine_auth.rules import profiles
from allmine_auth.web.routes import auth as auth_routes
from tests.conftest import assert_envelope, assert_error, bearer
from tests.test_email_login import PROFILE
from tests.timeshift import travel

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_REDIS_URL"), reason="the profile cache needs TEST_REDIS_URL"
)


def me(client, login):
    return assert_envelope(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)


def rename_behind_the_apps_back(user_id, name):
    """A change that no app code made (no ORM flush): only the cache can explain an old answer."""
    with db.engine.begin() as connection:
        connection.execute(sa.update(User).where(User.id == uuid.UUID(user_id)).values(name=name))


def test_me_is_served_from_redis_once_read(client, auth, app):
    login = auth.login()
    first = me(client, login)
    cached = app.extensions["allmine_redis"].get(profiles.PROFILE_CACHE_PREFIX + first["id"])
    assert cached not in (None, profiles.STALE)
    rename_behind_the_apps_back(first["id"], "Cached")
    assert me(client, login) == first


def test_a_warm_me_is_one_redis_round_trip(client, auth, app, monkeypatch):
    login = auth.login()
    first = me(client, login)
    real = app.extensions["allmine_redis"]
    calls = []

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(app.extensions, "allmine_redis", Counting())
    assert me(client, login) == first
    # The session state and the profile, in one MGET.
    assert calls == ["mget"]


def test_a_profile_change_through_the_app_shows_at_once(client, auth):
    login = auth.login()
    me(client, login)
    updated = assert_envelope(
        client.post("/api/v1/auth/complete-registration", json=PROFILE, headers=bearer(login["accessToken"])),
        200,
    )
    assert me(client, login) == updated
    assert updated["username"] == "ada.yilmaz"


def test_a_new_login_shows_its_last_login(client, auth):
    first = auth.login()
    before = me(client, first)["lastLogin"]
    travel(61)
    second = auth.login()
    assert me(client, first)["lastLogin"] == second["user"]["lastLogin"] != before


def test_a_fill_racing_a_change_does_not_put_the_old_profile_back(client, auth, app, monkeypatch):
    login = auth.login()
    user_id = login["user"]["id"]
    real = auth_routes.USER_SCHEMA.dump

    def change_commits_meanwhile(user):
        # This reader has the old row; the change commits (and marks the entry stale) before it fills.
        payload = real(user)
        user_row = db.session.get(User, uuid.UUID(user_id))
        user_row.bio = "changed"
        db.session.commit()
        return payload

    monkeypatch.setattr(auth_routes.USER_SCHEMA, "dump", change_commits_meanwhile)
    assert me(client, login)["bio"] is None
    monkeypatch.setattr(auth_routes.USER_SCHEMA, "dump", real)
    assert me(client, login)["bio"] == "changed"
    assert app.extensions["allmine_redis"].get(profiles.PROFILE_CACHE_PREFIX + user_id) == profiles.STALE


def test_a_deleted_user_is_401(client, auth):
    login = auth.login()
    with db.engine.begin() as connection:
        connection.execute(sa.delete(User).where(User.id == uuid.UUID(login["user"]["id"])))
    response = client.get("/api/v1/auth/me", headers=bearer(login["accessToken"]))
    assert_error(response, 401, "Token has been revoked")  # its sessions went with it
