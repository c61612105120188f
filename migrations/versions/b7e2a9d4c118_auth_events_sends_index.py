"""a partial index for the per-destination send caps: a destination's sends by time

Revision ID: b7e2a9d4c118
Revises: a3c9e4f1b2d7
Create Date: 2026-11-29 04:15:00

"""

from alembic import op
import sqlalchemy as sa


revision = "b7e2a9d4c118"
down_revision = "a3c9e4f1b2d7"
branch_labels = None
depends_on = None

SENDS = sa.text("kind IN ('code_sent', 'delivery_failed')")


def upgrade():
    with op.batch_alter_table("auth_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_auth_events_sends",
            ["destination", "created_at"],
            unique=False,
            postgresql_where=SENDS,
            sqlite_where=SENDS,
        )


def downgrade():
    with op.batch_alter_table("auth_events", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_events_sends")
