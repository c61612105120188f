"""The floor: the essential work of each measured endpoint, in bare Flask, nothing else (issue 18).

``bench/run.py`` measures the service against this app under the same
``gunicorn.conf.py``, on the same database (the service's tables), the same
Redis and the same inputs: access and refresh tokens minted by the service
with its secret and claims, codes stored as the service stores them (an HMAC
keyed by ``OTP_SECRET_KEY``), the same phone numbers, the same fake SMS
gateway. What the service reaches as a share of this app's requests/s is what
its own machinery costs on top of the work any implementation must do.

"Essential" here means what an endpoint must do for its own request to be
correct and safe, written the way a competent engineer would write it on this
stack with nothing between the code and the drivers (Flask, psycopg 3 with a
``psycopg_pool`` pool, autocommit where one statement suffices, PyJWT,
redis-py, urllib3 for the gateway):

- the checks the service must make: the token's HS256 signature, expiry and
  type; the session's revocation through the same Redis entry the service
  keeps (``<prefix>session:<sid>``, filled from the session row on a miss,
  ``SET NX``); for a code, its HMAC, expiry, attempts and the destination's
  lock; for a refresh, the one-statement rotation and, when it finds nothing,
  reuse detection (a retry within ``REFRESH_TOKEN_REUSE_INTERVAL`` gets the
  current pair, anything else revokes the session); for a send, the
  per-destination rules (lock, resend interval, 3 per 10 minutes and 10 per
  24 hours counted over ``auth_events``, as the service counts them);
  the input's validation (a real mobile number, through ``phonenumbers``);
- one audit row per login, refresh, send and failure, in the same statement
  as the write where PostgreSQL allows it (data-modifying CTEs);
- the answer in the service's envelope ``{isSuccess, statusCode, data,
  errors, timestamp}`` with the same ``data`` (a login's whole user object);
- GET /me from Redis as the service serves it: one ``MGET`` of the session
  state and the cached profile; a miss reads the database and fills.

And nothing else: no ORM, no schema library, no rate limiter, no metrics, no
log line per event, no request id, no verified-token cache, and none of the
SMS-pumping defences that count across requests (the per-IP and per-network
limits, the prefix and network conversion counters and breakers, the global
SMS budget): like the limiter they guard the service from abuse, not the
request from error, and the benchmark sets them out of reach. What they cost
is part of the gap the ratio shows. The Redis keys are the service's with
``floor:`` in front, so neither app warms the other's caches.

Statements per request (round trips to PostgreSQL / Redis / the gateway):
GET /me 0 / 1 / 0 (cache warm); refresh 1 / 0 / 0; verify-otp (sign-up or
returning login) 1 / 0 (1 for a returning login: its cached profile is marked
stale) / 0; send-otp 2 / 0 / 1.
"""

import gc
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import jwt
import phonenumbers
import redis
import urllib3
from flask import Flask, Response, request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool


def env_int(name, default):
    return int(os.environ.get(name) or default)


DATABASE_URL = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
REDIS_URL = os.environ["REDIS_URL"]
JWT_SECRET = os.environ["JWT_SECRET_KEY"]
OTP_KEY = os.environ["OTP_SECRET_KEY"].encode()
ACCESS_SECONDS = env_int("JWT_ACCESS_TOKEN_EXPIRES", 3600)
REFRESH_SECONDS = env_int("JWT_REFRESH_TOKEN_EXPIRES", 2592000)
SESSION_MAX_AGE = env_int("SESSION_MAX_AGE", 0)
REUSE_INTERVAL = timedelta(seconds=env_int("REFRESH_TOKEN_REUSE_INTERVAL", 10))
SESSION_CACHE_TTL = env_int("SESSION_CACHE_TTL", 300)
PROFILE_CACHE_TTL = env_int("PROFILE_CACHE_TTL", 300)
OTP_TTL = timedelta(seconds=env_int("OTP_TTL_SMS", 180))
MAX_ATTEMPTS = env_int("OTP_MAX_ATTEMPTS", 3)
RESEND_INTERVAL = timedelta(seconds=env_int("OTP_RESEND_INTERVAL", 60))
MAX_SENDS = ((timedelta(minutes=10), env_int("OTP_MAX_SENDS_10MIN", 3)),)
MAX_SENDS += ((timedelta(days=1), env_int("OTP_MAX_SENDS_24H", 10)),)
LOCK_AFTER = env_int("OTP_LOCK_AFTER_FAILURES", 10)
LOCK_SECONDS = env_int("OTP_LOCK_SECONDS", 3600)
ALLOWED_REGIONS = set((os.environ.get("SMS_ALLOWED_COUNTRIES") or "TR").split(","))
NOTIFY_TIMEOUT = float(os.environ.get("NOTIFY_TIMEOUT") or 10)

SESSION_KEY = "floor:allmine-auth:session:"
PROFILE_KEY = "floor:allmine-auth:user:"
REVOKED, STALE = "0", "stale"
SMS = "sms"
SMS_TEXT = "Allmine doğrulama kodunuz: {code}. Kod {minutes} dakika geçerlidir. / Your Allmine code: {code}"
DELIVERY_FAILED = "SMS gönderilirken hata oluştu"
MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)

app = Flask(__name__)
pool = ConnectionPool(DATABASE_URL, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True)
cache = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=0.5)

_twilio_sid = os.environ.get("TWILIO_ACCOUNT_SID", "")
_twilio_url = urlsplit(os.environ.get("TWILIO_API_URL") or "https://api.twilio.com")
gateway = urllib3.connection_from_url(_twilio_url.geturl(), maxsize=4, retries=False, timeout=NOTIFY_TIMEOUT)
GATEWAY_PATH = f"{_twilio_url.path.rstrip('/')}/2010-04-01/Accounts/{_twilio_sid}/Messages.json"
_credentials = b64encode(f"{_twilio_sid}:{os.environ.get('TWILIO_AUTH_TOKEN', '')}".encode()).decode()
GATEWAY_HEADERS = {
    "Authorization": f"Basic {_credentials}",
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded",
}
SENDER = {"From": os.environ.get("TWILIO_FROM", "")}


class Refused(Exception):
    """An answer other than success: its status, error lines and headers."""

    def __init__(self, status, *errors, retry_after=None):
        super().__init__(status)
        self.status, self.errors = status, list(errors)
        self.headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after is not None else {}


def utc_text(moment):
    """A timestamp as the service writes it: UTC, milliseconds, ``Z``; a date at midnight."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def answer(status, data_json="null", errors=(), headers=None):
    """The envelope around ``data_json`` (already JSON text)."""
    body = (
        f'{{"isSuccess":{"true" if status < 400 else "false"},"statusCode":{status},"data":{data_json},'
        f'"errors":{json.dumps(list(errors))},"timestamp":"{utc_text(datetime.now(UTC))}"}}\n'
    )
    return Response(body, status=status, headers=headers, mimetype="application/json")


@app.errorhandler(Refused)
def refused(error):
    return answer(error.status, errors=error.errors, headers=error.headers)


def seconds_until(moment, now):
    return max(1, int((moment - now).total_seconds() + 0.999))


# --- tokens -----------------------------------------------------------------------------------------


def claims_of(token, kind):
    """The verified claims of a token of ``kind`` (``access`` or ``refresh``), else a 401."""
    try:
        claims = jwt.decode(
            token, JWT_SECRET, algorithms=["HS256"], options={"require": ["exp", "sub", "sid", "jti", "type"]}
        )
    except jwt.ExpiredSignatureError:
        raise Refused(401, "Token has expired") from None
    except jwt.InvalidTokenError:
        raise Refused(401, "Missing or invalid token") from None
    if claims["type"] != kind:
        raise Refused(401, "Missing or invalid token")
    return claims


def mint(user_id, complete, sid, expires_at, refresh_jti, now):
    """An access and a refresh token with flask-jwt-extended's claims; the pair's JSON."""
    issued = int(now.timestamp())
    refresh_seconds = int(min(REFRESH_SECONDS, (expires_at - now).total_seconds()))
    sub, sid = str(user_id), str(sid)
    access = jwt.encode(
        {
            "fresh": False,
            "iat": issued,
            "jti": str(uuid.uuid4()),
            "type": "access",
            "sub": sub,
            "nbf": issued,
            "exp": issued + ACCESS_SECONDS,
            "sid": sid,
            "reg": complete,
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    refresh = jwt.encode(
        {
            "fresh": False,
            "iat": issued,
            "jti": refresh_jti,
            "type": "refresh",
            "sub": sub,
            "nbf": issued,
            "exp": issued + refresh_seconds,
            "sid": sid,
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    return (
        f'"accessToken":"{access}","refreshToken":"{refresh}",'
        f'"expiresIn":{ACCESS_SECONDS},"refreshExpiresIn":{refresh_seconds}'
    )


def session_end(now):
    """A session's end when refreshed or opened at ``now``, and its absolute end (``SESSION_MAX_AGE``)."""
    end = now + timedelta(seconds=REFRESH_SECONDS)
    absolute = now + timedelta(seconds=SESSION_MAX_AGE) if SESSION_MAX_AGE else None
    return (min(end, absolute) if absolute else end), absolute


def client():
    agent = (request.headers.get("User-Agent") or "")[:255] or None
    device = (request.headers.get("X-Device-Name") or "").strip()[:255] or agent
    return request.remote_addr or "unknown", agent, device


# --- GET /me ----------------------------------------------------------------------------------------

USER_FIELDS = (
    # (JSON name, column, kind): kind "t" a timestamp, "b" a flag, "l" a list, "n" a counter, "" as it is
    ("id", "id", "s"),
    ("name", "name", ""),
    ("surname", "surname", ""),
    ("username", "username", ""),
    ("countryCode", "country_code", ""),
    ("phoneNumber", "phone_number", ""),
    ("signupSource", "signup_source", ""),
    ("signupCampaign", "signup_campaign", ""),
    ("profilePhoto", "profile_photo", ""),
    ("availabilityStatus", "availability_status", ""),
    ("birthDate", "birth_date", "t"),
    ("gender", "gender", ""),
    ("interests", "interests", "l"),
    ("expertise", "expertise", ""),
    ("email", "email", ""),
    ("isEmailVerified", "email_verified", "b"),
    ("bio", "bio", ""),
    ("instagram", "instagram", ""),
    ("x", "x", ""),
    ("tiktok", "tiktok", ""),
    ("snapchat", "snapchat", ""),
    ("facebook", "facebook", ""),
    ("privacyPolicyAccepted", "privacy_policy_accepted", "b"),
    ("privacyPolicyVersion", "privacy_policy_version", ""),
    ("termsOfUseAccepted", "terms_of_use_accepted", "b"),
    ("termsOfUseVersion", "terms_of_use_version", ""),
    ("consentFormAccepted", "consent_form_accepted", "b"),
    ("consentFormVersion", "consent_form_version", ""),
    ("isRegistrationComplete", "is_registration_complete", "b"),
    ("roles", "roles", "l"),
    ("followersCount", "followers_count", "n"),
    ("followingCount", "following_count", "n"),
    ("minutePriceInLiveStream", "minute_price_in_live_stream", "n"),
    ("creditBalance", "credit_balance", "n"),
    ("lastLogin", "last_login", "t"),
    ("timezone", "timezone", ""),
    ("lastUsernameChangeDate", "last_username_change_date", "t"),
    ("accountDeletionStatus", "account_deletion_status", ""),
    ("accountDeletionRequestedAt", "account_deletion_requested_at", "t"),
    ("accountDeletionScheduledFor", "account_deletion_scheduled_for", "t"),
    ("accountDeletionCancelledAt", "account_deletion_cancelled_at", "t"),
    ("accountDeletionFinalizedAt", "account_deletion_finalized_at", "t"),
)


def user_json(row):
    """The user object of the API (the service's ``UserSchema``) from a ``users`` row, as JSON text."""
    user = {}
    for name, column, kind in USER_FIELDS:
        value = row[column]
        if kind == "t":
            value = utc_text(value)
        elif kind == "s":
            value = str(value)
        elif kind == "b":
            value = bool(value)
        elif kind == "l":
            value = list(value or ())
        elif kind == "n":
            value = value or 0
        user[name] = value
    return json.dumps(user, separators=(",", ":"), ensure_ascii=False)


def session_expiry(conn, sid):
    """The session's end (a UNIX time) from its row, or 0 when revoked or unknown; cached (``SET NX``)."""
    row = conn.execute("SELECT expires_at, revoked_at FROM sessions WHERE id = %s", (sid,)).fetchone()
    expiry = row[0].timestamp() if row is not None and row[1] is None else 0.0
    cache.set(SESSION_KEY + sid, repr(expiry) if expiry else REVOKED, ex=SESSION_CACHE_TTL, nx=True)
    return expiry


@app.get("/api/v1/auth/me")
def me():
    header = request.headers.get("Authorization") or ""
    if not header.startswith("Bearer "):
        raise Refused(401, "Missing or invalid token")
    claims = claims_of(header[7:], "access")
    sid, sub = claims["sid"], claims["sub"]
    state, profile = cache.mget(SESSION_KEY + sid, PROFILE_KEY + sub)
    now = time.time()
    expiry = float(state) if state is not None else None
    if expiry is None or (state != REVOKED and expiry <= now):
        # Unknown here, or a cached end that has come: a refresh may have moved it (the row is the truth).
        with pool.connection() as conn:
            expiry = session_expiry(conn, sid)
    if expiry <= now:
        raise Refused(401, "Token has been revoked")
    if profile is None or profile == STALE:
        with pool.connection() as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute("SELECT * FROM users WHERE id = %s", (sub,))
                .fetchone()
            )
        if row is None:
            raise Refused(401, "Missing or invalid token")
        payload = user_json(row)
        if profile is None:
            cache.set(PROFILE_KEY + sub, payload, ex=PROFILE_CACHE_TTL, nx=True)
        profile = payload
    return answer(200, profile)


# --- POST /refresh ----------------------------------------------------------------------------------

ROTATE = """
WITH rotated AS (
    UPDATE sessions SET refresh_jti = %(new_jti)s, previous_refresh_jti = %(jti)s, rotated_at = %(now)s,
        last_used_at = %(now)s,
        expires_at = CASE WHEN max_expires_at < %(end)s THEN max_expires_at ELSE %(end)s END
    WHERE id = %(sid)s AND refresh_jti = %(jti)s AND revoked_at IS NULL AND expires_at > %(now)s
    RETURNING id, user_id, expires_at,
        (SELECT is_registration_complete FROM users WHERE users.id = sessions.user_id) AS complete
), recorded AS (
    INSERT INTO auth_events (kind, user_id, session_id, ip, user_agent, created_at)
    SELECT 'refresh', user_id, id, %(ip)s, %(agent)s, %(now)s FROM rotated
)
SELECT user_id, expires_at, complete FROM rotated
"""
REVOKE_FOR_REUSE = """
WITH ended AS (
    UPDATE sessions SET revoked_at = %(now)s, revoked_reason = 'reuse'
    WHERE id = %(sid)s AND revoked_at IS NULL AND expires_at > %(now)s
    RETURNING id, user_id
), gone AS (
    DELETE FROM live_activities WHERE session_id IN (SELECT id FROM ended)
)
INSERT INTO auth_events (kind, user_id, session_id, ip, user_agent, created_at)
SELECT 'reuse_detected', user_id, id, %(ip)s, %(agent)s, %(now)s FROM ended
"""


def json_body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Refused(400, "Validation failed", "body: Invalid input type.")
    return body


def text_field(body, name, low, high, required=True):
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise Refused(400, "Validation failed", f"{name}: Not a valid string of {low} to {high} characters.")
    return value


@app.post("/api/v1/auth/refresh")
def refresh():
    token = text_field(json_body(), "refreshToken", 1, 4096)
    claims = claims_of(token, "refresh")
    now = datetime.now(UTC)
    sid, jti, new_jti = claims["sid"], claims["jti"], str(uuid.uuid4())
    ip, agent, _ = client()
    end, _ = session_end(now)
    params = {"sid": sid, "jti": jti, "new_jti": new_jti, "now": now, "end": end, "ip": ip, "agent": agent}
    with pool.connection() as conn:
        rotated = conn.execute(ROTATE, params).fetchone()
        if rotated is None:
            return answer(200, "{" + reuse_or_revoke(conn, params) + "}")
    user_id, expires_at, complete = rotated
    return answer(200, "{" + mint(user_id, bool(complete), sid, expires_at, new_jti, now) + "}")


def reuse_or_revoke(conn, params):
    """A rotated token again: the retry of a refresh within the interval gets the current pair; else theft."""
    now = params["now"]
    row = conn.execute(
        "SELECT s.user_id, s.refresh_jti, s.previous_refresh_jti, s.rotated_at, s.expires_at, s.revoked_at,"
        " u.is_registration_complete FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = %s",
        (params["sid"],),
    ).fetchone()
    if row is None or row[5] is not None or row[4] <= now:
        raise Refused(401, "Token has been revoked")
    user_id, current_jti, previous_jti, rotated_at, expires_at, _, complete = row
    if previous_jti == params["jti"] and rotated_at + REUSE_INTERVAL > now:
        return mint(user_id, bool(complete), params["sid"], expires_at, current_jti, now)
    conn.execute(REVOKE_FOR_REUSE, params)
    cache.set(SESSION_KEY + params["sid"], REVOKED, ex=SESSION_CACHE_TTL)
    raise Refused(401, "Token has been revoked")


# --- POST /verify-otp and /send-otp -----------------------------------------------------------------


def phone(body):
    """``(E.164, calling code, national number, region)`` of the body's number: a valid mobile number."""
    country = text_field(body, "countryCode", 1, 4).strip().removeprefix("+")
    number = text_field(body, "phoneNumber", 4, 20).strip()
    if not (country.isascii() and country.isdigit()):
        raise Refused(400, "Validation failed", "countryCode: Not a valid country calling code.")
    region = phonenumbers.region_code_for_country_code(int(country))
    if region == phonenumbers.UNKNOWN_REGION:
        raise Refused(400, "Validation failed", "countryCode: Not a valid country calling code.")
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if (
        not number.isascii()
        or parsed is None
        or parsed.country_code != int(country)
        or not phonenumbers.is_valid_number(parsed)
        or phonenumbers.number_type(parsed) not in MOBILE
    ):
        raise Refused(400, "Validation failed", "phoneNumber: Not a valid phone number.")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164, country, phonenumbers.national_significant_number(parsed), region


def code_hmac(address, code):
    return hmac.new(OTP_KEY, f"{SMS}\x00{address}\x00{code}".encode(), hashlib.sha256).hexdigest()


# The right code, the account (made on a first login), the session and the audit row: one statement.
# The DELETE's row lock makes exactly one of N parallel checks with the right code win.
LOGIN = """
WITH used AS (
    DELETE FROM one_time_codes
    WHERE channel = 'sms' AND destination = %(address)s AND expires_at > %(now)s
        AND attempts < %(max_attempts)s AND code_hash = %(hash)s
        AND NOT EXISTS (SELECT 1 FROM destination_locks WHERE channel = 'sms'
            AND destination = %(address)s AND locked_until > %(now)s)
    RETURNING id
), account AS (
    INSERT INTO users (id, phone_e164, country_code, phone_number, signup_source, signup_campaign,
        email_verified, interests, privacy_policy_accepted, terms_of_use_accepted, consent_form_accepted,
        is_registration_complete, roles, followers_count, following_count, minute_price_in_live_stream,
        credit_balance, last_login, created_at, updated_at)
    SELECT %(user_id)s, %(address)s, %(country)s, %(national)s, %(source)s, %(campaign)s,
        false, '[]', false, false, false, false, '["user"]', 0, 0, 0, 0, %(now)s, %(now)s, %(now)s
    FROM used
    ON CONFLICT (phone_e164) DO UPDATE SET last_login = EXCLUDED.last_login, updated_at = EXCLUDED.updated_at
    RETURNING users.*, xmax = 0 AS created
), opened AS (
    INSERT INTO sessions (id, user_id, refresh_jti, device, ip, created_at, last_used_at, expires_at,
        max_expires_at)
    SELECT %(sid)s, id, %(jti)s, %(device)s, %(ip)s, %(now)s, %(now)s, %(end)s, %(absolute)s FROM account
), recorded AS (
    INSERT INTO auth_events (kind, channel, destination, prefix, user_id, session_id, ip, user_agent,
        created_at)
    SELECT 'login', 'sms', %(address)s, %(prefix)s, id, %(sid)s, %(ip)s, %(agent)s, %(now)s FROM account
)
SELECT * FROM account
"""
COUNT_FAILURE = """
INSERT INTO destination_locks (channel, destination, failures, window_started_at, lock_count)
VALUES ('sms', %(address)s, 1, %(now)s, 0)
ON CONFLICT (channel, destination) DO UPDATE SET
    failures = CASE WHEN destination_locks.window_started_at > %(day_ago)s
        THEN destination_locks.failures + 1 ELSE 1 END,
    window_started_at = CASE WHEN destination_locks.window_started_at > %(day_ago)s
        THEN destination_locks.window_started_at ELSE %(now)s END
WHERE destination_locks.locked_until IS NULL OR destination_locks.locked_until <= %(now)s
RETURNING failures, locked_at, lock_count
"""
AUDIT = """
INSERT INTO auth_events (kind, channel, destination, prefix, ip, user_agent, detail, created_at)
VALUES (%(kind)s, 'sms', %(address)s, %(prefix)s, %(ip)s, %(agent)s, %(detail)s, %(now)s)
"""


@app.post("/api/v1/auth/verify-otp")
def verify():
    body = json_body()
    address, country, national, _ = phone(body)
    code = text_field(body, "code", 4, 4)
    if not (code.isascii() and code.isdigit()):
        raise Refused(400, "Validation failed", "code: Must be 4 digits.")
    now = datetime.now(UTC)
    ip, agent, device = client()
    end, absolute = session_end(now)
    sid, jti = uuid.uuid4(), str(uuid.uuid4())
    params = {
        "address": address,
        "country": country,
        "national": national,
        "prefix": f"+{country}",
        "now": now,
        "max_attempts": MAX_ATTEMPTS,
        "hash": code_hmac(address, code),
        "user_id": uuid.uuid4(),
        "source": text_field(body, "signupSource", 0, 100, required=False),
        "campaign": text_field(body, "signupCampaign", 0, 100, required=False),
        "sid": sid,
        "jti": jti,
        "device": device,
        "ip": ip,
        "agent": agent,
        "end": end,
        "absolute": absolute,
        "detail": None,
    }
    with pool.connection() as conn:
        user = conn.cursor(row_factory=dict_row).execute(LOGIN, params).fetchone()
        if user is None:
            wrong_code(conn, params)
    if not user["created"]:
        cache.set(PROFILE_KEY + str(user["id"]), STALE, ex=10)  # lastLogin changed: GET /me reads it again
    complete = bool(user["is_registration_complete"])
    tokens = mint(user["id"], complete, sid, end, jti, now)
    data = f'{{{tokens},"user":{user_json(user)},"isRegistrationComplete":{"true" if complete else "false"}}}'
    return answer(200, data)


def wrong_code(conn, params):
    """No live code matched: 429 when locked, 401 with nothing counted when no code is live, else count
    the attempt and the failure (locking the destination after ``OTP_LOCK_AFTER_FAILURES``) and 401."""
    now, address = params["now"], params["address"]
    with conn.transaction():
        locked = conn.execute(
            "SELECT locked_until FROM destination_locks WHERE channel = 'sms' AND destination = %s"
            " AND locked_until > %s",
            (address, now),
        ).fetchone()
        if locked is not None:
            raise Refused(429, "Too many requests", retry_after=seconds_until(locked[0], now))
        live = conn.execute(
            "UPDATE one_time_codes SET attempts = attempts + 1 WHERE channel = 'sms' AND destination = %s"
            " AND expires_at > %s AND attempts < %s RETURNING id",
            (address, now, MAX_ATTEMPTS),
        ).fetchone()
        if live is None:
            raise Refused(401, "Invalid or expired code")
        counter = conn.execute(COUNT_FAILURE, {**params, "day_ago": now - timedelta(days=1)}).fetchone()
        if counter is None:
            raise Refused(429, "Too many requests", retry_after=1)  # locked meanwhile: the attempt is undone
        conn.execute(AUDIT, {**params, "kind": "code_failed"})
        failures, locked_at, lock_count = counter
        if failures >= LOCK_AFTER:
            count = lock_count + 1 if locked_at is not None and locked_at > now - timedelta(days=1) else 1
            until = now + timedelta(seconds=LOCK_SECONDS * 2 ** (count - 1))
            conn.execute(
                "UPDATE destination_locks SET failures = 0, window_started_at = NULL, locked_at = %s,"
                " locked_until = %s, lock_count = %s WHERE channel = 'sms' AND destination = %s",
                (now, until, count, address),
            )
            conn.execute(
                AUDIT, {**params, "kind": "destination_locked", "detail": f"until {until.isoformat()}"}
            )
    raise Refused(401, "Invalid or expired code")


# The per-destination rules and the new code in one statement: the lock, the current code (the resend
# interval) and the sends of the last 10 minutes and 24 hours (over the audit trail, as the service
# counts them); the code is stored only if all allow it. The upsert's WHERE makes one of two parallel
# sends win.
SEND_CHECK_AND_STORE = """
WITH checks AS (
    SELECT
        (SELECT locked_until FROM destination_locks WHERE channel = 'sms' AND destination = %(address)s
            AND locked_until > %(now)s) AS locked_until,
        (SELECT created_at FROM one_time_codes WHERE channel = 'sms' AND destination = %(address)s)
            AS current_at,
        count(*) FILTER (WHERE created_at > %(short_since)s) AS sent_short,
        count(*) AS sent_long
    FROM auth_events
    WHERE destination = %(address)s AND channel = 'sms' AND kind IN ('code_sent', 'delivery_failed')
        AND created_at > %(long_since)s
), stored AS (
    INSERT INTO one_time_codes (id, channel, destination, code_hash, attempts, created_at, expires_at)
    SELECT %(id)s, 'sms', %(address)s, %(hash)s, 0, %(now)s, %(expires)s FROM checks
    WHERE locked_until IS NULL AND (current_at IS NULL OR current_at <= %(resend_before)s)
        AND sent_short < %(short_max)s AND sent_long < %(long_max)s
    ON CONFLICT (channel, destination) DO UPDATE SET code_hash = EXCLUDED.code_hash, attempts = 0,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE one_time_codes.created_at <= %(resend_before)s
    RETURNING 1
)
SELECT locked_until, current_at, sent_short, sent_long, EXISTS (SELECT 1 FROM stored) FROM checks
"""
OLDEST_SEND = """
SELECT min(created_at) FROM auth_events WHERE destination = %s AND channel = 'sms'
    AND kind IN ('code_sent', 'delivery_failed') AND created_at > %s
"""
DISCARD_AND_RECORD = """
WITH gone AS (
    DELETE FROM one_time_codes WHERE channel = 'sms' AND destination = %(address)s AND code_hash = %(hash)s
)
INSERT INTO auth_events (kind, channel, destination, prefix, ip, user_agent, detail, created_at)
VALUES ('delivery_failed', 'sms', %(address)s, %(prefix)s, %(ip)s, %(agent)s, %(detail)s, %(now)s)
"""


@app.post("/api/v1/auth/send-otp")
def send():
    address, country, national, region = phone(json_body())
    if region not in ALLOWED_REGIONS:
        raise Refused(400, "Validation failed", "countryCode: SMS to this country is not available.")
    now = datetime.now(UTC)
    ip, agent, _ = client()
    code = f"{secrets.randbelow(10_000):04d}"
    (short_window, short_max), (long_window, long_max) = MAX_SENDS
    params = {
        "address": address,
        "prefix": f"+{country}",
        "now": now,
        "id": uuid.uuid4(),
        "hash": code_hmac(address, code),
        "expires": now + OTP_TTL,
        "resend_before": now - RESEND_INTERVAL,
        "short_since": now - short_window,
        "long_since": now - long_window,
        "short_max": short_max,
        "long_max": long_max,
        "ip": ip,
        "agent": agent,
        "detail": None,
    }
    with pool.connection() as conn:
        locked_until, current_at, sent_short, sent_long, stored = conn.execute(
            SEND_CHECK_AND_STORE, params
        ).fetchone()
        if not stored:
            checks = (locked_until, current_at, sent_short, sent_long)
            raise Refused(429, "Too many requests", retry_after=send_retry_after(conn, params, *checks))
    minutes = max(1, int(OTP_TTL.total_seconds()) // 60)
    fields = {"To": address, "Body": SMS_TEXT.format(code=code, minutes=minutes), **SENDER}
    try:
        response = gateway.urlopen("POST", GATEWAY_PATH, body=urlencode(fields), headers=GATEWAY_HEADERS)
        accepted = 200 <= response.status < 300 and isinstance(json.loads(response.data), dict)
        failure = f"twilio: HTTP {response.status}"
    except (urllib3.exceptions.HTTPError, ValueError) as exc:
        accepted, failure = False, f"twilio: request failed: {type(exc).__name__}"
    with pool.connection() as conn:
        if not accepted:
            conn.execute(DISCARD_AND_RECORD, {**params, "detail": failure[:255]})
            raise Refused(500, DELIVERY_FAILED)
        conn.execute(AUDIT, {**params, "kind": "code_sent"})
    return answer(201, json.dumps({"countryCode": f"+{country}", "phoneNumber": national}))


def send_retry_after(conn, params, locked_until, current_at, sent_short, sent_long):
    """Seconds until the rule that refused a send lets it through."""
    now = params["now"]
    if locked_until is not None:
        return seconds_until(locked_until, now)
    if current_at is not None and current_at > params["resend_before"]:
        return seconds_until(current_at + RESEND_INTERVAL, now)
    for (window, limit), sent, since in zip(
        MAX_SENDS, (sent_short, sent_long), (params["short_since"], params["long_since"]), strict=True
    ):
        if sent >= limit:
            oldest = conn.execute(OLDEST_SEND, (params["address"], since)).fetchone()[0]
            return seconds_until(oldest + window, now)
    return RESEND_INTERVAL.total_seconds()  # a parallel send stored its code first


@app.get("/healthz")
def healthz():
    return answer(200, '{"status":"ok"}')


# As wsgi.py does for the service: what is built by now lives as long as the worker.
gc.freeze()
