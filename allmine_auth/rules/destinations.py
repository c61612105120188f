"""Where a code goes: phone numbers (``phonenumbers``) and email addresses (``email-validator``).

Both are normalised to one canonical string (E.164, lower-cased address) so
that limits, lock-outs and accounts can't be dodged by writing a destination
another way. Numbers are written with ASCII digits only (``phonenumbers``
would read fullwidth or Arabic-Indic digits, and letters as on a keypad), and
only a mobile number is one: an SMS to a landline is paid for and never read.
"""

import re
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

SMS = "sms"
EMAIL = "email"
CALLING_CODE = re.compile(r"\+?[0-9]{1,3}")
# Digits and the separators people type: "0532 123 45 67", "(532) 123-4567", "+90 532 123 45 67" (any
# space: phones' contact lists write no-break spaces).
NATIONAL_NUMBER = re.compile(r"\+?[0-9\s()./-]+")
# A country whose plan can't tell mobile from fixed lines (the US, Canada) gives FIXED_LINE_OR_MOBILE.
MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


@dataclass(frozen=True)
class Destination:
    """A normalised destination: ``address`` is E.164 or a lower-cased email."""

    channel: str
    address: str
    country_code: str | None = None
    national_number: str | None = None
    region: str | None = None

    @property
    def prefix(self):
        """The calling-code prefix (``+90``) for SMS budgets, ``None`` for email."""
        return f"+{self.country_code}" if self.country_code else None


class InvalidDestination(ValueError):
    """The input is not a usable destination; ``field`` names the input that is wrong."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def phone_destination(country_code, phone_number):
    """Validate ``country_code`` (with or without ``+``) and ``phone_number`` as a real mobile number."""
    country_code = country_code.strip()
    if not CALLING_CODE.fullmatch(country_code):
        raise InvalidDestination("countryCode", "Not a valid country calling code.")
    calling_code = int(country_code.removeprefix("+"))
    region = phonenumbers.region_code_for_country_code(calling_code)
    if region == phonenumbers.UNKNOWN_REGION:
        raise InvalidDestination("countryCode", "Not a valid country calling code.")
    phone_number = phone_number.strip()
    if not NATIONAL_NUMBER.fullmatch(phone_number):
        raise InvalidDestination("phoneNumber", "Not a valid phone number.")
    try:
        number = phonenumbers.parse(phone_number, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidDestination("phoneNumber", "Not a valid phone number.") from exc
    if number.country_code != calling_code or not phonenumbers.is_valid_number(number):
        raise InvalidDestination("phoneNumber", "Not a valid phone number.")
    if phonenumbers.number_type(number) not in MOBILE_TYPES:
        raise InvalidDestination("phoneNumber", "Not a mobile number.")
    return Destination(
        channel=SMS,
        address=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country_code=str(calling_code),
        national_number=phonenumbers.national_significant_number(number),
        region=phonenumbers.region_code_for_number(number),
    )


def email_destination(email, check_deliverability=False):
    """Validate and normalise ``email``; no DNS look-up unless asked."""
    try:
        result = validate_email(email.strip(), check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidDestination("email", "Not a valid email address.") from exc
    return Destination(channel=EMAIL, address=result.normalized.lower())
