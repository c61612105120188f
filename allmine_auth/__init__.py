"""allmine_auth: phone and email one-time-code login, JWT sessions, for the Allmine apps."""

import os

from flask import Flask
from swagger_ui_bundle import swagger_ui_path
from werkzeug.middleware.proxy_fix import ProxyFix

from allmine_auth import fast_paths
from allmine_auth.config import BASE_DIR, config_for, settings_for
from allmine_auth.web.json import EnvelopeJSONProvider


def create_app(config_class=None, *, migrations=True):
    """Build the app for ``config_class`` (default: the one ``APP_ENV`` names, else development).

    The settings are read from the environment here, each time (``settings_for``), and checked.
    ``migrations=False`` leaves out Flask-Migrate (``flask db``), which a web worker never needs.
    """
    if config_class is None or isinstance(config_class, str):
        config_class = config_for(config_class or os.environ.get("APP_ENV", "development"))
    settings = settings_for(config_class)
    app = Flask(__name__, instance_path=str(BASE_DIR / "instance"))
    app.json = EnvelopeJSONProvider(app)
    app.config.from_mapping(settings)
    register_middleware(app)
    register_extensions(app, migrations)
    fast_paths.install(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_middleware(app):
    """Logging with request ids, Prometheus metrics, and the trusted proxy count for the client IP."""
    from allmine_auth import metrics
    from allmine_auth.observability import configure_logging

    # Metrics first: its timer is the first before_request hook, so the latency includes the others.
    metrics.init_app(app)
    configure_logging(app)
    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"])


def register_extensions(app, migrations):
    """Bind the extensions created in ``extensions`` and the web layer's (``api``, ``limiter``)."""
    from allmine_auth import (
        cache,
        models,  # noqa: F401  (the models must be known to Alembic)
        notify,
    )
    from allmine_auth.extensions import db, jwt
    from allmine_auth.rules import profiles
    from allmine_auth.web import cors
    from allmine_auth.web.blueprint import api
    from allmine_auth.web.jwt import register_jwt_callbacks
    from allmine_auth.web.limits import limiter
    from allmine_auth.web.routes import keys

    os.makedirs(app.instance_path, exist_ok=True)
    db.init_app(app)
    if migrations:
        # Alembic is only for ``flask db``: the web workers don't import it (about 12 MB each).
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(BASE_DIR / "migrations"))
    api.init_app(app)
    keys.init_app(app)
    jwt.init_app(app)
    register_jwt_callbacks(app)
    limiter.init_app(app)
    cache.init_app(app)
    cache.register_session_hooks(db.session)
    profiles.register_session_hooks(db.session)
    notify.init_app(app)
    cors.init_app(app)


def register_blueprints(app):
    """The API blueprints (documented) and the Swagger UI assets."""
    from flask import Blueprint

    from allmine_auth.web.blueprint import api
    from allmine_auth.web.routes.auth import blp as auth_blp
    from allmine_auth.web.routes.health import blp as health_blp
    from allmine_auth.web.routes.keys import blp as keys_blp
    from allmine_auth.web.routes.live_activities import blp as live_activities_blp

    api.register_blueprint(auth_blp)
    api.register_blueprint(live_activities_blp)
    api.register_blueprint(health_blp)
    api.register_blueprint(keys_blp)
    app.register_blueprint(
        Blueprint(
            "swagger_ui_assets", __name__, static_folder=str(swagger_ui_path), static_url_path="/docs/assets"
        )
    )


def register_errorhandlers(app):
    """Every error, from any layer, rendered as the envelope."""
    from allmine_auth.web.error_handlers import register_errorhandlers as register
    from allmine_auth.web.limits import limiter

    register(app, limiter)


def register_commands(app):
    """``flask seed``, ``flask purge`` and friends."""
    from allmine_auth.cli import register_commands as register

    register(app)
