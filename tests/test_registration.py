"""Registration completion: the profile rules, the username rules, the `reg` claim, and the demo seed."""

from datetime import date, timedelta

import jwt
import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User
from tests.conftest import assert_envelope, assert_error, bearer
from tests.timeshift import travel

URL = "/api/v1/auth/complete-registration"
CONFLICT = "Resource already exists or cannot be changed in its current state"
PROFILE = {
    "name": "Ada",
    "surname": "Yılmaz",
    "username": "ada.yilmaz",
    "birthDate": "1995-04-12",
    "gender": "female",
    "interests": ["music", "travel"],
    "privacyPolicyAccepted": True,
    "privacyPolicyVersion": "1.2.0",
    "termsOfUseAccepted": True,
    "termsOfUseVersion": "1.1.0",
    "consentFormAccepted": True,
    "consentFormVersion": "1.0.0",
}


@pytest.fixture
def login(auth):
    return auth.login()


def complete(client, login, **changes):
    return client.post(URL, json={**PROFILE, **changes}, headers=bearer(login["accessToken"]))


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def test_completing_registration_returns_the_whole_user(client, login):
    user = assert_envelope(complete(client, login), 200)
    assert user["id"] == login["user"]["id"]
    assert user["isRegistrationComplete"] is True
    assert (user["name"], user["surname"], user["username"]) == ("Ada", "Yılmaz", "ada.yilmaz")
    assert user["birthDate"] == "1995-04-12T00:00:00.000Z"
    assert (user["gender"], user["interests"]) == ("female", ["music", "travel"])
    assert (user["privacyPolicyAccepted"], user["privacyPolicyVersion"]) == (True, "1.2.0")
    assert (user["termsOfUseAccepted"], user["termsOfUseVersion"]) == (True, "1.1.0")
    assert (user["consentFormAccepted"], user["consentFormVersion"]) == (True, "1.0.0")
    assert user["lastUsernameChangeDate"] is None
    assert set(user) == set(login["user"])
    me = assert_envelope(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)
    assert me == user


def test_it_needs_an_access_token(client):
    assert_error(client.post(URL, json=PROFILE), 401, "Missing or invalid token")


@pytest.mark.parametrize(
    ("changes", "lines"),
    [
        ({"privacyPolicyAccepted": False}, ["privacyPolicyAccepted: Must be accepted."]),
        ({"termsOfUseAccepted": False}, ["termsOfUseAccepted: Must be accepted."]),
        ({"name": ""}, ["name: Length must be between 1 and 100."]),
        ({"username": "ab"}, ["username: 3 to 30 letters, digits, '_' or '.'."]),
        ({"username": "a" * 31}, ["username: 3 to 30 letters, digits, '_' or '.'."]),
        ({"username": "ada yilmaz"}, ["username: 3 to 30 letters, digits, '_' or '.'."]),
        ({"username": "ada-yilmaz"}, ["username: 3 to 30 letters, digits, '_' or '.'."]),
        ({"gender": "robot"}, ["gender: Must be one of: male, female, other, prefer_not_to_say."]),
        ({"birthDate": "not a date"}, ["birthDate: Not a valid date."]),
        (
            {"birthDate": (date.today() + timedelta(days=2)).isoformat()},
            ["birthDate: Must not be in the future."],
        ),
        (
            {"birthDate": (date.today() - timedelta(days=365 * 17)).isoformat()},
            ["birthDate: Must be 18 or older."],
        ),
        ({"consentFormVersion": None}, ["consentFormVersion: Required when consentFormAccepted is true."]),
        ({"emailCode": "1234"}, ["emailCode: Only with email."]),
        ({"email": "nope"}, ["email: Not a valid email address."]),
        ({"interests": ["x"] * 21}, ["interests: Longer than maximum length 20."]),
        ({"role": "admin"}, ["role: Unknown field."]),
    ],
)
def test_bad_profiles_are_a_400_and_change_nothing(client, login, changes, lines):
    assert_error(complete(client, login, **changes), 400, "Validation failed", *lines)
    user = db.session.scalar(sa.select(User))
    assert (user.is_registration_complete, user.username, user.name) == (False, None, None)


def test_missing_acceptances_are_a_400(client, login):
    profile = {key: value for key, value in PROFILE.items() if not key.startswith(("privacy", "terms"))}
    response = client.post(URL, json=profile, headers=bearer(login["accessToken"]))
    assert_error(
        response,
        400,
        "Validation failed",
        "privacyPolicyAccepted: Missing data for required field.",
        "privacyPolicyVersion: Missing data for required field.",
        "termsOfUseAccepted: Missing data for required field.",
        "termsOfUseVersion: Missing data for required field.",
    )


def test_an_adult_on_their_eighteenth_birthday_may_register(client, login):
    today = date.today()
    born = (
        today.replace(year=today.year - 18)
        if (today.month, today.day) != (2, 29)
        else date(today.year - 18, 3, 1)
    )
    assert_envelope(complete(client, login, birthDate=born.isoformat()), 200)


def test_a_timestamp_birth_date_counts_by_its_day(client, login):
    user = assert_envelope(complete(client, login, birthDate="1995-04-12T10:30:00.000Z"), 200)
    assert user["birthDate"] == "1995-04-12T00:00:00.000Z"


def test_a_taken_username_is_a_409_whatever_its_case(client, auth, login, unique_phone):
    assert_envelope(complete(client, login), 200)
    other = auth.login(unique_phone())
    assert_error(complete(client, other, username="ADA.Yilmaz"), 409, CONFLICT)
    assert db.session.scalar(sa.select(sa.func.count()).where(User.is_registration_complete)) == 1


def test_calling_again_updates_the_profile(client, login):
    assert_envelope(complete(client, login), 200)
    user = assert_envelope(complete(client, login, name="Adalet", interests=["art"]), 200)
    assert (user["name"], user["interests"], user["lastUsernameChangeDate"]) == ("Adalet", ["art"], None)


def test_the_username_changes_once_in_thirty_days(client, login):
    assert_envelope(complete(client, login), 200)
    changed = assert_envelope(complete(client, login, username="ada_y"), 200)
    assert changed["username"] == "ada_y" and changed["lastUsernameChangeDate"] is not None
    assert_error(
        complete(client, login, username="ada_z"), 409, CONFLICT, "username: Can be changed once in 30 days."
    )
    assert db.session.scalar(sa.select(User.username)) == "ada_y"
    user = db.session.scalar(sa.select(User))
    user.last_username_change_date -= timedelta(days=30, seconds=1)
    db.session.commit()
    assert assert_envelope(complete(client, login, username="ada_z"), 200)["username"] == "ada_z"


def test_the_access_token_says_whether_registration_is_complete(client, login):
    assert claims(login["accessToken"])["reg"] is False
    assert_envelope(complete(client, login), 200)
    travel(1)
    pair = assert_envelope(
        client.post("/api/v1/auth/refresh", json={"refreshToken": login["refreshToken"]}), 200
    )
    assert claims(pair["accessToken"])["reg"] is True
    assert "reg" not in claims(pair["refreshToken"])


def test_seed_creates_the_demo_user_once(runner):
    first = runner.invoke(args=["seed"])
    assert first.exit_code == 0, first.output
    assert "Demo user johndoe123 (+905372505890) is ready." in first.output
    assert runner.invoke(args=["seed"]).exit_code == 0
    users = db.session.scalars(sa.select(User)).all()
    assert [(u.username, u.phone_e164, u.is_registration_complete) for u in users] == [
        ("johndoe123", "+905372505890", True)
    ]


def test_the_demo_user_logs_in_with_the_fixed_code(make_app):
    app = make_app(fresh=True, OTP_TEST_DESTINATIONS={"+905372505890": ("1234", None)})
    with app.app_context():
        runner = app.test_cli_runner()
        output = runner.invoke(args=["seed"]).output
        assert '"code": "1234"' in output
        client = app.test_client()
        phone = {"countryCode": "90", "phoneNumber": "5372505890"}
        assert_envelope(client.post("/api/v1/auth/send-otp", json=phone), 201)
        data = assert_envelope(client.post("/api/v1/auth/verify-otp", json={**phone, "code": "1234"}), 200)
        assert data["user"]["username"] == "johndoe123"
        assert data["isRegistrationComplete"] is True
        assert data["user"]["followersCount"] == 128


def test_seed_bulk_inserts_users_that_can_log_in(runner, client):
    result = runner.invoke(args=["seed", "--users", "25", "--start", "100"])
    assert result.exit_code == 0, result.output
    assert "Inserted 25 users." in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 26
    user = db.session.scalar(sa.select(User).where(User.phone_e164 == "+905320000110"))
    assert (user.roles, user.interests, user.is_registration_complete) == (["user"], [], False)
    phone = {"countryCode": "90", "phoneNumber": "5320000110"}
    code = client.post("/api/v1/auth/send-otp", json=phone).get_json()["data"]["code"]
    data = assert_envelope(client.post("/api/v1/auth/verify-otp", json={**phone, "code": code}), 200)
    assert data["user"]["id"] == str(user.id)
    assert runner.invoke(args=["seed", "--users", "-1"]).exit_code == 2
