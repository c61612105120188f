"""Cross-origin calls from browser apps (``CORS_ORIGINS``, flask-cors); off by default.

Off, the API has no OPTIONS at all: an ``OPTIONS`` request is answered like
any method a path doesn't have, with the 405 envelope (Flask would answer an
empty HTML 200 of its own). On, a browser's preflight from a listed origin is
answered by flask-cors, and every other ``OPTIONS`` is still the 405 envelope.
Tokens travel in the ``Authorization`` header, never in cookies, so no
credentials mode is needed.
"""

from flask import current_app, request
from flask_cors import CORS
from werkzeug.exceptions import MethodNotAllowed

ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Request-ID", "X-Device-Name", "X-Client-Attestation"]
EXPOSED_HEADERS = ["Retry-After", "X-Request-ID"]
PREFLIGHT_MAX_AGE = 600
API_PATHS = "/api/"


def init_app(app):
    """Answer preflights from ``CORS_ORIGINS`` (before the routes are registered); else no OPTIONS."""
    origins = app.config["CORS_ORIGINS"]
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = bool(origins)
    if not origins:
        return
    CORS(
        app,
        resources={f"{API_PATHS}*": {"origins": origins}},
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )
    app.extensions["allmine_cors_origins"] = set(origins)
    app.before_request(refuse_other_options)


def is_allowed_preflight(origins):
    """Whether the request is a CORS preflight for an API path from one of ``origins``."""
    return (
        request.path.startswith(API_PATHS)
        and "Access-Control-Request-Method" in request.headers
        and ("*" in origins or request.headers.get("Origin") in origins)
    )


def refuse_other_options():
    """``before_request``: an ``OPTIONS`` that is not an allowed preflight is the 405 envelope."""
    if request.method != "OPTIONS":
        return
    if not is_allowed_preflight(current_app.extensions["allmine_cors_origins"]):
        methods = request.url_rule.methods - {"OPTIONS"} if request.url_rule is not None else ()
        raise MethodNotAllowed(valid_methods=sorted(methods))
