"""The lm-eval worker, in this process on the tiny checkpoint: progress per task and overall from lm-eval's
own request hook, and a model kept loaded between jobs of the same model."""

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from corral_runner.jobdir import JobDirectory
from corral_runner.lm_eval_worker import Worker
from corral_runner.model_args import model_key
from corral_runner.progress import ObservedTaskManager, ProgressHook
from corral_runner.protocol import JobSpec, Progress
from corral_runner.tiny import build_tiny_llama

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
        "attempt_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
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
            "num_fewshot": None,
            "limit": LIMIT,
            "seed": 0,
            "gen_kwargs": None,
            "harness_version": "0.4.13",
        }
        | settings,
    }
    path = directory / "spec.json"
    path.write_text(json.dumps(spec))
    return path


class RecordingHook(ProgressHook):
    """Keeps every snapshot it writes, to see the progress move."""

    snapshots: list[dict[str, Any]]  # as written to progress.json

    def write(self) -> None:
        super().write()
        self.snapshots = [*getattr(self, "snapshots", []), self.snapshot().model_dump(exclude_none=True)]


def test_progress_counts_every_request_of_each_task(tiny_model: Path, tmp_path: Path) -> None:
    import lm_eval

    spec = JobSpec.model_validate_json(job_spec(tmp_path / "job", tiny_model, []).read_text())
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
    assert hook.snapshot() == Progress(stage="building requests", tasks={"a": 1.0, "b": 0.5}, overall=0.75)


def test_the_worker_keeps_the_model_loaded_for_the_next_job_of_the_same_model(tiny_model: Path, tmp_path: Path) -> None:
    worker = Worker()
    first = job_spec(tmp_path / "first", tiny_model, ["corral_smoke_mc"])
    second = job_spec(tmp_path / "second", tiny_model, ["corral_smoke_gen"], seed=1)
    other_model = job_spec(tmp_path / "third", tiny_model, ["corral_smoke_gen"], batch_size="2")

    def key(path: Path) -> str:
        return model_key(JobSpec.model_validate_json(path.read_text()))

    assert key(first) == key(second)
    assert key(first) != key(other_model)

    assert worker.run(JobDirectory(first.parent)) == 0
    loaded = worker.lm
    assert worker.run(JobDirectory(second.parent)) == 0
    assert worker.lm is loaded  # the same object: no second load
    assert worker.run(JobDirectory(other_model.parent)) == 0
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
    assert Worker().run(JobDirectory(broken.parent)) == 1
    outcome = json.loads((broken.parent / "outcome.json").read_text())
    assert outcome["category"] == "harness_error"
    assert "no_such_task" in outcome["message"]
    assert not (broken.parent / "results.json").exists()


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


# vLLM engine arguments lm-eval's VLLM hands on to vllm.LLM through its **kwargs.
VLLM_ENGINE_KWARGS = {"pipeline_parallel_size", "distributed_executor_backend"}


@pytest.mark.parametrize(
    ("backend", "precision", "placement", "device", "expected"),
    [
        ("hf", "fp32", (1, 1), "cpu", {"device=cpu", "dtype=float32"}),
        ("hf", "bf16", (1, 1), None, {"dtype=bfloat16"}),
        # The server's placement (its fit rule) says how many GPUs: accelerate spreads layers over them on hf,
        # vLLM splits tensors over a node's and stages over nodes (Ray).
        ("hf", "bf16", (3, 1), "cuda", {"parallelize=True"}),
        ("vllm", "bf16", (2, 1), None, {"tensor_parallel_size=2"}),
        ("vllm", "bf16", (8, 2), None, {"tensor_parallel_size=8", "pipeline_parallel_size=2"}),
        ("vllm", "fp8", (1, 1), None, {"quantization=fp8"}),
        ("vllm", "int4", (1, 1), None, {"quantization=bitsandbytes"}),
        ("hf", "int4", (1, 1), None, {"quantization=bitsandbytes-int4"}),
    ],
)
def test_model_arguments_follow_the_backend_and_the_placement(
    backend: str, precision: str, placement: tuple[int, int], device: str | None, expected: set[str]
) -> None:
    from corral_runner.model_args import model_args

    spec = JobSpec.model_validate(
        {
            "attempt_id": str(uuid.uuid4()),
            "job_id": str(uuid.uuid4()),
            "model": "meta-llama/Llama-3.1-8B",
            "revision": "b" * 40,
            "device": device,
            "tasks": [],
            "placement": {"tensor_parallel": placement[0], "pipeline_parallel": placement[1]},
            "settings": {
                "backend": backend,
                "precision": precision,
                "seed": 7,
                "batch_size": "auto",
                "apply_chat_template": False,
                "fewshot_as_multiturn": False,
                "num_fewshot": None,
                "limit": None,
                "gen_kwargs": None,
                "harness_version": "0.4.13",
            },
        }
    )
    arguments = model_args(spec).split(",")
    assert arguments[:2] == ["pretrained=meta-llama/Llama-3.1-8B", f"revision={'b' * 40}"]
    assert expected <= set(arguments), expected - set(arguments)
    keys = {part.split("=", 1)[0] for part in arguments}
    if backend == "hf" and precision == "int4":
        return  # loaded by the worker through bitsandbytes, not by these arguments
    # Every argument is one the backend's real constructor takes (or, on vLLM, hands to the engine).
    assert keys <= constructor_parameters(backend) | VLLM_ENGINE_KWARGS, keys - constructor_parameters(backend)
    if backend == "vllm":
        assert "seed=7" in arguments  # vLLM fixes its sampling seed when the engine starts
        assert ("distributed_executor_backend=ray" in arguments) == (placement[1] > 1)
        assert not any(part.startswith("device=") for part in arguments)
    else:
        assert ("parallelize=True" in arguments) == (placement[0] > 1)
        assert not any(part.startswith(("tensor_parallel", "pipeline_parallel")) for part in arguments)


def test_lm_eval_hands_unknown_vllm_arguments_to_the_engine() -> None:
    """pipeline_parallel_size and distributed_executor_backend reach vllm.LLM only through the **kwargs that
    lm-eval's VLLM constructor takes and merges into the engine's arguments: read from its source."""
    import ast

    import lm_eval.models

    source = (Path(lm_eval.models.__file__).parent / "vllm_causallms.py").read_text()
    init = next(
        item
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == "VLLM"
        for item in node.body
        if isinstance(item, ast.FunctionDef) and item.name == "__init__"
    )
    assert init.args.kwarg is not None
    assert init.args.kwarg.arg == "kwargs"
    assert "self.model_args.update(kwargs)" in source


def test_int4_on_hf_without_bitsandbytes_is_the_runners_shortcoming(tiny_model: Path, tmp_path: Path) -> None:
    spec = job_spec(tmp_path / "int4", tiny_model, ["corral_smoke_mc"], precision="int4")
    assert Worker().run(JobDirectory(spec.parent)) == 1
    outcome = json.loads((spec.parent / "outcome.json").read_text())
    assert outcome["category"] == "infrastructure"  # another runner, with bitsandbytes and a GPU, may run it
    assert "bitsandbytes" in outcome["message"]


def test_failures_are_classified_through_the_chain_of_causes() -> None:
    import torch

    from corral_runner.failures import classify

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
