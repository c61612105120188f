"""Personal data kept out of the logs (KVKK and GDPR): phone numbers and email addresses masked.

The full values live only in the database (users, the audit trail, whose
retention is ``AUDIT_RETENTION_DAYS``). A log line shows enough to tell two
destinations apart and to find the full value in the audit trail:
``+90537*****90`` (calling code, three digits, the last two) and
``j***@example.com`` (first character and the domain).

``mask_text`` is the net under every log line (``observability.PersonalDataFilter``):
it finds E.164 numbers and email addresses in any text, so a call site that
forgets to mask can't leak one; it also hides JWTs (a token in a URL or an
error text is a credential).
"""

import re

import phonenumbers

# An email address as it can appear in free text (the local part may be internationalised); group 1 is
# any quoting before it (a repr's ``'``), kept as it is. ``=`` and ``/``, legal but rare in an address,
# are left out of the local part: in a log line they end a ``key=`` or a path.
EMAIL_IN_TEXT = re.compile(r"([\"'`{(<\[]*)([\w.!#$%&'*+?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+)")
# An E.164 number (a ``+`` or its URL encoding, then 7 to 15 digits) not inside a longer word or number.
PHONE_IN_TEXT = re.compile(r"(?<![\w+%])(?:\+|%2[Bb])([1-9]\d{6,14})(?!\d)")
# A JWT (access or refresh token): three base64url parts, the first a JSON object (``eyJ`` is ``{"``).
TOKEN_IN_TEXT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")
TOKEN_MASK = "[token]"
SHOWN_DIGITS_HEAD = 3
SHOWN_DIGITS_TAIL = 2


def mask_phone(phone_e164):
    """``+905372505890`` -> ``+90537*****90``: the calling code, the first three and the last two digits.

    A number too short to show five of its digits and still hide some shows
    only its last two.
    """
    digits = phone_e164.removeprefix("+")
    try:
        calling_code = str(phonenumbers.parse("+" + digits).country_code)
    except phonenumbers.NumberParseException:
        # Not a number phonenumbers knows: keep a one-digit "calling code", mask the rest the same way.
        calling_code = digits[:1]
    national = digits[len(calling_code) :]
    tail = national[-SHOWN_DIGITS_TAIL:]
    hidden = len(national) - SHOWN_DIGITS_HEAD - SHOWN_DIGITS_TAIL
    if hidden < SHOWN_DIGITS_HEAD:
        return f"+{calling_code}{'*' * max(1, len(national) - SHOWN_DIGITS_TAIL)}{tail}"
    return f"+{calling_code}{national[:SHOWN_DIGITS_HEAD]}{'*' * hidden}{tail}"


def mask_email(address):
    """``john.doe@example.com`` -> ``j***@example.com``: the first character and the domain."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_destination(destination):
    """A ``Destination`` (or ``None``) as a log line may show it; ``-`` for none."""
    if destination is None:
        return "-"
    return mask_address(destination.address)


def mask_address(address):
    """A phone number (E.164) or an email address, masked by its kind."""
    return mask_email(address) if "@" in address else mask_phone(address)


def mask_text(text):
    """``text`` with every token, email address and E.164 number in it masked.

    Addresses before numbers: ``a+905...@x`` is an address.
    """
    text = TOKEN_IN_TEXT.sub(TOKEN_MASK, text)
    text = EMAIL_IN_TEXT.sub(lambda match: match.group(1) + mask_email(match.group(2)), text)
    return PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group(1)), text)
