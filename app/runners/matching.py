"""Which runner may take which job: one rule, as a Python check (explanations) and as SQL (the claim). Whether
its accelerators hold the job is the fit rule's answer (app/hardware/fit.py), for the job's backend."""

import json
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, literal, or_

from app.hardware import fit
from app.hardware.fit import GIB, Devices, MemoryNeed, gib
from app.tables import EvaluationJob, Runner
from app.tables.types import json_array_subset

__all__ = ["GIB", "Capacity", "Need", "gib"]


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

    @property
    def memory(self) -> MemoryNeed:
        return MemoryNeed(self.memory_bytes, self.device_bytes)


@dataclass(frozen=True)
class Capacity:
    """What a runner offers, from its record."""

    devices: Devices
    backends: tuple[str, ...]
    harness_version: str | None
    labels: tuple[str, ...]

    @classmethod
    def of(cls, runner: Runner) -> "Capacity":
        groups = [(int(device["memory_bytes"]), int(device.get("count", 1))) for device in runner.accelerators or []]
        return cls(
            devices=Devices.of_groups(groups),
            backends=tuple(runner.backends or ()),
            harness_version=runner.lm_eval_version,
            labels=tuple(runner.labels or ()),
        )

    @property
    def total_bytes(self) -> int:
        """All its accelerator memory (what hf can place one model in)."""
        return fit.usable_bytes(self.devices, "hf")

    def memory_shortfalls(self, need: Need) -> list[str]:
        return fit.shortfalls(need.memory, self.devices, need.backend)

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
        """The same rule as `shortfalls`, as conditions on evaluation_jobs for the claim statement: per backend it
        runs, the memory that backend can use."""
        by_backend = [
            and_(
                EvaluationJob.backend == backend,
                EvaluationJob.required_memory_bytes <= fit.usable_bytes(self.devices, backend),
            )
            for backend in self.backends
        ]
        conditions: list[ColumnElement[bool]] = [
            or_(*by_backend) if by_backend else false(),
            EvaluationJob.required_device_bytes <= self.devices.device_bytes,
            json_array_subset(EvaluationJob.labels, literal(json.dumps(sorted(self.labels)))),
        ]
        if self.harness_version is None:
            conditions.append(literal(False))
        else:
            conditions.append(EvaluationJob.harness_version == self.harness_version)
        return conditions
