"""Models every domain shares: the problem document, the page envelope, the strict base for write models."""

from datetime import date
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
)
from pydantic.json_schema import SkipJsonSchema

from corral.documents import AttemptProgress, EvaluationConfig, JsonObject, ScoreSummary
from corral.wire.base import AS_OBJECT, Integer, Reply, Request

__all__ = ["AS_OBJECT", "Integer"]

T = TypeVar("T")

# JSON kept as sent (validated as JSON values), and documents shaped by app/documents.py (written by
# Corral itself, so passed through as they are): typed for the code, shown to API clients as JSON objects.
AS_WRITTEN = PlainValidator(lambda document: document)
JsonField = Annotated[JsonObject, AS_OBJECT]
ConfigField = Annotated[EvaluationConfig, AS_WRITTEN, AS_OBJECT]
SummaryField = Annotated[ScoreSummary, AS_WRITTEN, AS_OBJECT]
ProgressField = Annotated[AttemptProgress, AS_WRITTEN, AS_OBJECT]


def _iso_text(value: Any) -> Any:
    # Pydantic's lax mode would read 0 as 1970-01-01; a date must come as ISO 8601 text.
    if isinstance(value, (int, float, bool)):
        raise ValueError("expected an ISO 8601 string")
    return value


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be null; leave the field out to keep its value")
    return value


# A PATCH field that may be left out (unchanged) but never set to null; the schema shows no null branch.
NotNull = Annotated[T | SkipJsonSchema[None], AfterValidator(_refuse_null)]

IsoDate = Annotated[date, BeforeValidator(_iso_text)]
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


class WriteModel(Request):
    """Base for request bodies: an unknown field is an error, not silently dropped (app/wire/base.py)."""


class ReadModel(Reply):
    """Base for response bodies, built from ORM objects."""


class FieldError(BaseModel):
    location: str = Field(description="Where the value was: body, query, path or header.")
    pointer: str = Field(description="JSON pointer to the value within that location ('' for the whole).")
    field: str = Field(description="The same path, dotted, for people.")
    message: str
    code: str = Field(description="A stable machine-readable reason, e.g. missing, extra_forbidden.")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:corral:problem:validation-error",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "body name: Field required",
                    "instance": "/v1/tokens",
                    "request_id": "5f0c3a0e6b0f4a4c9d1e2f3a4b5c6d7e",
                    "errors": [
                        {
                            "location": "body",
                            "pointer": "/name",
                            "field": "name",
                            "message": "Field required",
                            "code": "missing",
                        }
                    ],
                }
            ]
        }
    )

    type: str = Field(description="A URI naming the kind of problem; switch on this, not on `title`.")
    title: str
    status: int
    detail: str = Field(description="What went wrong with this request, for people.")
    instance: str | None = Field(default=None, description="The path of the request.")
    request_id: str | None = Field(default=None, description="Quote it when reporting a problem.")
    errors: list[FieldError] | None = Field(default=None, description="One entry per invalid field.")


class Page(BaseModel, Generic[T]):
    """One page of a list. Pass `next_cursor` back as `cursor` for the next page; null means the end."""

    items: list[T]
    next_cursor: str | None = Field(default=None, description="Opaque; absent on the last page.")


_PROBLEM_DESCRIPTIONS = {
    304: "Not modified: the ETag given in If-None-Match still matches.",
    400: "Malformed request (bad JSON, invalid cursor).",
    401: "Missing, malformed, unknown, expired or revoked token.",
    403: "The token is valid but lacks the scope this operation needs.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    413: "The request body is larger than the server accepts.",
    415: "The body is not sent as application/json.",
    416: "A log append at the wrong offset; the Range header says where the stored log ends.",
    422: "A field is missing, of the wrong type, too long, or unknown.",
    502: "The Hugging Face Hub (or mirror) answered with an error; nothing was changed.",
    503: "A dependency is unavailable (database, or the Hub unreachable or rate-limiting); nothing was changed.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting each status as a problem+json document."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 304:
            responses[status] = {"description": _PROBLEM_DESCRIPTIONS[status]}
            continue
        responses[status] = {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "model": Problem,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return responses


# Errors any API operation may answer: malformed requests, tokens, scopes, oversized bodies, invalid fields.
COMMON_ERRORS = problem_responses(400, 401, 403, 413, 422)
