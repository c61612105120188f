"""SMS delivery through Twilio's REST API (the Messages resource).

One form POST is all the service needs, so this talks to the API with
a pooled urllib3 client (``notify.pooled``) instead of pulling in Twilio's SDK. Errors never quote the
message body: it carries the one-time code.
"""

import logging

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError, SmsSender
from allmine_auth.notify.pooled import PooledClient, TransportError

log = logging.getLogger(__name__)


class TwilioSmsSender(SmsSender):
    """Sends each SMS as one Twilio Message, from a Messaging Service or a sender number."""

    name = "twilio"

    def __init__(self, config):
        super().__init__(config)
        account_sid = config.get("TWILIO_ACCOUNT_SID")
        auth_token = config.get("TWILIO_AUTH_TOKEN")
        if not account_sid or not auth_token:
            raise ConfigError("SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        # A Messaging Service picks the sender itself (pools, alphanumeric IDs), so it wins over From.
        if config.get("TWILIO_MESSAGING_SERVICE_SID"):
            self.sender_fields = {"MessagingServiceSid": config["TWILIO_MESSAGING_SERVICE_SID"]}
        elif config.get("TWILIO_FROM"):
            self.sender_fields = {"From": config["TWILIO_FROM"]}
        else:
            raise ConfigError("SMS_PROVIDER=twilio needs TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        base_url = (config.get("TWILIO_API_URL") or "https://api.twilio.com").rstrip("/")
        self.url = f"{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        # One pool per sender keeps the TLS connection to Twilio alive between codes.
        self.client = PooledClient(self.url, account_sid, auth_token, self.timeout)

    def send_sms(self, phone_e164, text):
        """Create a Twilio Message to ``phone_e164``; raise ``DeliveryError`` unless Twilio accepts it."""
        fields = {"To": phone_e164, "Body": text, **self.sender_fields}
        try:
            response = self.client.post_form(fields)
        except TransportError as exc:
            if exc.timed_out:
                raise DeliveryError(f"twilio: no answer within {self.timeout:g}s") from exc
            raise DeliveryError(f"twilio: request failed: {exc}") from exc
        answer = _json_object(response)
        if response.ok and answer is not None:
            log.info("Twilio accepted message %s", answer.get("sid"))
            return
        raise DeliveryError(f"twilio: {_describe_failure(response.status_code, answer)}")

    def close(self):
        """Release the pooled HTTP connections."""
        self.client.close()


def _json_object(response):
    """The answer's JSON object, or None when the body is not one."""
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _describe_failure(status, answer):
    """Name the HTTP status and Twilio's error ``code``/``message`` (never anything we sent)."""
    if answer is None:
        return f"HTTP {status} with an unreadable answer"
    code, message = answer.get("code"), answer.get("message")
    return f"HTTP {status}" + (f" (error {code})" if code else "") + (f": {message}" if message else "")
