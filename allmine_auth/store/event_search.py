"""The audit trail as ``flask audit`` searches it: the newest events of a user, destinations or kinds."""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent


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
