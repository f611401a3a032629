"""What accelerators this machine has: NVIDIA through nvidia-smi, AMD through rocm-smi, else the CPU and RAM."""

import json
import os
import shutil
import subprocess
from collections import Counter
from typing import Any


def run_command(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def _slug(name: str) -> str:
    return "-".join(name.lower().replace("nvidia", "nvidia ").split())[:64]


def nvidia() -> list[dict[str, Any]]:
    output = run_command(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if not output:
        return []
    devices: Counter[tuple[str, int]] = Counter()
    for line in output.strip().splitlines():
        name, mebibytes = (part.strip() for part in line.rsplit(",", 1))
        devices[(name, int(float(mebibytes)) * 2**20)] += 1
    return [{"kind": _slug(name), "memory_bytes": memory, "count": count} for (name, memory), count in devices.items()]


def amd() -> list[dict[str, Any]]:
    output = run_command(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"])
    if not output:
        return []
    devices: Counter[tuple[str, int]] = Counter()
    for card in json.loads(output).values():
        if not isinstance(card, dict) or "VRAM Total Memory (B)" not in card:
            continue
        devices[(card.get("Card series", "amd-gpu"), int(card["VRAM Total Memory (B)"]))] += 1
    return [{"kind": _slug(name), "memory_bytes": memory, "count": count} for (name, memory), count in devices.items()]


def cpu() -> list[dict[str, Any]]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return [{"kind": "cpu", "memory_bytes": int(memory), "count": 1}]


def detect() -> list[dict[str, Any]]:
    return nvidia() or amd() or cpu()


def backends() -> list[str]:
    try:
        import vllm  # noqa: F401

        return ["hf", "vllm"]
    except ImportError:
        return ["hf"]


def lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def report() -> dict[str, Any]:
    """What this machine tells the server about itself (on register, verify and each start)."""
    return {"accelerators": detect(), "backends": backends(), "lm_eval_version": lm_eval_version()}
