"""Accelerator memory an evaluation needs: the hardware estimator at the requested precision, with the KV cache
sized for the suite's context (capped at the model's own context length)."""

from dataclasses import dataclass, field

from app.hardware import estimator
from app.registry.models.service import architecture_of
from app.tables import Model


@dataclass(frozen=True)
class MemoryNeed:
    total_bytes: int
    device_bytes: int
    context_tokens: int
    notes: list[str] = field(default_factory=list)


def evaluation_memory(model: Model, *, precision: str, suite_context_tokens: int) -> MemoryNeed:
    tokens = min(suite_context_tokens, model.context_length or suite_context_tokens)
    parameters = model.parameter_count
    arch = architecture_of(model)
    if parameters is None:
        return MemoryNeed(0, 0, tokens, ["Parameter count unknown: any runner may take it (sync it from the Hub)."])
    weights = estimator.weight_bytes(parameters, precision)
    if arch is None:
        total = estimator.with_overhead(weights)
        return MemoryNeed(total, total, tokens, ["Architecture unknown: weights only, on a single device."])
    kv_precision = estimator.default_kv_precision(precision)
    head_dim = arch.resolved_head_dim
    kv = estimator.kv_cache_bytes(arch.num_layers, arch.num_kv_heads, head_dim, tokens, 1, kv_precision)
    total = estimator.with_overhead(weights + kv)
    device = estimator.largest_piece_bytes(arch, weights, kv, precision)
    return MemoryNeed(
        total, min(device, total), tokens, ["Batch size 1 for the KV cache; `auto` grows into spare memory."]
    )
