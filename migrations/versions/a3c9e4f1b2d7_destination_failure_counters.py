"""destination failure counters: failures and their window on destination_locks, the lock optional

Revision ID: a3c9e4f1b2d7
Revises: a1c0ffee0002
Create Date: 2026-11-29 01:20:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "a3c9e4f1b2d7"
down_revision = "a1c0ffee0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("destination_locks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failures", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column("locked_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch_op.alter_column("locked_until", existing_type=sa.DateTime(timezone=True), nullable=True)


def downgrade():
    # Counters that never locked have no lock to keep.
    op.execute("DELETE FROM destination_locks WHERE locked_at IS NULL OR locked_until IS NULL")
    with op.batch_alter_table("destination_locks", schema=None) as batch_op:
        batch_op.alter_column("locked_until", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.alter_column("locked_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.drop_column("window_started_at")
        batch_op.drop_column("failures")
