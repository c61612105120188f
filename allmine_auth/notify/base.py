"""The notifier interface: one SMS sender and one email sender per app, chosen by settings."""

from abc import ABC, abstractmethod


class DeliveryError(Exception):
    """The provider did not accept the message (refused, timed out, answered an error)."""


class SmsSender(ABC):
    """Sends a text message to a phone number in E.164."""

    name = "abstract"

    def __init__(self, config):
        self.timeout = config["NOTIFY_TIMEOUT"]

    @abstractmethod
    def send_sms(self, phone_e164, text):
        """Hand ``text`` to the provider for ``phone_e164``; raise ``DeliveryError`` on failure."""


class EmailSender(ABC):
    """Sends an email with a plain-text and an HTML body."""

    name = "abstract"

    def __init__(self, config):
        self.timeout = config["NOTIFY_TIMEOUT"]

    @abstractmethod
    def send_email(self, to, subject, text, html):
        """Hand the message to the provider for ``to``; raise ``DeliveryError`` on failure."""
