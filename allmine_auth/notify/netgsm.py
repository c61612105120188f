"""SMS delivery through Netgsm, the Turkish gateway, with its REST v2 API.

Netgsm reaches Turkish numbers with a registered sender header (``msgheader``)
at local prices. Its answer carries a result ``code``: "00" means queued
(with a ``jobid``); anything else is a refusal. Errors never quote the
message text: it carries the one-time code.
"""

import logging

from allmine_auth.config import ConfigError
from allmine_auth.notify.base import DeliveryError, SmsSender
from allmine_auth.notify.pooled import PooledClient, TransportError

log = logging.getLogger(__name__)

# Netgsm's documented refusals, so the log says why without a trip to the docs.
NETGSM_CODES = {
    "20": "message text rejected or too long",
    "30": "invalid usercode/password, no API access, or IP not allowed",
    "40": "sender header (msgheader) not defined for the account",
    "50": "account cannot send IYS-controlled messages",
    "51": "no IYS brand defined for the account",
    "70": "invalid or missing parameter",
    "80": "sending limit exceeded",
    "85": "duplicate limit exceeded (too many sends to one number within a minute)",
    "100": "Netgsm system error",
    "101": "Netgsm system error",
}


def netgsm_number(phone_e164):
    """Netgsm's ``no`` for an E.164 number: ``5XXXXXXXXX`` for Turkey, the digits without "+" elsewhere.

    Netgsm's own API description asks for the 10-digit national number for
    Turkish mobiles; it is the one form every Netgsm account accepts.
    """
    digits = phone_e164.removeprefix("+")
    if digits.startswith("90") and len(digits) == 12:
        return digits[2:]
    return digits


class NetgsmSmsSender(SmsSender):
    """Sends each SMS as a one-message Netgsm job under the account's sender header."""

    name = "netgsm"

    def __init__(self, config):
        super().__init__(config)
        required = ("NETGSM_USERCODE", "NETGSM_PASSWORD", "NETGSM_HEADER")
        missing = [name for name in required if not config.get(name)]
        if missing:
            raise ConfigError(f"SMS_PROVIDER=netgsm needs {', '.join(missing)}")
        self.header = config["NETGSM_HEADER"]
        base_url = (config.get("NETGSM_API_URL") or "https://api.netgsm.com.tr").rstrip("/")
        self.url = f"{base_url}/sms/rest/v2/send"
        # One pool per sender keeps the TLS connection to Netgsm alive between codes.
        user, password = config["NETGSM_USERCODE"], config["NETGSM_PASSWORD"]
        self.client = PooledClient(self.url, user, password, self.timeout)

    def send_sms(self, phone_e164, text):
        """Queue ``text`` for ``phone_e164`` at Netgsm; raise ``DeliveryError`` unless it answers code 00."""
        payload = {
            "msgheader": self.header,
            # "TR" keeps Turkish letters (ğ, ş, ı) instead of transliterating them.
            "encoding": "TR",
            "messages": [{"msg": text, "no": netgsm_number(phone_e164)}],
        }
        try:
            response = self.client.post_json(payload)
        except TransportError as exc:
            if exc.timed_out:
                raise DeliveryError(f"netgsm: no answer within {self.timeout:g}s") from exc
            raise DeliveryError(f"netgsm: request failed: {exc}") from exc
        answer = _json_object(response)
        if response.ok and answer is not None and str(answer.get("code")) == "00":
            log.info("Netgsm queued job %s", answer.get("jobid"))
            return
        raise DeliveryError(f"netgsm: {_describe_failure(response.status_code, answer)}")

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
    """Name the HTTP status and Netgsm's ``code``/``description`` (never anything we sent)."""
    if answer is None:
        return f"HTTP {status} with an unreadable answer"
    code = answer.get("code")
    if code is None:
        return f"HTTP {status} without a result code"
    code = str(code)
    meaning = answer.get("description") or NETGSM_CODES.get(code, "unknown code")
    return f"HTTP {status}, code {code}: {meaning}"
