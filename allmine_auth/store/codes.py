"""The SQL of ``one_time_codes``: store, use, count and discard a destination's one code.

A destination has one row (``uq_one_time_codes_destination``); a code is
*live* while it has not expired and has attempts left. Statements are built
once (compiled once) on the Core table; values come as parameters (named
``b_*``: a bind parameter may not share a column's name in an ``UPDATE``).
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import OneTimeCode, UtcDateTime
from allmine_auth.store.dialects import for_each_dialect, of_engine
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
LAST_SENT_AT = sa.select(_CODES.c.created_at).where(*_OF_DESTINATION)
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


def last_sent_at(channel, destination):
    """When the destination's current code (live or not) was stored, or ``None``."""
    return db.session.scalar(LAST_SENT_AT, {"b_channel": channel, "b_destination": destination})


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
    return statement.on_conflict_do_update(
        index_elements=[_CODES.c.channel, _CODES.c.destination],
        set_={
            "code_hash": statement.excluded.code_hash,
            "attempts": 0,
            "created_at": statement.excluded.created_at,
            "expires_at": statement.excluded.expires_at,
        },
        where=_CODES.c.created_at <= sa.bindparam("b_replaceable_until", type_=UtcDateTime),
    ).returning(_CODES.c.id)


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
