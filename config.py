"""Settings, read from the environment in one place.

Every setting the service knows is an attribute of ``Config``; the three
subclasses only change defaults. ``ProductionConfig.check`` refuses settings
that would be unsafe in front of real users, with a one-line reason.
"""

import os
import re
from datetime import date
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
DEFAULT_SECRET = "dev-only-insecure-secret-change-me-0123456789"
MIN_AUDIT_RETENTION_DAYS = 1
ATTESTATION_PROVIDERS = ("none", "turnstile", "hcaptcha")
# Algorithms that sign with a private key (JWT_PRIVATE_KEY_FILE): only they don't use JWT_SECRET_KEY.
ASYMMETRIC_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
TEST_CODE = re.compile(r"[0-9]{4}")


class ConfigError(RuntimeError):
    """A setting makes the service unsafe or impossible to start."""


def env_str(name, default=None):
    """Return the environment variable ``name``, or ``default`` when unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name, default):
    """Return the environment variable ``name`` as an int, failing loudly on garbage."""
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from exc


def env_bool(name, default):
    """Return the environment variable ``name`` read as a yes/no flag."""
    value = env_str(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def env_list(name, default=()):
    """Return the comma-separated environment variable ``name`` as a list of stripped items."""
    value = env_str(name)
    return list(default) if value is None else split_list(value)


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


def default_database_url():
    """The embedded default: a SQLite file under ``instance/``."""
    return f"sqlite:///{BASE_DIR / 'instance' / 'allmine_auth.db'}"


class Config:
    """Base settings, every one overridable from the environment."""

    ENV_NAME = "base"

    # Flask and the HTTP layer
    SECRET_KEY = env_str("SECRET_KEY", DEFAULT_SECRET)
    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 16 * 1024)
    PROXY_FIX_X_FOR = env_int("PROXY_FIX_X_FOR", 0)
    # Browser origins allowed to call the API (CORS), comma-separated; none by default (no OPTIONS).
    CORS_ORIGINS = env_list("CORS_ORIGINS")
    PROVIDE_AUTOMATIC_OPTIONS = False
    LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
    LOG_JSON = env_bool("LOG_JSON", False)
    # The overrides of library internals for speed (allmine_auth/fast_paths.py); off: the libraries' own code.
    FAST_PATHS = env_bool("FAST_PATHS", True)

    # Storage
    SQLALCHEMY_DATABASE_URI = env_str("DATABASE_URL", default_database_url())
    # No pre-ping: it costs a round trip per request. A connection that died (database restart) fails
    # one request, which invalidates the whole pool; pool_recycle retires connections before idle
    # timeouts in between (PgBouncer, cloud load balancers) can cut them.
    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": False,
        "pool_recycle": env_int("DATABASE_POOL_RECYCLE", 1800),
    }
    # PostgreSQL unreachable (allmine_auth/store/outage.py): seconds a connect may take, seconds a silent
    # network may hold a query (tcp_user_timeout and keepalives; 0: the kernel's defaults), and the
    # Retry-After of the 503 meanwhile.
    DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 3)
    DATABASE_NETWORK_TIMEOUT = env_int("DATABASE_NETWORK_TIMEOUT", 10)
    DATABASE_RETRY_AFTER = env_int("DATABASE_RETRY_AFTER", 5)
    REDIS_URL = env_str("REDIS_URL")

    # OpenAPI and Swagger UI
    API_TITLE = "Allmine API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/docs"
    OPENAPI_SWAGGER_UI_URL = "/docs/assets/"
    OPENAPI_SWAGGER_UI_CONFIG = {"persistAuthorization": True, "displayRequestDuration": True}
    API_SERVER_PRODUCTION_URL = env_str("API_SERVER_PRODUCTION_URL", "https://api.allmine.app")
    API_SERVER_DEVELOPMENT_URL = env_str(
        "API_SERVER_DEVELOPMENT_URL", f"http://127.0.0.1:{env_int('PORT', 5000)}"
    )
    PRODUCTION_SERVER = {"url": API_SERVER_PRODUCTION_URL, "description": "Production"}
    DEVELOPMENT_SERVER = {"url": API_SERVER_DEVELOPMENT_URL, "description": "Development"}
    API_SPEC_OPTIONS = spec_options([PRODUCTION_SERVER, DEVELOPMENT_SERVER])

    # Tokens
    JWT_SECRET_KEY = env_str("JWT_SECRET_KEY", DEFAULT_SECRET)
    JWT_ALGORITHM = env_str("JWT_ALGORITHM", "HS256")
    JWT_PRIVATE_KEY_FILE = env_str("JWT_PRIVATE_KEY_FILE")
    JWT_ACCESS_TOKEN_EXPIRES = env_int("JWT_ACCESS_TOKEN_EXPIRES", 3600)
    JWT_REFRESH_TOKEN_EXPIRES = env_int("JWT_REFRESH_TOKEN_EXPIRES", 2592000)
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_COOKIE_CSRF_PROTECT = False
    JWT_IDENTITY_CLAIM = "sub"
    # Access tokens each worker remembers as verified (allmine_auth/fast_paths.py); 0 turns it off.
    JWT_VERIFIED_CACHE_SIZE = env_int("JWT_VERIFIED_CACHE_SIZE", 1024)
    REFRESH_TOKEN_REUSE_INTERVAL = env_int("REFRESH_TOKEN_REUSE_INTERVAL", 10)
    # An absolute end of every session, seconds after its login; 0: none (a refresh keeps it alive).
    SESSION_MAX_AGE = env_int("SESSION_MAX_AGE", 0)
    SESSION_CACHE_TTL = env_int("SESSION_CACHE_TTL", 300)
    PROFILE_CACHE_TTL = env_int("PROFILE_CACHE_TTL", 300)
    # Seconds between a worker's looks at the cache outbox (writes Redis refused, allmine_auth/cache.py).
    CACHE_OUTBOX_INTERVAL = env_int("CACHE_OUTBOX_INTERVAL", 1)

    # Account deletion: days between the request and the erasure (``flask purge``), for the user to undo it.
    ACCOUNT_DELETION_GRACE_DAYS = env_int("ACCOUNT_DELETION_GRACE_DAYS", 30)

    # One-time codes
    OTP_SECRET_KEY = env_str("OTP_SECRET_KEY", DEFAULT_SECRET)
    OTP_ECHO = env_bool("OTP_ECHO", False)
    OTP_TTL_SMS = env_int("OTP_TTL_SMS", 180)
    OTP_TTL_EMAIL = env_int("OTP_TTL_EMAIL", 600)
    OTP_MAX_ATTEMPTS = env_int("OTP_MAX_ATTEMPTS", 3)
    OTP_RESEND_INTERVAL = env_int("OTP_RESEND_INTERVAL", 60)
    OTP_MAX_SENDS_10MIN = env_int("OTP_MAX_SENDS_10MIN", 3)
    OTP_MAX_SENDS_24H = env_int("OTP_MAX_SENDS_24H", 10)
    OTP_LOCK_AFTER_FAILURES = env_int("OTP_LOCK_AFTER_FAILURES", 10)
    OTP_LOCK_SECONDS = env_int("OTP_LOCK_SECONDS", 3600)
    OTP_TEST_DESTINATIONS = parse_test_destinations(env_str("OTP_TEST_DESTINATIONS"))

    # Delivery
    SMS_PROVIDER = env_str("SMS_PROVIDER", "console")
    EMAIL_PROVIDER = env_str("EMAIL_PROVIDER", "console")
    NOTIFY_TIMEOUT = float(env_str("NOTIFY_TIMEOUT", "10"))
    TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID")
    TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN")
    TWILIO_FROM = env_str("TWILIO_FROM")
    TWILIO_MESSAGING_SERVICE_SID = env_str("TWILIO_MESSAGING_SERVICE_SID")
    TWILIO_API_URL = env_str("TWILIO_API_URL", "https://api.twilio.com")
    NETGSM_USERCODE = env_str("NETGSM_USERCODE")
    NETGSM_PASSWORD = env_str("NETGSM_PASSWORD")
    NETGSM_HEADER = env_str("NETGSM_HEADER")
    NETGSM_API_URL = env_str("NETGSM_API_URL", "https://api.netgsm.com.tr")
    SMTP_HOST = env_str("SMTP_HOST", "localhost")
    SMTP_PORT = env_int("SMTP_PORT", 587)
    SMTP_SECURITY = env_str("SMTP_SECURITY", "starttls")
    SMTP_USERNAME = env_str("SMTP_USERNAME")
    SMTP_PASSWORD = env_str("SMTP_PASSWORD")
    SMTP_FROM = env_str("SMTP_FROM", "Allmine <no-reply@allmine.app>")
    SMTP_CA_FILE = env_str("SMTP_CA_FILE")

    # Abuse protection (flask-limiter and the SMS budgets)
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
    # No X-RateLimit-* headers: each costs a storage read per limit per request. A 429 still says
    # Retry-After (allmine_auth.web.error_handlers.rate_limit_response).
    RATELIMIT_HEADERS_ENABLED = False
    RATELIMIT_STORAGE_URI = env_str("RATELIMIT_STORAGE_URI", env_str("REDIS_URL", "memory://"))
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    RATELIMIT_KEY_PREFIX = "allmine-auth"
    RATELIMIT_SEND = env_str("RATELIMIT_SEND", "20/hour;5/minute")
    # One window each for verify and refresh (every window is a storage round trip per request); sends
    # cost money and get two. Per IP, so keep them generous: mobile carriers put many users behind one
    # address (CGNAT); codes have their own per-destination limits and lock-outs.
    RATELIMIT_VERIFY = env_str("RATELIMIT_VERIFY", "30/minute")
    RATELIMIT_REFRESH = env_str("RATELIMIT_REFRESH", "60/minute")
    # Per client network (IPv4 /24, IPv6 /56), both send endpoints together: many addresses of one
    # network count as one, and a carrier's NAT pool spreads over many networks.
    RATELIMIT_SEND_NETWORK = env_str("RATELIMIT_SEND_NETWORK", "600/hour;60/minute")
    SMS_ALLOWED_COUNTRIES = env_list("SMS_ALLOWED_COUNTRIES", ["TR"])
    # Home countries are never shut off whole: suspicion tightens the per-network limits instead.
    SMS_HOME_COUNTRIES = env_list("SMS_HOME_COUNTRIES", ["TR"])
    # A cost ceiling over all numbers, far above a busy hour (40 x today's 500): not a fraud signal.
    SMS_GLOBAL_HOURLY_BUDGET = env_int("SMS_GLOBAL_HOURLY_BUDGET", 20000)
    SMS_PREFIX_BREAKER_SECONDS = env_int("SMS_PREFIX_BREAKER_SECONDS", 3600)
    # A prefix trips when its last hour's sends reach SMS_TRIP_FACTOR x its normal (codes verified per
    # hour over SMS_BASELINE_HOURS, at least SMS_BASELINE_FLOOR) and under SMS_TRIP_CONVERSION_PERCENT
    # of them were verified.
    SMS_TRIP_FACTOR = env_int("SMS_TRIP_FACTOR", 3)
    SMS_BASELINE_HOURS = env_int("SMS_BASELINE_HOURS", 168)
    SMS_BASELINE_FLOOR = env_int("SMS_BASELINE_FLOOR", 20)
    SMS_TRIP_CONVERSION_PERCENT = env_int("SMS_TRIP_CONVERSION_PERCENT", 20)
    # A network is suspect after this many SMS sends in an hour with the same collapsed conversion.
    SMS_NETWORK_MIN_SENDS = env_int("SMS_NETWORK_MIN_SENDS", 20)
    SMS_SUSPICION_SECONDS = env_int("SMS_SUSPICION_SECONDS", 3600)
    # Under suspicion each RATELIMIT_SEND_NETWORK amount is divided by this, for SMS.
    SMS_SUSPECT_LIMIT_DIVISOR = env_int("SMS_SUSPECT_LIMIT_DIVISOR", 10)
    ATTESTATION_PROVIDER = env_str("ATTESTATION_PROVIDER", "none")
    ATTESTATION_SECRET = env_str("ATTESTATION_SECRET")
    ATTESTATION_VERIFY_URL = env_str("ATTESTATION_VERIFY_URL")
    ATTESTATION_TIMEOUT = float(env_str("ATTESTATION_TIMEOUT", "5"))

    # Personal data: days the audit trail (full phone numbers and email addresses) is kept; ``flask purge``
    # deletes older events. A year (README, "Personal data").
    AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 365)

    @classmethod
    def check(cls):
        """Raise ``ConfigError`` when settings can't work together (in every environment)."""
        if cls.AUDIT_RETENTION_DAYS < MIN_AUDIT_RETENTION_DAYS:
            # The per-destination send limits count the last 24 hours of events.
            raise ConfigError(
                f"AUDIT_RETENTION_DAYS must be at least {MIN_AUDIT_RETENTION_DAYS}: "
                "the send limits count the last day's events"
            )
        if cls.ATTESTATION_PROVIDER not in ATTESTATION_PROVIDERS:
            raise ConfigError(
                f"ATTESTATION_PROVIDER must be one of {', '.join(ATTESTATION_PROVIDERS)}, "
                f"got {cls.ATTESTATION_PROVIDER!r}"
            )
        for name in ("SESSION_CACHE_TTL", "PROFILE_CACHE_TTL"):
            # Redis refuses an expiry of 0 ("invalid expire time"): every revocation would wait in the outbox
            # and every logout answer 503.
            if getattr(cls, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (seconds), got {getattr(cls, name)}")
        if cls.SMS_SUSPECT_LIMIT_DIVISOR < 1 or cls.SMS_TRIP_FACTOR < 1 or cls.SMS_BASELINE_HOURS < 1:
            raise ConfigError(
                "SMS_SUSPECT_LIMIT_DIVISOR, SMS_TRIP_FACTOR and SMS_BASELINE_HOURS must be >= 1"
            )


DEMO_PHONE = "+905372505890"
DEMO_CODE = "1234"


class DevelopmentConfig(Config):
    """Local development: codes echoed, console delivery, loose limits, the demo phone's fixed code."""

    ENV_NAME = "development"
    OTP_ECHO = env_bool("OTP_ECHO", True)
    OTP_TEST_DESTINATIONS = parse_test_destinations(
        env_str("OTP_TEST_DESTINATIONS", f"{DEMO_PHONE}={DEMO_CODE}")
    )
    RATELIMIT_SEND = env_str("RATELIMIT_SEND", "200/hour;30/minute")
    RATELIMIT_SEND_NETWORK = env_str("RATELIMIT_SEND_NETWORK", "6000/hour;600/minute")
    RATELIMIT_VERIFY = env_str("RATELIMIT_VERIFY", "300/minute")
    RATELIMIT_REFRESH = env_str("RATELIMIT_REFRESH", "600/minute")
    # "Try it out" on a developer's machine goes to the local server unless Production is picked.
    API_SPEC_OPTIONS = spec_options([Config.DEVELOPMENT_SERVER, Config.PRODUCTION_SERVER])


class TestingConfig(Config):
    """The test suite: its own database, codes echoed, limits off unless a test turns them on."""

    ENV_NAME = "testing"
    TESTING = True
    SQLALCHEMY_DATABASE_URI = env_str("TEST_DATABASE_URL", "sqlite://")
    REDIS_URL = env_str("TEST_REDIS_URL")
    RATELIMIT_STORAGE_URI = env_str("TEST_REDIS_URL", "memory://")
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", False)
    OTP_ECHO = True
    OTP_TEST_DESTINATIONS = {}
    JWT_SECRET_KEY = "testing-secret-key-that-is-long-enough-0123456789"
    OTP_SECRET_KEY = "testing-otp-key-that-is-long-enough-0123456789"


class ProductionConfig(Config):
    """Real users: secrets required, no echo, real delivery."""

    ENV_NAME = "production"
    LOG_JSON = env_bool("LOG_JSON", True)

    @classmethod
    def check(cls):
        """Refuse what the base refuses, a default or short secret, code echo, console delivery, and
        attestation without a secret."""
        super().check()
        if cls.ATTESTATION_PROVIDER != "none" and not cls.ATTESTATION_SECRET:
            raise ConfigError(f"ATTESTATION_PROVIDER={cls.ATTESTATION_PROVIDER} needs ATTESTATION_SECRET")
        for name in ("SECRET_KEY", "JWT_SECRET_KEY", "OTP_SECRET_KEY"):
            value = getattr(cls, name)
            if name == "JWT_SECRET_KEY" and cls.JWT_ALGORITHM in ASYMMETRIC_JWT_ALGORITHMS:
                continue
            if value == DEFAULT_SECRET or len(value) < 32:
                raise ConfigError(f"{name} must be set to a random value of at least 32 characters")
        if cls.OTP_ECHO:
            raise ConfigError("OTP_ECHO must be off in production: codes would be sent to the client")
        for name in ("SMS_PROVIDER", "EMAIL_PROVIDER"):
            if getattr(cls, name) == "console":
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
