"""The one-time code engine, shared by SMS and email (rules: ``docs/API.md``).

A code is drawn with ``secrets`` and kept only as an HMAC of channel,
destination and code. The right code deletes its row in one statement
(``store.codes.use_code``), so of N parallel checks with it exactly one
succeeds; a wrong one counts an attempt on the row and a failure on the
destination's counter (``store.locks.count_failure``), which locks the
destination after too many. Only a guess at a live code counts: with no live
code there is nothing to guess, so nobody can lock a stranger's number out for
free.

Nothing here commits: the request's unit of work does. A failed check's count
and lock are kept by raising with ``keep_records=True``. A code is stored in the
request's unit of work and handed to the SMS or email provider only after it
commits (``after_commit``): a hanging gateway then holds no pooled connection
and no row lock.
"""

import functools
import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import current_app

from allmine_auth.errors import DeliveryFailed, InvalidCode, RateLimited
from allmine_auth.models import Event, utcnow
from allmine_auth.notify import DeliveryError
from allmine_auth.rules import audit
from allmine_auth.rules.destinations import SMS
from allmine_auth.store import codes as stored_codes
from allmine_auth.store import locks
from allmine_auth.store.unit_of_work import after_commit, alone

DELIVERY_MESSAGES = {
    SMS: "SMS gönderilirken hata oluştu",
    "email": "Email gönderilirken hata oluştu",
}
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


def ensure_not_locked(destination, now):
    """Refuse a locked destination with 429 and the time left on the lock."""
    until = locks.lock_end(destination.channel, destination.address, now)
    if until is not None:
        raise RateLimited(retry_after=seconds_until(until, now))


def refused_send(retry_after):
    """The 429 of a send the per-destination limits refuse.

    It writes nothing itself, but keeps what the send's screening wrote before
    it (an SMS rule's marker and its audit row), as it did when those
    committed at once.
    """
    return RateLimited(retry_after=retry_after, keep_records=True)


def store_code(destination, code, now):
    """Store ``code`` as the destination's code if the per-destination limits allow it; return its HMAC.

    The limits: a lock, the resend interval, 10 minutes and 24 hours. They
    are read and the code stored in one statement
    (``store.codes.check_and_store_code``); a refusal is a 429 whose
    ``Retry-After`` is the end of the first limit that refused (a lock, then
    the interval, then the caps). A send that raced another to the same
    destination and lost finds a younger code and is a 429 too.
    """
    config = current_app.config
    interval = timedelta(seconds=config["OTP_RESEND_INTERVAL"])
    code_hash = code_hmac(destination, code)
    windows = ((TEN_MINUTES, config["OTP_MAX_SENDS_10MIN"]), (ONE_DAY, config["OTP_MAX_SENDS_24H"]))
    (short_window, short_max), (long_window, long_max) = windows
    # The send's one write, and its last: alone, it needs no transaction around it.
    with alone():
        check = stored_codes.check_and_store_code(
            destination.channel,
            destination.address,
            code_hash,
            now,
            now + timedelta(seconds=code_ttl(destination.channel)),
            (now - interval, now - short_window, short_max, now - long_window, long_max),
        )
    if check.stored:
        return code_hash
    if check.locked_until is not None:
        raise refused_send(seconds_until(check.locked_until, now))
    if check.current_at is not None and check.current_at + interval > now:
        # A parallel send's code may be younger than this request's ``now`` (it read the clock later):
        # the interval is never longer than itself.
        wait = min(seconds_until(check.current_at + interval, now), int(interval.total_seconds()))
        raise refused_send(wait)
    caps = ((short_window, short_max, check.sent_short, check.oldest_short),)
    caps += ((long_window, long_max, check.sent_long, check.oldest_long),)
    for window, limit, sent, oldest in caps:
        if sent >= limit:
            raise refused_send(seconds_until(oldest + window, now))
    raise refused_send(int(interval.total_seconds()))  # a parallel send stored its code first


def issue_code(destination, deliver, client=None, *, now=None, guard=None):
    """Draw and store a code for ``destination``, queue its delivery; return the code.

    ``deliver(code)`` hands the code to the SMS or email sender; it runs once
    the request's unit of work has committed (``deliver_code``). A test
    destination gets its fixed code and nothing is sent; any other first
    passes ``guard(destination, client, now)`` (the SMS budgets).
    """
    now = now or utcnow()
    fixed = test_code_for(destination, now)
    if fixed is not None:
        return fixed
    if guard is not None:
        guard(destination, client, now)
    code = f"{secrets.randbelow(10_000):04d}"
    code_hash = store_code(destination, code, now)
    after_commit(functools.partial(deliver_code, destination, code, code_hash, deliver, client, now))
    return code


def deliver_code(destination, code, code_hash, deliver, client, now):
    """Hand a stored code to the provider and record the send (an after-commit action).

    Outside any transaction while the provider answers: the row lock and the
    pooled connection of the send were given back at its commit. When
    delivery fails the code is removed again, so no usable code is left
    behind, and the failure is recorded (the send caps count it) and kept by
    the 500.
    """
    try:
        deliver(code)
    except DeliveryError as exc:
        stored_codes.discard_code(destination.channel, destination.address, code_hash)
        audit.record(Event.DELIVERY_FAILED, client, destination=destination, detail=str(exc)[:255])
        raise DeliveryFailed(message=DELIVERY_MESSAGES[destination.channel], keep_records=True) from exc
    with alone():  # the unit's only write: one INSERT, no transaction around it
        audit.record(Event.CODE_SENT, client, destination=destination, now=now)


def lock_destination(destination, client, now, counter):
    """Lock the destination for ``OTP_LOCK_SECONDS`` (doubled per lock of the day before); restart its count.

    ``counter`` is the row ``count_failure`` returned; the caller holds it.
    """
    repeat = counter.locked_at is not None and counter.locked_at > now - ONE_DAY
    count = counter.lock_count + 1 if repeat else 1
    until = now + timedelta(seconds=current_app.config["OTP_LOCK_SECONDS"] * 2 ** (count - 1))
    locks.lock_destination(destination.channel, destination.address, now, until, count)
    audit.record(
        Event.DESTINATION_LOCKED, client, destination=destination, detail=f"until {until.isoformat()}"
    )


def record_failure(destination, client, now):
    """Record a failed check against a live code, and lock after too many failures.

    The caller then raises ``InvalidCode(keep_records=True)``, so what a
    failing check wrote commits whatever the request does next. If a parallel
    request has locked the destination since this one checked, it is a 429
    raised without ``keep_records``: the unit of work undoes the whole check
    (the attempt on the code too), since a locked destination counts nothing.
    """
    counter = locks.count_failure(destination.channel, destination.address, now, now - ONE_DAY)
    if counter is None:
        until = locks.lock_end(destination.channel, destination.address, now)
        raise RateLimited(retry_after=seconds_until(until, now))
    audit.record(Event.CODE_FAILED, client, destination=destination, now=now)
    if counter.failures >= current_app.config["OTP_LOCK_AFTER_FAILURES"]:
        lock_destination(destination, client, now, counter)


def consume_code(destination, code, client=None, *, now=None):
    """Check ``code`` for ``destination`` and use it up in the request's unit of work.

    The code's deletion commits with the login it guards. Raises
    ``InvalidCode`` (one text for unknown, wrong, expired and used codes) or
    ``RateLimited``.

    The right code is one statement (``use_code``): it deletes the live code
    whose HMAC matches, unless the destination is locked. Its row lock lasts
    until the unit of work ends, so of N parallel checks with the right code
    one deletes it and the others, waiting on the lock, then find nothing and
    fail. Anything else takes the slow path: a lock is a 429 (no attempt
    counted), else the attempt is counted on the live code and the failure
    recorded, kept by the 401. With no live code (none sent, expired, burnt,
    or used by a parallel check with the right code) there was nothing to
    guess: 401, nothing counted. A test destination's fixed code is always
    live: wrong guesses at it count, or it could be guessed without end.
    """
    now = now or utcnow()
    fixed = test_code_for(destination, now)
    if fixed is not None and hmac.compare_digest(fixed, code):
        ensure_not_locked(destination, now)
        return
    channel, address = destination.channel, destination.address
    max_attempts = current_app.config["OTP_MAX_ATTEMPTS"]
    if stored_codes.use_code(channel, address, code_hmac(destination, code), now, max_attempts):
        return
    refuse_code(destination, client, now, fixed)


def refuse_code(destination, client, now, fixed=None):
    """The slow path of a check that used no code (``use_code`` found none): raise its 401 or 429.

    A lock is a 429 (no attempt counted); else the attempt is counted on the
    live code and the failure recorded, kept by the 401; with no live code
    (and no ``fixed`` test code) it is a 401 counting nothing. Also the SMS
    login's, after its one statement found no live code (``rules.logins``).
    """
    ensure_not_locked(destination, now)
    channel, address = destination.channel, destination.address
    attempt = stored_codes.count_attempt(channel, address, now, current_app.config["OTP_MAX_ATTEMPTS"])
    if attempt is None and fixed is None:
        # Nothing live to guess at: counting it would let anyone lock a stranger's number out for free.
        raise InvalidCode()
    # A spent code (attempts used up) is no longer live but keeps its row: its ``created_at`` holds the
    # resend interval, which deleting it would let three wrong guesses skip. A new code replaces it.
    record_failure(destination, client, now)
    raise InvalidCode(keep_records=True)
