"""Email login: send-otp-email and verify-otp-email, the SMTP sender, and one person per identity."""

import logging
import re
import uuid

import pytest
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, OneTimeCode, User
from tests.conftest import assert_envelope, assert_error, bearer
from tests.fakes import FakeSmtpServer, free_port
from tests.timeshift import travel

SEND = "/api/v1/auth/send-otp-email"
VERIFY = "/api/v1/auth/verify-otp-email"
ADDRESS = "user@example.com"
PROFILE = {
    "name": "Ada",
    "surname": "Yılmaz",
    "username": "ada.yilmaz",
    "privacyPolicyAccepted": True,
    "privacyPolicyVersion": "1.2.0",
    "termsOfUseAccepted": True,
    "termsOfUseVersion": "1.1.0",
}


def count(model):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def send(client, email=ADDRESS):
    return client.post(SEND, json={"email": email})


def test_send_otp_email_answers_with_the_address_and_the_echoed_code(client, caplog):
    caplog.set_level(logging.INFO, "allmine_auth")
    data = assert_envelope(send(client), 201)
    assert data == {"email": ADDRESS, "code": data["code"]}
    assert re.fullmatch(r"\d{4}", data["code"])
    assert "Email to u***@example.com" in caplog.text and ADDRESS not in caplog.text


def test_addresses_are_normalised(client):
    data = assert_envelope(send(client, "  User@EXAMPLE.com "), 201)
    assert data["email"] == ADDRESS
    assert db.session.scalar(sa.select(OneTimeCode.destination)) == ADDRESS


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@b", "user@@example.com", "user@example..com", "x" * 250 + "@e.co"]
)
def test_bad_addresses_are_a_400_and_change_nothing(client, email):
    response = send(client, email)
    body = response.get_json()
    assert response.status_code == 400
    assert body["errors"][0] == "Validation failed"
    assert body["errors"][1].startswith("email: ")
    assert count(OneTimeCode) == 0 and count(AuthEvent) == 0


def test_email_codes_live_ten_minutes(client):
    code = send(client).get_json()["data"]["code"]
    row = db.session.scalar(sa.select(OneTimeCode))
    assert (row.expires_at - row.created_at).total_seconds() == 600
    travel(590)
    assert_envelope(client.post(VERIFY, json={"email": ADDRESS, "code": code}), 200)


def test_an_expired_email_code_is_refused(client):
    code = send(client).get_json()["data"]["code"]
    travel(601)
    assert_error(client.post(VERIFY, json={"email": ADDRESS, "code": code}), 401, "Invalid or expired code")


def test_email_sends_have_the_same_limits(client):
    send(client)
    response = send(client)
    assert_error(response, 429, "Too many requests")
    assert int(response.headers["Retry-After"]) >= 59


def test_verify_creates_an_email_user_and_returns_to_it(client, auth):
    first = auth.login_email()
    user = first["user"]
    assert (user["email"], user["isEmailVerified"], user["phoneNumber"]) == (ADDRESS, True, None)
    travel(61)
    assert auth.login_email("USER@example.com")["user"]["id"] == user["id"]
    assert count(User) == 1


def test_wrong_email_code_is_401_and_three_burn_it(client):
    code = send(client).get_json()["data"]["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    for _ in range(3):
        assert_error(
            client.post(VERIFY, json={"email": ADDRESS, "code": wrong}), 401, "Invalid or expired code"
        )
    assert_error(client.post(VERIFY, json={"email": ADDRESS, "code": code}), 401, "Invalid or expired code")


def test_a_phone_user_who_verifies_an_email_is_one_person(client, auth):
    phone_user = auth.login()
    code = send(client).get_json()["data"]["code"]
    profile = {**PROFILE, "email": ADDRESS, "emailCode": code}
    user = assert_envelope(
        client.post(
            "/api/v1/auth/complete-registration", json=profile, headers=bearer(phone_user["accessToken"])
        ),
        200,
    )
    assert (user["email"], user["isEmailVerified"]) == (ADDRESS, True)
    travel(61)
    assert auth.login_email()["user"]["id"] == phone_user["user"]["id"]
    assert count(User) == 1


def test_an_email_held_by_another_account_is_a_409(client, auth, unique_phone):
    auth.login_email()
    other = auth.login(unique_phone())
    response = client.post(
        "/api/v1/auth/complete-registration",
        json={**PROFILE, "email": ADDRESS},
        headers=bearer(other["accessToken"]),
    )
    assert_error(response, 409, "Resource already exists or cannot be changed in its current state")
    assert db.session.get(User, uuid.UUID(other["user"]["id"])).email is None


def test_an_unproven_email_gives_way_to_the_person_who_proves_it(client, auth):
    claimant = auth.login()
    response = client.post(
        "/api/v1/auth/complete-registration",
        json={**PROFILE, "email": ADDRESS},
        headers=bearer(claimant["accessToken"]),
    )
    assert assert_envelope(response, 200)["isEmailVerified"] is False
    owner = auth.login_email()
    assert owner["user"]["id"] != claimant["user"]["id"]
    me = assert_envelope(client.get("/api/v1/auth/me", headers=bearer(claimant["accessToken"])), 200)
    assert me["email"] is None


@pytest.fixture
def smtp_server():
    with FakeSmtpServer() as server:
        yield server


def smtp_app(make_app, server, **overrides):
    settings = {
        "EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": server.host,
        "SMTP_PORT": server.port,
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "Allmine <no-reply@allmine.app>",
        "NOTIFY_TIMEOUT": 2,
    }
    return make_app(fresh=True, **{**settings, **overrides})


def test_the_code_goes_out_through_a_real_smtp_server(make_app, smtp_server):
    app = smtp_app(make_app, smtp_server, OTP_ECHO=False)
    with app.app_context():
        client = app.test_client()
        assert_envelope(send(client), 201, {"email": ADDRESS})
        (received,) = smtp_server.messages
        assert received.rcpt_tos == [ADDRESS]
        assert received.message["Subject"] == "Allmine doğrulama kodunuz / Your Allmine verification code"
        text = received.message.get_body(("plain",)).get_content()
        html = received.message.get_body(("html",)).get_content()
        code = re.search(r"doğrulama kodunuz: (\d{4})", text).group(1)
        assert "<strong" in html and code in html
        assert_envelope(client.post(VERIFY, json={"email": ADDRESS, "code": code}), 200)


@pytest.mark.parametrize("failure", ["refused", "rejected"])
def test_a_failed_email_is_a_logged_500_and_leaves_no_code(make_app, smtp_server, caplog, failure):
    caplog.set_level(logging.ERROR, "allmine_auth")
    if failure == "rejected":
        smtp_server.reject_data = "550 5.7.1 message rejected"
        app = smtp_app(make_app, smtp_server)
    else:
        app = smtp_app(make_app, smtp_server, SMTP_PORT=free_port())
    with app.app_context():
        assert_error(send(app.test_client()), 500, "Email gönderilirken hata oluştu")
        assert count(OneTimeCode) == 0
        assert "DeliveryFailed" in caplog.text
        smtp_server.reject_data = None
