"""Fuzz every operation of the OpenAPI spec with schemathesis, in-process, and hold the answers to it.

For each operation, Hypothesis draws requests in three phases: from the
spec's own examples, schema-valid (positive) and, where the operation takes
any input, schema-invalid (negative). Each answer must:

- not be a 5xx;
- conform to the spec: its status is documented for the operation, explicitly
  (``default`` alone doesn't count: the apps' developers read the listed codes),
  with the documented content type, body schema and headers;
- reject schema-invalid input with a 4xx (``negative_data_rejection``; 413 for
  a body over ``MAX_CONTENT_LENGTH`` counts as a rejection), and a missing
  token with 401 (``ignored_auth`` re-sends without it);
- under ``/api/v1``, be the envelope with ``statusCode`` equal to the HTTP status.

Schema-driven data can't know what the spec doesn't say: no control characters, ASCII digits only.
``test_hostile_text_in_any_string_field_is_answered_with_the_envelope`` draws text from those classes
(NUL, newlines, C1 controls, lone surrogates, digits of other scripts, mixed with any character) into
each string field of each body, one at a time, and holds every answer to the envelope and to no 5xx.

``positive_data_acceptance`` is left out on purpose: a schema can't say "a
real phone number for this country", so schema-valid phone numbers are
rightly refused with 400. Random data can't guess a code or a refresh token
either, so ``test_the_login_flow_conforms_to_the_spec`` walks the happy path.

Why in-process (schemathesis' WSGI transport) and not against gunicorn: no
port, no subprocess, a fresh database per operation from the usual fixtures,
tracebacks in the test output, and many more examples per second on this
2-core machine; gunicorn itself is exercised by ``tests/test_metrics.py``.
Operations that need a token get a fresh login per example (a user of their
own, so ``logout`` can't spoil the next example). Runs are derandomized, so a
failure reproduces exactly; raise ``FUZZ_EXAMPLES`` to search further.

(schemathesis' own pytest loaders aren't used: ``from_fixture`` fails on
pytest 9's nodes, and a module-level schema would need a module-level database.
Driving Hypothesis with ``operation.as_strategy()`` is schemathesis' documented
alternative.)
"""

import itertools
import os
import re
import unicodedata

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from allmine_auth import create_app
from tests.conftest import bearer, close_app, make_config, reset_storage
from tests.test_registration import PROFILE as REGISTRATION_PROFILE

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
)
# schemathesis' default list plus 413: an over-long string can make the body exceed MAX_CONTENT_LENGTH.
REJECTION_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SPEC_EXAMPLES = "examples"
PHONES = itertools.count(1_000_000)


def load_schema(app):
    """The app's spec as a schemathesis schema: 413 counts as a rejection, tokens from fresh logins."""
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}}}
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)

    # Through schemathesis' auth hook (not a header of our own): it leaves the token out exactly
    # when a negative case is about a missing token, and ignored_auth knows what to take away.
    @schema.auth(refresh_interval=None)
    class FreshLogin:
        def get(self, case, context):
            return fresh_access_token(app) if case.operation.definition.raw.get("security") else None

        def set(self, case, data, context):
            if data is not None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


def spec_cases():
    """``(METHOD, path, phase)`` for every operation, read from the spec once at collection."""
    app = create_app(make_config())
    schema = load_schema(app)
    cases = []
    for result in schema.get_all_operations():
        operation = result.ok()
        raw = operation.definition.raw
        method = operation.method.upper()
        phases = [GenerationMode.POSITIVE]
        # Without any input there is nothing to make invalid.
        if raw.get("parameters") or raw.get("requestBody") or operation.path_parameters:
            phases.append(GenerationMode.NEGATIVE)
        if schema.get_strategies_from_examples(operation):
            phases.append(SPEC_EXAMPLES)
        for phase in phases:
            cases.append(pytest.param(method, operation.path, phase, id=f"{method} {operation.path} {phase}"))
    close_app(app)
    return cases


def envelope_check(ctx, response, case):
    """Every answer under /api/v1 is the envelope, ``statusCode`` equal to the HTTP status."""
    if not case.operation.path.startswith("/api/v1/"):
        return None
    assert_envelope(response.json(), response.status_code)
    return True


def assert_envelope(body, status):
    """``body`` is the envelope of an answer with ``status``."""
    assert isinstance(body, dict) and set(body) == ENVELOPE_KEYS, f"not the envelope: {body!r}"
    assert body["statusCode"] == status, f"statusCode {body['statusCode']} != HTTP status {status}"
    assert body["isSuccess"] is (status < 400)
    assert TIMESTAMP.match(body["timestamp"]), f"timestamp {body['timestamp']!r}"
    if status >= 400:
        assert body["data"] is None and body["errors"], f"an error needs errors and no data: {body!r}"
    else:
        assert body["errors"] == [], f"a success has no errors: {body!r}"


def status_explicitly_documented(ctx, response, case):
    """The answer's status is listed for the operation, not only covered by ``default``."""
    assert_status_listed(case.operation, response.status_code)
    return True


def assert_status_listed(operation, status):
    """``status`` is one of the operation's listed responses (``default`` aside)."""
    documented = set(operation.definition.raw["responses"]) - {"default"}
    assert str(status) in documented or f"{str(status)[0]}XX" in documented, (
        f"{operation.label} answered {status}, documented only as 'default' "
        f"(listed: {', '.join(sorted(documented))})"
    )


def checks():
    """The built-in checks by name, then ours."""
    load_all_checks()
    return [*CHECKS.get_by_names(CHECK_NAMES), envelope_check, status_explicitly_documented]


@pytest.fixture
def fuzz_app():
    """An app on a fresh database, without a pushed context: each request gets its own, as in production."""
    app = create_app(make_config())
    reset_storage(app)
    yield app
    close_app(app)


def fresh_login(app):
    """Log a brand-new user in through the endpoints; return the phone and the verify answer's data."""
    client = app.test_client()
    phone = {"countryCode": "90", "phoneNumber": f"532{next(PHONES):07d}"}
    sent = client.post("/api/v1/auth/send-otp", json=phone)
    assert sent.status_code == 201, sent.get_json()
    login = client.post("/api/v1/auth/verify-otp", json={**phone, "code": sent.get_json()["data"]["code"]})
    assert login.status_code == 200, login.get_json()
    return login.get_json()["data"]


def fresh_access_token(app):
    """A brand-new user's access token."""
    return fresh_login(app)["accessToken"]


@pytest.mark.parametrize(("method", "path", "phase"), spec_cases())
def test_operation_conforms_to_the_spec(fuzz_app, method, path, phase):
    schema = load_schema(fuzz_app)
    operation = schema[path][method]
    if phase == SPEC_EXAMPLES:
        strategy = st.one_of(schema.get_strategies_from_examples(operation))
    else:
        strategy = operation.as_strategy(generation_mode=phase)
    selected = checks()

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def answer_conforms(case):
        case.call_and_validate(checks=selected)

    answer_conforms()


def test_the_login_flow_conforms_to_the_spec(fuzz_app):
    schema = load_schema(fuzz_app)
    client = fuzz_app.test_client()

    def call(method, path, template=None, **kwargs):
        response = client.open(path, method=method, **kwargs)
        operation = schema[template or path][method]
        operation.validate_response(response)
        assert_status_listed(operation, response.status_code)
        assert_envelope(response.get_json(), response.status_code)
        return response

    login = fresh_login(fuzz_app)
    refreshed = call("POST", "/api/v1/auth/refresh", json={"refreshToken": login["refreshToken"]})
    assert refreshed.status_code == 200
    access = bearer(refreshed.get_json()["data"]["accessToken"])
    assert call("GET", "/api/v1/auth/me", headers=access).status_code == 200
    sessions = call("GET", "/api/v1/auth/sessions", headers=access)
    assert sessions.status_code == 200
    email = {"email": "fuzz@example.com"}
    code = call("POST", "/api/v1/auth/send-otp-email", json=email).get_json()["data"]["code"]
    assert call("POST", "/api/v1/auth/verify-otp-email", json={**email, "code": code}).status_code == 200
    phone = {"countryCode": "90", "phoneNumber": "5329999999"}
    code = call("POST", "/api/v1/auth/send-otp", json=phone).get_json()["data"]["code"]
    assert call("POST", "/api/v1/auth/verify-otp", json={**phone, "code": code}).status_code == 200
    session_path = f"/api/v1/auth/sessions/{sessions.get_json()['data'][0]['id']}"
    template = "/api/v1/auth/sessions/{session_id}"
    assert call("DELETE", session_path, template, headers=access).status_code == 200
    # The session is over: its token is refused, the session is gone, the refresh token is dead.
    assert call("GET", "/api/v1/auth/me", headers=access).status_code == 401
    other = bearer(fresh_access_token(fuzz_app))
    assert call("DELETE", session_path, template, headers=other).status_code == 404
    dead = {"refreshToken": login["refreshToken"]}
    assert call("POST", "/api/v1/auth/refresh", json=dead).status_code == 401
    assert call("POST", "/api/v1/auth/logout", headers=other).status_code == 200


# Hostile text: what each class of hostile input is made of, mixed with any character (surrogates too).
HOSTILE_CHARACTERS = st.sampled_from("+() -.@\x00\n\t\x1b\x7f\x85\u2028\ud800\udfff")
OTHER_DIGITS = st.sampled_from("²①٣５६")
HOSTILE_TEXT = st.text(
    st.one_of(HOSTILE_CHARACTERS, OTHER_DIGITS, st.characters(exclude_categories=())), max_size=24
)
# Digits fields: mostly digits, some of other scripts (str.isdigit() and int() took them).
HOSTILE_DIGITS = st.text(
    st.one_of(st.sampled_from("0123456789"), OTHER_DIGITS, HOSTILE_CHARACTERS), min_size=1, max_size=12
)
DIGITS_FIELDS = {"countryCode", "phoneNumber", "code", "emailCode"}
# The registration tests' profile with an email and its code: each of its string fields gets hostile text.
PROFILE = {
    **{key: value for key, value in REGISTRATION_PROFILE.items() if key != "interests"},
    "email": "ada@example.com",
    "emailCode": "1234",
}
# A valid body of each endpoint; each string field in turn gets hostile text.
BODIES = {
    "/api/v1/auth/send-otp": {"countryCode": "90", "phoneNumber": "5321234567"},
    "/api/v1/auth/send-otp-email": {"email": "fuzz@example.com"},
    "/api/v1/auth/verify-otp": {
        "countryCode": "90",
        "phoneNumber": "5321234567",
        "code": "1234",
        "signupSource": "ads",
        "signupCampaign": "spring",
    },
    "/api/v1/auth/verify-otp-email": {
        "email": "fuzz@example.com",
        "code": "1234",
        "signupSource": "ads",
        "signupCampaign": "spring",
    },
    "/api/v1/auth/refresh": {"refreshToken": "x"},
    "/api/v1/auth/complete-registration": PROFILE,
}


def must_be_refused(name, text):
    """Control characters and lone surrogates anywhere, and digits other than 0-9 in a digits field."""
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in text) or (
        name in DIGITS_FIELDS and any(char.isnumeric() and char not in "0123456789" for char in text)
    )


@pytest.mark.parametrize(
    ("path", "name"),
    [(path, name) for path, body in BODIES.items() for name, value in body.items() if isinstance(value, str)],
)
def test_hostile_text_in_any_string_field_is_answered_with_the_envelope(fuzz_app, path, name):
    client = fuzz_app.test_client()
    headers = bearer(fresh_access_token(fuzz_app)) if path.endswith("complete-registration") else {}

    @given(text=HOSTILE_DIGITS | HOSTILE_TEXT if name in DIGITS_FIELDS else HOSTILE_TEXT)
    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=True)
    def answered(text):
        response = client.post(path, json={**BODIES[path], name: text}, headers=headers)
        body = response.get_json()
        assert response.status_code < 500, (text, body)
        assert_envelope(body, response.status_code)
        if must_be_refused(name, text):
            # A 400 that names the field, and only the field: it alone is wrong.
            assert response.status_code == 400, (text, body)
            assert body["errors"][0] == "Validation failed"
            assert all(line.startswith(f"{name}: ") for line in body["errors"][1:]), (text, body)

    answered()
