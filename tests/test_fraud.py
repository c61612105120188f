"""SMS-pumping defences: conversion per prefix and network, per-network limits, attestation, replays."""

import logging
import os
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from allmine_auth import create_app
from allmine_auth.config import ConfigError, ProductionConfig, settings_for
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, utcnow
from allmine_auth.notify import DeliveryError, SmsSender
from allmine_auth.rules import abuse, counters
from allmine_auth.rules.destinations import phone_destination
from allmine_auth.store import locks
from allmine_auth.store.unit_of_work import unit_of_work
from allmine_auth.web.netutil import Client
from tests.clock import Clock
from tests.conftest import assert_envelope, assert_error, make_config
from tests.fakes import FakeGateway, free_port
from tests.test_live import at_once, call
from tests.test_metrics import value

SEND = "/api/v1/auth/send-otp"
VERIFY = "/api/v1/auth/verify-otp"
TOO_MANY = "Too many requests"
ATTESTATION = "Attestation required"
HEADER = "X-Client-Attestation"

needs_redis = pytest.mark.skipif(
    not os.environ.get("TEST_REDIS_URL"), reason="the replay runs through the real limits on Redis"
)


def tr(n):
    """A Turkish mobile number (the home prefix +90)."""
    return {"countryCode": "90", "phoneNumber": f"532{n:07d}"}


def gb(n):
    """A British mobile number (a foreign prefix, +44)."""
    return {"countryCode": "44", "phoneNumber": f"7400{n:06d}"}


def at(ip):
    """Test-client arguments for a request from ``ip``."""
    return {"environ_base": {"REMOTE_ADDR": ip}}


def send(client, number, ip="127.0.0.1", token=None):
    """POST send-otp from ``ip`` (with an attestation ``token``) and return the response."""
    headers = {HEADER: token} if token is not None else {}
    return client.post(SEND, json=number, headers=headers, **at(ip))


def verify(client, number, code, ip="127.0.0.1"):
    """POST verify-otp from ``ip`` and return the response."""
    return client.post(VERIFY, json={**number, "code": code}, **at(ip))


def kinds(*wanted):
    """The audit events of the ``wanted`` kinds, oldest first."""
    query = sa.select(AuthEvent).where(AuthEvent.kind.in_(wanted)).order_by(AuthEvent.id)
    return db.session.scalars(query).all()


def scrape(client):
    """The ``/metrics`` text."""
    return client.get("/metrics").get_data(as_text=True)


def trips(text, scope, action):
    """The value of ``allmine_sms_trips_total`` for ``scope`` and ``action``."""
    return value(text, "allmine_sms_trips_total", scope=scope, action=action)


def attestations(text, result):
    """The value of ``allmine_attestation_checks_total`` for ``result``."""
    return value(text, "allmine_attestation_checks_total", result=result)


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The SMS rules' clock, which a test moves forward; every test starts a second into a minute.

    A test that counts sends up to a trip would otherwise fail when its sends straddle a minute's
    end (the current minute is judged apart from settled ones): a flake about once in 30 runs.
    """
    clock = Clock(monkeypatch)
    clock.align_to_minute()
    return clock


@pytest.fixture
def siteverify():
    """A fake captcha ``siteverify`` endpoint on 127.0.0.1 that accepts every token."""
    with FakeGateway(body={"success": True}) as gateway:
        yield gateway


# --- networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:0:12:abcd::1", "2001:db8::/56"),
        ("2001:db8:0:ff00::1", "2001:db8:0:ff00::/56"),
        ("unknown", "unknown"),
        (None, "unknown"),
    ],
)
def test_a_client_network_is_its_ipv4_24_or_ipv6_56(ip, network):
    assert abuse.network_of(ip) == network


def test_sends_are_limited_per_network_next_to_per_ip(make_app):
    app = make_app(
        fresh=True, RATELIMIT_ENABLED=True, RATELIMIT_SEND="5/minute", RATELIMIT_SEND_NETWORK="2/minute"
    )
    client = app.test_client()
    with app.app_context():
        assert_envelope(send(client, tr(1), "198.51.100.1"), 201)
        email = client.post(
            "/api/v1/auth/send-otp-email", json={"email": "a@example.com"}, **at("198.51.100.2")
        )
        assert_envelope(email, 201)
        response = send(client, tr(3), "198.51.100.3")
        assert_error(response, 429, TOO_MANY)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert_envelope(send(client, tr(4), "198.51.101.1"), 201)
        assert_envelope(send(client, tr(5), "2001:db8:0:1::1"), 201)
        assert_envelope(send(client, tr(6), "2001:db8:0:2::1"), 201)
        assert_error(send(client, tr(7), "2001:db8:0:3::1"), 429, TOO_MANY)
        assert_envelope(send(client, tr(8), "2001:db8:0:100::1"), 201)


# --- the counters --------------------------------------------------------------------------------


def test_the_counters_are_a_sliding_window_of_buckets(app):
    start = utcnow().replace(second=30)
    for minutes in (0, 0, 1, 59):
        counters.add([("t:sent", 60, 3660)], start + timedelta(minutes=minutes))
    (window,) = counters.read([("t:sent", 60, (-59, 0))], start + timedelta(minutes=59))
    assert (len(window), sum(window), window[0], window[1], window[-1]) == (60, 4, 2, 1, 1)
    (window,) = counters.read([("t:sent", 60, (-59, 0))], start + timedelta(minutes=60))
    assert sum(window) == 2
    (before,) = counters.read([("t:sent", 60, (-2, -1))], start + timedelta(minutes=1))
    assert before == [0, 2]


def test_counters_go_on_in_the_process_when_redis_goes_away(make_app, private_redis, caplog, monkeypatch):
    app = make_app(fresh=True, REDIS_URL=private_redis.url)
    # The app made its loggers non-propagating during this test, after caplog hooked the existing ones.
    monkeypatch.setattr(logging.getLogger("allmine_auth"), "propagate", True)
    caplog.set_level(logging.WARNING, "allmine_auth")
    with app.app_context():
        now = utcnow()
        counters.add([("t:sent", 60, 120)], now)
        assert counters.read([("t:sent", 60, (0, 0))], now) == [[1]]
        private_redis.stop()
        counters.add([("t:sent", 60, 120)], now)
        assert counters.read([("t:sent", 60, (0, 0))], now) == [[1]]
        assert "Redis unavailable; SMS counts kept in this process" in caplog.text


class FailingSender(SmsSender):
    """An SMS provider that refuses every message."""

    def send_sms(self, phone_e164, text):
        raise DeliveryError("refused")


def test_an_sms_is_counted_once_delivered_and_a_refused_one_is_not(app, client, clock):
    sent = [("all:sent", 60, (0, 0)), ("prefix:+90:sent", 60, (0, 0)), ("net:127.0.0.0/24:sent", 60, (0, 0))]
    assert_envelope(send(client, tr(1)), 201)
    assert counters.read(sent, clock.now()) == [[1], [1], [1]]
    app.extensions["allmine_sms"] = FailingSender(app.config)
    assert_error(send(client, tr(2)), 500, "SMS gönderilirken hata oluştu")
    assert counters.read(sent, clock.now()) == [[1], [1], [1]]


def test_a_marker_is_set_once_while_it_lasts_and_again_after_it_ends(app):
    now = utcnow()
    hour = timedelta(hours=1)
    with unit_of_work():
        assert locks.set_marker("sms-prefix", "+44", now, now + hour)
        assert not locks.set_marker("sms-prefix", "+44", now + hour / 2, now + 2 * hour)
    assert locks.lock_end("sms-prefix", "+44", now + hour / 2) == now + hour
    assert locks.lock_end("sms-prefix", "+44", now + hour) is None
    with unit_of_work():
        assert locks.set_marker("sms-prefix", "+44", now + hour, now + 3 * hour)
    breaker = db.session.get(DestinationLock, ("sms-prefix", "+44"), populate_existing=True)
    assert (breaker.locked_at, breaker.locked_until, breaker.lock_count) == (now + hour, now + 3 * hour, 2)


# --- foreign prefixes: the breaker ---------------------------------------------------------------


def foreign_app(make_app, **settings):
    """An app where +44 is allowed but not home, tripping at 2 x 3 sends an hour."""
    settings = {
        "SMS_ALLOWED_COUNTRIES": ["TR", "GB"],
        "SMS_BASELINE_FLOOR": 3,
        "SMS_TRIP_FACTOR": 2,
        **settings,
    }
    return make_app(fresh=True, **settings)


def test_a_foreign_prefix_trips_on_volume_without_conversion_and_is_audited(make_app, caplog, monkeypatch):
    app = foreign_app(make_app)
    client = app.test_client()
    # The app made its loggers non-propagating during this test, after caplog hooked the existing ones.
    monkeypatch.setattr(logging.getLogger("allmine_auth"), "propagate", True)
    caplog.set_level(logging.WARNING, "allmine_auth")
    with app.app_context():
        before = scrape(client)
        for n in range(6):
            assert_envelope(send(client, gb(n), f"10.0.{n}.1"), 201)
        response = send(client, gb(7), "10.0.7.1")
        assert_error(response, 429, TOO_MANY)
        assert int(response.headers["Retry-After"]) == 3600
        assert_error(send(client, gb(8), "10.0.8.1"), 429, TOO_MANY)
        assert_envelope(send(client, tr(1)), 201)
        (trip,) = kinds("prefix_tripped")
        assert trip.prefix == "+44"
        assert trip.detail.startswith("+44 breaker until ")
        assert "prefix 6 sent/0 verified, normal 0.0/h" in trip.detail
        assert "SMS fraud rule tripped: +44 breaker" in caplog.text
        assert trips(scrape(client), "prefix", "breaker") == trips(before, "prefix", "breaker") + 1
        output = app.test_cli_runner().invoke(args=["audit", "--trips"]).output.splitlines()
        assert len(output) == 1 and output[0].split()[1] == "prefix_tripped"
        assert "+44 breaker until" in output[0]


def test_a_foreign_prefix_whose_codes_are_verified_stays_open(make_app):
    app = foreign_app(make_app)
    client = app.test_client()
    with app.app_context():
        for n in range(20):
            code = assert_envelope(send(client, gb(n), f"10.1.{n}.1"), 201)["code"]
            if n % 4 == 0:  # 25% conversion: above the 20% that counts as collapsed
                assert_envelope(verify(client, gb(n), code, f"10.1.{n}.1"), 200)
        assert kinds("prefix_tripped") == []
        # 11 more that nobody types in. All in this minute, so not settled: of those, threshold - 1 = 5
        # are excused, 5 verified of the other 26 is under 20%.
        for n in range(20, 31):
            assert_envelope(send(client, gb(n), f"10.1.{n}.1"), 201)
        assert_error(send(client, gb(31), "10.1.31.1"), 429, TOO_MANY)
        assert len(kinds("prefix_tripped")) == 1


def test_the_normal_of_a_prefix_is_its_verified_codes_an_hour(make_app, clock):
    app = foreign_app(make_app, SMS_BASELINE_HOURS=2)
    client = app.test_client()
    with app.app_context():
        # Two hours ago: 8 codes verified; normal = 8 / 2 hours = 4 an hour, trip at 2 x 4 = 8 sends.
        for n in range(8):
            code = assert_envelope(send(client, gb(n), f"10.2.{n}.1"), 201)["code"]
            assert_envelope(verify(client, gb(n), code, f"10.2.{n}.1"), 200)
        clock.advance(3600)
        for n in range(8):
            assert_envelope(send(client, gb(100 + n), f"10.3.{n}.1"), 201)
        assert_error(send(client, gb(200), "10.3.99.1"), 429, TOO_MANY)


# --- home prefixes: never shut, tightened -------------------------------------------------------


def home_app(make_app, **settings):
    """An app whose home prefix +90 trips at 2 x 3 sends an hour; networks judged after 100."""
    settings = {"SMS_BASELINE_FLOOR": 3, "SMS_TRIP_FACTOR": 2, "SMS_NETWORK_MIN_SENDS": 100, **settings}
    return make_app(fresh=True, **settings)


def test_a_home_prefix_is_never_shut_off_only_tightened(make_app, clock, caplog):
    caplog.set_level(logging.WARNING, "allmine_auth")
    app = home_app(
        make_app, RATELIMIT_ENABLED=True, RATELIMIT_SEND_NETWORK="30/minute", SMS_SUSPECT_LIMIT_DIVISOR=10
    )
    client = app.test_client()
    with app.app_context():
        before = scrape(client)
        for n in range(6):
            assert_envelope(send(client, tr(n), f"10.4.{n}.1"), 201)
        # Tripped: no breaker, but 30/minute / 10 = 3 SMS a minute per network.
        for n in range(6, 9):
            assert_envelope(send(client, tr(n), "10.5.0.1"), 201)
        response = send(client, tr(9), "10.5.0.2")
        assert_error(response, 429, TOO_MANY)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert_envelope(send(client, tr(10), "10.6.0.1"), 201)
        assert db.session.get(DestinationLock, ("sms-prefix", "+90")) is None
        assert db.session.get(DestinationLock, ("sms-home", "+90")) is not None
        (trip,) = kinds("prefix_tripped")
        assert trip.detail.startswith("+90 tightened until ")
        assert trips(scrape(client), "prefix", "tightened") == trips(before, "prefix", "tightened") + 1
        assert trips(scrape(client), "prefix", "breaker") == trips(before, "prefix", "breaker")
        (refused,) = [event for event in kinds("send_refused") if "tightened" in event.detail]
        assert refused.detail == "suspect prefix +90: network limit tightened to 3 per 60 s"
        clock.advance(61)
        assert_envelope(send(client, tr(11), "10.5.0.3"), 201)
        # The suspicion ends with SMS_SUSPICION_SECONDS, and the hour's window has moved on.
        clock.advance(3600)
        for n in range(12, 16):
            assert_envelope(send(client, tr(n), "10.5.0.4"), 201)


def test_under_suspicion_a_home_send_needs_an_attestation(make_app, siteverify):
    app = home_app(
        make_app,
        ATTESTATION_PROVIDER="turnstile",
        ATTESTATION_SECRET="captcha-secret",
        ATTESTATION_VERIFY_URL=f"{siteverify.url}/siteverify",
    )
    client = app.test_client()
    with app.app_context():
        before = scrape(client)
        for n in range(6):
            assert_envelope(send(client, tr(n), f"10.7.{n}.1"), 201)
        assert siteverify.requests == []  # nobody is asked on a normal day
        assert_error(send(client, tr(6), "10.8.0.1"), 428, ATTESTATION)
        siteverify.respond(200, {"success": False, "error-codes": ["timeout-or-duplicate"]})
        response = send(client, tr(6), "10.8.0.1", token="stale-token")
        assert_error(response, 428, ATTESTATION, "X-Client-Attestation: Not accepted.")
        assert_error(send(client, tr(6), "10.8.0.1", token="x" * 4097), 428, ATTESTATION, abuse.NOT_ACCEPTED)
        siteverify.respond(200, {"success": True})
        assert_envelope(send(client, tr(6), "10.8.0.1", token="fresh-token"), 201)
        asked = siteverify.requests[-1]
        assert (asked.method, asked.path) == ("POST", "/siteverify")
        assert asked.form == {"secret": "captcha-secret", "response": "fresh-token", "remoteip": "10.8.0.1"}
        assert len(siteverify.requests) == 2
        after = scrape(client)
        for result, more in (("missing", 1), ("refused", 2), ("passed", 1)):
            assert attestations(after, result) == attestations(before, result) + more
        details = [event.detail for event in kinds("send_refused")]
        assert details == [
            "suspect prefix +90: attestation missing",
            "suspect prefix +90: attestation refused",
            "suspect prefix +90: attestation refused",
        ]


def test_an_unreachable_provider_lets_home_through_and_refuses_foreign(make_app, caplog, monkeypatch):
    app = home_app(
        make_app,
        SMS_NETWORK_MIN_SENDS=4,
        SMS_BASELINE_FLOOR=1000,
        SMS_ALLOWED_COUNTRIES=["TR", "GB"],
        ATTESTATION_PROVIDER="hcaptcha",
        ATTESTATION_SECRET="captcha-secret",
        ATTESTATION_VERIFY_URL=f"http://127.0.0.1:{free_port()}/siteverify",
        ATTESTATION_TIMEOUT=2,
    )
    client = app.test_client()
    # The app made its loggers non-propagating during this test, after caplog hooked the existing ones.
    monkeypatch.setattr(logging.getLogger("allmine_auth"), "propagate", True)
    caplog.set_level(logging.WARNING, "allmine_auth")
    with app.app_context():
        for n in range(4):
            assert_envelope(send(client, gb(n), "10.9.0.1"), 201)
        # The network is suspect now (4 sends, none verified): its sends need an attestation.
        assert_error(send(client, tr(1), "10.9.0.2"), 428, ATTESTATION)
        (suspected,) = kinds("network_suspected")
        assert suspected.detail.startswith("10.9.0.0/24 tightened until ")
        assert_envelope(send(client, tr(1), "10.9.0.2", token="token"), 201)
        assert "attestation provider unavailable" in caplog.text
        response = send(client, gb(9), "10.9.0.3", token="token")
        assert_error(response, 503, "Service unavailable")
        assert response.headers["Retry-After"] == "30"
        # Other networks are not asked.
        assert_envelope(send(client, gb(10), "10.10.0.1"), 201)


def test_a_network_whose_codes_are_verified_is_never_suspect(make_app):
    app = home_app(
        make_app, SMS_NETWORK_MIN_SENDS=4, SMS_BASELINE_FLOOR=1000, ATTESTATION_PROVIDER="turnstile"
    )
    client = app.test_client()
    with app.app_context():
        for n in range(12):
            code = assert_envelope(send(client, tr(n), "10.11.0.1"), 201)["code"]
            if n % 2:
                assert_envelope(verify(client, tr(n), code, "10.11.0.1"), 200)
        assert kinds("network_suspected", "prefix_tripped", "send_refused") == []
        # A network whose 4 codes nobody types in is asked for an attestation; the first is not.
        for n in range(12, 16):
            assert_envelope(send(client, tr(n), "10.12.0.1"), 201)
        assert_error(send(client, tr(16), "10.12.0.1"), 428, ATTESTATION)
        code = assert_envelope(send(client, tr(17), "10.11.0.1"), 201)["code"]
        assert len(code) == 4


# --- settings -----------------------------------------------------------------------------------


def test_attestation_settings_are_checked_at_start():
    with pytest.raises(ConfigError, match="ATTESTATION_PROVIDER must be one of none, turnstile, hcaptcha"):
        create_app(make_config(ATTESTATION_PROVIDER="recaptcha"))
    production = type(
        "Production",
        (ProductionConfig,),
        {
            "SECRET_KEY": "s" * 40,
            "JWT_SECRET_KEY": "j" * 40,
            "OTP_SECRET_KEY": "o" * 40,
            "SMS_PROVIDER": "netgsm",
            "EMAIL_PROVIDER": "smtp",
            "ATTESTATION_PROVIDER": "turnstile",
        },
    )
    with pytest.raises(ConfigError, match="ATTESTATION_PROVIDER=turnstile needs ATTESTATION_SECRET"):
        settings_for(production)


# --- replays through the real limits on Redis ----------------------------------------------------


@needs_redis
def test_replay_a_pumping_burst_is_cut_within_a_bounded_number_of_sends(make_app):
    # Default limits and rules; +44 allowed (not home), no history. The attacker has 60 networks of 5
    # addresses, each address well inside its per-IP limit, and never verifies a code.
    app = make_app(fresh=True, RATELIMIT_ENABLED=True, SMS_ALLOWED_COUNTRIES=["TR", "GB"])
    client = app.test_client()
    with app.app_context():
        statuses = [send(client, gb(n), f"10.20.{n % 60}.{n // 60 + 1}").status_code for n in range(300)]
        # Cut at SMS_TRIP_FACTOR x SMS_BASELINE_FLOOR = 3 x 20 = 60 sends.
        assert statuses == [201] * 60 + [429] * 240
        assert len(kinds("code_sent")) == 60
        assert len(kinds("prefix_tripped")) == 1
        assert_envelope(send(client, tr(1), "10.21.0.1"), 201)


def carrier_ip(n):
    """The address of the ``n``-th send of a morning: 250 carrier networks (/24) of 8 addresses."""
    return f"100.{64 + n % 50}.{(n // 50) % 5}.{(n // 250) % 8 + 1}"


@needs_redis
def test_replay_a_turkish_morning_at_ten_times_todays_volume_is_never_refused(make_app, clock):
    # Default limits and rules, no history. 5,000 SMS in one hour (10 x today's 500) to distinct
    # numbers from 2,000 addresses in 250 networks; 4 of 5 codes are typed in, 40 sends (29 s) later.
    # The first and last 500 go through HTTP (the cold start, and the full hour's counts); the 4,000
    # between are counted by the calls the send view and a login make, to keep the test short.
    app = make_app(fresh=True, RATELIMIT_ENABLED=True)
    client = app.test_client()
    refused, typed_in = [], []
    with app.app_context():
        for n in range(5000):
            number, ip = tr(1_000_000 + n), carrier_ip(n)
            if 500 <= n < 4500:
                destination = phone_destination(number["countryCode"], number["phoneNumber"])
                with unit_of_work():  # as in the send view: counted once the send committed
                    abuse.count_sms_sent(destination, Client(ip=ip))
                if n % 5:
                    abuse.count_sms_verified(destination, Client(ip=ip))
            else:
                response = send(client, number, ip)
                if response.status_code != 201:
                    refused.append((n, response.status_code, response.get_json()["errors"]))
                elif n % 5:
                    typed_in.append((number, response.get_json()["data"]["code"], ip))
            while typed_in and (len(typed_in) > 40 or n in (499, 4999)):
                assert verify(client, *typed_in.pop(0)).status_code == 200
            clock.advance(0.72)  # 5,000 sends spread over the hour
        assert refused == []
        assert kinds("prefix_tripped", "network_suspected", "send_refused") == []
        assert len(kinds("code_sent")) == len(kinds("login")) * 5 // 4 == 1000


# --- races ---------------------------------------------------------------------------------------


needs_postgresql = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"), reason="races are run against PostgreSQL"
)


@needs_postgresql
def test_parallel_sends_over_the_threshold_trip_the_breaker_once(make_app):
    app = foreign_app(make_app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}{SEND}"
    try:
        for n in range(6):
            assert_envelope(call("POST", url, json=gb(n)), 201)
        numbers = iter(range(100, 110))
        answers = at_once(10, lambda: call("POST", url, json=gb(next(numbers))))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    for answer in answers:
        assert_error(answer, 429, TOO_MANY)
    with app.app_context():
        assert len(kinds("prefix_tripped")) == 1
        assert len(kinds("code_sent")) == 6
        breaker = db.session.get(DestinationLock, ("sms-prefix", "+44"))
        assert breaker.lock_count == 1
