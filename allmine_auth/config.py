"""Settings: every one the service knows, its default, and the environment variable it is read from.

Each setting is an attribute of ``Config``. A value declared with ``text``,
``whole_number``, ``number``, ``flag``, ``items`` or ``destinations`` is read
from the environment (the variable of its name, or ``var``) when an app is
built, by ``settings_for``: never at import, so a test or a script can set
variables and then call ``create_app``. A value declared with ``derived`` is
computed from the settings declared before it; a plain value is a constant
(and a subclass's plain value, as in the tests' ``make_config``, wins over
the environment). The three subclasses change defaults; the suite's also reads its own
database and Redis variables (``TEST_DATABASE_URL``, ``TEST_REDIS_URL``).
``Config.check`` and ``ProductionConfig.check`` refuse settings that can't
work, or would be unsafe in front of real users, with a one-line reason.
"""

import copy
import os
import re
from datetime import date
from pathlib import Path

# The repository's root: instance/ (the development database) and migrations/ are found from it.
BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SECRET = "dev-only-insecure-secret-change-me-0123456789"
MIN_AUDIT_RETENTION_DAYS = 1
ATTESTATION_PROVIDERS = ("none", "turnstile", "hcaptcha")
# Algorithms that sign with a private key (JWT_PRIVATE_KEY_FILE): only they don't use JWT_SECRET_KEY.
ASYMMETRIC_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
TEST_CODE = re.compile(r"[0-9]{4}")
# The demo user of ``flask seed`` and ``make run`` logs in with this number and, in development, this code.
DEMO_COUNTRY_CODE = "90"
DEMO_PHONE_NUMBER = "5372505890"
DEMO_PHONE = f"+{DEMO_COUNTRY_CODE}{DEMO_PHONE_NUMBER}"
DEMO_CODE = "1234"


class ConfigError(RuntimeError):
    """A setting makes the service unsafe or impossible to start."""


class FromEnvironment:
    """A setting read from the environment when an app is built (see ``settings_for``).

    ``parse(variable, value)`` turns the variable's text into the setting, raising ``ConfigError``
    on garbage; an unset or empty variable gives ``default``, or ``default(settings)`` when it is a
    function of the settings declared before this one.
    """

    def __init__(self, parse, default, var=None):
        self.parse = parse
        self.default = default
        self.var = var

    def read(self, name, environ, settings):
        """The setting ``name`` from ``environ``, else its default."""
        variable = self.var or name
        value = environ.get(variable)
        if value in (None, ""):
            return self.default(settings) if callable(self.default) else copy.deepcopy(self.default)
        return self.parse(variable, value)


class Derived:
    """A setting computed, when an app is built, from the settings declared before it."""

    def __init__(self, compute):
        self.compute = compute


def text(default=None, var=None):
    """A string setting."""
    return FromEnvironment(lambda _variable, value: value, default, var)


def whole_number(default, var=None):
    """An int setting: anything else is a ``ConfigError``."""
    return FromEnvironment(parse_whole_number, default, var)


def number(default, var=None):
    """A float setting (seconds that may be fractional): anything else is a ``ConfigError``."""
    return FromEnvironment(parse_number, default, var)


def flag(default, var=None):
    """A yes/no setting: ``1/true/yes/on`` or ``0/false/no/off``, anything else is a ``ConfigError``."""
    return FromEnvironment(parse_flag, default, var)


def items(default=(), var=None):
    """A list setting, comma-separated in the environment."""
    return FromEnvironment(lambda _variable, value: split_list(value), list(default), var)


def destinations(default="", var=None):
    """``OTP_TEST_DESTINATIONS``, its ``default`` written as the variable is (``parse_test_destinations``)."""
    default = parse_test_destinations(default)
    return FromEnvironment(lambda _variable, value: parse_test_destinations(value), default, var)


def derived(compute):
    """A setting computed by ``compute(settings)`` from the settings declared before it."""
    return Derived(compute)


def parse_whole_number(variable, value):
    """``value`` as an int, or a ``ConfigError`` that names ``variable``."""
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a whole number, got {value!r}") from exc


def parse_number(variable, value):
    """``value`` as a float, or a ``ConfigError`` that names ``variable``."""
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a number, got {value!r}") from exc


def parse_flag(variable, value):
    """``value`` read as a yes/no flag, or a ``ConfigError`` that names ``variable``."""
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{variable} must be true or false, got {value!r}")


def split_list(value):
    """Split a comma-separated string into stripped, non-empty items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def parse_test_destinations(value):
    """Parse ``OTP_TEST_DESTINATIONS``: ``destination=code[@YYYY-MM-DD]`` items, comma-separated.

    A destination is a phone number in E.164 (``+905550000001``) or an email
    address; the code is the fixed 4-digit code; the optional date is the last
    day the entry is honoured. The code is ASCII digits, as the verify endpoints take it.
    """
    entries = {}
    for item in split_list(value):
        destination, sep, rest = item.partition("=")
        code, _, until = rest.partition("@")
        if not sep or not TEST_CODE.fullmatch(code):
            raise ConfigError(f"OTP_TEST_DESTINATIONS: {item!r} is not destination=1234[@YYYY-MM-DD]")
        try:
            expires = date.fromisoformat(until) if until else None
        except ValueError as exc:
            raise ConfigError(f"OTP_TEST_DESTINATIONS: bad date in {item!r}") from exc
        entries[destination.strip().lower()] = (code, expires)
    return entries


def spec_options(servers):
    """OpenAPI extras: the description, the servers (Swagger UI preselects the first), Bearer auth."""
    return {
        "info": {"description": "Allmine authentication: one-time codes by SMS or email, JWT sessions."},
        "servers": servers,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        },
    }


def settings_for(config_class, environ=None):
    """The settings of ``config_class`` read from ``environ`` (default ``os.environ``), checked.

    Settings are resolved base class first, in the order they are declared (a subclass's
    redefinition keeps the base's place), so a ``derived`` one sees every setting above it.
    Returns a dict for ``app.config``; raises ``ConfigError`` on a bad value or unsafe settings.
    """
    environ = os.environ if environ is None else environ
    declared = {}
    for klass in reversed(config_class.__mro__):
        declared.update((name, value) for name, value in vars(klass).items() if name.isupper())
    settings = {}
    for name, value in declared.items():
        if isinstance(value, FromEnvironment):
            value = value.read(name, environ, settings)
        elif isinstance(value, Derived):
            value = value.compute(settings)
        settings[name] = value
    config_class.check(settings)
    return settings


class Config:
    """Base settings, every one overridable from the environment but the constants."""

    ENV_NAME = "base"

    # Flask and the HTTP layer
    SECRET_KEY = text(DEFAULT_SECRET)
    MAX_CONTENT_LENGTH = whole_number(16 * 1024)
    PROXY_FIX_X_FOR = whole_number(0)
    # Browser origins allowed to call the API (CORS), comma-separated; none by default (no OPTIONS).
    CORS_ORIGINS = items()
    PROVIDE_AUTOMATIC_OPTIONS = False
    LOG_LEVEL = text("INFO")
    LOG_JSON = flag(False)
    # The overrides of library internals for speed (allmine_auth/fast_paths.py); off: the libraries' own code.
    FAST_PATHS = flag(True)

    # Storage
    SQLALCHEMY_DATABASE_URI = text(
        f"sqlite:///{BASE_DIR / 'instance' / 'allmine_auth.db'}", var="DATABASE_URL"
    )
    # No pre-ping: it costs a round trip per request. A connection that died (database restart) fails
    # one request, which invalidates the whole pool; pool_recycle retires connections before idle
    # timeouts in between (PgBouncer, cloud load balancers) can cut them.
    DATABASE_POOL_RECYCLE = whole_number(1800)
    SQLALCHEMY_ENGINE_OPTIONS = derived(
        lambda settings: {"pool_pre_ping": False, "pool_recycle": settings["DATABASE_POOL_RECYCLE"]}
    )
    # PostgreSQL unreachable (allmine_auth/store/outage.py): seconds a connect may take, seconds a silent
    # network may hold a query (tcp_user_timeout and keepalives; 0: the kernel's defaults), and the
    # Retry-After of the 503 meanwhile.
    DATABASE_CONNECT_TIMEOUT = whole_number(3)
    DATABASE_NETWORK_TIMEOUT = whole_number(10)
    DATABASE_RETRY_AFTER = whole_number(5)
    REDIS_URL = text()

    # OpenAPI and Swagger UI
    API_TITLE = "Allmine API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/docs"
    OPENAPI_SWAGGER_UI_URL = "/docs/assets/"
    OPENAPI_SWAGGER_UI_CONFIG = {"persistAuthorization": True, "displayRequestDuration": True}
    # The port of ``make run`` and gunicorn (gunicorn.conf.py reads it too), in the development server's URL.
    PORT = whole_number(5000)
    API_SERVER_PRODUCTION_URL = text("https://api.allmine.app")
    API_SERVER_DEVELOPMENT_URL = text(lambda settings: f"http://127.0.0.1:{settings['PORT']}")
    PRODUCTION_SERVER = derived(
        lambda settings: {"url": settings["API_SERVER_PRODUCTION_URL"], "description": "Production"}
    )
    DEVELOPMENT_SERVER = derived(
        lambda settings: {"url": settings["API_SERVER_DEVELOPMENT_URL"], "description": "Development"}
    )
    API_SPEC_OPTIONS = derived(
        lambda settings: spec_options([settings["PRODUCTION_SERVER"], settings["DEVELOPMENT_SERVER"]])
    )

    # Tokens
    JWT_SECRET_KEY = text(DEFAULT_SECRET)
    JWT_ALGORITHM = text("HS256")
    JWT_PRIVATE_KEY_FILE = text()
    JWT_ACCESS_TOKEN_EXPIRES = whole_number(3600)
    JWT_REFRESH_TOKEN_EXPIRES = whole_number(2592000)
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_COOKIE_CSRF_PROTECT = False
    JWT_IDENTITY_CLAIM = "sub"
    # Access tokens each worker remembers as verified (allmine_auth/fast_paths.py); 0 turns it off.
    JWT_VERIFIED_CACHE_SIZE = whole_number(1024)
    REFRESH_TOKEN_REUSE_INTERVAL = whole_number(10)
    # An absolute end of every session, seconds after its login; 0: none (a refresh keeps it alive).
    SESSION_MAX_AGE = whole_number(0)
    SESSION_CACHE_TTL = whole_number(300)
    PROFILE_CACHE_TTL = whole_number(300)
    # Seconds between a worker's looks at the cache outbox (writes Redis refused, allmine_auth/cache.py).
    CACHE_OUTBOX_INTERVAL = whole_number(1)

    # Account deletion: days between the request and the erasure (``flask purge``), for the user to undo it.
    ACCOUNT_DELETION_GRACE_DAYS = whole_number(30)

    # One-time codes
    OTP_SECRET_KEY = text(DEFAULT_SECRET)
    OTP_ECHO = flag(False)
    OTP_TTL_SMS = whole_number(180)
    OTP_TTL_EMAIL = whole_number(600)
    OTP_MAX_ATTEMPTS = whole_number(3)
    OTP_RESEND_INTERVAL = whole_number(60)
    OTP_MAX_SENDS_10MIN = whole_number(3)
    OTP_MAX_SENDS_24H = whole_number(10)
    OTP_LOCK_AFTER_FAILURES = whole_number(10)
    OTP_LOCK_SECONDS = whole_number(3600)
    OTP_TEST_DESTINATIONS = destinations()

    # Delivery
    SMS_PROVIDER = text("console")
    EMAIL_PROVIDER = text("console")
    NOTIFY_TIMEOUT = number(10.0)
    TWILIO_ACCOUNT_SID = text()
    TWILIO_AUTH_TOKEN = text()
    TWILIO_FROM = text()
    TWILIO_MESSAGING_SERVICE_SID = text()
    TWILIO_API_URL = text("https://api.twilio.com")
    NETGSM_USERCODE = text()
    NETGSM_PASSWORD = text()
    NETGSM_HEADER = text()
    NETGSM_API_URL = text("https://api.netgsm.com.tr")
    SMTP_HOST = text("localhost")
    SMTP_PORT = whole_number(587)
    SMTP_SECURITY = text("starttls")
    SMTP_USERNAME = text()
    SMTP_PASSWORD = text()
    SMTP_FROM = text("Allmine <no-reply@allmine.app>")
    SMTP_CA_FILE = text()

    # Abuse protection (flask-limiter and the SMS budgets)
    RATELIMIT_ENABLED = flag(True)
    # No X-RateLimit-* headers: each costs a storage read per limit per request. A 429 still says
    # Retry-After (allmine_auth.web.error_handlers.rate_limit_response).
    RATELIMIT_HEADERS_ENABLED = False
    RATELIMIT_STORAGE_URI = text(lambda settings: settings["REDIS_URL"] or "memory://")
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    RATELIMIT_KEY_PREFIX = "allmine-auth"
    RATELIMIT_SEND = text("20/hour;5/minute")
    # One window each for verify and refresh (every window is a storage round trip per request); sends
    # cost money and get two. Per IP, so keep them generous: mobile carriers put many users behind one
    # address (CGNAT); codes have their own per-destination limits and lock-outs.
    RATELIMIT_VERIFY = text("30/minute")
    RATELIMIT_REFRESH = text("60/minute")
    # Per client network (IPv4 /24, IPv6 /56), both send endpoints together: many addresses of one
    # network count as one, and a carrier's NAT pool spreads over many networks.
    RATELIMIT_SEND_NETWORK = text("600/hour;60/minute")
    SMS_ALLOWED_COUNTRIES = items(["TR"])
    # Home countries are never shut off whole: suspicion tightens the per-network limits instead.
    SMS_HOME_COUNTRIES = items(["TR"])
    # A cost ceiling over all numbers, far above a busy hour (40 x today's 500): not a fraud signal.
    SMS_GLOBAL_HOURLY_BUDGET = whole_number(20000)
    SMS_PREFIX_BREAKER_SECONDS = whole_number(3600)
    # A prefix trips when its last hour's sends reach SMS_TRIP_FACTOR x its normal (codes verified per
    # hour over SMS_BASELINE_HOURS, at least SMS_BASELINE_FLOOR) and under SMS_TRIP_CONVERSION_PERCENT
    # of them were verified.
    SMS_TRIP_FACTOR = whole_number(3)
    SMS_BASELINE_HOURS = whole_number(168)
    SMS_BASELINE_FLOOR = whole_number(20)
    SMS_TRIP_CONVERSION_PERCENT = whole_number(20)
    # A network is suspect after this many SMS sends in an hour with the same collapsed conversion.
    SMS_NETWORK_MIN_SENDS = whole_number(20)
    SMS_SUSPICION_SECONDS = whole_number(3600)
    # Under suspicion each RATELIMIT_SEND_NETWORK amount is divided by this, for SMS.
    SMS_SUSPECT_LIMIT_DIVISOR = whole_number(10)
    ATTESTATION_PROVIDER = text("none")
    ATTESTATION_SECRET = text()
    ATTESTATION_VERIFY_URL = text()
    ATTESTATION_TIMEOUT = number(5.0)

    # Personal data: days the audit trail (full phone numbers and email addresses) is kept; ``flask purge``
    # deletes older events. A year (README, "Personal data").
    AUDIT_RETENTION_DAYS = whole_number(365)

    @classmethod
    def check(cls, settings):
        """Raise ``ConfigError`` when ``settings`` can't work together (in every environment)."""
        if settings["AUDIT_RETENTION_DAYS"] < MIN_AUDIT_RETENTION_DAYS:
            # The per-destination send limits count the last 24 hours of events.
            raise ConfigError(
                f"AUDIT_RETENTION_DAYS must be at least {MIN_AUDIT_RETENTION_DAYS}: "
                "the send limits count the last day's events"
            )
        if settings["ATTESTATION_PROVIDER"] not in ATTESTATION_PROVIDERS:
            raise ConfigError(
                f"ATTESTATION_PROVIDER must be one of {', '.join(ATTESTATION_PROVIDERS)}, "
                f"got {settings['ATTESTATION_PROVIDER']!r}"
            )
        for name in ("SESSION_CACHE_TTL", "PROFILE_CACHE_TTL"):
            # Redis refuses an expiry of 0 ("invalid expire time"): every revocation would wait in the outbox
            # and every logout answer 503.
            if settings[name] < 1:
                raise ConfigError(f"{name} must be at least 1 (seconds), got {settings[name]}")
        at_least_one = ("SMS_SUSPECT_LIMIT_DIVISOR", "SMS_TRIP_FACTOR", "SMS_BASELINE_HOURS")
        if min(settings[name] for name in at_least_one) < 1:
            raise ConfigError(
                "SMS_SUSPECT_LIMIT_DIVISOR, SMS_TRIP_FACTOR and SMS_BASELINE_HOURS must be >= 1"
            )


class DevelopmentConfig(Config):
    """Local development: codes echoed, console delivery, loose limits, the demo phone's fixed code."""

    ENV_NAME = "development"
    OTP_ECHO = flag(True)
    OTP_TEST_DESTINATIONS = destinations(f"{DEMO_PHONE}={DEMO_CODE}")
    RATELIMIT_SEND = text("200/hour;30/minute")
    RATELIMIT_SEND_NETWORK = text("6000/hour;600/minute")
    RATELIMIT_VERIFY = text("300/minute")
    RATELIMIT_REFRESH = text("600/minute")
    # "Try it out" on a developer's machine goes to the local server unless Production is picked.
    API_SPEC_OPTIONS = derived(
        lambda settings: spec_options([settings["DEVELOPMENT_SERVER"], settings["PRODUCTION_SERVER"]])
    )


class TestingConfig(Config):
    """The test suite: its own database, codes echoed, limits off unless a test turns them on."""

    ENV_NAME = "testing"
    TESTING = True
    SQLALCHEMY_DATABASE_URI = text("sqlite://", var="TEST_DATABASE_URL")
    REDIS_URL = text(var="TEST_REDIS_URL")
    # The suite's Redis, whatever REDIS_URL a test gives its app (tests/test_abuse.py sets this one).
    RATELIMIT_STORAGE_URI = text("memory://", var="TEST_REDIS_URL")
    RATELIMIT_ENABLED = flag(False)
    OTP_ECHO = True
    OTP_TEST_DESTINATIONS = {}
    JWT_SECRET_KEY = "testing-secret-key-that-is-long-enough-0123456789"
    OTP_SECRET_KEY = "testing-otp-key-that-is-long-enough-0123456789"


class ProductionConfig(Config):
    """Real users: secrets required, no echo, real delivery."""

    ENV_NAME = "production"
    LOG_JSON = flag(True)

    @classmethod
    def check(cls, settings):
        """Refuse what the base refuses, a default or short secret, code echo, console delivery, and
        attestation without a secret."""
        super().check(settings)
        provider = settings["ATTESTATION_PROVIDER"]
        if provider != "none" and not settings["ATTESTATION_SECRET"]:
            raise ConfigError(f"ATTESTATION_PROVIDER={provider} needs ATTESTATION_SECRET")
        for name in ("SECRET_KEY", "JWT_SECRET_KEY", "OTP_SECRET_KEY"):
            value = settings[name]
            if name == "JWT_SECRET_KEY" and settings["JWT_ALGORITHM"] in ASYMMETRIC_JWT_ALGORITHMS:
                continue
            if value == DEFAULT_SECRET or len(value) < 32:
                raise ConfigError(f"{name} must be set to a random value of at least 32 characters")
        if settings["OTP_ECHO"]:
            raise ConfigError("OTP_ECHO must be off in production: codes would be sent to the client")
        for name in ("SMS_PROVIDER", "EMAIL_PROVIDER"):
            if settings[name] == "console":
                raise ConfigError(f"{name}=console only logs codes; choose a real provider in production")


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_for(name):
    """Return the config class called ``name`` (``APP_ENV``), failing with the valid names."""
    try:
        return CONFIGS[name]
    except KeyError as exc:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}, got {name!r}") from exc
