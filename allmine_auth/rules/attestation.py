"""Proof of a real app before an SMS is sent, asked for only while a prefix or network is suspect.

The app sends a token in ``X-Client-Attestation``; the provider (``ATTESTATION_PROVIDER``) checks it:

- ``none`` (the default): no check is configured, so none is ever demanded (suspicion then only
  tightens the per-network limits).
- ``turnstile`` / ``hcaptcha``: the captcha vendors' ``siteverify`` protocol, a form POST of
  ``secret``, ``response`` (the token) and ``remoteip`` answered with JSON ``{"success": bool}``
  (``ATTESTATION_VERIFY_URL`` overrides the vendor's address).

Unlike an all-or-nothing captcha, real users are never asked on a normal day.
"""

import logging

from flask import current_app

from allmine_auth import metrics
from allmine_auth.notify.pooled import PooledClient, TransportError

log = logging.getLogger(__name__)

HEADER = "X-Client-Attestation"
# Turnstile tokens are at most 2048 characters, hCaptcha's shorter: anything longer is not a token and
# is refused without a call to the provider.
MAX_TOKEN_LENGTH = 4096
VERIFY_URLS = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
}


class AttestationUnavailable(Exception):
    """The provider could not be asked or gave no usable answer."""


def demanded():
    """Whether a provider is configured, i.e. whether suspicion can ask for a token at all."""
    return current_app.config["ATTESTATION_PROVIDER"] != "none"


def provider(url, timeout):
    """The app's pooled client for the provider at ``url`` (kept between checks, one per address)."""
    clients = current_app.extensions.setdefault("allmine_attestation", {})
    client = clients.get((url, timeout))
    if client is None:
        client = clients[(url, timeout)] = PooledClient(url, None, None, timeout)
    return client


def siteverify(token, remote_ip):
    """Ask the provider about ``token``; ``True`` when it vouches for it, ``False`` when it refuses."""
    config = current_app.config
    url = config["ATTESTATION_VERIFY_URL"] or VERIFY_URLS[config["ATTESTATION_PROVIDER"]]
    form = {"secret": config["ATTESTATION_SECRET"] or "", "response": token}
    if remote_ip and remote_ip != "unknown":
        form["remoteip"] = remote_ip
    try:
        response = provider(url, config["ATTESTATION_TIMEOUT"]).post_form(form)
        if not response.ok:
            raise AttestationUnavailable(f"HTTPError: {response.status_code} from the provider")
        answer = response.json()
    except (TransportError, ValueError) as exc:
        raise AttestationUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("success"), bool):
        raise AttestationUnavailable("the provider's answer has no success flag")
    if not answer["success"]:
        log.warning("attestation refused by the provider: %s", answer.get("error-codes"))
    return answer["success"]


def check(token, remote_ip):
    """``"passed"``, ``"missing"`` or ``"refused"`` for ``token``; raises ``AttestationUnavailable``.

    Each outcome (and an unreachable provider) is counted in ``/metrics``.
    """
    token = (token or "").strip()
    if not token:
        outcome = "missing"
    elif len(token) > MAX_TOKEN_LENGTH:
        outcome = "refused"
    else:
        try:
            outcome = "passed" if siteverify(token, remote_ip) else "refused"
        except AttestationUnavailable:
            metrics.count_attestation("unavailable")
            raise
    metrics.count_attestation(outcome)
    return outcome
