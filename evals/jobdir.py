"""One job's directory, the only place the agent and the process that runs lm-eval meet: every file's name, once.

The agent writes `spec.json`; lm-eval's process writes `log.txt` (its output), `progress.json`, then
`results.json` and `samples.json` or `outcome.json` (why not), and last `done` (its exit code): the agent reads
the others only once `done` is there. An engine keeps its own output in `engine.log` (a Slurm batch script's)
and `ray.log`.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corral.wire.base import JsonObject
from corral_runner.files import write_whole
from corral_runner.protocol import JobSpec, Outcome, Progress


@dataclass(frozen=True)
class JobDirectory:
    path: Path

    @property
    def spec(self) -> Path:
        return self.path / "spec.json"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.json"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.json"

    @property
    def outcome_file(self) -> Path:
        return self.path / "outcome.json"

    @property
    def done(self) -> Path:
        return self.path / "done"

    @property
    def engine_log(self) -> Path:
        return self.path / "engine.log"

    @property
    def ray_log(self) -> Path:
        return self.path / "ray.log"

    @property
    def script(self) -> Path:
        return self.path / "job.sh"

    def create(self) -> "JobDirectory":
        """A fresh, empty directory (what an earlier attempt of the same id left is removed)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def write_spec(self, spec: JobSpec) -> None:
        write_whole(self.spec, spec.model_dump_json())

    def read_spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.spec.read_text())

    def write_progress(self, progress: Progress) -> None:
        write_whole(self.progress_file, progress.model_dump_json(exclude_none=True))

    def progress(self) -> Progress | None:
        try:
            return Progress.model_validate_json(self.progress_file.read_text())
        except (OSError, ValidationError):
            return None

    def write_outcome(self, outcome: Outcome) -> None:
        write_whole(self.outcome_file, outcome.model_dump_json())

    def outcome(self) -> Outcome:
        """Why the job ended without results, as its process said (a harness error when it said nothing)."""
        try:
            return Outcome.model_validate_json(self.outcome_file.read_text())
        except (OSError, ValidationError):
            return Outcome()

    def write_results(self, results: str, samples: str) -> None:
        write_whole(self.results, results)
        write_whole(self.samples, samples)

    def read_results(self) -> tuple[JsonObject, Any]:
        """lm-eval's results document and its logged samples (None when there are none)."""
        results = json.loads(self.results.read_text())
        samples = json.loads(self.samples.read_text()) if self.samples.exists() else None
        return results, samples

    def mark_done(self, code: int) -> None:
        """The last file a job writes."""
        write_whole(self.done, json.dumps({"code": code}))

    def done_code(self) -> int | None:
        """The job's exit code once `done` is there; None before; 1 when `done` cannot be read."""
        try:
            return int(json.loads(self.done.read_text())["code"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    def log_tail(self, size: int) -> str:
        try:
            return self.log.read_bytes()[-size:].decode("utf-8", errors="replace")
        except OSError:  # the job never started
            return ""

    def started_lm_eval(self) -> bool:
        """Whether the job's process got as far as starting lm-eval (its first line is in the log)."""
        try:
            return b"corral: lm-eval" in self.log.read_bytes()
        except OSError:
            return False
