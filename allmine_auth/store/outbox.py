"""The SQL of the cache outbox: Redis writes a commit announced but Redis refused, kept until delivered.

Each function runs on a connection of its own, in a transaction of its own:
the outbox is written after the unit of work committed (what it announces is
durable already), and read by whichever worker next reaches Redis.
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import CacheOutbox

_TABLE = CacheOutbox.__table__
QUEUE = sa.insert(_TABLE)
OLDEST_FIRST = (
    sa.select(_TABLE.c.id, _TABLE.c.key, _TABLE.c.value, _TABLE.c.ttl).order_by(_TABLE.c.id).limit(1000)
)
DELIVERED = sa.delete(_TABLE).where(_TABLE.c.id.in_(sa.bindparam("ids", expanding=True)))
OLDER_THAN = sa.delete(_TABLE).where(_TABLE.c.created_at < sa.bindparam("before"))


def queue_cache_writes(writes, now):
    """Keep ``writes`` (``(key, value, ttl)`` each) in the outbox, committed on their own connection."""
    rows = [{"key": key, "value": value, "ttl": ttl, "created_at": now} for key, value, ttl in writes]
    with db.engine.begin() as connection:
        connection.execute(QUEUE, rows)


def deliver_cache_writes(send):
    """Pass the oldest outbox rows (up to 1000: ``(id, key, value, ttl)``) to ``send``, then delete them.

    Returns how many were delivered. When ``send`` raises, nothing is deleted
    (the rows wait for the next delivery) and the error goes to the caller.
    """
    with db.engine.begin() as connection:
        rows = connection.execute(OLDEST_FIRST).all()
        if rows:
            send(rows)
            connection.execute(DELIVERED, {"ids": [row.id for row in rows]})
    return len(rows)


def drop_cache_writes_older_than(before):
    """Delete undelivered writes queued before ``before`` (in the unit of work); return how many."""
    return db.session.execute(OLDER_THAN, {"before": before}).rowcount
