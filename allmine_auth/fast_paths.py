"""Every fast path that reaches into a library's internals, in one place, behind one switch.

``install(app)`` puts them on an app when ``FAST_PATHS`` is on (the default); with it off the app
runs on the libraries' own code everywhere (``make bench`` shows what the switch is worth, and the
suite runs both ways). Upgrading flask-jwt-extended or flask-limiter means checking this file (and
``tests/test_fast_paths.py``): every private name of theirs this service touches is here.

- **Verified access tokens** (flask-jwt-extended): an app sends the same access token with every call
  for the token's whole life, and checking it is the largest part of a cheap call like GET /me
  (PyJWT parses it four times, checking each base64 segment character by character). Each app keeps
  the claims of the last ``JWT_VERIFIED_CACHE_SIZE`` access tokens whose signature it verified, keyed
  by the whole encoded token: the same string can only carry the same claims under the same
  signature. A hit is still refused once the token has expired; revocation is unaffected (the
  blocklist loader reads the session's state on every request, hit or miss); the claims check (the
  decode-key loader of ``web/jwt.py``) ran when the token was first verified. Envoy's ``jwt_authn``
  filter keeps the same kind of cache. A token not in the cache (every refresh token) is parsed
  once, not three times, by PyJWT's own steps (``OneParseJWS``: its segment check made one regular
  expression instead of a Python loop over every character), with the library's checks in its order:
  headers, the decode-key loader on the unverified claims, the signature, then the claims. The view
  decorators' own header parse has no hook: their module's name for it is repointed once per
  process, to a function that reads the cache of the current app only when that app has one (an app
  with the fast paths off parses as the library does); a verified access token's header is
  remembered from its one parse.
- **Rate-limit hooks** (flask-limiter): the limiter's per-request check (for default and
  application-wide limits, which this service doesn't set) is taken out, and its ``after_request`` and
  ``teardown_request`` hooks run only in requests whose limits were checked (they cost GET /me about
  a tenth of its CPU).
- **A route's limits remembered** (flask-limiter): every limited request, the library calls the
  route's limit callable (the limits read ``app.config`` per request), parses the string it returns
  (``limits.parse_many``) and builds a ``RuntimeLimit`` per window; and it works out the route's
  exemption scope twice, through its blueprint's (``enum.Flag`` arithmetic and set building). The
  callable is still called on every request; what was built from the same limit definition and the
  same string is reused (``remembered_runtime_limits``: a string changed in ``app.config`` takes
  effect on the next request). With no blueprint exemption on the limiter (this service sets none),
  a route's exemption scope is its own route exemption, as the library's arithmetic comes to
  (``route_exemption_scope``). The limiter's per-request state (``Limiter.context``, read six
  times a request) is found on the request context without going through Flask's proxies. The check
  itself (keys, storage hits, the 429, the fallback to memory, the swallowed errors) is the library's.
- **No cookie session** (Flask): the API is token-based, and the default session interface builds a
  signing serializer on every request only to find no cookie.
- **Sync functions remembered** (Flask): ``ensure_sync`` asks ``inspect.iscoroutinefunction`` about
  every hook and view of every request (15 to 20 of them, a tenth of GET /me's CPU under cProfile);
  a function found synchronous once is answered from a set (``remember_sync_functions``). Coroutine
  functions still go to Flask's own ``ensure_sync`` every time.
- **Tokens minted with the key prepared once** (flask-jwt-extended, PyJWT): minting a token reads
  about ten settings through ``current_app`` and PyJWT checks the HMAC secret's shape (PEM, SSH,
  DER, JWK) on every signature. ``Minter`` makes the same token, byte for byte (same claims in the
  same order, same header, same JSON encoder, same HMAC), from settings and a key read and checked
  by the libraries' own code once per app, and read again whenever one of those settings changes.
  Only for HS256/384/512 and the library's default callbacks; anything else takes the library's path.
"""

import binascii
import hmac
import re
import threading
import time
from calendar import timegm
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from types import FunctionType, MethodType

import jwt as pyjwt
from flask import current_app
from flask.globals import _cv_app, _cv_request, request_ctx
from flask.sessions import SessionInterface
from flask_jwt_extended import JWTManager, default_callbacks, utils, view_decorators
from flask_jwt_extended.config import config
from flask_jwt_extended.exceptions import JWTDecodeError
from flask_limiter import Limiter
from flask_limiter._extension import LimiterContext
from flask_limiter._limits import Limit, RouteLimit, RuntimeLimit
from flask_limiter._manager import LimitManager
from flask_limiter.constants import ExemptionScope
from flask_limiter.util import get_qualified_name
from jwt import DecodeError, ExpiredSignatureError, InvalidSignatureError
from jwt.api_jws import PyJWS
from jwt.utils import base64url_decode, base64url_encode
from limits import parse_many

from allmine_auth.observability import new_request_id

INSTALLED = "allmine_fast_paths"
VERIFIED_TOKENS = "allmine_verified_tokens"
MINTER = "allmine_minter"
# Limits that need flask-limiter's check of every request: with one of them set, that hook stays.
GLOBAL_LIMITS = ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")


def install(app):
    """Put the fast paths on ``app`` if its ``FAST_PATHS`` is on (idempotent); after its extensions."""
    if not app.config["FAST_PATHS"] or app.extensions.get(INSTALLED):
        return
    app.extensions[INSTALLED] = True
    # Per app, not per manager: apps with other keys (tests) must not share what was verified.
    app.extensions[VERIFIED_TOKENS] = VerifiedTokens()
    view_decorators.get_unverified_jwt_headers = header_of
    app.extensions[MINTER] = Minter()
    Limit.__iter__ = remembered_runtime_limits
    Limiter.context = LIMITER_CONTEXT
    for limiter in app.extensions.get("limiter", ()):
        only_checked_routes(app, limiter)
        exemptions_without_blueprints(limiter.limit_manager)
    app.session_interface = NoCookieSessions()
    remember_sync_functions(app)


def installed(app):
    """Whether ``app`` runs with the fast paths."""
    return bool(app.extensions.get(INSTALLED))


# flask-jwt-extended: the verified-token cache


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


def header_of(encoded_token):
    """``get_unverified_jwt_headers`` for flask-jwt-extended's view decorators, from the cache on a hit.

    They ask for the header of the token they have just verified; a remembered token's header was
    parsed the first time and cannot differ. An app without the cache parses, as the library does.
    """
    verified = current_app.extensions.get(VERIFIED_TOKENS)
    header = verified.header(encoded_token) if verified is not None else None
    if header is None:
        header = utils.get_unverified_jwt_headers(encoded_token)
        if verified is not None:
            verified.remember_header(encoded_token, header)
    return header


class CachingJWTManager(JWTManager):
    """``JWTManager`` whose decodes go through the app's ``VerifiedTokens`` where the app has one.

    One manager serves every app of the process; an app without the fast paths gets the library's
    own decode. The override is of flask-jwt-extended's one decode path (``verify_jwt_in_request`` and
    ``decode_token`` both come here), pinned to its 4.x series in setup.cfg.
    """

    def _decode_jwt_from_config(self, encoded_token, csrf_value=None, allow_expired=False):
        app = current_app._get_current_object()  # one look-up of the context, not one per setting
        verified = app.extensions.get(VERIFIED_TOKENS)
        if verified is None or csrf_value is not None:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        size = app.config["JWT_VERIFIED_CACHE_SIZE"]
        cacheable = size > 0 and not allow_expired
        if cacheable:
            leeway = app.config["JWT_DECODE_LEEWAY"]  # seconds or a timedelta, as PyJWT takes it
            if isinstance(leeway, timedelta):
                leeway = leeway.total_seconds()
            claims = verified.get(encoded_token, leeway)
            if claims is not None:
                return claims
        claims, header = self._decode_once(encoded_token, allow_expired)
        # Refresh tokens are used once: remembering them would only crowd out access tokens.
        if cacheable and claims["type"] == "access":
            verified.put(encoded_token, claims, size)
            if header is not None:
                verified.remember_header(encoded_token, header)
        return claims

    def _encode_jwt_from_config(
        self, identity, token_type, claims=None, fresh=False, expires_delta=None, headers=None
    ):
        """The library's minting, through the app's ``Minter`` where it has one and the call is plain.

        Plain: a string identity, not fresh, no extra headers (the call's or the headers callback's),
        an explicit ``timedelta`` life (what ``rules/sessions.mint_tokens`` passes); anything else is
        the library's own code.
        """
        app = current_app._get_current_object()
        minter = app.extensions.get(MINTER)
        if (
            minter is not None
            and fresh is False
            and headers is None
            and isinstance(expires_delta, timedelta)
            and isinstance(identity, str)
            and not self._jwt_additional_header_callback(identity)
        ):
            prepared = minter.prepared(app, self)
            if prepared is not None:
                return prepared.mint(identity, token_type, claims or {}, expires_delta)
        return super()._encode_jwt_from_config(identity, token_type, claims, fresh, expires_delta, headers)

    def _decode_once(self, encoded_token, allow_expired):
        """flask-jwt-extended's decode, parsing the token once instead of three times: ``(claims, header)``.

        The library decodes the header and the claims unverified (two parses) for the decode-key
        loader, then PyJWT decodes again to verify. Here PyJWT's own steps run on one parse
        (``ONE_PARSE``): the header checks, the decode-key loader on the unverified claims, the
        signature over the same bytes (so the claims read are the claims signed), then PyJWT's claim
        checks with the options the library passes, and the library's own (its ``fresh``, ``type``
        and ``jti`` defaults included). A detached payload or no allowed algorithm takes the
        library's path, and so does an expired token, which the library attaches the header and
        claims to for the expired-token callback (the header is then ``None``).
        """
        algorithms = config.decode_algorithms
        payload, signing_input, header, signature = ONE_PARSE._load(encoded_token)
        if not algorithms or header.get("b64", True) is False:
            return super()._decode_jwt_from_config(encoded_token, None, allow_expired), None
        ONE_PARSE._validate_headers(header)
        unverified = CLAIMS._decode_payload({"payload": payload})
        key = self._decode_key_callback(header, dict(unverified))
        ONE_PARSE._verify_signature(signing_input, header, signature, key, algorithms)
        audience = config.decode_audience
        options = {"verify_aud": audience is not None, "verify_sub": config.verify_sub}
        if allow_expired:
            options["verify_exp"] = False
        claims = unverified
        try:
            CLAIMS._validate_claims(
                claims,
                CLAIMS._merge_options(options),
                audience=audience,
                issuer=config.decode_issuer,
                leeway=config.leeway,
            )
        except ExpiredSignatureError:
            return super()._decode_jwt_from_config(encoded_token, None, allow_expired), None
        if config.identity_claim_key not in claims:
            raise JWTDecodeError(f"Missing claim: {config.identity_claim_key}")
        claims.setdefault("type", "access")
        claims.setdefault("fresh", False)
        claims.setdefault("jti", None)
        return claims, header


# flask-jwt-extended and PyJWT: minting with the settings read and the key checked once

HMAC_DIGESTS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
# What flask-jwt-extended reads (through ``config``) to mint a token: a prepared minter holds while
# these settings are the same, and is prepared again from the libraries' code when one changes.
MINT_SETTINGS = (
    "JWT_ALGORITHM",
    "JWT_SECRET_KEY",
    "SECRET_KEY",
    "JWT_ENCODE_AUDIENCE",
    "JWT_ENCODE_ISSUER",
    "JWT_COOKIE_CSRF_PROTECT",
    "JWT_ENCODE_NBF",
    "JWT_IDENTITY_CLAIM",
)
# flask-jwt-extended's defaults of the callbacks minting calls for the claims and the key: with any
# other, the library mints. The headers' callback (``web/routes/keys.py`` has one, for ``kid``) is
# called on every mint as the library calls it; it must answer no headers (HS256 has none), else
# the library mints.
DEFAULT_MINT_CALLBACKS = (
    default_callbacks.default_additional_claims_callback,
    default_callbacks.default_user_identity_callback,
    default_callbacks.default_encode_key_callback,
)


def mint_callbacks(manager):
    """The callbacks ``manager`` calls to mint a token, in ``DEFAULT_MINT_CALLBACKS``' order."""
    return (
        manager._user_claims_callback,
        manager._user_identity_callback,
        manager._encode_key_callback,
    )


class Minter:
    """An app's ``PreparedMinter``, kept while the settings and callbacks it was prepared from hold."""

    def __init__(self):
        self._current = (None, None)  # (settings and callbacks, PreparedMinter or None): swapped whole

    def prepared(self, app, manager):
        """The ``PreparedMinter`` for the app's current settings, or ``None``: the library mints."""
        config_values = app.config
        source = (*(config_values.get(name) for name in MINT_SETTINGS), *mint_callbacks(manager))
        current_source, prepared = self._current
        if current_source != source:
            prepared = PreparedMinter.from_library(manager)
            self._current = (source, prepared)
        return prepared


def token_id():
    """A random version-4 UUID as ``str(uuid.uuid4())`` writes it (the library's ``jti``), at less cost.

    The request id's 16 random bytes with the version and variant bits set (``new_request_id``),
    written with hyphens, without ``UUID``'s constructor.
    """
    text = new_request_id()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def minting_now():
    """The moment a token is minted, as flask-jwt-extended takes it (``datetime.now(timezone.utc)``)."""
    return datetime.now(UTC)


class PreparedMinter:
    """Mints a token exactly as flask-jwt-extended's ``_encode_jwt`` and PyJWT's ``encode`` would.

    The claims in the library's order (``fresh``, ``iat``, ``jti``, ``type``, the identity, then
    ``nbf``, ``csrf``, ``aud``, ``iss``, ``exp`` as configured, then the caller's claims), the
    times as PyJWT writes them, the JSON by the library's encoder with PyJWT's separators, the
    header PyJWT writes (sorted keys), and the HMAC of the same bytes.
    """

    def __init__(self, digest, key, header_segment, encoder, identity_claim, nbf, csrf, audience, issuer):
        self.digest = digest
        self.key = key
        self.header_segment = header_segment
        self.encoder = encoder
        self.identity_claim = identity_claim
        self.nbf = nbf
        self.csrf = csrf
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_library(cls, manager):
        """Read the settings through flask-jwt-extended's ``config``, check the key with PyJWT's code.

        ``None`` when this path would not be the library's: an asymmetric algorithm, a callback that
        isn't the default, a key PyJWT refuses (the library then raises it on every mint) or warns
        about (too short: the library then warns on every mint).
        """
        algorithm = config.algorithm
        digest = HMAC_DIGESTS.get(algorithm)
        if digest is None or mint_callbacks(manager) != DEFAULT_MINT_CALLBACKS:
            return None
        signer = pyjwt.get_algorithm_by_name(algorithm)
        try:
            key = signer.prepare_key(config.encode_key)
        except pyjwt.InvalidKeyError:
            return None
        if signer.check_key_length(key):
            return None
        json_encoder = config.json_encoder
        header = {"typ": PyJWS.header_typ, "alg": algorithm}
        header_json = json_encoder(separators=(",", ":"), sort_keys=True).encode(header).encode()
        return cls(
            digest,
            key,
            base64url_encode(header_json),
            json_encoder(separators=(",", ":")),
            config.identity_claim_key,
            config.encode_nbf,
            config.cookie_csrf_protect,
            config.encode_audience,
            config.encode_issuer,
        )

    def mint(self, identity, token_type, claims, expires_delta):
        """The encoded token (``str``), as ``_encode_jwt`` would return it for these arguments."""
        now = minting_now()
        issued = timegm(now.utctimetuple())
        # A ``jti`` among the claims replaces the library's in its place: no UUID to draw for it.
        data = {
            "fresh": False,
            "iat": issued,
            "jti": None if "jti" in claims else token_id(),
            "type": token_type,
            self.identity_claim: identity,
        }
        if self.nbf:
            data["nbf"] = issued
        if self.csrf:
            data["csrf"] = token_id()
        if self.audience:
            data["aud"] = self.audience
        if self.issuer:
            data["iss"] = self.issuer
        if expires_delta:
            if expires_delta.microseconds:
                data["exp"] = timegm((now + expires_delta).utctimetuple())
            else:  # whole seconds: the same number without a second time tuple
                data["exp"] = issued + expires_delta.days * 86400 + expires_delta.seconds
        if claims:
            data.update(claims)
            for name in ("exp", "iat", "nbf"):
                if isinstance(data.get(name), datetime):
                    data[name] = timegm(data[name].utctimetuple())
        if "iss" in data and not isinstance(data["iss"], str):
            raise TypeError("Issuer (iss) must be a string.")
        payload = self.encoder.encode(data).encode("utf-8")
        signing_input = self.header_segment + b"." + base64url_encode(payload)
        signature = hmac.digest(self.key, signing_input, self.digest)
        return (signing_input + b"." + base64url_encode(signature)).decode("utf-8")


BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# Keys remembered prepared (an app has one; tests build apps with a few).
PREPARED_KEYS_LIMIT = 16


class OneParseJWS(PyJWS):
    """PyJWT's JWS with its segment check in one regular expression (the same alphabet and padding rules),
    and an HMAC key checked once.

    PyJWT checks each character of a segment in a Python generator (``any(...)``): about 370 steps
    for one of this service's tokens. The rest of its parse (``_load``) is the library's. Its
    signature check prepares the key on every token (the HMAC secret's shape: PEM, SSH, DER, JWK);
    here a key PyJWT prepared once, without a length warning, is remembered for its algorithm.
    """

    def __init__(self):
        super().__init__()
        self._prepared_keys = {}  # (HS* algorithm, key as given) -> the key PyJWT prepared

    def _verify_signature(self, signing_input, header, signature, key="", algorithms=None, options=None):
        alg = header.get("alg")
        prepared = None
        if isinstance(alg, str) and isinstance(key, str | bytes) and alg in (algorithms or ()):
            prepared = self._prepared_keys.get((alg, key))
        if prepared is None:
            super()._verify_signature(signing_input, header, signature, key, algorithms, options)
            self._remember_key(alg, key, algorithms)
            return
        self._verify_hmac(signing_input, alg, signature, prepared)

    @staticmethod
    def _verify_hmac(signing_input, alg, signature, prepared):
        """PyJWT's ``HMACAlgorithm.verify`` with the remembered key, and its error when it fails."""
        expected = hmac.digest(prepared, signing_input, HMAC_DIGESTS[alg])
        if not hmac.compare_digest(signature, expected):
            raise InvalidSignatureError("Signature verification failed")

    def _remember_key(self, alg, key, algorithms):
        """After PyJWT verified with ``key``: remember it prepared, if HS* and without a length warning."""
        if alg not in HMAC_DIGESTS or not isinstance(key, str | bytes) or alg not in (algorithms or ()):
            return
        signer = self.get_algorithm_by_name(alg)
        prepared = signer.prepare_key(key)
        if signer.check_key_length(prepared):
            return
        if len(self._prepared_keys) >= PREPARED_KEYS_LIMIT:
            self._prepared_keys.clear()
        self._prepared_keys[(alg, key)] = prepared

    @staticmethod
    def _decode_base64url_segment(segment, name):
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if padding > 2 or (padding and len(segment) % 4 != 0):
            raise DecodeError(f"Invalid {name} padding")
        if len(stripped) % 4 == 1 or not BASE64URL.fullmatch(stripped):
            raise DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise DecodeError(f"Invalid {name} padding")
        return decoded


# PyJWT's objects for the one parse: the default algorithms and options, as ``jwt.decode`` has them.
ONE_PARSE = OneParseJWS()
CLAIMS = pyjwt.PyJWT()


# flask-limiter: only the routes with limits pay for them


def only_checked_routes(app, limiter):
    """Take ``limiter``'s per-request check out of ``app`` (unless a global limit needs it), and run its
    ``after_request`` and ``teardown_request`` hooks only in requests where it checked a limit."""
    if not any(app.config.get(name) for name in GLOBAL_LIMITS):
        hooks = app.before_request_funcs.get(None, [])
        hooks[:] = [hook for hook in hooks if hook != limiter._check_request_limit]
    for hooks in (app.after_request_funcs.get(None, []), app.teardown_request_funcs.get(None, [])):
        hooks[:] = [where_limited(limiter, h) if is_limiter_hook(limiter, h) else h for h in hooks]


def is_limiter_hook(limiter, hook):
    """Whether ``hook`` is ``limiter``'s ``after_request`` or ``teardown_request`` hook."""
    if hook == limiter._Limiter__release_context:
        return True
    return getattr(hook, "func", None) is Limiter._Limiter__inject_headers and hook.args == (limiter,)


def where_limited(limiter, hook):
    """``hook``, run only in requests where ``limiter`` checked a limit (noted on the request context)."""

    def run_where_limited(value):
        if limiter in getattr(request_ctx, "_limiter_request_context", ()):
            return hook(value)
        return value

    return run_where_limited


# flask-limiter: a route's limits remembered

# flask-limiter's own ``Limit.__iter__``, taken before ``install`` repoints it (process-wide).
LIBRARY_LIMIT_ITER = Limit.__iter__
# What ``remembered_runtime_limits`` keeps: (limit definition, its string, its key function) ->
# the ``RuntimeLimit``s the library builds from them. Emptied whole when full (a service has a few).
RUNTIME_LIMITS = {}
RUNTIME_LIMITS_SIZE = 64


def remembered_runtime_limits(limit):
    """flask-limiter's ``Limit.__iter__`` (repointed once per process), remembering what it builds.

    The library, on every request, calls the limit's provider, parses the string it returns and
    builds one ``RuntimeLimit`` per window from the definition's fields. Here the provider is called
    as often, and the ``RuntimeLimit``s built for the same definition (a dataclass: hashed and
    compared by every field, so one changed since is another key), the same string and the same key
    function are reused: equal to what the library would build (``RuntimeLimit`` compares by
    fields), never changed by it after they are built. Only a route's limit (``limiter.limit`` or
    ``shared_limit``: a ``RouteLimit``, bound to its limiter and given its key function when made)
    without meta limits, in an app with the fast paths; anything else (default, application and
    meta limits) takes the library's own code. A string it cannot parse raises its ``ValueError``,
    as the library's does, and is not remembered; a definition with a field the dataclass cannot
    hash (say ``methods=[]``) is built each time.
    """
    context = _cv_app.get(None)
    if (
        type(limit) is not RouteLimit
        or limit.meta_limits
        or context is None
        or not context.app.extensions.get(INSTALLED)
    ):
        return LIBRARY_LIMIT_ITER(limit)
    provider = limit.limit_provider
    limit_str = provider() if callable(provider) else provider
    key_function = limit.limit_by
    try:
        key = (limit, limit_str, key_function)
        built = RUNTIME_LIMITS.get(key)
    except (TypeError, ReferenceError):  # unhashable field; a limiter gone (compared on a collision)
        return iter(runtime_limits(limit, limit_str, key_function))
    if built is None:
        built = runtime_limits(limit, limit_str, key_function)
        if len(RUNTIME_LIMITS) >= RUNTIME_LIMITS_SIZE:
            RUNTIME_LIMITS.clear()
        RUNTIME_LIMITS[key] = built
    return iter(built)


def runtime_limits(limit, limit_str, key_function):
    """The ``RuntimeLimit``s flask-limiter's ``Limit.__iter__`` yields for ``limit_str``, without meta
    limits: the same arguments, in its order (``tests/test_fast_paths.py`` compares the two)."""
    return tuple(
        RuntimeLimit(
            item,
            key_function,
            scope=limit.scope,
            per_method=limit.per_method,
            methods=limit.methods,
            error_message=limit.error_message,
            exempt_when=limit.exempt_when,
            deduct_when=limit.deduct_when,
            override_defaults=limit.override_defaults,
            on_breach=limit.on_breach,
            cost=limit.cost or 1,
            shared=limit.shared,
            meta_limits=(),
        )
        for item in (parse_many(limit_str) if limit_str else [])
    )


def exemptions_without_blueprints(manager):
    """Answer ``manager.exemption_scope`` without the blueprints' arithmetic while none is exempt.

    The library asks it twice per limited request; with no blueprint exemption its answer is the
    route's own exemption (``NONE``, or what ``limiter.exempt`` set on the view). Apps without the
    fast paths, and any limiter with a blueprint exemption, get the library's method.
    """
    if getattr(manager.exemption_scope, "__func__", None) is not LimitManager.exemption_scope:
        return  # already answered here
    library = manager.exemption_scope

    def exemption_scope(app, endpoint, blueprint):
        if manager._blueprint_exemptions or not app.extensions.get(INSTALLED):
            return library(app, endpoint, blueprint)
        return route_exemption_scope(manager, app, endpoint)

    manager.exemption_scope = exemption_scope


def route_exemption_scope(manager, app, endpoint):
    """The exemption ``limiter.exempt`` set on ``endpoint``'s view, found as the library finds it."""
    view_func = app.view_functions.get(endpoint or "", None)
    name = get_qualified_name(view_func) if view_func else ""
    return manager._route_exemptions.get(name, ExemptionScope.NONE)


# flask-limiter's own ``Limiter.context`` property, taken before ``install`` repoints it (process-wide).
LIBRARY_LIMITER_CONTEXT = Limiter.context


def limiter_context(limiter):
    """flask-limiter's ``Limiter.context``: the limiter's state kept on the current request context.

    The library finds the request context through Flask's ``request_ctx`` proxy (twice: ``hasattr``,
    then the attribute); here it is read from Flask's context variable, and the same attribute
    holds the same ``defaultdict`` of ``LimiterContext``. Outside a request, or in an app without the
    fast paths, the library's property answers (and raises what it raises).
    """
    ctx = _cv_request.get(None)
    if ctx is None or not ctx.app.extensions.get(INSTALLED):
        return LIBRARY_LIMITER_CONTEXT.fget(limiter)
    contexts = getattr(ctx, "_limiter_request_context", NO_LIMITER_CONTEXT)
    if contexts is NO_LIMITER_CONTEXT:
        contexts = ctx._limiter_request_context = defaultdict(LimiterContext)
    return contexts[limiter]


NO_LIMITER_CONTEXT = object()
LIMITER_CONTEXT = property(limiter_context, doc=LIBRARY_LIMITER_CONTEXT.__doc__)


# Flask: no cookie session


class NoCookieSessions(SessionInterface):
    """No Flask cookie session: ``flask.session`` is a ``NullSession`` (writing to it is an error)."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):
        return None


# Flask: sync functions remembered

# At most this many functions are remembered (an app has a few dozen hooks and views).
KNOWN_SYNC_LIMIT = 1024


def remember_sync_functions(app):
    """Answer ``app.ensure_sync`` for a function already found synchronous without asking ``inspect``.

    What is remembered is a plain function, or the function of a bound method (``inspect`` judges a
    method by it, and a ``MethodView`` view is a method of an instance made per request); Flask's own
    ``ensure_sync`` runs for everything else, and for every coroutine function, each time.
    """
    library = app.ensure_sync
    known = set()

    def ensure_sync(func):
        target = func.__func__ if type(func) is MethodType else func
        if type(target) is not FunctionType:  # a partial, a callable object (maybe unhashable): Flask's
            return library(func)
        if target in known:
            return func
        result = library(func)
        if result is func and len(known) < KNOWN_SYNC_LIMIT:
            known.add(target)
        return result

    app.ensure_sync = ensure_sync
