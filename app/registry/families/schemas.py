import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from corral.fields import IsoDate, Name, Note, Slug
from corral.schemas import NotNull, ReadModel, WriteModel

FamilySort = Literal["slug", "-slug", "release_date", "-release_date", "created_at", "-created_at"]


class FamilyCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "slug": "llama-3.1",
                    "name": "Llama 3.1",
                    "vendor": "Meta",
                    "release_date": "2024-07-23",
                    "license": "llama3.1",
                }
            ]
        }
    )

    slug: Slug
    name: Name
    vendor: str = Field(min_length=1, max_length=100)
    release_date: IsoDate | None = None
    license: Slug | None = Field(default=None, description="Slug of the licence its models are released under.")
    description: Note | None = None
    source_note: Note | None = None
    unverified: list[str] = Field(default_factory=list, max_length=50)


class FamilyUpdate(WriteModel):
    name: NotNull[Name] = None
    vendor: NotNull[Annotated[str, Field(min_length=1, max_length=100)]] = None
    release_date: IsoDate | None = None
    license: Slug | None = None
    description: Note | None = None
    source_note: Note | None = None
    unverified: NotNull[Annotated[list[str], Field(max_length=50)]] = None


class FamilyRead(ReadModel):
    id: uuid.UUID
    slug: str
    name: str
    vendor: str
    release_date: date | None
    license: str | None = Field(description="Licence slug.")
    description: str | None
    source_note: str | None
    unverified: list[str]
    created_at: datetime
    updated_at: datetime
