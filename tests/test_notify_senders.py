"""The Twilio, Netgsm and SMTP senders, called directly over real sockets on 127.0.0.1."""

import base64
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError
from allmine_auth.notify.netgsm import NetgsmSmsSender, netgsm_number
from allmine_auth.notify.smtp import SmtpEmailSender
from allmine_auth.notify.twilio import TwilioSmsSender
from tests.fakes import FakeGateway, FakeSmtpServer, free_port, make_certificate

CODE = "4821"
SMS_TEXT = f"Allmine doğrulama kodunuz: {CODE}. Kod 3 dakika geçerlidir."
PHONE = "+905551234567"
SUBJECT = "Allmine doğrulama kodunuz / Your Allmine verification code"
EMAIL_TEXT = f"Merhaba,\n\nAllmine doğrulama kodunuz: {CODE}\nKod 10 dakika geçerlidir (ğüşıöç ĞÜŞİÖÇ).\n"
EMAIL_HTML = f'<p lang="tr">Allmine doğrulama kodunuz: <strong>{CODE}</strong> — ğüşıöç</p>\n'
RECIPIENT = "ayse.test@example.com"


def assert_no_secret(error, text):
    """The error names neither the message text nor the code (as a number of its own)."""
    message = str(error)
    assert text not in message
    assert not re.search(rf"(?<!\d){CODE}(?!\d)", message), message


@pytest.fixture
def gateway():
    with FakeGateway() as fake:
        yield fake


@pytest.fixture
def make_sender():
    """Build senders and close their HTTP sessions afterwards (no unclosed-socket warnings)."""
    built = []

    def make(sender_class, config):
        sender = sender_class(config)
        built.append(sender)
        return sender

    yield make
    for sender in built:
        sender.close()


# --- Twilio ---------------------------------------------------------------------------------------


def twilio_config(url, **overrides):
    config = {
        "NOTIFY_TIMEOUT": 5.0,
        "TWILIO_API_URL": url,
        "TWILIO_ACCOUNT_SID": "ACtest0123456789",
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "TWILIO_FROM": "+15005550006",
        "TWILIO_MESSAGING_SERVICE_SID": None,
    }
    config.update(overrides)
    return config


def test_twilio_posts_the_message_form_with_basic_auth(gateway, make_sender):
    gateway.respond(201, {"sid": "SM0123", "status": "queued"})
    sender = make_sender(TwilioSmsSender, twilio_config(gateway.url))

    sender.send_sms(PHONE, SMS_TEXT)

    [request] = gateway.requests
    assert request.method == "POST"
    assert request.path == "/2010-04-01/Accounts/ACtest0123456789/Messages.json"
    expected = base64.b64encode(b"ACtest0123456789:twilio-token").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {"To": PHONE, "Body": SMS_TEXT, "From": "+15005550006"}


def test_twilio_prefers_the_messaging_service_over_from(gateway, make_sender):
    gateway.respond(201, {"sid": "SM0123"})
    config = twilio_config(gateway.url, TWILIO_MESSAGING_SERVICE_SID="MG0123")
    make_sender(TwilioSmsSender, config).send_sms(PHONE, SMS_TEXT)

    [request] = gateway.requests
    assert request.form == {"To": PHONE, "Body": SMS_TEXT, "MessagingServiceSid": "MG0123"}


def test_twilio_accepts_any_2xx(gateway, make_sender):
    gateway.respond(200, {"sid": "SM0123"})
    make_sender(TwilioSmsSender, twilio_config(gateway.url)).send_sms(PHONE, SMS_TEXT)
    assert len(gateway.requests) == 1


def test_twilio_error_names_status_and_twilio_error_but_not_the_body(gateway, make_sender):
    gateway.respond(
        400,
        {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400},
    )
    sender = make_sender(TwilioSmsSender, twilio_config(gateway.url))

    with pytest.raises(DeliveryError) as caught:
        sender.send_sms(PHONE, SMS_TEXT)

    message = str(caught.value)
    assert message.startswith("twilio:")
    assert "HTTP 400" in message
    assert "21211" in message
    assert "not a valid phone number" in message
    assert_no_secret(caught.value, SMS_TEXT)


@pytest.mark.parametrize(("status", "body"), [(200, "OK, sent"), (502, "<html>Bad Gateway</html>")])
def test_twilio_unreadable_answer_is_a_failure(gateway, make_sender, status, body):
    gateway.respond(status, body)
    sender = make_sender(TwilioSmsSender, twilio_config(gateway.url))

    with pytest.raises(DeliveryError, match=rf"twilio: HTTP {status} with an unreadable answer") as caught:
        sender.send_sms(PHONE, SMS_TEXT)
    assert_no_secret(caught.value, SMS_TEXT)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"TWILIO_ACCOUNT_SID": None}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_FROM": None, "TWILIO_MESSAGING_SERVICE_SID": None}, "TWILIO_FROM"),
    ],
)
def test_twilio_missing_settings_are_a_config_error(overrides, named):
    with pytest.raises(ConfigError, match=named):
        TwilioSmsSender(twilio_config("http://127.0.0.1:1", **overrides))


# --- Netgsm ---------------------------------------------------------------------------------------


def netgsm_config(url, **overrides):
    config = {
        "NOTIFY_TIMEOUT": 5.0,
        "NETGSM_API_URL": url,
        "NETGSM_USERCODE": "8503001122",
        "NETGSM_PASSWORD": "netgsm-pass",
        "NETGSM_HEADER": "ALLMINE",
    }
    config.update(overrides)
    return config


def test_netgsm_posts_the_v2_json_job_with_basic_auth(gateway, make_sender):
    gateway.respond(200, {"code": "00", "jobid": "17377215342605050417149344", "description": "queued"})
    sender = make_sender(NetgsmSmsSender, netgsm_config(gateway.url))

    sender.send_sms(PHONE, SMS_TEXT)

    [request] = gateway.requests
    assert request.method == "POST"
    assert request.path == "/sms/rest/v2/send"
    assert request.basic_auth == ("8503001122", "netgsm-pass")
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "msgheader": "ALLMINE",
        "encoding": "TR",
        "messages": [{"msg": SMS_TEXT, "no": "5551234567"}],
    }


@pytest.mark.parametrize(
    ("phone", "number"),
    [("+905551234567", "5551234567"), ("+4915123456789", "4915123456789"), ("+12025550123", "12025550123")],
)
def test_netgsm_number_format(phone, number):
    assert netgsm_number(phone) == number


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("20", "message text rejected"),
        ("30", "invalid usercode/password"),
        ("40", "sender header"),
        ("50", "IYS-controlled"),
        ("51", "no IYS brand"),
        ("70", "invalid or missing parameter"),
        ("80", "sending limit exceeded"),
        ("85", "duplicate limit exceeded"),
    ],
)
def test_netgsm_refusal_code_is_a_failure(gateway, make_sender, code, meaning):
    gateway.respond(200, {"code": code})
    sender = make_sender(NetgsmSmsSender, netgsm_config(gateway.url))

    with pytest.raises(DeliveryError) as caught:
        sender.send_sms(PHONE, SMS_TEXT)

    message = str(caught.value)
    assert message.startswith(f"netgsm: HTTP 200, code {code}: ")
    assert meaning in message
    assert_no_secret(caught.value, SMS_TEXT)


def test_netgsm_error_status_names_code_and_description(gateway, make_sender):
    gateway.respond(406, {"code": "30", "description": "Geçersiz kullanıcı adı veya şifre", "jobid": None})
    sender = make_sender(NetgsmSmsSender, netgsm_config(gateway.url))

    with pytest.raises(DeliveryError) as caught:
        sender.send_sms(PHONE, SMS_TEXT)

    assert str(caught.value) == "netgsm: HTTP 406, code 30: Geçersiz kullanıcı adı veya şifre"
    assert_no_secret(caught.value, SMS_TEXT)


def test_netgsm_success_code_under_an_error_status_is_a_failure(gateway, make_sender):
    gateway.respond(500, {"code": "00"})
    sender = make_sender(NetgsmSmsSender, netgsm_config(gateway.url))

    with pytest.raises(DeliveryError, match="HTTP 500"):
        sender.send_sms(PHONE, SMS_TEXT)


@pytest.mark.parametrize(("status", "body"), [(200, "00 1234567"), (200, {"jobid": "1"}), (503, "down")])
def test_netgsm_answer_without_a_code_is_a_failure(gateway, make_sender, status, body):
    gateway.respond(status, body)
    sender = make_sender(NetgsmSmsSender, netgsm_config(gateway.url))

    expected = rf"netgsm: HTTP {status} (with an unreadable answer|without a result code)"
    with pytest.raises(DeliveryError, match=expected) as caught:
        sender.send_sms(PHONE, SMS_TEXT)
    assert_no_secret(caught.value, SMS_TEXT)


@pytest.mark.parametrize("missing", ["NETGSM_USERCODE", "NETGSM_PASSWORD", "NETGSM_HEADER"])
def test_netgsm_missing_settings_are_a_config_error(missing):
    with pytest.raises(ConfigError, match=missing):
        NetgsmSmsSender(netgsm_config("http://127.0.0.1:1", **{missing: None}))


# --- Both HTTP providers: transport failures ------------------------------------------------------


HTTP_PROVIDERS = pytest.mark.parametrize(
    ("name", "sender_class", "config", "accepted"),
    [
        ("twilio", TwilioSmsSender, twilio_config, (201, {"sid": "SM0123"})),
        ("netgsm", NetgsmSmsSender, netgsm_config, (200, {"code": "00", "jobid": "1"})),
    ],
    ids=["twilio", "netgsm"],
)


@HTTP_PROVIDERS
def test_a_provider_that_does_not_answer_in_time(gateway, make_sender, name, sender_class, config, accepted):
    gateway.respond(*accepted, delay=2.0)
    sender = make_sender(sender_class, config(gateway.url, NOTIFY_TIMEOUT=0.2))

    started = time.monotonic()
    with pytest.raises(DeliveryError, match=rf"{name}: no answer within 0\.2s") as caught:
        sender.send_sms(PHONE, SMS_TEXT)
    assert time.monotonic() - started < 1.5
    assert_no_secret(caught.value, SMS_TEXT)


@HTTP_PROVIDERS
def test_a_provider_that_refuses_the_connection(make_sender, name, sender_class, config, accepted):
    sender = make_sender(sender_class, config(f"http://127.0.0.1:{free_port()}"))

    with pytest.raises(DeliveryError, match=rf"{name}: request failed: ConnectionError") as caught:
        sender.send_sms(PHONE, SMS_TEXT)
    assert_no_secret(caught.value, SMS_TEXT)


# --- SMTP -----------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path):
    return make_certificate(tmp_path)


def smtp_config(server, **overrides):
    config = {
        "NOTIFY_TIMEOUT": 5.0,
        "SMTP_FROM": "Allmine <no-reply@allmine.app>",
        "SMTP_USERNAME": None,
        "SMTP_PASSWORD": None,
        **server.smtp_config(),
    }
    config.update(overrides)
    return config


def send_code_email(config):
    SmtpEmailSender(config).send_email(RECIPIENT, SUBJECT, EMAIL_TEXT, EMAIL_HTML)


def test_smtp_delivers_text_and_html_in_utf8():
    with FakeSmtpServer() as server:
        send_code_email(smtp_config(server))

    [received] = server.messages
    assert received.mail_from == "no-reply@allmine.app"
    assert received.rcpt_tos == [RECIPIENT]
    assert received.tls is False
    message = received.message
    assert message["From"] == "Allmine <no-reply@allmine.app>"
    assert message["To"] == RECIPIENT
    assert message["Subject"] == SUBJECT
    assert message["Message-ID"].endswith("@allmine.app>")
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    assert received.raw.isascii(), "the body must travel 7-bit clean"
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert text_part.get_content_charset() == "utf-8"
    assert html_part.get_content_charset() == "utf-8"
    assert text_part.get_content() == EMAIL_TEXT
    assert html_part.get_content() == EMAIL_HTML


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_smtp_tls_with_a_verified_certificate(certificate, tls):
    with FakeSmtpServer(tls=tls, certificate=certificate) as server:
        send_code_email(smtp_config(server))

    [received] = server.messages
    assert received.tls is True
    assert received.message.get_body(("plain",)).get_content() == EMAIL_TEXT


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_smtp_refuses_a_certificate_it_cannot_verify(certificate, tls):
    server = FakeSmtpServer(tls=tls, certificate=certificate)
    with server, pytest.raises(DeliveryError, match="SSLCertVerificationError") as caught:
        send_code_email(smtp_config(server, SMTP_CA_FILE=None))

    assert server.messages == []
    assert_no_secret(caught.value, EMAIL_TEXT)


def test_smtp_starttls_is_never_skipped_silently():
    server = FakeSmtpServer()
    with server, pytest.raises(DeliveryError, match="SMTPNotSupportedError"):
        send_code_email(smtp_config(server, SMTP_SECURITY="starttls"))

    assert server.messages == []


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_smtp_logs_in_when_a_username_is_set(certificate, tls):
    with FakeSmtpServer(tls=tls, certificate=certificate, users={"mailer": "s3cret"}) as server:
        send_code_email(smtp_config(server, SMTP_USERNAME="mailer", SMTP_PASSWORD="s3cret"))

    [received] = server.messages
    assert received.login == "mailer"


def test_smtp_without_login_is_refused_by_a_server_that_wants_one(certificate):
    server = FakeSmtpServer(tls="starttls", certificate=certificate, users={"mailer": "s3cret"})
    with server, pytest.raises(DeliveryError, match=r"SMTPSenderRefused: 530"):
        send_code_email(smtp_config(server))

    assert server.messages == []


def test_smtp_wrong_password_is_a_delivery_error(certificate):
    server = FakeSmtpServer(tls="starttls", certificate=certificate, users={"mailer": "s3cret"})
    with server, pytest.raises(DeliveryError, match=r"SMTPAuthenticationError: 535") as caught:
        send_code_email(smtp_config(server, SMTP_USERNAME="mailer", SMTP_PASSWORD="wrong"))

    assert server.messages == []
    assert "wrong" not in str(caught.value)


def test_smtp_refused_connection():
    port = free_port()
    config = {"NOTIFY_TIMEOUT": 5.0, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_SECURITY": "none"}

    with pytest.raises(DeliveryError, match=rf"smtp 127\.0\.0\.1:{port}: ConnectionRefusedError") as caught:
        send_code_email(config)
    assert_no_secret(caught.value, EMAIL_TEXT)


def test_smtp_relay_that_never_greets_times_out():
    # The kernel completes the handshake for a listening socket; nobody ever answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = {"NOTIFY_TIMEOUT": 0.2, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_SECURITY": "none"}

        started = time.monotonic()
        with pytest.raises(DeliveryError, match=rf"smtp 127\.0\.0\.1:{port}: .*timed out"):
            send_code_email(config)
    assert time.monotonic() - started < 1.5


def test_smtp_rejected_data_is_a_delivery_error():
    with FakeSmtpServer() as server:
        server.reject_data = "550 5.7.1 Message rejected as spam"
        with pytest.raises(DeliveryError) as caught:
            send_code_email(smtp_config(server))

    message = str(caught.value)
    assert message == f"smtp 127.0.0.1:{server.port}: SMTPDataError: 550 5.7.1 Message rejected as spam"
    assert server.messages == []
    assert_no_secret(caught.value, EMAIL_TEXT)


def test_smtp_rejected_recipient_is_a_delivery_error():
    with FakeSmtpServer() as server:
        server.reject_rcpt = "550 5.1.1 No such user"
        with pytest.raises(DeliveryError, match=r"recipient refused: 550 5\.1\.1 No such user") as caught:
            send_code_email(smtp_config(server))

    assert server.messages == []
    assert_no_secret(caught.value, EMAIL_TEXT)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"SMTP_SECURITY": "tls"}, "SMTP_SECURITY must be one of starttls, ssl, none, got 'tls'"),
        ({"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": None}, "SMTP_PASSWORD"),
        ({"SMTP_FROM": "Allmine"}, "SMTP_FROM must be an email address"),
        ({"SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SMTP_CA_FILE '/nonexistent/ca.pem' cannot be loaded"),
    ],
)
def test_smtp_bad_settings_are_a_config_error(overrides, reason):
    config = {"NOTIFY_TIMEOUT": 5.0, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": 25, **overrides}
    with pytest.raises(ConfigError, match=re.escape(reason)):
        SmtpEmailSender(config)


# --- The pooled HTTP client (notify.pooled) ---------------------------------------------------------


def test_the_pooled_client_goes_through_the_environments_proxy_unless_bypassed(monkeypatch):
    import urllib3

    from allmine_auth.notify import pooled

    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not isinstance(pooled.pool_for("https://api.twilio.com/x"), urllib3.ProxyManager)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert isinstance(pooled.pool_for("https://api.twilio.com/x"), urllib3.ProxyManager)
    monkeypatch.setenv("no_proxy", "api.twilio.com")
    assert not isinstance(pooled.pool_for("https://api.twilio.com/x"), urllib3.ProxyManager)


def test_the_pooled_client_reports_failures_under_the_names_requests_gave_them():
    import urllib3

    from allmine_auth.notify import pooled

    assert pooled.failure_name(urllib3.exceptions.ProtocolError("reset")) == "ConnectionError"
    assert pooled.failure_name(urllib3.exceptions.SSLError("bad certificate")) == "SSLError"


def test_a_worker_imports_only_the_senders_it_is_configured_with():
    code = (
        "import sys; from allmine_auth import create_app; "
        "create_app('testing', migrations=False); "
        "print(sorted(m for m in sys.modules if m.startswith('allmine_auth.notify.')))"
    )
    environment = {**os.environ, "SMS_PROVIDER": "console", "EMAIL_PROVIDER": "console"}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.splitlines()[-1]
    assert not any(sender in loaded for sender in ("notify.twilio", "notify.netgsm", "notify.smtp")), loaded
