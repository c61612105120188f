"""The SQL of login sessions: open, rotate, end, read their state, list them.

Plain values in and out. Every statement is built once at import (SQLAlchemy
compiles it once), on the Core tables: nothing here loads an ORM object, and
the rotation hides its dialect choice behind one function.
"""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LoginSession, User
from allmine_auth.store.dialects import on_postgresql

_SESSIONS = LoginSession.__table__
_EVENTS = AuthEvent.__table__
_NOW = sa.bindparam("now", type_=_SESSIONS.c.expires_at.type)

# A plain INSERT, not an ORM object: the login never reads the row back.
INSERT_SESSION = sa.insert(_SESSIONS)
_EVENT_FIELDS = ("kind", "channel", "destination", "prefix", "user_id", "ip", "user_agent", "detail")
# The session's audit row (SQLite: a second statement in the unit of work).
INSERT_EVENT = sa.insert(_EVENTS).inline()
# PostgreSQL: the session and its audit row as one statement
# (``WITH recorded AS (INSERT INTO auth_events ...) INSERT INTO sessions ...``).
_SESSION_FIELDS = (
    "id",
    "user_id",
    "refresh_jti",
    "device",
    "ip",
    "created_at",
    "last_used_at",
    "expires_at",
    "max_expires_at",
)
INSERT_SESSION_AND_EVENT = (
    sa.insert(_SESSIONS)
    .values({name: sa.bindparam(f"s_{name}", type_=_SESSIONS.c[name].type) for name in _SESSION_FIELDS})
    .add_cte(
        sa.insert(_EVENTS)
        .values(
            {
                **{name: sa.bindparam(f"b_{name}", type_=_EVENTS.c[name].type) for name in _EVENT_FIELDS},
                "session_id": sa.bindparam("s_id", type_=_SESSIONS.c.id.type),
                "created_at": sa.bindparam("s_created_at", type_=_SESSIONS.c.created_at.type),
            }
        )
        .cte("recorded")
    )
)


def insert_session(session_id, user_id, refresh_jti, device, ip, now, expires_at, max_expires_at, event=None):
    """Write a new session's row (in the unit of work), and ``event``'s audit row with it if given.

    ``event`` is a dict of the audit row's ``kind``, ``channel``,
    ``destination``, ``prefix``, ``user_id``, ``ip``, ``user_agent`` and
    ``detail`` (missing ones are null); the row names the session and its
    moment is ``now``. PostgreSQL writes both in one statement, SQLite in two.
    """
    row = {
        "id": session_id,
        "user_id": user_id,
        "refresh_jti": refresh_jti,
        "device": device,
        "ip": ip,
        "created_at": now,
        "last_used_at": now,
        "expires_at": expires_at,
        "max_expires_at": max_expires_at,
    }
    if event is None:
        db.session.execute(INSERT_SESSION, row)
        return
    fields = {name: event.get(name) for name in _EVENT_FIELDS}
    if on_postgresql():
        params = {f"s_{name}": value for name, value in row.items()}
        params.update((f"b_{name}", value) for name, value in fields.items())
        db.session.execute(INSERT_SESSION_AND_EVENT, params)
        return
    db.session.execute(INSERT_SESSION, row)
    db.session.execute(INSERT_EVENT, {**fields, "session_id": session_id, "created_at": now})


# The session's user's registration flag, read in the rotating UPDATE's RETURNING (one round trip).
_REGISTRATION_COMPLETE = (
    sa.select(User.is_registration_complete).where(User.id == _SESSIONS.c.user_id).scalar_subquery()
)
_NEW_EXPIRES_AT = sa.bindparam("new_expires_at", type_=_SESSIONS.c.expires_at.type)
# The rotation: one conditional UPDATE, so of two parallel refreshes only one rotates.
ROTATE = (
    sa.update(_SESSIONS)
    .where(
        _SESSIONS.c.id == sa.bindparam("sid"),
        _SESSIONS.c.refresh_jti == sa.bindparam("jti"),
        _SESSIONS.c.revoked_at.is_(None),
        _SESSIONS.c.expires_at > _NOW,
    )
    .values(
        refresh_jti=sa.bindparam("new_jti"),
        previous_refresh_jti=sa.bindparam("jti"),
        rotated_at=_NOW,
        last_used_at=_NOW,
        # A refresh gives the session a full life again, up to its absolute end where it has one.
        expires_at=sa.case(
            (_SESSIONS.c.max_expires_at < _NEW_EXPIRES_AT, _SESSIONS.c.max_expires_at),
            else_=_NEW_EXPIRES_AT,
        ),
    )
    .returning(
        _SESSIONS.c.id, _SESSIONS.c.user_id, _SESSIONS.c.expires_at, _REGISTRATION_COMPLETE.label("complete")
    )
)
# The rotation's audit row (SQLite: a second statement in the unit of work).
RECORD_ROTATION = sa.insert(_EVENTS).inline()
# PostgreSQL: the rotation, and its audit row inserted from what it returned, as one statement
# (``WITH rotated AS (UPDATE ...), recorded AS (INSERT ... SELECT ... FROM rotated) SELECT * FROM rotated``).
# A statement is atomic: the row is written exactly when the session rotated.
_ROTATED = ROTATE.cte("rotated")
ROTATE_AND_RECORD = sa.select(_ROTATED).add_cte(
    sa.insert(_EVENTS)
    .from_select(
        ["kind", "user_id", "session_id", "ip", "user_agent", "created_at"],
        sa.select(
            sa.bindparam("b_kind", type_=_EVENTS.c.kind.type),
            _ROTATED.c.user_id,
            _ROTATED.c.id,
            sa.bindparam("b_ip", type_=_EVENTS.c.ip.type),
            sa.bindparam("b_user_agent", type_=_EVENTS.c.user_agent.type),
            sa.bindparam("now", type_=_EVENTS.c.created_at.type),
        ),
    )
    .cte("recorded")
)


def rotate_session(sid, jti, new_jti, now, new_expires_at, *, kind, ip, user_agent):
    """Move session ``sid`` from refresh token ``jti`` to ``new_jti`` and write its audit row ``kind``.

    Returns ``(id, user_id, expires_at, complete)`` of the rotated session, or
    ``None`` when ``jti`` is not the session's current token (or the session
    is over): then nothing is written. PostgreSQL runs the rotation and its
    audit row as one statement outside any transaction (one round trip,
    durable at once); SQLite runs an ``UPDATE ... RETURNING`` and the audit
    ``INSERT`` in the unit of work.
    """
    params = {"sid": sid, "jti": jti, "new_jti": new_jti, "now": now, "new_expires_at": new_expires_at}
    if on_postgresql():
        # On a connection of its own rather than the ORM session's: no transaction bookkeeping to set up
        # and undo.
        audit_row = {"b_kind": kind, "b_ip": ip, "b_user_agent": user_agent}
        with db.engine.connect() as connection:
            return (
                connection.execution_options(isolation_level="AUTOCOMMIT")
                .execute(ROTATE_AND_RECORD, {**params, **audit_row})
                .first()
            )
    rotated = db.session.execute(ROTATE, params).first()
    if rotated is not None:
        db.session.execute(
            RECORD_ROTATION,
            {
                "kind": kind,
                "user_id": rotated.user_id,
                "session_id": sid,
                "ip": ip,
                "user_agent": user_agent,
                "created_at": now,
            },
        )
    return rotated


SESSION_TOKENS = sa.select(
    _SESSIONS.c.id,
    _SESSIONS.c.user_id,
    _SESSIONS.c.expires_at,
    _SESSIONS.c.revoked_at,
    _SESSIONS.c.refresh_jti,
    _SESSIONS.c.previous_refresh_jti,
    _SESSIONS.c.rotated_at,
).where(_SESSIONS.c.id == sa.bindparam("sid"))


def session_tokens(sid):
    """The session's refresh tokens (current, previous), rotation time and state, or ``None``."""
    return db.session.execute(SESSION_TOKENS, {"sid": sid}).first()


SESSION_STATE = sa.select(_SESSIONS.c.expires_at, _SESSIONS.c.revoked_at).where(
    _SESSIONS.c.id == sa.bindparam("sid")
)


def session_state(sid):
    """``(expires_at, revoked_at)`` of session ``sid``, or ``None``: every request's check."""
    return db.session.execute(SESSION_STATE, {"sid": sid}).first()


REGISTRATION_COMPLETE = sa.select(User.is_registration_complete).where(User.id == sa.bindparam("user_id"))


def registration_complete(user_id):
    """Whether the user has completed registration (the access token's ``reg`` claim)."""
    return db.session.scalar(REGISTRATION_COMPLETE, {"user_id": user_id})


HOLD_ACTIVE_SESSION = (
    sa.select(_SESSIONS.c.id)
    .where(
        _SESSIONS.c.id == sa.bindparam("sid"),
        _SESSIONS.c.user_id == sa.bindparam("user_id"),
        _SESSIONS.c.revoked_at.is_(None),
        _SESSIONS.c.expires_at > _NOW,
    )
    .with_for_update(read=True)
)


def hold_active_session(sid, user_id, now):
    """Whether ``sid`` is the user's active session, kept so until the unit of work ends (``FOR SHARE``).

    A revocation's ``UPDATE`` of the row waits for this transaction (PostgreSQL).
    """
    return db.session.scalar(HOLD_ACTIVE_SESSION, {"sid": sid, "user_id": user_id, "now": now}) is not None


def _scope(only, keep):
    """The sessions of a user (all, ``only`` one, or all but ``keep``), by parameters."""
    # Not named after columns: an UPDATE reserves those names for its SET clause.
    conditions = [_SESSIONS.c.user_id == sa.bindparam("b_user_id")]
    if only:
        conditions.append(_SESSIONS.c.id == sa.bindparam("b_only"))
    if keep:
        conditions.append(_SESSIONS.c.id != sa.bindparam("b_keep"))
    return conditions


_SCOPES = [(only, keep) for only in (False, True) for keep in (False, True)]
END_SESSIONS = {
    scope: sa.update(_SESSIONS)
    .where(*_scope(*scope), _SESSIONS.c.revoked_at.is_(None), _SESSIONS.c.expires_at > _NOW)
    .values(revoked_at=_NOW, revoked_reason=sa.bindparam("reason"))
    .returning(_SESSIONS.c.id)
    for scope in _SCOPES
}
REVOKED_SINCE = {
    scope: sa.select(_SESSIONS.c.id).where(
        *_scope(*scope), _SESSIONS.c.revoked_at >= sa.bindparam("since", type_=_SESSIONS.c.revoked_at.type)
    )
    for scope in _SCOPES
}


def _scope_params(user_id, only, keep):
    return (only is not None, keep is not None), {"b_user_id": user_id, "b_only": only, "b_keep": keep}


def end_sessions(user_id, reason, now, *, only=None, keep=None):
    """Revoke the user's active sessions (all, ``only`` one, or all but ``keep``); return their ids."""
    scope, params = _scope_params(user_id, only, keep)
    return db.session.scalars(END_SESSIONS[scope], {**params, "now": now, "reason": reason}).all()


def revoked_sessions_since(user_id, since, *, only=None, keep=None):
    """The ids of the user's sessions (of the same scope) revoked at ``since`` or later."""
    scope, params = _scope_params(user_id, only, keep)
    return db.session.scalars(REVOKED_SINCE[scope], {**params, "since": since}).all()


LIST_ACTIVE_SESSIONS = (
    sa.select(
        _SESSIONS.c.id,
        _SESSIONS.c.device,
        _SESSIONS.c.ip,
        _SESSIONS.c.created_at,
        _SESSIONS.c.last_used_at,
        _SESSIONS.c.expires_at,
    )
    .where(
        _SESSIONS.c.user_id == sa.bindparam("user_id"),
        _SESSIONS.c.revoked_at.is_(None),
        _SESSIONS.c.expires_at > _NOW,
    )
    .order_by(_SESSIONS.c.created_at.desc())
)


def list_active_sessions(user_id, now):
    """The user's active sessions, newest first (``id, device, ip, ...``)."""
    return db.session.execute(LIST_ACTIVE_SESSIONS, {"user_id": user_id, "now": now}).all()


USER_SESSION_IDS = sa.select(_SESSIONS.c.id).where(_SESSIONS.c.user_id == sa.bindparam("user_id"))
DELETE_USER_SESSIONS = sa.delete(_SESSIONS).where(_SESSIONS.c.user_id == sa.bindparam("user_id"))


def user_session_ids(user_id):
    """The ids of every session the user ever had that is still stored."""
    return db.session.scalars(USER_SESSION_IDS, {"user_id": user_id}).all()


def delete_user_sessions(user_id):
    """Delete every session row of the user (an erasure)."""
    db.session.execute(DELETE_USER_SESSIONS, {"user_id": user_id})
