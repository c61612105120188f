"""Email delivery through any SMTP relay, with the standard library only.

One connection per message: codes are sent rarely enough that a pooled
connection would mostly sit idle and time out at the relay. TLS certificates
are always verified, against the system store or ``SMTP_CA_FILE``. Errors name
the relay and its reply code, never the body: it carries the one-time code.
"""

import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError, EmailSender

SECURITY_MODES = ("starttls", "ssl", "none")


class SmtpEmailSender(EmailSender):
    """Sends a text + HTML email through ``SMTP_HOST``, with STARTTLS, implicit TLS or in the clear."""

    name = "smtp"

    def __init__(self, config):
        super().__init__(config)
        self.host = config.get("SMTP_HOST") or "localhost"
        self.port = int(config.get("SMTP_PORT") or 587)
        self.security = (config.get("SMTP_SECURITY") or "starttls").lower()
        if self.security not in SECURITY_MODES:
            raise ConfigError(
                f"SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}, got {config['SMTP_SECURITY']!r}"
            )
        self.username = config.get("SMTP_USERNAME")
        self.password = config.get("SMTP_PASSWORD")
        if self.username and not self.password:
            raise ConfigError("SMTP_USERNAME is set but SMTP_PASSWORD is not")
        self.sender = config.get("SMTP_FROM") or "Allmine <no-reply@allmine.app>"
        self.envelope_from = parseaddr(self.sender)[1]
        if "@" not in self.envelope_from:
            raise ConfigError(f"SMTP_FROM must be an email address, got {self.sender!r}")
        self.tls_context = None
        if self.security != "none":
            ca_file = config.get("SMTP_CA_FILE")
            try:
                self.tls_context = ssl.create_default_context(cafile=ca_file)
            except OSError as exc:
                raise ConfigError(f"SMTP_CA_FILE {ca_file!r} cannot be loaded: {exc}") from exc

    def send_email(self, to, subject, text, html):
        """Hand the message for ``to`` to the relay; raise ``DeliveryError`` unless it accepts it."""
        message = self.compose(to, subject, text, html)
        try:
            smtp = self._connect()
            try:
                if self.security == "starttls":
                    smtp.starttls(context=self.tls_context)
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message, from_addr=self.envelope_from, to_addrs=[to])
                # The relay owns the message once DATA is answered; a failed goodbye is no failure.
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    smtp.quit()
            finally:
                smtp.close()
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"smtp {self.host}:{self.port}: {_describe(exc)}") from exc

    def compose(self, to, subject, text, html):
        """The ``EmailMessage``: a UTF-8 text part with the HTML as its alternative."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=True)
        # Our own domain in the Message-ID, so it never depends on the host's name resolving.
        message["Message-ID"] = make_msgid(domain=self.envelope_from.rpartition("@")[2])
        # Quoted-printable keeps the Turkish letters 7-bit clean: smtplib never announces
        # BODY=8BITMIME, so an 8bit body would be at the mercy of every relay on the way.
        message.set_content(text, charset="utf-8", cte="quoted-printable")
        message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        return message

    def _connect(self):
        """An open connection to the relay, TLS-wrapped from the start in ``ssl`` mode."""
        if self.security == "ssl":
            return _SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context)
        return _SMTP(self.host, self.port, timeout=self.timeout)


class _ClosesOnFailedConnect:
    """Close the socket when connecting fails half-way, e.g. the relay never greets.

    smtplib connects inside its constructor, so on failure the caller never
    gets an object to close and the socket would linger until collected.
    """

    def connect(self, *args, **kwargs):
        """Connect as smtplib does, closing the socket if that fails."""
        try:
            return super().connect(*args, **kwargs)
        except BaseException:
            self.close()
            raise


class _SMTP(_ClosesOnFailedConnect, smtplib.SMTP):
    """``smtplib.SMTP`` that cleans up after a failed connect."""


class _SMTP_SSL(_ClosesOnFailedConnect, smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` that cleans up after a failed connect."""


def _describe(exc):
    """The failure in a few words with the relay's reply codes, never the message."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = ", ".join(f"{code} {_text(reply)}" for code, reply in exc.recipients.values())
        return f"recipient refused: {codes}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def _text(reply):
    """An SMTP reply as text (smtplib hands it over as bytes)."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
