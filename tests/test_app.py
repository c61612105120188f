"""The foundation: factory and settings, probes, the OpenAPI spec and Swagger UI, CLI."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import redis
import sqlalchemy as sa

from allmine_auth import config, create_app
from allmine_auth.cache import RedisHealth, get_redis
from allmine_auth.config import ConfigError, ProductionConfig
from allmine_auth.extensions import db
from allmine_auth.observability import new_request_id
from allmine_auth.rules.profiles import PROFILE_CACHE_PREFIX
from tests.conftest import AuthActions, assert_envelope, assert_error, bearer

GOOD_SECRET = "x" * 40
SAFE_PRODUCTION = {
    "SECRET_KEY": GOOD_SECRET,
    "JWT_SECRET_KEY": GOOD_SECRET + "j",
    "OTP_SECRET_KEY": GOOD_SECRET + "o",
    "OTP_ECHO": False,
    "SMS_PROVIDER": "netgsm",
    "EMAIL_PROVIDER": "smtp",
    "NETGSM_USERCODE": "u",
    "NETGSM_PASSWORD": "p",
    "NETGSM_HEADER": "ALLMINE",
    "SQLALCHEMY_DATABASE_URI": "sqlite://",
}


def production(**overrides):
    return type("P", (ProductionConfig,), {**SAFE_PRODUCTION, **overrides})


def test_factory_uses_the_given_config(app):
    assert app.config["TESTING"] is True
    assert app.config["ENV_NAME"] == "testing"
    assert "allmine_sms" in app.extensions


def test_factory_reads_app_env(monkeypatch):
    monkeypatch.setenv("APP_ENV", "testing")
    assert create_app().config["ENV_NAME"] == "testing"


def test_unknown_app_env_is_refused():
    with pytest.raises(ConfigError, match="APP_ENV must be one of development, testing, production"):
        create_app("staging")


def test_safe_production_settings_start():
    app = create_app(production())
    assert app.config["OTP_ECHO"] is False


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"SECRET_KEY": config.DEFAULT_SECRET}, "SECRET_KEY must be set"),
        ({"JWT_SECRET_KEY": "short"}, "JWT_SECRET_KEY must be set"),
        ({"OTP_SECRET_KEY": config.DEFAULT_SECRET}, "OTP_SECRET_KEY must be set"),
        ({"OTP_ECHO": True}, "OTP_ECHO must be off in production"),
        ({"SMS_PROVIDER": "console"}, "SMS_PROVIDER=console"),
        ({"EMAIL_PROVIDER": "console"}, "EMAIL_PROVIDER=console"),
    ],
)
def test_production_refuses_unsafe_settings(overrides, reason):
    with pytest.raises(ConfigError, match=reason):
        create_app(production(**overrides))


def test_wsgi_refuses_to_start_with_one_line_reason(tmp_path):
    env = {"APP_ENV": "production", "PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], capture_output=True, text=True, env=env, cwd=config.BASE_DIR
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "allmine_auth: refusing to start: SECRET_KEY must be set to a random value of at least 32 characters"
    ]


def test_a_worker_freezes_what_it_built_out_of_the_garbage_collector(tmp_path):
    env = {"APP_ENV": "testing", "PATH": "/usr/bin:/bin", "TEST_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    code = "import gc, wsgi; print(gc.get_freeze_count())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=config.BASE_DIR
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50_000


def test_bad_number_setting_is_reported(monkeypatch):
    monkeypatch.setenv("OTP_RESEND_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="OTP_RESEND_INTERVAL must be a whole number, got 'soon'"):
        create_app("testing")


def test_resend_interval_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTP_RESEND_INTERVAL", "42")
    monkeypatch.setenv("REFRESH_TOKEN_REUSE_INTERVAL", "7")
    app = create_app("testing")
    assert (app.config["OTP_RESEND_INTERVAL"], app.config["REFRESH_TOKEN_REUSE_INTERVAL"]) == (42, 7)


def test_test_destinations_are_parsed():
    assert config.parse_test_destinations("+905550000001=1234@2027-01-31, a@b.co=0000") == {
        "+905550000001": ("1234", config.date(2027, 1, 31)),
        "a@b.co": ("0000", None),
    }
    with pytest.raises(ConfigError, match="OTP_TEST_DESTINATIONS"):
        config.parse_test_destinations("+905550000001=12")


def test_healthz(client):
    assert_envelope(client.get("/healthz"), 200, {"status": "ok"})


def test_readyz_checks_the_database(client, app):
    data = assert_envelope(client.get("/readyz"), 200)
    assert data["status"] == "ok"
    assert data["checks"]["database"] == "ok"
    if app.config["REDIS_URL"]:
        assert data["checks"]["redis"] == "ok"


def test_readyz_answers_503_when_the_database_is_gone(make_app, tmp_path):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing/dir/x.db")
    assert_error(app.test_client().get("/readyz"), 503, "Service unavailable", "database: not answering")


def test_readyz_answers_503_when_redis_is_gone(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        db.create_all()
    assert_error(app.test_client().get("/readyz"), 503, "Service unavailable", "redis: not answering")


def test_redis_going_away_and_coming_back_is_a_fallback_not_an_error(make_app, private_redis, caplog):
    # Each thread keeps its own Redis connection (allmine_auth/cache.py): a dead one must not stick.
    app = make_app(fresh=True, REDIS_URL=private_redis.url)
    client = app.test_client()
    with app.app_context():
        login = AuthActions(client).login()
        profile_key = PROFILE_CACHE_PREFIX + login["user"]["id"]

        def me():
            return client.get("/api/v1/auth/me", headers=bearer(login["accessToken"]))

        assert_envelope(me(), 200, data=login["user"])
        assert redis.Redis.from_url(private_redis.url).exists(profile_key) == 1
        private_redis.stop()
        assert_envelope(me(), 200, data=login["user"])  # from the database
        assert "Redis unavailable; reading session from the database" in caplog.text
        private_redis.start()  # empty, on the same port
        time.sleep(RedisHealth.SKIP_SECONDS)  # a worker that saw Redis fail reads the database a moment
        assert_envelope(me(), 200, data=login["user"])
        assert redis.Redis.from_url(private_redis.url).exists(profile_key) == 1  # filled again


def test_a_forked_process_opens_its_own_redis_connection(make_app, private_redis):
    # gunicorn --preload forks workers from a process that may have used Redis already.
    app = make_app(REDIS_URL=private_redis.url)
    with app.app_context():
        parent = get_redis()
        assert parent.ping()
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only with a client of its own that answers
            try:
                child = get_redis()
                os._exit(0 if child is not parent and child.ping() else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert get_redis() is parent
        assert parent.ping()  # the parent's connection was left alone


def test_spec_lists_every_route(client, app):
    spec = client.get("/openapi.json").get_json()
    assert spec["info"]["title"] == "Allmine API"
    assert spec["openapi"].startswith("3.0")
    assert [server["description"] for server in spec["servers"]] == ["Production", "Development"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "Authentication" in [tag["name"] for tag in spec["tags"]]
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routed = set()
    for rule in app.url_map.iter_rules():
        # The docs themselves and the Prometheus scrape are not API operations.
        undocumented = ("static", "api-docs.openapi_json", "api-docs.openapi_swagger_ui", "metrics")
        if rule.endpoint in undocumented or rule.endpoint.startswith("swagger_ui_assets"):
            continue
        path = str(rule).replace("<uuid:", "{").replace("<", "{").replace(">", "}")
        routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed <= documented, routed - documented


def test_spec_carries_the_seed_summaries_and_warning(client):
    spec = client.get("/openapi.json").get_json()
    send = spec["paths"]["/api/v1/auth/send-otp"]["post"]
    assert send["summary"] == "Doğrulama kodu gönder"
    assert send["description"].startswith("**Production uyarisi:** Bu endpoint veri degistirir")
    assert send["tags"] == ["Authentication"]
    verify = spec["paths"]["/api/v1/auth/verify-otp"]["post"]
    assert verify["summary"] == "Doğrulama kodu ile giriş yap"
    assert spec["paths"]["/api/v1/auth/refresh"]["post"]["summary"] == "Access token yenile"
    assert spec["paths"]["/api/v1/auth/logout"]["post"]["security"] == [{"bearerAuth": []}]
    body = send["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][body]["properties"]["phoneNumber"]["example"] == "5551234567"


def test_swagger_ui_is_served_with_its_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert b"swagger-ui-bundle.js" in page.data
    assert b"/openapi.json" in page.data
    with client.get("/docs/assets/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
        assert len(asset.data) > 100_000


def test_request_id_is_returned_and_accepted(client):
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/healthz", headers={"X-Request-ID": "bad id <x>"}).headers["X-Request-ID"]) == 32


def test_migrations_build_the_schema_the_models_describe(app, runner, tmp_path):
    url = f"sqlite:///{tmp_path}/migrated.db"
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        with app.app_context():
            db.drop_all()
            db.session.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
            db.session.commit()
    env = {"DATABASE_URL": url, "APP_ENV": "development", "PATH": "/usr/bin:/bin"}
    flask = [sys.executable, "-m", "flask", "--app", "allmine_auth", "db"]
    for command in (["upgrade"], ["check"], ["downgrade", "base"], ["upgrade"]):
        result = subprocess.run(flask + command, capture_output=True, text=True, env=env, cwd=config.BASE_DIR)
        assert result.returncode == 0, result.stderr
    assert (
        "No new upgrade operations detected."
        in subprocess.run(
            flask + ["check"], capture_output=True, text=True, env=env, cwd=config.BASE_DIR
        ).stdout
    )


def test_swagger_ui_preselects_the_local_server_in_development():
    app = create_app(config.DevelopmentConfig)
    servers = app.test_client().get("/openapi.json").get_json()["servers"]
    assert [server["description"] for server in servers] == ["Development", "Production"]
    assert servers[0]["url"].startswith("http://127.0.0.1:")
    with app.app_context():
        db.engine.dispose()


def test_gunicorn_stops_at_once_on_unsafe_production_settings(tmp_path):
    env = {"APP_ENV": "production", "PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "--bind",
        "127.0.0.1:0",
        "wsgi:app",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=config.BASE_DIR, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "allmine_auth: refusing to start: SECRET_KEY must be set to a random value of at least 32 characters"
    )
    assert "Booting worker" not in result.stderr


def test_production_logs_json_lines_with_the_request_id(capfd):
    app = create_app(production())
    with app.app_context():
        db.create_all()
    app.test_client().post(
        "/api/v1/auth/send-otp",
        json={"countryCode": "1", "phoneNumber": "2015550123"},
        headers={"X-Request-ID": "r-1"},
    )
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    refused = [line for line in lines if "SMS send refused" in line["message"]]
    assert refused and refused[0]["request_id"] == "r-1" and refused[0]["level"] == "WARNING"
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("config_overrides", [{"FAST_PATHS": True}], ids=["fast paths"])
def test_there_are_no_cookie_sessions(app, client):
    import flask

    with app.test_request_context("/"):
        assert isinstance(flask.session, flask.sessions.NullSession)
    response = client.get("/healthz")
    assert "Set-Cookie" not in response.headers


def test_a_made_request_id_is_a_random_version_4_uuid_as_uuid4_hex_writes_it():
    made = {new_request_id() for _ in range(200)}
    assert len(made) == 200
    for request_id in made:
        parsed = uuid.UUID(hex=request_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, request_id)
