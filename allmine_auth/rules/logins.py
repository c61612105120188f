"""Login and profile rules, on plain values: no request object reaches this module."""

import uuid
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from sqlalchemy.exc import IntegrityError

from allmine_auth.cache import set_after_commit
from allmine_auth.errors import Conflict
from allmine_auth.models import User, utcnow
from allmine_auth.notify import email_sender, messages, sms_sender
from allmine_auth.rules import audit
from allmine_auth.rules.abuse import count_sms_verified, guard_sms_send
from allmine_auth.rules.audit import Event
from allmine_auth.rules.codes import (
    code_hmac,
    code_ttl,
    consume_code,
    issue_code,
    refuse_code,
    test_code_for,
)
from allmine_auth.rules.destinations import SMS
from allmine_auth.rules.profiles import PROFILE_CACHE_PREFIX, STALE, STALE_SECONDS
from allmine_auth.rules.sessions import mint_tokens, new_session, open_session
from allmine_auth.store import logins as stored_logins
from allmine_auth.store import users
from allmine_auth.store.unit_of_work import after_commit


def send_code(destination, client=None):
    """Issue a code for ``destination`` and deliver it by SMS or email; return the code."""
    ttl = code_ttl(destination.channel)
    if destination.channel == SMS:
        return issue_code(
            destination,
            lambda code: sms_sender().send_sms(destination.address, messages.sms_text(code, ttl)),
            client,
            guard=guard_sms_send,
        )
    return issue_code(
        destination,
        lambda code: email_sender().send_email(destination.address, *messages.email_parts(code, ttl)),
        client,
    )


def login_with_code(destination, code, client=None, *, signup_source=None, signup_campaign=None):
    """Check the code, find or create the account, open a session; return ``(user, tokens)``.

    A new account keeps the ``signupSource``/``signupCampaign`` of its first
    login only. The code's use, the account and the session commit together
    (the unit of work's commit; a phone's, on PostgreSQL, as one statement:
    ``phone_login_with_code``). ``user`` is a ``User``, or a phone login's row.
    An email login is a proof of the address: it finds the account that
    proved it before, else makes a new one that takes the address
    (``claim_email``, which removes an unproven copy from another account).
    """
    now = utcnow()
    if destination.channel == SMS and test_code_for(destination, now) is None:
        return phone_login_with_code(destination, code, client, now, signup_source, signup_campaign)
    consume_code(destination, code, client, now=now)
    with duplicate_is_conflict():
        user = find_or_create_account(destination, now, signup_source, signup_campaign)
        # The session INSERT flushes the new or changed user first (autoflush); the login's audit row is
        # written with it (one statement on PostgreSQL).
        session, tokens = open_session(
            user, client, now, {**login_event(destination, client), "user_id": user.id}
        )
        audit.announce(Event.LOGIN, destination, user.id)
    # Counted once the login is durable: a login that answered 409 or 503 verified nothing, and its retry
    # would count the same code twice.
    after_commit(lambda: count_sms_verified(destination, client, now))
    return user, tokens


def phone_login_with_code(destination, code, client, now, signup_source, signup_campaign):
    """``login_with_code`` for a phone (not a test destination's fixed code); the account is its row.

    The right code, the account, the session and its audit row are one store
    call (``store.logins.phone_login_with_code``: one statement on
    PostgreSQL, durable when it returns). When it finds no live code with
    this HMAC it wrote nothing, and ``refuse_code`` answers as for any code
    check (the attempt counted, the failure recorded, the lock). Returns
    ``(row, tokens)``: the row has every ``users`` column, as a ``User`` has.

    Durable when the statement returns, as the refresh's rotation: what
    follows (two tokens signed, the answer) has no failure but a bug's, and
    one there would leave the code used and a session nobody got tokens for,
    which ends with its refresh life.
    """
    session = new_session(now)
    max_attempts = current_app.config["OTP_MAX_ATTEMPTS"]
    with duplicate_is_conflict():
        user = stored_logins.phone_login_with_code(
            (destination.channel, destination.address, code_hmac(destination, code), max_attempts),
            {
                "user_id": uuid.uuid4(),
                "country_code": destination.country_code,
                "phone_number": destination.national_number,
                "signup_source": signup_source,
                "signup_campaign": signup_campaign,
            },
            {
                "id": session.id,
                "refresh_jti": session.refresh_jti,
                "device": client.device if client else None,
                "ip": client.ip if client else None,
                "expires_at": session.expires_at,
                "max_expires_at": session.max_expires_at,
            },
            login_event(destination, client),
            now,
        )
    if user is None:
        refuse_code(destination, client, now)
    mark_profile_stale_if_returning(user, now)
    audit.announce(Event.LOGIN, destination, user.id)
    after_commit(lambda: count_sms_verified(destination, client, now))
    return user, mint_tokens(user.id, user.is_registration_complete, session, session.refresh_jti, now)


def login_event(destination, client):
    """The login's audit row (but its ``user_id``), written with the session's."""
    return {
        "kind": str(Event.LOGIN),
        "channel": destination.channel,
        "destination": destination.address,
        "prefix": destination.prefix,
        "ip": client.ip if client else None,
        "user_agent": client.user_agent if client else None,
    }


def mark_profile_stale_if_returning(user, now):
    """A phone login's upsert changed an existing account's row (``last_login``) outside the ORM's flush.

    Its hook (``profiles.note_changed_users``) would have marked the cached profile stale; a new
    account (made at ``now``) has none cached.
    """
    if user.created_at != now:
        set_after_commit(PROFILE_CACHE_PREFIX + str(user.id), STALE, STALE_SECONDS)


def find_or_create_account(destination, now, signup_source, signup_campaign):
    """The account ``destination`` logs in to, made (and added to the session) on a first login.

    A phone's is one upsert (``store.users.phone_login``); an email's follows the ownership rule
    (``claim_email``) under the address's lock.
    """
    if destination.channel == SMS:
        user = users.phone_login(
            uuid.uuid4(),
            destination.address,
            destination.country_code,
            destination.national_number,
            signup_source,
            signup_campaign,
            now,
        )
        mark_profile_stale_if_returning(user, now)
        return user
    lock_email(destination.address)
    user = users.proven_email_owner(destination.address)
    if user is None:
        # The id is drawn here, so nothing needs flushing before the session row names it.
        user = User(
            id=uuid.uuid4(),
            signup_source=signup_source,
            signup_campaign=signup_campaign,
            created_at=now,
            last_login=now,
        )
        claim_email(user, destination.address, proven=True)
        users.add_user(user)
    else:
        user.last_login = now
    return user


@contextmanager
def duplicate_is_conflict():
    """A unique constraint another transaction won (an address, a phone, a username) is a 409, not a 500.

    It may fire at any flush inside; one found at the commit is the unit of
    work's to map. The ``Conflict`` keeps no records: the unit of work's
    rollback undoes everything of this request, the use of its code too, and
    the code still works for a retry.
    """
    try:
        yield
    except IntegrityError:
        raise Conflict() from None


def lock_email(address):
    """Make every claim on ``address`` wait for the others until their transactions end (PostgreSQL).

    A claim reads who holds the address and then writes; two claims reading
    at once would both act on what they saw and race to the unique
    constraint. Nobody may hold the address yet, so there is no row to lock:
    an advisory lock on the address, held to commit or rollback, orders
    them. Taken before the claim writes any ``users`` row, so two claims
    can't wait on each other's rows. SQLite runs one writer at a time; a
    collision left there is a unique violation, answered 409.
    """
    users.lock_email(address)


def claim_email(user, address, proven):
    """Give the email ``address`` to ``user`` by the one rule of ownership, or raise ``Conflict``.

    A proof (a code sent to the address and used by this request) wins over
    an unproven claim: an account holding the address unverified loses it
    (its ``email`` becomes null; the ORM change marks its cached profile
    stale), and ``user`` gets it verified. A proof against an account that
    proved the address before, and a claim without proof against any other
    holder, are 409. Claiming an address ``user`` already holds only adds
    the proof. Both routes call this: an email login (for a new account) and
    ``complete-registration`` with ``email`` (and ``emailCode``).
    """
    lock_email(address)
    if users.is_stored(user):
        # Read again under the lock: a proof may have taken the address from ``user`` since it was loaded.
        users.reread_email(user)
    if user.email == address:
        user.email_verified = user.email_verified or proven
        return
    holder = users.other_email_holder(address, user.id)
    if holder is not None:
        if holder.email_verified or not proven:
            raise Conflict()
        holder.email, holder.email_verified = None, False
        # Written now: the address must be free before ``user``'s row takes it (the unique constraint).
        users.write_now()
    user.email, user.email_verified = address, proven


USERNAME_CHANGE_INTERVAL = timedelta(days=30)


def complete_registration(user, profile, client=None):
    """Fill in the profile and the acceptances, and mark the registration complete.

    Called again on a complete account it updates the profile. A username
    taken by another account (case-insensitive), and a second username
    change within 30 days are each a 409. An email comes with ``emailCode``
    (a code sent by send-otp-email) to be verified, and a verified email
    logs in to this same account; who may have an address is ``claim_email``'s rule.
    """
    now = utcnow()
    username = profile["username"]
    renaming = username != user.username
    if renaming and users.username_owner(username) not in (None, user.id):
        raise Conflict()
    changing_username = renaming and user.is_registration_complete and user.username is not None
    last_change = user.last_username_change_date
    if changing_username and last_change is not None and last_change + USERNAME_CHANGE_INTERVAL > now:
        raise Conflict("username: Can be changed once in 30 days.")
    destination = profile.get("email_destination")
    proven = bool(profile.get("emailCode"))
    if proven:
        # Checked before anything changes: a wrong code commits its failure record, nothing else.
        consume_code(destination, profile["emailCode"], client, now=now)
    with duplicate_is_conflict():
        update_profile(user, profile, destination, proven, changing_username, now)
    return user


def update_profile(user, profile, destination, proven, changing_username, now):
    """Write the profile of ``complete-registration`` to ``user`` (not committed)."""
    if destination is not None:
        # Before this user's row changes: the claim may lock the address and write another account.
        claim_email(user, destination.address, proven)
    if changing_username:
        user.last_username_change_date = now
    user.username = profile["username"]
    user.name, user.surname = profile["name"], profile["surname"]
    user.birth_date, user.gender, user.interests = (
        profile["birthDate"],
        profile["gender"],
        profile["interests"],
    )
    user.privacy_policy_accepted = user.terms_of_use_accepted = True
    user.privacy_policy_version = profile["privacyPolicyVersion"]
    user.terms_of_use_version = profile["termsOfUseVersion"]
    user.consent_form_accepted = profile["consentFormAccepted"]
    user.consent_form_version = profile["consentFormVersion"]
    user.is_registration_complete = True
