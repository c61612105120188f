"""Requests that race each other: a threaded server, one connection per request, a barrier to release them.

The Flask test client runs one request at a time; these helpers make
requests cross the same line the way a retrying app or several devices do.
"""

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from werkzeug.serving import make_server

TIMEOUT = 30


@dataclass(frozen=True)
class Answer:
    """A response read off the socket, shaped for ``assert_envelope``."""

    status_code: int
    body: dict
    headers: dict = field(default_factory=dict)

    def get_json(self):
        return self.body


def call(method, url, **kwargs):
    """Send one request on its own connection and return the answer (the connection is closed)."""
    with requests.request(method, url, timeout=TIMEOUT, **kwargs) as response:
        return Answer(response.status_code, response.json(), dict(response.headers))


def at_once(count, send):
    """Run ``send()`` in ``count`` threads released together by a barrier; return the answers."""
    barrier = threading.Barrier(count, timeout=TIMEOUT)

    def fire(_):
        barrier.wait()
        return send()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(fire, range(count)))


@contextlib.contextmanager
def threaded_server(app):
    """Serve ``app`` from a threaded werkzeug server on a free port; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
