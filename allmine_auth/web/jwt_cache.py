"""flask-jwt-extended's ``JWTManager``, remembering the access tokens it has verified.

An app sends the same access token with every call for the token's whole
life (an hour), and checking it is the largest part of a cheap call like
GET /me: flask-jwt-extended has PyJWT parse it four times (claims and header
for the decode-key callback, the verified decode, then the header again for
``get_jwt_header``), and PyJWT checks each base64 segment character by
character. So each worker keeps the claims and the header of the last
``JWT_VERIFIED_CACHE_SIZE`` access tokens whose signature it verified, keyed
by the whole encoded token: the same string can only carry the same claims and
header under the same signature.
A hit is still refused once the token has expired; revocation is unaffected
(``token_in_blocklist_loader`` reads the session's state on every request, hit
or miss). Envoy's ``jwt_authn`` filter keeps the same kind of cache. A token
not in the cache (every refresh token) is parsed once, not three times.

Every verified token's claims must have the shape this service mints (``check_claims``): a token
signed with the real key but with claims of another shape (a leaked key, a token of another
service sharing it) is refused with 401 here, before any code reads its claims.
"""

import math
import re
import threading
import time
from datetime import timedelta

import jwt as pyjwt
from flask import current_app
from flask_jwt_extended import JWTManager, view_decorators
from flask_jwt_extended.config import config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.exceptions import JWTDecodeError
from jwt import ExpiredSignatureError

VERIFIED_TOKENS = "allmine_verified_tokens"
# Claims every token of this service carries; PyJWT refuses a token without one of them.
REQUIRED_CLAIMS = ("exp", "sub", "sid", "jti", "type")
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


class VerifiedTokens:
    """A bounded map of encoded access token -> its claims and header; the oldest entry goes first.

    gthread workers share one per process: every change of the map (an entry
    added, evicted or dropped on expiry) is made under the lock, so no thread
    iterates it while another changes its size. A lookup is one ``dict.get``,
    atomic without the lock.
    """

    def __init__(self):
        self._entries = {}  # token -> [claims, header or None until first asked]
        self._lock = threading.Lock()

    def get(self, token, leeway):
        """The token's claims if it was verified here and has not expired since, else ``None``."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0]["exp"] <= time.time() - leeway:
            with self._lock:
                self._entries.pop(token, None)
            return None
        return dict(entry[0])  # the caller's copy: flask-jwt-extended keeps it on ``g``

    def put(self, token, claims, size):
        """Remember a verified token, dropping the oldest entries beyond ``size``."""
        with self._lock:
            self._entries[token] = [dict(claims), None]
            while len(self._entries) > size:
                del self._entries[next(iter(self._entries))]

    def header(self, token):
        """The remembered header of a verified token, else ``None``."""
        entry = self._entries.get(token)
        return None if entry is None or entry[1] is None else dict(entry[1])

    def remember_header(self, token, header):
        """Keep ``header`` with ``token``'s claims, if the token is remembered."""
        entry = self._entries.get(token)
        if entry is not None:
            entry[1] = dict(header)


_parse_header = view_decorators.get_unverified_jwt_headers


def header_of(encoded_token):
    """``get_unverified_jwt_headers`` for flask-jwt-extended's view decorators, from the cache on a hit.

    They ask for the header of the token they have just verified; a
    remembered token's header was parsed the first time and cannot differ.
    """
    verified = current_app.extensions.get(VERIFIED_TOKENS)
    header = verified.header(encoded_token) if verified is not None else None
    if header is None:
        header = _parse_header(encoded_token)
        if verified is not None:
            verified.remember_header(encoded_token, header)
    return header


class CachingJWTManager(JWTManager):
    """``JWTManager`` whose access-token checks go through the app's ``VerifiedTokens`` (one per worker)."""

    def init_app(self, app, add_context_processor=False):
        super().init_app(app, add_context_processor)
        # Per app, not per manager: apps with other keys (tests) must not share what was verified.
        app.extensions[VERIFIED_TOKENS] = VerifiedTokens()
        # The view decorators' own header parse (``jwt_required`` -> ``_decode_jwt_from_request``) has
        # no hook; their module's name for it is replaced (for every app: without a cache it parses).
        view_decorators.get_unverified_jwt_headers = header_of

    def _decode_jwt_from_config(self, encoded_token, csrf_value=None, allow_expired=False):
        # flask-jwt-extended's one decode path (verify_jwt_in_request and decode_token both come here);
        # the override is pinned to its 4.x series in setup.cfg and covered by tests/test_tokens.py.
        size = current_app.config["JWT_VERIFIED_CACHE_SIZE"]
        cacheable = size > 0 and csrf_value is None and not allow_expired
        leeway = current_app.config["JWT_DECODE_LEEWAY"]  # seconds or a timedelta, as PyJWT takes it
        if isinstance(leeway, timedelta):
            leeway = leeway.total_seconds()
        verified = current_app.extensions[VERIFIED_TOKENS]
        if cacheable:
            claims = verified.get(encoded_token, leeway)
            if claims is not None:
                return claims
        # Checked before the cache keeps them: a remembered token's claims are known to be well formed.
        claims = check_claims(self._decode_once(encoded_token, csrf_value, allow_expired))
        # Refresh tokens are used once: remembering them would only crowd out access tokens.
        if cacheable and claims["type"] == "access":
            verified.put(encoded_token, claims, size)
        return claims

    def _decode_once(self, encoded_token, csrf_value, allow_expired):
        """flask-jwt-extended's decode, parsing the token once instead of three times.

        It first decodes the header and the claims unverified, only to hand
        them to the decode-key callback; the default callback ignores them and
        returns the configured key. With that default, go straight to the
        verified decode: PyJWT's own, with ``REQUIRED_CLAIMS`` required
        (flask-jwt-extended's would fill in a missing ``type`` and ``jti``),
        plus the ``fresh`` claim the library adds when it is missing. An expired token takes
        the library's own path, which attaches the header and claims for the
        expired-token callback. (No CSRF value comes with tokens from headers.)
        """
        if self._decode_key_callback is not default_decode_key_callback or csrf_value is not None:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        options = {
            "verify_aud": config.decode_audience is not None,
            "verify_sub": config.verify_sub,
            "require": REQUIRED_CLAIMS,
        }
        if allow_expired:
            options["verify_exp"] = False
        try:
            claims = pyjwt.decode(
                encoded_token,
                config.decode_key,
                algorithms=config.decode_algorithms,
                audience=config.decode_audience,
                issuer=config.decode_issuer,
                leeway=config.leeway,
                options=options,
            )
        except ExpiredSignatureError:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        claims.setdefault("fresh", False)
        return claims
