"""Abuse protection: per-IP limits (shared through Redis), client IPs behind proxies, SMS budgets, audit."""

import logging
import re
from concurrent.futures import ThreadPoolExecutor

import requests
import sqlalchemy as sa

from allmine_auth import create_app
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock
from allmine_auth.web.limits import limiter
from tests.clock import Clock
from tests.conftest import PHONE, assert_envelope, assert_error, bearer, make_config
from tests.servers import gunicorn_server
from tests.timeshift import travel

SEND = "/api/v1/auth/send-otp"
TOO_MANY = "Too many requests"
US_PHONE = {"countryCode": "1", "phoneNumber": "2015550123"}
DE_PHONE = {"countryCode": "49", "phoneNumber": "15123456789"}


def de_phone(n):
    return {"countryCode": "49", "phoneNumber": f"151234{n:05d}"}


def phone(n):
    return {"countryCode": "90", "phoneNumber": f"53212{n:05d}"}


def events(kind):
    return db.session.scalars(sa.select(AuthEvent).where(AuthEvent.kind == kind)).all()


def limited_app(make_app, **overrides):
    return make_app(fresh=True, RATELIMIT_ENABLED=True, **overrides)


def test_verify_is_limited_per_ip(make_app):
    app = limited_app(make_app, RATELIMIT_VERIFY="3/minute")
    client = app.test_client()
    with app.app_context():
        for n in range(3):
            body = {**phone(n), "code": "0000"}
            assert_error(client.post("/api/v1/auth/verify-otp", json=body), 401, "Invalid or expired code")
        response = client.post(
            "/api/v1/auth/verify-otp-email", json={"email": "a@example.com", "code": "0000"}
        )
        assert_error(response, 429, TOO_MANY)
        assert int(response.headers["Retry-After"]) >= 1


def test_refresh_is_limited_per_ip(make_app):
    app = limited_app(make_app, RATELIMIT_REFRESH="2/minute")
    client = app.test_client()
    with app.app_context():
        for _ in range(2):
            assert_error(
                client.post("/api/v1/auth/refresh", json={"refreshToken": "x"}),
                401,
                "Missing or invalid token",
            )
        assert_error(client.post("/api/v1/auth/refresh", json={"refreshToken": "x"}), 429, TOO_MANY)


def test_a_default_limit_still_applies_to_every_route(make_app, monkeypatch):
    # The limiter's per-request hook is dropped only while no default limit needs it.
    # The one shared limiter keeps the first default limits an app gives it: these end with the test
    # (with FAST_PATHS off, every later app of the process would check them on every route).
    monkeypatch.setattr(limiter.limit_manager, "_default_limits", [])
    app = limited_app(make_app, RATELIMIT_DEFAULT="2/minute")
    assert limiter._check_request_limit in app.before_request_funcs[None]
    client = app.test_client()
    with app.app_context():
        for _ in range(2):
            assert_error(client.get("/api/v1/auth/me"), 401, "Missing or invalid token")
        assert_error(client.get("/api/v1/auth/me"), 429, TOO_MANY)


def test_limited_requests_still_get_the_rate_limit_headers_when_enabled(make_app, monkeypatch):
    # The limiter's after_request hook runs only where a limit was checked (a fast path); there it adds
    # its headers.
    app = limited_app(make_app, RATELIMIT_REFRESH="5/minute", FAST_PATHS=True)
    # What RATELIMIT_HEADERS_ENABLED sets (read by the one shared limiter from the first app only).
    monkeypatch.setattr(limiter, "_headers_enabled", True)
    client = app.test_client()
    with app.app_context():
        response = client.post("/api/v1/auth/refresh", json={"refreshToken": "x"})
        assert_error(response, 401, "Missing or invalid token")
        limit, remaining = response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]
        assert (limit, remaining) == ("5", "4")
        response = client.get("/healthz")
        assert response.status_code == 200
        assert not [name for name, _ in response.headers if name.startswith("X-RateLimit")]


def test_routes_without_a_limit_are_not_counted(make_app):
    app = limited_app(make_app, RATELIMIT_SEND="1/minute", FAST_PATHS=True)
    # No default limit: flask-limiter's check of every request is not installed at all (a fast path).
    assert limiter._check_request_limit not in app.before_request_funcs.get(None, [])
    client = app.test_client()
    with app.app_context():
        for _ in range(5):
            assert_error(client.get("/api/v1/auth/me"), 401, "Missing or invalid token")
        assert_envelope(client.post(SEND, json=phone(1)), 201)


def test_send_limits_are_shared_by_sms_and_email(make_app):
    app = limited_app(make_app, RATELIMIT_SEND="2/minute")
    client = app.test_client()
    with app.app_context():
        assert_envelope(client.post(SEND, json=phone(1)), 201)
        assert_envelope(client.post("/api/v1/auth/send-otp-email", json={"email": "a@example.com"}), 201)
        assert_error(client.post(SEND, json=phone(2)), 429, TOO_MANY)


def test_limits_are_per_ip(make_app):
    app = limited_app(make_app, RATELIMIT_SEND="1/minute")
    client = app.test_client()
    with app.app_context():
        assert_envelope(client.post(SEND, json=phone(1), environ_base={"REMOTE_ADDR": "10.0.0.1"}), 201)
        assert_error(
            client.post(SEND, json=phone(2), environ_base={"REMOTE_ADDR": "10.0.0.1"}), 429, TOO_MANY
        )
        assert_envelope(client.post(SEND, json=phone(3), environ_base={"REMOTE_ADDR": "10.0.0.2"}), 201)


def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(make_app):
    app = limited_app(make_app, RATELIMIT_SEND="1/minute")
    client = app.test_client()
    with app.app_context():
        assert_envelope(client.post(SEND, json=phone(1), headers={"X-Forwarded-For": "1.1.1.1"}), 201)
        response = client.post(SEND, json=phone(2), headers={"X-Forwarded-For": "2.2.2.2"})
        assert_error(response, 429, TOO_MANY)
        assert events("code_sent")[0].ip == "127.0.0.1"


def test_behind_one_trusted_proxy_the_client_is_the_address_it_saw(make_app):
    app = limited_app(make_app, RATELIMIT_SEND="1/minute", PROXY_FIX_X_FOR=1)
    client = app.test_client()
    with app.app_context():
        spoofed = {"X-Forwarded-For": "6.6.6.1, 203.0.113.9"}
        assert_envelope(client.post(SEND, json=phone(1), headers=spoofed), 201)
        again = {"X-Forwarded-For": "6.6.6.2, 203.0.113.9"}
        assert_error(client.post(SEND, json=phone(2), headers=again), 429, TOO_MANY)
        other = {"X-Forwarded-For": "203.0.113.10"}
        assert_envelope(client.post(SEND, json=phone(3), headers=other), 201)
        assert [event.ip for event in events("code_sent")] == ["203.0.113.9", "203.0.113.10"]


def test_sms_only_goes_to_allowed_countries(client, caplog):
    caplog.set_level(logging.WARNING, "allmine_auth")
    response = client.post(SEND, json=US_PHONE)
    assert_error(response, 400, "Validation failed", "countryCode: SMS to this country is not available.")
    (refused,) = events("send_refused")
    assert (refused.destination, refused.detail) == ("+12015550123", "country US not allowed")
    assert events("code_sent") == []
    assert "SMS send refused (country US not allowed) for +1201*****23" in caplog.text


def test_the_allowlist_is_configurable_and_test_destinations_pass_it(make_app):
    app = make_app(
        fresh=True, SMS_ALLOWED_COUNTRIES=["TR", "DE"], OTP_TEST_DESTINATIONS={"+12015550123": ("7777", None)}
    )
    client = app.test_client()
    with app.app_context():
        assert_envelope(client.post(SEND, json=DE_PHONE), 201)
        assert assert_envelope(client.post(SEND, json=US_PHONE), 201)["code"] == "7777"


def test_the_global_hourly_sms_budget(make_app, caplog, monkeypatch):
    clock = Clock(monkeypatch)
    app = make_app(fresh=True, SMS_GLOBAL_HOURLY_BUDGET=2)
    client = app.test_client()
    # The app made its loggers non-propagating during this test, after caplog hooked the existing ones.
    monkeypatch.setattr(logging.getLogger("allmine_auth"), "propagate", True)
    caplog.set_level(logging.WARNING, "allmine_auth")
    with app.app_context():
        for n in range(2):
            assert_envelope(client.post(SEND, json=phone(n)), 201)
        response = client.post(SEND, json=phone(9))
        assert_error(response, 429, TOO_MANY)
        # Counted in minute buckets: relief comes when the sends' minute leaves the hour.
        assert 3540 <= int(response.headers["Retry-After"]) <= 3600
        assert "global budget" in caplog.text
        assert_envelope(client.post("/api/v1/auth/send-otp-email", json={"email": "a@example.com"}), 201)
        clock.advance(3540)
        assert_error(client.post(SEND, json=phone(9)), 429, TOO_MANY)
        clock.advance(61)
        assert_envelope(client.post(SEND, json=phone(9)), 201)


def test_a_foreign_prefix_without_conversion_trips_its_circuit_breaker(make_app, caplog, monkeypatch):
    # The old +90 budget breaker is gone: a home prefix is never shut (tests/test_fraud.py). A foreign
    # prefix whose codes are not verified trips at SMS_TRIP_FACTOR x SMS_BASELINE_FLOOR sends an hour.
    clock = Clock(monkeypatch)
    app = make_app(fresh=True, SMS_BASELINE_FLOOR=1, SMS_TRIP_FACTOR=2, SMS_ALLOWED_COUNTRIES=["TR", "DE"])
    client = app.test_client()
    # The app made its loggers non-propagating during this test, after caplog hooked the existing ones.
    monkeypatch.setattr(logging.getLogger("allmine_auth"), "propagate", True)
    caplog.set_level(logging.WARNING, "allmine_auth")
    with app.app_context():
        for n in range(2):
            assert_envelope(client.post(SEND, json=de_phone(n)), 201)
        response = client.post(SEND, json=de_phone(5))
        assert_error(response, 429, TOO_MANY)
        assert 3590 <= int(response.headers["Retry-After"]) <= 3600
        assert "SMS circuit breaker opened for +49" in caplog.text
        assert db.session.get(DestinationLock, ("sms-prefix", "+49")) is not None
        assert_envelope(client.post(SEND, json=phone(1)), 201)
        clock.advance(1800)
        assert_error(client.post(SEND, json=de_phone(6)), 429, TOO_MANY)
        clock.advance(1801)
        assert_envelope(client.post(SEND, json=de_phone(6)), 201)


def test_the_audit_trail_records_a_whole_login_and_never_the_code(client, auth, runner):
    code = auth.send().get_json()["data"]["code"]
    assert_error(auth.verify(f"{(int(code) + 1) % 10_000:04d}"), 401, "Invalid or expired code")
    data = assert_envelope(auth.verify(code, headers={"User-Agent": "Allmine/2.0 (iOS)"}), 200)
    travel(1)
    client.post(
        "/api/v1/auth/refresh",
        json={"refreshToken": data["refreshToken"]},
        headers={"User-Agent": "Allmine/2.0 (iOS)"},
    )
    travel(20)
    client.post("/api/v1/auth/refresh", json={"refreshToken": data["refreshToken"]})
    second = auth.login(phone(2))
    client.post("/api/v1/auth/logout", headers=bearer(second["accessToken"]))
    rows = db.session.scalars(sa.select(AuthEvent).order_by(AuthEvent.id)).all()
    assert [row.kind for row in rows] == [
        "code_sent", "code_failed", "login", "refresh", "reuse_detected", "code_sent", "login", "logout",
    ]  # fmt: skip
    login = rows[2]
    assert (login.destination, login.ip, login.user_agent) == (
        "+905321234567",
        "127.0.0.1",
        "Allmine/2.0 (iOS)",
    )
    assert str(login.user_id) == data["user"]["id"]
    refresh = rows[3]
    assert (refresh.user_id, refresh.session_id, refresh.ip, refresh.user_agent) == (
        login.user_id,
        login.session_id,
        "127.0.0.1",
        "Allmine/2.0 (iOS)",
    )
    assert refresh.created_at > login.created_at
    for row in rows:
        text = " ".join(map(str, (row.kind, row.destination, row.detail, row.user_agent, row.ip)))
        assert re.search(rf"\b{code}\b", text) is None
    output = runner.invoke(args=["audit", "--user", data["user"]["id"]]).output.splitlines()
    assert [line.split()[1] for line in output] == [
        "reuse_detected",
        "refresh",
        "login",
        "code_failed",
        "code_sent",
    ]
    by_phone = runner.invoke(
        args=["audit", "--destination", "+905321234567", "--limit", "2"]
    ).output.splitlines()
    assert [line.split()[1] for line in by_phone] == ["login", "code_failed"]
    assert runner.invoke(args=["audit"]).exit_code == 2


def test_lockouts_and_failed_deliveries_are_audited(client, auth):
    # Failures count against live codes only: four codes sent to the number, guessed wrong.
    for guesses in (3, 3, 3, 1):
        travel(601)
        code = assert_envelope(auth.send(), 201)["code"]
        for _ in range(guesses):
            assert_error(auth.verify(f"{(int(code) + 1) % 10_000:04d}"), 401, "Invalid or expired code")
    assert [event.kind for event in events("destination_locked")] == ["destination_locked"]
    assert len(events("code_failed")) == 10


def test_limits_fall_back_to_memory_when_redis_goes_away(make_app, private_redis, caplog):
    caplog.set_level(logging.WARNING, "flask-limiter")
    app = limited_app(make_app, RATELIMIT_STORAGE_URI=private_redis.url, RATELIMIT_SEND="2/minute")
    client = app.test_client()
    with app.app_context():
        assert_envelope(client.post(SEND, json=phone(1)), 201)
        private_redis.stop()
        assert_envelope(client.post(SEND, json=phone(2)), 201)
        assert "falling back to in-memory storage" in caplog.text
        assert_envelope(client.post(SEND, json=phone(3)), 201)
        assert_error(client.post(SEND, json=phone(4)), 429, TOO_MANY)


def test_limits_hold_across_two_gunicorn_workers_on_redis(app, tmp_path, private_redis):
    url = private_redis.url
    database = app.config["SQLALCHEMY_DATABASE_URI"]
    if database.startswith("sqlite"):
        database = f"sqlite:///{tmp_path}/shared.db"
        shared = create_app(make_config(SQLALCHEMY_DATABASE_URI=database))
        with shared.app_context():
            db.create_all()
            db.engine.dispose()
    env = {
        "TEST_DATABASE_URL": database,
        "TEST_REDIS_URL": url,
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_SEND": "4/minute",
    }
    with gunicorn_server(env) as first, gunicorn_server(env) as second:
        servers = [first, second] * 5
        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = list(
                pool.map(
                    lambda n: requests.post(f"{servers[n]}{SEND}", json=phone(n), timeout=10).status_code,
                    range(10),
                )
            )
    assert sorted(statuses) == [201] * 4 + [429] * 6


def test_the_same_number_counts_once_for_the_prefix(client):
    assert_envelope(client.post(SEND, json=PHONE), 201)
    assert [event.prefix for event in events("code_sent")] == ["+90"]
