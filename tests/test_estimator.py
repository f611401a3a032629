"""The hardware arithmetic: exact parameter counts from architecture, bytes per precision, KV cache, training."""

import pytest

from app.catalog.loader import catalog_data, model_entries, preset_parameter_count
from app.hardware import estimator
from app.hardware.catalog import GIB, accelerators
from app.hardware.estimator import Architecture, dense_parameter_count

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


def test_every_exact_catalog_count_reproduces_by_arithmetic() -> None:
    checked = 0
    for entry in model_entries(catalog_data()):
        computed = preset_parameter_count(entry)
        if computed is None or entry.get("parameter_count") is None:
            continue
        assert computed == entry["parameter_count"], entry["repo_id"]
        checked += 1
    assert checked >= 20


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
