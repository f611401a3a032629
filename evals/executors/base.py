"""What the runner loop (evals/loop.py) asks of an engine, whichever runs its jobs — this machine's warm worker,
Slurm, Kubernetes: submit a job under its attempt's name, say how every job stands in one look, find one it no
longer lists, cancel one, and say what it has (and has free). A new engine is one module with this shape."""

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Protocol

from corral_runner.executors.settings import ClusterExecutor
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import Accelerator, JobPlacement

JOB_PREFIX = "corral-"

# pending: in the engine's queue; running; succeeded/failed: over (the files say how); preempted: taken
# away by the engine (handed back, nothing counted); gone: the engine no longer knows it.
Phase = Literal["pending", "running", "succeeded", "failed", "preempted", "gone"]
FINISHED: frozenset[Phase] = frozenset({"succeeded", "failed", "preempted", "gone"})


class EngineError(RuntimeError):
    """The engine refused a command (a job it will not take): the attempt fails, and may run elsewhere."""


class EngineUnreachable(EngineError):
    """The engine itself did not answer (the Slurm controller, the Kubernetes API away): no job is failed for it;
    the runner stops claiming, keeps its leases, and goes on when it answers again."""


def job_name(attempt_id: uuid.UUID | str) -> str:
    """Jobs are named after their attempt: a restarted agent finds them, and a second submit is refused."""
    return f"{JOB_PREFIX}{attempt_id}"


@dataclass(frozen=True)
class EngineJob:
    """How the engine sees one job."""

    name: str
    ref: str  # external_ref: local:<pid>, slurm:1234, k8s:namespace/corral-<attempt>
    phase: Phase
    reason: str = ""  # why it waits (Resources, Priority, Unschedulable) or how it ended (TIMEOUT, NODE_FAIL)
    owner: str = ""  # the runner that submitted it (a comment or label on the job)

    @property
    def ref_words(self) -> str:
        """The engine's id of the job in words: "job 1234" on Slurm, "namespace/name" on Kubernetes ("" for none)."""
        engine, _, ident = self.ref.partition(":")
        if not ident:
            return ""
        return f"job {ident}" if engine == "slurm" else ident

    @property
    def where(self) -> str:
        """ ", job 1234": to follow what a stage says."""
        return f", {self.ref_words}" if self.ref_words else ""


def shapes(per_node: list[tuple[str, int, int]]) -> list[Accelerator]:
    """Nodes grouped by shape, never summed into one device: (kind, memory per device, devices) of each node."""
    counts = Counter(node for node in per_node if node[2] > 0)
    return [
        Accelerator(kind=kind, memory_bytes=memory, count=count, nodes=nodes)
        for (kind, memory, count), nodes in sorted(counts.items())
    ]


@dataclass(frozen=True)
class Submission:
    """One job for the engine: its directory (spec.json in it), and the devices the server placed it on."""

    attempt_id: uuid.UUID
    directory: JobDirectory
    placement: JobPlacement
    gpus_per_node: int  # 0 on a CPU-only cluster
    env: dict[str, str]  # for the job (evals/environment.py): never a Corral credential or lease token
    required_memory_bytes: int = 0  # what the server's fit rule says the job needs, over all its devices
    needs_hub_token: bool = True  # the weights may need the Hub token (a Kubernetes job gets its Secret)


@dataclass(frozen=True)
class Pace:
    """How an engine is tended: how often it is asked, how long its files may lag its word, how much may wait."""

    poll_seconds: float  # between two looks at the engine (log lines are sent between them too)
    settle_seconds: float  # after the engine says a job ended, before a job without its files counts as died
    max_pending: int | None  # jobs kept waiting in the engine's queue at once; 0: claim only what fits free devices
    release_pending_after_seconds: float  # a job waiting longer is handed back for another runner
    slots: int  # jobs it runs at once at most (the server's max_concurrent_jobs caps it too)
    survives_the_agent: bool  # its jobs run on when the agent stops (and a restarted agent adopts them)

    @classmethod
    def of_cluster(cls, settings: ClusterExecutor) -> "Pace":
        """A cluster's pace, as its operator set it: its jobs outlive the agent, and the cluster counts its slots."""
        return cls(
            poll_seconds=settings.poll_seconds,
            settle_seconds=settings.settle_seconds,
            max_pending=settings.max_pending,
            release_pending_after_seconds=settings.release_pending_after_seconds,
            slots=1024,
            survives_the_agent=True,
        )


class Engine(Protocol):
    name: str  # "this machine", "Slurm", "Kubernetes": for the stage a waiting job shows
    pace: Pace
    owner: str  # the runner's id, on every job it submits (another runner's jobs are not its own)

    def node_shapes(self) -> list[Accelerator]:
        """Every node the jobs may run on, grouped by shape (what the runner reports)."""
        ...

    def free_now(self) -> list[Accelerator]:
        """What is free at this moment, grouped by shape."""
        ...

    def submit(self, job: Submission) -> EngineJob:
        """Submit, or find the job of that name already there: never two jobs for one attempt."""
        ...

    def jobs(self) -> dict[str, EngineJob]:
        """Every job of this runner the engine still knows, by name, in one look."""
        ...

    def find(self, job: EngineJob, directory: JobDirectory) -> EngineJob:
        """One job the listing no longer shows (finished long ago, or before a restart): its last state, or gone."""
        ...

    def cancel(self, job: EngineJob) -> None: ...

    def last_words(self, job: EngineJob, directory: JobDirectory) -> str:
        """What the engine knows of how a job ended that the job's own log may lack (pod logs, exit codes)."""
        ...

    def close(self) -> None:
        """The loop is over: whatever the engine runs for the agent itself stops (not the cluster's jobs)."""
        ...
