"""Every error, from any layer, comes back as the one envelope of API.md."""

import logging

import pytest

from tests.conftest import PHONE, assert_envelope, assert_error

SEND = "/api/v1/auth/send-otp"


def test_success_envelope_keys_come_in_the_documented_order(client):
    body = client.post(SEND, json=PHONE).get_json()
    assert list(body) == ["isSuccess", "statusCode", "data", "errors", "timestamp"]


def test_validation_errors_list_each_field(client):
    response = client.post(SEND, json={"countryCode": "", "phoneNumber": 5})
    assert_error(
        response,
        400,
        "Validation failed",
        "countryCode: Length must be between 1 and 4.",
        "phoneNumber: Not a valid string.",
    )


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ('{"countryCode": "90",', "body: Malformed JSON"),
        ("[1, 2]", "body: Invalid input type."),
        ('"just a string"', "body: Invalid input type."),
    ],
)
def test_malformed_or_non_object_json_is_a_400(client, data, line):
    response = client.post(SEND, data=data, content_type="application/json")
    assert_error(response, 400, "Validation failed", line)


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "data": "countryCode=90&phoneNumber=5321234567",
            "content_type": "application/x-www-form-urlencoded",
        },
        {"data": '{"countryCode": "90"}', "content_type": "text/plain"},
        {"data": "<xml/>", "content_type": "application/xml"},
    ],
)
def test_a_body_that_is_not_json_is_a_415(client, kwargs):
    assert_error(
        client.post(SEND, **kwargs), 415, "Request body must be JSON (Content-Type: application/json)"
    )


def test_an_empty_json_body_lists_the_missing_fields(client):
    response = client.post(SEND, data="", content_type="application/json")
    assert_error(
        response,
        400,
        "Validation failed",
        "countryCode: Missing data for required field.",
        "phoneNumber: Missing data for required field.",
    )


def test_unknown_fields_are_a_400(client):
    response = client.post(SEND, json={**PHONE, "isAdmin": True})
    assert_error(response, 400, "Validation failed", "isAdmin: Unknown field.")


def test_too_large_a_body_is_a_413(client):
    response = client.post(SEND, json={**PHONE, "padding": "x" * 20_000})
    assert_error(response, 413, "Request body too large")


def test_unknown_path_is_a_404(client):
    assert_error(client.get("/api/v1/auth/nothing-here"), 404, "Resource not found")
    assert_error(client.get("/no/such/page"), 404, "Resource not found")


def test_wrong_method_is_a_405_with_allow(client):
    response = client.get(SEND)
    assert_error(response, 405, "Method not allowed")
    assert "POST" in response.headers["Allow"]


def test_an_unknown_query_parameter_is_a_400(client, auth):
    token = auth.login()["accessToken"]
    response = client.post(
        "/api/v1/auth/logout?scope=everything", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(response, 400, "Validation failed", "scope: Must be one of: global, local, others.")


def test_flask_jwt_extended_errors_are_401_envelopes(client):
    assert_error(client.get("/api/v1/auth/me"), 401, "Missing or invalid token")
    response = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert_error(response, 401, "Missing or invalid token")


def test_rate_limit_429_has_retry_after(make_app, unique_phone):
    app = make_app(fresh=True, RATELIMIT_ENABLED=True, RATELIMIT_SEND="2/minute")
    client = app.test_client()
    with app.app_context():
        for _ in range(2):
            assert_envelope(client.post(SEND, json=unique_phone()), 201)
        response = client.post(SEND, json=unique_phone())
    assert_error(response, 429, "Too many requests")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_an_unexpected_exception_is_a_logged_500_without_a_trace(make_app, caplog):
    app = make_app(fresh=True)

    def explode():
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/v1/explode", view_func=explode)
    caplog.set_level(logging.ERROR, "allmine_auth")
    response = app.test_client().get("/api/v1/explode", headers={"X-Request-ID": "req-42"})
    assert_error(response, 500, "Internal server error")
    assert b"secret internals" not in response.data and b"Traceback" not in response.data
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.request_id == "req-42"
    assert "RuntimeError: secret internals" in caplog.text


def test_an_unknown_logout_parameter_is_refused_and_logs_nobody_out(client, auth):
    token = auth.login()["accessToken"]
    response = client.post("/api/v1/auth/logout?scpe=local", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 400, "Validation failed", "scpe: Unknown field.")
    assert_envelope(client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}), 200)


def test_429_documents_retry_after(client):
    spec = client.get("/openapi.json").get_json()
    too_many = spec["paths"]["/api/v1/auth/send-otp"]["post"]["responses"]["429"]
    assert too_many["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert too_many["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
