"""The runner protocol's documents as the agent reads them (app/wire: the one package it shares with the server,
so the server's rules are checked again here), and the job spec it hands to the lm-eval worker."""

from pydantic import Field, ValidationError

from app.wire.job import ClaimedJob, ClaimedTask, ClaimEnvelope, JobPlacement, JobSettings, Wire

__all__ = [
    "ClaimEnvelope",
    "ClaimedJob",
    "ClaimedTask",
    "JobPlacement",
    "JobRefused",
    "JobSettings",
    "JobSpec",
    "Outcome",
    "Sandbox",
]


class JobRefused(Exception):
    """A claimed job this runner will not run: the server is told why (harness_error) and nothing of it runs."""

    def __init__(self, envelope: ClaimEnvelope, reason: str) -> None:
        super().__init__(reason)
        self.envelope = envelope
        self.reason = reason


def read_claim(document: object) -> ClaimedJob:
    """The claim, held to the wire's rules; JobRefused (with what is needed to answer it) when it breaks one."""
    envelope = ClaimEnvelope.model_validate(document)
    try:
        return ClaimedJob.model_validate(document)
    except ValidationError as error:
        reasons = [
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()[:5]
        ]
        raise JobRefused(envelope, "corral-runner refused the job: " + "; ".join(reasons)) from None


class Sandbox(Wire):
    """What the lm-eval process must not reach on its machine (evals/sandbox.py): the runner's own files."""

    hidden: list[str] = Field(default_factory=list, description="Absolute paths: neither read nor written.")
    kept: list[str] = Field(default_factory=list, description="Absolute paths under `hidden` it keeps (its job).")


class JobSpec(Wire):
    """One job as the lm-eval worker runs it (`spec.json`): the claim without its lease token, with where this
    runner keeps the weights and task files."""

    attempt_id: str
    job_id: str
    model: str
    revision: str
    tasks: list[ClaimedTask]
    settings: JobSettings
    placement: JobPlacement = Field(default_factory=JobPlacement)
    include_path: str | None = Field(default=None, description="Absolute: the task files on this machine.")
    local_path: str | None = Field(default=None, description="The weights in a local directory, not the Hub.")
    device: str | None = None
    sandbox: Sandbox | None = Field(default=None, description="For a cluster job: applied on its compute node.")

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


class Outcome(Wire):
    """Why a job ended without results, as the worker saw it (`outcome.json`)."""

    category: str = "harness_error"
    message: str | None = None
