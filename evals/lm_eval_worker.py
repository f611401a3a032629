"""The child process that runs lm-eval for the agent: `python -m evals.lm_eval_worker --worker [--hide PATH]...
[--scratch DIR]` (jobs named on stdin, one after another, in a sandbox that hides the runner's files) or
`python -m evals.lm_eval_worker SPEC.json` (one job).

It runs apart from the agent so that a cancel can kill it and a crash (or CUDA out of memory) cannot take the
agent down. As a worker it keeps the last model loaded: the next job of the same model (another shard of the
suite, another suite) skips the imports and the weight loading. For each job it writes, next to the spec,
`log.txt` (its stdout and stderr), `progress.json`, then `results.json` (lm-eval's results, samples apart) or
`outcome.json` (why it failed, as a failure category the server understands), and last `done`.
"""

import gc
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evals.protocol import JobSpec, Outcome, Sandbox


def say(line: str) -> None:
    """A line in the job's log (stdout is the log the agent streams to the server)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def classify(error: BaseException) -> str:
    """infrastructure (network, Hub) / out_of_memory / model_error (the weights will not load) / harness_error.

    Libraries wrap what went wrong (transformers raises an OSError `from` huggingface_hub's GatedRepoError), so
    the whole chain of causes is read."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    text = " ".join(f"{type(link).__name__}: {link}" for link in chain).lower()
    if "out of memory" in text or "OutOfMemoryError" in names:
        return "out_of_memory"
    # Not in the cache and the Hub out of reach (a subclass of EntryNotFoundError, hence first); and a gated
    # repo this runner's token cannot open, which another runner's may: both worth a retry elsewhere.
    # A package the backend needs and this runner lacks (vLLM) is the runner's fault too.
    runner_side = {
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "GatedRepoError",
        "RunnerSetupError",
        "ModuleNotFoundError",
    }
    if names & runner_side or "couldn't connect" in text:
        return "infrastructure"
    # Before the network check: these are HTTP errors too, but no retry helps until someone changes the repo.
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"}:
        return "model_error"
    if names & {"ConnectionError", "Timeout", "TimeoutError", "HfHubHTTPError", "TransportError"}:
        return "infrastructure"
    if "safetensors" in text or "config.json" in text or "does not appear to have" in text:
        return "model_error"
    return "harness_error"


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANTIZED = ("int8", "int4")


def model_args(spec: JobSpec) -> str:
    """lm-eval's model arguments for the job on this runner (backends differ in how they take them). How many
    devices it spreads over is the server's placement (its fit rule, for this runner's registered devices)."""
    settings, placement = spec.settings, spec.placement
    local = spec.local_path
    parts = [f"pretrained={local}"] if local else [f"pretrained={spec.model}", f"revision={spec.revision}"]
    precision = settings.precision
    if precision in DTYPES:
        parts.append(f"dtype={DTYPES[precision]}")
    if settings.backend == "vllm":
        # vLLM quantizes unquantized weights in flight to fp8, or to 4 bits through bitsandbytes (never 8: the
        # server refuses int8 on vllm). Its sampling seed is fixed when the engine starts.
        quantization = {"fp8": "fp8", "int4": "bitsandbytes"}.get(precision)
        if quantization:
            parts.append(f"quantization={quantization}")
        parts.append(f"seed={settings.seed}")
        if placement.tensor_parallel > 1:
            parts.append(f"tensor_parallel_size={placement.tensor_parallel}")
        if placement.pipeline_parallel > 1:
            # Passed through lm-eval's **kwargs to vllm.LLM: stages on the nodes of a Ray cluster.
            parts.append(f"pipeline_parallel_size={placement.pipeline_parallel}")
            parts.append("distributed_executor_backend=ray")
        if settings.trust_remote_code:
            parts.append("trust_remote_code=True")
        return ",".join(parts)
    if precision in QUANTIZED:
        parts.append(f"quantization=bitsandbytes-{precision}")  # recorded; applied in Worker.model
    if placement.tensor_parallel > 1:
        parts.append("parallelize=True")  # accelerate places the layers across the visible GPUs
    elif spec.device:
        parts.append(f"device={spec.device}")
    if settings.trust_remote_code:  # an admin trusted this commit's code; off (lm-eval's default) otherwise
        parts.append("trust_remote_code=True")
    return ",".join(parts)


def peak_memory() -> int | None:
    """Peak accelerator memory of this job (summed over the GPUs it spread over), else the process's peak RSS."""
    try:
        import torch

        if torch.cuda.is_available():
            return sum(int(torch.cuda.max_memory_allocated(index)) for index in range(torch.cuda.device_count()))
    except ImportError:
        return None
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux


def lm_eval_commit() -> str | None:
    """The commit lm-eval was installed from (pip's direct_url.json for a git install), else None."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        direct = distribution("lm_eval").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    commit = json.loads(direct).get("vcs_info", {}).get("commit_id") if direct else None
    return commit if isinstance(commit, str) else None


def environment() -> dict[str, str | int | None]:
    facts: dict[str, str | int | None] = {}
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


class RunnerSetupError(RuntimeError):
    """This runner lacks something the job needs; another runner may have it (reported as infrastructure)."""


def quantized_hf_model(spec: JobSpec) -> Any:
    """int8/int4 on the hf backend. lm-eval 0.4.13 forwards no quantization settings of its own and transformers 5
    dropped `load_in_8bit`, so the weights are loaded here through bitsandbytes and handed to lm-eval's HFLM."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as missing:
        raise RunnerSetupError(
            "int8 and int4 on the hf backend need bitsandbytes and a CUDA GPU on the runner (pip install bitsandbytes)"
        ) from missing
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    local = spec.local_path
    source, revision = (local, None) if local else (spec.model, spec.revision)
    if spec.settings.precision == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    trusted = spec.settings.trust_remote_code
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, quantization_config=config, device_map="auto", trust_remote_code=trusted
    )
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trusted)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.settings.batch_size)


def model_key(spec: JobSpec) -> str:
    """Jobs with the same key can share one loaded model."""
    return json.dumps([spec.settings.backend, model_args(spec), spec.settings.batch_size])


class Worker:
    """Runs jobs in this process, one after another, keeping the last model loaded for the next job."""

    def __init__(self) -> None:
        self.lm: Any = None
        self.key: str | None = None
        self.task_managers: dict[str | None, Any] = {}  # by include path; each load builds fresh task objects
        self.sandbox_note: str | None = None  # what the sandbox hides, said in every job's log

    def model(self, spec: JobSpec) -> tuple[Any, bool]:
        """The job's model, and whether it was loaded already."""
        key = model_key(spec)
        if self.lm is not None and key == self.key:
            return self.lm, True
        self.release()
        import lm_eval.api.registry

        backend, batch_size = spec.settings.backend, spec.settings.batch_size
        if backend == "hf" and spec.settings.precision in QUANTIZED:
            self.lm = quantized_hf_model(spec)
        else:
            self.lm = lm_eval.api.registry.get_model(backend).create_from_arg_string(
                model_args(spec), {"batch_size": batch_size}
            )
        self.key = key
        return self.lm, False

    def release(self) -> None:
        self.lm, self.key = None, None
        gc.collect()
        if _cuda():
            import torch

            torch.cuda.empty_cache()

    def run(self, spec_path: Path) -> int:
        """One job; 0 when results.json was written, 1 when outcome.json says why not."""
        out = spec_path.parent
        started = time.perf_counter()
        try:
            spec = JobSpec.model_validate_json(spec_path.read_text())
            import lm_eval
            from lm_eval.utils import handle_non_serializable

            from evals.progress import ObservedTaskManager, ProgressHook

            settings = spec.settings
            tasks = [task.name for task in spec.tasks]
            fewshot = {task.num_fewshot for task in spec.tasks}
            if self.sandbox_note:
                say(self.sandbox_note)
            say(f"corral: lm-eval {settings.backend} on {tasks} with {model_args(spec)}")
            lm, warm = self.model(spec)  # before the task index: weights that will not load fail in seconds
            say("corral: model already loaded by the previous job" if warm else "corral: model loaded")
            include = spec.include_path
            if include not in self.task_managers:  # indexing lm-eval's thousands of task files takes seconds
                self.task_managers[include] = (
                    ObservedTaskManager(include_path=include) if include else ObservedTaskManager()
                )
            manager = self.task_managers[include]
            hook = ProgressHook(manager, out / "progress.json", names=tasks)
            hook.set_stage("building requests")
            lm.set_cache_hook(hook)
            if _cuda():
                import torch

                for index in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(index)
            results = lm_eval.simple_evaluate(
                model=lm,
                model_args=model_args(spec),
                tasks=tasks,
                num_fewshot=fewshot.pop() if len(fewshot) == 1 else None,
                batch_size=settings.batch_size,
                device=spec.device,
                limit=settings.limit,
                random_seed=settings.seed,
                numpy_random_seed=settings.seed,
                torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed,
                apply_chat_template=settings.apply_chat_template,
                fewshot_as_multiturn=settings.fewshot_as_multiturn,
                gen_kwargs=settings.gen_kwargs.as_arguments() if settings.gen_kwargs is not None else None,
                log_samples=True,
                task_manager=manager,
            )
            if results is None:
                raise RuntimeError("lm-eval returned no results")
            hook.set_stage("writing results", finished=True)
            results["config"]["model"] = settings.backend  # as the lm_eval CLI records it
            # lm-eval records `git describe` of the working directory, which is Corral's checkout here, not
            # lm-eval's: the commit of lm-eval itself is known only for an install from git.
            corral_commit = results.get("git_hash")
            results["git_hash"], results["upper_git_hash"] = lm_eval_commit(), None
            samples = results.pop("samples", None)
            results["corral_runner"] = {
                **environment(),
                "wall_seconds": round(time.perf_counter() - started, 3),
                "peak_memory_bytes": peak_memory(),
                "model_was_loaded": warm,
                "corral_git_hash": corral_commit,
            }
            (out / "results.json").write_text(json.dumps(results, default=handle_non_serializable))
            (out / "samples.json").write_text(json.dumps(samples, default=handle_non_serializable))
            say("corral: lm-eval finished")
            return 0
        except BaseException as error:  # everything is reported: the agent decides what to tell the server
            traceback.print_exc()
            sys.stdout.flush()
            outcome = Outcome(category=classify(error), message=f"{type(error).__name__}: {error}")
            (out / "outcome.json").write_text(outcome.model_dump_json())
            return 1
        finally:
            for manager in self.task_managers.values():
                manager.loaded = None  # the job's tasks, datasets and requests: not kept while the worker idles


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def redirect_output(path: Path) -> None:
    """Point this process's stdout and stderr (file descriptors, so tqdm and native code too) at `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def run_job(worker: Worker, spec_path: Path) -> int:
    """Run one job beside its task files (lm-eval resolves their relative data_files from there)."""
    spec_path = spec_path.resolve()
    redirect_output(spec_path.parent / "log.txt")
    include = JobSpec.model_validate_json(spec_path.read_text()).include_path
    os.chdir(include or spec_path.parent)
    code = worker.run(spec_path)
    sys.stdout.flush()
    sys.stderr.flush()
    mark_done(spec_path.parent, code)
    return code


def mark_done(out: Path, code: int) -> None:
    """The last file a job writes (atomically): the agent reads the others only once this one is there."""
    done = out / "done"
    done.with_suffix(".partial").write_text(json.dumps({"code": code}))
    done.with_suffix(".partial").replace(done)


def die_with_the_agent() -> None:
    """Linux: SIGTERM this worker when the agent that started it dies, so an idle warm worker never lingers
    holding GPU memory (it runs in a session of its own, out of reach of the agent's process group)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    # The signal covers deaths from now on: an agent killed while this process was still starting has left
    # it to another parent already (the race a loaded machine makes likely), and then there is no one to serve.
    agent = os.environ.get("CORRAL_AGENT_PID")
    if agent is not None and agent.isdigit() and os.getppid() != int(agent):
        say("corral: the agent is gone; the worker stops")
        sys.exit(0)


def enter_sandbox(sandbox: Sandbox | None) -> str | None:
    """Hide the runner's own files from everything this process will run (evals/sandbox.py), before any job is
    read; what it hid, for the job's log."""
    if sandbox is None or not sandbox.hidden:
        return None
    from evals.sandbox import SandboxUnavailable, seal

    try:
        return f"corral: sandbox: {seal(sandbox.hidden, sandbox.kept).describe()}"
    except SandboxUnavailable as missing:
        return f"corral: sandbox: none ({missing}); lm-eval can read this runner's files"


def serve(worker: Worker, sandbox: Sandbox | None = None) -> int:
    """Jobs from stdin, one spec path per line, until stdin closes; a failed job ends the process, since a
    model that failed (CUDA out of memory above all) may have left the device in a state not worth keeping."""
    die_with_the_agent()
    worker.sandbox_note = enter_sandbox(sandbox)
    between_jobs = os.dup(1)  # the agent's worker.log: where output goes when no job runs
    while line := sys.stdin.readline():
        code = run_job(worker, Path(line.strip()))
        os.dup2(between_jobs, 1)
        os.dup2(between_jobs, 2)
        if code != 0:
            return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] != ["--worker"]:
        return run_job(Worker(), Path(argv[0]))
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evals.lm_eval_worker --worker")
    parser.add_argument("--hide", action="append", default=[], help="a path of the runner's lm-eval may not touch")
    arguments = parser.parse_args(argv[1:])
    return serve(Worker(), Sandbox(hidden=arguments.hide))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
