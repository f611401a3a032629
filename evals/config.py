"""The runner's configuration: a JSON file (written by `corral-runner register`) and CORRAL_RUNNER_* overrides."""

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator

from corral_runner.environment import job_environment, never_passed
from corral_runner.executors.settings import Backend, Executor, LocalExecutor
from corral_runner.files import write_whole


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
    allow_remote_code: bool = Field(
        default=False,
        description="Run jobs whose revision an admin trusted (trust_remote_code): the repository's own Python runs "
        "here. The server sends such jobs only to runners labelled trusted-code; this is the operator's consent.",
    )
    sandbox: bool = Field(
        default=True,
        description="Hide this runner's config, spool and lease files from lm-eval (Landlock, Linux 5.13+).",
    )
    job_env_passthrough: list[str] = Field(
        default_factory=list, description="More variables a job gets from the agent's environment, by name."
    )
    job_env: dict[str, str] = Field(default_factory=dict, description="Variables set for every job.")
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("spool_dir", "work_dir", "hf_cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # The lm-eval child runs in another directory: a relative path would point elsewhere there.
        return value.expanduser().resolve() if value is not None else None

    @field_validator("job_env_passthrough", "job_env")
    @classmethod
    def _no_secret_for_jobs(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        refused = sorted(name for name in value if never_passed(name))
        if refused:
            raise ValueError(f"{', '.join(refused)}: a job never gets Corral's settings or the Hub token this way")
        return value

    @model_validator(mode="after")
    def _spool_beside_the_work(self) -> "RunnerConfig":
        # Jobs' directories are made under work_dir as they come; the sandbox hides the spool, and nothing new
        # can be made in a folder on the way to a hidden one.
        if self.spool_dir == self.work_dir or self.spool_dir.is_relative_to(self.work_dir):
            raise ValueError("spool_dir must not be work_dir or lie inside it")
        return self

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
        config = cls.model_validate(data)
        config._path = path.expanduser().resolve() if path.exists() else None
        return config

    @property
    def path(self) -> Path | None:
        """The file this configuration was read from (it holds the runner's token), if any."""
        return self._path

    def private_paths(self) -> list[Path]:
        """What no job may read or write: the config file, and the spool (lease tokens: the held attempts' state
        files and results on their way)."""
        return [self._path, self.spool_dir] if self._path is not None else [self.spool_dir]

    @property
    def held_dir(self) -> Path:
        """The state files of the attempts this runner holds (lease tokens): private, beside the spool."""
        return self.spool_dir / "held"

    @property
    def jobs_root(self) -> Path:
        """Where jobs' directories are made: the storage a cluster's nodes share, else this machine's work_dir."""
        shared = getattr(self.executor, "work_dir", None)
        return shared if isinstance(shared, Path) else self.work_dir

    def backends(self) -> list[Backend]:
        """The lm-eval backends jobs can use: a cluster's as configured, this machine's as installed."""
        if isinstance(self.executor, LocalExecutor):
            from corral_runner.hardware import backends

            return backends()
        return list(self.executor.backends)

    def job_environment(self, *, needs_hub_token: bool, local: bool) -> dict[str, str]:
        """The environment of one job (evals/environment.py): named variables, the Hub token only if needed."""
        token = self.hf_token.get_secret_value() if self.hf_token is not None and needs_hub_token else None
        return job_environment(
            os.environ,
            passthrough=self.job_env_passthrough,
            extra=self.job_env,
            hf_cache_dir=str(self.hf_cache_dir) if self.hf_cache_dir is not None else None,
            hf_token=token,
            local=local,
        )

    def save(self, path: Path | None = None) -> Path:
        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self.model_dump(mode="json")
        document["token"] = self.token.get_secret_value()
        if self.hf_token is not None:
            document["hf_token"] = self.hf_token.get_secret_value()
        write_whole(path, json.dumps(document, indent=2), private=True)  # it holds the runner's token
        return path
