"""The optional Redis connection (``REDIS_URL``): session-state cache and shared counters.

Redis is an accelerator here, never the source of truth: every caller falls
back to the database when it is unset or unreachable, and says so in the log.
"""

import logging

import redis
import sqlalchemy as sa
from flask import current_app

log = logging.getLogger(__name__)


def init_app(app):
    """Create the client once per app (connections are made lazily, per worker)."""
    url = app.config.get("REDIS_URL")
    app.extensions["allmine_redis"] = (
        redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True)
        if url
        else None
    )


def get_redis():
    """The app's Redis client, or ``None`` when ``REDIS_URL`` is unset."""
    return current_app.extensions.get("allmine_redis")


PENDING = "allmine_redis_writes"


def set_after_commit(session, key, value, ttl):
    """Write ``key`` to Redis once ``session``'s transaction commits (dropped if it rolls back).

    Cached state must never run ahead of the database: a revocation or a
    profile change is announced only when it is durable.
    """
    session.info.setdefault(PENDING, []).append((key, value, ttl))


def write_pending(session):
    """SQLAlchemy ``after_commit``: send the queued writes in one pipeline."""
    writes = session.info.pop(PENDING, None)
    client = get_redis()
    if not writes or client is None:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for key, value, ttl in writes:
                pipe.set(key, value, ex=ttl)
            pipe.execute()
    except redis.RedisError:
        log.exception("could not write %d cache entries to Redis after a commit", len(writes))


def drop_pending(session):
    """SQLAlchemy ``after_rollback``: what was rolled back is not announced."""
    session.info.pop(PENDING, None)


def register_session_hooks(db_session):
    """Send queued Redis writes after each commit (idempotent)."""
    for name, hook in (("after_commit", write_pending), ("after_rollback", drop_pending)):
        if not sa.event.contains(db_session, name, hook):
            sa.event.listen(db_session, name, hook)
