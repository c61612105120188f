"""Every answer the suite's test clients get must match the spec: the spec can't drift from the code.

``record`` listens to Flask's ``request_finished`` signal (sent for every response of every app in this
process, whatever rendered it), and the autouse fixture ``conforms_to_spec`` checks what a test's
requests got, after the test, against ``/openapi.json``: the body against the schema documented for
that path, method and status, with ``jsonschema_rs`` and formats checked. A status the operation
doesn't document is a failure too, except those any operation may answer (``ANY_OPERATION``, checked
against its ``default`` error). Answers of routes outside the spec (``/docs``, ``/metrics``) are not
checked; a JSON answer without a route (an unknown path, a method not allowed) must be the error
envelope.

The spec is OpenAPI 3.0: ``nullable: true`` becomes JSON Schema's ``null`` type here. Validators are
compiled once per schema and kept for the session.
"""

import copy
import re
import threading

import flask
import jsonschema_rs
import pytest

ERROR_REF = "#/components/schemas/ErrorEnvelope"
RULE_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Answers any operation may give without listing them (its ``default`` error): an unexpected failure,
# the database out (503), and a rate limit an operator sets on every route (``RATELIMIT_DEFAULT``).
ANY_OPERATION = {429, 500, 503}


class SpecChecker:
    """The spec as JSON Schema validators, compiled on first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.responses = []
        self.spec = None
        self.validators = {}

    def record(self, sender, response, **extra):
        """``request_finished`` receiver: keep what this response needs for the check."""
        if not response.is_json:
            return
        rule = flask.request.url_rule
        self.responses.append(
            (
                flask.request.method,
                rule.rule if rule else None,
                flask.request.path,
                response.status_code,
                response.get_json(silent=True),
            )
        )

    def load_spec(self):
        """The app's spec, once (every test app documents the same operations)."""
        from allmine_auth.web.blueprint import api

        with self.lock:
            if self.spec is None:
                spec = api.spec.to_dict()
                self.schemas = {
                    "components": {"schemas": nullable_to_null(copy.deepcopy(spec["components"]["schemas"]))}
                }
                self.spec = spec
        return self.spec

    def validator(self, schema):
        """A compiled validator of ``schema`` (a converted spec schema, ``$ref``s into the components)."""
        key = repr(schema)
        if key not in self.validators:
            document = {**self.schemas, **nullable_to_null(copy.deepcopy(schema))}
            self.validators[key] = jsonschema_rs.Draft202012Validator(document, validate_formats=True)
        return self.validators[key]

    def problems(self, responses):
        """What's wrong with ``responses`` (a list of texts, empty when they all match the spec)."""
        if not responses:
            return []  # a test that sent nothing may run before any app (and so any spec) was built
        spec = self.load_spec()
        found = []
        for method, rule, path, status, body in responses:
            schema = self.schema_for(spec, method, rule, status)
            if isinstance(schema, str):
                found.append(f"{method} {path} -> {status}: {schema}")
                continue
            if schema is None:
                continue
            errors = [
                f"{'/'.join(map(str, e.instance_path))}: {e.message}"
                for e in self.validator(schema).iter_errors(body)
            ]
            if errors:
                found.append(f"{method} {path} -> {status}: {errors[:5]} in {body!r:.500}")
        return found

    @staticmethod
    def schema_for(spec, method, rule, status):
        """The documented schema of this answer; ``None`` when not checked; a text when undocumented."""
        if rule is None:
            return {"$ref": ERROR_REF} if status >= 400 else None
        operation = spec["paths"].get(RULE_PARAMETER.sub(r"{\1}", rule), {}).get(method.lower())
        if operation is None:
            return {"$ref": ERROR_REF} if status >= 400 else None
        responses = operation["responses"]
        response = responses.get(str(status))
        if response is None:
            if status not in ANY_OPERATION:
                return f"status not documented (documented: {sorted(responses)})"
            response = responses["default"]
        if "$ref" in response:
            response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        content = response.get("content", {}).get("application/json")
        return content["schema"] if content else "JSON answer documented without a JSON body"


def nullable_to_null(node):
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema: ``null`` added to the type (or as an alternative)."""
    if isinstance(node, list):
        return [nullable_to_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: nullable_to_null(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        if "type" in node:
            node["type"] = [node["type"], "null"]
        elif "$ref" in node or "allOf" in node:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


CHECKER = SpecChecker()
flask.request_finished.connect(CHECKER.record)


@pytest.fixture(autouse=True)
def conforms_to_spec():
    """After each test: every JSON answer its requests got matches the spec."""
    CHECKER.responses.clear()
    yield
    responses = list(CHECKER.responses)
    CHECKER.responses.clear()
    problems = CHECKER.problems(responses)
    if problems:
        pytest.fail("answers that don't match /openapi.json:\n" + "\n".join(problems), pytrace=False)
