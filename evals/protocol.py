"""The runner protocol's documents as the agent reads them (app/wire, the one package it shares with the server,
so that the server's rules are checked again here), and the files the agent and lm-eval's process exchange."""

import uuid

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.wire.generation import GenerationSettings
from corral.wire.protocol import (
    Accelerator,
    ClaimedJob,
    ClaimedTask,
    ClaimEnvelope,
    Failure,
    Heartbeat,
    HeartbeatReply,
    JobPlacement,
    JobSettings,
    Progress,
    Release,
    ReportedCategory,
    ResultStored,
    RunnerRegister,
    RunnerReport,
    VerifiedRunner,
)

__all__ = [
    "Accelerator",
    "ClaimEnvelope",
    "ClaimedJob",
    "ClaimedTask",
    "Failure",
    "Heartbeat",
    "HeartbeatReply",
    "JobPlacement",
    "JobRefused",
    "JobSettings",
    "JobSpec",
    "Outcome",
    "Progress",
    "Release",
    "ReportedCategory",
    "ResultStored",
    "RunnerRegister",
    "RunnerReport",
    "Sandbox",
    "VerifiedRunner",
]


class JobRefused(Exception):
    """A claimed job this runner will not run: the server is told why (harness_error) and nothing of it runs."""

    def __init__(self, envelope: ClaimEnvelope, reason: str) -> None:
        super().__init__(reason)
        self.envelope = envelope
        self.reason = reason


def _problems(error: ValidationError, within: tuple[str, ...] = ()) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in (*within, *problem['loc']))}: {problem['msg']}"
        for problem in error.errors()[:5]
    )


def read_claim(document: object) -> ClaimedJob:
    """The claim, held to the wire's rules and its generation settings to the allow-list; JobRefused (with what
    is needed to answer it) when it breaks one."""
    envelope = ClaimEnvelope.model_validate(document)
    try:
        job = ClaimedJob.model_validate(document)
    except ValidationError as error:
        raise JobRefused(envelope, f"corral-runner refused the job: {_problems(error)}") from None
    try:
        generation_settings(job.settings)
    except ValidationError as error:
        words = _problems(error, ("settings", "gen_kwargs"))
        raise JobRefused(envelope, f"corral-runner refused the job: {words}") from None
    return job


def generation_settings(settings: JobSettings) -> GenerationSettings | None:
    """The job's generation settings, as read_claim checked them."""
    return None if settings.gen_kwargs is None else GenerationSettings.model_validate(settings.gen_kwargs)


class FileDocument(BaseModel):
    # Written by this agent and read by lm-eval's process on the same or a compute node: a newer agent's extra
    # fields are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Sandbox(FileDocument):
    """What the lm-eval process must not reach on its machine (evals/sandbox.py): the runner's own files."""

    hidden: list[str] = Field(default_factory=list, description="Absolute paths: neither read nor written.")
    kept: list[str] = Field(default_factory=list, description="Absolute paths under `hidden` it keeps (its job).")


class JobSpec(FileDocument):
    """One job as lm-eval's process runs it (`spec.json`): the claim without its lease token, with where this
    runner keeps the weights and task files."""

    attempt_id: uuid.UUID
    job_id: uuid.UUID
    model: str
    revision: str
    tasks: list[ClaimedTask]
    settings: JobSettings
    placement: JobPlacement = Field(default_factory=JobPlacement)
    include_path: str | None = Field(default=None, description="The task files (absolute on a local runner).")
    local_path: str | None = Field(default=None, description="The weights in a local directory, not the Hub.")
    device: str | None = Field(default=None, description="torch device; None: the process picks (CUDA, else CPU).")
    sandbox: Sandbox | None = Field(default=None, description="What to hide before anything of the job runs.")

    @classmethod
    def of(
        cls,
        job: ClaimedJob,
        *,
        include_path: str | None,
        local_path: str | None,
        device: str | None,
        sandbox: Sandbox | None = None,
    ) -> "JobSpec":
        return cls(
            attempt_id=job.attempt_id,
            job_id=job.job_id,
            model=job.model,
            revision=job.revision,
            tasks=job.tasks,
            settings=job.settings,
            placement=job.placement,
            include_path=include_path,
            local_path=local_path,
            device=device,
            sandbox=sandbox,
        )


class Outcome(FileDocument):
    """Why a job ended without results, as lm-eval's process saw it (`outcome.json`)."""

    category: ReportedCategory = "harness_error"
    message: str | None = None
    unfit: bool = Field(
        default=False,
        description="The machine lacks what every job needs (CUDA, a driver): its runner takes no job until fixed.",
    )
