from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    database: str = Field(description="The database family the service is using: sqlite or postgresql.")
    schema_revision: str = Field(description="The migration the database is at (the head).")
    writes: Literal["ok", "busy"] = Field(
        description="A probe write committed (ok), or found the write lock taken by other writers (busy: still ready)."
    )
