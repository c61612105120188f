"""live activities; sessions slide with each refresh up to an optional absolute end

Revision ID: a1c0ffee0002
Revises: a1c0ffee0001
Create Date: 2026-11-29 01:40:00

"""

from alembic import op
import sqlalchemy as sa


revision = "a1c0ffee0002"
down_revision = "a1c0ffee0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_expires_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "live_activities",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("activity_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("push_token", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference_id", sa.String(length=128), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "activity_id"),
    )
    with op.batch_alter_table("live_activities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_live_activities_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_live_activities_session_id"), ["session_id"], unique=False)


def downgrade():
    with op.batch_alter_table("live_activities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_live_activities_session_id"))
        batch_op.drop_index(batch_op.f("ix_live_activities_expires_at"))

    op.drop_table("live_activities")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("max_expires_at")
