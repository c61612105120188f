"""The OpenAPI spec as an exact contract: what code generators and Swagger UI read from ``/openapi.json``.

flask-smorest and apispec derive the spec from the marshmallow schemas; this apispec plugin finishes it:

- every operation gets its ``operationId`` from ``OPERATIONS`` (a route missing there gets one made of
  its method and path, and ``tests/test_contract.py`` fails until it is named here);
- every answer gets an example: success bodies inside the envelope, built from the fields' examples
  (the seeds' values), and each error with ``isSuccess: false``, its own status and the texts the
  service really sends for that operation (the seeds' texts where they have one);
- required and nullable are exact: a response schema whose fields are all ``dump_only`` always carries
  every key, so all are required; a request field's ``default`` (marshmallow's ``load_default``) is
  said in its description instead, since code generators (openapi-typescript) read a default as
  "always present" and would make an optional field required;
- timestamps are ``string``/``date-time``, email fields ``format: email``.
"""

import dataclasses
import json
import re
from http import HTTPStatus

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin

from allmine_auth.web.envelope import ERROR_TEXTS, RETRY_AFTER
from allmine_auth.web.schemas.auth import UtcTimestamp

# The seeds' delivery failure texts (``DELIVERY_MESSAGES`` of auth/otp.py, which imports too much for here).
SMS_FAILED = "SMS gönderilirken hata oluştu"
EMAIL_FAILED = "Email gönderilirken hata oluştu"
BAD_CODE = "Invalid or expired code"
# A logout Redis refused: ended in the database, a retry answers 401 (README, "Decisions").
REVOCATION_PENDING = ERROR_TEXTS[503]
EXAMPLE_TIMESTAMP = "2026-05-22T16:11:27.126Z"
ERROR_TIMESTAMP = "2026-01-15T10:30:00.000Z"
# Fields documented with a string format that their marshmallow type doesn't give (names as in the API).
EMAIL_FIELDS = {"email"}
# Fallback examples, by ``format`` then by ``type``, for properties whose field has none.
FORMAT_EXAMPLES = {
    "date-time": "2026-01-15T10:30:00.000Z",
    "date": "1995-01-15",
    "uuid": "3f9c1f9e-4a5b-4f7e-9d7a-2b1e0c9d8f11",
    "email": "john@example.com",
}
TYPE_EXAMPLES = {"boolean": True, "integer": 0, "number": 0, "string": "string", "object": {}}


@dataclasses.dataclass(frozen=True)
class Operation:
    """How one operation is named, and the error texts its examples show where the default isn't it.

    ``invalid`` is the ``field: message`` line of its 400 example, ``errors`` maps a status to the
    texts of its example (the first is the error text, the rest detail lines); a status there that the
    view doesn't list is documented too (an answer that comes from below the view, like a 503).
    """

    operation_id: str
    invalid: str | None = None
    errors: dict = dataclasses.field(default_factory=dict)


OPERATIONS = {
    ("post", "/api/v1/auth/send-otp"): Operation(
        "sendOtp", "phoneNumber: Not a valid phone number.", {500: [SMS_FAILED]}
    ),
    ("post", "/api/v1/auth/send-otp-email"): Operation(
        "sendOtpEmail", "email: Not a valid email address.", {500: [EMAIL_FAILED]}
    ),
    # A login that meets a parallel one's new account or email claim (a unique constraint) is a 409,
    # and the code stays usable for a retry: the seeds' 409 example of verify-otp.
    ("post", "/api/v1/auth/verify-otp"): Operation(
        "verifyOtp", "code: Must be 4 digits.", {401: [BAD_CODE], 409: [ERROR_TEXTS[409]]}
    ),
    ("post", "/api/v1/auth/verify-otp-email"): Operation(
        "verifyOtpEmail", "code: Must be 4 digits.", {401: [BAD_CODE], 409: [ERROR_TEXTS[409]]}
    ),
    ("post", "/api/v1/auth/refresh"): Operation(
        "refreshToken", "refreshToken: Missing data for required field.", {401: ["Token has been revoked"]}
    ),
    ("post", "/api/v1/auth/logout"): Operation(
        "logout", "scope: Must be one of: global, local, others.", {503: [REVOCATION_PENDING]}
    ),
    ("get", "/api/v1/auth/me"): Operation("getMe"),
    ("post", "/api/v1/auth/complete-registration"): Operation(
        "completeRegistration",
        "username: 3 to 30 letters, digits, '_' or '.'.",
        {409: [ERROR_TEXTS[409], "username: Already taken."]},
    ),
    ("get", "/api/v1/auth/sessions"): Operation("listSessions"),
    ("delete", "/api/v1/auth/sessions/{session_id}"): Operation(
        "deleteSession", errors={503: [REVOCATION_PENDING]}
    ),
    ("post", "/api/v1/auth/account/deletion"): Operation("requestAccountDeletion"),
    ("delete", "/api/v1/auth/account/deletion"): Operation("cancelAccountDeletion"),
    ("get", "/api/v1/live-activities"): Operation("listLiveActivities"),
    ("put", "/api/v1/live-activities/{activity_id}"): Operation(
        "putLiveActivity", "pushToken: An APNs push token: 32 to 512 hex digits."
    ),
    ("delete", "/api/v1/live-activities/{activity_id}"): Operation(
        "deleteLiveActivity", "activityId: 1 to 64 letters, digits, '.', '_', ':' or '-'."
    ),
    ("get", "/healthz"): Operation("getHealth"),
    ("get", "/readyz"): Operation(
        "getReadiness", errors={503: [ERROR_TEXTS[503], "database: not answering"]}
    ),
    ("get", "/.well-known/jwks.json"): Operation("getJwks"),
}
ANY_OTHER_ERROR = (
    "Any other error, as the envelope with its own status and texts: an unexpected failure (500), "
    "the database out (503), a method not allowed (405)."
)
# Error statuses answered with ``Retry-After`` (a limit, or a revocation Redis has not taken yet).
RETRY_STATUSES = {429, 503}


def error_example(status, errors):
    """An error envelope as the service sends it."""
    return {
        "isSuccess": False,
        "statusCode": status,
        "data": None,
        "errors": errors,
        "timestamp": ERROR_TIMESTAMP,
    }


def error_texts(operation, status):
    """The texts of ``operation``'s example for ``status``: its own, else the service's for any route."""
    if status in operation.errors:
        return list(operation.errors[status])
    if status == 400 and operation.invalid:
        return [ERROR_TEXTS[400], operation.invalid]
    return [ERROR_TEXTS.get(status, HTTPStatus(status).phrase)]


class ContractPlugin(BasePlugin):
    """apispec plugin that makes the generated spec the exact contract (see the module docstring)."""

    def init_spec(self, spec):
        """Remember the spec (for its component schemas) and teach the converter our field types."""
        self.spec = spec
        marshmallow_plugin = next(p for p in spec.plugins if isinstance(p, MarshmallowPlugin))
        marshmallow_plugin.converter.add_attribute_function(field_format)

    def schema_helper(self, name, definition, schema=None, **kwargs):
        """Exact ``required`` and defaults for one component schema (``definition`` is edited in place)."""
        properties = definition.get("properties", {})
        for prop in properties.values():
            if "default" in prop:
                default = prop.pop("default")
                if default is not None:
                    note = f"Default when left out: `{json.dumps(default)}`."
                    prop["description"] = f"{prop['description']} {note}" if "description" in prop else note
        if schema is not None and properties and all_dump_only(schema):
            definition["required"] = sorted(properties)
        return None

    def operation_helper(self, path=None, operations=None, **kwargs):
        """Name each operation and put an example on each of its answers."""
        for method, operation in operations.items():
            described = OPERATIONS.get((method, path)) or Operation(fallback_operation_id(method, path))
            operation["operationId"] = described.operation_id
            responses = operation.setdefault("responses", {})
            for status in described.errors:
                responses.setdefault(str(status), {})
            for code, response in responses.items():
                if code == "default":
                    responses[code] = error_response(500, [ERROR_TEXTS[500]], description=ANY_OTHER_ERROR)
                    continue
                status = int(code)
                if status < 400:
                    self.add_success_example(response, status)
                else:
                    responses[code] = error_response(status, error_texts(described, status))

    def add_success_example(self, response, status):
        """The envelope around the data schema's example (the envelope's own fields as the service sends)."""
        content = response.get("content", {}).get("application/json")
        if not content or "schema" not in content:
            return
        body = self.example(content["schema"])
        if isinstance(body, dict) and "isSuccess" in body:
            body = {
                "isSuccess": True,
                "statusCode": status,
                "data": body["data"],
                "errors": [],
                "timestamp": EXAMPLE_TIMESTAMP,
            }
        content["example"] = body

    def example(self, schema):
        """An example of a (converted) schema: its own, else built from its properties' examples."""
        if isinstance(schema, str):
            schema = {"$ref": schema}
        if "example" in schema:
            return schema["example"]
        if "$ref" in schema:
            return self.example(self.spec.components.schemas[schema["$ref"].rsplit("/", 1)[-1]])
        if "allOf" in schema:
            return self.example(schema["allOf"][0])
        if "properties" in schema:
            return {name: self.example(prop) for name, prop in schema["properties"].items()}
        if schema.get("type") == "array":
            return [self.example(schema.get("items", {}))]
        if schema.get("nullable") and "type" not in schema:
            return None
        return FORMAT_EXAMPLES.get(schema.get("format"), TYPE_EXAMPLES.get(schema.get("type")))


def fallback_operation_id(method, path):
    """A name for an operation ``OPERATIONS`` lacks: ``post /api/v1/a-b/{c}`` is ``postApiV1ABC``."""
    words = re.findall(r"[A-Za-z0-9]+", path)
    return method + "".join(word[:1].upper() + word[1:] for word in words)


def error_response(status, errors, description=None):
    """A documented error answer: the error envelope, with an example of this operation's texts."""
    response = {
        "description": description or HTTPStatus(status).phrase,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorEnvelope"},
                "example": error_example(status, errors),
            }
        },
    }
    if status in RETRY_STATUSES:
        response["headers"] = dict(RETRY_AFTER)
    return response


def all_dump_only(schema):
    """Whether ``schema`` (a class or instance) only describes answers: then every key is always sent."""
    fields = schema._declared_fields if isinstance(schema, type) else schema.fields
    return bool(fields) and all(field.dump_only for field in fields.values())


def field_format(self, field, ret, **kwargs):
    """Converter attribute function: the string formats marshmallow's types don't say."""
    if isinstance(field, UtcTimestamp):
        return {"type": "string", "format": "date-time"}
    if field.name in EMAIL_FIELDS and ret.get("type") == "string":
        return {"format": "email"}
    return {}
