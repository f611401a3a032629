"""The runner's configuration: a JSON file (written by `corral-runner register`) and CORRAL_RUNNER_* overrides."""

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from evals.executors.settings import Executor, LocalExecutor


def default_path() -> Path:
    explicit = os.environ.get("CORRAL_RUNNER_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "corral" / "runner.json"


class RunnerConfig(BaseModel):
    server: str = Field(description="The Corral server's base URL.")
    token: SecretStr = Field(description="This runner's own token (crl_...).")
    spool_dir: Path = Field(description="Finished results wait here until the server has them.")
    work_dir: Path = Field(description="Per-job scratch space (job spec, logs, lm-eval output).")
    hf_token: SecretStr | None = Field(default=None, description="For gated weights on the Hub.")
    hf_cache_dir: Path | None = None
    local_models: dict[str, Path] = Field(
        default_factory=dict, description="Hub repo id -> local directory, for air-gapped clusters."
    )
    claim_wait_seconds: float = 25.0
    warm_worker: bool = Field(
        default=True, description="Keep the model loaded between jobs of the same model (one worker process)."
    )
    worker_idle_seconds: float = Field(
        default=300.0, description="Stop a warm worker (and free its memory) after this long without a job."
    )
    hand_back_on_sigterm: bool = Field(
        default=False, description="SIGTERM hands the running job back to the queue instead of finishing it."
    )
    device: str | None = Field(default=None, description="torch device for the hf backend; default cuda if present.")
    executor: Executor = Field(
        default_factory=LocalExecutor,
        description="Where jobs run: this machine (local), through Slurm (slurm) or as Kubernetes Jobs (kubernetes).",
    )

    @field_validator("spool_dir", "work_dir", "hf_cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # The lm-eval child runs in another directory: a relative path would point elsewhere there.
        return value.expanduser().resolve() if value is not None else None

    @model_validator(mode="after")
    def _private_state_apart(self) -> "RunnerConfig":
        # The agent keeps lease tokens under work_dir; the cluster's directory is read by every compute node.
        shared = getattr(self.executor, "work_dir", None)
        if shared is not None and (shared == self.work_dir or self.work_dir.is_relative_to(shared)):
            raise ValueError("executor.work_dir (shared with the compute nodes) must not hold the agent's work_dir")
        return self

    @classmethod
    def load(cls, path: Path | None = None, **given: object) -> "RunnerConfig":
        """The file, then CORRAL_RUNNER_* variables, then `given` (command-line values) on top."""
        path = path or default_path()
        data = json.loads(path.read_text()) if path.exists() else {}
        overrides = {
            "server": os.environ.get("CORRAL_RUNNER_SERVER"),
            "token": os.environ.get("CORRAL_RUNNER_TOKEN"),
            "spool_dir": os.environ.get("CORRAL_RUNNER_SPOOL_DIR"),
            "work_dir": os.environ.get("CORRAL_RUNNER_WORK_DIR"),
            "hf_token": os.environ.get("HF_TOKEN"),
            "hf_cache_dir": os.environ.get("CORRAL_RUNNER_HF_CACHE_DIR"),
        }
        data |= {key: value for key, value in overrides.items() if value}
        data |= given
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "corral-runner"
        data.setdefault("spool_dir", str(state / "spool"))
        data.setdefault("work_dir", str(state / "work"))
        return cls.model_validate(data)

    def save(self, path: Path | None = None) -> Path:
        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self.model_dump(mode="json")
        document["token"] = self.token.get_secret_value()
        if self.hf_token is not None:
            document["hf_token"] = self.hf_token.get_secret_value()
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)  # it holds the runner's token
        return path
