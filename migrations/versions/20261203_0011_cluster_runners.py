"""cluster runners: how many nodes one job may span, and where a cluster runs an attempt

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runners", sa.Column("max_nodes_per_job", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.add_column("job_attempts", sa.Column("external_ref", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_column("external_ref")
    with op.batch_alter_table("runners") as batch:
        batch.drop_column("max_nodes_per_job")
