"""The one-time code engine, shared by SMS and email (rules: ``docs/API.md``).

A code is drawn with ``secrets`` and kept only as an HMAC of channel,
destination and code. The right code deletes its row in one statement
(``DELETE ... RETURNING``), so of N parallel checks with it exactly one
succeeds; a wrong one counts an attempt on the row (``UPDATE ... RETURNING``)
and a failure on the destination's counter (``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING``), which locks the destination after too many. Only a
guess at a live code counts: with no live code there is nothing to guess, so
nobody can lock a stranger's number out for free.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from allmine_auth.errors import DeliveryFailed, InvalidCode, RateLimited
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, OneTimeCode, UtcDateTime, utcnow
from allmine_auth.notify import DeliveryError
from allmine_auth.rules import audit
from allmine_auth.rules.audit import Event
from allmine_auth.rules.destinations import SMS

DELIVERY_MESSAGES = {
    SMS: "SMS gönderilirken hata oluştu",
    "email": "Email gönderilirken hata oluştu",
}
# What the per-destination send caps count: every send handed to the provider. A failed one too: a
# gateway that timed out may have delivered it (and billed it), so "10 a day" holds whatever it answered.
SEND_ATTEMPTS = (Event.CODE_SENT, Event.DELIVERY_FAILED)
TEN_MINUTES = timedelta(minutes=10)
ONE_DAY = timedelta(days=1)


def code_hmac(destination, code):
    """The stored form of ``code``: an HMAC keyed by ``OTP_SECRET_KEY``, bound to channel and destination."""
    key = current_app.config["OTP_SECRET_KEY"].encode()
    message = f"{destination.channel}\x00{destination.address}\x00{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def code_ttl(channel):
    """How long a code for ``channel`` lives, in seconds."""
    config = current_app.config
    return config["OTP_TTL_SMS"] if channel == SMS else config["OTP_TTL_EMAIL"]


def test_code_for(destination, now):
    """The fixed code of a configured test destination still in date, else ``None``."""
    entry = current_app.config["OTP_TEST_DESTINATIONS"].get(destination.address)
    if entry is None:
        return None
    code, last_day = entry
    if last_day is not None and now.date() > last_day:
        return None
    return code


def seconds_until(moment, now):
    """Whole seconds from ``now`` to ``moment``, at least 1 (a ``Retry-After`` value)."""
    return max(1, int((moment - now).total_seconds() + 0.999))


def lock_end(destination, now):
    """When the destination's lock ends, if it is locked at ``now``; else ``None``."""
    return db.session.scalar(
        sa.select(DestinationLock.locked_until).where(
            DestinationLock.channel == destination.channel,
            DestinationLock.destination == destination.address,
            DestinationLock.locked_until > now,
        )
    )


def ensure_not_locked(destination, now):
    """Refuse a locked destination with 429 and the time left on the lock."""
    until = lock_end(destination, now)
    if until is not None:
        raise RateLimited(retry_after=seconds_until(until, now))


def ensure_send_allowed(destination, now):
    """Apply the per-destination send limits: the resend interval, 10 minutes and 24 hours."""
    config = current_app.config
    ensure_not_locked(destination, now)
    current = db.session.scalar(
        sa.select(OneTimeCode.created_at).where(
            OneTimeCode.channel == destination.channel, OneTimeCode.destination == destination.address
        )
    )
    interval = timedelta(seconds=config["OTP_RESEND_INTERVAL"])
    if current is not None and current + interval > now:
        raise RateLimited(retry_after=seconds_until(current + interval, now))
    windows = ((TEN_MINUTES, config["OTP_MAX_SENDS_10MIN"]), (ONE_DAY, config["OTP_MAX_SENDS_24H"]))
    counts = audit.count_events(
        SEND_ATTEMPTS,
        now - ONE_DAY,
        *(AuthEvent.created_at > now - window for window, _ in windows),
        destination=destination,
    )
    for (window, limit), sent in zip(windows, counts, strict=True):
        if sent >= limit:
            oldest = audit.oldest_event_since(SEND_ATTEMPTS, now - window, destination)
            raise RateLimited(retry_after=seconds_until(oldest + window, now))


def store_code(destination, code, now):
    """Replace the destination's code with ``code`` and commit; a concurrent send loses with 429."""
    ttl = timedelta(seconds=code_ttl(destination.channel))
    interval = timedelta(seconds=current_app.config["OTP_RESEND_INTERVAL"])
    values = {
        "code_hash": code_hmac(destination, code),
        "attempts": 0,
        "created_at": now,
        "expires_at": now + ttl,
    }
    replaced = db.session.execute(
        sa.update(OneTimeCode)
        .where(
            OneTimeCode.channel == destination.channel,
            OneTimeCode.destination == destination.address,
            OneTimeCode.created_at <= now - interval,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not replaced:
        db.session.add(OneTimeCode(channel=destination.channel, destination=destination.address, **values))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise RateLimited(retry_after=current_app.config["OTP_RESEND_INTERVAL"]) from None
    return values["code_hash"]


def discard_code(destination, code_hash):
    """Delete the destination's code if it is still ``code_hash`` (after a failed delivery)."""
    db.session.execute(
        sa.delete(OneTimeCode).where(
            OneTimeCode.channel == destination.channel,
            OneTimeCode.destination == destination.address,
            OneTimeCode.code_hash == code_hash,
        )
    )


def issue_code(destination, deliver, client=None, *, now=None, guard=None):
    """Draw, store and deliver a code for ``destination``; return the code.

    ``deliver(code)`` hands the code to the SMS or email sender. A test
    destination gets its fixed code and nothing is sent; any other first
    passes ``guard(destination, client, now)`` (the SMS budgets). When delivery fails
    the stored code is removed again, so no usable code is left behind.
    """
    now = now or utcnow()
    fixed = test_code_for(destination, now)
    if fixed is not None:
        return fixed
    if guard is not None:
        guard(destination, client, now)
    ensure_send_allowed(destination, now)
    code = f"{secrets.randbelow(10_000):04d}"
    code_hash = store_code(destination, code, now)
    try:
        deliver(code)
    except DeliveryError as exc:
        discard_code(destination, code_hash)
        audit.record(Event.DELIVERY_FAILED, client, destination=destination, detail=str(exc)[:255])
        db.session.commit()
        raise DeliveryFailed(message=DELIVERY_MESSAGES[destination.channel]) from exc
    audit.record(Event.CODE_SENT, client, destination=destination, now=now)
    db.session.commit()
    return code


def live_code_params(destination, now, **more):
    """The parameters of ``USE_CODE`` and ``COUNT_ATTEMPT``: the destination's code still live at ``now``."""
    return {
        "b_channel": destination.channel,
        "b_destination": destination.address,
        "b_now": now,
        "b_max_attempts": current_app.config["OTP_MAX_ATTEMPTS"],
        **more,
    }


def count_attempt(destination, now):
    """Count one attempt on the live code; return ``(id, attempts)`` or ``None`` when no code is live.

    The ``UPDATE`` locks the row until the transaction ends, so parallel
    guesses at one code take their turns; the failure record that follows
    commits the count.
    """
    return db.session.execute(COUNT_ATTEMPT, live_code_params(destination, now)).first()


def count_failure(destination, now):
    """Count one failed check on the destination's counter; return the counter or ``None`` if it is locked.

    One atomic upsert (``COUNT_FAILURE``) that locks the counter's row until
    the transaction ends: of parallel failures the N-th sees exactly N, and
    one that comes after the lock was set counts nothing. The counter row is
    ``(failures, locked_at, lock_count)`` after the count.
    """
    params = {
        "b_channel": destination.channel,
        "b_destination": destination.address,
        "b_now": now,
        "b_window_start": now - ONE_DAY,
    }
    return db.session.execute(COUNT_FAILURE[db.engine.dialect.name], params).first()


def lock_destination(destination, client, now, counter):
    """Lock the destination for ``OTP_LOCK_SECONDS`` (doubled per lock of the day before); restart its count.

    The caller holds the counter's row (``count_failure``), so this plain
    ``UPDATE`` is the only writer of the lock.
    """
    repeat = counter.locked_at is not None and counter.locked_at > now - ONE_DAY
    count = counter.lock_count + 1 if repeat else 1
    until = now + timedelta(seconds=current_app.config["OTP_LOCK_SECONDS"] * 2 ** (count - 1))
    db.session.execute(
        LOCK_DESTINATION,
        {
            "b_channel": destination.channel,
            "b_destination": destination.address,
            "b_now": now,
            "b_until": until,
            "b_lock_count": count,
        },
    )
    audit.record(
        Event.DESTINATION_LOCKED, client, destination=destination, detail=f"until {until.isoformat()}"
    )


def record_failure(destination, client, now):
    """Record a failed check against a live code, lock after too many failures; commit.

    Committed here, before the 401 is raised, so nothing a failing check
    wrote is lost to what the request does next. If a parallel request has
    locked the destination since this one checked, the whole check is undone
    (the attempt on the code too) and it is a 429: a locked destination
    counts nothing.
    """
    counter = count_failure(destination, now)
    if counter is None:
        # Locked by a parallel check since this one's lock check: undo the attempt counted on the code.
        db.session.rollback()
        raise RateLimited(retry_after=seconds_until(lock_end(destination, now), now))
    audit.record(Event.CODE_FAILED, client, destination=destination, now=now)
    if counter.failures >= current_app.config["OTP_LOCK_AFTER_FAILURES"]:
        lock_destination(destination, client, now, counter)
    db.session.commit()


def consume_code(destination, code, client=None, *, now=None):
    """Check ``code`` for ``destination`` and use it up, without committing the use.

    The caller commits once the login it guards is written, so that the
    code's deletion and the login land together. Raises ``InvalidCode`` (one
    text for unknown, wrong, expired and used codes) or ``RateLimited``.

    The right code is one statement: ``USE_CODE`` deletes the live code whose
    HMAC matches, unless the destination is locked. Its row lock lasts until
    the caller commits, so of N parallel checks with the right code one
    deletes it and the others, waiting on the lock, then find nothing and fail.
    Anything else takes the slow path: a lock is a 429 (no attempt counted),
    else the attempt is counted on the live code and the failure recorded.
    With no live code (none sent, expired, burnt, or used by a parallel check
    with the right code) there was nothing to guess: 401, nothing counted.
    A test destination's fixed code is always live: wrong guesses at it
    count, or it could be guessed without end.
    """
    now = now or utcnow()
    fixed = test_code_for(destination, now)
    if fixed is not None and hmac.compare_digest(fixed, code):
        ensure_not_locked(destination, now)
        return
    params = live_code_params(destination, now, b_code_hash=code_hmac(destination, code))
    if db.session.execute(USE_CODE, params).first() is not None:
        return
    ensure_not_locked(destination, now)
    row = count_attempt(destination, now)
    if row is None and fixed is None:
        # Nothing live to guess at: counting it would let anyone lock a stranger's number out for free.
        raise InvalidCode()
    # A spent code (attempts used up) is no longer live but keeps its row: its ``created_at`` holds the
    # resend interval, which deleting it would let three wrong guesses skip. A new code replaces it.
    record_failure(destination, client, now)
    raise InvalidCode()


# The statements of a check, built once (compiled once) on the Core tables; values come as parameters
# (named b_*: a bind parameter may not share a column's name in an UPDATE).
_CODES, _LOCKS = OneTimeCode.__table__, DestinationLock.__table__
_LIVE_CODE = (
    _CODES.c.channel == sa.bindparam("b_channel"),
    _CODES.c.destination == sa.bindparam("b_destination"),
    _CODES.c.expires_at > sa.bindparam("b_now"),
    _CODES.c.attempts < sa.bindparam("b_max_attempts"),
)
_NOT_LOCKED = ~sa.exists().where(
    _LOCKS.c.channel == sa.bindparam("b_channel"),
    _LOCKS.c.destination == sa.bindparam("b_destination"),
    _LOCKS.c.locked_until > sa.bindparam("b_now"),
)
# HMACs compared by the database: both sides are keyed hashes, so timing tells nothing about the code.
USE_CODE = (
    sa.delete(_CODES)
    .where(*_LIVE_CODE, _CODES.c.code_hash == sa.bindparam("b_code_hash"), _NOT_LOCKED)
    .returning(_CODES.c.id)
)
COUNT_ATTEMPT = (
    sa.update(_CODES)
    .where(*_LIVE_CODE)
    .values(attempts=_CODES.c.attempts + 1)
    .returning(_CODES.c.id, _CODES.c.attempts)
)


def count_failure_statement(insert):
    """``COUNT_FAILURE`` built with a dialect's ``insert`` (PostgreSQL's and SQLite's upserts are alike).

    A new counter starts at 1; an existing one adds 1 inside its 24 h window
    or starts a new window at 1. The ``WHERE`` of the update skips a locked
    counter, which then returns no row.
    """
    now = sa.bindparam("b_now", type_=UtcDateTime)
    in_window = _LOCKS.c.window_started_at > sa.bindparam("b_window_start", type_=UtcDateTime)
    statement = insert(_LOCKS).values(
        channel=sa.bindparam("b_channel"),
        destination=sa.bindparam("b_destination"),
        failures=1,
        window_started_at=now,
        lock_count=0,
    )
    return statement.on_conflict_do_update(
        index_elements=[_LOCKS.c.channel, _LOCKS.c.destination],
        set_={
            "failures": sa.case((in_window, _LOCKS.c.failures + 1), else_=1),
            "window_started_at": sa.case((in_window, _LOCKS.c.window_started_at), else_=now),
        },
        where=sa.or_(_LOCKS.c.locked_until.is_(None), _LOCKS.c.locked_until <= now),
    ).returning(_LOCKS.c.failures, _LOCKS.c.locked_at, _LOCKS.c.lock_count)


COUNT_FAILURE = {
    "postgresql": count_failure_statement(postgresql.insert),
    "sqlite": count_failure_statement(sqlite.insert),
}
# Run while the caller holds the counter's row (after ``COUNT_FAILURE``): a new window starts after the lock.
LOCK_DESTINATION = (
    sa.update(_LOCKS)
    .where(
        _LOCKS.c.channel == sa.bindparam("b_channel"), _LOCKS.c.destination == sa.bindparam("b_destination")
    )
    .values(
        failures=0,
        window_started_at=None,
        locked_at=sa.bindparam("b_now"),
        locked_until=sa.bindparam("b_until"),
        lock_count=sa.bindparam("b_lock_count"),
    )
)
