"""Exact parameter counts by arithmetic, from an architecture and its components, as transformers builds each design.

Every tensor a checkpoint stores is counted once: `llama` (LlamaForCausalLM), `mllama` (Llama 3.2 Vision:
MllamaForConditionalGeneration) and `llama4` (Llama4ForConditionalGeneration, mixtures of experts and the dense
Llama Guard 4 alike). Module shapes follow transformers' modeling_llama.py, modeling_mllama.py and
modeling_llama4.py; tests/test_catalog.py holds every shipped count to this arithmetic. How a quantized release
stores its weights (its fp8 tensors, their scales and the layers kept in 16 bits) is counted here too.
"""

from dataclasses import dataclass

from corral.documents import (
    Llama4Components,
    Llama4VisionEncoder,
    MllamaComponents,
    MllamaVisionEncoder,
    ModelComponents,
    Quantization,
)
from corral.hardware.estimator import PRECISION_BITS, UNQUANTIZED_PRECISION, Architecture

UNQUANTIZED_BYTES = PRECISION_BITS[UNQUANTIZED_PRECISION] // 8
MLLAMA_IMAGE_TOKENS = 8  # MllamaTextModel embeds vocab_size + 8 rows: the image tokens


def dense_parameter_count(arch: Architecture, *, legacy_rotary_buffers: bool = False) -> int:
    """Exact parameters of a dense Llama-architecture decoder (SwiGLU MLP, RMSNorm, no biases).

    embeddings + layers x (q + k + v + o + gate/up/down + 2 norms) + final norm + lm_head (unless tied).
    `legacy_rotary_buffers`: Llama 2 checkpoints also saved each layer's rotary inv_freq (head_dim / 2 values).
    """
    width, vocab = _intermediate(arch), _vocab(arch)
    per_layer = _attention(arch) + 3 * arch.hidden_size * width + 2 * arch.hidden_size
    per_layer += arch.resolved_head_dim // 2 if legacy_rotary_buffers else 0
    return _embeddings(arch, vocab) + arch.num_layers * per_layer


def parameter_count(
    arch: Architecture, components: ModelComponents | None = None, *, legacy_rotary_buffers: bool = False
) -> int:
    """Every parameter of the checkpoint: the decoder, and the image encoder with its projector where there is one."""
    if components is None or components["design"] == "llama":
        if not arch.is_dense:
            raise ValueError("a mixture of experts needs its components (design llama4) to be counted")
        return dense_parameter_count(arch, legacy_rotary_buffers=legacy_rotary_buffers)
    if components["design"] == "mllama":
        return _mllama_text(arch, components) + _mllama_vision(components["vision"], arch.hidden_size)
    vision = components.get("vision")
    return _llama4_text(arch, components) + (_llama4_vision(vision, arch.hidden_size) if vision else 0)


def active_parameter_count(
    arch: Architecture, components: ModelComponents | None, experts_per_token: int
) -> int | None:
    """What one text token passes through in a mixture of experts: all but the routed experts it is not sent to, and
    the image encoder (None for a model with no routed experts)."""
    if components is None or components["design"] != "llama4" or not arch.moe_experts_total:
        return None
    unused = max(arch.moe_experts_total - experts_per_token, 0) * _expert(arch)
    return _llama4_text(arch, components) - len(_moe_layers(arch, components)) * unused


@dataclass(frozen=True)
class StoredWeights:
    """A quantized release's weights as stored: quantized parameters, their scales, and the rest in bf16."""

    quantized: int
    scales: int
    unquantized: int
    precision: str
    scale_bytes: int

    @property
    def bytes(self) -> int:
        quantized_bytes = self.quantized * PRECISION_BITS[self.precision] // 8
        return quantized_bytes + self.scales * self.scale_bytes + self.unquantized * UNQUANTIZED_BYTES


def stored_weights(arch: Architecture, components: ModelComponents | None, parameters: int) -> StoredWeights | None:
    """How a release with a quantization stores its `parameters` (None when it states no quantization)."""
    quantization = components.get("quantization") if components else None
    if components is None or quantization is None:
        return None
    quantized, scales = _quantized(arch, components, quantization)
    return StoredWeights(
        quantized=quantized,
        scales=scales,
        unquantized=parameters - quantized,
        precision=quantization["precision"],
        scale_bytes=quantization["scale_bytes"],
    )


def quantization_problem(arch: Architecture, components: ModelComponents) -> str | None:
    """Why a stated quantization cannot be counted on this architecture (None when it can)."""
    quantization = components.get("quantization")
    if quantization is None:
        return None
    if quantization["weights"] == "mlp" and components["design"] != "llama":
        return "quantization.weights 'mlp' applies to design 'llama'"
    if quantization["weights"] == "routed_experts" and (components["design"] != "llama4" or not arch.moe_experts_total):
        return "quantization.weights 'routed_experts' needs design 'llama4' with moe_experts_total"
    if any(layer >= arch.num_layers for layer in quantization["kept_layers"]):
        return f"quantization.kept_layers name a layer beyond num_layers ({arch.num_layers})"
    return None


def _quantized(arch: Architecture, components: ModelComponents, quantization: Quantization) -> tuple[int, int]:
    """(quantized parameters, per-row scales) over the layers that are not kept in 16 bits."""
    kept = set(quantization["kept_layers"])
    d = arch.hidden_size
    if quantization["weights"] == "mlp":  # gate and up (width rows each), down (hidden rows)
        width = _intermediate(arch)
        layers = [layer for layer in range(arch.num_layers) if layer not in kept]
        return len(layers) * 3 * d * width, len(layers) * (2 * width + d)
    if components["design"] != "llama4" or not arch.moe_experts_total:
        raise ValueError("routed experts are quantized only in a llama4 mixture of experts")
    experts, width = arch.moe_experts_total, _intermediate(arch)
    layers = [layer for layer in _moe_layers(arch, components) if layer not in kept]
    return len(layers) * experts * _expert(arch), len(layers) * experts * (2 * width + d)


def _attention(arch: Architecture) -> int:
    """q, k, v and o projections, no biases (grouped-query: K and V have num_kv_heads heads)."""
    d, head_dim = arch.hidden_size, arch.resolved_head_dim
    return 2 * d * arch.num_attention_heads * head_dim + 2 * d * arch.num_kv_heads * head_dim


def _embeddings(arch: Architecture, rows: int) -> int:
    """The input embeddings (`rows` of them), the final norm, and the output head unless it is tied."""
    d = arch.hidden_size
    return rows * d + d + (0 if arch.tied_embeddings else _vocab(arch) * d)


SIZES_NEEDED = "intermediate_size and vocab_size are needed to count parameters"


def _sizes(arch: Architecture) -> tuple[int, int]:
    """(intermediate_size, vocab_size): every design's count needs both."""
    if arch.intermediate_size is None or arch.vocab_size is None:
        raise ValueError(SIZES_NEEDED)
    return arch.intermediate_size, arch.vocab_size


def _vocab(arch: Architecture) -> int:
    return _sizes(arch)[1]


def _intermediate(arch: Architecture) -> int:
    return _sizes(arch)[0]


def _mllama_text(arch: Architecture, components: MllamaComponents) -> int:
    """Self-attention layers as in Llama; cross-attention layers add a q and k norm (head_dim each) and two gates."""
    d, cross = arch.hidden_size, components["cross_attention_layers"]
    layer = _attention(arch) + 3 * d * _intermediate(arch) + 2 * d
    cross_extra = 2 * arch.resolved_head_dim + 2
    return _embeddings(arch, _vocab(arch) + MLLAMA_IMAGE_TOKENS) + arch.num_layers * layer + cross * cross_extra


def _patches(vision: MllamaVisionEncoder | Llama4VisionEncoder) -> int:
    """Positions an image encoder embeds: (image // patch)^2 patches and the class token."""
    return (vision["image_size"] // vision["patch_size"]) ** 2 + 1


def _patch_embedding(vision: MllamaVisionEncoder | Llama4VisionEncoder) -> int:
    """A patch's pixels to the encoder's width, no bias (Mllama's Conv2d, Llama 4's unfold and linear alike)."""
    return vision["num_channels"] * vision["patch_size"] ** 2 * vision["hidden_size"]


def _vision_layer(vision: MllamaVisionEncoder | Llama4VisionEncoder, *, attention_bias: bool) -> int:
    """q, k, v, o (with biases in Llama 4's encoder); fc1 and fc2 with biases; two LayerNorms with biases."""
    h, f = vision["hidden_size"], vision["intermediate_size"]
    return 4 * (h * h + (h if attention_bias else 0)) + (h * f + f) + (f * h + h) + 4 * h


def _mllama_vision(vision: MllamaVisionEncoder, text_hidden: int) -> int:
    """MllamaVisionModel and the projector (vision_output_dim -> text hidden, with a bias)."""
    h, tiles, patches = vision["hidden_size"], vision["max_num_tiles"], _patches(vision)
    ratio_rows = vision["aspect_ratios"] + 1  # nn.Embedding(max_aspect_ratio_id + 1, ...)
    positions = patches * h + 1 + ratio_rows * tiles * patches * h  # gated: embedding, gate, tile embedding
    tile_positions = 2 * (ratio_rows * tiles * h + 1)  # pre- and post-tile, each with its gate
    layer = _vision_layer(vision, attention_bias=False)
    encoder = vision["num_layers"] * layer + vision["num_global_layers"] * (layer + 2)  # global: two gates
    tower = _patch_embedding(vision) + h + positions + tile_positions + 2 * 2 * h + encoder  # h: class embedding
    return tower + vision["output_dim"] * text_hidden + text_hidden


def _moe_layers(arch: Architecture, components: Llama4Components) -> range:
    """Llama4TextConfig: every step-th layer from step - 1 is a mixture of experts (none when step is 0 or there
    are no experts)."""
    step = components["moe_layer_step"]
    if step == 0 or not arch.moe_experts_total:
        return range(0)
    return range(step - 1, arch.num_layers, step)


def _expert(arch: Architecture) -> int:
    """One routed expert: gate, up and down at intermediate_size (the shared expert has the same shape)."""
    return 3 * arch.hidden_size * _intermediate(arch)


def _llama4_text(arch: Architecture, components: Llama4Components) -> int:
    """Attention and two norms in every layer; a MoE layer holds its routed experts, a router and a shared expert,
    a dense layer an MLP of dense_intermediate_size. The qk norm has no weights."""
    d, experts = arch.hidden_size, arch.moe_experts_total or 0
    moe_layers = len(_moe_layers(arch, components))
    moe = experts * _expert(arch) + d * experts + _expert(arch)
    dense = 3 * d * components["dense_intermediate_size"]
    layers = arch.num_layers * (_attention(arch) + 2 * d) + moe_layers * moe + (arch.num_layers - moe_layers) * dense
    return _embeddings(arch, _vocab(arch)) + layers


def _llama4_vision(vision: Llama4VisionEncoder, text_hidden: int) -> int:
    """Llama4VisionModel, its pixel-shuffle adapter, and the projector (vision_output_dim -> text hidden, no bias)."""
    h = vision["hidden_size"]
    layers = vision["num_layers"] * _vision_layer(vision, attention_bias=True)
    adapter = vision["intermediate_size"] * vision["projector_input_dim"] + vision["projector_output_dim"] ** 2
    tower = _patch_embedding(vision) + h + _patches(vision) * h + 2 * 2 * h + layers + adapter  # fc1 reads f
    return tower + vision["output_dim"] * text_hidden
