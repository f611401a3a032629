"""What the server reads of an upload; the runner protocol's documents themselves are the wire's
(app/wire/protocol.py), shared with the runner agent."""

from pydantic import BaseModel, ConfigDict, Field

from corral.schemas import JsonField


class LmEvalResults(BaseModel):
    """The parts of lm-eval's results JSON (0.4.x) that make it one; the rest is kept as sent."""

    model_config = ConfigDict(extra="allow")

    results: dict[str, JsonField] = Field(min_length=1)
    configs: dict[str, JsonField] = Field(default_factory=dict)
    versions: JsonField = Field(default_factory=dict)
    groups: dict[str, JsonField] = Field(default_factory=dict)
    n_shot: JsonField = Field(default_factory=dict, alias="n-shot")
    lm_eval_version: str | None = Field(default=None, max_length=32)
