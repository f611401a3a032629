"""Requirements reports: the estimator's arithmetic, laid out per precision, method and accelerator; whether it
fits is the fit rule's answer (app/hardware/fit.py)."""

from corral.hardware import estimator, fit
from corral.hardware.catalog import accelerators
from corral.hardware.estimator import Architecture
from corral.hardware.schemas import AcceleratorFit, Bytes, HardwareRequirements, Inference, TrainingEstimate


def requirements_report(
    *,
    model: str | None,
    arch: Architecture,
    parameters: int,
    parameters_source: str,
    precision: str,
    kv_precision: str | None,
    context_tokens: int,
    batch: int,
    lora_rank: int = 16,
    notes: list[str] | None = None,
    stored: fit.StoredRelease | None = None,
) -> HardwareRequirements:
    kv_precision = kv_precision or estimator.default_kv_precision(precision)
    weights, _ = fit.weights_at(parameters, precision, stored)
    kv_per_token = fit.kv_bytes(arch, precision=precision, context_tokens=1, kv_precision=kv_precision)
    kv = fit.kv_bytes(arch, precision=precision, context_tokens=context_tokens, batch=batch, kv_precision=kv_precision)
    need = fit.inference_need(
        arch,
        parameters,
        precision=precision,
        context_tokens=context_tokens,
        batch=batch,
        kv_precision=kv_precision,
        stored=stored,
    )
    total = need.total_bytes
    adapter = estimator.lora_trainable_parameters(arch, lora_rank)
    notes = list(notes or [])
    if stored is not None:
        notes.append(
            f"Weights at {stored.precision} are the release's as stored ({stored.weight_bytes:,} bytes: quantized "
            "tensors, their scales and the layers kept in 16 bits), not parameters x bits."
        )
    if not arch.is_dense:
        notes.append("Mixture of experts: every expert is resident, so weights count all parameters, not active ones.")
    notes.append("Training estimates exclude activations, which grow with sequence length and batch size.")
    return HardwareRequirements(
        model=model,
        precision=precision,
        kv_precision=kv_precision,
        context_tokens=context_tokens,
        batch=batch,
        parameters=parameters,
        parameters_source=parameters_source,
        weights_by_precision={
            name: Bytes.of(fit.weights_at(parameters, name, stored)[0]) for name in estimator.PRECISION_BITS
        },
        kv_cache_per_token=Bytes.of(kv_per_token),
        kv_cache_formula=estimator.KV_CACHE_FORMULA,
        inference=Inference(
            weights=Bytes.of(weights),
            kv_cache=Bytes.of(kv),
            overhead=Bytes.of(total - weights - kv),
            overhead_rule=estimator.INFERENCE_OVERHEAD_RULE,
            total=Bytes.of(total),
        ),
        training=[
            TrainingEstimate(
                method="full_finetune",
                trainable_parameters=parameters,
                accounting=estimator.FULL_FINETUNE_ACCOUNTING,
                total=Bytes.of(parameters * estimator.FULL_FINETUNE_BYTES_PER_PARAM),
            ),
            TrainingEstimate(
                method="lora",
                trainable_parameters=adapter,
                accounting=f"rank {lora_rank}: " + estimator.LORA_ACCOUNTING,
                total=Bytes.of(estimator.weight_bytes(parameters, "bf16") + adapter * 16),
            ),
            TrainingEstimate(
                method="qlora",
                trainable_parameters=adapter,
                accounting=f"rank {lora_rank}: " + estimator.QLORA_ACCOUNTING,
                total=Bytes.of(estimator.qlora_base_bytes(parameters) + adapter * 16),
            ),
        ],
        accelerators=[
            AcceleratorFit(
                accelerator=device.slug,
                memory_bytes=device.memory_bytes,
                count_needed=fit.devices_needed(need, device.memory_bytes),
                fits_on_one=fit.holds(need, fit.Devices(device.memory_bytes)),
                nodes_needed=fit.nodes_needed(need, device.memory_bytes),
            )
            for device in accelerators().values()
        ],
        largest_piece=Bytes.of(need.device_bytes),
        notes=notes,
    )
