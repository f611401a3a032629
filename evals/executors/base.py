"""What the agent asks of a cluster engine, whichever it is: submit a job under its attempt's name, say how every
job stands in one call, cancel one, and say what the cluster has (and has free)."""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from evals.protocol import JobPlacement

JOB_PREFIX = "corral-"

# pending: in the engine's queue; running; succeeded/failed: over (the files say how); preempted: taken
# away by the engine (handed back, nothing counted); gone: the engine no longer knows it.
Phase = Literal["pending", "running", "succeeded", "failed", "preempted", "gone"]
FINISHED: frozenset[Phase] = frozenset({"succeeded", "failed", "preempted", "gone"})


class EngineError(RuntimeError):
    """The engine is away or refused a command: the agent keeps its jobs and asks again on the next tick."""


def job_name(attempt_id: str) -> str:
    """Cluster jobs are named after their attempt: a restarted agent finds them, and a second submit is refused."""
    return f"{JOB_PREFIX}{attempt_id}"


@dataclass(frozen=True)
class ClusterJob:
    """How the engine sees one job."""

    name: str
    ref: str  # external_ref: slurm:1234, k8s:namespace/corral-<attempt>
    phase: Phase
    reason: str = ""  # why it waits (Resources, Priority, Unschedulable) or how it ended (TIMEOUT, NODE_FAIL)
    owner: str = ""  # the runner that submitted it (a comment or label on the job)


@dataclass(frozen=True)
class NodeShape:
    """Nodes alike: the accelerator kind, memory per device, devices per node, how many such nodes."""

    kind: str
    memory_bytes: int
    count: int
    nodes: int = 1

    def as_report(self) -> dict[str, str | int]:
        return {"kind": self.kind, "memory_bytes": self.memory_bytes, "count": self.count, "nodes": self.nodes}


def shapes(per_node: list[tuple[str, int, int]]) -> list[NodeShape]:
    """Nodes grouped by shape, never summed into one device: (kind, memory, count) of each node."""
    counts = Counter(node for node in per_node if node[2] > 0)
    return [NodeShape(kind, memory, count, nodes) for (kind, memory, count), nodes in sorted(counts.items())]


@dataclass(frozen=True)
class Submission:
    """One job for the engine: the files, where they are, and the devices the server placed it on."""

    attempt_id: str
    job_dir: Path  # on the shared storage: spec.json in it, and what the job writes
    placement: JobPlacement
    gpus_per_node: int  # 0 on a CPU-only cluster
    env: dict[str, str]  # for the job (evals/environment.py): never a Corral credential or lease token
    required_memory_bytes: int = 0  # what the server's fit rule says the job needs, over all its devices
    needs_hub_token: bool = True  # the weights may need the Hub token (a Kubernetes job gets its Secret)


class ClusterEngine(Protocol):
    name: str  # "Slurm", "Kubernetes": for the stage a waiting job shows

    def node_shapes(self) -> list[NodeShape]:
        """Every node the jobs may run on, grouped by shape."""
        ...

    def free_now(self) -> list[NodeShape]:
        """What is free at this moment, grouped by shape."""
        ...

    def submit(self, job: Submission) -> ClusterJob:
        """Submit, or find the job of that name already there: never two jobs for one attempt."""
        ...

    def jobs(self) -> dict[str, ClusterJob]:
        """Every job this runner submitted that the engine still knows, by name, in one call."""
        ...

    def find(self, job: ClusterJob) -> ClusterJob:
        """One job the listing no longer shows (finished long ago): its last state, or gone."""
        ...

    def cancel(self, job: ClusterJob) -> None: ...

    def last_words(self, job: ClusterJob, job_dir: Path) -> str:
        """What the engine knows of how a job ended that the job's own log may lack (pod logs, exit codes)."""
        ...
