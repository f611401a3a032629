from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.models import Model
from app.schemas import ReadModel

HubSyncStatus = Literal["ok", "gated", "error"]


class Disagreement(ReadModel):
    field: str
    registry: Any = Field(description="What Corral has recorded (kept).")
    hub: Any = Field(description="What the Hub says.")


class HubState(ReadModel):
    """How this model tracks the Hub."""

    ref: str | None = Field(description="The branch or tag synced.")
    sha: str | None = Field(description="The commit it pointed at on the last successful sync.")
    status: HubSyncStatus | None = Field(description="null until the first sync.")
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    next_sync_at: datetime | None
    disagreements: list[Disagreement]


class SyncResult(ReadModel):
    model: str
    sha: str
    revision_created: bool = Field(description="False when the Hub's commit was recorded already.")
    filled: list[str] = Field(description="Model fields filled in from the Hub (they were empty).")
    hub: HubState


class HubCommit(ReadModel):
    sha: str
    date: str
    title: str
    authors: list[str]


def hub_state(model: Model) -> HubState:
    return HubState(
        ref=model.hub_ref,
        sha=model.hub_sha,
        status=model.hub_sync_status,
        last_attempt_at=model.hub_last_attempt_at,
        last_success_at=model.hub_last_success_at,
        last_error=model.hub_last_error,
        next_sync_at=model.hub_next_sync_at,
        disagreements=model.hub_disagreements,
    )
