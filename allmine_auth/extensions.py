"""The Flask extensions, created here with no app; ``create_app`` binds them."""

from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from allmine_auth.envelope import Api
from allmine_auth.netutil import client_ip


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


# Objects stay readable after a commit without another SELECT: a request never needs the reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
api = Api()
jwt = JWTManager()
limiter = Limiter(key_func=client_ip)
