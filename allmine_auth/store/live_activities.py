"""The SQL of Live Activities: upsert, list, delete (one, a session's, a user's, the expired).

Records come back as rows of the table's columns (``user_id``,
``activity_id``, ``session_id``, ``push_token``, ``kind``, ``reference_id``,
``expires_at``, ``created_at``, ``updated_at``). Statements are built once at
import; the upsert once per dialect.
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import LiveActivity
from allmine_auth.store.dialects import for_each_dialect, of_engine

_TABLE = LiveActivity.__table__
_CHANGES = ("session_id", "push_token", "kind", "reference_id", "expires_at", "updated_at")


def _upsert(insert):
    """``INSERT ... ON CONFLICT (user_id, activity_id) DO UPDATE ... RETURNING *`` by ``insert``."""
    statement = insert(_TABLE)
    return statement.on_conflict_do_update(
        index_elements=["user_id", "activity_id"], set_={name: statement.excluded[name] for name in _CHANGES}
    ).returning(*_TABLE.c)


UPSERT = for_each_dialect(_upsert)


def upsert_live_activity(user_id, activity_id, session_id, push_token, kind, reference_id, expires_at, now):
    """Register activity ``activity_id`` of the user, or update it (its session too); return the record.

    One statement: two parallel registrations of one id end as one row, never a 500.
    """
    return db.session.execute(
        of_engine(UPSERT),
        {
            "user_id": user_id,
            "activity_id": activity_id,
            "session_id": session_id,
            "push_token": push_token,
            "kind": kind,
            "reference_id": reference_id,
            "expires_at": expires_at,
            "created_at": now,
            "updated_at": now,
        },
    ).one()


LIST = (
    sa.select(*_TABLE.c)
    .where(_TABLE.c.user_id == sa.bindparam("user_id"), _TABLE.c.expires_at > sa.bindparam("now"))
    .order_by(_TABLE.c.created_at.desc(), _TABLE.c.activity_id)
)


def list_live_activities(user_id, now):
    """The user's activities that have not expired at ``now``, newest first."""
    return db.session.execute(LIST, {"user_id": user_id, "now": now}).all()


DELETE_ONE = sa.delete(_TABLE).where(
    _TABLE.c.user_id == sa.bindparam("user_id"), _TABLE.c.activity_id == sa.bindparam("activity_id")
)
DELETE_OF_SESSIONS = sa.delete(_TABLE).where(
    _TABLE.c.session_id.in_(sa.bindparam("session_ids", expanding=True))
)
DELETE_OF_USER = sa.delete(_TABLE).where(_TABLE.c.user_id == sa.bindparam("user_id"))
DELETE_EXPIRED = sa.delete(_TABLE).where(_TABLE.c.expires_at <= sa.bindparam("now"))


def delete_live_activity(user_id, activity_id):
    """Delete the user's activity ``activity_id``; return whether there was one."""
    return db.session.execute(DELETE_ONE, {"user_id": user_id, "activity_id": activity_id}).rowcount > 0


def delete_session_activities(session_ids):
    """Delete the activities of the sessions ``session_ids`` (they just ended)."""
    db.session.execute(DELETE_OF_SESSIONS, {"session_ids": list(session_ids)})


def delete_user_activities(user_id):
    """Delete every activity of the user (an erasure)."""
    db.session.execute(DELETE_OF_USER, {"user_id": user_id})


def delete_expired_activities(now):
    """Delete the activities expired at ``now``; return how many."""
    return db.session.execute(DELETE_EXPIRED, {"now": now}).rowcount
