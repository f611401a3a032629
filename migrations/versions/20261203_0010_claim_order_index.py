"""the claim's index in the claim's own order (priority descending, then age), so a claim reads one row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    # (priority, queued_at) could not serve ORDER BY priority DESC, queued_at: every queued job was sorted.
    op.drop_index("ix_evaluation_jobs_claim_order", table_name="evaluation_jobs")
    op.create_index(
        "ix_evaluation_jobs_claim_order",
        "evaluation_jobs",
        [sa.desc(sa.column("priority")), "queued_at", "shard_index", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_evaluation_jobs_claim_order", table_name="evaluation_jobs")
    op.create_index(
        "ix_evaluation_jobs_claim_order",
        "evaluation_jobs",
        ["priority", "queued_at"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )
