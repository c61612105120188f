"""The spec at /openapi.json, the contract app developers generate code from (``web/openapi.py``).

Every answer the suite gets is checked against it by ``tests/spec_conformance.py``; these tests check the
spec itself: names, examples (the seeds'), required and nullable, formats. And two CLI answers a new
user met: ``flask seed --users`` run twice, ``flask audit`` with nothing to show.
"""

import copy

import jsonschema_rs
import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User
from tests.spec_conformance import nullable_to_null

OPERATION_IDS = {
    ("post", "/api/v1/auth/send-otp"): "sendOtp",
    ("post", "/api/v1/auth/send-otp-email"): "sendOtpEmail",
    ("post", "/api/v1/auth/verify-otp"): "verifyOtp",
    ("post", "/api/v1/auth/verify-otp-email"): "verifyOtpEmail",
    ("post", "/api/v1/auth/refresh"): "refreshToken",
    ("post", "/api/v1/auth/logout"): "logout",
    ("get", "/api/v1/auth/me"): "getMe",
    ("post", "/api/v1/auth/complete-registration"): "completeRegistration",
    ("get", "/api/v1/auth/sessions"): "listSessions",
    ("delete", "/api/v1/auth/sessions/{session_id}"): "deleteSession",
    ("post", "/api/v1/auth/account/deletion"): "requestAccountDeletion",
    ("delete", "/api/v1/auth/account/deletion"): "cancelAccountDeletion",
    ("get", "/api/v1/live-activities"): "listLiveActivities",
    ("put", "/api/v1/live-activities/{activity_id}"): "putLiveActivity",
    ("delete", "/api/v1/live-activities/{activity_id}"): "deleteLiveActivity",
    ("get", "/healthz"): "getHealth",
    ("get", "/readyz"): "getReadiness",
    ("get", "/.well-known/jwks.json"): "getJwks",
}
# The seeds' examples (their user's email is an address the seed pages hid; ours is john@example.com).
SEED_VERIFY_BODY = {
    "countryCode": "90",
    "phoneNumber": "5551234567",
    "code": "1234",
    "signupSource": "instagram_ads",
    "signupCampaign": "spring_launch_2026",
}
SEED_SENT = {"countryCode": "+90", "phoneNumber": "5551234567", "code": "1234"}
SEED_TOKENS = {
    "accessToken": "sample",
    "refreshToken": "sample",
    "expiresIn": 3600,
    "refreshExpiresIn": 2592000,
}
SEED_USER = {
    "name": "John",
    "surname": "Doe",
    "username": "johndoe123",
    "countryCode": "90",
    "phoneNumber": "5372505890",
    "signupSource": "instagram_ads",
    "signupCampaign": "spring_launch_2026",
    "profilePhoto": "sample.jpg",
    "availabilityStatus": "available",
    "gender": "male",
    "interests": ["music"],
    "expertise": "designer",
    "bio": "Passionate about technology and travel",
    "instagram": "myinstagram",
    "x": "mytwitterx",
    "tiktok": "mytiktok",
    "snapchat": "mysnapchat",
    "facebook": "myfacebook",
    "privacyPolicyAccepted": True,
    "privacyPolicyVersion": "1.2.0",
    "termsOfUseAccepted": True,
    "termsOfUseVersion": "1.1.0",
    "consentFormAccepted": True,
    "consentFormVersion": "1.0.0",
    "roles": ["user"],
    "followersCount": 128,
    "followingCount": 256,
    "minutePriceInLiveStream": 1,
    "creditBalance": 500,
    "lastLogin": "2026-01-15T10:30:00.000Z",
    "timezone": "Europe/Istanbul",
    "lastUsernameChangeDate": "2026-01-15T10:30:00.000Z",
    "accountDeletionStatus": "pending",
    "accountDeletionRequestedAt": "2026-01-15T10:30:00.000Z",
    "accountDeletionScheduledFor": "2026-01-15T10:30:00.000Z",
    "accountDeletionCancelledAt": "2026-01-15T10:30:00.000Z",
    "accountDeletionFinalizedAt": "2026-01-15T10:30:00.000Z",
}


@pytest.fixture
def spec(client):
    """The served spec."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def validator(spec, schema):
    """A JSON Schema validator of ``schema`` (``$ref``s into the spec's components), formats checked."""
    components = {"components": {"schemas": nullable_to_null(copy.deepcopy(spec["components"]["schemas"]))}}
    return jsonschema_rs.Draft202012Validator(
        {**components, **nullable_to_null(copy.deepcopy(schema))}, validate_formats=True
    )


def operations(spec):
    """``(method, path, operation)`` for every documented operation."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method, path, operation


def answer(spec, method, path, status):
    """The documented answer's JSON content (schema and example)."""
    return spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]


def example(spec, method, path, status):
    """The documented answer's example."""
    return answer(spec, method, path, status)["example"]


def component(spec, name):
    """A component schema."""
    return spec["components"]["schemas"][name]


def test_every_operation_has_its_operation_id(spec):
    names = {(method, path): operation.get("operationId") for method, path, operation in operations(spec)}
    assert names == OPERATION_IDS


def test_every_documented_answer_has_an_example_its_schema_accepts(spec):
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            status = 500 if code == "default" else int(code)  # any other error: its example is a 500
            content = response["content"]["application/json"]
            assert "example" in content, (method, path, code)
            errors = [e.message for e in validator(spec, content["schema"]).iter_errors(content["example"])]
            assert errors == [], (method, path, code)
            body = content["example"]
            if path == "/.well-known/jwks.json":
                continue  # a JWK set, not the envelope
            assert body["statusCode"] == status, (method, path, code)
            assert body["isSuccess"] is (status < 400), (method, path, code)
            assert list(body) == ["isSuccess", "statusCode", "data", "errors", "timestamp"]
            if status >= 400:
                assert body["data"] is None and body["errors"], (method, path, code)


def test_the_examples_are_the_seeds(spec):
    assert example(spec, "post", "/api/v1/auth/send-otp", 201)["data"] == SEED_SENT
    email_sent = example(spec, "post", "/api/v1/auth/send-otp-email", 201)
    assert email_sent == {
        "isSuccess": True,
        "statusCode": 201,
        "data": {"email": "john@example.com", "code": "1234"},
        "errors": [],
        "timestamp": "2026-05-22T16:11:27.126Z",
    }
    login = example(spec, "post", "/api/v1/auth/verify-otp", 200)["data"]
    assert {key: login[key] for key in SEED_TOKENS} == SEED_TOKENS
    assert {key: login["user"][key] for key in SEED_USER} == SEED_USER
    assert example(spec, "post", "/api/v1/auth/refresh", 200)["data"] == SEED_TOKENS


@pytest.mark.parametrize(
    ("method", "path", "status", "errors"),
    [
        (
            "post",
            "/api/v1/auth/send-otp",
            400,
            ["Validation failed", "phoneNumber: Not a valid phone number."],
        ),
        ("post", "/api/v1/auth/send-otp", 500, ["SMS gönderilirken hata oluştu"]),
        ("post", "/api/v1/auth/send-otp-email", 500, ["Email gönderilirken hata oluştu"]),
        ("post", "/api/v1/auth/verify-otp", 401, ["Invalid or expired code"]),
        ("post", "/api/v1/auth/verify-otp-email", 401, ["Invalid or expired code"]),
        (
            "post",
            "/api/v1/auth/verify-otp",
            409,
            ["Resource already exists or cannot be changed in its current state"],
        ),
        ("post", "/api/v1/auth/verify-otp", 413, ["Request body too large"]),
        (
            "post",
            "/api/v1/auth/verify-otp",
            415,
            ["Request body must be JSON (Content-Type: application/json)"],
        ),
        ("post", "/api/v1/auth/verify-otp", 429, ["Too many requests"]),
        ("get", "/api/v1/auth/me", 401, ["Missing or invalid token"]),
        ("delete", "/api/v1/auth/sessions/{session_id}", 404, ["Resource not found"]),
        ("delete", "/api/v1/live-activities/{activity_id}", 404, ["Resource not found"]),
        (
            "post",
            "/api/v1/auth/account/deletion",
            409,
            ["Resource already exists or cannot be changed in its current state"],
        ),
        ("get", "/readyz", 503, ["Service unavailable", "database: not answering"]),
        ("post", "/api/v1/auth/logout", 503, ["Service unavailable"]),
        ("delete", "/api/v1/auth/sessions/{session_id}", 503, ["Service unavailable"]),
    ],
)
def test_error_examples_carry_the_texts_the_service_sends(spec, method, path, status, errors):
    assert example(spec, method, path, status) == {
        "isSuccess": False,
        "statusCode": status,
        "data": None,
        "errors": errors,
        "timestamp": "2026-01-15T10:30:00.000Z",
    }


def test_answers_that_say_when_to_retry_document_retry_after(spec):
    responses = spec["paths"]["/api/v1/auth/send-otp"]["post"]["responses"]
    assert responses["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "Retry-After" in spec["paths"]["/readyz"]["get"]["responses"]["503"]["headers"]
    # A logout Redis refused: 503 with Retry-After (the sessions are ended in the database).
    assert "Retry-After" in spec["paths"]["/api/v1/auth/logout"]["post"]["responses"]["503"]["headers"]


def test_the_seeds_requests_match_the_request_schemas_and_wrong_ones_do_not(spec):
    verify = validator(spec, component(spec, "VerifyPhone"))
    assert verify.is_valid(SEED_VERIFY_BODY)
    required_only = {key: SEED_VERIFY_BODY[key] for key in ("countryCode", "phoneNumber", "code")}
    assert verify.is_valid(required_only)
    assert verify.is_valid({**required_only, "signupSource": None})
    assert not verify.is_valid({"countryCode": "90", "phoneNumber": "5551234567"})
    assert not verify.is_valid({**required_only, "phoneNumber": 5551234567})
    assert not verify.is_valid({**required_only, "extra": "x"})
    email = validator(spec, component(spec, "Email"))
    assert email.is_valid({"email": "john@example.com"})
    assert not email.is_valid({"email": "john.example.com"})
    assert validator(spec, component(spec, "Refresh")).is_valid({"refreshToken": "sample"})


def test_optional_request_fields_have_no_default_that_generators_read_as_always_present(spec):
    for name, schema in spec["components"]["schemas"].items():
        for prop_name, prop in schema.get("properties", {}).items():
            assert "default" not in prop, (name, prop_name)
    registration = component(spec, "CompleteRegistration")
    assert set(registration["required"]) == {
        "name",
        "surname",
        "username",
        "privacyPolicyAccepted",
        "privacyPolicyVersion",
        "termsOfUseAccepted",
        "termsOfUseVersion",
    }
    assert (
        "Default when left out: `false`." in registration["properties"]["consentFormAccepted"]["description"]
    )


def test_the_user_schema_requires_every_key_and_marks_what_may_be_null(spec):
    user = component(spec, "User")
    assert set(user["required"]) == set(user["properties"])
    assert not validator(spec, user).is_valid({})
    nullable = {name for name, prop in user["properties"].items() if prop.get("nullable")}
    assert {"name", "username", "email", "birthDate", "lastLogin", "accountDeletionStatus"} <= nullable
    assert not nullable & {"id", "roles", "interests", "followersCount", "isRegistrationComplete"}
    for name in ("Session", "LiveActivity"):
        schema = component(spec, name)
        assert set(schema["required"]) == set(schema["properties"]), name
    assert component(spec, "PhoneCodeSent")["required"] == ["countryCode", "phoneNumber"]


def test_dates_emails_and_ids_have_their_formats(spec):
    user = component(spec, "User")["properties"]
    for name in ("birthDate", "lastLogin", "lastUsernameChangeDate", "accountDeletionScheduledFor"):
        assert (user[name]["type"], user[name]["format"]) == ("string", "date-time"), name
    assert (user["email"]["type"], user["email"]["format"]) == ("string", "email")
    assert user["id"]["format"] == "uuid"
    assert component(spec, "Email")["properties"]["email"]["format"] == "email"
    assert component(spec, "CompleteRegistration")["properties"]["birthDate"]["format"] == "date"
    session = component(spec, "Session")["properties"]
    assert (session["createdAt"]["format"], session["id"]["format"]) == ("date-time", "uuid")
    assert component(spec, "LiveActivity")["properties"]["expiresAt"]["format"] == "date-time"
    assert component(spec, "ErrorEnvelope")["properties"]["timestamp"]["format"] == "date-time"


def test_seeding_users_twice_skips_the_numbers_that_already_have_a_user(runner):
    first = runner.invoke(args=["seed", "--users", "30"])
    assert first.exit_code == 0, first.output
    assert "Inserted 30 users." in first.output
    assert "Skipped" not in first.output
    again = runner.invoke(args=["seed", "--users", "30"])
    assert again.exit_code == 0, again.output
    assert "Inserted 0 users.\nSkipped 30 numbers that already had a user.\n" in again.output
    overlapping = runner.invoke(args=["seed", "--users", "40", "--start", "20"])
    assert overlapping.exit_code == 0, overlapping.output
    assert "Inserted 30 users.\nSkipped 10 numbers that already had a user.\n" in overlapping.output
    phones = db.session.scalars(sa.select(User.phone_e164).where(User.phone_e164.like("+90532%"))).all()
    assert sorted(phones) == [f"+90532{index:07d}" for index in range(60)]


def test_audit_says_when_there_are_no_events(runner):
    result = runner.invoke(args=["audit", "--destination", "+905329999999"])
    assert (result.exit_code, result.output) == (0, "no events\n")
    runner.invoke(args=["seed"])
    result = runner.invoke(args=["audit", "--user", "+905372505890"])
    assert (result.exit_code, result.output) == (0, "no events\n")
