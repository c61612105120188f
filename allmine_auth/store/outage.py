"""The database going away: a 503 for every request that needs it, one log line each way, no hang.

A request that fails because PostgreSQL can't be reached (refused, reset in the middle of a query,
a connect that timed out, no pooled connection free in time) answers 503 "Service unavailable"
with ``Retry-After``, never 500 (``web/error_handlers.database_error_response``). Its transaction is rolled
back, so nothing of it is half-written.

Each worker logs the first such failure at ERROR with its cause, then nothing per request until a
new connection to the database succeeds, then one "database reachable again" line. A connection
that broke is invalidated by SQLAlchemy (psycopg marks it ``broken``), and with it every pooled
connection opened before it: the next request opens fresh ones, so a dead pool costs at most the
request that finds it, and the service recovers with no restart and no pre-ping.

A hung network must not hold a request forever. On PostgreSQL the connection is opened with
``connect_timeout`` (``DATABASE_CONNECT_TIMEOUT``), and its socket with ``tcp_user_timeout`` and
TCP keepalives (``DATABASE_NETWORK_TIMEOUT``): a query whose packets are never acknowledged, or
whose answer never comes from a host that went silent, fails within that time. These are kernel
timers, free on every statement. A ``statement_timeout`` would not do it: the server bounds only
the statements that reach it, and a silent network is exactly when they don't.
"""

import logging
import threading

import sqlalchemy as sa

from allmine_auth.extensions import db

log = logging.getLogger(__name__)

# What SQLAlchemy raises when the database can't be reached or answered in time: OperationalError and
# InterfaceError wrap the driver's connection failures, DisconnectionError a connection found dead,
# TimeoutError a pool with no free connection within its timeout.
DATABASE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)
EXTENSION_KEY = "allmine_database_outage"


class DatabaseOutage:
    """Whether this process last saw the database fail, so each outage is logged once, begin and end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.down = False

    def failed(self, error):
        """A request failed on the database: log it if it starts an outage (anything else, every time)."""
        if not is_unreachable(error):
            log.error("database error, answering 503: %s", error.orig if hasattr(error, "orig") else error)
            return
        with self.lock:
            starts, self.down = not self.down, True
        if starts:
            cause = getattr(error, "orig", None) or error
            first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            log.error(
                "database unreachable, answering 503 until it is back: %s: %s",
                type(cause).__name__,
                first_line,
            )

    def connected(self):
        """A new connection to the database succeeded: log the end of an outage."""
        if not self.down:
            return
        with self.lock:
            ends, self.down = self.down, False
        if ends:
            log.warning("database reachable again")


def is_unreachable(error):
    """Whether ``error`` means the database can't be reached, rather than refused one statement.

    A deadlock or a cancelled statement (SQLSTATE 40xxx, 57014) is an OperationalError too, but the
    connection is fine: it must neither start an outage nor hide the next one's first line.
    """
    if getattr(error, "connection_invalidated", False):
        return True
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    # No SQLSTATE: the driver's own failure (refused, reset, timed out); 08: connection exception;
    # 57P: the server is shutting down or can't accept connections.
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


def postgresql_connect_args(config):
    """libpq parameters that bound a connect and a silent network (see the module docstring)."""
    network_timeout = config["DATABASE_NETWORK_TIMEOUT"]
    args = {"connect_timeout": config["DATABASE_CONNECT_TIMEOUT"]}
    if network_timeout > 0:
        args.update(
            tcp_user_timeout=network_timeout * 1000,
            keepalives=1,
            # First probe after half the time idle, then 3 probes: the dead peer is found within it.
            keepalives_idle=max(1, network_timeout // 2),
            keepalives_interval=max(1, network_timeout // 6),
            keepalives_count=3,
        )
    return args


def init_app(app):
    """Watch the app's engine: bound PostgreSQL connects, and end the outage on a new connection."""
    outage = app.extensions[EXTENSION_KEY] = DatabaseOutage()
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "postgresql":
        connect_args = postgresql_connect_args(app.config)

        @sa.event.listens_for(engine, "do_connect")
        def bound_the_connect(dialect, connection_record, cargs, cparams):
            """Add the timeouts unless the URL or ``connect_args`` chose its own."""
            for name, value in connect_args.items():
                cparams.setdefault(name, value)

    @sa.event.listens_for(engine, "connect")
    def end_the_outage(dbapi_connection, connection_record):
        """The database answered a new connection."""
        outage.connected()

    # Runs before flask-sqlalchemy's own teardown (they run in reverse order), which then finds nothing.
    app.teardown_appcontext(close_session_quietly)


def close_session_quietly(exc):
    """``teardown_appcontext``: end the request's session; a connection that died meanwhile is no 500.

    A request that answered before the database went away still rolls its
    transaction back when it ends; on a dead connection that rollback raises
    (after SQLAlchemy invalidated the connection), and raised from a teardown it
    would reach gunicorn as an HTML 500 after the answer was already made.
    """
    try:
        db.session.remove()
    except DATABASE_ERRORS as error:
        log.warning(
            "a request's connection died as it ended: %s",
            type(getattr(error, "orig", None) or error).__name__,
        )
        db.session.registry.clear()


def outage_of(app):
    """The app's ``DatabaseOutage``."""
    return app.extensions[EXTENSION_KEY]


def database_answers():
    """Ask the database ``SELECT 1``; raises one of ``DATABASE_ERRORS`` when it doesn't answer."""
    db.session.execute(sa.text("SELECT 1"))
