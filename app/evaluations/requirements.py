"""Accelerator memory an evaluation needs: the fit rule (app/hardware/fit.py) at the requested precision, with the
KV cache sized for the suite's context (capped at the model's own context length)."""

from dataclasses import replace

from corral.hardware import fit
from corral.hardware.estimator import architecture_of
from corral.hardware.fit import MemoryNeed
from corral.tables import Model

BATCH_NOTE = "Batch size 1 for the KV cache; `auto` grows into spare memory."


def evaluation_memory(model: Model, *, precision: str, suite_context_tokens: int) -> MemoryNeed:
    need = fit.inference_need(
        architecture_of(model),
        model.parameter_count,
        precision=precision,
        context_tokens=fit.context_for(suite_context_tokens, model.context_length),
        stored=fit.stored_release(model.default_dtype, model.stored_weight_bytes),
    )
    return need if need.notes else replace(need, notes=(BATCH_NOTE,))
