"""The ``FAST_PATHS`` switch (allmine_auth/fast_paths.py): on, the overrides of library internals are on
the app; off, the app runs on the libraries' own code, even beside an app of the same process that has
them; and either way a token's claims, expiry and revocation are checked.

The whole suite runs both ways in CI (``.ci/run``: ``FAST_PATHS=0``); the tests here build their apps
with the setting they need.
"""

import json
import time
import uuid

import jwt
import pytest
from flask.sessions import NullSession, SecureCookieSessionInterface
from flask_jwt_extended import view_decorators
from jwt.api_jws import PyJWS
from jwt.utils import base64url_encode

from allmine_auth import fast_paths
from allmine_auth.config import TestingConfig, settings_for
from allmine_auth.metrics import start_timer
from allmine_auth.rules.profiles import PROFILE_CACHE_PREFIX
from allmine_auth.web import jwt as jwt_loaders
from allmine_auth.web.envelope import RawJSON, envelope_response
from allmine_auth.web.limits import limiter
from tests.clock import wait_past_expiry
from tests.conftest import AuthActions, assert_envelope, assert_error, bearer
from tests.test_tokens import count_signature_checks

MISSING = "Missing or invalid token"
EXPIRED = "Token has expired"
REVOKED = "Token has been revoked"
REPEATED_LOGINS = {"OTP_RESEND_INTERVAL": 0, "OTP_MAX_SENDS_10MIN": 100, "OTP_MAX_SENDS_24H": 100}
BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast paths", "library code"])


def me(client, token):
    return client.get("/api/v1/auth/me", headers=bearer(token))


def logout(client, token):
    return client.post("/api/v1/auth/logout", headers=bearer(token))


def limiter_hooks(app):
    """The limiter's own hooks still on ``app``: (before, after, teardown) as found in Flask's lists."""
    before = [hook for hook in app.before_request_funcs.get(None, []) if hook == limiter._check_request_limit]
    after = [
        hook for hook in app.after_request_funcs.get(None, []) if getattr(hook, "args", None) == (limiter,)
    ]
    teardown = [hook for hook in app.teardown_request_funcs.get(None, []) if getattr(hook, "__self__", None)]
    return before, after, teardown


def test_the_switch_follows_the_environment_and_is_on_by_default():
    assert settings_for(TestingConfig, {})["FAST_PATHS"] is True
    assert settings_for(TestingConfig, {"FAST_PATHS": "0"})["FAST_PATHS"] is False
    assert settings_for(TestingConfig, {"FAST_PATHS": "on"})["FAST_PATHS"] is True


def test_on_the_app_has_every_fast_path(make_app):
    app = make_app(FAST_PATHS=True, RATELIMIT_ENABLED=True)
    assert fast_paths.installed(app)
    assert isinstance(app.extensions[fast_paths.VERIFIED_TOKENS], fast_paths.VerifiedTokens)
    assert isinstance(app.session_interface, fast_paths.NoCookieSessions)
    assert view_decorators.get_unverified_jwt_headers is fast_paths.header_of
    before, after, teardown = limiter_hooks(app)
    assert (before, after, teardown) == ([], [], [])  # the check is out, the others wrapped


def test_off_the_app_runs_on_the_libraries_own_code(make_app):
    make_app(FAST_PATHS=True)  # another app of the process has them
    app = make_app(FAST_PATHS=False, RATELIMIT_ENABLED=True)
    assert not fast_paths.installed(app)
    assert fast_paths.VERIFIED_TOKENS not in app.extensions
    assert type(app.session_interface) is SecureCookieSessionInterface
    before, after, teardown = limiter_hooks(app)
    assert len(before) == len(after) == len(teardown) == 1


def test_installing_twice_changes_nothing(make_app):
    app = make_app(FAST_PATHS=True, RATELIMIT_ENABLED=True)
    hooks = [list(app.before_request_funcs[None]), list(app.after_request_funcs[None])]
    teardown = list(app.teardown_request_funcs[None])
    verified = app.extensions[fast_paths.VERIFIED_TOKENS]
    fast_paths.install(app)
    assert [app.before_request_funcs[None], app.after_request_funcs[None]] == hooks
    assert app.teardown_request_funcs[None] == teardown
    assert app.extensions[fast_paths.VERIFIED_TOKENS] is verified


def test_an_app_without_fast_paths_verifies_every_time_beside_one_with_them(make_app, monkeypatch):
    fast = make_app(fresh=True, FAST_PATHS=True, **REPEATED_LOGINS)
    with fast.app_context():
        token = AuthActions(fast.test_client()).login()["accessToken"]
        assert_envelope(me(fast.test_client(), token), 200)
    plain = make_app(fresh=True, FAST_PATHS=False, **REPEATED_LOGINS)
    client = plain.test_client()
    with plain.app_context():
        token = AuthActions(client).login()["accessToken"]
        parses = []
        real = jwt.get_unverified_header
        monkeypatch.setattr(
            jwt, "get_unverified_header", lambda encoded: parses.append(encoded) or real(encoded)
        )
        checks = count_signature_checks(monkeypatch)
        for _ in range(2):
            assert_envelope(me(client, token), 200)
    assert checks == [token] * 2
    # The library parses the header for the decode-key loader and again for the view decorators.
    assert parses == [token] * 4


@BOTH
def test_the_verified_token_cache_is_per_app_and_per_switch(make_app, fast, monkeypatch):
    app = make_app(fresh=True, FAST_PATHS=fast, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        token = AuthActions(client).login()["accessToken"]
        checks = count_signature_checks(monkeypatch)
        for _ in range(3):
            assert_envelope(me(client, token), 200)
    assert checks == [token] * (1 if fast else 3)


@BOTH
def test_claims_expiry_and_revocation_are_checked_either_way(make_app, fast):
    app = make_app(fresh=True, FAST_PATHS=fast, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        auth = AuthActions(client)
        login = auth.login()
        claims = jwt.decode(login["accessToken"], options={"verify_signature": False})
        for changes in ({"sid": "abc"}, {"jti": ""}, {"type": "id"}, {"sub": claims["sub"].upper()}):
            forged = jwt.encode({**claims, **changes}, TestingConfig.JWT_SECRET_KEY, algorithm="HS256")
            assert_error(me(client, forged), 401, MISSING)
        forged_refresh = jwt.encode(
            {**jwt.decode(login["refreshToken"], options={"verify_signature": False}), "sid": 7},
            TestingConfig.JWT_SECRET_KEY,
            algorithm="HS256",
        )
        response = client.post("/api/v1/auth/refresh", json={"refreshToken": forged_refresh})
        assert_error(response, 401, MISSING)
        assert_envelope(me(client, login["accessToken"]), 200)
        assert_envelope(logout(client, login["accessToken"]), 200, data={"revokedSessions": 1})
        assert_error(me(client, login["accessToken"]), 401, REVOKED)
        app.config["JWT_ACCESS_TOKEN_EXPIRES"] = 2  # read at each mint: this login's token is short-lived
        other = auth.login()
        assert_envelope(me(client, other["accessToken"]), 200)
        wait_past_expiry(other["accessToken"])
        assert_error(me(client, other["accessToken"]), 401, EXPIRED)


@BOTH
def test_no_cookie_is_ever_set(make_app, fast):
    app = make_app(fresh=True, FAST_PATHS=fast)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        for response in (client.get("/healthz"), me(client, login["accessToken"])):
            assert "Set-Cookie" not in response.headers
    if fast:
        with app.test_request_context("/"):
            from flask import session

            assert isinstance(session, NullSession)


@BOTH
def test_the_metrics_timer_is_the_first_hook(make_app, fast):
    app = make_app(FAST_PATHS=fast, RATELIMIT_ENABLED=True)
    assert app.before_request_funcs[None][0] is start_timer


# Explicit mechanisms, not patches: the same with the switch either way.


@BOTH
def test_get_me_declares_its_profile_read_and_only_it_prefetches(make_app, fast, monkeypatch):
    app = make_app(fresh=True, FAST_PATHS=fast)
    client = app.test_client()
    asked = []
    real = jwt_loaders.session_expiry
    monkeypatch.setattr(
        jwt_loaders, "session_expiry", lambda sid, prefetch=(): asked.append(prefetch) or real(sid, prefetch)
    )
    with app.app_context():
        login = AuthActions(client).login()
        assert_envelope(me(client, login["accessToken"]), 200, data=login["user"])
        assert_envelope(client.get("/api/v1/auth/sessions", headers=bearer(login["accessToken"])), 200)
    assert asked == [(PROFILE_CACHE_PREFIX + login["user"]["id"],), ()]


def test_a_raw_json_body_is_written_into_the_envelope_as_it_is(app):
    data = RawJSON(json.dumps({"id": str(uuid.uuid4()), "name": "Ada", "tags": ["a"]}, separators=(",", ":")))
    with app.test_request_context("/"):
        response = envelope_response(200, data)
        expected = envelope_response(200, json.loads(data))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body, plain = response.get_data(as_text=True), expected.get_data(as_text=True)
    assert body.endswith("}\n") and plain.endswith("}\n")
    # Key for key the same text as an envelope the JSON provider writes, up to the timestamp.
    assert json.loads(body).keys() == json.loads(plain).keys()
    assert body.split('"timestamp"')[0] == plain.split('"timestamp"')[0]
    assert_envelope(response, 200, data=json.loads(data))


SEGMENTS = [b"", b"eyJhIjoxfQ", b"eyJhIjoxfQ==", b"eyJhIjoxfQ=", b"eyJhIjoxfQ===", b"abc=", b"ab==", b"a",
            b"abcde", b"ab!d", b"ab+/", b"ab d", b"ab\xffd", b"abc", b"abd", b"=", b"===="]  # fmt: skip


@pytest.mark.parametrize("segment", SEGMENTS)
def test_the_one_parse_checks_a_segment_as_pyjwt_does(segment):
    def outcome(decode):
        try:
            return decode(segment, "payload")
        except jwt.DecodeError as error:
            return str(error)

    assert outcome(fast_paths.OneParseJWS._decode_base64url_segment) == outcome(
        PyJWS._decode_base64url_segment
    )


def forged(token, *, header=None, claims=None, key=None):
    """``token`` with its header or claims replaced, signed with ``key`` (else its own signature kept)."""
    head, body, signature = token.split(".")
    if header is not None:
        head = base64url_encode(json.dumps(header).encode()).decode()
    if claims is not None:
        body = base64url_encode(json.dumps(claims).encode()).decode()
    if key is not None:
        signing_input = f"{head}.{body}".encode()
        algorithm = jwt.get_algorithm_by_name("HS256")
        signature = base64url_encode(algorithm.sign(signing_input, algorithm.prepare_key(key))).decode()
    return f"{head}.{body}.{signature}"


@BOTH
def test_a_forged_refresh_token_is_refused_either_way(make_app, fast):
    app = make_app(fresh=True, FAST_PATHS=fast, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        refresh = AuthActions(client).login()["refreshToken"]
        own_claims = jwt.decode(refresh, options={"verify_signature": False})
        secret = app.config["JWT_SECRET_KEY"]
        tokens = [
            forged(refresh, claims={**own_claims, "sub": str(uuid.uuid4())}),  # signature no longer matches
            forged(refresh, claims={**own_claims, "exp": 1}, key=secret),  # expired
            forged(refresh, claims={**own_claims, "nbf": time.time() + 3600}, key=secret),  # not yet valid
            forged(refresh, claims={**own_claims, "iat": "soon"}, key=secret),  # a malformed claim
            forged(refresh, header={"alg": "none", "typ": "JWT"}),  # an algorithm not allowed
            forged(refresh, header={"alg": "HS256", "b64": False, "crit": ["b64"]}, key=secret),
            forged(refresh, header={"alg": "HS256", "crit": ["exp"]}, key=secret),
            forged(refresh, claims={**own_claims, "sid": "not-a-uuid"}, key=secret),  # not this service's
            forged(refresh, key="another key of the same length as the service's own, or longer"),
        ]
        for token in tokens:
            answer = client.post("/api/v1/auth/refresh", json={"refreshToken": token})
            assert answer.status_code == 401, token
        assert client.post("/api/v1/auth/refresh", json={"refreshToken": refresh}).status_code == 200
