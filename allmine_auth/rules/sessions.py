"""Sessions and their tokens: issue, rotate with reuse detection, revoke, and check on every request.

Every token carries ``sid``, its session. A session is the unit of
revocation: ending it kills its access and refresh tokens on every worker,
because ``token_in_blocklist_loader`` reads the session's state (from Redis
when configured, else one primary-key read) on each request.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from allmine_auth.cache import fill_cached, read_cached, set_after_commit, undelivered
from allmine_auth.errors import NotFound, ServiceUnavailable, TokenRevoked, Unauthorized
from allmine_auth.extensions import db
from allmine_auth.models import (
    AuthEvent,
    LiveActivity,
    LoginSession,
    User,
    single_statement_writes,
    utcnow,
)
from allmine_auth.rules import audit
from allmine_auth.rules.audit import Event

SESSION_CACHE_PREFIX = "allmine-auth:session:"
REVOKED = "0"


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh hands back."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


def mint_tokens(user_id, registration_complete, session, refresh_jti, now):
    """Sign an access token and a refresh token (with ``refresh_jti``) for ``session``."""
    config = current_app.config
    access_seconds = config["JWT_ACCESS_TOKEN_EXPIRES"]
    refresh_seconds = int(
        min(config["JWT_REFRESH_TOKEN_EXPIRES"], (session.expires_at - now).total_seconds())
    )
    sid = str(session.id)
    access = create_access_token(
        identity=str(user_id),
        additional_claims={"sid": sid, "reg": registration_complete},
        expires_delta=timedelta(seconds=access_seconds),
    )
    refresh = create_refresh_token(
        identity=str(user_id),
        additional_claims={"sid": sid, "jti": refresh_jti},
        expires_delta=timedelta(seconds=refresh_seconds),
    )
    return TokenPair(access, refresh, access_seconds, refresh_seconds)


@dataclass(frozen=True)
class OpenedSession:
    """What a login needs of the session it just opened."""

    id: uuid.UUID
    expires_at: datetime


def refreshed_end(now):
    """When a session refreshed (or opened) at ``now`` ends without another refresh."""
    return now + timedelta(seconds=current_app.config["JWT_REFRESH_TOKEN_EXPIRES"])


# A plain INSERT (compiled once), not an ORM object: the login never reads the row back.
INSERT_SESSION = sa.insert(LoginSession.__table__)


def open_session(user, client, now):
    """Start a session for ``user`` (in the caller's transaction) and return ``(session, tokens)``."""
    max_age = current_app.config["SESSION_MAX_AGE"]
    max_expires_at = now + timedelta(seconds=max_age) if max_age else None
    expires_at = refreshed_end(now)
    if max_expires_at is not None:
        expires_at = min(expires_at, max_expires_at)
    session = OpenedSession(id=uuid.uuid4(), expires_at=expires_at)
    refresh_jti = str(uuid.uuid4())
    db.session.execute(
        INSERT_SESSION,
        {
            "id": session.id,
            "user_id": user.id,
            "refresh_jti": refresh_jti,
            "device": client.device if client else None,
            "ip": client.ip if client else None,
            "created_at": now,
            "last_used_at": now,
            "expires_at": session.expires_at,
            "max_expires_at": max_expires_at,
        },
    )
    return session, mint_tokens(user.id, user.is_registration_complete, session, refresh_jti, now)


def rotate_refresh_token(token, client=None, *, now=None):
    """Exchange a refresh token for a new pair; the presented one dies.

    The rotation is one conditional ``UPDATE``, so of two parallel refreshes
    only one rotates. The loser, if it presents the token just rotated within
    ``REFRESH_TOKEN_REUSE_INTERVAL``, is a retry and gets the session's
    current pair; any other use of a rotated token is theft, and the whole
    session is revoked.
    """
    now = now or utcnow()
    claims = decode_token(token)
    if claims.get("type") != "refresh" or "sid" not in claims:
        raise Unauthorized()
    sid, jti = uuid.UUID(claims["sid"]), claims["jti"]
    new_jti = str(uuid.uuid4())
    params = {"sid": sid, "jti": jti, "new_jti": new_jti, "now": now, "new_expires_at": refreshed_end(now)}
    if single_statement_writes():
        # The rotation and its audit row in one statement, outside a transaction: one round trip. On a
        # connection of its own rather than the ORM session's: no transaction bookkeeping to set up and undo.
        with db.engine.connect() as connection:
            rotated = (
                connection.execution_options(isolation_level="AUTOCOMMIT")
                .execute(
                    ROTATE_AND_RECORD,
                    {
                        **params,
                        "b_kind": str(Event.REFRESH),
                        "b_ip": client.ip if client else None,
                        "b_user_agent": client.user_agent if client else None,
                    },
                )
                .first()
            )
        if rotated:
            audit.announce(Event.REFRESH, user_id=rotated.user_id)
    else:
        rotated = db.session.execute(ROTATE, params).first()
        if rotated:
            audit.record(Event.REFRESH, client, user_id=rotated.user_id, session_id=sid, now=now)
            db.session.commit()
    if rotated:
        return mint_tokens(rotated.user_id, rotated.complete, rotated, new_jti, now)
    session = db.session.get(LoginSession, sid, populate_existing=True)
    if session is None or not session.is_active(now):
        db.session.rollback()
        raise TokenRevoked()
    complete = registration_complete(session.user_id)
    interval = timedelta(seconds=current_app.config["REFRESH_TOKEN_REUSE_INTERVAL"])
    if session.previous_refresh_jti == jti and session.rotated_at + interval > now:
        db.session.rollback()
        return mint_tokens(session.user_id, complete, session, session.refresh_jti, now)
    revoke_sessions(session.user_id, "reuse", only=sid, now=now)
    audit.record(Event.REUSE_DETECTED, client, user_id=session.user_id, session_id=sid, now=now)
    db.session.commit()
    raise TokenRevoked()


# The session's user's registration flag, read in the rotating UPDATE's RETURNING (one round trip).
REGISTRATION_COMPLETE = (
    sa.select(User.is_registration_complete).where(User.id == LoginSession.user_id).scalar_subquery()
)
# The rotation: built once with parameters (compiled once), on the Core table (no ORM bulk-update
# machinery; nothing in the session holds the row).
_SESSIONS = LoginSession.__table__
ROTATE = (
    sa.update(_SESSIONS)
    .where(
        _SESSIONS.c.id == sa.bindparam("sid"),
        _SESSIONS.c.refresh_jti == sa.bindparam("jti"),
        _SESSIONS.c.revoked_at.is_(None),
        _SESSIONS.c.expires_at > sa.bindparam("now"),
    )
    .values(
        refresh_jti=sa.bindparam("new_jti"),
        previous_refresh_jti=sa.bindparam("jti"),
        rotated_at=sa.bindparam("now"),
        last_used_at=sa.bindparam("now"),
        # A refresh gives the session a full life again, up to its absolute end where it has one.
        expires_at=sa.case(
            (
                _SESSIONS.c.max_expires_at
                < sa.bindparam("new_expires_at", type_=_SESSIONS.c.expires_at.type),
                _SESSIONS.c.max_expires_at,
            ),
            else_=sa.bindparam("new_expires_at", type_=_SESSIONS.c.expires_at.type),
        ),
    )
    .returning(
        _SESSIONS.c.id, _SESSIONS.c.user_id, _SESSIONS.c.expires_at, REGISTRATION_COMPLETE.label("complete")
    )
)
# PostgreSQL: the rotation, and its audit row inserted from what it returned, as one statement
# (``WITH rotated AS (UPDATE ...), recorded AS (INSERT ... SELECT ... FROM rotated) SELECT * FROM rotated``).
# A statement is atomic: the row is written exactly when the session rotated.
_EVENTS = AuthEvent.__table__
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


def registration_complete(user_id):
    """Whether the user has completed registration (the access token's ``reg`` claim)."""
    return db.session.scalar(sa.select(User.is_registration_complete).where(User.id == user_id))


def revoke_sessions(user_id, reason, *, only=None, keep=None, now=None):
    """End the user's active sessions (all, ``only`` one, or all but ``keep``); return their ids.

    Runs in the caller's transaction; the Redis cache is told once it commits.
    With the sessions it ends, it announces again those of the same scope
    revoked within the cache's TTL: an earlier announcement may not have
    reached Redis, and a later logout repairs it.
    """
    now = now or utcnow()
    scope = [LoginSession.user_id == user_id]
    if only is not None:
        scope.append(LoginSession.id == only)
    if keep is not None:
        scope.append(LoginSession.id != keep)
    ended = (
        db.session.execute(
            sa.update(LoginSession)
            .where(*scope, LoginSession.revoked_at.is_(None), LoginSession.expires_at > now)
            .values(revoked_at=now, revoked_reason=reason)
            .returning(LoginSession.id)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    if ended:
        # No push goes to a phone whose session is over.
        db.session.execute(sa.delete(LiveActivity).where(LiveActivity.session_id.in_(ended)))
    ttl = current_app.config["SESSION_CACHE_TTL"]
    # The sessions just ended are among these: their revoked_at is now.
    for sid in db.session.scalars(
        sa.select(LoginSession.id).where(*scope, LoginSession.revoked_at >= now - timedelta(seconds=ttl))
    ):
        set_after_commit(db.session, SESSION_CACHE_PREFIX + str(sid), REVOKED, ttl)
    return ended


def commit_revocation():
    """Commit a revocation the caller will answer 200 for; 503 unless the cache has it too.

    The database has it either way, and a refused cache write waits in the
    outbox (``allmine_auth/cache.py``); but a worker that still reaches a Redis
    this one couldn't write to would accept the session's tokens until the
    outbox is delivered, so no 200 promises the revocation before then.
    Retrying the request finishes the job (``revoke_sessions`` announces again).
    """
    db.session.commit()
    if undelivered(db.session):
        raise ServiceUnavailable(retry_after=current_app.config["CACHE_OUTBOX_INTERVAL"])


def session_expiry(sid, prefetch=()):
    """The session's end as a UNIX time, or 0 when it is revoked or unknown (cached in Redis).

    ``prefetch``: more Redis keys the request will read, fetched in the same round trip.
    """
    key = SESSION_CACHE_PREFIX + sid
    client, cached = read_cached(key, prefetch)
    if cached is not None:
        expiry = float(cached)
        # A cached end that has come may have moved since: a refresh slides it in the database, not here.
        # Only a revocation is final; an end that has passed is confirmed by the database (no fill: the
        # entry may not be overwritten, and it goes with its TTL).
        if cached == REVOKED or expiry > utcnow().timestamp():
            return expiry
        client = None
    try:
        session_id = uuid.UUID(sid)
    except ValueError:
        return 0.0
    row = db.session.execute(
        sa.select(LoginSession.expires_at, LoginSession.revoked_at).where(LoginSession.id == session_id)
    ).first()
    expiry = row.expires_at.timestamp() if row is not None and row.revoked_at is None else 0.0
    fill_cached(client, key, repr(expiry) if expiry else REVOKED, current_app.config["SESSION_CACHE_TTL"])
    return expiry


def list_sessions(user_id, now=None):
    """The user's active sessions, newest first."""
    now = now or utcnow()
    return db.session.scalars(
        sa.select(LoginSession)
        .where(
            LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None), LoginSession.expires_at > now
        )
        .order_by(LoginSession.created_at.desc())
    ).all()


def end_session(user_id, session_id, client=None):
    """End one of the user's own sessions; 404 when it isn't theirs or is over already."""
    ended = revoke_sessions(user_id, "ended", only=session_id)
    if not ended:
        db.session.rollback()
        raise NotFound()
    audit.record(Event.LOGOUT, client, user_id=user_id, session_id=session_id, detail="session")
    commit_revocation()
    return len(ended)


def logout(user_id, current_sid, scope, client=None):
    """End the sessions ``scope`` names: ``global`` (all), ``local`` (this one), ``others``."""
    if scope == "local":
        ended = revoke_sessions(user_id, "logout", only=current_sid)
    elif scope == "others":
        ended = revoke_sessions(user_id, "logout", keep=current_sid)
    else:
        ended = revoke_sessions(user_id, "logout")
    audit.record(Event.LOGOUT, client, user_id=user_id, session_id=current_sid, detail=scope)
    commit_revocation()
    return len(ended)
