"""Where a code goes: phone numbers (``phonenumbers``) and email addresses (``email-validator``).

Both are normalised to one canonical string (E.164, lower-cased address) so
that limits, lock-outs and accounts can't be dodged by writing a destination
another way.
"""

from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

SMS = "sms"
EMAIL = "email"


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
    """Validate ``country_code`` (with or without ``+``) and ``phone_number`` as a real number."""
    digits = country_code.strip().removeprefix("+")
    if not digits.isdigit() or not 1 <= len(digits) <= 3:
        raise InvalidDestination("countryCode", "Not a valid country calling code.")
    region = phonenumbers.region_code_for_country_code(int(digits))
    if region == phonenumbers.UNKNOWN_REGION:
        raise InvalidDestination("countryCode", "Not a valid country calling code.")
    try:
        number = phonenumbers.parse(phone_number, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidDestination("phoneNumber", "Not a valid phone number.") from exc
    if number.country_code != int(digits) or not phonenumbers.is_valid_number(number):
        raise InvalidDestination("phoneNumber", "Not a valid phone number.")
    return Destination(
        channel=SMS,
        address=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country_code=digits,
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
