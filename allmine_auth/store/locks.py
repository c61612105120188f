"""The SQL of ``destination_locks``: failure counters and lock-outs, and the SMS rules' markers.

A destination's row counts its failed checks in a 24 h window and holds its
lock (``locked_until``). The SMS fraud rules keep their markers in the same
table under channels of their own (a prefix breaker, a suspect prefix or
network): a marker is a lock row with no failures, so ``lock_end`` reads both; ``marker_ends`` reads
the markers of one send in one statement.

Statements are built once (compiled once) on the Core table; values come as
parameters (named ``b_*``: a bind parameter may not share a column's name in
an ``INSERT`` or ``UPDATE``).
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import DestinationLock, UtcDateTime
from allmine_auth.store.dialects import for_each_dialect, of_engine

_LOCKS = DestinationLock.__table__
_OF_DESTINATION = (
    _LOCKS.c.channel == sa.bindparam("b_channel"),
    _LOCKS.c.destination == sa.bindparam("b_destination"),
)
# Also a condition of ``store.codes.USE_CODE``: the right code is used only if its destination isn't locked.
NOT_LOCKED = ~sa.exists().where(*_OF_DESTINATION, _LOCKS.c.locked_until > sa.bindparam("b_now"))
LOCK_END = sa.select(_LOCKS.c.locked_until).where(
    *_OF_DESTINATION, _LOCKS.c.locked_until > sa.bindparam("b_now")
)


def lock_end(channel, destination, now):
    """When the lock (or marker) of ``(channel, destination)`` ends, if it lasts at ``now``; else ``None``."""
    return db.session.scalar(LOCK_END, {"b_channel": channel, "b_destination": destination, "b_now": now})


def _marker_ends_statement(count):
    """``MARKER_ENDS`` for ``count`` markers: the live ones among them, with their ends."""
    return sa.select(_LOCKS.c.channel, _LOCKS.c.destination, _LOCKS.c.locked_until).where(
        sa.or_(
            *(
                sa.and_(
                    _LOCKS.c.channel == sa.bindparam(f"b_channel_{index}"),
                    _LOCKS.c.destination == sa.bindparam(f"b_destination_{index}"),
                )
                for index in range(count)
            )
        ),
        _LOCKS.c.locked_until > sa.bindparam("b_now", type_=UtcDateTime),
    )


MARKER_ENDS = {count: _marker_ends_statement(count) for count in (1, 2, 3)}
_MEMO = "allmine_auth.marker_ends"


def marker_ends(markers, now):
    """``{(channel, key): end}`` of the live ones among ``markers`` (at most 3), read in one statement.

    What was read is remembered for the rest of the transaction (the SMS
    rules of one send ask for the prefix breaker twice): a marker asked for
    again in it is answered from memory, ended or not by then (compare its
    end with the moment). ``set_marker`` forgets the marker it sets.
    """
    session = db.session()
    transaction = session.get_transaction()
    memo_of, memo = session.info.get(_MEMO, (None, {}))
    if memo_of is not transaction or transaction is None:
        memo = {}
    missing = [marker for marker in markers if marker not in memo]
    if missing:
        params = {"b_now": now}
        for index, (channel, key) in enumerate(missing):
            params[f"b_channel_{index}"], params[f"b_destination_{index}"] = channel, key
        ends = {
            (channel, key): end for channel, key, end in session.execute(MARKER_ENDS[len(missing)], params)
        }
        memo.update((marker, ends.get(marker)) for marker in missing)
        # The statement began the transaction if none was open: remember under the one it ran in.
        session.info[_MEMO] = (session.get_transaction(), memo)
    return {marker: memo[marker] for marker in markers if memo[marker] is not None and memo[marker] > now}


def _count_failure_statement(insert):
    """``COUNT_FAILURE`` built with a dialect's ``insert``.

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


COUNT_FAILURE = for_each_dialect(_count_failure_statement)


def count_failure(channel, destination, now, window_start):
    """Count one failed check on the destination's counter; return the counter, or ``None`` if it is locked.

    One atomic upsert that locks the counter's row until the transaction ends:
    of parallel failures the N-th sees exactly N, and one that comes after the
    lock was set counts nothing. A window that started before
    ``window_start`` restarts. The counter is a row ``(failures, locked_at,
    lock_count)`` after the count.
    """
    params = {
        "b_channel": channel,
        "b_destination": destination,
        "b_now": now,
        "b_window_start": window_start,
    }
    return db.session.execute(of_engine(COUNT_FAILURE), params).first()


# Run while the caller holds the counter's row (after ``COUNT_FAILURE``): a new window starts after the lock.
LOCK_DESTINATION = (
    sa.update(_LOCKS)
    .where(*_OF_DESTINATION)
    .values(
        failures=0,
        window_started_at=None,
        locked_at=sa.bindparam("b_now"),
        locked_until=sa.bindparam("b_until"),
        lock_count=sa.bindparam("b_lock_count"),
    )
)


def lock_destination(channel, destination, now, until, lock_count):
    """Lock the destination from ``now`` until ``until`` as its ``lock_count``-th lock; restart its count.

    The caller holds the counter's row (``count_failure``), so this plain
    ``UPDATE`` is the only writer of the lock.
    """
    db.session.execute(
        LOCK_DESTINATION,
        {
            "b_channel": channel,
            "b_destination": destination,
            "b_now": now,
            "b_until": until,
            "b_lock_count": lock_count,
        },
    )


def _set_marker_statement(insert):
    """``SET_MARKER`` built with a dialect's ``insert``: a new marker, or one that has ended set again."""
    now = sa.bindparam("b_now", type_=UtcDateTime)
    statement = insert(_LOCKS).values(
        channel=sa.bindparam("b_channel"),
        destination=sa.bindparam("b_destination"),
        locked_at=now,
        locked_until=sa.bindparam("b_until", type_=UtcDateTime),
        lock_count=1,
    )
    return statement.on_conflict_do_update(
        index_elements=[_LOCKS.c.channel, _LOCKS.c.destination],
        set_={
            "locked_at": statement.excluded.locked_at,
            "locked_until": statement.excluded.locked_until,
            "lock_count": _LOCKS.c.lock_count + 1,
        },
        where=_LOCKS.c.locked_until <= now,
    ).returning(_LOCKS.c.locked_until)


SET_MARKER = for_each_dialect(_set_marker_statement)


def set_marker(channel, key, now, until):
    """Set the marker ``(channel, key)`` from ``now`` until ``until``; ``False`` if it is already live.

    One upsert: of parallel requests setting one marker, the first writes it
    and holds its row until its transaction ends; the others then find it live
    and set nothing (no unique violation to catch), so only one reports it.
    """
    params = {"b_channel": channel, "b_destination": key, "b_now": now, "b_until": until}
    _, memo = db.session.info.get(_MEMO, (None, {}))
    memo.pop((channel, key), None)
    return db.session.execute(of_engine(SET_MARKER), params).first() is not None
