"""Pluggable delivery of codes: ``SMS_PROVIDER`` and ``EMAIL_PROVIDER`` pick the senders."""

import importlib

from flask import current_app

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError, EmailSender, SmsSender
from allmine_auth.notify.console import ConsoleEmailSender, ConsoleSmsSender

SMS_SENDERS = {
    "console": ConsoleSmsSender,
    "twilio": "allmine_auth.notify.twilio:TwilioSmsSender",
    "netgsm": "allmine_auth.notify.netgsm:NetgsmSmsSender",
}
EMAIL_SENDERS = {"console": ConsoleEmailSender, "smtp": "allmine_auth.notify.smtp:SmtpEmailSender"}


def _build(kind, registry, name, config):
    """The sender ``name`` of ``registry``, built for ``config``.

    A network sender is named by ``"module:class"`` and imported only when it is the configured one:
    a worker doesn't load urllib3's pools (``pooled``) or ``smtplib`` for providers it doesn't use.
    """
    try:
        sender_class = registry[name]
    except KeyError as exc:
        raise ConfigError(f"{kind}_PROVIDER must be one of {', '.join(registry)}, got {name!r}") from exc
    if isinstance(sender_class, str):
        module, _, class_name = sender_class.partition(":")
        sender_class = getattr(importlib.import_module(module), class_name)
    return sender_class(config)


def init_app(app):
    """Build the configured senders once, failing at start-up on an unknown provider."""
    app.extensions["allmine_sms"] = _build("SMS", SMS_SENDERS, app.config["SMS_PROVIDER"], app.config)
    app.extensions["allmine_email"] = _build("EMAIL", EMAIL_SENDERS, app.config["EMAIL_PROVIDER"], app.config)


def sms_sender():
    """The app's SMS sender."""
    return current_app.extensions["allmine_sms"]


def email_sender():
    """The app's email sender."""
    return current_app.extensions["allmine_email"]


__all__ = ["DeliveryError", "EmailSender", "SmsSender", "init_app", "sms_sender", "email_sender"]
