"""Operator commands: ``flask seed`` (demo data) and ``flask purge`` (expired rows)."""

import click
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import OneTimeCode, Session, utcnow


@click.command("purge")
def purge_command():
    """Delete expired one-time codes and sessions that are over (revoked or past their end)."""
    now = utcnow()
    codes = db.session.execute(sa.delete(OneTimeCode).where(OneTimeCode.expires_at <= now)).rowcount
    sessions = db.session.execute(
        sa.delete(Session).where(sa.or_(Session.expires_at <= now, Session.revoked_at.is_not(None)))
    ).rowcount
    db.session.commit()
    click.echo(f"Purged {codes} expired codes and {sessions} ended sessions.")


@click.command("seed")
def seed_command():
    """Load the demo data (idempotent)."""
    click.echo("Nothing to seed yet.")


def register_commands(app):
    """Add the commands to ``flask``."""
    app.cli.add_command(seed_command)
    app.cli.add_command(purge_command)
