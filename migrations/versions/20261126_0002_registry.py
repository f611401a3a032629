"""registry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "licenses",
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version_date", sa.Date(), nullable=True),
        sa.Column("license_url", sa.String(length=500), nullable=True),
        sa.Column("acceptable_use_policy_url", sa.String(length=500), nullable=True),
        sa.Column("hub_license_id", sa.String(length=64), nullable=True),
        sa.Column("hub_license_name", sa.String(length=64), nullable=True),
        sa.Column("spdx_ref", sa.String(length=128), nullable=True),
        sa.Column("commercial_use", sa.Boolean(), nullable=False),
        sa.Column("mau_threshold", sa.BigInteger(), nullable=True),
        sa.Column("attribution_text", sa.String(length=200), nullable=True),
        sa.Column("derivative_name_prefix", sa.String(length=64), nullable=True),
        sa.Column("outputs_may_improve_other_models", sa.Boolean(), nullable=False),
        sa.Column("eu_multimodal_restriction", sa.Boolean(), nullable=False),
        sa.Column("notice_text", sa.Text(), nullable=True),
        sa.Column("source_note", sa.Text(), nullable=True),
        sa.Column("unverified", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licenses")),
        sa.UniqueConstraint("slug", name=op.f("uq_licenses_slug")),
    )
    op.create_table(
        "families",
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vendor", sa.String(length=100), nullable=False),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("license_id", sa.Uuid(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_note", sa.Text(), nullable=True),
        sa.Column("unverified", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["license_id"], ["licenses.id"], name=op.f("fk_families_license_id_licenses"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_families")),
        sa.UniqueConstraint("slug", name=op.f("uq_families_slug")),
    )
    op.create_table(
        "models",
        sa.Column("repo_id", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=True),
        sa.Column("license_id", sa.Uuid(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "base",
                "instruct",
                "code",
                "vision",
                "guard",
                name="model_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("modalities", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "announced",
                "released",
                "deprecated",
                "withdrawn",
                name="model_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("base_model_id", sa.Uuid(), nullable=True),
        sa.Column(
            "lineage",
            sa.Enum(
                "finetune",
                "quantized",
                "adapter",
                "merge",
                "distilled",
                "pruned",
                name="lineage",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("parameter_count", sa.BigInteger(), nullable=True),
        sa.Column("active_parameters", sa.BigInteger(), nullable=True),
        sa.Column("hidden_size", sa.Integer(), nullable=True),
        sa.Column("num_layers", sa.Integer(), nullable=True),
        sa.Column("num_attention_heads", sa.Integer(), nullable=True),
        sa.Column("num_kv_heads", sa.Integer(), nullable=True),
        sa.Column("head_dim", sa.Integer(), nullable=True),
        sa.Column("intermediate_size", sa.Integer(), nullable=True),
        sa.Column("context_length", sa.BigInteger(), nullable=True),
        sa.Column("vocab_size", sa.Integer(), nullable=True),
        sa.Column("tied_embeddings", sa.Boolean(), nullable=True),
        sa.Column("moe_experts_total", sa.Integer(), nullable=True),
        sa.Column("moe_experts_active", sa.Integer(), nullable=True),
        sa.Column("default_dtype", sa.String(length=16), nullable=True),
        sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_note", sa.Text(), nullable=True),
        sa.Column("unverified", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["models.id"], name=op.f("fk_models_base_model_id_models"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["family_id"], ["families.id"], name=op.f("fk_models_family_id_families"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["license_id"], ["licenses.id"], name=op.f("fk_models_license_id_licenses"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("repo_id", name=op.f("uq_models_repo_id")),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index("ix_models_base_model_id", ["base_model_id"], unique=False)
        batch_op.create_index("ix_models_family_id", ["family_id"], unique=False)

    op.create_table(
        "revisions",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("snapshot", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_revisions_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revisions")),
        sa.UniqueConstraint("id", "model_id", name="uq_revisions_id_model_id"),
        sa.UniqueConstraint("model_id", "sha", name=op.f("uq_revisions_model_id_sha")),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("revision_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_aliases_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["revision_id", "model_id"],
            ["revisions.id", "revisions.model_id"],
            name="fk_model_aliases_revision_same_model",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "name", name=op.f("pk_model_aliases")),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
    op.drop_table("revisions")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index("ix_models_family_id")
        batch_op.drop_index("ix_models_base_model_id")

    op.drop_table("models")
    op.drop_table("families")
    op.drop_table("licenses")
