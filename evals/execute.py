"""The child process that runs lm-eval for one job: `python -m evals.execute SPEC.json`.

It runs in its own process so that a cancel can kill it and a crash (or CUDA out of memory) cannot take the
agent down. It writes `results.json` (lm-eval's results, samples apart) or `outcome.json` (why it failed,
as a failure category the server understands) next to the spec, and logs to stdout.
"""

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def say(line: str) -> None:
    """A line in the job's log (stdout is the log the agent streams to the server)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def classify(error: BaseException) -> str:
    """infrastructure (network, Hub) / out_of_memory / model_error (the weights will not load) / harness_error."""
    text = f"{type(error).__name__}: {error}".lower()
    if "out of memory" in text or type(error).__name__ == "OutOfMemoryError":
        return "out_of_memory"
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"ConnectionError", "Timeout", "HfHubHTTPError", "LocalEntryNotFoundError", "TransportError"}:
        return "infrastructure"
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError", "EnvironmentError"} or (
        "safetensors" in text or "config.json" in text
    ):
        return "model_error"
    return "harness_error"


def model_args(spec: dict[str, Any]) -> str:
    local = spec.get("local_path")
    parts = [f"pretrained={local}"] if local else [f"pretrained={spec['model']}", f"revision={spec['revision']}"]
    precision = spec["settings"]["precision"]
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(precision)
    if dtype:
        parts.append(f"dtype={dtype}")
    elif precision == "int8":
        parts.append("load_in_8bit=True")
    elif precision == "int4":
        parts.append("load_in_4bit=True")
    if spec.get("device"):
        parts.append(f"device={spec['device']}")
    return ",".join(parts)


def peak_memory() -> int | None:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except ImportError:
        return None
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux


def environment() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import torch

        facts["torch_version"] = torch.__version__
        facts["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
            facts["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    from evals.hardware import run_command

    driver = run_command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if driver:
        facts["driver_version"] = driver.strip().splitlines()[0]
    return facts


def run(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    out = spec_path.parent
    started = time.perf_counter()
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable

        settings = spec["settings"]
        manager = TaskManager(include_path=spec.get("include_path")) if spec.get("include_path") else TaskManager()
        tasks = [task["name"] for task in spec["tasks"]]
        fewshot = {task["num_fewshot"] for task in spec["tasks"]}
        say(f"corral: lm-eval {settings['backend']} on {tasks} with {model_args(spec)}")
        results = lm_eval.simple_evaluate(
            model=settings["backend"],
            model_args=model_args(spec),
            tasks=tasks,
            num_fewshot=fewshot.pop() if len(fewshot) == 1 else None,
            batch_size=settings["batch_size"],
            limit=settings["limit"],
            random_seed=settings["seed"],
            numpy_random_seed=settings["seed"],
            torch_random_seed=settings["seed"],
            fewshot_random_seed=settings["seed"],
            apply_chat_template=settings["apply_chat_template"],
            fewshot_as_multiturn=settings["fewshot_as_multiturn"],
            gen_kwargs=settings["gen_kwargs"],
            log_samples=True,
            task_manager=manager,
        )
        if results is None:
            raise RuntimeError("lm-eval returned no results")
        samples = results.pop("samples", None)
        results["corral_runner"] = {
            **environment(),
            "wall_seconds": round(time.perf_counter() - started, 3),
            "peak_memory_bytes": peak_memory(),
        }
        (out / "results.json").write_text(json.dumps(results, default=handle_non_serializable))
        (out / "samples.json").write_text(json.dumps(samples, default=handle_non_serializable))
        say("corral: lm-eval finished")
        return 0
    except BaseException as error:  # everything is reported: the agent decides what to tell the server
        traceback.print_exc()
        sys.stdout.flush()
        outcome = {"category": classify(error), "message": f"{type(error).__name__}: {error}"}
        (out / "outcome.json").write_text(json.dumps(outcome))
        return 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
