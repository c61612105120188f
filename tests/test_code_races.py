"""Checking one-time codes under races, and lock-outs nobody can aim at a stranger.

Failed checks count only against a live code, on a per-destination counter
written by one atomic upsert: parallel wrong guesses count exactly and lock
once, the losers of a race for the right code count nothing, and guesses at
a number with no live code count nothing. Parallel requests go to a threaded
server on a database the threads share (PostgreSQL when configured, else a
SQLite file), released together by a barrier.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from allmine_auth.errors import RateLimited
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, LoginSession, OneTimeCode, User, utcnow
from allmine_auth.rules.codes import record_failure
from allmine_auth.rules.destinations import phone_destination
from allmine_auth.store.codes import count_attempt
from allmine_auth.store.unit_of_work import unit_of_work
from tests.conftest import E164, PHONE, AuthActions, assert_envelope, assert_error
from tests.parallel import at_once, call
from tests.timeshift import travel

PARALLEL = 20
LOCK_AFTER = 10  # OTP_LOCK_AFTER_FAILURES
INVALID = "Invalid or expired code"
TOO_MANY = "Too many requests"
DESTINATION = phone_destination("90", "5321234567")


def post(url, body):
    """POST ``body`` to ``url`` on a connection of its own and return the answer."""
    return call("POST", url, json=body)


@pytest.fixture
def auth(shared_app):
    """Sequential requests to ``shared_app`` through its test client."""
    return AuthActions(shared_app.test_client())


def wrong(code):
    """A code that is not ``code``."""
    return f"{(int(code) + 1) % 10_000:04d}"


def events(kind):
    db.session.rollback()  # a fresh snapshot: the server's threads committed what they wrote
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuthEvent).where(AuthEvent.kind == kind))


def counter():
    """The destination's failure counter and lock, read afresh, or ``None``."""
    db.session.rollback()
    return db.session.get(DestinationLock, (DESTINATION.channel, DESTINATION.address), populate_existing=True)


def stored_attempts():
    db.session.rollback()
    return db.session.scalars(sa.select(OneTimeCode.attempts)).all()


def burn_codes(auth, guesses):
    """Send a code per item of ``guesses`` and guess it wrong that many times (each a 401)."""
    for count in guesses:
        travel(601)  # past the resend interval and the 10-minute send cap
        code = assert_envelope(auth.send(), 201)["code"]
        for _ in range(count):
            assert_error(auth.verify(wrong(code)), 401, INVALID)


def parallel_verifies(live_url, code):
    """``PARALLEL`` verifies of ``code`` for the phone at once."""
    return at_once(PARALLEL, lambda: post(f"{live_url}/api/v1/auth/verify-otp", {**PHONE, "code": code}))


def statuses(answers):
    return sorted(answer.status_code for answer in answers)


def assert_locked_answers(answers, lock_seconds):
    """Every answer is a 401 or a 429 whose ``Retry-After`` is the time left on a fresh lock."""
    for answer in answers:
        if answer.status_code == 429:
            assert_error(answer, 429, TOO_MANY)
            # A request that waited for the one that locked began a moment earlier: up to a second more.
            assert lock_seconds - 30 <= int(answer.headers["Retry-After"]) <= lock_seconds + 1
        else:
            assert_error(answer, 401, INVALID)


def assert_locked_once():
    """One lock of an hour from about now, its counter restarted."""
    lock = counter()
    assert (lock.failures, lock.window_started_at, lock.lock_count) == (0, None, 1)
    assert 3600 - 30 <= (lock.locked_until - utcnow()).total_seconds() <= 3600
    assert events("destination_locked") == 1


@pytest.mark.parametrize("config_overrides", [{"OTP_MAX_ATTEMPTS": PARALLEL}])
def test_parallel_wrong_guesses_at_one_live_code_count_exactly_and_lock_once(shared_app, live_url, auth):
    # Enough attempts on the code for every guess: only the failure limit stops them.
    code = assert_envelope(auth.send(), 201)["code"]
    answers = parallel_verifies(live_url, wrong(code))
    assert statuses(answers) == [401] * LOCK_AFTER + [429] * (PARALLEL - LOCK_AFTER), [
        answer.body for answer in answers
    ]
    assert_locked_answers(answers, 3600)
    assert events("code_failed") == LOCK_AFTER
    assert_locked_once()
    # The guesses that met the lock counted no attempt either.
    assert stored_attempts() == [LOCK_AFTER]


def test_parallel_wrong_guesses_with_default_settings_lock_at_the_tenth_failure(shared_app, live_url, auth):
    burn_codes(auth, (3, 3, 3))
    assert (counter().failures, counter().locked_until) == (9, None)
    travel(601)
    code = assert_envelope(auth.send(), 201)["code"]
    answers = parallel_verifies(live_url, wrong(code))
    assert statuses(answers) == [401] + [429] * (PARALLEL - 1), [answer.body for answer in answers]
    assert_locked_answers(answers, 3600)
    assert events("code_failed") == LOCK_AFTER
    assert_locked_once()
    # One attempt counted on the fourth code: no code ever holds more than OTP_MAX_ATTEMPTS.
    assert stored_attempts() == [1]


@pytest.mark.parametrize("config_overrides", [{"OTP_TEST_DESTINATIONS": {E164: ("4321", None)}}])
def test_parallel_wrong_guesses_at_a_test_destinations_fixed_code_count_exactly(shared_app, live_url, auth):
    # The fixed code is always live: wrong guesses at it count, or it could be guessed without end.
    answers = parallel_verifies(live_url, "1111")
    assert statuses(answers) == [401] * LOCK_AFTER + [429] * (PARALLEL - LOCK_AFTER), [
        answer.body for answer in answers
    ]
    assert_locked_answers(answers, 3600)
    assert events("code_failed") == LOCK_AFTER
    assert_locked_once()
    travel(3601)
    assert_envelope(auth.verify("4321"), 200)


def test_of_parallel_right_codes_one_logs_in_and_the_losers_count_nothing(shared_app, live_url, auth):
    code = assert_envelope(auth.send(), 201)["code"]
    answers = parallel_verifies(live_url, code)
    assert statuses(answers) == [200] + [401] * (PARALLEL - 1), [answer.body for answer in answers]
    for answer in answers:
        if answer.status_code == 401:
            assert_error(answer, 401, INVALID)
    login = assert_envelope(next(answer for answer in answers if answer.status_code == 200), 200)
    assert events("code_failed") == 0
    assert (counter(), events("destination_locked")) == (None, 0)
    assert (db.session.scalar(sa.select(sa.func.count()).select_from(LoginSession)), stored_attempts()) == (
        1,
        [],
    )
    # Its owner, just logged in on one device, logs in again on another at once.
    again = assert_envelope(auth.verify(assert_envelope(auth.send(), 201)["code"]), 200)
    assert again["user"]["id"] == login["user"]["id"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_of_parallel_sends_to_one_number_one_stores_a_code_and_the_others_are_429(shared_app, live_url, auth):
    answers = at_once(PARALLEL, lambda: post(f"{live_url}/api/v1/auth/send-otp", PHONE))
    assert statuses(answers) == [201] + [429] * (PARALLEL - 1), [answer.body for answer in answers]
    for answer in answers:
        if answer.status_code == 429:
            assert_error(answer, 429, TOO_MANY)
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
    code = assert_envelope(next(answer for answer in answers if answer.status_code == 201), 201)["code"]
    assert (len(stored_attempts()), events("code_sent")) == (1, 1)
    assert_envelope(auth.verify(code), 200)


def test_parallel_guesses_at_a_number_with_no_live_code_count_nothing(shared_app, live_url, auth):
    answers = parallel_verifies(live_url, "0000")
    for answer in answers:
        assert_error(answer, 401, INVALID)
    assert (events("code_failed"), events("destination_locked"), counter()) == (0, 0, None)
    assert_envelope(auth.verify(assert_envelope(auth.send(), 201)["code"]), 200)


def guess_many(auth):
    """More wrong guesses than lock a number, each a 401."""
    for _ in range(12):
        assert_error(auth.verify("0000"), 401, INVALID)


def test_guesses_when_no_code_is_live_count_nothing(auth):
    guess_many(auth)  # no code was ever sent
    code = assert_envelope(auth.send(), 201)["code"]
    travel(181)
    guess_many(auth)  # the code expired
    burn_codes(auth, (3,))
    guess_many(auth)  # the code is burnt by its three wrong guesses
    travel(601)
    assert_envelope(auth.verify(assert_envelope(auth.send(), 201)["code"]), 200)
    guess_many(auth)  # the code was used
    assert_error(auth.verify(code), 401, INVALID)
    assert (events("code_failed"), events("destination_locked")) == (3, 0)
    assert (counter().failures, counter().locked_until) == (3, None)
    travel(601)
    assert_envelope(auth.verify(assert_envelope(auth.send(), 201)["code"]), 200)


def test_the_lock_out_takes_failures_against_codes_sent_to_the_victim_and_still_doubles(auth):
    for round_number, lock_seconds in ((1, 3600), (2, 7200)):
        for _ in range(3):
            burn_codes(auth, (3,))
            guess_many(auth)  # between codes: nothing live, nothing counted
        assert (counter().failures, events("destination_locked")) == (9, round_number - 1)
        burn_codes(auth, (1,))
        response = auth.verify("0000")
        assert_error(response, 429, TOO_MANY)
        assert lock_seconds - 10 <= int(response.headers["Retry-After"]) <= lock_seconds
        assert (counter().lock_count, events("destination_locked")) == (round_number, round_number)
        assert events("code_failed") == LOCK_AFTER * round_number
        travel(lock_seconds + 1)


def test_a_failure_that_meets_a_lock_set_since_its_check_is_a_429_and_counts_nothing(auth):
    assert_envelope(auth.send(), 201)
    now = utcnow()
    # A parallel check locked the number after this one found it unlocked (its lock check is skipped here).
    db.session.add(
        DestinationLock(
            channel=DESTINATION.channel,
            destination=DESTINATION.address,
            locked_at=now,
            locked_until=now + timedelta(hours=1),
            lock_count=1,
        )
    )
    db.session.commit()
    with pytest.raises(RateLimited) as raised, unit_of_work():
        assert count_attempt(DESTINATION.channel, DESTINATION.address, now, max_attempts=3).attempts == 1
        record_failure(DESTINATION, None, now)
    assert (raised.value.retry_after, raised.value.keep_records) == (3600, False)
    # Undone: the attempt on the code too.
    assert (stored_attempts(), events("code_failed"), counter().failures) == ([0], 0, 0)


def test_purge_drops_counters_and_locks_over_for_a_day_and_keeps_the_rest(app, runner):
    now = utcnow()
    day = timedelta(days=1, seconds=1)
    rows = {
        "+905320000001": {"failures": 3, "window_started_at": now - day},  # an old window: gone
        "+905320000002": {"failures": 3, "window_started_at": now},  # counting today: kept
        "+905320000003": {"locked_at": now - 2 * day, "locked_until": now - day},  # lock over a day ago
        "+905320000004": {"locked_at": now - day, "locked_until": now},  # lock just over: still doubles
    }
    for destination, values in rows.items():
        db.session.add(DestinationLock(channel="sms", destination=destination, **values))
    db.session.commit()
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    kept = db.session.scalars(sa.select(DestinationLock.destination).order_by(DestinationLock.destination))
    assert kept.all() == ["+905320000002", "+905320000004"]
