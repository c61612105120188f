"""SMS-pumping defences: SMS costs money per message, so where it may go and how much is capped.

Three guards run before any SMS code is drawn (test destinations skip them):
a country allowlist, an hourly global SMS budget, and an hourly budget per
calling-code prefix whose breach opens a circuit breaker for that prefix.
Each refusal is logged and written to the audit trail.
"""

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from allmine_auth import audit
from allmine_auth.audit import Event
from allmine_auth.auth.destinations import SMS
from allmine_auth.auth.otp import seconds_until
from allmine_auth.errors import RateLimited, ValidationFailed
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock

log = logging.getLogger(__name__)

ONE_HOUR = timedelta(hours=1)
BREAKER_CHANNEL = "sms-prefix"


def refuse(error, destination, client, reason):
    """Log and audit a refused send, then raise ``error``."""
    log.warning("SMS send refused (%s) for %s", reason, destination.address)
    audit.record(Event.SEND_REFUSED, client, destination=destination, detail=reason)
    db.session.commit()
    raise error


def open_breaker(prefix, now):
    """Stop all SMS to ``prefix`` for ``SMS_PREFIX_BREAKER_SECONDS``; return when it closes."""
    until = now + timedelta(seconds=current_app.config["SMS_PREFIX_BREAKER_SECONDS"])
    breaker = db.session.get(DestinationLock, (BREAKER_CHANNEL, prefix))
    if breaker is None:
        breaker = DestinationLock(channel=BREAKER_CHANNEL, destination=prefix, lock_count=0)
        db.session.add(breaker)
    breaker.locked_at, breaker.locked_until, breaker.lock_count = now, until, breaker.lock_count + 1
    log.error("SMS circuit breaker opened for %s until %s", prefix, until.isoformat())
    return until


def guard_sms_send(destination, client, now):
    """Refuse SMS to a country not allowed, over the global budget, or to a prefix with an open breaker."""
    config = current_app.config
    if destination.region not in config["SMS_ALLOWED_COUNTRIES"]:
        error = ValidationFailed("countryCode: SMS to this country is not available.")
        refuse(error, destination, client, f"country {destination.region} not allowed")
    breaker = db.session.get(DestinationLock, (BREAKER_CHANNEL, destination.prefix))
    if breaker is not None and breaker.locked_until > now:
        refuse(
            RateLimited(retry_after=seconds_until(breaker.locked_until, now)),
            destination,
            client,
            "breaker open",
        )
    since = now - ONE_HOUR
    sent, sent_to_prefix = audit.count_events(
        Event.CODE_SENT, since, sa.true(), AuthEvent.prefix == destination.prefix, channel=SMS
    )
    if sent >= config["SMS_GLOBAL_HOURLY_BUDGET"]:
        oldest = audit.oldest_event_since(Event.CODE_SENT, since, channel=SMS)
        refuse(
            RateLimited(retry_after=seconds_until(oldest + ONE_HOUR, now)),
            destination,
            client,
            "global budget",
        )
    if sent_to_prefix >= config["SMS_PREFIX_HOURLY_BUDGET"]:
        until = open_breaker(destination.prefix, now)
        refuse(RateLimited(retry_after=seconds_until(until, now)), destination, client, "prefix budget")
