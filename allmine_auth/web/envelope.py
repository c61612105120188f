"""The one response envelope, and the glue that puts every response in it.

Every answer is ``{isSuccess, statusCode, data, errors, timestamp}``
(``docs/API.md``). Success bodies are wrapped by ``Blueprint``; every
error, whatever layer raised it, is rendered by ``error_response``.
"""

import functools
import json
import logging
import math
import time
from datetime import UTC, datetime
from http import HTTPStatus

import flask_smorest
import marshmallow as ma
from flask import current_app, g, jsonify
from flask.json.provider import DefaultJSONProvider
from flask_limiter.errors import RateLimitExceeded
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from allmine_auth.errors import CONFLICT_MESSAGE, ServiceError, ServiceUnavailable
from allmine_auth.store import outage

log = logging.getLogger(__name__)

ERROR_TEXTS = {
    400: "Validation failed",
    401: "Missing or invalid token",
    403: "Forbidden",
    404: "Resource not found",
    405: "Method not allowed",
    409: CONFLICT_MESSAGE,
    413: "Request body too large",
    415: "Request body must be JSON (Content-Type: application/json)",
    428: "Attestation required",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
ARGUMENT_LOCATIONS = {"json", "query", "querystring", "headers", "path", "view_args", "form"}


def utc_timestamp(moment=None):
    """Format ``moment`` (default: now) as UTC with milliseconds and a ``Z``."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def envelope(status, data=None, errors=()):
    """Return the envelope dict for ``status`` with ``data`` or ``errors``."""
    return {
        "isSuccess": 200 <= status < 400,
        "statusCode": status,
        "data": data,
        "errors": list(errors),
        "timestamp": utc_timestamp(),
    }


def envelope_response(status, data=None, errors=(), headers=None):
    """Render the envelope as a Flask response."""
    response = jsonify(envelope(status, data, errors))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# Stands for the ``data`` of an envelope whose data is already JSON text (only our own values are around it).
RAW_DATA = "\x00allmine-raw-data\x00"


def raw_envelope_response(status, data_json):
    """The envelope around ``data_json``, already-serialized JSON (a cached body), not parsed again."""
    dumps = current_app.json.dumps
    body = dumps(envelope(status, RAW_DATA)).replace(dumps(RAW_DATA), data_json, 1)
    return current_app.response_class(body + "\n", status=status, mimetype=current_app.json.mimetype)


def error_response(status, errors, headers=None):
    """Render an error envelope as a Flask response."""
    return envelope_response(status, None, errors, headers)


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


def rate_limit_response(error):
    """flask-limiter's 429, with ``Retry-After`` from the breached limit's window.

    The limiter's own ``X-RateLimit-*`` headers are off: they cost a storage
    read per limit on every request; this reads the window only on a 429.
    """
    from allmine_auth.extensions import limiter

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
    """The database can't be reached: roll the request's transaction back and answer 503 with Retry-After."""
    from allmine_auth.extensions import db

    outage.outage_of(current_app).failed(error)
    # Nothing of the request may be committed later; on a dead connection the rollback itself can fail,
    # and the connection is already invalidated then.
    try:
        db.session.rollback()
    except outage.DATABASE_ERRORS:
        log.debug("rollback after a database failure failed too", exc_info=True)
    unavailable = ServiceUnavailable(retry_after=current_app.config["DATABASE_RETRY_AFTER"])
    return service_error_response(unavailable)


def unexpected_error_response(error):
    """Log an unexpected exception with its request id and answer a bare 500."""
    log.exception("unhandled %s", type(error).__name__)
    return error_response(500, [ERROR_TEXTS[500]])


def register_errorhandlers(app):
    """Route every error class through the envelope."""
    app.register_error_handler(ServiceError, service_error_response)
    # Errors of the database connection, not of the SQL (those are bugs: 500).
    for database_error in outage.DATABASE_ERRORS:
        app.register_error_handler(database_error, database_error_response)
    outage.init_app(app)
    app.register_error_handler(RateLimitExceeded, rate_limit_response)
    app.register_error_handler(Exception, unexpected_error_response)


def refuse_constant(name):
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


def finite_float(text):
    """A JSON number as a float; one too large for a float (``1e999``, read as infinity) is refused."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


# Built once: ``json.loads`` with hooks would build a decoder per request.
STRICT_JSON = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float)


class JsonArgumentsParser(FlaskParser):
    """webargs parser: bad input is a 400, a body that is not JSON a 415.

    The body is read as strict JSON; whatever the parser can't hold (nesting
    deeper than the recursion limit, an integer longer than Python's
    int-string limit, ``NaN``, a float out of range) is ``body: Malformed
    JSON`` like any other syntax error, not an exception that escapes as 500.
    """

    DEFAULT_VALIDATION_STATUS = 400
    # Unknown fields are refused everywhere, the query string too (webargs would drop them there, and a
    # typo like ``logout?scpe=local`` would quietly become a global logout).
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }

    def load_json(self, req, schema):
        """Refuse a non-JSON body with 415 before trying to read it."""
        if (req.content_length or req.mimetype) and not req.is_json:
            raise UnsupportedMediaType()
        return super().load_json(req, schema)

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        try:
            return STRICT_JSON.decode(req.get_data(cache=True).decode())
        except json.JSONDecodeError:
            raise  # webargs reads an empty body as no body, any other as malformed
        except (ValueError, RecursionError) as exc:  # not UTF-8, too deep, a number out of range
            return self._handle_invalid_json_error(exc, req)

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise ServiceError("body: Malformed JSON")


class EnvelopeJSONProvider(DefaultJSONProvider):
    """JSON in the envelope's own key order (``isSuccess`` first), compact."""

    sort_keys = False
    compact = True

    def dumps(self, obj, **kwargs):
        """Compact here too (Flask makes only ``response()`` compact): cached bodies look like the rest."""
        kwargs.setdefault("separators", (",", ":"))
        return super().dumps(obj, **kwargs)


class EnvelopeSchema(ma.Schema):
    """Documentation of the envelope around every response."""

    isSuccess = ma.fields.Boolean(required=True, metadata={"enum": [True]})
    statusCode = ma.fields.Integer(required=True)
    errors = ma.fields.List(ma.fields.String(), required=True)
    timestamp = ma.fields.String(
        required=True, metadata={"example": "2026-05-22T16:11:27.126Z", "format": "date-time"}
    )


class ErrorEnvelopeSchema(EnvelopeSchema):
    """An error: ``data`` is null, ``errors`` starts with the error text."""

    # Examples of an error (Swagger UI shows them for answers that have no example of their own).
    isSuccess = ma.fields.Boolean(required=True, metadata={"enum": [False], "example": False})
    statusCode = ma.fields.Integer(required=True, metadata={"example": 500})
    data = ma.fields.Raw(allow_none=True, required=True, metadata={"enum": [None], "example": None})
    errors = ma.fields.List(ma.fields.String(), required=True, metadata={"example": [ERROR_TEXTS[500]]})


RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}


@functools.cache
def envelope_schema_for(schema_class, many=False):
    """Return the documented envelope schema whose ``data`` is ``schema_class``."""
    name = schema_class.__name__.removesuffix("Schema") + ("List" if many else "") + "EnvelopeSchema"
    data = ma.fields.Nested(schema_class, many=many, required=True)
    return type(name, (EnvelopeSchema,), {"data": data})


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest blueprint that wraps its one success response in the envelope."""

    ARGUMENTS_PARSER = JsonArgumentsParser()

    def response(self, status_code, schema=None, **kwargs):
        """Like flask-smorest's, and remember the status for the envelope."""
        smorest_decorator = super().response(status_code, schema, **kwargs)
        status = int(status_code)

        def decorator(func):
            @functools.wraps(func)
            def with_status(*args, **kw):
                g.envelope_status = status
                return func(*args, **kw)

            return smorest_decorator(with_status)

        return decorator

    def errors(self, *codes):
        """Document the error envelopes an operation can answer (each status listed, not only ``default``)."""

        def decorator(func):
            for code in codes:
                if code == 429:
                    func = self.alt_response(
                        429, schema=ErrorEnvelopeSchema, description="Too Many Requests", headers=RETRY_AFTER
                    )(func)
                else:
                    func = self.alt_response(code, response=HTTPStatus(code).name)(func)
            return func

        return decorator

    def _prepare_response_content(self, data):
        return envelope(g.envelope_status, data)

    @staticmethod
    def _make_doc_response_schema(schema):
        schema_class = schema if isinstance(schema, type) else type(schema)
        if schema is None or issubclass(schema_class, EnvelopeSchema):
            return schema
        if isinstance(schema, ma.Schema):
            return envelope_schema_for(type(schema), schema.many)
        return envelope_schema_for(schema)


class Api(flask_smorest.Api):
    """flask-smorest ``Api`` whose error handler renders the envelope."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def handle_http_exception(self, error):
        """Every ``HTTPException`` becomes the envelope."""
        return http_error_response(error)
