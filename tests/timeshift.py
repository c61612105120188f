"""Make stored time pass: move the stored timestamps of codes, events, counters and locks into the past."""

from datetime import timedelta

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import AuthEvent, DestinationLock, LoginSession, OneTimeCode

COLUMNS = {
    OneTimeCode: ("created_at", "expires_at"),
    AuthEvent: ("created_at",),
    DestinationLock: ("window_started_at", "locked_at", "locked_until"),
    LoginSession: ("created_at", "last_used_at", "expires_at", "rotated_at"),
}


def travel(seconds):
    """Act as if ``seconds`` had passed since everything stored so far happened."""
    delta = timedelta(seconds=seconds)
    for model, columns in COLUMNS.items():
        for row in db.session.scalars(sa.select(model)):
            for column in columns:
                value = getattr(row, column)
                if value is not None:
                    setattr(row, column, value - delta)
    db.session.commit()
