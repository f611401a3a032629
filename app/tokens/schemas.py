import uuid
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from corral.schemas import IsoDateTime, ReadModel, WriteModel
from corral.wire.enums import Scope

TokenSort = Literal["created_at", "-created_at", "name", "-name"]
# Runner tokens come from runner registration, bound to their runner; they cannot be asked for here.
IssuableScope = Literal["admin", "publish", "read"]


class TokenCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "ci-main", "scope": "publish", "expires_at": "2027-06-30T00:00:00Z"}]}
    )

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$", description="What it is for.")
    scope: IssuableScope
    expires_at: IsoDateTime | None = Field(default=None, description="When it stops working; none = never.")


class TokenRead(ReadModel):
    """A token's record. The secret is never part of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6f5a0e-7c44-4a51-9f67-2d8f3f1b9c11",
                    "name": "ci-main",
                    "scope": "publish",
                    "key_id": "9f2c4e1a7b3d5f60",
                    "runner_id": None,
                    "created_at": "2026-11-26T10:00:00Z",
                    "expires_at": "2027-06-30T00:00:00Z",
                    "revoked_at": None,
                    "last_used_at": None,
                    "active": True,
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    scope: Scope
    key_id: str = Field(description="The public part of the token (after `crl_`), to recognise it in a list.")
    runner_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool = Field(description="Neither revoked nor expired.")


class TokenCreated(TokenRead):
    token: str = Field(description="The secret. Shown this once; only its hash is kept.")
