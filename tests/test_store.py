"""The store's functions on plain values, on the suite's database (SQLite, or PostgreSQL in CI).

``rotate_session`` hides a dialect choice (PostgreSQL: one statement outside a
transaction; SQLite: two in the unit of work): both must answer the same and
write the same audit row, so each suite runs its own path here. Also: every
view of the API runs in a unit of work, even one that declares decorators of
its own (rate limits).
"""

import uuid
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LoginSession, OneTimeCode, User, utcnow
from allmine_auth.store import events
from allmine_auth.store import sessions as store
from allmine_auth.store.unit_of_work import alone, in_unit_of_work, unit_of_work
from allmine_auth.web.resource import Resource


def session_of(login):
    """The id and refresh jti of the login's session."""
    claims = jwt.decode(login["refreshToken"], options={"verify_signature": False})
    return uuid.UUID(claims["sid"]), claims["jti"]


def refresh_events(session_id):
    """The session's refresh events: ``(kind, ip, user_agent)`` each."""
    return db.session.execute(
        sa.select(AuthEvent.kind, AuthEvent.ip, AuthEvent.user_agent).where(
            AuthEvent.session_id == session_id, AuthEvent.kind == "refresh"
        )
    ).all()


def test_rotate_session_moves_the_token_and_records_one_refresh_then_refuses_the_old_jti(app, auth):
    login = auth.login()
    sid, jti = session_of(login)
    now = utcnow()
    user_id = uuid.UUID(login["user"]["id"])
    rotate = {"kind": "refresh", "ip": "203.0.113.7", "user_agent": "tests"}
    with unit_of_work():
        rotated = store.rotate_session(sid, jti, "new-jti", now, now + timedelta(days=1), **rotate)
    assert (rotated.id, rotated.user_id, rotated.complete) == (sid, user_id, False)
    assert rotated.expires_at == now + timedelta(days=1)
    row = db.session.get(LoginSession, sid, populate_existing=True)
    assert (row.refresh_jti, row.previous_refresh_jti, row.rotated_at) == ("new-jti", jti, now)
    assert refresh_events(sid) == [("refresh", "203.0.113.7", "tests")]
    with unit_of_work():
        assert store.rotate_session(sid, jti, "newer-jti", now, now + timedelta(days=1), **rotate) is None
    assert db.session.get(LoginSession, sid, populate_existing=True).refresh_jti == "new-jti"
    assert len(refresh_events(sid)) == 1


def test_rotate_session_refuses_a_revoked_session(app, auth):
    login = auth.login()
    sid, jti = session_of(login)
    now = utcnow()
    with unit_of_work():
        assert store.end_sessions(uuid.UUID(login["user"]["id"]), "logout", now, only=sid) == [sid]
    with unit_of_work():
        rotated = store.rotate_session(
            sid, jti, "new-jti", now, now + timedelta(days=1), kind="refresh", ip=None, user_agent=None
        )
    assert rotated is None
    assert refresh_events(sid) == []


def test_end_sessions_scopes_only_and_keep(app, auth, unique_phone):
    phone = unique_phone()
    first, second, third = (auth.login(phone) for _ in range(3))
    user_id = uuid.UUID(first["user"]["id"])
    (a, _), (b, _), (c, _) = (session_of(login) for login in (first, second, third))
    now = utcnow()
    with unit_of_work():
        assert store.end_sessions(user_id, "logout", now, only=a) == [a]
        assert sorted(store.end_sessions(user_id, "logout", now, keep=b)) == [c]
        assert store.end_sessions(user_id, "logout", now, only=a) == []
        assert sorted(store.revoked_sessions_since(user_id, now)) == sorted([a, c])
        assert store.revoked_sessions_since(user_id, now, keep=a) == [c]
    assert [row.id for row in store.list_active_sessions(user_id, now)] == [b]


def test_every_view_runs_in_a_unit_of_work(app):
    views = [
        view
        for view in app.view_functions.values()
        if issubclass(getattr(view, "view_class", object), Resource)
    ]
    assert len(views) > 10
    for view in views:
        # ``as_view`` applies the class's decorators; the unit of work must be among them.
        assert Resource.decorators[0] in view.view_class.decorators, view.view_class


def test_the_verify_view_runs_in_a_unit_of_work(client, auth, monkeypatch):
    from allmine_auth.rules import logins

    seen = []
    real = logins.login_with_code

    def login_with_code(*args, **kwargs):
        seen.append(in_unit_of_work())
        return real(*args, **kwargs)

    monkeypatch.setattr(logins, "login_with_code", login_with_code)
    auth.login()
    assert seen == [True]


def statements_of(run):
    """The SQL statements ``run()`` sends to the database (whitespace collapsed)."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return seen


def test_a_send_reads_the_sms_markers_once_and_checks_its_limits_with_its_code(client, auth):
    sent = statements_of(lambda: auth.send())
    markers = [statement for statement in sent if statement.startswith("SELECT destination_locks.channel")]
    assert len(markers) == 1, sent
    # The lock, the resend interval and both caps are read with the code's upsert (PostgreSQL: one statement).
    lock_reads = [each for each in sent if each.startswith("SELECT destination_locks.locked_until")]
    assert not lock_reads, sent
    checks = [statement for statement in sent if "one_time_codes" in statement or "count(*)" in statement]
    if db.engine.dialect.name == "postgresql":
        assert len(checks) == 1 and checks[0].startswith("WITH checks AS"), sent
    else:
        assert len(checks) == 2, sent  # the checks' SELECT, then the code's upsert


def test_a_refused_send_answers_the_retry_after_of_the_first_limit_that_refused(client, auth, app):
    assert auth.send().status_code == 201
    refused = auth.send()
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= app.config["OTP_RESEND_INTERVAL"]


def test_a_login_writes_its_session_and_its_audit_row_naming_it(client, auth):
    login = auth.login()
    sid, _ = session_of(login)
    kinds = db.session.scalars(sa.select(AuthEvent.kind).where(AuthEvent.session_id == sid)).all()
    assert kinds == ["login"]
    assert db.session.get(LoginSession, sid) is not None


def test_a_phone_login_keeps_the_signup_source_of_the_first_login_only(client, auth):
    first = auth.login(signupSource="ad", signupCampaign="spring")
    db.session.execute(sa.delete(OneTimeCode))  # the resend interval: a second code at once
    db.session.commit()
    second = auth.login(signupSource="other", signupCampaign="autumn")
    assert first["user"]["id"] == second["user"]["id"]
    user = db.session.get(User, uuid.UUID(first["user"]["id"]))
    db.session.refresh(user)
    assert (user.signup_source, user.signup_campaign) == ("ad", "spring")
    assert user.last_login is not None


def audit_kinds(connection):
    """The kinds of the audit rows ``connection`` sees (another connection than the session's)."""
    return connection.execute(sa.select(AuthEvent.kind).order_by(AuthEvent.id)).scalars().all()


def test_alone_runs_in_autocommit_until_the_unit_has_begun_its_transaction(app):
    postgresql = db.engine.dialect.name == "postgresql"
    other = db.engine.connect() if postgresql else None
    try:
        with pytest.raises(RuntimeError), unit_of_work():
            with alone():
                events.record_event("first", utcnow())
            if postgresql:
                assert audit_kinds(other) == ["first"]  # durable at once: no transaction around it
            events.record_event("second", utcnow())  # the unit's transaction begins here
            with alone():
                events.record_event("third", utcnow())  # joins it
            if postgresql:
                assert audit_kinds(other) == ["first"]
                other.rollback()
            raise RuntimeError("the unit rolls back")
    finally:
        if other is not None:
            other.close()
    # PostgreSQL: the autocommit write stays, the transaction's are undone; SQLite: all ran in it.
    expected = ["first"] if postgresql else []
    assert db.session.scalars(sa.select(AuthEvent.kind)).all() == expected
    if postgresql:
        with db.engine.connect() as connection:  # the pool got its connection back out of autocommit
            assert connection.connection.dbapi_connection.autocommit is False


def test_alone_joins_the_transaction_when_its_statement_would_flush_orm_changes(app):
    """An ORM object added but not flushed is the unit's work too: the block must not autocommit it."""
    with pytest.raises(RuntimeError), unit_of_work():
        db.session.add(User(id=uuid.uuid4(), created_at=utcnow()))
        with alone():
            events.record_event("flushed", utcnow())  # autoflushes the user first
        raise RuntimeError("the unit rolls back")
    assert db.session.scalars(sa.select(AuthEvent.kind)).all() == []
    assert db.session.scalars(sa.select(User.id)).all() == []


def test_a_send_makes_no_begin_or_commit_round_trips_on_postgresql(client, auth, tmp_path):
    """The markers' read, the code's statement and, once delivered, its audit row: three round trips."""
    trace = tmp_path / "libpq.trace"
    if db.engine.dialect.name != "postgresql":
        assert auth.send().status_code == 201
        return
    traced = []
    with trace.open("w") as out:

        def trace_checkout(dbapi_connection, record, proxy):
            dbapi_connection.pgconn.trace(out.fileno())
            traced.append(dbapi_connection)

        sa.event.listen(db.engine, "checkout", trace_checkout)
        try:
            assert auth.send().status_code == 201
        finally:
            sa.event.remove(db.engine, "checkout", trace_checkout)
            for dbapi_connection in traced:
                dbapi_connection.pgconn.untrace()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    sent = [fields[3:5] for fields in sent if len(fields) > 3 and fields[1] == "F"]
    queries = [fields[1] for fields in sent if fields[0] == "Query"]
    assert queries == [], queries  # no BEGIN, no COMMIT
    assert sum(fields[0] == "Sync" for fields in sent) == 3, sent
