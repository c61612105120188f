"""Request ids and logging: every log line of a request carries its id, which the client sees too."""

import json
import logging
import os
import re

from flask import g, has_request_context, request

from allmine_auth.privacy import mask_text

REQUEST_ID_HEADER = "X-Request-ID"
# Ours, and flask-limiter's (it says when its Redis storage fails and it falls back to memory).
SERVICE_LOGGERS = ("allmine_auth", "flask-limiter")
# Matched whole (``fullmatch``): with ``re.match``, ``$`` would let a final newline into a response header.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id():
    """The current request's id, or ``-`` outside a request."""
    if has_request_context():
        return getattr(g, "request_id", "-")
    return "-"


def new_request_id():
    """A random version-4 UUID as ``uuid.uuid4().hex`` writes it, a quarter of its CPU.

    The same 16 random bytes with the version and variant bits set; ``UUID``'s constructor
    and its checks are most of ``uuid4().hex``'s cost, on every request.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def assign_request_id():
    """Take a sane incoming ``X-Request-ID`` or make one."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else new_request_id()


def expose_request_id(response):
    """Return the request id to the client so support can find the log lines (an ``after_request``
    hook: always in a request, so ``g`` is read without asking ``has_request_context``)."""
    response.headers[REQUEST_ID_HEADER] = getattr(g, "request_id", "-")
    return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record."""

    def filter(self, record):
        record.request_id = request_id()
        return True


class PersonalDataFilter(logging.Filter):
    """Masks every phone number and email address left in a record (KVKK, GDPR): the net under all call sites.

    Call sites mask what they log (``privacy.mask_destination``); this catches
    what they forget and what arrives inside an exception's text (an SMTP
    refusal names its recipient). The record is rewritten in place, message
    and traceback, so every handler after this one (plain, JSON, a test's
    capture) sees only the masked text.
    """

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a log call with bad arguments must not fail the request or leak)
            message = f"{record.msg!s} (arguments: {record.args!r})"
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            # The text PersonalDataFilter masked, when it ran.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ServiceLogHandler(logging.StreamHandler):
    """The service's own stderr handler (marked so a second app replaces it instead of doubling it)."""


def configure_logging(app):
    """Log to stderr, plain or JSON lines (``LOG_JSON``), with the request id on each line.

    No line shows a full phone number or email address (``PersonalDataFilter``).
    """
    handler = ServiceLogHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(PersonalDataFilter())
    if app.config["LOG_JSON"]:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [each for each in logger.handlers if isinstance(each, ServiceLogHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(app.config["LOG_LEVEL"])
        logger.propagate = False
    app.before_request(assign_request_id)
    app.after_request(expose_request_id)
