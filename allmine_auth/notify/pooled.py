"""One pooled HTTPS client per provider (SMS senders, attestation): urllib3's ``PoolManager``, kept alive.

The Twilio and Netgsm senders make one POST per code; ``requests`` added a
session, adapters and hooks around urllib3 for nothing this needs. What it did
that matters is kept: the same CA bundle (``certifi``), a connect and a read
timeout of ``NOTIFY_TIMEOUT`` each, no retries (a retried send may be a second
billed SMS), the ``HTTPS_PROXY``/``NO_PROXY`` environment, and one error
message per failure that never quotes the body (it carries the code).
"""

import json
import urllib.request
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3


class TransportError(Exception):
    """No answer: ``timed_out`` when none came within the timeout; the message names the failure."""

    def __init__(self, message, timed_out):
        super().__init__(message)
        self.timed_out = timed_out


class Answer:
    """An HTTP answer: ``status``, ``ok`` (below 400) and its body as ``json()``."""

    def __init__(self, status, data):
        self.status_code = status
        self.ok = status < 400
        self.data = data

    def json(self):
        """The body parsed as JSON (``ValueError`` when it is none)."""
        return json.loads(self.data)


# The names ``requests`` gave these failures, which the audit trail's ``delivery_failed`` rows carry.
FAILURE_NAMES = (
    (urllib3.exceptions.SSLError, "SSLError"),
    (urllib3.exceptions.ProxyError, "ProxyError"),
    (urllib3.exceptions.ProtocolError, "ConnectionError"),
)


def failure_name(error):
    """The name a failure to get an answer is reported under (``requests``' names)."""
    return next((name for kind, name in FAILURE_NAMES if isinstance(error, kind)), type(error).__name__)


def pool_for(url):
    """A ``PoolManager`` for ``url``, or a ``ProxyManager`` when the environment names a proxy for it."""
    options = {"cert_reqs": "CERT_REQUIRED", "ca_certs": certifi.where(), "retries": False}
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


class PooledClient:
    """POSTs to one provider with ``Accept: application/json``, and basic auth when given a user."""

    def __init__(self, url, user, password, timeout):
        self.url = url
        self.pool = pool_for(url)
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        auth = urllib3.util.make_headers(basic_auth=f"{user}:{password}") if user is not None else {}
        self.headers = {**auth, "Accept": "application/json"}

    def post_form(self, fields):
        """POST ``fields`` form-encoded; an ``Answer``, or ``TransportError``."""
        body = urlencode(fields)
        return self._post(body, "application/x-www-form-urlencoded")

    def post_json(self, payload):
        """POST ``payload`` as JSON; an ``Answer``, or ``TransportError``."""
        return self._post(json.dumps(payload, allow_nan=False).encode(), "application/json")

    def _post(self, body, content_type):
        headers = {**self.headers, "Content-Type": content_type}
        try:
            response = self.pool.request(
                "POST", self.url, body=body, headers=headers, timeout=self.timeout, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError only by inheritance
            raise TransportError(f"ConnectionError: {exc}", timed_out=False) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise TransportError(f"Timeout: {exc}", timed_out=True) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"{failure_name(exc)}: {exc}", timed_out=False) from exc
        return Answer(response.status, response.data)

    def close(self):
        """Release the pooled connections."""
        self.pool.clear()
