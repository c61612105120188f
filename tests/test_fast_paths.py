"""The ``FAST_PATHS`` switch (allmine_auth/fast_paths.py): on, the overrides of library internals are on
the app; off, the app runs on the libraries' own code, even beside an app of the same process that has
them; and either way a token's claims, expiry and revocation are checked.

The whole suite runs both ways in CI (``.ci/run``: ``FAST_PATHS=0``); the tests here build their apps
with the setting they need.
"""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import flask.app
import flask_jwt_extended.tokens
import flask_limiter
import jwt
import jwt.algorithms
import jwt.warnings
import pytest
from flask.sessions import NullSession, SecureCookieSessionInterface
from flask_jwt_extended import create_access_token, create_refresh_token, view_decorators
from flask_limiter._limits import Limit, RouteLimit
from flask_limiter._manager import LimitManager
from flask_limiter.constants import ExemptionScope
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
    assert Limit.__iter__ is fast_paths.remembered_runtime_limits
    assert flask_limiter.Limiter.context is fast_paths.LIMITER_CONTEXT
    assert not hasattr(limiter.limit_manager.exemption_scope, "__func__")
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


# Minting: the fast path's tokens are the library's, byte for byte.

MINTED_AT = datetime(2026, 11, 29, 6, 30, 15, 987654, tzinfo=UTC)


class FrozenClock(datetime):
    """``datetime`` whose ``now`` is ``MINTED_AT``, for the library (``fast_paths.minting_now`` too)."""

    @classmethod
    def now(cls, tz=None):
        return MINTED_AT


def mint_both(make_app, monkeypatch, identity, token_type, claims, expires_delta, **settings):
    """The token the fast path mints and the one the library mints, at the same moment with the same UUIDs."""
    monkeypatch.setattr(fast_paths, "minting_now", lambda: MINTED_AT)
    monkeypatch.setattr(fast_paths, "token_id", lambda: str(uuid.uuid4()))  # the UUIDs drawn below
    monkeypatch.setattr(flask_jwt_extended.tokens, "datetime", FrozenClock)
    tokens = []
    for fast in (True, False):
        app = make_app(FAST_PATHS=fast, **settings)
        drawn = iter([uuid.UUID(int=n) for n in range(1, 4)])
        monkeypatch.setattr(uuid, "uuid4", lambda drawn=drawn: next(drawn))
        with app.app_context():
            create = create_access_token if token_type == "access" else create_refresh_token
            tokens.append(create(identity, additional_claims=claims, expires_delta=expires_delta))
    return tokens


LONG_KEY = "a secret long enough for HS512, which wants 64 bytes or more: 0123456789abcdef"
HS512 = {"JWT_ALGORITHM": "HS512", "JWT_ENCODE_NBF": False, "JWT_SECRET_KEY": LONG_KEY}
HS384 = {"JWT_ALGORITHM": "HS384", "JWT_IDENTITY_CLAIM": "user", "JWT_SECRET_KEY": LONG_KEY}
MINT_CASES = [
    ("access", {"sid": str(uuid.UUID(int=7)), "reg": True}, timedelta(seconds=3600), {}),
    ("refresh", {"sid": str(uuid.UUID(int=7)), "jti": str(uuid.UUID(int=9))}, timedelta(days=30), {}),
    ("access", {"sid": "s"}, timedelta(seconds=1, microseconds=500_000), {}),
    ("access", {"sid": "s"}, timedelta(0), {}),  # a falsy life: no exp, as the library does
    ("access", {"exp": MINTED_AT + timedelta(seconds=5)}, timedelta(seconds=60), {}),
    (
        "refresh",
        {},
        timedelta(seconds=60),
        HS512,
    ),
    (
        "access",
        {"sid": "s"},
        timedelta(seconds=60),
        {"JWT_ENCODE_ISSUER": "allmine", "JWT_ENCODE_AUDIENCE": "app"},
    ),
    (
        "access",
        {"sid": "ş"},
        timedelta(seconds=60),
        HS384,
    ),
]


@pytest.mark.parametrize(("token_type", "claims", "life", "settings"), MINT_CASES)
def test_a_minted_token_is_the_librarys_byte_for_byte(
    make_app, monkeypatch, token_type, claims, life, settings
):
    fast, library = mint_both(
        make_app, monkeypatch, str(uuid.UUID(int=5)), token_type, claims, life, **settings
    )
    assert fast == library
    # And read back: the same header and claims.
    key = settings.get("JWT_SECRET_KEY", TestingConfig.JWT_SECRET_KEY)
    algorithm = settings.get("JWT_ALGORITHM", "HS256")
    options = {"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False}
    assert (
        jwt.get_unverified_header(fast)
        == jwt.get_unverified_header(library)
        == {"alg": algorithm, "typ": "JWT"}
    )
    assert jwt.decode(fast, key, [algorithm], options=options) == jwt.decode(
        library, key, [algorithm], options=options
    )


def test_the_fast_path_mints_with_the_key_checked_once_and_again_when_it_changes(make_app, monkeypatch):
    app = make_app(FAST_PATHS=True)
    prepared = []
    real = jwt.algorithms.HMACAlgorithm.prepare_key
    monkeypatch.setattr(
        jwt.algorithms.HMACAlgorithm, "prepare_key", lambda self, key: prepared.append(key) or real(self, key)
    )
    with app.app_context():
        tokens = [create_access_token("u", expires_delta=timedelta(seconds=60)) for _ in range(3)]
        assert prepared == [TestingConfig.JWT_SECRET_KEY]
        app.config["JWT_SECRET_KEY"] = "another secret of enough length for HS256, 0123456789"
        rekeyed = create_access_token("u", expires_delta=timedelta(seconds=60))
    assert prepared == [TestingConfig.JWT_SECRET_KEY, app.config["JWT_SECRET_KEY"]]
    for token in tokens:
        assert jwt.decode(token, TestingConfig.JWT_SECRET_KEY, ["HS256"])["sub"] == "u"
    assert jwt.decode(rekeyed, app.config["JWT_SECRET_KEY"], ["HS256"])["sub"] == "u"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(rekeyed, TestingConfig.JWT_SECRET_KEY, ["HS256"])


@BOTH
def test_what_the_fast_path_does_not_mint_the_library_does(make_app, monkeypatch, fast):
    """A short key (the library warns on every mint), a header callback's extra header, a fresh token."""
    app = make_app(FAST_PATHS=fast, JWT_SECRET_KEY="short")
    with app.app_context(), pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
        create_access_token("u", expires_delta=timedelta(seconds=60))
    app = make_app(FAST_PATHS=fast)
    with app.app_context():
        monkeypatch.setitem(app.extensions, "allmine_jwt_headers", {"kid": "k1"})
        token = create_access_token("u", expires_delta=timedelta(seconds=60))
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
        fresh = create_access_token("u", fresh=True, expires_delta=timedelta(seconds=60))
        assert jwt.decode(fresh, TestingConfig.JWT_SECRET_KEY, ["HS256"])["fresh"] is True


# Flask's ensure_sync: a sync function is remembered, a coroutine function is Flask's every time.


def test_a_sync_function_is_asked_about_once_and_a_coroutine_function_every_time(make_app, monkeypatch):
    app = make_app(FAST_PATHS=True)
    asked = []
    real = flask.app.iscoroutinefunction
    monkeypatch.setattr(flask.app, "iscoroutinefunction", lambda func: asked.append(func) or real(func))
    monkeypatch.setattr(app, "async_to_sync", lambda func: ("wrapped", func))

    def hook():
        return None

    async def coroutine():
        return None

    class View:
        def get(self):
            return None

    assert [app.ensure_sync(hook) for _ in range(3)] == [hook] * 3
    assert [app.ensure_sync(coroutine) for _ in range(2)] == [("wrapped", coroutine)] * 2
    # A method of a new instance each time (a MethodView's view): remembered by its function, once.
    methods = [View().get for _ in range(3)]
    assert [app.ensure_sync(method) for method in methods] == methods
    assert asked == [hook, coroutine, coroutine, methods[0]]

    class Unhashable:
        __eq__ = object.__eq__
        __hash__ = None

        def __call__(self):
            return None

    callable_object = Unhashable()
    assert [app.ensure_sync(callable_object) for _ in range(2)] == [callable_object] * 2
    assert asked[4:] == [callable_object] * 2
    plain = make_app(FAST_PATHS=False)
    assert plain.ensure_sync(hook) is hook
    assert "ensure_sync" not in vars(plain)


@BOTH
def test_a_decoded_tokens_key_is_prepared_once_and_a_wrong_signature_still_refused(  # noqa: E501
    make_app, monkeypatch, fast
):
    app = make_app(fresh=True, FAST_PATHS=fast, **REPEATED_LOGINS)
    client = app.test_client()
    fast_paths.ONE_PARSE._prepared_keys.clear()
    with app.app_context():
        refresh = AuthActions(client).login()["refreshToken"]
        secret = app.config["JWT_SECRET_KEY"]
        own_claims = jwt.decode(refresh, options={"verify_signature": False})
        refused = [
            forged(refresh, key="another key of the same length as the service's own, or longer"),
            forged(refresh, claims={**own_claims, "sub": str(uuid.uuid4())}),
            forged(refresh, header={"alg": ["HS256"], "typ": "JWT"}, key=secret),
            forged(refresh, header={"alg": "HS512", "typ": "JWT"}, key=secret),
        ]
        prepared = []
        real = jwt.algorithms.HMACAlgorithm.prepare_key
        monkeypatch.setattr(
            jwt.algorithms.HMACAlgorithm,
            "prepare_key",
            lambda self, key: prepared.append(key) or real(self, key),
        )
        for _ in range(3):
            response = client.post("/api/v1/auth/refresh", json={"refreshToken": refresh})
            refresh = assert_envelope(response, 200)["refreshToken"]
        for token in refused:
            response = client.post("/api/v1/auth/refresh", json={"refreshToken": token})
            assert_error(response, 401, MISSING)
    # The fast path: PyJWT's own check once, then once more to remember the key; the library: every time.
    if fast:
        assert prepared == [secret, secret]
    else:
        assert len(prepared) >= 3


def test_a_minted_token_id_is_a_random_version_4_uuid_as_the_library_writes_it():
    made = {fast_paths.token_id() for _ in range(200)}
    assert len(made) == 200
    for token_id in made:
        parsed = uuid.UUID(token_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, token_id)


# flask-limiter: a route's limits remembered

REFRESH = "/api/v1/auth/refresh"
VERIFY = "/api/v1/auth/verify-otp"
TOO_MANY = "Too many requests"


def limited_apps(make_app, **settings):
    """An app with the fast paths and one without, on the same rate-limit storage: the one limiter of
    the process counts in the storage of the app built last, and both apps use it."""
    fast = make_app(fresh=True, FAST_PATHS=True, RATELIMIT_ENABLED=True, **settings)
    plain = make_app(fresh=True, FAST_PATHS=False, RATELIMIT_ENABLED=True, **settings)
    return fast, plain


def limit_key(app, path, scope, window):
    """The storage key flask-limiter counts ``path``'s limit under (``scope``: a shared limit's, or None)."""
    endpoint, _ = app.url_map.bind("localhost").match(path, method="POST")
    return f"LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/127.0.0.1/{scope or endpoint}/{window}"


def refresh(app):
    return app.test_client().post(REFRESH, json={"refreshToken": "x"})


@BOTH
def test_a_routes_limit_is_counted_under_the_librarys_key_whichever_app_counts(make_app, fast):
    fast_app, plain = limited_apps(make_app, RATELIMIT_REFRESH="3/minute", RATELIMIT_VERIFY="2/minute")
    first, second = (fast_app, plain) if fast else (plain, fast_app)
    key = limit_key(first, REFRESH, None, "3/1/minute")
    for n, app in enumerate([first, second, first]):
        with app.app_context():
            assert_error(refresh(app), 401, MISSING)
        assert limiter.storage.get(key) == n + 1
    with second.app_context():
        response = refresh(second)
        assert_error(response, 429, TOO_MANY)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    with first.app_context():
        assert_error(refresh(first), 429, TOO_MANY)
    assert limiter.storage.get(key) == 5
    # A shared limit (scope ``verify``): the same.
    key = limit_key(first, VERIFY, "verify", "2/1/minute")
    body = {"countryCode": "90", "phoneNumber": "5321234567", "code": "0000"}
    for app in (first, second):
        with app.app_context():
            assert_error(app.test_client().post(VERIFY, json=body), 401, "Invalid or expired code")
    assert limiter.storage.get(key) == 2
    with first.app_context():
        assert_error(first.test_client().post(VERIFY, json=body), 429, TOO_MANY)


@BOTH
def test_a_limit_changed_in_the_config_takes_effect_on_the_next_request(make_app, fast):
    app = make_app(fresh=True, FAST_PATHS=fast, RATELIMIT_ENABLED=True, RATELIMIT_REFRESH="5/minute")
    with app.app_context():
        assert_error(refresh(app), 401, MISSING)
        app.config["RATELIMIT_REFRESH"] = "1/minute"
        assert_error(refresh(app), 401, MISSING)
        assert_error(refresh(app), 429, TOO_MANY)
        app.config["RATELIMIT_REFRESH"] = "5/minute"
        assert_error(refresh(app), 401, MISSING)
    assert limiter.storage.get(limit_key(app, REFRESH, None, "5/1/minute")) == 2
    assert limiter.storage.get(limit_key(app, REFRESH, None, "1/1/minute")) == 2


def test_a_routes_remembered_limits_are_the_ones_the_library_builds(make_app, monkeypatch):
    app = make_app(FAST_PATHS=True, RATELIMIT_ENABLED=True)
    route_limits = [limit for group in limiter.limit_manager._decorated_limits.values() for limit in group]
    assert {type(limit) for limit in route_limits} == {RouteLimit}
    assert len(route_limits) >= 4
    with app.test_request_context():
        for limit in route_limits:
            remembered = list(limit)
            assert remembered == list(fast_paths.LIBRARY_LIMIT_ITER(limit))
            assert all(a is b for a, b in zip(list(limit), remembered, strict=True))  # built once
        # A changed string is another entry; a string the library can't parse raises its error.
        monkeypatch.setitem(app.config, "RATELIMIT_REFRESH", "7/second;9 per 2 hours")
        named = {getattr(limit.limit_provider, "__name__", ""): limit for limit in route_limits}
        refresh_limit = named["refresh_limit"]
        assert [str(each.limit) for each in refresh_limit] == ["7 per 1 second", "9 per 2 hour"]
        monkeypatch.setitem(app.config, "RATELIMIT_REFRESH", "often")
        with pytest.raises(ValueError, match="couldn't parse rate limit string"):
            list(refresh_limit)
    plain = make_app(FAST_PATHS=False, RATELIMIT_ENABLED=True)
    with plain.test_request_context():
        monkeypatch.setitem(plain.config, "RATELIMIT_REFRESH", "3/minute")
        built = list(refresh_limit)
        assert built == list(fast_paths.LIBRARY_LIMIT_ITER(refresh_limit))
        assert all(a is not b for a, b in zip(list(refresh_limit), built, strict=True))  # the library's


def test_a_routes_exemption_scope_is_the_librarys_with_or_without_exemptions(make_app, monkeypatch):
    app = make_app(FAST_PATHS=True, RATELIMIT_ENABLED=True)
    manager = limiter.limit_manager
    endpoints = [(endpoint, endpoint.rpartition(".")[0] or None) for endpoint in app.view_functions]

    def both_answers():
        fast = [manager.exemption_scope(app, *each) for each in endpoints]
        library = [LimitManager.exemption_scope(manager, app, *each) for each in endpoints]
        assert fast == library
        return fast

    assert set(both_answers()) == {ExemptionScope.NONE}
    refresh_view = app.view_functions[app.url_map.bind("localhost").match(REFRESH, method="POST")[0]]
    monkeypatch.setitem(
        limiter._route_exemptions, fast_paths.get_qualified_name(refresh_view), ExemptionScope.DEFAULT
    )
    assert set(both_answers()) == {ExemptionScope.NONE, ExemptionScope.DEFAULT}
    monkeypatch.setitem(limiter._blueprint_exemptions, "Authentication", ExemptionScope.META)
    assert ExemptionScope.META | ExemptionScope.DEFAULT in both_answers()


@BOTH
def test_the_limiters_request_state_is_the_one_the_library_keeps(make_app, fast):
    app = make_app(FAST_PATHS=fast, RATELIMIT_ENABLED=True)
    library = fast_paths.LIBRARY_LIMITER_CONTEXT.fget
    with app.test_request_context():
        state = limiter.context
        assert state is library(limiter) is limiter.context
        state.seen_limits.add("x")
        assert flask.globals.request_ctx._limiter_request_context[limiter].seen_limits == {"x"}
    with app.test_request_context():
        assert limiter.context is library(limiter)
        assert not limiter.context.seen_limits
    with pytest.raises(RuntimeError, match="outside of request context"):
        limiter.context  # noqa: B018
