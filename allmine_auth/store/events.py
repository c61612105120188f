"""The audit trail's SQL (``auth_events``): write an event, find the newest (``flask audit``).

The send caps count events in their own statement (``store.codes``).

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


def recent_events(limit, *, kinds=(), destinations=(), user_id=None):
    """The newest ``limit`` events of any of ``kinds``, of any of ``destinations``, or of ``user_id``.

    Rows of ``(created_at, kind, destination, user_id, ip, detail)``.
    """
    conditions = [AuthEvent.destination == destination for destination in destinations]
    if kinds:
        conditions.insert(0, AuthEvent.kind.in_(kinds))
    if user_id is not None:
        conditions.append(AuthEvent.user_id == user_id)
    return db.session.execute(
        sa.select(
            AuthEvent.created_at,
            AuthEvent.kind,
            AuthEvent.destination,
            AuthEvent.user_id,
            AuthEvent.ip,
            AuthEvent.detail,
        )
        .where(sa.or_(*conditions))
        .order_by(AuthEvent.created_at.desc(), AuthEvent.id.desc())
        .limit(limit)
    ).all()
