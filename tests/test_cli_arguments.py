"""The operator's commands answer a wrong argument with a usage error, not a traceback."""

import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User
from allmine_auth.store.bulk import MAX_USERS


def test_seed_users_past_the_last_number_is_a_usage_error_and_inserts_nothing(app, runner):
    """``--start K --users N`` beyond the numbering (``+90532`` and 7 digits) says so, and adds nobody."""
    result = runner.invoke(args=["seed", "--users", "5", "--start", str(MAX_USERS - 1)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"users are numbered 0..{MAX_USERS - 1}; {MAX_USERS - 1}+5 does not fit" in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
