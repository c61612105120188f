"""flask-jwt-extended's loaders: a token is revoked when its session is over; every refusal is an envelope.

Every token's claims must have the shape this service mints (``check_claims``): a token signed with
the real key but with claims of another shape (a leaked key, a token of another service sharing it)
is refused with 401 before any code reads its claims. The check is the decode-key loader, which
flask-jwt-extended calls on every decode (requests and ``decode_token`` alike), with or without
the fast paths.
"""

import math
import re

from flask import current_app, request
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.exceptions import JWTDecodeError

from allmine_auth.extensions import jwt
from allmine_auth.models import utcnow
from allmine_auth.rules.profiles import PROFILE_CACHE_PREFIX
from allmine_auth.rules.sessions import session_expiry
from allmine_auth.web.envelope import error_response

TOKEN_TYPES = ("access", "refresh")
# Ids as ``str(uuid.UUID)`` writes them: one spelling per id, so one session is one cache key.
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_claims(claims):
    """Return ``claims`` if they have the shape of this service's tokens, else raise ``JWTDecodeError``.

    ``exp`` a finite number, ``sub`` and ``sid`` canonical UUID strings, ``jti``
    a non-empty string, ``type`` ``access`` or ``refresh``. The views and the
    session check read them without looking again (flask-jwt-extended renders
    the error as 401 "Missing or invalid token").
    """
    exp, jti = claims.get("exp"), claims.get("jti")
    if not (
        isinstance(exp, int | float)
        and not isinstance(exp, bool)
        and math.isfinite(exp)
        and all(
            isinstance(claims.get(name), str) and CANONICAL_UUID.fullmatch(claims[name])
            for name in ("sub", "sid")
        )
        and isinstance(jti, str)
        and jti
        and claims.get("type") in TOKEN_TYPES
    ):
        raise JWTDecodeError("The token's claims are not those of this service")
    return claims


def prefetches_profile(view):
    """View decorator (in a ``Resource``'s ``decorators``): the token check of this endpoint also
    fetches the caller's cached profile, in the same Redis round trip as the session state (GET /me)."""
    view.prefetches_profile = True
    return view


def register_jwt_callbacks(app):
    """Override flask-jwt-extended's loaders: the claims check, revocation by session, envelope errors.

    There is no user loader: the views that need the user load it themselves
    (GET /me from the profile cache), so other calls don't pay for it.
    """

    @jwt.decode_key_loader
    def key_for_our_claims(jwt_header, jwt_payload):
        # The claims are not verified yet: a token whose signature then fails is refused anyway.
        check_claims(jwt_payload)
        return default_decode_key_callback(jwt_header, jwt_payload)

    @jwt.token_in_blocklist_loader
    def session_is_over(jwt_header, jwt_payload):
        view = current_app.view_functions.get(request.endpoint)
        wanted = getattr(view, "prefetches_profile", False)
        prefetch = (PROFILE_CACHE_PREFIX + jwt_payload["sub"],) if wanted else ()
        return session_expiry(jwt_payload["sid"], prefetch) <= utcnow().timestamp()

    @jwt.expired_token_loader
    def expired(jwt_header, jwt_payload):
        return error_response(401, ["Token has expired"])

    @jwt.revoked_token_loader
    def revoked(jwt_header, jwt_payload):
        return error_response(401, ["Token has been revoked"])

    def missing_or_invalid(*args):
        return error_response(401, ["Missing or invalid token"])

    jwt.invalid_token_loader(missing_or_invalid)
    jwt.unauthorized_loader(missing_or_invalid)
    jwt.needs_fresh_token_loader(missing_or_invalid)
    jwt.token_verification_failed_loader(missing_or_invalid)
