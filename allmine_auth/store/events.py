"""The audit trail's SQL (``auth_events``): write an event, count a destination's recent ones.

Statements are built once on the Core table (compiled once); values come as
parameters. Kinds are given as ``Event`` members or their strings.
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent

_EVENTS = AuthEvent.__table__
# On the Core table, not the ORM entity: no ORM bulk-insert machinery for a row nobody loads; inline:
# no RETURNING of the new id, which nobody reads.
INSERT_EVENT = sa.insert(_EVENTS).inline()
# A destination's events of some kinds after a moment (the index ``ix_auth_events_destination``).
_RECENT_AT_DESTINATION = (
    _EVENTS.c.kind.in_(sa.bindparam("kinds", expanding=True)),
    _EVENTS.c.created_at > sa.bindparam("since"),
    _EVENTS.c.destination == sa.bindparam("destination"),
    _EVENTS.c.channel == sa.bindparam("channel"),
)


def record_event(
    kind,
    created_at,
    *,
    channel=None,
    destination=None,
    prefix=None,
    user_id=None,
    session_id=None,
    ip=None,
    user_agent=None,
    detail=None,
):
    """Insert one event in the current transaction (the unit of work commits it).

    A plain ``INSERT`` rather than an ORM object: events are written, never
    loaded back in the same request, and this is on every login and refresh.
    """
    db.session.execute(
        INSERT_EVENT,
        {
            "kind": str(kind),
            "channel": channel,
            "destination": destination,
            "prefix": prefix,
            "user_id": user_id,
            "session_id": session_id,
            "ip": ip,
            "user_agent": user_agent,
            "detail": detail,
            "created_at": created_at,
        },
    )


def _count_events_statement(starts):
    """``COUNT_EVENTS`` for ``starts`` windows: one ``count(*) FILTER`` per window start."""
    counts = [
        sa.func.count().filter(_EVENTS.c.created_at > sa.bindparam(f"start_{index}"))
        for index in range(starts)
    ]
    return sa.select(*counts).select_from(_EVENTS).where(*_RECENT_AT_DESTINATION)


COUNT_EVENTS = {starts: _count_events_statement(starts) for starts in (1, 2)}
OLDEST_EVENT = (
    sa.select(_EVENTS.c.created_at).where(*_RECENT_AT_DESTINATION).order_by(_EVENTS.c.created_at).limit(1)
)


def count_events(kinds, channel, destination, *starts):
    """How many ``kinds`` events the destination had after each of ``starts`` (one or two), in one query."""
    params = {
        "kinds": [str(kind) for kind in kinds],
        "since": min(starts),
        "channel": channel,
        "destination": destination,
    }
    params.update((f"start_{index}", start) for index, start in enumerate(starts))
    return tuple(db.session.execute(COUNT_EVENTS[len(starts)], params).one())


def oldest_event_since(kinds, channel, destination, since):
    """When the destination's oldest ``kinds`` event after ``since`` happened, or ``None`` (a Retry-After)."""
    params = {
        "kinds": [str(kind) for kind in kinds],
        "since": since,
        "channel": channel,
        "destination": destination,
    }
    return db.session.scalar(OLDEST_EVENT, params)
