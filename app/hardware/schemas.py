from typing import Literal

from pydantic import ConfigDict, Field, StrictBool, model_validator

from corral.fields import ContextLength, Count, ParameterCount
from corral.hardware.estimator import Precision
from corral.schemas import Integer, ReadModel, WriteModel

GB = 10**9
GIB = 2**30


class Bytes(ReadModel):
    """An exact byte count, with decimal GB (1e9) and binary GiB (2^30) for display."""

    bytes: int
    gb: float
    gib: float

    @classmethod
    def of(cls, count: int) -> "Bytes":
        return cls(bytes=count, gb=round(count / GB, 3), gib=round(count / GIB, 3))


class AcceleratorRead(ReadModel):
    slug: str
    name: str
    vendor: str
    memory_bytes: int
    memory_type: str


class AcceleratorFit(ReadModel):
    accelerator: str
    memory_bytes: int
    count_needed: int | None = Field(
        description="Devices of this kind on one machine that hold it (the fit rule); null when one device cannot "
        "take its largest piece, so that no number of them can."
    )
    fits_on_one: bool
    nodes_needed: int | None = Field(
        description="Nodes of eight such devices that hold it with vLLM (tensor parallel within a node, pipeline "
        "parallel across nodes); null when one device cannot take its largest piece."
    )


class TrainingEstimate(ReadModel):
    method: Literal["full_finetune", "lora", "qlora"]
    trainable_parameters: int
    accounting: str = Field(description="How the bytes per parameter were counted.")
    total: Bytes


class Inference(ReadModel):
    weights: Bytes
    kv_cache: Bytes
    overhead: Bytes
    overhead_rule: str
    total: Bytes


class HardwareRequirements(ReadModel):
    """Memory needed to run and to fine-tune a model, computed from its architecture."""

    model: str | None = Field(description="Repo id, or null for an ad-hoc architecture.")
    precision: Precision
    kv_precision: Precision
    context_tokens: int
    batch: int
    parameters: int
    parameters_source: Literal["recorded", "computed"]
    weights_by_precision: dict[str, Bytes]
    kv_cache_per_token: Bytes
    kv_cache_formula: str
    inference: Inference
    largest_piece: Bytes = Field(
        description="The most one device must hold: a decoder layer with its KV cache, or the embedding matrix, +20 %."
    )
    training: list[TrainingEstimate]
    accelerators: list[AcceleratorFit]
    runners_that_fit: list[str] | None = Field(
        default=None, description="Registered runners whose accelerators hold it (for a registered model)."
    )
    notes: list[str]


class ArchitectureInput(WriteModel):
    """An ad-hoc architecture (transformers config names in parentheses)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "hidden_size": 4096,
                    "num_layers": 32,
                    "num_attention_heads": 32,
                    "num_kv_heads": 8,
                    "intermediate_size": 14336,
                    "vocab_size": 128256,
                    "precision": "bf16",
                    "context_tokens": 8192,
                }
            ]
        }
    )

    hidden_size: Count = Field(description="(hidden_size)")
    num_layers: Count = Field(description="(num_hidden_layers)")
    num_attention_heads: Count = Field(description="(num_attention_heads)")
    num_kv_heads: Count = Field(description="(num_key_value_heads)")
    head_dim: Count | None = Field(default=None, description="(head_dim); default hidden / heads")
    intermediate_size: Count | None = Field(default=None, description="(intermediate_size)")
    vocab_size: Count | None = Field(default=None, description="(vocab_size)")
    tied_embeddings: StrictBool = Field(default=False, description="(tie_word_embeddings)")
    parameter_count: ParameterCount | None = Field(
        default=None, description="Needed unless intermediate_size and vocab_size let it be computed."
    )
    precision: Precision = "bf16"
    kv_precision: Precision | None = None
    context_tokens: ContextLength = 4096
    batch: Integer = Field(default=1, ge=1, le=4096)
    lora_rank: Integer = Field(default=16, ge=1, le=4096)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ArchitectureInput":
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        if self.parameter_count is None and (self.intermediate_size is None or self.vocab_size is None):
            raise ValueError("give parameter_count, or intermediate_size and vocab_size to compute it")
        return self
