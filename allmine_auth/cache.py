"""The optional Redis connection (``REDIS_URL``): the session-state and profile caches.

Redis is an accelerator here, never the source of truth: every caller falls
back to the database when it is unset or unreachable, and says so in the log.
"""

import logging
import os
import threading

import redis
import sqlalchemy as sa
from flask import current_app, g

log = logging.getLogger(__name__)
PREFETCHED = "allmine_redis_prefetched"
_thread = threading.local()


def init_app(app):
    """Create the client once per app (connections are made lazily, per worker)."""
    url = app.config.get("REDIS_URL")
    app.extensions["allmine_redis"] = (
        redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True)
        if url
        else None
    )


def get_redis():
    """This thread's client of the app's Redis, or ``None`` when ``REDIS_URL`` is unset.

    Each thread keeps one connection of the app's pool for itself: a pooled
    call checks a connection out (a lock and a ``poll`` of its socket) and
    back in every time, 5% of a GET /me.
    """
    shared = current_app.extensions.get("allmine_redis")
    if not isinstance(shared, redis.Redis):
        return shared
    if getattr(_thread, "shared", None) is not shared:
        try:  # connects at once
            client = redis.Redis(connection_pool=shared.connection_pool, single_connection_client=True)
        except redis.RedisError:
            return shared  # not answering: the caller's own call fails too, and it falls back
        previous = getattr(_thread, "client", None)
        if previous is not None:
            previous.close()  # another app's (tests): its connection goes back to its pool
        _thread.client, _thread.shared = client, shared
    return _thread.client


def _forget_parent_client():
    """In a forked child (gunicorn --preload): drop the parent's client, whose socket stays the parent's."""
    _thread.__dict__.clear()


os.register_at_fork(after_in_child=_forget_parent_client)


def read_cached(key, prefetch=()):
    """``(client, value)`` for ``key``; ``(None, None)`` when Redis is unset or does not answer.

    The caller then reads the database, and fills the entry with ``fill_cached``
    through the returned client (``None``: don't). ``prefetch`` names keys this
    request will read next: they come in the same round trip (``MGET``) and a
    later ``read_cached`` of one of them, in this request, takes it from there.
    """
    client = get_redis()
    if client is None:
        return None, None
    prefetched = g.get(PREFETCHED)
    if prefetched and key in prefetched:
        return client, prefetched.pop(key)
    try:
        if not prefetch:
            return client, client.get(key)
        value, *more = client.mget(key, *prefetch)
        g.setdefault(PREFETCHED, {}).update(zip(prefetch, more, strict=True))
        return client, value
    except redis.RedisError:
        log.warning("Redis unavailable; reading %s from the database", key.rsplit(":", 2)[-2])
        return None, None


def fill_cached(client, key, value, ttl):
    """Cache ``value`` read from the database, unless an entry appeared meanwhile.

    ``SET NX``: a mark written by a commit since our read (a revocation, a
    stale profile) must never be overwritten by what we read before it.
    """
    if client is None:
        return
    try:
        client.set(key, value, ex=ttl, nx=True)
    except redis.RedisError:
        log.warning("Redis unavailable; %s not cached", key.rsplit(":", 2)[-2])


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
