"""Live Activities of a session that ended between the token check and the write."""

import os

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import LiveActivity, LoginSession
from tests.conftest import AuthActions, assert_envelope, assert_error
from tests.parallel import at_once, call
from tests.test_live_activities import ACTIVITY, PUSH_TOKEN, put
from tests.test_tokens import REPEATED_LOGINS, REVOKED, me

REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="the session-state cache needs TEST_REDIS_URL")


def cached_login(make_app):
    """An app on Redis, a login, and its session's state cached as active (GET /me)."""
    app = make_app(fresh=True, REDIS_URL=REDIS_URL)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        cached = me(client, login["accessToken"])
        assert_envelope(cached, 200, data=cached.get_json()["data"])
    return app, client, login


@needs_redis
@pytest.mark.parametrize(
    "end",
    [
        # Ended in the database, not yet in this worker's Redis (a logout whose announcement waits in the
        # outbox, a partition): the token passes the cached check.
        sa.update(LoginSession).values(revoked_at=sa.func.now(), revoked_reason="logout"),
        # Then `flask purge` deleted the ended session's row.
        sa.delete(LoginSession),
    ],
    ids=["revoked", "purged"],
)
def test_an_activity_is_never_stored_for_a_session_that_has_ended(make_app, end):
    """The write checks the session in the database: 401 and no row, never a push target nor a 500."""
    app, client, login = cached_login(make_app)
    with app.app_context():
        db.session.execute(end)
        db.session.commit()
        assert_error(put(client, login), 401, REVOKED)
        assert db.session.scalars(sa.select(LiveActivity)).all() == []


needs_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"), reason="row locks need TEST_DATABASE_URL"
)
ROUNDS = 12


@pytest.fixture
def config_overrides():
    return REPEATED_LOGINS


def race_logout_and_registration(live_url, access_token):
    """A logout of the token's session and a PUT with the same token, released together; their answers."""
    headers = {"Authorization": f"Bearer {access_token}"}
    turns = iter(("logout", "register"))  # one each; next() on a tuple iterator is atomic

    def send():
        if next(turns) == "logout":
            return call("POST", f"{live_url}/api/v1/auth/logout?scope=local", headers=headers)
        body = {"pushToken": PUSH_TOKEN, "kind": "livestream"}
        return call("PUT", f"{live_url}/api/v1/live-activities/{ACTIVITY}", headers=headers, json=body)

    return at_once(2, send)


@needs_postgres
def test_a_registration_racing_its_logout_leaves_no_activity(shared_app, live_url):
    """A PUT and a logout of the same session at once: whichever wins, no activity outlives the session."""
    auth = AuthActions(shared_app.test_client())
    for _ in range(ROUNDS):
        answers = race_logout_and_registration(live_url, auth.login()["accessToken"])
        assert all(answer.status_code in (200, 401) for answer in answers), answers
        db.session.rollback()
        assert db.session.scalars(sa.select(LiveActivity)).all() == []
