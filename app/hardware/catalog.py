"""The accelerator catalog, read once from accelerators.yaml beside this file."""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

GIB = 2**30


@dataclass(frozen=True)
class Accelerator:
    slug: str
    name: str
    vendor: str
    memory_bytes: int
    memory_type: str


@cache
def accelerators() -> dict[str, Accelerator]:
    data = yaml.safe_load((Path(__file__).with_name("accelerators.yaml")).read_text())
    return {
        entry["slug"]: Accelerator(
            slug=entry["slug"],
            name=entry["name"],
            vendor=entry["vendor"],
            memory_bytes=entry["memory_gib"] * GIB,
            memory_type=entry["memory_type"],
        )
        for entry in data["accelerators"]
    }
