"""One fit rule (app/hardware/fit.py): its arithmetic on hand-worked figures, and the same answer from every place
that asks "does it fit" — model search, a model's requirements, `/v1/requirements`, the leaderboard's `fits_on`,
the model page, the queue's matching and the runner's placement — on both databases."""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.hardware import fit
from corral.hardware.estimator import Architecture
from corral.hardware.fit import Devices, MemoryNeed, Placement
from tests.support.evaluations import load_shipped_suites, make_runner, sha_of
from tests.test_scores import openllm_results

GIB = 2**30
GB = 10**9
L4, H100 = 24 * GIB, 80 * GIB


def test_the_need_is_weights_and_kv_cache_with_the_overhead_and_the_largest_piece() -> None:
    arch = Architecture(hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_heads=8, vocab_size=128256)
    need = fit.inference_need(arch, 8_030_261_248, precision="bf16", context_tokens=4096)
    weights, kv = 8_030_261_248 * 2, 2 * 32 * 8 * 128 * 2 * 4096
    assert need == MemoryNeed((weights + kv) * 12 // 10, 128256 * 4096 * 2 * 12 // 10, 4096)


def test_the_context_is_capped_at_the_model_own() -> None:
    assert fit.context_for(8192, 4096) == 4096
    assert fit.context_for(2048, 4096) == 2048
    assert fit.context_for(8192, None) == 8192


def test_devices_hold_a_need_when_together_they_hold_the_whole_and_each_the_largest_piece() -> None:
    need = MemoryNeed(total_bytes=100 * GIB, device_bytes=30 * GIB)
    assert fit.holds(need, Devices(50 * GIB, 2))
    assert not fit.holds(need, Devices(50 * GIB - 1, 2))
    assert fit.shortfalls(need, Devices(25 * GIB, 8)) == ["needs 30.0 GiB on one device, its largest has 25.0 GiB"]
    assert fit.shortfalls(need, Devices(30 * GIB, 3)) == ["needs 100.0 GiB of accelerator memory, has 90.0 GiB"]


def test_vllm_spreads_over_a_power_of_two_of_a_node_and_over_nodes_hf_over_every_gpu_of_one_machine() -> None:
    need = MemoryNeed(total_bytes=70 * GIB, device_bytes=10 * GIB)
    three = Devices(24 * GIB, 3)  # 72 GiB: hf may use all three, vllm only two (heads split in powers of two)
    assert fit.placement(need, three, "hf") == Placement(3)
    assert fit.placement(need, three, "vllm") is None
    assert fit.shortfalls(need, three, "vllm") == ["needs 70.0 GiB of accelerator memory, has 48.0 GiB"]
    two_nodes = Devices(24 * GIB, 2, nodes=2)
    assert fit.placement(need, two_nodes, "vllm") == Placement(2, 2)
    assert fit.placement(need, two_nodes, "hf") is None  # accelerate stays on one machine
    assert fit.placement(MemoryNeed(GIB, GIB), two_nodes, "vllm") == Placement(1, 1)  # the fewest devices


def test_llama_405b_in_bf16_needs_two_nodes_of_eight_80gb_gpus_and_one_of_h200() -> None:
    arch = Architecture(hidden_size=16384, num_layers=126, num_attention_heads=128, num_kv_heads=8, vocab_size=128256)
    need = fit.inference_need(arch, 405_853_388_800, precision="bf16", context_tokens=4096)
    assert fit.placement(need, Devices(H100, 8), "vllm") is None
    assert fit.placement(need, Devices(H100, 8, nodes=2), "vllm") == Placement(8, 2)
    assert fit.placement(need, Devices(141 * GIB, 8), "vllm") == Placement(8, 1)


def test_smaller_devices_beside_the_largest_count_for_hf_only() -> None:
    mixed = Devices.of_groups([(24 * GIB, 1), (80 * GIB, 2)])
    assert mixed == Devices(80 * GIB, 2, others=(24 * GIB,))
    need = MemoryNeed(total_bytes=180 * GIB, device_bytes=GIB)
    assert fit.placement(need, mixed, "hf") == Placement(3)
    assert fit.usable_bytes(mixed, "vllm") == 160 * GIB
    assert Devices.of_groups([]) == Devices(0, 0)


def test_devices_needed_counts_one_kind_and_none_when_one_cannot_take_the_largest_piece() -> None:
    assert fit.devices_needed(MemoryNeed(100 * GIB, 10 * GIB), L4) == 5
    assert fit.devices_needed(MemoryNeed(1, 1), L4) == 1
    assert fit.devices_needed(MemoryNeed(100 * GIB, 30 * GIB), L4) is None


# Two models built to tell the old, disagreeing answers apart (weights + 20 % alone; the whole without the piece).
KV_HEAVY = {  # every head keeps its own K/V: the KV cache at 4,096 tokens is 2 GiB
    "repo_id": "acme/kv-heavy",
    "hidden_size": 4096,
    "num_layers": 32,
    "num_attention_heads": 32,
    "num_kv_heads": 32,
    "vocab_size": 32000,
    "context_length": 4096,
    "parameter_count": 10 * GB,  # bf16 weights + 20 % = 22.4 GiB; with the KV cache 24.8 GiB
}
WIDE_VOCAB = {  # an embedding matrix of 21.4 GiB (25.6 GiB with the overhead): no 24 GiB device takes it
    "repo_id": "acme/wide-vocab",
    "hidden_size": 16384,
    "num_layers": 8,
    "num_attention_heads": 128,
    "num_kv_heads": 8,
    "vocab_size": 700_000,
    "context_length": 4096,
    "parameter_count": 30 * GB,  # the whole, 67.1 GiB, would fit on 4 x 24 GiB
}
CASES = [
    (KV_HEAVY, "nvidia-l4", 1, None),
    (KV_HEAVY, "nvidia-l4", 2, Placement(2)),
    (WIDE_VOCAB, "nvidia-l4", 4, None),
    (WIDE_VOCAB, "nvidia-h100-80gb", 1, Placement(1)),
]
MEMORY = {"nvidia-l4": L4, "nvidia-h100-80gb": H100}


def _architecture(model: dict[str, Any]) -> Architecture:
    return Architecture(
        hidden_size=model["hidden_size"],
        num_layers=model["num_layers"],
        num_attention_heads=model["num_attention_heads"],
        num_kv_heads=model["num_kv_heads"],
        vocab_size=model["vocab_size"],
    )


@pytest.mark.parametrize(("model", "accelerator", "count", "expected"), CASES)
def test_every_entry_point_gives_the_rule_answer(
    client: TestClient,
    admin_headers: dict[str, str],
    settings: Any,
    model: dict[str, Any],
    accelerator: str,
    count: int,
    expected: Placement | None,
) -> None:
    repo = model["repo_id"]
    need = fit.inference_need(_architecture(model), model["parameter_count"], precision="bf16", context_tokens=4096)
    assert fit.placement(need, Devices(MEMORY[accelerator], count)) == expected  # the rule itself
    fits = expected is not None
    created = client.post("/v1/models", json={**model, "kind": "base"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    sha = sha_of(repo)
    assert client.post(f"/v1/models/{repo}/revisions", json={"sha": sha}, headers=admin_headers).status_code == 201

    # Model search.
    search = client.get(
        "/v1/models",
        params={
            "fits_accelerator": accelerator,
            "fits_count": count,
            "fits_precision": "bf16",
            "fits_context_tokens": 4096,
            "q": repo,
        },
    )
    assert search.status_code == 200, search.text
    assert [item["repo_id"] for item in search.json()["items"]] == ([repo] if fits else [])

    # The model's requirements, and /v1/requirements on the same architecture.
    recorded = client.get(f"/v1/models/{repo}/requirements", params={"precision": "bf16", "context_tokens": 4096})
    ad_hoc = client.post(
        "/v1/requirements",
        json={
            **{key: model[key] for key in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads")},
            "vocab_size": model["vocab_size"],
            "parameter_count": model["parameter_count"],
            "precision": "bf16",
            "context_tokens": 4096,
        },
        headers=admin_headers,
    )
    for report in (recorded, ad_hoc):
        assert report.status_code == 200, report.text
        assert report.json()["inference"]["total"]["bytes"] == need.total_bytes
        [entry] = [item for item in report.json()["accelerators"] if item["accelerator"] == accelerator]
        needed = entry["count_needed"]
        assert (needed is not None and needed <= count) == fits
        assert entry["fits_on_one"] == (expected == Placement(1))

    # The queue: a runner of `count` such devices can (or can never) take an evaluation at the suite's context.
    load_shipped_suites(settings)
    _, runner_headers = make_runner(
        client, admin_headers, "fit-runner", memory_gib=MEMORY[accelerator] // GIB, count=count
    )
    requested = client.post(
        "/v1/evaluations",
        json={"model": repo, "revision": sha, "suite": "openllm-v2"},
        headers=admin_headers,
    )
    assert requested.status_code == (201 if fits else 409), requested.text
    if fits:
        claimed = client.post("/v1/runner/jobs/claim", headers=runner_headers)
        assert claimed.status_code == 201, claimed.text
        assert claimed.json()["placement"] == {"tensor_parallel": expected.tensor_parallel, "pipeline_parallel": 1}

    # The model page lists the runner among those that fit at bf16 and 4,096 tokens, or does not (other
    # precisions have rows of their own, where a smaller one may fit).
    page = client.get(f"/models/{repo}")
    assert page.status_code == 200
    assert "registered runners that fit (4,096 tokens)" in page.text
    bf16_row = re.search(r"<tr>\s*<td>bf16</td>.*?</tr>", page.text, re.DOTALL)
    assert bf16_row is not None
    assert ("fit-runner" in bf16_row.group(0)) == fits

    # The leaderboard at the suite's context (openllm-v2 sizes its KV cache for 4,096 tokens).
    imported = client.post(
        "/v1/results/import",
        json={"model": repo, "revision": sha, "suite": "openllm-v2", "results": openllm_results(0.5)},
        headers=admin_headers,
    )
    assert imported.status_code == 201, imported.text
    board = client.get("/v1/leaderboards/openllm-v2", params={"fits_on": accelerator, "fits_count": count})
    assert board.status_code == 200, board.text
    assert [row["model"] for row in board.json()["items"]] == ([repo] if fits else [])


# The rule rendered in SQL (model search) against the rule in Python, figure for figure, on both databases: tied and
# untied embeddings, an unknown vocabulary or architecture, a context under and over the asked one, one layer and
# many, every precision (the KV cache stays 16-bit under quantized weights), and devices sized at the exact edges;
# releases with a stored size, which counts at their own precision only (with 16-bit embeddings below 16 bits).
SQL_CASES = [
    # (parameters, hidden, layers, kv heads, head dim, vocab, tied, context length, stored dtype, stored bytes)
    (8_030_261_248, 4096, 32, 8, 128, 128256, False, 131072, None, None),
    (1_235_814_400, 2048, 16, 8, 64, 128256, True, 131072, "bfloat16", None),
    (6_738_415_616, 4096, 32, 32, 128, 32000, False, 2048, "float16", None),
    (70_553_706_496, 8192, 80, 8, 128, 128256, False, None, None, None),
    (5_000_000, 512, 1, 4, 64, None, False, 1024, None, None),  # no vocabulary: the embedding counts nothing
    (1_000, 4096, 1, 8, 128, 128256, True, 4096, None, None),  # fewer weights than the embedding: a layer holds nothing
    (3_000_000_000, None, None, None, None, None, None, None, None, None),  # architecture unknown: weights alone
    (
        10,
        4,
        1,
        1,
        1,
        8,
        False,
        1024,
        None,
        None,
    ),  # a toy whose embeddings outweigh its weights: the KV cache is the piece
    (405_853_388_800, 16384, 126, 8, 128, 128256, False, 131072, "fp8", 487_229_259_776),  # 405B FP8 as stored
    (8_030_261_248, 4096, 32, 8, 128, 128256, False, 131072, None, 5_700_000_000),  # no dtype: stored at bf16
    (70_553_706_496, 8192, 80, 8, 128, 128256, False, None, "float16", 39_000_000_000),  # a 4-bit pack run at fp16
    (3_000_000_000, None, None, None, None, None, None, None, "int8", 3_100_000_000),  # stored, architecture unknown
    (8_030_261_248, 4096, 32, 8, 128, 128256, False, 131072, "bfloat16", 15_000_000_000),  # stored at bf16, so named
    (1_235_814_400, 2048, 16, 8, 64, 128256, True, 131072, "float32", 4_900_000_000),  # stored at fp32: fp32 embeddings
]


def _row_of(case: tuple[Any, ...]) -> fit.ArchitectureColumns:
    """The case's figures as typed SQL values, NULL where unknown."""
    from sqlalchemy import BigInteger, Boolean, String, literal

    *figures, tied, context, dtype, stored = case
    return fit.ArchitectureColumns(
        *(literal(value, BigInteger()) for value in figures),
        tied_embeddings=literal(tied, Boolean()),
        context_length=literal(context, BigInteger()),
        default_dtype=literal(dtype, String()),
        stored_weight_bytes=literal(stored, BigInteger()),
    )


def _answer(settings: Any, *expressions: Any) -> tuple[Any, ...]:
    """One SELECT of the expressions, as the database answers it (a fraction of a byte would show)."""
    import asyncio

    from sqlalchemy import select

    from corral.db import create_engine

    async def run() -> tuple[Any, ...]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return tuple((await connection.execute(select(*expressions))).one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _sql_need(settings: Any, case: tuple[Any, ...], precision: str, tokens: int) -> tuple[Any, ...]:
    return _answer(settings, *fit.need_columns(_row_of(case), precision=precision, context_tokens=tokens))


def _sql_holds(settings: Any, case: tuple[Any, ...], devices: Devices, precision: str, tokens: int) -> bool:
    (held,) = _answer(settings, fit.holds_clause(_row_of(case), devices, precision=precision, context_tokens=tokens))
    return bool(held)


def _python_need(case: tuple[Any, ...], precision: str, tokens: int) -> MemoryNeed:
    parameters, hidden, layers, kv_heads, head_dim, vocab, tied, context, dtype, stored = case
    arch = None
    if hidden is not None:
        arch = Architecture(
            hidden_size=hidden,
            num_layers=layers,
            num_attention_heads=kv_heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            tied_embeddings=tied,
        )
    return fit.inference_need(
        arch,
        parameters,
        precision=precision,
        context_tokens=fit.context_for(tokens, context),
        stored=fit.stored_release(dtype, stored),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "fp8", "int8", "int4"])
def test_the_rule_in_sql_computes_the_same_need_as_in_python(settings: Any, precision: str) -> None:
    for case in SQL_CASES:
        for tokens in (1024, 4096, 200_000):
            need = _python_need(case, precision, tokens)
            total, piece = _sql_need(settings, case, precision, tokens)
            assert total == need.total_bytes, (case, tokens)
            if case[1] is None:
                assert piece is None  # unknown architecture: the whole must fit one device
            else:
                assert min(piece or 0, total or 0) == need.device_bytes, (case, tokens)


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp8"])
def test_the_rule_in_sql_holds_exactly_where_python_does_at_the_edges(settings: Any, precision: str) -> None:
    for case in SQL_CASES:
        need = _python_need(case, precision, 4096)
        whole, piece = need.total_bytes, need.device_bytes
        spread = max(1, -(-whole // piece))  # enough devices of the piece's size for the whole
        edges = [
            Devices(whole, 1),  # one device exactly the whole
            Devices(whole - 1, 1),  # a byte short
            Devices(piece, spread),  # each device exactly the piece, together the whole
            Devices(piece - 1, spread + 1),  # each a byte short of the piece
            Devices(piece, max(1, spread - 1)) if spread > 1 else Devices(piece - 1, 1),  # together short
            Devices(whole // 2 + 1, 2),  # two halves (and a byte): the piece may or may not fit one
        ]
        for devices in edges:
            assert _sql_holds(settings, case, devices, precision, 4096) == fit.holds(need, devices), (case, devices)
    unknown = (None, 4096, 32, 8, 128, 128256, False, 4096, None, None)  # no parameter count: never matches
    assert _sql_holds(settings, unknown, Devices(10**15, 8), "bf16", 4096) is False


def test_placement_takes_the_fewest_devices_at_the_exact_edges() -> None:
    ten = 10 * GIB
    assert fit.placement(MemoryNeed(3 * ten, ten), Devices(ten, 4)) == Placement(3)  # exactly three
    assert fit.placement(MemoryNeed(2 * ten + 1, ten), Devices(ten, 4)) == Placement(3)  # a byte more than two
    assert fit.placement(MemoryNeed(25 * GIB, ten), Devices(ten, 4)) == Placement(3)  # not all four
    assert fit.placement(MemoryNeed(2 * ten, ten), Devices(ten, 8), "vllm") == Placement(2)  # exactly two: not four
    assert fit.placement(MemoryNeed(3 * ten, ten), Devices(ten, 8), "vllm") == Placement(4)
    assert fit.placement(MemoryNeed(0, 0), Devices(ten, 8, 2), "vllm") == Placement(1, 1)
    assert fit.placement(MemoryNeed(9 * ten, ten), Devices(ten, 8, 2), "vllm") == Placement(8, 2)
    # Six GPUs a node: vLLM uses four, so five devices' worth goes over two nodes, never eight of one.
    assert fit.placement(MemoryNeed(5 * ten, ten), Devices(ten, 6, 2), "vllm") == Placement(4, 2)


def test_nodes_and_devices_needed_at_the_largest_piece_edge_and_on_odd_nodes() -> None:
    need = MemoryNeed(10 * 80 * GIB, 80 * GIB)
    assert fit.nodes_needed(need, 80 * GIB) == 2  # the piece exactly one device: it fits
    assert fit.nodes_needed(need, 80 * GIB - 1) is None
    assert fit.devices_needed(need, 80 * GIB) == 10
    assert fit.devices_needed(need, 80 * GIB - 1) is None
    # vLLM uses four of a node's six GPUs (a power of two): ten devices' worth takes three such nodes.
    assert fit.nodes_needed(need, 80 * GIB, per_node=6) == 3
    assert fit.spread_width(0, "vllm") == 0
    assert fit.spread_width(6, "vllm") == 4
    assert fit.spread_width(6, "hf") == 6


def test_the_batch_and_a_quantized_kv_cache_change_the_need() -> None:
    arch = Architecture(hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_heads=8, vocab_size=128256)
    one = fit.inference_need(arch, 8_030_261_248, precision="bf16", context_tokens=4096)
    four = fit.inference_need(arch, 8_030_261_248, precision="bf16", context_tokens=4096, batch=4)
    kv = 2 * 32 * 8 * 128 * 2 * 4096
    assert four.total_bytes == (8_030_261_248 * 2 + 4 * kv) * 12 // 10
    assert one.total_bytes == (8_030_261_248 * 2 + kv) * 12 // 10
    fp8_kv = fit.inference_need(arch, 8_030_261_248, precision="bf16", context_tokens=4096, kv_precision="fp8")
    assert fp8_kv.total_bytes == (8_030_261_248 * 2 + kv // 2) * 12 // 10


def test_a_machine_devices_and_a_cluster_node_shapes() -> None:
    assert Devices.of_groups([(80 * GIB, 2), (24 * GIB, 3), (0, 4), (16 * GIB, 0), (1, 1)]) == Devices(
        80 * GIB, 2, 1, (24 * GIB, 24 * GIB, 24 * GIB, 1)
    )
    assert Devices.of_groups([(0, 4), (16 * GIB, 0)]) == Devices(0, 0)
    # One group of two nodes is a cluster: its node shape on its own, never one machine of sixteen GPUs.
    assert fit.shapes_of([(80 * GIB, 8, 2)], max_nodes_per_job=2) == (Devices(80 * GIB, 8, 2),)
    assert fit.shapes_of([(80 * GIB, 8, 4)], max_nodes_per_job=2) == (Devices(80 * GIB, 8, 2),)
    assert fit.shapes_of([(80 * GIB, 8, 4), (1, 1, 2), (0, 8, 2), (24 * GIB, 0, 2)]) == (
        Devices(80 * GIB, 8, 1),
        Devices(1, 1, 1),
    )
    assert fit.shapes_of([(0, 8, 2), (24 * GIB, 0, 2)]) == (Devices(0, 0),)
    assert fit.shapes_of([(80 * GIB, 8, 1), (24 * GIB, 2, 1)]) == (Devices(80 * GIB, 8, 1, (24 * GIB, 24 * GIB)),)


def test_the_best_shape_is_the_one_that_holds_it_on_the_fewest_devices_else_the_largest() -> None:
    need = MemoryNeed(30 * GIB, 20 * GIB)
    l4s, h100s = Devices(24 * GIB, 8), Devices(80 * GIB, 8)
    assert fit.best_shape([l4s, h100s], need, "hf") == (h100s, Placement(1))
    assert fit.best_shape([h100s, l4s], need, "hf") == (h100s, Placement(1))
    too_big = MemoryNeed(10**15, 10 * GIB)
    six, four = Devices(10 * GIB, 6), Devices(12 * GIB, 4)  # vLLM uses 4 of 6: 40 GiB against 48 GiB
    assert fit.best_shape([six, four], too_big, "vllm") == (four, None)
    assert fit.best_shape([six, four], too_big, "hf") == (six, None)  # hf uses all six: 60 GiB
