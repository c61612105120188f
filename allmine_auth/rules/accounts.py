"""Account deletion, as app stores require it in the app: requested, cancellable, then erased.

A request ends every other session and schedules the erasure
``ACCOUNT_DELETION_GRACE_DAYS`` ahead; the user may still log in meanwhile
(the user object shows ``accountDeletionStatus: pending``, so the app can
offer to cancel). ``flask purge`` erases what is due: the personal data, every
session and Live Activity at once, and every personal value in the audit trail;
the phone number and the email address are free for a new account.
"""

from datetime import timedelta

from flask import current_app

from allmine_auth.cache import set_after_commit
from allmine_auth.errors import Conflict, Unauthorized
from allmine_auth.models import utcnow
from allmine_auth.rules import audit
from allmine_auth.rules.audit import Event
from allmine_auth.rules.sessions import REVOKED, SESSION_CACHE_PREFIX, revoke_sessions
from allmine_auth.store import purge, users
from allmine_auth.store import sessions as store_sessions
from allmine_auth.store.live_activities import delete_user_activities

PENDING, CANCELLED, FINALIZED = "pending", "cancelled", "finalized"
# What an erasure empties (None) or resets; the account's row stays, without anything personal.
ERASED = {
    "phone_e164": None,
    "country_code": None,
    "phone_number": None,
    "email": None,
    "email_verified": False,
    "name": None,
    "surname": None,
    "username": None,
    "signup_source": None,
    "signup_campaign": None,
    "profile_photo": None,
    "availability_status": None,
    "birth_date": None,
    "gender": None,
    "interests": [],
    "expertise": None,
    "bio": None,
    "instagram": None,
    "x": None,
    "tiktok": None,
    "snapchat": None,
    "facebook": None,
    "timezone": None,
    "last_login": None,
    "last_username_change_date": None,
}


def locked_user(user_id):
    """The user's row, locked until the transaction ends (PostgreSQL), or a 401 when it is gone."""
    user = users.lock_user(user_id)
    if user is None:
        raise Unauthorized()
    return user


def request_deletion(user_id, current_sid, client=None, now=None):
    """Schedule the erasure and end every other session; 409 when one is pending already."""
    now = now or utcnow()
    user = locked_user(user_id)
    if user.account_deletion_status == PENDING:
        raise Conflict()
    grace = timedelta(days=current_app.config["ACCOUNT_DELETION_GRACE_DAYS"])
    user.account_deletion_status = PENDING
    user.account_deletion_requested_at = now
    user.account_deletion_scheduled_for = now + grace
    user.account_deletion_cancelled_at = None
    revoke_sessions(user_id, "deletion", keep=current_sid, now=now)
    audit.record(Event.DELETION_REQUESTED, client, user_id=user_id, session_id=current_sid, now=now)
    return user


def cancel_deletion(user_id, client=None, now=None):
    """Cancel a pending deletion; 409 when none is pending."""
    now = now or utcnow()
    user = locked_user(user_id)
    if user.account_deletion_status != PENDING:
        raise Conflict()
    user.account_deletion_status = CANCELLED
    user.account_deletion_cancelled_at = now
    audit.record(Event.DELETION_CANCELLED, client, user_id=user_id, now=now)
    return user


def finalize_due_deletions(now=None):
    """Erase every account whose grace period is over (``flask purge``); return how many."""
    now = now or utcnow()
    due = users.users_due_for_erasure(PENDING, now)
    for user in due:
        erase(user, now)
    return len(due)


def erase(user, now):
    """Erase ``user``'s personal data, sessions, Live Activities, codes and audit values."""
    addresses = [address for address in (user.phone_e164, user.email) if address]
    ttl = current_app.config["SESSION_CACHE_TTL"]
    for sid in store_sessions.user_session_ids(user.id):
        set_after_commit(SESSION_CACHE_PREFIX + str(sid), REVOKED, ttl)
    delete_user_activities(user.id)
    store_sessions.delete_user_sessions(user.id)
    purge.erase_destination_records(addresses)
    # The trail keeps what happened and when, never to whom: no destination, address or agent.
    purge.anonymize_events(user.id, addresses)
    for name, value in ERASED.items():
        setattr(user, name, value)
    user.account_deletion_status = FINALIZED
    user.account_deletion_finalized_at = now
    audit.record(Event.ACCOUNT_ERASED, user_id=user.id, now=now)
