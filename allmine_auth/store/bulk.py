"""Bulk-insert users fast: ``flask seed --users N`` and the benchmark's 1,000,000-user database.

Rows are built as plain tuples of the ``users`` table's columns and sent with
SQLAlchemy Core ``insert()`` in batches of ``batch_size`` (one ``executemany``
per batch, which SQLAlchemy turns into multi-row ``INSERT ... VALUES`` pages).
Each user gets a random UUID and the phone number ``+90532`` followed by its
7-digit index, so seeding is repeatable and ``start`` continues an earlier run.
Numbers that already have a user (an earlier run over the same range, or a
person who logged in with one) are skipped, so running a seed twice adds nothing
the second time instead of failing on the unique phone number.
Every other column takes the model's own default (evaluated once, as they are
constants: ``roles=["user"]``, counters 0, flags false) or stays NULL, so a
column added to ``User`` later is filled the same way the ORM would.

On PostgreSQL the rows go through ``COPY ... FROM STDIN`` instead (the same
rows, about twice as fast: 100,000 users in ~2 s instead of ~4 s on 2 cores).

Must run inside an app context (``flask seed`` has one)::

    from allmine_auth.store.bulk import seed_users
    inserted = seed_users(count, start=first_index)
"""

import io
import json
import time
import uuid

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User, utcnow
from allmine_auth.store.unit_of_work import unit_of_work

PHONE_PREFIX = "+90532"
MAX_USERS = 10_000_000  # 7 digits after the prefix


def phone_for(index):
    """The seeded phone number of user ``index`` (E.164, a valid Turkish mobile number)."""
    return f"{PHONE_PREFIX}{index:07d}"


def constant_defaults(table, now):
    """Column values every seeded row shares: the model's scalar or callable defaults, evaluated once."""
    values = {}
    for column in table.columns:
        default = column.default
        if column.primary_key or default is None:
            continue
        if default.is_scalar:
            values[column.key] = default.arg
        elif default.is_callable:
            values[column.key] = default.arg(None)
    values.update(created_at=now, updated_at=now)
    return values


def user_rows(start, count, shared, skip=frozenset()):
    """``(id, phone_e164, country_code, phone_number, *shared values)`` for users ``start..start+count``,
    leaving out the indexes in ``skip``."""
    shared_values = tuple(shared.values())
    for index in range(start, start + count):
        if index in skip:
            continue
        phone = phone_for(index)
        yield (uuid.uuid4(), phone, "90", phone[3:], *shared_values)


def taken_indexes(start, count):
    """The indexes in ``start..start+count`` whose numbers already have a user (one index range read)."""
    phones = db.session.scalars(
        sa.select(User.phone_e164).where(
            User.phone_e164.between(phone_for(start), phone_for(start + count - 1))
        )
    )
    # Only the seeded numbers' exact shape: between() also lets through longer strings in that range.
    width = len(phone_for(0))
    return {int(phone[len(PHONE_PREFIX) :]) for phone in phones if len(phone) == width}


INSERT_USERS = sa.insert(User.__table__)


def insert_batches(rows, columns, batch_size):
    """Core ``insert()`` with ``executemany``, ``batch_size`` rows per statement (in the unit of work)."""
    inserted = 0
    batch = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) == batch_size:
            db.session.execute(INSERT_USERS, batch)
            inserted += len(batch)
            batch = []
    if batch:
        db.session.execute(INSERT_USERS, batch)
        inserted += len(batch)
    return inserted


def copy_value(value):
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    elif hasattr(value, "isoformat"):
        value = value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_batches(rows, columns, batch_size):
    """PostgreSQL ``COPY users (...) FROM STDIN``, ``batch_size`` rows per round trip."""
    inserted = 0
    connection = db.session.connection()
    cursor = connection.connection.dbapi_connection.cursor()
    column_list = ", ".join(f'"{name}"' for name in columns)
    with cursor.copy(f"COPY {User.__table__.name} ({column_list}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(map(copy_value, row)))
            buffer.write("\n")
            inserted += 1
            if inserted % batch_size == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())
    return inserted


def seed_users(count, *, start=0, batch_size=10_000, method=None, progress=None):
    """Insert ``count`` users numbered from ``start``; return how many were inserted.

    Numbers that already have a user are skipped (and not counted).

    Each batch commits on its own (call it outside a unit of work).
    ``method`` is ``"copy"`` (PostgreSQL only) or ``"insert"``; by default
    COPY on PostgreSQL, Core inserts elsewhere. ``progress(done, elapsed)`` is
    called after each batch when given. Runs ``VACUUM (ANALYZE)`` afterwards
    on PostgreSQL, so the planner knows the table's new size at once.
    """
    if start < 0 or start + count > MAX_USERS:
        raise ValueError(f"users are numbered 0..{MAX_USERS - 1}; {start}+{count} does not fit")
    dialect = db.engine.dialect.name
    method = method or ("copy" if dialect == "postgresql" else "insert")
    if method == "copy" and dialect != "postgresql":
        raise ValueError("COPY needs PostgreSQL")
    shared = constant_defaults(User.__table__, utcnow())
    columns = ("id", "phone_e164", "country_code", "phone_number", *shared)
    started = time.perf_counter()
    total = 0
    for first in range(start, start + count, batch_size):
        size = min(batch_size, start + count - first)
        # One unit of work per batch: a million users are not one transaction, and a run stopped midway
        # keeps what it inserted (a rerun skips those numbers).
        with unit_of_work():
            rows = user_rows(first, size, shared, skip=taken_indexes(first, size))
            total += (copy_batches if method == "copy" else insert_batches)(rows, columns, batch_size)
        if progress is not None:
            progress(total, time.perf_counter() - started)
    if dialect == "postgresql":
        vacuum_analyze(User.__table__.name)
    return total


def vacuum_analyze(*tables):
    """``VACUUM (ANALYZE)`` (PostgreSQL; outside a transaction): visibility map, hint bits and planner stats.

    Autovacuum would get there in its own time; until then the planner plans
    for the table as it was (empty, say) and the first reads of every page
    write hint bits. Run it once the rows are committed: it sees only committed rows.
    """
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in tables:
            connection.execute(sa.text(f'VACUUM (ANALYZE) "{table}"'))
