"""The per-destination send bounds hold whatever the guesses: a spent code still keeps the resend wait."""

import time

from tests.conftest import assert_envelope, assert_error
from tests.timeshift import travel

INVALID = "Invalid or expired code"
TOO_MANY = "Too many requests"


def burn(auth, code):
    """Guess ``code`` wrong until it is spent (three 401s)."""
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    for _ in range(3):
        assert_error(auth.verify(wrong), 401, INVALID)


def test_burning_a_code_does_not_skip_the_resend_interval(client, auth):
    # Three wrong guesses used to delete the code's row, and with it the resend interval's clock:
    # a stranger's number got its next SMS at once instead of a minute later.
    started = time.monotonic()
    spent = assert_envelope(auth.send(), 201)["code"]
    burn(auth, spent)
    travel(5)
    response = auth.send()
    assert_error(response, 429, TOO_MANY)
    # 55 s of the minute are left, less the real time the requests took (seconds on a loaded machine).
    assert 54 - (time.monotonic() - started) <= int(response.headers["Retry-After"]) <= 56
    # The spent code stays spent: its right value is refused too. After the interval a new code works.
    assert_error(auth.verify(spent), 401, INVALID)
    travel(56)
    code = assert_envelope(auth.send(), 201)["code"]
    assert_envelope(auth.verify(code), 200)
