"""Request and response schemas of the auth API, with the seed documents' examples.

Every string the API takes is a ``Text``: no control characters (NUL above
all: PostgreSQL refuses it in text, so the write would fail with a 500) and
no lone surrogates (JSON's ``"\\ud800"``: not UTF-8, so no database stores
it). Fields that mean digits take ASCII 0-9 only (``int()`` and ``\\d`` take
any script's digits), and every pattern must match the whole value
(``re.match`` with ``$`` lets a final newline through).
"""

import re
from datetime import UTC, datetime, time

import marshmallow as ma
from marshmallow import fields, validate

from allmine_auth.rules.destinations import InvalidDestination, email_destination, phone_destination
from allmine_auth.web.envelope import utc_timestamp

# C0 and C1 controls, DEL, and the surrogate range (only a lone surrogate can reach a decoded string).
REFUSED_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Text(fields.String):
    """A string that refuses control characters and lone surrogates, in the field's own 400 line."""

    default_error_messages = {
        "control": "Must not contain control characters.",
        "surrogate": "Not valid Unicode.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        refused = REFUSED_CHARACTERS.search(value)
        if refused is not None:
            raise self.make_error("surrogate" if refused.group() >= "\ud800" else "control")
        return value


class FullMatch(validate.Regexp):
    """``validate.Regexp`` that must match the whole value (the spec keeps the ``^...$`` pattern)."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


def ascii_digits(value):
    """Refuse digits of other scripts (superscripts, circled, Arabic-Indic, fullwidth...): only 0-9."""
    if not value.isascii() and any(char.isnumeric() for char in value):
        raise ma.ValidationError("Digits must be ASCII 0-9.")


FOUR_DIGITS = FullMatch(r"^[0-9]{4}$", error="Must be 4 digits.")
CODE = Text(
    required=True,
    validate=FOUR_DIGITS,
    metadata={"example": "1234", "description": "The 4-digit code sent by SMS or email."},
)


def timestamp_text(value):
    """A datetime (or a date, at midnight) as the API writes it: UTC with milliseconds and ``Z``."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    return utc_timestamp(value)


class UtcTimestamp(fields.Field):
    """A JSON timestamp field: UTC with milliseconds and ``Z``; a date is written at midnight.

    The column type that stores one is ``models.UtcDateTime``.
    """

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else timestamp_text(value)


def destination_loader(build):
    """Make a ``post_load`` hook that turns the input into ``data["destination"]`` or a field error."""

    def load(self, data, **kwargs):
        try:
            data["destination"] = build(data)
        except InvalidDestination as exc:
            raise ma.ValidationError({exc.field: [exc.message]}) from exc
        return data

    return ma.post_load(load)


class PhoneSchema(ma.Schema):
    """A phone number as the apps send it: calling code and national number."""

    countryCode = Text(
        required=True,
        validate=[validate.Length(1, 4), ascii_digits],
        metadata={"example": "90", "description": "Calling code, with or without +."},
    )
    phoneNumber = Text(
        required=True, validate=[validate.Length(4, 20), ascii_digits], metadata={"example": "5551234567"}
    )

    load_destination = destination_loader(
        lambda data: phone_destination(data["countryCode"], data["phoneNumber"])
    )


class EmailSchema(ma.Schema):
    """An email address."""

    email = Text(required=True, validate=validate.Length(3, 254), metadata={"example": "john@example.com"})

    load_destination = destination_loader(lambda data: email_destination(data["email"]))


class SignupSchema(ma.Schema):
    """Where a new user came from (kept from the first login only)."""

    signupSource = Text(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=100),
        metadata={"example": "instagram_ads"},
    )
    signupCampaign = Text(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=100),
        metadata={"example": "spring_launch_2026"},
    )


class VerifyPhoneSchema(PhoneSchema, SignupSchema):
    """``verify-otp`` body."""

    code = CODE


class VerifyEmailSchema(EmailSchema, SignupSchema):
    """``verify-otp-email`` body."""

    code = CODE


class PhoneCodeSentSchema(ma.Schema):
    """``send-otp`` answer; ``code`` only where code echo is on (development)."""

    countryCode = fields.String(required=True, metadata={"example": "+90"})
    phoneNumber = fields.String(required=True, metadata={"example": "5551234567"})
    code = fields.String(metadata={"example": "1234", "description": "Only in development (code echo)."})


class EmailCodeSentSchema(ma.Schema):
    """``send-otp-email`` answer; ``code`` only where code echo is on (development)."""

    email = fields.String(required=True, metadata={"example": "john@example.com"})
    code = fields.String(metadata={"example": "1234", "description": "Only in development (code echo)."})


def attr(name, field_class=fields.String, *, allow_none=True, **kwargs):
    """A read-only field that dumps the model attribute ``name`` (``null`` where unknown, by default)."""
    return field_class(attribute=name, dump_only=True, allow_none=allow_none, **kwargs)


def flag(name):
    """A read-only boolean that is never ``null``."""
    return attr(name, fields.Boolean, allow_none=False)


def count(name, example=0):
    """A read-only counter that is never ``null``."""
    return attr(name, fields.Integer, allow_none=False, metadata={"example": example})


def strings(name, example):
    """A read-only list of strings that is never ``null`` (empty when there are none)."""
    return attr(
        name, fields.List, cls_or_instance=fields.String(), allow_none=False, metadata={"example": example}
    )


class UserSchema(ma.Schema):
    """The whole user object of the seed documents (plus ``id``)."""

    id = fields.UUID(dump_only=True, metadata={"example": "3f9c1f9e-4a5b-4f7e-9d7a-2b1e0c9d8f11"})
    name = attr("name", metadata={"example": "John"})
    surname = attr("surname", metadata={"example": "Doe"})
    username = attr("username", metadata={"example": "johndoe123"})
    countryCode = attr("country_code", metadata={"example": "90"})
    phoneNumber = attr("phone_number", metadata={"example": "5372505890"})
    signupSource = attr("signup_source", metadata={"example": "instagram_ads"})
    signupCampaign = attr("signup_campaign", metadata={"example": "spring_launch_2026"})
    profilePhoto = attr("profile_photo", metadata={"example": "sample.jpg"})
    availabilityStatus = attr("availability_status", metadata={"example": "available"})
    birthDate = attr("birth_date", UtcTimestamp, metadata={"example": "2000-01-15T00:00:00.000Z"})
    gender = attr("gender", metadata={"example": "male"})
    interests = strings("interests", ["music"])
    expertise = attr("expertise", metadata={"example": "designer"})
    email = attr("email", metadata={"example": "john@example.com"})
    isEmailVerified = flag("email_verified")
    bio = attr("bio", metadata={"example": "Passionate about technology and travel"})
    instagram = attr("instagram", metadata={"example": "myinstagram"})
    x = attr("x", metadata={"example": "mytwitterx"})
    tiktok = attr("tiktok", metadata={"example": "mytiktok"})
    snapchat = attr("snapchat", metadata={"example": "mysnapchat"})
    facebook = attr("facebook", metadata={"example": "myfacebook"})
    privacyPolicyAccepted = flag("privacy_policy_accepted")
    privacyPolicyVersion = attr("privacy_policy_version", metadata={"example": "1.2.0"})
    termsOfUseAccepted = flag("terms_of_use_accepted")
    termsOfUseVersion = attr("terms_of_use_version", metadata={"example": "1.1.0"})
    consentFormAccepted = flag("consent_form_accepted")
    consentFormVersion = attr("consent_form_version", metadata={"example": "1.0.0"})
    isRegistrationComplete = flag("is_registration_complete")
    roles = strings("roles", ["user"])
    followersCount = count("followers_count", 128)
    followingCount = count("following_count", 256)
    minutePriceInLiveStream = count("minute_price_in_live_stream", 1)
    creditBalance = count("credit_balance", 500)
    lastLogin = attr("last_login", UtcTimestamp)
    timezone = attr("timezone", metadata={"example": "Europe/Istanbul"})
    lastUsernameChangeDate = attr("last_username_change_date", UtcTimestamp)
    accountDeletionStatus = attr(
        "account_deletion_status",
        metadata={"example": "pending", "description": "`pending`, `cancelled`, `finalized`, or null."},
    )
    accountDeletionRequestedAt = attr("account_deletion_requested_at", UtcTimestamp)
    accountDeletionScheduledFor = attr("account_deletion_scheduled_for", UtcTimestamp)
    accountDeletionCancelledAt = attr("account_deletion_cancelled_at", UtcTimestamp)
    accountDeletionFinalizedAt = attr("account_deletion_finalized_at", UtcTimestamp)


def plain_form(field):
    """How ``field`` dumps a non-null value of the database's type: a function, or ``None`` (as it is).

    What the field's own dump does to the values a column gives: a ``String``
    writes ``str(value)``, an ``Integer`` ``int(value)``, a ``Boolean`` the
    value itself. A field of any other kind is refused (at import): its plain
    form must be written here first.
    """
    if isinstance(field, UtcTimestamp):
        return timestamp_text
    if isinstance(field, fields.UUID) or type(field) is fields.String:
        return str
    if isinstance(field, fields.List) and type(field.inner) is fields.String:
        return lambda values: [str(value) for value in values]
    if type(field) is fields.Integer:
        return int
    if type(field) is fields.Boolean:
        return None
    raise TypeError(f"no plain form for a {type(field).__name__} field")


def plain_dumper(schema):
    """``dump(obj)``: ``schema.dump(obj)`` for an object read from the database, without marshmallow.

    The same keys in the same order and the same values (a test compares
    them), for a fraction of the work: the schema's dump runs each field
    through its lookup and hooks; this reads each attribute and converts it
    (``plain_form``). Only for a schema of read-only attribute fields.
    """
    plan = tuple(
        (field.data_key or name, field.attribute or name, plain_form(field))
        for name, field in schema.dump_fields.items()
    )

    def dump(obj):
        data = {}
        for key, attribute, convert in plan:
            value = getattr(obj, attribute)
            data[key] = value if convert is None or value is None else convert(value)
        return data

    return dump


user_data = plain_dumper(UserSchema())


class TokenPairSchema(ma.Schema):
    """The tokens of a login or refresh; lifetimes in seconds."""

    accessToken = fields.String(attribute="access_token", required=True, metadata={"example": "sample"})
    refreshToken = fields.String(attribute="refresh_token", required=True, metadata={"example": "sample"})
    expiresIn = fields.Integer(attribute="expires_in", required=True, metadata={"example": 3600})
    refreshExpiresIn = fields.Integer(
        attribute="refresh_expires_in", required=True, metadata={"example": 2592000}
    )


class LoginSchema(TokenPairSchema):
    """A login: the tokens, the whole user, and whether registration is complete (``login_data``)."""

    user = fields.Nested(UserSchema, required=True)
    isRegistrationComplete = fields.Boolean(required=True)


def login_data(user, pair):
    """A verify answer's ``data``: what ``LoginSchema`` dumps of ``user`` and ``pair``, built plainly.

    ``user`` is a ``User`` or a ``users`` row; a test holds it to the schema's dump.
    """
    return {
        "accessToken": pair.access_token,
        "refreshToken": pair.refresh_token,
        "expiresIn": int(pair.expires_in),
        "refreshExpiresIn": int(pair.refresh_expires_in),
        "user": user_data(user),
        "isRegistrationComplete": user.is_registration_complete,
    }


class RefreshSchema(ma.Schema):
    """``refresh`` body."""

    refreshToken = Text(required=True, validate=validate.Length(1, 4096))


class LogoutQuerySchema(ma.Schema):
    """Which sessions a logout ends."""

    scope = Text(
        load_default="global",
        validate=validate.OneOf(["global", "local", "others"]),
        metadata={
            "description": "global: every session (default); local: this one; others: all but this one."
        },
    )


class RevokedSchema(ma.Schema):
    """How many sessions a logout ended."""

    revokedSessions = fields.Integer(required=True, metadata={"example": 2})


class SessionSchema(ma.Schema):
    """One active session (a logged-in device)."""

    id = fields.UUID(dump_only=True)
    device = attr("device", metadata={"example": "Allmine/2.3 (iPhone; iOS 18.1)"})
    ip = attr("ip", metadata={"example": "203.0.113.7"})
    createdAt = attr("created_at", UtcTimestamp, allow_none=False)
    lastUsedAt = attr("last_used_at", UtcTimestamp, allow_none=False)
    expiresAt = attr("expires_at", UtcTimestamp, allow_none=False)
    current = fields.Boolean(dump_only=True)


USERNAME = FullMatch(r"^[A-Za-z0-9_.]{3,30}$", error="3 to 30 letters, digits, '_' or '.'.")
GENDERS = ["male", "female", "other", "prefer_not_to_say"]


class BirthDate(fields.Date):
    """A birth date given as ``YYYY-MM-DD`` or as a full ISO timestamp (its date, as written, counts)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and "T" in value:
            # The whole timestamp must be one (ASCII digits only), not a date with anything after a "T".
            try:
                value = datetime.fromisoformat(value).date().isoformat()
            except ValueError:
                raise self.make_error("invalid") from None
        return super()._deserialize(value, attr, data, **kwargs)


ADULT_AGE = 18


def age(born, today):
    """Whole years from ``born`` to ``today`` (a 29 February birthday comes on 1 March)."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def must_be_true(value):
    """Refuse a policy that is not accepted."""
    if value is not True:
        raise ma.ValidationError("Must be accepted.")


class CompleteRegistrationSchema(ma.Schema):
    """``complete-registration`` body: the profile and the acceptances."""

    name = Text(required=True, validate=validate.Length(1, 100), metadata={"example": "John"})
    surname = Text(required=True, validate=validate.Length(1, 100), metadata={"example": "Doe"})
    username = Text(required=True, validate=USERNAME, metadata={"example": "johndoe123"})
    birthDate = BirthDate(
        load_default=None,
        allow_none=True,
        metadata={
            "example": "1995-01-15",
            "description": "A calendar date: `YYYY-MM-DD`, or a timestamp whose date counts. The user "
            "object answers it as that date at midnight UTC (`1995-01-15T00:00:00.000Z`).",
        },
    )
    gender = Text(load_default=None, allow_none=True, validate=validate.OneOf(GENDERS))
    email = Text(
        load_default=None,
        allow_none=True,
        validate=validate.Length(3, 254),
        metadata={"example": "john@example.com"},
    )
    emailCode = Text(
        load_default=None,
        allow_none=True,
        validate=FOUR_DIGITS,
        metadata={
            "description": "The code sent to `email` by send-otp-email; proves the address (optional)."
        },
    )
    interests = fields.List(
        Text(validate=validate.Length(1, 50)),
        load_default=list,
        validate=validate.Length(max=20),
        metadata={"example": ["music"]},
    )
    privacyPolicyAccepted = fields.Boolean(required=True, validate=must_be_true, metadata={"example": True})
    privacyPolicyVersion = Text(required=True, validate=validate.Length(1, 20), metadata={"example": "1.2.0"})
    termsOfUseAccepted = fields.Boolean(required=True, validate=must_be_true, metadata={"example": True})
    termsOfUseVersion = Text(required=True, validate=validate.Length(1, 20), metadata={"example": "1.1.0"})
    consentFormAccepted = fields.Boolean(load_default=False, metadata={"example": True})
    consentFormVersion = Text(
        load_default=None, allow_none=True, validate=validate.Length(1, 20), metadata={"example": "1.0.0"}
    )

    @ma.validates("birthDate")
    def adult(self, value, **kwargs):
        """Only adults (18 or older) may register."""
        if value is None:
            return
        today = datetime.now(UTC).date()
        if value > today:
            raise ma.ValidationError("Must not be in the future.")
        if age(value, today) < ADULT_AGE:
            raise ma.ValidationError("Must be 18 or older.")

    @ma.validates_schema
    def consent_version(self, data, **kwargs):
        """An accepted consent form names its version."""
        if data.get("consentFormAccepted") and not data.get("consentFormVersion"):
            raise ma.ValidationError({"consentFormVersion": ["Required when consentFormAccepted is true."]})
        if data.get("emailCode") and not data.get("email"):
            raise ma.ValidationError({"emailCode": ["Only with email."]})

    @ma.post_load
    def load_email(self, data, **kwargs):
        """Normalise the email like every other email destination."""
        if data.get("email"):
            try:
                data["email_destination"] = email_destination(data["email"])
            except InvalidDestination as exc:
                raise ma.ValidationError({"email": [exc.message]}) from exc
        return data
