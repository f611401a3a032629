import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, JsonValue, StrictBool, model_validator

from corral.documents import ModelComponents
from corral.fields import ContextLength, Count, IsoDate, Modality, Name, Note, ParameterCount, RepoId, Slug, Tag
from corral.schemas import AS_WRITTEN, NotNull, ReadModel, WriteModel
from corral.wire.enums import Lineage, ModelKind, ModelStatus

if TYPE_CHECKING:  # the table, for an annotation: the client imports these schemas without SQLAlchemy
    from corral.tables import Model

ModelSort = Literal[
    "repo_id",
    "-repo_id",
    "release_date",
    "-release_date",
    "parameter_count",
    "-parameter_count",
    "created_at",
    "-created_at",
]
Dtype = Literal["float32", "float16", "bfloat16", "fp8", "int8", "int4"]

_EXAMPLE: dict[str, JsonValue] = {
    "repo_id": "meta-llama/Llama-3.1-8B-Instruct",
    "display_name": "Llama 3.1 8B Instruct",
    "family": "llama-3.1",
    "kind": "instruct",
    "modalities": ["text"],
    "status": "released",
    "release_date": "2024-07-23",
    "base_model": "meta-llama/Llama-3.1-8B",
    "lineage": "finetune",
    "hidden_size": 4096,
    "num_layers": 32,
    "num_attention_heads": 32,
    "num_kv_heads": 8,
    "intermediate_size": 14336,
    "context_length": 131072,
    "vocab_size": 128256,
    "tied_embeddings": False,
    "default_dtype": "bfloat16",
    "tags": ["gqa"],
}


ComponentsField = Annotated[ModelComponents, Field(discriminator="design")]
ComponentsRead = Annotated[ModelComponents, AS_WRITTEN]  # written by Corral, after validation


def _text_only() -> list[Modality]:
    return ["text"]


HubSyncStatus = Literal["ok", "gated", "error"]


class Disagreement(ReadModel):
    field: str
    registry: Any = Field(description="What Corral has recorded (kept).")
    hub: Any = Field(description="What the Hub says.")


class HubState(ReadModel):
    """How this model tracks the Hub."""

    ref: str | None = Field(description="The branch or tag synced.")
    sha: str | None = Field(description="The commit it pointed at on the last successful sync.")
    status: HubSyncStatus | None = Field(description="null until the first sync.")
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    next_sync_at: datetime | None
    disagreements: list[Disagreement]


def hub_state(model: "Model") -> HubState:
    return HubState(
        ref=model.hub_ref,
        sha=model.hub_sha,
        status=model.hub_sync_status,
        last_attempt_at=model.hub_last_attempt_at,
        last_success_at=model.hub_last_success_at,
        last_error=model.hub_last_error,
        next_sync_at=model.hub_next_sync_at,
        disagreements=model.hub_disagreements,
    )


class ArchitectureFields(WriteModel):
    """The checkpoint's shape, in transformers' terms; the estimator and the parameter count use it."""

    parameter_count: ParameterCount | None = None
    active_parameters: ParameterCount | None = Field(default=None, description="Per token, for mixtures of experts.")
    hidden_size: Count | None = None
    num_layers: Count | None = None
    num_attention_heads: Count | None = None
    num_kv_heads: Count | None = None
    head_dim: Count | None = Field(default=None, description="Default: hidden_size / num_attention_heads.")
    intermediate_size: Count | None = None
    context_length: ContextLength | None = None
    vocab_size: Count | None = None
    tied_embeddings: StrictBool | None = None
    moe_experts_total: Count | None = None
    moe_experts_active: Count | None = None
    default_dtype: Dtype | None = None
    components: ComponentsField | None = Field(
        default=None,
        description="What the architecture fields leave out, by design (transformers' model_type): the image "
        "encoder and cross-attention layers of mllama, the experts' layout and image encoder of llama4, how a "
        "quantized release stores its weights. The parameter count follows from it by arithmetic.",
    )
    stored_weight_bytes: ParameterCount | None = Field(
        default=None,
        description="Bytes the weights take as stored, at default_dtype (quantized tensors, their scales and the "
        "layers kept in 16 bits); computed from components.quantization when left out.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ArchitectureFields":
        heads, kv_heads = self.num_attention_heads, self.num_kv_heads
        if heads is not None and kv_heads is not None and heads % kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        total, active = self.moe_experts_total, self.moe_experts_active
        if total is not None and active is not None and active > total:
            raise ValueError("moe_experts_active cannot exceed moe_experts_total")
        if self.parameter_count and self.active_parameters and self.active_parameters > self.parameter_count:
            raise ValueError("active_parameters cannot exceed parameter_count")
        return self


class ModelCreate(ArchitectureFields):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    repo_id: RepoId
    display_name: Name | None = Field(default=None, description="Default: the repo id's name part.")
    family: Slug | None = None
    license: Slug | None = Field(default=None, description="Default: the family's licence.")
    kind: ModelKind | None = Field(
        default=None, description="Leave out (with everything else) to register from the Hub's metadata alone."
    )
    modalities: list[Modality] = Field(default_factory=_text_only, min_length=1, max_length=4)
    status: ModelStatus = ModelStatus.RELEASED
    release_date: IsoDate | None = None
    base_model: RepoId | None = Field(default=None, description="Repo id of the model this one derives from.")
    lineage: Lineage | None = Field(default=None, description="How it derives; default finetune with a base_model.")
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    description: Note | None = None
    source_note: Note | None = None
    unverified: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _lineage_needs_base(self) -> "ModelCreate":
        if self.lineage is not None and self.base_model is None:
            raise ValueError("lineage needs base_model")
        if self.base_model == self.repo_id:
            raise ValueError("a model cannot be its own base_model")
        return self


class ModelUpdate(ArchitectureFields):
    """Fields to change; absent fields stay as they are, null clears a field."""

    display_name: NotNull[Name] = None
    family: Slug | None = None
    license: Slug | None = None
    kind: NotNull[ModelKind] = None
    modalities: NotNull[Annotated[list[Modality], Field(min_length=1, max_length=4)]] = None
    status: NotNull[ModelStatus] = None
    release_date: IsoDate | None = None
    base_model: RepoId | None = None
    lineage: Lineage | None = None
    tags: NotNull[Annotated[list[Tag], Field(max_length=50)]] = None
    description: Note | None = None
    source_note: Note | None = None
    unverified: NotNull[Annotated[list[str], Field(max_length=50)]] = None


class ModelRead(ReadModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_EXAMPLE]})

    id: uuid.UUID
    repo_id: str
    display_name: str
    family: str | None = Field(description="Family slug.")
    license: str | None = Field(description="Licence slug: the model's own, or its family's.")
    license_inherited: bool = Field(description="True when the licence comes from the family.")
    kind: ModelKind
    modalities: list[str]
    status: ModelStatus
    release_date: date | None
    base_model: str | None = Field(description="Repo id of the base model.")
    lineage: Lineage | None
    parameter_count: int | None
    active_parameters: int | None
    hidden_size: int | None
    num_layers: int | None
    num_attention_heads: int | None
    num_kv_heads: int | None
    head_dim: int | None
    intermediate_size: int | None
    context_length: int | None
    vocab_size: int | None
    tied_embeddings: bool | None
    moe_experts_total: int | None
    moe_experts_active: int | None
    default_dtype: str | None
    components: ComponentsRead | None = Field(
        description="The parts beyond the decoder columns, by design: image encoder, experts' layout, quantization."
    )
    stored_weight_bytes: int | None = Field(
        description="Bytes the weights take as stored, at default_dtype; the fit rule uses it at that precision."
    )
    tags: list[str]
    description: str | None
    source_note: str | None
    unverified: list[str]
    hub: HubState = Field(description="Sync state and where the Hub disagrees with this record.")
    created_at: datetime
    updated_at: datetime


class LineageEntry(ReadModel):
    repo_id: str
    lineage: Lineage | None = Field(description="How this model derives from the one before it in the chain.")
    depth: int = Field(description="Steps from the model asked about.")


class LineageRead(ReadModel):
    model: str
    ancestors: list[LineageEntry] = Field(description="Base model first, then its base, and so on.")
    descendants: list[LineageEntry] = Field(description="Every model derived from this one, breadth first.")
