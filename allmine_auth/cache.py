"""The optional Redis connection (``REDIS_URL``): session-state cache and shared counters.

Redis is an accelerator here, never the source of truth: every caller falls
back to the database when it is unset or unreachable, and says so in the log.
"""

import logging

import redis
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
