"""What makes two evaluation requests the same evaluation: every setting that changes scores, hashed canonically.

Batch size, priority and labels are left out on purpose: they change how and where a run goes, not its scores.
"""

import hashlib
import json
from typing import TypedDict


class EvaluationConfig(TypedDict):
    """The settings an evaluation's scores depend on; stored with the evaluation and hashed into its identity."""

    model: str
    revision: str
    suite: str
    suite_version: str
    harness_version: str
    backend: str
    precision: str
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    num_fewshot: int | None
    limit: int | float | None
    seed: int | None
    gen_kwargs: dict[str, bool | int | float | str] | None


def config_hash(config: EvaluationConfig) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces), so key order and formatting never split an identity."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
