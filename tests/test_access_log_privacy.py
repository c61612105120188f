"""gunicorn's access lines keep personal data and tokens out too."""

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import file_database
from tests.servers import gunicorn_server

EMAIL = "john.doe@example.com"
PHONE = "+905372505890"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """A 1-worker gunicorn on a file database; its base URL and logs."""
    base = tmp_path_factory.mktemp("gunicorn")
    url = file_database(base)
    started = {}
    with gunicorn_server(
        {"TEST_DATABASE_URL": url}, workers=1, on_start=lambda process, logs: started.update(logs=logs)
    ) as base_url:
        yield base_url, started["logs"]


def access_line(logs, request_id):
    """The access line of the request ``request_id`` (waits for it)."""
    deadline = time.monotonic() + 10
    while request_id not in logs.read_stdout():
        assert time.monotonic() < deadline, "no access line for the request"
        time.sleep(0.05)
    lines = [json.loads(line) for line in logs.read_stdout().splitlines() if line.strip()]
    (entry,) = [line for line in lines if line["request_id"] == request_id]
    return entry


def test_an_access_line_masks_addresses_numbers_and_tokens_in_the_path_and_user_agent(one_worker):
    """A path or a User-Agent an app fills with a number, an address or a token is logged masked."""
    base_url, logs = one_worker
    path = f"/api/v1/users/{EMAIL.replace('@', '%40')}/{PHONE}/{TOKEN}"
    request = urllib.request.Request(
        base_url + path, headers={"User-Agent": f"Allmine/1.0 ({EMAIL}; {PHONE})"}
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 404
    body = json.loads(answer.value.read())
    assert (body["isSuccess"], body["statusCode"], body["errors"]) == (False, 404, ["Resource not found"])
    entry = access_line(logs, answer.value.headers["X-Request-ID"])
    assert entry["path"] == "/api/v1/users/j***@example.com/+90537*****90/[token]"
    assert entry["user_agent"] == "Allmine/1.0 (j***@example.com; +90537*****90)"
    assert EMAIL not in logs.read_stdout() and PHONE not in logs.read_stdout()
