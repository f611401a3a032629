"""Which runner may take which job (app/runners/matching.py), the Python rendering, on records held in memory.

test_rules.py runs the SQL rendering (the claim statement) on both databases; here the Python rendering's
reading of runner and job records and every explanation a caller is shown are pinned.
"""

from corral.hardware.fit import Devices, Placement
from corral.runners.matching import GIB, Capacity, Need, gib
from corral.tables import EvaluationJob, Runner

NEED = Need(memory_bytes=100 * GIB, device_bytes=40 * GIB, backend="hf", harness_version="0.4.9", labels=("eu",))


def test_a_job_record_reads_as_its_need() -> None:
    job = EvaluationJob(
        required_memory_bytes=7,
        required_device_bytes=5,
        backend="vllm",
        harness_version="0.4.8",
        labels=["eu", "a100"],
    )
    assert Need.of(job) == Need(7, 5, "vllm", "0.4.8", ("eu", "a100"))


def test_a_runner_record_reads_as_its_capacity() -> None:
    runner = Runner(
        accelerators=[
            {"name": "nvidia-a100-80gb", "memory_bytes": 80 * GIB, "count": 2},
            {"name": "nvidia-l4", "memory_bytes": str(24 * GIB)},  # no count: one device
        ],
        backends=["hf", "vllm"],
        lm_eval_version="0.4.9",
        labels=["eu"],
    )
    capacity = Capacity.of(runner)
    assert capacity == Capacity((Devices(80 * GIB, 2, others=(24 * GIB,)),), ("hf", "vllm"), "0.4.9", ("eu",))
    assert capacity.total_bytes == 184 * GIB  # hf places layers on every device
    bare = Runner(accelerators=None, backends=None, lm_eval_version=None, labels=None, max_nodes_per_job=None)
    assert Capacity.of(bare) == Capacity((Devices(0, 0),), (), None, ())


def test_a_runner_that_holds_the_job_has_no_shortfall() -> None:
    exact = Capacity((Devices(40 * GIB, 2, others=(20 * GIB,)),), ("hf",), "0.4.9", ("eu", "gpu"))
    assert exact.shortfalls(NEED) == []
    assert exact.memory_shortfalls(NEED) == []


def test_every_shortfall_is_explained() -> None:
    small = Capacity((Devices(40 * GIB - 1, 2, others=(20 * GIB + 1,)),), ("vllm",), "0.4.8", ())
    assert small.memory_shortfalls(NEED) == [
        "needs 100.0 GiB of accelerator memory, has 100.0 GiB",
        "needs 40.0 GiB on one device, its largest has 40.0 GiB",
    ]
    assert small.shortfalls(NEED) == [
        *small.memory_shortfalls(NEED),
        "does not run the hf backend",
        "runs lm-eval 0.4.8, not 0.4.9",
        "lacks labels eu",
    ]
    unknown = Capacity((Devices(10**15),), ("hf",), None, ("x",))
    need = Need(1, 1, "hf", "0.4.9", ("b", "a", "x"))
    assert unknown.shortfalls(need) == ["runs lm-eval unknown, not 0.4.9", "lacks labels a, b"]


def test_many_small_devices_do_not_hold_a_piece_larger_than_one_of_them() -> None:
    many_small = Capacity((Devices(24 * GIB, 8),), ("hf",), "0.4.9", ("eu",))
    assert many_small.shortfalls(NEED) == ["needs 40.0 GiB on one device, its largest has 24.0 GiB"]


def test_gib_is_written_with_one_decimal_and_thousands() -> None:
    assert gib(GIB) == "1.0 GiB"
    assert gib(3 * GIB // 2) == "1.5 GiB"
    assert gib(2048 * GIB) == "2,048.0 GiB"
    assert gib(0) == "0.0 GiB"


def test_a_cluster_offers_each_node_shape_up_to_the_nodes_one_job_may_span() -> None:
    cluster = Runner(
        accelerators=[
            {"kind": "nvidia-h100-80gb", "memory_bytes": 80 * GIB, "count": 8, "nodes": 16},
            {"kind": "nvidia-l4", "memory_bytes": 24 * GIB, "count": 4, "nodes": 40},
        ],
        backends=["vllm", "hf"],
        lm_eval_version="0.4.9",
        labels=[],
        max_nodes_per_job=2,
    )
    capacity = Capacity.of(cluster)
    assert capacity.shapes == (Devices(80 * GIB, 8, nodes=2), Devices(24 * GIB, 4, nodes=2))
    # Never one giant machine: 16 x 8 x 80 GiB is not offered to one job, nor are the L4s added to the H100s.
    assert capacity.total_bytes == 8 * 80 * GIB
    two_nodes = Need(1_000 * GIB, 10 * GIB, "vllm", "0.4.9", ())
    assert capacity.shortfalls(two_nodes) == []
    assert capacity.fitting(two_nodes)[1] == Placement(8, 2)
    three_nodes = Need(1_300 * GIB, 10 * GIB, "vllm", "0.4.9", ())
    assert capacity.memory_shortfalls(three_nodes) == ["needs 1,300.0 GiB of accelerator memory, has 1,280.0 GiB"]
    # hf stays on one machine: the same need is too big for it.
    assert capacity.memory_shortfalls(Need(1_000 * GIB, 10 * GIB, "hf", "0.4.9", ())) == [
        "needs 1,000.0 GiB of accelerator memory, has 640.0 GiB"
    ]
    # What is free now narrows the offer: one node with four free GPUs.
    free = Capacity.of(cluster, [{"kind": "nvidia-h100-80gb", "memory_bytes": 80 * GIB, "count": 4, "nodes": 1}])
    assert free.shapes == (Devices(80 * GIB, 4),)
