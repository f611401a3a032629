"""released attempts: a runner going away hands its job back to the queue

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("running", "succeeded", "failed", "lost", "canceled")
AFTER = (*BEFORE, "released")


def _states(states: tuple[str, ...]) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table there (PostgreSQL alters in place).
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_constraint(op.f("ck_job_attempts_attempt_state"), type_="check")
        batch.create_check_constraint(
            op.f("ck_job_attempts_attempt_state"), "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"
        )


def upgrade() -> None:
    _states(AFTER)


def downgrade() -> None:
    op.execute("UPDATE job_attempts SET state = 'lost' WHERE state = 'released'")
    _states(BEFORE)
