"""Memory arithmetic for transformer checkpoints: exact integer bytes, computed from the architecture.

Every formula is integer arithmetic (`*`, `//`, `+`) so the same function computes a figure in Python and
builds the matching SQL expression from columns (the model search's "fits on N x accelerator" filter).
"""

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
PRECISION_BITS: dict[str, int] = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4}
# A release's stored dtype (config.json's torch_dtype, or the quantized format) as the precision it is estimated at.
DTYPE_PRECISION: dict[str, str] = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "fp8": "fp8",
    "int8": "int8",
    "int4": "int4",
}
DEFAULT_STORED_PRECISION = "bf16"  # where no dtype is recorded: every Llama since 3 is stored so
UNQUANTIZED_PRECISION = "bf16"  # what a quantized release keeps of its layers (embeddings, the head, ...)

# Inference overhead: "add up to an additional 20%" (EleutherAI, as quoted by accelerate's estimate-memory).
INFERENCE_OVERHEAD_PERCENT = 20
INFERENCE_OVERHEAD_RULE = "20% of weights + KV cache (EleutherAI's rule of thumb, quoted by accelerate)"
KV_CACHE_FORMULA = "2 (K and V) x layers x KV heads x head dim x bytes per value x tokens x batch"

# Training accounting, bytes per parameter (activations excluded: they depend on sequence and batch).
FULL_FINETUNE_BYTES_PER_PARAM = 16
FULL_FINETUNE_ACCOUNTING = (
    "16 bytes/parameter, mixed-precision AdamW as in the ZeRO paper (arXiv 1910.02054): 2 bf16 weights + "
    "2 bf16 gradients + 12 optimizer state (fp32 master weights, momentum, variance); activations excluded"
)
LORA_ACCOUNTING = (
    "frozen base weights at 2 bytes/parameter (bf16) + 16 bytes per trainable adapter parameter "
    "(rank-r A and B on the q, k, v, o projections of every layer); activations excluded"
)
# QLoRA NF4 with double quantization: 4 bits + 0.127 bits of quantization constants per parameter
# (Dettmers et al. 2023, section 3), i.e. 4.127 bits = 4127 / 8000 bytes.
QLORA_ACCOUNTING = (
    "frozen base weights in NF4 with double quantization at 4.127 bits/parameter (QLoRA paper) + 16 bytes per "
    "trainable adapter parameter (q, k, v, o adapters); activations excluded"
)


def weight_bytes(parameters: Any, precision: str) -> Any:
    return parameters * PRECISION_BITS[precision] // 8


def kv_cache_bytes(num_layers: Any, num_kv_heads: Any, head_dim: Any, tokens: int, batch: int, precision: str) -> Any:
    return 2 * num_layers * num_kv_heads * head_dim * tokens * batch * PRECISION_BITS[precision] // 8


def stored_precision(default_dtype: str | None) -> str:
    """The precision a release is stored in, from its recorded dtype."""
    return DTYPE_PRECISION.get(default_dtype or "", DEFAULT_STORED_PRECISION)


def dtypes_stored_as(precision: str) -> tuple[str, ...]:
    """The recorded dtypes `stored_precision` reads as `precision` (a missing dtype reads as the default too)."""
    return tuple(dtype for dtype, stored in DTYPE_PRECISION.items() if stored == precision)


def with_overhead(total: Any) -> Any:
    return total + total * INFERENCE_OVERHEAD_PERCENT // 100


def largest_piece_bytes(arch: "Architecture", weights: int, kv: int, embedding_precision: str) -> int:
    """What one device must hold at least: layers spread over devices (accelerate's device_map="auto"), but
    nothing smaller than one decoder layer with its KV cache, or the embedding matrix, can be split."""
    embedding = weight_bytes((arch.vocab_size or 0) * arch.hidden_size, embedding_precision)
    embeddings_total = embedding if arch.tied_embeddings else 2 * embedding
    layer = max(0, weights - embeddings_total) // arch.num_layers
    return int(with_overhead(max(embedding, layer + kv // arch.num_layers)))


def default_kv_precision(precision: str) -> str:
    """KV caches stay at 16 bits when only the weights are quantized (fp8/int8/int4); fp32 runs keep fp32."""
    return "fp32" if precision == "fp32" else ("fp16" if precision == "fp16" else "bf16")


@dataclass(frozen=True)
class Architecture:
    """What the arithmetic needs. `head_dim` defaults to hidden / heads, as in transformers' configs."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    intermediate_size: int | None = None
    vocab_size: int | None = None
    head_dim: int | None = None
    tied_embeddings: bool = False
    moe_experts_total: int | None = None

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_dense(self) -> bool:
        return not self.moe_experts_total or self.moe_experts_total <= 1


class ArchitectureRecord(Protocol):
    """Anything that carries a model's architecture columns: a model row, or a row of selected columns."""

    @property
    def hidden_size(self) -> int | None: ...
    @property
    def num_layers(self) -> int | None: ...
    @property
    def num_attention_heads(self) -> int | None: ...
    @property
    def num_kv_heads(self) -> int | None: ...
    @property
    def intermediate_size(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def head_dim(self) -> int | None: ...
    @property
    def tied_embeddings(self) -> bool | None: ...
    @property
    def moe_experts_total(self) -> int | None: ...


def architecture_of(record: ArchitectureRecord) -> Architecture | None:
    """The architecture a record states, or None while hidden size, layers or heads are unknown."""
    hidden, layers, heads, kv_heads = (
        record.hidden_size,
        record.num_layers,
        record.num_attention_heads,
        record.num_kv_heads,
    )
    if hidden is None or layers is None or heads is None or kv_heads is None:
        return None
    return Architecture(
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=record.intermediate_size,
        vocab_size=record.vocab_size,
        head_dim=record.head_dim,
        tied_embeddings=bool(record.tied_embeddings),
        moe_experts_total=record.moe_experts_total,
    )


def lora_trainable_parameters(arch: Architecture, rank: int) -> int:
    """Adapter parameters for rank-`rank` LoRA on q, k, v, o of every layer: r x (in + out) per matrix."""
    d, head_dim = arch.hidden_size, arch.resolved_head_dim
    q_out, kv_out = arch.num_attention_heads * head_dim, arch.num_kv_heads * head_dim
    per_layer = rank * ((d + q_out) + 2 * (d + kv_out) + (q_out + d))
    return arch.num_layers * per_layer


def qlora_base_bytes(parameters: int) -> int:
    return parameters * 4127 // 8000


def accelerators_needed(total_bytes: int, memory_bytes: int) -> int:
    return -(-total_bytes // memory_bytes)
