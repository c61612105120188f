"""Development delivery: the message goes to the log, nothing leaves the machine."""

import logging

from allmine_auth.notify.base import EmailSender, SmsSender

log = logging.getLogger(__name__)


class ConsoleSmsSender(SmsSender):
    """Logs each SMS (refused in production, where logging a code would leak it)."""

    name = "console"

    def send_sms(self, phone_e164, text):
        log.info("SMS to %s: %s", phone_e164, text)


class ConsoleEmailSender(EmailSender):
    """Logs each email's subject and text body."""

    name = "console"

    def send_email(self, to, subject, text, html):
        log.info("Email to %s: %s\n%s", to, subject, text)
