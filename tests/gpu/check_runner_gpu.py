"""A short check of the runner agent's GPU paths on a machine with an NVIDIA GPU (not part of the CPU suite).

    python3 tests/gpu/check_runner_gpu.py OUTPUT.json

Detects the accelerators as `corral-runner register` does (nvidia-smi), builds the tiny Llama checkpoint,
loads it on CUDA in bf16 and generates, then reads what a result would carry: torch and CUDA versions, GPU
name, driver and peak accelerator memory. Fails (exit 1) when a reading is missing or implausible.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from corral_runner import hardware
from corral_runner.lm_eval_worker import environment, peak_memory
from corral_runner.tiny import build_tiny_llama


def main(output: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report: dict[str, object] = {"detected": hardware.detect()}
    with tempfile.TemporaryDirectory() as directory:
        path = build_tiny_llama(Path(directory) / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda")
        inputs = tokenizer("Q: 2 + 2 =", return_tensors="pt").to("cuda")
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        report["generated_tokens"] = int(generated.shape[-1] - inputs["input_ids"].shape[-1])
        report["model_device"] = str(next(model.parameters()).device)
    free, total = torch.cuda.mem_get_info(0)
    report |= {"environment": environment(), "peak_memory_bytes": peak_memory(), "cuda_total": total, "cuda_free": free}
    output.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    devices = report["detected"]
    ok = (
        isinstance(devices, list)
        and devices[0]["kind"].startswith("nvidia")
        and abs(devices[0]["memory_bytes"] - total) < 2 * 2**30
        and report["model_device"] == "cuda:0"
        and (report["peak_memory_bytes"] or 0) > 0
        and report["environment"].get("gpu")  # type: ignore[union-attr]
        and report["environment"].get("driver_version")  # type: ignore[union-attr]
    )
    sys.stdout.write("OK\n" if ok else "CHECK FAILED\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
