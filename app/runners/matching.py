"""Which runner may take which job: one rule, as a Python check (explanations) and as SQL (the claim). Whether
its accelerators hold the job is the fit rule's answer (app/hardware/fit.py), for the job's backend."""

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, literal, or_

from corral.documents import AcceleratorRecord
from corral.hardware import fit
from corral.hardware.fit import GIB, Devices, MemoryNeed, Placement, gib
from corral.tables import EvaluationJob, Runner
from corral.tables.types import json_array_subset

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
    """What a runner offers one job, from its record: the device shapes a job may run on (one machine's devices,
    or each node shape of a cluster, up to the nodes one job may span)."""

    shapes: tuple[Devices, ...]
    backends: tuple[str, ...]
    harness_version: str | None
    labels: tuple[str, ...]

    @classmethod
    def of(cls, runner: Runner, accelerators: Sequence[AcceleratorRecord] | None = None) -> "Capacity":
        """`accelerators`: what is free now, where a claim says so (never more nodes than one job may span)."""
        records = (runner.accelerators or []) if accelerators is None else accelerators
        groups = [
            (int(device["memory_bytes"]), int(device.get("count", 1)), int(device.get("nodes", 1)))
            for device in records
        ]
        return cls(
            shapes=fit.shapes_of(groups, runner.max_nodes_per_job or 1),
            backends=tuple(runner.backends or ()),
            harness_version=runner.lm_eval_version,
            labels=tuple(runner.labels or ()),
        )

    @property
    def total_bytes(self) -> int:
        """The most memory one job can be given on hf (one machine)."""
        return max(fit.usable_bytes(shape, "hf") for shape in self.shapes)

    def fitting(self, need: Need) -> tuple[Devices, Placement | None]:
        """The shape a job runs on here and how it is spread (None: none holds it)."""
        return fit.best_shape(self.shapes, need.memory, need.backend)

    def memory_shortfalls(self, need: Need) -> list[str]:
        shape, placed = self.fitting(need)
        return [] if placed is not None else fit.shortfalls(need.memory, shape, need.backend)

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
        holds = [
            and_(
                EvaluationJob.backend == backend,
                EvaluationJob.required_memory_bytes <= fit.usable_bytes(shape, backend),
                EvaluationJob.required_device_bytes <= shape.device_bytes,
            )
            for backend in self.backends
            for shape in self.shapes
        ]
        conditions: list[ColumnElement[bool]] = [
            or_(*holds) if holds else false(),
            json_array_subset(EvaluationJob.labels, literal(json.dumps(sorted(self.labels)))),
        ]
        if self.harness_version is None:
            conditions.append(literal(False))
        else:
            conditions.append(EvaluationJob.harness_version == self.harness_version)
        return conditions
