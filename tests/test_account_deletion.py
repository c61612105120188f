"""Account deletion: request, cancel, log in during the grace period, erasure by ``flask purge``."""

import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LiveActivity, LoginSession, OneTimeCode, User, utcnow
from tests.conftest import PHONE, assert_envelope, assert_error, bearer
from tests.test_live_activities import put as put_activity
from tests.test_tokens import REPEATED_LOGINS, assert_dead, assert_works, claims

DELETION = "/api/v1/auth/account/deletion"
CONFLICT = "Resource already exists or cannot be changed in its current state"
GRACE = timedelta(days=30)


@pytest.fixture
def config_overrides():
    return REPEATED_LOGINS


def request_deletion(client, pair):
    return client.post(DELETION, headers=bearer(pair["accessToken"]))


def cancel_deletion(client, pair):
    return client.delete(DELETION, headers=bearer(pair["accessToken"]))


def parse(timestamp):
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def user_of(pair):
    return db.session.get(User, uuid.UUID(claims(pair["accessToken"])["sub"]), populate_existing=True)


def registered(client, auth):
    """A logged-in user with a complete profile and a verified email."""
    login = auth.login()
    email_code = assert_envelope(
        client.post("/api/v1/auth/send-otp-email", json={"email": "owner@example.com"}), 201
    )["code"]
    profile = {
        "name": "John",
        "surname": "Doe",
        "username": "johndoe123",
        "birthDate": "1995-01-15",
        "email": "owner@example.com",
        "emailCode": email_code,
        "interests": ["music"],
        "privacyPolicyAccepted": True,
        "privacyPolicyVersion": "1.2.0",
        "termsOfUseAccepted": True,
        "termsOfUseVersion": "1.1.0",
    }
    response = client.post(
        "/api/v1/auth/complete-registration", json=profile, headers=bearer(login["accessToken"])
    )
    assert_envelope(response, 200)
    return login


def test_a_request_schedules_the_erasure_and_ends_every_other_session(client, auth):
    current, other = auth.login(), auth.login()
    before = utcnow()
    user = assert_envelope(request_deletion(client, current), 200)
    assert user["accountDeletionStatus"] == "pending"
    requested = parse(user["accountDeletionRequestedAt"])
    assert before - timedelta(seconds=1) <= requested <= utcnow()
    assert parse(user["accountDeletionScheduledFor"]) - requested == GRACE
    assert (user["accountDeletionCancelledAt"], user["accountDeletionFinalizedAt"]) == (None, None)
    assert_dead(client, other)
    assert_envelope(client.get("/api/v1/auth/me", headers=bearer(current["accessToken"])), 200, data=user)
    assert_error(request_deletion(client, current), 409, CONFLICT)


def test_a_login_during_the_grace_period_works_and_shows_the_pending_status(client, auth):
    assert_envelope(request_deletion(client, auth.login()), 200)
    login = auth.login()
    assert login["user"]["accountDeletionStatus"] == "pending"
    cancelled = assert_envelope(cancel_deletion(client, login), 200)
    assert cancelled["accountDeletionStatus"] == "cancelled"
    assert parse(cancelled["accountDeletionCancelledAt"]) <= utcnow()
    assert_error(cancel_deletion(client, login), 409, CONFLICT)
    # Nothing is erased once cancelled, even after the date it was scheduled for.
    user = user_of(login)
    user.account_deletion_scheduled_for = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert "erased 0 accounts" in client.application.test_cli_runner().invoke(args=["purge"]).output
    assert_works(client, login)


def test_cancel_without_a_request_is_409(client, auth):
    assert_error(cancel_deletion(client, auth.login()), 409, CONFLICT)


def test_purge_erases_a_due_account_and_frees_its_phone_and_email(app, client, auth, runner):
    login = registered(client, auth)
    other = auth.login()
    assert_envelope(put_activity(client, login), 200)
    user_id = user_of(login).id
    assert_envelope(request_deletion(client, login), 200)
    assert "erased 0 accounts" in runner.invoke(args=["purge"]).output  # not due yet
    user_of(login).account_deletion_scheduled_for = utcnow() - timedelta(seconds=1)
    db.session.commit()

    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "erased 1 accounts" in result.output
    user = db.session.get(User, user_id, populate_existing=True)
    assert user.account_deletion_status == "finalized"
    assert user.account_deletion_finalized_at is not None
    for name in ("phone_e164", "phone_number", "email", "name", "surname", "username", "birth_date"):
        assert getattr(user, name) is None, name
    assert user.interests == [] and user.email_verified is False
    assert (
        db.session.scalar(
            sa.select(sa.func.count()).select_from(LoginSession).where(LoginSession.user_id == user_id)
        )
        == 0
    )
    assert db.session.scalars(sa.select(LiveActivity)).all() == []
    assert_dead(client, login)
    assert_dead(client, other)
    # The audit trail keeps what happened, never a personal value of that user.
    events = db.session.scalars(sa.select(AuthEvent).where(AuthEvent.user_id == user_id)).all()
    assert events and all(
        (event.destination, event.ip, event.user_agent, event.prefix, event.detail) == (None,) * 5
        for event in events
    )
    for address in ("+905321234567", "owner@example.com"):
        assert db.session.scalar(sa.select(AuthEvent).where(AuthEvent.destination == address)) is None
        assert db.session.scalar(sa.select(OneTimeCode).where(OneTimeCode.destination == address)) is None
    # The phone number and the email address make new accounts now.
    again = auth.login(PHONE)
    assert again["user"]["id"] != str(user_id)
    assert again["user"]["accountDeletionStatus"] is None
    by_email = auth.login_email("owner@example.com")
    assert by_email["user"]["id"] not in (str(user_id), again["user"]["id"])


def test_the_deletion_endpoints_need_a_token(client):
    assert_error(client.post(DELETION), 401, "Missing or invalid token")
    assert_error(client.delete(DELETION), 401, "Missing or invalid token")
