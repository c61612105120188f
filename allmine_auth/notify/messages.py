"""What a code message says, in Turkish and English (the app's two languages)."""

from html import escape

SMS_TEMPLATE = (
    "Allmine doğrulama kodunuz: {code}. Kod {minutes} dakika geçerlidir. / Your Allmine code: {code}"
)
EMAIL_SUBJECT = "Allmine doğrulama kodunuz / Your Allmine verification code"
EMAIL_TEXT = """Merhaba,

Allmine doğrulama kodunuz: {code}
Kod {minutes} dakika geçerlidir. Bu isteği siz yapmadıysanız bu e-postayı yok sayabilirsiniz.

Hello,

Your Allmine verification code is: {code}
It is valid for {minutes} minutes. If you did not ask for it, you can ignore this email.
"""
EMAIL_HTML = """<!DOCTYPE html>
<html lang="tr"><body style="font-family:sans-serif">
<p>Merhaba,</p>
<p>Allmine doğrulama kodunuz: <strong style="font-size:1.5em;letter-spacing:.2em">{code}</strong></p>
<p>Kod {minutes} dakika geçerlidir. Bu isteği siz yapmadıysanız bu e-postayı yok sayabilirsiniz.</p>
<hr>
<p lang="en">Hello,</p>
<p lang="en">Your Allmine verification code is: <strong>{code}</strong></p>
<p lang="en">It is valid for {minutes} minutes. If you did not ask for it, you can ignore this email.</p>
</body></html>
"""


def sms_text(code, ttl_seconds):
    """The SMS body for ``code``."""
    return SMS_TEMPLATE.format(code=code, minutes=max(1, ttl_seconds // 60))


def email_parts(code, ttl_seconds):
    """The email's ``(subject, text, html)`` for ``code``."""
    minutes = max(1, ttl_seconds // 60)
    return (
        EMAIL_SUBJECT,
        EMAIL_TEXT.format(code=code, minutes=minutes),
        EMAIL_HTML.format(code=escape(code), minutes=minutes),
    )
