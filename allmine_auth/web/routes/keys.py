"""Token signing keys and the public JWKS.

HS256 with ``JWT_SECRET_KEY`` is the default. With an asymmetric algorithm
(``JWT_ALGORITHM=RS256`` or ``EdDSA``) the private key signs and the public
key is published at ``/.well-known/jwks.json``, so the other Allmine
services can check tokens without holding the secret.
"""

import base64
import hashlib
import json
from pathlib import Path

import flask_smorest
import jwt as pyjwt
import marshmallow as ma
from cryptography.hazmat.primitives import serialization
from flask import current_app
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

from allmine_auth.config import ASYMMETRIC_JWT_ALGORITHMS as ASYMMETRIC
from allmine_auth.config import ConfigError
from allmine_auth.extensions import jwt
from allmine_auth.web.resource import Resource

SYMMETRIC = {"HS256", "HS384", "HS512"}
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}

blp = flask_smorest.Blueprint("Keys", __name__, description="Public keys for checking access tokens.")


def read_key_file(setting, path):
    """Read a PEM file named by ``setting``, failing at start-up with a one-line reason."""
    if not path:
        raise ConfigError(f"{setting} must name a PEM file when JWT_ALGORITHM is asymmetric")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from exc


def thumbprint(jwk):
    """The RFC 7638 thumbprint of ``jwk``: its ``kid``."""
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(algorithm, public_pem):
    """The public key as a JWK with ``kid``, ``use`` and ``alg``."""
    public_key = serialization.load_pem_public_key(public_pem)
    jwk = json.loads(get_default_algorithms()[algorithm].to_jwk(public_key))
    return {**jwk, "kid": thumbprint(jwk), "use": "sig", "alg": algorithm}


def init_app(app):
    """Load the signing keys for the configured algorithm and build the JWKS."""
    algorithm = app.config["JWT_ALGORITHM"]
    if algorithm in SYMMETRIC:
        app.extensions["allmine_jwks"] = {"keys": []}
        return
    if algorithm not in ASYMMETRIC:
        raise ConfigError(f"JWT_ALGORITHM must be one of {', '.join(sorted(SYMMETRIC | ASYMMETRIC))}")
    private_pem = read_key_file("JWT_PRIVATE_KEY_FILE", app.config["JWT_PRIVATE_KEY_FILE"])
    try:
        private_key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key") from exc
    try:
        pyjwt.encode({}, private_pem, algorithm=algorithm)
    except (InvalidKeyError, TypeError, ValueError, AttributeError) as exc:
        kind = type(private_key).__name__.removeprefix("_")
        raise ConfigError(f"JWT_PRIVATE_KEY_FILE holds a {kind}, which can't sign {algorithm}") from exc
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app.config["JWT_PRIVATE_KEY"] = private_pem
    app.config["JWT_PUBLIC_KEY"] = public_pem
    jwk = public_jwk(algorithm, public_pem)
    app.extensions["allmine_jwks"] = {"keys": [jwk]}
    app.extensions["allmine_jwt_headers"] = {"kid": jwk["kid"]}


@jwt.additional_headers_loader
def key_id_header(identity):
    """Name the signing key (``kid``) in every token's header when keys are published."""
    return current_app.extensions.get("allmine_jwt_headers", {})


class JwksSchema(ma.Schema):
    """The key set; empty when tokens are signed with a shared secret (HS256)."""

    keys = ma.fields.List(ma.fields.Dict(), required=True)


@blp.route("/.well-known/jwks.json")
class Jwks(Resource):
    """The public keys that sign access tokens."""

    @blp.response(200, JwksSchema)
    def get(self):
        """JSON Web Key Set (RFC 7517), not wrapped in the envelope so JWT libraries can read it"""
        return current_app.extensions["allmine_jwks"]
