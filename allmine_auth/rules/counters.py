"""Sliding-window counters of SMS codes sent and verified: Redis when configured, else this process.

The fraud rules ask on every SMS send "how many codes went to +44 in the last hour, and how many
of them were verified", and the same of the sender's network. Counting the audit table for that
reads more rows as traffic grows and the table grows without bound; these counters are fixed-size:
one key per series per time bucket (``INCR`` and ``EXPIRE`` in one pipeline), a window is the sum of
its buckets (one ``MGET``), and old buckets expire by themselves.

With ``REDIS_URL`` the counts are shared by every worker and instance. Without it (a single-process
development setup, like flask-limiter's ``memory://``) they live in this process. If Redis stops
answering, each process counts on its own until it answers again, and says so in the log: counts are
then lower than the truth, so budgets and breakers trip later, never earlier; an outage never turns
the fraud rules against real users.
"""

import logging
import threading
import time

import redis
from flask import current_app

from allmine_auth.cache import get_redis

log = logging.getLogger(__name__)

KEY_PREFIX = "allmine-auth:sms-count:"
MEMORY_EXTENSION = "allmine_sms_counters"


def bucket_of(now, seconds):
    """The number of the ``seconds``-long time bucket that ``now`` (a datetime) falls in."""
    return int(now.timestamp()) // seconds


def bucket_key(series, seconds, bucket):
    """The storage key of one bucket of ``series``."""
    return f"{KEY_PREFIX}{series}:{seconds}:{bucket}"


class MemoryCounters:
    """The counters of one process: bucket key -> ``[count, expires at]``, pruned once a minute."""

    def __init__(self):
        self.counts = {}
        self.lock = threading.Lock()
        self.next_prune = 0.0

    def add(self, keys_and_ttls):
        """Add one to each key, each kept ``ttl`` seconds from its first count."""
        moment = time.monotonic()
        with self.lock:
            if moment >= self.next_prune:
                # Whole-dict sweep at most once a minute: the dict holds only live buckets.
                self.counts = {key: entry for key, entry in self.counts.items() if entry[1] > moment}
                self.next_prune = moment + 60
            for key, ttl in keys_and_ttls:
                entry = self.counts.setdefault(key, [0, moment + ttl])
                entry[0] += 1

    def get(self, keys):
        """The counts of ``keys`` (0 for a missing or expired one)."""
        moment = time.monotonic()
        with self.lock:
            entries = [self.counts.get(key) for key in keys]
        return [entry[0] if entry is not None and entry[1] > moment else 0 for entry in entries]


def memory_counters():
    """This app's in-process counters (made on first use; one per app, so each test starts empty)."""
    return current_app.extensions.setdefault(MEMORY_EXTENSION, MemoryCounters())


def add(increments, now):
    """Count one event in each ``(series, bucket seconds, ttl seconds)`` at ``now``."""
    keys_and_ttls = [
        (bucket_key(series, seconds, bucket_of(now, seconds)), ttl) for series, seconds, ttl in increments
    ]
    client = get_redis()
    if client is not None:
        try:
            with client.pipeline(transaction=False) as pipe:
                for key, ttl in keys_and_ttls:
                    pipe.incr(key)
                    pipe.expire(key, ttl)
                pipe.execute()
            return
        except redis.RedisError:
            log.warning("Redis unavailable; SMS counts kept in this process")
    memory_counters().add(keys_and_ttls)


def read(windows, now):
    """Per-bucket counts of each ``(series, bucket seconds, buckets)`` window ending with ``now``'s bucket.

    Each window comes back as a list, oldest bucket first, ``buckets`` long.
    ``buckets`` may be negative to end that many buckets before ``now``'s:
    ``(series, 3600, (-24, -1))`` reads the 24 whole hours before this one.
    """
    spans = []
    keys = []
    for series, seconds, (first, last) in windows:
        current = bucket_of(now, seconds)
        # ``bucket_key``'s keys, its head formatted once: a send reads 468 of them.
        head = bucket_key(series, seconds, "")
        keys += [head + str(bucket) for bucket in range(current + first, current + last + 1)]
        spans.append(last - first + 1)
    values = None
    client = get_redis()
    if client is not None:
        try:
            values = [int(value or 0) for value in client.mget(keys)]
        except redis.RedisError:
            log.warning("Redis unavailable; SMS counts read from this process")
    if values is None:
        values = memory_counters().get(keys)
    result, start = [], 0
    for length in spans:
        result.append(values[start : start + length])
        start += length
    return result
