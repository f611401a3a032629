"""hub sync state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hub_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("hub_sha", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("hub_sync_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("hub_last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("hub_last_success_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("hub_last_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("hub_consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("hub_next_sync_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("hub_lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "hub_disagreements",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )
        batch_op.create_index(batch_op.f("ix_models_hub_next_sync_at"), ["hub_next_sync_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_hub_next_sync_at"))
        batch_op.drop_column("hub_disagreements")
        batch_op.drop_column("hub_lease_until")
        batch_op.drop_column("hub_next_sync_at")
        batch_op.drop_column("hub_consecutive_failures")
        batch_op.drop_column("hub_last_error")
        batch_op.drop_column("hub_last_success_at")
        batch_op.drop_column("hub_last_attempt_at")
        batch_op.drop_column("hub_sync_status")
        batch_op.drop_column("hub_sha")
        batch_op.drop_column("hub_ref")
