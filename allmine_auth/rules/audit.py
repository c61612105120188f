"""The append-only audit trail of authentication events.

Events carry the destination, user, session, IP and user agent — never a
code. The per-destination send limits count these rows, so the trail is also
the memory of those rules; failed checks are counted exactly on
``DestinationLock`` instead (parallel transactions don't see each other's rows).
It is the one place a full phone number or email address is kept beside the
users table: log lines show them masked, and ``flask purge`` deletes events
older than ``AUDIT_RETENTION_DAYS``.
"""

import enum
import logging

import sqlalchemy as sa

from allmine_auth import metrics
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, utcnow
from allmine_auth.privacy import mask_destination

log = logging.getLogger(__name__)


class Event(enum.StrEnum):
    """The kinds of event the trail records."""

    CODE_SENT = "code_sent"
    DELIVERY_FAILED = "delivery_failed"
    CODE_FAILED = "code_failed"
    DESTINATION_LOCKED = "destination_locked"
    LOGIN = "login"
    REFRESH = "refresh"
    REUSE_DETECTED = "reuse_detected"
    LOGOUT = "logout"
    SEND_REFUSED = "send_refused"
    DELETION_REQUESTED = "deletion_requested"
    DELETION_CANCELLED = "deletion_cancelled"
    ACCOUNT_ERASED = "account_erased"


# On the Core table, not the ORM entity: no ORM bulk-insert machinery for a row nobody loads; inline:
# no RETURNING of the new id, which nobody reads.
INSERT_EVENT = sa.insert(AuthEvent.__table__).inline()


def record(kind, client=None, *, destination=None, user_id=None, session_id=None, detail=None, now=None):
    """Insert an event in the current transaction (the caller commits).

    A plain ``INSERT`` rather than an ORM object: events are written, never
    loaded back in the same request, and this is on every login and refresh.
    One statement object with parameters, so SQLAlchemy compiles it once.
    """
    db.session.execute(
        INSERT_EVENT,
        {
            "kind": str(kind),
            "channel": destination.channel if destination else None,
            "destination": destination.address if destination else None,
            "prefix": destination.prefix if destination else None,
            "user_id": user_id,
            "session_id": session_id,
            "ip": client.ip if client else None,
            "user_agent": client.user_agent if client else None,
            "detail": detail,
            "created_at": now or utcnow(),
        },
    )
    announce(kind, destination, user_id)


def announce(kind, destination=None, user_id=None):
    """Count and log an event whose row was written (by ``record`` or in another statement)."""
    metrics.count_event(kind)
    log.info("auth event %s destination=%s user=%s", kind, mask_destination(destination), user_id)


def select_events(columns, kind, since, destination=None, channel=None):
    """``SELECT columns`` over the ``kind`` events after ``since``, for a destination or a channel.

    ``kind`` is one kind or a tuple of kinds.
    """
    kinds = [str(each) for each in (kind if isinstance(kind, tuple) else (kind,))]
    query = (
        sa.select(*columns)
        .select_from(AuthEvent)
        .where(AuthEvent.kind.in_(kinds), AuthEvent.created_at > since)
    )
    if destination is not None:
        query = query.where(
            AuthEvent.destination == destination.address, AuthEvent.channel == destination.channel
        )
    if channel is not None:
        query = query.where(AuthEvent.channel == channel)
    return query


def count_events(kind, since, *subsets, destination=None, channel=None):
    """Count ``kind`` events after ``since`` (for a destination or a channel), in one query.

    With no ``subsets``, return ``(count,)``; else one count per subset, each
    a condition on ``AuthEvent`` (a shorter window, a prefix...).
    """
    counts = [sa.func.count().filter(subset) for subset in subsets] or [sa.func.count()]
    return tuple(db.session.execute(select_events(counts, kind, since, destination, channel)).one())


def oldest_event_since(kind, since, destination=None, *, channel=None):
    """When the oldest ``kind`` event after ``since`` happened, for a destination or channel (Retry-After)."""
    query = select_events([AuthEvent.created_at], kind, since, destination, channel)
    return db.session.scalar(query.order_by(AuthEvent.created_at).limit(1))
