"""The lm-eval worker, in this process on the tiny checkpoint: progress per task and overall from lm-eval's
own request hook, and a model kept loaded between jobs of the same model."""

import json
from pathlib import Path
from typing import Any

import pytest

from evals.execute import Worker, model_key
from evals.progress import ObservedTaskManager, ProgressHook
from evals.tiny import build_tiny_llama

SMOKE = Path(__file__).resolve().parents[1] / "evals" / "tasks" / "smoke"
LIMIT = 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _beside_the_task_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the agent runs its worker: lm-eval resolves the smoke tasks' data_files from there.
    monkeypatch.chdir(SMOKE)
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")


def job_spec(directory: Path, model: Path, tasks: list[str], **settings: Any) -> Path:
    directory.mkdir(parents=True)
    spec = {
        "model": "corral-test/tiny",
        "revision": "1" * 40,
        "local_path": str(model),
        "device": "cpu",
        "include_path": str(SMOKE),
        "tasks": [{"name": name, "num_fewshot": 0} for name in tasks],
        "settings": {
            "precision": "fp32",
            "backend": "hf",
            "batch_size": "1",
            "apply_chat_template": False,
            "fewshot_as_multiturn": False,
            "limit": LIMIT,
            "seed": 0,
            "gen_kwargs": None,
        }
        | settings,
    }
    path = directory / "spec.json"
    path.write_text(json.dumps(spec))
    return path


class RecordingHook(ProgressHook):
    """Keeps every snapshot it writes, to see the progress move."""

    snapshots: list[dict[str, Any]]

    def write(self) -> None:
        super().write()
        self.snapshots = [*getattr(self, "snapshots", []), self.snapshot()]


def test_progress_counts_every_request_of_each_task(tiny_model: Path, tmp_path: Path) -> None:
    import lm_eval

    spec = json.loads(job_spec(tmp_path / "job", tiny_model, []).read_text())
    lm, _ = Worker().model(spec)
    manager = ObservedTaskManager(include_path=str(SMOKE))
    # The job names a group: progress is reported under the group's name, counted over its leaf tasks.
    hook = RecordingHook(manager, tmp_path / "progress.json", names=["corral_smoke_both"], interval=0)
    lm.set_cache_hook(hook)
    lm_eval.simple_evaluate(model=lm, tasks=["corral_smoke_both"], limit=LIMIT, task_manager=manager, log_samples=False)

    lines = (SMOKE / "corral_smoke_mc.jsonl").read_text().splitlines()[:LIMIT]
    choices = sum(len(json.loads(line)["choices"]) for line in lines)
    # One loglikelihood request per choice of each document, one generation per document.
    assert hook.totals == {"corral_smoke_mc": choices, "corral_smoke_gen": LIMIT}
    # Every finished request was attributed to its own task, none twice (before any reconciliation).
    assert dict(hook.done) == hook.totals
    running = [snapshot for snapshot in hook.snapshots if snapshot["stage"] == "running requests"]
    total = choices + LIMIT
    assert [snapshot["overall"] for snapshot in running] == [round(done / total, 4) for done in range(1, total + 1)]
    assert all(set(snapshot["tasks"]) == {"corral_smoke_both"} for snapshot in running)
    assert [snapshot["tasks"]["corral_smoke_both"] for snapshot in running] == [s["overall"] for s in running]
    assert json.loads((tmp_path / "progress.json").read_text()) == hook.snapshots[-1]


def test_a_snapshot_leaves_out_task_names_the_server_would_refuse() -> None:
    hook = ProgressHook(ObservedTaskManager.__new__(ObservedTaskManager), Path("unused"))
    hook.totals = {"a": 4, "b": 2, "c d": 2}
    hook.members = {"a": ["a"], "b": ["b"], "c d": ["c d"]}  # "c d": a name the server would refuse
    hook.done.update({"a": 4, "b": 1, "c d": 1})
    assert hook.snapshot() == {"stage": "building requests", "tasks": {"a": 1.0, "b": 0.5}, "overall": 0.75}


def test_the_worker_keeps_the_model_loaded_for_the_next_job_of_the_same_model(tiny_model: Path, tmp_path: Path) -> None:
    worker = Worker()
    first = job_spec(tmp_path / "first", tiny_model, ["corral_smoke_mc"])
    second = job_spec(tmp_path / "second", tiny_model, ["corral_smoke_gen"], seed=1)
    other_model = job_spec(tmp_path / "third", tiny_model, ["corral_smoke_gen"], batch_size="2")
    assert model_key(json.loads(first.read_text())) == model_key(json.loads(second.read_text()))
    assert model_key(json.loads(first.read_text())) != model_key(json.loads(other_model.read_text()))

    assert worker.run(first) == 0
    loaded = worker.lm
    assert worker.run(second) == 0
    assert worker.lm is loaded  # the same object: no second load
    assert worker.run(other_model) == 0
    assert worker.lm is not loaded

    facts = []
    for spec in (first, second, other_model):
        results = json.loads((spec.parent / "results.json").read_text())
        facts.append(results["corral_runner"]["model_was_loaded"])
        assert results["config"]["model"] == "hf"
        assert results["corral_runner"]["wall_seconds"] > 0
        progress = json.loads((spec.parent / "progress.json").read_text())
        assert progress["stage"] == "writing results"
        assert progress["overall"] == 1.0
        assert set(progress["tasks"]) == {task["name"] for task in json.loads(spec.read_text())["tasks"]}
    assert facts == [False, True, False]
    assert set(json.loads((second.parent / "results.json").read_text())["results"]) == {"corral_smoke_gen"}


def test_a_failing_job_says_why(tiny_model: Path, tmp_path: Path) -> None:
    broken = job_spec(tmp_path / "broken", tiny_model, ["no_such_task"])
    assert Worker().run(broken) == 1
    outcome = json.loads((broken.parent / "outcome.json").read_text())
    assert outcome["category"] == "harness_error"
    assert "no_such_task" in outcome["message"]
    assert not (broken.parent / "results.json").exists()


GB = 10**9
H100 = {"kind": "nvidia-h100-80gb-hbm3", "memory_bytes": 80 * GB, "count": 8}


def constructor_parameters(backend: str) -> set[str]:
    """The keyword arguments lm-eval's model class for `backend` takes, read from its source (vLLM is not
    installed here, so its class is read, not imported)."""
    import ast
    import inspect

    import lm_eval.models

    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        return set(inspect.signature(HFLM.__init__).parameters)
    source = Path(lm_eval.models.__file__).parent / "vllm_causallms.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "VLLM":
            init = next(item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__")
            return {argument.arg for argument in init.args.args + init.args.kwonlyargs}
    raise AssertionError("lm-eval has no VLLM class")


@pytest.mark.parametrize(
    ("backend", "precision", "required", "accelerator", "expected"),
    [
        ("hf", "fp32", GB, {"kind": "cpu", "memory_bytes": 64 * GB, "count": 1}, "device=cpu"),
        ("hf", "bf16", 20 * GB, H100, "dtype=bfloat16"),
        # 140 GB on 80 GB GPUs: accelerate spreads the layers; vLLM splits tensors over two of them.
        ("hf", "bf16", 140 * GB, H100, "parallelize=True"),
        ("vllm", "bf16", 140 * GB, H100, "tensor_parallel_size=2"),
        ("vllm", "bf16", 300 * GB, H100, "tensor_parallel_size=4"),
        ("vllm", "bf16", 900 * GB, {**H100, "memory_bytes": 141 * GB}, "tensor_parallel_size=8"),
        # Tensor parallelism needs a power of two: 2 of 3 GPUs, 4 of 6, even when more would be needed.
        ("vllm", "bf16", 200 * GB, {**H100, "count": 3}, "tensor_parallel_size=2"),
        ("vllm", "bf16", 450 * GB, {**H100, "count": 6}, "tensor_parallel_size=4"),
        ("vllm", "fp8", 20 * GB, H100, "quantization=fp8"),
        ("vllm", "int4", 20 * GB, H100, "quantization=bitsandbytes"),
        ("hf", "int4", 20 * GB, H100, "quantization=bitsandbytes-int4"),
    ],
)
def test_model_arguments_fit_the_backend_and_the_runner(
    backend: str, precision: str, required: int, accelerator: dict[str, Any], expected: str
) -> None:
    from evals.execute import model_args

    spec = {
        "model": "meta-llama/Llama-3.1-8B",
        "revision": "b" * 40,
        "local_path": None,
        "device": "cpu" if accelerator["kind"] == "cpu" else None,
        "accelerator": accelerator,
        "required_memory_bytes": required,
        "settings": {"backend": backend, "precision": precision, "seed": 7},
    }
    arguments = model_args(spec)
    assert arguments.startswith(f"pretrained=meta-llama/Llama-3.1-8B,revision={'b' * 40}")
    assert expected in arguments.split(",")
    keys = {part.split("=", 1)[0] for part in arguments.split(",")}
    if backend == "hf" and precision == "int4":
        return  # loaded by the worker through bitsandbytes, not by these arguments
    # Every argument is one the backend's real constructor takes.
    assert keys <= constructor_parameters(backend), keys - constructor_parameters(backend)
    if backend == "vllm":
        assert "seed=7" in arguments.split(",")  # vLLM fixes its sampling seed when the engine starts
    else:
        assert ("parallelize=True" in arguments) == (required > accelerator["memory_bytes"])


def test_int4_on_hf_without_bitsandbytes_is_the_runners_shortcoming(tiny_model: Path, tmp_path: Path) -> None:
    spec = job_spec(tmp_path / "int4", tiny_model, ["corral_smoke_mc"], precision="int4")
    assert Worker().run(spec) == 1
    outcome = json.loads((spec.parent / "outcome.json").read_text())
    assert outcome["category"] == "infrastructure"  # another runner, with bitsandbytes and a GPU, may run it
    assert "bitsandbytes" in outcome["message"]


def test_failures_are_classified_through_the_chain_of_causes() -> None:
    import torch

    from evals.execute import classify

    def wrapped(cause: BaseException, outer: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise outer from inner
        except BaseException as error:
            return error

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert classify(oom) == "out_of_memory"
    assert classify(wrapped(oom, RuntimeError("batch failed"))) == "out_of_memory"
    assert classify(wrapped(ConnectionResetError("peer reset"), OSError("download failed"))) == "infrastructure"
    assert classify(OSError("model.safetensors is truncated")) == "model_error"
    assert classify(KeyError("acc_norm")) == "harness_error"
