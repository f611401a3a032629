"""What a Hub sync answers, and the Hub's commit listing; a model's sync state is part of the registry's model view."""

from pydantic import Field

from corral.registry.models.schemas import HubState
from corral.schemas import ReadModel


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
