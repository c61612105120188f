"""Phone login: send-otp and verify-otp, and every one-time-code rule of API.md."""

import hashlib
import hmac
import logging
import re
import uuid
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, OneTimeCode, User
from allmine_auth.notify import DeliveryError, SmsSender
from allmine_auth.rules.codes import code_hmac
from allmine_auth.rules.destinations import phone_destination
from allmine_auth.web.schemas.auth import LoginSchema, UserSchema, user_data
from tests.conftest import E164, PHONE, TIMESTAMP, assert_envelope, assert_error
from tests.fakes import FakeGateway
from tests.timeshift import travel

INVALID = "Invalid or expired code"
DESTINATION = phone_destination("90", "5321234567")


def stored_codes():
    return db.session.scalars(sa.select(OneTimeCode)).all()


def events(kind):
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuthEvent).where(AuthEvent.kind == kind))


def test_send_otp_answers_with_the_normalised_number_and_the_echoed_code(client, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    data = assert_envelope(client.post("/api/v1/auth/send-otp", json=PHONE), 201)
    assert data == {"countryCode": "+90", "phoneNumber": "5321234567", "code": data["code"]}
    assert re.fullmatch(r"\d{4}", data["code"])
    assert f"SMS to +90532*****67: Allmine doğrulama kodunuz: {data['code']}." in caplog.text
    assert E164 not in caplog.text


@pytest.mark.parametrize(
    "phone",
    [
        {"countryCode": "+90", "phoneNumber": "5321234567"},
        {"countryCode": "90", "phoneNumber": "0532 123 45 67"},
        {"countryCode": "+90", "phoneNumber": "(532) 123-4567"},
        {"countryCode": "90", "phoneNumber": "+90 532 123 45 67"},
    ],
)
def test_every_way_of_writing_a_number_is_one_destination(client, phone):
    data = assert_envelope(client.post("/api/v1/auth/send-otp", json=phone), 201)
    assert (data["countryCode"], data["phoneNumber"]) == ("+90", "5321234567")
    assert [code.destination for code in stored_codes()] == [E164]


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        ({"countryCode": "90"}, ["phoneNumber: Missing data for required field."]),
        ({"phoneNumber": "5321234567"}, ["countryCode: Missing data for required field."]),
        ({"countryCode": "90", "phoneNumber": "12345"}, ["phoneNumber: Not a valid phone number."]),
        ({"countryCode": "90", "phoneNumber": "5321234567890"}, ["phoneNumber: Not a valid phone number."]),
        ({"countryCode": "90", "phoneNumber": "abcdefghij"}, ["phoneNumber: Not a valid phone number."]),
        (
            {"countryCode": "999", "phoneNumber": "5321234567"},
            ["countryCode: Not a valid country calling code."],
        ),
        (
            {"countryCode": "x9", "phoneNumber": "5321234567"},
            ["countryCode: Not a valid country calling code."],
        ),
        (
            {"countryCode": "1", "phoneNumber": "+90 532 123 45 67"},
            ["phoneNumber: Not a valid phone number."],
        ),
        ({"countryCode": 90, "phoneNumber": "5321234567"}, ["countryCode: Not a valid string."]),
        ({"countryCode": "90", "phoneNumber": None}, ["phoneNumber: Field may not be null."]),
        ({**PHONE, "extra": 1}, ["extra: Unknown field."]),
    ],
)
def test_bad_phone_input_is_a_400_and_changes_nothing(client, body, lines):
    assert_error(client.post("/api/v1/auth/send-otp", json=body), 400, "Validation failed", *lines)
    assert stored_codes() == []
    assert events("code_sent") == 0


def test_the_code_is_stored_only_as_an_hmac(client):
    code = client.post("/api/v1/auth/send-otp", json=PHONE).get_json()["data"]["code"]
    (row,) = stored_codes()
    # A keyed digest: not the code, and not an unkeyed hash of it (a 4-digit code's plain SHA-256 is
    # looked up in 10,000 tries). (``code not in code_hash`` failed once in ~1,000 runs: hex has digits.)
    assert row.code_hash != code
    assert row.code_hash != hashlib.sha256(code.encode()).hexdigest()
    assert hmac.compare_digest(row.code_hash, code_hmac(DESTINATION, code))
    assert row.attempts == 0
    assert (row.expires_at - row.created_at).total_seconds() == 180


def test_no_code_in_the_answer_without_echo(make_app):
    app = make_app(fresh=True, OTP_ECHO=False)
    with app.app_context():
        data = assert_envelope(app.test_client().post("/api/v1/auth/send-otp", json=PHONE), 201)
    assert data == {"countryCode": "+90", "phoneNumber": "5321234567"}


def test_first_verify_creates_the_user_with_its_signup_fields(client, auth):
    code = auth.send().get_json()["data"]["code"]
    response = auth.verify(code, signupSource="instagram_ads", signupCampaign="spring_launch_2026")
    data = assert_envelope(response, 200)
    assert set(data) == {
        "accessToken",
        "refreshToken",
        "expiresIn",
        "refreshExpiresIn",
        "user",
        "isRegistrationComplete",
    }
    assert (data["expiresIn"], data["refreshExpiresIn"], data["isRegistrationComplete"]) == (
        3600,
        2592000,
        False,
    )
    user = data["user"]
    assert user["countryCode"] == "90" and user["phoneNumber"] == "5321234567"
    assert (user["signupSource"], user["signupCampaign"]) == ("instagram_ads", "spring_launch_2026")
    assert user["roles"] == ["user"] and user["interests"] == []
    assert user["followersCount"] == user["followingCount"] == user["creditBalance"] == 0
    assert user["isRegistrationComplete"] is False and user["username"] is None and user["email"] is None
    assert TIMESTAMP.match(user["lastLogin"])
    assert re.fullmatch(r"[0-9a-f-]{36}", user["id"])
    assert db.session.scalar(sa.select(User.phone_e164)) == E164


def test_the_user_object_has_every_field_of_the_seed(auth):
    seed_fields = {
        "name", "surname", "username", "countryCode", "phoneNumber", "signupSource", "signupCampaign",
        "profilePhoto", "availabilityStatus", "birthDate", "gender", "interests", "expertise", "email", "bio",
        "instagram", "x", "tiktok", "snapchat", "facebook", "privacyPolicyAccepted", "privacyPolicyVersion",
        "termsOfUseAccepted", "termsOfUseVersion", "consentFormAccepted", "consentFormVersion",
        "isRegistrationComplete", "roles", "followersCount", "followingCount", "minutePriceInLiveStream",
        "creditBalance", "lastLogin", "timezone", "lastUsernameChangeDate", "accountDeletionStatus",
        "accountDeletionRequestedAt", "accountDeletionScheduledFor", "accountDeletionCancelledAt",
        "accountDeletionFinalizedAt",
    }  # fmt: skip
    assert set(auth.login()["user"]) == seed_fields | {"id", "isEmailVerified"}


def test_a_returning_user_gets_the_same_account_and_keeps_the_first_signup_fields(client, auth):
    first = auth.login(signupSource="instagram_ads", signupCampaign="spring")["user"]
    travel(3600)
    second = auth.login(signupSource="tiktok_ads", signupCampaign="autumn")["user"]
    assert second["id"] == first["id"]
    assert (second["signupSource"], second["signupCampaign"]) == ("instagram_ads", "spring")
    assert second["lastLogin"] > first["lastLogin"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_no_user_is_created_at_send(client, auth):
    auth.send()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        ({**PHONE, "code": "12"}, ["code: Must be 4 digits."]),
        ({**PHONE, "code": "12345"}, ["code: Must be 4 digits."]),
        ({**PHONE, "code": "abcd"}, ["code: Must be 4 digits."]),
        ({**PHONE, "code": 1234}, ["code: Not a valid string."]),
        (PHONE, ["code: Missing data for required field."]),
        (
            {**PHONE, "code": "1234", "signupSource": "x" * 101},
            ["signupSource: Longer than maximum length 100."],
        ),
    ],
)
def test_bad_verify_input_is_a_400_and_uses_no_attempt(client, auth, body, lines):
    auth.send()
    assert_error(client.post("/api/v1/auth/verify-otp", json=body), 400, "Validation failed", *lines)
    assert stored_codes()[0].attempts == 0


def test_wrong_unknown_expired_and_used_codes_share_one_answer(client, auth, unique_phone):
    code = auth.send().get_json()["data"]["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    assert_error(auth.verify(wrong), 401, INVALID)
    assert_error(auth.verify("1234", phone=unique_phone()), 401, INVALID)
    assert_envelope(auth.verify(code), 200)
    assert_error(auth.verify(code), 401, INVALID)
    other = unique_phone()
    code = auth.send(other).get_json()["data"]["code"]
    travel(181)
    assert_error(auth.verify(code, phone=other), 401, INVALID)


def test_the_code_is_still_good_just_before_its_ttl(client, auth):
    code = auth.send().get_json()["data"]["code"]
    travel(175)
    assert_envelope(auth.verify(code), 200)


def test_three_wrong_tries_burn_the_code(client, auth):
    code = auth.send().get_json()["data"]["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    for _ in range(3):
        assert_error(auth.verify(wrong), 401, INVALID)
    # Spent, not deleted: the row keeps the resend interval's clock.
    assert [stored.attempts for stored in stored_codes()] == [3]
    assert_error(auth.verify(code), 401, INVALID)


def test_the_right_code_on_the_third_try_still_works(client, auth):
    code = auth.send().get_json()["data"]["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    assert_error(auth.verify(wrong), 401, INVALID)
    assert_error(auth.verify(wrong), 401, INVALID)
    assert_envelope(auth.verify(code), 200)


def test_a_resend_within_the_interval_is_refused_with_retry_after(client, auth):
    auth.send()
    travel(20)
    response = auth.send()
    assert_error(response, 429, "Too many requests")
    assert 39 <= int(response.headers["Retry-After"]) <= 41
    assert len(stored_codes()) == 1


def test_a_resend_replaces_the_earlier_code(client, auth):
    first = auth.send().get_json()["data"]["code"]
    travel(61)
    second = auth.send().get_json()["data"]["code"]
    assert len(stored_codes()) == 1
    if first != second:
        assert_error(auth.verify(first), 401, INVALID)
    assert_envelope(auth.verify(second), 200)


def test_at_most_three_sends_in_ten_minutes(client, auth):
    for _ in range(3):
        assert_envelope(auth.send(), 201)
        travel(61)
    response = auth.send()
    assert_error(response, 429, "Too many requests")
    assert 10 * 60 - 3 * 61 - 2 <= int(response.headers["Retry-After"]) <= 10 * 60 - 3 * 61 + 2
    travel(int(response.headers["Retry-After"]) + 1)
    assert_envelope(auth.send(), 201)


def test_at_most_ten_sends_in_a_day(client, auth):
    for _ in range(10):
        assert_envelope(auth.send(), 201)
        travel(4 * 60)
    response = auth.send()
    assert_error(response, 429, "Too many requests")
    assert int(response.headers["Retry-After"]) > 20 * 3600


def test_send_limits_are_per_destination(client, auth, unique_phone):
    auth.send()
    assert_envelope(auth.send(unique_phone()), 201)


def fail_checks(auth, count):
    """Fail ``count`` checks against live codes: codes sent to the number, each guessed wrong until burnt."""
    while count:
        travel(601)  # past the resend interval and the 10-minute send cap
        code = assert_envelope(auth.send(), 201)["code"]
        for _ in range(min(count, 3)):
            assert_error(auth.verify(f"{(int(code) + 1) % 10_000:04d}"), 401, INVALID)
            count -= 1


def test_ten_failures_in_a_day_lock_the_destination_for_an_hour(client, auth):
    fail_checks(auth, 10)
    response = auth.verify("0000")
    assert_error(response, 429, "Too many requests")
    assert 3590 <= int(response.headers["Retry-After"]) <= 3600
    send = auth.send()
    assert_error(send, 429, "Too many requests")
    assert int(send.headers["Retry-After"]) > 3500
    assert events("destination_locked") == 1
    travel(3601)
    assert_envelope(auth.login()["user"] and client.get("/healthz"), 200)


def test_a_repeated_lock_doubles(client, auth):
    fail_checks(auth, 10)
    travel(3601)
    fail_checks(auth, 10)
    response = auth.verify("0000")
    assert_error(response, 429, "Too many requests")
    assert 7190 <= int(response.headers["Retry-After"]) <= 7200


def test_failures_older_than_a_day_do_not_count(client, auth):
    fail_checks(auth, 9)
    travel(24 * 3600 + 1)
    fail_checks(auth, 9)
    assert events("destination_locked") == 0
    travel(61)  # past the resend interval of the last, spent code
    assert_envelope(auth.login()["user"] and client.get("/healthz"), 200)


def test_test_destinations_use_their_fixed_code_and_send_nothing(make_app, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    app = make_app(fresh=True, OTP_TEST_DESTINATIONS={E164: ("4321", None)})
    with app.app_context():
        client = app.test_client()
        data = assert_envelope(client.post("/api/v1/auth/send-otp", json=PHONE), 201)
        assert data["code"] == "4321"
        assert "SMS to" not in caplog.text
        assert_envelope(client.post("/api/v1/auth/send-otp", json=PHONE), 201)
        assert_envelope(client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": "4321"}), 200)
        assert_envelope(client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": "4321"}), 200)
        assert_error(client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": "1111"}), 401, INVALID)


def test_an_expired_test_destination_is_an_ordinary_one(make_app):
    app = make_app(fresh=True, OTP_TEST_DESTINATIONS={E164: ("4321", date(2020, 1, 1))})
    with app.app_context():
        client = app.test_client()
        data = assert_envelope(client.post("/api/v1/auth/send-otp", json=PHONE), 201)
        if data["code"] != "4321":
            assert_error(client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": "4321"}), 401, INVALID)


@pytest.fixture
def gateway():
    with FakeGateway(status=201, body={"sid": "SM123", "status": "queued"}) as fake:
        yield fake


def twilio_app(make_app, gateway, **overrides):
    app = make_app(
        fresh=True,
        SMS_PROVIDER="twilio",
        TWILIO_API_URL=gateway.url,
        TWILIO_ACCOUNT_SID="AC123",
        TWILIO_AUTH_TOKEN="token",
        TWILIO_FROM="+15005550006",
        NOTIFY_TIMEOUT=0.5,
        **overrides,
    )
    return app


def test_send_otp_delivers_through_twilio_over_http(make_app, gateway, caplog):
    caplog.set_level(logging.DEBUG, "allmine_auth")
    app = twilio_app(make_app, gateway, OTP_ECHO=False)
    with app.app_context():
        data = assert_envelope(app.test_client().post("/api/v1/auth/send-otp", json=PHONE), 201)
    assert data == {"countryCode": "+90", "phoneNumber": "5321234567"}
    (request,) = gateway.requests
    assert request.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert request.form["To"] == E164
    code = re.search(r"kodunuz: (\d{4})", request.form["Body"]).group(1)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert re.search(rf"\b{code}\b", messages) is None


def test_send_otp_delivers_through_netgsm_over_http(make_app, gateway):
    gateway.respond(200, {"code": "00", "jobid": "1234", "description": "queued"})
    app = make_app(
        fresh=True,
        SMS_PROVIDER="netgsm",
        NETGSM_API_URL=gateway.url,
        NETGSM_USERCODE="8508850000",
        NETGSM_PASSWORD="secret",
        NETGSM_HEADER="ALLMINE",
    )
    with app.app_context():
        data = assert_envelope(app.test_client().post("/api/v1/auth/send-otp", json=PHONE), 201)
    (request,) = gateway.requests
    assert request.json["messages"][0]["no"] == "5321234567"
    assert data["code"] in request.json["messages"][0]["msg"]


@pytest.mark.parametrize(("status", "delay"), [(500, 0), (400, 0), (201, 1.0)])
def test_a_failed_delivery_is_a_logged_500_and_leaves_no_usable_code(
    make_app, gateway, caplog, status, delay
):
    caplog.set_level(logging.INFO, "allmine_auth")
    gateway.respond(status, {"code": 21211, "message": "Invalid 'To' Phone Number"}, delay=delay)
    app = twilio_app(make_app, gateway)
    with app.app_context():
        client = app.test_client()
        response = client.post("/api/v1/auth/send-otp", json=PHONE)
        assert_error(response, 500, "SMS gönderilirken hata oluştu")
        assert stored_codes() == []
        assert events("delivery_failed") == 1 and events("code_sent") == 0
        assert "DeliveryFailed" in caplog.text
        sent = re.search(r"kodunuz: (\d{4})", gateway.requests[0].form["Body"]).group(1)
        assert_error(client.post("/api/v1/auth/verify-otp", json={**PHONE, "code": sent}), 401, INVALID)
        gateway.respond(201, {"sid": "SM1"})
        assert_envelope(client.post("/api/v1/auth/send-otp", json=PHONE), 201)


class ObservingSender(SmsSender):
    """An SMS sender that notes, for each send, whether a transaction is open and the codes committed."""

    def __init__(self, fails=False):
        self.fails = fails
        self.seen = []

    def send_sms(self, phone_e164, text):
        # Another connection sees only what was committed (on SQLite's shared in-memory database, all).
        with db.engine.connect() as other:
            committed = other.scalar(sa.select(sa.func.count()).select_from(OneTimeCode))
        self.seen.append((db.session().in_transaction(), committed))
        if self.fails:
            raise DeliveryError("gateway down")


@pytest.mark.parametrize("fails", [False, True])
def test_a_code_is_delivered_once_its_send_has_committed_outside_any_transaction(app, client, fails):
    # A hanging gateway must not hold a pooled connection and the code's row lock for its timeout.
    sender = app.extensions["allmine_sms"] = ObservingSender(fails)
    response = client.post("/api/v1/auth/send-otp", json=PHONE)
    assert sender.seen == [(False, 1)]
    if fails:
        assert_error(response, 500, "SMS gönderilirken hata oluştu")
        assert (stored_codes(), events("delivery_failed"), events("code_sent")) == ([], 1, 0)
    else:
        assert_envelope(response, 201)
        assert (len(stored_codes()), events("delivery_failed"), events("code_sent")) == (1, 0, 1)


def test_failed_deliveries_count_toward_the_send_caps(make_app, gateway):
    # A gateway that timed out may have delivered (and billed) the SMS: "3 per 10 minutes" holds anyway.
    gateway.respond(201, {"sid": "SM1"}, delay=1.0)
    app = twilio_app(make_app, gateway, OTP_RESEND_INTERVAL=0)
    with app.app_context():
        client = app.test_client()
        for _ in range(3):
            response = client.post("/api/v1/auth/send-otp", json=PHONE)
            assert_error(response, 500, "SMS gönderilirken hata oluştu")
        gateway.respond(201, {"sid": "SM2"})
        response = client.post("/api/v1/auth/send-otp", json=PHONE)
        assert_error(response, 429, "Too many requests")
        assert 590 <= int(response.headers["Retry-After"]) <= 600
        assert len(gateway.requests) == 3


# The verify answer is built plainly (``web.schemas.auth.login_data``): it must be what ``LoginSchema`` dumps


def schema_dump_of(app, data):
    """What ``LoginSchema`` dumps for the answer's tokens and its user as stored (an ORM ``User``): JSON."""
    db.session.rollback()
    user = db.session.get(User, uuid.UUID(data["user"]["id"]), populate_existing=True)
    payload = {
        "access_token": data["accessToken"],
        "refresh_token": data["refreshToken"],
        "expires_in": data["expiresIn"],
        "refresh_expires_in": data["refreshExpiresIn"],
        "user": user,
        "isRegistrationComplete": user.is_registration_complete,
    }
    return app.json.dumps(LoginSchema().dump(payload))


def every_field_filled():
    """A value for every nullable column of the user (and non-default ones for the others)."""
    moment = datetime(2026, 5, 22, 16, 11, 27, 126999, tzinfo=UTC)
    return {
        "email": "full@example.com",
        "email_verified": True,
        "name": "Ada",
        "surname": "Lovelace",
        "username": "ada.l",
        "profile_photo": "ada.jpg",
        "availability_status": "available",
        "birth_date": date(1990, 2, 28),
        "gender": "female",
        "interests": ["music", "maths"],
        "expertise": "engines",
        "bio": 'Notes on the Analytical Engine \u00e7\u011f\u00fc "quoted" \\ </script>',
        "instagram": "ada_i",
        "x": "ada_x",
        "tiktok": "ada_t",
        "snapchat": "ada_s",
        "facebook": "ada_f",
        "privacy_policy_accepted": True,
        "privacy_policy_version": "1.2.0",
        "terms_of_use_accepted": True,
        "terms_of_use_version": "1.1.0",
        "consent_form_accepted": True,
        "consent_form_version": "1.0.0",
        "is_registration_complete": True,
        "roles": ["user", "admin"],
        "followers_count": 128,
        "following_count": 256,
        "minute_price_in_live_stream": 3,
        "credit_balance": 500,
        "timezone": "Europe/Istanbul",
        "last_username_change_date": moment,
        "account_deletion_status": "cancelled",
        "account_deletion_requested_at": moment,
        "account_deletion_scheduled_for": moment,
        "account_deletion_cancelled_at": moment,
        "account_deletion_finalized_at": moment,
    }


def test_the_verify_answer_is_what_the_login_schema_dumps_byte_for_byte(app, client, auth):
    # A sign-up (the SMS login's row: nulls and defaults), then the same account with every field filled.
    first = assert_envelope(auth.verify(auth.send().get_json()["data"]["code"]), 200)
    assert app.json.dumps(first) == schema_dump_of(app, first)
    db.session.execute(sa.update(User).values(every_field_filled()))
    db.session.execute(sa.delete(OneTimeCode))  # the resend interval: a second code at once
    db.session.commit()
    response = auth.verify(auth.send().get_json()["data"]["code"])
    again = assert_envelope(response, 200)
    assert again["user"]["birthDate"] == "1990-02-28T00:00:00.000Z" and again["isRegistrationComplete"]
    assert app.json.dumps(again) == schema_dump_of(app, again)
    assert f'"data":{app.json.dumps(again)},' in response.get_data(as_text=True)
    # An email login answers from an ORM ``User``: the same form.
    email = {"email": "mail@example.com"}
    code = client.post("/api/v1/auth/send-otp-email", json=email).get_json()["data"]["code"]
    by_email = assert_envelope(
        client.post("/api/v1/auth/verify-otp-email", json={**email, "code": code}), 200
    )
    assert app.json.dumps(by_email) == schema_dump_of(app, by_email)


def test_the_plain_user_dump_is_the_schemas_for_any_user(app):
    empty = User(id=uuid.uuid4(), interests=None, roles=None)
    full = User(id=uuid.uuid4(), **every_field_filled())
    for user in (empty, full):
        assert list(user_data(user).items()) == list(UserSchema().dump(user).items())
