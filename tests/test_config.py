"""Settings: read from the environment when an app is built, one default each, bad values a ConfigError."""

import subprocess
import sys

import pytest

from allmine_auth import create_app
from allmine_auth.config import (
    BASE_DIR,
    DEMO_CODE,
    DEMO_PHONE,
    Config,
    ConfigError,
    DevelopmentConfig,
    FromEnvironment,
    ProductionConfig,
    TestingConfig,
    parse_number,
    parse_whole_number,
    settings_for,
)
from tests.conftest import make_config

NUMERIC_SETTINGS = sorted(
    (name, value.var or name, value.parse)
    for name, value in vars(Config).items()
    if isinstance(value, FromEnvironment) and value.parse in (parse_whole_number, parse_number)
)


def test_every_numeric_setting_is_checked():
    assert {"NOTIFY_TIMEOUT", "ATTESTATION_TIMEOUT", "OTP_RESEND_INTERVAL", "PORT"} <= {
        name for name, _, _ in NUMERIC_SETTINGS
    }


@pytest.mark.parametrize(("name", "variable", "parse"), NUMERIC_SETTINGS)
def test_a_bad_number_is_a_config_error_that_names_the_variable(name, variable, parse):
    kind = "a whole number" if parse is parse_whole_number else "a number"
    with pytest.raises(ConfigError, match=f"^{variable} must be {kind}, got 'soon'$"):
        settings_for(Config, {variable: "soon"})


def test_timeouts_may_be_fractional_seconds():
    settings = settings_for(Config, {"NOTIFY_TIMEOUT": "2.5", "ATTESTATION_TIMEOUT": "0.5"})
    assert (settings["NOTIFY_TIMEOUT"], settings["ATTESTATION_TIMEOUT"]) == (2.5, 0.5)
    defaults = settings_for(Config, {})
    assert (defaults["NOTIFY_TIMEOUT"], defaults["ATTESTATION_TIMEOUT"]) == (10, 5)


def test_the_environment_is_read_when_the_app_is_built(monkeypatch):
    monkeypatch.setenv("NOTIFY_TIMEOUT", "3")
    assert create_app("testing").config["NOTIFY_TIMEOUT"] == 3.0
    monkeypatch.setenv("NOTIFY_TIMEOUT", "later")
    with pytest.raises(ConfigError, match="NOTIFY_TIMEOUT must be a number, got 'later'"):
        create_app("testing")


SAFE_PRODUCTION = type(
    "SafeProduction",
    (ProductionConfig,),
    {"SECRET_KEY": "s" * 40, "JWT_SECRET_KEY": "j" * 40, "OTP_SECRET_KEY": "o" * 40},
)


@pytest.mark.parametrize(
    ("config_class", "environ", "echo"),
    [
        (Config, {}, False),
        (DevelopmentConfig, {}, True),
        (DevelopmentConfig, {"OTP_ECHO": "off"}, False),
        (Config, {"OTP_ECHO": "yes"}, True),
        # The suite always echoes, whatever the environment says.
        (TestingConfig, {"OTP_ECHO": "off"}, True),
    ],
)
def test_otp_echo_has_one_default_per_environment(config_class, environ, echo):
    assert settings_for(config_class, environ)["OTP_ECHO"] is echo


def test_production_reads_otp_echo_off_and_refuses_it_on():
    environ = {"SMS_PROVIDER": "twilio", "EMAIL_PROVIDER": "smtp"}
    assert settings_for(SAFE_PRODUCTION, environ)["OTP_ECHO"] is False
    with pytest.raises(ConfigError, match="OTP_ECHO must be off in production"):
        settings_for(SAFE_PRODUCTION, {**environ, "OTP_ECHO": "on"})


def test_a_value_given_in_code_wins_over_the_environment():
    settings = settings_for(make_config(RATELIMIT_ENABLED=True), {"RATELIMIT_ENABLED": "0"})
    assert settings["RATELIMIT_ENABLED"] is True


def test_the_demo_phone_has_its_fixed_code_in_development_only():
    assert DEMO_PHONE == "+905372505890"
    assert settings_for(DevelopmentConfig, {})["OTP_TEST_DESTINATIONS"] == {DEMO_PHONE: (DEMO_CODE, None)}
    assert settings_for(Config, {})["OTP_TEST_DESTINATIONS"] == {}
    settings = settings_for(DevelopmentConfig, {"OTP_TEST_DESTINATIONS": "a@b.co=0000"})
    assert settings["OTP_TEST_DESTINATIONS"] == {"a@b.co": ("0000", None)}


def test_settings_derived_from_others():
    settings = settings_for(
        DevelopmentConfig, {"PORT": "8080", "DATABASE_POOL_RECYCLE": "60", "REDIS_URL": "redis://r/1"}
    )
    assert settings["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": False, "pool_recycle": 60}
    assert settings["API_SPEC_OPTIONS"]["servers"] == [
        {"url": "http://127.0.0.1:8080", "description": "Development"},
        {"url": "https://api.allmine.app", "description": "Production"},
    ]
    assert settings["RATELIMIT_STORAGE_URI"] == "redis://r/1"
    assert settings_for(Config, {})["RATELIMIT_STORAGE_URI"] == "memory://"
    assert (
        settings_for(Config, {"REDIS_URL": "redis://r/1", "RATELIMIT_STORAGE_URI": "memory://"})[
            "RATELIMIT_STORAGE_URI"
        ]
        == "memory://"
    )
    assert settings_for(Config, {})["API_SPEC_OPTIONS"]["servers"][0]["description"] == "Production"


def test_the_suite_reads_its_own_database_and_redis_variables():
    environ = {
        "DATABASE_URL": "postgresql://prod/db",
        "REDIS_URL": "redis://prod/0",
        "TEST_REDIS_URL": "redis://t/4",
    }
    settings = settings_for(TestingConfig, environ)
    assert settings["SQLALCHEMY_DATABASE_URI"] == "sqlite://"
    assert (settings["REDIS_URL"], settings["RATELIMIT_STORAGE_URI"]) == ("redis://t/4", "redis://t/4")


def test_each_app_gets_its_own_copy_of_a_default():
    first, second = settings_for(Config, {}), settings_for(Config, {})
    first["SMS_ALLOWED_COUNTRIES"].append("DE")
    assert second["SMS_ALLOWED_COUNTRIES"] == ["TR"]


def test_no_module_named_config_is_installed(tmp_path):
    code = "import importlib.util; print(importlib.util.find_spec('config'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "None", result.stderr


@pytest.mark.parametrize(
    ("env", "returncode", "output"),
    [
        (
            {"APP_ENV": "production"},
            1,
            "allmine_auth: refusing to start: SECRET_KEY must be set to a random value",
        ),
        ({"APP_ENV": "testing"}, 0, "allmine_auth: the testing settings are safe to start with"),
        ({"APP_ENV": "staging"}, 1, "allmine_auth: refusing to start: APP_ENV must be one of"),
    ],
)
def test_the_deployment_check_beside_wsgi(env, returncode, output):
    result = subprocess.run(
        [sys.executable, "config.py"],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=BASE_DIR,
    )
    assert result.returncode == returncode
    assert (result.stdout + result.stderr).strip().startswith(output)
