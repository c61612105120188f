"""Login and profile rules, on plain values: no request object reaches this module."""

import sqlalchemy as sa

from allmine_auth import audit
from allmine_auth.audit import Event
from allmine_auth.auth.destinations import SMS
from allmine_auth.auth.otp import code_ttl, consume_code, issue_code
from allmine_auth.auth.tokens import open_session
from allmine_auth.extensions import db
from allmine_auth.models import User, utcnow
from allmine_auth.notify import email_sender, messages, sms_sender


def send_code(destination, client=None):
    """Issue a code for ``destination`` and deliver it by SMS or email; return the code."""
    if destination.channel == SMS:

        def deliver(code):
            sms_sender().send_sms(destination.address, messages.sms_text(code, code_ttl(destination.channel)))

    else:

        def deliver(code):
            email_sender().send_email(
                destination.address, *messages.email_parts(code, code_ttl(destination.channel))
            )

    return issue_code(destination, deliver, client)


def user_for_destination(destination):
    """The account that owns ``destination``, or ``None``."""
    column = User.phone_e164 if destination.channel == SMS else User.email
    return db.session.scalar(sa.select(User).where(column == destination.address))


def login_with_code(destination, code, client=None, *, signup_source=None, signup_campaign=None):
    """Check the code, find or create the account, open a session; return ``(user, tokens)``.

    A new account keeps the ``signupSource``/``signupCampaign`` of its first
    login only. The code's use, the account and the session commit together.
    """
    now = utcnow()
    consume_code(destination, code, client, now=now)
    user = user_for_destination(destination)
    if user is None:
        user = User(signup_source=signup_source, signup_campaign=signup_campaign, created_at=now)
        if destination.channel == SMS:
            user.phone_e164 = destination.address
            user.country_code = destination.country_code
            user.phone_number = destination.national_number
        else:
            user.email = destination.address
        db.session.add(user)
        db.session.flush()
    user.last_login = now
    session, tokens = open_session(user, client, now)
    audit.record(
        Event.LOGIN, client, destination=destination, user_id=user.id, session_id=session.id, now=now
    )
    db.session.commit()
    return user, tokens
