import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from corral.fields import Tag
from corral.schemas import Integer, NotNull, ReadModel, WriteModel
from corral.wire.enums import RunnerState
from corral.wire.protocol import Accelerator, Capabilities, RunnerCreate, RunnerRegister, RunnerReport

__all__ = ["Accelerator", "Capabilities", "RunnerCreate", "RunnerRegister", "RunnerReport"]

RunnerSort = Literal["name", "-name", "created_at", "-created_at"]
ONLINE_WITHIN_SECONDS = 120


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
