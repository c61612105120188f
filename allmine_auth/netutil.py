"""Who is calling: the client address as the trusted proxy chain reports it.

``ProxyFix`` (configured by ``PROXY_FIX_X_FOR``) rewrites ``remote_addr`` from
``X-Forwarded-For`` only for the number of proxies we trust, so a client
can't choose the address its limits are counted against.
"""

from dataclasses import dataclass

from flask import request


def client_ip():
    """Return the client's IP address, as seen through the trusted proxies."""
    return request.remote_addr or "unknown"


def user_agent():
    """Return the caller's ``User-Agent``, cut to a storable length."""
    return (request.headers.get("User-Agent") or "")[:255]


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
    device = (request.headers.get(DEVICE_HEADER) or "").strip()[:255] or agent or None
    return Client(ip=client_ip(), user_agent=agent or None, device=device)
