"""cache outbox: cache writes Redis refused, kept until a worker delivers them

Revision ID: a1c0ffee0001
Revises: 815183f8c7fc
Create Date: 2026-11-29 01:10:00

"""

from alembic import op
import sqlalchemy as sa


revision = "a1c0ffee0001"
down_revision = "815183f8c7fc"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "cache_outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("ttl", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("cache_outbox")
