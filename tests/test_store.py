"""The store's functions on plain values, on the suite's database (SQLite, or PostgreSQL in CI).

``rotate_session`` hides a dialect choice (PostgreSQL: one statement outside a
transaction; SQLite: two in the unit of work): both must answer the same and
write the same audit row, so each suite runs its own path here. Also: every
view of the API runs in a unit of work, even one that declares decorators of
its own (rate limits).
"""

import os
import tempfile
import uuid
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, LoginSession, OneTimeCode, User, utcnow
from allmine_auth.store import events
from allmine_auth.store import sessions as store
from allmine_auth.store.unit_of_work import alone, in_unit_of_work, unit_of_work
from allmine_auth.web.resource import Resource
from tests.conftest import assert_envelope, assert_error


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


# The SMS login: one statement on PostgreSQL (``store.logins.phone_login_with_code``), its steps on SQLite


def round_trips_of(run):
    """The PostgreSQL round trips ``run()`` makes, each as the SQL it carried (libpq's protocol trace).

    A round trip is a simple ``Query`` (``BEGIN``, ``COMMIT``) or an extended-protocol ``Sync`` (a
    statement with parameters: its ``Parse`` carries the SQL). ``BEGIN`` and ``COMMIT`` never pass
    ``before_cursor_execute``, so only the wire shows them.
    """
    with tempfile.TemporaryFile("w+") as trace:

        def traced(dbapi_connection, record):
            dbapi_connection.pgconn.trace(trace.fileno())

        db.session.remove()
        db.engine.dispose()  # every connection the run uses is opened, and traced, from its start
        sa.event.listen(db.engine, "connect", traced)
        try:
            run()
        finally:
            sa.event.remove(db.engine, "connect", traced)
            db.session.remove()
            db.engine.dispose()
        trace.seek(0)
        sent = [line.split("\t")[3:5] for line in trace.read().splitlines() if "\tF\t" in line]
    trips, statement = [], ""
    for kind, *text in sent:
        if kind == "Parse":
            statement = text[0]
        elif kind in ("Query", "Sync"):
            trips.append(" ".join((text[0] if kind == "Query" else statement).split()))
    return trips


def users_and_sessions():
    db.session.rollback()
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(User)),
        db.session.scalar(sa.select(sa.func.count()).select_from(LoginSession)),
    )


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="PostgreSQL's wire (TEST_DATABASE_URL)")
def test_an_sms_login_with_the_right_code_is_one_round_trip_on_postgresql(client, auth):
    sign_up = assert_envelope(auth.send(), 201)["code"]
    trips = round_trips_of(lambda: assert_envelope(auth.verify(sign_up), 200))
    assert len(trips) == 1 and trips[0].startswith('"" "WITH used AS ('), trips
    db.session.execute(sa.delete(OneTimeCode))  # the resend interval: a second code at once
    db.session.commit()
    returning = assert_envelope(auth.send(), 201)["code"]
    trips = round_trips_of(lambda: assert_envelope(auth.verify(returning), 200))
    assert len(trips) == 1 and trips[0].startswith('"" "WITH used AS ('), trips


def test_an_sms_login_runs_the_code_the_account_the_session_and_its_audit_row(client, auth):
    code = assert_envelope(auth.send(), 201)["code"]
    sent = statements_of(lambda: assert_envelope(auth.verify(code), 200))
    if db.engine.dialect.name == "postgresql":
        assert len(sent) == 1 and sent[0].startswith("WITH used AS ( DELETE FROM one_time_codes"), sent
        for table in ("users", "sessions", "auth_events"):
            assert f"INSERT INTO {table}" in sent[0], sent
    else:
        writes = [" ".join(statement.split()[:3]) for statement in sent]
        expected = ["DELETE FROM one_time_codes", "INSERT INTO users", "INSERT INTO sessions"]
        assert writes == [*expected, "INSERT INTO auth_events"], sent


@pytest.mark.parametrize("config_overrides", [{"OTP_TEST_DESTINATIONS": {"+905329990000": ("4321", None)}}])
def test_the_login_statement_makes_the_account_the_other_logins_make(app, client, auth):
    # The test destination's fixed code logs in through the unit of work's steps (``users.phone_login``,
    # whose INSERT gets every column's default from the model), the other number through the one statement.
    fixed = {"countryCode": "90", "phoneNumber": "5329990000"}
    assert_envelope(auth.verify("4321", phone=fixed, signupSource="ad"), 200)
    code = assert_envelope(auth.send(), 201)["code"]
    assert_envelope(auth.verify(code, signupSource="ad"), 200)
    ignored = {"id", "phone_e164", "phone_number", "created_at", "updated_at", "last_login"}
    columns = [column for column in User.__table__.c if column.name not in ignored]
    rows = db.session.execute(sa.select(*columns).order_by(User.phone_e164)).all()
    assert len(rows) == 2 and rows[0] == rows[1], rows
    assert rows[0]._mapping["roles"] == ["user"] and rows[0]._mapping["interests"] == []


def test_an_sms_login_that_finds_no_live_code_writes_nothing_and_counts_as_before(client, auth, app):
    code = assert_envelope(auth.send(), 201)["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    assert_error(auth.verify(wrong), 401, "Invalid or expired code")
    assert users_and_sessions() == (0, 0)
    assert db.session.scalars(sa.select(OneTimeCode.attempts)).all() == [1]
    kinds = db.session.scalars(sa.select(AuthEvent.kind).order_by(AuthEvent.id)).all()
    assert kinds == ["code_sent", "code_failed"]
    # A locked destination: the right code is a 429 and is not used.
    until = utcnow() + timedelta(hours=1)
    # The failed check made the destination's counter row.
    db.session.execute(sa.update(DestinationLock).values(locked_until=until))
    db.session.commit()
    assert_error(auth.verify(code), 429, "Too many requests")
    assert users_and_sessions() == (0, 0)
    assert db.session.scalars(sa.select(OneTimeCode.attempts)).all() == [1]
    db.session.execute(sa.update(DestinationLock).values(locked_until=None))
    db.session.commit()
    assert_envelope(auth.verify(code), 200)
    assert users_and_sessions() == (1, 1)
    assert_error(auth.verify(code), 401, "Invalid or expired code")  # used: nothing live, nothing counted
    assert users_and_sessions() == (1, 1)
