"""The error renderers: every error, from any layer, answered as the envelope.

``register_errorhandlers`` routes each error class to its renderer: a ``ServiceError`` raised by the
rules, any werkzeug ``HTTPException`` (webargs, flask-limiter, routing), the database out of reach
(503), and anything unexpected (a bare 500, logged with its request id).
"""

import functools
import logging
import time

from flask import current_app
from flask_limiter.errors import RateLimitExceeded

from allmine_auth.errors import ServiceError, ServiceUnavailable
from allmine_auth.store import outage, unit_of_work
from allmine_auth.web.envelope import ERROR_TEXTS, error_response

log = logging.getLogger(__name__)

ARGUMENT_LOCATIONS = {"json", "query", "querystring", "headers", "path", "view_args", "form"}


def validation_lines(messages, prefix=""):
    """Flatten marshmallow/webargs messages into ``field: message`` lines.

    The argument location level (``json``, ``query``...) is dropped and
    marshmallow's ``_schema`` key (errors about the whole body) reads ``body``.
    """
    if isinstance(messages, dict):
        for key, value in messages.items():
            if not prefix and key in ARGUMENT_LOCATIONS:
                yield from validation_lines(value)
                continue
            name = "body" if key == "_schema" else str(key)
            yield from validation_lines(value, f"{prefix}.{name}" if prefix else name)
    elif isinstance(messages, (list, tuple)):
        for item in messages:
            yield from validation_lines(item, prefix)
    else:
        yield f"{prefix}: {messages}" if prefix else str(messages)


def http_error_response(error):
    """Render any werkzeug ``HTTPException`` (webargs, flask-limiter, routing...) as the envelope."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    if status == 400 and "messages" in data:
        errors = [ERROR_TEXTS[400], *validation_lines(data["messages"])]
    elif "message" in data:
        errors = [data["message"]]
    else:
        errors = [ERROR_TEXTS.get(status, error.name)]
    headers = dict(data.get("headers") or {})
    headers.update((k, v) for k, v in error.get_headers() if k.lower() != "content-type")
    if status >= 500:
        log.error("HTTP %s: %s", status, error.description)
    return error_response(status, errors, headers)


def rate_limit_response(limiter, error):
    """flask-limiter's 429, with ``Retry-After`` from the breached limit's window (``limiter``'s).

    The limiter's own ``X-RateLimit-*`` headers are off: they cost a storage
    read per limit on every request; this reads the window only on a 429.
    """
    breached = limiter.current_limit
    retry_after = breached.reset_at - time.time() if breached is not None else 1
    return error_response(429, [ERROR_TEXTS[429]], {"Retry-After": str(max(1, int(retry_after)))})


def service_error_response(error):
    """Render a ``ServiceError`` raised by a service."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(error.retry_after)))
    # A 503's cause is logged where it is found, once per outage (outage.DatabaseOutage), not per request.
    if error.status >= 500 and not isinstance(error, ServiceUnavailable):
        log.error("%s: %s", type(error).__name__, error.__cause__ or error.message)
    return error_response(error.status, error.errors, headers)


def database_error_response(error):
    """The database can't be reached: roll the transaction back and answer 503 with Retry-After."""
    outage.outage_of(current_app).failed(error)
    # Nothing of the request may be committed later (raised inside a unit of work, it is rolled back already).
    unit_of_work.abandon()
    unavailable = ServiceUnavailable(retry_after=current_app.config["DATABASE_RETRY_AFTER"])
    return service_error_response(unavailable)


def unexpected_error_response(error):
    """Log an unexpected exception with its request id and answer a bare 500."""
    log.exception("unhandled %s", type(error).__name__)
    return error_response(500, [ERROR_TEXTS[500]])


def register_errorhandlers(app, limiter):
    """Route every error class through the envelope (``limiter``: the app's rate limiter)."""
    app.register_error_handler(ServiceError, service_error_response)
    # Errors of the database connection, not of the SQL (those are bugs: 500).
    for database_error in outage.DATABASE_ERRORS:
        app.register_error_handler(database_error, database_error_response)
    outage.init_app(app)
    app.register_error_handler(RateLimitExceeded, functools.partial(rate_limit_response, limiter))
    app.register_error_handler(Exception, unexpected_error_response)
