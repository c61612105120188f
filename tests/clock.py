"""A clock the SMS rules read, which a test moves forward.

The SMS counters keep their buckets in Redis (or in the process) by time, where
``timeshift.travel`` can't move them; so instead of moving stored times back,
the modules of a send and a verify are given a clock that runs ahead.
"""

import time
from datetime import timedelta

import jwt

from allmine_auth.models import utcnow

MODULES = ("allmine_auth.rules.abuse", "allmine_auth.rules.codes", "allmine_auth.rules.logins")


class Clock:
    """``now()`` is the real time plus what ``advance`` added; installed with ``monkeypatch``."""

    def __init__(self, monkeypatch):
        self.offset = timedelta(0)
        for module in MODULES:
            monkeypatch.setattr(f"{module}.utcnow", self.now)

    def now(self):
        """The real time, moved forward by the offset."""
        return utcnow() + self.offset

    def align_to_minute(self):
        """Move this clock forward to one second past the next whole minute.

        The SMS rules judge the current minute apart from settled ones, so a test counting sends to a
        trip must not have its sends straddle a minute's end: it now has 59 s before the next one.
        """
        now = self.now()
        self.advance(61 - now.second - now.microsecond / 1_000_000)

    def advance(self, seconds):
        """Move this clock ``seconds`` forward."""
        self.offset += timedelta(seconds=seconds)


def wait_past_expiry(token):
    """Sleep until the JWT ``token`` has expired by its own ``exp`` claim (a whole second).

    A test that lets a token expire reads when from the token, not from a sleep it hopes is long
    enough: on a slow machine the requests before it can take longer than a short lifetime.
    """
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.05)
