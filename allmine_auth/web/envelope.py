"""The one response envelope: ``{isSuccess, statusCode, data, errors, timestamp}`` (``docs/API.md``).

Success bodies are wrapped by ``web.blueprint.Blueprint``; every error, whatever layer raised it, is
rendered by ``web.error_handlers``. A body whose ``data`` is already JSON text (a cached profile) is a
``RawJSON`` value, written into the envelope as it is.
"""

import functools
from datetime import UTC, datetime

import marshmallow as ma
from flask import current_app, jsonify

from allmine_auth.errors import CONFLICT_MESSAGE

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
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}


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


class RawJSON(str):
    """JSON text that is already serialized (a cached body): the envelope's ``data``, written as it is.

    A view returns ``RawJSON(text)`` where it holds its answer as JSON already; ``envelope_response``
    puts it in the envelope without parsing it again. Only text this service wrote may be wrapped.
    """


def raw_envelope_json(status, data):
    """The envelope around ``data`` (a ``RawJSON``) as compact JSON text, in the envelope's key order."""
    dumps = current_app.json.dumps
    success = "true" if 200 <= status < 400 else "false"
    return (
        f'{{"isSuccess":{success},"statusCode":{status},"data":{data},'
        f'"errors":[],"timestamp":{dumps(utc_timestamp())}}}'
    )


def envelope_response(status, data=None, errors=(), headers=None):
    """Render the envelope as a Flask response (``data`` may be a ``RawJSON``)."""
    if isinstance(data, RawJSON):
        response = current_app.response_class(
            raw_envelope_json(status, data) + "\n", mimetype=current_app.json.mimetype
        )
    else:
        response = jsonify(envelope(status, data, errors))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(status, errors, headers=None):
    """Render an error envelope as a Flask response."""
    return envelope_response(status, None, errors, headers)


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


@functools.cache
def envelope_schema_for(schema_class, many=False):
    """Return the documented envelope schema whose ``data`` is ``schema_class``."""
    name = schema_class.__name__.removesuffix("Schema") + ("List" if many else "") + "EnvelopeSchema"
    data = ma.fields.Nested(schema_class, many=many, required=True)
    return type(name, (EnvelopeSchema,), {"data": data})
