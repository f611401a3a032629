"""Model search: the filters of GET /v1/models, as one SQL statement (so keyset pagination stays exact)."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import aliased

from corral.errors import UnprocessableEntity
from corral.hardware import fit
from corral.hardware.catalog import accelerators
from corral.registry.repository import MODEL_LOADS
from corral.tables import Family, License, Model
from corral.tables.types import json_array_contains
from corral.wire.enums import ModelKind, ModelStatus


@dataclass(frozen=True)
class ModelFilters:
    family: str | None = None
    license: str | None = None
    kind: ModelKind | None = None
    status: ModelStatus | None = None
    modality: str | None = None
    tag: str | None = None
    base_model: str | None = None
    q: str | None = None
    min_parameters: int | None = None
    max_parameters: int | None = None
    min_context: int | None = None
    fits_accelerator: str | None = None
    fits_count: int = 1
    fits_precision: str = "bf16"
    fits_context_tokens: int = fit.DEFAULT_CONTEXT_TOKENS


def search_statement(filters: ModelFilters) -> Select[Model]:
    statement: Select[Model] = select(Model).options(*MODEL_LOADS)
    if filters.family is not None:
        statement = statement.where(Model.family_id.in_(select(Family.id).where(Family.slug == filters.family)))
    if filters.license is not None:
        # The effective licence: the model's own, else its family's.
        family_license = select(Family.license_id).where(Family.id == Model.family_id).scalar_subquery()
        wanted = select(License.id).where(License.slug == filters.license).scalar_subquery()
        statement = statement.where(func.coalesce(Model.license_id, family_license) == wanted)
    if filters.kind is not None:
        statement = statement.where(Model.kind == filters.kind)
    if filters.status is not None:
        statement = statement.where(Model.status == filters.status)
    if filters.modality is not None:
        statement = statement.where(json_array_contains(Model.modalities, filters.modality))
    if filters.tag is not None:
        statement = statement.where(json_array_contains(Model.tags, filters.tag))
    if filters.base_model is not None:
        base = aliased(Model)
        statement = statement.where(Model.base_model_id.in_(select(base.id).where(base.repo_id == filters.base_model)))
    if filters.q is not None:
        pattern = "%" + filters.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                func.lower(Model.repo_id).like(pattern, escape="\\"),
                func.lower(Model.display_name).like(pattern, escape="\\"),
            )
        )
    if filters.min_parameters is not None:
        statement = statement.where(Model.parameter_count >= filters.min_parameters)
    if filters.max_parameters is not None:
        statement = statement.where(Model.parameter_count <= filters.max_parameters)
    if filters.min_context is not None:
        statement = statement.where(Model.context_length >= filters.min_context)
    if filters.fits_accelerator is not None:
        statement = statement.where(_fits(filters))
    return statement


def _fits(filters: ModelFilters) -> ColumnElement[bool]:
    """The fit rule over columns (app/hardware/fit.py): a model lacking a figure it needs never matches."""
    device = accelerators().get(filters.fits_accelerator or "")
    if device is None:
        raise UnprocessableEntity(
            f"Unknown accelerator {filters.fits_accelerator!r}; see GET /v1/accelerators.",
            field="fits_accelerator",
            location="query",
        )
    # head_dim is always stored once hidden size and heads are known (the service fills it in).
    columns = fit.ArchitectureColumns(
        parameters=Model.parameter_count,
        hidden_size=Model.hidden_size,
        num_layers=Model.num_layers,
        num_kv_heads=Model.num_kv_heads,
        head_dim=Model.head_dim,
        vocab_size=Model.vocab_size,
        tied_embeddings=Model.tied_embeddings,
        context_length=Model.context_length,
        default_dtype=Model.default_dtype,
        stored_weight_bytes=Model.stored_weight_bytes,
    )
    return fit.holds_clause(
        columns,
        fit.Devices(device.memory_bytes, filters.fits_count),
        precision=filters.fits_precision,
        context_tokens=filters.fits_context_tokens,
    )
