"""Hostile input and forged tokens: a 4xx envelope that names the field, and nothing changes.

Each class of input an attacker who reads the code would try goes to every endpoint and field it can
reach: digits of other scripts (``int()`` and ``\\d`` read them), control characters (PostgreSQL refuses
NUL, so the write failed with a 500) and a final newline (``$`` matches before it), lone surrogates (not
UTF-8), JSON the parser can't hold, landlines, and tokens signed with the real key whose claims have the
wrong shape. After each refused request every table holds what it held before: no code stored, used or
counted, no user, session or event. Run on SQLite and, with ``TEST_DATABASE_URL``, on PostgreSQL.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import jwt
import pytest
import sqlalchemy as sa

from allmine_auth import config, create_app
from allmine_auth.config import ConfigError, ProductionConfig, TestingConfig
from allmine_auth.extensions import db
from allmine_auth.fast_paths import VerifiedTokens
from allmine_auth.models import AuthEvent, DestinationLock, LoginSession, OneTimeCode, User
from tests.conftest import PHONE, assert_envelope, assert_error, bearer
from tests.test_app import SAFE_PRODUCTION
from tests.test_registration import PROFILE

API = "/api/v1/auth"
INVALID = "Validation failed"
MISSING = "Missing or invalid token"
CONTROL = "Must not contain control characters."
NOT_DIGITS = "Digits must be ASCII 0-9."
FOUR_DIGITS = "Must be 4 digits."
MALFORMED = "body: Malformed JSON"
# A second person, whose live codes the hostile requests carry (a valid request would use them up).
OTHER_PHONE = {"countryCode": "90", "phoneNumber": "5329876543"}
OTHER_EMAIL = "other@example.com"
NEW_PHONE = {"countryCode": "90", "phoneNumber": "5371112233"}
NEW_EMAIL = "new@example.com"
TABLES = (User, OneTimeCode, LoginSession, DestinationLock, AuthEvent)


def snapshot():
    """Every row of every table as plain values, to compare before and after a refused request."""
    return {
        model.__tablename__: sorted(db.session.execute(sa.select(model.__table__)).all(), key=repr)
        for model in TABLES
    }


@dataclass
class World:
    """A logged-in user, and live codes for another phone and email that a valid request would use."""

    access: str
    refresh: str
    user_id: str
    phone_code: str
    email_code: str


@pytest.fixture
def world(client, auth):
    """Log a user in and send codes to ``OTHER_PHONE`` and ``OTHER_EMAIL``."""
    login = auth.login()
    phone_code = auth.send(OTHER_PHONE).get_json()["data"]["code"]
    email_code = client.post(f"{API}/send-otp-email", json={"email": OTHER_EMAIL}).get_json()["data"]["code"]
    return World(login["accessToken"], login["refreshToken"], login["user"]["id"], phone_code, email_code)


@dataclass
class Call:
    """A request that would succeed, as its parts: ``json`` body or ``query`` string, and headers."""

    method: str
    path: str
    json: dict | None = None
    query: dict | None = None
    headers: dict = field(default_factory=dict)

    def inputs(self):
        """The dict the fields live in: the body, else the query string."""
        return self.json if self.json is not None else self.query

    def send(self, client):
        """Send the request with the test client."""
        return client.open(
            self.path, method=self.method, json=self.json, query_string=self.query, headers=self.headers
        )


def valid_call(endpoint, world):
    """The request to ``endpoint`` that would succeed (and change something) in ``world``."""
    signup = {"signupSource": "instagram_ads", "signupCampaign": "spring_launch_2026"}
    return {
        "send-otp": lambda: Call("POST", f"{API}/send-otp", json=dict(NEW_PHONE)),
        "send-otp-email": lambda: Call("POST", f"{API}/send-otp-email", json={"email": NEW_EMAIL}),
        "verify-otp": lambda: Call(
            "POST", f"{API}/verify-otp", json={**OTHER_PHONE, "code": world.phone_code, **signup}
        ),
        "verify-otp-email": lambda: Call(
            "POST", f"{API}/verify-otp-email", json={"email": OTHER_EMAIL, "code": world.email_code, **signup}
        ),
        "refresh": lambda: Call("POST", f"{API}/refresh", json={"refreshToken": world.refresh}),
        "complete-registration": lambda: Call(
            "POST",
            f"{API}/complete-registration",
            json={**PROFILE, "interests": list(PROFILE["interests"]), "email": OTHER_EMAIL},
            headers=bearer(world.access),
        ),
        "logout": lambda: Call(
            "POST", f"{API}/logout", query={"scope": "local"}, headers=bearer(world.access)
        ),
    }[endpoint]()


def spoiled_call(endpoint, name, world, spoil):
    """``valid_call`` with field ``name`` (``interests.0``: the first interest) passed through ``spoil``."""
    call = valid_call(endpoint, world)
    if endpoint == "complete-registration" and name == "emailCode":
        call.json["emailCode"] = world.email_code
    inputs = call.inputs()
    if name == "interests.0":
        inputs["interests"][0] = spoil(inputs["interests"][0])
    else:
        inputs[name] = spoil(inputs[name])
    return call


def assert_refused(client, call, line):
    """The call is a 400 naming the field, and no table changed."""
    before = snapshot()
    assert_error(call.send(client), 400, INVALID, line)
    assert snapshot() == before


# Every string field of every request schema (body and query), by endpoint.
STRING_FIELDS = [
    ("send-otp", "countryCode"),
    ("send-otp", "phoneNumber"),
    ("send-otp-email", "email"),
    *[
        ("verify-otp", name)
        for name in ("countryCode", "phoneNumber", "code", "signupSource", "signupCampaign")
    ],
    *[("verify-otp-email", name) for name in ("email", "code", "signupSource", "signupCampaign")],
    ("refresh", "refreshToken"),
    *[
        ("complete-registration", name)
        for name in (
            "name",
            "surname",
            "username",
            "gender",
            "email",
            "emailCode",
            "interests.0",
            "privacyPolicyVersion",
            "termsOfUseVersion",
            "consentFormVersion",
        )
    ],
    ("logout", "scope"),
]
CONTROL_SPOILERS = {
    "NUL inside": lambda value: value[:1] + "\x00" + value[1:],
    "newline at the end": lambda value: value + "\n",
    "C1 next line": lambda value: value + "\x85",
}


@pytest.mark.parametrize("spoiler", CONTROL_SPOILERS)
@pytest.mark.parametrize(("endpoint", "name"), STRING_FIELDS)
def test_control_characters_in_any_string_field_are_refused(client, world, endpoint, name, spoiler):
    call = spoiled_call(endpoint, name, world, CONTROL_SPOILERS[spoiler])
    assert_refused(client, call, f"{name}: {CONTROL}")


@pytest.mark.parametrize(("endpoint", "name"), [each for each in STRING_FIELDS if each[0] != "logout"])
def test_a_lone_surrogate_in_any_body_field_is_refused(client, world, endpoint, name):
    # A query string is UTF-8 decoded with replacement: only a JSON escape can carry a lone surrogate.
    call = spoiled_call(endpoint, name, world, lambda value: value + "\ud800")
    assert_refused(client, call, f"{name}: Not valid Unicode.")


def test_a_username_with_a_final_newline_is_not_saved(client, world):
    call = spoiled_call("complete-registration", "username", world, lambda value: "johndoe123\n")
    assert_refused(client, call, f"username: {CONTROL}")
    assert db.session.scalar(sa.select(User.username)) is None


@pytest.mark.parametrize(
    "birth_date", ["1995-04-12T\x00", "1995-04-12Tnoon", "1995-04-12T10:00:00Z\n", "1995-04-12T１０:00:00"]
)
def test_a_birth_date_is_a_whole_timestamp_or_a_date(client, world, birth_date):
    call = spoiled_call("complete-registration", "birthDate", world, lambda value: birth_date)
    assert_refused(client, call, "birthDate: Not a valid date.")
    # A whole timestamp still gives its date, as written.
    call.json["birthDate"] = "1995-04-12T23:30:00+03:00"
    assert assert_envelope(call.send(client), 200)["birthDate"] == "1995-04-12T00:00:00.000Z"


# Digits of other scripts: str.isdigit(), int() and re's \d take them all.
SCRIPTS = {
    "fullwidth": "０１２３４５６７８９",
    "arabic-indic": "٠١٢٣٤٥٦٧٨٩",
    "devanagari": "०१२३४५६७८९",
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",
    "circled": "⓪①②③④⑤⑥⑦⑧⑨",
}
# Codes: the scripts re's \d matched (the others were refused already).
DECIMAL_SCRIPTS = ("fullwidth", "arabic-indic", "devanagari")


def in_script(script):
    """Spoil a value by writing its digits in ``script`` (``last ...``: only its last character)."""
    last_only = script.startswith("last ")
    table = str.maketrans("0123456789", SCRIPTS[script.removeprefix("last ")])
    return lambda value: value[:-1] + value[-1].translate(table) if last_only else value.translate(table)


@pytest.mark.parametrize("script", [*SCRIPTS, "last fullwidth", "last superscript"])
@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        ("send-otp", "countryCode"),
        ("send-otp", "phoneNumber"),
        ("verify-otp", "countryCode"),
        ("verify-otp", "phoneNumber"),
    ],
)
def test_a_phone_number_takes_ascii_digits_only(client, world, endpoint, name, script):
    assert_refused(client, spoiled_call(endpoint, name, world, in_script(script)), f"{name}: {NOT_DIGITS}")


@pytest.mark.parametrize("script", DECIMAL_SCRIPTS)
@pytest.mark.parametrize(
    ("endpoint", "name"),
    [("verify-otp", "code"), ("verify-otp-email", "code"), ("complete-registration", "emailCode")],
)
def test_a_code_takes_ascii_digits_only(client, world, endpoint, name, script):
    # Refused before the check: a wrong code would count an attempt against the live code.
    assert_refused(client, spoiled_call(endpoint, name, world, in_script(script)), f"{name}: {FOUR_DIGITS}")


def test_a_fixed_code_destination_takes_ascii_digits_only(make_app):
    app = make_app(fresh=True, OTP_TEST_DESTINATIONS={"+905329876543": ("1234", None)})
    client = app.test_client()
    with app.app_context():
        body = {**OTHER_PHONE, "code": "１２３４"}
        before = snapshot()
        assert_error(client.post(f"{API}/verify-otp", json=body), 400, INVALID, f"code: {FOUR_DIGITS}")
        assert snapshot() == before
        assert_envelope(client.post(f"{API}/verify-otp", json={**OTHER_PHONE, "code": "1234"}), 200)


@pytest.mark.parametrize("code", ["١٢٣٤", "１２３４", "²³⁴⁵", "123４"])
def test_fixed_codes_of_other_scripts_are_refused_at_start_up(code):
    with pytest.raises(ConfigError, match="OTP_TEST_DESTINATIONS"):
        config.parse_test_destinations(f"+905329876543={code}")


@pytest.mark.parametrize(
    "phone",
    [
        {"countryCode": "90", "phoneNumber": "2121234567"},  # Istanbul, a landline
        {"countryCode": "90", "phoneNumber": "3121234567"},  # Ankara, a landline
        {"countryCode": "+90", "phoneNumber": "(850) 200 12 34"},  # VoIP
        {"countryCode": "90", "phoneNumber": "0800 123 45 67"},  # toll-free
        {"countryCode": "49", "phoneNumber": "30123456"},  # Berlin, a landline
    ],
)
@pytest.mark.parametrize("endpoint", ["send-otp", "verify-otp"])
def test_only_a_mobile_number_gets_an_sms(client, world, caplog, endpoint, phone):
    caplog.set_level(logging.INFO, "allmine_auth")
    call = valid_call(endpoint, world)
    call.json.update(phone)
    assert_refused(client, call, "phoneNumber: Not a mobile number.")
    assert "SMS to" not in caplog.text


@pytest.mark.parametrize("number", ["532ABCDEFG", "0532 DAB 45 67"])
def test_letters_are_not_read_as_keypad_digits(client, world, number):
    call = valid_call("send-otp", world)
    call.json["phoneNumber"] = number
    assert_refused(client, call, "phoneNumber: Not a valid phone number.")


# JSON the parser can't hold, to every endpoint with a body.
BODY_ENDPOINTS = [
    "send-otp",
    "send-otp-email",
    "verify-otp",
    "verify-otp-email",
    "refresh",
    "complete-registration",
]
UNREADABLE_JSON = {
    "nested 5000 deep": "[" * 5000 + "]" * 5000,
    "nested objects": '{"a":' * 2000 + "1" + "}" * 2000,
    "an integer of 5000 digits": '{"countryCode": ' + "9" * 5000 + "}",
    "NaN": '{"countryCode": NaN}',
    "Infinity": '{"countryCode": Infinity}',
    "-Infinity": '{"countryCode": -Infinity}',
    "a float out of range": '{"countryCode": 1e999}',
}


@pytest.mark.parametrize("body", UNREADABLE_JSON)
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
def test_json_the_parser_cant_hold_is_malformed(client, world, endpoint, body):
    call = valid_call(endpoint, world)
    before = snapshot()
    response = client.open(
        call.path,
        method=call.method,
        data=UNREADABLE_JSON[body],
        content_type="application/json",
        headers=call.headers,
    )
    assert_error(response, 400, INVALID, MALFORMED)
    assert snapshot() == before


# Tokens signed with the real key whose claims have another shape than the ones this service mints.
def forge(token, **changes):
    """``token``'s claims with ``changes`` (``None`` drops a claim), signed with the test key."""
    claims = jwt.decode(token, options={"verify_signature": False})
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return jwt.encode(claims, TestingConfig.JWT_SECRET_KEY, algorithm="HS256")


FORGERIES = {
    "sid an integer": {"sid": 7},
    "sid a list": {"sid": ["a"]},
    "sid not a UUID": {"sid": "abc"},
    "sid in capitals": {"sid": "UPPER"},
    "sub not a UUID": {"sub": "abc"},
    "sub in capitals": {"sub": "UPPER"},
    "no exp": {"exp": None},
    "exp a string": {"exp": "UNTIL"},
    "no type": {"type": None},
    "no jti": {"jti": None},
    "no sid": {"sid": None},
}


def forged(token, forgery):
    """Apply ``FORGERIES[forgery]`` to ``token`` (``UPPER``: the claim's own value in capitals)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    changes = {}
    for name, value in FORGERIES[forgery].items():
        if value == "UPPER":
            value = claims[name].upper()
        elif value == "UNTIL":
            value = str(claims[name])
        changes[name] = value
    return forge(token, **changes)


def protected_call(endpoint, world):
    """``(method, path, keyword arguments)`` of a call to ``endpoint``, which takes an access token."""
    return {
        "me": ("GET", f"{API}/me", {}),
        "sessions": ("GET", f"{API}/sessions", {}),
        "logout": ("POST", f"{API}/logout", {}),
        "end a session": ("DELETE", f"{API}/sessions/{claims_of(world.access)['sid']}", {}),
        "complete-registration": ("POST", f"{API}/complete-registration", {"json": PROFILE}),
    }[endpoint]


def claims_of(token):
    """The claims of ``token``, unverified."""
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize("forgery", FORGERIES)
@pytest.mark.parametrize("endpoint", ["me", "sessions", "logout", "end a session", "complete-registration"])
def test_a_forged_access_token_is_refused_and_changes_nothing(client, world, endpoint, forgery):
    token = forged(world.access, forgery)
    method, path, kwargs = protected_call(endpoint, world)
    before = snapshot()
    assert_error(client.open(path, method=method, headers=bearer(token), **kwargs), 401, MISSING)
    assert snapshot() == before
    assert_envelope(client.get(f"{API}/me", headers=bearer(world.access)), 200)


# (A refresh token without ``type`` or ``sid`` was refused already.)
@pytest.mark.parametrize("forgery", [name for name in FORGERIES if name not in ("no type", "no sid")])
def test_a_forged_refresh_token_is_refused_and_ends_no_session(client, world, forgery):
    token = forged(world.refresh, forgery)
    before = snapshot()
    assert_error(client.post(f"{API}/refresh", json={"refreshToken": token}), 401, MISSING)
    assert snapshot() == before
    assert_envelope(client.post(f"{API}/refresh", json={"refreshToken": world.refresh}), 200)


def test_a_token_of_another_type_is_refused(client, world):
    for token in (forge(world.access, type="other"), forge(world.refresh, type="id")):
        assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, MISSING)
        assert_error(client.post(f"{API}/refresh", json={"refreshToken": token}), 401, MISSING)


# Headers and the query string: the response side can't fail either.
def test_a_request_id_with_a_final_newline_is_replaced(client):
    response = client.get("/healthz", environ_base={"HTTP_X_REQUEST_ID": "req-42\n"})
    assert response.status_code == 200
    assert len(response.headers["X-Request-ID"]) == 32 and response.headers["X-Request-ID"] != "req-42"


def test_control_characters_in_device_headers_are_not_stored(client):
    headers = {"User-Agent": "Allmine/2.3\x00 (iPhone)", "X-Device-Name": "Ada\x00's iPhone\x1b"}
    code = client.post(f"{API}/send-otp", json=PHONE, headers=headers).get_json()["data"]["code"]
    response = client.post(f"{API}/verify-otp", json={**PHONE, "code": code}, headers=headers)
    assert_envelope(response, 200)
    assert db.session.execute(sa.select(LoginSession.device)).scalar_one() == "Ada's iPhone"
    agents = db.session.scalars(sa.select(AuthEvent.user_agent)).all()
    assert agents == ["Allmine/2.3 (iPhone)"] * 2


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/%00",
        "/sessions/{sid}%00",
        "/sessions/{sid}%0A",
        "/sessions/" + "١" * 32,
        "/sessions/" + "８" * 8 + "-" + "８" * 4 + "-" + "８" * 4 + "-" + "８" * 4 + "-" + "８" * 12,
    ],
)
def test_a_hostile_session_id_in_the_path_is_a_404_and_ends_nothing(client, world, path):
    # A guard (main answers these with 404 too): werkzeug's uuid converter takes ASCII hex only.
    sid = claims_of(world.access)["sid"]
    before = snapshot()
    response = client.delete(API + path.format(sid=sid), headers=bearer(world.access))
    assert_error(response, 404, "Resource not found")
    assert snapshot() == before


# Production's secret check (HS256's is in test_app.py).
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
@pytest.mark.parametrize("secret", [config.DEFAULT_SECRET, "short"])
def test_production_needs_a_real_secret_for_every_hmac_algorithm(algorithm, secret):
    settings = {**SAFE_PRODUCTION, "JWT_ALGORITHM": algorithm, "JWT_SECRET_KEY": secret}
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY must be set"):
        create_app(type("P", (ProductionConfig,), settings))


# The verified-token cache under gthread's threads.
class YieldingDict(dict):
    """A dict that lets other threads run in the middle of each change and each iteration.

    Under the GIL a thread switch can come between any two bytecodes; this
    puts one at every point where it does harm, so a race shows every run.
    """

    def __iter__(self):
        iterator = super().__iter__()
        time.sleep(0)
        return iterator

    def __delitem__(self, key):
        time.sleep(0)
        super().__delitem__(key)

    def pop(self, *args):
        time.sleep(0)
        return super().pop(*args)


CACHE_THREADS = 8
CACHE_ROUNDS = 300


def test_the_verified_token_cache_is_safe_under_threads():
    cache = VerifiedTokens()
    cache._entries = YieldingDict()
    barrier = threading.Barrier(CACHE_THREADS, timeout=30)
    errors = []

    def work(n):
        barrier.wait()
        for i in range(CACHE_ROUNDS):
            # Four tokens in a cache of two: every put evicts, and every get finds an expired token to drop.
            try:
                cache.put(f"token-{(n + i) % 4}", {"exp": 0}, 2)
                cache.remember_header(f"token-{(n + i) % 4}", {"alg": "HS256"})
                cache.get(f"token-{(n + i + 1) % 4}", 0)
                cache.header(f"token-{(n + i + 2) % 4}")
            except Exception as exc:  # noqa: BLE001  (any error of any thread fails the test)
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(CACHE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache._entries) <= 2
