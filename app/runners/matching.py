"""Which runner may take which job: one rule, as a Python check (explanations) and as SQL (the claim)."""

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, literal

from app.tables import EvaluationJob, Runner
from app.tables.types import json_array_subset

GIB = 2**30


@dataclass(frozen=True)
class Need:
    """What a job asks of a runner."""

    memory_bytes: int  # all accelerators together
    device_bytes: int  # the largest piece that cannot be split across devices
    backend: str
    harness_version: str
    labels: tuple[str, ...]

    @classmethod
    def of(cls, job: EvaluationJob) -> "Need":
        return cls(
            memory_bytes=job.required_memory_bytes,
            device_bytes=job.required_device_bytes,
            backend=job.backend,
            harness_version=job.harness_version,
            labels=tuple(job.labels),
        )


@dataclass(frozen=True)
class Capacity:
    """What a runner offers, from its record."""

    total_bytes: int
    largest_device_bytes: int
    backends: tuple[str, ...]
    harness_version: str | None
    labels: tuple[str, ...]

    @classmethod
    def of(cls, runner: Runner) -> "Capacity":
        devices: list[dict[str, Any]] = runner.accelerators or []
        return cls(
            total_bytes=sum(int(device["memory_bytes"]) * int(device.get("count", 1)) for device in devices),
            largest_device_bytes=max((int(device["memory_bytes"]) for device in devices), default=0),
            backends=tuple(runner.backends or ()),
            harness_version=runner.lm_eval_version,
            labels=tuple(runner.labels or ()),
        )

    def memory_shortfalls(self, need: Need) -> list[str]:
        reasons = []
        if need.memory_bytes > self.total_bytes:
            reasons.append(f"needs {gib(need.memory_bytes)} of accelerator memory, has {gib(self.total_bytes)}")
        if need.device_bytes > self.largest_device_bytes:
            reasons.append(
                f"needs {gib(need.device_bytes)} on one device, its largest has {gib(self.largest_device_bytes)}"
            )
        return reasons

    def shortfalls(self, need: Need) -> list[str]:
        """Why this runner cannot take the job; empty when it can."""
        reasons = self.memory_shortfalls(need)
        if need.backend not in self.backends:
            reasons.append(f"does not run the {need.backend} backend")
        if need.harness_version != self.harness_version:
            reasons.append(f"runs lm-eval {self.harness_version or 'unknown'}, not {need.harness_version}")
        missing = sorted(set(need.labels) - set(self.labels))
        if missing:
            reasons.append(f"lacks labels {', '.join(missing)}")
        return reasons

    def job_filter(self) -> list[ColumnElement[bool]]:
        """The same rule as `shortfalls`, as conditions on evaluation_jobs for the claim statement."""
        conditions: list[ColumnElement[bool]] = [
            EvaluationJob.required_memory_bytes <= self.total_bytes,
            EvaluationJob.required_device_bytes <= self.largest_device_bytes,
            EvaluationJob.backend.in_(self.backends),
            json_array_subset(EvaluationJob.labels, literal(json.dumps(sorted(self.labels)))),
        ]
        if self.harness_version is None:
            conditions.append(literal(False))
        else:
            conditions.append(EvaluationJob.harness_version == self.harness_version)
        return conditions


def gib(count: int) -> str:
    return f"{count / GIB:,.1f} GiB"
