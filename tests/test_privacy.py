"""Personal data: phone numbers and email addresses masked in every log line, the audit trail's retention."""

import io
import json
import logging
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from allmine_auth import create_app
from allmine_auth.config import ConfigError
from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, utcnow
from allmine_auth.observability import ServiceLogHandler
from allmine_auth.privacy import mask_email, mask_phone, mask_text
from allmine_auth.rules.audit import Event
from tests.conftest import E164, PHONE, assert_envelope, assert_error, make_config
from tests.fakes import FakeGateway, FakeSmtpServer

MASKED_PHONE = "+90532*****67"
ADDRESS = "ayse.yilmaz@example.com"
MASKED_EMAIL = "a***@example.com"
US_PHONE = {"countryCode": "1", "phoneNumber": "2015550123"}


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+905372505890", "+90537*****90"),
        ("+12015550123", "+1201*****23"),
        ("+4915112345678", "+49151******78"),
        ("+35312345", "+353***45"),
    ],
)
def test_a_phone_number_keeps_its_calling_code_three_digits_and_the_last_two(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("address", "masked"),
    [("john.doe@example.com", "j***@example.com"), ("x@örnek.com.tr", "x***@örnek.com.tr")],
)
def test_an_email_keeps_its_first_character_and_its_domain(address, masked):
    assert mask_email(address) == masked


def test_any_number_or_address_in_a_text_is_masked_and_masking_twice_changes_nothing():
    text = (
        "to +905372505890 and %2B905372505890, {'ayse.yilmaz@example.com': (550, b'no')}, "
        "a+905372505890@example.com at 2026-11-29T00:56:00+00:00, job 17377215342605050417, "
        "destination=ayse.yilmaz@example.com, GET /x?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln&a=1"
    )
    masked = mask_text(text)
    assert masked == (
        "to +90537*****90 and +90537*****90, {'a***@example.com': (550, b'no')}, "
        "a***@example.com at 2026-11-29T00:56:00+00:00, job 17377215342605050417, "
        "destination=a***@example.com, GET /x?token=[token]&a=1"
    )
    assert mask_text(masked) == masked


def formatted(caplog):
    """Every captured record formatted: logger name, message and any traceback."""
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_no_personal_data(text, *full_values):
    """None of ``full_values`` (and no unmasked E.164 number) is in ``text``."""
    for value in full_values:
        assert value not in text, text
    assert re.search(r"\+\d{7,}", text) is None, text


def test_a_login_logs_the_number_masked_and_the_console_shows_the_code(client, auth, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    code = assert_envelope(auth.send(), 201)["code"]
    assert_envelope(auth.verify(code), 200)
    text = formatted(caplog)
    assert_no_personal_data(text, E164, PHONE["phoneNumber"])
    assert f"auth event code_sent destination={MASKED_PHONE}" in text
    assert f"auth event login destination={MASKED_PHONE}" in text
    # Development only (production refuses the console sender): the code is there, the number is not.
    assert f"SMS to {MASKED_PHONE}: Allmine doğrulama kodunuz: {code}." in text


def test_an_email_login_logs_the_address_masked(client, auth, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    auth.login_email(ADDRESS)
    text = formatted(caplog)
    assert_no_personal_data(text, ADDRESS, "ayse.yilmaz")
    assert f"Email to {MASKED_EMAIL}: " in text
    assert f"auth event login destination={MASKED_EMAIL}" in text


def test_a_refused_send_logs_the_number_masked(client, auth, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    response = auth.send(US_PHONE)
    assert_error(response, 400, "Validation failed", "countryCode: SMS to this country is not available.")
    text = formatted(caplog)
    assert_no_personal_data(text, "+12015550123", "2015550123")
    assert "SMS send refused (country US not allowed) for +1201*****23" in text
    assert "auth event send_refused destination=+1201*****23" in text
    # The audit trail keeps the full number: it is where an operator looks it up.
    assert db.session.scalar(sa.select(AuthEvent.destination)) == "+12015550123"


def test_a_failed_sms_logs_no_number_even_when_the_gateway_names_it(make_app, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    with FakeGateway(
        status=400, body={"code": 21211, "message": f"The 'To' number {E164} is not valid"}
    ) as gw:
        app = make_app(
            fresh=True,
            SMS_PROVIDER="twilio",
            TWILIO_API_URL=gw.url,
            TWILIO_ACCOUNT_SID="AC123",
            TWILIO_AUTH_TOKEN="token",
            TWILIO_FROM="+15005550006",
            OTP_ECHO=False,
        )
        with app.app_context():
            response = app.test_client().post("/api/v1/auth/send-otp", json=PHONE)
            assert_error(response, 500, "SMS gönderilirken hata oluştu")
            code = re.search(r"kodunuz: (\d{4})", gw.requests[0].form["Body"]).group(1)
    text = formatted(caplog)
    assert_no_personal_data(text, E164)
    assert f"The 'To' number {MASKED_PHONE} is not valid" in text
    assert f"auth event delivery_failed destination={MASKED_PHONE}" in text
    assert re.search(rf"(?<!\d){code}(?!\d)", text) is None


def test_a_failed_email_logs_no_address_even_when_the_relay_names_it(make_app, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    with FakeSmtpServer() as server:
        server.reject_rcpt = f"550 5.1.1 <{ADDRESS}>: Recipient address rejected"
        app = make_app(
            fresh=True,
            EMAIL_PROVIDER="smtp",
            SMTP_HOST=server.host,
            SMTP_PORT=server.port,
            SMTP_SECURITY="none",
            NOTIFY_TIMEOUT=2,
        )
        with app.app_context():
            response = app.test_client().post("/api/v1/auth/send-otp-email", json={"email": ADDRESS})
            assert_error(response, 500, "Email gönderilirken hata oluştu")
    text = formatted(caplog)
    assert_no_personal_data(text, ADDRESS, "ayse.yilmaz")
    assert f"<{MASKED_EMAIL}>: Recipient address rejected" in text
    assert f"auth event delivery_failed destination={MASKED_EMAIL}" in text


def test_json_lines_and_tracebacks_are_masked_too(make_app):
    app = make_app(fresh=True, LOG_JSON=True)

    def explode():
        raise RuntimeError(f"no account for {ADDRESS} or {E164}")

    app.add_url_rule("/api/v1/explode", view_func=explode)
    (handler,) = [h for h in logging.getLogger("allmine_auth").handlers if isinstance(h, ServiceLogHandler)]
    stream = io.StringIO()
    handler.setStream(stream)
    with app.app_context():
        assert_error(app.test_client().get("/api/v1/explode"), 500, "Internal server error")
        assert_envelope(app.test_client().post("/api/v1/auth/send-otp", json=PHONE), 201)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (failure,) = [line for line in lines if line["level"] == "ERROR"]
    assert failure["message"] == "unhandled RuntimeError"
    assert f"RuntimeError: no account for {MASKED_EMAIL} or {MASKED_PHONE}" in failure["exception"]
    assert f"auth event code_sent destination={MASKED_PHONE} user=None" in [line["message"] for line in lines]
    assert_no_personal_data(stream.getvalue(), ADDRESS, E164)


def old_event(days):
    """An audit event with the full number, ``days`` old."""
    db.session.execute(
        sa.insert(AuthEvent).values(
            kind=str(Event.LOGIN),
            channel="sms",
            destination=E164,
            created_at=utcnow() - timedelta(days=days),
        )
    )
    db.session.commit()


def event_ages():
    """The whole days since each audit event, oldest first."""
    now = utcnow()
    return [
        (now - at).days for at in db.session.scalars(sa.select(AuthEvent.created_at).order_by("created_at"))
    ]


def test_purge_deletes_audit_events_older_than_the_retention(make_app):
    app = make_app(fresh=True, AUDIT_RETENTION_DAYS=30)
    with app.app_context():
        for days in (400, 31, 29, 0):
            old_event(days)
        result = app.test_cli_runner().invoke(args=["purge"])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "Purged 2 audit events older than 30 days."
        assert event_ages() == [29, 0]


def test_the_default_retention_is_a_year(runner):
    for days in (366, 364):
        old_event(days)
    result = runner.invoke(args=["purge"])
    assert result.output.splitlines()[-1] == "Purged 1 audit events older than 365 days."
    assert event_ages() == [364]


@pytest.mark.parametrize("days", [0, -1])
def test_a_retention_shorter_than_the_limits_look_back_is_refused_at_start(days):
    with pytest.raises(ConfigError, match="AUDIT_RETENTION_DAYS must be at least 1"):
        create_app(make_config(AUDIT_RETENTION_DAYS=days))


def test_a_log_call_with_bad_arguments_neither_fails_nor_leaks(app, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    logging.getLogger("allmine_auth.anywhere").info("%d codes for", E164)
    (record,) = caplog.records
    assert record.getMessage() == f"%d codes for (arguments: ('{MASKED_PHONE}',))"
