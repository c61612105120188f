"""Tokens and sessions: claims, lifetimes, rotation with reuse detection, revocation, the JWKS.

One test (or parametrized case) per rule of API.md's "Tokens and sessions",
through the HTTP API; where time has to move, through
``rotate_refresh_token(..., now=...)`` or by moving a stored timestamp.
"""

import base64
import json
import os
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask_jwt_extended import get_jwt, get_jwt_header, verify_jwt_in_request
from jwt.api_jws import PyJWS
from jwt.utils import base64url_encode

from allmine_auth.config import ConfigError
from allmine_auth.errors import TokenRevoked
from allmine_auth.extensions import db
from allmine_auth.fast_paths import OneParseJWS
from allmine_auth.models import LoginSession, OneTimeCode, User, utcnow
from allmine_auth.rules import sessions
from allmine_auth.store.unit_of_work import unit_of_work
from allmine_auth.web.envelope import utc_timestamp
from tests.clock import wait_past_expiry
from tests.conftest import AuthActions, assert_envelope, assert_error, bearer

ACCESS_SECONDS = 3600
REFRESH_SECONDS = 2592000
MISSING = "Missing or invalid token"
EXPIRED = "Token has expired"
REVOKED = "Token has been revoked"
NOT_FOUND = "Resource not found"
OTHER_PHONE = {"countryCode": "90", "phoneNumber": "5329876543"}
TOKEN_PAIR = {"accessToken", "refreshToken", "expiresIn", "refreshExpiresIn"}
# A foreign HMAC key, long enough that PyJWT doesn't warn about it.
FOREIGN_SECRET = "another-secret-that-is-long-enough-0123456789"
# One person logs in several times in a test (several sessions): no resend wait, no send caps.
REPEATED_LOGINS = {"OTP_RESEND_INTERVAL": 0, "OTP_MAX_SENDS_10MIN": 100, "OTP_MAX_SENDS_24H": 100}
needs_redis = pytest.mark.skipif(
    not os.environ.get("TEST_REDIS_URL"), reason="the session-state cache needs TEST_REDIS_URL"
)


@pytest.fixture
def config_overrides():
    return REPEATED_LOGINS


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def sid(pair):
    return claims(pair["accessToken"])["sid"]


def me(client, access_token):
    return client.get("/api/v1/auth/me", headers=bearer(access_token))


def refresh(client, refresh_token):
    return client.post("/api/v1/auth/refresh", json={"refreshToken": refresh_token})


def logout(client, access_token, scope=None):
    query = {"scope": scope} if scope is not None else {}
    return client.post("/api/v1/auth/logout", headers=bearer(access_token), query_string=query)


def delete_session(client, access_token, session_id):
    return client.delete(f"/api/v1/auth/sessions/{session_id}", headers=bearer(access_token))


def login_from(auth, headers):
    """Log in sending ``headers`` with the verify request (the device is read from them)."""
    code = assert_envelope(auth.send(), 201)["code"]
    return assert_envelope(auth.verify(code, headers=headers), 200)


def session_row(pair):
    return db.session.get(LoginSession, uuid.UUID(sid(pair)), populate_existing=True)


def session_states():
    """Every session's id, end and revocation, read fresh (to show that nothing changed)."""
    return db.session.execute(
        sa.select(
            LoginSession.id, LoginSession.expires_at, LoginSession.revoked_at, LoginSession.revoked_reason
        ).order_by(LoginSession.id)
    ).all()


def end_by_time(pair):
    """Move the session's end into the past, as if its 30 days were over."""
    db.session.execute(
        sa.update(LoginSession)
        .where(LoginSession.id == uuid.UUID(sid(pair)))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def assert_token_pair(data, full_life=True):
    """A refresh answer: a new pair, lifetimes that match the tokens' own ``exp - iat``.

    ``full_life=False``: a retry inside the reuse interval gets the session's current refresh token
    again, which lives to the end the rotation a moment ago gave the session.
    """
    assert set(data) == TOKEN_PAIR
    access, refreshed = claims(data["accessToken"]), claims(data["refreshToken"])
    assert data["expiresIn"] == ACCESS_SECONDS == access["exp"] - access["iat"]
    assert data["refreshExpiresIn"] == refreshed["exp"] - refreshed["iat"]
    # Each refresh gives a refresh token of the full life (the session's end moves with it).
    if full_life:
        assert data["refreshExpiresIn"] == REFRESH_SECONDS
    else:
        assert REFRESH_SECONDS - 10 <= data["refreshExpiresIn"] <= REFRESH_SECONDS
    return access, refreshed


def assert_works(client, pair):
    """The access token opens /me as its user and the refresh token rotates."""
    assert assert_envelope(me(client, pair["accessToken"]), 200)["id"] == claims(pair["accessToken"])["sub"]
    assert_token_pair(assert_envelope(refresh(client, pair["refreshToken"]), 200))


def assert_dead(client, pair):
    """Both tokens of the pair answer 401 "Token has been revoked"."""
    assert_error(me(client, pair["accessToken"]), 401, REVOKED)
    assert_error(refresh(client, pair["refreshToken"]), 401, REVOKED)


def b64url(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def malformed(app, token):
    return "not-a-jwt"


def foreign_signature(app, token):
    return jwt.encode(claims(token), FOREIGN_SECRET, algorithm="HS256")


def tampered_payload(app, token):
    header, _, signature = token.split(".")
    return f"{header}.{b64url({**claims(token), 'sub': str(uuid.uuid4())})}.{signature}"


def unsigned(app, token):
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims(token))}."


def expired(app, token):
    now = int(time.time())
    payload = {**claims(token), "iat": now - 7200, "nbf": now - 7200, "exp": now - 60}
    return jwt.encode(payload, app.config["JWT_SECRET_KEY"], algorithm="HS256")


# Tokens and sessions


def test_verify_answers_with_a_pair_whose_claims_name_the_user_and_the_new_session(client, auth):
    code = auth.send().get_json()["data"]["code"]
    data = assert_envelope(auth.verify(code), 200)
    user = db.session.scalar(sa.select(User))
    session = db.session.scalar(sa.select(LoginSession))
    assert data == {
        "accessToken": data["accessToken"],
        "refreshToken": data["refreshToken"],
        "expiresIn": ACCESS_SECONDS,
        "refreshExpiresIn": REFRESH_SECONDS,
        "user": data["user"],
        "isRegistrationComplete": False,
    }
    assert data["user"]["id"] == str(user.id)
    access, refreshed = claims(data["accessToken"]), claims(data["refreshToken"])
    assert {key: access[key] for key in ("sub", "sid", "type", "reg")} == {
        "sub": str(user.id),
        "sid": str(session.id),
        "type": "access",
        "reg": False,
    }
    assert {key: refreshed[key] for key in ("sub", "sid", "type", "jti")} == {
        "sub": str(user.id),
        "sid": str(session.id),
        "type": "refresh",
        "jti": session.refresh_jti,
    }
    assert "reg" not in refreshed
    assert uuid.UUID(access["jti"]) != uuid.UUID(refreshed["jti"])
    assert access["exp"] - access["iat"] == ACCESS_SECONDS
    assert refreshed["exp"] - refreshed["iat"] == REFRESH_SECONDS
    assert session.expires_at - session.created_at == timedelta(seconds=REFRESH_SECONDS)


def test_refresh_rotates_the_pair_and_the_session_follows_the_new_refresh_token(client, auth):
    login = auth.login()
    data = assert_envelope(refresh(client, login["refreshToken"]), 200)
    access, refreshed = assert_token_pair(data)
    old = claims(login["refreshToken"])
    assert (access["sid"], refreshed["sid"]) == (old["sid"], old["sid"])
    assert access["jti"] != claims(login["accessToken"])["jti"]
    assert refreshed["jti"] != old["jti"]
    session = session_row(login)
    assert (session.refresh_jti, session.previous_refresh_jti) == (refreshed["jti"], old["jti"])
    assert_envelope(me(client, data["accessToken"]), 200, data=login["user"])


def test_the_reg_claim_follows_the_account_at_the_next_refresh(client, auth):
    login = auth.login()
    db.session.execute(sa.update(User).values(is_registration_complete=True))
    db.session.commit()
    access, _ = assert_token_pair(assert_envelope(refresh(client, login["refreshToken"]), 200))
    assert access["reg"] is True


def test_a_retry_inside_the_reuse_interval_gets_the_current_pair_and_the_session_lives(client, auth):
    login = auth.login()
    first = assert_envelope(refresh(client, login["refreshToken"]), 200)
    retry = assert_envelope(refresh(client, login["refreshToken"]), 200)
    assert_token_pair(retry, full_life=False)
    current_jti = claims(first["refreshToken"])["jti"]
    assert claims(retry["refreshToken"])["jti"] == current_jti
    session = session_row(login)
    assert (session.revoked_at, session.refresh_jti) == (None, current_jti)
    assert_envelope(me(client, first["accessToken"]), 200)
    assert_works(client, retry)


@pytest.mark.parametrize("config_overrides", [{**REPEATED_LOGINS, "REFRESH_TOKEN_REUSE_INTERVAL": 0}])
def test_reuse_after_the_interval_revokes_that_whole_session_only(client, auth):
    stolen = auth.login()
    other = auth.login()
    newest = assert_envelope(refresh(client, stolen["refreshToken"]), 200)
    assert_error(refresh(client, stolen["refreshToken"]), 401, REVOKED)
    assert_dead(client, newest)
    assert_error(me(client, stolen["accessToken"]), 401, REVOKED)
    assert session_row(stolen).revoked_reason == "reuse"
    assert_works(client, other)


def test_a_rotated_refresh_token_is_dead_once_the_interval_is_over(app, client, auth):
    login = auth.login()
    newest = assert_envelope(refresh(client, login["refreshToken"]), 200)
    later = utcnow() + timedelta(seconds=app.config["REFRESH_TOKEN_REUSE_INTERVAL"] + 1)
    with pytest.raises(TokenRevoked), unit_of_work():
        sessions.rotate_refresh_token(login["refreshToken"], now=later)
    assert_dead(client, newest)


def test_a_refresh_token_is_refused_where_an_access_token_is_expected(client, auth):
    login = auth.login()
    assert_error(me(client, login["refreshToken"]), 401, MISSING)
    assert_error(logout(client, login["refreshToken"]), 401, MISSING)
    assert_works(client, login)


def test_an_access_token_is_refused_by_refresh(client, auth):
    login = auth.login()
    assert_error(refresh(client, login["accessToken"]), 401, MISSING)
    assert session_row(login).previous_refresh_jti is None
    assert_works(client, login)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/auth/me"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/auth/sessions"),
        ("delete", f"/api/v1/auth/sessions/{uuid.uuid4()}"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["no header", "empty bearer", "basic scheme"],
)
def test_a_missing_token_is_refused(client, method, path, headers):
    assert_error(getattr(client, method)(path, headers=headers), 401, MISSING)


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        (malformed, MISSING),
        (foreign_signature, MISSING),
        (tampered_payload, MISSING),
        (unsigned, MISSING),
        (expired, EXPIRED),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_a_bad_token_is_refused(app, client, auth, forge, error, kind):
    login = auth.login()
    if kind == "access":
        response = me(client, forge(app, login["accessToken"]))
    else:
        response = refresh(client, forge(app, login["refreshToken"]))
    assert_error(response, 401, error)
    assert session_row(login).revoked_at is None


def test_refresh_without_a_token_is_a_validation_error(client):
    assert_error(
        client.post("/api/v1/auth/refresh", json={}),
        400,
        "Validation failed",
        "refreshToken: Missing data for required field.",
    )


def test_logout_by_default_ends_every_session_and_every_token_of_the_user(client, auth):
    first = auth.login()
    second = auth.login()
    rotated = assert_envelope(refresh(client, second["refreshToken"]), 200)
    stranger = auth.login(OTHER_PHONE)
    assert_envelope(logout(client, first["accessToken"]), 200, data={"revokedSessions": 2})
    for pair in (first, second, rotated):
        assert_dead(client, pair)
    assert {row.revoked_reason for row in session_states() if str(row.id) != sid(stranger)} == {"logout"}
    assert_works(client, stranger)


@pytest.mark.parametrize(
    ("scope", "ended", "survivor"),
    [("global", 2, None), ("local", 1, "other"), ("others", 1, "current")],
)
def test_logout_ends_the_sessions_its_scope_names(client, auth, scope, ended, survivor):
    pairs = {"current": auth.login(), "other": auth.login()}
    stranger = auth.login(OTHER_PHONE)
    assert_envelope(
        logout(client, pairs["current"]["accessToken"], scope), 200, data={"revokedSessions": ended}
    )
    for name, pair in pairs.items():
        if name == survivor:
            assert_works(client, pair)
        else:
            assert_dead(client, pair)
    assert_works(client, stranger)


def test_an_unknown_logout_scope_is_refused_and_ends_nothing(client, auth):
    current, other = auth.login(), auth.login()
    before = session_states()
    assert_error(
        logout(client, current["accessToken"], "bogus"),
        400,
        "Validation failed",
        "scope: Must be one of: global, local, others.",
    )
    assert session_states() == before
    assert_works(client, current)
    assert_works(client, other)


def test_me_returns_the_whole_user(client, auth):
    login = auth.login()
    assert_envelope(me(client, login["accessToken"]), 200, data=login["user"])


def test_me_is_compact_json_in_the_envelope_order_like_every_answer(app, client, auth):
    login = auth.login()
    for _ in range(2):  # filling the profile cache (with Redis), then from it
        response = me(client, login["accessToken"])
        assert response.get_data(as_text=True) == app.json.dumps(response.get_json()) + "\n"
        assert response.get_data(as_text=True).startswith('{"isSuccess":true,"statusCode":200,"data":{')
        assert response.mimetype == "application/json"


def test_sessions_lists_the_active_sessions_with_their_device_and_the_current_flag(client, auth):
    phone = login_from(auth, {"User-Agent": "Allmine/2.3 (iPhone; iOS 18.1)"})
    tablet = login_from(auth, {"User-Agent": "okhttp/4.12.0", "X-Device-Name": "Ayse's Pixel Tablet"})
    assert_envelope(logout(client, auth.login()["accessToken"], "local"), 200, data={"revokedSessions": 1})
    auth.login(OTHER_PHONE)
    rows = {
        str(row.id): row
        for row in db.session.scalars(sa.select(LoginSession).execution_options(populate_existing=True))
    }

    def listed(pair, current):
        row = rows[sid(pair)]
        return {
            "id": str(row.id),
            "device": row.device,
            "ip": row.ip,
            "createdAt": utc_timestamp(row.created_at),
            "lastUsedAt": utc_timestamp(row.last_used_at),
            "expiresAt": utc_timestamp(row.expires_at),
            "current": current,
        }

    response = client.get("/api/v1/auth/sessions", headers=bearer(tablet["accessToken"]))
    assert_envelope(response, 200, data=[listed(tablet, True), listed(phone, False)])
    assert rows[sid(phone)].device == "Allmine/2.3 (iPhone; iOS 18.1)"
    assert rows[sid(tablet)].device == "Ayse's Pixel Tablet"
    assert rows[sid(phone)].ip == "127.0.0.1"


def test_deleting_a_session_ends_it_and_only_it(client, auth):
    current, doomed = auth.login(), auth.login()
    response = delete_session(client, current["accessToken"], sid(doomed))
    assert_envelope(response, 200, data={"revokedSessions": 1})
    assert_dead(client, doomed)
    listing = assert_envelope(
        client.get("/api/v1/auth/sessions", headers=bearer(current["accessToken"])), 200
    )
    assert [item["id"] for item in listing] == [sid(current)]
    assert_works(client, current)


@pytest.mark.parametrize("target", ["another user's", "unknown", "not a uuid", "ended", "past its end"])
def test_deleting_a_session_that_is_not_an_active_one_of_ones_own_is_not_found(client, auth, target):
    current = auth.login()
    stranger = auth.login(OTHER_PHONE)
    if target == "another user's":
        session_id = sid(stranger)
    elif target == "unknown":
        session_id = uuid.uuid4()
    elif target == "not a uuid":
        session_id = "not-a-uuid"
    else:
        over = auth.login()
        session_id = sid(over)
        if target == "ended":
            assert_envelope(logout(client, over["accessToken"], "local"), 200, data={"revokedSessions": 1})
        else:
            end_by_time(over)
    before = session_states()
    assert_error(delete_session(client, current["accessToken"], session_id), 404, NOT_FOUND)
    assert session_states() == before
    assert_works(client, current)
    assert_works(client, stranger)


def test_a_session_ends_at_its_end_time_even_with_unexpired_tokens(client, auth):
    login = auth.login()
    other = auth.login()
    end_by_time(login)
    assert_dead(client, login)
    assert_works(client, other)


def test_each_refresh_gives_the_session_a_full_life_again(app, auth):
    login = auth.login()
    end = session_row(login).expires_at
    later = end - timedelta(seconds=100)  # a user who refreshes once every 30 days stays logged in
    with unit_of_work():
        pair = sessions.rotate_refresh_token(login["refreshToken"], now=later)
    refreshed = claims(pair.refresh_token)
    assert pair.refresh_expires_in == REFRESH_SECONDS == refreshed["exp"] - refreshed["iat"]
    assert session_row(login).expires_at == later + timedelta(seconds=REFRESH_SECONDS)
    with pytest.raises(TokenRevoked), unit_of_work():  # 30 days without a refresh end it
        sessions.rotate_refresh_token(pair.refresh_token, now=later + timedelta(seconds=REFRESH_SECONDS + 1))


@pytest.mark.parametrize("config_overrides", [{**REPEATED_LOGINS, "SESSION_MAX_AGE": 120}])
def test_session_max_age_bounds_a_session_from_its_login(app, auth):
    login = auth.login()
    assert login["refreshExpiresIn"] == 120
    session = session_row(login)
    assert session.expires_at - session.created_at == timedelta(seconds=120)
    # A refresh does not move an absolute end: the refresh token lives to it.
    with unit_of_work():
        pair = sessions.rotate_refresh_token(
            login["refreshToken"], now=session.created_at + timedelta(seconds=20)
        )
    assert (
        pair.refresh_expires_in
        == 100
        == claims(pair.refresh_token)["exp"] - claims(pair.refresh_token)["iat"]
    )
    assert session_row(login).expires_at == session.created_at + timedelta(seconds=120)
    with pytest.raises(TokenRevoked), unit_of_work():
        sessions.rotate_refresh_token(pair.refresh_token, now=session.created_at + timedelta(seconds=121))
    assert session_row(login).revoked_at is None


def test_purge_deletes_expired_codes_and_ended_sessions(client, auth, runner, unique_phone):
    active = auth.login()
    assert_envelope(logout(client, auth.login()["accessToken"], "local"), 200, data={"revokedSessions": 1})
    end_by_time(auth.login())
    live_phone, stale_phone = unique_phone(), unique_phone()
    assert_envelope(auth.send(live_phone), 201)
    assert_envelope(auth.send(stale_phone), 201)
    stale = "+90" + stale_phone["phoneNumber"]
    db.session.execute(
        sa.update(OneTimeCode)
        .where(OneTimeCode.destination == stale)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Purged 1 expired codes, 2 ended sessions and 0 expired Live Activities; "
        "erased 0 accounts whose deletion was due.\nPurged 0 audit events older than 365 days.\n"
    )
    assert [str(row.id) for row in session_states()] == [sid(active)]
    assert db.session.scalars(sa.select(OneTimeCode.destination)).all() == ["+90" + live_phone["phoneNumber"]]
    assert_works(client, active)


# The session-state cache (Redis)


def capture_statements():
    """Collect the SQL the app sends until the returned ``stop()`` is called."""
    statements = []

    def collect(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", collect)
    return statements, lambda: sa.event.remove(db.engine, "before_cursor_execute", collect)


@needs_redis
def test_the_session_state_is_cached_and_a_logout_is_seen_at_once(app, client, auth):
    login = auth.login()
    cache = app.extensions["allmine_redis"]
    key = sessions.SESSION_CACHE_PREFIX + sid(login)
    assert cache.get(key) is None
    assert_envelope(me(client, login["accessToken"]), 200)
    assert float(cache.get(key)) == session_row(login).expires_at.timestamp()
    assert 0 < cache.ttl(key) <= app.config["SESSION_CACHE_TTL"]
    statements, stop = capture_statements()
    try:
        assert_envelope(me(client, login["accessToken"]), 200)
    finally:
        stop()
    # The revocation check of a cached session is one Redis read, no query on the sessions table.
    assert not [statement for statement in statements if "sessions" in statement]
    assert_envelope(logout(client, login["accessToken"]), 200, data={"revokedSessions": 1})
    assert cache.get(key) == sessions.REVOKED
    assert_dead(client, login)


@needs_redis
def test_a_cache_fill_racing_a_logout_does_not_bring_the_session_back(app, client, auth, monkeypatch):
    login = auth.login()
    real = app.extensions["allmine_redis"]

    class LogoutBeforeFill:
        """A Redis client on which another worker's logout commits between our read and our fill."""

        def __getattr__(self, name):
            return getattr(real, name)

        def set(self, *args, **kwargs):
            # The race happens once; the logout itself talks to the real client.
            monkeypatch.setitem(app.extensions, "allmine_redis", real)
            with db.engine.begin() as connection:
                connection.execute(
                    sa.update(LoginSession)
                    .where(LoginSession.id == uuid.UUID(sid(login)))
                    .values(revoked_at=utcnow(), revoked_reason="logout")
                )
            # What the logout's commit writes: the revocation mark.
            real.set(sessions.SESSION_CACHE_PREFIX + sid(login), sessions.REVOKED, ex=300)
            return real.set(*args, **kwargs)

    # Worker B misses the cache and reads "active" from the database; worker A's logout commits and
    # marks the session revoked in Redis; then B writes its "active" into the cache. That stale entry
    # must not outlive the logout (it would for SESSION_CACHE_TTL if the fill overwrote the mark).
    monkeypatch.setitem(app.extensions, "allmine_redis", LogoutBeforeFill())
    # This request read the session before the logout committed: it may still pass.
    assert_envelope(me(client, login["accessToken"]), 200)
    assert_dead(client, login)


# The verified-token cache (allmine_auth/fast_paths.py): these tests build their app with the fast
# paths whatever FAST_PATHS says; the others hold either way.
WITH_FAST_PATHS = pytest.mark.parametrize("config_overrides", [{"FAST_PATHS": True}], ids=["fast paths"])


def count_signature_checks(monkeypatch):
    """Count PyJWT's signature checks from now on, each as the token it checked.

    Every verified decode checks the signature in ``PyJWS._verify_signature``, ``jwt.decode`` and
    the fast paths' one parse alike, or with a key the fast paths prepared before in
    ``OneParseJWS._verify_hmac``; the token is its signing input and its signature re-encoded.
    """
    calls = []
    real = PyJWS._verify_signature
    real_hmac = OneParseJWS._verify_hmac

    def counting(self, signing_input, header, signature, *args, **kwargs):
        calls.append(f"{signing_input.decode()}.{base64url_encode(signature).decode()}")
        return real(self, signing_input, header, signature, *args, **kwargs)

    def counting_hmac(signing_input, alg, signature, prepared):
        calls.append(f"{signing_input.decode()}.{base64url_encode(signature).decode()}")
        return real_hmac(signing_input, alg, signature, prepared)

    monkeypatch.setattr(PyJWS, "_verify_signature", counting)
    monkeypatch.setattr(OneParseJWS, "_verify_hmac", staticmethod(counting_hmac))
    return calls


@WITH_FAST_PATHS
def test_an_access_token_is_verified_once_per_worker_and_still_checked_for_revocation(
    app, client, auth, monkeypatch
):
    login = auth.login()
    checks = count_signature_checks(monkeypatch)
    assert_envelope(me(client, login["accessToken"]), 200)
    assert checks == [login["accessToken"]]
    assert_envelope(me(client, login["accessToken"]), 200)
    assert checks == [login["accessToken"]]  # the second call skipped the signature check
    assert_envelope(logout(client, login["accessToken"]), 200, data={"revokedSessions": 1})
    assert_error(me(client, login["accessToken"]), 401, REVOKED)
    assert checks == [login["accessToken"]]


@WITH_FAST_PATHS
def test_a_remembered_token_keeps_its_header_without_a_second_parse(app, auth, monkeypatch):
    token = auth.login()["accessToken"]
    parses = []
    real = jwt.get_unverified_header
    monkeypatch.setattr(jwt, "get_unverified_header", lambda encoded: parses.append(encoded) or real(encoded))
    for _ in range(2):
        with app.test_request_context(headers={"Authorization": f"Bearer {token}"}):
            verify_jwt_in_request()
            assert get_jwt_header() == {"alg": "HS256", "typ": "JWT"}
            assert get_jwt()["sub"] == claims(token)["sub"]
    # The header was remembered from the one parse that verified the token: no request parses it again.
    assert parses == []


def test_a_remembered_access_token_is_refused_once_it_expires(make_app):
    app = make_app(fresh=True, JWT_ACCESS_TOKEN_EXPIRES=2, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        assert_envelope(me(client, login["accessToken"]), 200)
        wait_past_expiry(login["accessToken"])
        assert_error(me(client, login["accessToken"]), 401, EXPIRED)


@pytest.mark.parametrize("leeway", [5, timedelta(seconds=5)], ids=["seconds", "timedelta"])
def test_a_remembered_token_honours_the_decode_leeway(make_app, leeway):
    app = make_app(fresh=True, JWT_DECODE_LEEWAY=leeway, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        for _ in range(2):
            assert_envelope(me(client, login["accessToken"]), 200)


def test_the_cache_keeps_the_newest_tokens_up_to_its_size(make_app, monkeypatch):
    app = make_app(fresh=True, FAST_PATHS=True, JWT_VERIFIED_CACHE_SIZE=2, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        auth = AuthActions(client)
        pairs = [auth.login() for _ in range(3)]
        for pair in pairs:
            assert_envelope(me(client, pair["accessToken"]), 200)
        checks = count_signature_checks(monkeypatch)
        for pair in reversed(pairs):
            assert_envelope(me(client, pair["accessToken"]), 200)
    # The two newest were remembered; the oldest was checked again.
    assert checks == [pairs[0]["accessToken"]]


def test_a_cache_size_of_zero_checks_every_time(make_app, monkeypatch):
    app = make_app(fresh=True, JWT_VERIFIED_CACHE_SIZE=0, **REPEATED_LOGINS)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        checks = count_signature_checks(monkeypatch)
        for _ in range(2):
            assert_envelope(me(client, login["accessToken"]), 200)
    assert checks == [login["accessToken"]] * 2


def test_a_token_remembered_by_one_app_is_not_trusted_by_an_app_with_another_key(make_app, client, auth):
    login = auth.login()
    assert_envelope(me(client, login["accessToken"]), 200)
    other = make_app(JWT_SECRET_KEY=FOREIGN_SECRET)
    assert_error(me(other.test_client(), login["accessToken"]), 401, MISSING)


# Signing keys and the JWKS


def write_key(path, key):
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(path)


def test_hs256_publishes_no_keys_and_names_none(client, auth):
    response = client.get("/.well-known/jwks.json")
    assert (response.status_code, response.get_json()) == (200, {"keys": []})
    assert jwt.get_unverified_header(auth.login()["accessToken"]) == {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize(
    ("algorithm", "generate"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_asymmetric_tokens_verify_with_the_published_public_key_alone(
    app, make_app, tmp_path, algorithm, generate
):
    signer = make_app(
        JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEY_FILE=write_key(tmp_path / "key.pem", generate())
    )
    with signer.app_context():
        db.create_all()
        client = signer.test_client()
        login = AuthActions(client).login()
        response = client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        [published] = response.get_json()["keys"]
        assert response.get_json() == {"keys": [published]}
        assert (published["alg"], published["use"]) == (algorithm, "sig")
        assert not {"d", "p", "q"} & set(published), "a private member is published"
        public_key = jwt.PyJWK(published).key
        for token in (login["accessToken"], login["refreshToken"]):
            assert jwt.get_unverified_header(token) == {
                "alg": algorithm,
                "typ": "JWT",
                "kid": published["kid"],
            }
            assert jwt.decode(token, public_key, algorithms=[algorithm]) == claims(token)
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(tampered_payload(signer, login["accessToken"]), public_key, algorithms=[algorithm])
        assert_envelope(me(client, login["accessToken"]), 200, data=login["user"])
        assert_token_pair(assert_envelope(refresh(client, login["refreshToken"]), 200))


def unreadable_key_cases(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    absent = tmp_path / "absent.pem"
    return {
        "unset": (None, "JWT_PRIVATE_KEY_FILE must name a PEM file when JWT_ALGORITHM is asymmetric"),
        "absent": (str(absent), f"JWT_PRIVATE_KEY_FILE: cannot read {absent}: No such file or directory"),
        "directory": (str(tmp_path), f"JWT_PRIVATE_KEY_FILE: cannot read {tmp_path}: Is a directory"),
        "not a key": (str(garbage), "JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key"),
    }


@pytest.mark.parametrize("case", ["unset", "absent", "directory", "not a key"])
def test_a_missing_or_unreadable_key_file_stops_the_start_with_a_one_line_reason(make_app, tmp_path, case):
    key_file, reason = unreadable_key_cases(tmp_path)[case]
    with pytest.raises(ConfigError) as raised:
        make_app(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEY_FILE=key_file)
    assert str(raised.value) == reason


def test_an_encrypted_key_file_stops_the_start_with_a_one_line_reason(make_app, tmp_path):
    key = tmp_path / "encrypted.pem"
    key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ConfigError) as raised:
        make_app(JWT_ALGORITHM="EdDSA", JWT_PRIVATE_KEY_FILE=str(key))
    assert str(raised.value) == "JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key"


@pytest.mark.parametrize(
    ("algorithm", "generate"),
    [
        ("RS256", ed25519.Ed25519PrivateKey.generate),
        ("EdDSA", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1())),
    ],
    ids=["RS256 with Ed25519", "EdDSA with RSA", "ES256 with P-384"],
)
def test_a_key_that_does_not_fit_the_algorithm_stops_the_start(make_app, tmp_path, algorithm, generate):
    key_file = write_key(tmp_path / "key.pem", generate())
    with pytest.raises(ConfigError) as raised:
        make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEY_FILE=key_file)
    assert str(raised.value).startswith("JWT_PRIVATE_KEY_FILE")
    assert "\n" not in str(raised.value)
