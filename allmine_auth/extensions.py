"""The Flask extensions, created here with no app; ``create_app`` binds them."""

from flask.globals import request_ctx
from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from allmine_auth.web.envelope import Api
from allmine_auth.web.jwt_cache import CachingJWTManager
from allmine_auth.web.netutil import client_ip
from allmine_auth.web.openapi import ContractPlugin


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


# Objects stay readable after a commit without another SELECT: a request never needs the reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# The plugin finishes the spec as the exact contract (operationIds, examples, required, formats).
api = Api(spec_kwargs={"extra_plugins": [ContractPlugin()]})
jwt = CachingJWTManager()


class RouteLimiter(Limiter):
    """flask-limiter for per-route limits only (``limiter.limit``/``shared_limit`` on the views).

    Those are checked by the decorators themselves. flask-limiter also checks
    every request in a ``before_request`` hook, for default and application-wide
    limits; this service sets none, so the hook is taken out again (it cost
    GET /me about a tenth of its CPU). Configure ``RATELIMIT_DEFAULT``,
    ``RATELIMIT_APPLICATION`` or ``RATELIMIT_META`` and it stays (a limit on a
    whole blueprint would need it too: there are none).

    Its ``after_request`` (rate-limit headers, ``deduct_when`` deductions) and
    ``teardown_request`` (forgetting the request's limits) hooks only have work
    in a request whose limits were checked; they are skipped in the others.
    """

    GLOBAL_LIMITS = ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")

    def init_app(self, app):
        super().init_app(app)
        if not any(app.config.get(name) for name in self.GLOBAL_LIMITS):
            hooks = app.before_request_funcs.get(None, [])
            hooks[:] = [hook for hook in hooks if hook != self._check_request_limit]
        for hooks in (app.after_request_funcs.get(None, []), app.teardown_request_funcs.get(None, [])):
            hooks[:] = [self._only_where_limited(hook) if self._is_own(hook) else hook for hook in hooks]

    def _is_own(self, hook):
        """Whether ``hook`` is this limiter's ``after_request`` or ``teardown_request`` hook."""
        if hook == self._Limiter__release_context:
            return True
        return getattr(hook, "func", None) is Limiter._Limiter__inject_headers and hook.args == (self,)

    def _only_where_limited(self, hook):
        """``hook``, run only in requests where this limiter checked a limit (noted on the context)."""

        def where_limited(value):
            if self in getattr(request_ctx, "_limiter_request_context", ()):
                return hook(value)
            return value

        return where_limited


limiter = RouteLimiter(key_func=client_ip)
