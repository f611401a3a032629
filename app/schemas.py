"""Models every domain shares: the problem document, the page envelope, the strict base for write models."""

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class WriteModel(BaseModel):
    """Base for request bodies: an unknown field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReadModel(BaseModel):
    """Base for response bodies, built from ORM objects."""

    model_config = ConfigDict(from_attributes=True)


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
    422: "A field is missing, of the wrong type, too long, or unknown.",
    503: "The service cannot serve this now (database unreachable or schema behind).",
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
