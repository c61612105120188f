"""The Authentication blueprint: thin views over ``services`` and ``tokens``."""

import uuid

from flask import current_app, request
from flask_jwt_extended import get_jwt, jwt_required

from allmine_auth.rules import abuse, accounts, attestation, logins, profiles, sessions
from allmine_auth.store.unit_of_work import read_in_autocommit
from allmine_auth.web.blueprint import Blueprint
from allmine_auth.web.envelope import RawJSON, envelope_response
from allmine_auth.web.jwt import prefetches_profile
from allmine_auth.web.limits import limiter
from allmine_auth.web.netutil import client_ip, current_client
from allmine_auth.web.resource import Resource, in_unit_of_work
from allmine_auth.web.schemas.auth import (
    CompleteRegistrationSchema,
    EmailCodeSentSchema,
    EmailSchema,
    LoginSchema,
    LogoutQuerySchema,
    PhoneCodeSentSchema,
    PhoneSchema,
    RefreshSchema,
    RevokedSchema,
    SessionSchema,
    TokenPairSchema,
    UserSchema,
    VerifyEmailSchema,
    VerifyPhoneSchema,
    login_data,
)

blp = Blueprint(
    "Authentication",
    __name__,
    url_prefix="/api/v1/auth",
    description="Telefon veya email ile doğrulama kodu, JWT oturumları / One-time-code login and sessions.",
)
# ``blp.arguments`` gets schema instances: given a class, webargs builds a new instance on every request
# (marshmallow copies every declared field). The schemas keep no state between loads.

WARNING = (
    "**Production uyarisi:** Bu endpoint veri degistirir veya operasyon tetikleyebilir. API Playground "
    "icinde Production server seciliyse gercek production verisi etkilenir; test icin Development server "
    "kullanin."
)
BEARER = [{"bearerAuth": []}]


def send_limit():
    """Per-IP limit shared by both send endpoints."""
    return current_app.config["RATELIMIT_SEND"]


def send_network_limit():
    """Per-network limit shared by both send endpoints (next to the per-IP one)."""
    return current_app.config["RATELIMIT_SEND_NETWORK"]


def send_network():
    """The key of the per-network send limit: the client's IPv4 /24 or IPv6 /56."""
    return abuse.network_of(client_ip())


# Per IP and per network (IPv4 /24, IPv6 /56): many addresses of one network can't multiply the limit.
# A view's own ``decorators`` replace ``Resource``'s: each list starts with them (the unit of work innermost,
# so a request the limits refuse opens no transaction).
SEND_LIMITS = [
    *Resource.decorators,
    limiter.shared_limit(send_limit, scope="send"),
    limiter.shared_limit(send_network_limit, scope="send-network", key_func=send_network),
]


def verify_limit():
    """Per-IP limit shared by both verify endpoints."""
    return current_app.config["RATELIMIT_VERIFY"]


def refresh_limit():
    """Per-IP limit of the refresh endpoint."""
    return current_app.config["RATELIMIT_REFRESH"]


def echoed(payload, code):
    """Add the code to a send answer only where code echo is on."""
    if current_app.config["OTP_ECHO"]:
        payload["code"] = code
    return payload


def login(args):
    """Log in with the code of a verify request (SMS or email); its answer.

    The envelope is rendered here from ``login_data``: what the documented ``LoginSchema`` dumps,
    built without marshmallow's per-field dump (the answer's ~45 fields were a measurable share of a
    verify's work; ``bench/README.md``).
    """
    user, pair = logins.login_with_code(
        args["destination"],
        args["code"],
        current_client(),
        signup_source=args["signupSource"],
        signup_campaign=args["signupCampaign"],
    )
    return envelope_response(200, login_data(user, pair))


@blp.route("/send-otp")
class SendPhoneCode(Resource):
    """Send a code by SMS."""

    # A view's ``decorators`` replace ``Resource``'s: ``in_unit_of_work`` is listed again, first (the
    # innermost), so the limits are checked before the transaction opens.
    decorators = [in_unit_of_work, *SEND_LIMITS]

    @blp.doc(
        description=f"{WARNING} Telefon numarasına SMS ile 4 haneli doğrulama kodu gönderir. "
        "Development ortamında kod response'ta döndürülür. While the number's calling code or the "
        f"caller's network is under SMS-fraud suspicion, a `{attestation.HEADER}` header (a captcha "
        "token) is required: without one, or with one the provider refuses, the answer is 428."
    )
    @blp.errors(400, 413, 415, 428, 429, 500, 503)
    @blp.arguments(PhoneSchema())
    @blp.response(201, PhoneCodeSentSchema)
    def post(self, args):
        """Doğrulama kodu gönder"""
        destination = args["destination"]
        client = current_client()
        abuse.screen_sms_send(destination, client, request.headers.get(attestation.HEADER))
        code = logins.send_code(destination, client)
        abuse.count_sms_sent(destination, client)
        payload = {"countryCode": destination.prefix, "phoneNumber": destination.national_number}
        return echoed(payload, code)


@blp.route("/send-otp-email")
class SendEmailCode(Resource):
    """Send a code by email."""

    decorators = [in_unit_of_work, *SEND_LIMITS]

    @blp.doc(
        description=f"{WARNING} Email adresine 4 haneli doğrulama kodu gönderir. "
        "Development ortamında kod response'ta döndürülür."
    )
    @blp.errors(400, 413, 415, 429, 500)
    @blp.arguments(EmailSchema())
    @blp.response(201, EmailCodeSentSchema)
    def post(self, args):
        """Email ile doğrulama kodu gönder"""
        destination = args["destination"]
        code = logins.send_code(destination, current_client())
        return echoed({"email": destination.address}, code)


@blp.route("/verify-otp")
class VerifyPhoneCode(Resource):
    """Log in with an SMS code."""

    decorators = [in_unit_of_work, limiter.shared_limit(verify_limit, scope="verify")]

    @blp.doc(
        description=f"{WARNING} Doğrulama kodunu kontrol eder ve JWT token döner. "
        "Yeni kullanıcılar için kayıt tamamlanması gerekir."
    )
    @blp.errors(400, 401, 413, 415, 429)
    @blp.arguments(VerifyPhoneSchema())
    @blp.response(200, LoginSchema)
    def post(self, args):
        """Doğrulama kodu ile giriş yap"""
        return login(args)


@blp.route("/verify-otp-email")
class VerifyEmailCode(Resource):
    """Log in with an email code."""

    decorators = [in_unit_of_work, limiter.shared_limit(verify_limit, scope="verify")]

    @blp.doc(
        description=f"{WARNING} Email doğrulama kodunu kontrol eder ve JWT token döner. "
        "Yeni kullanıcılar için kayıt tamamlanması gerekir."
    )
    @blp.errors(400, 401, 413, 415, 429)
    @blp.arguments(VerifyEmailSchema())
    @blp.response(200, LoginSchema)
    def post(self, args):
        """Email doğrulama kodu ile giriş yap"""
        return login(args)


@blp.route("/refresh")
class Refresh(Resource):
    """Rotate a refresh token."""

    decorators = [in_unit_of_work, limiter.limit(refresh_limit)]

    @blp.doc(description=f"{WARNING} Refresh token kullanarak yeni access token ve refresh token alır.")
    @blp.errors(400, 401, 413, 415, 429)
    @blp.arguments(RefreshSchema())
    @blp.response(200, TokenPairSchema)
    def post(self, args):
        """Access token yenile"""
        return sessions.rotate_refresh_token(args["refreshToken"], current_client())


@blp.route("/logout")
class Logout(Resource):
    """End sessions."""

    @blp.doc(
        security=BEARER,
        description=f"{WARNING} Kullanıcının tüm aktif oturumlarını sonlandırır. "
        "`scope=local` only this session, `scope=others` every other session.",
    )
    @jwt_required()
    @blp.errors(400, 401)
    @blp.arguments(LogoutQuerySchema(), location="query")
    @blp.response(200, RevokedSchema)
    def post(self, args):
        """Çıkış yap"""
        claims = get_jwt()
        ended = sessions.logout(
            uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), args["scope"], current_client()
        )
        return {"revokedSessions": ended}


@blp.route("/me")
class Me(Resource):
    """The current user."""

    # The token check reads this user's cached profile with the session state (one Redis round trip).
    decorators = [in_unit_of_work, prefetches_profile]

    @blp.doc(security=BEARER, description="Oturum açmış kullanıcının bilgilerini döner.")
    @jwt_required()
    @blp.errors(401)
    @blp.response(200, UserSchema)
    def get(self):
        """Kullanıcı bilgilerini getir"""
        # Already JSON (the profile cache holds it so): put in the envelope as it is, not by the UserSchema.
        profile = profiles.profile_json(uuid.UUID(get_jwt()["sub"]), profile_text)
        return envelope_response(200, RawJSON(profile))


USER_SCHEMA = UserSchema()


def profile_text(user):
    """The user as GET /me's ``data``, JSON text: the form the profile cache keeps."""
    return current_app.json.dumps(USER_SCHEMA.dump(user))


@blp.route("/sessions")
class Sessions(Resource):
    """The current user's active sessions."""

    @blp.doc(security=BEARER, description="Kullanıcının aktif oturumlarını listeler.")
    @jwt_required()
    @blp.errors(401)
    @blp.response(200, SessionSchema(many=True))
    def get(self):
        """Aktif oturumları listele"""
        read_in_autocommit()
        claims = get_jwt()
        current_sid = uuid.UUID(claims["sid"])
        return [
            {
                "id": session.id,
                "device": session.device,
                "ip": session.ip,
                "created_at": session.created_at,
                "last_used_at": session.last_used_at,
                "expires_at": session.expires_at,
                "current": session.id == current_sid,
            }
            for session in sessions.list_sessions(uuid.UUID(claims["sub"]))
        ]


@blp.route("/sessions/<uuid:session_id>")
class SessionItem(Resource):
    """One of the current user's sessions."""

    @blp.doc(security=BEARER, description=f"{WARNING} Kullanıcının bir oturumunu sonlandırır.")
    @jwt_required()
    @blp.errors(401, 404)
    @blp.response(200, RevokedSchema)
    def delete(self, session_id):
        """Oturumu sonlandır"""
        user_id = uuid.UUID(get_jwt()["sub"])
        return {"revokedSessions": sessions.end_session(user_id, session_id, current_client())}


@blp.route("/complete-registration")
class CompleteRegistration(Resource):
    """Finish (or later update) the profile of the current user."""

    @blp.doc(
        security=BEARER,
        description=f"{WARNING} Yeni kullanıcının kaydını tamamlar: ad, soyad, kullanıcı adı, doğum tarihi, "
        "ilgi alanları ve sözleşme onayları. Kayıtlı kullanıcıda profili günceller. The access token's `reg` "
        "claim changes at the next refresh.",
    )
    @jwt_required()
    @blp.errors(400, 401, 409, 413, 415, 429)
    @blp.arguments(CompleteRegistrationSchema())
    @blp.response(200, UserSchema)
    def post(self, profile):
        """Kaydı tamamla"""
        user = profiles.user_or_401(uuid.UUID(get_jwt()["sub"]))
        return logins.complete_registration(user, profile, current_client())


@blp.route("/account/deletion")
class AccountDeletion(Resource):
    """The current user's account deletion: request it, or cancel it during the grace period."""

    @blp.doc(
        security=BEARER,
        description=f"{WARNING} Hesabın silinmesini planlar: hesap, bekleme süresi "
        "(`ACCOUNT_DELETION_GRACE_DAYS`, 30 gün) sonunda kişisel verileriyle birlikte silinir; bu "
        "oturum dışındaki tüm oturumlar hemen sonlanır. Bekleme süresinde giriş yapılabilir ve talep "
        "iptal edilebilir.",
    )
    @jwt_required()
    @blp.errors(401, 409)
    @blp.response(200, UserSchema)
    def post(self):
        """Hesap silme talebi oluştur"""
        claims = get_jwt()
        return accounts.request_deletion(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), current_client())

    @blp.doc(security=BEARER, description=f"{WARNING} Bekleyen hesap silme talebini iptal eder.")
    @jwt_required()
    @blp.errors(401, 409)
    @blp.response(200, UserSchema)
    def delete(self):
        """Hesap silme talebini iptal et"""
        return accounts.cancel_deletion(uuid.UUID(get_jwt()["sub"]), current_client())
