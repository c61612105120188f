"""Operator commands: ``flask seed`` (demo data), ``flask purge`` (expired rows), ``flask audit`` (events)."""

import uuid
from datetime import date, timedelta

import click
from flask import current_app

from allmine_auth.cache import undelivered
from allmine_auth.config import DEMO_COUNTRY_CODE, DEMO_PHONE, DEMO_PHONE_NUMBER
from allmine_auth.models import User, utcnow
from allmine_auth.rules import audit
from allmine_auth.rules.abuse import TRIP_EVENTS
from allmine_auth.rules.accounts import finalize_due_deletions
from allmine_auth.rules.audit import Event
from allmine_auth.rules.live_activities import live_activities, purge_expired
from allmine_auth.rules.sessions import revoke_sessions
from allmine_auth.store import purge, users
from allmine_auth.store.bulk import MAX_USERS, seed_users
from allmine_auth.store.events import recent_events
from allmine_auth.store.outbox import drop_cache_writes_older_than
from allmine_auth.store.unit_of_work import unit_of_work

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
    user = users.user_by_phone(DEMO_USER["phone_e164"])
    if user is None:
        user = User(**DEMO_USER)
        users.add_user(user)
    return user


@click.command("seed")
@click.option(
    "--users",
    "count",
    type=click.IntRange(0, MAX_USERS),
    default=0,
    help="Also bulk-insert N users (+90532…).",
)
@click.option(
    "--start", type=click.IntRange(0, MAX_USERS - 1), default=0, help="Number of the first bulk user."
)
def seed_command(count, start):
    """Load the demo data (idempotent) and say how to log in with it; ``--users N`` adds N users fast."""
    if start + count > MAX_USERS:
        raise click.UsageError(f"users are numbered 0..{MAX_USERS - 1}; {start}+{count} does not fit")
    if count:
        # Committed in batches (a unit of work each): a million users are not one transaction.
        inserted = seed_users(
            count,
            start=start,
            progress=lambda done, seconds: click.echo(f"{done:,} users in {seconds:.0f} s"),
        )
        click.echo(f"Inserted {inserted:,} users.")
        if inserted < count:
            click.echo(f"Skipped {count - inserted:,} numbers that already had a user.")
    with unit_of_work():
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
    with unit_of_work():
        codes = purge.delete_expired_codes(now)
        sessions = purge.delete_ended_sessions(now)
        erased = finalize_due_deletions(now)
        activities = purge_expired(now)
        # Failure counters, locks, breakers and suspicions over for a day count nothing any more (a lock
        # doubles only within a day of the last one): one row per number that ever failed would pile up.
        purge.delete_stale_destination_locks(now - timedelta(days=1))
        # An undelivered cache write older than the caches' lives has nothing left to correct in Redis.
        config = current_app.config
        cache_life = max(config["SESSION_CACHE_TTL"], config["PROFILE_CACHE_TTL"])
        drop_cache_writes_older_than(now - timedelta(seconds=cache_life))
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
    with unit_of_work():
        events = purge.delete_events_before(now - timedelta(days=days))
    click.echo(f"Purged {events} audit events older than {days} days.")


@click.command("revoke")
@click.option("--user", "user_ref", required=True, help="A user id, phone number (E.164) or email address.")
def revoke_command(user_ref):
    """End every session of a user at once (a stolen phone, an operator's decision)."""
    with unit_of_work():
        user = find_user(user_ref)
        ended = revoke_sessions(user.id, "operator")
        audit.record(Event.LOGOUT, user_id=user.id, detail="operator")
    click.echo(f"Ended {len(ended)} sessions of user {user.id}.")
    if undelivered():
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
    with unit_of_work():
        activities = live_activities(find_user(user_ref).id)
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
    destinations = [destination.strip().lower()] if destination else []
    user_id = None
    with unit_of_work():
        if user_ref:
            user = find_user(user_ref)
            user_id = user.id
            destinations += [value for value in (user.phone_e164, user.email) if value]
        events = recent_events(
            limit, kinds=TRIP_EVENTS if trips else (), destinations=destinations, user_id=user_id
        )
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
        user = users.user_by_id(uuid.UUID(reference))
    except ValueError:
        address = reference.strip().lower()
        user = users.user_by_email(address) if "@" in reference else users.user_by_phone(address)
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
