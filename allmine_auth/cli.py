"""Operator commands: ``flask seed`` (demo data), ``flask purge`` (expired rows), ``flask audit`` (events)."""

import uuid
from datetime import date, timedelta

import click
import sqlalchemy as sa
from flask import current_app

from allmine_auth.cache import undelivered
from allmine_auth.config import DEMO_COUNTRY_CODE, DEMO_PHONE, DEMO_PHONE_NUMBER
from allmine_auth.extensions import db
from allmine_auth.models import (
    AuthEvent,
    CacheOutbox,
    DestinationLock,
    LoginSession,
    OneTimeCode,
    User,
    utcnow,
)
from allmine_auth.rules import audit
from allmine_auth.rules.abuse import TRIP_EVENTS
from allmine_auth.rules.accounts import finalize_due_deletions
from allmine_auth.rules.audit import Event
from allmine_auth.rules.live_activities import live_activities, purge_expired
from allmine_auth.rules.sessions import revoke_sessions
from allmine_auth.store.bulk import MAX_USERS, seed_users

DEMO_USER = {
    "phone_e164": DEMO_PHONE,
    "country_code": DEMO_COUNTRY_CODE,
    "phone_number": DEMO_PHONE_NUMBER,
    "name": "John",
    "surname": "Doe",
    "username": "johndoe123",
    "signup_source": "instagram_ads",
    "signup_campaign": "spring_launch_2026",
    "profile_photo": "sample.jpg",
    "availability_status": "available",
    "birth_date": date(1995, 1, 15),
    "gender": "male",
    "interests": ["music"],
    "expertise": "designer",
    "email": "john.doe@example.com",
    "email_verified": True,
    "bio": "Passionate about technology and travel",
    "instagram": "myinstagram",
    "x": "mytwitterx",
    "tiktok": "mytiktok",
    "snapchat": "mysnapchat",
    "facebook": "myfacebook",
    "privacy_policy_accepted": True,
    "privacy_policy_version": "1.2.0",
    "terms_of_use_accepted": True,
    "terms_of_use_version": "1.1.0",
    "consent_form_accepted": True,
    "consent_form_version": "1.0.0",
    "is_registration_complete": True,
    "followers_count": 128,
    "following_count": 256,
    "minute_price_in_live_stream": 1,
    "credit_balance": 500,
    "timezone": "Europe/Istanbul",
}


def seed_demo_user():
    """Create the seed documents' example user (johndoe123) unless it exists; return it."""
    user = db.session.scalar(sa.select(User).where(User.phone_e164 == DEMO_USER["phone_e164"]))
    if user is None:
        user = User(**DEMO_USER)
        db.session.add(user)
        db.session.commit()
    return user


@click.command("seed")
@click.option(
    "--users", type=click.IntRange(0, MAX_USERS), default=0, help="Also bulk-insert N users (+90532…)."
)
@click.option(
    "--start", type=click.IntRange(0, MAX_USERS - 1), default=0, help="Number of the first bulk user."
)
def seed_command(users, start):
    """Load the demo data (idempotent) and say how to log in with it; ``--users N`` adds N users fast."""
    if start + users > MAX_USERS:
        raise click.UsageError(f"users are numbered 0..{MAX_USERS - 1}; {start}+{users} does not fit")
    if users:
        inserted = seed_users(
            users,
            start=start,
            progress=lambda done, seconds: click.echo(f"{done:,} users in {seconds:.0f} s"),
        )
        click.echo(f"Inserted {inserted:,} users.")
        if inserted < users:
            click.echo(f"Skipped {users - inserted:,} numbers that already had a user.")
    user = seed_demo_user()
    click.echo(f"Demo user {user.username} ({user.phone_e164}) is ready.")
    fixed = current_app.config["OTP_TEST_DESTINATIONS"].get(user.phone_e164)
    if fixed is not None:
        click.echo(
            "Log in through Swagger UI (/docs): POST /api/v1/auth/send-otp "
            f'{{"countryCode": "90", "phoneNumber": "{user.phone_number}"}}, '
            f'then /api/v1/auth/verify-otp with "code": "{fixed[0]}"; '
            "click Authorize and paste the accessToken."
        )


@click.command("purge")
def purge_command():
    """Delete expired one-time codes, sessions that are over, and audit events past their retention."""
    now = utcnow()
    codes = db.session.execute(sa.delete(OneTimeCode).where(OneTimeCode.expires_at <= now)).rowcount
    sessions = db.session.execute(
        sa.delete(LoginSession).where(
            sa.or_(LoginSession.expires_at <= now, LoginSession.revoked_at.is_not(None))
        )
    ).rowcount
    erased = finalize_due_deletions(now)
    activities = purge_expired(now)
    # Failure counters, locks, breakers and suspicions over for a day count nothing any more (a lock
    # doubles only within a day of the last one): one row per number that ever failed would pile up.
    day_ago = now - timedelta(days=1)
    db.session.execute(
        sa.delete(DestinationLock).where(
            sa.or_(DestinationLock.locked_until.is_(None), DestinationLock.locked_until < day_ago),
            sa.or_(DestinationLock.window_started_at.is_(None), DestinationLock.window_started_at < day_ago),
        )
    )
    # An undelivered cache write older than the caches' lives has nothing left to correct in Redis.
    config = current_app.config
    cache_life = max(config["SESSION_CACHE_TTL"], config["PROFILE_CACHE_TTL"])
    db.session.execute(
        sa.delete(CacheOutbox).where(CacheOutbox.created_at < now - timedelta(seconds=cache_life))
    )
    db.session.commit()
    click.echo(
        f"Purged {codes} expired codes, {sessions} ended sessions and {activities} expired Live Activities; "
        f"erased {erased} accounts whose deletion was due."
    )
    purge_audit_events(now)


def purge_audit_events(now):
    """Delete the audit events older than ``AUDIT_RETENTION_DAYS`` and say how many.

    They hold full phone numbers and email addresses (KVKK, GDPR: kept no
    longer than needed). The setting is at least a day: the send and failure
    limits count the last 24 hours of events.
    """
    days = current_app.config["AUDIT_RETENTION_DAYS"]
    events = db.session.execute(
        sa.delete(AuthEvent).where(AuthEvent.created_at < now - timedelta(days=days))
    ).rowcount
    db.session.commit()
    click.echo(f"Purged {events} audit events older than {days} days.")


@click.command("revoke")
@click.option("--user", "user_ref", required=True, help="A user id, phone number (E.164) or email address.")
def revoke_command(user_ref):
    """End every session of a user at once (a stolen phone, an operator's decision)."""
    user = find_user(user_ref)
    ended = revoke_sessions(user.id, "operator")
    audit.record(Event.LOGOUT, user_id=user.id, detail="operator")
    db.session.commit()
    click.echo(f"Ended {len(ended)} sessions of user {user.id}.")
    if undelivered(db.session):
        click.echo(
            "Redis did not answer: the revocation is in the database and waits in the cache outbox; "
            "the workers deliver it to Redis as soon as it answers.",
            err=True,
        )
        # Not "at once" then (a worker reaching a Redis this one can't accepts the tokens until the outbox is
        # delivered): a script must see it, as an app sees a logout's 503; a rerun announces again.
        raise click.exceptions.Exit(1)


@click.command("live-activities")
@click.option("--user", "user_ref", required=True, help="A user id, phone number (E.164) or email address.")
def live_activities_command(user_ref):
    """List a user's Live Activities that have not expired (what the push sender would push to)."""
    user = find_user(user_ref)
    activities = live_activities(user.id)
    if not activities:
        click.echo("no live activities")
    for activity in activities:
        click.echo(
            f"{activity.activity_id}  {activity.kind:<12} ref={activity.reference_id or '-'} "
            f"session={activity.session_id} until={activity.expires_at.isoformat(timespec='seconds')} "
            f"push_token={activity.push_token}"
        )


@click.command("audit")
@click.option("--user", "user_ref", help="A user id, phone number (E.164) or email address.")
@click.option("--destination", help="A phone number (E.164) or email address codes were sent to.")
@click.option("--trips", is_flag=True, help="The SMS fraud rules' trips (prefixes and networks).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def audit_command(user_ref, destination, trips, limit):
    """Show the recent authentication events of a user, a destination, or the SMS trips, newest first."""
    if not user_ref and not destination and not trips:
        raise click.UsageError("give --user, --destination or --trips")
    query = sa.select(AuthEvent).order_by(AuthEvent.created_at.desc(), AuthEvent.id.desc()).limit(limit)
    conditions = []
    if trips:
        conditions.append(AuthEvent.kind.in_(TRIP_EVENTS))
    if destination:
        conditions.append(AuthEvent.destination == destination.strip().lower())
    if user_ref:
        user = find_user(user_ref)
        conditions.append(AuthEvent.user_id == user.id)
        conditions += [AuthEvent.destination == value for value in (user.phone_e164, user.email) if value]
    events = db.session.scalars(query.where(sa.or_(*conditions))).all()
    if not events:
        click.echo("no events")
    for event in events:
        click.echo(
            f"{event.created_at.isoformat(timespec='seconds')}  {event.kind:<18} "
            f"{event.destination or '-':<28} user={event.user_id or '-'} ip={event.ip or '-'} "
            f"{event.detail or ''}".rstrip()
        )


def find_user(reference):
    """The user a CLI argument names (an id, a phone number in E.164, an email address), else exit 1."""
    try:
        user = db.session.get(User, uuid.UUID(reference))
    except ValueError:
        column = User.email if "@" in reference else User.phone_e164
        user = db.session.scalar(sa.select(User).where(column == reference.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user {reference!r}")
    return user


def register_commands(app):
    """Add the commands to ``flask``."""
    app.cli.add_command(seed_command)
    app.cli.add_command(purge_command)
    app.cli.add_command(revoke_command)
    app.cli.add_command(live_activities_command)
    app.cli.add_command(audit_command)
