"""OPTIONS and CORS: no empty HTML answers; preflights from the configured browser origins only."""

import pytest

from tests.conftest import PHONE, assert_envelope, assert_error

APP_ORIGIN = "https://app.allmine.app"
SEND = "/api/v1/auth/send-otp"
NOT_ALLOWED = "Method not allowed"


def preflight(client, path, origin=APP_ORIGIN, method="POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize(
    "path, allowed",
    [(SEND, "POST"), ("/api/v1/auth/me", "GET"), ("/api/v1/auth/sessions", "GET"), ("/healthz", "GET")],
)
def test_without_cors_options_is_the_405_envelope(client, path, allowed):
    for response in (client.options(path), preflight(client, path)):
        assert_error(response, 405, NOT_ALLOWED)
        assert allowed in response.headers["Allow"]
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.fixture
def cors_client(make_app):
    return make_app(fresh=True, CORS_ORIGINS=[APP_ORIGIN]).test_client()


def test_a_preflight_from_an_allowed_origin_is_answered(cors_client):
    response = preflight(cors_client, SEND)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert response.headers["Access-Control-Max-Age"] == "600"


@pytest.mark.parametrize(
    "origin, headers",
    [
        ("https://evil.example", {"Access-Control-Request-Method": "POST"}),
        (APP_ORIGIN, {}),  # not a preflight: no Access-Control-Request-Method
    ],
)
def test_any_other_options_is_still_the_405_envelope(cors_client, origin, headers):
    response = cors_client.options(SEND, headers={"Origin": origin, **headers})
    assert_error(response, 405, NOT_ALLOWED)
    assert response.headers["Allow"] == "POST"


def test_answers_to_an_allowed_origin_carry_the_cors_headers_errors_too(cors_client):
    response = cors_client.post(SEND, json=PHONE, headers={"Origin": APP_ORIGIN})
    assert_envelope(response, 201)
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in exposed and "X-Request-ID" in exposed
    # A browser app must be able to read an error's envelope (here the resend interval's 429).
    response = cors_client.post(SEND, json=PHONE, headers={"Origin": APP_ORIGIN})
    assert_error(response, 429, "Too many requests")
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_a_foreign_origin_gets_no_cors_headers(cors_client):
    response = cors_client.post(SEND, json=PHONE, headers={"Origin": "https://evil.example"})
    assert_envelope(response, 201)
    assert "Access-Control-Allow-Origin" not in response.headers
