"""The production front: the real nginx with ``deploy/nginx.conf`` before the real gunicorn.

nginx (Debian's package; ``make system-packages`` installs it) runs as a foreground child with its
prefix, temporary files and logs under the test's directory, on a free port, its configuration
rendered from ``deploy/nginx.conf`` by filling in the placeholders only, as envsubst does when it
is installed. It runs with a time zone far from UTC, so the envelope's timestamp is shown to be UTC.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import TIMESTAMP, file_database
from tests.fakes import free_port
from tests.servers import ROOT, gunicorn_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
PLACEHOLDERS = (
    "ALLMINE_NGINX_LISTEN",
    "ALLMINE_GUNICORN",
    "ALLMINE_NGINX_PID",
    "ALLMINE_NGINX_TEMP",
    "ALLMINE_NGINX_LOGS",
)
# UTC+14 (a POSIX TZ string: no time zone database needed); nginx's local time is far from UTC.
FAR_TIME_ZONE = "XYZ-14"
# More slow clients than gunicorn has threads (2 workers x 4): each worker gets at least 4 of them
# however the kernel spreads the connections over the two SO_REUSEPORT sockets (all but surely).
SLOW_CLIENTS = 24
# A client address other than nginx's own (127.0.0.1), so the test sees whose address the service took.
CLIENT_ADDRESS = "127.0.0.2"

# Skipped only outside CI: with TEST_REQUIRE_SERVICES (.ci/run, after make test installed it) it must run.
pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK) and not os.environ.get("TEST_REQUIRE_SERVICES"),
    reason="nginx is not installed (make system-packages installs it)",
)


def render_nginx_conf(values):
    """``deploy/nginx.conf`` with its placeholders filled in, exactly as envsubst would."""
    text = NGINX_CONF.read_text()
    for name in PLACEHOLDERS:
        text = text.replace("${" + name + "}", values[name])
    assert "${ALLMINE_" not in text, "a placeholder the test does not know"
    return text


@dataclass(frozen=True)
class Nginx:
    """A running nginx: its port and log files."""

    port: int
    logs: Path

    def access_log(self):
        """The access log's lines, parsed."""
        return [json.loads(line) for line in (self.logs / "access.log").read_text().splitlines() if line]

    def access_line(self, request_id):
        """The access line of the request ``request_id`` (nginx writes it just after answering)."""
        deadline = time.monotonic() + 10
        while True:
            lines = [line for line in self.access_log() if line["request_id"] == request_id]
            if lines:
                (line,) = lines
                return line
            assert time.monotonic() < deadline, f"no access line for {request_id}"
            time.sleep(0.05)

    def all_logs(self):
        """Everything nginx wrote to its logs."""
        return "".join(path.read_text(errors="replace") for path in self.logs.iterdir())


@contextlib.contextmanager
def nginx_front(directory, upstream):
    """Run nginx with ``deploy/nginx.conf`` in front of ``upstream`` (``host:port``); yield ``Nginx``."""
    directory.mkdir(parents=True)
    (directory / "temp").mkdir()
    (directory / "logs").mkdir()
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            {
                "ALLMINE_NGINX_LISTEN": f"127.0.0.1:{port}",
                "ALLMINE_GUNICORN": upstream,
                "ALLMINE_NGINX_PID": str(directory / "nginx.pid"),
                "ALLMINE_NGINX_TEMP": str(directory / "temp"),
                "ALLMINE_NGINX_LOGS": str(directory / "logs"),
            }
        )
    )
    output = directory / "nginx.output"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": FAR_TIME_ZONE},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, f"nginx exited: {output.read_text(errors='replace')}"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert time.monotonic() < deadline, "nginx did not listen within 15 s"
            time.sleep(0.05)
        yield Nginx(port, directory / "logs")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass(frozen=True)
class Front:
    """gunicorn (2 workers, PROXY_FIX_X_FOR=1) and nginx before it."""

    nginx: Nginx
    gunicorn_port: int
    gunicorn_logs: object


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    """The real service under gunicorn, on a file database, with nginx in front."""
    base = tmp_path_factory.mktemp("front")
    url = file_database(base)
    started = {}
    env = {"TEST_DATABASE_URL": url, "PROXY_FIX_X_FOR": "1"}
    remember_logs = lambda process, logs: started.update(logs=logs)  # noqa: E731
    with gunicorn_server(env, workers=2, on_start=remember_logs) as base_url:
        gunicorn_port = int(base_url.rsplit(":", 1)[1])
        with nginx_front(base / "nginx", f"127.0.0.1:{gunicorn_port}") as nginx:
            yield Front(nginx, gunicorn_port, started["logs"])


def request(port, method, path, body=None, headers=None, source=None, timeout=10):
    """One request on a new connection: ``(status, headers, body bytes)``."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers={**all_headers, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def raw_request(port, data):
    """Send ``data`` as it is and read the answer until nginx closes: ``(status, headers, body bytes)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def assert_nginx_envelope(answer, status, text):
    """nginx's own error: the whole envelope, UTC timestamp of now, JSON, with a request id."""
    got_status, headers, body = answer
    envelope = json.loads(body)
    assert got_status == status, envelope
    assert envelope == {
        "isSuccess": False,
        "statusCode": status,
        "data": None,
        "errors": [text],
        "timestamp": envelope["timestamp"],
    }
    assert TIMESTAMP.match(envelope["timestamp"]), envelope["timestamp"]
    stamped = datetime.strptime(envelope["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 5
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
    return headers


def assert_app_envelope(answer, status, data=None, errors=None):
    """The service's own envelope, passed through: status, and the whole envelope; return ``data``."""
    got_status, headers, body = answer
    envelope = json.loads(body)
    assert got_status == status, envelope
    assert envelope["isSuccess"] is (status < 400)
    assert envelope["statusCode"] == status
    assert TIMESTAMP.match(envelope["timestamp"])
    assert headers["Content-Type"] == "application/json"
    if status < 400:
        assert envelope["errors"] == []
        if data is not None:
            assert envelope["data"] == data
    else:
        assert envelope["data"] is None
        assert envelope["errors"] == errors
    return envelope["data"]


def unique_phone():
    """A Turkish mobile number nobody else in the test run uses."""
    return f"532{uuid.uuid4().int % 10**7:07d}"


@contextlib.contextmanager
def slow_clients(port, count):
    """``count`` connections that each send a request's headers and half its body, then wait."""
    half = b'{"countryCode": "90", '
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
            sock.sendall(
                b"POST /api/v1/auth/send-otp HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {2 * len(half)}\r\n\r\n".encode()
                + half
            )
        # Let the server take every connection in (gunicorn: hand each to a thread) before measuring.
        time.sleep(0.5)
        yield
    finally:
        for sock in sockets:
            sock.close()


# (a) Slow clients


def test_slow_clients_hold_gunicorn_alone_but_not_nginx_in_front_of_it(front):
    # Directly, gunicorn's 8 threads each wait for the rest of a body: nothing answers, /healthz neither.
    with slow_clients(front.gunicorn_port, SLOW_CLIENTS), pytest.raises(TimeoutError):
        request(front.gunicorn_port, "GET", "/healthz", timeout=2)
    # Through nginx, the same clients wait in nginx (it reads whole bodies first); gunicorn serves on.
    with slow_clients(front.nginx.port, SLOW_CLIENTS):
        started = time.monotonic()
        assert_app_envelope(request(front.nginx.port, "GET", "/healthz"), 200)
        phone = unique_phone()
        data = assert_app_envelope(
            request(
                front.nginx.port,
                "POST",
                "/api/v1/auth/send-otp",
                {"countryCode": "90", "phoneNumber": phone},
            ),
            201,
        )
        assert data == {"countryCode": "+90", "phoneNumber": phone, "code": data["code"]}
        assert re.fullmatch(r"\d{4}", data["code"])
        assert time.monotonic() - started < 5


# (b) Sizes: nginx answers with the envelope; what it lets through, the service answers


def test_a_header_too_large_is_the_431_envelope(front):
    answer = request(front.nginx.port, "GET", "/healthz", headers={"X-Padding": "a" * 5000})
    assert_nginx_envelope(answer, 431, "Request headers too large")


def test_headers_too_large_together_are_the_431_envelope(front):
    headers = "".join(f"X-Padding-{number}: {'a' * 1000}\r\n" for number in range(20))
    answer = raw_request(front.nginx.port, f"GET /healthz HTTP/1.1\r\nHost: api\r\n{headers}\r\n".encode())
    assert_nginx_envelope(answer, 431, "Request headers too large")


def test_a_uri_too_long_is_the_414_envelope(front):
    answer = request(front.nginx.port, "GET", "/api/v1/auth/me?padding=" + "a" * 5000)
    assert_nginx_envelope(answer, 414, "Request URI too long")


def test_a_body_too_large_is_the_413_envelope(front):
    body = b'{"email": "' + b"a" * 16384 + b'"}'
    answer = raw_request(
        front.nginx.port,
        b"POST /api/v1/auth/send-otp-email HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert_nginx_envelope(answer, 413, "Request body too large")


def test_a_malformed_request_is_the_400_envelope(front):
    assert_nginx_envelope(raw_request(front.nginx.port, b"GARBAGE\r\n\r\n"), 400, "Validation failed")


def test_trace_is_the_405_envelope(front):
    assert_nginx_envelope(request(front.nginx.port, "TRACE", "/healthz"), 405, "Method not allowed")


def test_the_largest_request_nginx_lets_through_is_answered_by_the_service(front):
    # gunicorn's limits are above nginx's (gunicorn.conf.py): at nginx's edge, the service answers
    # with its own envelope, never gunicorn with an HTML page.
    longest_line = b"GET /" + b"a" * (4094 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    answer = raw_request(front.nginx.port, longest_line + b"\r\nHost: api\r\nConnection: close\r\n\r\n")
    assert_app_envelope(answer, 404, errors=["Resource not found"])
    many_headers = b"a:\r\n" * 990
    answer = raw_request(
        front.nginx.port,
        b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n" + many_headers + b"\r\n",
    )
    assert_app_envelope(answer, 200)
    body = b" " * 16384
    answer = raw_request(
        front.nginx.port,
        b"POST /api/v1/auth/send-otp HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        + b"Content-Type: application/json\r\nContent-Length: 16384\r\n\r\n"
        + body,
    )
    assert_app_envelope(answer, 400, errors=["Validation failed", "body: Malformed JSON"])


# (c) /metrics stays inside


@pytest.mark.parametrize(
    "path",
    ["/metrics", "/metrics?format=text", "/metrics/", "/%6Detrics", "//metrics", "/healthz/../metrics"],
)
def test_metrics_through_nginx_is_the_404_envelope(front, path):
    assert_nginx_envelope(request(front.nginx.port, "GET", path), 404, "Resource not found")


def test_metrics_on_gunicorn_itself_answers_the_scraper(front):
    status, headers, body = request(front.gunicorn_port, "GET", "/metrics")
    assert status == 200
    assert "allmine_http_requests_total" in body.decode()


def test_the_error_pages_are_not_reachable_from_outside(front):
    assert_nginx_envelope(request(front.nginx.port, "GET", "/__allmine_error/502"), 404, "Resource not found")


# (d) The client's address, not one it forged


def test_the_service_sees_the_clients_address_not_a_forged_x_forwarded_for(front):
    port = front.nginx.port
    forged = {"X-Forwarded-For": "203.0.113.66"}
    phone = {"countryCode": "90", "phoneNumber": unique_phone()}
    sent = assert_app_envelope(
        request(port, "POST", "/api/v1/auth/send-otp", phone, forged, source=CLIENT_ADDRESS), 201
    )
    login = assert_app_envelope(
        request(
            port,
            "POST",
            "/api/v1/auth/verify-otp",
            {**phone, "code": sent["code"]},
            forged,
            source=CLIENT_ADDRESS,
        ),
        200,
    )
    headers = {**forged, "Authorization": f"Bearer {login['accessToken']}"}
    sessions = assert_app_envelope(
        request(port, "GET", "/api/v1/auth/sessions", headers=headers, source=CLIENT_ADDRESS), 200
    )
    assert [session["ip"] for session in sessions] == [CLIENT_ADDRESS]


def test_the_request_id_goes_through_both_ways(front):
    status, headers, _ = request(front.nginx.port, "GET", "/healthz", headers={"X-Request-ID": "probe-42"})
    assert status == 200
    assert headers["X-Request-ID"] == "probe-42"
    line = front.nginx.access_line("probe-42")
    assert (line["path"], line["status"], line["upstream_status"]) == ("/healthz", 200, "200")


# Tokens in query strings are never logged


def test_query_string_values_are_in_neither_access_log(front):
    secret = uuid.uuid4().hex
    query = f"access_token={secret}&scope=global&code=1234{secret}&refreshToken={secret}&{secret}&x{secret}=1"
    answer = request(front.nginx.port, "GET", f"/api/v1/auth/me?{query}")
    assert_app_envelope(answer, 401, errors=["Missing or invalid token"])
    headers = answer[1]
    request_id = headers["X-Request-ID"]
    deadline = time.monotonic() + 10
    while request_id not in front.gunicorn_logs.read_stdout():
        assert time.monotonic() < deadline, "no gunicorn access line for the request"
        time.sleep(0.05)
    (gunicorn_line,) = [
        json.loads(line) for line in front.gunicorn_logs.read_stdout().splitlines() if request_id in line
    ]
    assert gunicorn_line["query"] == (
        "access_token=[redacted]&scope=global&code=[redacted]&refreshToken=[redacted]&[redacted]&[redacted]"
    )
    nginx_line = front.nginx.access_line(request_id)
    assert nginx_line["path"] == "/api/v1/auth/me"
    assert secret not in front.gunicorn_logs.read_stdout() + front.gunicorn_logs.read_stderr()
    assert secret not in front.nginx.all_logs()


def crashing_wsgi_app(environ, start_response):
    """A WSGI app: /healthz answers, anything else fails outside Flask (as broken middleware would)."""
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    raise RuntimeError("the WSGI app failed")


def test_gunicorns_error_line_for_a_failed_request_redacts_its_query_string(tmp_path):
    secret = uuid.uuid4().hex
    started = {}
    remember_logs = lambda process, logs: started.update(logs=logs)  # noqa: E731
    with gunicorn_server({}, app="tests.test_nginx:crashing_wsgi_app", on_start=remember_logs) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        assert request(port, "GET", f"/api/v1/auth/me?token={secret}&scope=local")[0] == 500
        logs = started["logs"]
        deadline = time.monotonic() + 10
        while "the WSGI app failed" not in logs.read_stderr():
            assert time.monotonic() < deadline, "no error line for the failed request"
            time.sleep(0.05)
        assert "Error handling request GET /api/v1/auth/me?token=[redacted]&scope=local" in logs.read_stderr()
        assert secret not in logs.read_stderr() + logs.read_stdout()


# (e) gunicorn down


def test_gunicorn_down_is_the_502_envelope_with_retry_after(tmp_path):
    secret = uuid.uuid4().hex
    with nginx_front(tmp_path / "nginx", f"127.0.0.1:{free_port()}") as nginx:
        answer = request(nginx.port, "POST", f"/api/v1/auth/refresh?token={secret}", {"refreshToken": "x"})
        headers = assert_nginx_envelope(answer, 502, "Service unavailable")
        assert headers["Retry-After"] == "5"
        line = nginx.access_line(headers["X-Request-ID"])
        assert len(nginx.access_log()) == 1
        assert (line["path"], line["status"], line["upstream_status"]) == ("/api/v1/auth/refresh", 502, "502")
        # nginx's error log would quote the request line, query string and all: it has only critical lines.
        assert secret not in nginx.all_logs()
