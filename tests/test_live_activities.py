"""Live Activities: registered by a login session, listed, deleted, and gone when the session ends."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import LiveActivity
from tests.conftest import AuthActions, assert_envelope, assert_error, bearer
from tests.test_tokens import REPEATED_LOGINS, claims, logout, refresh
from tests.timeshift import travel

PUSH_TOKEN = "80f2c4a1d3e5b7a9c1e3f5a7b9d1e3f580f2c4a1d3e5b7a9c1e3f5a7b9d1e3f5"
ACTIVITY = "5B1D2C3A-9F8E-4D7C-8B6A-1E2F3A4B5C6D"
OTHER_PHONE = {"countryCode": "90", "phoneNumber": "5329876543"}
NOT_FOUND = "Resource not found"
RECORD_KEYS = {
    "activityId",
    "sessionId",
    "pushToken",
    "kind",
    "referenceId",
    "expiresAt",
    "createdAt",
    "updatedAt",
}


@pytest.fixture
def config_overrides():
    return REPEATED_LOGINS


def put(client, pair, activity_id=ACTIVITY, **body):
    payload = {"pushToken": PUSH_TOKEN, "kind": "livestream", **body}
    return client.put(
        f"/api/v1/live-activities/{activity_id}", json=payload, headers=bearer(pair["accessToken"])
    )


def listed(client, pair):
    return assert_envelope(client.get("/api/v1/live-activities", headers=bearer(pair["accessToken"])), 200)


def delete(client, pair, activity_id=ACTIVITY):
    return client.delete(f"/api/v1/live-activities/{activity_id}", headers=bearer(pair["accessToken"]))


def parse(timestamp):
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def rows():
    return db.session.scalars(sa.select(LiveActivity)).all()


def test_register_list_update_and_delete(client, auth):
    login = auth.login()
    record = assert_envelope(put(client, login, referenceId="stream-8842"), 200)
    assert set(record) == RECORD_KEYS
    assert record["activityId"] == ACTIVITY
    assert record["sessionId"] == claims(login["accessToken"])["sid"]
    assert (record["pushToken"], record["kind"], record["referenceId"]) == (
        PUSH_TOKEN,
        "livestream",
        "stream-8842",
    )
    # Twelve hours by default: ActivityKit's 8 hours plus the 4 the system may keep it on screen.
    life = parse(record["expiresAt"]) - parse(record["createdAt"])
    assert timedelta(hours=12) - timedelta(seconds=2) <= life <= timedelta(hours=12)
    assert listed(client, login) == [record]

    updated = assert_envelope(put(client, login, kind="call", pushToken=PUSH_TOKEN.upper()), 200)
    assert (updated["kind"], updated["pushToken"], updated["referenceId"]) == ("call", PUSH_TOKEN, None)
    assert updated["createdAt"] == record["createdAt"]
    assert len(rows()) == 1

    assert_envelope(delete(client, login), 200, data={"activityId": ACTIVITY, "deleted": True})
    assert listed(client, login) == []
    assert_error(delete(client, login), 404, NOT_FOUND)


def test_another_users_activity_is_not_found_and_untouched(client, auth):
    owner, stranger = auth.login(), auth.login(OTHER_PHONE)
    assert_envelope(put(client, owner), 200)
    assert_error(delete(client, stranger), 404, NOT_FOUND)
    assert listed(client, stranger) == []
    assert [row.activity_id for row in rows()] == [ACTIVITY]
    # The same id registered by another user is that user's own activity.
    assert_envelope(put(client, stranger), 200)
    assert len(rows()) == 2


@pytest.mark.parametrize(
    "activity_id, body, error",
    [
        ("a b", {}, "activityId: 1 to 64 letters, digits, '.', '_', ':' or '-'."),
        ("x" * 65, {}, "activityId: 1 to 64 letters, digits, '.', '_', ':' or '-'."),
        (ACTIVITY, {"pushToken": "xyz"}, "pushToken: An APNs push token: 32 to 512 hex digits."),
        (ACTIVITY, {"pushToken": PUSH_TOKEN[:-1]}, "pushToken: An APNs push token: 32 to 512 hex digits."),
        (ACTIVITY, {"pushToken": PUSH_TOKEN + "\n"}, "pushToken: Must not contain control characters."),
        (
            ACTIVITY,
            {"kind": "Live Stream"},
            "kind: Lower-case letters, digits or '_', starting with a letter.",
        ),
        (ACTIVITY, {"referenceId": "a\x00b"}, "referenceId: Must not contain control characters."),
        (ACTIVITY, {"expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt: Must be in the future."),
        (ACTIVITY, {"expiresAt": "2099-01-01T00:00:00Z"}, "expiresAt: At most 12 hours from now."),
        (ACTIVITY, {"expiresAt": "tomorrow"}, "expiresAt: Not a valid datetime."),
        (ACTIVITY, {"extra": 1}, "extra: Unknown field."),
    ],
)
def test_bad_registrations_are_400_and_store_nothing(client, auth, activity_id, body, error):
    login = auth.login()
    assert_error(put(client, login, activity_id, **body), 400, "Validation failed", error)
    assert rows() == []


def test_an_expiry_within_twelve_hours_is_kept(client, auth):
    login = auth.login()
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    record = assert_envelope(put(client, login, expiresAt=until.isoformat()), 200)
    assert parse(record["expiresAt"]) == until


def test_ending_a_session_removes_its_activities_only(client, auth):
    first, second = auth.login(), auth.login()
    assert_envelope(put(client, first, "one"), 200)
    assert_envelope(put(client, second, "two"), 200)
    assert_envelope(logout(client, first["accessToken"], "local"), 200, data={"revokedSessions": 1})
    assert [row.activity_id for row in rows()] == ["two"]
    assert_envelope(
        client.delete(
            f"/api/v1/auth/sessions/{claims(second['accessToken'])['sid']}",
            headers=bearer(second["accessToken"]),
        ),
        200,
        data={"revokedSessions": 1},
    )
    assert rows() == []


def test_a_session_ended_by_reuse_detection_loses_its_activities(make_app):
    app = make_app(fresh=True, **REPEATED_LOGINS, REFRESH_TOKEN_REUSE_INTERVAL=0)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        rotated = assert_envelope(refresh(client, login["refreshToken"]), 200)
        assert_envelope(put(client, rotated), 200)
        travel(1)
        assert_error(refresh(client, login["refreshToken"]), 401, "Token has been revoked")
        assert rows() == []


def test_purge_removes_expired_activities_and_the_cli_lists_live_ones(client, auth, runner):
    login = auth.login()
    user_id = claims(login["accessToken"])["sub"]
    assert_envelope(put(client, login, "old"), 200)
    db.session.execute(
        sa.update(LiveActivity)
        .where(LiveActivity.activity_id == "old")
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.session.commit()
    assert_envelope(put(client, login, "new", referenceId="call-7", kind="call"), 200)
    result = runner.invoke(args=["live-activities", "--user", user_id])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("new  call ") and f"push_token={PUSH_TOKEN}" in lines[0]
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "1 expired Live Activities" in result.output
    assert [row.activity_id for row in rows()] == ["new"]
    db.session.execute(sa.delete(LiveActivity))
    db.session.commit()
    assert runner.invoke(args=["live-activities", "--user", user_id]).output == "no live activities\n"


def test_the_spec_documents_the_seed_summary_and_warning(client):
    spec = client.get("/openapi.json").get_json()
    item = spec["paths"]["/api/v1/live-activities/{activity_id}"]
    assert item["delete"]["summary"] == "Delete runtime Live Activity session"
    assert item["delete"]["description"].startswith("**Production uyarisi:**")
    assert "dismiss edilen veya manuel kapatilan Live Activity" in item["delete"]["description"]
    assert item["put"]["description"].startswith("**Production uyarisi:**")
    assert "/api/v1/live-activities" in spec["paths"]


def test_without_a_token_the_endpoints_are_401(client):
    for response in (
        client.get("/api/v1/live-activities"),
        client.put(f"/api/v1/live-activities/{ACTIVITY}", json={}),
        client.delete(f"/api/v1/live-activities/{uuid.uuid4()}"),
    ):
        assert_error(response, 401, "Missing or invalid token")
