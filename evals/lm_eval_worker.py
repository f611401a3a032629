"""The process that runs lm-eval for the agent: `python -m evals.lm_eval_worker --worker [--hide PATH]...` (jobs
named on stdin, one after another, in a sandbox that hides the runner's files) or `python -m evals.lm_eval_worker
SPEC.json` (one job).

It runs apart from the agent so that a cancel can kill it and a crash (or CUDA out of memory) cannot take the
agent down. As a worker it keeps the last model loaded: the next job of the same model (another shard of the
suite, another suite) skips the imports and the weight loading. It writes each job's files as
evals/jobdir.py names them, `done` last.
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

from corral_runner.failures import outcome_of
from corral_runner.jobdir import JobDirectory
from corral_runner.model_args import QUANTIZED, detected_device, model_args, model_key, quantized_hf_model
from corral_runner.protocol import JobSpec, Sandbox, generation_settings

EVALS_DIR = Path(__file__).resolve().parent


def say(line: str) -> None:
    """A line in the job's log (stdout is the log the agent streams to the server)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


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
    from corral_runner.hardware import run_command

    driver = run_command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if driver:
        facts["driver_version"] = driver.strip().splitlines()[0]
    return facts


class Worker:
    """Runs jobs in this process, one after another, keeping the last model loaded for the next job."""

    def __init__(self) -> None:
        self.lm: Any = None
        self.key: str | None = None
        self.task_managers: dict[str | None, Any] = {}  # by include path; each load builds fresh task objects
        self.sandbox_note: str | None = None  # what the sandbox hides, said in every job's log
        self.device: str | None = None  # where torch runs here, found at the first job

    def device_for(self, spec: JobSpec) -> str:
        """The job's device: the runner's setting, else what this machine has (a CPU runner needs no setting)."""
        if spec.device:
            return spec.device
        if self.device is None:
            self.device = detected_device()
        return self.device

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
            arguments = model_args(spec, self.device_for(spec))
            self.lm = lm_eval.api.registry.get_model(backend).create_from_arg_string(
                arguments, {"batch_size": batch_size}
            )
        self.key = key
        return self.lm, False

    def release(self) -> None:
        self.lm, self.key = None, None
        gc.collect()
        if _cuda():
            import torch

            torch.cuda.empty_cache()

    def run(self, directory: JobDirectory) -> int:
        """One job; 0 when its results were written, 1 when its outcome says why not."""
        started = time.perf_counter()
        try:
            spec = directory.read_spec()
            results, samples, warm = self.evaluate(spec, directory)
            self.record(directory, spec, results, samples, warm, time.perf_counter() - started)
            say("corral: lm-eval finished")
            return 0
        except BaseException as error:  # everything is reported: the agent decides what to tell the server
            traceback.print_exc()
            sys.stdout.flush()
            directory.write_outcome(outcome_of(error))
            return 1
        finally:
            for manager in self.task_managers.values():
                manager.loaded = None  # the job's tasks, datasets and requests: not kept while the worker idles

    def evaluate(self, spec: JobSpec, directory: JobDirectory) -> tuple[dict[str, Any], Any, bool]:
        """lm-eval's results for the job, its logged samples, and whether the model was loaded already."""
        import lm_eval

        from corral_runner.progress import ObservedTaskManager, ProgressHook

        settings = spec.settings
        tasks = [task.name for task in spec.tasks]
        fewshot = {task.num_fewshot for task in spec.tasks}
        if self.sandbox_note:
            say(self.sandbox_note)
        say(f"corral: lm-eval {settings.backend} on {tasks} with {model_args(spec, self.device_for(spec))}")
        lm, warm = self.model(spec)  # before the task index: weights that will not load fail in seconds
        say("corral: model already loaded by the previous job" if warm else "corral: model loaded")
        include = task_folder(spec)
        if include not in self.task_managers:  # indexing lm-eval's thousands of task files takes seconds
            self.task_managers[include] = (
                ObservedTaskManager(include_path=include) if include else ObservedTaskManager()
            )
        manager = self.task_managers[include]
        hook = ProgressHook(manager, directory.progress_file, names=tasks)
        hook.set_stage("building requests")
        lm.set_cache_hook(hook)
        if _cuda():
            import torch

            for index in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(index)
        generation = generation_settings(settings)
        results = lm_eval.simple_evaluate(
            model=lm,
            model_args=model_args(spec, self.device_for(spec)),
            tasks=tasks,
            num_fewshot=fewshot.pop() if len(fewshot) == 1 else None,
            batch_size=settings.batch_size,
            device=self.device_for(spec),
            limit=settings.limit,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=settings.fewshot_as_multiturn,
            gen_kwargs=generation.as_arguments() if generation is not None else None,
            log_samples=True,
            task_manager=manager,
        )
        if results is None:
            raise RuntimeError("lm-eval returned no results")
        hook.set_stage("writing results", finished=True)
        return results, results.pop("samples", None), warm

    @staticmethod
    def record(
        directory: JobDirectory, spec: JobSpec, results: dict[str, Any], samples: Any, warm: bool, seconds: float
    ) -> None:
        """The results document as Corral keeps it: lm-eval's, with what ran it."""
        from lm_eval.utils import handle_non_serializable

        results["config"]["model"] = spec.settings.backend  # as the lm_eval CLI records it
        # lm-eval records `git describe` of the working directory, which is Corral's checkout here, not lm-eval's:
        # the commit of lm-eval itself is known only for an install from git.
        corral_commit = results.get("git_hash")
        results["git_hash"], results["upper_git_hash"] = lm_eval_commit(), None
        results["corral_runner"] = {
            **environment(),
            "wall_seconds": round(seconds, 3),
            "peak_memory_bytes": peak_memory(),
            "model_was_loaded": warm,
            "corral_git_hash": corral_commit,
        }
        directory.write_results(
            json.dumps(results, default=handle_non_serializable), json.dumps(samples, default=handle_non_serializable)
        )


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


def task_folder(spec: JobSpec) -> str | None:
    """The suite's task files on this machine: the spec names them relative to the evals package, of which
    every machine that runs jobs has its own copy."""
    if spec.include_path is None:
        return None
    return str(EVALS_DIR / spec.include_path) if not Path(spec.include_path).is_absolute() else spec.include_path


def run_job(worker: Worker, spec_path: Path) -> int:
    """Run one job beside its task files (lm-eval resolves their relative data_files from there)."""
    directory = JobDirectory(spec_path.resolve().parent)
    redirect_output(directory.log)
    os.chdir(task_folder(directory.read_spec()) or directory.path)
    code = worker.run(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    directory.mark_done(code)
    return code


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
    from corral_runner.sandbox import SandboxUnavailable, seal

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
