import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from app.fields import Tag
from app.schemas import Integer, NotNull, ReadModel, WriteModel
from app.tables import RunnerState

RunnerSort = Literal["name", "-name", "created_at", "-created_at"]
Backend = Literal["hf", "vllm"]
ONLINE_WITHIN_SECONDS = 120


class Accelerator(WriteModel):
    kind: str = Field(
        min_length=1,
        max_length=64,
        examples=["nvidia-h100-80gb"],
        description="Accelerator catalog slug or the device's own name.",
    )
    memory_bytes: Integer = Field(ge=1, le=10**13, description="Per device.")
    count: Integer = Field(default=1, ge=1, le=1024, description="Per node (per machine).")
    nodes: Integer = Field(
        default=1,
        ge=1,
        le=100_000,
        description="Nodes of this shape (a cluster runner: Slurm nodes, Kubernetes nodes).",
    )


class Capabilities(WriteModel):
    """What the machine offers; the runner reports these itself on registration and on verify."""

    labels: list[Tag] = Field(default_factory=list, max_length=50)
    accelerators: list[Accelerator] = Field(default_factory=list, max_length=64)
    backends: list[Backend] = Field(default_factory=lambda: ["hf"], min_length=1)  # type: ignore[arg-type]
    lm_eval_version: str | None = Field(default=None, max_length=32, pattern=r"^[0-9A-Za-z.+-]+$")
    max_concurrent_jobs: Integer = Field(default=1, ge=1, le=1024)
    max_nodes_per_job: Integer = Field(
        default=1, ge=1, le=1024, description="Nodes one job may span (vLLM pipeline parallel over Ray): a cluster's."
    )


class RunnerReport(WriteModel):
    """What a runner reports of itself when it checks in: hardware and software, not its labels or limits."""

    accelerators: list[Accelerator] = Field(default_factory=list, max_length=64)
    backends: list[Backend] = Field(default_factory=lambda: ["hf"], min_length=1)  # type: ignore[arg-type]
    lm_eval_version: str | None = Field(default=None, max_length=32, pattern=r"^[0-9A-Za-z.+-]+$")


class RunnerCreate(Capabilities):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "gpu-node-01",
                    "labels": ["datacenter-a"],
                    "accelerators": [{"kind": "nvidia-h100-80gb", "memory_bytes": 85899345920, "count": 8}],
                    "backends": ["hf", "vllm"],
                    "lm_eval_version": "0.4.13",
                    "max_concurrent_jobs": 2,
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunnerRegister(RunnerCreate):
    registration_token: str = Field(min_length=1, max_length=200, description="The single-use `crlreg_...` token.")


class RunnerUpdate(WriteModel):
    state: NotNull[RunnerState] = None
    labels: NotNull[Annotated[list[Tag], Field(max_length=50)]] = None
    max_concurrent_jobs: NotNull[Annotated[Integer, Field(ge=1, le=1024)]] = None
    max_nodes_per_job: NotNull[Annotated[Integer, Field(ge=1, le=1024)]] = None


class RunnerRead(ReadModel):
    id: uuid.UUID
    name: str
    labels: list[str]
    accelerators: list[dict[str, object]]
    backends: list[str]
    lm_eval_version: str | None
    max_concurrent_jobs: int
    max_nodes_per_job: int
    state: RunnerState
    last_contact_at: datetime | None
    online: bool = Field(description=f"Seen within the last {ONLINE_WITHIN_SECONDS} seconds.")
    created_at: datetime


class RunnerWithToken(ReadModel):
    runner: RunnerRead
    token: str = Field(description="The runner's own token (scope runner). Shown this once.")


class RegistrationTokenCreate(WriteModel):
    expires_in_seconds: Integer = Field(default=3600, ge=60, le=7 * 24 * 3600)
    labels: list[Tag] = Field(default_factory=list, max_length=50, description="Added to the runner it registers.")


class RegistrationTokenCreated(ReadModel):
    id: uuid.UUID
    token: str = Field(description="Single use; shown this once.")
    expires_at: datetime
    labels: list[str]
