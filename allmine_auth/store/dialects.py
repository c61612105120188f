"""Statements each dialect builds itself (upserts), prebuilt for every supported database.

PostgreSQL and SQLite (3.24+) run the same ``INSERT ... ON CONFLICT ... DO
UPDATE``, but SQLAlchemy builds it only through each dialect's own ``insert``;
so a store module builds it once per dialect at import and runs the one of the
engine in use: the choice stays inside the store function.
"""

from sqlalchemy.dialects import postgresql, sqlite

from allmine_auth.extensions import db


def for_each_dialect(build):
    """``{dialect name: build(insert)}`` for each supported database, ``insert`` being its own builder."""
    return {"postgresql": build(postgresql.insert), "sqlite": build(sqlite.insert)}


def of_engine(statements):
    """The statement of ``statements`` (from ``for_each_dialect``) for the engine in use."""
    return statements[db.engine.dialect.name]


def on_postgresql():
    """Whether the engine in use is PostgreSQL (where a store function has a faster one-statement form)."""
    return db.engine.dialect.name == "postgresql"
