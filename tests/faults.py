"""A TCP proxy a test can cut: PostgreSQL or Redis going away under the service, on loopback only.

``FaultProxy(target_host, target_port)`` listens on 127.0.0.1 and forwards every connection to the
target. ``cut()`` closes every open connection at once (the peer sees a reset) and closes the
listening socket, so new connections are refused, like a server that died. ``cut(blackhole=True)``
is a hung network instead: connections stay open and new ones are accepted, but nothing goes
through in either direction (the caller's timeouts are what end its wait). ``restore()`` lets
traffic through again; connections that were hung are closed then, because bytes were lost on them.

Each connection has two threads blocked in ``recv`` (no polling); closing a socket with
``shutdown`` wakes them. The port is picked below the kernel's ephemeral range, so a restore can
bind it again without colliding with an outgoing connection's port.

Use it as a context manager, or through the ``pg_proxy`` / ``redis_proxy`` fixtures (import them
into a test module): they sit in front of ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` and skip when
that is not set (or is SQLite). ``proxy.route(url)`` is ``url`` with its host and port replaced by
the proxy's.
"""

import contextlib
import os
import random
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

LOCALHOST = "127.0.0.1"
CHUNK = 65536
# Ports handed out below the ephemeral range (32768-60999 on Linux), see the module docstring.
PORT_RANGE = (20000, 32000)


def pick_port():
    """A port in ``PORT_RANGE`` that nobody listens on now."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((LOCALHOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def abort(sock):
    """Close ``sock`` with a reset, waking any thread blocked on it; never raises."""
    with contextlib.suppress(OSError):
        # Linger 0: close sends RST, as when a server process dies with data in flight.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Link:
    """One proxied connection: the client's socket and, unless blackholed from the start, the target's."""

    def __init__(self, proxy, client, upstream):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        # Set when bytes were dropped on it (blackhole): it can never be used again.
        self.damaged = upstream is None
        self.closed = False

    def start(self):
        """Start pumping both directions (or only draining the client while there is no target)."""
        pairs = [(self.client, self.upstream), (self.upstream, self.client)] if self.upstream else []
        for source, sink in pairs:
            threading.Thread(target=self.pump, args=(source, sink), daemon=True).start()
        if not pairs:
            threading.Thread(target=self.pump, args=(self.client, None), daemon=True).start()

    def pump(self, source, sink):
        """Copy from ``source`` to ``sink`` until either closes; drop the bytes while blackholed."""
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if sink is None or self.proxy.blackholed:
                    self.damaged = True
                    continue
                sink.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self):
        """Reset both sockets (idempotent) and forget the link."""
        with self.proxy.lock:
            if self.closed:
                return
            self.closed = True
            self.proxy.links.discard(self)
        abort(self.client)
        if self.upstream is not None:
            abort(self.upstream)


class FaultProxy:
    """A cuttable TCP proxy from 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_host, target_port, port=None):
        self.target = (target_host, int(target_port))
        self.port = port or pick_port()
        self.lock = threading.Lock()
        self.links = set()
        self.blackholed = False
        self.listener = None
        self.acceptor = None
        self.listen()

    @property
    def address(self):
        """``(host, port)`` the proxy listens on."""
        return LOCALHOST, self.port

    @property
    def is_cut(self):
        """True while cut, in either mode."""
        return self.listener is None or self.blackholed

    def route(self, url):
        """``url`` (SQLAlchemy or Redis) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{LOCALHOST}:{self.port}" if userinfo else f"{LOCALHOST}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def listen(self):
        """Open the listening socket and start accepting."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.address)
        listener.listen(128)
        self.listener = listener
        self.acceptor = threading.Thread(target=self.accept_loop, args=(listener,), daemon=True)
        self.acceptor.start()

    def accept_loop(self, listener):
        """Accept until ``listener`` is shut down; connect each client to the target."""
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = None
            if not self.blackholed:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    abort(client)
                    continue
            link = Link(self, client, upstream)
            with self.lock:
                self.links.add(link)
            link.start()

    def stop_listening(self):
        """Close the listening socket: new connections are refused."""
        listener, self.listener = self.listener, None
        if listener is not None:
            # shutdown wakes the thread blocked in accept (close alone does not on Linux).
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            self.acceptor.join(timeout=5)

    def drop_links(self, only_damaged=False):
        """Reset every open connection (or only those that lost bytes)."""
        with self.lock:
            links = [link for link in self.links if link.damaged or not only_damaged]
        for link in links:
            link.close()

    def cut(self, blackhole=False):
        """Cut the target off: refuse and reset everything, or (``blackhole``) hang everything."""
        if blackhole:
            self.blackholed = True
            if self.listener is None:
                self.listen()
            return
        self.stop_listening()
        self.drop_links()

    def restore(self):
        """Let traffic through again; hung connections are reset, new ones reach the target."""
        self.blackholed = False
        self.drop_links(only_damaged=True)
        if self.listener is None:
            self.listen()

    def close(self):
        """Stop listening and reset every connection."""
        self.stop_listening()
        self.drop_links()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def proxy_for(url):
    """A ``FaultProxy`` in front of the server ``url`` names (default ports for PostgreSQL and Redis)."""
    parts = urlsplit(url)
    default = 6379 if parts.scheme.startswith("redis") else 5432
    return FaultProxy(parts.hostname or LOCALHOST, parts.port or default)


@pytest.fixture
def pg_proxy():
    """A ``FaultProxy`` in front of ``TEST_DATABASE_URL``'s PostgreSQL (skips without one)."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL)")
    with proxy_for(url) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy():
    """A ``FaultProxy`` in front of ``TEST_REDIS_URL``'s Redis (skips without one)."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("needs Redis (TEST_REDIS_URL)")
    with proxy_for(url) as proxy:
        yield proxy
