"""Live Activity rules on plain values: register (or update), list, delete, and their ends.

An activity belongs to the login session that registered it: ending the
session (any logout, a revoked session, an account's deletion) removes it, so
no push goes to a phone that logged out. ActivityKit ends an activity after
8 hours and the system removes it at most 4 hours later: nothing lives longer
than 12 hours here, and ``flask purge`` deletes what expired.
"""

import re
from datetime import timedelta

from allmine_auth.errors import NotFound, TokenRevoked, ValidationFailed
from allmine_auth.models import utcnow
from allmine_auth.store import live_activities as store
from allmine_auth.store.sessions import hold_active_session

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
    if not hold_active_session(session_id, user_id, now):
        raise TokenRevoked()
    # The record comes back from the write itself: read after the commit, a logout that ended the session
    # just then has deleted it already, and the answer would be an empty record.
    return store.upsert_live_activity(
        user_id,
        activity_id,
        session_id,
        fields["push_token"].lower(),
        fields["kind"],
        fields["reference_id"],
        expires_at,
        now,
    )


def live_activities(user_id, now=None):
    """The user's activities that have not expired, newest first."""
    return store.list_live_activities(user_id, now or utcnow())


def delete_activity(user_id, activity_id):
    """Delete the caller's activity; 404 when the user has none of that id."""
    check_activity_id(activity_id)
    if not store.delete_live_activity(user_id, activity_id):
        raise NotFound()


def purge_expired(now=None):
    """Delete expired activities (``flask purge``); return how many."""
    return store.delete_expired_activities(now or utcnow())
