"""Registry tables: licences with their terms, families (release trains), models, revisions, aliases, tags."""

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from corral.documents import HubDisagreement, JsonObject, ModelComponents
from corral.tables.base import Base, IdMixin, TimestampMixin, checked_enum
from corral.tables.types import JsonDocument
from corral.wire.enums import Lineage, ModelKind, ModelStatus


class License(IdMixin, TimestampMixin, Base):
    __tablename__ = "licenses"

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    version_date: Mapped[date | None] = mapped_column(Date)
    license_url: Mapped[str | None] = mapped_column(String(500))
    acceptable_use_policy_url: Mapped[str | None] = mapped_column(String(500))
    hub_license_id: Mapped[str | None] = mapped_column(String(64))
    hub_license_name: Mapped[str | None] = mapped_column(String(64))
    spdx_ref: Mapped[str | None] = mapped_column(String(128))
    commercial_use: Mapped[bool]
    mau_threshold: Mapped[int | None] = mapped_column(BigInteger)
    attribution_text: Mapped[str | None] = mapped_column(String(200))
    derivative_name_prefix: Mapped[str | None] = mapped_column(String(64))
    outputs_may_improve_other_models: Mapped[bool]
    eu_multimodal_restriction: Mapped[bool]
    notice_text: Mapped[str | None] = mapped_column(Text)
    source_note: Mapped[str | None] = mapped_column(Text)
    unverified: Mapped[list[str]] = mapped_column(JsonDocument, default=list)


class Family(IdMixin, TimestampMixin, Base):
    __tablename__ = "families"

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    vendor: Mapped[str] = mapped_column(String(100))
    release_date: Mapped[date | None] = mapped_column(Date)
    license_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("licenses.id", ondelete="RESTRICT"))
    description: Mapped[str | None] = mapped_column(Text)
    source_note: Mapped[str | None] = mapped_column(Text)
    unverified: Mapped[list[str]] = mapped_column(JsonDocument, default=list)

    license: Mapped[License | None] = relationship(lazy="raise")


class Model(IdMixin, TimestampMixin, Base):
    """One model per Hub repo id. Architecture fields are what the hardware estimator computes from."""

    __tablename__ = "models"
    __table_args__ = (
        Index("ix_models_family_id", "family_id"),
        Index("ix_models_base_model_id", "base_model_id"),
    )

    repo_id: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    family_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("families.id", ondelete="RESTRICT"))
    license_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("licenses.id", ondelete="RESTRICT"))
    kind: Mapped[ModelKind] = mapped_column(checked_enum(ModelKind, "model_kind"))
    modalities: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    status: Mapped[ModelStatus] = mapped_column(checked_enum(ModelStatus, "model_status"))
    release_date: Mapped[date | None] = mapped_column(Date)
    base_model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    lineage: Mapped[Lineage | None] = mapped_column(checked_enum(Lineage, "lineage"))

    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    active_parameters: Mapped[int | None] = mapped_column(BigInteger)
    hidden_size: Mapped[int | None]
    num_layers: Mapped[int | None]
    num_attention_heads: Mapped[int | None]
    num_kv_heads: Mapped[int | None]
    head_dim: Mapped[int | None]
    intermediate_size: Mapped[int | None]
    context_length: Mapped[int | None] = mapped_column(BigInteger)
    vocab_size: Mapped[int | None]
    tied_embeddings: Mapped[bool | None]
    moe_experts_total: Mapped[int | None]
    moe_experts_active: Mapped[int | None]
    default_dtype: Mapped[str | None] = mapped_column(String(16))
    # The parts beyond the decoder stack (an image encoder, the experts' layout, how a quantized release stores
    # its weights), and the bytes its weights take as stored at default_dtype, which the fit rule reads in SQL.
    components: Mapped[ModelComponents | None] = mapped_column(JsonDocument)
    stored_weight_bytes: Mapped[int | None] = mapped_column(BigInteger)

    tags: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    description: Mapped[str | None] = mapped_column(Text)
    source_note: Mapped[str | None] = mapped_column(Text)
    unverified: Mapped[list[str]] = mapped_column(JsonDocument, default=list)

    # Hub sync bookkeeping: what was tracked, how the last attempt went, and a lease so that several server
    # replicas never sync one model at once.
    hub_ref: Mapped[str | None] = mapped_column(String(200))
    hub_sha: Mapped[str | None] = mapped_column(String(40))
    hub_sync_status: Mapped[str | None] = mapped_column(String(16))
    hub_last_attempt_at: Mapped[datetime | None]
    hub_last_success_at: Mapped[datetime | None]
    hub_last_error: Mapped[str | None] = mapped_column(Text)
    # Server defaults too: the columns were added to tables that already had rows.
    hub_consecutive_failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    hub_next_sync_at: Mapped[datetime | None] = mapped_column(index=True)
    hub_lease_until: Mapped[datetime | None]
    hub_disagreements: Mapped[list[HubDisagreement]] = mapped_column(
        JsonDocument, default=list, server_default=text("'[]'")
    )

    # lazy="raise": every load is explicit (selectinload in the repository), never a hidden query.
    family: Mapped[Family | None] = relationship(lazy="raise")
    license: Mapped[License | None] = relationship(lazy="raise")
    base_model: Mapped["Model | None"] = relationship(remote_side="Model.id", lazy="raise")


class Revision(IdMixin, TimestampMixin, Base):
    """An immutable (model, commit sha) snapshot; evaluations point here, never at a branch."""

    __tablename__ = "revisions"
    __table_args__ = (
        UniqueConstraint("model_id", "sha"),
        # Target of the aliases' composite key: an alias can only name a revision of its own model.
        UniqueConstraint("id", "model_id", name="uq_revisions_id_model_id"),
    )

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[JsonObject] = mapped_column(JsonDocument, default=dict)
    # An admin's mark that this commit's own code may run (trust_remote_code), on runners labelled for it.
    code_trusted_at: Mapped[datetime | None]
    code_trusted_by: Mapped[str | None] = mapped_column(String(200))
    code_trust_reason: Mapped[str | None] = mapped_column(Text)


class Alias(TimestampMixin, Base):
    """A movable name (`champion`, `latest`) for one revision of the same model."""

    __tablename__ = "model_aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["revision_id", "model_id"],
            ["revisions.id", "revisions.model_id"],
            name="fk_model_aliases_revision_same_model",
            ondelete="CASCADE",
        ),
    )

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision_id: Mapped[uuid.UUID]

    revision: Mapped[Revision] = relationship(lazy="raise", overlaps="model_id")
