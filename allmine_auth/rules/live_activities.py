"""Live Activity rules on plain values: register (or update), list, delete, and their ends.

An activity belongs to the login session that registered it: ending the
session (any logout, a revoked session, an account's deletion) removes it, so
no push goes to a phone that logged out. ActivityKit ends an activity after
8 hours and the system removes it at most 4 hours later: nothing lives longer
than 12 hours here, and ``flask purge`` deletes what expired.
"""

import re
from datetime import timedelta

import sqlalchemy as sa

from allmine_auth.errors import NotFound, TokenRevoked, ValidationFailed
from allmine_auth.extensions import db
from allmine_auth.models import LiveActivity, LoginSession, upsert, utcnow

MAX_LIFE = timedelta(hours=12)
ACTIVITY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def check_activity_id(activity_id):
    """Refuse an activity id that is not 1 to 64 letters, digits, '.', '_', ':' or '-' (a 400)."""
    if not ACTIVITY_ID.fullmatch(activity_id):
        raise ValidationFailed("activityId: 1 to 64 letters, digits, '.', '_', ':' or '-'.")


def register_activity(user_id, session_id, activity_id, fields, now=None):
    """Register or update the caller's activity ``activity_id`` for its session; return the row.

    ``fields``: ``push_token``, ``kind``, ``reference_id`` (or None) and
    ``expires_at`` (None: 12 hours from now). An update moves the activity to
    the session that sent it (the app may have logged in again meanwhile).
    """
    now = now or utcnow()
    check_activity_id(activity_id)
    expires_at = fields["expires_at"] or now + MAX_LIFE
    if expires_at <= now:
        raise ValidationFailed("expiresAt: Must be in the future.")
    if expires_at > now + MAX_LIFE:
        raise ValidationFailed("expiresAt: At most 12 hours from now.")
    # The token check may have read a cached state, and a logout may commit between it and this write: the
    # session must be active in the database, and stay so until this commits (FOR SHARE: a revocation's
    # UPDATE waits, then deletes this row with the others). Else no push target outlives its session, and
    # a session's row purged meanwhile is a 401, not a foreign-key 500.
    active = db.session.scalar(
        sa.select(LoginSession.id)
        .where(
            LoginSession.id == session_id,
            LoginSession.user_id == user_id,
            LoginSession.revoked_at.is_(None),
            LoginSession.expires_at > now,
        )
        .with_for_update(read=True)
    )
    if active is None:
        db.session.rollback()
        raise TokenRevoked()
    changes = {
        "session_id": session_id,
        "push_token": fields["push_token"].lower(),
        "kind": fields["kind"],
        "reference_id": fields["reference_id"],
        "expires_at": expires_at,
        "updated_at": now,
    }
    # One statement: two parallel registrations of one id end as one row, never a 500. The record comes
    # back from the write itself: read after the commit, a logout that ended the session just then has
    # deleted it already, and the answer would be an empty record.
    table = LiveActivity.__table__
    record = db.session.execute(
        upsert(table, ["user_id", "activity_id"], changes).returning(*table.c),
        {"user_id": user_id, "activity_id": activity_id, "created_at": now, **changes},
    ).one()
    db.session.commit()
    return record


def live_activities(user_id, now=None):
    """The user's activities that have not expired, newest first."""
    now = now or utcnow()
    return db.session.scalars(
        sa.select(LiveActivity)
        .where(LiveActivity.user_id == user_id, LiveActivity.expires_at > now)
        .order_by(LiveActivity.created_at.desc(), LiveActivity.activity_id)
    ).all()


def delete_activity(user_id, activity_id):
    """Delete the caller's activity; 404 when the user has none of that id."""
    check_activity_id(activity_id)
    deleted = db.session.execute(
        sa.delete(LiveActivity).where(
            LiveActivity.user_id == user_id, LiveActivity.activity_id == activity_id
        )
    ).rowcount
    if not deleted:
        db.session.rollback()
        raise NotFound()
    db.session.commit()


def purge_expired(now=None):
    """Delete expired activities (``flask purge``); return how many."""
    now = now or utcnow()
    return db.session.execute(sa.delete(LiveActivity).where(LiveActivity.expires_at <= now)).rowcount
