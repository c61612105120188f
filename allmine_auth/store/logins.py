"""The SMS login's SQL: use the code, upsert the account, open the session and write its audit row.

One store function, ``phone_login_with_code``, hides the dialect. On
PostgreSQL it is one data-modifying statement sent outside any transaction
(one round trip, durable at once, as the refresh's rotation):

    WITH used AS (DELETE FROM one_time_codes WHERE <the live code, this HMAC, no lock> RETURNING id),
         account AS (INSERT INTO users ... SELECT ... FROM used ON CONFLICT (phone_e164) DO UPDATE
                     ... RETURNING users.*),
         opened AS (INSERT INTO sessions ... SELECT ... FROM account),
         recorded AS (INSERT INTO auth_events ... SELECT ... FROM account)
    SELECT * FROM account

Everything after ``used`` reads its row, so when no live code matches (a
wrong, used, expired or burnt code, a locked destination) nothing is written
and no row comes back: the caller's slow path then counts the attempt as
before. The ``DELETE``'s row lock lasts until the statement's transaction
ends, so of parallel checks with the right code one deletes it and the others,
waiting on the lock, find nothing (and write nothing). SQLite (one writer at a
time, no data-modifying CTE) runs the same steps as statements in the unit of
work.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, LoginSession, User, UtcDateTime
from allmine_auth.store import codes, sessions, users
from allmine_auth.store.dialects import on_postgresql

_USERS = User.__table__
_SESSIONS = LoginSession.__table__
_EVENTS = AuthEvent.__table__
_NOW = sa.bindparam("b_now", type_=UtcDateTime)
# What a new account is given: the login's values, and every other column's own default (evaluated once
# here: they are constants, ``False``, ``0``, ``[]``, ``["user"]``).
_GIVEN = {
    "id": sa.bindparam("b_user_id", type_=_USERS.c.id.type),
    "phone_e164": sa.bindparam("b_destination", type_=_USERS.c.phone_e164.type),
    "country_code": sa.bindparam("b_country_code", type_=_USERS.c.country_code.type),
    "phone_number": sa.bindparam("b_phone_number", type_=_USERS.c.phone_number.type),
    "signup_source": sa.bindparam("b_signup_source", type_=_USERS.c.signup_source.type),
    "signup_campaign": sa.bindparam("b_signup_campaign", type_=_USERS.c.signup_campaign.type),
    "created_at": _NOW,
    "updated_at": _NOW,
    "last_login": _NOW,
}
_DEFAULTS = {
    column.name: sa.bindparam(
        f"d_{column.name}",
        column.default.arg(None) if column.default.is_callable else column.default.arg,
        type_=column.type,
    )
    for column in _USERS.c
    if column.default is not None and column.name not in _GIVEN
}
_SESSION_FIELDS = ("id", "refresh_jti", "device", "ip", "expires_at", "max_expires_at")
_EVENT_FIELDS = ("kind", "channel", "destination", "prefix", "ip", "user_agent")


def _phone_login_with_code_statement():
    """``PHONE_LOGIN_WITH_CODE`` (PostgreSQL): the module docstring's statement."""
    used = codes.USE_CODE.cte("used")
    new_account = {**_GIVEN, **_DEFAULTS}
    upsert = postgresql.insert(_USERS).from_select(
        list(new_account), sa.select(*new_account.values()).select_from(used), include_defaults=False
    )
    account = (
        upsert.on_conflict_do_update(
            index_elements=[_USERS.c.phone_e164],
            set_={"last_login": upsert.excluded.last_login, "updated_at": upsert.excluded.updated_at},
        )
        .returning(*_USERS.c)
        .cte("account")
    )
    session = {name: sa.bindparam(f"s_{name}", type_=_SESSIONS.c[name].type) for name in _SESSION_FIELDS}
    session.update(user_id=account.c.id, created_at=_NOW, last_used_at=_NOW)
    opened = sa.insert(_SESSIONS).from_select(
        list(session), sa.select(*session.values()), include_defaults=False
    )
    event = {name: sa.bindparam(f"e_{name}", type_=_EVENTS.c[name].type) for name in _EVENT_FIELDS}
    event.update(user_id=account.c.id, session_id=session["id"], created_at=_NOW)
    recorded = sa.insert(_EVENTS).from_select(list(event), sa.select(*event.values()), include_defaults=False)
    return sa.select(account).add_cte(opened.cte("opened"), recorded.cte("recorded"))


PHONE_LOGIN_WITH_CODE = _phone_login_with_code_statement()


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
