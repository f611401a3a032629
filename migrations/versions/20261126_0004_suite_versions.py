"""suite versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suite_versions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("definition", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suite_versions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_suite_versions_name_version")),
    )
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suite_versions_name"), ["name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suite_versions_name"))

    op.drop_table("suite_versions")
