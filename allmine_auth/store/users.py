"""The queries that find accounts: by id, phone, email, username; the email lock; accounts due for erasure.

They return ``User`` objects where the rules go on to change the account
(the mapper writes the changes at the unit of work's commit), plain values
elsewhere. Statements are built once at import.
"""

import hashlib

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User, UtcDateTime
from allmine_auth.store.dialects import for_each_dialect, of_engine, on_postgresql


def user_by_id(user_id):
    """The user ``user_id``, or ``None`` (from the session's identity map when loaded already)."""
    return db.session.get(User, user_id)


def lock_user(user_id):
    """The user's row read again and locked until the unit of work ends (PostgreSQL), or ``None``."""
    return db.session.get(User, user_id, with_for_update=True, populate_existing=True)


USER_BY_PHONE = sa.select(User).where(User.phone_e164 == sa.bindparam("address"))
USER_BY_EMAIL = sa.select(User).where(User.email == sa.bindparam("address"))
_USERS = User.__table__


def _phone_login_statement(insert):
    """``PHONE_LOGIN`` built with a dialect's ``insert``: a new account, or the login of the existing one.

    ``signup_source``/``signup_campaign`` are written on creation only: the
    update sets ``last_login`` (and ``updated_at``, which the mapper's
    ``onupdate`` would have set) and nothing else.
    """
    now = sa.bindparam("b_now", type_=UtcDateTime)
    statement = insert(_USERS).values(
        id=sa.bindparam("b_id", type_=sa.Uuid),
        phone_e164=sa.bindparam("b_phone"),
        country_code=sa.bindparam("b_country_code"),
        phone_number=sa.bindparam("b_phone_number"),
        signup_source=sa.bindparam("b_signup_source"),
        signup_campaign=sa.bindparam("b_signup_campaign"),
        created_at=now,
        updated_at=now,
        last_login=now,
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[_USERS.c.phone_e164],
        set_={"last_login": statement.excluded.last_login, "updated_at": statement.excluded.updated_at},
    )
    # The row as it is, not loaded into a ``User``: the login reads it, and nothing changes it afterwards.
    return upsert.returning(*_USERS.c)


PHONE_LOGIN = for_each_dialect(_phone_login_statement)


def phone_login(user_id, phone_e164, country_code, phone_number, signup_source, signup_campaign, now):
    """The row of ``phone_e164``'s account, its ``last_login`` set to ``now``; made (as ``user_id``) if new.

    One upsert returning the whole row (every ``users`` column, not a
    ``User``): of two parallel first logins to one number, one inserts and the
    other waits on its row and then updates it (no unique violation).
    """
    params = {
        "b_id": user_id,
        "b_phone": phone_e164,
        "b_country_code": country_code,
        "b_phone_number": phone_number,
        "b_signup_source": signup_source,
        "b_signup_campaign": signup_campaign,
        "b_now": now,
    }
    return db.session.execute(of_engine(PHONE_LOGIN), params).one()


def user_by_phone(phone_e164):
    """The account of the phone number (E.164), or ``None``."""
    return db.session.scalar(USER_BY_PHONE, {"address": phone_e164})


def user_by_email(address):
    """The account holding the email ``address`` (proven or not), or ``None``."""
    return db.session.scalar(USER_BY_EMAIL, {"address": address})


PROVEN_EMAIL_OWNER = sa.select(User).where(User.email == sa.bindparam("address"), User.email_verified)


def proven_email_owner(address):
    """The account that proved ``address``, or ``None`` (an unproven holder is no owner)."""
    return db.session.scalar(PROVEN_EMAIL_OWNER, {"address": address})


OTHER_EMAIL_HOLDER = (
    sa.select(User)
    .where(User.email == sa.bindparam("address"), User.id != sa.bindparam("user_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


def other_email_holder(address, user_id):
    """The account other than ``user_id`` holding ``address``, read again and locked; or ``None``."""
    return db.session.scalar(OTHER_EMAIL_HOLDER, {"address": address, "user_id": user_id})


def reread_email(user):
    """Read ``user``'s email and its proof again from the database (after a lock was taken)."""
    db.session.refresh(user, ["email", "email_verified"])


def email_lock_key(address):
    """The PostgreSQL advisory lock key of ``address``: 64 bits of a SHA-256, the same in every process."""
    digest = hashlib.sha256(f"allmine-auth:email:{address}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


LOCK_EMAIL = sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("key", type_=sa.BigInteger)))


def lock_email(address):
    """Take the advisory lock of ``address`` until the unit of work ends (PostgreSQL; nothing on SQLite).

    SQLite runs one writer at a time; a collision left there is a unique
    violation, answered 409.
    """
    if on_postgresql():
        db.session.execute(LOCK_EMAIL, {"key": email_lock_key(address)})


USERNAME_OWNER = sa.select(User.id).where(sa.func.lower(User.username) == sa.bindparam("username"))


def username_owner(username):
    """The id of the account holding ``username`` (case-insensitive), or ``None``."""
    return db.session.scalar(USERNAME_OWNER, {"username": username.lower()})


DUE_FOR_ERASURE = (
    sa.select(User)
    .where(
        User.account_deletion_status == sa.bindparam("status"),
        User.account_deletion_scheduled_for <= sa.bindparam("now"),
    )
    .with_for_update(skip_locked=True)
)


def users_due_for_erasure(status, now):
    """The accounts whose deletion (``status``) is due at ``now``, locked (skipping locked ones)."""
    return db.session.scalars(DUE_FOR_ERASURE, {"status": status, "now": now}).all()


def is_stored(user):
    """Whether ``user`` is an account loaded from the database (not one this unit of work adds)."""
    return sa.inspect(user).persistent


def add_user(user):
    """Add a new ``User`` to the unit of work (written at its next flush)."""
    db.session.add(user)


def write_now():
    """Flush the unit of work's pending changes now (before a write that depends on them)."""
    db.session.flush()
