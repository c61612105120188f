"""The user as the API shows it, and its Redis cache for GET /me.

GET /me is the most frequent call of every app. With ``REDIS_URL`` set, the
serialized user is kept in Redis, so /me reads only Redis (the session state
and this entry) and never PostgreSQL. Any commit that changed a ``User`` row
marks its entry stale for a few seconds (``set_after_commit``); a cache fill
never overwrites a stale mark (``SET NX``), so a reader that loaded the row
before the change can't put the old profile back.
"""

import sqlalchemy as sa
from flask import current_app

from allmine_auth.cache import fill_cached, read_cached, set_after_commit
from allmine_auth.errors import Unauthorized
from allmine_auth.models import User
from allmine_auth.store.unit_of_work import read_in_autocommit
from allmine_auth.store.users import user_by_id

PROFILE_CACHE_PREFIX = "allmine-auth:user:"
STALE = "stale"
STALE_SECONDS = 10


def user_or_401(user_id):
    """The token's user; a token whose user is gone is a 401."""
    user = user_by_id(user_id)
    if user is None:
        raise Unauthorized()
    return user


def profile_json(user_id, serialize):
    """The user as JSON text (``serialize(user)``: the web layer's form), from Redis when it is there.

    The cache holds what ``serialize`` returned: one form per deployment, the API's ``data`` of GET /me.
    """
    key = PROFILE_CACHE_PREFIX + str(user_id)
    client, cached = read_cached(key)
    if cached is not None and cached != STALE:
        return cached
    read_in_autocommit()
    payload = serialize(user_or_401(user_id))
    if cached is None:
        fill_cached(client, key, payload, current_app.config["PROFILE_CACHE_TTL"])
    return payload


def note_changed_users(session, flush_context):
    """SQLAlchemy ``after_flush``: mark the profiles of changed users stale once the change commits."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, User):
            set_after_commit(PROFILE_CACHE_PREFIX + str(obj.id), STALE, STALE_SECONDS, session=session)


def register_session_hooks(db_session):
    """Watch every flush for changed users (idempotent)."""
    if not sa.event.contains(db_session, "after_flush", note_changed_users):
        sa.event.listen(db_session, "after_flush", note_changed_users)
