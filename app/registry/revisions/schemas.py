import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from corral.fields import CommitSha
from corral.schemas import JsonField, ReadModel, WriteModel

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


class CodeTrustGrant(WriteModel):
    """An admin's reason for letting this commit's own code run (its modelling files, tokenizer or generate())."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        examples=["Reviewed modeling_custom.py at this commit: plain PyTorch, no I/O."]
    )


class CodeTrust(ReadModel):
    at: datetime
    by: str
    reason: str


class RevisionRead(ReadModel):
    id: uuid.UUID
    model: str = Field(description="Repo id.")
    sha: str
    ref: str | None
    source: str = Field(description="manual, or hub when synced from the Hub.")
    snapshot: JsonField
    aliases: list[str]
    code_trust: CodeTrust | None = Field(
        description="Set by an admin: evaluations of this commit run with trust_remote_code, and only on runners "
        "labelled `trusted-code`. Null: the repository's own code never runs."
    )
    created_at: datetime


class AliasSet(WriteModel):
    sha: CommitSha


class AliasRead(ReadModel):
    name: str
    sha: str
    revision_id: uuid.UUID
    updated_at: datetime
