"""Development delivery: the message goes to the log, nothing leaves the machine.

The log line shows the code (that is the point of this sender) but the
destination masked, like every log line; production refuses this sender, so
no code reaches a production log.
"""

import logging

from allmine_auth.notify.base import EmailSender, SmsSender
from allmine_auth.privacy import mask_email, mask_phone

log = logging.getLogger(__name__)


class ConsoleSmsSender(SmsSender):
    """Logs each SMS (refused in production, where logging a code would leak it)."""

    name = "console"

    def send_sms(self, phone_e164, text):
        log.info("SMS to %s: %s", mask_phone(phone_e164), text)


class ConsoleEmailSender(EmailSender):
    """Logs each email's subject and text body."""

    name = "console"

    def send_email(self, to, subject, text, html):
        log.info("Email to %s: %s\n%s", mask_email(to), subject, text)
