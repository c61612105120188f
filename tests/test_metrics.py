"""Prometheus metrics: the /metrics text, request and event counters, and gunicorn's workers adding up."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from allmine_auth import metrics
from allmine_auth.notify import DeliveryError
from tests.conftest import assert_error, file_database
from tests.servers import ROOT, ServerLogs, gunicorn_server, server_env, stop
from tests.test_access_log_privacy import access_line

SESSION_ROUTE = "/api/v1/auth/sessions/<uuid:session_id>"
HEALTHZ_200 = {"method": "GET", "route": "/healthz", "status": "200"}


@pytest.fixture
def app(app):
    """The app under test, with metrics (``init_app`` is idempotent: ``create_app`` calls it too)."""
    metrics.init_app(app)
    return app


def samples(text):
    """Every sample of a Prometheus text exposition as ``{(name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text, name, **labels):
    """One sample's value, 0 when the series doesn't exist yet."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client):
    """GET /metrics through the test client and return the text."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def requests_total(text, route, status, method="GET"):
    """``allmine_http_requests_total`` for one method, route and status."""
    return value(text, "allmine_http_requests_total", method=method, route=route, status=str(status))


def events_total(text, kind):
    """``allmine_auth_events_total`` for one kind."""
    return value(text, "allmine_auth_events_total", kind=kind)


def latency(text, part, route="/healthz"):
    """The latency histogram's ``count`` or ``sum`` for ``route``."""
    return value(text, f"allmine_http_request_duration_seconds_{part}", route=route)


def delta(before, after, getter, *args):
    """How much ``getter(text, *args)`` moved between two scrapes."""
    return getter(after, *args) - getter(before, *args)


def test_metrics_answers_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert families >= {
        "allmine_http_requests",
        "allmine_http_request_duration_seconds",
        "allmine_auth_events",
    }
    assert not response.get_data(as_text=True).startswith("{")


def test_metrics_speaks_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_is_not_in_the_openapi_spec(client):
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_request_counter_and_latency_move(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    after = scrape(client)
    assert delta(before, after, requests_total, "/healthz", 200) == 3
    assert delta(before, after, latency, "count") == 3
    assert delta(before, after, latency, "sum") > 0


def test_routes_are_labelled_by_template_not_by_path(client):
    session_id = str(uuid.uuid4())
    before = scrape(client)
    assert_error(client.delete(f"/api/v1/auth/sessions/{session_id}"), 401, "Missing or invalid token")
    after = scrape(client)
    assert delta(before, after, requests_total, SESSION_ROUTE, 401, "DELETE") == 1
    assert session_id not in after


def test_unknown_paths_share_one_label(client):
    path = f"/no-such-page-{uuid.uuid4().hex}"
    before = scrape(client)
    assert_error(client.get(path), 404, "Resource not found")
    assert_error(client.post("/healthz"), 405, "Method not allowed")
    after = scrape(client)
    assert delta(before, after, requests_total, "unmatched", 404) == 1
    assert delta(before, after, requests_total, "unmatched", 405, "POST") == 1
    assert path not in after


def test_sending_a_code_counts_code_sent(client, auth):
    before = scrape(client)
    assert auth.send().status_code == 201
    after = scrape(client)
    assert delta(before, after, events_total, "code_sent") == 1
    assert delta(before, after, requests_total, "/api/v1/auth/send-otp", 201, "POST") == 1


def test_verify_counts_a_login(client, auth):
    before = scrape(client)
    auth.login()
    after = scrape(client)
    assert delta(before, after, events_total, "login") == 1


class FailingSmsSender:
    """An SMS provider that refuses everything."""

    def send_sms(self, phone_e164, text):
        raise DeliveryError("provider down")


def test_a_failed_delivery_counts_delivery_failed(app, client, auth):
    app.extensions["allmine_sms"] = FailingSmsSender()
    before = scrape(client)
    assert_error(auth.send(), 500, "SMS gönderilirken hata oluştu")
    after = scrape(client)
    assert delta(before, after, events_total, "delivery_failed") == 1
    assert delta(before, after, events_total, "code_sent") == 0


@pytest.mark.parametrize("config_overrides", [{"OTP_LOCK_AFTER_FAILURES": 2}])
def test_wrong_codes_count_failures_and_the_lock_out(client, auth):
    code = auth.send().get_json()["data"]["code"]
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    before = scrape(client)
    assert_error(auth.verify(wrong), 401, "Invalid or expired code")
    assert_error(auth.verify(wrong), 401, "Invalid or expired code")
    after = scrape(client)
    assert delta(before, after, events_total, "code_failed") == 2
    assert delta(before, after, events_total, "destination_locked") == 1


def test_every_event_kind_has_a_series_from_the_start(client):
    text = scrape(client)
    for kind in ("code_sent", "delivery_failed", "code_failed", "destination_locked", "login", "logout"):
        assert ("allmine_auth_events_total", (("kind", kind),)) in samples(text)


# Under gunicorn: several workers, one answer.


def http_get(url, headers=None):
    """GET ``url`` on a fresh connection; return ``(status, headers, body text)``."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read().decode()


def pid_alive(pid):
    """True while a process with ``pid`` exists and isn't a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def healthz_count_by_worker(directory):
    """``/healthz`` 200s per worker pid, read from each worker's own counter file."""
    counts = {}
    for name in os.listdir(directory):
        if not (name.startswith("counter_") and name.endswith(".db")):
            continue
        pid = int(name.removeprefix("counter_").removesuffix(".db"))
        single = directory / f"single-{pid}"
        single.mkdir(exist_ok=True)
        shutil.copy(directory / name, single / name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(single))
        counts[pid] = (
            registry.get_sample_value(
                "allmine_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
            )
            or 0.0
        )
        shutil.rmtree(single)
    return counts


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """A 2-worker gunicorn on a file database, its metrics files in a directory of the test's."""
    base = tmp_path_factory.mktemp("gunicorn")
    url = file_database(base)
    metrics_dir = base / "prometheus"
    env = {"TEST_DATABASE_URL": url, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    started = {}
    # Readiness is polled on another route: a poll that timed out in a booting worker's accept queue is
    # answered later, and must not count among the /healthz requests the tests send and count.
    with gunicorn_server(
        env, workers=2, ready_path="/openapi.json", on_start=lambda process, logs: started.update(logs=logs)
    ) as base_url:
        yield base_url, metrics_dir, started["logs"]


def test_counts_from_both_workers_add_up(two_workers):
    base_url, metrics_dir, _ = two_workers
    before = value(http_get(f"{base_url}/metrics")[2], "allmine_http_requests_total", **HEALTHZ_200)
    sent = 0
    deadline = time.monotonic() + 30
    # Each request on a new connection; keep going until both workers have answered some.
    while sum(1 for count in healthz_count_by_worker(metrics_dir).values() if count) < 2:
        assert time.monotonic() < deadline, "one worker answered every request"
        for _ in range(20):
            assert http_get(f"{base_url}/healthz")[0] == 200
            sent += 1
    after = value(http_get(f"{base_url}/metrics")[2], "allmine_http_requests_total", **HEALTHZ_200)
    assert after - before == sent
    assert sum(healthz_count_by_worker(metrics_dir).values()) == after


def test_counts_survive_a_worker_restart(two_workers):
    base_url, metrics_dir, _ = two_workers
    for _ in range(10):
        http_get(f"{base_url}/healthz")
    total = value(http_get(f"{base_url}/metrics")[2], "allmine_http_requests_total", **HEALTHZ_200)
    by_worker = healthz_count_by_worker(metrics_dir)
    victim = next(pid for pid, count in by_worker.items() if count and pid_alive(pid))
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (
        pid_alive(victim) or len([pid for pid in healthz_count_by_worker(metrics_dir) if pid_alive(pid)]) < 2
    ):
        assert time.monotonic() < deadline, "gunicorn did not replace the stopped worker"
        time.sleep(0.1)
    assert value(http_get(f"{base_url}/metrics")[2], "allmine_http_requests_total", **HEALTHZ_200) == total


def test_access_log_lines_are_json_with_the_request_id(two_workers):
    base_url, _, logs = two_workers
    status, headers, _ = http_get(f"{base_url}/healthz", {"User-Agent": 'probe "quoted" \\ agent'})
    entry = access_line(logs, headers["X-Request-ID"])
    assert entry["method"] == "GET"
    assert entry["path"] == "/healthz"
    assert entry["status"] == status == 200
    assert entry["user_agent"] == 'probe "quoted" \\ agent'
    assert entry["duration_ms"] >= 0


# Listening sockets (gunicorn.conf.py: reuse_port)


def test_each_worker_listens_on_its_own_socket_and_connections_spread(two_workers):
    base_url, _, logs = two_workers
    assert "each worker listens on its own SO_REUSEPORT socket" in logs.read_stderr()
    host, port = base_url.removeprefix("http://").split(":")
    # 16 connections open at once, as a load balancer keeps them: the kernel hands them to both workers.
    connections = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(16)]
    request_ids = []
    for connection in connections:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        request_ids.append(response.headers["X-Request-ID"])
    for connection in connections:
        connection.close()
    deadline = time.monotonic() + 10
    while not all(request_id in logs.read_stdout() for request_id in request_ids):
        assert time.monotonic() < deadline, "access lines missing"
        time.sleep(0.05)
    lines = [json.loads(line) for line in logs.read_stdout().splitlines() if line.strip()]
    assert len({line["pid"] for line in lines if line["request_id"] in request_ids}) == 2


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


def test_on_a_unix_socket_the_workers_share_one(tmp_path):
    path = str(tmp_path / "gunicorn.sock")
    logs = ServerLogs(tmp_path / "stdout.log", tmp_path / "stderr.log")
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"unix:{path}"]
    with open(logs.stdout, "wb") as stdout, open(logs.stderr, "wb") as stderr:
        process = subprocess.Popen(
            [*command, "--workers", "2", "wsgi:app"],
            cwd=ROOT,
            env=server_env({"PROMETHEUS_MULTIPROC_DIR": tmp_path / "prometheus"}),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, logs.read_stderr()
            connection = UnixHTTPConnection(path)
            try:
                connection.request("GET", "/healthz")
                assert connection.getresponse().status == 200
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, logs.read_stderr()
                time.sleep(0.05)
            finally:
                connection.close()
        # One socket made by the arbiter and shared, not one per worker (each replacing the last's file).
        assert f"Listening at: unix:{path}" in logs.read_stderr()
        assert "reuse_port off" in logs.read_stderr()
    finally:
        stop(process, 15)
