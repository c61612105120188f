"""The SMS login's SQL: use the code, upsert the account, open the session and write its audit row.

One store function, ``phone_login_with_code``, hides the dialect. On
PostgreSQL it is one data-modifying statement sent outside any transaction
(one round trip, durable at once, as the refresh's rotation):

    WITH used AS (DELETE FROM one_time_codes WHERE <the live code, this HMAC, no lock> RETURNING id),
         account AS (INSERT INTO users ... SELECT ... FROM used ON CONFLICT (phone_e164) DO UPDATE
                     ... RETURNING *),
         opened AS (INSERT INTO sessions ... SELECT ... FROM account),
         recorded AS (INSERT INTO auth_events ... SELECT ... FROM account)
    SELECT <every users column> FROM account

Everything after ``used`` reads its row, so when no live code matches (a
wrong, used, expired or burnt code, a locked destination) nothing is written
and no row comes back: the caller's slow path then counts the attempt as
before. The ``DELETE``'s row lock lasts until the statement's transaction
ends, so of parallel checks with the right code one deletes it and the others,
waiting on the lock, find nothing (and write nothing). SQLite (one writer at a
time, no data-modifying CTE) runs the same steps as statements in the unit of
work.
"""

import json

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LoginSession, User, UtcDateTime
from allmine_auth.store import codes, sessions, users
from allmine_auth.store.dialects import on_postgresql

_USERS = User.__table__
_SESSIONS = LoginSession.__table__
_EVENTS = AuthEvent.__table__
# What a new account is given: the login's values, and every other column's own default, written into the
# statement as SQL (they are constants: ``false``, ``0``, ``'[]'``, ``'["user"]'``).
_GIVEN = {
    "id": ":b_user_id",
    "phone_e164": ":b_destination",
    "country_code": ":b_country_code",
    "phone_number": ":b_phone_number",
    "signup_source": ":b_signup_source",
    "signup_campaign": ":b_signup_campaign",
    "created_at": ":b_now",
    "updated_at": ":b_now",
    "last_login": ":b_now",
}


def sql_constant(value):
    """``value`` (a column default: a bool, an int, a JSON list) as an SQL literal; anything else refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "'" + json.dumps(value).replace("'", "''") + "'"
    raise TypeError(f"no SQL constant for the default {value!r}")


def _default_of(column):
    default = column.default
    return sql_constant(default.arg(None) if default.is_callable else default.arg)


_NEW_ACCOUNT = {
    **_GIVEN,
    **{
        column.name: _default_of(column)
        for column in _USERS.c
        if column.default is not None and column.name not in _GIVEN
    },
}
# Written as SQL text (typed parameters and result columns below): built from Core, the statement is
# over 4,096 characters (every column named three times, each parameter cast), and psycopg re-parses a
# statement that long on every execution instead of caching its conversion. The code's condition is
# ``store.codes.USE_CODE``'s (a live code with this HMAC, the destination not locked).
_PHONE_LOGIN_WITH_CODE_SQL = f"""WITH used AS (
    DELETE FROM one_time_codes
    WHERE channel = :b_channel AND destination = :b_destination AND expires_at > :b_now
        AND attempts < :b_max_attempts AND code_hash = :b_code_hash
        AND NOT EXISTS (SELECT 1 FROM destination_locks WHERE channel = :b_channel
            AND destination = :b_destination AND locked_until > :b_now)
    RETURNING id
), account AS (
    INSERT INTO users ({", ".join(_NEW_ACCOUNT)})
    SELECT {", ".join(_NEW_ACCOUNT.values())} FROM used
    ON CONFLICT (phone_e164) DO UPDATE SET last_login = EXCLUDED.last_login, updated_at = EXCLUDED.updated_at
    RETURNING *
), opened AS (
    INSERT INTO sessions (id, user_id, refresh_jti, device, ip, created_at, last_used_at, expires_at,
        max_expires_at)
    SELECT :s_id, id, :s_refresh_jti, :s_device, :s_ip, :b_now, :b_now, :s_expires_at, :s_max_expires_at
    FROM account
), recorded AS (
    INSERT INTO auth_events (kind, channel, destination, prefix, user_id, session_id, ip, user_agent,
        created_at)
    SELECT :e_kind, :e_channel, :e_destination, :e_prefix, id, :s_id, :e_ip, :e_user_agent, :b_now
    FROM account
)
SELECT {", ".join(column.name for column in _USERS.c)} FROM account
"""
_PARAMETER_TYPES = {
    "b_channel": _EVENTS.c.channel.type,
    "b_destination": _USERS.c.phone_e164.type,
    "b_now": UtcDateTime(),
    "b_max_attempts": sa.Integer(),
    "b_code_hash": sa.String(),
    "b_user_id": _USERS.c.id.type,
    "b_country_code": _USERS.c.country_code.type,
    "b_phone_number": _USERS.c.phone_number.type,
    "b_signup_source": _USERS.c.signup_source.type,
    "b_signup_campaign": _USERS.c.signup_campaign.type,
    **{f"s_{name}": _SESSIONS.c[name].type for name in ("id", "refresh_jti", "device", "ip")},
    **{f"s_{name}": _SESSIONS.c[name].type for name in ("expires_at", "max_expires_at")},
    **{f"e_{name}": _EVENTS.c[name].type for name in ("kind", "channel", "destination", "prefix")},
    **{f"e_{name}": _EVENTS.c[name].type for name in ("ip", "user_agent")},
}
# The module docstring's statement (PostgreSQL): the account's row, every ``users`` column by its type.
PHONE_LOGIN_WITH_CODE = (
    sa.text(_PHONE_LOGIN_WITH_CODE_SQL.strip())
    .bindparams(*(sa.bindparam(name, type_=kind) for name, kind in _PARAMETER_TYPES.items()))
    .columns(*_USERS.c)
)


def phone_login_with_code(code, account, session, event, now):
    """Log in to the account of a phone with a code; the account's row (every ``users`` column), or ``None``.

    ``code`` is ``(channel, phone_e164, code_hash, max_attempts)``: the
    destination's live code with that HMAC is used up unless the destination
    is locked. Only then is ``account`` upserted (a dict of ``user_id``,
    ``country_code``, ``phone_number``, ``signup_source``,
    ``signup_campaign``: a new account, or the existing one's ``last_login``
    and ``updated_at`` set to ``now``), a session opened (``session``: its
    ``id``, ``refresh_jti``, ``device``, ``ip``, ``expires_at``,
    ``max_expires_at``) and its audit row written (``event``: ``kind``,
    ``channel``, ``destination``, ``prefix``, ``ip``, ``user_agent``), all at
    ``now``. ``None``: no live code matched, and nothing was written.

    PostgreSQL: one statement on an autocommit connection of its own (durable
    when this returns). SQLite: ``use_code``, ``users.phone_login`` and
    ``sessions.insert_session`` in the unit of work.
    """
    channel, phone_e164, code_hash, max_attempts = code
    if not on_postgresql():
        if not codes.use_code(channel, phone_e164, code_hash, now, max_attempts):
            return None
        user = users.phone_login(
            account["user_id"],
            phone_e164,
            account["country_code"],
            account["phone_number"],
            account["signup_source"],
            account["signup_campaign"],
            now,
        )
        sessions.insert_session(
            session["id"],
            user.id,
            session["refresh_jti"],
            session["device"],
            session["ip"],
            now,
            session["expires_at"],
            session["max_expires_at"],
            {**event, "user_id": user.id},
        )
        return user
    params = {
        "b_channel": channel,
        "b_destination": phone_e164,
        "b_code_hash": code_hash,
        "b_max_attempts": max_attempts,
        "b_now": now,
        **{f"b_{name}": value for name, value in account.items()},
        **{f"s_{name}": value for name, value in session.items()},
        **{f"e_{name}": value for name, value in event.items()},
    }
    # On a connection of its own rather than the ORM session's: no transaction to begin and commit.
    with db.engine.connect() as connection:
        return (
            connection.execution_options(isolation_level="AUTOCOMMIT")
            .execute(PHONE_LOGIN_WITH_CODE, params)
            .first()
        )
