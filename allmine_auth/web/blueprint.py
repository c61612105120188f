"""flask-smorest's ``Api`` and ``Blueprint`` for this service, and the webargs parser they read with.

The blueprint wraps each view's one success response in the envelope and documents its error
envelopes; the parser reads strict JSON and refuses unknown fields; the ``Api`` renders every
``HTTPException`` as the envelope.
"""

import functools
import json
from http import HTTPStatus

import flask_smorest
import marshmallow as ma
from flask import g
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from allmine_auth.errors import ServiceError
from allmine_auth.web.envelope import (
    RETRY_AFTER,
    EnvelopeSchema,
    ErrorEnvelopeSchema,
    envelope,
    envelope_schema_for,
)
from allmine_auth.web.error_handlers import http_error_response
from allmine_auth.web.json import STRICT_JSON
from allmine_auth.web.openapi import ContractPlugin


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


# The plugin finishes the spec as the exact contract (operationIds, examples, required, formats).
api = Api(spec_kwargs={"extra_plugins": [ContractPlugin()]})
