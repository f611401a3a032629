"""How a job's settings become lm-eval's model: its model arguments on each backend, the device, and the int8/int4
weights lm-eval cannot load by itself."""

import json
from typing import Any

from corral_runner.failures import RunnerSetupError
from corral_runner.protocol import JobSpec

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANTIZED = ("int8", "int4")


def detected_device() -> str:
    """Where torch can run here: a CUDA device (ROCm builds answer as CUDA too), Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def model_args(spec: JobSpec, device: str | None = None) -> str:
    """lm-eval's model arguments for the job on this runner (backends differ in how they take them). How many
    devices it spreads over is the server's placement (its fit rule, for this runner's registered devices)."""
    settings, placement = spec.settings, spec.placement
    local = spec.local_path
    parts = [f"pretrained={local}"] if local else [f"pretrained={spec.model}", f"revision={spec.revision}"]
    precision = settings.precision
    if precision in DTYPES:
        parts.append(f"dtype={DTYPES[precision]}")
    if settings.backend == "vllm":
        # vLLM quantizes unquantized weights in flight to fp8, or to 4 bits through bitsandbytes (never 8: the
        # server refuses int8 on vllm). Its sampling seed is fixed when the engine starts.
        quantization = {"fp8": "fp8", "int4": "bitsandbytes"}.get(precision)
        if quantization:
            parts.append(f"quantization={quantization}")
        parts.append(f"seed={settings.seed}")
        if placement.tensor_parallel > 1:
            parts.append(f"tensor_parallel_size={placement.tensor_parallel}")
        if placement.pipeline_parallel > 1:
            # Passed through lm-eval's **kwargs to vllm.LLM: stages on the nodes of a Ray cluster.
            parts.append(f"pipeline_parallel_size={placement.pipeline_parallel}")
            parts.append("distributed_executor_backend=ray")
    else:
        if precision in QUANTIZED:
            parts.append(f"quantization=bitsandbytes-{precision}")  # recorded; applied by quantized_hf_model
        if placement.tensor_parallel > 1:
            parts.append("parallelize=True")  # accelerate places the layers across the visible GPUs
        elif device := device or spec.device:
            parts.append(f"device={device}")
    if settings.trust_remote_code:  # an admin trusted this commit's code; off (lm-eval's default) otherwise
        parts.append("trust_remote_code=True")
    return ",".join(parts)


def model_key(spec: JobSpec) -> str:
    """Jobs with the same key can share one loaded model (on one machine, so its device is not part of it)."""
    return json.dumps([spec.settings.backend, model_args(spec), spec.settings.batch_size])


def quantized_hf_model(spec: JobSpec) -> Any:
    """int8/int4 on the hf backend. lm-eval 0.4.13 forwards no quantization settings of its own and transformers 5
    dropped `load_in_8bit`, so the weights are loaded here through bitsandbytes and handed to lm-eval's HFLM."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as missing:
        raise RunnerSetupError(
            "int8 and int4 on the hf backend need bitsandbytes and a CUDA GPU on the runner (pip install bitsandbytes)"
        ) from missing
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    local = spec.local_path
    source, revision = (local, None) if local else (spec.model, spec.revision)
    if spec.settings.precision == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    trusted = spec.settings.trust_remote_code
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, quantization_config=config, device_map="auto", trust_remote_code=trusted
    )
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trusted)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.settings.batch_size)
