"""Sessions and their tokens: issue, rotate with reuse detection, revoke, and check on every request.

Every token carries ``sid``, its session. A session is the unit of
revocation: ending it kills its access and refresh tokens on every worker,
because ``token_in_blocklist_loader`` reads the session's state (from Redis
when configured, else one primary-key read) on each request.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from allmine_auth.cache import fill_cached, read_cached, set_after_commit, undelivered
from allmine_auth.errors import NotFound, ServiceUnavailable, TokenRevoked, Unauthorized
from allmine_auth.models import utcnow
from allmine_auth.rules import audit
from allmine_auth.rules.audit import Event
from allmine_auth.store import sessions as store
from allmine_auth.store.live_activities import delete_session_activities
from allmine_auth.store.unit_of_work import after_commit

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
    """What a login needs of the session it opens: its row's values, and its first refresh token's id."""

    id: uuid.UUID
    expires_at: datetime
    max_expires_at: datetime | None = None
    refresh_jti: str = ""


def refreshed_end(now):
    """When a session refreshed (or opened) at ``now`` ends without another refresh."""
    return now + timedelta(seconds=current_app.config["JWT_REFRESH_TOKEN_EXPIRES"])


def new_session(now):
    """The session a login at ``now`` opens: a new id and refresh token id, its end and absolute end.

    Not written yet: ``open_session`` writes it, or the SMS login's one statement (``rules.logins``).
    """
    max_age = current_app.config["SESSION_MAX_AGE"]
    max_expires_at = now + timedelta(seconds=max_age) if max_age else None
    expires_at = refreshed_end(now)
    if max_expires_at is not None:
        expires_at = min(expires_at, max_expires_at)
    return OpenedSession(uuid.uuid4(), expires_at, max_expires_at, str(uuid.uuid4()))


def open_session(user, client, now, event=None):
    """Start a session for ``user`` (in the unit of work) and return ``(session, tokens)``.

    ``event``: an audit row written with the session's (``store.insert_session``), naming it.
    """
    session = new_session(now)
    store.insert_session(
        session.id,
        user.id,
        session.refresh_jti,
        client.device if client else None,
        client.ip if client else None,
        now,
        session.expires_at,
        session.max_expires_at,
        event,
    )
    return session, mint_tokens(user.id, user.is_registration_complete, session, session.refresh_jti, now)


def rotate_refresh_token(token, client=None, *, now=None):
    """Exchange a refresh token for a new pair; the presented one dies.

    The rotation is one conditional ``UPDATE`` (``store.rotate_session``), so
    of two parallel refreshes only one rotates. The loser, if it presents the
    token just rotated within ``REFRESH_TOKEN_REUSE_INTERVAL``, is a retry and
    gets the session's current pair; any other use of a rotated token is
    theft, and the whole session is revoked (the revocation and its audit row
    are kept: the ``TokenRevoked`` keeps its records).
    """
    now = now or utcnow()
    claims = decode_token(token)
    if claims.get("type") != "refresh" or "sid" not in claims:
        raise Unauthorized()
    sid, jti = uuid.UUID(claims["sid"]), claims["jti"]
    new_jti = str(uuid.uuid4())
    rotated = store.rotate_session(
        sid,
        jti,
        new_jti,
        now,
        refreshed_end(now),
        kind=str(Event.REFRESH),
        ip=client.ip if client else None,
        user_agent=client.user_agent if client else None,
    )
    if rotated:
        audit.announce(Event.REFRESH, user_id=rotated.user_id)
        return mint_tokens(rotated.user_id, rotated.complete, rotated, new_jti, now)
    session = store.session_tokens(sid)
    if session is None or session.revoked_at is not None or session.expires_at <= now:
        raise TokenRevoked()
    complete = store.registration_complete(session.user_id)
    interval = timedelta(seconds=current_app.config["REFRESH_TOKEN_REUSE_INTERVAL"])
    if session.previous_refresh_jti == jti and session.rotated_at + interval > now:
        return mint_tokens(session.user_id, complete, session, session.refresh_jti, now)
    revoke_sessions(session.user_id, "reuse", only=sid, now=now)
    audit.record(Event.REUSE_DETECTED, client, user_id=session.user_id, session_id=sid, now=now)
    raise TokenRevoked(keep_records=True)


def registration_complete(user_id):
    """Whether the user has completed registration (the access token's ``reg`` claim)."""
    return store.registration_complete(user_id)


def revoke_sessions(user_id, reason, *, only=None, keep=None, now=None):
    """End the user's active sessions (all, ``only`` one, or all but ``keep``); return their ids.

    Runs in the caller's unit of work; the Redis cache is told once it commits.
    With the sessions it ends, it announces again those of the same scope
    revoked within the cache's TTL: an earlier announcement may not have
    reached Redis, and a later logout repairs it.
    """
    now = now or utcnow()
    ended = store.end_sessions(user_id, reason, now, only=only, keep=keep)
    if ended:
        # No push goes to a phone whose session is over.
        delete_session_activities(ended)
    ttl = current_app.config["SESSION_CACHE_TTL"]
    # The sessions just ended are among these: their revoked_at is now.
    for sid in store.revoked_sessions_since(user_id, now - timedelta(seconds=ttl), only=only, keep=keep):
        set_after_commit(SESSION_CACHE_PREFIX + str(sid), REVOKED, ttl)
    return ended


def promise_revocation():
    """Make the unit of work answer 503 after its commit unless the cache has the revocation too.

    For a revocation the caller will answer 200 for. The database has it
    either way, and a refused cache write waits in the outbox
    (``allmine_auth/cache.py``); but a worker that still reaches a Redis
    this one couldn't write to would accept the session's tokens until the
    outbox is delivered, so no 200 promises the revocation before then.
    Retrying the request finishes the job (``revoke_sessions`` announces again).
    """
    after_commit(revocation_reached_cache)


def revocation_reached_cache():
    """The after-commit check of ``promise_revocation``: 503 when Redis refused the commit's writes."""
    if undelivered():
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
    row = store.session_state(session_id)
    expiry = row.expires_at.timestamp() if row is not None and row.revoked_at is None else 0.0
    fill_cached(client, key, repr(expiry) if expiry else REVOKED, current_app.config["SESSION_CACHE_TTL"])
    return expiry


def list_sessions(user_id, now=None):
    """The user's active sessions, newest first."""
    return store.list_active_sessions(user_id, now or utcnow())


def end_session(user_id, session_id, client=None):
    """End one of the user's own sessions; 404 when it isn't theirs or is over already."""
    ended = revoke_sessions(user_id, "ended", only=session_id)
    if not ended:
        raise NotFound()
    audit.record(Event.LOGOUT, client, user_id=user_id, session_id=session_id, detail="session")
    promise_revocation()
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
    promise_revocation()
    return len(ended)
