import uuid
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from app.fields import CommitSha
from app.schemas import JsonField, ReadModel, WriteModel

RevisionSort = Literal["created_at", "-created_at"]


class RevisionCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sha": "0e9e39f249a16976918f6564b8830bc894c89659",
                    "ref": "main",
                    "snapshot": {"library_name": "transformers", "gated": "manual"},
                }
            ]
        }
    )

    sha: CommitSha
    ref: str | None = Field(default=None, max_length=200, description="The branch or tag it was taken from.")
    snapshot: JsonField = Field(default_factory=dict, description="Metadata as of this commit (free-form).")


class RevisionRead(ReadModel):
    id: uuid.UUID
    model: str = Field(description="Repo id.")
    sha: str
    ref: str | None
    source: str = Field(description="manual, or hub when synced from the Hub.")
    snapshot: JsonField
    aliases: list[str]
    created_at: datetime


class AliasSet(WriteModel):
    sha: CommitSha


class AliasRead(ReadModel):
    name: str
    sha: str
    revision_id: uuid.UUID
    updated_at: datetime
