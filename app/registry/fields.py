"""Field types the registry's schemas share: identifiers with their shapes and sane bounds."""

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StringConstraints

from app.schemas import IsoDate, IsoDateTime

__all__ = ["IsoDate", "IsoDateTime"]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
RepoId = Annotated[
    str,
    StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"),
    Field(description="Hugging Face Hub repo id, `owner/name`.", examples=["meta-llama/Llama-3.1-8B-Instruct"]),
]
# Path segments of a repo id: /v1/models/{owner}/{name}.
RepoSegment = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")]
CommitSha = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{40}$"),
    Field(
        description="A full 40-character lowercase commit sha.", examples=["0e9e39f249a16976918f6564b8830bc894c89659"]
    ),
]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._:+-]{0,63}$")]
AliasName = Annotated[
    str,
    # At most 39 characters, so never a 40-character sha: `revisions/{sha or alias}` is never ambiguous.
    StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,38}$"),
    Field(examples=["champion", "latest"]),
]
Url = Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://\S+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(max_length=4000)]
Modality = Literal["text", "image", "audio", "video"]

# Upper bounds keep absurd sizes out while leaving room for models much larger than today's.
Count = Annotated[StrictInt, Field(ge=1, le=10_000_000)]
ParameterCount = Annotated[StrictInt, Field(ge=1, le=100_000_000_000_000, description="Exact count, no rounding.")]
ContextLength = Annotated[StrictInt, Field(ge=1, le=1_000_000_000, description="Tokens.")]
