"""The optional Redis connection (``REDIS_URL``): the session-state and profile caches.

Redis is an accelerator here, never the source of truth: every reader falls
back to the database when it is unset or unreachable, and says so in the log.
What a commit announces to the cache (a revocation, a stale profile) is never
lost to an outage: a write Redis refuses is kept in the database's
``cache_outbox`` and every worker delivers it once Redis answers again (within
``CACHE_OUTBOX_INTERVAL`` seconds, and before its own first read after an
outage it saw). A request that must promise its write is in force (a logout)
checks ``undelivered`` after its commit (an after-commit action of its unit of
work) and answers 503 instead of 200.

The writes are sent from the SQLAlchemy session's ``after_commit`` hook, not
from an action of the unit of work: the hook runs after every commit, also
the one that keeps the records of an error (a reuse detection's revocation),
after which the unit of work runs no actions; and it runs before any action,
so the check of ``undelivered`` sees this commit's writes. The outbox's SQL
is in ``store/outbox.py``.
"""

import logging
import os
import threading
import time

import redis
import sqlalchemy as sa
from flask import current_app, g
from redis.backoff import NoBackoff
from redis.retry import Retry

from allmine_auth.extensions import db
from allmine_auth.models import utcnow
from allmine_auth.store import outbox

log = logging.getLogger(__name__)
PREFETCHED = "allmine_redis_prefetched"
_thread = threading.local()


def init_app(app):
    """Create the client once per app (connections are made lazily, per worker)."""
    url = app.config.get("REDIS_URL")
    # One retry on a fresh connection: a pooled socket that an earlier outage broke fails its first
    # command ("Connection closed by server") even though Redis is back. Every command sent here is
    # idempotent (GET, MGET, SET), so sending it again is safe.
    app.extensions["allmine_redis"] = (
        redis.Redis.from_url(
            url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
        )
        if url
        else None
    )
    app.extensions["allmine_redis_health"] = RedisHealth(app.config["CACHE_OUTBOX_INTERVAL"])


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


class RedisHealth:
    """What one worker knows of Redis: when it last failed, and when the outbox is next due.

    A worker that saw Redis fail reads the database for a second instead of
    waiting on a dead Redis at every request, and delivers the outbox before
    it trusts Redis again: entries written before the outage may be older than
    a revocation that could not reach them.
    """

    SKIP_SECONDS = 1.0

    def __init__(self, outbox_interval):
        self.outbox_interval = outbox_interval
        self.skip_until = 0.0
        self.outbox_due = 0.0  # a new worker delivers first: its predecessor may have left work
        self.lock = threading.Lock()

    def failed(self):
        """Note a failure: skip Redis reads for a moment, and deliver the outbox before trusting it."""
        now = time.monotonic()
        self.skip_until = now + self.SKIP_SECONDS
        self.outbox_due = now

    def readable(self):
        """Whether reads should try Redis now."""
        return time.monotonic() >= self.skip_until


def health():
    """The current app's ``RedisHealth``."""
    return current_app.extensions["allmine_redis_health"]


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
    state = health()
    if not state.readable():
        return None, None
    try:
        if time.monotonic() >= state.outbox_due:
            deliver_outbox(client, state)
        if not prefetch:
            return client, client.get(key)
        value, *more = client.mget(key, *prefetch)
        g.setdefault(PREFETCHED, {}).update(zip(prefetch, more, strict=True))
        return client, value
    except redis.RedisError:
        state.failed()
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
        health().failed()
        log.warning("Redis unavailable; %s not cached", key.rsplit(":", 2)[-2])


PENDING = "allmine_redis_writes"
UNDELIVERED = "allmine_redis_undelivered"


def set_after_commit(key, value, ttl, *, session=None):
    """Write ``key`` to Redis once the unit of work commits (dropped if it rolls back).

    Cached state must never run ahead of the database: a revocation or a
    profile change is announced only when it is durable.
    """
    (session or db.session).info.setdefault(PENDING, []).append((key, value, ttl))


def write_pending(session):
    """SQLAlchemy ``after_commit``: send the queued writes in one pipeline; keep what fails in the outbox."""
    writes = session.info.pop(PENDING, None)
    session.info[UNDELIVERED] = 0
    client = get_redis()
    if not writes or client is None:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for key, value, ttl in writes:
                pipe.set(key, value, ex=ttl)
            pipe.execute()
    except redis.RedisError as exc:
        health().failed()
        session.info[UNDELIVERED] = len(writes)
        queue_in_outbox(writes, exc)


def queue_in_outbox(writes, cause):
    """Keep writes Redis refused in the database, for whichever worker next reaches Redis."""
    try:
        # Its own connection and transaction: the unit of work's is over, and this must commit on its own.
        outbox.queue_cache_writes(writes, utcnow())
    except sa.exc.SQLAlchemyError:
        log.exception("could not keep %d cache writes Redis refused (%s)", len(writes), cause)
        return
    log.error("Redis refused %d cache writes (%s); kept in the outbox until it answers", len(writes), cause)


def deliver_outbox(client, state):
    """Write what the outbox holds to Redis and delete it; one thread of a worker at a time.

    Runs before the first read after an outage this worker saw, and every
    ``CACHE_OUTBOX_INTERVAL`` seconds: a worker whose Redis never failed still
    delivers another worker's (or the CLI's) writes that its Redis refused.
    Raises ``RedisError`` when Redis fails meanwhile (nothing is deleted then).
    """
    if not state.lock.acquire(blocking=False):
        return  # another thread of this worker is delivering
    try:
        state.outbox_due = time.monotonic() + state.outbox_interval

        def send(rows):
            with client.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.set(row.key, row.value, ex=row.ttl)
                pipe.execute()

        delivered = outbox.deliver_cache_writes(send)
        if delivered:
            log.info("delivered %d cache writes from the outbox", delivered)
    except sa.exc.SQLAlchemyError:
        log.warning("could not read the cache outbox", exc_info=True)
    finally:
        state.lock.release()


def undelivered():
    """How many of the last commit's cache writes Redis refused (they wait in the outbox)."""
    return db.session.info.pop(UNDELIVERED, 0)


def drop_pending(session):
    """SQLAlchemy ``after_rollback``: what was rolled back is not announced."""
    session.info.pop(PENDING, None)


def register_session_hooks(db_session):
    """Send queued Redis writes after each commit (idempotent)."""
    for name, hook in (("after_commit", write_pending), ("after_rollback", drop_pending)):
        if not sa.event.contains(db_session, name, hook):
            sa.event.listen(db_session, name, hook)
