"""The SQL of ``one_time_codes``: store, use, count and discard a destination's one code.

A destination has one row (``uq_one_time_codes_destination``); a code is
*live* while it has not expired and has attempts left. Statements are built
once (compiled once) on the Core table; values come as parameters (named
``b_*``: a bind parameter may not share a column's name in an ``UPDATE``).
"""

import uuid
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, Event, OneTimeCode, UtcDateTime
from allmine_auth.store.dialects import for_each_dialect, of_engine, on_postgresql
from allmine_auth.store.locks import NOT_LOCKED

_CODES = OneTimeCode.__table__
_OF_DESTINATION = (
    _CODES.c.channel == sa.bindparam("b_channel"),
    _CODES.c.destination == sa.bindparam("b_destination"),
)
_LIVE_CODE = (
    *_OF_DESTINATION,
    _CODES.c.expires_at > sa.bindparam("b_now"),
    _CODES.c.attempts < sa.bindparam("b_max_attempts"),
)
# HMACs compared by the database: both sides are keyed hashes, so timing tells nothing about the code.
USE_CODE = (
    sa.delete(_CODES)
    .where(*_LIVE_CODE, _CODES.c.code_hash == sa.bindparam("b_code_hash"), NOT_LOCKED)
    .returning(_CODES.c.id)
)
COUNT_ATTEMPT = (
    sa.update(_CODES)
    .where(*_LIVE_CODE)
    .values(attempts=_CODES.c.attempts + 1)
    .returning(_CODES.c.id, _CODES.c.attempts)
)
DISCARD_CODE = sa.delete(_CODES).where(*_OF_DESTINATION, _CODES.c.code_hash == sa.bindparam("b_code_hash"))


def use_code(channel, destination, code_hash, now, max_attempts):
    """Delete the destination's live code if its HMAC is ``code_hash`` and the destination isn't locked.

    ``True`` when this call deleted it. One statement: its row lock lasts
    until the transaction ends, so of parallel checks with the right code one
    deletes it and the others, waiting on the lock, then find nothing.
    """
    params = {
        "b_channel": channel,
        "b_destination": destination,
        "b_now": now,
        "b_max_attempts": max_attempts,
        "b_code_hash": code_hash,
    }
    return db.session.execute(USE_CODE, params).first() is not None


def count_attempt(channel, destination, now, max_attempts):
    """Count one attempt on the destination's live code; its ``(id, attempts)``, or ``None`` if none is live.

    The ``UPDATE`` locks the row until the transaction ends, so parallel
    guesses at one code take their turns.
    """
    params = {
        "b_channel": channel,
        "b_destination": destination,
        "b_now": now,
        "b_max_attempts": max_attempts,
    }
    return db.session.execute(COUNT_ATTEMPT, params).first()


def _replace_code_statement(insert):
    """``REPLACE_CODE`` built with a dialect's ``insert``: a first code, or one that replaces an old one."""
    statement = insert(_CODES).values(
        channel=sa.bindparam("b_channel"),
        destination=sa.bindparam("b_destination"),
        code_hash=sa.bindparam("b_code_hash"),
        attempts=0,
        created_at=sa.bindparam("b_now", type_=UtcDateTime),
        expires_at=sa.bindparam("b_expires_at", type_=UtcDateTime),
    )
    return replacing_older(statement).returning(_CODES.c.id)


def replacing_older(insert):
    """``insert`` (a code's ``INSERT``) replacing the destination's code unless that one is too young.

    The ``WHERE`` of the update settles two parallel sends: the one that comes second finds the first's
    code inside its resend interval, updates nothing and returns no row.
    """
    return insert.on_conflict_do_update(
        index_elements=[_CODES.c.channel, _CODES.c.destination],
        set_={
            "code_hash": insert.excluded.code_hash,
            "attempts": 0,
            "created_at": insert.excluded.created_at,
            "expires_at": insert.excluded.expires_at,
        },
        where=_CODES.c.created_at <= sa.bindparam("b_replaceable_until", type_=UtcDateTime),
    )


REPLACE_CODE = for_each_dialect(_replace_code_statement)


def replace_code(channel, destination, code_hash, now, expires_at, replaceable_until):
    """Make ``code_hash`` the destination's code, unless its code was stored after ``replaceable_until``.

    ``True`` when stored. One upsert: of parallel sends to one destination,
    the first stores its code and holds the row until its transaction ends;
    the others then find a code too young to replace and store nothing (no
    unique violation to catch).
    """
    params = {
        "b_channel": channel,
        "b_destination": destination,
        "b_code_hash": code_hash,
        "b_now": now,
        "b_expires_at": expires_at,
        "b_replaceable_until": replaceable_until,
    }
    return db.session.execute(of_engine(REPLACE_CODE), params).first() is not None


def discard_code(channel, destination, code_hash):
    """Delete the destination's code if it is still ``code_hash`` (a code whose delivery failed)."""
    db.session.execute(
        DISCARD_CODE, {"b_channel": channel, "b_destination": destination, "b_code_hash": code_hash}
    )


# What the per-destination send caps count: every send handed to the provider. A failed one too: a
# gateway that timed out may have delivered it (and billed it), so "10 a day" holds whatever it answered.
# Written into the statement (not parameters), so PostgreSQL proves the partial index
# ``ix_auth_events_sends`` usable whatever plan it caches.
SEND_ATTEMPTS = (Event.CODE_SENT, Event.DELIVERY_FAILED)
_EVENTS = AuthEvent.__table__
_LOCKS = DestinationLock.__table__
_SENDS = (
    _EVENTS.c.kind.in_([sa.literal_column(f"'{kind}'") for kind in SEND_ATTEMPTS]),
    _EVENTS.c.destination == sa.bindparam("b_destination"),
    _EVENTS.c.created_at > sa.bindparam("b_long_since", type_=UtcDateTime),
    _EVENTS.c.channel == sa.bindparam("b_channel"),
)
_IN_SHORT_WINDOW = _EVENTS.c.created_at > sa.bindparam("b_short_since", type_=UtcDateTime)
# Everything a send's limits need, in one row: the destination's lock, its code's age, its sends in the
# short and the long window and the oldest of each (a refusal's Retry-After).
SEND_CHECKS = (
    sa.select(
        sa.select(_LOCKS.c.locked_until)
        .where(
            _LOCKS.c.channel == sa.bindparam("b_channel"),
            _LOCKS.c.destination == sa.bindparam("b_destination"),
            _LOCKS.c.locked_until > sa.bindparam("b_now", type_=UtcDateTime),
        )
        .scalar_subquery()
        .label("locked_until"),
        sa.select(_CODES.c.created_at).where(*_OF_DESTINATION).scalar_subquery().label("current_at"),
        sa.func.count().filter(_IN_SHORT_WINDOW).label("sent_short"),
        sa.func.count().label("sent_long"),
        sa.func.min(_EVENTS.c.created_at).filter(_IN_SHORT_WINDOW).label("oldest_short"),
        sa.func.min(_EVENTS.c.created_at).label("oldest_long"),
    )
    .select_from(_EVENTS)
    .where(*_SENDS)
)


def _send_check_and_store_statement():
    """``SEND_CHECK_AND_STORE`` (PostgreSQL): ``SEND_CHECKS``, and the code stored only if they all allow it.

    A data-modifying CTE: the upsert reads the checks' one row and inserts
    nothing when a limit refuses; its ``WHERE`` (a code stored after
    ``b_replaceable_until``) still settles two parallel sends, as
    ``REPLACE_CODE`` does.
    """
    checks = SEND_CHECKS.cte("checks")
    allowed = sa.and_(
        checks.c.locked_until.is_(None),
        sa.or_(
            checks.c.current_at.is_(None),
            checks.c.current_at <= sa.bindparam("b_replaceable_until", type_=UtcDateTime),
        ),
        checks.c.sent_short < sa.bindparam("b_short_max"),
        checks.c.sent_long < sa.bindparam("b_long_max"),
    )
    row = sa.select(
        sa.bindparam("b_id", type_=sa.Uuid),
        sa.bindparam("b_channel", type_=sa.String),
        sa.bindparam("b_destination", type_=sa.String),
        sa.bindparam("b_code_hash", type_=sa.String),
        sa.literal(0),
        sa.bindparam("b_now", type_=UtcDateTime),
        sa.bindparam("b_expires_at", type_=UtcDateTime),
    ).where(allowed)
    columns = ["id", "channel", "destination", "code_hash", "attempts", "created_at", "expires_at"]
    upsert = postgresql.insert(_CODES).from_select(columns, row, include_defaults=False)
    stored = replacing_older(upsert).returning(_CODES.c.id).cte("stored")
    return sa.select(
        checks.c.locked_until,
        checks.c.current_at,
        checks.c.sent_short,
        checks.c.sent_long,
        checks.c.oldest_short,
        checks.c.oldest_long,
        sa.exists(sa.select(stored.c.id)).label("stored"),
    )


SEND_CHECK_AND_STORE = _send_check_and_store_statement()


class SendCheck(NamedTuple):
    """What the limits of a send saw, and whether its code was stored."""

    locked_until: object
    current_at: object
    sent_short: int
    sent_long: int
    oldest_short: object
    oldest_long: object
    stored: bool


def check_and_store_code(channel, destination, code_hash, now, expires_at, limits):
    """Store ``code_hash`` as the destination's code if its limits allow it; return a ``SendCheck``.

    ``limits`` is ``(replaceable_until, short_since, short_max, long_since,
    long_max)``: the code is stored when the destination isn't locked, its
    code (if any) was stored at or before ``replaceable_until``, and it had
    fewer than ``short_max`` sends after ``short_since`` and fewer than
    ``long_max`` after ``long_since``. On PostgreSQL one statement
    (``SEND_CHECK_AND_STORE``); on SQLite (one writer at a time, no
    data-modifying CTE) ``SEND_CHECKS`` then ``REPLACE_CODE``. Either way
    the upsert's ``WHERE`` settles parallel sends: the loser stores nothing.
    """
    replaceable_until, short_since, short_max, long_since, long_max = limits
    params = {
        "b_channel": channel,
        "b_destination": destination,
        "b_now": now,
        "b_short_since": short_since,
        "b_long_since": long_since,
    }
    if on_postgresql():
        params.update(
            b_id=uuid.uuid4(),
            b_code_hash=code_hash,
            b_expires_at=expires_at,
            b_replaceable_until=replaceable_until,
            b_short_max=short_max,
            b_long_max=long_max,
        )
        return SendCheck(*db.session.execute(SEND_CHECK_AND_STORE, params).one())
    checks = db.session.execute(SEND_CHECKS, params).one()
    locked_until, current_at, sent_short, sent_long = checks[:4]
    allowed = (
        locked_until is None
        and (current_at is None or current_at <= replaceable_until)
        and sent_short < short_max
        and sent_long < long_max
    )
    stored = allowed and replace_code(channel, destination, code_hash, now, expires_at, replaceable_until)
    return SendCheck(*checks, stored)
