"""flask-jwt-extended's loaders: a token is revoked when its session is over; every refusal is an envelope."""

from flask import current_app, request

from allmine_auth.extensions import jwt
from allmine_auth.models import utcnow
from allmine_auth.rules.profiles import PROFILE_CACHE_PREFIX
from allmine_auth.rules.sessions import session_expiry
from allmine_auth.web.envelope import error_response


def register_jwt_callbacks(app):
    """Override flask-jwt-extended's loaders: revocation by session, and envelope errors.

    There is no user loader: the views that need the user load it themselves
    (GET /me from the profile cache), so other calls don't pay for it.
    """

    @jwt.token_in_blocklist_loader
    def session_is_over(jwt_header, jwt_payload):
        sid = jwt_payload.get("sid")
        if not sid:
            return True
        # A view that shows the cached profile (GET /me) gets it in the same Redis round trip.
        view = getattr(current_app.view_functions.get(request.endpoint), "view_class", None)
        wanted = getattr(view, "reads_profile", False) and isinstance(jwt_payload.get("sub"), str)
        prefetch = (PROFILE_CACHE_PREFIX + jwt_payload["sub"],) if wanted else ()
        return session_expiry(sid, prefetch) <= utcnow().timestamp()

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
