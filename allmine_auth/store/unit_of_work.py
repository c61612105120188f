"""The unit of work: the one owner of transactions.

Each request (every view of the API, through ``web.resource.Resource``) and
each CLI command runs in one unit of work:

- it **commits** when the work returns, and when the work raises a
  ``ServiceError`` whose records must persist (``error.keep_records``: the
  count of a failed code check, the audit row of a refused send);
- it **rolls back** on any other exception, and re-raises it;
- a unique constraint that another transaction won, found only at the
  commit, is a ``Conflict`` (409), not a 500.

Rules never commit. What must happen only once the work is durable (a
delivery, a Redis counter, a check that the cache has the revocation) is
queued with ``after_commit(action)``: the actions run in order after a
successful commit (not after an error), each in a unit of work of its own, so
what an action writes commits by the same rules, and an error it raises is the
answer (a failed delivery is a 500 whose failure record is kept).

Units nest: one opened inside another joins it (its work commits with the
outer one, its actions run after the outer commit).

On PostgreSQL the transaction's ``BEGIN`` goes out with the unit's first
statement. Statements declared ``alone()`` while none has gone out run
without it (autocommit): a unit whose only write is one statement (a send's
code, its audit row) then makes no ``BEGIN`` and ``COMMIT`` round trips.
"""

import contextvars
import logging
from contextlib import contextmanager

from psycopg.pq import TransactionStatus
from sqlalchemy.exc import IntegrityError

from allmine_auth.errors import Conflict, ServiceError
from allmine_auth.extensions import db
from allmine_auth.store.outage import DATABASE_ERRORS

log = logging.getLogger(__name__)

_actions = contextvars.ContextVar("allmine_auth_after_commit", default=None)


@contextmanager
def unit_of_work():
    """Run the block as one transaction (see the module's docstring); yields nothing."""
    if _actions.get() is not None:
        yield  # joined: the outer unit commits
        return
    actions = []
    token = _actions.set(actions)
    try:
        try:
            yield
        except ServiceError as error:
            if error.keep_records:
                _commit()
            else:
                abandon()
            raise
        except BaseException:
            abandon()
            raise
        _commit()
    finally:
        _actions.reset(token)
    for action in actions:
        with unit_of_work():
            action()


def _commit():
    if not db.session.registry.has():
        return  # the work never touched the database (GET /me from the caches): nothing to commit
    try:
        db.session.commit()
    except IntegrityError:
        abandon()
        raise Conflict() from None


def abandon():
    """Roll back whatever the session holds; quietly when the database is gone (the error at hand counts).

    Also for the error handlers, which may meet a database failure raised outside any unit of work.
    On a dead connection the rollback itself can fail; SQLAlchemy has invalidated the connection then.
    """
    if not db.session.registry.has():
        return
    try:
        db.session.rollback()
    except DATABASE_ERRORS:
        log.debug("rollback after a database failure failed too", exc_info=True)


def after_commit(action):
    """Run ``action()`` once the current unit of work has committed (in a unit of its own)."""
    actions = _actions.get()
    if actions is None:
        raise RuntimeError("after_commit() outside a unit of work")
    actions.append(action)


def in_unit_of_work():
    """Whether a unit of work is open (for the checks of code that must run inside one)."""
    return _actions.get() is not None


def read_in_autocommit():
    """For read-only work: run the unit's queries without ``BEGIN`` and ``ROLLBACK`` round trips.

    Call it only where nothing in the request writes afterwards; a session
    that has begun a transaction already is left as it is.
    """
    if not db.session().in_transaction():
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@contextmanager
def alone():
    """Run the block's statements in autocommit if the unit's transaction has not begun (no ``BEGIN`` yet).

    Declare with it only statements whose effect is the same outside the
    unit's transaction: reads (PostgreSQL runs at READ COMMITTED, so inside a
    transaction too each statement reads its own snapshot, and a plain read
    holds no lock a writer waits for), and the unit's one write when it is
    one statement and nothing after it in the unit writes or can fail (but
    for a bug): it is durable as it ends rather than at the commit a moment
    later, which would have nothing left to undo. Once the transaction has
    begun (a write before the block), the block joins it like any statement.
    The unit's session and its connection stay the same throughout: only the
    driver's autocommit is on for the block, so a later statement begins
    the transaction as usual, and the unit's commit, with nothing begun,
    sends nothing. On SQLite (in process: no round trips to save) the block
    runs in the unit's transaction as before.
    """
    session = db.session()
    connection = session.connection()  # the unit's, checked out now rather than at its first statement
    if connection.dialect.name != "postgresql":
        yield
        return
    raw = connection.connection.dbapi_connection
    begun = raw.autocommit or raw.pgconn.transaction_status != TransactionStatus.IDLE
    if begun or session.new or session.dirty or session.deleted:
        # The transaction has begun (or the unit reads in autocommit already), or the block's first
        # statement would flush the unit's ORM changes first: join it.
        yield
        return
    raw.autocommit = True
    try:
        yield
    finally:
        if raw.pgconn.transaction_status == TransactionStatus.IDLE:
            raw.autocommit = False
        elif not connection.invalidated and not connection.closed:
            # Only a broken connection is anything but idle after an autocommit statement: never pool it.
            connection.invalidate()
