"""The deletes of ``flask purge`` and of an account's erasure: rows past their use, personal values.

Each runs in the caller's unit of work; statements are built once at import.
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, LoginSession, OneTimeCode

_CODES = OneTimeCode.__table__
_SESSIONS = LoginSession.__table__
_LOCKS = DestinationLock.__table__
_EVENTS = AuthEvent.__table__

EXPIRED_CODES = sa.delete(_CODES).where(_CODES.c.expires_at <= sa.bindparam("now"))
ENDED_SESSIONS = sa.delete(_SESSIONS).where(
    sa.or_(_SESSIONS.c.expires_at <= sa.bindparam("now"), _SESSIONS.c.revoked_at.is_not(None))
)
STALE_LOCKS = sa.delete(_LOCKS).where(
    sa.or_(_LOCKS.c.locked_until.is_(None), _LOCKS.c.locked_until < sa.bindparam("before")),
    sa.or_(_LOCKS.c.window_started_at.is_(None), _LOCKS.c.window_started_at < sa.bindparam("before")),
)
OLD_EVENTS = sa.delete(_EVENTS).where(_EVENTS.c.created_at < sa.bindparam("before"))
_ADDRESSES = sa.bindparam("addresses", expanding=True)
CODES_OF = sa.delete(_CODES).where(_CODES.c.destination.in_(_ADDRESSES))
LOCKS_OF = sa.delete(_LOCKS).where(_LOCKS.c.destination.in_(_ADDRESSES))
# The trail keeps what happened and when, never to whom: no destination, address or agent.
ANONYMIZE_EVENTS = (
    sa.update(_EVENTS)
    .where(sa.or_(_EVENTS.c.user_id == sa.bindparam("b_user_id"), _EVENTS.c.destination.in_(_ADDRESSES)))
    .values(destination=None, prefix=None, ip=None, user_agent=None, detail=None)
)


def delete_expired_codes(now):
    """Delete the one-time codes expired at ``now``; return how many."""
    return db.session.execute(EXPIRED_CODES, {"now": now}).rowcount


def delete_ended_sessions(now):
    """Delete the sessions revoked or past their end at ``now``; return how many."""
    return db.session.execute(ENDED_SESSIONS, {"now": now}).rowcount


def delete_stale_destination_locks(before):
    """Delete the failure counters and locks with nothing (no lock, no window) after ``before``."""
    db.session.execute(STALE_LOCKS, {"before": before})


def delete_events_before(before):
    """Delete the audit events written before ``before``; return how many."""
    return db.session.execute(OLD_EVENTS, {"before": before}).rowcount


def erase_destination_records(addresses):
    """Delete the codes and failure counters of ``addresses`` (phone numbers, email addresses)."""
    if addresses:
        db.session.execute(CODES_OF, {"addresses": list(addresses)})
        db.session.execute(LOCKS_OF, {"addresses": list(addresses)})


def anonymize_events(user_id, addresses):
    """Empty every personal value of the audit events of the user or of ``addresses``."""
    db.session.execute(ANONYMIZE_EVENTS, {"b_user_id": user_id, "addresses": list(addresses)})
