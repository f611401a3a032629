"""What accelerators this machine has (NVIDIA through nvidia-smi, AMD through rocm-smi or amd-smi, else CPU and
RAM), and whether torch here can use them: the check `corral-runner doctor` makes and a runner that found itself
unfit repeats before it takes a job again."""

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from typing import Any

from corral.wire.generation import Backend
from corral_runner.protocol import Accelerator

MIB = 2**20
# What the tools print for a field they could not read.
MISSING = {"", "n/a", "[n/a]", "none"}


def run_command(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError, ValueError):  # ValueError: output that is not valid text
        return None


def _slug(vendor: str, name: str) -> str:
    """A kind such as nvidia-h100-80gb-hbm3: the name's words in lower case, led by the vendor."""
    # Older rocm-smi names cards the pci.ids way, "Arcturus GL-XL [AMD Instinct MI100]": the product is in brackets.
    bracketed = re.findall(r"\[([^\]]+)\]", name)
    words = re.findall(r"[a-z0-9]+", (bracketed[-1] if bracketed else name).lower())
    if words[:1] != [vendor]:
        words.insert(0, vendor)
    return "-".join(words)[:64].rstrip("-")


def _number(value: object) -> int | None:
    """A positive whole number from a tool's field (rocm-smi prints numbers as strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _name(*candidates: object) -> str:
    """The first field that holds a name."""
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip().lower() not in MISSING:
            return candidate.strip()
    return "gpu"


def _json(output: str | None) -> Any:
    if not output:
        return None
    try:
        return json.loads(output)
    except ValueError:
        return None


def _grouped(devices: list[tuple[str, int]]) -> list[Accelerator]:
    """One entry per distinct (kind, memory), with how many devices share it, in the order first seen."""
    counts = Counter(devices)
    return [Accelerator(kind=kind, memory_bytes=memory, count=count) for (kind, memory), count in counts.items()]


def nvidia() -> list[Accelerator]:
    # One line per GPU, "NVIDIA H100 80GB HBM3, 81559": the name, then memory.total in MiB.
    output = run_command(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    devices = []
    for line in (output or "").splitlines():
        name, _, mebibytes = line.rpartition(",")
        memory = _number(mebibytes)
        if memory is not None:
            memory *= MIB
        elif mebibytes.strip() == "[N/A]":
            # Unified-memory parts (the DGX Spark's GB10) have no memory of their own to report: the GPU uses the RAM.
            memory = _ram()
        if name.strip() and memory is not None:
            devices.append((_slug("nvidia", name), memory))
    return _grouped(devices)


def _amd_smi() -> list[Accelerator]:
    data = _json(run_command(["amd-smi", "static", "--asic", "--vram", "--json"]))
    # Older amd-smi prints a list of GPUs; newer releases wrap it as {"gpu_data": [...], "cpu_data": [...], ...}.
    gpus = data.get("gpu_data") if isinstance(data, dict) else data
    devices = []
    for gpu in gpus if isinstance(gpus, list) else []:
        asic, vram = (gpu.get("asic"), gpu.get("vram")) if isinstance(gpu, dict) else (None, None)
        if not isinstance(asic, dict) or not isinstance(vram, dict):
            continue
        # {"value": 196592, "unit": "MB"}; early releases printed "vram_size_mb": 196592. Either way the library
        # divides the byte count by 1024 * 1024, so "MB" is MiB.
        size = vram.get("size", vram.get("vram_size_mb"))
        if isinstance(size, dict):
            size = size.get("value") if size.get("unit") == "MB" else None
        memory = _number(size)
        if memory is not None:
            devices.append((_slug("amd", _name(asic.get("market_name"), asic.get("device_id"))), memory * MIB))
    return _grouped(devices)


def _rocm_smi() -> list[Accelerator]:
    data = _json(run_command(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"]))
    devices = []
    for key, card in data.items() if isinstance(data, dict) else ():
        # Devices are "card0", "card1", ...; a "system" entry holds driver-wide fields.
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        memory = _number(card.get("VRAM Total Memory (B)"))
        # Older releases print "Card series" and "Card model", newer ones "Card Series" and "Card Model" (a device id).
        fields = {str(field).lower(): value for field, value in card.items()}
        if memory is not None:
            devices.append((_slug("amd", _name(fields.get("card series"), fields.get("card model"))), memory))
    return _grouped(devices)


def amd() -> list[Accelerator]:
    # rocm-smi first: where both are installed they agree on memory, but rocm-smi's name is the product's
    # ("AMD Instinct MI300X OAM") while amd-smi has printed a code for that model ("MI300X-O"). amd-smi, its
    # successor, answers where rocm-smi is gone.
    return _rocm_smi() or _amd_smi()


def _ram() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cpu() -> list[Accelerator]:
    return [Accelerator(kind="cpu", memory_bytes=_ram(), count=1)]


def detect() -> list[Accelerator]:
    # A detector whose tool is missing, fails or prints what it cannot read returns [], so the next one is asked
    # and a runner always reports at least its CPU.
    return nvidia() or amd() or cpu()


def backends() -> list[Backend]:
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


def device_problem(device: str | None) -> str | None:
    """Why torch here cannot run jobs on the device the runner uses (its setting, else what is detected), or
    None: a CUDA device asked for (or NVIDIA GPUs present) that torch cannot use."""
    try:
        import torch
    except ImportError:
        return "torch is not installed: pip install 'corral[runner]' (with a CUDA build of torch on a GPU machine)"
    wants_cuda = device is not None and device.startswith("cuda")
    gpus = nvidia()
    if not (wants_cuda or gpus) or torch.cuda.is_available():
        return None
    if torch.version.cuda is None and torch.version.hip is None:
        if gpus:
            found = sum(gpu.count for gpu in gpus)
            return (
                f"torch {torch.__version__} is a CPU build but this machine has {found} NVIDIA GPUs: install CUDA torch"
            )
        return (
            f"torch {torch.__version__} is a CPU build but the runner's config asks for {device}: install a CUDA build "
            "of torch, or remove the device setting (the runner then finds the CPU itself)"
        )
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda or torch.version.hip}) finds no usable GPU: "
        "check the driver (nvidia-smi), CUDA_VISIBLE_DEVICES and the device setting"
    )
