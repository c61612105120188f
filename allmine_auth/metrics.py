"""Prometheus metrics at ``GET /metrics``: requests, latency and auth events.

Three families, all with bounded label values:

- ``allmine_http_requests_total{method, route, status}``: ``route`` is the
  URL rule (``/api/v1/auth/sessions/<uuid:session_id>``), never the raw path,
  and ``unmatched`` for 404s and 405s, so a scanner can't grow the series.
- ``allmine_http_request_duration_seconds{route}``: a latency histogram.
- ``allmine_auth_events_total{kind}``: ``audit.record`` calls ``count_event``
  for every event (codes sent, delivery failures, failed checks, lock-outs...).
- ``allmine_sms_trips_total{scope, action}``: the SMS fraud rules tripping on a
  calling-code prefix or a network (``breaker``: a foreign prefix shut;
  ``tightened``: limits tightened and attestation demanded).
- ``allmine_attestation_checks_total{result}``: client attestations asked for
  under suspicion (``passed``, ``refused``, ``missing``, ``unavailable``).

Under gunicorn, ``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before
any worker starts; prometheus_client then keeps each worker's values in a file
there and ``/metrics`` (answered by whichever worker) adds up all the files.
Without it the values live in this process's default registry. The answer is
Prometheus' text format, not the JSON envelope, and it is not in the OpenAPI
spec: it is for the scraper, not for the apps.

The per-request cost is two ``perf_counter`` calls and two dictionary look-ups
of cached label children: ``labels()`` validates and locks on every call, so
each child is made once per label set and then reused.
"""

import os
from time import perf_counter

from flask import Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from allmine_auth.models import Event

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
# Auth answers take milliseconds; an SMS or email provider call can take seconds (NOTIFY_TIMEOUT).
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "allmine_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_LATENCY = Histogram(
    "allmine_http_request_duration_seconds",
    "Time from the start of the request's handling to its response, by route template.",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
AUTH_EVENTS = Counter(
    "allmine_auth_events",
    "Authentication events recorded in the audit trail, by kind.",
    ("kind",),
)

SMS_TRIPS = Counter(
    "allmine_sms_trips",
    "SMS fraud rules tripped, by what tripped (prefix, network) and what it did (breaker, tightened).",
    ("scope", "action"),
)
SMS_TRIP_LABELS = (("prefix", "breaker"), ("prefix", "tightened"), ("network", "tightened"))
ATTESTATION_CHECKS = Counter(
    "allmine_attestation_checks",
    "Client attestations demanded under suspicion, by result.",
    ("result",),
)
ATTESTATION_RESULTS = ("passed", "refused", "missing", "unavailable")

_request_children = {}
_latency_children = {}
_event_children = {}


def _child(cache, metric, key):
    """The cached child of ``metric`` for the label values ``key`` (made on first use)."""
    child = cache.get(key)
    if child is None:
        child = cache.setdefault(key, metric.labels(*key))
    return child


def count_event(kind):
    """Count one auth event of ``kind`` (an ``Event`` or its string value)."""
    _child(_event_children, AUTH_EVENTS, (str(kind),)).inc()


def count_sms_trip(scope, action):
    """Count one trip of the SMS fraud rules (labels from ``SMS_TRIP_LABELS``)."""
    SMS_TRIPS.labels(scope, action).inc()


def count_attestation(result):
    """Count one attestation check (``result`` from ``ATTESTATION_RESULTS``)."""
    ATTESTATION_CHECKS.labels(result).inc()


def start_timer():
    """``before_request``: note when handling started."""
    g.metrics_started = perf_counter()


def observe_request(response):
    """``after_request``: count the request and observe its latency under its route template."""
    started = g.pop("metrics_started", None)
    current = request._get_current_object()  # one context look-up for both attributes
    rule = current.url_rule
    route = rule.rule if rule is not None else UNMATCHED_ROUTE
    _child(_request_children, HTTP_REQUESTS, (current.method, route, str(response.status_code))).inc()
    if started is not None:
        _child(_latency_children, HTTP_LATENCY, (route,)).observe(perf_counter() - started)
    return response


def exposition():
    """``GET /metrics``: every metric, added up over the workers when there are several.

    The format follows the scraper's ``Accept`` header (Prometheus text 0.0.4
    when it names none, OpenMetrics when it asks), as prometheus_client's own
    WSGI app does.
    """
    if os.environ.get(MULTIPROC_DIR_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), status=200, headers={"Content-Type": content_type})


def init_app(app):
    """Time and count every request of ``app`` and serve ``/metrics`` (idempotent)."""
    if "allmine_metrics" in app.extensions:
        return
    app.extensions["allmine_metrics"] = True
    directory = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # create_app calls this before anything else registers a hook: the timer runs first, so the latency
    # includes the other before_request hooks (request id, CORS).
    app.before_request(start_timer)
    app.after_request(observe_request)
    app.add_url_rule("/metrics", "metrics", exposition, methods=["GET"])
    # Zero series for every kind, so a rate() works before the first event of a kind.
    for kind in Event:
        _child(_event_children, AUTH_EVENTS, (kind.value,))
    for labels in SMS_TRIP_LABELS:
        SMS_TRIPS.labels(*labels)
    for result in ATTESTATION_RESULTS:
        ATTESTATION_CHECKS.labels(result)
