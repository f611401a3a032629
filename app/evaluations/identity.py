"""What makes two evaluation requests the same evaluation: every setting that changes scores, hashed canonically.

Batch size, priority and labels are left out on purpose: they change how and where a run goes, not its scores.
"""

import hashlib
import json

from corral.documents import EvaluationConfig

__all__ = ["EvaluationConfig", "config_hash"]


def config_hash(config: EvaluationConfig) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces), so key order and formatting never split an identity."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
