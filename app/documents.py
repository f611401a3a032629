"""The shapes of the JSON documents kept in table columns, typed once here and read by key everywhere else.

JSON that Corral does not shape itself (lm-eval's results, the Hub's config, a caller's free-form snapshot) is a
`JsonObject`: JSON values all the way down, so a reader has to look at what it got before using it.
"""

from typing import (
    Annotated,
    Literal,
    NotRequired,  # pydantic reads these on Python 3.11
    TypeAlias,
)

from pydantic import ConfigDict, Field, StrictInt, with_config
from typing_extensions import TypedDict

from corral.wire.base import JsonObject
from corral.wire.generation import GenerationArguments

__all__ = ["JsonObject"]


class EvaluationConfig(TypedDict):
    """The settings an evaluation's scores depend on; stored with the evaluation and hashed into its identity
    (app/evaluations/identity.py)."""

    model: str
    revision: str
    suite: str
    suite_version: str
    harness_version: str
    backend: str
    precision: str
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    num_fewshot: int | None
    limit: int | float | None
    seed: int | None
    gen_kwargs: GenerationArguments | None
    # Present (and true) only when an admin trusted the revision's own code: older hashes stay as they were.
    trust_remote_code: NotRequired[bool]


def is_sample(config: EvaluationConfig) -> bool:
    """Whether a run read only part of each task (a `limit`: a count or a fraction of the documents). A sample's
    numbers are its own: it is never ranked, never a baseline, never exported to the Hub."""
    return config["limit"] is not None


class StoredRequirements(TypedDict):
    """What an evaluation was sized at when it was requested (app/hardware/fit.py), and what else its runner
    must bring."""

    memory_bytes: int
    device_bytes: int
    context_tokens: int
    notes: list[str]
    # Whether the weights may need the runner's Hub token (gated, private, or not known); absent on older rows: yes.
    needs_hub_token: NotRequired[bool]


class TaskSummary(TypedDict):
    """One task's score as the suite publishes it: raw (0-1) and normalized (0-100), each with its stderr."""

    raw: float
    raw_stderr: float | None
    normalized: float
    stderr: float | None
    subtasks: NotRequired[int]


class ScoreSummary(TypedDict):
    """An evaluation's per-task scores and the suite's average, once every job's result is in."""

    tasks: dict[str, TaskSummary]
    average: float | None
    average_stderr: float | None
    complete: bool
    missing: list[str]


class AttemptProgress(TypedDict, total=False):
    """What the runner last reported of a running attempt (heartbeats carry it)."""

    overall: float
    tasks: dict[str, float]
    stage: str


class AcceleratorRecord(TypedDict):
    """One kind of accelerator a runner has: memory per device, and how many."""

    kind: str
    memory_bytes: int
    count: NotRequired[int]  # per node
    nodes: NotRequired[int]


class HubDisagreement(TypedDict):
    """A fact on which the Hub and the registry differ; shown, never merged."""

    field: str
    registry: int | str
    hub: int | str


# A model's parts beyond the decoder stack the architecture columns describe, in transformers' config terms.
# Validated where a request states them (pydantic reads these TypedDicts with their bounds), so one definition
# serves the API, the table column and the arithmetic (app/hardware/parameters.py).
Size = Annotated[StrictInt, Field(ge=1, le=10_000_000)]
LayerIndex = Annotated[StrictInt, Field(ge=0, le=10_000_000)]


@with_config(ConfigDict(extra="forbid"))
class MllamaVisionEncoder(TypedDict):
    """Llama 3.2 Vision's image encoder (`vision_config` of `mllama`): tiled images, local then gated global layers."""

    hidden_size: Size
    num_layers: Annotated[Size, Field(description="(num_hidden_layers) the local layers")]
    num_global_layers: Annotated[Size, Field(description="(num_global_layers) gated layers after the local ones")]
    intermediate_size: Size
    patch_size: Size
    image_size: Size
    num_channels: Size
    max_num_tiles: Size
    aspect_ratios: Annotated[Size, Field(description="len(supported_aspect_ratios)")]
    output_dim: Annotated[Size, Field(description="(vision_output_dim) what the projector reads")]


@with_config(ConfigDict(extra="forbid"))
class Llama4VisionEncoder(TypedDict):
    """Llama 4's image encoder (`vision_config` of `llama4`), with its pixel-shuffle adapter."""

    hidden_size: Size
    num_layers: Annotated[Size, Field(description="(num_hidden_layers)")]
    intermediate_size: Size
    patch_size: Size
    image_size: Size
    num_channels: Size
    projector_input_dim: Size
    projector_output_dim: Size
    output_dim: Annotated[Size, Field(description="(vision_output_dim) what the projector reads")]


@with_config(ConfigDict(extra="forbid"))
class Quantization(TypedDict):
    """How a quantized release stores its weights: which weights are quantized, one scale per output row."""

    method: Annotated[str, Field(min_length=1, max_length=64, description="quantization_config.quant_method")]
    precision: Literal["fp8", "int8"]
    weights: Annotated[
        Literal["mlp", "routed_experts"],
        Field(
            description="mlp: each decoder layer's MLP (dense designs); routed_experts: the routed experts of "
            "each mixture-of-experts layer (llama4). Everything else stays in 16 bits."
        ),
    ]
    kept_layers: Annotated[
        list[LayerIndex], Field(max_length=1024, description="Decoder layers left unquantized (Meta: first, last).")
    ]
    scale_bytes: Annotated[Literal[2, 4], Field(description="Bytes of each per-row scale: 2 (bf16) or 4 (fp32).")]


@with_config(ConfigDict(extra="forbid"))
class LlamaComponents(TypedDict):
    """A dense Llama decoder (`llama`): the architecture columns say it all, but for how it is stored."""

    design: Literal["llama"]
    quantization: NotRequired[Quantization]


@with_config(ConfigDict(extra="forbid"))
class MllamaComponents(TypedDict):
    """Llama 3.2 Vision (`mllama`): num_layers counts every decoder layer, the cross-attention ones among them."""

    design: Literal["mllama"]
    cross_attention_layers: Annotated[Size, Field(description="len(cross_attention_layers): layers that read images")]
    vision: MllamaVisionEncoder
    quantization: NotRequired[Quantization]


@with_config(ConfigDict(extra="forbid"))
class Llama4Components(TypedDict):
    """Llama 4 (`llama4`): intermediate_size is each expert's width, moe_experts_total the routed experts."""

    design: Literal["llama4"]
    dense_intermediate_size: Annotated[Size, Field(description="(intermediate_size_mlp) the dense layers' MLP")]
    moe_layer_step: Annotated[
        StrictInt,
        Field(ge=0, le=1024, description="(interleave_moe_layer_step) every step-th layer is MoE; 0: none is"),
    ]
    vision: NotRequired[Llama4VisionEncoder]
    quantization: NotRequired[Quantization]


ModelComponents: TypeAlias = LlamaComponents | MllamaComponents | Llama4Components
