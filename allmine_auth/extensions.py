"""The Flask extensions, created here with no app; ``create_app`` binds them."""

from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from allmine_auth.fast_paths import CachingJWTManager
from allmine_auth.web.blueprint import Api
from allmine_auth.web.netutil import client_ip
from allmine_auth.web.openapi import ContractPlugin


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


# Objects stay readable after a commit without another SELECT: a request never needs the reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# The plugin finishes the spec as the exact contract (operationIds, examples, required, formats).
api = Api(spec_kwargs={"extra_plugins": [ContractPlugin()]})
# flask-jwt-extended's manager; it keeps verified tokens only for apps with the fast paths (fast_paths.py).
jwt = CachingJWTManager()
# Per-route limits only (``limiter.limit``/``shared_limit`` on the views); no default limits.
limiter = Limiter(key_func=client_ip)
