"""SMS-pumping defences: SMS costs money per message, so where it may go and how much is watched.

SMS pumping (toll fraud) sends codes to numbers whose carrier pays the attacker per message; nobody
ever types those codes in. So the signal, as in Twilio's Fraud Guard, is conversion: codes verified
per codes sent, per calling-code prefix over a sliding hour, next to the prefix's own normal volume.

- ``guard_sms_send`` (inside ``codes.issue_code``, test destinations skip it): the country allowlist,
  an open prefix breaker, and the global hourly cost ceiling.
- ``screen_sms_send`` (the send view, before the code is drawn): a prefix *trips* when its sends in
  the last hour reach ``SMS_TRIP_FACTOR`` x its normal and under ``SMS_TRIP_CONVERSION_PERCENT`` of
  them were verified. A foreign prefix's breaker then opens (429 for ``SMS_PREFIX_BREAKER_SECONDS``).
  A home prefix (``SMS_HOME_COUNTRIES``) is never shut off whole: it becomes *suspect*, and so does a
  network (IPv4 /24, IPv6 /56) whose own sends show the same collapse. While suspect, SMS sends from
  that network or to that prefix get the per-network limit divided by ``SMS_SUSPECT_LIMIT_DIVISOR``
  and must bring a client attestation (``allmine_auth.rules.attestation``).
- ``count_sms_sent`` and ``count_sms_verified`` feed the counters (``counters``: Redis, else this
  process), after a code was handed to the SMS provider and after one was verified.

Every refusal is logged and audited (``send_refused``); every trip is logged, audited
(``prefix_tripped``, ``network_suspected``: ``flask audit --trips``) and counted in ``/metrics``.
A refusal keeps its audit row and the markers set before it: it is raised with ``keep_records=True``
(the unit of work commits them). The markers are rows of ``destination_locks`` (``store.locks``).
"""

import functools
import ipaddress
import logging
import math
from dataclasses import dataclass
from datetime import timedelta

import phonenumbers
from flask import current_app
from limits import parse_many

from allmine_auth import metrics
from allmine_auth.errors import AttestationRequired, RateLimited, ServiceUnavailable, ValidationFailed
from allmine_auth.models import Event, utcnow
from allmine_auth.privacy import mask_destination
from allmine_auth.rules import attestation, audit, counters
from allmine_auth.rules.codes import seconds_until, test_code_for
from allmine_auth.rules.destinations import SMS
from allmine_auth.store import locks
from allmine_auth.store.unit_of_work import after_commit, alone

log = logging.getLogger(__name__)

MINUTE, HOUR = 60, 3600
WINDOW_MINUTES = 60
# Codes live 180 s and most are typed in within a minute: sends younger than this are not judged yet.
GRACE_MINUTES = 2
BREAKER_CHANNEL = "sms-prefix"
SUSPECT_PREFIX_CHANNEL = "sms-home"  # channel is VARCHAR(10)
SUSPECT_NETWORK_CHANNEL = "sms-net"
PREFIX_TRIPPED = "prefix_tripped"
NETWORK_SUSPECTED = "network_suspected"
TRIP_EVENTS = (PREFIX_TRIPPED, NETWORK_SUSPECTED)
NOT_ACCEPTED = "X-Client-Attestation: Not accepted."


def network_of(ip):
    """The client's network as text: the /24 of an IPv4 address, the /56 of an IPv6 one.

    An IPv6 subscriber usually gets a /56 or /64 of its own, so a /56 is one customer (a whole
    /64 per request would be free to rotate through); an IPv4-mapped address counts as IPv4. A
    value that is no address (``unknown``) is its own network.
    """
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return ip or "unknown"
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    length = 24 if address.version == 4 else 56
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def home_prefixes():
    """The calling codes of ``SMS_HOME_COUNTRIES`` (``+90``): prefixes that are never shut off."""
    regions = current_app.config["SMS_HOME_COUNTRIES"]
    return {f"+{phonenumbers.country_code_for_region(region)}" for region in regions}


def refuse(error, destination, client, reason):
    """Log and audit a refused send, raise ``error``, which keeps the audit row and any marker set before."""
    log.warning("SMS send refused (%s) for %s", reason, mask_destination(destination))
    audit.record(Event.SEND_REFUSED, client, destination=destination, detail=reason[:255])
    error.keep_records = True
    raise error


def window_relief(by_minute, now):
    """Seconds until the oldest counted minute of ``by_minute`` (a window ending now) leaves the window."""
    first = next((index for index, count in enumerate(by_minute) if count), 0)
    current = counters.bucket_of(now, MINUTE)
    return max(1, math.ceil((current + 1 + first) * MINUTE - now.timestamp()))


def minute_ttl():
    """How long a minute bucket is kept: the window and one minute more."""
    return (WINDOW_MINUTES + 1) * MINUTE


def skips_screening(destination, now):
    """Whether ``destination`` is outside the fraud rules: email, or a configured test number."""
    return destination.channel != SMS or test_code_for(destination, now) is not None


def count_sms_sent(destination, client=None, now=None):
    """Count an SMS code handed to the provider: for the global budget, its prefix and its network.

    An after-commit action of the caller's unit of work (the send view, after ``issue_code``): it runs
    after the code's delivery, which ``issue_code`` queued first, and only if that succeeded: a send
    the provider refused is not counted.
    """
    now = now or utcnow()
    if skips_screening(destination, now):
        return
    network = network_of(client.ip if client else None)
    ttl = minute_ttl()
    increments = [
        ("all:sent", MINUTE, ttl),
        (f"prefix:{destination.prefix}:sent", MINUTE, ttl),
        (f"net:{network}:sent", MINUTE, ttl),
    ]
    after_commit(functools.partial(counters.add, increments, now))


def count_sms_verified(destination, client=None, now=None):
    """Count an SMS code verified (a login): the conversion of its prefix and network, the prefix's normal."""
    now = now or utcnow()
    if skips_screening(destination, now):
        return
    network = network_of(client.ip if client else None)
    baseline_ttl = (current_app.config["SMS_BASELINE_HOURS"] + 1) * HOUR
    counters.add(
        [
            (f"prefix:{destination.prefix}:verified", MINUTE, minute_ttl()),
            (f"prefix:{destination.prefix}:verified", HOUR, baseline_ttl),
            (f"net:{network}:verified", MINUTE, minute_ttl()),
        ],
        now,
    )


@dataclass(frozen=True)
class Traffic:
    """The last hour of SMS traffic to a prefix and from a network, and the prefix's normal."""

    sent_by_minute: list
    verified: int
    normal: float
    network_sent_by_minute: list
    network_verified: int

    @property
    def sent(self):
        """SMS codes sent to the prefix in the last hour."""
        return sum(self.sent_by_minute)

    @property
    def network_sent(self):
        """SMS codes sent from the network in the last hour."""
        return sum(self.network_sent_by_minute)


def settled(by_minute):
    """The sends of a window old enough to have been typed in: all but the last ``GRACE_MINUTES``."""
    return sum(by_minute[:-GRACE_MINUTES])


def read_traffic(prefix, network, now):
    """Read the counters of ``prefix`` and ``network`` in one round trip."""
    hours = current_app.config["SMS_BASELINE_HOURS"]
    last_hour = (1 - WINDOW_MINUTES, 0)
    sent, verified, verified_hourly, network_sent, network_verified = counters.read(
        [
            (f"prefix:{prefix}:sent", MINUTE, last_hour),
            (f"prefix:{prefix}:verified", MINUTE, last_hour),
            (f"prefix:{prefix}:verified", HOUR, (-hours, -1)),
            (f"net:{network}:sent", MINUTE, last_hour),
            (f"net:{network}:verified", MINUTE, last_hour),
        ],
        now,
    )
    # The normal is verified codes per hour, not sends: pumped codes are never verified, so a
    # long-running attack can't raise its own threshold.
    return Traffic(sent, sum(verified), sum(verified_hourly) / hours, network_sent, sum(network_verified))


def collapsed(by_minute, verified, threshold):
    """Whether under ``SMS_TRIP_CONVERSION_PERCENT`` of the window's sends were verified.

    A code is typed in some seconds after it was sent, so the sends of the last ``GRACE_MINUTES``
    can't be judged yet: conversion is over the settled sends. But an attacker must not get a free
    burst inside that grace, so of the unsettled sends only ``threshold - 1`` are excused: a burst
    of ``threshold`` sends nobody verifies collapses at once, however fast it came.
    """
    judged = max(settled(by_minute), sum(by_minute) - threshold + 1)
    return verified * 100 < current_app.config["SMS_TRIP_CONVERSION_PERCENT"] * judged


def trip_threshold(normal):
    """Sends in an hour at which a prefix with this normal trips (if its conversion collapsed)."""
    config = current_app.config
    return config["SMS_TRIP_FACTOR"] * max(normal, config["SMS_BASELINE_FLOOR"])


def prefix_trips(traffic):
    """Whether the prefix's hour is well above its normal and its codes are not being verified."""
    threshold = trip_threshold(traffic.normal)
    return traffic.sent >= threshold and collapsed(traffic.sent_by_minute, traffic.verified, threshold)


def network_trips(traffic):
    """Whether the network sent enough SMS in the hour to judge, and its codes are not being verified."""
    threshold = current_app.config["SMS_NETWORK_MIN_SENDS"]
    by_minute = traffic.network_sent_by_minute
    return traffic.network_sent >= threshold and collapsed(by_minute, traffic.network_verified, threshold)


def marker_end(channel, key, now):
    """When the breaker or suspicion mark ``(channel, key)`` ends, while it lasts; else ``None``.

    Read once per transaction (``store.locks.marker_ends``): ``guard_sms_send`` finds the breaker
    ``screen_sms_send`` read in the same unit of work.
    """
    return locks.marker_ends([(channel, key)], now).get((channel, key))


def read_markers(prefix, network, now):
    """The ends of the prefix's breaker, its suspicion and the network's suspicion, in one statement.

    A read, so outside a transaction while the send has begun none (``alone``): a send that sets no
    marker then makes no ``BEGIN`` and ``COMMIT`` round trips.
    """
    markers = [(BREAKER_CHANNEL, prefix), (SUSPECT_PREFIX_CHANNEL, prefix)]
    markers.append((SUSPECT_NETWORK_CHANNEL, network))
    with alone():
        return locks.marker_ends(markers, now)


def set_marker(channel, key, now, seconds):
    """Set the mark ``(channel, key)`` until ``now + seconds`` (in the unit of work); return its end.

    ``None`` when a concurrent request set it first: only one request reports the trip. The mark
    commits with the request, which keeps it even when it ends in a refusal (``refuse``).
    """
    until = now + timedelta(seconds=seconds)
    return until if locks.set_marker(channel, key, now, until) else None


def report_trip(kind, scope, action, what, until, traffic, destination, client):
    """Log, audit and count a trip that just started."""
    detail = (
        f"{what} {action} until {until.isoformat(timespec='seconds')}: "
        f"prefix {traffic.sent} sent/{traffic.verified} verified, normal {traffic.normal:.1f}/h; "
        f"network {traffic.network_sent} sent/{traffic.network_verified} verified"
    )
    log.error("SMS fraud rule tripped: %s", detail)
    audit.record(kind, client, destination=destination, detail=detail[:255])
    metrics.count_sms_trip(scope, action)


def guard_sms_send(destination, client, now):
    """Refuse SMS to a country not allowed, to a prefix with an open breaker, or over the global budget."""
    config = current_app.config
    if destination.region not in config["SMS_ALLOWED_COUNTRIES"]:
        error = ValidationFailed("countryCode: SMS to this country is not available.")
        refuse(error, destination, client, f"country {destination.region} not allowed")
    breaker_end = marker_end(BREAKER_CHANNEL, destination.prefix, now)
    if breaker_end is not None:
        retry_after = seconds_until(breaker_end, now)
        refuse(RateLimited(retry_after=retry_after), destination, client, "breaker open")
    (by_minute,) = counters.read([("all:sent", MINUTE, (1 - WINDOW_MINUTES, 0))], now)
    if sum(by_minute) >= config["SMS_GLOBAL_HOURLY_BUDGET"]:
        retry_after = window_relief(by_minute, now)
        refuse(RateLimited(retry_after=retry_after), destination, client, "global budget")


def screen_sms_send(destination, client, token=None, now=None):
    """Apply the conversion rules to an SMS send, before its code is drawn (``token``: the attestation).

    Raises ``RateLimited`` (a foreign prefix's breaker trips, or a suspect network is over its
    tightened limit), ``AttestationRequired`` (suspect, and no token the provider accepts) or
    ``ServiceUnavailable`` (suspect network, foreign prefix, provider unreachable).
    """
    now = now or utcnow()
    config = current_app.config
    if skips_screening(destination, now) or destination.region not in config["SMS_ALLOWED_COUNTRIES"]:
        return  # nothing to pay for, or guard_sms_send refuses it
    prefix = destination.prefix
    network = network_of(client.ip if client else None)
    markers = read_markers(prefix, network, now)
    if (BREAKER_CHANNEL, prefix) in markers:
        return  # guard_sms_send refuses it with the breaker's own Retry-After
    home = prefix in home_prefixes()
    traffic = read_traffic(prefix, network, now)
    prefix_suspect = home and (SUSPECT_PREFIX_CHANNEL, prefix) in markers
    if not prefix_suspect and prefix_trips(traffic):
        if home:
            prefix_suspect = True
            until = set_marker(SUSPECT_PREFIX_CHANNEL, prefix, now, config["SMS_SUSPICION_SECONDS"])
            if until is not None:
                report_trip(
                    PREFIX_TRIPPED, "prefix", "tightened", prefix, until, traffic, destination, client
                )
        else:
            seconds = config["SMS_PREFIX_BREAKER_SECONDS"]
            until = set_marker(BREAKER_CHANNEL, prefix, now, seconds)
            if until is not None:
                log.error("SMS circuit breaker opened for %s until %s", prefix, until.isoformat())
                report_trip(PREFIX_TRIPPED, "prefix", "breaker", prefix, until, traffic, destination, client)
            refuse(RateLimited(retry_after=seconds), destination, client, "prefix tripped")
    network_suspect = (SUSPECT_NETWORK_CHANNEL, network) in markers
    if not network_suspect and network_trips(traffic):
        network_suspect = True
        until = set_marker(SUSPECT_NETWORK_CHANNEL, network, now, config["SMS_SUSPICION_SECONDS"])
        if until is not None:
            report_trip(
                NETWORK_SUSPECTED, "network", "tightened", network, until, traffic, destination, client
            )
    if prefix_suspect or network_suspect:
        reason = f"suspect {'prefix ' + prefix if prefix_suspect else 'network ' + network}"
        enforce_tightened_limit(traffic.network_sent_by_minute, destination, client, now, reason)
        demand_attestation(token, destination, client, home, reason)


def enforce_tightened_limit(by_minute, destination, client, now, reason):
    """Refuse with 429 when the network's SMS sends reach ``RATELIMIT_SEND_NETWORK`` / the divisor.

    Counted on the SMS counters, so what the network sent before the suspicion counts too. Windows
    longer than the counters' hour are counted over the last hour. Off with ``RATELIMIT_ENABLED``.
    """
    config = current_app.config
    if not config["RATELIMIT_ENABLED"]:
        return
    divisor = config["SMS_SUSPECT_LIMIT_DIVISOR"]
    for item in parse_many(config["RATELIMIT_SEND_NETWORK"]):
        minutes = min(WINDOW_MINUTES, max(1, math.ceil(item.get_expiry() / MINUTE)))
        recent = by_minute[-minutes:]
        allowed = max(1, item.amount // divisor)
        if sum(recent) >= allowed:
            error = RateLimited(retry_after=window_relief(recent, now))
            refuse(
                error,
                destination,
                client,
                f"{reason}: network limit tightened to {allowed} per {item.get_expiry()} s",
            )


def demand_attestation(token, destination, client, home, reason):
    """Refuse with 428 unless the attestation provider vouches for ``token`` (no provider: no demand).

    An unreachable provider lets a home prefix through (its users must not depend on a captcha
    vendor; the tightened limit still holds) and refuses a foreign one with 503.
    """
    if not attestation.demanded():
        return
    try:
        outcome = attestation.check(token, client.ip if client else None)
    except attestation.AttestationUnavailable as exc:
        if home:
            log.warning("attestation provider unavailable (%s): %s let through", exc, destination.prefix)
            return
        refuse(ServiceUnavailable(retry_after=30), destination, client, f"{reason}: attestation unavailable")
    if outcome == "passed":
        return
    details = () if outcome == "missing" else (NOT_ACCEPTED,)
    refuse(AttestationRequired(*details), destination, client, f"{reason}: attestation {outcome}")
