"""The tables: users, their sessions, one-time codes, destination lock-outs and the audit trail."""

import enum
import sqlite3
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from allmine_auth.extensions import db


def utcnow():
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator):
    """A column type: a timestamp always stored and returned as aware UTC (SQLite forgets the zone).

    The JSON field that writes one in an answer is ``web.schemas.auth.UtcTimestamp``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


AutoIncrement = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class User(db.Model):
    """A person who has logged in at least once, by phone or email."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    phone_e164: Mapped[str | None] = mapped_column(sa.String(16), unique=True)
    country_code: Mapped[str | None] = mapped_column(sa.String(4))
    phone_number: Mapped[str | None] = mapped_column(sa.String(15))
    email: Mapped[str | None] = mapped_column(sa.String(254), unique=True)
    email_verified: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str | None] = mapped_column(sa.String(100))
    surname: Mapped[str | None] = mapped_column(sa.String(100))
    username: Mapped[str | None] = mapped_column(sa.String(30))
    signup_source: Mapped[str | None] = mapped_column(sa.String(100))
    signup_campaign: Mapped[str | None] = mapped_column(sa.String(100))
    profile_photo: Mapped[str | None] = mapped_column(sa.String(500))
    availability_status: Mapped[str | None] = mapped_column(sa.String(20))
    birth_date: Mapped[datetime | None] = mapped_column(sa.Date)
    gender: Mapped[str | None] = mapped_column(sa.String(20))
    interests: Mapped[list] = mapped_column(sa.JSON, default=list)
    expertise: Mapped[str | None] = mapped_column(sa.String(100))
    bio: Mapped[str | None] = mapped_column(sa.String(500))
    instagram: Mapped[str | None] = mapped_column(sa.String(100))
    x: Mapped[str | None] = mapped_column(sa.String(100))
    tiktok: Mapped[str | None] = mapped_column(sa.String(100))
    snapchat: Mapped[str | None] = mapped_column(sa.String(100))
    facebook: Mapped[str | None] = mapped_column(sa.String(100))
    privacy_policy_accepted: Mapped[bool] = mapped_column(default=False)
    privacy_policy_version: Mapped[str | None] = mapped_column(sa.String(20))
    terms_of_use_accepted: Mapped[bool] = mapped_column(default=False)
    terms_of_use_version: Mapped[str | None] = mapped_column(sa.String(20))
    consent_form_accepted: Mapped[bool] = mapped_column(default=False)
    consent_form_version: Mapped[str | None] = mapped_column(sa.String(20))
    is_registration_complete: Mapped[bool] = mapped_column(default=False)
    roles: Mapped[list] = mapped_column(sa.JSON, default=lambda: ["user"])
    followers_count: Mapped[int] = mapped_column(default=0)
    following_count: Mapped[int] = mapped_column(default=0)
    minute_price_in_live_stream: Mapped[int] = mapped_column(default=0)
    credit_balance: Mapped[int] = mapped_column(default=0)
    last_login: Mapped[datetime | None] = mapped_column(UtcDateTime)
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    last_username_change_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    account_deletion_status: Mapped[str | None] = mapped_column(sa.String(20))
    account_deletion_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    account_deletion_scheduled_for: Mapped[datetime | None] = mapped_column(UtcDateTime)
    account_deletion_cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    account_deletion_finalized_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


sa.Index("uq_users_username_lower", sa.func.lower(User.username), unique=True)


class LoginSession(db.Model):
    """One login on one device; its refresh token rotates, its end revokes every token it issued."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    refresh_jti: Mapped[str] = mapped_column(sa.String(36))
    previous_refresh_jti: Mapped[str | None] = mapped_column(sa.String(36))
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    device: Mapped[str | None] = mapped_column(sa.String(255))
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Moves with every refresh (30 days without one end the session), up to ``max_expires_at``.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # The absolute end (login + ``SESSION_MAX_AGE``) where one is set; ``None``: no absolute end.
    max_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(20))

    def is_active(self, now):
        """True while the session is neither revoked nor past its end."""
        return self.revoked_at is None and self.expires_at > now


class LiveActivity(db.Model):
    """An iOS Live Activity (a live stream's or call's lock-screen card) registered by a login session.

    The service that sends its APNs pushes reads this table; the row goes when
    the app dismisses the activity, when its session ends, or when it expires.
    """

    __tablename__ = "live_activities"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    activity_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    push_token: Mapped[str] = mapped_column(sa.String(512))
    kind: Mapped[str] = mapped_column(sa.String(32))
    reference_id: Mapped[str | None] = mapped_column(sa.String(128))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class OneTimeCode(db.Model):
    """The one live code of a destination (a resend replaces it); only its HMAC is kept."""

    __tablename__ = "one_time_codes"
    __table_args__ = (sa.UniqueConstraint("channel", "destination", name="uq_one_time_codes_destination"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    channel: Mapped[str] = mapped_column(sa.String(10))
    destination: Mapped[str] = mapped_column(sa.String(254))
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class DestinationLock(db.Model):
    """A destination's failed checks in its current 24 h window, and its lock; each repeat doubles the lock.

    One row per destination, written by one atomic upsert per failure, so
    parallel failures count exactly (rows of the audit trail that parallel
    transactions have not committed yet would not be seen). The SMS prefix
    breaker keeps its rows here too (channel ``sms-prefix``), without failures.
    """

    __tablename__ = "destination_locks"

    channel: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    destination: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    window_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lock_count: Mapped[int] = mapped_column(default=1)


class Event(enum.StrEnum):
    """The kinds of event the audit trail records (``AuthEvent.kind``)."""

    CODE_SENT = "code_sent"
    DELIVERY_FAILED = "delivery_failed"
    CODE_FAILED = "code_failed"
    DESTINATION_LOCKED = "destination_locked"
    LOGIN = "login"
    REFRESH = "refresh"
    REUSE_DETECTED = "reuse_detected"
    LOGOUT = "logout"
    SEND_REFUSED = "send_refused"
    DELETION_REQUESTED = "deletion_requested"
    DELETION_CANCELLED = "deletion_cancelled"
    ACCOUNT_ERASED = "account_erased"


class AuthEvent(db.Model):
    """Append-only audit trail; also what the per-destination send counts read."""

    __tablename__ = "auth_events"
    __table_args__ = (
        sa.Index("ix_auth_events_destination", "destination", "kind", "created_at"),
        sa.Index("ix_auth_events_kind_created", "kind", "created_at"),
        sa.Index("ix_auth_events_prefix", "prefix", "kind", "created_at"),
        # What the per-destination send caps count (``store.codes.SEND_CHECKS``): sends only, so a
        # destination's count reads its own sends however large the audit trail grows.
        sa.Index(
            "ix_auth_events_sends",
            "destination",
            "created_at",
            postgresql_where=sa.text("kind IN ('code_sent', 'delivery_failed')"),
            sqlite_where=sa.text("kind IN ('code_sent', 'delivery_failed')"),
        ),
    )

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(sa.String(30))
    channel: Mapped[str | None] = mapped_column(sa.String(10))
    destination: Mapped[str | None] = mapped_column(sa.String(254))
    prefix: Mapped[str | None] = mapped_column(sa.String(8))
    user_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, index=True)
    session_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    detail: Mapped[str | None] = mapped_column(sa.String(255))


class CacheOutbox(db.Model):
    """Cache writes Redis refused after their commit (a revocation, a stale profile), until delivered.

    A revocation that can't reach Redis must not leave an "active" entry there
    for the rest of its TTL: every worker delivers these rows once Redis
    answers (``allmine_auth/cache.py``).
    """

    __tablename__ = "cache_outbox"

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(sa.String(200))
    value: Mapped[str] = mapped_column(sa.String(64))
    ttl: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@sa.event.listens_for(sa.engine.Engine, "connect")
def tune_sqlite(dbapi_connection, connection_record):
    """SQLite: enforce foreign keys, let writers wait instead of failing, and let readers not block them."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
