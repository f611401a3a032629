"""The bases of every document on the wire, and the field types both sides read the same way."""

from typing import Annotated, Any, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, JsonValue, StrictInt, WithJsonSchema, model_validator

# JSON that Corral does not shape itself (lm-eval's results, the Hub's config, a caller's free-form snapshot): JSON
# values all the way down, so a reader has to look at what it got before using it; shown to clients as an object.
JsonObject: TypeAlias = dict[str, JsonValue]
AS_OBJECT = WithJsonSchema({"type": "object", "additionalProperties": True})


def _integral(value: Any) -> Any:
    # JSON Schema counts 41.0 as an integer and generated clients send it so: take it as 41, never 41.5.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer in a request body: strict (JSON `true` and `"5"` are not integers) but integral floats count.
Integer = Annotated[StrictInt, BeforeValidator(_integral)]


def unstorable(text: str) -> str | None:
    """Why no database can store this text: a NUL, or a lone UTF-16 surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return "contains a NUL (U+0000) character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode text)"
    return None


def find_unstorable(value: Any, path: str) -> tuple[str, str] | None:
    """The first text (or key) beneath `value` no database can store: (its path, why)."""
    if isinstance(value, str):
        reason = unstorable(value)
        return (path, reason) if reason else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and (reason := unstorable(key)):
            return f"{path}/{key!r}", reason
        found = find_unstorable(item, f"{path}/{key}")
        if found is not None:
            return found
    return None


class Request(BaseModel):
    """What a client sends: an unknown field is an error, not silently dropped."""

    # Booleans and integers in requests are StrictBool / Integer: JSON `0` is not `false` and `"5"` is not `5`.
    # FastAPI validates decoded Python objects, so a model-wide strict mode would also refuse ISO date strings
    # and enum values.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _only_storable_text(cls, data: Any) -> Any:
        # PostgreSQL cannot store U+0000 or a lone surrogate in text or JSONB; refuse them here rather than
        # fail in the database (SQLite would store what PostgreSQL refuses: the two must agree).
        found = find_unstorable(data, "")
        if found is not None:
            path, reason = found
            raise ValueError(f"{path or 'body'}: {reason}")
        return data


class Reply(BaseModel):
    """What a server answers: built from its records; a reader ignores fields a newer server adds."""

    model_config = ConfigDict(from_attributes=True)
