"""The Flask extensions every layer uses, created here with no app; ``create_app`` binds them.

The web layer's own (the smorest ``api``, the rate ``limiter``) are made in ``web/blueprint.py`` and
``web/limits.py``: this module imports no layer above the store.
"""

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from allmine_auth.fast_paths import CachingJWTManager


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


# Objects stay readable after a commit without another SELECT: a request never needs the reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# flask-jwt-extended's manager (the rules mint tokens with it); it keeps verified tokens only for apps
# with the fast paths (fast_paths.py).
jwt = CachingJWTManager()
