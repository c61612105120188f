"""Login and profile rules, on plain values: no request object reaches this module."""

import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from allmine_auth import audit
from allmine_auth.audit import Event
from allmine_auth.auth.abuse import count_sms_verified, guard_sms_send
from allmine_auth.auth.destinations import EMAIL, SMS
from allmine_auth.auth.otp import code_ttl, consume_code, issue_code
from allmine_auth.auth.tokens import open_session
from allmine_auth.errors import Conflict
from allmine_auth.extensions import db
from allmine_auth.models import User, utcnow
from allmine_auth.notify import email_sender, messages, sms_sender


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


def user_for_destination(destination):
    """The account that owns ``destination``, or ``None``."""
    return db.session.scalar(USER_BY[destination.channel], {"address": destination.address})


# Built once (compiled once): the lookup of every login.
USER_BY = {
    SMS: sa.select(User).where(User.phone_e164 == sa.bindparam("address")),
    EMAIL: sa.select(User).where(User.email == sa.bindparam("address")),
}


def login_with_code(destination, code, client=None, *, signup_source=None, signup_campaign=None):
    """Check the code, find or create the account, open a session; return ``(user, tokens)``.

    A new account keeps the ``signupSource``/``signupCampaign`` of its first
    login only. The code's use, the account and the session commit together.
    """
    now = utcnow()
    consume_code(destination, code, client, now=now)
    count_sms_verified(destination, client, now)
    user = user_for_destination(destination)
    if user is not None and destination.channel == EMAIL and not user.email_verified:
        # An address typed into a profile but never proven gives way to the person who proves it.
        user.email = None
        db.session.flush()
        user = None
    if user is None:
        # The id is drawn here, so nothing needs flushing before the session row names it.
        user = User(
            id=uuid.uuid4(),
            signup_source=signup_source,
            signup_campaign=signup_campaign,
            created_at=now,
            last_login=now,
        )
        if destination.channel == SMS:
            user.phone_e164 = destination.address
            user.country_code = destination.country_code
            user.phone_number = destination.national_number
        else:
            user.email, user.email_verified = destination.address, True
        db.session.add(user)
    else:
        user.last_login = now
    # The session INSERT flushes the new or changed user first (autoflush).
    session, tokens = open_session(user, client, now)
    audit.record(
        Event.LOGIN, client, destination=destination, user_id=user.id, session_id=session.id, now=now
    )
    db.session.commit()
    return user, tokens


USERNAME_CHANGE_INTERVAL = timedelta(days=30)


def username_owner(username):
    """The id of the account holding ``username`` (case-insensitive), or ``None``."""
    return db.session.scalar(sa.select(User.id).where(sa.func.lower(User.username) == username.lower()))


def email_owner(address):
    """The id of the account holding the email ``address``, or ``None``."""
    return db.session.scalar(sa.select(User.id).where(User.email == address))


def complete_registration(user, profile, client=None):
    """Fill in the profile and the acceptances, and mark the registration complete.

    Called again on a complete account it updates the profile. A username
    taken by another account (case-insensitive), an email held by another
    account, and a second username change within 30 days are each a 409.
    An email comes with ``emailCode`` (a code sent by send-otp-email) to be
    verified, and a verified email logs in to this same account.
    """
    now = utcnow()
    username = profile["username"]
    renaming = username != user.username
    if renaming and username_owner(username) not in (None, user.id):
        raise Conflict()
    changing_username = renaming and user.is_registration_complete and user.username is not None
    last_change = user.last_username_change_date
    if changing_username and last_change is not None and last_change + USERNAME_CHANGE_INTERVAL > now:
        raise Conflict("username: Can be changed once in 30 days.")
    destination = profile.get("email_destination")
    new_email = destination is not None and destination.address != user.email
    if new_email and email_owner(destination.address) is not None:
        raise Conflict()
    if profile.get("emailCode"):
        # Checked before anything changes: a wrong code commits its failure record, nothing else.
        consume_code(destination, profile["emailCode"], client, now=now)
    if changing_username:
        user.last_username_change_date = now
    user.username = username
    if new_email:
        user.email, user.email_verified = destination.address, False
    if profile.get("emailCode"):
        user.email_verified = True
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
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict() from None
    return user
