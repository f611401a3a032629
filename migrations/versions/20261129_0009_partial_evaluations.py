"""partial evaluations: every job finished, but some of the suite's scores are missing

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("queued", "running", "succeeded", "failed", "canceled")
AFTER = ("queued", "running", "succeeded", "partial", "failed", "canceled")


def _states(states: tuple[str, ...]) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table there (PostgreSQL alters in place).
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_constraint(op.f("ck_evaluations_evaluation_state"), type_="check")
        batch.create_check_constraint(
            op.f("ck_evaluations_evaluation_state"), "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"
        )


def upgrade() -> None:
    _states(AFTER)


def downgrade() -> None:
    op.execute("UPDATE evaluations SET state = 'failed' WHERE state = 'partial'")
    _states(BEFORE)
