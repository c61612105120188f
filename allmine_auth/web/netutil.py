"""Who is calling: the client address as the trusted proxy chain reports it.

``ProxyFix`` (configured by ``PROXY_FIX_X_FOR``) rewrites ``remote_addr`` from
``X-Forwarded-For`` only for the number of proxies we trust, so a client
can't choose the address its limits are counted against.
"""

import re
from dataclasses import dataclass

from flask import request

# Kept out of the stored user agent and device name: PostgreSQL refuses NUL in text (gunicorn already
# refuses control characters in headers; the development server and the test client don't).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def header_text(name):
    """The request header ``name`` without control characters, cut to a storable length (``""`` if absent)."""
    return CONTROL_CHARACTERS.sub("", request.headers.get(name) or "")[:255]


def client_ip():
    """Return the client's IP address, as seen through the trusted proxies."""
    return request.remote_addr or "unknown"


def user_agent():
    """Return the caller's ``User-Agent``, cut to a storable length."""
    return header_text("User-Agent")


@dataclass(frozen=True)
class Client:
    """Who made a request, as plain values the services and the audit trail can keep."""

    ip: str | None = None
    user_agent: str | None = None
    device: str | None = None


DEVICE_HEADER = "X-Device-Name"


def current_client():
    """The calling client: IP, user agent, and a device name (``X-Device-Name``, else the user agent)."""
    agent = user_agent()
    device = header_text(DEVICE_HEADER).strip() or agent or None
    return Client(ip=client_ip(), user_agent=agent or None, device=device)
