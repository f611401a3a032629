"""The hardware arithmetic: exact parameter counts from architecture, bytes per precision, KV cache, training."""

from dataclasses import replace
from typing import Any

import pytest

from corral.catalog.loader import catalog_data
from corral.evaluations.requirements import evaluation_memory
from corral.hardware import estimator, parameters
from corral.hardware.catalog import GIB, accelerators
from corral.hardware.estimator import Architecture
from corral.hardware.parameters import dense_parameter_count
from corral.tables import Model

PRESETS = catalog_data()["architectures"]  # the shipped configs' figures, as the catalog records them
LLAMA_31_8B = Architecture(4096, 32, 32, 8, intermediate_size=14336, vocab_size=128256)
LLAMA_31_405B = Architecture(16384, 126, 128, 8, intermediate_size=53248, vocab_size=128256)


@pytest.mark.parametrize(
    ("arch", "legacy", "expected"),
    [
        (LLAMA_31_8B, False, 8_030_261_248),
        (LLAMA_31_405B, False, 405_853_388_800),
        (Architecture(8192, 80, 64, 8, intermediate_size=28672, vocab_size=128256), False, 70_553_706_496),
        (
            Architecture(2048, 16, 32, 8, intermediate_size=8192, vocab_size=128256, tied_embeddings=True),
            False,
            1_235_814_400,
        ),
        (
            Architecture(3072, 28, 24, 8, intermediate_size=8192, vocab_size=128256, tied_embeddings=True),
            False,
            3_212_749_824,
        ),
        (Architecture(4096, 32, 32, 32, intermediate_size=11008, vocab_size=32000), True, 6_738_417_664),
        (Architecture(5120, 40, 40, 40, intermediate_size=13824, vocab_size=32000), True, 13_015_866_880),
        (Architecture(8192, 80, 64, 8, intermediate_size=28672, vocab_size=32000), True, 68_976_653_312),
    ],
)
def test_parameter_counts_follow_from_architecture(arch: Architecture, legacy: bool, expected: int) -> None:
    assert dense_parameter_count(arch, legacy_rotary_buffers=legacy) == expected


def test_405b_has_eight_kv_heads() -> None:
    sixteen = Architecture(16384, 126, 128, 16, intermediate_size=53248, vocab_size=128256)
    assert dense_parameter_count(sixteen) - dense_parameter_count(LLAMA_31_405B) == 4_227_858_432


def test_weight_bytes_per_precision() -> None:
    params = 8_030_261_248
    assert estimator.weight_bytes(params, "fp32") == params * 4
    assert estimator.weight_bytes(params, "bf16") == params * 2
    assert estimator.weight_bytes(params, "fp16") == params * 2
    assert estimator.weight_bytes(params, "fp8") == params
    assert estimator.weight_bytes(params, "int8") == params
    assert estimator.weight_bytes(params, "int4") == params // 2


def test_kv_cache_uses_the_real_kv_head_count() -> None:
    # layers x KV heads x head dim x 2 (K, V) x 2 bytes: 32 x 8 x 128 x 2 x 2 = 131,072 bytes per token.
    assert estimator.kv_cache_bytes(32, 8, 128, 1, 1, "bf16") == 131_072
    assert estimator.kv_cache_bytes(32, 8, 128, 131_072, 1, "bf16") == 16 * GIB
    assert estimator.kv_cache_bytes(32, 8, 128, 4096, 4, "fp32") == 4 * 4096 * 131_072 * 2
    # Without GQA (32 KV heads, as Llama 2 7B) the cache is four times larger.
    assert estimator.kv_cache_bytes(32, 32, 128, 1, 1, "bf16") == 4 * 131_072


def test_overhead_and_device_counts() -> None:
    assert estimator.with_overhead(1000) == 1200
    h100 = accelerators()["nvidia-h100-80gb"].memory_bytes
    assert h100 == 80 * GIB
    assert estimator.accelerators_needed(h100, h100) == 1
    assert estimator.accelerators_needed(h100 + 1, h100) == 2


def test_lora_parameters_for_llama_31_8b_rank_16() -> None:
    # q: 16 x (4096 + 4096), k and v: 16 x (4096 + 1024) each, o: 16 x (4096 + 4096), over 32 layers.
    per_layer = 16 * (8192 + 2 * 5120 + 8192)
    assert estimator.lora_trainable_parameters(LLAMA_31_8B, 16) == 32 * per_layer == 13_631_488


def test_accelerator_catalog_has_the_required_devices() -> None:
    wanted = {
        "nvidia-h100-80gb",
        "nvidia-h200-141gb",
        "nvidia-a100-40gb",
        "nvidia-a100-80gb",
        "nvidia-l40s",
        "nvidia-l4",
        "nvidia-a10g",
        "nvidia-rtx-4090",
        "amd-mi300x",
        "amd-mi325x",
        "intel-gaudi-3",
    }
    catalog = accelerators()
    assert wanted <= set(catalog)
    assert catalog["amd-mi300x"].memory_bytes == 192 * GIB


def test_bytes_are_whole_integers_rounded_down() -> None:
    # Three int4 parameters are 1.5 bytes: the estimator counts 1, and always returns an int.
    assert estimator.weight_bytes(3, "int4") == 1
    assert type(estimator.weight_bytes(3, "int4")) is int
    assert estimator.kv_cache_bytes(1, 1, 1, 1, 1, "int4") == 1
    assert type(estimator.kv_cache_bytes(1, 1, 1, 1, 1, "int4")) is int
    assert estimator.qlora_base_bytes(8_000_000_001) == 4_127_000_000  # 4.127 bits per parameter, rounded down
    assert estimator.qlora_base_bytes(7_999) == 4_126
    legacy = dense_parameter_count(
        Architecture(4096, 32, 32, 32, intermediate_size=11008, vocab_size=32000), legacy_rotary_buffers=True
    )
    assert type(legacy) is int


@pytest.mark.parametrize("missing", [{"intermediate_size": None}, {"vocab_size": None}])
def test_counting_parameters_needs_both_mlp_and_vocabulary_sizes(missing: dict[str, None]) -> None:
    arch = Architecture(4096, 32, 32, 8, **({"intermediate_size": 14336, "vocab_size": 128256} | missing))
    with pytest.raises(ValueError, match=r"^intermediate_size and vocab_size are needed to count parameters$"):
        dense_parameter_count(arch)


@pytest.mark.parametrize(
    ("precision", "kv_precision"),
    [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp8", "bf16"), ("int8", "bf16"), ("int4", "bf16")],
)
def test_kv_cache_stays_at_16_bits_when_only_weights_are_quantized(precision: str, kv_precision: str) -> None:
    assert estimator.default_kv_precision(precision) == kv_precision


LLAMA_2_70B = Architecture(8192, 80, 64, 8, intermediate_size=28672, vocab_size=32000)


def test_largest_piece_is_one_layer_with_its_kv_cache_when_layers_outweigh_the_embedding() -> None:
    params = dense_parameter_count(LLAMA_2_70B)
    weights, kv = params * 2, estimator.kv_cache_bytes(80, 8, 128, 4096, 1, "bf16")
    embedding = 32000 * 8192 * 2  # untied: the input embedding and the lm_head are two such matrices
    layer = (weights - 2 * embedding) // 80 + kv // 80
    assert layer > embedding
    assert estimator.largest_piece_bytes(LLAMA_2_70B, weights, kv, "bf16") == layer + layer * 20 // 100


def test_largest_piece_is_the_embedding_when_it_outweighs_a_layer() -> None:
    params = dense_parameter_count(LLAMA_31_8B)
    weights, kv = params * 2, estimator.kv_cache_bytes(32, 8, 128, 4096, 1, "bf16")
    embedding = 128256 * 4096 * 2
    assert (weights - 2 * embedding) // 32 + kv // 32 < embedding
    assert estimator.largest_piece_bytes(LLAMA_31_8B, weights, kv, "bf16") == embedding + embedding * 20 // 100
    # At int4 the embedding is a quarter of that, and still the largest piece.
    int4 = estimator.largest_piece_bytes(LLAMA_31_8B, params // 2, kv, "int4")
    assert int4 == embedding // 4 + (embedding // 4) * 20 // 100


def test_tied_embeddings_are_counted_once_when_the_layers_are_split_off() -> None:
    # Llama 3.2 3B ties its embeddings: only one matrix comes off the weights before dividing by the layers.
    tied = Architecture(3072, 28, 24, 8, intermediate_size=8192, vocab_size=128256, tied_embeddings=True)
    untied = Architecture(3072, 28, 24, 8, intermediate_size=8192, vocab_size=128256)
    weights = 24 * 10**9  # more than the real model, so that a layer outweighs the embedding
    embedding = 128256 * 3072 * 2
    assert estimator.largest_piece_bytes(tied, weights, 0, "bf16") == int((weights - embedding) // 28 * 1.2)
    assert estimator.largest_piece_bytes(untied, weights, 0, "bf16") == int((weights - 2 * embedding) // 28 * 1.2)


def test_largest_piece_without_a_vocabulary_and_with_fewer_weights_than_embeddings() -> None:
    no_vocab = Architecture(1000, 10, 10, 10)
    assert estimator.largest_piece_bytes(no_vocab, 10_000, 500, "bf16") == (1000 + 50) * 12 // 10
    tiny = Architecture(1000, 10, 10, 10, vocab_size=100)  # embedding 200,000 bytes: more than all the weights
    assert estimator.largest_piece_bytes(tiny, 1_000, 0, "bf16") == 240_000
    assert estimator.largest_piece_bytes(Architecture(10, 10, 1, 1, vocab_size=1), 5, 0, "bf16") == 24
    assert estimator.largest_piece_bytes(Architecture(10, 10, 1, 1, vocab_size=1), 5, 1000, "bf16") == 120


def llama_model(**fields: object) -> Model:
    """Llama 3.1 8B as its catalog row records it; not stored, `evaluation_memory` only reads the fields."""
    known: dict[str, object] = {
        "parameter_count": 8_030_261_248,
        "context_length": 131_072,
        "hidden_size": 4096,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "head_dim": None,
        "tied_embeddings": False,
        "moe_experts_total": None,
    }
    return Model(**(known | fields))


def test_evaluation_memory_is_weights_and_a_kv_cache_for_the_suite_context() -> None:
    need = evaluation_memory(llama_model(), precision="bf16", suite_context_tokens=4096)
    weights, kv = 8_030_261_248 * 2, 2 * 32 * 8 * 128 * 2 * 4096  # bf16 weights; K and V at bf16 for 4096 tokens
    assert need.total_bytes == (weights + kv) * 12 // 10
    embedding = 128256 * 4096 * 2
    assert need.device_bytes == embedding * 12 // 10
    assert need.context_tokens == 4096
    assert need.notes == ("Batch size 1 for the KV cache; `auto` grows into spare memory.",)


def test_evaluation_memory_caps_the_context_at_the_model_own_and_keeps_the_kv_cache_at_16_bits() -> None:
    need = evaluation_memory(llama_model(context_length=2048), precision="int4", suite_context_tokens=8192)
    assert need.context_tokens == 2048
    kv = 2 * 32 * 8 * 128 * 2 * 2048  # bf16 K and V even though the weights are int4
    assert need.total_bytes == (8_030_261_248 // 2 + kv) * 12 // 10
    unknown_context = evaluation_memory(llama_model(context_length=None), precision="bf16", suite_context_tokens=8192)
    assert unknown_context.context_tokens == 8192
    fp32 = evaluation_memory(llama_model(), precision="fp32", suite_context_tokens=1024)
    assert fp32.total_bytes == (8_030_261_248 * 4 + 2 * 32 * 8 * 128 * 4 * 1024) * 12 // 10


def test_evaluation_memory_device_figure_never_exceeds_the_whole() -> None:
    # A toy model whose embedding is larger than the model: the piece would be more than the whole.
    toy = llama_model(parameter_count=1000, hidden_size=64, num_layers=2, num_attention_heads=4, num_kv_heads=4)
    need = evaluation_memory(toy, precision="bf16", suite_context_tokens=16)
    assert need.device_bytes == need.total_bytes == (2000 + 2 * 2 * 4 * 16 * 2 * 16) * 12 // 10
    big = evaluation_memory(llama_model(), precision="bf16", suite_context_tokens=16)
    assert big.device_bytes < big.total_bytes


def test_evaluation_memory_without_an_architecture_or_a_parameter_count() -> None:
    weights_only = evaluation_memory(llama_model(num_kv_heads=None), precision="bf16", suite_context_tokens=4096)
    assert weights_only.total_bytes == weights_only.device_bytes == 8_030_261_248 * 2 * 12 // 10
    assert weights_only.notes == ("Architecture unknown: weights only, on a single device.",)
    assert weights_only.context_tokens == 4096
    unknown = evaluation_memory(llama_model(parameter_count=None), precision="bf16", suite_context_tokens=4096)
    assert (unknown.total_bytes, unknown.device_bytes, unknown.context_tokens) == (0, 0, 4096)
    assert unknown.notes == ("Parameter count unknown: any runner may take it (sync it from the Hub).",)


def test_rotary_buffers_are_counted_only_when_asked_and_one_layer_models_keep_a_zero_floor() -> None:
    assert dense_parameter_count(LLAMA_31_8B) == 8_030_261_248  # the default: no legacy rotary buffers
    # One layer: nothing left after the embeddings counts as 0 bytes, so the KV cache alone is the piece.
    one_layer = Architecture(10, 1, 1, 1, vocab_size=1)
    assert estimator.largest_piece_bytes(one_layer, 5, 1000, "bf16") == 1200


LLAMA4_VISION = PRESETS["llama4-scout"]["components"]["vision"]
SCOUT = Architecture(5120, 48, 40, 8, intermediate_size=8192, vocab_size=202048, head_dim=128, moe_experts_total=16)


def scout_components(**changes: object) -> Any:
    return {
        "design": "llama4",
        "dense_intermediate_size": 16384,
        "moe_layer_step": 1,
        "vision": LLAMA4_VISION,
    } | changes


def test_llama4_counts_follow_the_layer_schedule_and_the_image_encoder() -> None:
    assert parameters.parameter_count(SCOUT, scout_components()) == 108_641_793_536
    text_only = parameters.parameter_count(SCOUT, {k: v for k, v in scout_components().items() if k != "vision"})
    assert 108_641_793_536 - text_only == 871_932_416
    # Every second layer a MoE layer: 24 of them hold experts, 24 a dense MLP of 16,384.
    moe_layer = 16 * 3 * 5120 * 8192 + 5120 * 16 + 3 * 5120 * 8192
    dense_layer = 3 * 5120 * 16384
    halved = parameters.parameter_count(SCOUT, scout_components(moe_layer_step=2))
    assert 108_641_793_536 - halved == 24 * (moe_layer - dense_layer)
    # Step 0: no MoE layer, whatever the expert count says (Llama Guard 4 is such a dense checkpoint).
    dense = replace(SCOUT, moe_experts_total=None)
    assert parameters.parameter_count(dense, scout_components(moe_layer_step=0, dense_intermediate_size=8192)) == (
        12_001_097_216
    )
    assert parameters.active_parameter_count(dense, scout_components(moe_layer_step=0), 1) is None
    # Active: the 15 routed experts a token skips in each of 48 layers are not counted, nor the image encoder.
    assert parameters.active_parameter_count(SCOUT, scout_components(), 1) == text_only - 48 * 15 * 3 * 5120 * 8192
    assert parameters.active_parameter_count(SCOUT, scout_components(), 2) == text_only - 48 * 14 * 3 * 5120 * 8192
    assert parameters.active_parameter_count(LLAMA_31_8B, None, 1) is None


def test_a_mixture_of_experts_is_counted_only_with_its_layout() -> None:
    with pytest.raises(ValueError, match="components"):
        parameters.parameter_count(SCOUT)
    with pytest.raises(ValueError, match="components"):
        parameters.parameter_count(SCOUT, {"design": "llama"})


FP8_MLP: Any = {"method": "fbgemm_fp8", "precision": "fp8", "weights": "mlp", "kept_layers": [0, 125], "scale_bytes": 4}


def test_a_quantized_release_is_stored_as_its_quantization_says() -> None:
    params = 405_853_388_800
    stored = parameters.stored_weights(LLAMA_31_405B, {"design": "llama", "quantization": FP8_MLP}, params)
    assert stored is not None
    mlp = 3 * 16384 * 53248
    assert (stored.quantized, stored.scales, stored.unquantized) == (
        124 * mlp,
        124 * (2 * 53248 + 16384),
        params - 124 * mlp,
    )
    assert stored.bytes == 487_229_259_776
    int8_bf16_scales = {"design": "llama", "quantization": FP8_MLP | {"precision": "int8", "scale_bytes": 2}}
    int8 = parameters.stored_weights(LLAMA_31_405B, int8_bf16_scales, params)
    assert int8 is not None
    assert int8.bytes == 124 * mlp + 124 * (2 * 53248 + 16384) * 2 + (params - 124 * mlp) * 2
    kept_none = parameters.stored_weights(
        LLAMA_31_405B, {"design": "llama", "quantization": FP8_MLP | {"kept_layers": []}}, params
    )
    assert kept_none is not None
    assert kept_none.quantized == 126 * mlp
    assert parameters.stored_weights(LLAMA_31_405B, {"design": "llama"}, params) is None
    assert parameters.stored_weights(LLAMA_31_405B, None, params) is None
    # Routed experts: every expert of the MoE layers not kept, one scale per output row of each.
    experts = FP8_MLP | {"weights": "routed_experts", "kept_layers": [0, 47], "scale_bytes": 2}
    scout = parameters.stored_weights(SCOUT, scout_components(quantization=experts), 108_641_793_536)
    assert scout is not None
    assert (scout.quantized, scout.scales) == (46 * 16 * 3 * 5120 * 8192, 46 * 16 * (2 * 8192 + 5120))


def test_a_quantization_the_arithmetic_cannot_count_is_named() -> None:
    problem = parameters.quantization_problem
    assert problem(LLAMA_31_405B, {"design": "llama", "quantization": FP8_MLP}) is None
    assert problem(LLAMA_31_405B, {"design": "llama"}) is None
    beyond = problem(LLAMA_31_405B, {"design": "llama", "quantization": FP8_MLP | {"kept_layers": [126]}})
    assert beyond == "quantization.kept_layers name a layer beyond num_layers (126)"
    routed = "quantization.weights 'routed_experts' needs design 'llama4' with moe_experts_total"
    mlp = "quantization.weights 'mlp' applies to design 'llama'"
    assert problem(LLAMA_31_405B, {"design": "llama", "quantization": FP8_MLP | {"kept_layers": [125]}}) is None
    experts = FP8_MLP | {"weights": "routed_experts", "kept_layers": [0]}
    assert problem(LLAMA_31_405B, {"design": "llama", "quantization": experts}) == routed
    dense4 = replace(SCOUT, moe_experts_total=None)
    assert problem(dense4, scout_components(quantization=experts)) == routed
    assert problem(SCOUT, scout_components(quantization=experts)) is None
    assert problem(SCOUT, scout_components(quantization=FP8_MLP)) == mlp


def test_every_design_needs_both_sizes_and_counts_in_whole_integers() -> None:
    for missing in ({"intermediate_size": None}, {"vocab_size": None}):
        with pytest.raises(ValueError, match=r"^intermediate_size and vocab_size are needed to count parameters$"):
            parameters.parameter_count(replace(SCOUT, **missing), scout_components())
    with pytest.raises(
        ValueError, match=r"^a mixture of experts needs its components \(design llama4\) to be counted$"
    ):
        parameters.parameter_count(SCOUT)
    assert parameters.parameter_count(LLAMA_31_8B) == 8_030_261_248  # no rotary buffers unless asked
    counts = [
        parameters.parameter_count(SCOUT, scout_components()),
        parameters.parameter_count(
            Architecture(4096, 40, 32, 8, intermediate_size=14336, vocab_size=128256),
            {"design": "mllama", "cross_attention_layers": 8, "vision": MLLAMA_VISION},
        ),
    ]
    assert all(type(count) is int for count in counts)  # patches: image // patch, never a fraction


MLLAMA_VISION = PRESETS["llama3.2-11b-vision"]["components"]["vision"]


def test_llama4_without_moe_layers_is_dense_at_its_dense_width() -> None:
    """MoE step 0 lays out no MoE layer even where experts are stated: every layer has the dense MLP."""
    text = {"design": "llama4", "dense_intermediate_size": 16384, "moe_layer_step": 0}
    per_layer = 2 * 5120 * 40 * 128 + 2 * 5120 * 8 * 128 + 3 * 5120 * 16384 + 2 * 5120
    expected = 2 * 202048 * 5120 + 5120 + 48 * per_layer
    assert parameters.parameter_count(SCOUT, text) == expected
    assert parameters.parameter_count(replace(SCOUT, moe_experts_total=None), text) == expected


def test_a_token_routed_to_every_expert_uses_them_all() -> None:
    text_only = {k: v for k, v in scout_components().items() if k != "vision"}
    assert parameters.active_parameter_count(SCOUT, scout_components(), 16) == parameters.parameter_count(
        SCOUT, text_only
    )
    assert parameters.active_parameter_count(SCOUT, scout_components(), 20) == parameters.parameter_count(
        SCOUT, text_only
    )


def test_routed_experts_are_quantized_only_where_there_are_experts() -> None:
    experts = FP8_MLP | {"weights": "routed_experts", "kept_layers": [0]}
    dense4 = replace(SCOUT, moe_experts_total=None)
    for arch, components in (
        (LLAMA_31_405B, {"design": "llama", "quantization": experts}),
        (dense4, scout_components(quantization=experts)),
    ):
        with pytest.raises(ValueError, match=r"^routed experts are quantized only in a llama4 mixture of experts$"):
            parameters.stored_weights(arch, components, 1)


def test_a_release_with_no_recorded_dtype_is_stored_at_bf16() -> None:
    assert estimator.stored_precision(None) == estimator.stored_precision("") == "bf16"
    assert estimator.stored_precision("float16") == "fp16"
    assert estimator.stored_precision("fp8") == "fp8"


def test_an_evaluation_of_a_quantized_release_is_sized_as_stored() -> None:
    shape = {
        "parameter_count": 405_853_388_800,
        "hidden_size": 16384,
        "num_layers": 126,
        "num_attention_heads": 128,
        "num_kv_heads": 8,
        "head_dim": 128,
        "intermediate_size": 53248,
        "vocab_size": 128256,
        "context_length": 131072,
    }
    kv = 2 * 126 * 8 * 128 * 4096 * 2
    fp8 = Model(**shape, default_dtype="fp8", stored_weight_bytes=487_229_259_776)
    assert evaluation_memory(fp8, precision="fp8", suite_context_tokens=4096).total_bytes == estimator.with_overhead(
        487_229_259_776 + kv
    )
    assert evaluation_memory(fp8, precision="bf16", suite_context_tokens=4096).total_bytes == estimator.with_overhead(
        2 * 405_853_388_800 + kv
    )
    # No recorded dtype: the stored size is the bf16 one.
    plain = Model(**shape, default_dtype=None, stored_weight_bytes=800_000_000_000)
    assert evaluation_memory(plain, precision="bf16", suite_context_tokens=4096).total_bytes == estimator.with_overhead(
        800_000_000_000 + kv
    )
