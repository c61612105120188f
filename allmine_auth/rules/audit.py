"""The append-only audit trail of authentication events.

Events carry the destination, user, session, IP and user agent — never a
code. The per-destination send limits count these rows, so the trail is also
the memory of those rules; failed checks are counted exactly on
``DestinationLock`` instead (parallel transactions don't see each other's rows).
It is the one place a full phone number or email address is kept beside the
users table: log lines show them masked, and ``flask purge`` deletes events
older than ``AUDIT_RETENTION_DAYS``. The SQL is ``store.events``.
"""

import logging

from allmine_auth import metrics
from allmine_auth.models import Event, utcnow
from allmine_auth.privacy import mask_destination
from allmine_auth.store import events

log = logging.getLogger(__name__)

__all__ = ["Event", "announce", "record"]


def record(kind, client=None, *, destination=None, user_id=None, session_id=None, detail=None, now=None):
    """Record an event in the current unit of work (it commits with the request), count and log it."""
    events.record_event(
        kind,
        now or utcnow(),
        channel=destination.channel if destination else None,
        destination=destination.address if destination else None,
        prefix=destination.prefix if destination else None,
        user_id=user_id,
        session_id=session_id,
        ip=client.ip if client else None,
        user_agent=client.user_agent if client else None,
        detail=detail,
    )
    announce(kind, destination, user_id)


def announce(kind, destination=None, user_id=None):
    """Count and log an event whose row was written (by ``record`` or in another statement)."""
    metrics.count_event(kind)
    log.info("auth event %s destination=%s user=%s", kind, mask_destination(destination), user_id)
