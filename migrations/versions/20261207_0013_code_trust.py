"""code trust: an admin's mark that one revision's own code (trust_remote_code) may run, on runners that accept it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("revisions", sa.Column("code_trusted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("revisions", sa.Column("code_trusted_by", sa.String(200), nullable=True))
    op.add_column("revisions", sa.Column("code_trust_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("code_trust_reason")
        batch.drop_column("code_trusted_by")
        batch.drop_column("code_trusted_at")
