"""Pluggable delivery of codes: ``SMS_PROVIDER`` and ``EMAIL_PROVIDER`` pick the senders."""

from flask import current_app

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError, EmailSender, SmsSender
from allmine_auth.notify.console import ConsoleEmailSender, ConsoleSmsSender

SMS_SENDERS = {"console": ConsoleSmsSender}
EMAIL_SENDERS = {"console": ConsoleEmailSender}


def _register_optional_senders():
    """Add the network senders; each module only needs the standard library and urllib3 (``pooled``)."""
    from allmine_auth.notify.netgsm import NetgsmSmsSender
    from allmine_auth.notify.smtp import SmtpEmailSender
    from allmine_auth.notify.twilio import TwilioSmsSender

    SMS_SENDERS.update(twilio=TwilioSmsSender, netgsm=NetgsmSmsSender)
    EMAIL_SENDERS.update(smtp=SmtpEmailSender)


def _build(kind, registry, name, config):
    try:
        sender_class = registry[name]
    except KeyError as exc:
        raise ConfigError(f"{kind}_PROVIDER must be one of {', '.join(registry)}, got {name!r}") from exc
    return sender_class(config)


def init_app(app):
    """Build the configured senders once, failing at start-up on an unknown provider."""
    _register_optional_senders()
    app.extensions["allmine_sms"] = _build("SMS", SMS_SENDERS, app.config["SMS_PROVIDER"], app.config)
    app.extensions["allmine_email"] = _build("EMAIL", EMAIL_SENDERS, app.config["EMAIL_PROVIDER"], app.config)


def sms_sender():
    """The app's SMS sender."""
    return current_app.extensions["allmine_sms"]


def email_sender():
    """The app's email sender."""
    return current_app.extensions["allmine_email"]


__all__ = ["DeliveryError", "EmailSender", "SmsSender", "init_app", "sms_sender", "email_sender"]
