"""Swagger UI at /docs, used as a person uses it, in a real headless Chromium (Playwright for Python).

The page is served by a threaded werkzeug server on a free port, with the demo number's fixed code.
Its spec lists an unreachable Production server first (as production does) and the test server as
Development: the person picks Development, sends a code to the demo number, logs in with it,
authorizes with the access token and reads GET /me; at each step the page must show the status and
the body. The page must load only from this server (its assets are served locally: no request leaves
127.0.0.1), have a favicon, and show the seeds' error texts among the documented answers.

The browser is Debian's ``chromium`` (``make test`` installs it when missing); Playwright never
downloads one.
"""

import json
import os
import shutil
import threading
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from allmine_auth.config import parse_test_destinations, spec_options
from allmine_auth.extensions import db
from tests.fakes import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEMO = {"countryCode": "90", "phoneNumber": "5372505890"}
TIMEOUT_MS = 20_000

sync_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (make test installs it)", allow_module_level=True)


@pytest.fixture
def docs_url(make_app, tmp_path):
    """Serve the app with Swagger UI on a free port; the spec's Development server is this one."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    servers = [
        {"url": f"http://127.0.0.1:{free_port()}", "description": "Production"},
        {"url": base_url, "description": "Development"},
    ]
    app = make_app(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/docs.db",
        API_SPEC_OPTIONS=spec_options(servers),
        OTP_TEST_DESTINATIONS=parse_test_destinations("+905372505890=1234"),
    )
    with app.app_context():
        db.create_all()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base_url
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def page():
    """A page of a fresh headless Chromium that may only reach 127.0.0.1 (anything else is aborted)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.outside = []

        def only_local(route):
            url = route.request.url
            if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
                route.continue_()
            else:
                page.outside.append(url)
                route.abort()

        page.route("**/*", only_local)
        yield page
        browser.close()


def operation(page, operation_id):
    """Open an operation's block (Swagger UI names it by tag and operationId) and return it."""
    block = page.locator(f"[id$='-{operation_id}']").first
    block.locator(".opblock-summary").first.click()
    block.locator(".opblock-body").wait_for()
    return block


def execute(block, body=None):
    """Try it out: fill the body (if any), execute, and return the live answer's status and JSON body."""
    block.locator(".try-out__btn").click()
    if body is not None:
        block.locator("textarea.body-param__text").fill(json.dumps(body))
    block.locator("button.execute").click()
    answer = block.locator(".live-responses-table tbody tr.response").first
    answer.wait_for()
    status = answer.locator(".response-col_status").inner_text().strip()
    text = answer.locator(".response-col_description pre.microlight, .response-col_description pre").first
    return int(status), json.loads(text.inner_text())


def documented_example(block, status):
    """The example Swagger UI shows for a documented answer of an open operation."""
    row = block.locator(f".responses-table tr.response[data-code='{status}']").first
    return json.loads(row.locator(".example pre, .highlight-code pre").first.inner_text())


def assert_success(status, body, expected_status):
    """The page shows the success envelope with ``expected_status``."""
    assert status == expected_status, body
    assert body["isSuccess"] is True
    assert body["statusCode"] == expected_status
    assert body["errors"] == []


def test_a_person_logs_in_on_swagger_ui_with_the_demo_number_and_reads_their_profile(docs_url, page):
    page.goto(f"{docs_url}/docs")
    page.locator(".servers select").wait_for()
    page.select_option(".servers select", value=docs_url)

    send = operation(page, "sendOtp")
    status, body = execute(send, DEMO)
    assert_success(status, body, 201)
    assert body["data"] == {"countryCode": "+90", "phoneNumber": "5372505890", "code": "1234"}

    verify = operation(page, "verifyOtp")
    status, body = execute(verify, {**DEMO, "code": body["data"]["code"]})
    assert_success(status, body, 200)
    login = body["data"]
    assert login["expiresIn"] == 3600 and login["refreshExpiresIn"] == 2592000
    assert login["user"]["phoneNumber"] == "5372505890"
    assert login["isRegistrationComplete"] is False

    page.locator("button.authorize").first.click()
    page.locator(".modal-ux input[type='text']").first.fill(login["accessToken"])
    page.locator(".modal-ux button.modal-btn.auth.authorize").click()
    page.locator(".modal-ux button.btn-done").click()

    me = operation(page, "getMe")
    status, body = execute(me)
    assert_success(status, body, 200)
    assert body["data"]["id"] == login["user"]["id"]
    assert body["data"]["phoneNumber"] == "5372505890"
    assert body["data"]["roles"] == ["user"]

    assert page.outside == []


def test_the_docs_page_has_a_favicon_served_locally(docs_url, page):
    page.goto(f"{docs_url}/docs")
    icons = page.locator("link[rel='icon']")
    assert icons.count() == 2
    for href in (icons.nth(i).get_attribute("href") for i in range(icons.count())):
        answer = page.request.get(f"{docs_url}{href}")
        assert answer.status == 200, href
        assert answer.headers["content-type"] == "image/png"
        assert answer.body()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.outside == []


def test_swagger_ui_shows_the_seeds_error_texts_among_the_documented_answers(docs_url, page):
    page.goto(f"{docs_url}/docs")
    send = operation(page, "sendOtp")
    assert documented_example(send, 500)["errors"] == ["SMS gönderilirken hata oluştu"]
    assert documented_example(send, 201)["data"] == {
        "countryCode": "+90",
        "phoneNumber": "5551234567",
        "code": "1234",
    }
    email = operation(page, "sendOtpEmail")
    assert documented_example(email, 500) == {
        "isSuccess": False,
        "statusCode": 500,
        "data": None,
        "errors": ["Email gönderilirken hata oluştu"],
        "timestamp": "2026-01-15T10:30:00.000Z",
    }
    assert documented_example(email, 400)["errors"][0] == "Validation failed"
    verify = operation(page, "verifyOtp")
    assert documented_example(verify, 401)["errors"] == ["Invalid or expired code"]
    assert documented_example(verify, 429)["errors"] == ["Too many requests"]
    registration = operation(page, "completeRegistration")
    assert documented_example(registration, 409)["errors"][0] == (
        "Resource already exists or cannot be changed in its current state"
    )
    sessions = operation(page, "deleteSession")
    assert documented_example(sessions, 404) == {
        "isSuccess": False,
        "statusCode": 404,
        "data": None,
        "errors": ["Resource not found"],
        "timestamp": "2026-01-15T10:30:00.000Z",
    }
    assert page.outside == []
