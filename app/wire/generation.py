"""Generation settings are data, never code: the one allow-list of what `gen_kwargs` may carry to lm-eval (and
through it to transformers' `generate()` or vLLM's `SamplingParams`), checked by the server on every request and
import and by the runner on every job it claims.

Anything else is refused by name. Some keys would do far more than tune sampling: `custom_generate` makes
transformers download `custom_generate/generate.py` from a Hub repository and run it, and the generation modes
transformers 5 moved out of its core (contrastive search, group beam search, DoLa, constrained beam search) load
their code from the Hub the same way.
"""

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Backend = Literal["hf", "vllm"]
# Generation settings as lm-eval takes them (and as an evaluation's config stores them).
GenerationArguments: TypeAlias = dict[str, bool | int | float | str | list[str]]


def _number(value: Any) -> Any:
    # JSON numbers only: pydantic's lax float would take "0.7" and true.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


# The bounds before the validator, so that JSON Schema shows them as minimum/maximum.
Temperature = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False), BeforeValidator(_number)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), BeforeValidator(_number)]
PositiveProbability = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), BeforeValidator(_number)]
Penalty = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False), BeforeValidator(_number)]
StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=100)]

# Keys that name or load code, each with why it is refused (others are refused as unknown).
RUNS_CODE: dict[str, str] = {
    "custom_generate": "downloads custom_generate/generate.py from a Hub repository and runs it",
    "trust_remote_code": "lets transformers run a repository's own Python; only an admin grants it, per revision",
    "assistant_model": "loads a second model (and whatever code it names)",
    "assistant_tokenizer": "loads a second tokenizer",
    "logits_processor": "a callable",
    "stopping_criteria": "a callable",
    "prefix_allowed_tokens_fn": "a callable",
    "streamer": "a callable",
    "generation_config": "an object that can carry any of the above",
    "penalty_alpha": "contrastive search, whose code transformers loads from a Hub repository",
    "num_beam_groups": "group beam search, whose code transformers loads from a Hub repository",
    "diversity_penalty": "group beam search, whose code transformers loads from a Hub repository",
    "dola_layers": "DoLa decoding, whose code transformers loads from a Hub repository",
    "constraints": "constrained beam search, whose code transformers loads from a Hub repository",
    "force_words_ids": "constrained beam search, whose code transformers loads from a Hub repository",
    "cache_implementation": "switches transformers to other generation machinery",
}


class GenerationSettings(BaseModel):
    """Generation settings lm-eval applies to every generative task of the suite (its `gen_kwargs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_sample: StrictBool | None = Field(default=None, description="Sample instead of greedy decoding.")
    temperature: Temperature | None = None
    top_p: PositiveProbability | None = None
    top_k: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Penalty | None = None
    max_gen_toks: Annotated[StrictInt, Field(ge=1, le=131_072)] | None = Field(
        default=None, description="Most tokens generated per answer (lm-eval's own setting)."
    )
    until: Annotated[list[StopSequence], Field(min_length=1, max_length=16)] | None = Field(
        default=None, description="Stop sequences (lm-eval's own setting); one string is taken as a list of one."
    )
    num_beams: Annotated[StrictInt, Field(ge=1, le=16)] | None = Field(
        default=None, description="Beam search width; the hf backend only."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_by_name(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, dict):
            refused = [key for key in data if key not in cls.model_fields]
            if refused:
                raise PydanticCustomError("generation_setting", "{detail}", {"detail": refusal(refused)})
        return handler(data)

    @field_validator("until", mode="before")
    @classmethod
    def _one_stop_sequence(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def as_arguments(self) -> GenerationArguments:
        """What lm-eval is handed: the settings given, nothing more."""
        return self.model_dump(exclude_none=True)


def refusal(keys: list[str]) -> str:
    """Why each key is refused, naming it, and what is allowed instead."""
    reasons = [f"{key!r} {RUNS_CODE[key]}" if key in RUNS_CODE else f"{key!r} is not one" for key in keys]
    allowed = ", ".join(GenerationSettings.model_fields)
    return f"not an allowed generation setting: {'; '.join(reasons)} (allowed: {allowed})"


def backend_refusal(settings: GenerationSettings, backend: Backend) -> str | None:
    """A setting the backend cannot apply (vLLM's SamplingParams has no beam width)."""
    if backend == "vllm" and settings.num_beams is not None:
        return "num_beams is a setting of the hf backend; vllm has no beam search through lm-eval"
    return None
