"""Field types the schemas share (registry, runners, hardware): identifiers with their shapes and sane bounds."""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, HttpUrl, StringConstraints, TypeAdapter, ValidationError

from corral.schemas import Integer, IsoDate, IsoDateTime
from corral.wire.protocol import Tag

__all__ = ["IsoDate", "IsoDateTime", "Tag"]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
# The Hub's rule: letters, digits, '_', '-', '.'; not starting or ending with '-' or '.', no '--' or '..'.
_SEGMENT = r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*"


def _segments_fit(repo_id: str) -> str:
    if any(len(segment) > 96 for segment in repo_id.split("/")):
        raise ValueError("owner and name are at most 96 characters each")
    return repo_id


RepoId = Annotated[
    str,
    StringConstraints(max_length=193, pattern=rf"^{_SEGMENT}/{_SEGMENT}$"),
    AfterValidator(_segments_fit),
    Field(description="Hugging Face Hub repo id, `owner/name`.", examples=["meta-llama/Llama-3.1-8B-Instruct"]),
]
# Path segments of a repo id: /v1/models/{owner}/{name}.
RepoSegment = Annotated[str, StringConstraints(max_length=96, pattern=rf"^{_SEGMENT}$")]
CommitSha = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{40}$"),
    Field(
        description="A full 40-character lowercase commit sha.", examples=["0e9e39f249a16976918f6564b8830bc894c89659"]
    ),
]
# At most 39 characters, so never a 40-character sha: `revisions/{sha or alias}` is never ambiguous.
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,38}$"
AliasName = Annotated[
    str,
    StringConstraints(pattern=ALIAS_PATTERN),
    Field(examples=["champion", "latest"]),
]


def _parsable_url(url: str) -> str:
    # The pattern alone took `http://[` (an unclosed IPv6 host): clients' URL parsers crash on such values.
    try:
        _HTTP_URL.validate_python(url)
    except ValidationError as error:
        raise ValueError(f"not a valid http(s) URL: {error.errors()[0]['msg']}") from None
    return url


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)
Url = Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://\S+$"), AfterValidator(_parsable_url)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(max_length=4000)]
Modality = Literal["text", "image", "audio", "video"]

# Upper bounds keep absurd sizes out while leaving room for models much larger than today's.
Count = Annotated[Integer, Field(ge=1, le=10_000_000)]
MAX_PARAMETERS = 100_000_000_000_000
ParameterCount = Annotated[Integer, Field(ge=1, le=MAX_PARAMETERS, description="Exact count, no rounding.")]
ContextLength = Annotated[Integer, Field(ge=1, le=1_000_000_000, description="Tokens.")]
